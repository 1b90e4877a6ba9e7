//! `hoffrec topics apply`: makes the cluster match the catalog where that is safe.
//! Missing topics are created; existing topics are never deleted, shrunk or repartitioned
//! (more partitions would move keys to other partitions), only compared and reported.

use super::{Catalog, Topic};
use crate::config::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot create a Kafka admin client: {0}")]
    Client(#[source] KafkaError),
    #[error("cannot read cluster metadata from {brokers}: {source}")]
    Metadata {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("the metadata request did not finish: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("admin request failed: {0}")]
    Request(#[source] KafkaError),
    #[error("creating topic {topic} failed: {code}")]
    Create { topic: String, code: RDKafkaErrorCode },
    #[error("describing the configs of topic {topic} failed: {code}")]
    Describe { topic: String, code: RDKafkaErrorCode },
}

/// A difference between the catalog and the cluster that apply will not fix by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub topic: String,
    pub setting: String,
    pub cluster: String,
    pub catalog: String,
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub in_sync: Vec<String>,
    pub drift: Vec<Drift>,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.created {
            writeln!(f, "created  {t}")?;
        }
        for t in &self.in_sync {
            writeln!(f, "in sync  {t}")?;
        }
        for d in &self.drift {
            writeln!(
                f,
                "DRIFT    {}: {} is {} on the cluster, {} in the catalog",
                d.topic, d.setting, d.cluster, d.catalog
            )?;
        }
        write!(
            f,
            "{} created, {} in sync, {} drifted setting(s)",
            self.created.len(),
            self.in_sync.len(),
            self.drift.len()
        )
    }
}

/// Creates the catalog's missing topics and reports drift on the existing ones.
pub async fn apply(catalog: &Catalog, kafka: &KafkaConfig) -> Result<ApplyReport, ApplyError> {
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        crate::kafka::client_config(kafka)
            .create()
            .map_err(ApplyError::Client)?,
    );
    let timeout = Duration::from_millis(kafka.request_timeout_ms);
    let existing = partition_counts(&admin, kafka, timeout).await?;
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let mut report = ApplyReport::default();

    let missing: Vec<&Topic> = catalog
        .topics
        .iter()
        .filter(|t| !existing.contains_key(&t.name))
        .collect();
    if !missing.is_empty() {
        let configs: Vec<BTreeMap<String, String>> = missing.iter().map(|t| t.kafka_configs()).collect();
        let new_topics: Vec<NewTopic> = missing
            .iter()
            .zip(&configs)
            .map(|(t, cfg)| {
                cfg.iter().fold(
                    NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(kafka.replication_factor)),
                    |nt, (k, v)| nt.set(k, v),
                )
            })
            .collect();
        for result in admin
            .create_topics(&new_topics, &opts)
            .await
            .map_err(ApplyError::Request)?
        {
            match result {
                Ok(name) => report.created.push(name),
                // Created by someone else between our metadata read and now: compare it below.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(ApplyError::Create { topic, code }),
            }
        }
    }

    let present: Vec<&Topic> = catalog
        .topics
        .iter()
        .filter(|t| !report.created.contains(&t.name))
        .collect();
    let specifiers: Vec<ResourceSpecifier> = present.iter().map(|t| ResourceSpecifier::Topic(&t.name)).collect();
    let described = if specifiers.is_empty() {
        Vec::new()
    } else {
        admin
            .describe_configs(&specifiers, &opts)
            .await
            .map_err(ApplyError::Request)?
    };
    let counts = partition_counts(&admin, kafka, timeout).await?;
    for (topic, result) in present.iter().zip(described) {
        let resource = result.map_err(|code| ApplyError::Describe {
            topic: topic.name.clone(),
            code,
        })?;
        let mut drifted = false;
        let mut push = |setting: &str, cluster: String, catalog: String| {
            drifted = true;
            report.drift.push(Drift {
                topic: topic.name.clone(),
                setting: setting.into(),
                cluster,
                catalog,
            });
        };
        if let Some(&count) = counts.get(&topic.name)
            && count != topic.partitions
        {
            push("partitions", count.to_string(), topic.partitions.to_string());
        }
        for (key, want) in topic.kafka_configs() {
            let have = resource
                .get(&key)
                .and_then(|e| e.value.clone())
                .unwrap_or_else(|| "(unset)".into());
            if have != want {
                push(&key, have, want);
            }
        }
        if !drifted {
            report.in_sync.push(topic.name.clone());
        }
    }
    Ok(report)
}

async fn partition_counts(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    kafka: &KafkaConfig,
    timeout: Duration,
) -> Result<BTreeMap<String, i32>, ApplyError> {
    // Metadata calls block; keep them off the async workers.
    let admin = admin.clone();
    let metadata = tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
        .await
        .map_err(ApplyError::Task)?
        .map_err(|source| ApplyError::Metadata {
            brokers: kafka.brokers.clone(),
            source,
        })?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}
