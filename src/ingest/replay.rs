//! `hoffrec dlq list|replay`: the dead letters still live on the dead-letter topic, and
//! putting those of one class back on the topic they came from once what refused them is
//! fixed (a schema shipped, a check relaxed). Each replayed record and the tombstone of
//! its letter go in one Kafka transaction, so a letter is replayed exactly once however
//! often the command runs or wherever it is killed.

use crate::catalog::{Catalog, Role, Topic};
use crate::config::KafkaConfig;
use crate::kafka::headers;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("reading the dead letters: {0}")]
    Read(#[from] crate::connect::offsets::OffsetsError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka: {0}")]
    Producer(String),
}

/// Which letters: all of them when every field is `None`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub class: Option<String>,
    /// Letters written at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Letters of records from this topic (or origin, for the collector and connectors).
    pub source: Option<String>,
}

/// A live dead letter, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    /// Its own key on the dead-letter topic; `None` for letters written before keys.
    pub key: Option<String>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub source: String,
    pub source_key: Option<String>,
    pub class: String,
    pub message: String,
    pub bytes: usize,
    #[serde(skip)]
    payload: Vec<u8>,
    #[serde(skip)]
    original_headers: Vec<(String, Vec<u8>)>,
}

/// The live letters matching `filter`, oldest first per partition.
pub fn letters(kafka: &KafkaConfig, dlq: &Topic, filter: &Filter) -> Result<Vec<Letter>, ReplayError> {
    let mut live: BTreeMap<(i32, i64), Letter> = BTreeMap::new();
    let mut at: BTreeMap<Vec<u8>, (i32, i64)> = BTreeMap::new();
    crate::connect::offsets::read_records(kafka, dlq, |m| {
        if let Some(key) = m.key()
            && let Some(earlier) = at.remove(key)
        {
            live.remove(&earlier);
        }
        let Some(payload) = m.payload() else {
            return Ok(());
        };
        let mut named = BTreeMap::new();
        let mut original_headers = Vec::new();
        for h in m.headers().into_iter().flat_map(|hs| hs.iter()) {
            let value = h.value.unwrap_or_default();
            if h.key.starts_with("hoffrec.") {
                named.insert(h.key.to_string(), String::from_utf8_lossy(value).into_owned());
            } else {
                original_headers.push((h.key.to_string(), value.to_vec()));
            }
        }
        let take = |k: &str| named.get(k).cloned();
        let letter = Letter {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            source: take(headers::SOURCE_TOPIC).unwrap_or_default(),
            source_key: take(headers::SOURCE_KEY),
            class: take(headers::ERROR_CLASS).unwrap_or_default(),
            message: take(headers::ERROR_MESSAGE).unwrap_or_default(),
            bytes: payload.len(),
            payload: payload.to_vec(),
            original_headers,
        };
        if let Some(key) = m.key() {
            at.insert(key.to_vec(), (m.partition(), m.offset()));
        }
        live.insert((m.partition(), m.offset()), letter);
        Ok(())
    })?;
    Ok(live
        .into_values()
        .filter(|l| filter.class.as_ref().is_none_or(|c| &l.class == c))
        .filter(|l| filter.source.as_ref().is_none_or(|s| &l.source == s))
        .filter(|l| filter.since_ms.is_none_or(|t| l.timestamp_ms.is_some_and(|at| at >= t)))
        .collect())
}

#[derive(Debug, Default, Serialize)]
pub struct Replayed {
    pub replayed: u64,
    /// By source topic.
    pub to: BTreeMap<String, u64>,
    /// Letters from the collector or a connector: never on a topic, so nothing to replay
    /// into (the sender posts them again).
    pub not_from_a_topic: u64,
    /// Letters written before letters had keys: they cannot be tombstoned, so replaying
    /// them could repeat them.
    pub without_key: u64,
}

/// Letters per transaction: each batch lands whole or not at all.
const BATCH: usize = 500;

/// Replays the live letters matching `filter` into their raw topics.
pub fn replay(kafka: &KafkaConfig, catalog: &Catalog, filter: &Filter) -> Result<Replayed, ReplayError> {
    let dlq = catalog.require(Role::DeadLetter)?;
    let mut summary = Replayed::default();
    let mut ready = Vec::new();
    for letter in letters(kafka, dlq, filter)? {
        match (&letter.key, catalog.topic(&letter.source)) {
            (None, _) => summary.without_key += 1,
            (Some(_), Some(t)) if t.role == Role::Raw => ready.push(letter),
            (Some(_), _) => summary.not_from_a_topic += 1,
        }
    }
    if ready.is_empty() {
        return Ok(summary);
    }
    let timeout = Duration::from_secs(60);
    // One id for every run on this dead-letter topic: a second replay running at once
    // fences the first, whose open transaction is then aborted.
    let producer: ThreadedProducer<DefaultProducerContext> = crate::kafka::client_config(kafka)
        .set("transactional.id", format!("hoffrec-dlq-replay-{}", dlq.name))
        .create()?;
    producer.init_transactions(timeout)?;
    for batch in ready.chunks(BATCH) {
        producer.begin_transaction()?;
        for letter in batch {
            let letter_key = letter.key.as_deref().unwrap_or_default();
            let mut h = OwnedHeaders::new_with_capacity(letter.original_headers.len() + 1);
            for (k, v) in &letter.original_headers {
                h = h.insert(Header { key: k, value: Some(v) });
            }
            h = h.insert(Header {
                key: "hoffrec.replayed_from",
                value: Some(letter_key),
            });
            let mut record = BaseRecord::<str, [u8]>::to(&letter.source)
                .payload(&letter.payload)
                .headers(h);
            if let Some(k) = &letter.source_key {
                record = record.key(k);
            }
            producer.send(record).map_err(|(e, _)| e)?;
            producer
                .send(BaseRecord::<str, [u8]>::to(&dlq.name).key(letter_key))
                .map_err(|(e, _)| e)?;
            *summary.to.entry(letter.source.clone()).or_default() += 1;
        }
        if let Err(e) = producer.commit_transaction(timeout) {
            let _ = producer.abort_transaction(timeout);
            return Err(ReplayError::Producer(format!(
                "the replay's transaction failed, nothing of this batch was replayed: {e}"
            )));
        }
        summary.replayed += batch.len() as u64;
        tracing::info!(replayed = summary.replayed, "dead letters replayed");
    }
    Ok(summary)
}
