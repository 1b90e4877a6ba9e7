//! The consume loop: poll, decode, check, buffer per topic, flush on rows, bytes or age.
//! Runs on its own thread with a blocking librdkafka consumer; lake I/O runs on the async
//! runtime through a handle, and lake commits in the background (see `flush`).

use super::assign::{IngestContext, RebalanceEvent};
use super::batch::{Checks, TopicBatch};
use super::checks::{Horizon, Reject, Rules};
use super::contract::TopicContract;
use super::decode::WriterPlan;
use super::flush::{Handback, Pipeline, PipelineParts, Room};
use super::offsets::{Admit, start_after};
use super::publish::Publisher;
use super::running::Running;
use super::{FastMap, IngestError, Summary};
use crate::codec::{SchemaSet, SchemaVersion, read_header};
use crate::config::IngestConfig;
use crate::lake::LakeUrl;
use crate::telemetry::Telemetry;
use prometheus_client::metrics::counter::Counter;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What a worker is made of; the rest of its state starts empty.
pub struct WorkerParts {
    pub config: IngestConfig,
    pub lake: LakeUrl,
    pub handle: Handle,
    pub schemas: Arc<SchemaSet>,
    /// Reread for a writer fingerprint the schemas do not know.
    pub schemas_dir: PathBuf,
    pub contracts: FastMap<String, TopicContract>,
    pub publisher: Publisher,
    pub telemetry: Telemetry,
    /// Shared with the consumer's rebalance callback, which waits for running commits.
    pub running: Running,
    /// Erased customers whose events are dropped (`crate::forget::blocked`).
    pub blocked: crate::forget::blocked::Blocked,
    /// The consent topic, whose events pass for everyone: a new consent lifts a block.
    pub consent_topic: Option<String>,
}

/// A writer version as records of it land.
struct Writer {
    event: String,
    /// What its records share, or why none of them can land.
    plan: Result<Arc<WriterPlan>, Reject>,
}

/// Per-topic counters, looked up once instead of per record.
struct TopicCounters {
    records_in: Counter,
    replayed_skipped: Counter,
}

/// Maintenance of one owned table.
struct Maintenance {
    /// A pass is running.
    running: Arc<AtomicBool>,
    last_started: Instant,
    /// The table version the last pass saw (`u64::MAX`: none yet).
    seen_version: Arc<AtomicU64>,
    /// The version of the last compaction, pass or not (`compact_every_commits` counts
    /// from there; `u64::MAX`: none yet).
    compacted_version: Arc<AtomicU64>,
}

pub struct Worker {
    config: IngestConfig,
    lake: LakeUrl,
    handle: Handle,
    schemas: Arc<SchemaSet>,
    schemas_dir: PathBuf,
    contracts: FastMap<String, TopicContract>,
    telemetry: Telemetry,
    rules: Rules,
    blocked: crate::forget::blocked::Blocked,
    consent_topic: Option<String>,
    /// Per topic, the batch filling.
    batches: FastMap<String, TopicBatch>,
    horizons: FastMap<String, Horizon>,
    /// Per writer fingerprint.
    writers: FastMap<u64, Writer>,
    counters: FastMap<String, TopicCounters>,
    last_schema_reload: Option<Instant>,
    /// Per owned table.
    maintenance: FastMap<String, Maintenance>,
    pipeline: Pipeline<Publisher>,
    /// Records in, replays skipped, batches abandoned at a revoke; the pipeline counts the rest.
    summary: Summary,
    /// Wall clock, refreshed every few hundred records rather than read per record.
    now_ms: i64,
}

