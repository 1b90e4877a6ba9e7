//! One topic's micro-batch: rows go straight into Arrow builders as they are decoded,
//! together with their Kafka coordinates; rejected records wait here as dead letters so
//! they are published only with the batch that accounts for their offsets.

use super::arrow::{ConvertError, StructColumn, TIMESTAMP_TZ};
use arrow::array::{
    Array, ArrayRef, Date32Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
    new_null_array,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Columns ingest adds to every raw table.
pub const PARTITION_COLUMN: &str = "event_date";
const META: [&str; 5] = [
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_timestamp",
    "_writer_schema",
    "_ingested_at",
];

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

/// Where a row came from.
pub struct Coordinates<'a> {
    pub partition: i32,
    pub offset: i64,
    pub kafka_timestamp_ms: Option<i64>,
    pub writer_schema: &'a str,
    pub event_time_ms: i64,
}

pub struct TopicBatch {
    pub topic: String,
    event: StructColumn,
    merged: HashSet<u64>,
    parts: Vec<RecordBatch>,
    meta: MetaColumns,
    pub rows: u64,
    pub bytes: u64,
    pub opened_at: Option<Instant>,
    pub oldest_kafka_ms: Option<i64>,
    /// Per partition: first and last offset this batch accounts for (landed or dead-lettered).
    pub offsets: BTreeMap<i32, (i64, i64)>,
    pub ids: super::checks::IdSet,
    pub letters: Vec<DeadLetter>,
    pub originals: super::originals::Originals,
}

#[derive(Default)]
struct MetaColumns {
    partition: Int32Builder,
    offset: Int64Builder,
    kafka_ts: TimestampMicrosecondBuilder,
    writer: StringBuilder,
    ingested: TimestampMicrosecondBuilder,
    date: Date32Builder,
}

impl TopicBatch {
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_string(),
            event: StructColumn::new(Fields::empty()),
            merged: HashSet::new(),
            parts: Vec::new(),
            meta: MetaColumns::default(),
            rows: 0,
            bytes: 0,
            opened_at: None,
            oldest_kafka_ms: None,
            offsets: BTreeMap::new(),
            ids: Default::default(),
            letters: Vec::new(),
            originals: Default::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Records that a Kafka offset is accounted for by this batch.
    pub fn account(&mut self, partition: i32, offset: i64, kafka_ms: Option<i64>, bytes: usize) {
        self.opened_at.get_or_insert_with(Instant::now);
        if let Some(ms) = kafka_ms {
            self.oldest_kafka_ms = Some(self.oldest_kafka_ms.map_or(ms, |o| o.min(ms)));
        }
        self.bytes += bytes as u64;
        self.offsets
            .entry(partition)
            .and_modify(|(_, last)| *last = offset)
            .or_insert((offset, offset));
    }

    /// Makes sure the builders hold every field of a writer version; on a new version the
    /// rows so far are set aside and building goes on with the merged fields.
    pub fn adopt(&mut self, fingerprint: u64, fields: &Fields) -> Result<(), String> {
        if self.merged.contains(&fingerprint) {
            return Ok(());
        }
        let current = self.event.fields().clone();
        let mut extra = Vec::new();
        for f in fields.iter() {
            match current.find(f.name()) {
                Some((_, have)) if have.data_type() == f.data_type() => {}
                Some((_, have)) => {
                    return Err(format!(
                        "field {} is {} in this version but {} in another version in the same batch",
                        f.name(),
                        f.data_type(),
                        have.data_type()
                    ));
                }
                None => extra.push(f.clone()),
            }
        }
        if !extra.is_empty() {
            self.set_aside().map_err(|e| e.to_string())?;
            let all: Vec<_> = current.iter().cloned().chain(extra).collect();
            self.event = StructColumn::new(Fields::from(all));
        }
        self.merged.insert(fingerprint);
        Ok(())
    }

    pub fn append(
        &mut self,
        record: &[(String, apache_avro::types::Value)],
        at: &Coordinates<'_>,
        now_ms: i64,
    ) -> Result<(), ConvertError> {
        self.event.append(record, "")?;
        let m = &mut self.meta;
        m.partition.append_value(at.partition);
        m.offset.append_value(at.offset);
        m.kafka_ts.append_option(at.kafka_timestamp_ms.map(|ms| ms * 1000));
        m.writer.append_value(at.writer_schema);
        m.ingested.append_value(now_ms * 1000);
        m.date.append_value(at.event_time_ms.div_euclid(86_400_000) as i32);
        self.rows += 1;
        Ok(())
    }

