//! The subcommands' own flags; the library's argument structs (bench, simulate, demo)
//! carry theirs.

use clap::{Args, Subcommand};
use std::path::PathBuf;

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

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Landing throughput vs a plain consume loop, event-to-commit latency, peak RSS.
    Ingest(crate::bench::IngestBenchArgs),
    /// The closed loop over simulated days: click-through with daily retraining, with a
    /// frozen first model, and with popularity.
    Loop(crate::bench::closed_loop::LoopArgs),
    /// Event-to-list latency through ingest, mart and recommend on the configured broker,
    /// lists ranked per second on one core, training time against training-set size.
    Recommend {
        #[arg(long, default_value_t = 30)]
        customers: usize,
    },
    /// One incremental mart fold for a fixed batch, with 1x and --scale x history.
    Mart(crate::bench::mart::MartBenchArgs),
    /// One erasure request for many customers on a large lake: time, rows, files rewritten.
    Forget(crate::bench::forget::ForgetBenchArgs),
    /// The read path under load: catch-up of --lists lists from an empty store, memory,
    /// and latency of GETs at a fixed rate (server on one core).
    Serve(crate::bench::serve::ServeBenchArgs),
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Consumer group (ingest.group); workers of one group share the partitions.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Address to listen on (collector.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConnectArgs {
    #[command(subcommand)]
    pub command: Option<ConnectCommand>,
    /// Poll only this raw topic's source (repeatable); default: every declared HTTP source.
    #[arg(long = "source", value_name = "TOPIC")]
    pub sources: Vec<String>,
    /// One pass per source, then print the summary and exit (for cron and tests).
    #[arg(long)]
    pub once: bool,
    /// Fetch one page of the one `--source` from its stored cursor, map it, print what
    /// would be produced and dead-lettered as JSON, and produce nothing.
    #[arg(long, conflicts_with = "once")]
    pub dry_run: bool,
    /// With --dry-run, for a per-customer source: the linked account to ask for.
    #[arg(long, requires = "dry_run")]
    pub account: Option<String>,
    /// With --dry-run and --account: the customer id the items are filed under.
    #[arg(long, requires = "account")]
    pub customer: Option<String>,
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
pub struct EvaluateArgs {
    #[arg(long, value_name = "FILE")]
    pub interactions: PathBuf,
    /// Train on events before this time (RFC 3339, a date, or epoch s/ms).
    #[arg(long, value_name = "TIME")]
    pub split_at: String,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Leave out products the customer bought before the split.
    #[arg(long)]
    pub exclude_seen: bool,
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
#[command(group(clap::ArgGroup::new("what").required(true).args(["customers", "status", "follow"])))]
pub struct ForgetArgs {
    /// Erase this customer (repeatable: one request erases them all) and print the report.
    #[arg(long = "customer", value_name = "ID")]
    pub customers: Vec<String>,
    /// Why, for the audit record (e.g. "account deleted").
    #[arg(long, value_name = "TEXT", requires = "customers")]
    pub reason: Option<String>,
    /// Vacuum the tables at once (maintenance.vacuum_retention_hours) instead of leaving it
    /// to the maintenance pass.
    #[arg(long, requires = "customers")]
    pub vacuum: bool,
    /// Where erasure stands for this customer, per table.
    #[arg(long, value_name = "ID", conflicts_with = "customers")]
    pub status: Option<String>,
    /// Carry out the requests arriving on privacy.erasure until stopped.
    #[arg(long, conflicts_with_all = ["customers", "status"])]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// A topic of the catalog.
    pub topic: String,
    /// Start at the oldest record kept instead of the newest.
    #[arg(long)]
    pub from_beginning: bool,
    /// Only records under this key.
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// One JSON object per record (partition, offset, key, headers, value).
    #[arg(long)]
    pub json: bool,
    /// Stop at the end of the topic as it was at the start instead of following it.
    #[arg(long)]
    pub exit_at_end: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectCommand {
    /// The sources' cursors on connect.offsets.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
}

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Every live cursor (one JSON object per line), or one source's.
    List {
        #[arg(long = "source", value_name = "TOPIC")]
        source: Option<String>,
    },
    /// Store a cursor: the source's next pass starts from it. Stop the source first; a
    /// running pass writes its own cursor when it ends.
    Set {
        #[arg(long = "source", value_name = "TOPIC")]
        source: String,
        #[arg(long, default_value = "default")]
        stream: String,
        #[arg(long)]
        cursor: String,
    },
    /// Remove a source's cursors (all its streams, or one): its next pass reads from the
    /// beginning of what the API lists.
    Reset {
        #[arg(long = "source", value_name = "TOPIC")]
        source: String,
        #[arg(long)]
        stream: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The dead letters still live (not replayed, not erased), one JSON object per line.
    List(DlqFilter),
    /// Put the live letters of one class back on the raw topics they came from, each once
    /// (with the tombstone of its letter, in one transaction); prints a summary.
    Replay {
        #[command(flatten)]
        filter: DlqFilter,
    },
}

#[derive(Debug, Args)]
pub struct DlqFilter {
    /// Error class, e.g. unknown_fingerprint (required by replay).
    #[arg(long)]
    pub class: Option<String>,
    /// Letters written at or after this time (RFC 3339, a date, or epoch s/ms).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Letters of records from this topic.
    #[arg(long = "source", value_name = "TOPIC")]
    pub source: Option<String>,
}
