//! What every connector does with a source item: map it onto the topic's schema, encode
//! it as single-object Avro keyed by the topic's key, or keep it on `dlq.raw` with why.

use super::mapping::apply;
use crate::catalog::Topic;
use crate::codec::json::to_avro;
use crate::codec::{SchemaVersion, encode_with};
use crate::kafka::{headers, send_and_wait};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value as Json;
use std::time::Duration;

/// The Kafka key and Avro payload of one item, or why it does not fit the schema.
pub fn prepare(topic: &Topic, version: &SchemaVersion, item: &Json) -> Result<(Option<String>, Vec<u8>), String> {
    let mapping = topic
        .source
        .as_ref()
        .map(|s| &s.mapping)
        .ok_or("the topic declares no [source.mapping]")?;
    let json = apply(item, mapping)?;
    let value = to_avro(&json, &version.schema)?;
    let key = topic.key_of(&value);
    let payload = encode_with(version, value).map_err(|e| e.to_string())?;
    Ok((key, payload))
}

/// Produces prepared records and waits for the broker to have all of them; the first
/// delivery error if it did not take one.
pub async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[(Option<String>, Vec<u8>)],
) -> Result<(), KafkaError> {
    let deliveries = records.iter().map(|(key, payload)| {
        let mut record = FutureRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        send_and_wait(producer, record, Duration::from_secs(30))
    });
    futures::future::join_all(deliveries)
        .await
        .into_iter()
        .try_for_each(|delivery| delivery.map(|_| ()))
}

/// Keeps `payload` on the dead-letter topic with where it came from and why.
pub async fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    origin: &str,
    payload: &[u8],
    class: &str,
    reason: &str,
) -> Result<(), KafkaError> {
    let h = OwnedHeaders::new()
        .insert(Header {
            key: headers::SOURCE_TOPIC,
            value: Some(origin),
        })
        .insert(Header {
            key: headers::ERROR_CLASS,
            value: Some(class),
        })
        .insert(Header {
            key: headers::ERROR_MESSAGE,
            value: Some(reason),
        });
    // A unique key: erasure tombstones single letters on the compacted dead-letter topic.
    let key = format!("{origin}/{}", uuid::Uuid::new_v4());
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(dlq).key(key.as_str()).payload(payload).headers(h);
    send_and_wait(producer, record, Duration::from_secs(30))
        .await
        .map(|_| ())
}
