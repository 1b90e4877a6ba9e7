//! Partition assignment that honours the lake: when the group hands this worker
//! partitions, it reads the offsets stored in each table's `txn` actions and starts every
//! partition right after them, so Kafka's own committed offsets never decide what lands.

use super::offsets::{StoredOffsets, start_after};
use super::retry::Policy;
use super::running::Running;
use super::table::{RawTable, TableError};
use crate::lake::LakeUrl;
use backon::BlockingRetryable;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug)]
pub enum RebalanceEvent {
    /// Partitions now ours, with the offset last stored in the lake for each.
    Assigned(StoredOffsets),
    /// Every partition was taken away (eager protocol): in-flight batches are abandoned.
    Revoked,
    Failed(String),
}

pub struct IngestContext {
    handle: tokio::runtime::Handle,
    lake: LakeUrl,
    group: String,
    target_file_bytes: u64,
    running: Running,
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
        running: Running,
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
    fn stored_offsets(&self, partitions: &[(String, i32)]) -> Result<StoredOffsets, TableError> {
        let by_topic = by_topic(partitions);
        let mut attempt = 0u32;
        let result = (|| self.handle.block_on(self.read_stored(&by_topic)))
            .retry(Policy::assignment().delays())
            .notify(|e, _| {
                tracing::warn!(attempt, error = %e, "reading stored offsets failed");
                attempt += 1;
            })
            .call();
        result.inspect_err(|e| tracing::warn!(attempt, error = %e, "reading stored offsets failed"))
    }

    async fn read_stored(&self, by_topic: &BTreeMap<&str, Vec<i32>>) -> Result<StoredOffsets, TableError> {
        let mut out = StoredOffsets::default();
        for (topic, ps) in by_topic {
            let mut table = RawTable::open(&self.lake, topic, &self.group, self.target_file_bytes).await?;
            for (p, stored) in table.stored_offsets(ps).await? {
                out.set(topic, p, stored);
            }
        }
        Ok(out)
    }
}

/// One table per topic is read for all its partitions.
fn by_topic(partitions: &[(String, i32)]) -> BTreeMap<&str, Vec<i32>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    by_topic
}

/// Sets every assigned partition to start right after its stored offset.
fn start_after_stored(tpl: &mut TopicPartitionList, stored: &StoredOffsets) -> Result<(), rdkafka::error::KafkaError> {
    for (topic, p, s) in stored.iter() {
        tpl.set_partition_offset(topic, p, start_after(s))?;
    }
    Ok(())
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
                        if let Err(e) = start_after_stored(tpl, &stored) {
                            self.push(RebalanceEvent::Failed(e.to_string()));
                            return;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::checks::Horizon;
    use crate::ingest::testing;
    use rdkafka::topic_partition_list::Offset;

    #[test]
    fn partitions_start_right_after_the_lake_offsets() {
        let mut stored = StoredOffsets::default();
        stored.set("a", 0, Some(9));
        stored.set("a", 1, None);
        stored.set("b", 3, Some(0));
        let mut tpl = TopicPartitionList::new();
        for (t, p) in [("a", 0), ("a", 1), ("b", 3)] {
            tpl.add_partition(t, p);
        }
        start_after_stored(&mut tpl, &stored).unwrap();
        let starts: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), e.offset()))
            .collect();
        assert_eq!(
            starts,
            [
                ("a".into(), 0, Offset::Offset(10)),
                ("a".into(), 1, Offset::Beginning),
                ("b".into(), 3, Offset::Offset(1))
            ]
        );
    }

    #[test]
    fn each_table_is_read_once_for_all_its_partitions() {
        let partitions = [("b".to_string(), 1), ("a".to_string(), 2), ("b".to_string(), 0)];
        let grouped = by_topic(&partitions);
        assert_eq!(grouped, BTreeMap::from([("a", vec![2]), ("b", vec![1, 0])]));
    }

    #[test]
    fn stored_offsets_are_read_from_the_tables_of_the_group() {
        let runtime = testing::runtime();
        let (_dir, lake) = testing::lake();
        let mut batch = testing::sealed("t", 0, 0..3, &mut Horizon::new(100));
        runtime.block_on(async {
            let mut table = RawTable::open(&lake, "t", "g", 1 << 20).await.unwrap();
            let rows = batch.finish(None).unwrap();
            table.commit(rows, &BTreeMap::from([(0, (None, 2))])).await.unwrap();
        });
        let partitions = [("t".to_string(), 0), ("t".to_string(), 1), ("u".to_string(), 0)];
        let ours = IngestContext::new(runtime.handle().clone(), lake.clone(), "g", 1 << 20, Running::default());
        let stored = ours.stored_offsets(&partitions).unwrap();
        assert_eq!(stored.get("t", 0), Some(Some(2)));
        assert_eq!(stored.get("t", 1), Some(None));
        // No table yet: nothing stored, reading starts at the beginning.
        assert_eq!(stored.get("u", 0), Some(None));
        let other = IngestContext::new(runtime.handle().clone(), lake, "h", 1 << 20, Running::default());
        assert_eq!(other.stored_offsets(&partitions).unwrap().get("t", 0), Some(None));
    }
}
