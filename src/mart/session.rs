//! DataFusion sessions over the lake: every raw Delta table that exists is registered as
//! `raw.<name>` (`lake::raw::sql_name`: `raw.site.page_view` -> `raw.site_page_view`), so
//! the same names work in Spark SQL as database `raw`, and marts as `mart.<name>`. Schemas
//! come from the tables themselves.

use super::tables::{LakeReadError, MartTable};
use crate::catalog::Catalog;
use crate::lake::LakeUrl;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

pub use crate::lake::raw::sql_name;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("lake table {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: deltalake::errors::DeltaTableError,
    },
    #[error(transparent)]
    Mart(#[from] LakeReadError),
    #[error("SQL: {0}")]
    Sql(#[from] datafusion::error::DataFusionError),
}

/// A session with the project's SQL functions and nothing registered; every fold and
/// every session below starts from one.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true);
    // Plain strings throughout: mart tables are written with them, and Spark reads them.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    let ctx = SessionContext::new_with_config(config);
    super::functions::register(&ctx);
    ctx
}

/// A session with every existing raw table registered as `raw.<name>` and every existing
/// mart in `marts` as `mart.<name>`; returns it with the names found.
pub async fn lake_session(
    lake: &LakeUrl,
    catalog: &Catalog,
    marts: &[String],
) -> Result<(SessionContext, Vec<String>), SessionError> {
    let (ctx, mut names, _) = mart_session(lake, marts).await?;
    register_raw(&ctx, lake, catalog, &mut names).await?;
    Ok((ctx, names))
}

/// The Delta version of each mart a session registered.
pub type MartVersions = std::collections::BTreeMap<String, u64>;

/// A session with only the marts in `marts` that exist (the recommender reads no raw
/// table, and opening every raw table's log per batch costs more than ranking); returns
/// it with the names found and the versions registered.
pub async fn mart_session(
    lake: &LakeUrl,
    marts: &[String],
) -> Result<(SessionContext, Vec<String>, MartVersions), SessionError> {
    let ctx = session();
    let mart_schema = Arc::new(MemorySchemaProvider::new());
    let mut names = Vec::new();
    let mut versions = MartVersions::new();
    let opened = futures::future::try_join_all(marts.iter().map(|m| MartTable::open(lake, m))).await?;
    for (mart, table) in marts.iter().zip(opened) {
        if let Some(provider) = table.provider(&ctx).await? {
            mart_schema.register_table(mart.clone(), provider)?;
            names.push(format!("mart.{mart}"));
            versions.insert(mart.clone(), table.version().unwrap_or_default());
        }
    }
    if let Some(default) = ctx.catalog("datafusion") {
        default.register_schema("mart", mart_schema)?;
    }
    Ok((ctx, names, versions))
}

/// A session with each mart in `at` as it was at the version given (Delta time travel):
/// what the marts said at an earlier moment, for labels that come after it.
pub async fn mart_session_at(lake: &LakeUrl, at: &MartVersions) -> Result<SessionContext, SessionError> {
    let ctx = session();
    let mart_schema = Arc::new(MemorySchemaProvider::new());
    for (mart, &version) in at {
        let table = MartTable::open(lake, mart).await?;
        let provider = table.provider_at(&ctx, version).await?;
        mart_schema.register_table(mart.clone(), provider)?;
    }
    if let Some(default) = ctx.catalog("datafusion") {
        default.register_schema("mart", mart_schema)?;
    }
    Ok(ctx)
}

/// The version of each mart in `marts` that was current at `at_ms` (commit time); marts
/// with no commit by then are left out.
pub async fn mart_versions_at(lake: &LakeUrl, marts: &[&str], at_ms: i64) -> Result<MartVersions, SessionError> {
    let mut versions = MartVersions::new();
    let Some(at) = chrono::DateTime::from_timestamp_millis(at_ms) else {
        return Ok(versions);
    };
    for mart in marts {
        let table = MartTable::open(lake, mart).await?;
        if let Some(v) = table.version_at(at).await {
            versions.insert(mart.to_string(), v);
        }
    }
    Ok(versions)
}

async fn register_raw(
    ctx: &SessionContext,
    lake: &LakeUrl,
    catalog: &Catalog,
    names: &mut Vec<String>,
) -> Result<(), SessionError> {
    let schema = Arc::new(MemorySchemaProvider::new());
    for topic in catalog.raw_topics() {
        let path = crate::lake::raw::path(&topic.name);
        let err = |source| SessionError::Table {
            table: path.clone(),
            source,
        };
        let table = crate::lake::open_table(lake, &path).await.map_err(err)?;
        // Topics that have not landed anything yet simply have no table.
        if table.version().is_none() {
            continue;
        }
        table.update_datafusion_session(&ctx.state()).map_err(err)?;
        let provider = table.table_provider().await?;
        let name = sql_name(&topic.name);
        schema.register_table(name.clone(), provider)?;
        names.push(format!("raw.{name}"));
    }
    if let Some(default) = ctx.catalog("datafusion") {
        default.register_schema("raw", schema)?;
    }
    Ok(())
}
