//! Against the real HDFS NameNode/DataNode from tests/services/up.sh, through
//! hdfs-native: a Parquet file written through the lake's object store reads back intact,
//! and a Delta table lives under a NameNode HA nameservice (`hdfs://nameservice/`) whose
//! first NameNode is down.

use crate::common;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use hoffrec::lake::LakeUrl;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn parquet_round_trips_through_real_hdfs() {
    let _services = common::needs!(Hdfs);
    let hdfs = common::hdfs_url();
    common::require_service("HDFS NameNode", &hdfs);
    let lake = LakeUrl::parse(&format!("{hdfs}/{}", common::unique("it-lake"))).unwrap();
    assert_eq!(lake.store_url.scheme(), "hdfs");
    let store = lake.store().unwrap();

    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("dwell_ms", DataType::Int64, false),
    ]));
    let rows = 10_000;
    let ids: Vec<String> = (0..rows).map(|i| format!("customer-{i}")).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(ids.clone())),
            Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i as i64 * 7))),
        ],
    )
    .unwrap();

    let path = lake.path("raw/it/part-0.zstd.parquet");
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer =
        AsyncArrowWriter::try_new(BufWriter::new(store.clone(), path.clone()), schema, Some(props)).unwrap();
    writer.write(&batch).await.unwrap();
    writer.close().await.unwrap();

    let listed: Vec<_> = store.list(Some(&lake.path("raw/it"))).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location, path);

    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    let read_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(read_rows, rows);
    let first = batches[0].column(0).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(first.value(0), "customer-0");
    let dwell: i64 = batches
        .iter()
        .map(|b| {
            b.column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum();
    assert_eq!(dwell, (0..rows as i64).map(|i| i * 7).sum::<i64>());

    store.delete(&path).await.unwrap();
}

/// A nameservice `hoffrec-ha` of two NameNodes: nn1 at an address nobody listens on, nn2
/// the real NameNode. Given as `lake.hdfs_options`, the client fails over to nn2, and a
/// Delta table is written, appended to and read back (DataFusion) under
/// `hdfs://hoffrec-ha/...`; the same URL without the settings is refused naming them.
#[tokio::test(flavor = "multi_thread")]
async fn delta_table_through_a_namenode_ha_nameservice() {
    let _services = common::needs!(Hdfs);
    let hdfs = common::hdfs_url();
    common::require_service("HDFS NameNode", &hdfs);
    let url = format!("hdfs://hoffrec-ha/{}", common::unique("it-ha"));

    let bare = LakeUrl::parse(&url).unwrap();
    assert_eq!(bare.store_url.as_str(), "hdfs://hoffrec-ha");
    let err = bare.store().unwrap_err().to_string();
    assert!(err.contains("dfs.ha.namenodes.hoffrec-ha"), "{err}");
    let err = hoffrec::lake::open_table(&bare, "raw/ha")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("dfs.ha.namenodes.hoffrec-ha"), "{err}");

    let dead = common::free_addr();
    let active = hdfs.trim_start_matches("hdfs://").trim_end_matches('/').to_string();
    let options: BTreeMap<String, String> = [
        ("dfs.nameservices", "hoffrec-ha"),
        ("dfs.ha.namenodes.hoffrec-ha", "nn1,nn2"),
        ("dfs.namenode.rpc-address.hoffrec-ha.nn1", dead.as_str()),
        ("dfs.namenode.rpc-address.hoffrec-ha.nn2", active.as_str()),
        (
            "dfs.client.failover.proxy.provider.hoffrec-ha",
            "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider",
        ),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let lake = LakeUrl::with_settings(&url, &options).unwrap();

    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("dwell_ms", DataType::Int64, false),
    ]));
    let batch = |from: i64, rows: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (from..from + rows).map(|i| format!("customer-{i}")),
                )),
                Arc::new(Int64Array::from_iter_values(from..from + rows)),
            ],
        )
        .unwrap()
    };
    let table = hoffrec::lake::open_table(&lake, "raw/ha").await.unwrap();
    assert_eq!(table.version(), None);
    let table = table
        .write(vec![batch(0, 1000)])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .unwrap();
    table
        .write(vec![batch(1000, 500)])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .unwrap();

    // Opened again by URL alone, as the stages do: the settings are the store's.
    let again = hoffrec::lake::open_table(&LakeUrl::parse(&url).unwrap(), "raw/ha")
        .await
        .unwrap();
    assert_eq!(again.version(), Some(1));
    let ctx = datafusion::prelude::SessionContext::new();
    again.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", again.table_provider().await.unwrap()).unwrap();
    let out = ctx
        .sql("SELECT count(*), sum(dwell_ms) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let get = |i: usize| out[0].column(i).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    assert_eq!(get(0), 1500);
    assert_eq!(get(1), (0..1500).sum::<i64>());

    let store = lake.store().unwrap();
    let files: Vec<_> = store.list(Some(&lake.path(""))).try_collect().await.unwrap();
    for file in files {
        store.delete(&file.location).await.unwrap();
    }
}
