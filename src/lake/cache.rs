//! Tables opened once per process and brought up to date on each later open. A fold opens
//! every raw table and mart, and the recommender its marts, once a second: a fresh open
//! checks the table exists, reads its newest checkpoint and replays every commit since,
//! where bringing a held table up to date reads only the commits made since it was held.
//! The result is the same table at its newest version either way.

use super::LakeUrl;
use deltalake::DeltaTable;
use deltalake::errors::DeltaTableError;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

static HELD: LazyLock<Mutex<HashMap<String, DeltaTable>>> = LazyLock::new(Default::default);

/// The table at `relative` under the lake at its newest version (not loaded when it does
/// not exist yet), as `super::open_table` gives it.
pub async fn open_latest(lake: &LakeUrl, relative: &str) -> Result<DeltaTable, DeltaTableError> {
    let key = lake.url(relative);
    let held = HELD.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
    if let Some(mut table) = held {
        match table.update_incremental(None).await {
            Ok(()) => {
                hold(key, &table);
                return Ok(table);
            }
            // Its log moved on past what can be replayed (cleaned up, or the table was made
            // anew): read it from the start, as a first open does.
            Err(e) => {
                tracing::debug!(table = %key, error = %e, "held table could not be updated; opening it");
                HELD.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            }
        }
    }
    let table = super::open_table(lake, relative).await?;
    hold(key, &table);
    Ok(table)
}

/// Keeps `table` unless a newer version of it is held already (another task's open).
fn hold(key: String, table: &DeltaTable) {
    if table.version().is_none() {
        return;
    }
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if held.get(&key).is_none_or(|h| h.version() <= table.version()) {
        held.insert(key, table.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_table_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
        let batch = |n: i64| {
            let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
                "n",
                arrow::datatypes::DataType::Int64,
                false,
            )]));
            arrow::array::RecordBatch::try_new(
                schema,
                vec![std::sync::Arc::new(arrow::array::Int64Array::from(vec![n]))],
            )
            .unwrap()
        };
        assert_eq!(open_latest(&lake, "t").await.unwrap().version(), None);
        let mut table = super::super::open_table(&lake, "t").await.unwrap();
        table = table.write(vec![batch(1)]).await.unwrap();
        assert_eq!(open_latest(&lake, "t").await.unwrap().version(), Some(0));
        // Another writer commits: the next open sees it.
        for n in 2..=3 {
            table = table.write(vec![batch(n)]).await.unwrap();
        }
        let latest = open_latest(&lake, "t").await.unwrap();
        assert_eq!(latest.version(), Some(2));
        assert_eq!(latest.snapshot().unwrap().log_data().num_files(), 3);
    }
}
