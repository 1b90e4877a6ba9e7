//! The site's read path, after the recommendation topic: `hoffrec serve` keeps every
//! customer's newest list from `recs.customer` in memory (restarting from a local
//! snapshot plus the topic) and answers page requests, leaving out what the newest
//! catalogue cannot sell and falling back to popular products for visitors without a list.

pub mod catalogue;
pub mod follow;
pub mod http;
pub mod products;
pub mod refresh;
pub mod similar;
pub mod snapshot;
pub mod store;

use crate::catalog::{Catalog, Role};
use crate::config::Config;
use crate::telemetry::Telemetry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the list topic {0} does not exist (run `hoffrec topics apply`)")]
    NoTopic(String),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("lake: {0}")]
    Lake(String),
}

/// The state the handlers and the follower share.
#[derive(Debug, Default, Clone)]
pub struct Served {
    pub store: store::Store,
    pub products: products::ProductStore,
    pub catalogue: catalogue::Shared,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub topic: String,
    /// Lists loaded from the snapshot at start (`None`: read the topic from the start).
    pub from_snapshot: Option<usize>,
    pub followed: follow::Followed,
    pub lists: usize,
    pub product_topic: String,
    pub products_followed: follow::Followed,
    pub product_lists: usize,
    pub snapshot_lists: Option<usize>,
}

/// The routes answering the site (customers' lists, product pages), beside `/metrics` and
/// `/readyz`.
pub fn routes(config: &Config, telemetry: &Telemetry, served: &Served) -> axum::Router {
    let api = http::Api {
        store: served.store.clone(),
        products: served.products.clone(),
        catalogue: served.catalogue.clone(),
        config: config.serve.clone(),
        metrics: telemetry.serve.clone(),
    };
    http::router(api.clone()).merge(similar::router(api))
}

/// Follows the list topics into `served` until `shutdown`; ready (`/readyz`) once caught
/// up with both.
pub async fn run(
    config: &Config,
    catalog: Catalog,
    served: Served,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> Result<Summary, ServeError> {
    let topic = catalog.require(Role::Recommendations)?.name.clone();
    let product_topic = catalog.require(Role::ProductRecommendations)?.name.clone();
    let lake = crate::lake::LakeUrl::with_settings(&config.lake.url, &config.lake.hdfs_options)
        .map_err(|e| ServeError::Lake(e.to_string()))?;
    let s = &config.serve;
    let state_dir = (!s.state_dir.is_empty()).then(|| PathBuf::from(&s.state_dir));
    let from_snapshot = match &state_dir {
        Some(dir) => snapshot::load(dir, &topic, s.max_snapshot_age_ms, &served.store)?,
        None => None,
    };
    tracing::info!(topic, from_snapshot, "serving lists");
    let refresh = Duration::from_millis(s.catalogue_refresh_ms);
    let catalogue = served.catalogue.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move { catalogue.keep_current(lake, refresh, stop).await });
    if let Some(dir) = state_dir.clone() {
        let (store, topic, stop) = (served.store.clone(), topic.clone(), shutdown.clone());
        let every = Duration::from_millis(s.snapshot_interval_ms);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let (dir, topic, store) = (dir.clone(), topic.clone(), store.clone());
                match tokio::task::spawn_blocking(move || snapshot::save(&dir, &topic, &store)).await {
                    Ok(Ok(n)) => tracing::debug!(lists = n, "snapshot written"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the snapshot"),
                    Err(e) => tracing::warn!(error = %e, "snapshot task failed"),
                }
            }
        });
    }
    // Ready when the second of the two followers has caught up.
    let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let caught_up = |telemetry: Telemetry, waiting: Arc<std::sync::atomic::AtomicUsize>| {
        move || {
            if waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                telemetry.set_ready(true);
            }
        }
    };
    let schemas = Arc::new(catalog.schemas);
    let m = &telemetry.serve;
    let (followed, products_followed) = tokio::try_join!(
        follow::run(
            &config.kafka,
            &topic,
            schemas.clone(),
            served.store.clone(),
            (m.records.clone(), m.lists.clone()),
            caught_up(telemetry.clone(), waiting.clone()),
            shutdown.clone(),
        ),
        follow::run(
            &config.kafka,
            &product_topic,
            schemas,
            served.products.clone(),
            (m.product_records.clone(), m.product_lists.clone()),
            caught_up(telemetry.clone(), waiting),
            shutdown,
        ),
    )?;
    let snapshot_lists = match &state_dir {
        Some(dir) => Some(snapshot::save(dir, &topic, &served.store)?),
        None => None,
    };
    Ok(Summary {
        topic,
        from_snapshot,
        followed,
        lists: served.store.len(),
        product_lists: follow::Sink::held(&served.products),
        product_topic,
        products_followed,
        snapshot_lists,
    })
}
