//! The Delta tables a fold reads and writes: raw tables pinned at one version for the whole
//! fold, with a view of just the rows that landed after a given version, and the mart
//! tables with the raw versions each has folded in (Delta `txn` actions).

use crate::lake::LakeUrl;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, cast, col};
use deltalake::DeltaTable;
use deltalake::errors::DeltaTableError;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// Reading a lake table failed: its log, its files, or the table itself.
#[derive(Debug, thiserror::Error)]
pub enum LakeReadError {
    #[error("lake table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("lake table {table}: commit {version} cannot be read: {reason}")]
    Log {
        table: String,
        version: u64,
        reason: String,
    },
    #[error("lake table {table}: {source}")]
    Read {
        table: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
}

/// The Delta table at `relative` under the lake, loaded if it exists.
async fn open(lake: &LakeUrl, relative: &str) -> Result<DeltaTable, LakeReadError> {
    crate::lake::cache::open_latest(lake, relative)
        .await
        .map_err(|source| LakeReadError::Delta {
            table: relative.to_string(),
            source: Box::new(source),
        })
}

fn existing(table: DeltaTable) -> Option<DeltaTable> {
    table.version().is_some().then_some(table)
}

/// What landed in a raw table since a mart last folded it.
pub enum Added {
    Rows(Arc<dyn TableProvider>),
    /// Why it can no longer be told; the mart starts over from every row.
    Gone(String),
}

/// One raw topic's table, pinned at its version as of the start of a fold.
pub struct PinnedRaw {
    /// `site_page_view`: the name inside the `raw` and `new_raw` schemas.
    pub sql_name: String,
    pub path: String,
    table: Option<DeltaTable>,
    /// What readers see while the topic has not landed anything.
    empty: SchemaRef,
    /// The consent purpose that governs the rows the marts may use (`mart::consent`).
    pub purpose: Option<String>,
    /// This table holds the consent events the gates read.
    pub consents: bool,
}

impl PinnedRaw {
    pub async fn open(lake: &LakeUrl, topic: &str, empty: SchemaRef) -> Result<Self, LakeReadError> {
        let path = crate::lake::raw::path(topic);
        Ok(Self {
            sql_name: crate::lake::raw::sql_name(topic),
            table: existing(open(lake, &path).await?),
            path,
            empty,
            purpose: None,
            consents: false,
        })
    }

    pub fn version(&self) -> Option<u64> {
        self.table.as_ref().and_then(|t| t.version())
    }

    /// When the newest commit was made (None: nothing landed yet, or no timestamp).
    pub async fn last_commit_ms(&self) -> Option<i64> {
        last_commit_ms(self.table.as_ref()?).await
    }

    fn err(&self) -> impl Fn(DeltaTableError) -> LakeReadError + '_ {
        |source| LakeReadError::Delta {
            table: self.path.clone(),
            source: Box::new(source),
        }
    }

    /// The topic's columns, no rows.
    pub fn empty_provider(&self) -> Result<Arc<dyn TableProvider>, LakeReadError> {
        let table = MemTable::try_new(self.empty.clone(), vec![vec![]]).map_err(|source| LakeReadError::Read {
            table: self.path.clone(),
            source: Box::new(source),
        })?;
        Ok(Arc::new(table))
    }

