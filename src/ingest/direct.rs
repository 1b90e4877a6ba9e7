//! Landing without Kafka, for fixtures and benchmarks: JSON events are converted with
//! their Avro schema and committed through the same batch and table code the consumer
//! uses, as if they had been read from partition 0 of their topic.

use super::batch::{Checks, TopicBatch};
use super::checks::Rules;
use super::contract::TopicContract;
use super::decode::WriterPlan;
use super::table::{Committed, RawTable};
use crate::codec::SchemaSet;
use crate::lake::LakeUrl;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The consumer group the direct landings record their offsets under.
pub const GROUP: &str = "hoffrec-direct";

/// Commits `events` (event schema name, JSON event with `event_time` in ms) to the raw
/// table of `topic` in one Delta commit; offsets continue from the last direct landing.
/// The events are encoded and then decoded, cleaned and checked like consumed records
/// (except for event times ahead of the wall clock); any that ingest would dead-letter
/// fail the landing, with its reason.
pub async fn land_json(
    lake: &LakeUrl,
    schemas: &SchemaSet,
    topic: &str,
    events: &[(&str, &Json)],
) -> Result<Committed, String> {
    let mut table = RawTable::open(lake, topic, GROUP, 128 << 20)
        .await
        .map_err(|e| e.to_string())?;
    let stored = table
        .stored_offsets(&[0])
        .await
        .map_err(|e| e.to_string())?
        .get(&0)
        .copied()
        .flatten();
    let mut next = stored.map_or(0, |o| o + 1);
    let mut batch = TopicBatch::new(topic);
    let now = chrono::Utc::now().timestamp_millis();
    // Fixtures and benchmarks run on their own clock, often ahead of the wall clock.
    let rules = Rules::new(&crate::config::IngestConfig {
        max_future_ms: u64::MAX,
        ..Default::default()
    });
    let mut plans: BTreeMap<u64, Arc<WriterPlan>> = BTreeMap::new();
    let required = match events
        .first()
        .and_then(|(event, _)| schemas.current(event).map(|v| (event, v)))
    {
        Some((event, v)) => TopicContract::new(event, &v.schema).required,
        None => Vec::new(),
    };
    let mut seen = super::checks::Horizon::new(usize::MAX);
    let mut checks = Checks {
        rules: &rules,
        required: &required,
        now_ms: now,
        seen: &mut seen,
    };
    for (event, json) in events {
        let version = schemas
            .current(event)
            .ok_or_else(|| format!("no schema for event {event}"))?;
        let plan = match plans.get(&version.fingerprint) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(WriterPlan::new(version).map_err(|r| r.message)?);
                plans.insert(version.fingerprint, p.clone());
                p
            }
        };
        let value = crate::codec::json::to_avro(json, &version.schema).map_err(|e| format!("{event}: {e}"))?;
        let bytes = crate::codec::encode_with(version, value).map_err(|e| format!("{event}: {e}"))?;
        if batch.take((0, next, Some(now)), None, &bytes, Vec::new(), Ok(&plan)) {
            batch.seal(false, &mut checks);
        }
        next += 1;
    }
    batch.seal(true, &mut checks);
    if let Some(l) = batch.letters.first() {
        return Err(format!(
            "{} of {} events would be dead-lettered; offset {}: {} ({})",
            batch.letters.len(),
            events.len(),
            l.offset,
            l.message,
            l.class
        ));
    }
    let rows = batch.finish(table.arrow_schema().as_ref()).map_err(|e| e.to_string())?;
    let offsets = BTreeMap::from([(0, (stored, next - 1))]);
    let committed = table.commit(rows, &offsets).await.map_err(|e| e.to_string())?;
    if let Some(due) = table.checkpoint_due(committed.version)
        && let Err(e) = crate::lake::maintenance::checkpoint_table(&due).await
    {
        // The rows are in; the next checkpoint due, or upkeep, writes one.
        tracing::warn!(error = %e, "raw table checkpoint failed");
    }
    Ok(committed)
}

/// Lands typed events (the collector's format) straight into their raw tables.
pub async fn land_typed(lake: &LakeUrl, catalog: &crate::catalog::Catalog, events: &[Json]) -> Result<(), String> {
    let mut by_topic: BTreeMap<String, Vec<(String, &Json)>> = BTreeMap::new();
    for e in events {
        let kind = e["type"].as_str().unwrap_or_default();
        let topic = catalog
            .raw_topics()
            .find(|t| t.value_schema.as_deref() == Some(kind))
            .ok_or_else(|| format!("no raw topic takes {kind}"))?;
        by_topic
            .entry(topic.name.clone())
            .or_default()
            .push((kind.to_string(), e));
    }
    for (topic, items) in by_topic {
        let items: Vec<(&str, &Json)> = items.iter().map(|(k, e)| (k.as_str(), *e)).collect();
        land_json(lake, &catalog.schemas, &topic, &items).await?;
    }
    Ok(())
}
