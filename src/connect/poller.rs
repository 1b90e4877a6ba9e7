//! `hoffrec connect`: every `http_poll` source declared in `topics/` polled into its raw
//! topic. A pass pages through the API from the stored cursor, maps each item onto the
//! topic's Avro schema, produces it, and stores the new cursor once the broker has every
//! record. Items that do not map and responses that make no sense go to `dlq.raw`.

pub use super::error::ConnectError;
use super::offsets;
pub use super::pass::PassSummary;
use super::pass::{Shared, Source, TXN_TIMEOUT};
use super::source::{declared, open};
use super::{listing, social};
use crate::catalog::{Catalog, Role, Topic};
use crate::config::KafkaConfig;
use crate::telemetry::Telemetry;
use rdkafka::producer::Producer;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub passes: Vec<PassSummary>,
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
    let offsets_topic = catalog.require(Role::ConnectorOffsets)?.clone();
    let shared = Shared {
        dlq: catalog.require(Role::DeadLetter)?.name.clone(),
        schemas: &catalog.schemas,
        offsets: offsets_topic,
        consent: catalog.consent_topic().cloned(),
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
    Ok(summary)
}

impl Summary {
    /// The passes that failed, could not start, or were stopped by the API (auth, quota,
    /// access), as one message; `None` when every pass got everything.
    pub fn unfinished(&self) -> Option<String> {
        let why: Vec<String> = self
            .passes
            .iter()
            .filter_map(|p| {
                let reason = p.failed.as_deref().or(p.stopped.as_deref())?;
                let what = if p.failed.is_some() { "failed" } else { "stopped" };
                Some(format!("{} {what}: {reason}", p.source))
            })
            .collect();
        (!why.is_empty()).then(|| format!("passes did not finish: {}", why.join("; ")))
    }
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

/// One pass, of a per-customer source or of a listing.
async fn pass(
    shared: &Shared<'_>,
    source: &Source,
    committed: &mut Option<String>,
) -> Result<PassSummary, ConnectError> {
    match &source.spec.per_customer {
        Some(per) => social::pass(shared, source, per).await,
        None => listing::pass(shared, source, committed).await,
    }
}
