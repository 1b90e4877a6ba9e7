//! `hoffrec import --source TOPIC FILE...`: file drops (YML feeds, Metrica TSV, CSV
//! exports) into the topic's raw topic through its declared mapping. Items that do not map
//! and rows that cannot be read go to `dlq.raw`; a file that cannot be parsed at all is
//! an error before anything of it is produced, so it can be fixed and imported again.

use super::error::ConnectError;
use super::files;
use super::produce::{dead_letter, prepare, send_all};
use crate::catalog::{Catalog, Role};
use crate::config::KafkaConfig;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub source: String,
    pub files: u64,
    pub items: u64,
    pub records: u64,
    pub dead_letters: u64,
}

const CHUNK: usize = 2000;

pub async fn run(
    catalog: &Catalog,
    kafka: &KafkaConfig,
    topic: &str,
    paths: &[PathBuf],
) -> Result<Summary, ConnectError> {
    let topic = catalog
        .topic(topic)
        .ok_or_else(|| ConnectError::Config(format!("{topic} is not in the topic catalog")))?;
    let spec = topic
        .source
        .as_ref()
        .and_then(|s| s.file.clone())
        .ok_or_else(|| ConnectError::Config(format!("{} declares no [source.file]", topic.name)))?;
    let event = topic.value_schema.clone().unwrap_or_default();
    let version = catalog
        .schemas
        .current(&event)
        .ok_or_else(|| ConnectError::Config(format!("schema {event} is not loaded")))?;
    let dlq = catalog.require(Role::DeadLetter)?;
    let producer: FutureProducer = crate::kafka::client_config(kafka)
        .set("enable.idempotence", "true")
        .create()?;
    let mut summary = Summary {
        source: topic.name.clone(),
        ..Default::default()
    };
    for path in paths {
        // Entered only around logging: a guard held across the awaits below would tag
        // other tasks' logs with this file in the demo, where many tasks share threads.
        let span = tracing::info_span!("import", file = %path.display());
        let bytes = std::fs::read(path).map_err(|error| ConnectError::Read {
            path: path.clone(),
            error,
        })?;
        let items = files::read(&bytes, &spec).map_err(|error| ConnectError::Parse {
            path: path.clone(),
            error,
        })?;
        let origin = format!("import:{}:{}", topic.name, path.display());
        let bar = ProgressBar::new(items.len() as u64).with_message(path.display().to_string());
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} items, {per_sec}, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        summary.files += 1;
        for chunk in items.chunks(CHUNK) {
            let mut records = Vec::with_capacity(chunk.len());
            for item in chunk {
                summary.items += 1;
                let refused = match item {
                    Ok(json) => match prepare(topic, version, json) {
                        Ok(record) => {
                            records.push(record);
                            None
                        }
                        Err(reason) => Some((serde_json::to_vec(json).unwrap_or_default(), "invalid_item", reason)),
                    },
                    Err((text, reason)) => Some((text.clone().into_bytes(), "unreadable_row", reason.clone())),
                };
                if let Some((payload, class, reason)) = refused {
                    dead_letter(&producer, &dlq.name, &origin, &payload, class, &reason).await?;
                    summary.dead_letters += 1;
                }
            }
            send_all(&producer, &topic.name, &records)
                .await
                .map_err(|error| ConnectError::Delivery {
                    topic: topic.name.clone(),
                    error,
                })?;
            summary.records += records.len() as u64;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        span.in_scope(|| tracing::info!(items = items.len(), "file imported"));
    }
    Ok(summary)
}
