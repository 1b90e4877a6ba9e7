//! The raw tables' layout, shared by ingest (which writes them), the marts and the
//! connectors (which read them): where a topic's table lives, the columns ingest adds to
//! every row, and the transaction ids that store each partition's offsets.

use super::columns::TIMESTAMP_TZ;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

/// Columns ingest adds to every raw table.
pub const PARTITION_COLUMN: &str = "event_date";
pub const META: [&str; 5] = [
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_timestamp",
    "_writer_schema",
    "_ingested_at",
];
/// Ingest's columns that hold one or a few values per batch (partition, writer, time).
pub const FEW_VALUED: [&str; 3] = [META[0], META[3], META[4]];

/// Where a topic's raw table lives under the lake root: `raw/<topic>`.
pub fn path(topic: &str) -> String {
    format!("raw/{topic}")
}

/// The name of a topic's table in SQL (the `raw` schema of a fold or a session, database
/// `raw` in Spark): without the `raw.` prefix, `.` and `-` turned into `_`, so it needs no
/// quotes (`raw.site.page_view` -> `site_page_view`).
pub fn sql_name(topic: &str) -> String {
    topic.strip_prefix("raw.").unwrap_or(topic).replace(['.', '-'], "_")
}

/// The Delta transaction id under which a worker group stores one partition's offset.
pub fn app_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}-{topic}-{partition}")
}

/// The schema a raw table has before anything landed in it: the event's fields, then
/// ingest's own columns. Readers use it to treat a topic that has not landed yet as empty.
pub fn empty_table_schema(event_fields: &Fields) -> SchemaRef {
    let fields: Vec<Field> = event_fields
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .chain(meta_fields())
        .collect();
    Arc::new(Schema::new(fields))
}

/// Ingest's own columns, after the event's fields in every raw table.
pub fn meta_fields() -> Vec<Field> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_TZ.into()));
    vec![
        Field::new(META[0], DataType::Int32, true),
        Field::new(META[1], DataType::Int64, true),
        Field::new(META[2], ts.clone(), true),
        Field::new(META[3], DataType::Utf8, true),
        Field::new(META[4], ts, true),
        Field::new(PARTITION_COLUMN, DataType::Date32, true),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn sql_names_need_no_quotes() {
        assert_eq!(super::sql_name("raw.site.page_view"), "site_page_view");
        assert_eq!(super::sql_name("raw.it-1a2b.product_view"), "it_1a2b_product_view");
    }
}
