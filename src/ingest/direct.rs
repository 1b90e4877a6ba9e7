//! Landing without Kafka, for fixtures and benchmarks: JSON events are converted with
//! their Avro schema and committed through the same batch and table code the consumer
//! uses, as if they had been read from partition 0 of their topic.

use super::batch::{Coordinates, TopicBatch};
use super::table::{Committed, RawTable};
use crate::codec::SchemaSet;
use crate::lake::LakeUrl;
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// The consumer group the direct landings record their offsets under.
pub const GROUP: &str = "hoffrec-direct";

/// Commits `events` (event schema name, JSON event with `event_time` in ms) to the raw
/// table of `topic` in one Delta commit; offsets continue from the last direct landing.
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
    for (event, json) in events {
        let version = schemas
            .current(event)
            .ok_or_else(|| format!("no schema for event {event}"))?;
        let fields = super::record_fields(&version.schema).map_err(|e| e.to_string())?;
        batch.adopt(version.fingerprint, &fields)?;
        let value = crate::connect::json::to_avro(json, &version.schema).map_err(|e| format!("{event}: {e}"))?;
        let apache_avro::types::Value::Record(record) = value else {
            return Err(format!("{event} is not a record"));
        };
        let at = Coordinates {
            partition: 0,
            offset: next,
            kafka_timestamp_ms: Some(now),
            writer_schema: &version.id,
            event_time_ms: json["event_time"].as_i64().unwrap_or(now),
        };
        batch.account(0, next, Some(now), 100);
        batch.append(&record, &at, now).map_err(|e| e.to_string())?;
        next += 1;
    }
    let rows = batch.finish(table.arrow_schema().as_ref()).map_err(|e| e.to_string())?;
    let offsets = BTreeMap::from([(0, (stored, next - 1))]);
    table.commit(rows, &offsets).await.map_err(|e| e.to_string())
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
