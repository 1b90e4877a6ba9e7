//! Recommendations: customers whose portrait changed (`mart.changes`) -> candidates from
//! the marts -> business rules -> ranker -> top K with reasons on `recs.customer`.
//!
//! `hoffrec recommend` is a consumer group over `mart.changes`: it gathers changes for
//! `recommend.batch_ms`, reads the batch's customers from the marts in one query per
//! mart, ranks, and publishes one list per customer (compacted topic, keyed by customer
//! id). The model is re-read from the lake every `recommend.model_check_ms` and swapped
//! in between batches, so no request waits for or misses a swap.

pub mod collab;
pub mod data;
pub mod evaluate;
pub mod feedback;
pub mod fit;
pub mod metrics;
pub mod model;
pub mod novel;
pub mod policy;
pub mod products;
pub mod rank;
pub mod rules;
pub mod store;
pub mod train;

use crate::catalog::{Catalog, CatalogError, Role};
use crate::config::Config;
use crate::lake::LakeUrl;
use crate::telemetry::Telemetry;
use apache_avro::types::Value;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("recommend configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot encode a recommendation: {0}")]
    Encode(#[from] crate::codec::CodecError),
}

impl RecommendError {
    /// Worth ranking the batch again: the lake or the broker was away.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Data(_) | Self::Store(_) => true,
            // A cancelled delivery means the producer is gone: ranking again cannot help.
            Self::Kafka(KafkaError::Canceled) => false,
            Self::Kafka(e) => !crate::kafka::error_is_fatal(e),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub batches: u64,
    pub customers: u64,
    pub lists: u64,
    pub model_swaps: u64,
    pub model_version: String,
}

/// What the catalogue side of ranking was read at: a new version of either mart or a new
/// collaborative model means reading it again.
#[derive(PartialEq)]
struct CatalogueKey {
    product_features: Option<u64>,
    product_neighbour: Option<u64>,
    /// The collaborative model's write stamp.
    model: Option<(i64, u64)>,
}

/// The catalogue view last read, with what it was read at.
struct CachedCatalogue {
    key: CatalogueKey,
    view: Arc<data::CatalogueView>,
}

/// What ranking needs, loaded once per process.
pub struct Recommender {
    pub lake: LakeUrl,
    pub catalog: Catalog,
    pub rules: rules::Rules,
    pub top_k: usize,
    /// EASE's regularisation and product cap when `train` refits it.
    pub ease_lambda: f64,
    pub ease_max_items: usize,
    pub als_factors: usize,
    /// How far back the marts are read for next-purchase labels (see the config).
    pub label_horizon_days: u32,
    /// Snapshots, a horizon apart, the novel head learns from (see the config).
    pub novel_cutoffs: u32,
    /// Exploration slots in published lists, and the cap on training's weights.
    pub explore: policy::Explore,
    pub max_ips_weight: f64,
    /// Read again only when one of its marts or the collaborative model is new.
    catalogue: tokio::sync::Mutex<Option<CachedCatalogue>>,
}

impl Recommender {
    pub fn new(lake: LakeUrl, catalog: Catalog, rules: rules::Rules, top_k: usize) -> Self {
        Self {
            lake,
            catalog,
            rules,
            top_k,
            ease_lambda: crate::config::RecommendConfig::default().ease_lambda,
            ease_max_items: crate::config::RecommendConfig::default().ease_max_items,
            als_factors: crate::config::RecommendConfig::default().als_factors,
            label_horizon_days: crate::config::RecommendConfig::default().train_label_horizon_days,
            novel_cutoffs: crate::config::RecommendConfig::default().train_novel_cutoffs,
            explore: policy::Explore::default(),
            max_ips_weight: crate::config::RecommendConfig::default().train_max_ips_weight,
            catalogue: tokio::sync::Mutex::new(None),
        }
    }

