//! Cleaning and quality checks on the way into the lake. Rules come from the schema and
//! the `[ingest]` settings, not from per-topic code, so a new source gets them for free.

use crate::config::IngestConfig;
use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, ListArray, MapArray, PrimitiveArray, RecordBatch, RecordBatchOptions,
    StringArray, StructArray,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use std::collections::HashSet;
use std::sync::Arc;

/// Why a record was turned away; `class` is the dead-letter header and metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub class: &'static str,
    pub message: String,
}

impl Reject {
    pub fn new(class: &'static str, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

pub struct Rules {
    non_negative_suffixes: Vec<String>,
    lowercase_fields: Vec<String>,
    max_future_ms: i64,
    min_event_time_ms: i64,
}

/// Per row of a chunk, the first reason it cannot land (`None`: it can).
pub type Verdicts = Vec<Option<Reject>>;

/// Marks an element of a nested array whose top-level row is null somewhere above it:
/// its values are fillers, not data, and are never checked.
const MASKED: u32 = u32::MAX;

/// Which top-level row each element of a (nested) array belongs to; `None` at the top.
type Owners<'a> = Option<&'a [u32]>;

fn owner(owners: Owners<'_>, i: usize) -> u32 {
    owners.map_or(i as u32, |o| o[i])
}

fn mark(verdicts: &mut [Option<Reject>], row: u32, reject: impl FnOnce() -> Reject) {
    if row != MASKED
        && let Some(slot) = verdicts.get_mut(row as usize)
        && slot.is_none()
    {
        *slot = Some(reject());
    }
}

impl Rules {
    pub fn new(config: &IngestConfig) -> Self {
        Self {
            non_negative_suffixes: config.non_negative_suffixes.clone(),
            lowercase_fields: config.lowercase_fields.clone(),
            max_future_ms: i64::try_from(config.max_future_ms).unwrap_or(i64::MAX),
            min_event_time_ms: config.min_event_time_ms,
        }
    }

    /// Normalises strings (trim; lower-case where configured) and checks required fields,
    /// signs and timestamps, a column at a time. Returns the cleaned rows and, per row, the
    /// first rule it breaks, in field order.
    pub fn apply(&self, batch: &RecordBatch, required: &[String], now_ms: i64) -> (RecordBatch, Verdicts) {
        let rows = batch.num_rows();
        let mut verdicts: Verdicts = vec![None; rows];
        let schema = batch.schema();
        if let Some(absent) = required.iter().find(|r| schema.column_with_name(r).is_none()) {
            let reject = Reject::new("missing_required_field", format!("{absent} is missing"));
            verdicts.iter_mut().for_each(|v| *v = Some(reject.clone()));
            return (batch.clone(), verdicts);
        }
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let name = field.name();
            let is_required = required.iter().any(|r| r == name);
            if is_required && column.null_count() > 0 {
                for row in (0..rows).filter(|&r| column.is_null(r)) {
                    mark(&mut verdicts, row as u32, || {
                        Reject::new("missing_required_field", format!("{name} is null"))
                    });
                }
            }
            let cleaned = self
                .visit(name, column, None, now_ms, &mut verdicts)
                .unwrap_or_else(|| column.clone());
            // Empty strings count as missing, checked after trimming.
            if is_required && let Some(strings) = cleaned.as_string_opt::<i32>() {
                for (row, value) in strings.iter().enumerate() {
                    if value.is_some_and(str::is_empty) {
                        mark(&mut verdicts, row as u32, || {
                            Reject::new("missing_required_field", format!("{name} is empty"))
                        });
                    }
                }
            }
            columns.push(cleaned);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        match RecordBatch::try_new_with_options(schema.clone(), columns, &options) {
            Ok(cleaned) => (cleaned, verdicts),
            // Cleaning keeps every type and length, so this cannot happen; if it does,
            // the rows are turned away rather than landed uncleaned.
            Err(e) => {
                let reject = Reject::new("write_failed", format!("cleaning broke the batch: {e}"));
                verdicts.iter_mut().for_each(|v| *v = Some(reject.clone()));
                (batch.clone(), verdicts)
            }
        }
    }

    /// Cleans and checks one (possibly nested) array; `Some` when its values changed.
    fn visit(
        &self,
        name: &str,
        array: &ArrayRef,
        owners: Owners<'_>,
        now_ms: i64,
        verdicts: &mut [Option<Reject>],
    ) -> Option<ArrayRef> {
        match array.data_type() {
            DataType::Utf8 => self
                .clean_strings(name, array.as_string::<i32>())
                .map(|a| Arc::new(a) as ArrayRef),
            DataType::Int32 => self.signs(name, array.as_primitive::<Int32Type>(), owners, verdicts),
            DataType::Int64 => self.signs(name, array.as_primitive::<Int64Type>(), owners, verdicts),
            DataType::Float32 => self.signs(name, array.as_primitive::<Float32Type>(), owners, verdicts),
            DataType::Float64 => self.signs(name, array.as_primitive::<Float64Type>(), owners, verdicts),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let times = array.as_primitive::<TimestampMicrosecondType>();
                for (i, us) in times.values().iter().enumerate() {
                    let ms = us / 1000;
                    if (ms > now_ms.saturating_add(self.max_future_ms) || ms < self.min_event_time_ms)
                        && times.is_valid(i)
                    {
                        mark(verdicts, owner(owners, i), || time_reject(name, ms));
                    }
                }
                None
            }
            DataType::Struct(fields) => {
                let s = array.as_struct();
                let masked: Option<Vec<u32>> = (s.null_count() > 0).then(|| {
                    (0..s.len())
                        .map(|i| if s.is_valid(i) { owner(owners, i) } else { MASKED })
                        .collect()
                });
                let inner = masked.as_deref().or(owners);
                let mut changed = false;
                let children: Vec<ArrayRef> = fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| match self.visit(f.name(), c, inner, now_ms, verdicts) {
                        Some(new) => {
                            changed = true;
                            new
                        }
                        None => c.clone(),
                    })
                    .collect();
                if !changed {
                    return None;
                }
                StructArray::try_new(fields.clone(), children, s.nulls().cloned())
                    .ok()
                    .map(|a| Arc::new(a) as ArrayRef)
            }
            DataType::List(item) => {
                let list = array.as_list::<i32>();
                let inner = element_owners(list.value_offsets(), list.values().len(), owners, |i| list.is_valid(i));
                let values = self.visit(name, list.values(), Some(&inner), now_ms, verdicts)?;
                ListArray::try_new(item.clone(), list.offsets().clone(), values, list.nulls().cloned())
                    .ok()
                    .map(|a| Arc::new(a) as ArrayRef)
            }
            DataType::Map(entries_field, sorted) => {
                // Values are checked under the map's own name; keys are left as sent.
                let map = array.as_map();
                let inner = element_owners(map.value_offsets(), map.values().len(), owners, |i| map.is_valid(i));
                let values = self.visit(name, map.values(), Some(&inner), now_ms, verdicts)?;
                let DataType::Struct(entry_fields) = entries_field.data_type() else {
                    return None;
                };
                let entries =
                    StructArray::try_new(entry_fields.clone(), vec![map.keys().clone(), values], None).ok()?;
                MapArray::try_new(
                    entries_field.clone(),
                    map.offsets().clone(),
                    entries,
                    map.nulls().cloned(),
                    *sorted,
                )
                .ok()
                .map(|a| Arc::new(a) as ArrayRef)
            }
            _ => None,
        }
    }

