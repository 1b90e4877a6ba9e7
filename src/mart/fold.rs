//! One fold: every mart in `mart_sql/` order takes in the raw rows that landed since it last
//! folded, recomputes the keys those rows touch, and MERGEs the result into its Delta table
//! together with the raw versions it has now folded in (`txn` actions, one commit).
//!
//! Recomputing whole keys from the full history, rather than adding deltas to stored sums,
//! is what makes the result independent of how the history was cut into runs: one fold or
//! twenty give the same rows, and a fold redone after a crash repeats the same work. Each
//! mart tracks its own raw versions, so a crash between two marts' commits leaves the later
//! one simply further behind.

use super::files::{Kind, MartFile, for_datafusion};
use super::tables::{Added, MartTable, RawTable, TableError, folded_app_id};
use crate::catalog::Catalog;
use crate::lake::LakeUrl;
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{file}: {source}")]
    Sql {
        file: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("mart {mart}: the changed-keys query must return the column `{column}`")]
    MissingColumn { mart: String, column: String },
    #[error("mart {mart}: writing to the lake failed: {source}")]
    Write {
        mart: String,
        #[source]
        source: Box<deltalake::errors::DeltaTableError>,
    },
    #[error("schema of raw topic {0} cannot be turned into a table schema: {1}")]
    Schema(String, String),
}

impl FoldError {
    /// Worth retrying on the next trigger (the lake was busy or unreachable), as opposed
    /// to a mistake in the SQL that needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Table(TableError::Delta { .. }) | Self::Write { .. } => true,
            // A query fails on storage too (a DataNode or NameNode restarting), not only on
            // a mistake in the SQL.
            Self::Sql { source, .. } => storage_trouble(source),
            _ => false,
        }
    }
}

/// Whether a query failed reading the lake rather than on its own terms.
fn storage_trouble(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as E;
    match e {
        E::ObjectStore(_) | E::IoError(_) => true,
        E::Context(_, inner) | E::Diagnostic(_, inner) => storage_trouble(inner),
        E::Shared(inner) => storage_trouble(inner),
        E::External(inner) => {
            inner.downcast_ref::<E>().is_some_and(storage_trouble)
                || inner.is::<object_store::Error>()
                || inner.is::<std::io::Error>()
                || inner.is::<deltalake::errors::DeltaTableError>()
        }
        // The Parquet reader reports object store trouble as its own error.
        E::ParquetError(p) => matches!(**p, datafusion::parquet::errors::ParquetError::External(_)),
        _ => false,
    }
}

/// What one mart did in one fold.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MartReport {
    pub mart: String,
    /// Keys recomputed.
    pub changed: u64,
    /// Rows merged in for them.
    pub rows: u64,
    /// The mart table's version after the fold (None: nothing to fold yet).
    pub version: Option<u64>,
    /// Raw table -> version folded in.
    pub folded: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    /// Of which computing the rows, and writing them (MERGE and commit).
    pub query_ms: u64,
    pub write_ms: u64,
    /// Started over from every row: what landed since the last fold was no longer in the
    /// lake (vacuumed), or an input mart's earlier version was gone.
    pub rebuilt: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FoldReport {
    pub marts: Vec<MartReport>,
    /// Customers whose portrait changed (published to `mart.changes`).
    #[serde(skip)]
    pub changed_customers: Vec<String>,
    pub portrait_version: Option<u64>,
}

/// The mart whose changed keys are announced on `mart.changes`.
pub const PORTRAIT: &str = "customer_portrait";

/// Raw tables pinned for one fold.
pub async fn open_raw(lake: &LakeUrl, catalog: &Catalog) -> Result<Vec<RawTable>, FoldError> {
    let mut raw = Vec::new();
    for topic in catalog.raw_topics() {
        let event = topic.value_schema.as_deref().unwrap_or_default();
        let fields = match catalog.schemas.current(event) {
            Some(v) => crate::ingest::record_fields(&v.schema)
                .map_err(|e| FoldError::Schema(topic.name.clone(), e.to_string()))?,
            None => Default::default(),
        };
        let empty = crate::ingest::batch::empty_table_schema(&fields);
        raw.push(RawTable::open(lake, &topic.name, empty).await?);
    }
    Ok(raw)
}

