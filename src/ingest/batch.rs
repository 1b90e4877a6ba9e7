//! One topic's micro-batch: records are decoded into Arrow chunks per writer version as
//! they arrive; a full chunk is cleaned, checked and deduplicated a column at a time and
//! set aside with its Kafka coordinates. Rejected records wait here as dead letters so
//! they are published only with the batch that accounts for their offsets.

use super::checks::{Reject, Rules, id_hash};
use super::decode::{Chunk, WriterPlan};
use crate::lake::columns::{ConvertError, TIMESTAMP_TZ};
use crate::lake::raw::meta_fields;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Fields, Schema, SchemaRef, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// A record that failed, kept with everything needed to replay it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub class: &'static str,
    pub message: String,
}

impl DeadLetter {
    pub fn of(topic: &str, o: &super::originals::Original<'_>, reject: Reject) -> Self {
        Self {
            topic: topic.to_string(),
            partition: o.partition,
            offset: o.offset,
            key: o.key.map(<[u8]>::to_vec),
            payload: o.payload.to_vec(),
            headers: o.headers.to_vec(),
            class: reject.class,
            message: reject.message,
        }
    }
}

/// What a chunk is checked against when it is set aside.
pub struct Checks<'a> {
    pub rules: &'a Rules,
    /// Top-level fields the topic's current schema requires.
    pub required: &'a [String],
    pub now_ms: i64,
    /// The topic's event ids taken in so far; every record's id goes in.
    pub seen: &'a mut super::checks::Horizon,
}

/// The first and last offset of one partition in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub first: i64,
    pub last: i64,
}

pub struct TopicBatch {
    pub topic: String,
    /// Per writer version, the chunk being decoded (producers on two versions interleave).
    open: Vec<Chunk>,
    /// Event fields of every version set aside so far: one name, one type.
    fields: Vec<Field>,
    parts: Vec<RecordBatch>,
    /// Records taken in, landed or not: what the row limit counts.
    pub rows: u64,
    pub bytes: u64,
    pub opened_at: Option<Instant>,
    pub oldest_kafka_ms: Option<i64>,
    /// Per partition: the offsets this batch accounts for (landed or dead-lettered).
    pub offsets: BTreeMap<i32, OffsetRange>,
    /// Ids this batch put into the topic's horizon, taken out again if it is abandoned.
    pub ids: Vec<u64>,
    pub letters: Vec<DeadLetter>,
    pub originals: super::originals::Originals,
}

