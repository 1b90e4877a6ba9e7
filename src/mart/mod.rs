//! Marts: raw lake tables -> SQL in `mart_sql/` -> Delta tables under `<lake>/mart/`,
//! incrementally.
//!
//! `hoffrec mart` waits for `lake.commits` records (or its interval), folds the raw rows
//! that landed since each mart last folded, and announces the customers whose portrait
//! changed on `mart.changes`. `hoffrec mart status` shows how far behind each mart is.

pub mod announce;
mod consent;
pub mod error;
pub mod files;
pub mod fold;
mod functions;
mod inputs;
mod merge;
pub mod session;
pub mod status;
pub mod tables;
mod waves;

use crate::catalog::{Catalog, CatalogError, Role};
use crate::config::Config;
use crate::lake::{LakeError, LakeUrl};
use crate::telemetry::Telemetry;
use announce::Announcer;
use error::FoldError;
use fold::FoldReport;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum MartError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("mart configuration: {0}")]
    Config(String),
    #[error("mart configuration: {0}")]
    Lake(#[from] LakeError),
    #[error("mart_sql: {0}")]
    Files(#[from] files::FilesError),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot encode a mart change: {0}")]
    Encode(#[from] crate::codec::CodecError),
    #[error("mart configuration: the producer went away")]
    ProducerGone,
}

/// Counts for one run of the stage.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub folds: u64,
    pub failed_folds: u64,
    pub changed_customers: u64,
    pub rows_merged: u64,
    /// The last fold's per-mart report.
    pub last: Option<FoldReport>,
}

/// What every fold needs, loaded once.
pub struct Marts {
    pub lake: LakeUrl,
    pub catalog: Catalog,
    pub files: Vec<files::MartFile>,
}

impl Marts {
    pub fn load(config: &Config) -> Result<Self, MartError> {
        let catalog = Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir)?;
        let lake = LakeUrl::parse(&config.lake.url)?;
        let files = files::load(&config.mart.sql_dir)?;
        Ok(Self { lake, catalog, files })
    }

    fn topic(&self, role: Role) -> Result<String, MartError> {
        Ok(self.catalog.require(role)?.name.clone())
    }
}

/// Folds once and announces the changed customers; `hoffrec mart run --once`.
pub async fn once(config: &Config, telemetry: &Telemetry) -> Result<Summary, MartError> {
    let marts = Marts::load(config)?;
    let announcer = announcer(config, &marts)?;
    announcer.recover(&marts.lake).await?;
    let mut summary = Summary::default();
    fold_and_announce(&marts, &announcer, telemetry, &mut summary).await?;
    Ok(summary)
}

