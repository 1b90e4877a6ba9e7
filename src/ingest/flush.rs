//! Flushing a batch: dead letters first, then rows and offsets in one lake commit that runs
//! in the background while the next batch fills, then the announcements.
//!
//! Why in the background: on HDFS a commit is mostly waiting. Each file close asks the
//! NameNode to complete the file, and when the DataNode's block report has not arrived yet
//! the client sleeps 500 ms before asking again; a commit closes two files (data and log
//! entry). A worker that waited would consume nothing for about a second per batch.
//! At most one commit per topic is in flight, so stored offsets still advance strictly in
//! order and the fencing check sees every predecessor.

use super::IngestError;
use super::assign::IngestContext;
use super::batch::{DeadLetter, TopicBatch};
use super::table::{Committed, RawTable, TableError};
use super::worker::{Worker, letter};
use crate::config::IngestConfig;
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{Instrument, Span, info, info_span, warn};

/// Partition -> (offset stored before this batch, last offset in it).
type Offsets = BTreeMap<i32, (Option<i64>, i64)>;

/// A batch whose commit is running.
pub struct InFlight {
    batch: TopicBatch,
    offsets: Offsets,
    /// Records already published as dead letters, so a refused batch does not repeat them.
    published: HashSet<(i32, i64)>,
    rows_empty: bool,
    started: Instant,
    span: Span,
    task: JoinHandle<(RawTable, Result<Committed, TableError>, Duration)>,
}

impl InFlight {
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Ids in a batch not landed yet still count as seen for the batch filling behind it.
    pub fn has_id(&self, hash: u64) -> bool {
        self.batch.ids.contains(&hash)
    }
}

/// Commits running in the background. A revoke waits for them before the partitions go
/// to another worker, so the new owner reads offsets no commit of ours will move again.
#[derive(Clone, Default)]
pub struct Running(Arc<AtomicUsize>);

