//! Small-file upkeep for a lake table: compact (Delta optimize), write a checkpoint so
//! readers replay a short log, and vacuum files no commit references any more. Raw tables
//! get it from the ingest worker that owns partition 0 of the topic, marts from the mart
//! process between folds: one writer of maintenance per table, so passes never race.

use crate::lake::LakeUrl;
use deltalake::errors::DeltaTableError;
use deltalake::operations::optimize::OptimizeType;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU64;

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub version: u64,
    pub compacted: bool,
    pub files_added: u64,
    pub files_removed: u64,
    pub files_vacuumed: usize,
}

/// One maintenance pass over the table at `table_name` (relative to the lake); skipped when fewer than `min_commits`
/// commits happened since `last_version`.
pub async fn run(
    lake: &LakeUrl,
    table_name: &str,
    config: &MaintenanceConfig,
    target_file_bytes: u64,
    last_version: Option<u64>,
) -> Result<Report, DeltaTableError> {
    let url = lake.table_url(table_name)?;
    let table = deltalake::open_table(url).await?;
    let version = table.version().unwrap_or_default();
    let mut report = Report {
        version,
        ..Default::default()
    };
    if last_version.is_some_and(|v| version.saturating_sub(v) < config.min_commits) {
        return Ok(report);
    }
    let (table, metrics) = compact(table, target_file_bytes).await?;
    report.compacted = true;
    report.files_added = metrics.num_files_added;
    report.files_removed = metrics.num_files_removed;
    deltalake::checkpoints::create_checkpoint(&table, None).await?;
    let retention = chrono::Duration::hours(i64::try_from(config.vacuum_retention_hours).unwrap_or(i64::MAX / 3600));
    let (table, vacuumed) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await?;
    report.files_vacuumed = vacuumed.files_deleted.len();
    report.version = table.version().unwrap_or(version);
    Ok(report)
}

/// Bins the table's small files into files of about `target_file_bytes` (Delta optimize);
/// files at that size already stay.
pub async fn compact(
    table: deltalake::DeltaTable,
    target_file_bytes: u64,
) -> Result<(deltalake::DeltaTable, deltalake::operations::optimize::Metrics), DeltaTableError> {
    let target = NonZeroU64::new(target_file_bytes).unwrap_or(NonZeroU64::MIN);
    // Compacted files are the ones that stay: dictionaries and zstd, unlike landing files.
    let writer = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_enabled(true)
        .build();
    table
        .optimize()
        .with_type(OptimizeType::Compact)
        .with_target_size(target)
        .with_writer_properties(writer)
        .await
}

/// The file size compaction between passes aims at: small files are binned into files
/// this large at most, so a table's whole day is not rewritten every few commits (the
/// pass bins them up to the table's target).
pub const BETWEEN_PASSES_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Whether commit `version` is one delta-rs's post-commit hook would have checkpointed.
/// Writers that commit with the hook off (`CommitProperties::with_create_checkpoint`)
/// ask this after what waits on the commit, and then call `checkpoint_table`.
pub fn checkpoint_due(version: u64) -> bool {
    (version + 1).is_multiple_of(super::CHECKPOINT_INTERVAL)
}

/// Writes a checkpoint of `table` at the version it holds, and removes expired log files,
/// as delta-rs's post-commit hook would have.
pub async fn checkpoint_table(table: &deltalake::DeltaTable) -> Result<(), DeltaTableError> {
    deltalake::checkpoints::create_checkpoint(table, None).await?;
    deltalake::checkpoints::cleanup_metadata(table, None).await?;
    Ok(())
}

/// Small-file upkeep of the raw tables, done by the worker that owns partition 0 of a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// How often to compact (Delta optimize), checkpoint and vacuum; 0 turns it off.
    pub interval_ms: u64,
    /// Compact only when a table gained at least this many commits since the last run.
    pub min_commits: u64,
    /// Files no longer referenced are deleted once older than this.
    pub vacuum_retention_hours: u64,
    /// Between passes, compact a table once it took this many commits since its last
    /// compaction (0: only in the passes). Every commit adds files and readers open them
    /// all: at a commit a second, ten minutes between passes were 600 small files.
    pub compact_every_commits: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10 * 60 * 1000,
            min_commits: 10,
            vacuum_retention_hours: 168,
            compact_every_commits: 20,
        }
    }
}
