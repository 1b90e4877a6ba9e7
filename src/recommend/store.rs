//! Versioned models in the lake: `models/<version>.json` holds each trained model with its
//! validation metrics, and `models/current.json` the promoted one, which `recommend`
//! re-reads to hot-swap.

use super::collab::Ease;
use super::model::Model;
use crate::lake::LakeUrl;
use object_store::{ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model store: {0}")]
    Io(String),
}

const CURRENT: &str = "models/current.json";

/// The promoted model, or `None` while nothing has been promoted.
pub async fn current(lake: &LakeUrl) -> Result<Option<Model>, StoreError> {
    get(lake, CURRENT).await
}

/// A JSON document of the lake, or `None` when there is none at `path`.
async fn get<T: serde::de::DeserializeOwned>(lake: &LakeUrl, path: &str) -> Result<Option<T>, StoreError> {
    let store = lake.store().map_err(|e| StoreError::Io(e.to_string()))?;
    match store.get(&lake.path(path)).await {
        Ok(found) => {
            let bytes = found.bytes().await.map_err(|e| StoreError::Io(e.to_string()))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Io(format!("{path}: {e}")))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(StoreError::Io(e.to_string())),
    }
}

/// Stores `model` under its version (every trained model is kept with its metrics).
pub async fn save(lake: &LakeUrl, model: &Model) -> Result<(), StoreError> {
    put(lake, model, &[format!("models/{}.json", model.version)]).await
}

/// Stores `model` under its version and makes it the current one.
pub async fn promote(lake: &LakeUrl, model: &Model) -> Result<(), StoreError> {
    put(
        lake,
        model,
        &[format!("models/{}.json", model.version), CURRENT.to_string()],
    )
    .await
}

/// Every stored model, oldest first (versions sort by time).
pub async fn history(lake: &LakeUrl) -> Result<Vec<Model>, StoreError> {
    use futures::TryStreamExt;
    let store = lake.store().map_err(|e| StoreError::Io(e.to_string()))?;
    let prefix = lake.path("models");
    let listed: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| StoreError::Io(e.to_string()))?;
    let mut out = Vec::new();
    for meta in listed {
        if meta.location.filename() == Some("current.json") {
            continue;
        }
        let bytes = store
            .get(&meta.location)
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?;
        if let Ok(m) = serde_json::from_slice::<Model>(&bytes) {
            out.push(m);
        }
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}

async fn put<T: serde::Serialize>(lake: &LakeUrl, value: &T, paths: &[String]) -> Result<(), StoreError> {
    let store = lake.store().map_err(|e| StoreError::Io(e.to_string()))?;
    let json = serde_json::to_vec(value).map_err(|e| StoreError::Io(e.to_string()))?;
    for path in paths {
        store
            .put(&lake.path(path), PutPayload::from(json.clone()))
            .await
            .map_err(|e| StoreError::Io(format!("{path}: {e}")))?;
    }
    Ok(())
}

/// The collaborative model candidates come from: `collab/ease-current.json`, beside its
/// versions (`collab/ease-<version>.json`). Not under `models/`, which holds rankers.
const EASE_CURRENT: &str = "collab/ease-current.json";

/// The current EASE model, or `None` before the first fit.
pub async fn current_ease(lake: &LakeUrl) -> Result<Option<Ease>, StoreError> {
    get(lake, EASE_CURRENT).await
}

/// When and how large the current EASE model was written, to tell a new one by (a stat,
/// not a read); `None` before the first fit.
pub async fn ease_stamp(lake: &LakeUrl) -> Result<Option<(i64, u64)>, StoreError> {
    let store = lake.store().map_err(|e| StoreError::Io(e.to_string()))?;
    match store.head(&lake.path(EASE_CURRENT)).await {
        Ok(meta) => Ok(Some((meta.last_modified.timestamp_millis(), meta.size))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(StoreError::Io(e.to_string())),
    }
}

/// Stores an EASE fit under its version and makes it the current one.
pub async fn promote_ease(lake: &LakeUrl, ease: &Ease) -> Result<(), StoreError> {
    put(
        lake,
        ease,
        &[format!("collab/ease-{}.json", ease.version), EASE_CURRENT.to_string()],
    )
    .await
}