/// Folds on every burst of lake commits, and at least every `mart.interval_ms`, until
/// `shutdown`. A fold that fails on a busy or unreachable lake is retried on the next
/// trigger; a fold that fails on the SQL stops the stage with the file and the reason.
pub async fn run(config: &Config, telemetry: &Telemetry, shutdown: CancellationToken) -> Result<Summary, MartError> {
    let marts = Marts::load(config)?;
    let announcer = announcer(config, &marts)?;
    // Portrait commits a stopped stage did not announce are announced before folding on.
    announcer.recover(&marts.lake).await?;
    let commits_topic = marts.topic(Role::LakeCommits)?;
    // A new group reads the trigger from the start: at worst one extra fold, never a
    // commit missed between start-up and the first assignment.
    let consumer: StreamConsumer =
        crate::kafka::consumer_config(&config.kafka, &config.mart.group, "earliest").create()?;
    consumer.subscribe(&[commits_topic.as_str()])?;
    telemetry.set_ready(true);
    let mut summary = Summary::default();
    let interval = (config.mart.interval_ms > 0).then(|| Duration::from_millis(config.mart.interval_ms));
    let debounce = Duration::from_millis(config.mart.debounce_ms);
    // Fold at start: commits that arrived while the stage was down are in the tables.
    let mut due = Some(Instant::now());
    let mut upkeep = Upkeep::default();
    // Set when announcing failed after a commit: the lake says what is still unannounced.
    let mut unannounced = false;
    let mut outage = crate::kafka::Outage::default();
    loop {
        let wait = match due {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => interval.unwrap_or(Duration::from_secs(3600)),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => {
                match message {
                    // A burst of commits from many ingest workers becomes one fold.
                    Ok(_) => { due.get_or_insert_with(|| Instant::now() + debounce); }
                    Err(e) if crate::kafka::error_is_fatal(&e) => return Err(e.into()),
                    // The broker is away (restarting); librdkafka reconnects and the commits
                    // made meanwhile arrive after. Its queue holds an error per failed
                    // attempt, so they are drained at once and logged now and then.
                    Err(e) => outage.note(&e, "reading lake commits failed; librdkafka retries"),
                }
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        due = None;
        if unannounced {
            match announcer.recover(&marts.lake).await {
                Ok(n) => {
                    tracing::info!(customers = n, "announced what a failed announcement left out");
                    unannounced = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "announcing is still failing; retrying");
                    due = Some(Instant::now() + debounce.max(Duration::from_secs(1)));
                    continue;
                }
            }
        }
        match fold_and_announce(&marts, &announcer, telemetry, &mut summary).await {
            Ok(()) => {
                // Offsets only tell lag tools how far the trigger was read.
                let _ = consumer.commit_consumer_state(CommitMode::Async);
                upkeep.after_fold(&marts, &config.mart, summary.last.as_ref()).await;
            }
            Err(MartError::Fold(e)) if e.is_transient() => {
                tracing::warn!(error = %e, "fold failed; retrying on the next trigger");
                summary.failed_folds += 1;
                telemetry.mart.folds.get_or_create(&outcome("failed")).inc();
                due = Some(Instant::now() + debounce.max(Duration::from_secs(1)));
            }
            Err(MartError::Kafka(e)) if !crate::kafka::error_is_fatal(&e) => {
                // A portrait commit may have landed unannounced: recover before folding on.
                tracing::warn!(error = %e, "announcing changes failed; recovering from the lake next");
                summary.failed_folds += 1;
                telemetry.mart.folds.get_or_create(&outcome("failed")).inc();
                unannounced = true;
                due = Some(Instant::now() + debounce.max(Duration::from_secs(1)));
            }
            Err(e) => return Err(e),
        }
    }
    telemetry.set_ready(false);
    Ok(summary)
}

/// Mart tables take a MERGE per fold, and every MERGE adds files: without compaction a
/// fold reads ever more small files. The pass runs here, between folds, because this
/// process is the only writer of the marts, so it never conflicts with a MERGE.
#[derive(Default)]
struct Upkeep {
    last_pass: Option<Instant>,
    /// Per mart, its version at the last pass (`min_commits` counts from there).
    seen: HashMap<String, u64>,
    /// Per mart, its version when it was last compacted (`maintenance.compact_every_commits`).
    compacted: HashMap<String, u64>,
}

impl Upkeep {
    async fn after_fold(&mut self, marts: &Marts, config: &crate::config::MartConfig, report: Option<&FoldReport>) {
        if let Some(report) = report {
            self.compact_busy(marts, config, report).await;
        }
        let every = Duration::from_millis(config.maintenance.interval_ms);
        if every.is_zero() || self.last_pass.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.last_pass = Some(Instant::now());
        let span = tracing::info_span!("mart_maintenance");
        async {
            for file in marts.files.iter().filter(|f| f.is_mart()) {
                match maintain(&marts.lake, &file.name, config, self.seen.get(&file.name).copied()).await {
                    Ok(r) => {
                        if r.compacted {
                            tracing::info!(mart = %file.name, version = r.version, files_added = r.files_added,
                                files_removed = r.files_removed, files_vacuumed = r.files_vacuumed, "mart compacted");
                        }
                        self.seen.insert(file.name.clone(), r.version);
                        if r.compacted {
                            self.compacted.insert(file.name.clone(), r.version);
                        }
                    }
                    // A mart no fold has written yet has nothing to keep up.
                    Err(deltalake::errors::DeltaTableError::NotATable(_)) => {}
                    // Upkeep is retried on the next pass; folding goes on either way.
                    Err(e) => tracing::warn!(mart = %file.name, error = %e, "mart maintenance failed"),
                }
            }
        }
        .instrument(span)
        .await;
    }
}

impl Upkeep {
    /// Compacts the marts that took `compact_every_commits` commits since their last
    /// compaction; the first fold seen only sets where counting starts.
    async fn compact_busy(&mut self, marts: &Marts, config: &crate::config::MartConfig, report: &FoldReport) {
        if config.maintenance.compact_every_commits == 0 {
            return;
        }
        for r in &report.marts {
            let Some(version) = r.version else { continue };
            let since = *self.compacted.entry(r.mart.clone()).or_insert(version);
            if version.saturating_sub(since) < config.maintenance.compact_every_commits {
                continue;
            }
            let started = Instant::now();
            let path = crate::lake::mart::path(&r.mart);
            let compacted = async {
                let table = crate::lake::cache::open_latest(&marts.lake, &path).await?;
                let target = config
                    .target_file_bytes
                    .min(crate::lake::maintenance::BETWEEN_PASSES_FILE_BYTES);
                crate::lake::maintenance::compact(table, target).await
            }
            .await;
            match compacted {
                Ok((table, m)) => {
                    tracing::info!(mart = %r.mart, files_added = m.num_files_added, files_removed = m.num_files_removed,
                        ms = started.elapsed().as_millis() as u64, "mart compacted");
                    self.compacted
                        .insert(r.mart.clone(), table.version().unwrap_or(version));
                }
                // Tried again after as many commits; folding goes on either way.
                Err(e) => {
                    tracing::warn!(mart = %r.mart, error = %e, "mart compaction failed");
                    self.compacted.insert(r.mart.clone(), version);
                }
            }
        }
    }
}

/// One maintenance pass over one mart table (compact, checkpoint, vacuum).
pub async fn maintain(
    lake: &LakeUrl,
    mart: &str,
    config: &crate::config::MartConfig,
    last_version: Option<u64>,
) -> Result<crate::lake::maintenance::Report, deltalake::errors::DeltaTableError> {
    crate::lake::maintenance::run(
        lake,
        &crate::lake::mart::path(mart),
        &config.maintenance,
        config.target_file_bytes,
        last_version,
    )
    .await
}

fn outcome(o: &str) -> crate::telemetry::Labels {
    vec![("outcome", o.to_string())]
}

async fn fold_and_announce(
    marts: &Marts,
    announcer: &Announcer,
    telemetry: &Telemetry,
    summary: &mut Summary,
) -> Result<(), MartError> {
    let span = tracing::info_span!("fold");
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<fold::PortraitChanged>();
    let announcing = async {
        while let Some(changed) = rx.recv().await {
            announcer.announce(changed.version, &changed.customers).await?;
        }
        Ok::<_, MartError>(())
    };
    let folding = fold::fold_announcing(&marts.lake, &marts.catalog, &marts.files, Some(tx));
    // `instrument`, not `enter`: a guard held across awaits would tag other tasks' logs.
    let (report, announced) = async { tokio::join!(folding, announcing) }.instrument(span).await;
    // A portrait committed before a later mart failed is still announced.
    announced?;
    let report = report?;
    let m = &telemetry.mart;
    m.folds.get_or_create(&outcome("complete")).inc();
    m.fold_seconds.observe(started.elapsed().as_secs_f64());
    m.changed_customers.inc_by(report.changed_customers.len() as u64);
    for r in &report.marts {
        let labels = vec![("mart", r.mart.clone())];
        m.rows_merged.get_or_create(&labels).inc_by(r.rows);
    }
    summary.folds += 1;
    summary.changed_customers += report.changed_customers.len() as u64;
    summary.rows_merged += report.marts.iter().map(|r| r.rows).sum::<u64>();
    summary.last = Some(report);
    Ok(())
}

fn announcer(config: &Config, marts: &Marts) -> Result<Announcer, MartError> {
    let schemas = crate::codec::SchemaSet::load_strict(&config.catalog.schemas_dir)
        .map_err(|p| MartError::Config(format!("{p:?}")))?;
    Announcer::new(
        &config.kafka,
        &marts.topic(Role::MartChanges)?,
        std::sync::Arc::new(schemas),
    )
}