pub fn session() -> SessionContext {
    let mut config = datafusion::prelude::SessionConfig::new().with_information_schema(true);
    // Plain strings throughout: mart tables are written with them, and Spark reads them.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    let ctx = SessionContext::new_with_config(config);
    super::functions::register(&ctx);
    ctx
}

fn schema(ctx: &SessionContext, name: &str) -> Arc<MemorySchemaProvider> {
    let provider = Arc::new(MemorySchemaProvider::new());
    if let Some(catalog) = ctx.catalog("datafusion") {
        let _ = catalog.register_schema(name, provider.clone());
    }
    provider
}

/// Runs every file once, in order.
pub async fn fold(lake: &LakeUrl, catalog: &Catalog, files: &[MartFile]) -> Result<FoldReport, FoldError> {
    fold_announcing(lake, catalog, files, None).await
}

/// The portrait's new version and the customers whose portrait it changed.
pub type PortraitChanged = (Option<u64>, Vec<String>);

/// As `fold`, and sends the changed customers on `portrait_changed` as soon as the portrait
/// is committed: the marts after it describe products, not customers, so the recommender
/// need not wait for them.
pub async fn fold_announcing(
    lake: &LakeUrl,
    catalog: &Catalog,
    files: &[MartFile],
    portrait_changed: Option<tokio::sync::mpsc::UnboundedSender<PortraitChanged>>,
) -> Result<FoldReport, FoldError> {
    let ctx = session();
    let opening = Instant::now();
    let raw = open_raw(lake, catalog).await?;
    let raw_schema = schema(&ctx, "raw");
    let new_raw = schema(&ctx, "new_raw");
    let marts = schema(&ctx, "mart");
    let prev = schema(&ctx, "prev_mart");
    for t in &raw {
        let provider = t.full(&ctx).await?;
        raw_schema
            .register_table(t.sql_name.clone(), provider)
            .map_err(|source| sql_error("raw", source))?;
    }
    // Earlier marts are readable by later files even when they fold nothing this time.
    for f in files.iter().filter(|f| f.is_mart()) {
        let mart = MartTable::open(lake, &f.name).await?;
        if let Some(p) = mart.provider(&ctx).await? {
            marts
                .register_table(f.name.clone(), p)
                .map_err(|s| sql_error(&f.name, s))?;
        }
    }
    tracing::info!(ms = opening.elapsed().as_millis() as u64, "lake tables opened");
    let mut report = FoldReport::default();
    let mut views = Vec::new();
    for file in files {
        let file_name = file.path.display().to_string();
        match &file.kind {
            Kind::View { .. } => views.push(file),
            Kind::Mart { .. } => {
                let span = tracing::info_span!("mart", mart = %file.name);
                let sources = Sources {
                    lake,
                    raw: &raw,
                    new_raw: &new_raw,
                    prev: &prev,
                };
                let (mart, done) = async {
                    let mut mart = MartTable::open(lake, &file.name).await?;
                    let done = fold_one(&ctx, &sources, &views, &mut mart, file).await?;
                    Ok::<_, FoldError>((mart, done))
                }
                .instrument(span)
                .await?;
                if let Some(p) = mart.provider(&ctx).await? {
                    marts
                        .deregister_table(&file.name)
                        .map_err(|s| sql_error(&file_name, s))?;
                    marts
                        .register_table(file.name.clone(), p)
                        .map_err(|s| sql_error(&file_name, s))?;
                }
                if file.name == PORTRAIT {
                    if let Some(tx) = &portrait_changed {
                        // The receiver only goes away when its own fold is abandoned.
                        let _ = tx.send((done.0.version, done.1.clone()));
                    }
                    report.changed_customers = done.1;
                    report.portrait_version = done.0.version;
                }
                report.marts.push(done.0);
            }
        }
    }
    Ok(report)
}

