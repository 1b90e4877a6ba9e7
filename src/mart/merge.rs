//! Writing a fold's rows into a mart table: created on the first fold, replaced on a
//! rebuild, otherwise MERGEd by key; each in one Delta commit that also records the input
//! versions folded in.

use super::error::FoldError;
use super::tables::MartTable;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::errors::DeltaTableError;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The schema a mart table is written with: every column nullable (a later fold may
/// have nothing for it), and strings as plain `Utf8`, whichever string layout the
/// query's sources happened to produce.
pub(super) fn plain(schema: &Schema) -> SchemaRef {
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

pub(super) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, arrow::error::ArrowError> {
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

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// How a fold's rows go into the mart.
pub(super) struct Merge<'a> {
    pub key: &'a [String],
    /// Column -> expression over `target.*` and `source.*` for rows whose key is there.
    pub combine: &'a [(String, String)],
    /// Within these values of a column, rows no longer produced are deleted.
    pub scope: Option<(String, Vec<String>)>,
    /// Replace the whole table with the rows (the mart was computed from scratch).
    pub rebuild: bool,
}

/// The commit properties that record, as `txn` actions in the same commit as the rows,
/// the version of each input (`lake::mart::folded_app_id`) the mart has now folded in.
pub(super) fn folded_versions(mart: &str, folded: &BTreeMap<String, u64>) -> CommitProperties {
    let txns = folded
        .iter()
        .map(|(input, &v)| Transaction::new(crate::lake::mart::folded_app_id(mart, input), v as i64))
        .collect();
    // The checkpoint a commit may be due is written after the fold has announced its
    // customers (`fold::checkpoint`), not inside the chain a fresh list waits for.
    CommitProperties::default()
        .with_application_transactions(txns)
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}

/// Creates the mart table, or MERGEs `batches` into it by key (matched rows updated, or
/// combined column by column; new ones inserted; within `scope`, rows no longer produced
/// deleted), or records the folded versions alone when nothing changed. Always one Delta
/// commit.
pub(super) async fn write(
    mart: &mut MartTable,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    merge: Merge<'_>,
    props: CommitProperties,
) -> Result<(), FoldError> {
    let scope = merge.scope.as_ref().filter(|(_, values)| !values.is_empty());
    if mart.version().is_none() || merge.rebuild {
        create_or_replace(mart, schema, batches, merge.rebuild, props).await
    } else if batches.is_empty() && scope.is_none() {
        record_versions(mart, props).await
    } else {
        merge_rows(mart, schema, batches, &merge, scope, props).await
    }
}

fn write_error(mart: &str) -> impl Fn(DeltaTableError) -> FoldError + '_ {
    move |source| FoldError::Write {
        mart: mart.to_string(),
        source: Box::new(source),
    }
}

async fn create_or_replace(
    mart: &mut MartTable,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rebuild: bool,
    props: CommitProperties,
) -> Result<(), FoldError> {
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
    write = if rebuild {
        write
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
    } else {
        write.with_save_mode(SaveMode::Append)
    };
    let table = write.await.map_err(write_error(&mart.name))?;
    mart.table = table;
    Ok(())
}

/// A commit of the folded versions alone: nothing in the new rows touched the mart.
async fn record_versions(mart: &mut MartTable, props: CommitProperties) -> Result<(), FoldError> {
    let werr = write_error(&mart.name);
    let snapshot = mart.table.snapshot().map_err(&werr)?;
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        predicate: None,
    };
    CommitBuilder::from(props)
        .build(Some(snapshot), mart.table.log_store(), operation)
        .await
        .map_err(&werr)?;
    mart.table.update_incremental(None).await.map_err(&werr)?;
    Ok(())
}

async fn merge_rows(
    mart: &mut MartTable,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    merge: &Merge<'_>,
    scope: Option<&(String, Vec<String>)>,
    props: CommitProperties,
) -> Result<(), FoldError> {
    let werr = write_error(&mart.name);
    let key = merge.key;
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    // Only what the MERGE will run: combine lines for columns the rows carry.
    let combine: Vec<&(String, String)> = merge
        .combine
        .iter()
        .filter(|(c, _)| columns.contains(c) && !key.contains(c))
        .collect();
    let target = mart.table.snapshot().map_err(&werr)?.snapshot().arrow_schema();
    check_combine(&mart.name, &target, &schema, &combine).await?;
    let source_ctx = SessionContext::new();
    let source = if batches.is_empty() {
        source_ctx.read_batch(RecordBatch::new_empty(schema.clone()))
    } else {
        source_ctx.read_batches(batches)
    }
    .map_err(|e| werr(e.into()))?;
    let on = key
        .iter()
        .map(|k| format!("target.{k} = source.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let update = |c: &String| {
        combine
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
        .map_err(&werr)?
        .when_not_matched_insert(|i| columns.iter().fold(i, |i, c| i.set(c.as_str(), format!("source.{c}"))))
        .map_err(&werr)?;
    if let Some((column, values)) = scope {
        let list = values.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ");
        builder = builder
            .when_not_matched_by_source_delete(|d| d.predicate(format!("target.{column} IN ({list})")))
            .map_err(&werr)?;
    }
    let (table, _metrics) = builder.await.map_err(&werr)?;
    mart.table = table;
    Ok(())
}

/// Plans each `combine` expression as the MERGE will, over empty tables shaped like the
/// stored rows (`target`, with the columns the MERGE adds) and the new ones (`source`).
/// delta-rs reports a MERGE's planning errors as text, which cannot be told apart from a
/// lake that failed mid-write; planned here, over nothing read from storage, an error can
/// only be the expression's, and it stops the stage instead of being retried forever.
pub(super) async fn check_combine(
    mart: &str,
    target: &Schema,
    source: &SchemaRef,
    combine: &[&(String, String)],
) -> Result<(), FoldError> {
    let mut widened: Vec<Field> = target.fields().iter().map(|f| f.as_ref().clone()).collect();
    for f in source.fields() {
        if target.field_with_name(f.name()).is_err() {
            widened.push(f.as_ref().clone().with_nullable(true));
        }
    }
    let target = Arc::new(Schema::new(widened));
    for (column, expr) in combine {
        plan_combine(target.clone(), source.clone(), expr)
            .await
            .map_err(|source| FoldError::Combine {
                mart: mart.to_string(),
                column: column.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

async fn plan_combine(target: SchemaRef, source: SchemaRef, expr: &str) -> datafusion::error::Result<()> {
    // As delta-rs parses a MERGE's expressions: names as written, not lower-cased.
    let config = SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_table("target", Arc::new(MemTable::try_new(target, vec![vec![]])?))?;
    ctx.register_table("source", Arc::new(MemTable::try_new(source, vec![vec![]])?))?;
    let joined = ctx.sql("SELECT * FROM target CROSS JOIN source").await?;
    joined.select_exprs(&[expr])?.collect().await?;
    Ok(())
}
