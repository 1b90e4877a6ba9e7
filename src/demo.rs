//! `hoffrec demo`: every stage in one process on embedded defaults. An in-process
//! Kafka-protocol broker (librdkafka's mock cluster), a lake on the local disk, and the
//! simulator behind the sources' APIs, so the real connectors, collector, ingest, marts,
//! recommender and trainer run; the simulated site shows the lists and its customers
//! react, closing the loop. Progress per stage while it runs, a summary at the end.

use crate::catalog::Catalog;
use crate::config::Config;
use crate::telemetry::{Telemetry, metric_sum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo set-up: {0}")]
    Setup(String),
    #[error("stage {stage} failed: {message}")]
    Stage { stage: &'static str, message: String },
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to run, seconds (Ctrl-C stops earlier, cleanly).
    #[arg(long = "duration", value_name = "DURATION", default_value_t = 120)]
    pub duration_secs: u64,
    /// Simulated customers.
    #[arg(long, default_value_t = 300)]
    pub customers: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The lake directory.
    #[arg(long, default_value = "lake")]
    pub lake_dir: PathBuf,
    /// Where the simulator and the collector listen (picked before the runtime starts,
    /// because the connectors find the simulator through environment variables).
    #[arg(skip)]
    pub simulator_addr: String,
    #[arg(skip)]
    pub collector_addr: String,
}

/// The sources the simulator serves, by the environment variables their topic files read.
pub const SOURCE_ENV: [(&str, &str); 3] = [
    ("HOFFREC_ORDERS", "raw.store.order"),
    ("HOFFREC_VK", "raw.vk.profile"),
    ("HOFFREC_REGISTER", "raw.register.real_estate"),
];

#[derive(Debug, Default, Serialize)]
pub struct DemoSummary {
    pub seconds: u64,
    pub events_by_table: BTreeMap<String, u64>,
    pub lake_tables: usize,
    pub lake_files: usize,
    pub mart_rows: BTreeMap<String, u64>,
    pub lists_published: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub click_through: Option<f64>,
    pub models: Vec<String>,
    pub dead_letters: u64,
}

type Task = tokio::task::JoinHandle<Result<(), DemoError>>;

fn stage<T, E: std::fmt::Display>(name: &'static str, r: Result<T, E>) -> Result<(), DemoError> {
    r.map(|_| ()).map_err(|e| DemoError::Stage {
        stage: name,
        message: e.to_string(),
    })
}

pub async fn run(
    config: &Config,
    args: &DemoArgs,
    served: crate::serve::Served,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> Result<DemoSummary, DemoError> {
    let setup = |e: String| DemoError::Setup(e);
    let cluster = rdkafka::mocking::MockCluster::new(1).map_err(|e| setup(format!("embedded broker: {e}")))?;
    let mut config = config.clone();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.replication_factor = -1;
    std::fs::create_dir_all(&args.lake_dir).map_err(|e| setup(format!("{}: {e}", args.lake_dir.display())))?;
    let lake_dir = std::fs::canonicalize(&args.lake_dir).map_err(|e| setup(e.to_string()))?;
    config.lake.url = lake_dir.display().to_string();
    config.ingest.flush_interval_ms = 1_000;
    config.mart.debounce_ms = 500;
    config.mart.interval_ms = 5_000;
    config.recommend.batch_ms = 500;
    config.recommend.model_check_ms = 2_000;
    let catalog =
        Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir).map_err(|e| setup(e.to_string()))?;
    // The embedded broker has no admin API for configs; topics are made on it directly.
    for t in &catalog.topics {
        cluster
            .create_topic(&t.name, t.partitions, 1)
            .map_err(|e| setup(format!("creating {}: {e}", t.name)))?;
    }

    let started = Instant::now();
    let mut tasks: Vec<(&'static str, Task)> = Vec::new();
    let sim_url = format!("http://{}", args.simulator_addr);
    let collector_url = format!("http://{}", args.collector_addr);
    {
        let (catalog, kafka, t, s) = (
            Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir).map_err(|e| setup(e.to_string()))?,
            config.kafka.clone(),
            telemetry.clone(),
            shutdown.clone(),
        );
        let collector = crate::config::CollectorConfig {
            listen: args.collector_addr.clone(),
            ..config.collector.clone()
        };
        tasks.push((
            "collect",
            tokio::spawn(async move {
                stage(
                    "collect",
                    crate::connect::collector::run(&catalog, &kafka, &collector, &t, s).await,
                )
            }),
        ));
    }
    wait_for(&format!("{collector_url}/healthz"), &shutdown).await;
    {
        let recs_topic = catalog
            .require(crate::catalog::Role::Recommendations)
            .map_err(|e| setup(e.to_string()))?
            .name
            .clone();
        let sim = crate::simulate::Args {
            seed: args.seed,
            customers: args.customers,
            dump: None,
            export_interactions: None,
            listen: Some(args.simulator_addr.clone()),
            collector: Some(collector_url.clone()),
            sessions: 3,
            react: true,
            site: Some(crate::simulate::react::Site {
                kafka: config.kafka.clone(),
                recs_topic,
                schemas: std::sync::Arc::new(
                    crate::codec::SchemaSet::load_strict(&config.catalog.schemas_dir)
                        .map_err(|p| setup(format!("{p:?}")))?,
                ),
                collector: collector_url.clone(),
            }),
        };
        let s = shutdown.clone();
        tasks.push((
            "simulate",
            tokio::spawn(async move { stage("simulate", crate::simulate::run(&sim, s).await) }),
        ));
    }
    wait_for(&format!("{sim_url}/feed.yml"), &shutdown).await;
    // File drops: the catalogue feed and the district prices, as an operator would drop them.
    let drops = lake_dir.join("drops");
    std::fs::create_dir_all(&drops).map_err(|e| setup(e.to_string()))?;
    for (path, topic) in [
        ("feed.yml", "raw.store.catalogue"),
        ("prices.csv", "raw.district.price_index"),
    ] {
        let body = reqwest::get(format!("{sim_url}/{path}"))
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| setup(format!("{path}: {e}")))?
            .bytes()
            .await
            .map_err(|e| setup(e.to_string()))?;
        let file = drops.join(path);
        std::fs::write(&file, &body).map_err(|e| setup(e.to_string()))?;
        crate::connect::import::run(&catalog, &config.kafka, topic, &[file])
            .await
            .map_err(|e| setup(format!("importing {path}: {e}")))?;
    }
    // Related products and stale lists within the demo's minutes, not the production hour.
    config.serve.refresh_interval_ms = config.serve.refresh_interval_ms.min(10_000);
    let config = std::sync::Arc::new(config);
    macro_rules! spawn_stage {
        ($name:literal, $body:expr) => {{
            let (config, t, s) = (config.clone(), telemetry.clone(), shutdown.clone());
            tasks.push((
                $name,
                tokio::spawn(async move { stage($name, $body(config, t, s).await) }),
            ));
        }};
    }
    spawn_stage!("connect", |c: std::sync::Arc<Config>, t: Telemetry, s| async move {
        let catalog = Catalog::load(&c.catalog.topics_dir, &c.catalog.schemas_dir).map_err(|e| e.to_string())?;
        let only: Vec<String> = SOURCE_ENV.iter().map(|(_, topic)| topic.to_string()).collect();
        crate::connect::poller::run(&catalog, &c.kafka, &only, false, &t, s)
            .await
            .map_err(|e| e.to_string())
    });
    spawn_stage!("ingest", |c: std::sync::Arc<Config>, t: Telemetry, s| async move {
        crate::ingest::run(&c, &t, s).await
    });
    spawn_stage!("mart", |c: std::sync::Arc<Config>, t: Telemetry, s| async move {
        crate::mart::run(&c, &t, s).await
    });
    spawn_stage!("recommend", |c: std::sync::Arc<Config>, t: Telemetry, s| async move {
        crate::recommend::run(&c, &t, s).await
    });
    spawn_stage!("serve", |c: std::sync::Arc<Config>, t: Telemetry, s| async move {
        let catalog = Catalog::load(&c.catalog.topics_dir, &c.catalog.schemas_dir).map_err(|e| e.to_string())?;
        crate::serve::run(&c, catalog, served, &t, s)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    spawn_stage!("refresh", |c: std::sync::Arc<Config>, _t: Telemetry, s| async move {
        let catalog = Catalog::load(&c.catalog.topics_dir, &c.catalog.schemas_dir).map_err(|e| e.to_string())?;
        // Its own telemetry: its follower must not count as the serving replica's.
        crate::serve::refresh::run(&c, catalog, &Telemetry::new(), s)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    spawn_stage!("train", |c: std::sync::Arc<Config>,
                           _t: Telemetry,
                           s: CancellationToken| async move {
        train_every(&c, Duration::from_secs(20), s).await
    });

    watch(telemetry, args.duration_secs, &shutdown, &tasks).await;
    shutdown.cancel();
    for (name, task) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(stage = name, error = %e, "stage ended with an error"),
            Err(e) => tracing::warn!(stage = name, error = %e, "stage panicked"),
        }
    }
    let mut summary = summarise(&config, &catalog, telemetry).await?;
    summary.seconds = started.elapsed().as_secs();
    drop(cluster);
    eprint!("{}", render(&summary, &config.lake.url));
    Ok(summary)
}

/// Retrains on a short period so the demo shows models being promoted.
async fn train_every(config: &Config, period: Duration, shutdown: CancellationToken) -> Result<(), String> {
    let r = crate::recommend::Recommender::load(config).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(period) => {}
        }
        // Too few reactions yet is normal early on; the next period tries again.
        if let Err(e) = crate::recommend::train::train_once(&r, 28, 0.2).await {
            tracing::info!(error = %e, "no model this time");
        }
    }
}

