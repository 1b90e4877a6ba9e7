//! Versioned models in the lake: `models/<version>.json` holds each trained model with its
//! validation metrics, and `models/current.json` the promoted one, which `recommend`
//! re-reads to hot-swap.

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
    let store = lake.store().map_err(|e| StoreError::Io(e.to_string()))?;
    match store.get(&lake.path(CURRENT)).await {
        Ok(found) => {
            let bytes = found.bytes().await.map_err(|e| StoreError::Io(e.to_string()))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Io(format!("{CURRENT}: {e}")))
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

async fn put(lake: &LakeUrl, model: &Model, paths: &[String]) -> Result<(), StoreError> {
    let store = lake.store().map_err(|e| StoreError::Io(e.to_string()))?;
    let json = serde_json::to_vec_pretty(model).map_err(|e| StoreError::Io(e.to_string()))?;
    for path in paths {
        store
            .put(&lake.path(path), PutPayload::from(json.clone()))
            .await
            .map_err(|e| StoreError::Io(format!("{path}: {e}")))?;
    }
    Ok(())
}
