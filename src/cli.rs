//! The `hoffrec` command line: one binary, one subcommand per task.

use crate::catalog::{Catalog, apply};
use crate::config::{Config, Overrides};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
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
    };
    let config = Config::load(cli.global.config.as_deref(), &overrides)?;
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
