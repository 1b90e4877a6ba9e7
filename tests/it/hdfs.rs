//! Against the real HDFS NameNode/DataNode from tests/services/up.sh, through
//! hdfs-native: a Parquet file written through the lake's object store reads back intact.

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
