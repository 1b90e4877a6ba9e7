//! The served lists: the newest `recs.customer` record per customer, decoded once when it
//! arrives and held with its strings shared, with the position in the topic it reflects
//! (what a snapshot records).

use crate::codec::SchemaSet;
use apache_avro::types::Value;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

/// One recommended product as the site gets it: the shape of a related product on
/// `recs.product` too, so both topics' items decode through [`item`].
pub use crate::recommend::products::Related as Item;

/// A customer's current list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub customer_id: String,
    pub list_id: String,
    pub generated_at_ms: i64,
    pub model_version: String,
    pub items: Vec<Item>,
}

impl List {
    /// Reads a `recommendation` record (any schema version the set knows).
    pub fn decode(schemas: &SchemaSet, payload: &[u8]) -> Result<Self, String> {
        let value = schemas.decode(payload, "recommendation").map_err(|e| e.to_string())?;
        let Value::Record(fields) = value else {
            return Err("a recommendation is a record".into());
        };
        let mut fields: HashMap<String, Value> = fields.into_iter().collect();
        let mut take = |name: &str| fields.remove(name).ok_or_else(|| format!("no field {name}"));
        let items = match take("items")? {
            Value::Array(items) => items.into_iter().map(item).collect::<Result<Vec<_>, _>>()?,
            _ => return Err("items is not an array".into()),
        };
        Ok(Self {
            customer_id: string(take("customer_id")?)?,
            list_id: string(take("list_id")?)?,
            generated_at_ms: millis(take("generated_at")?)?,
            model_version: string(take("model_version")?)?,
            items,
        })
    }
}

pub(super) fn string(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("expected a string, found {other:?}")),
    }
}

pub(super) fn millis(v: Value) -> Result<i64, String> {
    match v {
        Value::TimestampMillis(ms) | Value::Long(ms) => Ok(ms),
        other => Err(format!("expected a time in milliseconds, found {other:?}")),
    }
}

/// One listed product: a record of `product_id`, `score` and `reasons` (other fields,
/// such as `rank`, are not served).
pub(super) fn item(v: Value) -> Result<Item, String> {
    let Value::Record(fields) = v else {
        return Err("an item is a record".into());
    };
    let (mut product_id, mut score, mut reasons) = (None, None, Vec::new());
    for (name, v) in fields {
        match (name.as_str(), v) {
            ("product_id", Value::String(s)) => product_id = Some(s),
            ("score", Value::Double(d)) => score = Some(d),
            ("reasons", Value::Array(rs)) => reasons = rs.into_iter().map(string).collect::<Result<_, _>>()?,
            _ => {}
        }
    }
    Ok(Item {
        product_id: product_id.ok_or("an item without product_id")?,
        score: score.ok_or("an item without score")?,
        reasons,
    })
}

/// A list as held in memory: product ids, reasons and model versions are shared across
/// lists (interned), which is most of a list's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub customer_id: Arc<str>,
    pub list_id: Box<str>,
    pub generated_at_ms: i64,
    pub model_version: Arc<str>,
    pub items: Box<[HeldItem]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeldItem {
    pub product_id: Arc<str>,
    pub score: f64,
    pub reasons: Arc<[Arc<str>]>,
}

impl Held {
    /// The list as it was decoded (for snapshots and tests).
    pub fn to_list(&self) -> List {
        List {
            customer_id: self.customer_id.to_string(),
            list_id: self.list_id.to_string(),
            generated_at_ms: self.generated_at_ms,
            model_version: self.model_version.to_string(),
            items: self
                .items
                .iter()
                .map(|i| Item {
                    product_id: i.product_id.to_string(),
                    score: i.score,
                    reasons: i.reasons.iter().map(|r| r.to_string()).collect(),
                })
                .collect(),
        }
    }
}

/// Shared strings and reason sets. It only grows: its entries are bounded by the
/// catalogue and the reason vocabulary, not by the customers.
#[derive(Debug, Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    sets: HashSet<Arc<[Arc<str>]>>,
}

