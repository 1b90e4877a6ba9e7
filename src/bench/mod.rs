//! `hoffrec bench ingest`: landing throughput and latency on a real broker, measured
//! against a plain consume-and-discard loop over the same topic in the same run.
//!
//! 1. Fill a fresh raw topic with `--events` realistic product views.
//! 2. Read it all with a bare consumer that discards records: the ceiling.
//! 3. Run `hoffrec ingest` (a child process, so its peak RSS is its own) until the lake
//!    holds every event; landed events/s is the steady rate between its first and last
//!    commit (the wall time including start-up and group join is reported too).
//! 4. With ingest caught up, produce at `--rate` for `--latency-secs` and match every
//!    event's send time with the `lake.commits` record that covered its offset.

pub mod closed_loop;
pub mod forget;
pub mod mart;
pub mod recommend;
pub mod serve;

use crate::catalog::Catalog;
use crate::codec::{SchemaSet, read_header};
use crate::config::Config;
use apache_avro::types::Value;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench setup: {0}")]
    Setup(String),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("timed out: {0}")]
    Timeout(String),
}

#[derive(Debug, Clone, clap::Args)]
pub struct IngestBenchArgs {
    /// Events in the backlog that ingest drains.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Steady produce rate while latency is measured, events/s.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 20)]
    pub latency_secs: u64,
    /// ingest.flush_interval_ms for the run.
    #[arg(long, default_value_t = 1_000)]
    pub flush_interval_ms: u64,
    /// ingest.workers (consumer threads) for the run.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
}

#[derive(Debug, Serialize)]
pub struct IngestBenchReport {
    pub events: u64,
    pub partitions: i32,
    pub payload_bytes_avg: f64,
    pub produce_events_per_s: f64,
    pub plain_consume_events_per_s: f64,
    pub ingest_events_per_s: f64,
    pub ingest_vs_plain: f64,
    pub ingest_wall_secs_incl_startup: f64,
    pub ingest_peak_rss_mib: f64,
    pub lake_commits: u64,
    pub latency_rate_events_per_s: u64,
    pub latency_events: u64,
    pub flush_interval_ms: u64,
    pub ingest_workers: u32,
    pub event_to_commit_p50_ms: i64,
    pub event_to_commit_p99_ms: i64,
}

struct Names {
    raw: String,
    commits: String,
}

