//! The event collector: the site posts batches of events (`POST /v1/events`), each is
//! checked against its Avro contract and produced to its raw topic; the answer lists, per
//! event, what was refused and why. Refused events also go to `dlq.raw` with the reason,
//! so nothing the site sent is lost, and "accepted" means the broker has the record.
//!
//! Body: `{"events": [{"type": "product_view", "event_id": "...", ...}, ...]}`; each
//! event carries its type and the fields of that type's schema.

use super::producers::{Producer, Producers};
use crate::catalog::{Catalog, Role, SourceKind, Topic};
use crate::codec::json::to_avro;
use crate::codec::{SchemaVersion, encode_with};
use crate::config::CollectorConfig;
use crate::kafka::send_and_wait;
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
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
    #[error(transparent)]
    NoDeadLetterTopic(crate::catalog::CatalogError),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("{0}")]
    Keys(String),
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
    producers: Producers,
    max_events: usize,
    max_future_ms: i64,
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
    config: &CollectorConfig,
    telemetry: &Telemetry,
    shutdown: CancellationToken,
) -> Result<Summary, CollectorError> {
    let listen = config.listen.as_str();
    let (router, _) = router(catalog, kafka, config, telemetry)?;
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
    config: &CollectorConfig,
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
        .require(Role::DeadLetter)
        .map(|t| t.name.clone())
        .map_err(CollectorError::NoDeadLetterTopic)?;
    let producer = crate::kafka::client_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .map_err(CollectorError::Kafka)?;
    let types: Vec<String> = routes.keys().cloned().collect();
    let producers =
        Producers::load(&config.keys_file, &types, config.max_events_per_request).map_err(CollectorError::Keys)?;
    if !producers.required() {
        tracing::warn!("collector.keys_file is not set: anyone who reaches the collector may post events");
    }
    let shared = Arc::new(Shared {
        producer,
        routes,
        dlq,
        telemetry: telemetry.clone(),
        producers,
        max_events: usize::try_from(config.max_events_per_request).unwrap_or(usize::MAX),
        max_future_ms: i64::try_from(config.max_future_ms).unwrap_or(i64::MAX / 2),
    });
    let router = Router::new()
        .route("/v1/events", post(events))
        .layer(DefaultBodyLimit::max(
            usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
        ))
        .with_state(shared);
    Ok((router, types))
}

async fn events(State(s): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> Reply {
    // Strangers are answered, never dead-lettered: they must not be able to fill the topic.
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let sender = match s.producers.authenticate(authorization) {
        Ok(p) => p,
        Err(reason) => {
            count(&s, "unknown", "unauthorized");
            return reply(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": reason, "retry": false }),
            );
        }
    };
    let parsed: Result<JsonValue, _> = serde_json::from_slice(&body);
    let events = match parsed {
        Ok(JsonValue::Object(mut o)) => match o.remove("events") {
            Some(JsonValue::Array(events)) => events,
            _ => return malformed(&s, &body, "the body must be {\"events\": [...]}").await,
        },
        Ok(_) => return malformed(&s, &body, "the body must be {\"events\": [...]}").await,
        Err(e) => return malformed(&s, &body, &format!("the body is not JSON: {e}")).await,
    };
    if events.len() > s.max_events {
        count(&s, "unknown", "too_many_events");
        let error = format!("{} events in one request; at most {}", events.len(), s.max_events);
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({ "error": error, "retry": false }),
        );
    }
    if let Some(Err(wait)) = sender.map(|p| p.admit(events.len())) {
        count(&s, "unknown", "rate_limited");
        let seconds = wait.as_secs() + 1;
        let error = format!("over this producer's max_events_per_s; retry after {seconds} s");
        let mut answer = reply(
            StatusCode::TOO_MANY_REQUESTS,
            &serde_json::json!({ "error": error, "retry": true, "retry_after_s": seconds }),
        );
        answer.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        return answer;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut rejected = Vec::new();
    let mut sends = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match prepare(&s, sender, now_ms, event) {
            Ok((topic, key, payload, event_type)) => sends.push((index, topic, key, payload, event_type)),
            Err((class, reason)) => rejected.push((index, class, reason, event.to_string())),
        }
    }
    let deliveries = sends.iter().map(|(_, topic, key, payload, _)| {
        let mut record = FutureRecord::to(topic).payload(payload.as_slice());
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        send_and_wait(&s.producer, record, Duration::from_secs(10))
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
            Err(e) => {
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

type Reply = axum::response::Response;

fn reply(status: StatusCode, body: &JsonValue) -> Reply {
    use axum::response::IntoResponse;
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

type Prepared = (String, Option<String>, Vec<u8>, String);

fn prepare(
    s: &Shared,
    sender: Option<&Producer>,
    now_ms: i64,
    event: &JsonValue,
) -> Result<Prepared, (&'static str, String)> {
    let event_type = event
        .get("type")
        .and_then(JsonValue::as_str)
        .ok_or(("missing_type", "the event has no \"type\"".to_string()))?;
    if let Some(p) = sender.filter(|p| !p.may_send(event_type)) {
        return Err((
            "forbidden_event_type",
            format!("producer {} may not send {event_type} events", p.name),
        ));
    }
    let route = s.routes.get(event_type).ok_or_else(|| {
        let mut known: Vec<&str> = s.routes.keys().map(String::as_str).collect();
        known.sort_unstable();
        (
            "unknown_event_type",
            format!("unknown type {event_type}; the collector takes {}", known.join(", ")),
        )
    })?;
    let value = to_avro(event, &route.version.schema).map_err(|e| ("invalid_event", e))?;
    check_value(&value, now_ms + s.max_future_ms)?;
    let key = route.topic.key_of(&value);
    let payload = encode_with(&route.version, value).map_err(|e| ("invalid_event", e.to_string()))?;
    Ok((route.topic.name.clone(), key, payload, event_type.to_string()))
}

/// What a valid event may still not say: a time past `latest_ms`, or a linked social
/// account that is not `<network>:<numeric id>` (the id goes into API calls and URLs).
fn check_value(value: &apache_avro::types::Value, latest_ms: i64) -> Result<(), (&'static str, String)> {
    use apache_avro::types::Value;
    let Value::Record(fields) = value else { return Ok(()) };
    for (name, v) in fields {
        match (name.as_str(), v) {
            ("event_time", Value::TimestampMillis(ms)) if *ms > latest_ms => {
                return Err((
                    "event_from_the_future",
                    format!("event_time {ms} is later than now allows ({latest_ms})"),
                ));
            }
            ("networks", Value::Array(accounts)) => {
                for a in accounts {
                    let Value::String(a) = a else { continue };
                    let valid = a.split_once(':').is_some_and(|(network, id)| {
                        matches!(network, "vk" | "instagram")
                            && (1..=20).contains(&id.len())
                            && id.bytes().all(|b| b.is_ascii_digit())
                    });
                    if !valid {
                        return Err((
                            "invalid_account",
                            format!("linked account {a:?} is not vk:<id> or instagram:<id> with a numeric id"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
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
