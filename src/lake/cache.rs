//! Tables opened once per process and brought up to date on each later open. A fold opens
//! every raw table and mart, and the recommender its marts, once a second: a fresh open
//! checks the table exists, reads its newest checkpoint and replays every commit since,
//! where bringing a held table up to date reads only the commits made since it was held.
//! The result is the same table at its newest version either way.

use super::LakeUrl;
use deltalake::DeltaTable;
use deltalake::errors::DeltaTableError;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

/// A held table and when the commit it is at was written: a table deleted, or deleted and
/// made anew at the same place, no longer has that commit file as it was, and replaying
/// the new log on top of the old state would mix two tables.
#[derive(Clone)]
struct Held {
    table: DeltaTable,
    written: chrono::DateTime<chrono::Utc>,
}

static HELD: LazyLock<Mutex<HashMap<String, Held>>> = LazyLock::new(Default::default);

/// When the commit file of the version `table` is at was written (None: not loaded, or
/// the file is gone).
async fn written(table: &DeltaTable) -> Option<chrono::DateTime<chrono::Utc>> {
    let version = table.version()?;
    let path = Path::from(format!("_delta_log/{version:020}.json"));
    table
        .log_store()
        .object_store(None)
        .head(&path)
        .await
        .ok()
        .map(|m| m.last_modified)
}

/// The table at `relative` under the lake at its newest version (not loaded when it does
/// not exist yet), as `super::open_table` gives it.
pub async fn open_latest(lake: &LakeUrl, relative: &str) -> Result<DeltaTable, DeltaTableError> {
    let key = lake.url(relative);
    let held = HELD.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
    if let Some(Held { mut table, written: at }) = held {
        let same = written(&table).await == Some(at);
        match same {
            true => match table.update_incremental(None).await {
                Ok(()) => {
                    hold(key, &table).await;
                    return Ok(table);
                }
                // Its log moved on past what can be replayed: read it from the start.
                Err(e) => tracing::debug!(table = %key, error = %e, "held table could not be updated; opening it"),
            },
            false => tracing::debug!(table = %key, "held table was deleted or made anew; opening it"),
        }
        HELD.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    }
    let table = super::open_table(lake, relative).await?;
    hold(key, &table).await;
    Ok(table)
}

/// Keeps `table` unless a newer version of it is held already (another task's open).
async fn hold(key: String, table: &DeltaTable) {
    let Some(at) = written(table).await else {
        return;
    };
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if held.get(&key).is_none_or(|h| h.table.version() <= table.version()) {
        held.insert(
            key,
            Held {
                table: table.clone(),
                written: at,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: i64) -> arrow::array::RecordBatch {
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
    }

    #[tokio::test]
    async fn a_held_table_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
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

    #[tokio::test]
    async fn a_table_made_anew_in_the_same_place_is_not_mixed_with_the_held_one() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeUrl::parse(dir.path().to_str().unwrap()).unwrap();
        let mut table = super::super::open_table(&lake, "t").await.unwrap();
        for n in 0..3 {
            table = table.write(vec![batch(n)]).await.unwrap();
        }
        assert_eq!(open_latest(&lake, "t").await.unwrap().version(), Some(2));
        // Deleted: not held any more.
        std::fs::remove_dir_all(dir.path().join("t")).unwrap();
        assert_eq!(open_latest(&lake, "t").await.unwrap().version(), None);
        // Made anew with more commits than the old one had: its own files only.
        let mut table = super::super::open_table(&lake, "t").await.unwrap();
        for n in 0..2 {
            table = table.write(vec![batch(n)]).await.unwrap();
        }
        assert_eq!(open_latest(&lake, "t").await.unwrap().version(), Some(1));
        std::fs::remove_dir_all(dir.path().join("t")).unwrap();
        let mut table = super::super::open_table(&lake, "t").await.unwrap();
        for n in 0..4 {
            table = table.write(vec![batch(n)]).await.unwrap();
        }
        let latest = open_latest(&lake, "t").await.unwrap();
        assert_eq!(latest.version(), Some(3));
        assert_eq!(latest.snapshot().unwrap().log_data().num_files(), 4);
    }
}