    fn clean_strings(&self, name: &str, strings: &StringArray) -> Option<StringArray> {
        let lower = self.lowercase_fields.iter().any(|f| f == name);
        let dirty = |s: &str| s.trim().len() != s.len() || (lower && s.chars().any(char::is_uppercase));
        if !strings.iter().flatten().any(dirty) {
            return None;
        }
        Some(
            strings
                .iter()
                .map(|v| {
                    v.map(|s| {
                        let t = s.trim();
                        if lower { t.to_lowercase() } else { t.to_string() }
                    })
                })
                .collect(),
        )
    }

    fn signs<T>(
        &self,
        name: &str,
        values: &PrimitiveArray<T>,
        owners: Owners<'_>,
        verdicts: &mut [Option<Reject>],
    ) -> Option<ArrayRef>
    where
        T: ArrowPrimitiveType,
        T::Native: PartialOrd + Default + std::fmt::Display,
    {
        if !self.non_negative_suffixes.iter().any(|s| name.ends_with(s.as_str())) {
            return None;
        }
        let zero = T::Native::default();
        for (i, v) in values.values().iter().enumerate() {
            if *v < zero && values.is_valid(i) {
                mark(verdicts, owner(owners, i), || {
                    Reject::new("negative_value", format!("{name} is {v} but must not be negative"))
                });
            }
        }
        None
    }
}

