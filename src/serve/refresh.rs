//! `hoffrec refresh`: asks for new lists when what a list depends on changed, not only
//! the portrait. It follows `recs.customer` like a serving replica and, every
//! `serve.refresh_interval_ms`, announces on `mart.changes` (where `recommend` takes them
//! like any portrait change) the customers whose list
//!
//! 1. holds a product the newest catalogue cannot sell (out of stock, withdrawn);
//! 2. was ranked by a model older than the promoted one;
//! 3. is older than `serve.max_list_age_ms`;
//!
//! in that order, and within each the most recently refreshed lists first: a list that was
//! made again lately belongs to a customer who is active. At most
//! `serve.refresh_max_per_interval` per interval, so a promotion does not flood the
//! ranker. Run one instance: two announce the same customers twice.
//!
//! Each round it also publishes the product pages' related products to `recs.product`
//! when `mart.product_neighbour` has a new version (`crate::recommend::products`).

use super::catalogue::{self, Catalogue};
use super::store::{Held, Store};
use super::{ServeError, follow};
use crate::catalog::{Catalog, Role};
use crate::config::Config;
use crate::telemetry::Telemetry;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a list is made again (the `mart` field of the announcement says it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    Unsellable,
    Model,
    Age,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Unsellable => "refresh:unsellable",
            Why::Model => "refresh:model",
            Why::Age => "refresh:age",
        }
    }
}

/// The customers to announce now, by reason then recency, at most `max`; `asked` holds
/// lists already announced (by their list id), which are not asked for again.
pub fn due(
    lists: &[Arc<Held>],
    catalogue: &Catalogue,
    model: Option<&str>,
    oldest_ms: i64,
    asked: &HashMap<Arc<str>, Box<str>>,
    max: usize,
) -> Vec<(Why, Arc<str>)> {
    let mut due: Vec<(Why, i64, Arc<str>)> = lists
        .iter()
        .filter(|l| asked.get(&l.customer_id).is_none_or(|id| **id != *l.list_id))
        .filter_map(|l| {
            let why = if l.items.iter().any(|i| !catalogue.sellable(&i.product_id)) {
                Why::Unsellable
            } else if model.is_some_and(|m| m != &*l.model_version) {
                Why::Model
            } else if l.generated_at_ms < oldest_ms {
                Why::Age
            } else {
                return None;
            };
            Some((why, l.generated_at_ms, l.customer_id.clone()))
        })
        .collect();
    due.sort_by(|a, b| (a.0, std::cmp::Reverse(a.1), &a.2).cmp(&(b.0, std::cmp::Reverse(b.1), &b.2)));
    due.into_iter().take(max).map(|(why, _, c)| (why, c)).collect()
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub announced: HashMap<Why, u64>,
    pub rounds: u64,
    pub product_lists: u64,
    pub product_tombstones: u64,
}

