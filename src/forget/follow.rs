//! `hoffrec forget --follow`: carries out the erasure requests the site sends on
//! `privacy.erasure`, one at a time. A request's offset is committed only once its audit
//! record is out, so a stage killed mid-erasure carries it out again on restart (every
//! step is idempotent) and none is skipped.

use super::{ForgetError, Request};
use crate::catalog::Role;
use crate::config::Config;
use crate::telemetry::Telemetry;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    pub rows_deleted: u64,
    /// Records that were not an erasure request (sent to no one: logged and skipped).
    pub unreadable: u64,
}

#[derive(serde::Deserialize)]
struct Wire {
    request_id: String,
    customer_id: String,
    reason: Option<String>,
    requested_at: i64,
}

pub async fn run(config: &Config, telemetry: &Telemetry, shutdown: CancellationToken) -> Result<Summary, ForgetError> {
    let catalog = super::catalog(config)?;
    let topic = catalog.require(Role::Erasure)?;
    let event = topic.value_schema.clone().unwrap_or_default();
    let consumer: StreamConsumer =
        crate::kafka::consumer_config(&config.kafka, &config.forget.group, "earliest").create()?;
    consumer.subscribe(&[topic.name.as_str()])?;
    telemetry.set_ready(true);
    let mut summary = Summary::default();
    while !shutdown.is_cancelled() {
        let m = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) if crate::kafka::error_is_fatal(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "reading erasure requests failed; librdkafka retries");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let decoded = m
            .payload()
            .ok_or_else(|| "no value".to_string())
            .and_then(|p| catalog.schemas.decode(p, &event).map_err(|e| e.to_string()))
            .and_then(|v| apache_avro::from_value::<Wire>(&v).map_err(|e| e.to_string()));
        match decoded {
            Ok(w) => {
                let request = Request {
                    request_id: w.request_id,
                    customers: vec![w.customer_id],
                    reason: w.reason,
                    requested_at_ms: w.requested_at,
                };
                // A failure here stops the stage with the offset uncommitted: the request
                // is carried out on restart, never skipped.
                let report = super::erase(config, &request, false).await?;
                summary.requests += 1;
                summary.rows_deleted += report.rows_deleted;
            }
            Err(reason) => {
                tracing::warn!(offset = m.offset(), partition = m.partition(), %reason, "not an erasure request; skipped");
                summary.unreadable += 1;
            }
        }
        consumer.commit_message(&m, CommitMode::Sync)?;
    }
    telemetry.set_ready(false);
    Ok(summary)
}