    /// Every row, as of the pinned version.
    pub async fn full(&self, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>, LakeReadError> {
        let Some(table) = &self.table else {
            return self.empty_provider();
        };
        table.update_datafusion_session(&ctx.state()).map_err(self.err())?;
        let provider = table.table_provider().await.map_err(|source| LakeReadError::Read {
            table: self.path.clone(),
            source: Box::new(source),
        })?;
        self.widen(ctx, provider)
    }

    /// Columns the topic's schema gained after this table was last written read as null
    /// (schema on read): a mart may name a new field before any row carries it, and the
    /// SQL says what a missing value means.
    fn widen(
        &self,
        ctx: &SessionContext,
        provider: Arc<dyn TableProvider>,
    ) -> Result<Arc<dyn TableProvider>, LakeReadError> {
        let have = provider.schema();
        let missing: Vec<&Field> = self
            .empty
            .fields()
            .iter()
            .filter(|f| have.field_with_name(f.name()).is_err())
            .map(|f| f.as_ref())
            .collect();
        if missing.is_empty() {
            return Ok(provider);
        }
        let read = |source| LakeReadError::Read {
            table: self.path.clone(),
            source: Box::new(source),
        };
        let mut df = ctx.read_table(provider).map_err(read)?;
        for f in missing {
            let null = datafusion::scalar::ScalarValue::try_from(f.data_type()).map_err(read)?;
            df = df.with_column(f.name(), datafusion::prelude::lit(null)).map_err(read)?;
        }
        Ok(df.into_view())
    }

    /// The rows that landed after `version` (all of them for `None`), up to the pinned
    /// version, read from what the commits after `version` added with `dataChange` set.
    /// Those files may have been compacted away since: compaction removes them from the
    /// live set but leaves them on storage until vacuum, and their rows are still new to a
    /// mart that has not folded them. Compaction's own files (`dataChange` false) hold rows
    /// that were there before: counting them would make combining marts add those twice.
    /// When a commit or a file it added is gone (log cleanup or vacuum while the mart was
    /// behind), what landed can no longer be told: `Added::Gone`, never an empty view.
    pub async fn added_since(&self, ctx: &SessionContext, version: Option<u64>) -> Result<Added, LakeReadError> {
        let (Some(table), Some(since)) = (&self.table, version) else {
            return Ok(Added::Rows(self.full(ctx).await?));
        };
        let current = self.version().unwrap_or_default();
        if since >= current {
            return Ok(Added::Rows(self.empty_provider()?));
        }
        let files = match written(table, &self.path, since + 1..=current).await? {
            Written::Files(files) if files.is_empty() => return Ok(Added::Rows(self.empty_provider()?)),
            Written::Files(files) => files,
            Written::Gone(why) => return Ok(Added::Gone(why)),
        };
        table.update_datafusion_session(&ctx.state()).map_err(self.err())?;
        let rows = self
            .read_files(ctx, files)
            .await
            .map_err(|source| LakeReadError::Read {
                table: self.path.clone(),
                source: Box::new(source),
            })?;
        Ok(Added::Rows(self.widen(ctx, rows.into_view())?))
    }

    /// Reads data files with the table's schema; the partition column, which Delta keeps in
    /// the path rather than the file, is derived again from the event time as ingest does.
    async fn read_files(&self, ctx: &SessionContext, files: Vec<String>) -> datafusion::error::Result<DataFrame> {
        let schema = match &self.table {
            Some(t) => t.snapshot().map(|s| s.snapshot().arrow_schema()).ok(),
            None => None,
        }
        .unwrap_or_else(|| self.empty.clone());
        let partition = crate::lake::raw::PARTITION_COLUMN;
        let in_files: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != partition)
            .map(|f| f.as_ref().clone())
            .collect();
        let file_schema = Schema::new(in_files);
        let options = ParquetReadOptions::default().schema(&file_schema);
        let df = ctx.read_parquet(files, options).await?;
        df.with_column(partition, cast(col("event_time"), DataType::Date32))
    }
}

/// What a range of commits wrote.
enum Written {
    /// The data files they added with `dataChange` (compaction's own files left out),
    /// live or since compacted away: compacted files stay on storage until vacuum.
    Files(Vec<String>),
    /// A commit or one of those files is no longer in the lake (log cleanup, vacuum).
    Gone(String),
}

