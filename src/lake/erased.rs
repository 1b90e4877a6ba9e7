//! Who was erased, and when (`crate::forget`): a small Delta table (`<lake>/privacy/erased`) that ingest
//! reads to drop an erased customer's later events and the fold reads to keep rows from
//! before an erasure out of what it folds. It holds the customer id and the time only,
//! which is what honouring the erasure needs; the audit topic names the customer by hash.

use crate::lake::LakeUrl;
use arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
use datafusion::prelude::SessionContext;
use deltalake::errors::DeltaTableError;
use deltalake::protocol::SaveMode;
use std::collections::HashMap;
use std::sync::Arc;

/// The registry's place under the lake.
pub const PATH: &str = "privacy/erased";

/// Customer id -> when their newest erasure was made (epoch ms).
pub type Erased = HashMap<String, i64>;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("request_id", DataType::Utf8, false),
        Field::new(
            "erased_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Records that the customers are erased as of `at_ms`; a second erasure of the same
/// customer adds a newer row.
pub async fn record(lake: &LakeUrl, customers: &[String], request_id: &str, at_ms: i64) -> Result<(), DeltaTableError> {
    let n = customers.len();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(customers)),
            Arc::new(StringArray::from(vec![request_id; n])),
            Arc::new(TimestampMicrosecondArray::from(vec![at_ms * 1000; n]).with_timezone("UTC")),
        ],
    )
    .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
    let table = crate::lake::open_table(lake, PATH).await?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_configuration(crate::lake::TABLE_PROPERTIES)
        .await?;
    Ok(())
}

/// Every erased customer with the time of their newest erasure, and the registry's version
/// (None: nobody was ever erased).
pub async fn load(lake: &LakeUrl) -> Result<(Erased, Option<u64>), DeltaTableError> {
    let table = crate::lake::cache::open_latest(lake, PATH).await?;
    let Some(version) = table.version() else {
        return Ok((Erased::new(), None));
    };
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    let batches = ctx
        .read_table(provider)
        .and_then(|df| df.select_columns(&["customer_id", "erased_at"]))
        .map_err(|e| DeltaTableError::Generic(e.to_string()))?
        .collect()
        .await
        .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
    let mut erased = Erased::new();
    for b in &batches {
        let ids =
            arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let ids = ids.as_string::<i32>();
        let at = b.column(1).as_primitive::<TimestampMicrosecondType>();
        for i in (0..b.num_rows()).filter(|&i| ids.is_valid(i) && at.is_valid(i)) {
            let ms = at.value(i) / 1000;
            let newest = erased.entry(ids.value(i).to_string()).or_insert(ms);
            *newest = (*newest).max(ms);
        }
    }
    Ok((erased, Some(version)))
}

/// The SHA-256 of a customer id, hex: how the audit topic names a customer.
pub fn hash(customer: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(customer.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_newest_erasure_of_each_customer_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(load(&lake).await.unwrap(), (Erased::new(), None));
        let one = |c: &str| vec![c.to_string()];
        record(&lake, &one("c-1"), "r-1", 1_000).await.unwrap();
        record(&lake, &one("c-2"), "r-2", 2_000).await.unwrap();
        record(&lake, &one("c-1"), "r-3", 3_000).await.unwrap();
        let (erased, version) = load(&lake).await.unwrap();
        assert_eq!(erased, Erased::from([("c-1".into(), 3_000), ("c-2".into(), 2_000)]));
        assert_eq!(version, Some(2));
        assert_eq!(hash("c-1").len(), 64);
    }
}
