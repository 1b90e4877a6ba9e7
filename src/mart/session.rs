//! A DataFusion session over the lake: every raw Delta table that exists is registered as
//! `raw.<name>`, where `<name>` is the topic without its `raw.` prefix and with `.` and
//! `-` turned into `_` (`raw.site.page_view` -> `raw.site_page_view`), so the same names
//! work in Spark SQL as database `raw`. Schemas come from the tables themselves.

use crate::catalog::Catalog;
use crate::lake::LakeUrl;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("lake table {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: deltalake::errors::DeltaTableError,
    },
    #[error("{0}")]
    Mart(String),
    #[error("SQL: {0}")]
    Sql(#[from] datafusion::error::DataFusionError),
}

/// The SQL name of a raw topic's table inside the `raw` schema.
pub fn sql_name(topic: &str) -> String {
    topic.strip_prefix("raw.").unwrap_or(topic).replace(['.', '-'], "_")
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
    let ctx = super::fold::session();
    let mart_schema = Arc::new(MemorySchemaProvider::new());
    let mut names = Vec::new();
    let mut versions = MartVersions::new();
    for mart in marts {
        let table = super::tables::MartTable::open(lake, mart)
            .await
            .map_err(|e| SessionError::Mart(e.to_string()))?;
        if let Some(provider) = table
            .provider(&ctx)
            .await
            .map_err(|e| SessionError::Mart(e.to_string()))?
        {
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
    let ctx = super::fold::session();
    let mart_schema = Arc::new(MemorySchemaProvider::new());
    for (mart, &version) in at {
        let table = super::tables::MartTable::open(lake, mart)
            .await
            .map_err(|e| SessionError::Mart(e.to_string()))?;
        let provider = table
            .provider_at(&ctx, version)
            .await
            .map_err(|e| SessionError::Mart(e.to_string()))?;
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
        let table = super::tables::MartTable::open(lake, mart)
            .await
            .map_err(|e| SessionError::Mart(e.to_string()))?;
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
        let path = crate::ingest::table_name(&topic.name);
        let err = |source| SessionError::Table {
            table: path.clone(),
            source,
        };
        let url = lake.table_url(&path).map_err(err)?;
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .map_err(err)?
            .build()
            .map_err(err)?;
        // Topics that have not landed anything yet simply have no table.
        if !table.verify_deltatable_existence().await.map_err(err)? {
            continue;
        }
        table.load().await.map_err(err)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn names_work_in_sql_without_quotes() {
        assert_eq!(super::sql_name("raw.site.page_view"), "site_page_view");
        assert_eq!(super::sql_name("raw.it-1a2b.product_view"), "it_1a2b_product_view");
    }
}
