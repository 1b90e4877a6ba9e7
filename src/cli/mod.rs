//! The `hoffrec` command line: one binary, one subcommand per task. `run` loads the
//! configuration and hands each subcommand to one function: long-running stages in
//! `stages`, one-shot tools in `tools`, both on the runtime `runtime` owns.

mod args;
mod runtime;
mod stages;
mod tools;

pub use args::{
    BenchCommand, CollectArgs, ConfigCommand, ConnectArgs, ConnectCommand, DlqCommand, EvaluateArgs, ExplainArgs,
    ForgetArgs, ImportArgs, IngestArgs, MartCommand, SchemasCommand, SqlArgs, TailArgs, TopicsCommand,
};

use crate::catalog::Catalog;
use crate::config::{Config, LogConfig, Overrides};
use clap::{Args, Parser, Subcommand};
use runtime::print_report;
use std::path::PathBuf;
use std::process::ExitCode;

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
    Simulate(Box<crate::simulate::Args>),
    /// Every stage in one process on embedded defaults: an in-process broker, a lake under
    /// ./lake, the simulator behind the sources' APIs; progress per stage, then a summary.
    Demo(crate::demo::DemoArgs),
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
    /// Answer the site's pages: every customer's list from recs.customer (in memory,
    /// from a snapshot plus the topic) on GET /v1/recommendations/{customer_id}, without
    /// products out of stock, with a named fallback for unknown visitors. Needs --http.
    Serve,
    /// Ask for new lists when what they depend on changed: a product no longer sellable,
    /// a newly promoted model, or lists older than serve.max_list_age_ms (announced on
    /// mart.changes for recommend; run one).
    Refresh,
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
    Evaluate(EvaluateArgs),
    /// Show, for a marketer, how a customer's list comes about: portrait, candidates and
    /// their reasons, the rules applied, scores, and the final list.
    Explain(ExplainArgs),
    /// Erase customers from every raw table, mart and topic that holds them (Delta DELETE,
    /// tombstones), record it on privacy.audit; `--status` says where it stands,
    /// `--follow` serves the site's requests on privacy.erasure.
    Forget(ForgetArgs),
    /// Print a topic's records decoded (dead letters with their headers), following it;
    /// `--json` gives one JSON object per line for scripts.
    Tail(TailArgs),
    /// Dead letters: list the live ones, or replay one class into its raw topics.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run SQL against the lake: every raw table is `raw.<topic without raw., . and - as _>`,
    /// e.g. `SELECT count(*) FROM raw.site_page_view`.
    Sql(SqlArgs),
    /// Benchmarks against the configured broker and lake (figures for the README).
    #[command(subcommand)]
    Bench(BenchCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.global.config.as_deref(), &overrides(&cli))?;
    // The demo's progress lines are its interface: stage logs stay at warnings unless the
    // operator chose a filter.
    if matches!(cli.command, Command::Demo(_)) && config.log.filter == LogConfig::default().filter {
        config.log.filter = "hoffrec=warn,deltalake_core=error,warn".into();
    }
    init_tracing(&config);
    match cli.command {
        Command::Config(ConfigCommand::Show) => tools::config_show(&config),
        Command::Topics(TopicsCommand::Validate) => tools::topics_validate(&config),
        Command::Topics(TopicsCommand::Apply) => tools::topics_apply(&config),
        Command::Schemas(SchemasCommand::List) => tools::schemas_list(&config),
        Command::Ingest(_) => stages::ingest(&config),
        Command::Collect(_) => stages::collect(&config),
        Command::Connect(ConnectArgs {
            command: Some(ConnectCommand::Offsets(command)),
            ..
        }) => tools::connect_offsets(&config, &command),
        Command::Connect(args) => stages::connect(&config, args),
        Command::Import(args) => tools::import(&config, &args),
        Command::Simulate(args) => stages::simulate(&config, *args),
        Command::Demo(args) => stages::demo(config, args),
        Command::Mart(MartCommand::Run { once: false }) => stages::mart(&config),
        Command::Mart(MartCommand::Run { once: true }) => tools::mart_once(&config),
        Command::Mart(MartCommand::Status { json }) => tools::mart_status(&config, json),
        Command::Dashboard => stages::dashboard(&config),
        Command::Recommend => stages::recommend(&config),
        Command::Serve => stages::serve(&config),
        Command::Refresh => stages::refresh(&config),
        Command::Train { once: false } => stages::train(&config),
        Command::Train { once: true } => tools::train_once(&config),
        Command::Evaluate(args) => tools::evaluate(&config, &args),
        Command::Explain(args) => tools::explain(&config, &args),
        Command::Sql(args) => tools::sql(&config, &args),
        Command::Forget(args) if args.follow => stages::forget(&config),
        Command::Forget(args) => tools::forget(&config, &args),
        Command::Tail(args) => tools::tail(&config, &args),
        Command::Dlq(command) => tools::dlq(&config, &command),
        Command::Bench(BenchCommand::Ingest(args)) => print_report(crate::bench::ingest(&config, &args)),
        Command::Bench(BenchCommand::Recommend { customers }) => {
            print_report(crate::bench::recommend::run(&config, customers))
        }
        Command::Bench(BenchCommand::Loop(args)) => print_report(crate::bench::closed_loop::run(&config, &args)),
        Command::Bench(BenchCommand::Mart(args)) => print_report(crate::bench::mart::run(&config, &args)),
        Command::Bench(BenchCommand::Forget(args)) => print_report(crate::bench::forget::run(&config, &args)),
        // Runs its own runtimes: a server thread and a client, one core each.
        Command::Bench(BenchCommand::Serve(args)) => {
            let report = crate::bench::serve::run(&config, &args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The flags that override configuration, including the two subcommand flags that do.
fn overrides(cli: &Cli) -> Overrides {
    let global = &cli.global;
    Overrides {
        brokers: global.brokers.clone(),
        lake: global.lake.clone(),
        topics_dir: global.topics_dir.clone(),
        schemas_dir: global.schemas_dir.clone(),
        http: global.http.clone(),
        group: match &cli.command {
            Command::Ingest(args) => args.group.clone(),
            _ => None,
        },
        collector_listen: match &cli.command {
            Command::Collect(args) => args.listen.clone(),
            _ => None,
        },
    }
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
