//! Avro bytes straight into Arrow arrays with arrow-avro's decoder, with per-record error
//! isolation on top.
//!
//! arrow-avro decodes a whole chunk of records column by column with no per-record
//! allocation, but it cannot take back a record that fails half-way: its builders keep the
//! fields decoded so far. So every record is fed alone and checked (all of its bytes
//! consumed, exactly one row added, no single-object header left dangling at its end);
//! the first record that fails marks the chunk broken, and the chunk is then rebuilt record
//! by record, each first validated by apache-avro, whose errors name the exact problem.
//! Bad records are rare, so the slow path costs nothing in the common case.

use super::checks::Reject;
use super::originals::Originals;
use crate::codec::{MAGIC, SchemaVersion, WriterDecoder};
use crate::lake::columns::record_fields;
use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Fields, Schema as ArrowSchema};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, SchemaStore};
use std::sync::{Arc, Mutex, OnceLock};

/// Records decoded into one Arrow chunk before it is checked and set aside. Bounds the
/// work of rebuilding a chunk that holds a bad record, and keeps checks vectorised.
pub const CHUNK_ROWS: usize = 4096;

/// Everything records of one writer version share, worked out once per fingerprint.
pub struct WriterPlan {
    pub fingerprint: u64,
    /// `event@fingerprint`: file names move when versions do, this always names one schema.
    pub label: String,
    /// The lake columns of this version (every one nullable).
    pub fields: Fields,
    version: Arc<SchemaVersion>,
    /// apache-avro's exact decoder, built only when a chunk needs repairing.
    exact: OnceLock<Result<WriterDecoder, Reject>>,
    /// A decoder left clean by the last chunk, for the next one.
    spare: Mutex<Option<Decoder>>,
}

impl WriterPlan {
    pub fn new(version: &Arc<SchemaVersion>) -> Result<Self, Reject> {
        let fields = record_fields(&version.schema).map_err(|e| Reject::new("unsupported_schema", e.to_string()))?;
        let plan = Self {
            fingerprint: version.fingerprint,
            label: format!("{}@{:016x}", version.event, version.fingerprint),
            fields,
            version: version.clone(),
            exact: OnceLock::new(),
            spare: Mutex::new(None),
        };
        // Refuse a version arrow-avro cannot read before any of its records is accepted.
        plan.decoder()?;
        Ok(plan)
    }

    fn decoder(&self) -> Result<Decoder, Reject> {
        let unsupported = |e: arrow::error::ArrowError| Reject::new("unsupported_schema", e.to_string());
        let mut store = SchemaStore::new();
        store
            .set(
                Fingerprint::Rabin(self.fingerprint),
                AvroSchema::new(self.version.json.clone()),
            )
            .map_err(unsupported)?;
        ReaderBuilder::new()
            .with_batch_size(CHUNK_ROWS)
            .with_writer_schema_store(store)
            .with_tz(arrow_avro::codec::Tz::Utc)
            .build_decoder()
            .map_err(unsupported)
    }

    fn exact(&self) -> &Result<WriterDecoder, Reject> {
        self.exact.get_or_init(|| {
            WriterDecoder::new(self.version.clone()).map_err(|e| Reject::new("unsupported_schema", e.to_string()))
        })
    }

    /// A record whose last ten bytes are a header naming this version would leave the
    /// decoder waiting for a body that is not there, so such records take the exact path.
    fn ends_with_own_header(&self, payload: &[u8]) -> bool {
        let n = payload.len();
        n >= 20 && payload[n - 10..n - 8] == MAGIC && payload[n - 8..] == self.fingerprint.to_le_bytes()
    }

    /// Arrow-avro's columns cast to the lake's column types (timestamps in microseconds,
    /// enums as strings, every field nullable), so every raw table keeps one schema.
    fn conform(&self, decoded: RecordBatch) -> Result<RecordBatch, String> {
        let rows = decoded.num_rows();
        if decoded.num_columns() != self.fields.len() {
            return Err(format!(
                "decoder gave {} columns for {} fields",
                decoded.num_columns(),
                self.fields.len()
            ));
        }
        let columns = decoded
            .columns()
            .iter()
            .zip(self.fields.iter())
            .map(|(column, field)| conform_column(column, field))
            .collect::<Result<Vec<_>, _>>()?;
        let schema = Arc::new(ArrowSchema::new(self.fields.clone()));
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema, columns, &options).map_err(|e| e.to_string())
    }
}

fn conform_column(column: &ArrayRef, field: &Field) -> Result<ArrayRef, String> {
    if column.data_type() == field.data_type() {
        return Ok(column.clone());
    }
    arrow::compute::cast(column, field.data_type()).map_err(|e| format!("field {}: {e}", field.name()))
}

/// Records of one writer version decoded so far in one batch.
pub struct Chunk {
    pub plan: Arc<WriterPlan>,
    decoder: Option<Decoder>,
    /// The originals index of every record pushed, in order.
    pub rows: Vec<u32>,
    /// A record failed: the decoder's state is unknown and the chunk is rebuilt at the end.
    broken: bool,
}

