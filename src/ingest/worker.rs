//! The consume loop: poll, decode, check, buffer per topic, flush on rows, bytes or age.
//! Runs on its own thread with a blocking librdkafka consumer; lake I/O runs on the async
//! runtime through a handle, and lake commits in the background (see `flush`).

use super::assign::{IngestContext, RebalanceEvent};
use super::batch::{Checks, TopicBatch};
use super::checks::{Horizon, Reject, Rules};
use super::decode::WriterPlan;
use super::publish::Publisher;
use super::table::RawTable;
use super::{IngestError, Summary};
use crate::codec::{SchemaSet, SchemaVersion, read_header};
use crate::config::IngestConfig;
use crate::lake::LakeUrl;
use crate::telemetry::Telemetry;
use apache_avro::Schema;
use prometheus_client::metrics::counter::Counter;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};

/// Maps on the per-record path hash with foldhash, not SipHash: keys are ours, not an attacker's.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What ingest knows about one raw topic's contract.
#[derive(Clone)]
pub struct TopicContract {
    pub event: String,
    /// Top-level fields the current schema declares non-null without a default.
    pub required: Vec<String>,
}

impl TopicContract {
    pub fn new(event: &str, current: &Schema) -> Self {
        let required = match current {
            Schema::Record(r) => r
                .fields
                .iter()
                .filter(|f| f.default.is_none() && !matches!(&f.schema, Schema::Union(u) if u.is_nullable()))
                .map(|f| f.name.clone())
                .collect(),
            _ => Vec::new(),
        };
        Self {
            event: event.to_string(),
            required,
        }
    }
}

pub struct Worker {
    pub config: IngestConfig,
    pub lake: LakeUrl,
    pub handle: Handle,
    pub schemas: Arc<SchemaSet>,
    pub schemas_dir: PathBuf,
    pub contracts: HashMap<String, TopicContract>,
    pub publisher: Publisher,
    pub telemetry: Telemetry,
    pub rules: Rules,
    pub tables: HashMap<String, RawTable>,
    pub batches: HashMap<String, TopicBatch>,
    /// Per topic and partition: the last offset stored in the lake (None: nothing yet).
    pub stored: HashMap<String, HashMap<i32, Option<i64>>>,
    pub horizons: HashMap<String, Horizon>,
    /// Per writer fingerprint, its event and what its records share (or why none of them
    /// can land).
    pub writers: HashMap<u64, (String, Result<Arc<WriterPlan>, Reject>)>,
    /// Per-topic counters, looked up once instead of per record.
    pub counters: HashMap<String, (Counter, Counter)>,
    pub last_schema_reload: Option<Instant>,
    /// Per owned table: a pass is running, when the last one started, the version it saw.
    pub maintenance: HashMap<String, (Arc<AtomicBool>, Instant, Arc<AtomicU64>)>,
    /// Per topic, flushed batches in commit order (the first one's commit may be running).
    pub inflight: HashMap<String, std::collections::VecDeque<super::flush::InFlight>>,
    /// Committed batches whose memory the next batches reuse.
    pub spare: Vec<TopicBatch>,
    pub running: super::flush::Running,
    pub summary: Summary,
    /// Wall clock, refreshed every few hundred records rather than read per record.
    pub now_ms: i64,
}

