//! `hoffrec connect`: every `http_poll` source declared in `topics/` polled into its raw
//! topic. A pass pages through the API from the stored cursor, maps each item onto the
//! topic's Avro schema, produces it, and stores the new cursor once the broker has every
//! record. Items that do not map and responses that make no sense go to `dlq.raw`.

use super::fetch::{FetchError, Fetcher};
use super::mapping::{lookup, text};
use super::offsets;
use super::pager::{PageError, Pager};
use crate::catalog::source::HttpSpec;
use crate::catalog::{Catalog, Role, Topic};
use crate::codec::SchemaVersion;
use crate::config::KafkaConfig;
use crate::telemetry::Telemetry;
use rdkafka::producer::{FutureProducer, Producer};
use reqwest::Url;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetsError),
    #[error("{source_topic}: {error}")]
    Fetch { source_topic: String, error: FetchError },
    #[error("{0}: the broker did not take the pass's records; the cursor stays where it was")]
    Delivery(String),
    /// `--once`: these sources failed or could not start; the others' passes are done.
    #[error("passes failed: {0}")]
    Failed(String),
}

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

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub passes: Vec<PassSummary>,
}

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
    async fn save_cursor(&self, shared: &Shared<'_>, value: &str) -> Result<(), ConnectError> {
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

const TXN_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct Shared<'a> {
    pub dlq: String,
    pub offsets: Topic,
    /// The consent events social sources are gated on.
    pub consent: Option<Topic>,
    pub kafka: KafkaConfig,
    pub schemas: &'a crate::codec::SchemaSet,
    pub telemetry: Telemetry,
}

/// Polls `only` (or every declared HTTP source) until `shutdown`, or one pass each with `once`.
pub async fn run(
    catalog: &Catalog,
    kafka: &KafkaConfig,
    only: &[String],
    once: bool,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> Result<Summary, ConnectError> {
    let sources = declared(catalog, only)?;
    let role = |r: Role| {
        catalog
            .topic_for(r)
            .cloned()
            .ok_or_else(|| ConnectError::Config(format!("the catalog has no {} topic", r.as_str())))
    };
    let offsets_topic = role(Role::ConnectorOffsets)?;
    let shared = Shared {
        dlq: role(Role::DeadLetter)?.name,
        schemas: &catalog.schemas,
        offsets: offsets_topic,
        consent: catalog
            .raw_topics()
            .find(|t| t.value_schema.as_deref() == Some("consent"))
            .cloned(),
        kafka: kafka.clone(),
        telemetry: telemetry.clone(),
    };
    // A blocking read once at start; the runtime has other threads meanwhile.
    let stored = tokio::task::block_in_place(|| offsets::load(kafka, &shared.offsets, shared.schemas))?;
    info!(sources = sources.len(), cursors = stored.len(), "connect: polling");
    telemetry.set_ready(true);
    let loops = sources.iter().map(|topic| {
        let cursor = stored.get(&(topic.name.clone(), "default".into())).cloned();
        let span = info_span!("source", topic = %topic.name);
        source_loop(&shared, topic, cursor, once, shutdown.clone()).instrument(span)
    });
    let mut summary = Summary::default();
    for passes in futures::future::join_all(loops).await {
        summary.passes.extend(passes);
    }
    let failed: Vec<String> = summary
        .passes
        .iter()
        .filter_map(|p| p.failed.as_ref().map(|f| format!("{}: {f}", p.source)))
        .collect();
    if once && !failed.is_empty() {
        return Err(ConnectError::Failed(failed.join("; ")));
    }
    Ok(summary)
}

/// One source from setup to shutdown. A source that cannot start (a token not set, a bad
/// URL) is reported and tried again every `interval_ms`; the other sources go on.
async fn source_loop(
    shared: &Shared<'_>,
    topic: &Topic,
    mut cursor: Option<String>,
    once: bool,
    shutdown: CancellationToken,
) -> Vec<PassSummary> {
    let mut passes = Vec::new();
    loop {
        match open(topic, shared) {
            Ok(source) => match poll_loop(shared, &source, &mut cursor, once, &shutdown, &mut passes).await {
                Next::Stop => return passes,
                Next::Reopen => continue,
            },
            Err(problem) => {
                warn!(%problem, "source cannot start; trying again after its interval");
                passes.push(PassSummary {
                    source: topic.name.clone(),
                    failed: Some(format!("cannot start: {problem}")),
                    ..Default::default()
                });
                let interval = topic
                    .source
                    .as_ref()
                    .and_then(|s| s.http.as_ref())
                    .map_or(60_000, |h| h.interval_ms);
                if once {
                    return passes;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return passes,
                    _ = tokio::time::sleep(Duration::from_millis(interval)) => {}
                }
            }
        }
    }
}

/// The raw topics to poll: `only`, or every one declaring `[source.http]`. Problems of
/// the catalog (an unknown topic, a schema not loaded) stop the command, all listed.
fn declared<'a>(catalog: &'a Catalog, only: &[String]) -> Result<Vec<&'a Topic>, ConnectError> {
    let mut problems = Vec::new();
    let mut sources = Vec::new();
    for topic in catalog.raw_topics() {
        if !only.is_empty() && !only.contains(&topic.name) {
            continue;
        }
        if topic.source.as_ref().and_then(|s| s.http.as_ref()).is_none() {
            if only.contains(&topic.name) {
                problems.push(format!("{} declares no [source.http]", topic.name));
            }
            continue;
        }
        let event = topic.value_schema.clone().unwrap_or_default();
        if catalog.schemas.current(&event).is_none() {
            problems.push(format!("{}: schema {event} is not loaded", topic.name));
            continue;
        }
        sources.push(topic);
    }
    for name in only {
        if catalog.topic(name).is_none() {
            problems.push(format!("{name} is not in the topic catalog"));
        }
    }
    if sources.is_empty() && problems.is_empty() {
        problems.push("no topic declares an http_poll [source.http]".into());
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(ConnectError::Config(problems.join("; ")))
    }
}

