//! Every event schema in `avro/` lands as a Delta table: Avro values go into Arrow
//! builders (nested records, arrays, maps, enums, dates, timestamps), the batch commits
//! with its offsets, and DataFusion reads the rows back. Local lake; no services needed.

mod common;

use hoffrec::codec::SchemaSet;
use hoffrec::ingest::RawTable;
use hoffrec::ingest::batch::{Coordinates, TopicBatch};
use hoffrec::lake::LakeUrl;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread")]
async fn every_event_schema_lands_and_reads_back() {
    let schemas = SchemaSet::load_strict(&common::repo().join("avro")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
    let mut checked = 0;
    for version in schemas.events() {
        let topic = format!("raw.test.{}", version.event);
        let fields = hoffrec::ingest::record_fields(&version.schema).unwrap_or_else(|e| panic!("{}: {e}", version.id));
        let mut batch = TopicBatch::new(&topic);
        batch.adopt(version.fingerprint, &fields).unwrap();
        for seed in 0..3i64 {
            let apache_avro::types::Value::Record(record) = common::sample_value(&version.schema, seed) else {
                panic!("{} is not a record", version.id)
            };
            let at = Coordinates {
                partition: 0,
                offset: seed,
                kafka_timestamp_ms: Some(1_790_000_000_000),
                writer_schema: &version.id,
                event_time_ms: 1_790_000_000_000 + seed * 86_400_000,
            };
            batch.account(0, seed, Some(1_790_000_000_000), 100);
            batch
                .append(&record, &at, 1_790_000_000_000)
                .unwrap_or_else(|e| panic!("{}: {e}", version.id));
        }
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

        let url = lake.table_url(&hoffrec::ingest::table_name(&topic)).unwrap();
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
    let mut batch = TopicBatch::new(topic);
    let fields = hoffrec::ingest::record_fields(&version.schema).unwrap();
    batch.adopt(version.fingerprint, &fields).unwrap();
    let apache_avro::types::Value::Record(record) = common::sample_value(&version.schema, 1) else {
        unreachable!()
    };
    let at = Coordinates {
        partition: 1,
        offset: 0,
        kafka_timestamp_ms: None,
        writer_schema: "page_view",
        event_time_ms: 0,
    };
    batch.append(&record, &at, 0).unwrap();
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
