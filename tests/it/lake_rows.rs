//! Every event schema in `avro/` lands as a Delta table: encoded records are decoded into
//! Arrow (nested records, arrays, maps, enums, dates, timestamps), cleaned and checked, the
//! batch commits with its offsets, and DataFusion reads the rows back. Local lake; no
//! services needed.

use crate::common;

use hoffrec::codec::SchemaSet;
use hoffrec::codec::SchemaVersion;
use hoffrec::ingest::RawTable;
use hoffrec::ingest::TopicContract;
use hoffrec::ingest::batch::{Checks, TopicBatch};
use hoffrec::ingest::checks::Rules;
use hoffrec::ingest::decode::WriterPlan;
use hoffrec::lake::LakeUrl;
use std::collections::BTreeMap;
use std::sync::Arc;

const NOW: i64 = 1_790_000_000_000;

/// Takes sample records of `version` (event and Kafka times one day apart) at offsets `offsets` of partition
/// `partition`, sealed and checked as ingest would; every one must be accepted.
fn sample_batch(
    topic: &str,
    version: &Arc<SchemaVersion>,
    partition: i32,
    offsets: std::ops::Range<i64>,
) -> TopicBatch {
    let plan = Arc::new(WriterPlan::new(version).unwrap());
    let mut batch = TopicBatch::new(topic);
    for seed in offsets {
        let apache_avro::types::Value::Record(mut record) = common::sample_value(&version.schema, seed) else {
            panic!("{} is not a record", version.id)
        };
        for (name, value) in record.iter_mut() {
            if name == "event_time" {
                *value = apache_avro::types::Value::TimestampMillis(NOW - seed * 86_400_000);
            }
        }
        let bytes = hoffrec::codec::encode_with(version, apache_avro::types::Value::Record(record)).unwrap();
        let kafka_ms = NOW - seed * 86_400_000;
        batch.take((partition, seed, Some(kafka_ms)), None, &bytes, Vec::new(), Ok(&plan));
    }
    let rules = Rules::new(&hoffrec::config::IngestConfig::default());
    let required = TopicContract::new(&version.event, &version.schema).required;
    let mut seen = hoffrec::ingest::checks::Horizon::new(usize::MAX);
    let mut checks = Checks {
        rules: &rules,
        required: &required,
        now_ms: NOW,
        seen: &mut seen,
    };
    batch.seal(true, &mut checks);
    let letters: Vec<_> = batch
        .letters
        .iter()
        .map(|l| format!("{}: {}", l.class, l.message))
        .collect();
    assert!(letters.is_empty(), "{}: {letters:?}", version.id);
    batch
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_schema_lands_and_reads_back() {
    let schemas = SchemaSet::load_strict(&common::repo().join("avro")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    let mut checked = 0;
    for version in schemas.events() {
        let topic = format!("raw.test.{}", version.event);
        let mut batch = sample_batch(&topic, version, 0, 0..3);
        let rows = batch.finish(None).unwrap();
        let mut table = RawTable::open(&lake, &topic, "g", 1 << 20).await.unwrap();
        let offsets = BTreeMap::from([(0, (None, 2))]);
        let committed = table
            .commit(rows, &offsets)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", version.id));
        assert_eq!(committed.rows, 3, "{}", version.id);
        assert!(committed.files >= 1, "{}", version.id);
        assert_eq!(table.stored_offsets(&[0]).await.unwrap()[&0], Some(2));

        let url = lake.table_url(&hoffrec::lake::raw::path(&topic)).unwrap();
        let delta = deltalake::open_table(url).await.unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        delta.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("t", delta.table_provider().await.unwrap()).unwrap();
        let out = ctx
            .sql("SELECT count(*), count(DISTINCT event_date) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let get = |i: usize| {
            out[0]
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        };
        assert_eq!((get(0), get(1)), (3, 3), "{}: rows and event dates", version.id);
        checked += 1;
    }
    assert!(checked >= 18, "checked {checked} schemas");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_dead_letters_only_still_stores_its_offsets() {
    let schemas = SchemaSet::load_strict(&common::repo().join("avro")).unwrap();
    let version = schemas.current("page_view").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    let topic = "raw.test.page_view";
    let mut batch = sample_batch(topic, version, 1, 0..1);
    let mut table = RawTable::open(&lake, topic, "g", 1 << 20).await.unwrap();
    table
        .commit(batch.finish(None).unwrap(), &BTreeMap::from([(1, (None, 0))]))
        .await
        .unwrap();
    // Offsets 1..=9 were all dead letters: no rows, but the lake must still know.
    let committed = table
        .commit(Vec::new(), &BTreeMap::from([(1, (Some(0), 9))]))
        .await
        .unwrap();
    assert_eq!(committed.rows, 0);
    assert_eq!(table.stored_offsets(&[1]).await.unwrap()[&1], Some(9));
    // A writer that still believes the old offset is fenced off.
    let stale = table.commit(Vec::new(), &BTreeMap::from([(1, (Some(0), 12))])).await;
    assert!(
        matches!(stale, Err(hoffrec::ingest::table::TableError::Fenced { .. })),
        "{stale:?}"
    );
}
