//! Fixtures for ingest's unit tests: product views as producers write them, sealed into
//! batches the way the worker seals them, and a lake in a temporary directory.

use super::batch::{Checks, TopicBatch};
use super::checks::{Horizon, Rules};
use super::contract::TopicContract;
use super::decode::WriterPlan;
use crate::codec::{SchemaSet, SchemaVersion, encode_with};
use crate::lake::LakeUrl;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The clock the fixtures' events and checks run on.
pub const NOW: i64 = 1_790_000_000_000;

pub fn schemas() -> SchemaSet {
    SchemaSet::load_strict(&Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")).unwrap()
}

pub fn product_view(set: &SchemaSet) -> Arc<SchemaVersion> {
    set.current("product_view").unwrap().clone()
}

/// A product view with this event id, as its writer's bytes.
pub fn view(version: &SchemaVersion, id: &str) -> Vec<u8> {
    let json = serde_json::json!({
        "event_id": id, "event_time": NOW - 1000, "customer_id": "c1", "session_id": "s1",
        "product_id": "p1", "dwell_ms": 1500, "price_kopecks": 100
    });
    encode_with(version, crate::codec::json::to_avro(&json, &version.schema).unwrap()).unwrap()
}

/// A batch of views at `offsets` of `partition`, every chunk sealed; event ids are
/// `<topic>/<partition>/<offset>`, so a batch of other offsets has other ids.
pub fn sealed(topic: &str, partition: i32, offsets: Range<i64>, seen: &mut Horizon) -> TopicBatch {
    let set = schemas();
    let version = product_view(&set);
    let plan = Arc::new(WriterPlan::new(&version).unwrap());
    let rules = Rules::new(&crate::config::IngestConfig::default());
    let required = TopicContract::new("product_view", &version.schema).required;
    let mut batch = TopicBatch::new(topic);
    for offset in offsets {
        let bytes = view(&version, &format!("{topic}/{partition}/{offset}"));
        batch.take((partition, offset, Some(NOW)), None, &bytes, Vec::new(), Ok(&plan));
    }
    let mut checks = Checks {
        rules: &rules,
        required: &required,
        now_ms: NOW,
        seen,
    };
    batch.seal(true, &mut checks);
    assert!(batch.letters.is_empty(), "fixture records are all valid");
    batch
}

/// A lake in a directory that lives as long as the guard.
pub fn lake() -> (tempfile::TempDir, LakeUrl) {
    let dir = tempfile::tempdir().unwrap();
    let url = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    (dir, url)
}

/// A runtime like the worker's: lake I/O from a blocking thread through its handle.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