async fn written(
    table: &DeltaTable,
    name: &str,
    versions: std::ops::RangeInclusive<u64>,
) -> Result<Written, LakeReadError> {
    let err = |source| LakeReadError::Delta {
        table: name.to_string(),
        source: Box::new(source),
    };
    let mut added = Vec::new();
    for v in versions {
        let Some(entry) = table.log_store().read_commit_entry(v).await.map_err(err)? else {
            return Ok(Written::Gone(format!("{name}: commit {v} is no longer in the log")));
        };
        let mut in_commit = Vec::new();
        let mut erasure = false;
        for line in entry.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| LakeReadError::Log {
                table: name.to_string(),
                version: v,
                reason: e.to_string(),
            })?;
            erasure |= action.pointer("/commitInfo/operation").and_then(|o| o.as_str()) == Some("DELETE");
            if let Some(path) = action.pointer("/add/path").and_then(|p| p.as_str())
                && action.pointer("/add/dataChange").and_then(|c| c.as_bool()) != Some(false)
            {
                in_commit.push(Path::parse(path).unwrap_or_else(|_| Path::from(decode(path))));
            }
        }
        // A DELETE (an erasure: `crate::forget`) rewrites files without the rows it
        // removes; what it adds are rows that landed before, not new ones.
        if !erasure {
            added.extend(in_commit);
        }
    }
    let store = table.log_store().object_store(None);
    let mut files = Vec::with_capacity(added.len());
    for path in &added {
        match store.head(path).await {
            Ok(_) => files.push(table.log_store().to_uri(path)),
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Written::Gone(format!("{name}: {path} was vacuumed")));
            }
            Err(e) => return Err(err(DeltaTableError::ObjectStore { source: e })),
        }
    }
    Ok(Written::Files(files))
}

fn decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// A mart table and the raw versions it has folded in.
pub struct MartTable {
    pub name: String,
    pub path: String,
    /// Not loaded while the mart has never been written; the first write creates it.
    pub table: DeltaTable,
}

/// Per mart table (by URL), the input versions its commit at a version recorded, as this
/// process wrote them. Reading one back from the log replays the log since the checkpoint
/// (delta-kernel keeps no index of `txn` actions): a few ms, for each of the dozen inputs
/// of each mart in every fold, on the path a fresh list waits for. An input missing here
/// is read from the log.
static FOLDED: LazyLock<Mutex<HashMap<String, Recorded>>> = LazyLock::new(Default::default);

/// A mart commit's version and the input versions it recorded.
type Recorded = (u64, BTreeMap<String, u64>);

/// When the table's newest commit was made.
pub async fn last_commit_ms(table: &DeltaTable) -> Option<i64> {
    use futures::StreamExt;
    table.version()?;
    table.history(Some(1)).next().await?.ok()?.timestamp
}

impl MartTable {
    pub async fn open(lake: &LakeUrl, name: &str) -> Result<Self, LakeReadError> {
        let path = crate::lake::mart::path(name);
        Ok(Self {
            name: name.to_string(),
            table: open(lake, &path).await?,
            path,
        })
    }

    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// The version of `input` (a raw table's SQL name, or `mart.<name>`) this mart has
    /// folded in (None: not yet, or no table).
    pub async fn folded(&self, input: &str) -> Result<Option<u64>, LakeReadError> {
        let table = &self.table;
        let Some(version) = self.version() else {
            return Ok(None);
        };
        let remembered = FOLDED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(table.table_url().as_str())
            .filter(|(at, _)| *at == version)
            .and_then(|(_, folded)| folded.get(input).copied());
        if remembered.is_some() {
            return Ok(remembered);
        }
        let err = |source| LakeReadError::Delta {
            table: self.path.clone(),
            source: Box::new(source),
        };
        let snapshot = table.snapshot().map_err(err)?;
        let v = snapshot
            .transaction_version(
                table.log_store().as_ref(),
                crate::lake::mart::folded_app_id(&self.name, input),
            )
            .await
            .map_err(err)?;
        Ok(v.map(|v| v as u64))
    }