/// Owners of a list's or map's elements: element j of parent i (offsets[i] <= j <
/// offsets[i + 1]) belongs to parent i's row; elements of null parents are masked.
fn element_owners(offsets: &[i32], elements: usize, owners: Owners<'_>, valid: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut inner = vec![MASKED; elements];
    for (i, range) in offsets.windows(2).enumerate() {
        if !valid(i) {
            continue;
        }
        let row = owner(owners, i);
        let (from, to) = (range[0].max(0) as usize, (range[1].max(0) as usize).min(elements));
        for slot in inner.iter_mut().take(to).skip(from) {
            *slot = row;
        }
    }
    inner
}

fn time_reject(name: &str, ms: i64) -> Reject {
    let when = chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| ms.to_string());
    Reject::new(
        "timestamp_out_of_range",
        format!("{name} = {when} is in the far future or before the accepted range"),
    )
}

/// Event ids are remembered by a 64-bit fixed-seed hash: an eighth of the memory of the
/// strings and no allocation per record. With 200k ids remembered, the chance that two
/// different ids ever share a hash is about 1e-9, and such a record is dead-lettered as a
/// duplicate, not lost.
pub fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x686f_6666_7265_6300).hash_one(id)
}

pub type IdSet = HashSet<u64, foldhash::fast::FixedState>;

/// Event ids of one topic already taken in: landed recently, in a batch still in flight,
/// or earlier in the batch filling. One structure for all three is one check per record.
///
/// Bounded in two generations rather than by evicting the oldest id per insert: ids go
/// into `current`; when it holds `capacity`, it becomes `previous` and the old `previous`
/// is dropped whole. So at least the last `capacity` ids (at most twice that) are known,
/// and an insert is two probes and no eviction. Both sets are sized up front and their
/// memory reused, so the per-record path never rehashes or faults in pages.
pub struct Horizon {
    capacity: usize,
    current: IdSet,
    previous: IdSet,
}

impl Horizon {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Reserving more than a few million up front would cost memory a small topic never
        // needs; past that the sets grow as usual.
        let reserve = capacity.min(4_000_000);
        Self {
            capacity,
            current: IdSet::with_capacity_and_hasher(reserve, Default::default()),
            previous: IdSet::with_capacity_and_hasher(reserve, Default::default()),
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        self.current.contains(&id) || self.previous.contains(&id)
    }

