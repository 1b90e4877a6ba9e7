//! What every pass of an HTTP source works with and reports, whether it reads one listing
//! (`listing`) or asks per customer (`social`): the opened source with its transactional
//! producer, what the sources share, the pass's summary, and producing or dead-lettering
//! the items it got.

use super::error::ConnectError;
use super::fetch::Fetcher;
use super::offsets;
use super::produce;
use crate::catalog::Topic;
use crate::catalog::source::HttpSpec;
use crate::codec::{SchemaSet, SchemaVersion};
use crate::config::KafkaConfig;
use crate::telemetry::Telemetry;
use rdkafka::producer::{FutureProducer, Producer};
use reqwest::Url;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// One pass of one source.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PassSummary {
    pub source: String,
    /// Per-customer sources: customers asked for, and those skipped (access denied).
    pub customers: u64,
    pub skipped: u64,
    pub pages: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub requests: u64,
    pub retries: u64,
    /// The cursor the next pass starts from.
    pub cursor: Option<String>,
    /// Why the pass ended early (auth, quota, access), if it did.
    pub stopped: Option<String>,
    /// Items dated beyond now + `max_future_ms`: produced, but left out of the cursor.
    pub future_items: u64,
    /// Why the pass failed (what it had not committed yet stays invisible) or the source
    /// could not start.
    pub failed: Option<String>,
    /// Commits made in the middle of the pass (`commit_interval_ms`).
    pub commits: u64,
}

/// What ends asking about one customer early.
pub(super) enum Stop {
    /// Skip this customer (access denied, or a response dead-lettered).
    Customer,
    /// End the pass (auth, quota), with the reason the summary reports.
    Pass(String),
}

/// How one step of a pass ended.
pub(super) enum Outcome<T> {
    /// Everything asked for: go on with it.
    Done(T),
    /// The API said stop (for this customer or the whole pass): the pass still commits.
    Stopped(Stop),
    /// The pass cannot go on: its transaction is aborted and the next starts from the same cursor.
    Failed(ConnectError),
}

impl<T> From<ConnectError> for Outcome<T> {
    fn from(e: ConnectError) -> Self {
        Self::Failed(e)
    }
}

/// How long a transaction call may block.
pub(super) const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// A declared source, ready to poll.
pub(super) struct Source {
    pub topic: Topic,
    pub spec: HttpSpec,
    pub version: Arc<SchemaVersion>,
    pub url: Url,
    pub fetcher: Fetcher,
    /// Transactional (`hoffrec-connect-<topic>`): a pass's records, dead letters and new
    /// cursor become visible together, and a restarted connector fences a zombie one.
    pub producer: FutureProducer,
}

impl Source {
    /// Stores the source's cursor in its open transaction: visible with the records.
    pub(super) async fn save_cursor(&self, shared: &Shared<'_>, value: &str) -> Result<(), ConnectError> {
        offsets::save(
            &self.producer,
            &shared.offsets,
            shared.schemas,
            &self.topic.name,
            "default",
            value,
        )
        .await?;
        Ok(())
    }

    /// Makes what the open transaction holds visible and opens the next one.
    pub(super) fn checkpoint(&self) -> Result<(), ConnectError> {
        tokio::task::block_in_place(|| {
            self.producer.commit_transaction(TXN_TIMEOUT)?;
            self.producer.begin_transaction()
        })?;
        Ok(())
    }
}

/// What every source of one `connect` run shares.
pub(super) struct Shared<'a> {
    pub dlq: String,
    pub offsets: Topic,
    /// The consent events social sources are gated on.
    pub consent: Option<Topic>,
    pub kafka: KafkaConfig,
    pub schemas: &'a SchemaSet,
    pub telemetry: Telemetry,
}

/// Maps and produces one page's items (dead-lettering those that do not map); returns how
/// many records the broker took.
pub(super) async fn produce_items(
    shared: &Shared<'_>,
    source: &Source,
    items: &[serde_json::Value],
    dead_letters: &mut u64,
) -> Result<u64, ConnectError> {
    let mut sends = Vec::with_capacity(items.len());
    for item in items {
        match produce::prepare(&source.topic, &source.version, item) {
            Ok(record) => sends.push(record),
            Err(reason) => {
                let bytes = serde_json::to_vec(item).unwrap_or_default();
                dead_letter(shared, source, &bytes, "invalid_item", &reason).await?;
                *dead_letters += 1;
            }
        }
    }
    produce::send_all(&source.producer, &source.topic.name, &sends)
        .await
        .map_err(|error| ConnectError::Delivery {
            topic: source.topic.name.clone(),
            error,
        })?;
    shared
        .telemetry
        .connect
        .records
        .get_or_create(&vec![("source", source.topic.name.clone())])
        .inc_by(sends.len() as u64);
    Ok(sends.len() as u64)
}

/// Keeps `payload` on the dead-letter topic in the pass's transaction, and counts it.
pub(super) async fn dead_letter(
    shared: &Shared<'_>,
    source: &Source,
    payload: &[u8],
    class: &str,
    reason: &str,
) -> Result<(), ConnectError> {
    let origin = format!("connect:{}", source.topic.name);
    produce::dead_letter(&source.producer, &shared.dlq, &origin, payload, class, reason).await?;
    shared
        .telemetry
        .connect
        .dead_letters
        .get_or_create(&vec![
            ("source", source.topic.name.clone()),
            ("class", class.to_string()),
        ])
        .inc();
    Ok(())
}
