//! Flushing a batch: dead letters first, then rows and offsets in one lake commit, then
//! the announcements. Batches move through a short pipeline per topic while the next one
//! fills: a flushed batch's data files are written at once (`RawTable::stage`), and the
//! oldest batch commits them with its offsets.
//!
//! Why a pipeline: on HDFS a commit is mostly waiting. Each file close asks the NameNode to
//! complete the file, and when the DataNode's block report has not arrived yet the client
//! sleeps 500 ms before asking again; a batch closes two files (data and log entry).
//! Writing the next batch's files while the previous batch commits hides one of the two
//! waits and keeps both cores busy. Commits stay one at a time and in order, and each
//! commit's offsets are worked out only when the one before it has settled, so stored
//! offsets still advance strictly in order and the fencing check sees every predecessor.

use super::IngestError;
use super::assign::IngestContext;
use super::batch::{DeadLetter, TopicBatch};
use super::checks::Reject;
use super::table::{Committed, RawTable, Rows, Staged, TableError};
use super::worker::Worker;
use crate::config::IngestConfig;
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{Instrument, Span, info, info_span, warn};

/// Partition -> (offset stored before this batch, last offset in it).
type Offsets = BTreeMap<i32, (Option<i64>, i64)>;

type CommitTask = JoinHandle<(RawTable, Result<Committed, TableError>, Duration)>;

/// A flushed batch on its way into the lake.
pub struct InFlight {
    batch: TopicBatch,
    /// Records already published as dead letters, so a refused batch does not repeat them.
    published: HashSet<(i32, i64)>,
    rows_empty: bool,
    started: Instant,
    span: Span,
    step: Step,
}

enum Step {
    /// Waiting for the commits ahead of it; its data files may be written meanwhile.
    Waiting(Pending),
    /// Its commit runs, storing these offsets.
    Committing { offsets: Offsets, task: CommitTask },
}

enum Pending {
    Staging(JoinHandle<Result<Staged, TableError>>),
    /// Rows the commit writes itself: a new table, a new schema version, or none at all.
    Rows(Vec<RecordBatch>),
}