    /// Takes an id in; false when it is already known (the record is a duplicate).
    pub fn insert(&mut self, id: u64) -> bool {
        if self.previous.contains(&id) {
            return false;
        }
        if self.current.len() >= self.capacity {
            if self.current.contains(&id) {
                return false;
            }
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(id)
    }

    /// Forgets the ids of an abandoned batch, so their re-delivery lands.
    pub fn forget(&mut self, ids: &[u64]) {
        for id in ids {
            self.current.remove(id);
            self.previous.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StructArray, TimestampMicrosecondArray};
    use arrow::buffer::{NullBuffer, OffsetBuffer};
    use arrow::datatypes::{Field, Fields, Schema};

    fn rules() -> Rules {
        Rules::new(&IngestConfig::default())
    }

    const NOW: i64 = 1_790_000_000_000;
    const DAY_US: i64 = 86_400_000_000;

    /// Rows of (customer_id, email, one order line's price, event_time in µs); a `None`
    /// price makes that row's line a null struct whose filler values must not count.
    fn batch(rows: &[(&str, Option<&str>, Option<i64>, i64)]) -> RecordBatch {
        let line_fields = Fields::from(vec![Field::new("price_kopecks", DataType::Int64, true)]);
        let prices = Int64Array::from(rows.iter().map(|r| r.2.unwrap_or(-1)).collect::<Vec<_>>());
        let valid = NullBuffer::from(rows.iter().map(|r| r.2.is_some()).collect::<Vec<_>>());
        let lines = StructArray::try_new(line_fields.clone(), vec![Arc::new(prices) as ArrayRef], Some(valid)).unwrap();
        let item = Arc::new(Field::new("element", DataType::Struct(line_fields), true));
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|_| 1));
        let list = ListArray::try_new(item.clone(), offsets, Arc::new(lines), None).unwrap();
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("email", DataType::Utf8, true),
            Field::new("lines", DataType::List(item), true),
            Field::new("event_time", ts, true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(rows.iter().map(|r| Some(r.0)).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(list),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>()).with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    #[test]
    fn trims_and_lowercases() {
        let now_us = NOW * 1000;
        let b = batch(&[
            ("  c1 ", Some(" Anna@Mail.RU "), Some(5), now_us),
            ("c2", None, Some(0), now_us),
        ]);
        let (clean, verdicts) = rules().apply(&b, &["customer_id".into()], NOW);
        assert!(verdicts.iter().all(Option::is_none), "{verdicts:?}");
        let ids = clean.column(0).as_string::<i32>();
        let emails = clean.column(1).as_string::<i32>();
        assert_eq!((ids.value(0), ids.value(1)), ("c1", "c2"));
        assert_eq!(emails.value(0), "anna@mail.ru");
        assert!(emails.is_null(1));
    }

    #[test]
    fn rejects_with_classes_and_skips_null_structs() {
        let now_us = NOW * 1000;
        let b = batch(&[
            ("   ", None, Some(1), now_us),
            ("c", None, Some(-5), now_us),
            ("c", None, Some(1), now_us + 3 * DAY_US),
            ("c", None, None, now_us),
            ("c", None, Some(7), now_us),
        ]);
        let (_, verdicts) = rules().apply(&b, &["customer_id".into()], NOW);
        let classes: Vec<Option<&str>> = verdicts.iter().map(|v| v.as_ref().map(|r| r.class)).collect();
        assert_eq!(
            classes,
            [
                Some("missing_required_field"),
                Some("negative_value"),
                Some("timestamp_out_of_range"),
                None,
                None
            ]
        );
        let message = &verdicts[1].as_ref().unwrap().message;
        assert_eq!(message, "price_kopecks is -5 but must not be negative");
    }

    #[test]
    fn a_required_field_the_version_lacks_rejects_every_row() {
        let b = batch(&[("c", None, Some(1), NOW * 1000)]);
        let (_, verdicts) = rules().apply(&b, &["session_id".into()], NOW);
        assert_eq!(
            verdicts[0].as_ref().map(|r| r.message.as_str()),
            Some("session_id is missing")
        );
    }

    #[test]
    fn horizon_forgets_oldest_and_abandoned() {
        let mut h = Horizon::new(2);
        for id in ["a", "b", "c", "d", "e"].map(id_hash) {
            assert!(h.insert(id));
        }
        // The last two are always known; older ones go a generation at a time.
        assert!(!h.contains(id_hash("a")) && !h.contains(id_hash("b")));
        assert!(h.contains(id_hash("d")) && h.contains(id_hash("e")));
        assert!(
            !h.insert(id_hash("d")),
            "an id of the previous generation is a duplicate"
        );
        assert!(!h.insert(id_hash("c")), "a known id is a duplicate");
        h.forget(&[id_hash("c")]);
        assert!(h.insert(id_hash("c")), "an abandoned id lands when it comes again");
    }
}
