//! Reads the whole compacted list topic into the store, from the snapshot's positions or
//! the beginning, and keeps reading. Every replica reads every partition (no consumer
//! group), so replicas scale by adding them; a replica is ready once it has read up to
//! the end offsets it saw when it started.

use super::ServeError;
use crate::codec::SchemaSet;
use crate::config::KafkaConfig;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One record of a compacted topic, as a follower applies it.
pub enum Change<T> {
    Put(T),
    /// A tombstone (erasure, or a product without related products): the key's record is
    /// withdrawn.
    Remove(String),
}

/// Where a follower puts what it reads: newest record per key, and the positions read.
pub trait Sink: Send + Sync + 'static {
    type Record;
    fn decode(schemas: &SchemaSet, payload: &[u8]) -> Result<Self::Record, String>;
    /// Applies records read from one partition up to `next` (exclusive).
    fn apply(&self, partition: i32, next: i64, changes: Vec<Change<Self::Record>>);
    fn positions(&self) -> BTreeMap<i32, i64>;
    /// How many keys are held.
    fn held(&self) -> usize;
}

/// Records read from one partition and the offset after them.
type Pending<T> = (i64, Vec<Change<T>>);

/// How far the follower got.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Followed {
    pub records: u64,
    pub undecodable: u64,
    /// From start to caught up; `None` if it stopped first.
    pub catch_up_ms: Option<u64>,
}

/// Records of one chunk, at most this many, go into the store under one lock.
const CHUNK: usize = 2048;

pub async fn run<S: Sink>(
    kafka: &KafkaConfig,
    topic: &str,
    schemas: Arc<SchemaSet>,
    store: S,
    (records, lists): (Counter, Gauge),
    caught_up: impl FnOnce(),
    shutdown: CancellationToken,
) -> Result<Followed, ServeError> {
    let started = Instant::now();
    let consumer: StreamConsumer = crate::kafka::client_config(kafka)
        // Assigned, never subscribed: the group id only names the client to the broker.
        .set("group.id", format!("hoffrec-serve-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let timeout = Duration::from_millis(kafka.request_timeout_ms);
    let (assignment, mut behind) = tokio::task::block_in_place(|| {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(ServeError::NoTopic(topic.to_string()));
        }
        let from = store.positions();
        let mut tpl = TopicPartitionList::new();
        let mut behind = BTreeMap::new();
        for p in partitions {
            let start = from.get(&p).map_or(Offset::Beginning, |&o| Offset::Offset(o));
            tpl.add_partition_offset(topic, p, start)?;
            let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
            if high > from.get(&p).copied().unwrap_or(0) {
                behind.insert(p, high);
            }
        }
        Ok((tpl, behind))
    })?;
    consumer.assign(&assignment)?;
    let mut followed = Followed::default();
    let mut caught_up = Some(caught_up);
    let mut check = |behind: &mut BTreeMap<i32, i64>, followed: &mut Followed| {
        let at = store.positions();
        // The consumer's position counts too: a transaction marker at the end of a
        // partition is never delivered as a record.
        let consumed = consumer.position().ok();
        behind.retain(|p, high| {
            let read = consumed
                .as_ref()
                .and_then(|tpl| tpl.find_partition(topic, *p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            at.get(p).copied().unwrap_or(0).max(read.unwrap_or(0)) < *high
        });
        if behind.is_empty()
            && let Some(ready) = caught_up.take()
        {
            followed.catch_up_ms = Some(started.elapsed().as_millis() as u64);
            tracing::info!(
                records = store.held(),
                ms = followed.catch_up_ms,
                "caught up with {topic}"
            );
            ready();
        }
    };
    check(&mut behind, &mut followed);
    let mut stream = consumer.stream().ready_chunks(CHUNK);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick(), if !behind.is_empty() => {
                check(&mut behind, &mut followed);
                continue;
            }
            chunk = stream.next() => chunk,
        };
        let Some(chunk) = chunk else { break };
        let mut by_partition: BTreeMap<i32, Pending<S::Record>> = BTreeMap::new();
        for message in chunk {
            let m = message?;
            let entry = by_partition.entry(m.partition()).or_insert((0, Vec::new()));
            entry.0 = m.offset() + 1;
            followed.records += 1;
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            match (m.payload(), key) {
                (None, Some(key)) => entry.1.push(Change::Remove(key)),
                (None, None) => {}
                (Some(payload), _) => match S::decode(&schemas, payload) {
                    Ok(list) => entry.1.push(Change::Put(list)),
                    Err(reason) => {
                        // Not a list this reader can show; the producer's dead letters
                        // are the place for it, here it is counted and passed over.
                        followed.undecodable += 1;
                        tracing::warn!(partition = m.partition(), offset = m.offset(), %reason, "undecodable list");
                    }
                },
            }
        }
        for (partition, (next, changes)) in by_partition {
            records.inc_by(changes.len() as u64);
            store.apply(partition, next, changes);
        }
        lists.set(store.held() as i64);
        if !behind.is_empty() {
            check(&mut behind, &mut followed);
        }
    }
    Ok(followed)
}