    fn set_aside(&mut self) -> Result<(), ConvertError> {
        if self.event.rows() == 0 {
            return Ok(());
        }
        let event = self.event.finish_batch()?;
        let m = &mut self.meta;
        let meta: [ArrayRef; 6] = [
            Arc::new(m.partition.finish()),
            Arc::new(m.offset.finish()),
            Arc::new(m.kafka_ts.finish().with_timezone(TIMESTAMP_TZ)),
            Arc::new(m.writer.finish()),
            Arc::new(m.ingested.finish().with_timezone(TIMESTAMP_TZ)),
            Arc::new(m.date.finish()),
        ];
        let mut fields: Vec<Field> = event.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(meta_fields());
        let mut columns = event.columns().to_vec();
        columns.extend(meta);
        self.parts
            .push(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?);
        Ok(())
    }

    /// The rows as record batches that all have one schema: the table's schema (when it
    /// has one) widened by every writer version seen, so Delta sees one consistent write.
    pub fn finish(&mut self, table: Option<&SchemaRef>) -> Result<Vec<RecordBatch>, ConvertError> {
        self.set_aside()?;
        let mut fields: Vec<Field> = table
            .map(|s| s.fields().iter().map(|f| f.as_ref().clone()).collect())
            .unwrap_or_default();
        // Event fields in order of appearance, then ingest's own columns, unless the table
        // already fixed an order (Delta appends new columns at the end).
        let event_fields = self.parts.iter().flat_map(|p| {
            p.schema()
                .fields()
                .iter()
                .filter(|f| !is_meta(f.name()))
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>()
        });
        for f in event_fields.chain(meta_fields()) {
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

fn is_meta(name: &str) -> bool {
    name == PARTITION_COLUMN || META.contains(&name)
}

/// The schema a raw table has before anything landed in it: the event's fields, then
/// ingest's own columns. Readers use it to treat a topic that has not landed yet as empty.
pub fn empty_table_schema(event_fields: &Fields) -> SchemaRef {
    let fields: Vec<Field> = event_fields
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .chain(meta_fields())
        .collect();
    Arc::new(Schema::new(fields))
}

fn meta_fields() -> Vec<Field> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into()));
    vec![
        Field::new(META[0], DataType::Int32, true),
        Field::new(META[1], DataType::Int64, true),
        Field::new(META[2], ts.clone(), true),
        Field::new(META[3], DataType::Utf8, true),
        Field::new(META[4], ts, true),
        Field::new(PARTITION_COLUMN, DataType::Date32, true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn fields(names: &[&str]) -> Fields {
        Fields::from(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn versions_widen_into_one_schema() {
        let mut b = TopicBatch::new("t");
        let at = Coordinates {
            partition: 0,
            offset: 0,
            kafka_timestamp_ms: Some(1),
            writer_schema: "v1",
            event_time_ms: 86_400_000 * 3,
        };
        b.adopt(1, &fields(&["a"])).unwrap();
        b.append(&[("a".into(), Value::String("x".into()))], &at, 0).unwrap();
        b.adopt(2, &fields(&["a", "b"])).unwrap();
        b.append(
            &[
                ("a".into(), Value::String("y".into())),
                ("b".into(), Value::String("z".into())),
            ],
            &at,
            0,
        )
        .unwrap();
        let out = b.finish(None).unwrap();
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        assert!(out.iter().all(|p| p.schema() == out[0].schema()));
        let names: Vec<_> = out[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(&names[..2], ["a", "b"]);
        assert!(names.contains(&PARTITION_COLUMN.to_string()));
        assert_eq!(out[0].column_by_name("b").unwrap().null_count(), 1);
    }

    #[test]
    fn conflicting_types_are_refused() {
        let mut b = TopicBatch::new("t");
        b.adopt(1, &fields(&["a"])).unwrap();
        let int = Fields::from(vec![Field::new("a", DataType::Int64, true)]);
        assert!(b.adopt(2, &int).is_err());
    }
}
