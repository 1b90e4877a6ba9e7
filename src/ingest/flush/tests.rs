//! The pipeline against a lake in a temporary directory, with a worker thread that can be
//! held so batches stay queued while the test looks at them.

use super::*;
use crate::ingest::checks::{Horizon, id_hash};
use crate::ingest::publish::PublishError;
use crate::ingest::testing;
use std::sync::Mutex;
use std::sync::mpsc;
use tokio::runtime::Runtime;

/// What the pipeline sent to Kafka.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Sent>>);

#[derive(Default)]
struct Sent {
    letters: Vec<(i32, i64)>,
    commits: Vec<Vec<(i32, i64)>>,
}

impl Outbox for Kept {
    async fn dead_letters(&self, letters: &[DeadLetter]) -> Result<(), PublishError> {
        let mut sent = self.0.lock().unwrap();
        sent.letters.extend(letters.iter().map(|l| (l.partition, l.offset)));
        Ok(())
    }

    async fn lake_commit(
        &self,
        _: &SchemaSet,
        _: &str,
        _: &str,
        _: &Committed,
        offsets: &[(i32, i64)],
    ) -> Result<(), PublishError> {
        self.0.lock().unwrap().commits.push(offsets.to_vec());
        Ok(())
    }
}

impl Kept {
    fn letters(&self) -> Vec<(i32, i64)> {
        self.0.lock().unwrap().letters.clone()
    }

    fn commits(&self) -> Vec<Vec<(i32, i64)>> {
        self.0.lock().unwrap().commits.clone()
    }
}

/// A runtime with one worker thread, which `Gate::close` can occupy.
fn one_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

struct Gate(mpsc::Sender<()>);

impl Gate {
    /// Holds the runtime's only worker thread: tasks spawned from now on (staging, commits)
    /// wait for `open`. Lake calls the pipeline blocks on run on the caller's thread.
    fn close(runtime: &Runtime) -> Self {
        let (open, wait) = mpsc::channel::<()>();
        runtime.spawn(async move {
            let _ = wait.recv();
        });
        Self(open)
    }

    fn open(self) {
        let _ = self.0.send(());
    }
}

fn config(depth: u64) -> IngestConfig {
    IngestConfig {
        group: "g".into(),
        max_batches_in_flight: depth,
        retry_backoff_ms: 10,
        target_file_bytes: 1 << 20,
        ..Default::default()
    }
}

fn pipeline(runtime: &Runtime, lake: &LakeUrl, spare_limit: usize) -> (Pipeline<Kept>, Kept) {
    let kept = Kept::default();
    let mut pipeline = Pipeline::new(PipelineParts {
        config: config(2),
        lake: lake.clone(),
        handle: runtime.handle().clone(),
        outbox: kept.clone(),
        schemas: Arc::new(testing::schemas()),
        telemetry: Telemetry::new(),
        running: Running::default(),
        spare_limit,
    });
    // Partition 0 of `t` is ours and nothing is stored yet.
    pipeline.stored_mut().set("t", 0, None);
    (pipeline, kept)
}

/// Per queued batch of `topic`: the offsets its commit stores once it has started.
fn queue(pipeline: &Pipeline<Kept>, topic: &str) -> Vec<Option<Offsets>> {
    pipeline.queues.get(topic).map_or_else(Vec::new, |q| {
        q.iter()
            .map(|f| match &f.step {
                Step::Committing { offsets, .. } => Some(offsets.clone()),
                Step::Waiting(_) => None,
            })
            .collect()
    })
}

fn advance(stored: Option<i64>, last: i64) -> Offsets {
    BTreeMap::from([(0, Advance { stored, last })])
}

/// What the group of `t` has stored in the lake for partition 0.
fn in_lake(lake: &LakeUrl) -> Option<i64> {
    testing::runtime().block_on(async {
        let mut table = RawTable::open(lake, "t", "g", 1 << 20).await.unwrap();
        table.stored_offsets(&[0]).await.unwrap()[&0]
    })
}