impl InFlight {
    fn is_settleable(&self) -> bool {
        matches!(&self.step, Step::Committing { task, .. } if task.is_finished())
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
    /// Flushes `topic` when its pipeline has room; while it is full the batch keeps filling
    /// up to twice the configured limits, then the worker waits for the oldest commit.
    pub(super) fn flush_when_free(
        &mut self,
        topic: &str,
        consumer: &BaseConsumer<IngestContext>,
    ) -> Result<(), IngestError> {
        let depth = usize::try_from(self.config.max_batches_in_flight).unwrap_or(usize::MAX);
        let queued = self.inflight.get(topic).map_or(0, VecDeque::len);
        if queued >= depth {
            let roomy = self.batches.get(topic).is_none_or(|b| {
                b.rows < self.config.max_batch_rows.saturating_mul(2)
                    && b.bytes < self.config.max_batch_bytes.saturating_mul(2)
            });
            if roomy {
                return Ok(());
            }
            self.settle(topic, consumer, true)?;
        }
        self.flush(topic, consumer)
    }

    /// Hands the topic's batch to the pipeline: its dead letters are published, its data
    /// files start being written, and it commits when the batches ahead of it have.
    pub(super) fn flush(&mut self, topic: &str, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        self.settle_ready(topic, consumer)?;
        self.seal(topic, true);
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
        if !self.tables.contains_key(topic) {
            let table = self.retry("open table", || {
                RawTable::open(&self.lake, topic, &self.config.group, self.config.target_file_bytes)
            })?;
            self.tables.insert(topic.to_string(), table);
        }
        let table = self
            .tables
            .get(topic)
            .ok_or(IngestError::Internal("table vanished".into()))?;
        let rows = match batch.finish(table.arrow_schema().as_ref()) {
            Ok(rows) => rows,
            Err(e) => {
                span.in_scope(|| warn!(error = %e, "batch cannot be assembled; dead-lettering its rows"));
                self.reject_rows(&mut batch, &e.to_string(), &HashSet::new());
                Vec::new()
            }
        };
        let mut published = HashSet::new();
        self.publish_letters(topic, &mut batch, &mut published)?;
        let table = self
            .tables
            .get(topic)
            .ok_or(IngestError::Internal("table vanished".into()))?;
        if rows.is_empty() && !table.exists() && self.inflight.get(topic).is_none_or(VecDeque::is_empty) {
            // Only dead letters and no table yet to hold offsets: the first batch with
            // rows stores offsets that cover these too (letters may repeat after a crash).
            span.in_scope(|| info!("batch of dead letters only; offsets wait for the table's first rows"));
            return Ok(());
        }
        let rows_empty = rows.is_empty();
        let pending = match rows.first().map(RecordBatch::schema) {
            Some(schema) if table.stages(&schema) => {
                let (table, config) = (table.clone(), self.config.clone());
                Pending::Staging(
                    self.handle
                        .spawn(async move { stage_with_retry(&table, rows, &config).await }.instrument(span.clone())),
                )
            }
            _ => Pending::Rows(rows),
        };
        self.inflight.entry(topic.to_string()).or_default().push_back(InFlight {
            batch,
            published,
            rows_empty,
            started,
            span,
            step: Step::Waiting(pending),
        });
        self.start_next(topic);
        Ok(())
    }

    /// Starts the commit of the topic's oldest batch unless a commit is already running.
    fn start_next(&mut self, topic: &str) {
        let Some(front) = self.inflight.get_mut(topic).and_then(VecDeque::front_mut) else {
            return;
        };
        if matches!(front.step, Step::Committing { .. }) {
            return;
        }
        let Some(mut table) = self.tables.get(topic).cloned() else {
            return;
        };
        let offsets: Offsets = front
            .batch
            .offsets
            .iter()
            .map(|(&p, &(_, last))| {
                let stored = self.stored.get(topic).and_then(|ps| ps.get(&p)).copied().flatten();
                (p, (stored, last))
            })
            .collect();
        let placeholder = Step::Waiting(Pending::Rows(Vec::new()));
        let Step::Waiting(pending) = std::mem::replace(&mut front.step, placeholder) else {
            return;
        };
        let (config, guard, task_offsets) = (self.config.clone(), self.running.start(), offsets.clone());
        let task = self.handle.spawn(
            async move {
                let _running = guard;
                let commit_started = Instant::now();
                let rows = match pending {
                    Pending::Rows(rows) => Ok(Rows::Batches(rows)),
                    Pending::Staging(staging) => match staging.await {
                        Ok(staged) => staged.map(Rows::Staged),
                        Err(e) => Err(TableError::Transient {
                            table: table.name.clone(),
                            source: deltalake::errors::DeltaTableError::Generic(format!("staging failed: {e}")),
                        }),
                    },
                };
                let result = match rows {
                    Ok(rows) => commit_with_retry(&mut table, rows, &task_offsets, &config).await,
                    Err(e) => Err(e),
                };
                (table, result, commit_started.elapsed())
            }
            .instrument(front.span.clone()),
        );
        front.step = Step::Committing { offsets, task };
    }

    /// Settles every commit that has finished, without waiting for the others.
    pub(super) fn settle_finished(&mut self, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        let topics: Vec<String> = self.inflight.keys().cloned().collect();
        for topic in topics {
            self.settle_ready(&topic, consumer)?;
        }
        Ok(())
    }

    fn settle_ready(&mut self, topic: &str, consumer: &BaseConsumer<IngestContext>) -> Result<(), IngestError> {
        while self
            .inflight
            .get(topic)
            .and_then(VecDeque::front)
            .is_some_and(InFlight::is_settleable)
        {
            self.settle(topic, consumer, true)?;
        }
        Ok(())
    }

    /// Waits for every batch in flight. With `commit_waiting` false (a revoke), batches
    /// whose commit has not started are abandoned: their partitions are no longer ours.
    pub(super) fn settle_all(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
        commit_waiting: bool,
    ) -> Result<(), IngestError> {
        let topics: Vec<String> = self.inflight.keys().cloned().collect();
        for topic in topics {
            while self.inflight.get(&topic).is_some_and(|q| !q.is_empty()) {
                let committing = self
                    .inflight
                    .get(&topic)
                    .and_then(VecDeque::front)
                    .is_some_and(|f| matches!(f.step, Step::Committing { .. }));
                if !committing && !commit_waiting {
                    self.abandon_waiting(&topic);
                    break;
                }
                self.settle(&topic, consumer, commit_waiting)?;
            }
        }
        Ok(())
    }

    /// Drops the topic's batches whose commit has not started; their records are read
    /// again from the stored offsets. Files they wrote are referenced by no commit and go
    /// with the next vacuum.
    fn abandon_waiting(&mut self, topic: &str) {
        let Some(queue) = self.inflight.get_mut(topic) else {
            return;
        };
        let (keep, dropped): (VecDeque<InFlight>, VecDeque<InFlight>) = std::mem::take(queue)
            .into_iter()
            .partition(|f| matches!(f.step, Step::Committing { .. }));
        *queue = keep;
        self.summary.abandoned_batches += dropped.len() as u64;
        for f in &dropped {
            self.forget(topic, &f.batch);
        }
    }

    /// Waits for the topic's oldest commit, then records it, announces it and commits
    /// group offsets; with `advance`, starts the next batch's commit.
    fn settle(
        &mut self,
        topic: &str,
        consumer: &BaseConsumer<IngestContext>,
        advance: bool,
    ) -> Result<(), IngestError> {
        self.start_next(topic);
        let Some(flight) = self.inflight.get_mut(topic).and_then(VecDeque::pop_front) else {
            return Ok(());
        };
        let InFlight {
            mut batch,
            mut published,
            mut rows_empty,
            started,
            span,
            step,
        } = flight;
        let Step::Committing { offsets, task } = step else {
            return Err(IngestError::Internal(
                "a batch settled before its commit started".into(),
            ));
        };
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
                    self.forget(topic, &batch);
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
                    result = self.handle.block_on(commit_with_retry(
                        table,
                        Rows::Batches(Vec::new()),
                        &offsets,
                        &self.config,
                    ));
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
        if advance {
            self.start_next(topic);
        }
        Ok(())
    }

    /// After a commit: offsets, metrics, the dedup horizon, `lake.commits` and group offsets.
    fn landed(
        &mut self,
        topic: &str,
        batch: TopicBatch,
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
        // Spares for the batches that fill while others are in flight.
        let depth = usize::try_from(self.config.max_batches_in_flight).unwrap_or(1);
        if self.spare.len() < self.contracts.len().saturating_mul(depth) {
            self.spare.push(batch);
        }
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
        if let Some(next) = self.batches.remove(topic) {
            self.forget(topic, &next);
            if !next.is_empty() {
                self.summary.abandoned_batches += 1;
            }
        }
        self.abandon_waiting(topic);
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
            .map(|o| DeadLetter::of(&topic, &o, Reject::new("write_failed", reason)))
            .collect();
        batch.letters.extend(extra);
    }
}

async fn commit_with_retry(
    table: &mut RawTable,
    rows: Rows,
    offsets: &Offsets,
    config: &IngestConfig,
) -> Result<Committed, TableError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut wait = Duration::from_millis(config.retry_backoff_ms);
    loop {
        match table.commit(rows.clone(), offsets).await {
            Err(e @ TableError::Transient { .. }) if Instant::now() + wait < deadline => {
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "lake commit failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            other => return other,
        }
    }
}

async fn stage_with_retry(
    table: &RawTable,
    rows: Vec<RecordBatch>,
    config: &IngestConfig,
) -> Result<Staged, TableError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut wait = Duration::from_millis(config.retry_backoff_ms);
    loop {
        match table.stage(rows.clone()).await {
            Err(e @ TableError::Transient { .. }) if Instant::now() + wait < deadline => {
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "writing data files failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            other => return other,
        }
    }
}