    /// Remembers what the commit this process just made recorded as folded (`folded`
    /// reads it back from here while the mart is still at that version).
    pub fn remember_folded(&self, folded: &BTreeMap<String, u64>) {
        if let Some(version) = self.version() {
            FOLDED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(self.table.table_url().to_string(), (version, folded.clone()));
        }
    }

    /// The newest version committed at or before `at` (None: none was, or no table).
    pub async fn version_at(&self, at: chrono::DateTime<chrono::Utc>) -> Option<u64> {
        self.version()?;
        let mut table = self.table.clone();
        table.load_with_datetime(at).await.ok()?;
        table.version()
    }

    /// The `key` values in what commits `from..=to` wrote: a superset of the keys they
    /// changed, since a MERGE rewrites whole files. When a commit or file is gone, every
    /// key the mart holds now. `ctx` reads the files (`session::session()`).
    pub async fn keys_written(
        &self,
        ctx: &SessionContext,
        key: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<String>, LakeReadError> {
        let read = |source| LakeReadError::Read {
            table: self.path.clone(),
            source: Box::new(source),
        };
        self.table
            .update_datafusion_session(&ctx.state())
            .map_err(|source| LakeReadError::Delta {
                table: self.path.clone(),
                source: Box::new(source),
            })?;
        let rows = match written(&self.table, &self.path, from..=to).await? {
            Written::Files(files) if files.is_empty() => return Ok(Vec::new()),
            Written::Files(files) => ctx
                .read_parquet(files, ParquetReadOptions::default())
                .await
                .map_err(read)?,
            Written::Gone(why) => {
                tracing::warn!(why, "announcing every customer of the portrait");
                match self.provider(ctx).await? {
                    Some(p) => ctx.read_table(p).map_err(read)?,
                    None => return Ok(Vec::new()),
                }
            }
        };
        let batches = rows
            .select_columns(&[key])
            .and_then(|d| d.distinct())
            .map_err(read)?
            .collect()
            .await
            .map_err(read)?;
        let mut keys = Vec::new();
        for b in &batches {
            let column = arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(|e| read(e.into()))?;
            if let Some(values) = column.as_any().downcast_ref::<arrow::array::StringArray>() {
                keys.extend(values.iter().flatten().map(str::to_string));
            }
        }
        Ok(keys)
    }

    /// The mart as it was at `version`.
    pub async fn provider_at(
        &self,
        ctx: &SessionContext,
        version: u64,
    ) -> Result<Arc<dyn TableProvider>, LakeReadError> {
        let err = |source| LakeReadError::Delta {
            table: self.path.clone(),
            source: Box::new(source),
        };
        let mut table = self.table.clone();
        table.load_version(version).await.map_err(err)?;
        table.update_datafusion_session(&ctx.state()).map_err(err)?;
        table.table_provider().await.map_err(|source| LakeReadError::Read {
            table: self.path.clone(),
            source: Box::new(source),
        })
    }

    /// No rows, with the mart's current columns (none when it has never been written).
    pub async fn empty_provider(&self, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>, LakeReadError> {
        let schema = match self.provider(ctx).await? {
            Some(p) => p.schema(),
            None => Arc::new(Schema::empty()),
        };
        let table = MemTable::try_new(schema, vec![vec![]]).map_err(|source| LakeReadError::Read {
            table: self.path.clone(),
            source: Box::new(source),
        })?;
        Ok(Arc::new(table))
    }

    pub async fn provider(&self, ctx: &SessionContext) -> Result<Option<Arc<dyn TableProvider>>, LakeReadError> {
        let table = &self.table;
        if self.version().is_none() {
            return Ok(None);
        }
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|source| LakeReadError::Delta {
                table: self.path.clone(),
                source: Box::new(source),
            })?;
        let provider = table.table_provider().await.map_err(|source| LakeReadError::Read {
            table: self.path.clone(),
            source: Box::new(source),
        })?;
        Ok(Some(provider))
    }
}
