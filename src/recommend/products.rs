//! Related products per product, for the site's product pages: `mart.product_neighbour`
//! (the top co-bought and co-viewed products of each product) -> one record per product on
//! `recs.product` (compacted, key = product id) with a "similar" list (viewed by the same
//! customers) and a "bought together" list (bought by the same customers).
//!
//! `hoffrec refresh` runs a [`Publisher`] every round: when the mart has a new version it
//! reads the whole mart (at most 20 rows per product), and publishes only the products
//! whose lists changed since it last published them, and a tombstone for a product that
//! lost all its neighbours. A restarted publisher publishes every product once again;
//! the topic is compacted, so that costs one record per product.

use crate::codec::SchemaVersion;
use crate::lake::LakeUrl;
use apache_avro::types::Value;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How many related products each list keeps.
pub const MAX_RELATED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ProductsError {
    #[error("cannot read mart.product_neighbour: {0}")]
    Read(String),
    #[error("cannot encode a product's lists: {0}")]
    Encode(#[from] crate::codec::CodecError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Related {
    pub product_id: String,
    pub score: f64,
    pub reasons: Vec<String>,
}

/// One product's record on `recs.product`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductLists {
    pub product_id: String,
    pub generated_at_ms: i64,
    pub mart_version: i64,
    pub similar: Vec<Related>,
    pub bought_together: Vec<Related>,
}

#[derive(Debug, Deserialize)]
pub struct Row {
    pub product_id: String,
    pub neighbour_id: String,
    pub co_viewers: Option<i64>,
    pub co_buyers: Option<i64>,
}

/// Each product's two lists from its neighbour rows: by shared viewers and by shared
/// buyers, most shared first (ties by id, so equal data gives equal lists).
pub fn lists(rows: Vec<Row>) -> BTreeMap<String, (Vec<Related>, Vec<Related>)> {
    let mut by_product: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for row in rows.into_iter().filter(|r| r.product_id != r.neighbour_id) {
        by_product.entry(row.product_id.clone()).or_default().push(row);
    }
    by_product
        .into_iter()
        .filter_map(|(product, rows)| {
            let ranked = |count: fn(&Row) -> i64, other: fn(&Row) -> i64, reason: &str| {
                let mut shared: Vec<&Row> = rows.iter().filter(|r| count(r) > 0).collect();
                shared
                    .sort_by(|a, b| (count(b), other(b), &a.neighbour_id).cmp(&(count(a), other(a), &b.neighbour_id)));
                shared
                    .into_iter()
                    .take(MAX_RELATED)
                    .map(|r| Related {
                        product_id: r.neighbour_id.clone(),
                        score: count(r) as f64,
                        reasons: vec![format!("{reason}:{}", count(r))],
                    })
                    .collect::<Vec<_>>()
            };
            let viewers = |r: &Row| r.co_viewers.unwrap_or(0);
            let buyers = |r: &Row| r.co_buyers.unwrap_or(0);
            let similar = ranked(viewers, buyers, "viewed_together");
            let bought = ranked(buyers, viewers, "bought_together");
            (!similar.is_empty() || !bought.is_empty()).then_some((product, (similar, bought)))
        })
        .collect()
}

/// The mart's rows and version; `None` while it does not exist.
pub async fn read(lake: &LakeUrl) -> Result<Option<(u64, Vec<Row>)>, ProductsError> {
    let (ctx, _, versions) = crate::mart::session::mart_session(lake, &["product_neighbour".to_string()])
        .await
        .map_err(|e| ProductsError::Read(e.to_string()))?;
    let Some(&version) = versions.get("product_neighbour") else {
        return Ok(None);
    };
    let rows = super::data::rows(
        &ctx,
        "SELECT product_id, neighbour_id, co_viewers, co_buyers FROM mart.product_neighbour",
    )
    .await
    .map_err(|e| ProductsError::Read(e.to_string()))?;
    Ok(Some((version, rows)))
}

fn related(items: &[Related]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|r| {
                Value::Record(vec![
                    ("product_id".into(), Value::String(r.product_id.clone())),
                    ("score".into(), Value::Double(r.score)),
                    (
                        "reasons".into(),
                        Value::Array(r.reasons.iter().cloned().map(Value::String).collect()),
                    ),
                ])
            })
            .collect(),
    )
}

