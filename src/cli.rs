//! The `hoffrec` command line: one binary, one subcommand per task.

use crate::catalog::{Catalog, apply};
use crate::config::{Config, Overrides};
use crate::telemetry::Telemetry;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "hoffrec",
    version,
    about = "Customer portraits and online product recommendations for a home-goods store"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that override the configuration file and `HOFFREC__` environment variables.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (default: ./hoffrec.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, host:port[,host:port] (kafka.brokers).
    #[arg(long, global = true, value_name = "ADDR")]
    pub brokers: Option<String>,
    /// Lake root: a path, file:///abs/path or hdfs://host:port/path (lake.url).
    #[arg(long, global = true, value_name = "URL")]
    pub lake: Option<String>,
    /// Directory of topic files (catalog.topics_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub topics_dir: Option<PathBuf>,
    /// Directory of Avro schemas (catalog.schemas_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub schemas_dir: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9464 (http.listen).
    #[arg(long, global = true, value_name = "ADDR")]
    pub http: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check or apply the topic catalog (topics/ and avro/).
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect the Avro schemas and their wire fingerprints.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Land raw topics in the lake as Delta tables, exactly once (a consumer-group worker;
    /// run more of them to scale). Stops cleanly on Ctrl-C or SIGTERM.
    Ingest(IngestArgs),
    /// Serve the event collector the site posts to (POST /v1/events): each event is checked
    /// against its Avro contract and produced to its raw topic; refusals go to the
    /// dead-letter topic and are answered per event.
    Collect(CollectArgs),
    /// Poll the HTTP APIs declared in topics/ ([source.http]) into their raw topics,
    /// resuming from the cursors on the connector-offsets topic.
    Connect(ConnectArgs),
    /// Import dropped files (YML feed, Metrica TSV, CSV export) into a raw topic through the
    /// topic's [source.file] and [source.mapping].
    Import(ImportArgs),
    /// Serve a seeded simulated world behind the sources' APIs (orders, VK, YML feed,
    /// register, price index); optionally dump it and post its consents to a collector.
    Simulate(SimulateArgs),
    /// Every stage in one process on embedded defaults: an in-process broker, a lake under
    /// ./lake, the simulator behind the sources' APIs; progress per stage, then a summary.
    Demo(DemoArgs),
    /// Fold the raw tables into the marts with the SQL in mart_sql/, incrementally, and
    /// announce customers whose portrait changed on mart.changes.
    #[command(subcommand)]
    Mart(MartCommand),
    /// Serve the dashboard (pipeline health, customers, models) and /metrics on --http;
    /// add other stages' metrics with http.scrape_urls.
    Dashboard,
    /// Publish a ranked list with reasons to recs.customer for every customer announced on
    /// mart.changes (a consumer-group member; run more to scale).
    Recommend,
    /// Retrain the ranker on exposure-labelled interactions (sliding window), validate on
    /// the newest slice, and promote the new model only if it is not worse.
    Train {
        /// Train once and print the report as JSON.
        #[arg(long)]
        once: bool,
    },
    /// Offline evaluation on an interaction log (CSV or Parquet: customer_id, product_id,
    /// ts, event = view|cart|purchase|impression|click; optional quantity, price, category,
    /// name) against popularity, recent popularity and item-kNN.
    Evaluate {
        #[arg(long, value_name = "FILE")]
        interactions: PathBuf,
        /// Train on events before this time (RFC 3339, a date, or epoch s/ms).
        #[arg(long, value_name = "TIME")]
        split_at: String,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Leave out products the customer bought before the split.
        #[arg(long)]
        exclude_seen: bool,
    },
    /// Show, for a marketer, how a customer's list comes about: portrait, candidates and
    /// their reasons, the rules applied, scores, and the final list.
    Explain(ExplainArgs),
    /// Run SQL against the lake: every raw table is `raw.<topic without raw., . and - as _>`,
    /// e.g. `SELECT count(*) FROM raw.site_page_view`.
    Sql(SqlArgs),
    /// Benchmarks against the configured broker and lake (figures for the README).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum MartCommand {
    /// Fold on every burst of lake.commits (and every mart.interval_ms) until stopped.
    Run {
        /// Fold once and exit, printing what each mart did as JSON.
        #[arg(long)]
        once: bool,
    },
    /// Per mart: its version, the raw versions folded in, and how many commits behind.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to run, seconds (Ctrl-C stops earlier, cleanly).
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Simulated customers.
    #[arg(long, default_value_t = 300)]
    pub customers: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The lake directory.
    #[arg(long = "lake-dir", default_value = "lake")]
    pub lake_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long)]
    pub customer: String,
    /// Print the explanation as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query.
    pub query: String,
    /// Print rows as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The world's seed: the same seed gives the same world.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 2000)]
    pub customers: usize,
    /// Write the world as JSON here.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// Write the world's history as an interaction log (CSV) for `hoffrec evaluate`.
    #[arg(long, value_name = "FILE")]
    pub export_interactions: Option<PathBuf>,
    /// Serve the source APIs on this address until Ctrl-C/SIGTERM.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Post the customers' consents (and --sessions) to this collector, e.g. http://127.0.0.1:8088.
    #[arg(long, value_name = "URL")]
    pub collector: Option<String>,
    /// Site sessions per customer to post to the collector.
    #[arg(long, default_value_t = 0)]
    pub sessions: usize,
    /// Show the lists on recs.customer to the simulated customers and post their
    /// impressions, clicks and carts to --collector (the closed loop).
    #[arg(long, requires = "collector")]
    pub react: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The raw topic the files belong to, e.g. raw.store.catalogue.
    #[arg(long = "source", value_name = "TOPIC")]
    pub source: String,
    /// Files to import, in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Poll only this raw topic's source (repeatable); default: every declared HTTP source.
    #[arg(long = "source", value_name = "TOPIC")]
    pub sources: Vec<String>,
    /// One pass per source, then print the summary and exit (for cron and tests).
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Address to listen on (collector.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Landing throughput vs a plain consume loop, event-to-commit latency, peak RSS.
    Ingest {
        /// Events in the backlog that ingest drains.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Steady produce rate while latency is measured, events/s.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        latency_secs: u64,
        /// ingest.flush_interval_ms for the run.
        #[arg(long, default_value_t = 1_000)]
        flush_interval_ms: u64,
        /// ingest.workers (consumer threads) for the run.
        #[arg(long, default_value_t = 1)]
        workers: u32,
    },
    /// The closed loop over simulated days: click-through with daily retraining, with a
    /// frozen first model, and with popularity.
    Loop {
        #[arg(long, default_value_t = 300)]
        customers: usize,
        #[arg(long, default_value_t = 10)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Event-to-list latency through ingest, mart and recommend on the configured broker,
    /// lists ranked per second on one core, training time against training-set size.
    Recommend {
        #[arg(long, default_value_t = 30)]
        customers: usize,
    },
    /// One incremental mart fold for a fixed batch, with 1x and --scale x history.
    Mart {
        #[arg(long, default_value_t = 5_000)]
        customers: usize,
        /// Days of history at 1x.
        #[arg(long, default_value_t = 14)]
        days: u32,
        #[arg(long, default_value_t = 10)]
        scale: u32,
        /// Sessions per day of history.
        #[arg(long, default_value_t = 400)]
        active_per_day: usize,
        /// Sessions in each timed batch.
        #[arg(long, default_value_t = 200)]
        batch_customers: usize,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Consumer group (ingest.group); workers of one group share the partitions.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Check the catalog offline; lists every problem and exits 1 if there are any.
    Validate,
    /// Create missing topics on the cluster and report drift; exits 2 on drift.
    Apply,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (all layers merged) with secrets masked.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// List every schema version with its Parsing Canonical Form fingerprint.
    List,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        brokers: cli.global.brokers.clone(),
        lake: cli.global.lake.clone(),
        topics_dir: cli.global.topics_dir.clone(),
        schemas_dir: cli.global.schemas_dir.clone(),
        http: cli.global.http.clone(),
        group: match &cli.command {
            Command::Ingest(args) => args.group.clone(),
            _ => None,
        },
        collector_listen: match &cli.command {
            Command::Collect(args) => args.listen.clone(),
            _ => None,
        },
    };
    let mut config = Config::load(cli.global.config.as_deref(), &overrides)?;
    // The demo's progress lines are its interface: stage logs stay at warnings unless the
    // operator chose a filter.
    if matches!(cli.command, Command::Demo(_)) && config.log.filter == crate::config::LogConfig::default().filter {
        config.log.filter = "hoffrec=warn,deltalake_core=error,warn".into();
    }
    init_tracing(&config);
    match cli.command {
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.show());
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Validate) => {
            let catalog = load_catalog(&config)?;
            println!(
                "catalog ok: {} topics ({} raw), {} schemas",
                catalog.topics.len(),
                catalog.raw_topics().count(),
                catalog.schemas.events().count()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Apply) => {
            let catalog = load_catalog(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report = runtime
                .block_on(apply::apply(&catalog, &config.kafka))
                .with_context(|| format!("applying the catalog to {}", config.kafka.brokers))?;
            println!("{report}");
            Ok(if report.drift.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Ingest(_) => {
            let config = &config;
            run_stage(config, |telemetry, shutdown| async move {
                crate::ingest::run(config, &telemetry, shutdown).await
            })
        }
        Command::Collect(_) => {
            let (catalog, config) = (load_catalog(&config)?, &config);
            run_stage(config, |telemetry, shutdown| async move {
                crate::connect::collector::run(&catalog, &config.kafka, &config.collector, &telemetry, shutdown).await
            })
        }
        Command::Connect(args) => {
            let (catalog, config) = (load_catalog(&config)?, &config);
            run_stage(config, |telemetry, shutdown| async move {
                crate::connect::poller::run(&catalog, &config.kafka, &args.sources, args.once, &telemetry, shutdown)
                    .await
            })
        }
        Command::Simulate(args) => {
            let site = match (args.react, &args.collector) {
                (true, Some(collector)) => {
                    let catalog = load_catalog(&config)?;
                    let recs_topic = catalog
                        .topic_for(crate::catalog::Role::Recommendations)
                        .map(|t| t.name.clone())
                        .context("the catalog has no recommendations topic")?;
                    Some(crate::simulate::react::Site {
                        kafka: config.kafka.clone(),
                        recs_topic,
                        schemas: std::sync::Arc::new(catalog.schemas),
                        collector: collector.clone(),
                    })
                }
                _ => None,
            };
            let args = crate::simulate::Args {
                site,
                seed: args.seed,
                customers: args.customers,
                dump: args.dump,
                export_interactions: args.export_interactions,
                listen: args.listen,
                collector: args.collector,
                sessions: args.sessions,
            };
            run_stage(&config, |_telemetry, shutdown| async move {
                crate::simulate::run(&args, shutdown).await
            })
        }
        Command::Import(args) => {
            let catalog = load_catalog(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let summary = runtime.block_on(crate::connect::import::run(
                &catalog,
                &config.kafka,
                &args.source,
                &args.files,
            ))?;
            println!("{}", serde_json::to_string(&summary)?);
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            Ok(ExitCode::SUCCESS)
        }
        Command::Mart(MartCommand::Run { once: false }) => {
            let config = &config;
            run_stage(config, |telemetry, shutdown| async move {
                crate::mart::run(config, &telemetry, shutdown).await
            })
        }
        Command::Mart(MartCommand::Run { once: true }) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let telemetry = Telemetry::new();
            let summary = runtime.block_on(crate::mart::once(&config, &telemetry))?;
            println!("{}", serde_json::to_string(&summary.last)?);
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            Ok(ExitCode::SUCCESS)
        }
        Command::Mart(MartCommand::Status { json }) => {
            let marts = crate::mart::Marts::load(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let statuses = runtime.block_on(crate::mart::status::status(&marts))?;
            if json {
                println!("{}", serde_json::to_string(&statuses)?);
            } else {
                print!("{}", crate::mart::status::render(&statuses));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let free = || -> anyhow::Result<String> {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                Ok(l.local_addr()?.to_string())
            };
            let demo = crate::demo::DemoArgs {
                duration_secs: args.duration,
                customers: args.customers,
                seed: args.seed,
                lake: args.lake_dir,
                simulator_addr: free()?,
                collector_addr: free()?,
            };
            for (var, _) in crate::demo::SOURCE_ENV {
                // SAFETY: no other thread exists yet; the runtime and every client start after.
                unsafe {
                    std::env::set_var(format!("{var}_API"), format!("http://{}", demo.simulator_addr));
                    std::env::set_var(format!("{var}_TOKEN"), "demo");
                }
            }
            // The dashboard reads the demo's lake, so its location is settled before it starts.
            std::fs::create_dir_all(&demo.lake).with_context(|| format!("creating {}", demo.lake.display()))?;
            config.lake.url = std::fs::canonicalize(&demo.lake)?.display().to_string();
            let config = &config;
            run_stage_with(config, dashboard_routes(config), |telemetry, shutdown| async move {
                crate::demo::run(config, &demo, &telemetry, shutdown).await
            })
        }
        Command::Dashboard => {
            if config.http.listen.is_empty() {
                anyhow::bail!("hoffrec dashboard needs an address to serve on: --http 127.0.0.1:8080");
            }
            let config = &config;
            run_stage_with(config, dashboard_routes(config), |telemetry, shutdown| async move {
                crate::dashboard::run(&telemetry, shutdown).await
            })
        }
        Command::Recommend => {
            let config = &config;
            run_stage(config, |telemetry, shutdown| async move {
                crate::recommend::run(config, &telemetry, shutdown).await
            })
        }
        Command::Train { once: true } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let r = crate::recommend::Recommender::load(&config)?;
            let rc = &config.recommend;
            let report = runtime.block_on(crate::recommend::train::train_once(
                &r,
                rc.train_window_days,
                rc.train_validation_share,
            ))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Train { once: false } => {
            let config = &config;
            run_stage(config, |telemetry, shutdown| async move {
                crate::recommend::train::run(config, &telemetry, shutdown).await
            })
        }
        Command::Evaluate {
            interactions,
            split_at,
            k,
            exclude_seen,
        } => print_report(|| crate::recommend::evaluate::run(&config, &interactions, &split_at, k, exclude_seen)),
        Command::Explain(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let found = runtime.block_on(crate::recommend::explain(&config, &args.customer))?;
            let Some(e) = found else {
                anyhow::bail!("customer {} has no portrait in mart.customer_portrait", args.customer);
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                print!("{}", crate::recommend::rank::render(&e));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql(args) => {
            let catalog = load_catalog(&config)?;
            let lake = crate::lake::LakeUrl::parse(&config.lake.url)?;
            let marts: Vec<String> = crate::mart::files::load(&config.mart.sql_dir)
                .map(|files| files.into_iter().filter(|f| f.is_mart()).map(|f| f.name).collect())
                .unwrap_or_default();
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let batches = runtime.block_on(async {
                let (ctx, tables) = crate::mart::session::lake_session(&lake, &catalog, &marts).await?;
                tracing::debug!(?tables, "lake tables registered");
                let frame = ctx.sql(&args.query).await?;
                anyhow::Ok(frame.collect().await?)
            })?;
            if args.json {
                let mut writer = arrow::json::LineDelimitedWriter::new(std::io::stdout());
                for batch in &batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            } else {
                println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            }
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Ingest {
            events,
            partitions,
            rate,
            latency_secs,
            flush_interval_ms,
            workers,
        }) => {
            let args = crate::bench::IngestBenchArgs {
                events,
                partitions,
                rate,
                latency_secs,
                flush_interval_ms,
                workers,
            };
            print_report(|| crate::bench::ingest(&config, &args))
        }
        Command::Bench(BenchCommand::Recommend { customers }) => {
            print_report(|| crate::bench::recommend::run(&config, customers))
        }
        Command::Bench(BenchCommand::Loop { customers, days, seed }) => {
            let args = crate::bench::closed_loop::LoopArgs { customers, days, seed };
            print_report(|| crate::bench::closed_loop::run(&config, &args))
        }
        Command::Bench(BenchCommand::Mart {
            customers,
            days,
            scale,
            active_per_day,
            batch_customers,
            rounds,
            seed,
        }) => {
            let args = crate::bench::mart::MartBenchArgs {
                customers,
                days,
                scale,
                active_per_day,
                batch_customers,
                rounds,
                seed,
            };
            print_report(|| crate::bench::mart::run(&config, &args))
        }
        Command::Schemas(SchemasCommand::List) => {
            let catalog = load_catalog(&config)?;
            let mut versions: Vec<_> = catalog.schemas.versions().collect();
            versions.sort_by(|a, b| a.id.cmp(&b.id));
            for v in versions {
                let current = catalog
                    .schemas
                    .current(&v.event)
                    .is_some_and(|c| c.fingerprint == v.fingerprint);
                println!(
                    "{:<28} {:#018x}  {}",
                    v.id,
                    v.fingerprint,
                    if current { "current" } else { "history" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A long-running stage: its own runtime, `/metrics` and signal handling, a JSON summary
/// on stdout at the end.
fn run_stage<T, E, F, Fut>(config: &Config, stage: F) -> anyhow::Result<ExitCode>
where
    T: serde::Serialize,
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(Telemetry, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    run_stage_with(config, |_: &Telemetry| Ok(axum::Router::new()), stage)
}

/// As `run_stage`, with more routes served beside `/metrics` (when `http.listen` is set).
fn run_stage_with<T, E, R, F, Fut>(config: &Config, routes: R, stage: F) -> anyhow::Result<ExitCode>
where
    T: serde::Serialize,
    E: std::error::Error + Send + Sync + 'static,
    R: FnOnce(&Telemetry) -> anyhow::Result<axum::Router>,
    F: FnOnce(Telemetry, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let (telemetry, shutdown) = start_stage(config, routes).await?;
        stage(telemetry, shutdown).await.map_err(anyhow::Error::from)
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    // librdkafka and the HDFS client keep background threads; do not wait on them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}

fn dashboard_routes(config: &Config) -> impl FnOnce(&Telemetry) -> anyhow::Result<axum::Router> + '_ {
    move |telemetry| Ok(crate::dashboard::Dashboard::load(config, telemetry)?.router())
}

/// Metrics (served when `http.listen` is set, with `routes`) and a shutdown token
/// cancelled by Ctrl-C or SIGTERM.
async fn start_stage(
    config: &Config,
    routes: impl FnOnce(&Telemetry) -> anyhow::Result<axum::Router>,
) -> anyhow::Result<(Telemetry, CancellationToken)> {
    let telemetry = Telemetry::new();
    let shutdown = CancellationToken::new();
    if !config.http.listen.is_empty() {
        let routes = routes(&telemetry)?;
        telemetry
            .serve_with(&config.http.listen, routes, shutdown.clone())
            .await?;
    }
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stop requested; finishing the current work");
        token.cancel();
    });
    Ok((telemetry, shutdown))
}

/// Runs a one-shot command on a fresh runtime and prints its report as JSON.
fn print_report<T, E, Fut>(command: impl FnOnce() -> Fut) -> anyhow::Result<ExitCode>
where
    T: serde::Serialize,
    E: std::error::Error + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(command())?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    // librdkafka and the HDFS client keep background threads; do not wait on them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}

fn load_catalog(config: &Config) -> anyhow::Result<Catalog> {
    Ok(Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir)?)
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
