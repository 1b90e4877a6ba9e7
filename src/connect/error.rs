//! Why `hoffrec connect` or `hoffrec import` stopped, sorted by what the operator does:
//! fix the catalog or the command line, fix or replace a file, or wait for the broker or
//! the API and run again.

use super::fetch::FetchError;
use super::files::FileError;
use super::offsets::OffsetsError;
use crate::catalog::CatalogError;
use rdkafka::error::KafkaError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The command names sources the catalog does not declare, or declares them wrongly.
    #[error("connect configuration: {0}")]
    Config(String),
    /// The catalog lacks a topic every connector needs (dead letters, cursors).
    #[error("connect configuration: {0}")]
    Catalog(#[from] CatalogError),
    /// A file to import cannot be read; nothing of it was produced.
    #[error("connect configuration: {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// A file to import cannot be parsed; nothing of it was produced, fix it and import again.
    #[error("connect configuration: {}: {error}", path.display())]
    Parse { path: PathBuf, error: FileError },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    #[error("{source_topic}: {error}")]
    Fetch { source_topic: String, error: FetchError },
    /// The broker did not take every record of a pass (or an import chunk).
    #[error("{topic}: the broker did not take the pass's records; the cursor stays where it was")]
    Delivery {
        topic: String,
        #[source]
        error: KafkaError,
    },
}