    pub fn load(config: &Config) -> Result<Self, RecommendError> {
        let catalog = Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir)?;
        let lake = LakeUrl::parse(&config.lake.url).map_err(|e| RecommendError::Config(e.to_string()))?;
        let rules = rules::Rules::load(config.recommend.rules_file.as_deref())?;
        let mut r = Self::new(lake, catalog, rules, config.recommend.top_k);
        r.ease_lambda = config.recommend.ease_lambda;
        r.ease_max_items = config.recommend.ease_max_items;
        r.als_factors = config.recommend.als_factors;
        r.label_horizon_days = config.recommend.train_label_horizon_days;
        r.novel_cutoffs = config.recommend.train_novel_cutoffs;
        r.explore = policy::Explore {
            slots: config.recommend.explore_slots,
            pool: config.recommend.explore_pool,
        };
        r.max_ips_weight = config.recommend.train_max_ips_weight;
        Ok(r)
    }

    async fn catalogue(&self, marts: &data::Marts) -> Result<Arc<data::CatalogueView>, RecommendError> {
        let stamp = store::ease_stamp(&self.lake).await?;
        let key = CatalogueKey {
            product_features: marts.versions.get("product_features").copied(),
            product_neighbour: marts.versions.get("product_neighbour").copied(),
            model: stamp,
        };
        let mut cached = self.catalogue.lock().await;
        if let Some(c) = cached.as_ref()
            && c.key == key
        {
            return Ok(c.view.clone());
        }
        let mut view = marts.catalogue().await?;
        if stamp.is_some()
            && let Some(ease) = store::current_ease(&self.lake).await?
        {
            view.collab = Some(Arc::new(data::CollabView::new(ease, &view.by_id)));
        }
        let view = Arc::new(view);
        *cached = Some(CachedCatalogue {
            key,
            view: view.clone(),
        });
        Ok(view)
    }

    /// Explanations (and lists) for these customers, against the marts as they are now:
    /// the ranker's own top, with no exploration.
    pub async fn rank(&self, ids: &[String], model: &model::Model) -> Result<Vec<rank::Explanation>, RecommendError> {
        self.rank_with(ids, model, policy::Explore::default(), 0).await
    }

    /// The lists to publish at `now_ms`: with the configured exploration slots, drawn
    /// afresh for each customer and moment.
    pub async fn lists(
        &self,
        ids: &[String],
        model: &model::Model,
        now_ms: i64,
    ) -> Result<Vec<rank::Explanation>, RecommendError> {
        self.rank_with(ids, model, self.explore, now_ms as u64).await
    }

    async fn rank_with(
        &self,
        ids: &[String],
        model: &model::Model,
        explore: policy::Explore,
        seed: u64,
    ) -> Result<Vec<rank::Explanation>, RecommendError> {
        let marts = data::Marts::open(&self.lake).await?;
        let catalogue = self.catalogue(&marts).await?;
        let customers = marts.customers(ids).await?;
        Ok(customers
            .iter()
            .map(|c| {
                let seed = seed ^ novel::fnv(&c.portrait.customer_id);
                rank::rank_exploring(c, &catalogue, &self.rules, model, self.top_k, explore, seed)
            })
            .collect())
    }
}

/// `hoffrec explain --customer ID`.
pub async fn explain(config: &Config, customer: &str) -> Result<Option<rank::Explanation>, RecommendError> {
    let r = Recommender::load(config)?;
    let model = store::current(&r.lake).await?.unwrap_or_else(model::Model::prior);
    Ok(r.rank(&[customer.to_string()], &model).await?.into_iter().next())
}