async fn wait_for(url: &str, shutdown: &CancellationToken) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !shutdown.is_cancelled() {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One progress line per stage until the duration is up, Ctrl-C, or a stage fails.
async fn watch(
    telemetry: &Telemetry,
    duration_secs: u64,
    shutdown: &CancellationToken,
    tasks: &[(&'static str, Task)],
) {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} {spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let lines: Vec<(&str, ProgressBar)> = ["connect", "collect", "ingest", "mart", "recommend", "site"]
        .into_iter()
        .map(|name| {
            let bar = bars.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix(name));
            (name, bar)
        })
        .collect();
    let clock = bars.add(ProgressBar::new(duration_secs).with_prefix("demo"));
    let deadline = Instant::now() + Duration::from_secs(duration_secs);
    while Instant::now() < deadline && !shutdown.is_cancelled() && !tasks.iter().any(|(_, t)| t.is_finished()) {
        let text = telemetry.render();
        let m = |name: &str| metric_sum(&text, name) as u64;
        for (name, bar) in &lines {
            bar.set_message(match *name {
                "connect" => format!("{} records from source APIs", m("hoffrec_connect_records_total")),
                "collect" => format!("{} site events", m("hoffrec_collector_events_total")),
                "ingest" => format!(
                    "{} landed, {} dead letters",
                    m("hoffrec_ingest_records_landed_total"),
                    m("hoffrec_ingest_dead_letters_total")
                ),
                "mart" => format!(
                    "{} folds, {} customers changed",
                    m("hoffrec_mart_folds_total"),
                    m("hoffrec_mart_changed_customers_total")
                ),
                "recommend" => format!(
                    "{} lists, {} model swaps",
                    m("hoffrec_recommend_lists_total"),
                    m("hoffrec_recommend_model_swaps_total")
                ),
                _ => String::new(),
            });
            bar.tick();
        }
        clock.set_position(duration_secs - deadline.saturating_duration_since(Instant::now()).as_secs());
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    for (_, bar) in lines {
        bar.finish();
    }
    clock.finish();
}

async fn summarise(config: &Config, catalog: &Catalog, telemetry: &Telemetry) -> Result<DemoSummary, DemoError> {
    let err = |e: String| DemoError::Setup(format!("summary: {e}"));
    let lake = crate::lake::LakeUrl::parse(&config.lake.url).map_err(|e| err(e.to_string()))?;
    let marts: Vec<String> = crate::mart::files::load(&config.mart.sql_dir)
        .map_err(|e| err(e.to_string()))?
        .into_iter()
        .filter(|f| f.is_mart())
        .map(|f| f.name)
        .collect();
    let (ctx, tables) = crate::mart::session::lake_session(&lake, catalog, &marts)
        .await
        .map_err(|e| err(e.to_string()))?;
    let count = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await.ok()?.collect().await.ok()?;
            let b = batches.first()?;
            arrow::array::AsArray::as_primitive_opt::<arrow::datatypes::Int64Type>(b.column(0).as_ref())
                .map(|a| a.value(0) as u64)
        }
    };
    let mut s = DemoSummary::default();
    for t in &tables {
        let n = count(format!("SELECT count(*) FROM {t}")).await.unwrap_or(0);
        match t.strip_prefix("mart.") {
            Some(m) => s.mart_rows.insert(m.to_string(), n),
            None => s.events_by_table.insert(t.clone(), n),
        };
    }
    s.lake_tables = tables.len();
    for t in catalog.raw_topics() {
        let path = crate::lake::raw::path(&t.name);
        if let Ok(table) = crate::lake::open_table(&lake, &path).await
            && table.version().is_some()
        {
            s.lake_files += table.get_file_uris().map(|f| f.count()).unwrap_or(0);
        }
    }
    let text = telemetry.render();
    s.lists_published = metric_sum(&text, "hoffrec_recommend_lists_total") as u64;
    s.dead_letters = (metric_sum(&text, "hoffrec_ingest_dead_letters_total")
        + metric_sum(&text, "hoffrec_connect_dead_letters_total")) as u64;
    if tables.iter().any(|t| t == "mart.interactions") {
        s.impressions = count("SELECT count(*) FROM mart.interactions".into())
            .await
            .unwrap_or(0);
        s.clicks = count("SELECT CAST(coalesce(sum(label), 0) AS BIGINT) FROM mart.interactions".into())
            .await
            .unwrap_or(0);
        s.click_through = (s.impressions > 0).then(|| s.clicks as f64 / s.impressions as f64);
    }
    s.models = crate::recommend::store::history(&lake)
        .await
        .map_err(|e| err(e.to_string()))?
        .into_iter()
        .map(|m| {
            format!(
                "{} (auc {:?}, ndcg@10 {:?}, {} rows)",
                m.version, m.auc, m.ndcg_at_10, m.trained_rows
            )
        })
        .collect();
    Ok(s)
}

/// The summary for people (the JSON follows on stdout).
fn render(s: &DemoSummary, lake: &str) -> String {
    let mut out = format!(
        "\nhoffrec demo: {} s, lake at {lake}\n\nEvents landed, by raw table:\n",
        s.seconds
    );
    for (t, n) in &s.events_by_table {
        out.push_str(&format!("  {t:<32} {n:>8}\n"));
    }
    out.push_str(&format!(
        "Lake: {} tables, {} raw data files\nMart rows:\n",
        s.lake_tables, s.lake_files
    ));
    for (m, n) in &s.mart_rows {
        out.push_str(&format!("  {m:<32} {n:>8}\n"));
    }
    out.push_str(&format!(
        "Recommendations: {} lists published; {} products shown, {} reacted to (click-through {})\n",
        s.lists_published,
        s.impressions,
        s.clicks,
        s.click_through
            .map_or("-".to_string(), |c| format!("{:.1}%", c * 100.0))
    ));
    out.push_str("Models trained:\n");
    if s.models.is_empty() {
        out.push_str("  none yet (the prior ranked)\n");
    }
    for m in &s.models {
        out.push_str(&format!("  {m}\n"));
    }
    out.push_str(&format!("Dead letters: {}\n", s.dead_letters));
    out
}
