//! `hoffrec forget --status ID`: where an erasure stands for one customer, per table: the
//! rows of theirs each holds now, the version that erased them, and how many of the files
//! that DELETE replaced are still on storage (until the vacuum).

use super::{ForgetError, tables};
use crate::catalog::Role;
use crate::config::Config;
use crate::lake::LakeUrl;
use crate::lake::erased as registry;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableStatus {
    pub table: String,
    /// The customer's rows at the table's newest version.
    pub rows: u64,
    /// The DELETE that erased them (from the newest audit record).
    pub erased_at_version: Option<u64>,
    /// Files that DELETE replaced which the vacuum has yet to remove.
    pub files_left_on_storage: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub customer_hash: String,
    /// In the erased registry since (epoch ms): their new events are dropped at ingest.
    pub erased_at_ms: Option<i64>,
    /// The newest audit record's request, when there is one.
    pub request_id: Option<String>,
    pub completed_at_ms: Option<i64>,
    pub vacuum_due_at_ms: Option<i64>,
    /// Erased, and no row nor replaced file left anywhere.
    pub complete: bool,
    pub tables: Vec<TableStatus>,
}

#[derive(Debug, serde::Deserialize)]
struct AuditRecord {
    request_id: String,
    customer_hash: String,
    completed_at: i64,
    vacuum_due_at: i64,
    tables: Vec<AuditTable>,
}

#[derive(Debug, serde::Deserialize)]
struct AuditTable {
    table: String,
    version: Option<i64>,
}

pub async fn status(config: &Config, customer: &str) -> Result<Status, ForgetError> {
    let catalog = super::catalog(config)?;
    let lake = LakeUrl::parse(&config.lake.url)?;
    let hash = registry::hash(customer);
    let (erased, _) = registry::load(&lake).await.map_err(|e| ForgetError::Lake {
        table: registry::PATH.into(),
        source: Box::new(e),
    })?;
    let topic = catalog.require(Role::Audit)?;
    let event = topic.value_schema.clone().unwrap_or_default();
    let mut newest: Option<AuditRecord> = None;
    let mut bad = None;
    tokio::task::block_in_place(|| {
        crate::connect::offsets::read_topic(&config.kafka, topic, |payload| {
            let value = catalog.schemas.decode(payload, &event)?;
            match apache_avro::from_value::<AuditRecord>(&value) {
                Ok(r) if r.customer_hash == hash => newest = Some(r),
                Ok(_) => {}
                Err(e) => bad = Some(e.to_string()),
            }
            Ok(())
        })
    })?;
    if let (Some(e), None) = (bad, &newest) {
        return Err(ForgetError::Invalid(format!(
            "{}: unreadable audit record: {e}",
            topic.name
        )));
    }
    let customers = [customer.to_string()];
    let mut out = Status {
        customer_hash: hash,
        erased_at_ms: erased.get(customer).copied(),
        request_id: newest.as_ref().map(|r| r.request_id.clone()),
        completed_at_ms: newest.as_ref().map(|r| r.completed_at),
        vacuum_due_at_ms: newest.as_ref().map(|r| r.vacuum_due_at),
        ..Default::default()
    };
    for path in super::lake_tables(config, &catalog)? {
        let version = newest
            .as_ref()
            .and_then(|r| r.tables.iter().find(|t| t.table == path))
            .and_then(|t| t.version)
            .map(|v| v as u64);
        let files_left_on_storage = match version {
            Some(v) => tables::left_on_storage(&lake, &path, v).await?,
            None => 0,
        };
        out.tables.push(TableStatus {
            rows: tables::remaining(&lake, &path, &customers).await?,
            table: path,
            erased_at_version: version,
            files_left_on_storage,
        });
    }
    out.complete = out.erased_at_ms.is_some()
        && out.request_id.is_some()
        && out.tables.iter().all(|t| t.rows == 0 && t.files_left_on_storage == 0);
    Ok(out)
}
