//! The served product pages: the newest `recs.product` record per product ("similar" and
//! "bought together"). Products are few next to customers, so a replica reads the whole
//! topic at every start instead of keeping a snapshot of it.

use super::follow::{Change, Sink};
use crate::codec::SchemaSet;
use crate::recommend::products::{ProductLists, Related};
use apache_avro::types::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

#[derive(Debug, Default)]
struct State {
    lists: HashMap<String, Arc<ProductLists>>,
    next: BTreeMap<i32, i64>,
}

#[derive(Debug, Default, Clone)]
pub struct ProductStore(Arc<RwLock<State>>);

impl ProductStore {
    pub fn get(&self, product: &str) -> Option<Arc<ProductLists>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .lists
            .get(product)
            .cloned()
    }
}

impl Sink for ProductStore {
    type Record = ProductLists;

    fn decode(schemas: &SchemaSet, payload: &[u8]) -> Result<ProductLists, String> {
        decode(schemas, payload)
    }

    fn apply(&self, partition: i32, next: i64, changes: Vec<Change<ProductLists>>) {
        let mut state = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            match change {
                Change::Put(lists) => {
                    state.lists.insert(lists.product_id.clone(), Arc::new(lists));
                }
                Change::Remove(product) => {
                    state.lists.remove(&product);
                }
            }
        }
        let at = state.next.entry(partition).or_insert(0);
        *at = (*at).max(next);
    }

    fn positions(&self) -> BTreeMap<i32, i64> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).next.clone()
    }

    fn held(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).lists.len()
    }
}

/// Reads a `product_recommendation` record.
pub fn decode(schemas: &SchemaSet, payload: &[u8]) -> Result<ProductLists, String> {
    let value = schemas
        .decode(payload, "product_recommendation")
        .map_err(|e| e.to_string())?;
    let Value::Record(fields) = value else {
        return Err("a product recommendation is a record".into());
    };
    let mut fields: HashMap<String, Value> = fields.into_iter().collect();
    let mut take = |name: &str| fields.remove(name).ok_or_else(|| format!("no field {name}"));
    Ok(ProductLists {
        product_id: super::store::string(take("product_id")?)?,
        generated_at_ms: super::store::millis(take("generated_at")?)?,
        mart_version: match take("mart_version")? {
            Value::Long(v) => v,
            _ => return Err("mart_version is not a long".into()),
        },
        similar: related(take("similar")?)?,
        bought_together: related(take("bought_together")?)?,
    })
}

fn related(value: Value) -> Result<Vec<Related>, String> {
    let Value::Array(items) = value else {
        return Err("a related list is an array".into());
    };
    items.into_iter().map(super::store::item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_product_lists_decode_to_what_is_served() {
        let schemas = SchemaSet::load_strict(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")).unwrap();
        let schema = schemas.current("product_recommendation").unwrap();
        let lists = ProductLists {
            product_id: "sofa".into(),
            generated_at_ms: 1_700_000_000_000,
            mart_version: 7,
            similar: vec![Related {
                product_id: "lamp".into(),
                score: 9.0,
                reasons: vec!["viewed_together:9".into()],
            }],
            bought_together: vec![],
        };
        let payload = crate::recommend::products::encode(schema, &lists).unwrap();
        assert_eq!(decode(&schemas, &payload).unwrap(), lists);
        let store = ProductStore::default();
        store.apply(2, 5, vec![Change::Put(lists.clone())]);
        assert_eq!(store.get("sofa").as_deref(), Some(&lists));
        store.apply(2, 6, vec![Change::Remove("sofa".into())]);
        assert!(store.get("sofa").is_none());
        assert_eq!(store.positions(), BTreeMap::from([(2, 6)]));
    }
}
