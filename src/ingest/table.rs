//! A raw Delta table and the offsets stored in it. Data files and, per Kafka partition, a
//! `txn` action (app id `<group>-<topic>-<partition>`, version = last offset written) go
//! into one commit, so the lake itself says exactly what has landed.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Date32Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use delta_kernel::expressions::Scalar;
use deltalake::errors::DeltaTableError;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use indexmap::IndexMap;
use std::collections::{BTreeMap, HashMap};

use crate::lake::LakeUrl;
use crate::lake::raw::{FEW_VALUED, PARTITION_COLUMN, app_id};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Storage or commit trouble that a retry may fix.
    #[error("lake table {table} is unavailable: {source}")]
    Transient {
        table: String,
        #[source]
        source: DeltaTableError,
    },
    /// The rows themselves cannot be written (schema or type trouble); retrying will not help.
    #[error("lake table {table} refused the batch: {source}")]
    Rejected {
        table: String,
        #[source]
        source: DeltaTableError,
    },
    /// Another writer has moved a partition's stored offset: this batch is no longer ours.
    #[error(
        "{table}: partition {partition} stored offset is {stored:?}, expected {expected:?}; another worker owns it"
    )]
    Fenced {
        table: String,
        partition: i32,
        stored: Option<i64>,
        expected: Option<i64>,
    },
}

/// What one commit wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    pub version: u64,
    pub rows: u64,
    pub files: u32,
}

/// Cloned to write a batch's files beside the commit running on another copy.
#[derive(Clone)]
pub struct RawTable {
    /// Path under the lake root, e.g. `raw/raw.site.page_view`.
    pub name: String,
    topic: String,
    group: String,
    table: DeltaTable,
    target_file_bytes: u64,
    /// Stored offsets already read, valid at the table version they were read at. Reading
    /// one from the log replays every commit since the last checkpoint, once per partition,
    /// and a worker's own commit is the only thing that moves its partitions' offsets.
    known: Option<(u64, HashMap<i32, Option<i64>>)>,
}

impl RawTable {
    /// The table as of commit `version`, when that commit is due a checkpoint (commits
    /// here skip delta-rs's own hook) and the table is still at it:
    /// `lake::maintenance::checkpoint_table` writes it. A table read back at another
    /// writer's version gives none; the maintenance pass checkpoints it.
    pub fn checkpoint_due(&self, version: u64) -> Option<DeltaTable> {
        let due = crate::lake::maintenance::checkpoint_due(version);
        (due && self.table.version() == Some(version)).then(|| self.table.clone())
    }

    /// Opens the table if it exists; otherwise the first write creates it.
    pub async fn open(lake: &LakeUrl, topic: &str, group: &str, target_file_bytes: u64) -> Result<Self, TableError> {
        let name = crate::lake::raw::path(topic);
        let transient = |source| TableError::Transient {
            table: name.clone(),
            source,
        };
        let url = lake.table_url(&name).map_err(transient)?;
        let mut table = DeltaTableBuilder::from_url(url)
            .map_err(transient)?
            .build()
            .map_err(transient)?;
        // Checking first keeps the kernel from logging an error for a table not made yet.
        if table.verify_deltatable_existence().await.map_err(transient)? {
            table.load().await.map_err(transient)?;
        }
        Ok(Self {
            name,
            topic: topic.to_string(),
            group: group.to_string(),
            table,
            target_file_bytes,
            known: None,
        })
    }

    pub fn exists(&self) -> bool {
        self.table.version().is_some()
    }