/// Everything one source needs to poll: its URL, token, HTTP client and transactional
/// producer (whose start aborts whatever a killed predecessor left open).
fn open(topic: &Topic, shared: &Shared<'_>) -> Result<Source, String> {
    let spec = topic
        .source
        .as_ref()
        .and_then(|s| s.http.clone())
        .ok_or("no [source.http]")?;
    let event = topic.value_schema.clone().unwrap_or_default();
    let version = shared
        .schemas
        .current(&event)
        .cloned()
        .ok_or_else(|| format!("schema {event} is not loaded"))?;
    let url = Url::parse(&expand(&spec.url)).map_err(|e| format!("url {}: {e}", spec.url))?;
    let token = match &spec.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.is_empty() => Some(t),
            _ => return Err(format!("environment variable {var} (the API token) is not set")),
        },
        None => None,
    };
    let fetcher = Fetcher::new(&spec, token).map_err(|e| format!("HTTP client: {e}"))?;
    let producer: FutureProducer = crate::kafka::client_config(&shared.kafka)
        .set("transactional.id", format!("hoffrec-connect-{}", topic.name))
        .set("transaction.timeout.ms", spec.transaction_timeout_ms.to_string())
        // librdkafka refuses a socket timeout beyond the transaction's (default 60 s).
        .set("socket.timeout.ms", spec.transaction_timeout_ms.min(60_000).to_string())
        .create()
        .map_err(|e| format!("kafka producer: {e}"))?;
    tokio::task::block_in_place(|| producer.init_transactions(TXN_TIMEOUT)).map_err(|e| format!("kafka: {e}"))?;
    Ok(Source {
        topic: topic.clone(),
        spec,
        version,
        url,
        fetcher,
        producer,
    })
}

/// `${NAME:-default}` and `${NAME}` from the environment.
pub(super) fn expand(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 2..start + len];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        out.push_str(
            &std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or(default.to_string()),
        );
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// What a source does when its poll loop ends.
enum Next {
    Stop,
    /// The producer hit a fatal error (fenced after its transaction timed out, or by
    /// another instance): open the source again, whose new producer fences the old one.
    Reopen,
}

