//! The lake side of an erasure: a Delta DELETE of the customers' rows in every raw table
//! and mart that has a `customer_id` column, then (when asked) a vacuum so that the files
//! the DELETE replaced leave storage too.

use super::ForgetError;
use crate::lake::LakeUrl;
use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use std::time::Duration;

/// What one table's DELETE did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TableErased {
    /// Lake path, e.g. `raw/site.page_view`.
    pub table: String,
    /// The DELETE's commit; None when the table held no row of these customers.
    pub version: Option<u64>,
    pub rows_deleted: u64,
    /// Data files the DELETE replaced (still on storage until vacuum).
    pub files_rewritten: u64,
}

fn lake_error(table: &str) -> impl Fn(deltalake::errors::DeltaTableError) -> ForgetError + '_ {
    move |source| ForgetError::Lake {
        table: table.to_string(),
        source: Box::new(source),
    }
}

fn sql_error(table: &str) -> impl Fn(datafusion::error::DataFusionError) -> ForgetError + '_ {
    move |source| ForgetError::Sql {
        table: table.to_string(),
        source: Box::new(source),
    }
}

fn matching(customers: &[String]) -> datafusion::prelude::Expr {
    col("customer_id").in_list(customers.iter().map(|c| lit(c.as_str())).collect(), false)
}

/// Whether the table exists and has a customer column.
fn holds_customers(table: &DeltaTable) -> bool {
    table.version().is_some()
        && table
            .snapshot()
            .is_ok_and(|s| s.snapshot().arrow_schema().field_with_name("customer_id").is_ok())
}

/// Deletes the customers' rows from the table at `path`. A commit that loses to a
/// concurrent writer (ingest landing, a fold) is tried again on the newer version; the
/// DELETE is idempotent, so a rerun after a crash finds nothing left and commits nothing.
pub async fn delete(lake: &LakeUrl, path: &str, customers: &[String]) -> Result<TableErased, ForgetError> {
    let mut erased = TableErased {
        table: path.to_string(),
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let table = crate::lake::open_table(lake, path).await.map_err(lake_error(path))?;
        if !holds_customers(&table) {
            return Ok(erased);
        }
        if count(&table, path, customers).await? == 0 {
            // Erased already, by a run that crashed after the commit: its version is what
            // the audit names and what the vacuum must clean after.
            erased.version = erased.version.or(earlier_delete(&table, customers).await);
            return Ok(erased);
        }
        match table.delete().with_predicate(matching(customers)).await {
            Ok((table, metrics)) => {
                erased.version = table.version();
                erased.rows_deleted += metrics.num_deleted_rows.unwrap_or_default() as u64;
                erased.files_rewritten += metrics.num_removed_files as u64;
                return Ok(erased);
            }
            Err(e) if attempt < 5 => {
                tracing::warn!(table = path, attempt, error = %e, "erasure DELETE lost to a concurrent commit; trying again");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(lake_error(path)(e)),
        }
    }
}

/// The newest of the table's last 100 commits that was a DELETE naming every one of the
/// customers.
async fn earlier_delete(table: &DeltaTable, customers: &[String]) -> Option<u64> {
    use futures::StreamExt;
    let newest = table.version()?;
    let history: Vec<_> = table.history(Some(100)).collect().await;
    history.into_iter().enumerate().find_map(|(back, info)| {
        let info = info.ok()?;
        let predicate = info.operation_parameters.as_ref()?.get("predicate")?.to_string();
        (info.operation.as_deref() == Some("DELETE") && customers.iter().all(|c| predicate.contains(c.as_str())))
            .then(|| newest.checked_sub(back as u64))
            .flatten()
    })
}

/// How many rows of the customers the table holds at its newest version.
pub async fn remaining(lake: &LakeUrl, path: &str, customers: &[String]) -> Result<u64, ForgetError> {
    let table = crate::lake::open_table(lake, path).await.map_err(lake_error(path))?;
    if !holds_customers(&table) {
        return Ok(0);
    }
    count(&table, path, customers).await
}

async fn count(table: &DeltaTable, path: &str, customers: &[String]) -> Result<u64, ForgetError> {
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(lake_error(path))?;
    let provider = table.table_provider().await.map_err(sql_error(path))?;
    let batches = ctx
        .read_table(provider)
        .and_then(|df| df.filter(matching(customers)))
        .and_then(|df| df.aggregate(vec![], vec![datafusion::functions_aggregate::count::count_all()]))
        .map_err(sql_error(path))?
        .collect()
        .await
        .map_err(sql_error(path))?;
    Ok(batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0) as u64))
}

/// Vacuums the table: files no commit references, removed more than `retention_hours`
/// ago, leave storage. Returns how many went.
pub async fn vacuum(lake: &LakeUrl, path: &str, retention_hours: u64) -> Result<u64, ForgetError> {
    let table = crate::lake::open_table(lake, path).await.map_err(lake_error(path))?;
    if table.version().is_none() {
        return Ok(0);
    }
    let retention = chrono::Duration::hours(i64::try_from(retention_hours).unwrap_or(i64::MAX / 3600));
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await
        .map_err(lake_error(path))?;
    Ok(metrics.files_deleted.len() as u64)
}

/// Of the files the commit at `version` removed, those still on storage (the vacuum has
/// yet to delete them).
pub async fn left_on_storage(lake: &LakeUrl, path: &str, version: u64) -> Result<u64, ForgetError> {
    let table = crate::lake::open_table(lake, path).await.map_err(lake_error(path))?;
    let Some(entry) = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(lake_error(path))?
    else {
        return Ok(0);
    };
    let store = table.log_store().object_store(None);
    let mut left = 0;
    for line in entry.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(file) = action.pointer("/remove/path").and_then(|p| p.as_str()) {
            let file = Path::parse(file).unwrap_or_else(|_| Path::from(file));
            if store.head(&file).await.is_ok() {
                left += 1;
            }
        }
    }
    Ok(left)
}