impl Interner {
    fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    fn set(&mut self, reasons: &[String]) -> Arc<[Arc<str>]> {
        let set: Vec<Arc<str>> = reasons.iter().map(|r| self.string(r)).collect();
        if let Some(found) = self.sets.get(set.as_slice()) {
            return found.clone();
        }
        let shared: Arc<[Arc<str>]> = Arc::from(set);
        self.sets.insert(shared.clone());
        shared
    }

    fn hold(&mut self, list: List) -> Held {
        Held {
            customer_id: Arc::from(list.customer_id),
            list_id: list.list_id.into_boxed_str(),
            generated_at_ms: list.generated_at_ms,
            model_version: self.string(&list.model_version),
            items: list
                .items
                .iter()
                .map(|i| HeldItem {
                    product_id: self.string(&i.product_id),
                    score: i.score,
                    reasons: self.set(&i.reasons),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    lists: HashMap<Arc<str>, Arc<Held>>,
    /// Next offset to read, per partition: what `lists` reflects.
    next: BTreeMap<i32, i64>,
    interner: Interner,
}

/// Shared by the follower (writes) and the HTTP handlers (read).
#[derive(Debug, Default, Clone)]
pub struct Store(Arc<RwLock<State>>);

pub use super::follow::Change;

impl super::follow::Sink for Store {
    type Record = List;

    fn decode(schemas: &SchemaSet, payload: &[u8]) -> Result<List, String> {
        List::decode(schemas, payload)
    }

    fn apply(&self, partition: i32, next: i64, changes: Vec<Change<List>>) {
        Store::apply(self, partition, next, changes)
    }

    fn positions(&self) -> BTreeMap<i32, i64> {
        Store::positions(self)
    }

    fn held(&self) -> usize {
        Store::len(self)
    }
}

impl Store {
    pub fn get(&self, customer: &str) -> Option<Arc<Held>> {
        let state = self.0.read().unwrap_or_else(PoisonError::into_inner);
        state.lists.get(customer).cloned()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies records read from one partition up to `next` (exclusive), under one lock.
    pub fn apply(&self, partition: i32, next: i64, changes: Vec<Change<List>>) {
        let mut state = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            match change {
                Change::Put(list) => {
                    let held = state.interner.hold(list);
                    state.lists.insert(held.customer_id.clone(), Arc::new(held));
                }
                Change::Remove(customer) => {
                    state.lists.remove(customer.as_str());
                }
            }
        }
        let at = state.next.entry(partition).or_insert(0);
        *at = (*at).max(next);
    }

    pub fn positions(&self) -> BTreeMap<i32, i64> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).next.clone()
    }

    /// Every list and the positions they reflect, taken together (for a snapshot).
    pub fn consistent_copy(&self) -> (Vec<Arc<Held>>, BTreeMap<i32, i64>) {
        let state = self.0.read().unwrap_or_else(PoisonError::into_inner);
        (state.lists.values().cloned().collect(), state.next.clone())
    }

    /// Starts from a snapshot's lists and positions.
    pub fn restore(&self, lists: Vec<List>, next: BTreeMap<i32, i64>) {
        let mut state = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        state.lists = lists
            .into_iter()
            .map(|l| {
                let held = state.interner.hold(l);
                (held.customer_id.clone(), Arc::new(held))
            })
            .collect();
        state.next = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json::to_avro;

    #[test]
    fn a_published_list_decodes_to_what_is_served() {
        let schemas = SchemaSet::load_strict(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")).unwrap();
        let version = schemas.current("recommendation").unwrap();
        let json = serde_json::json!({"customer_id": "c-1", "list_id": "l-1", "generated_at": 1_700_000_000_000i64,
            "valid_until": 1_700_086_400_000i64, "model_version": "m-3",
            "items": [{"product_id": "p-9", "rank": 1, "score": 0.75, "reasons": ["new_homeowner"], "propensity": 0.5}]});
        let payload = crate::codec::encode_with(version, to_avro(&json, &version.schema).unwrap()).unwrap();
        let list = List::decode(&schemas, &payload).unwrap();
        assert_eq!(list.generated_at_ms, 1_700_000_000_000);
        assert_eq!(
            list.items,
            vec![Item {
                product_id: "p-9".into(),
                score: 0.75,
                reasons: vec!["new_homeowner".into()],
            }]
        );
        assert!(List::decode(&schemas, b"not avro").is_err());
    }
}
