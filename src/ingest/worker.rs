//! The consume loop: poll, decode, check, buffer per topic, flush on rows, bytes or age.
//! Runs on its own thread with a blocking librdkafka consumer; lake I/O runs on the async
//! runtime through a handle, and lake commits in the background (see `flush`).

use super::arrow::record_fields;
use super::assign::{IngestContext, RebalanceEvent};
use super::batch::{Coordinates, DeadLetter, TopicBatch};
use super::checks::{Horizon, Reject, RequiredPlan, Rules, id_hash, top_level};
use super::originals::Original;
use super::publish::Publisher;
use super::table::RawTable;
use super::{IngestError, Summary};
use crate::codec::{SchemaSet, SchemaVersion, WriterDecoder, read_header};
use crate::config::IngestConfig;
use crate::lake::LakeUrl;
use crate::telemetry::Telemetry;
use apache_avro::Schema;
use apache_avro::types::Value;
use arrow::datatypes::Fields;
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

/// Everything records of one writer version share, worked out once per fingerprint.
pub struct WriterPlan {
    decoder: WriterDecoder,
    fields: Fields,
    /// `event@fingerprint`: file names move when versions do, this always names one schema.
    label: String,
    required: RequiredPlan,
}

impl WriterPlan {
    fn new(writer: &Arc<SchemaVersion>, contract: &TopicContract) -> Result<Self, Reject> {
        let decoder = WriterDecoder::new(writer.clone()).map_err(|e| Reject::new(e.class(), e.to_string()))?;
        let fields = record_fields(&writer.schema).map_err(|e| Reject::new("unsupported_schema", e.to_string()))?;
        let names: Vec<&str> = match &writer.schema {
            Schema::Record(r) => r.fields.iter().map(|f| f.name.as_str()).collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            decoder,
            fields,
            label: format!("{}@{:016x}", writer.event, writer.fingerprint),
            required: RequiredPlan::new(&names, &contract.required),
        })
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
    /// Per writer fingerprint, what its records share (or why none of them can land).
    pub writers: HashMap<u64, Result<WriterPlan, Reject>>,
    /// Per-topic counters, looked up once instead of per record.
    pub counters: HashMap<String, (Counter, Counter)>,
    pub last_schema_reload: Option<Instant>,
    /// Per owned table: a pass is running, when the last one started, the version it saw.
    pub maintenance: HashMap<String, (Arc<AtomicBool>, Instant, Arc<AtomicU64>)>,
    /// Per topic, the batch whose lake commit is running in the background.
    pub inflight: HashMap<String, super::flush::InFlight>,
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
        self.settle_all(&consumer)?;
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
                    self.settle_all(consumer)?;
                    let abandoned = self.batches.drain().filter(|(_, b)| !b.is_empty()).count();
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
        if !self.counters.contains_key(topic) {
            let labels = vec![("topic", topic.to_string())];
            let counters = (
                self.telemetry.ingest.records_in.get_or_create(&labels).clone(),
                self.telemetry.ingest.replayed_skipped.get_or_create(&labels).clone(),
            );
            self.counters.insert(topic.to_string(), counters);
        }
        let Some((records_in, replayed)) = self.counters.get(topic) else {
            return Err(IngestError::Internal("counters vanished".into()));
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
        let now_ms = self.now_ms;
        if !self.batches.contains_key(topic) {
            self.batches.insert(topic.to_string(), TopicBatch::new(topic));
        }
        let batch = self
            .batches
            .get_mut(topic)
            .ok_or(IngestError::Internal("batch vanished".into()))?;
        batch.account(partition, offset, kafka_ms, payload.len());
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        batch.originals.push(partition, offset, m.key(), payload, headers);
        let at = (partition, offset, kafka_ms, now_ms);
        let landed = self.land(topic, payload, at)?;
        let batch = self
            .batches
            .get_mut(topic)
            .ok_or(IngestError::Internal("batch vanished".into()))?;
        if let Err(reject) = landed
            && let Some(original) = batch.originals.last()
        {
            let dead = letter(topic, &original, reject.class, reject.message);
            batch.letters.push(dead);
        }
        let full = batch.rows >= self.config.max_batch_rows || batch.bytes >= self.config.max_batch_bytes;
        Ok(full.then(|| topic.to_string()))
    }

