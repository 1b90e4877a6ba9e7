//! What ingest writes back to Kafka: dead letters (original bytes and headers plus where
//! they came from and why they failed) and one `lake.commits` record per Delta commit.

use super::batch::DeadLetter;
use super::table::Committed;
use crate::codec::SchemaSet;
use crate::kafka::{headers, send_and_wait};
use apache_avro::types::Value;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create the Kafka producer: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    #[error("cannot deliver to {topic}: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot encode the lake commit record: {0}")]
    Encode(#[from] crate::codec::CodecError),
}

/// Where the flush pipeline's records for Kafka go: `Publisher` sends them, unit tests keep
/// them.
pub trait Outbox {
    /// Sends every letter and waits until the broker has them all.
    fn dead_letters(&self, letters: &[DeadLetter]) -> impl Future<Output = Result<(), PublishError>>;

    /// Announces a commit on `lake.commits` (key = table) so later stages react to it.
    fn lake_commit(
        &self,
        schemas: &SchemaSet,
        table: &str,
        topic: &str,
        committed: &Committed,
        offsets: &[(i32, i64)],
    ) -> impl Future<Output = Result<(), PublishError>>;
}

pub struct Publisher {
    producer: FutureProducer,
    dlq_topic: String,
    commits_topic: String,
}

impl Publisher {
    pub fn new(kafka: &crate::config::KafkaConfig, dlq_topic: &str, commits_topic: &str) -> Result<Self, PublishError> {
        let producer = crate::kafka::client_config(kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .map_err(PublishError::Client)?;
        Ok(Self {
            producer,
            dlq_topic: dlq_topic.to_string(),
            commits_topic: commits_topic.to_string(),
        })
    }
}

impl Outbox for Publisher {
    async fn dead_letters(&self, letters: &[DeadLetter]) -> Result<(), PublishError> {
        // Where the record was makes the key unique (erasure tombstones one letter) and
        // the same when a replayed batch dead-letters it again (compaction keeps one).
        let keys: Vec<String> = letters
            .iter()
            .map(|l| format!("{}/{}/{}", l.topic, l.partition, l.offset))
            .collect();
        let sends = letters.iter().zip(&keys).map(|(l, key)| {
            let mut h = OwnedHeaders::new_with_capacity(l.headers.len() + 6);
            for (k, v) in &l.headers {
                h = h.insert(Header { key: k, value: Some(v) });
            }
            if let Some(key) = &l.key {
                h = h.insert(Header {
                    key: headers::SOURCE_KEY,
                    value: Some(key.as_slice()),
                });
            }
            let partition = l.partition.to_string();
            let offset = l.offset.to_string();
            for (key, value) in [
                (headers::SOURCE_TOPIC, l.topic.as_str()),
                (headers::SOURCE_PARTITION, partition.as_str()),
                (headers::SOURCE_OFFSET, offset.as_str()),
                (headers::ERROR_CLASS, l.class),
                (headers::ERROR_MESSAGE, l.message.as_str()),
            ] {
                h = h.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.dlq_topic)
                .key(key.as_str())
                .payload(l.payload.as_slice())
                .headers(h);
            send_and_wait(&self.producer, record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|source| PublishError::Delivery {
                topic: self.dlq_topic.clone(),
                source,
            })?;
        }
        Ok(())
    }

    async fn lake_commit(
        &self,
        schemas: &SchemaSet,
        table: &str,
        topic: &str,
        committed: &Committed,
        offsets: &[(i32, i64)],
    ) -> Result<(), PublishError> {
        let offsets = offsets
            .iter()
            .map(|&(partition, offset)| {
                Value::Record(vec![
                    ("topic".into(), Value::String(topic.to_string())),
                    ("partition".into(), Value::Int(partition)),
                    ("offset".into(), Value::Long(offset)),
                ])
            })
            .collect();
        let value = Value::Record(vec![
            ("table".into(), Value::String(table.to_string())),
            (
                "version".into(),
                Value::Long(i64::try_from(committed.version).unwrap_or(i64::MAX)),
            ),
            ("rows".into(), Value::Long(committed.rows as i64)),
            ("files".into(), Value::Int(committed.files as i32)),
            (
                "committed_at".into(),
                Value::TimestampMillis(chrono::Utc::now().timestamp_millis()),
            ),
            ("offsets".into(), Value::Array(offsets)),
        ]);
        let payload = schemas.encode("lake_commit", value)?;
        let record = FutureRecord::to(&self.commits_topic).key(table).payload(&payload);
        send_and_wait(&self.producer, record, Duration::from_secs(30))
            .await
            .map_err(|source| PublishError::Delivery {
                topic: self.commits_topic.clone(),
                source,
            })?;
        Ok(())
    }
}