impl Worker {
    pub fn new(parts: WorkerParts) -> Self {
        let WorkerParts {
            config,
            lake,
            handle,
            schemas,
            schemas_dir,
            contracts,
            publisher,
            telemetry,
            running,
            blocked,
            consent_topic,
        } = parts;
        let depth = usize::try_from(config.max_batches_in_flight).unwrap_or(1);
        let pipeline = Pipeline::new(PipelineParts {
            config: config.clone(),
            lake: lake.clone(),
            handle: handle.clone(),
            outbox: publisher,
            schemas: schemas.clone(),
            telemetry: telemetry.clone(),
            running,
            spare_limit: contracts.len().saturating_mul(depth),
        });
        Self {
            rules: Rules::new(&config),
            blocked,
            consent_topic,
            config,
            lake,
            handle,
            schemas,
            schemas_dir,
            contracts,
            telemetry,
            batches: FastMap::default(),
            horizons: FastMap::default(),
            writers: FastMap::default(),
            counters: FastMap::default(),
            last_schema_reload: None,
            maintenance: FastMap::default(),
            pipeline,
            summary: Summary::default(),
            now_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    pub fn run(
        mut self,
        consumer: BaseConsumer<IngestContext>,
        shutdown: CancellationToken,
    ) -> Result<Summary, IngestError> {
        let topics: Vec<&str> = self.contracts.keys().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(IngestError::Kafka)?;
        let mut last_tick = Instant::now();
        let mut since_check = 0u32;
        let mut wait = self.poll_timeout();
        while !shutdown.is_cancelled() {
            let message = consumer.poll(wait);
            self.handle_rebalances(&consumer)?;
            let idle = match message {
                Some(Ok(m)) => {
                    if let Some(topic) = self.accept(&m)? {
                        self.flush_when_free(&topic, &consumer)?;
                    }
                    false
                }
                Some(Err(e)) => {
                    warn!(error = %e, "consumer error; librdkafka retries");
                    true
                }
                None => true,
            };
            // Clocks are read per record only through `now_ms`; timers are checked when
            // idle or every 256 records, which is well inside any flush interval.
            since_check += 1;
            if idle || since_check >= 256 {
                since_check = 0;
                self.now_ms = chrono::Utc::now().timestamp_millis();
                let settled = self.pipeline.settle_finished();
                self.hand_back(&consumer, settled)?;
                for topic in self.due() {
                    self.flush_when_free(&topic, &consumer)?;
                }
                if last_tick.elapsed() >= Duration::from_secs(2) {
                    last_tick = Instant::now();
                    self.tick(&consumer);
                }
                wait = self.poll_timeout();
            }
        }
        info!("shutting down: flushing open batches");
        let topics: Vec<String> = self.batches.keys().cloned().collect();
        for topic in topics {
            self.flush(&topic, &consumer)?;
        }
        let settled = self.pipeline.settle_all(true);
        self.hand_back(&consumer, settled)?;
        self.telemetry.set_ready(false);
        consumer.unsubscribe();
        let mut summary = self.summary;
        summary.add(self.pipeline.summary());
        Ok(summary)
    }

    /// Flushes `topic` when its pipeline has room; while it is full the batch keeps filling
    /// up to twice the configured limits, then the worker waits for the oldest commit.
    fn flush_when_free(&mut self, topic: &str, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        match self.pipeline.room(topic, self.batches.get(topic)) {
            Room::Free => {}
            Room::KeepFilling => return Ok(()),
            Room::SettleFirst => {
                let settled = self.pipeline.settle_oldest(topic);
                self.hand_back(consumer, settled)?;
            }
        }
        self.flush(topic, consumer)
    }

    /// Hands the topic's batch to the pipeline, after settling the commits that are done.
    fn flush(&mut self, topic: &str, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        let settled = self.pipeline.settle_ready(topic);
        self.hand_back(consumer, settled)?;
        self.seal(topic, true);
        let Some(batch) = self.batches.remove(topic) else {
            return Ok(());
        };
        let flushed = self.pipeline.flush(batch);
        self.hand_back(consumer, flushed)
    }

    /// Does what the pipeline's last step left to the worker, then passes on its result.
    fn hand_back(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
        step: Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let Handback { forget, landed, resync } = self.pipeline.take_handback();
        // Group offsets only serve lag tooling; the lake's txn actions are the truth.
        for l in landed {
            let mut tpl = TopicPartitionList::new();
            for (&p, &last) in &l.last {
                let _ = tpl.add_partition_offset(&l.topic, p, Offset::Offset(last + 1));
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(error = %e, "group offset commit failed (lag tooling only)");
            }
        }
        for f in forget {
            self.forget(&f.topic, &f.ids);
        }
        for r in resync {
            // Rows consumed after the abandoned batch rest on offsets that are no longer ours.
            if let Some(next) = self.batches.remove(&r.topic) {
                self.forget(&r.topic, &next.ids);
                if !next.is_empty() {
                    self.summary.abandoned_batches += 1;
                }
            }
            for (p, s) in r.stored {
                if let Err(e) = consumer.seek(&r.topic, p, start_after(s), Duration::from_secs(10)) {
                    warn!(partition = p, error = %e, "seek after losing the race failed");
                }
            }
        }
        step
    }

    fn poll_timeout(&self) -> Duration {
        // A finished commit is settled and announced after the poll returns: while one
        // runs, a quiet topic must not keep a fresh batch unannounced for a whole timeout.
        if self.pipeline.committing() {
            return Duration::from_millis(5);
        }
        // With records flowing, poll returns at once whatever the timeout.
        if self.batches.is_empty() {
            return Duration::from_millis(100);
        }
        let age = Duration::from_millis(self.config.flush_interval_ms);
        let soonest = self
            .batches
            .values()
            .filter_map(|b| b.opened_at)
            .map(|t| age.saturating_sub(t.elapsed()))
            .min()
            .unwrap_or(age);
        soonest.clamp(Duration::from_millis(1), Duration::from_millis(100))
    }

    fn due(&self) -> Vec<String> {
        let age = Duration::from_millis(self.config.flush_interval_ms);
        self.batches
            .iter()
            .filter(|(_, b)| b.opened_at.is_some_and(|t| t.elapsed() >= age))
            .map(|(t, _)| t.clone())
            .collect()
    }

    fn handle_rebalances(&mut self, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        for event in consumer.context().take_events() {
            match event {
                RebalanceEvent::Revoked => {
                    // The revoke callback waited for these; what they stored is ours.
                    let settled = self.pipeline.settle_all(false);
                    self.hand_back(consumer, settled)?;
                    let batches: Vec<(String, TopicBatch)> = self.batches.drain().collect();
                    for (topic, batch) in &batches {
                        self.forget(topic, &batch.ids);
                    }
                    let abandoned = batches.iter().filter(|(_, b)| !b.is_empty()).count();
                    self.summary.abandoned_batches += abandoned as u64;
                    self.pipeline.stored_mut().clear();
                    self.telemetry.ingest.consumer_lag.clear();
                    info!(abandoned, "partitions revoked; in-flight batches abandoned");
                }
                RebalanceEvent::Assigned(stored) => {
                    self.pipeline.stored_mut().extend(stored);
                    self.telemetry.set_ready(true);
                }
                RebalanceEvent::Failed(reason) => return Err(IngestError::Assignment(reason)),
            }
        }
        Ok(())
    }

    /// Takes one record into its topic's batch; returns the topic when that batch is full.
    fn accept(&mut self, m: &BorrowedMessage<'_>) -> Result<Option<String>, IngestError> {
        let topic = m.topic();
        let (partition, offset) = (m.partition(), m.offset());
        let counters = match self.counters.get(topic) {
            Some(c) => c,
            None => {
                let labels = vec![("topic", topic.to_string())];
                let counters = TopicCounters {
                    records_in: self.telemetry.ingest.records_in.get_or_create(&labels).clone(),
                    replayed_skipped: self.telemetry.ingest.replayed_skipped.get_or_create(&labels).clone(),
                };
                self.counters.entry(topic.to_string()).or_insert(counters)
            }
        };
        counters.records_in.inc();
        self.summary.records_in += 1;
        match self.pipeline.stored().admit(topic, partition, offset) {
            Admit::NotOurs => return Ok(None),
            Admit::Replayed => {
                counters.replayed_skipped.inc();
                self.summary.replayed_skipped += 1;
                return Ok(None);
            }
            Admit::Take => {}
        }
        let payload = m.payload().unwrap_or_default();
        let kafka_ms = m.timestamp().to_millis();
        // An erased customer's event is consumed (its offset counts) but not landed.
        let erased = self.consent_topic.as_deref() != Some(topic) && m.key().is_some_and(|k| self.blocked.contains(k));
        let plan = match erased {
            true => Err(Reject::new("erased", "the customer is erased")),
            false => self.plan_for(topic, payload),
        };
        if !self.batches.contains_key(topic) {
            let batch = match self.pipeline.take_spare() {
                Some(old) => old.reuse(topic),
                None => TopicBatch::new(topic),
            };
            self.batches.insert(topic.to_string(), batch);
        }
        let batch = self
            .batches
            .get_mut(topic)
            .ok_or(IngestError::Internal("batch vanished".into()))?;
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let at = (partition, offset, kafka_ms);
        if erased {
            batch.skip(at, payload.len());
            self.summary.erased_dropped += 1;
            return Ok(None);
        }
        let chunk_full = batch.take(at, m.key(), payload, headers, plan.as_ref().map_err(Reject::clone));
        let full = batch.rows >= self.config.max_batch_rows || batch.bytes >= self.config.max_batch_bytes;
        if chunk_full {
            self.seal(topic, false);
        }
        Ok(full.then(|| topic.to_string()))
    }

    /// How records of this payload's writer version land in `topic`, or why they cannot.
    fn plan_for(&mut self, topic: &str, payload: &[u8]) -> Result<Arc<WriterPlan>, Reject> {
        let fingerprint = read_header(payload).map_err(|e| Reject::new(e.class(), e.to_string()))?;
        if !self.writers.contains_key(&fingerprint) {
            let version = self.writer_of(fingerprint)?;
            let writer = Writer {
                event: version.event.clone(),
                plan: WriterPlan::new(&version).map(Arc::new),
            };
            self.writers.insert(fingerprint, writer);
        }
        let (Some(writer), Some(contract)) = (self.writers.get(&fingerprint), self.contracts.get(topic)) else {
            return Err(Reject::new("unknown_topic", format!("{topic} is not a raw topic here")));
        };
        if writer.event != contract.event {
            return Err(Reject::new(
                "wrong_event_type",
                format!("record is a {} but {topic} carries {}", writer.event, contract.event),
            ));
        }
        writer.plan.clone()
    }

    /// Cleans, checks and sets aside the topic's full chunks (every chunk, with `all`).
    fn seal(&mut self, topic: &str, all: bool) {
        let (Some(batch), Some(contract)) = (self.batches.get_mut(topic), self.contracts.get(topic)) else {
            return;
        };
        if !self.horizons.contains_key(topic) {
            // The horizon holds the ids of every batch in flight too, so it is at least that big.
            let rows = self
                .config
                .max_batch_rows
                .saturating_mul(self.config.max_batches_in_flight + 2);
            let capacity = usize::try_from(self.config.dedup_horizon_events.max(rows)).unwrap_or(usize::MAX);
            self.horizons.insert(topic.to_string(), Horizon::new(capacity));
        }
        let Some(seen) = self.horizons.get_mut(topic) else {
            return;
        };
        let mut checks = Checks {
            rules: &self.rules,
            required: &contract.required,
            now_ms: self.now_ms,
            seen,
        };
        batch.seal(all, &mut checks);
    }

    /// Takes an abandoned batch's ids out of the topic's horizon: its records come again.
    fn forget(&mut self, topic: &str, ids: &[u64]) {
        if let Some(h) = self.horizons.get_mut(topic) {
            h.forget(ids);
        }
    }

    /// The writer schema of a record; an unknown fingerprint rereads `avro/` (at most
    /// every 10 s) so a producer's new version is picked up without a restart.
    fn writer_of(&mut self, fingerprint: u64) -> Result<Arc<SchemaVersion>, Reject> {
        if let Some(w) = self.schemas.by_fingerprint(fingerprint) {
            return Ok(w.clone());
        }
        if self
            .last_schema_reload
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_schema_reload = Some(Instant::now());
            let (set, problems) = SchemaSet::load(&self.schemas_dir);
            for p in problems {
                warn!(path = %p.path.display(), problem = %p.message, "schema file skipped on reload");
            }
            info!(
                versions = set.versions().count(),
                "reloaded schemas for an unknown fingerprint"
            );
            self.schemas = Arc::new(set);
            self.pipeline.use_schemas(self.schemas.clone());
        }
        self.schemas.by_fingerprint(fingerprint).cloned().ok_or_else(|| {
            let e = crate::codec::CodecError::UnknownFingerprint { fingerprint };
            Reject::new(e.class(), e.to_string())
        })
    }

    /// Lag gauges, and maintenance of the tables whose partition 0 is ours.
    fn tick(&mut self, consumer: &BaseConsumer<IngestContext>) {
        for (topic, p, stored) in self.pipeline.stored().iter() {
            if let Some(high) = consumer.context().high_watermark(topic, p) {
                let next = stored.map_or(0, |s| s + 1);
                self.telemetry
                    .ingest
                    .consumer_lag
                    .get_or_create(&vec![("topic", topic.to_string()), ("partition", p.to_string())])
                    .set((high - next).max(0));
            }
        }
        let maintenance = &self.config.maintenance;
        if maintenance.interval_ms == 0 && maintenance.compact_every_commits == 0 {
            return;
        }
        // 0 turns the passes off; compaction between them may still be on.
        let interval = match maintenance.interval_ms {
            0 => Duration::MAX,
            ms => Duration::from_millis(ms),
        };
        for topic in self.pipeline.stored().topics_with(0) {
            let version = self.pipeline.table_version(&topic);
            let entry = self.maintenance.entry(topic.clone()).or_insert_with(|| Maintenance {
                running: Arc::new(AtomicBool::new(false)),
                last_started: Instant::now(),
                seen_version: Arc::new(AtomicU64::new(u64::MAX)),
                compacted_version: Arc::new(AtomicU64::new(version.unwrap_or(u64::MAX))),
            });
            if entry.running.load(Ordering::Relaxed) {
                continue;
            }
            let every = self.config.maintenance.compact_every_commits;
            let compacted = entry.compacted_version.load(Ordering::Relaxed);
            if compacted == u64::MAX
                && let Some(v) = version
            {
                entry.compacted_version.store(v, Ordering::Relaxed);
            }
            let busy =
                every > 0 && compacted != u64::MAX && version.is_some_and(|v| v.saturating_sub(compacted) >= every);
            if entry.last_started.elapsed() < interval {
                if busy {
                    let v = version.unwrap_or_default();
                    compact_between_passes(&self.handle, &self.lake, &topic, &self.config, entry, v);
                }
                continue;
            }
            entry.last_started = Instant::now();
            entry.running.store(true, Ordering::Relaxed);
            let (running, lake, config) = (entry.running.clone(), self.lake.clone(), self.config.clone());
            let (seen, compacted) = (entry.seen_version.clone(), entry.compacted_version.clone());
            let last = Some(seen.load(Ordering::Relaxed)).filter(|v| *v != u64::MAX);
            let table = crate::lake::raw::path(&topic);
            self.handle.spawn(async move {
                let result =
                    crate::lake::maintenance::run(&lake, &table, &config.maintenance, config.target_file_bytes, last)
                        .await;
                if let Ok(r) = &result {
                    seen.store(r.version, Ordering::Relaxed);
                    if r.compacted {
                        compacted.store(r.version, Ordering::Relaxed);
                    }
                }
                match result {
                    Ok(r) if r.compacted => info!(
                        table,
                        version = r.version,
                        added = r.files_added,
                        removed = r.files_removed,
                        vacuumed = r.files_vacuumed,
                        "table maintained"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!(table, error = %e, "table maintenance failed; will retry next interval"),
                }
                running.store(false, Ordering::Relaxed);
            });
        }
    }
}

/// Compacts a raw table that took `maintenance.compact_every_commits` commits since its
/// last compaction, between the full passes (which also checkpoint and vacuum). Appends
/// by the other workers go on meanwhile: a compaction only removes files it rewrote.
fn compact_between_passes(
    handle: &tokio::runtime::Handle,
    lake: &crate::lake::LakeUrl,
    topic: &str,
    config: &crate::config::IngestConfig,
    entry: &Maintenance,
    version: u64,
) {
    entry.running.store(true, Ordering::Relaxed);
    let (running, compacted) = (entry.running.clone(), entry.compacted_version.clone());
    let target = config
        .target_file_bytes
        .min(crate::lake::maintenance::BETWEEN_PASSES_FILE_BYTES);
    let (lake, table) = (lake.clone(), crate::lake::raw::path(topic));
    handle.spawn(async move {
        let started = Instant::now();
        let result = async {
            let t = crate::lake::open_table(&lake, &table).await?;
            crate::lake::maintenance::compact(t, target).await
        }
        .await;
        match result {
            Ok((t, m)) => {
                compacted.store(t.version().unwrap_or_default(), Ordering::Relaxed);
                info!(
                    table,
                    added = m.num_files_added,
                    removed = m.num_files_removed,
                    ms = started.elapsed().as_millis() as u64,
                    "table compacted"
                );
            }
            Err(e) => {
                warn!(table, error = %e, "table compaction failed; tried again after as many commits");
                compacted.store(version, Ordering::Relaxed);
            }
        }
        running.store(false, Ordering::Relaxed);
    });
}