impl Worker {
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
                self.settle_finished(&consumer)?;
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
        self.settle_all(&consumer, true)?;
        self.telemetry.set_ready(false);
        consumer.unsubscribe();
        Ok(self.summary)
    }

    fn poll_timeout(&self) -> Duration {
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
                    self.settle_all(consumer, false)?;
                    let batches: Vec<(String, TopicBatch)> = self.batches.drain().collect();
                    for (topic, batch) in &batches {
                        self.forget(topic, batch);
                    }
                    let abandoned = batches.iter().filter(|(_, b)| !b.is_empty()).count();
                    self.summary.abandoned_batches += abandoned as u64;
                    self.stored.clear();
                    self.telemetry.ingest.consumer_lag.clear();
                    info!(abandoned, "partitions revoked; in-flight batches abandoned");
                }
                RebalanceEvent::Assigned(stored) => {
                    for ((topic, p), s) in stored {
                        self.stored.entry(topic).or_default().insert(p, s);
                    }
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
        let (records_in, replayed) = match self.counters.get(topic) {
            Some(c) => c,
            None => {
                let labels = vec![("topic", topic.to_string())];
                let counters = (
                    self.telemetry.ingest.records_in.get_or_create(&labels).clone(),
                    self.telemetry.ingest.replayed_skipped.get_or_create(&labels).clone(),
                );
                self.counters.entry(topic.to_string()).or_insert(counters)
            }
        };
        records_in.inc();
        self.summary.records_in += 1;
        match self.stored.get(topic).and_then(|ps| ps.get(&partition)) {
            None => return Ok(None),
            Some(Some(stored)) if offset <= *stored => {
                replayed.inc();
                self.summary.replayed_skipped += 1;
                return Ok(None);
            }
            Some(_) => {}
        }
        let payload = m.payload().unwrap_or_default();
        let kafka_ms = m.timestamp().to_millis();
        let plan = self.plan_for(topic, payload);
        if !self.batches.contains_key(topic) {
            let batch = match self.spare.pop() {
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
            let writer = self.writer_of(fingerprint)?;
            let plan = WriterPlan::new(&writer).map(Arc::new);
            self.writers.insert(fingerprint, (writer.event.clone(), plan));
        }
        let (Some((event, plan)), Some(contract)) = (self.writers.get(&fingerprint), self.contracts.get(topic)) else {
            return Err(Reject::new("unknown_topic", format!("{topic} is not a raw topic here")));
        };
        if *event != contract.event {
            return Err(Reject::new(
                "wrong_event_type",
                format!("record is a {event} but {topic} carries {}", contract.event),
            ));
        }
        plan.clone()
    }

    /// Cleans, checks and sets aside the topic's full chunks (every chunk, with `all`).
    pub(super) fn seal(&mut self, topic: &str, all: bool) {
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
    pub(super) fn forget(&mut self, topic: &str, batch: &TopicBatch) {
        if let Some(h) = self.horizons.get_mut(topic) {
            h.forget(&batch.ids);
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
        }
        self.schemas.by_fingerprint(fingerprint).cloned().ok_or_else(|| {
            let e = crate::codec::CodecError::UnknownFingerprint { fingerprint };
            Reject::new(e.class(), e.to_string())
        })
    }

    /// Retries a Kafka or lake step with exponential backoff for up to two minutes.
    pub(super) fn retry<T, E: std::fmt::Display, F, Fut>(&self, what: &str, mut f: F) -> Result<T, IngestError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut wait = Duration::from_millis(self.config.retry_backoff_ms);
        loop {
            match self.handle.block_on(f()) {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() + wait < deadline => {
                    warn!(step = what, error = %e, retry_in_ms = wait.as_millis() as u64, "retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(IngestError::Step(format!("{what}: {e}"))),
            }
        }
    }

    /// Lag gauges, and maintenance of the tables whose partition 0 is ours.
    fn tick(&mut self, consumer: &BaseConsumer<IngestContext>) {
        for (topic, p, stored) in self
            .stored
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, s)| (t, p, s)))
        {
            if let Some(high) = consumer.context().high_watermark(topic, *p) {
                let next = stored.map_or(0, |s| s + 1);
                self.telemetry
                    .ingest
                    .consumer_lag
                    .get_or_create(&vec![("topic", topic.clone()), ("partition", p.to_string())])
                    .set((high - next).max(0));
            }
        }
        if self.config.maintenance.interval_ms == 0 {
            return;
        }
        let interval = Duration::from_millis(self.config.maintenance.interval_ms);
        let owned: Vec<String> = self
            .stored
            .iter()
            .filter(|(_, ps)| ps.contains_key(&0))
            .map(|(t, _)| t.clone())
            .collect();
        for topic in owned {
            let entry = self.maintenance.entry(topic.clone()).or_insert_with(|| {
                (
                    Arc::new(AtomicBool::new(false)),
                    Instant::now(),
                    Arc::new(AtomicU64::new(u64::MAX)),
                )
            });
            if entry.0.load(Ordering::Relaxed) || entry.1.elapsed() < interval {
                continue;
            }
            entry.1 = Instant::now();
            entry.0.store(true, Ordering::Relaxed);
            let (running, lake, config) = (entry.0.clone(), self.lake.clone(), self.config.clone());
            let seen = entry.2.clone();
            let last = Some(seen.load(Ordering::Relaxed)).filter(|v| *v != u64::MAX);
            let table = super::table::table_name(&topic);
            self.handle.spawn(async move {
                let result =
                    crate::lake::maintenance::run(&lake, &table, &config.maintenance, config.target_file_bytes, last)
                        .await;
                if let Ok(r) = &result {
                    seen.store(r.version, Ordering::Relaxed);
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