async fn poll_loop(
    shared: &Shared<'_>,
    source: &Source,
    cursor: &mut Option<String>,
    once: bool,
    shutdown: &CancellationToken,
    passes: &mut Vec<PassSummary>,
) -> Next {
    let labels = vec![("source", source.topic.name.clone())];
    loop {
        let outcome = match tokio::task::block_in_place(|| source.producer.begin_transaction()) {
            Ok(()) => pass(shared, source, cursor).await,
            Err(e) => Err(e.into()),
        };
        let outcome = outcome.and_then(|p| {
            tokio::task::block_in_place(|| source.producer.commit_transaction(TXN_TIMEOUT))
                .map(|()| p)
                .map_err(ConnectError::from)
        });
        if outcome.is_err() {
            // Nothing of a failed pass becomes visible (a failed commit included), and the
            // producer is ready for the next pass, which starts from the same cursor.
            if let Err(abort) = tokio::task::block_in_place(|| source.producer.abort_transaction(TXN_TIMEOUT)) {
                warn!(error = %abort, "aborting the pass's transaction failed");
            }
        }
        let (requests, retries) = (
            source.fetcher.requests.swap(0, Ordering::Relaxed),
            source.fetcher.retries.swap(0, Ordering::Relaxed),
        );
        shared
            .telemetry
            .connect
            .requests
            .get_or_create(&labels)
            .inc_by(requests);
        shared.telemetry.connect.retries.get_or_create(&labels).inc_by(retries);
        let kind = match &outcome {
            Ok(p) if p.stopped.is_some() => "stopped",
            Ok(_) => "complete",
            Err(_) => "failed",
        };
        let mut pass_labels = labels.clone();
        pass_labels.push(("outcome", kind.to_string()));
        shared.telemetry.connect.passes.get_or_create(&pass_labels).inc();
        match outcome {
            Ok(mut p) => {
                (p.requests, p.retries) = (requests, retries);
                info!(pages = p.pages, records = p.records, dead = p.dead_letters, stopped = ?p.stopped, "pass done");
                cursor.clone_from(&p.cursor);
                passes.push(p);
            }
            Err(e) => {
                warn!(error = %e, "pass failed; the next pass starts from the same cursor");
                passes.push(PassSummary {
                    source: source.topic.name.clone(),
                    cursor: cursor.clone(),
                    requests,
                    retries,
                    failed: Some(e.to_string()),
                    ..Default::default()
                });
            }
        }
        if once {
            return Next::Stop;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Next::Stop,
            _ = tokio::time::sleep(Duration::from_millis(source.spec.interval_ms)) => {}
        }
        if let Some((code, reason)) = source.producer.client().fatal_error() {
            warn!(?code, %reason, "the source's producer is unusable; opening the source again");
            return Next::Reopen;
        }
    }
}

/// One pass from `committed`, which a commit in the middle of the pass moves along, so a
/// pass that fails later resumes from there.
async fn pass(
    shared: &Shared<'_>,
    source: &Source,
    committed: &mut Option<String>,
) -> Result<PassSummary, ConnectError> {
    let cursor = committed.clone();
    if let Some(per) = &source.spec.per_customer {
        return super::social::pass(shared, source, per).await;
    }
    let spec = &source.spec;
    let mut summary = PassSummary {
        source: source.topic.name.clone(),
        cursor: cursor.clone(),
        ..Default::default()
    };
    let clock = spec.incremental.as_ref().and_then(|inc| CursorClock::new(source, inc));
    let mut first = source.url.clone();
    {
        let mut query = first.query_pairs_mut();
        for (k, v) in &spec.params {
            query.append_pair(k, v);
        }
        if let (Some(inc), Some(c)) = (&spec.incremental, &cursor) {
            let from = clock.as_ref().and_then(|k| k.looked_back(c));
            query.append_pair(&inc.param, from.as_deref().unwrap_or(c));
        }
    }
    let mut pager = Pager::new(&source.fetcher, &spec.paging, &spec.items, first);
    let mut best = cursor.clone();
    let mut complete = true;
    let commit_every = Duration::from_millis(spec.commit_interval_ms);
    let mut opened = std::time::Instant::now();
    loop {
        let items = match pager.next().await {
            Ok(Some(items)) => items,
            Ok(None) => break,
            Err(PageError::Refused { class, reason, body }) => {
                dead_letter(shared, source, &body, class, &reason).await?;
                summary.dead_letters += 1;
                complete = false;
                break;
            }
            Err(PageError::Fetch(e @ (FetchError::Auth(_) | FetchError::Quota(_) | FetchError::Denied(_)))) => {
                warn!(error = %e, "source stopped for this pass");
                summary.stopped = Some(format!("{}: {e}", e.class()));
                complete = false;
                break;
            }
            Err(PageError::Fetch(error)) => {
                return Err(ConnectError::Fetch {
                    source_topic: source.topic.name.clone(),
                    error,
                });
            }
        };
        summary.pages += 1;
        for item in &items {
            if let Some(inc) = &spec.incremental
                && let Some(value) = lookup(item, &inc.field).and_then(text)
            {
                if clock.as_ref().is_some_and(|k| k.in_future(&value)) {
                    summary.future_items += 1;
                } else if best.as_deref().is_none_or(|b| later(&value, b)) {
                    best = Some(value);
                }
            }
        }
        summary.records += produce_items(shared, source, &items, &mut summary.dead_letters).await?;
        if opened.elapsed() >= commit_every {
            // A long pass makes what it has visible well inside its transaction's timeout.
            // With items in ascending cursor order the cursor goes along, so a restart
            // resumes here; otherwise it redoes the pass and ingest drops the repeats.
            let moved = best
                .as_ref()
                .filter(|b| spec.incremental.as_ref().is_some_and(|i| i.ascending) && committed.as_ref() != Some(*b));
            if let Some(b) = moved {
                source.save_cursor(shared, b).await?;
            }
            source.checkpoint()?;
            if let Some(b) = moved {
                *committed = Some(b.clone());
                summary.cursor = Some(b.clone());
            }
            summary.commits += 1;
            opened = std::time::Instant::now();
        }
    }
    if summary.future_items > 0 {
        warn!(
            items = summary.future_items,
            "items dated beyond now + max_future_ms were produced but do not move the cursor"
        );
    }
    // Items may come in any order within a pass, so the cursor moves only after a whole
    // pass; a repeat after a crash is harmless, since event ids are derived from the item.
    if complete && best != cursor {
        if let Some(b) = &best {
            source.save_cursor(shared, b).await?;
        }
        summary.cursor = best;
    }
    Ok(summary)
}

