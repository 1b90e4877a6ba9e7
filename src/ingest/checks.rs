//! Cleaning and quality checks on the way into the lake. Rules come from the schema and
//! the `[ingest]` settings, not from per-topic code, so a new source gets them for free.

use crate::config::IngestConfig;
use apache_avro::types::Value;
use std::collections::{HashSet, VecDeque};

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

/// Which positions of a writer version's records hold the fields the topic's contract
/// requires, worked out once per writer version instead of by name per record.
#[derive(Debug, Clone, Default)]
pub struct RequiredPlan {
    mask: Vec<bool>,
    /// A required field this writer version does not have at all.
    absent: Option<String>,
}

impl RequiredPlan {
    pub fn new(writer_fields: &[&str], required: &[String]) -> Self {
        Self {
            mask: writer_fields.iter().map(|f| required.iter().any(|r| r == f)).collect(),
            absent: required.iter().find(|r| !writer_fields.contains(&r.as_str())).cloned(),
        }
    }
}

pub struct Rules {
    non_negative_suffixes: Vec<String>,
    lowercase_fields: Vec<String>,
    max_future_ms: i64,
    min_event_time_ms: i64,
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

    /// Normalises strings in place (trim; lower-case where configured) and checks
    /// required fields, signs and timestamps.
    pub fn clean(&self, value: &mut Value, plan: &RequiredPlan, now_ms: i64) -> Result<(), Reject> {
        let Value::Record(fields) = value else {
            return Err(Reject::new("not_a_record", "a raw event must be an Avro record"));
        };
        if let Some(name) = &plan.absent {
            return Err(Reject::new("missing_required_field", format!("{name} is missing")));
        }
        for (pos, (name, v)) in fields.iter_mut().enumerate() {
            let required = plan.mask.get(pos).copied().unwrap_or(false);
            if required && unwrap_union(v).is_none() {
                return Err(Reject::new("missing_required_field", format!("{name} is null")));
            }
            self.visit(name, v, now_ms)?;
            // Empty strings count as missing, checked after trimming.
            if required && unwrap_union(v).is_some_and(|v| matches!(v, Value::String(s) if s.is_empty())) {
                return Err(Reject::new("missing_required_field", format!("{name} is empty")));
            }
        }
        Ok(())
    }

    fn visit(&self, name: &str, value: &mut Value, now_ms: i64) -> Result<(), Reject> {
        match value {
            Value::Union(_, inner) => self.visit(name, inner, now_ms)?,
            Value::String(s) => {
                let trimmed = s.trim();
                if trimmed.len() != s.len() {
                    *s = trimmed.to_string();
                }
                if self.lowercase_fields.iter().any(|f| f == name) && s.chars().any(char::is_uppercase) {
                    *s = s.to_lowercase();
                }
            }
            Value::Int(_) | Value::Long(_) | Value::Float(_) | Value::Double(_) => {
                let negative = match value {
                    Value::Int(v) => *v < 0,
                    Value::Long(v) => *v < 0,
                    Value::Float(v) => *v < 0.0,
                    Value::Double(v) => *v < 0.0,
                    _ => false,
                };
                if negative && self.non_negative_suffixes.iter().any(|s| name.ends_with(s.as_str())) {
                    return Err(Reject::new(
                        "negative_value",
                        format!("{name} is {} but must not be negative", show(value)),
                    ));
                }
            }
            Value::TimestampMillis(ms) => self.check_time(name, *ms, now_ms)?,
            Value::TimestampMicros(us) => self.check_time(name, *us / 1000, now_ms)?,
            Value::Array(items) => {
                for v in items {
                    self.visit(name, v, now_ms)?;
                }
            }
            Value::Map(entries) => {
                for v in entries.values_mut() {
                    self.visit(name, v, now_ms)?;
                }
            }
            Value::Record(fields) => {
                for (n, v) in fields.iter_mut() {
                    self.visit(n, v, now_ms)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_time(&self, name: &str, ms: i64, now_ms: i64) -> Result<(), Reject> {
        if ms > now_ms.saturating_add(self.max_future_ms) || ms < self.min_event_time_ms {
            let when = chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| ms.to_string());
            return Err(Reject::new(
                "timestamp_out_of_range",
                format!("{name} = {when} is in the far future or before the accepted range"),
            ));
        }
        Ok(())
    }
}

fn unwrap_union(v: &Value) -> Option<&Value> {
    match v {
        Value::Union(_, inner) => unwrap_union(inner),
        Value::Null => None,
        other => Some(other),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Int(x) => x.to_string(),
        Value::Long(x) => x.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        other => format!("{other:?}"),
    }
}

/// The value of a top-level string field (the event id, the event time).
pub fn top_level<'a>(value: &'a Value, field: &str) -> Option<&'a Value> {
    match value {
        Value::Record(fields) => fields
            .iter()
            .find(|(n, _)| n == field)
            .and_then(|(_, v)| unwrap_union(v)),
        _ => None,
    }
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

/// Event ids that already landed, bounded: the oldest are forgotten first.
#[derive(Default)]
pub struct Horizon {
    capacity: usize,
    set: IdSet,
    order: VecDeque<u64>,
}

impl Horizon {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Default::default()
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        self.set.contains(&id)
    }

    /// Remembers ids of a batch that has committed; ids of abandoned batches never get here,
    /// so their re-delivery is not mistaken for a duplicate.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = u64>) {
        if self.capacity == 0 {
            return;
        }
        for id in ids {
            if self.set.insert(id) {
                self.order.push_back(id);
            }
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(&IngestConfig::default())
    }

    fn record(fields: Vec<(&str, Value)>) -> Value {
        Value::Record(fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect())
    }

    const NOW: i64 = 1_790_000_000_000;

    fn plan(v: &Value) -> RequiredPlan {
        let Value::Record(fields) = v else { panic!() };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        RequiredPlan::new(&names, &["customer_id".into()])
    }

    #[test]
    fn trims_and_lowercases() {
        let mut v = record(vec![
            ("customer_id", Value::String("  c1 ".into())),
            (
                "email",
                Value::Union(1, Box::new(Value::String(" Anna@Mail.RU ".into()))),
            ),
        ]);
        let p = plan(&v);
        rules().clean(&mut v, &p, NOW).unwrap();
        assert_eq!(top_level(&v, "customer_id"), Some(&Value::String("c1".into())));
        assert_eq!(top_level(&v, "email"), Some(&Value::String("anna@mail.ru".into())));
    }

    #[test]
    fn rejects_with_classes() {
        let cases = [
            (
                record(vec![("customer_id", Value::String("   ".into()))]),
                "missing_required_field",
            ),
            (
                record(vec![
                    ("customer_id", Value::String("c".into())),
                    (
                        "lines",
                        Value::Array(vec![record(vec![("price_kopecks", Value::Long(-5))])]),
                    ),
                ]),
                "negative_value",
            ),
            (
                record(vec![
                    ("customer_id", Value::String("c".into())),
                    ("event_time", Value::TimestampMillis(NOW + 3 * 86_400_000)),
                ]),
                "timestamp_out_of_range",
            ),
        ];
        for (mut v, class) in cases {
            let p = plan(&v);
            assert_eq!(rules().clean(&mut v, &p, NOW).unwrap_err().class, class);
        }
    }

    #[test]
    fn horizon_forgets_oldest() {
        let mut h = Horizon::new(2);
        h.extend(["a", "b", "c"].map(id_hash));
        assert!(!h.contains(id_hash("a")) && h.contains(id_hash("b")) && h.contains(id_hash("c")));
    }
}
