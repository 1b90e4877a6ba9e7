//! `hoffrec bench recommend`: how fast a customer's event becomes a fresh list, how many
//! lists one core ranks per second, and how training time grows with the training set.
//!
//! Latency: ingest, mart and recommend run in this process against the configured broker
//! with a fresh lake and 1 s micro-batches (ingest flush, recommend batch); after a warm-up
//! customer, `--customers` new customers each send a visit with a product view to Kafka,
//! and the time until their first list appears on `recs.customer` is recorded.

use super::BenchError;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::recommend::model::Model;
use crate::recommend::train::TrainingRow;
use crate::simulate::world;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize)]
pub struct RecommendBenchReport {
    pub customers: usize,
    pub event_to_list_p50_ms: u64,
    pub event_to_list_p99_ms: u64,
    pub event_to_list_max_ms: u64,
    /// Every customer's latency, in the order they were sent: shows whether the tail is a
    /// trend (something growing) or a few unlucky arrivals.
    pub event_to_list_ms: Vec<u64>,
    pub lists_per_second_one_core: f64,
    /// Training rows -> fit seconds.
    pub training_seconds: Vec<(usize, f64)>,
}

pub async fn run(config: &Config, customers: usize) -> Result<RecommendBenchReport, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    let stamp = chrono::Utc::now().timestamp_millis();
    let mut config = config.clone();
    config.lake.url = format!("{}/bench-recommend-{stamp}", config.lake.url.trim_end_matches('/'));
    config.ingest.group = format!("bench-{stamp}-ingest");
    config.ingest.topics = vec!["raw.site.session_start".into(), "raw.site.product_view".into()];
    config.ingest.flush_interval_ms = 1_000;
    config.mart.group = format!("bench-{stamp}-mart");
    config.mart.interval_ms = 0;
    config.recommend.group = format!("bench-{stamp}-recommend");
    config.recommend.batch_ms = 1_000;
    let catalog =
        Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir).map_err(|e| setup(e.to_string()))?;
    // The stages subscribe to topics a fresh broker does not have yet; `topics apply` is
    // idempotent, so running it here costs nothing on a prepared one.
    crate::catalog::apply::apply(&catalog, &config.kafka)
        .await
        .map_err(|e| setup(e.to_string()))?;
    let recs = catalog
        .require(crate::catalog::Role::Recommendations)
        .map_err(|e| setup(e.to_string()))?
        .name
        .clone();
    // The catalogue is in the lake before the clock starts.
    let w = world::generate(7, 10);
    let products: Vec<serde_json::Value> = crate::bench::closed_loop::catalogue(&w);
    crate::ingest::direct::land_typed(
        &crate::lake::LakeUrl::parse(&config.lake.url).map_err(|e| setup(e.to_string()))?,
        &catalog,
        &products,
    )
    .await
    .map_err(setup)?;

    let shutdown = CancellationToken::new();
    let telemetry = crate::telemetry::Telemetry::new();
    let config = std::sync::Arc::new(config);
    let mut tasks = Vec::new();
    {
        let (c, t, s) = (config.clone(), telemetry.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            crate::ingest::run(&c, &t, s)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
        let (c, t, s) = (config.clone(), telemetry.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            crate::mart::run(&c, &t, s).await.map(|_| ()).map_err(|e| e.to_string())
        }));
        let (c, t, s) = (config.clone(), telemetry.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            crate::recommend::run(&c, &t, s)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }));
    }
    let consumer: StreamConsumer =
        crate::kafka::consumer_config(&config.kafka, &format!("bench-{stamp}-site"), "latest").create()?;
    consumer.subscribe(&[recs.as_str()])?;
    let producer: FutureProducer = crate::kafka::client_config(&config.kafka)
        .set("linger.ms", "0")
        .create()?;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let send = |customer: String, n: usize| {
        let (producer, schemas, w) = (producer.clone(), &catalog.schemas, &w);
        async move {
            let now = chrono::Utc::now().timestamp_millis();
            let session = format!("{customer}-s");
            let product = &w.products[n % w.products.len()].id;
            let events = [
                (
                    "raw.site.session_start",
                    "site_session_start",
                    json!({"event_id": format!("{customer}-1"),
                    "event_time": now, "customer_id": customer, "session_id": session, "device_id": null,
                    "traffic_source": "direct", "referrer": null, "search_engine": null, "search_phrase": null,
                    "utm_source": null, "utm_medium": null, "utm_campaign": null, "utm_content": null,
                    "utm_term": null, "landing_url": "https://hoff.ru/", "user_agent": null, "region": null}),
                ),
                (
                    "raw.site.product_view",
                    "product_view",
                    json!({"event_id": format!("{customer}-2"),
                    "event_time": now, "customer_id": customer, "session_id": session, "product_id": product,
                    "dwell_ms": 1000, "price_kopecks": null, "list_id": null, "position": null}),
                ),
            ];
            for (topic, event, body) in events {
                let version = schemas
                    .current(event)
                    .ok_or_else(|| BenchError::Setup(format!("no schema {event}")))?;
                let value = crate::codec::json::to_avro(&body, &version.schema).map_err(BenchError::Setup)?;
                let payload =
                    crate::codec::encode_with(version, value).map_err(|e| BenchError::Setup(e.to_string()))?;
                let record = FutureRecord::to(topic).key(customer.as_str()).payload(&payload);
                crate::kafka::send_and_wait(&producer, record, Duration::from_secs(30)).await?;
            }
            Ok::<_, BenchError>(Instant::now())
        }
    };
    let prefix = format!("bench-{stamp}-c");
    // Warm-up: the first customer pays for every table being created.
    let names: Vec<String> = (0..=customers).map(|i| format!("{prefix}{i}")).collect();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(120 + 10 * customers as u64);
    let mut due = Instant::now();
    while latencies.len() < customers && Instant::now() < deadline {
        if next < names.len() && Instant::now() >= due && (next > 0 || sent.is_empty()) {
            let at = send(names[next].clone(), next).await?;
            sent.insert(names[next].clone(), at);
            next += 1;
            // After the warm-up list arrives, a new customer every 1.5 s.
            due = if next == 1 {
                deadline
            } else {
                Instant::now() + Duration::from_millis(1_500)
            };
        }
        let m = tokio::select! {
            m = consumer.recv() => m?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            continue;
        };
        if let Some(at) = sent.remove(&key) {
            if key == names[0] {
                due = Instant::now();
            } else {
                latencies.push(at.elapsed().as_millis() as u64);
            }
        }
    }
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let in_order = latencies.clone();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };

    // Ranking on one core: every bench customer, many times over, against one marts read.
    let r = crate::recommend::Recommender::load(&config).map_err(|e| setup(e.to_string()))?;
    let marts = crate::recommend::data::Marts::open(&r.lake)
        .await
        .map_err(|e| setup(e.to_string()))?;
    let catalogue = marts.catalogue().await.map_err(|e| setup(e.to_string()))?;
    let people = marts.customers(&names).await.map_err(|e| setup(e.to_string()))?;
    let model = Model::prior();
    let started = Instant::now();
    let mut lists = 0u64;
    while started.elapsed() < Duration::from_secs(3) && !people.is_empty() {
        for c in &people {
            std::hint::black_box(crate::recommend::rank::rank(c, &catalogue, &r.rules, &model, 10));
            lists += 1;
        }
    }
    let lists_per_second = lists as f64 / started.elapsed().as_secs_f64();

    let mut training_seconds = Vec::new();
    for size in [10_000, 50_000, 200_000] {
        let rows = synthetic_rows(size);
        let started = Instant::now();
        let options = crate::recommend::train::FitOptions {
            max_weight: crate::config::RecommendConfig::default().train_max_ips_weight,
            start: None,
        };
        crate::recommend::train::fit(&rows, 0.2, "bench".into(), &options).map_err(setup)?;
        training_seconds.push((size, (started.elapsed().as_secs_f64() * 100.0).round() / 100.0));
    }
    Ok(RecommendBenchReport {
        customers: latencies.len(),
        event_to_list_p50_ms: pct(0.5),
        event_to_list_p99_ms: pct(0.99),
        event_to_list_max_ms: latencies.last().copied().unwrap_or(0),
        event_to_list_ms: in_order,
        lists_per_second_one_core: lists_per_second.round(),
        training_seconds,
    })
}

/// Exposures whose reactions follow two of the features, with noise.
fn synthetic_rows(n: usize) -> Vec<TrainingRow> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    (0..n)
        .map(|i| {
            let mut x = [0.0f64; crate::recommend::model::FEATURES.len()];
            for v in x.iter_mut() {
                *v = rng.random_range(0.0..1.0);
            }
            let p: f64 = 1.0 / (1.0 + (-(3.0 * x[0] + 2.0 * x[1] - 2.5f64)).exp());
            TrainingRow {
                customer_id: format!("c{}", i / 10),
                list_id: format!("l{}", i / 10),
                product_id: format!("p{i}"),
                shown_ms: i as i64,
                label: i32::from(rng.random_bool(p)),
                position: (i % 10) as i64,
                propensity: 1.0,
                x,
                z: None,
            }
        })
        .collect()
}
