//! `hoffrec tail TOPIC`: any catalog topic's records decoded with the topic's schema (every
//! version the schema set knows), one line each, for people and for scripts (`--json`).
//! Dead letters show their original bytes (as text when they are text, else base64) and
//! the headers that say where they came from and why they failed.

use super::{Catalog, Role};
use crate::config::KafkaConfig;
use base64::Engine;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("no topic '{0}' in the catalog; it has: {1}")]
    UnknownTopic(String, String),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot write: {0}")]
    Write(#[from] std::io::Error),
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub from_beginning: bool,
    /// Only records under this key.
    pub key: Option<String>,
    pub json: bool,
    /// Stop at the end offsets seen at the start instead of following.
    pub exit_at_end: bool,
    /// Stop after printing this many records.
    pub max: Option<u64>,
}

/// One record as printed.
#[derive(Debug, Serialize)]
pub struct Line {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// The decoded value; `null` for a tombstone or what does not decode.
    pub value: Json,
    /// The bytes, base64, when they are not shown decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub printed: u64,
    pub undecodable: u64,
}

fn line(catalog: &Catalog, topic: &super::Topic, m: &rdkafka::message::BorrowedMessage<'_>) -> Line {
    let headers = crate::kafka::header_texts(m);
    let mut out = Line {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        headers,
        value: Json::Null,
        value_base64: None,
        error: None,
    };
    let Some(payload) = m.payload() else {
        return out;
    };
    let as_bytes = |out: &mut Line| match std::str::from_utf8(payload) {
        Ok(text) => out.value = Json::String(text.to_string()),
        Err(_) => out.value_base64 = Some(base64::engine::general_purpose::STANDARD.encode(payload)),
    };
    match (&topic.value_schema, topic.role) {
        (Some(event), role) if role != Role::DeadLetter => match catalog.schemas.decode(payload, event) {
            Ok(value) => match Json::try_from(value) {
                Ok(json) => out.value = json,
                Err(e) => out.error = Some(e.to_string()),
            },
            Err(e) => {
                out.error = Some(e.to_string());
                out.value_base64 = Some(base64::engine::general_purpose::STANDARD.encode(payload));
            }
        },
        _ => as_bytes(&mut out),
    }
    out
}

fn human(l: &Line) -> String {
    let mut s = format!(
        "{}@{} key={} {}",
        l.partition,
        l.offset,
        l.key.as_deref().unwrap_or("-"),
        if l.value.is_null() && l.value_base64.is_none() {
            "(tombstone)".to_string()
        } else {
            l.value.to_string()
        }
    );
    if let Some(b) = &l.value_base64 {
        s.push_str(&format!(" base64={b}"));
    }
    if let Some(e) = &l.error {
        s.push_str(&format!(" error=\"{e}\""));
    }
    for (k, v) in &l.headers {
        s.push_str(&format!(" {k}={v:?}"));
    }
    s
}

/// Prints `topic`'s records to `out` until the end (with `exit_at_end`), `max`, or forever.
pub fn tail(
    kafka: &KafkaConfig,
    catalog: &Catalog,
    name: &str,
    options: &Options,
    out: &mut impl Write,
) -> Result<Summary, TailError> {
    let topic = catalog.topic(name).ok_or_else(|| {
        let names: Vec<&str> = catalog.topics.iter().map(|t| t.name.as_str()).collect();
        TailError::UnknownTopic(name.to_string(), names.join(", "))
    })?;
    let consumer: BaseConsumer = crate::kafka::client_config(kafka)
        .set("group.id", format!("hoffrec-tail-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_millis(kafka.request_timeout_ms);
    let metadata = consumer.fetch_metadata(Some(name), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (low, high) = consumer.fetch_watermarks(name, p, timeout)?;
        let start = if options.from_beginning { low } else { high };
        tpl.add_partition_offset(name, p, Offset::Offset(start))?;
        if high > start {
            ends.insert(p, high);
        }
    }
    consumer.assign(&tpl)?;
    let mut summary = Summary::default();
    loop {
        if options.exit_at_end && ends.is_empty() || options.max.is_some_and(|m| summary.printed >= m) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // Transaction markers are never delivered: the end is where the position is.
            if let Ok(position) = consumer.position() {
                ends.retain(|p, high| {
                    !matches!(position.find_partition(name, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *high)
                });
            }
            continue;
        };
        let m = message?;
        if ends.get(&m.partition()).is_some_and(|high| m.offset() + 1 >= *high) {
            ends.remove(&m.partition());
        }
        let key_matches = options.key.as_deref().is_none_or(|k| m.key() == Some(k.as_bytes()));
        if !key_matches {
            continue;
        }
        let l = line(catalog, topic, &m);
        if l.error.is_some() {
            summary.undecodable += 1;
        }
        let text = if options.json {
            serde_json::to_string(&l).map_err(std::io::Error::other)?
        } else {
            human(&l)
        };
        writeln!(out, "{text}")?;
        summary.printed += 1;
    }
    out.flush()?;
    Ok(summary)
}
