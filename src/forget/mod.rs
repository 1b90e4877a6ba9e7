//! Erasure: a customer's right to have their data deleted (152-FZ, GDPR art. 17), carried
//! out everywhere hoffrec keeps it, and recorded so the store can prove it.
//!
//! One erasure, in this order (each step idempotent, so a run that crashed is simply run
//! again and completes):
//! 1. The customer goes into the erased registry (`crate::lake::erased`): from then on ingest drops
//!    their events (consents excepted: a new consent lifts the block) and the fold keeps
//!    rows from before the erasure out of what it folds, also from files not yet vacuumed.
//! 2. A Delta DELETE of their rows in every raw table and mart that has a `customer_id`
//!    column (`tables`), looked at again once an open ingest batch has had time to land.
//!    Models are refit from the marts, so the next refit trains without them.
//! 3. A tombstone for their list on `recs.customer` and for any cursor on `connect.offsets`
//!    that names them; dead letters naming them are counted: only `dlq.raw`'s retention
//!    removes records from a delete-policy topic.
//! 4. With `vacuum`, the tables are vacuumed at once (`maintenance.vacuum_retention_hours`);
//!    otherwise the maintenance pass does it once the replaced files are that old.
//! 5. One record per customer on `privacy.audit`: the tables and Delta versions, the
//!    topics, when: never the erased data, and the customer only as a hash.

pub mod blocked;
pub mod tables;
pub mod topics;

use crate::catalog::{Catalog, CleanupPolicy, Role};
use crate::config::Config;
use crate::lake::LakeUrl;
use crate::lake::erased as registry;
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
pub use tables::TableErased;
pub use topics::TopicErased;