/// (Re)plans the views in order. DataFusion binds a view to the tables it reads when it is
/// planned, so views are planned again once `new_raw` and the marts point where this mart
/// needs them. A view over a mart that does not exist yet cannot be planned; that is only
/// an error for a query that uses it, so the reasons are returned for such a failure.
async fn plan_views(ctx: &SessionContext, views: &[&MartFile]) -> Result<Vec<String>, FoldError> {
    let mut unplanned = Vec::new();
    for view in views {
        let Kind::View { query } = &view.kind else { continue };
        let err = |s| sql_error(&view.path.display().to_string(), s);
        ctx.deregister_table(view.name.as_str()).map_err(err)?;
        match ctx.sql(&for_datafusion(query)).await {
            Ok(df) => {
                ctx.register_table(view.name.as_str(), df.into_view()).map_err(err)?;
            }
            Err(e) => unplanned.push(format!("view {} ({}): {e}", view.name, view.path.display())),
        }
    }
    Ok(unplanned)
}

fn sql_error(file: &str, source: datafusion::error::DataFusionError) -> FoldError {
    FoldError::Sql {
        file: file.to_string(),
        source: Box::new(source),
    }
}

/// What a mart's SQL reads besides the marts themselves.
struct Sources<'a> {
    lake: &'a LakeUrl,
    raw: &'a [RawTable],
    new_raw: &'a MemorySchemaProvider,
    prev: &'a MemorySchemaProvider,
}

/// What landed in each raw table since `mart` folded it, in `raw` order; `None` when a
/// commit or file that says so is no longer in the lake, so the mart must start over.
async fn raw_added(
    ctx: &SessionContext,
    raw: &[RawTable],
    mart: &MartTable,
) -> Result<Option<Vec<Arc<dyn datafusion::catalog::TableProvider>>>, FoldError> {
    let mut added = Vec::with_capacity(raw.len());
    for t in raw {
        match t.added_since(ctx, mart.folded(&t.sql_name).await?).await? {
            Added::Rows(rows) => added.push(rows),
            Added::Gone(why) => {
                tracing::warn!(mart = %mart.name, why, "raw rows since the last fold are gone; rebuilding the mart");
                return Ok(None);
            }
        }
    }
    Ok(Some(added))
}

