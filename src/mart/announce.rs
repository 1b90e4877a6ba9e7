//! `mart.changes`: the customers whose portrait a fold changed, keyed by customer id so
//! one customer's changes stay in order for the recommender.
//!
//! Announcing follows the portrait's commit, so a crash between the two would leave those
//! customers' lists stale for good. The portrait's Delta version says what there is to
//! announce: at start the stage reads the newest version announced on the topic and
//! announces again the customers of every portrait commit since (at least once: a list
//! is recomputed once more, nothing worse).

use super::MartError;
use super::error::FoldError;
use super::fold::PORTRAIT;
use super::tables::MartTable;
use crate::config::KafkaConfig;
use crate::lake::LakeUrl;
use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Announcer {
    producer: FutureProducer,
    kafka: KafkaConfig,
    topic: String,
    schemas: Arc<crate::codec::SchemaSet>,
}

impl Announcer {
    pub fn new(kafka: &KafkaConfig, topic: &str, schemas: Arc<crate::codec::SchemaSet>) -> Result<Self, MartError> {
        let producer = crate::kafka::client_config(kafka)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()?;
        Ok(Self {
            producer,
            kafka: kafka.clone(),
            topic: topic.to_string(),
            schemas,
        })
    }

    /// Publishes one change per customer and waits until the broker has them all. A
    /// change of more customers than the producer's queue holds (a catalogue import
    /// touches everyone) waits for deliveries instead of failing.
    pub async fn announce(&self, portrait_version: Option<u64>, customers: &[String]) -> Result<(), MartError> {
        // Lets the recovery test stop the process exactly between the portrait's commit
        // and its announcement, as a kill -9 there would.
        if !customers.is_empty() && std::env::var_os("HOFFREC_TEST_ABORT_BEFORE_ANNOUNCE").is_some() {
            std::process::abort();
        }
        let version = portrait_version.unwrap_or_default() as i64;
        let now = chrono::Utc::now().timestamp_millis();
        let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
        for customer in customers {
            let value = Value::Record(vec![
                ("customer_id".into(), Value::String(customer.clone())),
                ("mart".into(), Value::String(PORTRAIT.into())),
                ("mart_version".into(), Value::Long(version)),
                ("changed_at".into(), Value::TimestampMillis(now)),
            ]);
            let payload = self.schemas.encode("mart_change", value)?;
            loop {
                let record = FutureRecord::to(&self.topic).key(customer.as_str()).payload(&payload);
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => match pending.pop_front() {
                        Some(oldest) => settle(oldest).await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Err((e, _)) => return Err(MartError::Kafka(e)),
                }
            }
        }
        for delivery in pending {
            settle(delivery).await?;
        }
        Ok(())
    }

    /// Announces again the customers of every portrait commit the topic has not seen:
    /// from the newest version announced (inclusive: a crash may have cut it short) to
    /// the current one. Returns how many customers were announced.
    pub async fn recover(&self, lake: &LakeUrl) -> Result<usize, MartError> {
        let portrait = MartTable::open(lake, PORTRAIT).await.map_err(FoldError::from)?;
        let Some(current) = portrait.version() else {
            return Ok(0);
        };
        let announced = tokio::task::block_in_place(|| self.newest_announced())?;
        if announced.is_some_and(|a| a >= current) {
            return Ok(0);
        }
        let from = announced.unwrap_or(0);
        let customers = portrait
            .keys_written(&super::session::session(), "customer_id", from, current)
            .await
            .map_err(FoldError::from)?;
        if customers.is_empty() {
            return Ok(0);
        }
        tracing::warn!(
            customers = customers.len(),
            from,
            to = current,
            "portrait versions not announced (the stage stopped between commit and announcement); announcing them"
        );
        self.announce(Some(current), &customers).await?;
        Ok(customers.len())
    }

    /// The largest `mart_version` among the newest record of each partition (None: the
    /// topic holds nothing, e.g. all of it expired). A partition that does not answer in
    /// time only makes the answer smaller, so more is announced, never less.
    fn newest_announced(&self) -> Result<Option<u64>, MartError> {
        let timeout = Duration::from_secs(30);
        // Offsets are assigned below; `latest` is librdkafka's own default, kept.
        let consumer: BaseConsumer =
            crate::kafka::consumer_config(&self.kafka, "hoffrec-mart-announce-recovery", "latest").create()?;
        let metadata = consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let mut newest = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(&self.topic, p.id(), timeout)?;
            if high > low {
                newest.add_partition_offset(&self.topic, p.id(), Offset::Offset(high - 1))?;
            }
        }
        let expected = newest.count();
        if expected == 0 {
            return Ok(None);
        }
        consumer.assign(&newest)?;
        let deadline = Instant::now() + timeout;
        let (mut read, mut version) = (0, None);
        while read < expected && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            read += 1;
            let decoded = message
                .payload()
                .and_then(|p| self.schemas.decode(p, "mart_change").ok());
            if let Some(Value::Record(fields)) = decoded
                && let Some((_, Value::Long(v))) = fields.iter().find(|(n, _)| n == "mart_version")
            {
                version = version.max(u64::try_from(*v).ok());
            }
        }
        Ok(version)
    }
}

async fn settle(delivery: DeliveryFuture) -> Result<(), MartError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(MartError::Kafka(e)),
        Err(_) => Err(MartError::ProducerGone),
    }
}
