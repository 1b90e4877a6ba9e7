//! What every connector does with a source item: map it onto the topic's schema, encode
//! it as single-object Avro keyed by the topic's key, or keep it on `dlq.raw` with why.

use super::json::to_avro;
use super::mapping::apply;
use crate::catalog::Topic;
use crate::codec::{SchemaVersion, encode_with};
use crate::ingest::publish::headers;
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

/// Produces prepared records and waits for the broker; false if any was not taken.
pub async fn send_all(producer: &FutureProducer, topic: &str, records: &[(Option<String>, Vec<u8>)]) -> bool {
    let deliveries = records.iter().map(|(key, payload)| {
        let mut record = FutureRecord::<str, [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        producer.send(record, Duration::from_secs(30))
    });
    futures::future::join_all(deliveries).await.iter().all(Result::is_ok)
}

/// Keeps `payload` on the dead-letter topic with where it came from and why.
pub async fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    origin: &str,
    payload: &[u8],
    class: &str,
    reason: &str,
) -> Result<(), rdkafka::error::KafkaError> {
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
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq).payload(payload).headers(h);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}