    /// The version this worker last committed or read.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    pub fn arrow_schema(&self) -> Option<SchemaRef> {
        self.table.snapshot().ok().map(|s| s.snapshot().arrow_schema())
    }

    /// Catches up with commits made by other workers.
    pub async fn refresh(&mut self) -> Result<(), TableError> {
        let result = if self.exists() {
            self.table.update_incremental(None).await
        } else {
            match self.table.verify_deltatable_existence().await {
                Ok(true) => self.table.load().await,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(()),
            Err(source) => Err(TableError::Transient {
                table: self.name.clone(),
                source,
            }),
        }
    }

    /// The last offset stored for each partition (None: nothing landed yet).
    pub async fn stored_offsets(&mut self, partitions: &[i32]) -> Result<HashMap<i32, Option<i64>>, TableError> {
        self.refresh().await?;
        let mut out = HashMap::new();
        for &p in partitions {
            out.insert(p, self.stored(p).await?);
        }
        Ok(out)
    }

    async fn stored(&mut self, partition: i32) -> Result<Option<i64>, TableError> {
        let Some(version) = self.table.version() else {
            return Ok(None);
        };
        if let Some((at, offsets)) = &self.known
            && *at == version
            && let Some(&offset) = offsets.get(&partition)
        {
            return Ok(offset);
        }
        let snapshot = self.table.snapshot().map_err(|source| TableError::Transient {
            table: self.name.clone(),
            source,
        })?;
        let offset = snapshot
            .transaction_version(
                self.table.log_store().as_ref(),
                app_id(&self.group, &self.topic, partition),
            )
            .await
            .map_err(|source| TableError::Transient {
                table: self.name.clone(),
                source,
            })?;
        match &mut self.known {
            Some((at, offsets)) if *at == version => {
                offsets.insert(partition, offset);
            }
            known => *known = Some((version, HashMap::from([(partition, offset)]))),
        }
        Ok(offset)
    }

    /// After this worker's commit at `version` on top of `read_at`: offsets known at
    /// `read_at` still hold unless another commit came between, and ours are now stored.
    fn committed_offsets(&mut self, read_at: Option<u64>, version: u64, offsets: &BTreeMap<i32, (Option<i64>, i64)>) {
        let mut known = match self.known.take() {
            Some((at, known)) if read_at == Some(at) && version == at + 1 => known,
            _ if read_at.is_none() && version == 0 => HashMap::new(),
            _ => return,
        };
        known.extend(offsets.iter().map(|(&p, &(_, last))| (p, Some(last))));
        self.known = Some((version, known));
    }

    /// Writes a batch's data files without committing them, so the next batch's files are
    /// written while the previous commit is still running (on HDFS each file close can wait
    /// half a second for the DataNode's block report). Only for a table that exists and
    /// rows of exactly its schema; `Rows::Batches` covers the rest.
    pub async fn stage(&self, batches: Vec<RecordBatch>) -> Result<Staged, TableError> {
        let classify = |e: DeltaTableError| classify(&self.name, e);
        let mut writer = RecordBatchWriter::for_table(&self.table)
            .map_err(classify)?
            .with_writer_properties(landing_properties())
            .with_target_file_size(self.target_file_bytes);
        let mut rows = 0;
        for batch in batches {
            rows += batch.num_rows() as u64;
            // Nearly every part holds one event date; the generic write would sort and
            // copy every column to split it by date, so such parts skip the split.
            match single_date(&batch) {
                Some(date) => {
                    let values = IndexMap::from([(PARTITION_COLUMN.to_string(), Scalar::Date(date))]);
                    writer
                        .write_partition(batch, &values, WriteMode::Default)
                        .await
                        .map_err(classify)?;
                }
                None => writer.write(batch).await.map_err(classify)?,
            }
        }
        let adds = writer.flush().await.map_err(classify)?;
        Ok(Staged { adds, rows })
    }

    /// Whether rows of `schema` can be staged: the table exists and has exactly these columns.
    pub fn stages(&self, schema: &SchemaRef) -> bool {
        self.arrow_schema().is_some_and(|have| {
            have.fields().len() == schema.fields().len()
                && have
                    .fields()
                    .iter()
                    .zip(schema.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
        })
    }

    /// Commits the rows and stores `offsets` (partition -> (previous stored, last)) in the
    /// same commit, after checking that nobody else advanced those partitions meanwhile.
    pub async fn commit(
        &mut self,
        rows: impl Into<Rows>,
        offsets: &BTreeMap<i32, (Option<i64>, i64)>,
    ) -> Result<Committed, TableError> {
        let rows = rows.into();
        self.refresh().await?;
        let read_at = self.table.version();
        let count = rows.count();
        // A retry of a commit whose answer was lost although it landed finds its own
        // offsets (a commit sets all of them or none); anything else is another writer's.
        let mut stored = Vec::with_capacity(offsets.len());
        for (&partition, &(expected, last)) in offsets {
            stored.push((partition, self.stored(partition).await?, expected, last));
        }
        if !stored.is_empty() && stored.iter().all(|&(_, s, e, l)| s == Some(l) && e != Some(l)) {
            let version = self.table.version().unwrap_or_default();
            return Ok(Committed {
                version,
                rows: count,
                files: self.added_files(version).await,
            });
        }
        if let Some(&(partition, stored, expected, _)) = stored.iter().find(|&&(_, s, e, _)| s != e) {
            return Err(TableError::Fenced {
                table: self.name.clone(),
                partition,
                stored,
                expected,
            });
        }
        let txns = offsets
            .iter()
            .map(|(&p, &(_, last))| Transaction::new(app_id(&self.group, &self.topic, p), last))
            .collect();
        // A checkpoint the commit may be due is written once the commit is announced
        // (`checkpoint_due`), not inside the path a fresh event waits on.
        let props = CommitProperties::default()
            .with_application_transactions(txns)
            .with_create_checkpoint(false)
            .with_cleanup_expired_logs(Some(false));
        let (version, files) = match self.write(rows, props).await {
            Ok(done) => done,
            // An error after the commit landed (reading the table back) is
            // not the rows' fault: the log says whether they are in, and if they are, the
            // batch is committed and nothing may be dead-lettered.
            Err(e) => match self.landed_despite(offsets).await {
                Some(version) => {
                    tracing::warn!(error = %e, version, "the lake failed after the commit landed; the batch is committed");
                    (version, self.added_files(version).await)
                }
                None => return Err(e),
            },
        };
        self.committed_offsets(read_at, version, offsets);
        Ok(Committed {
            version,
            rows: count,
            files,
        })
    }

    /// One commit of the rows with the offsets' transactions: its version and files.
    async fn write(&mut self, rows: Rows, props: CommitProperties) -> Result<(u64, u32), TableError> {
        let classify = |e: DeltaTableError| classify(&self.name, e);
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let done = match rows {
            Rows::Staged(staged) => {
                let files = staged.adds.len() as u32;
                let snapshot = self.table.snapshot().map_err(classify)?;
                let done = CommitBuilder::from(props)
                    .with_actions(staged.adds.into_iter().map(Action::Add).collect())
                    .build(Some(snapshot), self.table.log_store(), operation)
                    .await
                    .map_err(classify)?;
                let version = done.version();
                // The commit's own snapshot is the table after it; no need to read it back.
                self.table.state = Some(done.snapshot);
                (version, files)
            }
            Rows::Batches(batches) if batches.is_empty() => {
                // Every record went to the dead-letter topic: store the offsets alone.
                let snapshot = self.table.snapshot().map_err(classify)?;
                let done = CommitBuilder::from(props)
                    .build(Some(snapshot), self.table.log_store(), operation)
                    .await
                    .map_err(classify)?;
                let version = done.version();
                self.table.state = Some(done.snapshot);
                (version, 0)
            }
            Rows::Batches(batches) => {
                // The first rows of a table, or a new schema version's: the write operation
                // creates the table or widens its schema in the same commit.
                let table = self
                    .table
                    .clone()
                    .write(batches)
                    .with_save_mode(SaveMode::Append)
                    .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
                    .with_partition_columns([PARTITION_COLUMN])
                    .with_target_file_size(std::num::NonZeroU64::new(self.target_file_bytes))
                    .with_writer_properties(landing_properties())
                    .with_configuration(crate::lake::TABLE_PROPERTIES)
                    .with_commit_properties(props)
                    .await
                    .map_err(classify)?;
                self.table = table;
                let version = self.table.version().unwrap_or_default();
                (version, self.added_files(version).await)
            }
        };
        // Lets a test make the lake fail after the commit landed, as reading it back can.
        if std::env::var_os("HOFFREC_TEST_REJECT_AFTER_COMMIT").is_some() {
            return Err(TableError::Rejected {
                table: self.name.clone(),
                source: DeltaTableError::Generic("injected: the checkpoint after the commit failed".into()),
            });
        }
        Ok(done)
    }

    /// The version that holds these offsets' commit, if the log has it (every partition
    /// stored at its last offset: a commit sets all of them or none).
    async fn landed_despite(&mut self, offsets: &BTreeMap<i32, (Option<i64>, i64)>) -> Option<u64> {
        self.refresh().await.ok()?;
        for (&partition, &(expected, last)) in offsets {
            let stored = self.stored(partition).await.ok()?;
            if stored != Some(last) || expected == Some(last) {
                return None;
            }
        }
        self.table.version()
    }

    /// Data files a commit added, read from its log entry.
    async fn added_files(&self, version: u64) -> u32 {
        match self.table.log_store().read_commit_entry(version).await {
            Ok(Some(bytes)) => bytes
                .split(|b| *b == b'\n')
                .filter(|line| line.starts_with(b"{\"add\""))
                .count() as u32,
            _ => 0,
        }
    }
}

/// Landing files are written for speed: dictionaries were a tenth of ingest's time and
/// zstd's default level a twentieth, so they land with zstd's fastest level and no
/// dictionaries; compaction rewrites them with both.
fn landing_properties() -> WriterProperties {
    // Ingest's own columns that hold one or a few values per batch stay dictionary
    // encoded: plain, the writer label alone would be 33 bytes a row of zstd's input.
    FEW_VALUED
        .into_iter()
        .fold(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
                .set_dictionary_enabled(false),
            |b, column| b.set_column_dictionary_enabled(ColumnPath::from(column), true),
        )
        .build()
}

/// A batch's rows on their way into a commit.
#[derive(Clone)]
pub enum Rows {
    /// Data files already written by `stage`.
    Staged(Staged),
    /// Rows the commit writes itself (none: an offsets-only commit).
    Batches(Vec<RecordBatch>),
}

impl From<Vec<RecordBatch>> for Rows {
    fn from(batches: Vec<RecordBatch>) -> Self {
        Self::Batches(batches)
    }
}

impl Rows {
    fn count(&self) -> u64 {
        match self {
            Self::Staged(s) => s.rows,
            Self::Batches(b) => b.iter().map(|b| b.num_rows() as u64).sum(),
        }
    }
}

/// Data files written but not yet in the table's log.
#[derive(Clone)]
pub struct Staged {
    adds: Vec<Add>,
    rows: u64,
}

fn classify(table: &str, source: DeltaTableError) -> TableError {
    // Only what says the rows themselves are at fault rejects them (to the dead-letter
    // topic). Everything else, storage above all (a NameNode in safe mode, a DataNode
    // restarting: delta-rs reports these as kernel, object store, I/O or "generic" errors),
    // is retried: a retried commit is safe, it finds its own offsets.
    let rows_at_fault = match &source {
        DeltaTableError::Arrow { .. }
        | DeltaTableError::InvalidData { .. }
        | DeltaTableError::SchemaMismatch { .. }
        | DeltaTableError::PartitionError { .. }
        | DeltaTableError::CommitValidation { .. }
        | DeltaTableError::InvalidDateTimeString { .. } => true,
        DeltaTableError::Parquet { source } => !matches!(source, deltalake::parquet::errors::ParquetError::External(_)),
        _ => false,
    };
    let transient = !rows_at_fault;
    if transient {
        TableError::Transient {
            table: table.to_string(),
            source,
        }
    } else {
        TableError::Rejected {
            table: table.to_string(),
            source,
        }
    }
}

/// The event date every row of `batch` has, if they all have the same one.
fn single_date(batch: &RecordBatch) -> Option<i32> {
    let dates = batch
        .column_by_name(PARTITION_COLUMN)?
        .as_primitive_opt::<Date32Type>()?;
    if dates.null_count() > 0 {
        return None;
    }
    let first = *dates.values().first()?;
    dates.values().iter().all(|d| *d == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn part(dates: Vec<Option<i32>>) -> RecordBatch {
        let n = dates.len() as i64;
        let schema = Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new(PARTITION_COLUMN, DataType::Date32, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(Date32Array::from(dates)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn only_parts_of_one_date_skip_the_split() {
        assert_eq!(single_date(&part(vec![Some(20000); 3])), Some(20000));
        assert_eq!(single_date(&part(vec![Some(20000), Some(20001)])), None);
        assert_eq!(single_date(&part(vec![Some(20000), None])), None);
        assert_eq!(single_date(&part(Vec::new())), None);
    }
}