/// A time cursor read as the mapping reads its field: bounded by now + skew, and moved
/// back by the lookback when sent. `None` for cursors that are not times (record ids).
struct CursorClock<'a> {
    format: &'a str,
    zone: Option<&'a str>,
    ceiling_ms: i64,
    lookback_ms: i64,
}

impl<'a> CursorClock<'a> {
    fn new(source: &'a Source, inc: &crate::catalog::source::Incremental) -> Option<Self> {
        let mapping = &source.topic.source.as_ref()?.mapping;
        let (format, zone) = super::mapping::time_format_of(mapping, &inc.field)?;
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX / 2);
        Some(Self {
            format,
            zone,
            ceiling_ms: chrono::Utc::now().timestamp_millis() + ms(inc.max_future_ms),
            lookback_ms: ms(inc.lookback_ms),
        })
    }

    fn in_future(&self, value: &str) -> bool {
        super::mapping::cursor_ms(value, self.format, self.zone).is_some_and(|ms| ms > self.ceiling_ms)
    }

    fn looked_back(&self, cursor: &str) -> Option<String> {
        if self.lookback_ms == 0 {
            return None;
        }
        let ms = super::mapping::cursor_ms(cursor, self.format, self.zone)?;
        super::mapping::format_ms(ms - self.lookback_ms, self.format, self.zone)
    }
}

/// Whether cursor value `a` comes after `b`: numerically when both are numbers, else as text
/// (ISO-8601 times of one format order correctly as text).
fn later(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x > y,
        _ => a > b,
    }
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
        match super::produce::prepare(&source.topic, &source.version, item) {
            Ok(record) => sends.push(record),
            Err(reason) => {
                let bytes = serde_json::to_vec(item).unwrap_or_default();
                dead_letter(shared, source, &bytes, "invalid_item", &reason).await?;
                *dead_letters += 1;
            }
        }
    }
    if !super::produce::send_all(&source.producer, &source.topic.name, &sends).await {
        return Err(ConnectError::Delivery(source.topic.name.clone()));
    }
    shared
        .telemetry
        .connect
        .records
        .get_or_create(&vec![("source", source.topic.name.clone())])
        .inc_by(sends.len() as u64);
    Ok(sends.len() as u64)
}

pub(super) async fn dead_letter(
    shared: &Shared<'_>,
    source: &Source,
    payload: &[u8],
    class: &str,
    reason: &str,
) -> Result<(), ConnectError> {
    let origin = format!("connect:{}", source.topic.name);
    super::produce::dead_letter(&source.producer, &shared.dlq, &origin, payload, class, reason).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_expand_from_the_environment_with_defaults() {
        assert_eq!(
            expand("${HOFFREC_SURELY_UNSET_VAR:-https://api.vk.com}/method"),
            "https://api.vk.com/method"
        );
        assert_eq!(expand("plain"), "plain");
    }

    #[test]
    fn cursors_compare_as_numbers_or_text() {
        assert!(later("10", "9"));
        assert!(later("2026-03-02T00:00:00", "2026-03-01T23:59:59"));
        assert!(!later("2026-03-01", "2026-03-01"));
    }
}