pub async fn ingest(config: &Config, args: &IngestBenchArgs) -> Result<IngestBenchReport, BenchError> {
    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let dir = std::env::temp_dir().join(format!("hoffrec-bench-{id}"));
    let names = write_catalog(&dir, &id, args.partitions).map_err(|e| setup(&e))?;
    let catalog = Catalog::load(&dir, &config.catalog.schemas_dir).map_err(|e| setup(&e))?;
    crate::catalog::apply::apply(&catalog, &config.kafka)
        .await
        .map_err(|e| setup(&e))?;
    let lake = format!("{}/bench/{id}", config.lake.url.trim_end_matches('/'));
    let schemas = &catalog.schemas;

    eprintln!("bench: producing {} events to {}", args.events, names.raw);
    let producer: FutureProducer = crate::kafka::client_config(&config.kafka)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "true")
        .create()?;
    let mut rng = Rng(0x5eed_u64 ^ u64::from_str_radix(&id, 16).unwrap_or(1));
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut bytes = 0u64;
    for i in 0..args.events {
        let (key, payload) = product_view(schemas, &mut rng, i).map_err(|e| setup(&e))?;
        bytes += payload.len() as u64;
        in_flight.push(send(&producer, &names.raw, key, payload));
        while in_flight.len() >= 50_000 {
            if let Some(r) = in_flight.next().await {
                r?;
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        r?;
    }
    let produce_rate = args.events as f64 / started.elapsed().as_secs_f64();

    eprintln!("bench: plain consume-and-discard");
    let plain_rate = plain_consume(config, &names.raw, args.partitions, args.events)?;

    eprintln!("bench: ingest into {lake}");
    let group = format!("bench-{id}");
    let spawned = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().map_err(|e| setup(&e))?)
        .args(["--brokers", &config.kafka.brokers, "--lake", &lake])
        .arg("--topics-dir")
        .arg(&dir)
        .arg("--schemas-dir")
        .arg(&config.catalog.schemas_dir)
        .args(["ingest", "--group", &group])
        .env("HOFFREC__INGEST__FLUSH_INTERVAL_MS", args.flush_interval_ms.to_string())
        .env("HOFFREC__INGEST__WORKERS", args.workers.to_string())
        .env(
            "HOFFREC__LOG__FILTER",
            std::env::var("HOFFREC_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| setup(&e))?;
    let pid = child.id();
    let mut commits = Commits::new(config, &names.commits)?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while commits.rows < args.events {
        commits.poll(schemas, deadline).await?;
    }
    let wall_secs = (commits.last_commit_ms - unix_ms_at(spawned)) as f64 / 1000.0;
    // Steady state: rows after the first commit over the time between first and last
    // commit, so process start and the group join do not count against the stage.
    let steady_secs = (commits.last_commit_ms - commits.first_commit_ms) as f64 / 1000.0;
    let steady_rows = args.events.saturating_sub(commits.first_rows);
    let peak_rss_mib = peak_rss_kib(pid) as f64 / 1024.0;

    eprintln!(
        "bench: {} events/s for {} s to measure event-to-commit latency",
        args.rate, args.latency_secs
    );
    let sent = steady(&producer, schemas, &names.raw, &mut rng, args).await?;
    let want = args.events + sent.len() as u64;
    while commits.rows < want {
        commits.poll(schemas, deadline).await?;
    }
    let mut latencies: Vec<i64> = sent
        .iter()
        .filter_map(|(&(p, o), &t)| commits.committed_at(p, o).map(|c| c - t))
        .collect();
    latencies.sort_unstable();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if !lake.contains("://") {
        let _ = std::fs::remove_dir_all(&lake);
    }
    let ingest_rate = steady_rows as f64 / steady_secs.max(1e-9);
    Ok(IngestBenchReport {
        events: args.events,
        partitions: args.partitions,
        payload_bytes_avg: bytes as f64 / args.events.max(1) as f64,
        produce_events_per_s: produce_rate.round(),
        plain_consume_events_per_s: plain_rate.round(),
        ingest_events_per_s: ingest_rate.round(),
        ingest_vs_plain: (ingest_rate / plain_rate * 100.0).round() / 100.0,
        ingest_wall_secs_incl_startup: (wall_secs * 10.0).round() / 10.0,
        ingest_peak_rss_mib: peak_rss_mib.round(),
        lake_commits: commits.count,
        latency_rate_events_per_s: args.rate,
        latency_events: latencies.len() as u64,
        flush_interval_ms: args.flush_interval_ms,
        ingest_workers: args.workers,
        event_to_commit_p50_ms: percentile(&latencies, 0.50),
        event_to_commit_p99_ms: percentile(&latencies, 0.99),
    })
}

fn write_catalog(dir: &Path, id: &str, partitions: i32) -> std::io::Result<Names> {
    std::fs::create_dir_all(dir)?;
    let names = Names {
        raw: format!("raw.bench-{id}.product_view"),
        commits: format!("bench-{id}.lake.commits"),
    };
    let files = [
        (
            names.raw.clone(),
            format!(
                "name = \"{}\"\nrole = \"raw\"\npartitions = {partitions}\ncleanup_policy = \"delete\"\nretention_ms = 86400000\nvalue_schema = \"product_view\"\nkey = [\"customer_id\"]\n[source]\nkind = \"collector\"\ndescription = \"bench\"\n",
                names.raw
            ),
        ),
        (
            names.commits.clone(),
            format!(
                "name = \"{}\"\nrole = \"lake_commits\"\npartitions = 1\ncleanup_policy = \"delete\"\nretention_ms = 86400000\nvalue_schema = \"lake_commit\"\nkey = [\"table\"]\n",
                names.commits
            ),
        ),
        (
            format!("bench-{id}.dlq"),
            format!(
                "name = \"bench-{id}.dlq\"\nrole = \"dead_letter\"\npartitions = 1\ncleanup_policy = \"delete\"\nretention_ms = 86400000\n"
            ),
        ),
        (
            format!("bench-{id}.mart"),
            format!(
                "name = \"bench-{id}.mart\"\nrole = \"mart_changes\"\npartitions = 1\ncleanup_policy = \"delete\"\nretention_ms = 86400000\nvalue_schema = \"mart_change\"\nkey = [\"customer_id\"]\n"
            ),
        ),
        (
            format!("bench-{id}.recs"),
            format!(
                "name = \"bench-{id}.recs\"\nrole = \"recommendations\"\npartitions = 1\ncleanup_policy = \"compact\"\nvalue_schema = \"recommendation\"\nkey = [\"customer_id\"]\n"
            ),
        ),
        (
            format!("bench-{id}.offsets"),
            format!(
                "name = \"bench-{id}.offsets\"\nrole = \"connector_offsets\"\npartitions = 1\ncleanup_policy = \"compact\"\nvalue_schema = \"connector_offset\"\nkey = [\"connector\", \"stream\"]\n"
            ),
        ),
        (
            format!("bench-{id}.erasure"),
            format!(
                "name = \"bench-{id}.erasure\"\nrole = \"erasure\"\npartitions = 1\ncleanup_policy = \"delete\"\nretention_ms = 86400000\nvalue_schema = \"erasure_request\"\nkey = [\"customer_id\"]\n"
            ),
        ),
        (
            format!("bench-{id}.audit"),
            format!(
                "name = \"bench-{id}.audit\"\nrole = \"audit\"\npartitions = 1\ncleanup_policy = \"delete\"\nretention_ms = 86400000\nvalue_schema = \"erasure_audit\"\nkey = [\"customer_hash\"]\n"
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(format!("{name}.toml")), text)?;
    }
    Ok(names)
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: String,
    payload: Vec<u8>,
) -> Result<(i32, i64), rdkafka::error::KafkaError> {
    let record = FutureRecord::to(topic).key(&key).payload(&payload);
    crate::kafka::send_and_wait(producer, record, Duration::from_secs(60)).await
}

fn plain_consume(config: &Config, topic: &str, partitions: i32, events: u64) -> Result<f64, BenchError> {
    let group = format!("bench-plain-{}", uuid::Uuid::new_v4().simple());
    let consumer: BaseConsumer = crate::kafka::consumer_config(&config.kafka, &group, "earliest")
        // The fetch settings ingest uses, so the loop is the best one client does here.
        .set("fetch.queue.backoff.ms", "20")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut seen = 0u64;
    let mut checksum = 0u64;
    while seen < events {
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(BenchError::Timeout(format!("plain consume saw {seen} of {events}")));
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            // Touch the payload so the loop does the reading a real consumer would.
            checksum = checksum.wrapping_add(m?.payload().map_or(0, |p| p.len() as u64));
            seen += 1;
        }
    }
    std::hint::black_box(checksum);
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn steady(
    producer: &FutureProducer,
    schemas: &SchemaSet,
    topic: &str,
    rng: &mut Rng,
    args: &IngestBenchArgs,
) -> Result<HashMap<(i32, i64), i64>, BenchError> {
    let mut sent = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    let per_tick = (args.rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let end = Instant::now() + Duration::from_secs(args.latency_secs);
    let mut i = args.events;
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..per_tick {
            let (key, payload) = product_view(schemas, rng, i).map_err(|e| BenchError::Setup(e.to_string()))?;
            i += 1;
            let at = chrono::Utc::now().timestamp_millis();
            let fut = send(producer, topic, key, payload);
            in_flight.push(async move { fut.await.map(|po| (po, at)) });
        }
        while let Some(Some(r)) = futures::FutureExt::now_or_never(in_flight.next()) {
            let (po, at) = r?;
            sent.insert(po, at);
        }
    }
    while let Some(r) = in_flight.next().await {
        let (po, at) = r?;
        sent.insert(po, at);
    }
    Ok(sent)
}

/// Follows the bench's `lake.commits` topic.
struct Commits {
    consumer: StreamConsumer,
    rows: u64,
    count: u64,
    first_commit_ms: i64,
    first_rows: u64,
    last_commit_ms: i64,
    /// Per partition: (last offset, committed at), in commit order.
    by_partition: HashMap<i32, Vec<(i64, i64)>>,
}

impl Commits {
    fn new(config: &Config, topic: &str) -> Result<Self, BenchError> {
        let group = format!("bench-commits-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = crate::kafka::consumer_config(&config.kafka, &group, "earliest").create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            rows: 0,
            count: 0,
            first_commit_ms: 0,
            first_rows: 0,
            last_commit_ms: 0,
            by_partition: HashMap::new(),
        })
    }

    async fn poll(&mut self, schemas: &SchemaSet, deadline: Instant) -> Result<(), BenchError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, self.consumer.recv())
            .await
            .map_err(|_| BenchError::Timeout(format!("the lake holds {} rows", self.rows)))??;
        let payload = m.payload().unwrap_or_default();
        if read_header(payload).is_err() {
            return Ok(());
        }
        let Ok(Value::Record(fields)) = schemas.decode(payload, "lake_commit") else {
            return Ok(());
        };
        for (name, v) in fields {
            match (name.as_str(), v) {
                ("rows", Value::Long(r)) => self.rows += r as u64,
                ("committed_at", Value::TimestampMillis(t)) => self.last_commit_ms = t,
                ("offsets", Value::Array(items)) => {
                    for item in items {
                        if let Value::Record(f) = item {
                            let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                            if let (Some(Value::Int(p)), Some(Value::Long(o))) = (get("partition"), get("offset")) {
                                self.by_partition.entry(p).or_default().push((o, 0));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // Stamp this commit's entries (pushed with 0 above) with its time.
        for entries in self.by_partition.values_mut() {
            if let Some(last) = entries.last_mut()
                && last.1 == 0
            {
                last.1 = self.last_commit_ms;
            }
        }
        if self.count == 0 {
            self.first_commit_ms = self.last_commit_ms;
            self.first_rows = self.rows;
        }
        self.count += 1;
        Ok(())
    }

    fn committed_at(&self, partition: i32, offset: i64) -> Option<i64> {
        let entries = self.by_partition.get(&partition)?;
        let i = entries.partition_point(|(last, _)| *last < offset);
        entries.get(i).map(|(_, t)| *t)
    }
}

fn product_view(schemas: &SchemaSet, rng: &mut Rng, i: u64) -> Result<(String, Vec<u8>), crate::codec::CodecError> {
    let customer = rng.below(50_000);
    let product = rng.below(8_000);
    let from_recs = rng.below(10) == 0;
    let price = 50_000 + rng.below(300) * rng.below(300) * 100;
    let value = Value::Record(vec![
        (
            "event_id".into(),
            Value::String(format!("bench-{i:012}-{:08x}", rng.next() as u32)),
        ),
        (
            "event_time".into(),
            Value::TimestampMillis(chrono::Utc::now().timestamp_millis()),
        ),
        ("customer_id".into(), Value::String(format!("cust-{customer:06}"))),
        (
            "session_id".into(),
            Value::String(format!("sess-{customer:06}-{}", rng.below(40))),
        ),
        ("product_id".into(), Value::String(format!("prod-{product:05}"))),
        (
            "dwell_ms".into(),
            Value::Long((rng.below(120) * rng.below(1_000)) as i64),
        ),
        (
            "price_kopecks".into(),
            Value::Union(1, Box::new(Value::Long(price as i64))),
        ),
        (
            "list_id".into(),
            if from_recs {
                Value::Union(1, Box::new(Value::String(format!("recs-{}", rng.below(1_000_000)))))
            } else {
                Value::Union(0, Box::new(Value::Null))
            },
        ),
        (
            "position".into(),
            if from_recs {
                Value::Union(1, Box::new(Value::Int(rng.below(10) as i32)))
            } else {
                Value::Union(0, Box::new(Value::Null))
            },
        ),
    ]);
    Ok((format!("cust-{customer:06}"), schemas.encode("product_view", value)?))
}

/// xorshift64*: reproducible event streams without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn unix_ms_at(t: Instant) -> i64 {
    chrono::Utc::now().timestamp_millis() - t.elapsed().as_millis() as i64
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