#[test]
fn offsets_advance_strictly_in_order_across_batches_in_flight() {
    let runtime = one_thread();
    let (_dir, lake) = testing::lake();
    let (mut pipeline, kept) = pipeline(&runtime, &lake, 1);
    let mut seen = Horizon::new(1000);
    let gate = Gate::close(&runtime);
    pipeline.flush(testing::sealed("t", 0, 0..3, &mut seen)).unwrap();
    pipeline.flush(testing::sealed("t", 0, 3..6, &mut seen)).unwrap();
    // The first commit starts at once; the second waits, its offsets not yet worked out.
    assert_eq!(queue(&pipeline, "t"), [Some(advance(None, 2)), None]);
    gate.open();
    pipeline.settle_oldest("t").unwrap();
    // It starts from what the first one stored, so the fencing check sees its predecessor.
    assert_eq!(queue(&pipeline, "t"), [Some(advance(Some(2), 5))]);
    pipeline.settle_all(true).unwrap();
    assert!(queue(&pipeline, "t").is_empty());
    assert_eq!(kept.commits(), [vec![(0, 2)], vec![(0, 5)]]);
    assert_eq!(pipeline.stored().get("t", 0), Some(Some(5)));
    assert_eq!(in_lake(&lake), Some(5));
    let back = pipeline.take_handback();
    let landed: Vec<_> = back.landed.iter().map(|l| (l.topic.as_str(), l.last.clone())).collect();
    assert_eq!(
        landed,
        [("t", BTreeMap::from([(0, 2)])), ("t", BTreeMap::from([(0, 5)]))]
    );
    assert!(back.forget.is_empty() && back.resync.is_empty());
    let summary = pipeline.summary();
    assert_eq!((summary.commits, summary.landed, summary.abandoned_batches), (2, 6, 0));
    // Committed batches are kept for their memory, up to the limit.
    assert!(pipeline.take_spare().is_some());
    assert!(pipeline.take_spare().is_none());
}

#[test]
fn a_revoke_abandons_the_batches_whose_commit_has_not_started() {
    let runtime = one_thread();
    let (_dir, lake) = testing::lake();
    let (mut pipeline, kept) = pipeline(&runtime, &lake, 4);
    let mut seen = Horizon::new(1000);
    let gate = Gate::close(&runtime);
    pipeline.flush(testing::sealed("t", 0, 0..3, &mut seen)).unwrap();
    pipeline.flush(testing::sealed("t", 0, 3..5, &mut seen)).unwrap();
    gate.open();
    pipeline.settle_all(false).unwrap();
    // The running commit lands; the waiting batch is dropped and its ids handed back.
    assert!(queue(&pipeline, "t").is_empty());
    assert_eq!(kept.commits(), [vec![(0, 2)]]);
    assert_eq!(in_lake(&lake), Some(2));
    let back = pipeline.take_handback();
    assert_eq!(back.landed.len(), 1);
    assert_eq!(back.forget.len(), 1);
    let mut ids = back.forget[0].ids.clone();
    ids.sort();
    let mut expected = vec![id_hash("t/0/3"), id_hash("t/0/4")];
    expected.sort();
    assert_eq!((back.forget[0].topic.as_str(), ids), ("t", expected));
    assert_eq!(pipeline.summary().abandoned_batches, 1);
}

#[test]
fn a_fenced_commit_drops_the_queue_and_resyncs_from_the_lake() {
    let runtime = one_thread();
    let (_dir, lake) = testing::lake();
    let (mut pipeline, kept) = pipeline(&runtime, &lake, 4);
    let mut seen = Horizon::new(1000);
    let gate = Gate::close(&runtime);
    pipeline.flush(testing::sealed("t", 0, 0..2, &mut seen)).unwrap();
    pipeline.flush(testing::sealed("t", 0, 2..4, &mut seen)).unwrap();
    // Meanwhile another worker of the group lands offsets 0..=6 of the partition.
    let mut theirs = testing::sealed("t", 0, 0..7, &mut Horizon::new(100));
    testing::runtime().block_on(async {
        let mut table = RawTable::open(&lake, "t", "g", 1 << 20).await.unwrap();
        let rows = theirs.finish(None).unwrap();
        table.commit(rows, &BTreeMap::from([(0, (None, 6))])).await.unwrap();
    });
    gate.open();
    pipeline.settle_all(true).unwrap();
    assert!(queue(&pipeline, "t").is_empty());
    assert!(kept.commits().is_empty());
    assert_eq!(in_lake(&lake), Some(6));
    // The stored offsets are reread from the table, and reading restarts after them.
    assert_eq!(pipeline.stored().get("t", 0), Some(Some(6)));
    let back = pipeline.take_handback();
    let resync: Vec<_> = back
        .resync
        .iter()
        .map(|r| (r.topic.as_str(), r.stored.clone()))
        .collect();
    assert_eq!(resync, [("t", BTreeMap::from([(0, Some(6))]))]);
    // Both batches are abandoned: the fenced one and the one waiting behind it.
    assert_eq!(back.forget.len(), 2);
    assert_eq!(back.forget.iter().map(|f| f.ids.len()).sum::<usize>(), 4);
    assert!(back.landed.is_empty());
    assert_eq!(pipeline.summary().abandoned_batches, 2);
    assert_eq!(pipeline.summary().commits, 0);
}