pub struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Running {
    fn start(&self) -> RunningGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        RunningGuard(self.0.clone())
    }

    /// Blocks until no commit runs or `limit` passes; false when they are still running.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.0.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Worker {
    /// Flushes `topic` unless its previous commit is still running and the batch has room
    /// to keep filling (up to twice the configured limits); a full-enough batch waits.
    pub(super) fn flush_when_free(
        &mut self,
        topic: &str,
        consumer: &BaseConsumer<IngestContext>,
    ) -> Result<(), IngestError> {
        let busy = self.inflight.get(topic).is_some_and(|f| !f.is_finished());
        let roomy = self.batches.get(topic).is_none_or(|b| {
            b.rows < self.config.max_batch_rows.saturating_mul(2)
                && b.bytes < self.config.max_batch_bytes.saturating_mul(2)
        });
        if busy && roomy {
            return Ok(());
        }
        self.flush(topic, consumer)
    }

    /// Hands the topic's batch to a background commit, after settling the previous one.
    pub(super) fn flush(&mut self, topic: &str, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        self.settle(topic, consumer)?;
        let Some(mut batch) = self.batches.remove(topic) else {
            return Ok(());
        };
        if batch.is_empty() {
            return Ok(());
        }
        let span = info_span!(
            "batch",
            topic,
            rows = batch.rows,
            bytes = batch.bytes,
            dead = batch.letters.len()
        );
        let started = Instant::now();
        let offsets: Offsets = batch
            .offsets
            .iter()
            .map(|(&p, &(_, last))| {
                let stored = self.stored.get(topic).and_then(|ps| ps.get(&p)).copied().flatten();
                (p, (stored, last))
            })
            .collect();
        if !self.tables.contains_key(topic) {
            let table = self.retry("open table", || {
                RawTable::open(&self.lake, topic, &self.config.group, self.config.target_file_bytes)
            })?;
            self.tables.insert(topic.to_string(), table);
        }
        let schema = self.tables.get(topic).and_then(RawTable::arrow_schema);
        let rows = match batch.finish(schema.as_ref()) {
            Ok(rows) => rows,
            Err(e) => {
                span.in_scope(|| warn!(error = %e, "batch cannot be assembled; dead-lettering its rows"));
                self.reject_rows(&mut batch, &e.to_string(), &HashSet::new());
                Vec::new()
            }
        };
        let mut published = HashSet::new();
        self.publish_letters(topic, &mut batch, &mut published)?;
        let exists = self.tables.get(topic).is_some_and(RawTable::exists);
        if rows.is_empty() && !exists {
            // Only dead letters and no table yet to hold offsets: the first batch with
            // rows stores offsets that cover these too (letters may repeat after a crash).
            span.in_scope(|| info!("batch of dead letters only; offsets wait for the table's first rows"));
            return Ok(());
        }
        let mut table = self
            .tables
            .remove(topic)
            .ok_or(IngestError::Internal("table vanished".into()))?;
        let (config, guard, task_offsets) = (self.config.clone(), self.running.start(), offsets.clone());
        let rows_empty = rows.is_empty();
        let task = self.handle.spawn(
            async move {
                let _running = guard;
                let commit_started = Instant::now();
                let result = commit_with_retry(&mut table, &rows, &task_offsets, &config).await;
                (table, result, commit_started.elapsed())
            }
            .instrument(span.clone()),
        );
        let flight = InFlight {
            batch,
            offsets,
            published,
            rows_empty,
            started,
            span,
            task,
        };
        self.inflight.insert(topic.to_string(), flight);
        Ok(())
    }

    /// Settles every commit that has finished, without waiting for the others.
    pub(super) fn settle_finished(&mut self, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        let done: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.is_finished())
            .map(|(t, _)| t.clone())
            .collect();
        for topic in done {
            self.settle(&topic, consumer)?;
        }
        Ok(())
    }

    pub(super) fn settle_all(&mut self, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        let topics: Vec<String> = self.inflight.keys().cloned().collect();
        for topic in topics {
            self.settle(&topic, consumer)?;
        }
        Ok(())
    }

    /// Waits for the topic's commit, then records it, announces it and commits group offsets.
    fn settle(&mut self, topic: &str, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        let Some(flight) = self.inflight.remove(topic) else {
            return Ok(());
        };
        let InFlight {
            mut batch,
            offsets,
            mut published,
            mut rows_empty,
            started,
            span,
            task,
        } = flight;
        let _enter = span.enter();
        let (table, mut result, took) = self
            .handle
            .block_on(task)
            .map_err(|e| IngestError::Internal(format!("lake commit task failed: {e}")))?;
        self.tables.insert(topic.to_string(), table);
        self.telemetry.ingest.commit_seconds.observe(took.as_secs_f64());
        let committed = loop {
            match result {
                Ok(c) => break c,
                Err(TableError::Fenced { partition, .. }) => {
                    warn!(partition, "another worker advanced this topic; abandoning the batch");
                    self.summary.abandoned_batches += 1;
                    return self.resync(topic, consumer);
                }
                Err(TableError::Rejected { source, .. }) if rows_empty => {
                    return Err(IngestError::Step(format!(
                        "the lake refused an offsets-only commit: {source}"
                    )));
                }
                Err(TableError::Rejected { source, .. }) => {
                    warn!(error = %source, "the lake refused the batch; dead-lettering its rows");
                    self.reject_rows(&mut batch, &source.to_string(), &published);
                    self.publish_letters(topic, &mut batch, &mut published)?;
                    rows_empty = true;
                    let commit_started = Instant::now();
                    let table = self
                        .tables
                        .get_mut(topic)
                        .ok_or(IngestError::Internal("table vanished".into()))?;
                    result = self
                        .handle
                        .block_on(commit_with_retry(table, &[], &offsets, &self.config));
                    self.telemetry
                        .ingest
                        .commit_seconds
                        .observe(commit_started.elapsed().as_secs_f64());
                }
                Err(e @ TableError::Transient { .. }) => return Err(IngestError::LakeUnavailable(Box::new(e))),
            }
        };
        self.landed(topic, batch, &offsets, &committed, consumer);
        self.telemetry
            .ingest
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        info!(
            version = committed.version,
            rows = committed.rows,
            files = committed.files,
            ms = started.elapsed().as_millis() as u64,
            "batch committed"
        );
        Ok(())
    }

    /// After a commit: offsets, metrics, the dedup horizon, `lake.commits` and group offsets.
    fn landed(
        &mut self,
        topic: &str,
        mut batch: TopicBatch,
        offsets: &Offsets,
        committed: &Committed,
        consumer: &BaseConsumer<IngestContext>,
    ) {
        for (&p, &(_, last)) in offsets {
            self.stored.entry(topic.to_string()).or_default().insert(p, Some(last));
        }
        let labels = vec![("topic", topic.to_string())];
        self.telemetry
            .ingest
            .records_landed
            .get_or_create(&labels)
            .inc_by(committed.rows);
        self.telemetry.ingest.commits.get_or_create(&labels).inc();
        self.telemetry.ingest.batch_rows.observe(batch.rows as f64);
        self.telemetry.ingest.batch_bytes.observe(batch.bytes as f64);
        if let Some(oldest) = batch.oldest_kafka_ms {
            let lag_ms = chrono::Utc::now().timestamp_millis() - oldest;
            self.telemetry
                .ingest
                .event_to_commit_seconds
                .observe(lag_ms.max(0) as f64 / 1000.0);
        }
        self.summary.landed += committed.rows;
        self.summary.commits += 1;
        let capacity = usize::try_from(self.config.dedup_horizon_events).unwrap_or(usize::MAX);
        self.horizons
            .entry(topic.to_string())
            .or_insert_with(|| super::checks::Horizon::new(capacity))
            .extend(batch.ids.drain());
        let table_name = self.tables.get(topic).map(|t| t.name.clone()).unwrap_or_default();
        let offset_list: Vec<(i32, i64)> = offsets.iter().map(|(&p, &(_, last))| (p, last)).collect();
        if let Err(e) = self.retry("announce lake commit", || {
            self.publisher
                .lake_commit(&self.schemas, &table_name, topic, committed, &offset_list)
        }) {
            // The data is safely in the lake; marts also catch up from table versions.
            warn!(error = %e, "lake commit announcement lost");
        }
        // Group offsets only serve lag tooling; the lake's txn actions are the truth.
        let mut tpl = TopicPartitionList::new();
        for &(p, last) in &offset_list {
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(last + 1));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "group offset commit failed (lag tooling only)");
        }
    }

    fn publish_letters(
        &mut self,
        topic: &str,
        batch: &mut TopicBatch,
        published: &mut HashSet<(i32, i64)>,
    ) -> Result<(), IngestError> {
        let letters = std::mem::take(&mut batch.letters);
        if letters.is_empty() {
            return Ok(());
        }
        self.retry("publish dead letters", || self.publisher.dead_letters(&letters))?;
        published.extend(letters.iter().map(|l| (l.partition, l.offset)));
        for l in &letters {
            self.telemetry
                .ingest
                .dead_letters
                .get_or_create(&vec![("topic", topic.to_string()), ("class", l.class.to_string())])
                .inc();
        }
        self.summary.dead_letters += letters.len() as u64;
        Ok(())
    }

    /// After losing a partition to another worker mid-batch: reread the lake and continue
    /// right after what it holds.
    fn resync(&mut self, topic: &str, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        // Rows consumed after the abandoned batch rest on offsets that are no longer ours.
        if let Some(next) = self.batches.remove(topic)
            && !next.is_empty()
        {
            self.summary.abandoned_batches += 1;
        }
        let partitions: Vec<i32> = self
            .stored
            .get(topic)
            .map(|ps| ps.keys().copied().collect())
            .unwrap_or_default();
        let table = self
            .tables
            .get_mut(topic)
            .ok_or(IngestError::Internal("table vanished".into()))?;
        let stored = self
            .handle
            .block_on(table.stored_offsets(&partitions))
            .map_err(|e| IngestError::LakeUnavailable(Box::new(e)))?;
        for (p, s) in stored {
            let offset = s.map_or(Offset::Beginning, |s| Offset::Offset(s + 1));
            if let Err(e) = consumer.seek(topic, p, offset, Duration::from_secs(10)) {
                warn!(partition = p, error = %e, "seek after losing the race failed");
            }
            self.stored.entry(topic.to_string()).or_default().insert(p, s);
        }
        Ok(())
    }

    /// Turns every row of the batch into a `write_failed` letter, except records that
    /// already are (or were) dead letters.
    fn reject_rows(&self, batch: &mut TopicBatch, reason: &str, published: &HashSet<(i32, i64)>) {
        let mut already: HashSet<(i32, i64)> = batch.letters.iter().map(|l| (l.partition, l.offset)).collect();
        already.extend(published);
        let topic = batch.topic.clone();
        let extra: Vec<DeadLetter> = batch
            .originals
            .iter()
            .filter(|o| !already.contains(&(o.partition, o.offset)))
            .map(|o| letter(&topic, &o, "write_failed", reason.to_string()))
            .collect();
        batch.letters.extend(extra);
    }
}

async fn commit_with_retry(
    table: &mut RawTable,
    rows: &[RecordBatch],
    offsets: &Offsets,
    config: &IngestConfig,
) -> Result<Committed, TableError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut wait = Duration::from_millis(config.retry_backoff_ms);
    loop {
        match table.commit(rows.to_vec(), offsets).await {
            Err(e @ TableError::Transient { .. }) if Instant::now() + wait < deadline => {
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "lake commit failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            other => return other,
        }
    }
}