pub async fn run(
    config: &Config,
    catalog: Catalog,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> Result<Summary, ServeError> {
    let lists_topic = catalog.require(Role::Recommendations)?.name.clone();
    let changes = catalog.require(Role::MartChanges)?.name.clone();
    let product_topic = catalog.require(Role::ProductRecommendations)?.name.clone();
    let lake = crate::lake::LakeUrl::with_settings(&config.lake.url, &config.lake.hdfs_options)
        .map_err(|e| ServeError::Lake(e.to_string()))?;
    let s = &config.serve;
    let store = Store::default();
    let schemas = Arc::new(catalog.schemas);
    let follower = {
        let (kafka, topic, store, metrics, stop) = (
            config.kafka.clone(),
            lists_topic.clone(),
            store.clone(),
            telemetry.serve.clone(),
            shutdown.clone(),
        );
        let schemas = schemas.clone();
        let ready = telemetry.clone();
        tokio::spawn(async move {
            follow::run(
                &kafka,
                &topic,
                schemas,
                store,
                (metrics.records, metrics.lists),
                move || ready.set_ready(true),
                stop,
            )
            .await
        })
    };
    let producer: FutureProducer = crate::kafka::client_config(&config.kafka)
        .set("enable.idempotence", "true")
        .create()?;
    let version = schemas
        .current("mart_change")
        .ok_or_else(|| ServeError::Lake("no mart_change schema".into()))?
        .clone();
    let product_schema = schemas
        .current("product_recommendation")
        .ok_or_else(|| ServeError::Lake("no product_recommendation schema".into()))?
        .clone();
    let mut products = crate::recommend::products::Publisher::new(product_topic, product_schema);
    let mut asked: HashMap<Arc<str>, Box<str>> = HashMap::new();
    let mut summary = Summary::default();
    let every = Duration::from_millis(s.refresh_interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        match products.round(&lake, &producer).await {
            Ok(p) => {
                summary.product_lists += p.lists;
                summary.product_tombstones += p.tombstones;
                if p.lists + p.tombstones > 0 {
                    tracing::info!(lists = p.lists, tombstones = p.tombstones, "related products published");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot publish related products; trying next round"),
        }
        let catalogue = match catalogue::read(&lake).await {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalogue; skipping this round");
                continue;
            }
        };
        let model = match crate::recommend::store::current(&lake).await {
            Ok(m) => m.map(|m| m.version),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the promoted model; skipping this round");
                continue;
            }
        };
        let (lists, _) = store.consistent_copy();
        let now = chrono::Utc::now().timestamp_millis();
        let oldest = now.saturating_sub(i64::try_from(s.max_list_age_ms).unwrap_or(i64::MAX));
        // A list made again since it was asked for is done; forget those.
        let current: HashMap<&Arc<str>, &str> = lists.iter().map(|l| (&l.customer_id, &*l.list_id)).collect();
        asked.retain(|c, id| current.get(c).is_some_and(|now| *now == &**id));
        let due = due(
            &lists,
            &catalogue,
            model.as_deref(),
            oldest,
            &asked,
            s.refresh_max_per_interval,
        );
        summary.rounds += 1;
        if due.is_empty() {
            continue;
        }
        let span = tracing::info_span!("refresh_round", customers = due.len());
        for (why, customer) in &due {
            let value = apache_avro::types::Value::Record(vec![
                (
                    "customer_id".into(),
                    apache_avro::types::Value::String(customer.to_string()),
                ),
                ("mart".into(), apache_avro::types::Value::String(why.as_str().into())),
                ("mart_version".into(), apache_avro::types::Value::Long(0)),
                ("changed_at".into(), apache_avro::types::Value::TimestampMillis(now)),
            ]);
            let payload = crate::codec::encode_with(&version, value).map_err(|e| ServeError::Lake(e.to_string()))?;
            let record = FutureRecord::to(&changes).key(&**customer).payload(&payload);
            crate::kafka::send_and_wait(&producer, record, Duration::from_secs(30)).await?;
            *summary.announced.entry(*why).or_default() += 1;
            if let Some(list) = lists.iter().find(|l| &l.customer_id == customer) {
                asked.insert(customer.clone(), list.list_id.clone());
            }
        }
        span.in_scope(|| tracing::info!(announced = ?summary.announced, "lists asked for again"));
    }
    follower.abort();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::store::{Change, Item, List};

    fn list(customer: &str, at: i64, model: &str, products: &[&str]) -> List {
        List {
            customer_id: customer.into(),
            list_id: format!("l-{customer}-{at}"),
            generated_at_ms: at,
            model_version: model.into(),
            items: products
                .iter()
                .map(|p| Item {
                    product_id: p.to_string(),
                    score: 1.0,
                    reasons: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn unsellable_first_then_the_old_model_then_age_most_recent_first() {
        let store = Store::default();
        store.apply(
            0,
            5,
            vec![
                Change::Put(list("fresh", 900, "m2", &["p1"])),
                Change::Put(list("old-model-quiet", 100, "m1", &["p1"])),
                Change::Put(list("old-model-active", 800, "m1", &["p1"])),
                Change::Put(list("stale", 50, "m2", &["p1"])),
                Change::Put(list("gone", 700, "m2", &["p1", "withdrawn"])),
            ],
        );
        let (lists, _) = store.consistent_copy();
        let catalogue = Catalogue::for_tests(&["p1"]);
        let mut asked = HashMap::new();
        let names = |d: Vec<(Why, Arc<str>)>| d.into_iter().map(|(w, c)| (w, c.to_string())).collect::<Vec<_>>();
        let all = names(due(&lists, &catalogue, Some("m2"), 60, &asked, 10));
        assert_eq!(
            all,
            [
                (Why::Unsellable, "gone".into()),
                (Why::Model, "old-model-active".into()),
                (Why::Model, "old-model-quiet".into()),
                (Why::Age, "stale".into()),
            ]
        );
        assert_eq!(due(&lists, &catalogue, Some("m2"), 60, &asked, 2).len(), 2, "capped");
        // Asked for and not made again yet: not asked twice.
        asked.insert(Arc::from("gone"), Box::from("l-gone-700"));
        assert_eq!(
            due(&lists, &catalogue, Some("m2"), 60, &asked, 10)[0].1.as_ref(),
            "old-model-active"
        );
    }
}