async fn fold_one(
    ctx: &SessionContext,
    sources: &Sources<'_>,
    views: &[&MartFile],
    mart: &mut MartTable,
    file: &MartFile,
) -> Result<(MartReport, Vec<String>), FoldError> {
    let started = Instant::now();
    let Kind::Mart {
        key,
        replace,
        changed,
        rows,
        combine,
        inputs,
    } = &file.kind
    else {
        return Ok((MartReport::default(), vec![]));
    };
    let file_name = file.path.display().to_string();
    let err = |s| sql_error(&file_name, s);
    let mut folded = BTreeMap::new();
    let mut behind = mart.version().is_none();
    let added = raw_added(ctx, sources.raw, mart).await?;
    let mut rebuild = added.is_none();
    // Earlier marts as this one last saw them. A version no longer in the log (vacuumed)
    // means starting over too.
    for input in inputs {
        let seen_as = format!("mart.{input}");
        let seen = mart.folded(&seen_as).await?;
        let now = MartTable::open(sources.lake, input).await?;
        let current = now.version();
        behind |= seen != current;
        let provider = match seen {
            Some(v) if !rebuild => match now.provider_at(ctx, v).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(input, version = v, error = %e, "earlier version gone; rebuilding the mart");
                    rebuild = true;
                    None
                }
            },
            _ => None,
        };
        let provider = match provider {
            Some(p) => p,
            None => now.empty_provider(ctx).await?,
        };
        sources.prev.deregister_table(input).map_err(err)?;
        sources.prev.register_table(input.clone(), provider).map_err(err)?;
        if let Some(v) = current {
            folded.insert(seen_as, v);
        }
    }
    if rebuild {
        for input in inputs {
            let now = MartTable::open(sources.lake, input).await?;
            sources.prev.deregister_table(input).map_err(err)?;
            sources
                .prev
                .register_table(input.clone(), now.empty_provider(ctx).await?)
                .map_err(err)?;
        }
    }
    let mut added = added.into_iter().flatten();
    for t in sources.raw {
        let since = if rebuild { None } else { mart.folded(&t.sql_name).await? };
        let current = t.version();
        behind |= current.is_some() && since != current;
        let rows = match (rebuild, added.next()) {
            (false, Some(rows)) => rows,
            _ => t.full(ctx).await?,
        };
        sources.new_raw.deregister_table(&t.sql_name).map_err(err)?;
        sources.new_raw.register_table(t.sql_name.clone(), rows).map_err(err)?;
        if let Some(v) = current {
            folded.insert(t.sql_name.clone(), v);
        }
    }
    let mut report = MartReport {
        mart: file.name.clone(),
        version: mart.version(),
        folded: folded.clone(),
        rebuilt: rebuild,
        ..Default::default()
    };
    if !behind {
        return Ok((report, vec![]));
    }
    let unplanned = plan_views(ctx, views).await?;
    let err = |source: datafusion::error::DataFusionError| match unplanned.is_empty() {
        true => sql_error(&file_name, source),
        false => sql_error(
            &file_name,
            source.context(format!("views that could not be planned: {}", unplanned.join("; "))),
        ),
    };
    let keys = match changed {
        Some(changed) => {
            let keys = ctx
                .sql(&for_datafusion(changed))
                .await
                .map_err(err)?
                .distinct()
                .map_err(err)?;
            let planned: SchemaRef = Arc::new(keys.schema().as_arrow().clone());
            let keys = keys.collect().await.map_err(err)?;
            // Batches may differ from the plan in nullability; they decide when there are any.
            let keys_schema = keys.first().map_or(planned, |b| b.schema());
            let changed_table = MemTable::try_new(keys_schema.clone(), vec![keys.clone()]).map_err(err)?;
            ctx.deregister_table("changed").map_err(err)?;
            ctx.register_table("changed", Arc::new(changed_table)).map_err(err)?;
            report.changed = keys.iter().map(|b| b.num_rows() as u64).sum();
            keys
        }
        None => Vec::new(),
    };

    let query_started = Instant::now();
    let rows_df = ctx.sql(&for_datafusion(rows)).await.map_err(err)?;
    let out_schema = plain(rows_df.schema().as_arrow());
    let batches: Vec<RecordBatch> = rows_df
        .collect()
        .await
        .map_err(err)?
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| conform(&b, &out_schema))
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.into()))?;
    report.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    if changed.is_none() {
        report.changed = report.rows;
    }
    // A combining mart's keys are the ones its rows carry.
    let keys = if changed.is_some() { keys } else { batches.clone() };

    let scope = match replace {
        Some(column) => Some((column.clone(), column_values(&keys, column, &file.name)?)),
        None => None,
    };
    let customers = if file.name == PORTRAIT {
        column_values(&keys, "customer_id", &file.name)?
    } else {
        vec![]
    };
    let txns = folded
        .iter()
        .map(|(t, &v)| Transaction::new(folded_app_id(&file.name, t), v as i64))
        .collect();
    let props = CommitProperties::default().with_application_transactions(txns);
    let merge = Merge {
        key,
        combine,
        scope,
        rebuild,
    };
    report.query_ms = query_started.elapsed().as_millis() as u64;
    let write_started = Instant::now();
    write(mart, out_schema, batches, merge, props).await?;
    report.write_ms = write_started.elapsed().as_millis() as u64;
    report.version = mart.version();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        changed = report.changed,
        rows = report.rows,
        version = ?report.version,
        ms = report.elapsed_ms,
        query_ms = report.query_ms,
        write_ms = report.write_ms,
        "mart folded"
    );
    Ok((report, customers))
}

/// The schema a mart table is written with: every column nullable (a later fold may
/// have nothing for it), and strings as plain `Utf8`, whichever string layout the
/// query's sources happened to produce.
fn plain(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let t = match f.data_type() {
                    DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                    other => other.clone(),
                };
                Field::new(f.name(), t, true)
            })
            .collect::<Vec<_>>(),
    ))
}

fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

