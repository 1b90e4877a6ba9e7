//! `hoffrec bench serve`: the read path under load. `--lists` customers' lists go onto a
//! fresh compacted list topic on the configured broker; a server (the `serve` follower and
//! routes, on one core: a runtime with one worker thread) catches up from an
//! empty store, timed, with its memory; then a client on the other core sends GETs for
//! random customers at a fixed `--rate` for `--seconds`. A request that is sent late
//! because the one before it was slow counts from when it was due, so a stalled server
//! shows in the tail instead of slowing the client (no coordinated omission).

use super::BenchError;
use crate::serve::{Served, follow, http};
use crate::telemetry::Telemetry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub lists: usize,
    /// Requests per second the client sends.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Client tasks sharing the rate (each with its own connection pool use).
    #[arg(long, default_value_t = 64)]
    pub connections: u64,
}

#[derive(Debug, Serialize)]
pub struct ServeBenchReport {
    pub lists: usize,
    pub produce_s: f64,
    /// From an empty store to ready (every list read).
    pub catch_up_s: f64,
    pub rss_mb_before: f64,
    pub rss_mb_caught_up: f64,
    pub target_rate: u64,
    pub requests: u64,
    pub achieved_rate: f64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU of the whole process (server and client) while loaded, in cores.
    pub cpu_cores_under_load: f64,
}

/// CPU seconds this process has used (user + system).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn schemas(config: &crate::config::Config) -> Result<crate::codec::SchemaSet, BenchError> {
    crate::codec::SchemaSet::load_strict(&config.catalog.schemas_dir)
        .map_err(|problems| BenchError::Setup(format!("schemas: {problems:?}")))
}

/// Ten products with reasons, as the recommender publishes them.
fn list(schemas: &crate::codec::SchemaSet, customer: &str, rng: &mut StdRng) -> Result<Vec<u8>, BenchError> {
    let now = chrono::Utc::now().timestamp_millis();
    let items: Vec<serde_json::Value> = (0..10)
        .map(|rank| {
            serde_json::json!({"product_id": format!("p-{}", rng.random_range(0..20_000)), "rank": rank + 1,
                "score": rng.random::<f64>(), "reasons": ["popular", "complements:p-1"], "propensity": 0.1})
        })
        .collect();
    let json = serde_json::json!({"customer_id": customer, "list_id": format!("l-{customer}"), "generated_at": now,
        "valid_until": now + 86_400_000, "model_version": "bench", "items": items});
    let version = schemas
        .current("recommendation")
        .ok_or_else(|| BenchError::Setup("no recommendation schema".into()))?;
    let value = crate::codec::json::to_avro(&json, &version.schema).map_err(BenchError::Setup)?;
    crate::codec::encode_with(version, value).map_err(|e| BenchError::Setup(e.to_string()))
}

