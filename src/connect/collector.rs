//! The event collector: the site posts batches of events (`POST /v1/events`), each is
//! checked against its Avro contract and produced to its raw topic; the answer lists, per
//! event, what was refused and why. Refused events also go to `dlq.raw` with the reason,
//! so nothing the site sent is lost, and "accepted" means the broker has the record.
//!
//! Body: `{"events": [{"type": "product_view", "event_id": "...", ...}, ...]}`; each
//! event carries its type and the fields of that type's schema.

use super::json::to_avro;
use crate::catalog::{Catalog, Role, SourceKind, Topic};
use crate::codec::{SchemaVersion, encode_with};
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::routing::post;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::Value as JsonValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("the catalog has no raw topic fed by the collector")]
    NoTopics,
    #[error("the catalog has no dead-letter topic")]
    NoDeadLetterTopic,
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

struct Route {
    topic: Topic,
    version: Arc<SchemaVersion>,
}

struct Shared {
    producer: FutureProducer,
    routes: HashMap<String, Route>,
    dlq: String,
    telemetry: Telemetry,
}

/// One refused event of a batch.
#[derive(Debug, Serialize)]
pub struct Refusal {
    pub index: usize,
    pub class: &'static str,
    pub reason: String,
    /// True when the event itself is fine and the sender should send it again later.
    pub retry: bool,
}

#[derive(Debug, Serialize)]
pub struct Answer {
    pub accepted: usize,
    pub rejected: Vec<Refusal>,
}

/// Counts for one run of the collector.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub listen: String,
}

/// Serves the collector on `listen` until `shutdown`.
pub async fn run(
    catalog: &Catalog,
    kafka: &crate::config::KafkaConfig,
    listen: &str,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> Result<Summary, CollectorError> {
    let (router, _) = router(catalog, kafka, telemetry)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| CollectorError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, "collector accepting POST /v1/events");
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "collector stopped");
    }
    Ok(Summary { listen: addr })
}

/// The collector's routes, for serving or embedding; also returns the event types it takes.
pub fn router(
    catalog: &Catalog,
    kafka: &crate::config::KafkaConfig,
    telemetry: &Telemetry,
) -> Result<(Router, Vec<String>), CollectorError> {
    let mut routes = HashMap::new();
    for topic in catalog.raw_topics() {
        let fed_by_collector = topic.source.as_ref().is_some_and(|s| s.kind == SourceKind::Collector);
        let event = topic.value_schema.clone().unwrap_or_default();
        if let (true, Some(version)) = (fed_by_collector, catalog.schemas.current(&event)) {
            routes.insert(
                event,
                Route {
                    topic: topic.clone(),
                    version: version.clone(),
                },
            );
        }
    }
    if routes.is_empty() {
        return Err(CollectorError::NoTopics);
    }
    let dlq = catalog
        .topic_for(Role::DeadLetter)
        .map(|t| t.name.clone())
        .ok_or(CollectorError::NoDeadLetterTopic)?;
    let producer = crate::kafka::client_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .map_err(CollectorError::Kafka)?;
    let types = routes.keys().cloned().collect();
    let shared = Arc::new(Shared {
        producer,
        routes,
        dlq,
        telemetry: telemetry.clone(),
    });
    let router = Router::new()
        .route("/v1/events", post(events))
        .layer(DefaultBodyLimit::max(4 * 1024 * 1024))
        .with_state(shared);
    Ok((router, types))
}

async fn events(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Reply {
    let parsed: Result<JsonValue, _> = serde_json::from_slice(&body);
    let events = match parsed {
        Ok(JsonValue::Object(mut o)) => match o.remove("events") {
            Some(JsonValue::Array(events)) => events,
            _ => return malformed(&s, &body, "the body must be {\"events\": [...]}").await,
        },
        Ok(_) => return malformed(&s, &body, "the body must be {\"events\": [...]}").await,
        Err(e) => return malformed(&s, &body, &format!("the body is not JSON: {e}")).await,
    };
    let mut rejected = Vec::new();
    let mut sends = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match prepare(&s, event) {
            Ok((topic, key, payload, event_type)) => sends.push((index, topic, key, payload, event_type)),
            Err((class, reason)) => rejected.push((index, class, reason, event.to_string())),
        }
    }
    let deliveries = sends.iter().map(|(_, topic, key, payload, _)| {
        let mut record = FutureRecord::to(topic).payload(payload.as_slice());
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        s.producer.send(record, Duration::from_secs(10))
    });
    let results = futures::future::join_all(deliveries).await;
    let mut accepted = 0;
    let mut refusals = Vec::new();
    for ((index, _, _, _, event_type), result) in sends.iter().zip(results) {
        let outcome = match result {
            Ok(_) => {
                accepted += 1;
                "accepted"
            }
            Err((e, _)) => {
                refusals.push(Refusal {
                    index: *index,
                    class: "unavailable",
                    reason: format!("the broker did not take the event: {e}"),
                    retry: true,
                });
                "unavailable"
            }
        };
        count(&s, event_type, outcome);
    }
    for (index, class, reason, original) in rejected {
        let kept = dead_letter(&s, original.as_bytes(), class, &reason).await;
        count(&s, "unknown", class);
        refusals.push(Refusal {
            index,
            class,
            reason: if kept {
                reason
            } else {
                format!("{reason} (and the dead-letter topic is unavailable)")
            },
            retry: !kept,
        });
    }
    refusals.sort_by_key(|r| r.index);
    let answer = Answer {
        accepted,
        rejected: refusals,
    };
    reply(StatusCode::OK, &serde_json::to_value(answer).unwrap_or_default())
}

type Reply = (StatusCode, [(header::HeaderName, &'static str); 1], String);

fn reply(status: StatusCode, body: &JsonValue) -> Reply {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

type Prepared = (String, Option<String>, Vec<u8>, String);

fn prepare(s: &Shared, event: &JsonValue) -> Result<Prepared, (&'static str, String)> {
    let event_type = event
        .get("type")
        .and_then(JsonValue::as_str)
        .ok_or(("missing_type", "the event has no \"type\"".to_string()))?;
    let route = s.routes.get(event_type).ok_or_else(|| {
        let mut known: Vec<&str> = s.routes.keys().map(String::as_str).collect();
        known.sort_unstable();
        (
            "unknown_event_type",
            format!("unknown type {event_type}; the collector takes {}", known.join(", ")),
        )
    })?;
    let value = to_avro(event, &route.version.schema).map_err(|e| ("invalid_event", e))?;
    let key = route.topic.key_of(&value);
    let payload = encode_with(&route.version, value).map_err(|e| ("invalid_event", e.to_string()))?;
    Ok((route.topic.name.clone(), key, payload, event_type.to_string()))
}

async fn malformed(s: &Shared, body: &[u8], reason: &str) -> Reply {
    let kept = dead_letter(s, body, "malformed_batch", reason).await;
    count(s, "unknown", "malformed_batch");
    let status = if kept {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, &serde_json::json!({ "error": reason, "kept": kept }))
}

/// Keeps a refused event on the dead-letter topic; false when the broker did not take it.
async fn dead_letter(s: &Shared, payload: &[u8], class: &str, reason: &str) -> bool {
    super::produce::dead_letter(&s.producer, &s.dlq, "collector:/v1/events", payload, class, reason)
        .await
        .is_ok()
}

fn count(s: &Shared, event_type: &str, outcome: &str) {
    s.telemetry
        .collector
        .events
        .get_or_create(&vec![
            ("type", event_type.to_string()),
            ("outcome", outcome.to_string()),
        ])
        .inc();
}