/// A chunk's result: rows in lake types (row i came from `rows[i]`), and the records
/// that could not be decoded, with why.
pub struct Decoded {
    pub batch: RecordBatch,
    pub rows: Vec<u32>,
    pub rejected: Vec<(u32, Reject)>,
}

impl Chunk {
    /// A chunk, reusing the decoder a previous chunk of this version left clean.
    pub fn new(plan: Arc<WriterPlan>) -> Self {
        let decoder = plan.spare.lock().ok().and_then(|mut d| d.take());
        Self {
            plan,
            decoder,
            rows: Vec::with_capacity(CHUNK_ROWS),
            broken: false,
        }
    }

    pub fn is_full(&self) -> bool {
        self.rows.len() >= CHUNK_ROWS
    }

    pub fn push(&mut self, index: u32, payload: &[u8]) {
        self.rows.push(index);
        if self.broken {
            return;
        }
        if self.decoder.is_none() {
            self.decoder = self.plan.decoder().ok();
        }
        let Some(decoder) = self.decoder.as_mut() else {
            self.broken = true;
            return;
        };
        let before = decoder.capacity();
        let whole = match decoder.decode(payload) {
            Ok(n) => n == payload.len() && before - decoder.capacity() == 1,
            Err(_) => false,
        };
        if !whole || self.plan.ends_with_own_header(payload) {
            self.broken = true;
        }
    }

    /// Decodes what the chunk holds; a decoder still in a known state goes back to the
    /// plan for the next chunk.
    pub fn finish(mut self, originals: &Originals) -> Decoded {
        if !self.broken
            && let Some(decoder) = self.decoder.as_mut()
        {
            let flushed = decoder.flush().map_err(|e| e.to_string()).and_then(|b| match b {
                Some(b) => self.plan.conform(b),
                None => Ok(RecordBatch::new_empty(Arc::new(ArrowSchema::new(
                    self.plan.fields.clone(),
                )))),
            });
            if let Ok(batch) = flushed
                && batch.num_rows() == self.rows.len()
            {
                if let (Ok(mut spare), Some(d)) = (self.plan.spare.lock(), self.decoder.take()) {
                    *spare = Some(d);
                }
                return Decoded {
                    batch,
                    rows: self.rows,
                    rejected: Vec::new(),
                };
            }
        }
        self.repair(originals)
    }

    /// Record by record: apache-avro says whether each is valid and why not; the valid
    /// ones are decoded alone, so one failure cannot touch another record's row.
    fn repair(self, originals: &Originals) -> Decoded {
        let plan = &self.plan;
        let mut parts = Vec::new();
        let mut rows = Vec::new();
        let mut rejected = Vec::new();
        let mut decoder = plan.decoder().ok();
        for index in self.rows {
            let Some(original) = originals.get(index as usize) else {
                continue;
            };
            let payload = original.payload;
            match plan.exact() {
                Err(r) => {
                    rejected.push((index, r.clone()));
                    continue;
                }
                Ok(exact) => {
                    if let Err(e) = exact.decode(payload) {
                        rejected.push((index, Reject::new(e.class(), e.to_string())));
                        continue;
                    }
                }
            }
            match decode_one(plan, decoder.take(), payload) {
                Ok((batch, d)) => {
                    parts.push(batch);
                    rows.push(index);
                    decoder = Some(d);
                }
                Err(message) => rejected.push((
                    index,
                    Reject::new("malformed_body", format!("{}: {message}", plan.label)),
                )),
            }
        }
        let schema = Arc::new(ArrowSchema::new(plan.fields.clone()));
        let batch = match arrow::compute::concat_batches(&schema, &parts) {
            Ok(b) => b,
            Err(e) => {
                // Each part has the plan's schema, so this is a bug; nothing is lost.
                let reject = Reject::new("write_failed", format!("cannot join decoded rows: {e}"));
                rejected.extend(rows.drain(..).map(|i| (i, reject.clone())));
                RecordBatch::new_empty(schema)
            }
        };
        rejected.sort_by_key(|(i, _)| *i);
        Decoded { batch, rows, rejected }
    }
}

/// One record alone into a one-row batch; the decoder comes back only when it is clean.
fn decode_one(plan: &WriterPlan, decoder: Option<Decoder>, payload: &[u8]) -> Result<(RecordBatch, Decoder), String> {
    let mut decoder = match decoder {
        Some(d) => d,
        None => plan.decoder().map_err(|r| r.message)?,
    };
    if plan.ends_with_own_header(payload) {
        return Err("the record ends with another record's header".into());
    }
    let n = decoder.decode(payload).map_err(|e| e.to_string())?;
    if n != payload.len() {
        return Err(format!("{} of {} bytes decoded", n, payload.len()));
    }
    let batch = decoder.flush().map_err(|e| e.to_string())?.ok_or("no row decoded")?;
    if batch.num_rows() != 1 {
        return Err(format!("{} rows from one record", batch.num_rows()));
    }
    Ok((plan.conform(batch)?, decoder))
}
