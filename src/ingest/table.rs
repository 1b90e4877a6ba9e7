//! A raw Delta table and the offsets stored in it. Data files and, per Kafka partition, a
//! `txn` action (app id `<group>-<topic>-<partition>`, version = last offset written) go
//! into one commit, so the lake itself says exactly what has landed.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use deltalake::errors::DeltaTableError;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use std::collections::{BTreeMap, HashMap};

use super::batch::PARTITION_COLUMN;
use crate::lake::LakeUrl;

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

pub struct RawTable {
    /// Path under the lake root, e.g. `raw/raw.site.page_view`.
    pub name: String,
    topic: String,
    group: String,
    table: DeltaTable,
    target_file_bytes: u64,
}

/// `raw/<topic>` under the lake root.
pub fn table_name(topic: &str) -> String {
    format!("raw/{topic}")
}

pub fn app_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}-{topic}-{partition}")
}

impl RawTable {
    /// Opens the table if it exists; otherwise the first write creates it.
    pub async fn open(lake: &LakeUrl, topic: &str, group: &str, target_file_bytes: u64) -> Result<Self, TableError> {
        let name = table_name(topic);
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
        })
    }

    pub fn exists(&self) -> bool {
        self.table.version().is_some()
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

    async fn stored(&self, partition: i32) -> Result<Option<i64>, TableError> {
        if !self.exists() {
            return Ok(None);
        }
        let snapshot = self.table.snapshot().map_err(|source| TableError::Transient {
            table: self.name.clone(),
            source,
        })?;
        snapshot
            .transaction_version(
                self.table.log_store().as_ref(),
                app_id(&self.group, &self.topic, partition),
            )
            .await
            .map_err(|source| TableError::Transient {
                table: self.name.clone(),
                source,
            })
    }

    /// Appends `batches` and stores `offsets` (partition -> (previous stored, last)) in the
    /// same commit, after checking that nobody else advanced those partitions meanwhile.
    pub async fn commit(
        &mut self,
        batches: Vec<RecordBatch>,
        offsets: &BTreeMap<i32, (Option<i64>, i64)>,
    ) -> Result<Committed, TableError> {
        self.refresh().await?;
        for (&partition, &(expected, _)) in offsets {
            let stored = self.stored(partition).await?;
            if stored != expected {
                return Err(TableError::Fenced {
                    table: self.name.clone(),
                    partition,
                    stored,
                    expected,
                });
            }
        }
        let txns = offsets
            .iter()
            .map(|(&p, &(_, last))| Transaction::new(app_id(&self.group, &self.topic, p), last))
            .collect();
        let props = CommitProperties::default().with_application_transactions(txns);
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let classify = |e: DeltaTableError| classify(&self.name, e);
        let version = if rows == 0 {
            // Every record went to the dead-letter topic: store the offsets alone.
            let snapshot = self.table.snapshot().map_err(classify)?;
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            };
            let done = CommitBuilder::from(props)
                .build(Some(snapshot), self.table.log_store(), operation)
                .await
                .map_err(classify)?;
            let version = done.version();
            self.refresh().await?;
            version
        } else {
            let writer = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let table = self
                .table
                .clone()
                .write(batches)
                .with_save_mode(SaveMode::Append)
                .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
                .with_partition_columns([PARTITION_COLUMN])
                .with_target_file_size(std::num::NonZeroU64::new(self.target_file_bytes))
                .with_writer_properties(writer)
                .with_commit_properties(props)
                .await
                .map_err(classify)?;
            self.table = table;
            self.table.version().unwrap_or_default()
        };
        let files = self.added_files(version).await;
        Ok(Committed { version, rows, files })
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

fn classify(table: &str, source: DeltaTableError) -> TableError {
    let transient = matches!(
        &source,
        DeltaTableError::ObjectStore { .. }
            | DeltaTableError::Io { .. }
            | DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::ObjectStore { .. }
                    | TransactionError::MaxCommitAttempts(_)
            }
    );
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