#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("mart files: {0}")]
    Files(#[from] crate::mart::files::FilesError),
    #[error("lake: {0}")]
    LakeUrl(#[from] crate::lake::LakeError),
    #[error("lake table {table}: {source}")]
    Lake {
        table: String,
        #[source]
        source: Box<deltalake::errors::DeltaTableError>,
    },
    #[error("lake table {table}: {source}")]
    Sql {
        table: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading a topic: {0}")]
    Read(#[from] crate::connect::offsets::OffsetsError),
    #[error("avro: {0}")]
    Codec(#[from] crate::codec::CodecError),
    #[error("erasure request: {0}")]
    Invalid(String),
}

/// Who is to be erased, and why.
#[derive(Debug, Clone)]
pub struct Request {
    pub request_id: String,
    pub customers: Vec<String>,
    pub reason: Option<String>,
    pub requested_at_ms: i64,
}

impl Request {
    pub fn new(customers: Vec<String>, reason: Option<String>) -> Result<Self, ForgetError> {
        if customers.is_empty() || customers.iter().any(|c| c.trim().is_empty()) {
            return Err(ForgetError::Invalid("name at least one customer, none empty".into()));
        }
        Ok(Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            customers,
            reason,
            requested_at_ms: chrono::Utc::now().timestamp_millis(),
        })
    }
}

/// What one erasure did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub request_id: String,
    pub customers: usize,
    /// Every lake table, whether it held the customers or not.
    pub tables: Vec<TableErased>,
    pub topics: Vec<TopicErased>,
    pub rows_deleted: u64,
    pub files_rewritten: u64,
    pub files_vacuumed: u64,
    pub completed_at_ms: i64,
    /// From then on the maintenance pass vacuums the replaced files.
    pub vacuum_due_at_ms: i64,
    pub elapsed_ms: u64,
}

/// Every lake table that may hold a customer: the raw tables, then the marts.
pub fn lake_tables(config: &Config, catalog: &Catalog) -> Result<Vec<String>, ForgetError> {
    let mut paths: Vec<String> = catalog.raw_topics().map(|t| crate::lake::raw::path(&t.name)).collect();
    let marts = crate::mart::files::load(&config.mart.sql_dir)?;
    paths.extend(
        marts
            .iter()
            .filter(|f| f.is_mart())
            .map(|f| crate::lake::mart::path(&f.name)),
    );
    Ok(paths)
}

fn catalog(config: &Config) -> Result<Catalog, ForgetError> {
    Ok(Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir)?)
}

/// Carries out one erasure request (see the module's steps).
pub async fn erase(config: &Config, request: &Request, vacuum_now: bool) -> Result<Report, ForgetError> {
    let started = Instant::now();
    let catalog = catalog(config)?;
    let lake = LakeUrl::parse(&config.lake.url)?;
    let customers = &request.customers;
    let span = tracing::info_span!("erase", request = %request.request_id, customers = customers.len());
    let _enter = span.enter();
    registry::record(&lake, customers, &request.request_id, request.requested_at_ms)
        .await
        .map_err(|e| ForgetError::Lake {
            table: registry::PATH.into(),
            source: Box::new(e),
        })?;
    let paths = lake_tables(config, &catalog)?;
    // Two tables at a time: each DELETE scans its table, and the cores are few.
    let mut tables: Vec<TableErased> = futures::stream::iter(paths.iter().map(|p| tables::delete(&lake, p, customers)))
        .buffered(2)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    // A batch ingest had open when the registry was written may still land their rows.
    let settle = Duration::from_millis((config.ingest.flush_interval_ms * 2).clamp(500, 10_000));
    tokio::time::sleep(settle).await;
    for t in tables.iter_mut() {
        if tables::remaining(&lake, &t.table, customers).await? > 0 {
            let again = tables::delete(&lake, &t.table, customers).await?;
            t.version = again.version.or(t.version);
            t.rows_deleted += again.rows_deleted;
            t.files_rewritten += again.files_rewritten;
        }
    }
    let topics = erase_topics(config, &catalog, customers).await?;
    let mut files_vacuumed = 0;
    if vacuum_now {
        let retention = config.mart.maintenance.vacuum_retention_hours;
        for t in tables.iter().filter(|t| t.version.is_some()) {
            files_vacuumed += tables::vacuum(&lake, &t.table, retention).await?;
        }
    }
    let completed_at_ms = chrono::Utc::now().timestamp_millis();
    let retention_ms = config.mart.maintenance.vacuum_retention_hours.saturating_mul(3_600_000);
    let report = Report {
        request_id: request.request_id.clone(),
        customers: customers.len(),
        rows_deleted: tables.iter().map(|t| t.rows_deleted).sum(),
        files_rewritten: tables.iter().map(|t| t.files_rewritten).sum(),
        tables,
        topics,
        files_vacuumed,
        completed_at_ms,
        vacuum_due_at_ms: completed_at_ms.saturating_add(i64::try_from(retention_ms).unwrap_or(i64::MAX)),
        elapsed_ms: 0,
    };
    audit(config, &catalog, request, &report).await?;
    let report = Report {
        elapsed_ms: started.elapsed().as_millis() as u64,
        ..report
    };
    tracing::info!(
        rows = report.rows_deleted,
        files = report.files_rewritten,
        ms = report.elapsed_ms,
        "customers erased"
    );
    Ok(report)
}

fn producer(config: &Config) -> Result<FutureProducer, ForgetError> {
    Ok(crate::kafka::client_config(&config.kafka)
        .set("enable.idempotence", "true")
        .create()?)
}

async fn erase_topics(
    config: &Config,
    catalog: &Catalog,
    customers: &[String],
) -> Result<Vec<TopicErased>, ForgetError> {
    let producer = producer(config)?;
    let recs = catalog.require(Role::Recommendations)?;
    let keys: BTreeSet<String> = customers.iter().cloned().collect();
    let mut out = vec![TopicErased {
        topic: recs.name.clone(),
        tombstones: topics::tombstone(&producer, &recs.name, &keys).await?,
        left_to_retention: 0,
    }];
    // Compacted topics where a customer may sit under some key: connector cursors, dead
    // letters (each under its own key), and compacted raw topics such as consents.
    let scanned = catalog.topics.iter().filter(|t| {
        t.cleanup_policy != CleanupPolicy::Delete
            && (matches!(t.role, Role::ConnectorOffsets | Role::DeadLetter)
                || (t.role == Role::Raw && t.key.iter().any(|k| k == "customer_id")))
    });
    for topic in scanned {
        let (named, unkeyed) = topics::scan(&config.kafka, topic, customers)?;
        out.push(TopicErased {
            topic: topic.name.clone(),
            tombstones: topics::tombstone(&producer, &topic.name, &named).await?,
            left_to_retention: unkeyed,
        });
    }
    // A delete-policy dead-letter topic (a catalog from before letters had keys).
    let dlq = catalog.require(Role::DeadLetter)?;
    if dlq.cleanup_policy == CleanupPolicy::Delete {
        out.push(TopicErased {
            topic: dlq.name.clone(),
            tombstones: 0,
            left_to_retention: topics::count_named(&config.kafka, dlq, customers)?,
        });
    }
    Ok(out)
}

/// One audit record per customer, keyed by the customer's hash.
async fn audit(config: &Config, catalog: &Catalog, request: &Request, report: &Report) -> Result<(), ForgetError> {
    let topic = catalog.require(Role::Audit)?;
    let event = topic.value_schema.as_deref().unwrap_or("erasure_audit");
    let version = catalog
        .schemas
        .current(event)
        .ok_or_else(|| ForgetError::Invalid(format!("no schema {event}")))?;
    let producer = producer(config)?;
    for customer in &request.customers {
        let hash = registry::hash(customer);
        let json = serde_json::json!({
            "request_id": request.request_id,
            "customer_hash": hash,
            "reason": request.reason,
            "requested_at": request.requested_at_ms,
            "completed_at": report.completed_at_ms,
            "tables": report.tables.iter().map(|t| serde_json::json!({
                "table": t.table, "version": t.version, "rows_deleted": t.rows_deleted,
                "files_rewritten": t.files_rewritten,
            })).collect::<Vec<_>>(),
            "topics": report.topics.iter().map(|t| serde_json::json!({
                "topic": t.topic, "tombstones": t.tombstones, "left_to_retention": t.left_to_retention,
            })).collect::<Vec<_>>(),
            "vacuum_due_at": report.vacuum_due_at_ms,
        });
        let value = crate::codec::json::to_avro(&json, &version.schema).map_err(ForgetError::Invalid)?;
        let payload = crate::codec::encode_with(version, value)?;
        let record = FutureRecord::to(&topic.name).key(hash.as_str()).payload(&payload);
        crate::kafka::send_and_wait(&producer, record, Duration::from_secs(30)).await?;
    }
    Ok(())
}

mod status;
pub use status::{Status, TableStatus, status};

pub mod follow;
pub use follow::run;
