//! Connector cursors on the compacted `connect.offsets` topic (key `connector/stream`): a
//! source reads its last cursor at start and writes a new one only after every record of
//! the pass has been acknowledged by the broker, so a restart resumes with no gap.

use crate::catalog::Topic;
use crate::codec::{SchemaSet, encode_with};
use crate::config::KafkaConfig;
use apache_avro::types::Value;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("connector offsets topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("connector offsets: {0}")]
    Codec(#[from] crate::codec::CodecError),
    #[error("connector offsets: {0}")]
    Invalid(String),
}

const EVENT: &str = "connector_offset";

/// One stored cursor.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cursor {
    pub connector: String,
    pub stream: String,
    pub cursor: String,
    pub updated_at_ms: Option<i64>,
}

/// Every live cursor: the newest record per key, unless a tombstone (a reset, an
/// erasure) came after it.
pub fn list(kafka: &KafkaConfig, topic: &Topic, schemas: &SchemaSet) -> Result<Vec<Cursor>, OffsetsError> {
    let mut by_key: std::collections::BTreeMap<Vec<u8>, Cursor> = std::collections::BTreeMap::new();
    read_records(kafka, topic, |m| {
        let key = m.key().unwrap_or_default().to_vec();
        let Some(payload) = m.payload() else {
            by_key.remove(&key);
            return Ok(());
        };
        if let Value::Record(fields) = schemas.decode(payload, EVENT)? {
            let text = |name: &str| {
                fields.iter().find(|(n, _)| n == name).and_then(|(_, v)| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
            };
            let updated_at_ms = fields
                .iter()
                .find(|(n, _)| n == "updated_at")
                .and_then(|(_, v)| match v {
                    Value::TimestampMillis(ms) | Value::Long(ms) => Some(*ms),
                    _ => None,
                });
            if let (Some(connector), Some(stream), Some(cursor)) = (text("connector"), text("stream"), text("cursor")) {
                by_key.insert(
                    key,
                    Cursor {
                        connector,
                        stream,
                        cursor,
                        updated_at_ms,
                    },
                );
            }
        }
        Ok(())
    })?;
    Ok(by_key.into_values().collect())
}

/// The newest live cursor per (connector, stream).
pub fn load(
    kafka: &KafkaConfig,
    topic: &Topic,
    schemas: &SchemaSet,
) -> Result<HashMap<(String, String), String>, OffsetsError> {
    Ok(list(kafka, topic, schemas)?
        .into_iter()
        .map(|c| ((c.connector, c.stream), c.cursor))
        .collect())
}

/// Removes a cursor (a tombstone under its key): the source's next pass starts from the
/// beginning of what its API lists.
pub async fn reset(
    producer: &FutureProducer,
    topic: &Topic,
    connector: &str,
    stream: &str,
) -> Result<(), OffsetsError> {
    let key = format!("{connector}/{stream}");
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic.name).key(&key);
    crate::kafka::send_and_wait(producer, record, Duration::from_secs(30)).await?;
    Ok(())
}

/// Calls `each` with every record value of `topic`, oldest first per partition, up to the
/// end offsets as they were when the read started.
pub fn read_topic(
    kafka: &KafkaConfig,
    topic: &Topic,
    mut each: impl FnMut(&[u8]) -> Result<(), OffsetsError>,
) -> Result<(), OffsetsError> {
    read_records(kafka, topic, |m| match m.payload() {
        Some(payload) => each(payload),
        None => Ok(()),
    })
}

/// As `read_topic`, with each whole record (key, headers, tombstones too).
pub fn read_records(
    kafka: &KafkaConfig,
    topic: &Topic,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<(), OffsetsError>,
) -> Result<(), OffsetsError> {
    let consumer: BaseConsumer = crate::kafka::client_config(kafka)
        .set("group.id", format!("hoffrec-reader-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..topic.partitions {
        let (low, high) = consumer.fetch_watermarks(&topic.name, p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(&topic.name, p, Offset::Beginning)?;
            ends.insert(p, high);
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(OffsetsError::Invalid(format!("timed out reading {}", topic.name)));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            // Transaction markers and aborted records are never delivered, so the end is
            // where the consumer's position reaches the end offset, not a last record.
            let position = consumer.position()?;
            ends.retain(|p, high| {
                !matches!(
                    position.find_partition(&topic.name, *p).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= *high
                )
            });
            continue;
        };
        let message = message?;
        if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
            ends.remove(&message.partition());
        }
        each(&message)?;
    }
    Ok(())
}

/// Writes a cursor and waits for the broker to acknowledge it.
pub async fn save(
    producer: &FutureProducer,
    topic: &Topic,
    schemas: &SchemaSet,
    connector: &str,
    stream: &str,
    cursor: &str,
) -> Result<(), OffsetsError> {
    let version = schemas
        .current(EVENT)
        .ok_or_else(|| OffsetsError::Invalid("no connector_offset schema".into()))?;
    let value = Value::Record(vec![
        ("connector".into(), Value::String(connector.into())),
        ("stream".into(), Value::String(stream.into())),
        ("cursor".into(), Value::String(cursor.into())),
        (
            "updated_at".into(),
            Value::TimestampMillis(chrono::Utc::now().timestamp_millis()),
        ),
    ]);
    let payload = encode_with(version, value)?;
    let key = format!("{connector}/{stream}");
    let record = FutureRecord::to(&topic.name).key(&key).payload(&payload);
    crate::kafka::send_and_wait(producer, record, Duration::from_secs(30)).await?;
    Ok(())
}