pub async fn run(
    config: &Config,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> Result<Summary, RecommendError> {
    let r = Recommender::load(config)?;
    let topic = |role: Role| r.catalog.require(role).map(|t| t.name.clone());
    let (changes, recs) = (topic(Role::MartChanges)?, topic(Role::Recommendations)?);
    let consumer: StreamConsumer =
        crate::kafka::consumer_config(&config.kafka, &config.recommend.group, "earliest").create()?;
    consumer.subscribe(&[changes.as_str()])?;
    let producer: FutureProducer = crate::kafka::client_config(&config.kafka)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let mut model = store::current(&r.lake).await?.unwrap_or_else(model::Model::prior);
    let mut summary = Summary {
        model_version: model.version.clone(),
        ..Default::default()
    };
    let mut checked = Instant::now();
    let mut outage = crate::kafka::Outage::default();
    let batch = Duration::from_millis(config.recommend.batch_ms);
    let quiet_for = Duration::from_millis(config.recommend.batch_quiet_ms.min(config.recommend.batch_ms));
    telemetry.set_ready(true);
    while !shutdown.is_cancelled() {
        // One micro-batch: the first change opens it; `batch_ms` after that, or
        // `batch_quiet_ms` without a new change (a fold announces its customers at once,
        // so waiting longer only makes the lists later), closes it.
        let mut customers = BTreeSet::new();
        let deadline = tokio::time::sleep(batch);
        let quiet = tokio::time::sleep(batch);
        tokio::pin!(deadline, quiet);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut deadline, if !customers.is_empty() => break,
                _ = &mut quiet, if !customers.is_empty() => break,
                m = consumer.recv() => match m {
                    Ok(m) => {
                        let now = tokio::time::Instant::now();
                        if customers.is_empty() {
                            deadline.as_mut().reset(now + batch);
                        }
                        quiet.as_mut().reset(now + quiet_for);
                        if let Some(key) = m.key() {
                            customers.insert(String::from_utf8_lossy(key).into_owned());
                        }
                    }
                    Err(e) if crate::kafka::error_is_fatal(&e) => return Err(e.into()),
                    // The broker is away (restarting); librdkafka reconnects.
                    Err(e) => outage.note(&e, "reading mart changes failed; librdkafka retries"),
                }
            }
        }
        if checked.elapsed() >= Duration::from_millis(config.recommend.model_check_ms) {
            checked = Instant::now();
            match store::current(&r.lake).await {
                Ok(Some(newer)) if newer.version != model.version => {
                    tracing::info!(from = %model.version, to = %newer.version, "model swapped");
                    model = newer;
                    summary.model_swaps += 1;
                    telemetry.recommend.model_swaps.inc();
                    summary.model_version = model.version.clone();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the promoted model; keeping {}", model.version),
            }
        }
        if customers.is_empty() {
            continue;
        }
        let span = tracing::info_span!("recommend_batch", customers = customers.len());
        let ids: Vec<String> = customers.into_iter().collect();
        let out = Outlet {
            producer: &producer,
            topic: &recs,
            valid_for_ms: config.recommend.valid_for_ms,
        };
        // A batch that fails on the lake or the broker (a restart) is ranked again until
        // it is out; its changes are committed only then, so none is skipped.
        let mut backoff = Duration::from_millis(config.recommend.batch_ms.max(100));
        let lists = loop {
            match publish(&r, &ids, &model, &out).instrument(span.clone()).await {
                Ok(lists) => break Some(lists),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "a batch of lists failed; retrying it");
                    telemetry.set_ready(false);
                    tokio::select! {
                        _ = shutdown.cancelled() => break None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        };
        let Some(lists) = lists else { break };
        telemetry.set_ready(true);
        // Lists are out: the changes that asked for them are done. A commit lost to a
        // broker restart only means those lists are made once more.
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            tracing::warn!(error = %e, "committing mart-change offsets failed");
        }
        summary.batches += 1;
        summary.customers += ids.len() as u64;
        summary.lists += lists as u64;
        telemetry.recommend.batches.inc();
        telemetry.recommend.lists.inc_by(lists as u64);
        span.in_scope(|| tracing::info!(lists, model = %model.version, "recommendations published"));
    }
    telemetry.set_ready(false);
    Ok(summary)
}

/// Where lists go.
struct Outlet<'a> {
    producer: &'a FutureProducer,
    topic: &'a str,
    valid_for_ms: u64,
}

/// Ranks `ids` and publishes their lists; returns how many went out.
async fn publish(
    r: &Recommender,
    ids: &[String],
    model: &model::Model,
    out: &Outlet<'_>,
) -> Result<usize, RecommendError> {
    let now = chrono::Utc::now().timestamp_millis();
    let lists = r.lists(ids, model, now).await?;
    let mut pending = Vec::with_capacity(lists.len());
    for e in &lists {
        let payload = r
            .catalog
            .schemas
            .encode("recommendation", record(e, now, out.valid_for_ms))?;
        let rec = FutureRecord::to(out.topic)
            .key(e.customer_id.as_str())
            .payload(&payload);
        pending.push(
            out.producer
                .send_result(rec)
                .map_err(|(e, _)| RecommendError::Kafka(e))?,
        );
    }
    for p in pending {
        match p.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(RecommendError::Kafka(e)),
            Err(_) => return Err(RecommendError::Kafka(KafkaError::Canceled)),
        }
    }
    Ok(lists.len())
}

/// The `recs.customer` record for one list.
pub fn record(e: &rank::Explanation, now_ms: i64, valid_for_ms: u64) -> Value {
    let items = e
        .list
        .iter()
        .enumerate()
        .map(|(rank, s)| {
            Value::Record(vec![
                ("product_id".into(), Value::String(s.product_id.clone())),
                ("rank".into(), Value::Int(rank as i32)),
                ("score".into(), Value::Double(s.score)),
                (
                    "reasons".into(),
                    Value::Array(s.reasons.iter().map(|r| Value::String(r.clone())).collect()),
                ),
                ("propensity".into(), Value::Double(s.propensity)),
            ])
        })
        .collect();
    Value::Record(vec![
        ("customer_id".into(), Value::String(e.customer_id.clone())),
        ("list_id".into(), Value::String(format!("{}-{now_ms}", e.customer_id))),
        ("generated_at".into(), Value::TimestampMillis(now_ms)),
        (
            "valid_until".into(),
            Value::TimestampMillis(now_ms + valid_for_ms as i64),
        ),
        ("model_version".into(), Value::String(e.model_version.clone())),
        ("items".into(), Value::Array(items)),
    ])
}
