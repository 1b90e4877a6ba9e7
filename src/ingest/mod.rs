//! Landing: raw topics -> micro-batches -> one Delta table per topic under `<lake>/raw/`,
//! exactly once.
//!
//! A consumer group shares the raw topics' partitions. Each worker decodes Avro straight
//! into Arrow builders, cleans and checks every record, and flushes a topic's batch on
//! rows, bytes or age. A flush publishes the batch's dead letters, then writes its rows and
//! the last offset of every partition (a Delta `txn` action) in one commit, then announces
//! the commit on `lake.commits`. On assignment a worker starts each partition right after
//! the offset stored in the lake, so a crash or a rebalance neither loses nor repeats a row.

mod assign;
pub mod batch;
pub mod checks;
mod contract;
pub mod decode;
pub mod direct;
mod flush;
mod offsets;
mod originals;
pub mod publish;
pub mod replay;
mod retry;
mod running;
pub mod table;
#[cfg(test)]
mod testing;
mod worker;

pub use contract::TopicContract;
pub use table::RawTable;

use crate::catalog::{Catalog, CatalogError, Role};
use crate::config::Config;
use crate::lake::LakeUrl;
use crate::telemetry::Telemetry;
use assign::IngestContext;
use rdkafka::consumer::BaseConsumer;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerParts};

/// Maps on the per-record path hash with foldhash, not SipHash: keys are ours, not an attacker's.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("ingest configuration: {0}")]
    Config(String),
    #[error("Kafka: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error("partition assignment failed: {0}")]
    Assignment(String),
    /// The lake stayed unreachable through the retry window; nothing uncommitted is lost,
    /// a restarted worker resumes from the stored offsets.
    #[error("the lake is unavailable: {0}")]
    LakeUnavailable(#[source] Box<table::TableError>),
    #[error("{0}")]
    Step(String),
    #[error("internal error (a bug, please report): {0}")]
    Internal(String),
}

/// Counts for one run of the stage.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub records_in: u64,
    pub landed: u64,
    pub dead_letters: u64,
    pub replayed_skipped: u64,
    pub commits: u64,
    pub abandoned_batches: u64,
    /// Events of erased customers, consumed and not landed.
    pub erased_dropped: u64,
}

impl Summary {
    pub fn add(&mut self, other: &Summary) {
        self.records_in += other.records_in;
        self.landed += other.landed;
        self.dead_letters += other.dead_letters;
        self.replayed_skipped += other.replayed_skipped;
        self.commits += other.commits;
        self.abandoned_batches += other.abandoned_batches;
        self.erased_dropped += other.erased_dropped;
    }
}

/// Runs `ingest.workers` group members until `shutdown`; each flushes what it holds and
/// leaves the group.
pub async fn run(config: &Config, telemetry: &Telemetry, shutdown: CancellationToken) -> Result<Summary, IngestError> {
    let catalog = Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir)?;
    let lake = LakeUrl::parse(&config.lake.url).map_err(|e| IngestError::Config(e.to_string()))?;
    let ingest = &config.ingest;
    let mut contracts = FastMap::default();
    let wanted: Vec<&str> = if ingest.topics.is_empty() {
        catalog.raw_topics().map(|t| t.name.as_str()).collect()
    } else {
        ingest.topics.iter().map(String::as_str).collect()
    };
    let mut problems = Vec::new();
    for name in &wanted {
        match catalog.topic(name) {
            Some(t) if t.role == Role::Raw => {
                let event = t.value_schema.clone().unwrap_or_default();
                match catalog.schemas.current(&event) {
                    Some(current) => {
                        contracts.insert(t.name.clone(), TopicContract::new(&event, &current.schema));
                    }
                    None => problems.push(format!("{name}: schema {event} is not in the catalog")),
                }
            }
            Some(_) => problems.push(format!("{name} is not a raw topic")),
            None => problems.push(format!("{name} is not in the topic catalog")),
        }
    }
    if contracts.is_empty() && problems.is_empty() {
        problems.push("no raw topics to land".into());
    }
    if !problems.is_empty() {
        return Err(IngestError::Config(problems.join("; ")));
    }
    let dlq_topic = catalog.require(Role::DeadLetter)?.name.clone();
    let commits_topic = catalog.require(Role::LakeCommits)?.name.clone();
    let consent_topic = catalog.consent_topic().map(|t| t.name.clone());
    let blocked = crate::forget::blocked::Blocked::start(
        lake.clone(),
        consent_topic.as_deref().map(crate::lake::raw::path),
        shutdown.clone(),
    )
    .await;
    let schemas = Arc::new(catalog.schemas);
    let handle = tokio::runtime::Handle::current();
    // Each worker is a full group member with its own consumer thread: one process can use
    // several cores, and the group spreads partitions over threads and processes alike.
    let mut threads = Vec::new();
    for n in 0..ingest.workers {
        let running = running::Running::default();
        let context = IngestContext::new(
            handle.clone(),
            lake.clone(),
            &ingest.group,
            ingest.target_file_bytes,
            running.clone(),
        );
        let consumer: BaseConsumer<IngestContext> =
            crate::kafka::consumer_config(&config.kafka, &ingest.group, "earliest")
                .set("enable.auto.offset.store", "false")
                .set("partition.assignment.strategy", "range,roundrobin")
                .set("statistics.interval.ms", "5000")
                // A partition whose prefetch queue is full stops fetching for this long; at the
                // default (1 s) a worker that drains faster than it decodes sits idle in poll.
                .set("fetch.queue.backoff.ms", "20")
                .create_with_context(context)
                .map_err(IngestError::Kafka)?;
        let worker = Worker::new(WorkerParts {
            config: ingest.clone(),
            lake: lake.clone(),
            handle: handle.clone(),
            schemas: schemas.clone(),
            schemas_dir: config.catalog.schemas_dir.clone(),
            contracts: contracts.clone(),
            publisher: publish::Publisher::new(&config.kafka, &dlq_topic, &commits_topic)?,
            telemetry: telemetry.clone(),
            running,
            blocked: blocked.clone(),
            consent_topic: consent_topic.clone(),
        });
        let span = tracing::info_span!("ingest", group = %ingest.group, worker = n);
        let shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ingest-{n}"))
            .spawn(move || span.in_scope(|| worker.run(consumer, shutdown)))
            .map_err(|e| IngestError::Internal(format!("cannot start an ingest thread: {e}")))?;
        threads.push(thread);
    }
    let results = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join()).collect::<Vec<_>>())
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))?;
    let mut total = Summary::default();
    for result in results {
        let s = result.map_err(|_| IngestError::Internal("an ingest thread panicked".into()))??;
        total.add(&s);
    }
    Ok(total)
}