impl TopicBatch {
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_string(),
            open: Vec::new(),
            fields: Vec::new(),
            parts: Vec::new(),
            rows: 0,
            bytes: 0,
            opened_at: None,
            oldest_kafka_ms: None,
            offsets: BTreeMap::new(),
            ids: Vec::new(),
            letters: Vec::new(),
            originals: Default::default(),
        }
    }

    /// This batch's memory for a new batch of `topic`: the arena of originals and the id
    /// set keep their capacity (both grow to tens of megabytes per batch).
    pub fn reuse(mut self, topic: &str) -> Self {
        self.originals.clear();
        self.ids.clear();
        self.parts.clear();
        let mut fresh = Self::new(topic);
        fresh.originals = self.originals;
        fresh.ids = self.ids;
        fresh
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Takes one record as it arrived, with how its writer version lands (or why it
    /// cannot); true when its writer's chunk is full and should be set aside.
    pub fn take(
        &mut self,
        at: (i32, i64, Option<i64>),
        key: Option<&[u8]>,
        payload: &[u8],
        headers: super::originals::Headers,
        plan: Result<&Arc<WriterPlan>, Reject>,
    ) -> bool {
        self.account(at.0, at.1, at.2, payload.len());
        let index = self.originals.push(at, key, payload, headers);
        match plan {
            Ok(plan) => self.push(index, plan),
            Err(reject) => {
                self.reject(index, reject);
                false
            }
        }
    }

    /// Accounts for a record that is consumed but neither landed nor dead-lettered (an
    /// erased customer's).
    pub fn skip(&mut self, at: (i32, i64, Option<i64>), bytes: usize) {
        self.account(at.0, at.1, at.2, bytes);
    }

    /// Records that a Kafka offset is accounted for by this batch.
    fn account(&mut self, partition: i32, offset: i64, kafka_ms: Option<i64>, bytes: usize) {
        self.opened_at.get_or_insert_with(Instant::now);
        if let Some(ms) = kafka_ms {
            self.oldest_kafka_ms = Some(self.oldest_kafka_ms.map_or(ms, |o| o.min(ms)));
        }
        self.bytes += bytes as u64;
        self.offsets
            .entry(partition)
            .and_modify(|range| range.last = offset)
            .or_insert(OffsetRange {
                first: offset,
                last: offset,
            });
    }

    /// Decodes the record at `index` of the originals into its writer's chunk; true when
    /// that chunk is full and should be set aside.
    fn push(&mut self, index: u32, plan: &Arc<WriterPlan>) -> bool {
        self.rows += 1;
        let Some(original) = self.originals.get(index as usize) else {
            return false;
        };
        let slot = match self.open.iter().position(|c| c.plan.fingerprint == plan.fingerprint) {
            Some(i) => i,
            None => {
                self.open.push(Chunk::new(plan.clone()));
                self.open.len() - 1
            }
        };
        let chunk = &mut self.open[slot];
        chunk.push(index, original.payload);
        chunk.is_full()
    }

    /// A record turned away, as a dead letter of this batch.
    fn reject(&mut self, index: u32, reject: Reject) {
        if let Some(o) = self.originals.get(index as usize) {
            self.letters.push(DeadLetter::of(&self.topic, &o, reject));
        }
    }

    /// Sets aside every full chunk (or every chunk, with `all`).
    pub fn seal(&mut self, all: bool, checks: &mut Checks<'_>) {
        let (ready, open): (Vec<Chunk>, Vec<Chunk>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|c| all || c.is_full());
        self.open = open;
        for chunk in ready {
            self.seal_chunk(chunk, checks);
        }
    }

    fn seal_chunk(&mut self, chunk: Chunk, checks: &mut Checks<'_>) {
        let plan = chunk.plan.clone();
        let decoded = chunk.finish(&self.originals);
        for (index, reject) in decoded.rejected {
            self.reject(index, reject);
        }
        if decoded.rows.is_empty() {
            return;
        }
        if let Err(conflict) = self.adopt(&plan.fields) {
            for &index in &decoded.rows {
                self.reject(index, Reject::new("schema_conflict", conflict.clone()));
            }
            return;
        }
        let (clean, verdicts) = checks.rules.apply(&decoded.batch, checks.required, checks.now_ms);
        let ids = clean.column_by_name("event_id").and_then(|c| c.as_string_opt::<i32>());
        let mut keep = Vec::with_capacity(verdicts.len());
        let mut rejected = Vec::new();
        for (row, verdict) in verdicts.into_iter().enumerate() {
            let index = decoded.rows[row];
            if let Some(reject) = verdict {
                rejected.push((index, reject));
                keep.push(false);
                continue;
            }
            if let Some(id) = ids.filter(|a| a.is_valid(row)).map(|a| a.value(row)) {
                let hash = id_hash(id);
                if !checks.seen.insert(hash) {
                    rejected.push((
                        index,
                        Reject::new("duplicate_event", format!("event_id {id} already landed")),
                    ));
                    keep.push(false);
                    continue;
                }
                self.ids.push(hash);
            }
            keep.push(true);
        }
        for (index, reject) in rejected {
            self.reject(index, reject);
        }
        let kept_rows: Vec<u32> = decoded
            .rows
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(i, _)| *i)
            .collect();
        if kept_rows.is_empty() {
            return;
        }
        // Most chunks keep every row: no copy then.
        let event = if kept_rows.len() == keep.len() {
            Ok(clean)
        } else {
            filter_record_batch(&clean, &BooleanArray::from(keep))
        };
        let part = event
            .map_err(ConvertError::from)
            .and_then(|event| self.with_meta(event, &kept_rows, &plan.label, checks.now_ms));
        match part {
            Ok(part) => self.parts.push(part),
            Err(e) => {
                for index in kept_rows {
                    self.reject(index, Reject::new("write_failed", e.to_string()));
                }
            }
        }
    }

    /// Makes sure no field has two types across the versions in this batch.
    fn adopt(&mut self, fields: &Fields) -> Result<(), String> {
        for f in fields.iter() {
            match self.fields.iter().find(|have| have.name() == f.name()) {
                Some(have) if have.data_type() == f.data_type() => {}
                Some(have) => {
                    return Err(format!(
                        "field {} is {} in this version but {} in another version in the same batch",
                        f.name(),
                        f.data_type(),
                        have.data_type()
                    ));
                }
                None => self.fields.push(f.as_ref().clone()),
            }
        }
        Ok(())
    }

    /// The event columns of landed rows with ingest's own columns after them.
    fn with_meta(
        &self,
        event: RecordBatch,
        rows: &[u32],
        label: &str,
        now_ms: i64,
    ) -> Result<RecordBatch, ConvertError> {
        let n = rows.len();
        let mut partitions = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        let mut kafka_us = Vec::with_capacity(n);
        for &i in rows {
            let (p, o, k) = self.originals.coordinates(i as usize).unwrap_or((0, 0, None));
            partitions.push(p);
            offsets.push(o);
            kafka_us.push(k.map(|ms| ms * 1000));
        }
        let times = event
            .column_by_name("event_time")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
        let dates: Vec<i32> = (0..n)
            .map(|row| {
                let ms = match times.filter(|t| t.is_valid(row)) {
                    Some(t) => t.value(row) / 1000,
                    None => kafka_us[row].map_or(now_ms, |us| us / 1000),
                };
                ms.div_euclid(86_400_000) as i32
            })
            .collect();
        let meta: [ArrayRef; 6] = [
            Arc::new(Int32Array::from(partitions)),
            Arc::new(Int64Array::from(offsets)),
            Arc::new(TimestampMicrosecondArray::from(kafka_us).with_timezone(TIMESTAMP_TZ)),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(label, n))),
            Arc::new(TimestampMicrosecondArray::from(vec![now_ms * 1000; n]).with_timezone(TIMESTAMP_TZ)),
            Arc::new(Date32Array::from(dates)),
        ];
        let mut fields: Vec<Field> = event.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(meta_fields());
        let mut columns = event.columns().to_vec();
        columns.extend(meta);
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
    }

    /// The rows as record batches that all have one schema: the table's schema (when it
    /// has one) widened by every writer version seen, so Delta sees one consistent write.
    /// Chunks still open must have been sealed first.
    pub fn finish(&mut self, table: Option<&SchemaRef>) -> Result<Vec<RecordBatch>, ConvertError> {
        let mut fields: Vec<Field> = table
            .map(|s| s.fields().iter().map(|f| f.as_ref().clone()).collect())
            .unwrap_or_default();
        // Event fields in order of appearance, then ingest's own columns, unless the table
        // already fixed an order (Delta appends new columns at the end).
        for f in self.fields.iter().cloned().chain(meta_fields()) {
            if !fields.iter().any(|have| have.name() == f.name()) {
                fields.push(f.with_nullable(true));
            }
        }
        let target = Arc::new(Schema::new(fields));
        let mut out = Vec::with_capacity(self.parts.len());
        for part in self.parts.drain(..) {
            let mut columns = Vec::with_capacity(target.fields().len());
            for f in target.fields() {
                let column = match part.column_by_name(f.name()) {
                    Some(c) if c.data_type() == f.data_type() => c.clone(),
                    Some(c) => arrow::compute::cast(c, f.data_type())?,
                    None => new_null_array(f.data_type(), part.num_rows()),
                };
                columns.push(column);
            }
            out.push(RecordBatch::try_new(target.clone(), columns)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{SchemaSet, SchemaVersion, encode_with};
    use crate::ingest::checks::Horizon;
    use crate::ingest::decode::CHUNK_ROWS;
    use crate::lake::raw::PARTITION_COLUMN;
    use arrow::datatypes::{DataType, TimeUnit};
    use std::path::Path;

    const NOW: i64 = 1_790_000_000_000;

    fn schemas() -> SchemaSet {
        SchemaSet::load_strict(&Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")).unwrap()
    }

    fn view(version: &SchemaVersion, id: &str, price: i64) -> Vec<u8> {
        let json = serde_json::json!({
            "event_id": id, "event_time": NOW - 1000, "customer_id": "c1", "session_id": "s1",
            "product_id": "p1", "dwell_ms": 1500, "price_kopecks": price
        });
        encode_with(version, crate::codec::json::to_avro(&json, &version.schema).unwrap()).unwrap()
    }

    /// Takes `records` at offsets 0.. of partition 0, then seals every chunk.
    fn land(records: &[(&Arc<SchemaVersion>, Vec<u8>)]) -> TopicBatch {
        land_seen(records, &mut Horizon::new(1000))
    }

    /// `land` with the topic's horizon so far.
    fn land_seen(records: &[(&Arc<SchemaVersion>, Vec<u8>)], seen: &mut Horizon) -> TopicBatch {
        let rules = Rules::new(&crate::config::IngestConfig::default());
        let required = vec!["customer_id".to_string()];
        let mut checks = Checks {
            rules: &rules,
            required: &required,
            now_ms: NOW,
            seen,
        };
        let mut b = TopicBatch::new("t");
        let mut plans: Vec<Arc<WriterPlan>> = Vec::new();
        for (offset, (version, bytes)) in records.iter().enumerate() {
            let plan = match plans.iter().find(|p| p.fingerprint == version.fingerprint) {
                Some(p) => p.clone(),
                None => {
                    plans.push(Arc::new(WriterPlan::new(version).unwrap()));
                    plans[plans.len() - 1].clone()
                }
            };
            b.take((0, offset as i64, Some(NOW)), None, bytes, Vec::new(), Ok(&plan));
        }
        b.seal(true, &mut checks);
        b
    }

    fn classes(b: &TopicBatch) -> Vec<(i64, &'static str)> {
        let mut c: Vec<_> = b.letters.iter().map(|l| (l.offset, l.class)).collect();
        c.sort();
        c
    }

    #[test]
    fn versions_widen_into_one_schema() {
        let set = schemas();
        let v2 = set.current("product_view").unwrap().clone();
        let v1 = set.versions().find(|v| v.id == "product_view.v1").unwrap().clone();
        let mut b = land(&[
            (&v1, view(&v1, "a", 1)),
            (&v2, view(&v2, "b", 2)),
            (&v1, view(&v1, "c", 3)),
        ]);
        assert!(b.letters.is_empty(), "{:?}", classes(&b));
        let out = b.finish(None).unwrap();
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
        assert!(out.iter().all(|p| p.schema() == out[0].schema()));
        let names: Vec<_> = out[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(&names[..2], ["event_id", "event_time"]);
        assert!(names.contains(&PARTITION_COLUMN.to_string()) && names.contains(&"list_id".to_string()));
        let ts = out[0].column_by_name("event_time").unwrap().data_type().clone();
        assert_eq!(
            ts,
            DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into()))
        );
    }

    #[test]
    fn a_bad_record_costs_only_itself() {
        let set = schemas();
        let v = set.current("product_view").unwrap().clone();
        let good = |id: &str| view(&v, id, 10);
        let truncated = good("t")[..good("t").len() - 3].to_vec();
        let mut trailing = good("x");
        trailing.push(0);
        // A record followed by nothing but a header of its own version.
        let mut dangling = good("y");
        dangling.extend_from_slice(&good("z")[..10]);
        let b = land(&[
            (&v, good("1")),
            (&v, truncated),
            (&v, good("2")),
            (&v, trailing),
            (&v, dangling),
            (&v, good("3")),
            (&v, view(&v, "4", -5)),
            (&v, good("1")),
            (&v, good("5")),
        ]);
        assert_eq!(
            classes(&b),
            [
                (1, "truncated_body"),
                (3, "trailing_bytes"),
                (4, "trailing_bytes"),
                (6, "negative_value"),
                (7, "duplicate_event")
            ]
        );
        let rows: usize = b.parts.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 4);
        let offsets: Vec<i64> = b
            .parts
            .iter()
            .flat_map(|p| {
                p.column_by_name("_kafka_offset")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(offsets, [0, 2, 5, 8]);
    }

    #[test]
    fn a_full_chunk_is_set_aside_at_once_and_the_rest_at_the_flush() {
        let set = schemas();
        let v = set.current("product_view").unwrap().clone();
        let plan = Arc::new(WriterPlan::new(&v).unwrap());
        let rules = Rules::new(&crate::config::IngestConfig::default());
        let mut seen = Horizon::new(100_000);
        let mut checks = Checks {
            rules: &rules,
            required: &[],
            now_ms: NOW,
            seen: &mut seen,
        };
        let n = CHUNK_ROWS + 10;
        let rows = |b: &TopicBatch| b.parts.iter().map(RecordBatch::num_rows).sum::<usize>();
        let mut b = TopicBatch::new("t");
        let mut full_at = Vec::new();
        for o in 0..n {
            let bytes = view(&v, &format!("e{o}"), 1);
            if b.take((3, o as i64 + 100, Some(NOW)), None, &bytes, Vec::new(), Ok(&plan)) {
                full_at.push(o);
                b.seal(false, &mut checks);
            }
        }
        assert_eq!(full_at, [CHUNK_ROWS - 1]);
        assert_eq!(rows(&b), CHUNK_ROWS);
        b.seal(false, &mut checks);
        assert_eq!(rows(&b), CHUNK_ROWS, "a chunk that is not full stays open");
        b.seal(true, &mut checks);
        assert_eq!(rows(&b), n);
        assert_eq!(b.rows, n as u64);
        assert_eq!(
            b.offsets,
            BTreeMap::from([(
                3,
                OffsetRange {
                    first: 100,
                    last: n as i64 + 99
                }
            )])
        );
        assert_eq!(b.ids.len(), n);
        let out = b.finish(None).unwrap();
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), n);
        assert!(b.parts.is_empty(), "finish hands the rows over");
    }

    #[test]
    fn an_abandoned_batch_forgotten_lands_again() {
        let set = schemas();
        let v = set.current("product_view").unwrap().clone();
        let mut seen = Horizon::new(1000);
        let first = land_seen(&[(&v, view(&v, "a", 1)), (&v, view(&v, "b", 1))], &mut seen);
        assert_eq!(first.ids.len(), 2);
        let again = || [(&v, view(&v, "a", 1)), (&v, view(&v, "b", 1)), (&v, view(&v, "c", 1))];
        // While the first batch counts, its events are duplicates.
        let mut probe = Horizon::new(1000);
        land_seen(&again()[..2], &mut probe);
        let dup = land_seen(&again(), &mut probe);
        assert_eq!(classes(&dup), [(0, "duplicate_event"), (1, "duplicate_event")]);
        // Abandoned, its ids leave the horizon and its records land when they come again.
        seen.forget(&first.ids);
        let second = land_seen(&again(), &mut seen);
        assert!(second.letters.is_empty(), "{:?}", classes(&second));
        assert_eq!(second.ids.len(), 3);
    }

    #[test]
    fn a_reused_batch_starts_empty_for_its_new_topic() {
        let set = schemas();
        let v = set.current("product_view").unwrap().clone();
        let mut b = land(&[(&v, view(&v, "a", 1)), (&v, view(&v, "b", -1))]);
        assert!(!b.is_empty() && !b.letters.is_empty() && !b.ids.is_empty());
        b.finish(None).unwrap();
        let b = b.reuse("u");
        assert_eq!(b.topic, "u");
        assert!(b.is_empty() && b.letters.is_empty() && b.ids.is_empty() && b.parts.is_empty());
        assert_eq!((b.rows, b.bytes, b.opened_at, b.oldest_kafka_ms), (0, 0, None, None));
        assert_eq!(b.originals.iter().count(), 0);
    }

    #[test]
    fn conflicting_types_are_refused() {
        let mut b = TopicBatch::new("t");
        b.adopt(&Fields::from(vec![Field::new("a", DataType::Utf8, true)]))
            .unwrap();
        assert!(
            b.adopt(&Fields::from(vec![Field::new("a", DataType::Int64, true)]))
                .is_err()
        );
    }
}
