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

/// Stores `model` under its version and makes it the current one.
pub async fn promote(lake: &LakeUrl, model: &Model) -> Result<(), StoreError> {
    let store = lake.store().map_err(|e| StoreError::Io(e.to_string()))?;
    let json = serde_json::to_vec_pretty(model).map_err(|e| StoreError::Io(e.to_string()))?;
    for path in [format!("models/{}.json", model.version), CURRENT.to_string()] {
        store
            .put(&lake.path(&path), PutPayload::from(json.clone()))
            .await
            .map_err(|e| StoreError::Io(format!("{path}: {e}")))?;
    }
    Ok(())
}