async fn produce(config: &crate::config::Config, topic: &str, lists: usize) -> Result<f64, BenchError> {
    let schemas = schemas(config)?;
    let admin: AdminClient<DefaultClientContext> = crate::kafka::client_config(&config.kafka).create()?;
    let new = NewTopic::new(topic, 6, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for result in admin.create_topics(&[new], &AdminOptions::new()).await? {
        result.map_err(|(t, code)| BenchError::Setup(format!("cannot create {t}: {code}")))?;
    }
    let producer: FutureProducer = crate::kafka::client_config(&config.kafka)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let bar = indicatif::ProgressBar::new(lists as u64);
    for chunk in (0..lists).collect::<Vec<_>>().chunks(20_000) {
        let records: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|i| {
                let c = format!("c-{i:07}");
                list(&schemas, &c, &mut rng).map(|p| (c, p))
            })
            .collect::<Result<_, _>>()?;
        let sends = records
            .iter()
            .map(|(k, p)| producer.send(FutureRecord::to(topic).key(k).payload(p), Duration::from_secs(60)));
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(started.elapsed().as_secs_f64())
}

pub fn run(config: &crate::config::Config, args: &ServeBenchArgs) -> Result<ServeBenchReport, BenchError> {
    let topic = format!("bench-{}.recs", chrono::Utc::now().timestamp_millis());
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let produce_s = client_rt.block_on(produce(config, &topic, args.lists))?;
    let rss_mb_before = rss_mb();

    // The server: one thread, one core.
    let served = Served::default();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<std::net::SocketAddr, String>>();
    let server = {
        let (config, served, shutdown, topic) = (config.clone(), served.clone(), shutdown.clone(), topic.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let schemas = schemas(&config).map_err(|e| e.to_string())?;
                let telemetry = Telemetry::new();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let router = http::router(http::Api {
                    store: served.store.clone(),
                    products: served.products.clone(),
                    catalogue: served.catalogue.clone(),
                    config: config.serve.clone(),
                    metrics: telemetry.serve.clone(),
                });
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, router)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await;
                });
                let tx = ready_tx.clone();
                follow::run(
                    &config.kafka,
                    &topic,
                    Arc::new(schemas),
                    served.store.clone(),
                    (telemetry.serve.records.clone(), telemetry.serve.lists.clone()),
                    move || {
                        let _ = tx.send(Ok(addr));
                    },
                    shutdown,
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
    };
    let started = Instant::now();
    let addr = ready_rx
        .recv_timeout(Duration::from_secs(600))
        .map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => {
                BenchError::Timeout("the server did not catch up in 600 s".into())
            }
            std::sync::mpsc::RecvTimeoutError::Disconnected => {
                BenchError::Setup("the server stopped before it caught up".into())
            }
        })?
        .map_err(BenchError::Setup)?;
    let catch_up_s = started.elapsed().as_secs_f64();
    let rss_mb_caught_up = rss_mb();
    tracing::info!(lists = served.store.len(), catch_up_s, "caught up; loading");

    let cpu_before = cpu_s();
    let (latencies, errors) = client_rt.block_on(load(addr, args))?;
    let cpu_cores_under_load = (cpu_s() - cpu_before) / args.seconds as f64;
    shutdown.cancel();
    let _ = server.join();
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(ServeBenchReport {
        lists: served.store.len(),
        produce_s,
        catch_up_s,
        rss_mb_before,
        rss_mb_caught_up,
        target_rate: args.rate,
        requests: sorted.len() as u64,
        achieved_rate: sorted.len() as f64 / args.seconds as f64,
        errors,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        cpu_cores_under_load,
    })
}

/// Fixed-rate GETs from `connections` tasks; latency from each request's due time, ms.
async fn load(addr: std::net::SocketAddr, args: &ServeBenchArgs) -> Result<(Vec<f64>, u64), BenchError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections as usize)
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let per_task = Duration::from_secs_f64(args.connections as f64 / args.rate.max(1) as f64);
    let end = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let tasks = (0..args.connections).map(|t| {
        let (client, lists) = (client.clone(), args.lists.max(1));
        async move {
            let mut rng = StdRng::seed_from_u64(t);
            let mut due = tokio::time::Instant::now() + per_task.mul_f64(t as f64 / args.connections as f64);
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while due < end {
                // Behind (the last answer came after this one was due): count from when it
                // was due, so a slow server shows. On time: from when it is sent, so the
                // timer's millisecond granularity does not.
                let start = if tokio::time::Instant::now() > due {
                    due
                } else {
                    tokio::time::sleep_until(due).await;
                    tokio::time::Instant::now()
                };
                let customer = format!("c-{:07}", rng.random_range(0..lists));
                let ok = client
                    .get(format!("http://{addr}/v1/recommendations/{customer}"))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                match ok {
                    Ok(r) => {
                        let _ = r.bytes().await;
                        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(_) => errors += 1,
                }
                due += per_task;
            }
            (latencies, errors)
        }
    });
    let mut all = Vec::new();
    let mut errors = 0;
    for (l, e) in futures::future::join_all(tasks).await {
        all.extend(l);
        errors += e;
    }
    Ok((all, errors))
}