    /// Decodes, cleans, deduplicates and appends one record; `Ok(Err(..))` is a rejected record.
    fn land(
        &mut self,
        topic: &str,
        payload: &[u8],
        at: (i32, i64, Option<i64>, i64),
    ) -> Result<Result<(), Reject>, IngestError> {
        let (partition, offset, kafka_ms, now_ms) = at;
        let writer = match self.writer_of(payload) {
            Ok(w) => w,
            Err(r) => return Ok(Err(r)),
        };
        let Some(contract) = self.contracts.get(topic) else {
            return Ok(Err(Reject::new(
                "unknown_topic",
                format!("{topic} is not a raw topic here"),
            )));
        };
        if writer.event != contract.event {
            return Ok(Err(Reject::new(
                "wrong_event_type",
                format!("record is a {} but {topic} carries {}", writer.event, contract.event),
            )));
        }
        let plan = match self
            .writers
            .entry(writer.fingerprint)
            .or_insert_with(|| WriterPlan::new(&writer, contract))
        {
            Ok(plan) => plan,
            Err(r) => return Ok(Err(r.clone())),
        };
        let mut value = match plan.decoder.decode(payload) {
            Ok(v) => v,
            Err(e) => return Ok(Err(Reject::new(e.class(), e.to_string()))),
        };
        if let Err(r) = self.rules.clean(&mut value, &plan.required, now_ms) {
            return Ok(Err(r));
        }
        let event_id = match top_level(&value, "event_id") {
            Some(Value::String(id)) => Some((id_hash(id), id)),
            _ => None,
        };
        if !self.horizons.contains_key(topic) {
            let capacity = usize::try_from(self.config.dedup_horizon_events).unwrap_or(usize::MAX);
            self.horizons.insert(topic.to_string(), Horizon::new(capacity));
        }
        let horizon = self
            .horizons
            .get(topic)
            .ok_or(IngestError::Internal("horizon vanished".into()))?;
        let batch = self
            .batches
            .get_mut(topic)
            .ok_or(IngestError::Internal("batch vanished".into()))?;
        if let Some((hash, id)) = &event_id
            && (batch.ids.contains(hash)
                || horizon.contains(*hash)
                || self.inflight.get(topic).is_some_and(|f| f.has_id(*hash)))
        {
            return Ok(Err(Reject::new(
                "duplicate_event",
                format!("event_id {id} already landed"),
            )));
        }
        if let Err(e) = batch.adopt(writer.fingerprint, &plan.fields) {
            return Ok(Err(Reject::new("schema_conflict", e)));
        }
        let event_time_ms = match top_level(&value, "event_time") {
            Some(Value::TimestampMillis(ms)) => *ms,
            Some(Value::TimestampMicros(us)) => us / 1000,
            _ => kafka_ms.unwrap_or(now_ms),
        };
        let Value::Record(record) = &value else {
            return Ok(Err(Reject::new("not_a_record", "a raw event must be an Avro record")));
        };
        let coordinates = Coordinates {
            partition,
            offset,
            kafka_timestamp_ms: kafka_ms,
            writer_schema: &plan.label,
            event_time_ms,
        };
        // Types were checked by `adopt`, so a failure here is a bug, not bad input.
        batch
            .append(record, &coordinates, now_ms)
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        if let Some((hash, _)) = event_id {
            batch.ids.insert(hash);
        }
        Ok(Ok(()))
    }

    /// The writer schema of a record; an unknown fingerprint rereads `avro/` (at most
    /// every 10 s) so a producer's new version is picked up without a restart.
    fn writer_of(&mut self, payload: &[u8]) -> Result<Arc<SchemaVersion>, Reject> {
        let fingerprint = read_header(payload).map_err(|e| Reject::new(e.class(), e.to_string()))?;
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
                    super::maintenance::run(&lake, &table, &config.maintenance, config.target_file_bytes, last).await;
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

pub(super) fn letter(topic: &str, o: &Original<'_>, class: &'static str, message: String) -> DeadLetter {
    DeadLetter {
        topic: topic.to_string(),
        partition: o.partition,
        offset: o.offset,
        key: o.key.map(<[u8]>::to_vec),
        payload: o.payload.to_vec(),
        headers: o.headers.to_vec(),
        class,
        message,
    }
}