pub fn encode(schema: &SchemaVersion, lists: &ProductLists) -> Result<Vec<u8>, ProductsError> {
    let value = Value::Record(vec![
        ("product_id".into(), Value::String(lists.product_id.clone())),
        ("generated_at".into(), Value::TimestampMillis(lists.generated_at_ms)),
        ("mart_version".into(), Value::Long(lists.mart_version)),
        ("similar".into(), related(&lists.similar)),
        ("bought_together".into(), related(&lists.bought_together)),
    ]);
    Ok(crate::codec::encode_with(schema, value)?)
}

/// What one round published.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Published {
    pub lists: u64,
    pub tombstones: u64,
}

/// Publishes what changed in the mart since the last round.
pub struct Publisher {
    topic: String,
    schema: Arc<SchemaVersion>,
    read_version: Option<u64>,
    published: BTreeMap<String, (Vec<Related>, Vec<Related>)>,
}

impl Publisher {
    pub fn new(topic: String, schema: Arc<SchemaVersion>) -> Self {
        Self {
            topic,
            schema,
            read_version: None,
            published: BTreeMap::new(),
        }
    }

    pub async fn round(&mut self, lake: &LakeUrl, producer: &FutureProducer) -> Result<Published, ProductsError> {
        let Some((version, rows)) = read(lake).await? else {
            return Ok(Published::default());
        };
        if self.read_version == Some(version) {
            return Ok(Published::default());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let fresh = lists(rows);
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|p| !fresh.contains_key(*p))
            .cloned()
            .collect();
        let changed: Vec<ProductLists> = fresh
            .iter()
            .filter(|(p, l)| self.published.get(*p) != Some(*l))
            .map(|(p, (similar, bought))| ProductLists {
                product_id: p.clone(),
                generated_at_ms: now,
                mart_version: i64::try_from(version).unwrap_or(i64::MAX),
                similar: similar.clone(),
                bought_together: bought.clone(),
            })
            .collect();
        let payloads = changed
            .iter()
            .map(|l| encode(&self.schema, l))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = Duration::from_secs(30);
        // Queued together, awaited together: one round is one burst, not a round trip per
        // product.
        let puts = changed.iter().zip(&payloads).map(|(l, payload)| {
            producer.send(
                FutureRecord::to(&self.topic).key(&l.product_id).payload(payload),
                timeout,
            )
        });
        for sent in futures::future::join_all(puts).await {
            sent.map_err(|(e, _)| e)?;
        }
        let tombstones = gone
            .iter()
            .map(|p| producer.send(FutureRecord::<str, [u8]>::to(&self.topic).key(p.as_str()), timeout));
        for sent in futures::future::join_all(tombstones).await {
            sent.map_err(|(e, _)| e)?;
        }
        let published = Published {
            lists: changed.len() as u64,
            tombstones: gone.len() as u64,
        };
        self.published = fresh;
        self.read_version = Some(version);
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: &str, n: &str, viewers: i64, buyers: i64) -> Row {
        Row {
            product_id: p.into(),
            neighbour_id: n.into(),
            co_viewers: Some(viewers),
            co_buyers: Some(buyers),
        }
    }

    #[test]
    fn similar_by_shared_viewers_and_bought_together_by_shared_buyers() {
        let out = lists(vec![
            row("sofa", "rug", 5, 0),
            row("sofa", "lamp", 9, 2),
            row("sofa", "cushion", 3, 4),
            row("sofa", "sofa", 9, 9),
            row("lonely", "x", 0, 0),
        ]);
        let (similar, bought) = &out["sofa"];
        let ids = |l: &[Related]| l.iter().map(|r| r.product_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(similar), ["lamp", "rug", "cushion"]);
        assert_eq!(ids(bought), ["cushion", "lamp"]);
        assert_eq!(bought[0].reasons, ["bought_together:4"]);
        assert_eq!(similar[0].score, 9.0);
        assert!(!out.contains_key("lonely"), "no shared customers, no lists");
    }
}
