//! Observability shared by the long-running stages: Prometheus metrics on `/metrics`,
//! liveness on `/healthz`, readiness on `/readyz`. Stages register their metrics in one
//! registry; the HTTP endpoint is optional (`http.listen`).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The ingest stage's metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    pub records_in: Family<Labels, Counter>,
    pub records_landed: Family<Labels, Counter>,
    pub replayed_skipped: Family<Labels, Counter>,
    pub dead_letters: Family<Labels, Counter>,
    pub commits: Family<Labels, Counter>,
    pub batch_rows: Histogram,
    pub batch_bytes: Histogram,
    pub flush_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub event_to_commit_seconds: Histogram,
    pub consumer_lag: Family<Labels, Gauge>,
}

impl IngestMetrics {
    fn new(registry: &mut Registry) -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let m = Self {
            records_in: Family::default(),
            records_landed: Family::default(),
            replayed_skipped: Family::default(),
            dead_letters: Family::default(),
            commits: Family::default(),
            batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
            batch_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 12)),
            flush_seconds: seconds(),
            commit_seconds: seconds(),
            event_to_commit_seconds: seconds(),
            consumer_lag: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("hoffrec_ingest");
        r.register("records_in", "Records read from raw topics", m.records_in.clone());
        r.register(
            "records_landed",
            "Records committed to lake tables",
            m.records_landed.clone(),
        );
        r.register(
            "replayed_skipped",
            "Records skipped because their offset was already committed to the lake",
            m.replayed_skipped.clone(),
        );
        r.register(
            "dead_letters",
            "Records sent to the dead-letter topic, by class",
            m.dead_letters.clone(),
        );
        r.register("commits", "Delta commits made", m.commits.clone());
        r.register("batch_rows", "Rows per flushed batch", m.batch_rows.clone());
        r.register(
            "batch_bytes",
            "Avro payload bytes per flushed batch",
            m.batch_bytes.clone(),
        );
        r.register(
            "flush_seconds",
            "Time to flush a batch (dead letters, write, commit)",
            m.flush_seconds.clone(),
        );
        r.register(
            "commit_seconds",
            "Time of the Delta write and commit",
            m.commit_seconds.clone(),
        );
        r.register(
            "event_to_commit_seconds",
            "From the Kafka timestamp of a batch's oldest record to its commit",
            m.event_to_commit_seconds.clone(),
        );
        r.register(
            "consumer_lag",
            "High watermark minus next offset to land, per partition",
            m.consumer_lag.clone(),
        );
        m
    }
}

/// The event collector's metrics.
#[derive(Clone, Default)]
pub struct CollectorMetrics {
    /// Events by type and outcome (accepted, unavailable, or the refusal class).
    pub events: Family<Labels, Counter>,
}

impl CollectorMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "hoffrec_collector_events",
            "Events posted to the collector, by type and outcome",
            m.events.clone(),
        );
        m
    }
}

/// The API pollers' metrics, by source (raw topic).
#[derive(Clone, Default)]
pub struct ConnectMetrics {
    pub requests: Family<Labels, Counter>,
    pub retries: Family<Labels, Counter>,
    pub records: Family<Labels, Counter>,
    /// By source and class (malformed_response, invalid_item, ...).
    pub dead_letters: Family<Labels, Counter>,
    /// Passes by source and outcome (complete, stopped, failed).
    pub passes: Family<Labels, Counter>,
}

impl ConnectMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("hoffrec_connect");
        r.register("requests", "HTTP requests made to source APIs", m.requests.clone());
        r.register(
            "retries",
            "Source requests retried after a rate limit or failure",
            m.retries.clone(),
        );
        r.register("records", "Records produced to raw topics", m.records.clone());
        r.register(
            "dead_letters",
            "Source items or responses sent to the dead-letter topic",
            m.dead_letters.clone(),
        );
        r.register("passes", "Polling passes by outcome", m.passes.clone());
        m
    }
}

/// The marts: folds, their duration, rows merged per mart, customers announced.
#[derive(Clone)]
pub struct MartMetrics {
    /// Folds by outcome (complete, failed).
    pub folds: Family<Labels, Counter>,
    pub fold_seconds: Histogram,
    /// By mart.
    pub rows_merged: Family<Labels, Counter>,
    pub changed_customers: Counter,
}

impl MartMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            folds: Family::default(),
            fold_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            rows_merged: Family::default(),
            changed_customers: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("hoffrec_mart");
        r.register("folds", "Mart folds by outcome", m.folds.clone());
        r.register(
            "fold_seconds",
            "Duration of one fold of every mart",
            m.fold_seconds.clone(),
        );
        r.register("rows_merged", "Rows merged into each mart", m.rows_merged.clone());
        r.register(
            "changed_customers",
            "Customers announced on mart.changes",
            m.changed_customers.clone(),
        );
        m
    }
}

/// The recommender: lists published, model swaps.
#[derive(Clone, Default)]
pub struct RecommendMetrics {
    pub lists: Counter,
    pub batches: Counter,
    pub model_swaps: Counter,
}

impl RecommendMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("hoffrec_recommend");
        r.register(
            "lists",
            "Recommendation lists published to recs.customer",
            m.lists.clone(),
        );
        r.register(
            "batches",
            "Micro-batches of changed customers ranked",
            m.batches.clone(),
        );
        r.register(
            "model_swaps",
            "Promoted models swapped in while serving",
            m.model_swaps.clone(),
        );
        m
    }
}