#[test]
fn dead_letters_go_out_before_the_commit_and_are_covered_by_its_offsets() {
    let runtime = one_thread();
    let (_dir, lake) = testing::lake();
    let (mut pipeline, kept) = pipeline(&runtime, &lake, 4);
    let mut batch = testing::sealed("t", 0, 0..2, &mut Horizon::new(100));
    let refused = Err(Reject::new("unknown_topic", "not here"));
    batch.take((0, 2, None), None, b"junk", Vec::new(), refused);
    let gate = Gate::close(&runtime);
    pipeline.flush(batch).unwrap();
    assert_eq!(kept.letters(), [(0, 2)]);
    assert_eq!(queue(&pipeline, "t"), [Some(advance(None, 2))]);
    gate.open();
    pipeline.settle_all(true).unwrap();
    assert_eq!(kept.commits(), [vec![(0, 2)]]);
    let summary = pipeline.summary();
    assert_eq!((summary.landed, summary.dead_letters), (2, 1));
}

#[test]
fn dead_letters_alone_wait_for_the_first_rows_to_store_offsets() {
    let runtime = testing::runtime();
    let (_dir, lake) = testing::lake();
    let (mut pipeline, kept) = pipeline(&runtime, &lake, 4);
    let mut batch = TopicBatch::new("t");
    batch.take((0, 0, None), None, b"junk", Vec::new(), Err(Reject::new("x", "y")));
    pipeline.flush(batch).unwrap();
    assert_eq!(kept.letters(), [(0, 0)]);
    assert!(queue(&pipeline, "t").is_empty());
    assert_eq!(in_lake(&lake), None);
}

#[test]
fn a_full_pipeline_lets_the_batch_grow_to_twice_the_limits() {
    let runtime = one_thread();
    let (_dir, lake) = testing::lake();
    let (mut pipeline, _) = pipeline(&runtime, &lake, 4);
    let limits = config(2);
    let mut seen = Horizon::new(1000);
    let mut filling = TopicBatch::new("t");
    filling.rows = limits.max_batch_rows * 2 - 1;
    assert_eq!(pipeline.room("t", Some(&filling)), Room::Free);
    let gate = Gate::close(&runtime);
    pipeline.flush(testing::sealed("t", 0, 0..1, &mut seen)).unwrap();
    assert_eq!(pipeline.room("t", Some(&filling)), Room::Free);
    pipeline.flush(testing::sealed("t", 0, 1..2, &mut seen)).unwrap();
    assert_eq!(pipeline.room("t", None), Room::KeepFilling);
    assert_eq!(pipeline.room("t", Some(&filling)), Room::KeepFilling);
    filling.rows += 1;
    assert_eq!(pipeline.room("t", Some(&filling)), Room::SettleFirst);
    filling.rows = 0;
    filling.bytes = limits.max_batch_bytes * 2;
    assert_eq!(pipeline.room("t", Some(&filling)), Room::SettleFirst);
    // Another topic's pipeline is its own.
    assert_eq!(pipeline.room("u", Some(&filling)), Room::Free);
    gate.open();
    pipeline.settle_oldest("t").unwrap();
    assert_eq!(pipeline.room("t", Some(&filling)), Room::Free);
    pipeline.settle_all(true).unwrap();
}

#[test]
fn a_batch_commits_with_offsets_from_the_stored_ones_when_it_starts() {
    let mut stored = StoredOffsets::default();
    stored.set("t", 0, Some(4));
    stored.set("t", 1, None);
    let mut batch = TopicBatch::new("t");
    for (p, o) in [(0, 5), (1, 0), (0, 6), (1, 1), (0, 7)] {
        batch.take((p, o, None), None, b"x", Vec::new(), Err(Reject::new("x", "y")));
    }
    let offsets = advances("t", &batch, &stored);
    assert_eq!(
        offsets,
        BTreeMap::from([
            (
                0,
                Advance {
                    stored: Some(4),
                    last: 7
                }
            ),
            (1, Advance { stored: None, last: 1 })
        ])
    );
    stored.set("t", 0, Some(7));
    assert_eq!(advances("t", &batch, &stored)[&0].stored, Some(7));
}

#[test]
fn refused_rows_become_letters_once() {
    let mut batch = testing::sealed("t", 0, 0..3, &mut Horizon::new(100));
    batch.take((0, 3, None), None, b"junk", Vec::new(), Err(Reject::new("x", "y")));
    let published = HashSet::from([(0, 1)]);
    reject_rows(&mut batch, "the lake said no", &published);
    let mut letters: Vec<_> = batch.letters.iter().map(|l| (l.offset, l.class)).collect();
    letters.sort();
    assert_eq!(letters, [(0, "write_failed"), (2, "write_failed"), (3, "x")]);
}
