//! Partition assignment that honours the lake: when the group hands this worker
//! partitions, it reads the offsets stored in each table's `txn` actions and starts every
//! partition right after them, so Kafka's own committed offsets never decide what lands.

use super::table::RawTable;
use crate::lake::LakeUrl;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

pub type Stored = HashMap<(String, i32), Option<i64>>;

#[derive(Debug)]
pub enum RebalanceEvent {
    /// Partitions now ours, with the offset last stored in the lake for each.
    Assigned(Stored),
    /// Every partition was taken away (eager protocol): in-flight batches are abandoned.
    Revoked,
    Failed(String),
}

pub struct IngestContext {
    handle: tokio::runtime::Handle,
    lake: LakeUrl,
    group: String,
    target_file_bytes: u64,
    running: super::flush::Running,
    events: Mutex<Vec<RebalanceEvent>>,
    /// High watermarks from librdkafka's periodic statistics, for the lag gauges.
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
}

impl IngestContext {
    pub fn new(
        handle: tokio::runtime::Handle,
        lake: LakeUrl,
        group: &str,
        target_file_bytes: u64,
        running: super::flush::Running,
    ) -> Self {
        Self {
            handle,
            lake,
            group: group.to_string(),
            target_file_bytes,
            running,
            events: Mutex::new(Vec::new()),
            high_watermarks: Mutex::new(HashMap::new()),
        }
    }

    pub fn take_events(&self) -> Vec<RebalanceEvent> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.high_watermarks
            .lock()
            .ok()
            .and_then(|h| h.get(&(topic.to_string(), partition)).copied())
    }

    fn push(&self, event: RebalanceEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    /// Reads stored offsets, retrying storage hiccups for a while: a worker that cannot
    /// know where to start must not start.
    fn stored_offsets(&self, partitions: &[(String, i32)]) -> Result<Stored, String> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        let mut last_error = String::new();
        for attempt in 0..6u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            let result: Result<Stored, String> = self.handle.block_on(async {
                let mut out = Stored::new();
                for (topic, ps) in &by_topic {
                    let mut table = RawTable::open(&self.lake, topic, &self.group, self.target_file_bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                    for (p, stored) in table.stored_offsets(ps).await.map_err(|e| e.to_string())? {
                        out.insert((topic.to_string(), p), stored);
                    }
                }
                Ok(out)
            });
            match result {
                Ok(stored) => return Ok(stored),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "reading stored offsets failed");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Ok(mut h) = self.high_watermarks.lock() {
            for (name, topic) in &statistics.topics {
                for (&p, partition) in &topic.partitions {
                    if p >= 0 && partition.hi_offset >= 0 {
                        h.insert((name.clone(), p), partition.hi_offset);
                    }
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                match self.stored_offsets(&partitions) {
                    Ok(stored) => {
                        for ((topic, p), s) in &stored {
                            let offset = s.map_or(Offset::Beginning, |s| Offset::Offset(s + 1));
                            if let Err(e) = tpl.set_partition_offset(topic, *p, offset) {
                                self.push(RebalanceEvent::Failed(e.to_string()));
                                return;
                            }
                        }
                        tracing::info!(
                            partitions = partitions.len(),
                            "assigned; starting after the lake's stored offsets"
                        );
                        match consumer.assign(tpl) {
                            Ok(()) => self.push(RebalanceEvent::Assigned(stored)),
                            Err(e) => self.push(RebalanceEvent::Failed(format!("assign failed: {e}"))),
                        }
                    }
                    Err(e) => self.push(RebalanceEvent::Failed(format!("cannot read stored offsets: {e}"))),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Commits still running store offsets of these partitions; the next owner
                // must read the lake after them. Lake retries give up within 120 s.
                if !self.running.wait_idle(Duration::from_secs(150)) {
                    tracing::warn!("lake commits still running at revoke; the next owner's fencing check decides");
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
                self.push(RebalanceEvent::Revoked);
            }
            other => self.push(RebalanceEvent::Failed(format!("rebalance error {other:?}"))),
        }
    }
}