/// The read path's metrics (`hoffrec serve`).
#[derive(Clone, Default)]
pub struct ServeMetrics {
    /// Answers by route and outcome (list, fallback, not_modified).
    pub requests: Family<Labels, Counter>,
    /// Lists held.
    pub lists: Gauge,
    /// List records read from the topic.
    pub records: Counter,
    /// Products dropped from answers as unavailable in the newest catalogue.
    pub unavailable_dropped: Counter,
    /// Products with related-product lists held, and records read from recs.product.
    pub product_lists: Gauge,
    pub product_records: Counter,
}

impl ServeMetrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("hoffrec_serve");
        r.register("requests", "Answers by route and outcome", m.requests.clone());
        r.register("lists", "Customer lists held", m.lists.clone());
        r.register("records", "List records read from recs.customer", m.records.clone());
        r.register(
            "unavailable_dropped",
            "Products left out of answers as out of stock or withdrawn",
            m.unavailable_dropped.clone(),
        );
        r.register(
            "product_lists",
            "Products with related lists held",
            m.product_lists.clone(),
        );
        r.register(
            "product_records",
            "Records read from recs.product",
            m.product_records.clone(),
        );
        m
    }
}

/// Everything a process exposes; cheap to clone into stages.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<std::sync::Mutex<Registry>>,
    ready: Arc<AtomicBool>,
    pub ingest: IngestMetrics,
    pub collector: CollectorMetrics,
    pub connect: ConnectMetrics,
    pub mart: MartMetrics,
    pub recommend: RecommendMetrics,
    pub serve: ServeMetrics,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let ingest = IngestMetrics::new(&mut registry);
        let collector = CollectorMetrics::new(&mut registry);
        let connect = ConnectMetrics::new(&mut registry);
        let mart = MartMetrics::new(&mut registry);
        let recommend = RecommendMetrics::new(&mut registry);
        let serve = ServeMetrics::new(&mut registry);
        Self {
            mart,
            recommend,
            serve,
            collector,
            connect,
            registry: Arc::new(std::sync::Mutex::new(registry)),
            ready: Arc::new(AtomicBool::new(false)),
            ingest,
        }
    }

    /// Stages call this once they have their assignment and can do work.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }

    /// Serves `/metrics`, `/healthz` and `/readyz`, and `routes` beside them (the
    /// dashboard), until `shutdown`; returns the bound address.
    pub async fn serve_with(
        &self,
        listen: &str,
        routes: Router,
        shutdown: CancellationToken,
    ) -> Result<std::net::SocketAddr, TelemetryError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| TelemetryError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| TelemetryError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
            .merge(routes);
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "metrics endpoint stopped");
            }
        });
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
        Ok(addr)
    }
}

/// One sample of the text exposition: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus/OpenMetrics text exposition; lines it cannot read are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse::<f64>().ok()?;
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Vec::new()),
                Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}')?)?),
            };
            Some(Sample { name, labels, value })
        })
        .collect()
}

/// `a="x",b="y \"quoted\""` -> pairs.
fn parse_labels(mut rest: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// The sum of every sample of a metric.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    samples(text).iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

async fn metrics(State(t): State<Telemetry>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.render(),
    )
}

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    if t.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_read_names_labels_and_values() {
        let text = "# HELP x y\nhoffrec_ingest_consumer_lag{topic=\"raw.a\",partition=\"0\"} 12\nplain_total 3.5\nq{v=\"a \\\"b\\\", c\"} 1\n";
        let s = super::samples(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].label("topic"), Some("raw.a"));
        assert_eq!(s[0].label("partition"), Some("0"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("plain_total", 3.5));
        assert_eq!(s[2].label("v"), Some("a \"b\", c"));
        assert_eq!(super::metric_sum(text, "plain_total"), 3.5);
    }

    /// Every metric the issues name is exposed, so dashboards and alerts can rely on them.
    #[test]
    fn every_stage_exposes_its_metrics() {
        let t = super::Telemetry::new();
        let labels = vec![("topic", "raw.x".to_string())];
        t.ingest.records_in.get_or_create(&labels).inc();
        t.ingest.records_landed.get_or_create(&labels).inc();
        t.ingest.dead_letters.get_or_create(&labels).inc();
        t.ingest.consumer_lag.get_or_create(&labels).set(1);
        t.mart.folds.get_or_create(&vec![("outcome", "complete".into())]).inc();
        t.mart.rows_merged.get_or_create(&vec![("mart", "m".into())]).inc();
        t.connect.records.get_or_create(&labels).inc();
        t.connect.dead_letters.get_or_create(&labels).inc();
        t.collector.events.get_or_create(&labels).inc();
        t.recommend.lists.inc();
        let text = t.render();
        for name in [
            "hoffrec_ingest_records_in_total",
            "hoffrec_ingest_records_landed_total",
            "hoffrec_ingest_dead_letters_total",
            "hoffrec_ingest_batch_rows",
            "hoffrec_ingest_batch_bytes",
            "hoffrec_ingest_flush_seconds",
            "hoffrec_ingest_commit_seconds",
            "hoffrec_ingest_consumer_lag",
            "hoffrec_connect_records_total",
            "hoffrec_connect_dead_letters_total",
            "hoffrec_collector_events_total",
            "hoffrec_mart_folds_total",
            "hoffrec_mart_fold_seconds",
            "hoffrec_mart_rows_merged_total",
            "hoffrec_mart_changed_customers_total",
            "hoffrec_recommend_lists_total",
            "hoffrec_recommend_model_swaps_total",
        ] {
            assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
        }
    }
}
