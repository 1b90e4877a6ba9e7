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
//!
//! The pipeline owns the tables and the stored offsets; what only the worker can do (seek
//! and commit on its consumer, forget ids in its dedup horizons) it hands back as a
//! `Handback` after each step.

use super::batch::{DeadLetter, TopicBatch};
use super::checks::Reject;
use super::offsets::StoredOffsets;
use super::publish::Outbox;
use super::retry::{self, Policy};
use super::running::Running;
use super::table::{Committed, RawTable, Rows, Staged, TableError};
use super::{FastMap, IngestError, Summary};
use crate::codec::SchemaSet;
use crate::config::IngestConfig;
use crate::lake::LakeUrl;
use crate::telemetry::Telemetry;
use arrow::record_batch::RecordBatch;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{Instrument, Span, info, info_span, warn};

/// One partition's share of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// The offset stored before this batch; the fencing check expects to find it.
    pub stored: Option<i64>,
    /// The last offset in this batch, stored by its commit.
    pub last: i64,
}

/// Per partition, what a batch's commit stores.
pub type Offsets = BTreeMap<i32, Advance>;

/// What a background commit hands back.
struct CommitDone {
    /// The table with what the commit learned (its version, the offsets it stored).
    table: RawTable,
    result: Result<Committed, TableError>,
    took: Duration,
}

/// A flushed batch on its way into the lake.
struct InFlight {
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
    Committing {
        offsets: Offsets,
        task: JoinHandle<CommitDone>,
    },
}

enum Pending {
    Staging(JoinHandle<Result<Staged, TableError>>),
    /// Rows the commit writes itself: a new table, a new schema version, or none at all.
    Rows(Vec<RecordBatch>),
}

impl InFlight {
    fn is_committing(&self) -> bool {
        matches!(self.step, Step::Committing { .. })
    }

    fn is_settleable(&self) -> bool {
        matches!(&self.step, Step::Committing { task, .. } if task.is_finished())
    }
}

/// What the worker does after a pipeline step: it holds the consumer and the dedup horizons.
#[derive(Debug, Default)]
pub struct Handback {
    /// Batches dropped before they landed: their ids leave the topic's horizon, for their
    /// records come again.
    pub forget: Vec<Forget>,
    /// Commits that landed, in order: the group's committed offsets follow them.
    pub landed: Vec<Landed>,
    /// Topics another worker advanced: the batch filling is dropped and reading restarts
    /// right after what the lake holds.
    pub resync: Vec<Resync>,
}

#[derive(Debug)]
pub struct Forget {
    pub topic: String,
    pub ids: Vec<u64>,
}

#[derive(Debug)]
pub struct Landed {
    pub topic: String,
    /// Per partition, the last offset the commit stored.
    pub last: BTreeMap<i32, i64>,
}

#[derive(Debug)]
pub struct Resync {
    pub topic: String,
    /// Per partition, the offset the lake holds now.
    pub stored: BTreeMap<i32, Option<i64>>,
}

/// What a pipeline is made of; the rest of its state starts empty.
pub struct PipelineParts<O> {
    pub config: IngestConfig,
    pub lake: LakeUrl,
    pub handle: Handle,
    pub outbox: O,
    /// For encoding `lake.commits` records.
    pub schemas: Arc<SchemaSet>,
    pub telemetry: Telemetry,
    pub running: Running,
    /// How many committed batches are kept for their memory.
    pub spare_limit: usize,
}

/// Whether a topic's full batch may go into the pipeline now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Free,
    /// The pipeline is full and the batch may grow to twice the limits meanwhile.
    KeepFilling,
    /// The pipeline is full and the batch is twice the limits: the oldest commit must settle.
    SettleFirst,
}

pub struct Pipeline<O> {
    config: IngestConfig,
    policy: Policy,
    lake: LakeUrl,
    handle: Handle,
    outbox: O,
    schemas: Arc<SchemaSet>,
    telemetry: Telemetry,
    running: Running,
    tables: FastMap<String, RawTable>,
    stored: StoredOffsets,
    /// Per topic, flushed batches in commit order (the first one's commit may be running).
    queues: FastMap<String, VecDeque<InFlight>>,
    /// Committed batches whose memory the next batches reuse.
    spare: Vec<TopicBatch>,
    spare_limit: usize,
    /// Landed, dead letters, commits and abandoned batches.
    summary: Summary,
    handback: Handback,
}