fn column_values(batches: &[RecordBatch], column: &str, mart: &str) -> Result<Vec<String>, FoldError> {
    let mut out = Vec::new();
    for b in batches {
        let Some(c) = b.column_by_name(column) else {
            return Err(FoldError::MissingColumn {
                mart: mart.to_string(),
                column: column.to_string(),
            });
        };
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).map_err(|e| sql_error(mart, e.into()))?;
        let strings = arrow::array::AsArray::as_string::<i32>(&c);
        out.extend(
            (0..strings.len())
                .filter(|&i| strings.is_valid(i))
                .map(|i| strings.value(i).to_string()),
        );
    }
    Ok(out)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// How a fold's rows go into the mart.
struct Merge<'a> {
    key: &'a [String],
    /// Column -> expression over `target.*` and `source.*` for rows whose key is there.
    combine: &'a [(String, String)],
    /// Within these values of a column, rows no longer produced are deleted.
    scope: Option<(String, Vec<String>)>,
    /// Replace the whole table with the rows (the mart was computed from scratch).
    rebuild: bool,
}

/// Creates the mart table, or MERGEs `batches` into it by key (matched rows updated, or
/// combined column by column; new ones inserted; within `scope`, rows no longer produced
/// deleted), or records the folded versions alone when nothing changed. Always one Delta
/// commit.
async fn write(
    mart: &mut MartTable,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    merge: Merge<'_>,
    props: CommitProperties,
) -> Result<(), FoldError> {
    let werr = |source| FoldError::Write {
        mart: mart.name.clone(),
        source: Box::new(source),
    };
    let scope = merge.scope.filter(|(_, values)| !values.is_empty());
    if mart.version().is_none() || merge.rebuild {
        let batches = if batches.is_empty() {
            vec![RecordBatch::new_empty(schema)]
        } else {
            batches
        };
        let mut write = mart
            .table
            .clone()
            .write(batches)
            .with_configuration(crate::lake::TABLE_PROPERTIES)
            .with_commit_properties(props);
        write = if merge.rebuild {
            write
                .with_save_mode(SaveMode::Overwrite)
                .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
        } else {
            write.with_save_mode(SaveMode::Append)
        };
        let table = write.await.map_err(werr)?;
        mart.table = table;
        return Ok(());
    }
    if batches.is_empty() && scope.is_none() {
        let snapshot = mart.table.snapshot().map_err(werr)?;
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        CommitBuilder::from(props)
            .build(Some(snapshot), mart.table.log_store(), operation)
            .await
            .map_err(werr)?;
        mart.table.update_incremental(None).await.map_err(werr)?;
        return Ok(());
    }
    let source_ctx = SessionContext::new();
    let source = if batches.is_empty() {
        source_ctx.read_batch(RecordBatch::new_empty(schema.clone()))
    } else {
        source_ctx.read_batches(batches)
    }
    .map_err(|e| FoldError::Write {
        mart: mart.name.clone(),
        source: Box::new(e.into()),
    })?;
    let key = merge.key;
    let on = key
        .iter()
        .map(|k| format!("target.{k} = source.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let update = |c: &String| {
        merge
            .combine
            .iter()
            .find(|(name, _)| name == c)
            .map_or_else(|| format!("source.{c}"), |(_, expr)| expr.clone())
    };
    let mut builder = mart
        .table
        .clone()
        .merge(source, on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(true)
        .with_commit_properties(props)
        .when_matched_update(|u| {
            columns
                .iter()
                .filter(|c| !key.contains(c))
                .fold(u, |u, c| u.update(c.as_str(), update(c)))
        })
        .map_err(werr)?
        .when_not_matched_insert(|i| columns.iter().fold(i, |i, c| i.set(c.as_str(), format!("source.{c}"))))
        .map_err(werr)?;
    if let Some((column, values)) = scope {
        let list = values.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ");
        builder = builder
            .when_not_matched_by_source_delete(|d| d.predicate(format!("target.{column} IN ({list})")))
            .map_err(werr)?;
    }
    let (table, _metrics) = builder.await.map_err(werr)?;
    mart.table = table;
    Ok(())
}