impl<O: Outbox> Pipeline<O> {
    pub fn new(parts: PipelineParts<O>) -> Self {
        Self {
            policy: Policy::lake(parts.config.retry_backoff_ms),
            config: parts.config,
            lake: parts.lake,
            handle: parts.handle,
            outbox: parts.outbox,
            schemas: parts.schemas,
            telemetry: parts.telemetry,
            running: parts.running,
            tables: FastMap::default(),
            stored: StoredOffsets::default(),
            queues: FastMap::default(),
            spare: Vec::new(),
            spare_limit: parts.spare_limit,
            summary: Summary::default(),
            handback: Handback::default(),
        }
    }

    /// The offsets stored for the partitions that are ours, as far as this worker knows.
    pub fn stored(&self) -> &StoredOffsets {
        &self.stored
    }

    pub fn stored_mut(&mut self) -> &mut StoredOffsets {
        &mut self.stored
    }

    /// After the worker reloaded schemas: announcements encode with the new set.
    pub fn use_schemas(&mut self, schemas: Arc<SchemaSet>) {
        self.schemas = schemas;
    }

    /// A committed batch to fill again.
    pub fn take_spare(&mut self) -> Option<TopicBatch> {
        self.spare.pop()
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// What the worker must do after the steps so far; call after every step, failed or not.
    pub fn take_handback(&mut self) -> Handback {
        std::mem::take(&mut self.handback)
    }

    /// While the topic's pipeline is full, its batch keeps filling up to twice the
    /// configured limits; past that the worker waits for the oldest commit.
    pub fn room(&self, topic: &str, filling: Option<&TopicBatch>) -> Room {
        let depth = usize::try_from(self.config.max_batches_in_flight).unwrap_or(usize::MAX);
        if self.queues.get(topic).map_or(0, VecDeque::len) < depth {
            return Room::Free;
        }
        let roomy = filling.is_none_or(|b| {
            b.rows < self.config.max_batch_rows.saturating_mul(2)
                && b.bytes < self.config.max_batch_bytes.saturating_mul(2)
        });
        if roomy { Room::KeepFilling } else { Room::SettleFirst }
    }

    /// Hands a sealed batch to the pipeline: its dead letters are published, its data files
    /// start being written, and it commits when the batches ahead of it have.
    pub fn flush(&mut self, mut batch: TopicBatch) -> Result<(), IngestError> {
        if batch.is_empty() {
            return Ok(());
        }
        let topic = batch.topic.clone();
        let topic = topic.as_str();
        let span = info_span!(
            "batch",
            topic,
            rows = batch.rows,
            bytes = batch.bytes,
            dead = batch.letters.len()
        );
        let started = Instant::now();
        if !self.tables.contains_key(topic) {
            let table = retry::blocking(&self.handle, &self.policy, "open table", || {
                RawTable::open(&self.lake, topic, &self.config.group, self.config.target_file_bytes)
            })?;
            self.tables.insert(topic.to_string(), table);
        }
        let table = self.table(topic)?;
        let rows = match batch.finish(table.arrow_schema().as_ref()) {
            Ok(rows) => rows,
            Err(e) => {
                span.in_scope(|| warn!(error = %e, "batch cannot be assembled; dead-lettering its rows"));
                reject_rows(&mut batch, &e.to_string(), &HashSet::new());
                Vec::new()
            }
        };
        let mut published = HashSet::new();
        self.publish_letters(topic, &mut batch, &mut published)?;
        let table = self.table(topic)?;
        if rows.is_empty() && !table.exists() && self.queues.get(topic).is_none_or(VecDeque::is_empty) {
            // Only dead letters and no table yet to hold offsets: the first batch with
            // rows stores offsets that cover these too (letters may repeat after a crash).
            span.in_scope(|| info!("batch of dead letters only; offsets wait for the table's first rows"));
            return Ok(());
        }
        let rows_empty = rows.is_empty();
        let pending = match rows.first().map(RecordBatch::schema) {
            Some(schema) if table.stages(&schema) => {
                let (table, policy) = (table.clone(), self.policy);
                let staging = async move {
                    let (_, staged) = retry::transient(&policy, "writing data files failed", &table, |table| {
                        let rows = rows.clone();
                        async move { (table, table.stage(rows).await) }
                    })
                    .await;
                    staged
                };
                Pending::Staging(self.handle.spawn(staging.instrument(span.clone())))
            }
            _ => Pending::Rows(rows),
        };
        self.queues.entry(topic.to_string()).or_default().push_back(InFlight {
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

    fn table(&self, topic: &str) -> Result<&RawTable, IngestError> {
        self.tables
            .get(topic)
            .ok_or(IngestError::Internal("table vanished".into()))
    }

    /// The version of the topic's table as this worker last saw it.
    pub fn table_version(&self, topic: &str) -> Option<u64> {
        self.tables.get(topic).and_then(RawTable::version)
    }

    /// Whether a commit is running: its end is what the worker waits for next.
    pub fn committing(&self) -> bool {
        self.running.any()
    }

    /// Starts the commit of the topic's oldest batch unless a commit is already running.
    fn start_next(&mut self, topic: &str) {
        let Some(front) = self.queues.get_mut(topic).and_then(VecDeque::front_mut) else {
            return;
        };
        if front.is_committing() {
            return;
        }
        let Some(mut table) = self.tables.get(topic).cloned() else {
            return;
        };
        let offsets = advances(topic, &front.batch, &self.stored);
        let placeholder = Step::Waiting(Pending::Rows(Vec::new()));
        let Step::Waiting(pending) = std::mem::replace(&mut front.step, placeholder) else {
            return;
        };
        let (policy, guard, task_offsets) = (self.policy, self.running.start(), offsets.clone());
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
                    Ok(rows) => commit_with_retry(&mut table, rows, &task_offsets, &policy).await,
                    Err(e) => Err(e),
                };
                CommitDone {
                    table,
                    result,
                    took: commit_started.elapsed(),
                }
            }
            .instrument(front.span.clone()),
        );
        front.step = Step::Committing { offsets, task };
    }

    /// Settles every commit that has finished, without waiting for the others.
    pub fn settle_finished(&mut self) -> Result<(), IngestError> {
        let topics: Vec<String> = self.queues.keys().cloned().collect();
        for topic in topics {
            self.settle_ready(&topic)?;
        }
        Ok(())
    }

    /// Settles the topic's commits that have finished, oldest first.
    pub fn settle_ready(&mut self, topic: &str) -> Result<(), IngestError> {
        while self
            .queues
            .get(topic)
            .and_then(VecDeque::front)
            .is_some_and(InFlight::is_settleable)
        {
            self.settle(topic, true)?;
        }
        Ok(())
    }

    /// Waits for the topic's oldest commit and starts the next one.
    pub fn settle_oldest(&mut self, topic: &str) -> Result<(), IngestError> {
        self.settle(topic, true)
    }

    /// Waits for every batch in flight. With `commit_waiting` false (a revoke), batches
    /// whose commit has not started are abandoned: their partitions are no longer ours.
    pub fn settle_all(&mut self, commit_waiting: bool) -> Result<(), IngestError> {
        let topics: Vec<String> = self.queues.keys().cloned().collect();
        for topic in topics {
            while self.queues.get(&topic).is_some_and(|q| !q.is_empty()) {
                let committing = self
                    .queues
                    .get(&topic)
                    .and_then(VecDeque::front)
                    .is_some_and(InFlight::is_committing);
                if !committing && !commit_waiting {
                    self.abandon_waiting(&topic);
                    break;
                }
                self.settle(&topic, commit_waiting)?;
            }
        }
        Ok(())
    }

    /// Drops the topic's batches whose commit has not started; their records are read
    /// again from the stored offsets. Files they wrote are referenced by no commit and go
    /// with the next vacuum.
    fn abandon_waiting(&mut self, topic: &str) {
        let Some(queue) = self.queues.get_mut(topic) else {
            return;
        };
        let (keep, dropped): (VecDeque<InFlight>, VecDeque<InFlight>) =
            std::mem::take(queue).into_iter().partition(InFlight::is_committing);
        *queue = keep;
        self.summary.abandoned_batches += dropped.len() as u64;
        for mut f in dropped {
            self.forget(topic, &mut f.batch);
        }
    }

    fn forget(&mut self, topic: &str, batch: &mut TopicBatch) {
        self.handback.forget.push(Forget {
            topic: topic.to_string(),
            ids: std::mem::take(&mut batch.ids),
        });
    }

    /// Waits for the topic's oldest commit, then records it and announces it; with
    /// `advance`, starts the next batch's commit.
    fn settle(&mut self, topic: &str, advance: bool) -> Result<(), IngestError> {
        self.start_next(topic);
        let Some(flight) = self.queues.get_mut(topic).and_then(VecDeque::pop_front) else {
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
        let CommitDone {
            table,
            mut result,
            took,
        } = self
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
                    self.forget(topic, &mut batch);
                    return self.resync(topic);
                }
                Err(TableError::Rejected { source, .. }) if rows_empty => {
                    return Err(IngestError::Step(format!(
                        "the lake refused an offsets-only commit: {source}"
                    )));
                }
                Err(TableError::Rejected { source, .. }) => {
                    warn!(error = %source, "the lake refused the batch; dead-lettering its rows");
                    reject_rows(&mut batch, &source.to_string(), &published);
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
                        &self.policy,
                    ));
                    self.telemetry
                        .ingest
                        .commit_seconds
                        .observe(commit_started.elapsed().as_secs_f64());
                }
                Err(e @ TableError::Transient { .. }) => return Err(IngestError::LakeUnavailable(Box::new(e))),
            }
        };
        self.landed(topic, batch, &offsets, &committed);
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

    /// After a commit: offsets, metrics, spares and `lake.commits`; the group offsets are
    /// handed back.
    fn landed(&mut self, topic: &str, batch: TopicBatch, offsets: &Offsets, committed: &Committed) {
        for (&p, a) in offsets {
            self.stored.set(topic, p, Some(a.last));
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
        if self.spare.len() < self.spare_limit {
            self.spare.push(batch);
        }
        let table_name = self.tables.get(topic).map(|t| t.name.clone()).unwrap_or_default();
        let offset_list: Vec<(i32, i64)> = offsets.iter().map(|(&p, a)| (p, a.last)).collect();
        if let Err(e) = retry::blocking(&self.handle, &self.policy, "announce lake commit", || {
            self.outbox
                .lake_commit(&self.schemas, &table_name, topic, committed, &offset_list)
        }) {
            // The data is safely in the lake; marts also catch up from table versions.
            warn!(error = %e, "lake commit announcement lost");
        }
        if let Some(table) = self.tables.get(topic).and_then(|t| t.checkpoint_due(committed.version)) {
            // Off the flush path; a failed one is written by the next one due or by upkeep.
            self.handle.spawn(async move {
                if let Err(e) = crate::lake::maintenance::checkpoint_table(&table).await {
                    warn!(error = %e, "raw table checkpoint failed");
                }
            });
        }
        self.handback.landed.push(Landed {
            topic: topic.to_string(),
            last: offset_list.into_iter().collect(),
        });
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
        retry::blocking(&self.handle, &self.policy, "publish dead letters", || {
            self.outbox.dead_letters(&letters)
        })?;
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
    /// right after what it holds. Rows consumed after the abandoned batch rest on offsets
    /// that are no longer ours: the waiting batches go here, the filling one in the worker.
    fn resync(&mut self, topic: &str) -> Result<(), IngestError> {
        self.abandon_waiting(topic);
        let partitions = self.stored.partitions(topic);
        let table = self
            .tables
            .get_mut(topic)
            .ok_or(IngestError::Internal("table vanished".into()))?;
        let stored = self
            .handle
            .block_on(table.stored_offsets(&partitions))
            .map_err(|e| IngestError::LakeUnavailable(Box::new(e)))?;
        for (&p, &s) in &stored {
            self.stored.set(topic, p, s);
        }
        self.handback.resync.push(Resync {
            topic: topic.to_string(),
            stored: stored.into_iter().collect(),
        });
        Ok(())
    }
}

/// A batch's offsets as its commit starts: each partition advances from what is stored
/// now, which includes every commit of this topic ahead of it.
fn advances(topic: &str, batch: &TopicBatch, stored: &StoredOffsets) -> Offsets {
    batch
        .offsets
        .iter()
        .map(|(&p, range)| {
            let advance = Advance {
                stored: stored.last(topic, p),
                last: range.last,
            };
            (p, advance)
        })
        .collect()
}

/// Turns every row of the batch into a `write_failed` letter, except records that
/// already are (or were) dead letters.
fn reject_rows(batch: &mut TopicBatch, reason: &str, published: &HashSet<(i32, i64)>) {
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

async fn commit_with_retry(
    table: &mut RawTable,
    rows: Rows,
    offsets: &Offsets,
    policy: &Policy,
) -> Result<Committed, TableError> {
    let offsets: BTreeMap<i32, (Option<i64>, i64)> = offsets.iter().map(|(&p, a)| (p, (a.stored, a.last))).collect();
    let offsets = &offsets;
    let (_, result) = retry::transient(policy, "lake commit failed", table, |table| {
        let rows = rows.clone();
        async move {
            let result = table.commit(rows, offsets).await;
            (table, result)
        }
    })
    .await;
    result
}

#[cfg(test)]
mod tests;
