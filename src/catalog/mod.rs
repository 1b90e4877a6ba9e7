//! The topic catalog: every Kafka topic the pipeline uses, declared as data in `topics/*.toml`,
//! checked against the Avro schemas in `avro/`. Loaded and validated at startup; every
//! problem is reported at once, so a connector operator fixes a catalog in one pass.

pub mod apply;
pub mod source;
pub mod tail;

use crate::codec::SchemaSet;
use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// What a topic is for. Raw topics are fed by a source; the others are the pipeline's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Raw,
    DeadLetter,
    LakeCommits,
    MartChanges,
    Recommendations,
    /// Related products per product (`crate::recommend::products`).
    ProductRecommendations,
    ConnectorOffsets,
    /// Requests to erase a customer (`crate::forget`).
    Erasure,
    /// What each erasure removed.
    Audit,
}

impl Role {
    /// The roles exactly one topic must play.
    pub const PIPELINE: [Role; 8] = [
        Role::DeadLetter,
        Role::LakeCommits,
        Role::MartChanges,
        Role::Recommendations,
        Role::ProductRecommendations,
        Role::ConnectorOffsets,
        Role::Erasure,
        Role::Audit,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Raw => "raw",
            Role::DeadLetter => "dead_letter",
            Role::LakeCommits => "lake_commits",
            Role::MartChanges => "mart_changes",
            Role::Recommendations => "recommendations",
            Role::ProductRecommendations => "product_recommendations",
            Role::ConnectorOffsets => "connector_offsets",
            Role::Erasure => "erasure",
            Role::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CleanupPolicy {
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "compact")]
    Compact,
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

impl CleanupPolicy {
    pub fn as_kafka(&self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Compact => "compact",
            Self::CompactDelete => "compact,delete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The site posts events to the HTTP event collector.
    Collector,
    /// A poller reads an HTTP JSON API.
    HttpPoll,
    /// Files dropped by a partner or exported by a service (TSV, CSV, YML).
    FileDrop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub kind: SourceKind,
    pub description: String,
    /// How an `http_poll` source calls its API (`[source.http]`).
    #[serde(default)]
    pub http: Option<source::HttpSpec>,
    /// How a `file_drop` source's files are read (`[source.file]`).
    #[serde(default)]
    pub file: Option<source::FileSpec>,
    /// Avro field -> how to fill it from a source item (`[source.mapping]`).
    #[serde(default)]
    pub mapping: BTreeMap<String, source::FieldSpec>,
}

/// The event schema of consent decisions (`avro/consent.avsc`).
pub const CONSENT_EVENT: &str = "consent";

/// One `topics/<name>.toml` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub name: String,
    pub role: Role,
    pub partitions: i32,
    pub cleanup_policy: CleanupPolicy,
    /// Absent for compacted topics (no time-based deletion); -1 keeps records forever.
    #[serde(default)]
    pub retention_ms: Option<i64>,
    /// Event schema name (`avro/<name>.avsc`); absent only for the dead-letter topic,
    /// whose values are the original bytes of the failed record.
    #[serde(default)]
    pub value_schema: Option<String>,
    /// Value fields whose values, joined by '/', form the Kafka key.
    #[serde(default)]
    pub key: Vec<String>,
    /// Further Kafka topic configs applied on creation and checked for drift.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    #[serde(default)]
    pub source: Option<Source>,
    /// The consent purpose that governs this topic's rows: the marts use a customer's rows
    /// only while their newest consent for it is `given`, and only rows collected since
    /// (`mart::consent`); per-customer sources ask only such customers.
    #[serde(default)]
    pub consent_purpose: Option<String>,
    #[serde(skip)]
    pub file: PathBuf,
}

impl Topic {
    /// The Kafka topic configs the catalog declares, as the broker names them.
    pub fn kafka_configs(&self) -> BTreeMap<String, String> {
        let mut configs = self.configs.clone();
        configs.insert("cleanup.policy".into(), self.cleanup_policy.as_kafka().into());
        if let Some(ms) = self.retention_ms {
            configs.insert("retention.ms".into(), ms.to_string());
        }
        configs
    }

    /// The Kafka key of a record: the key fields' values joined by '/'.
    pub fn key_of(&self, value: &apache_avro::types::Value) -> Option<String> {
        let apache_avro::types::Value::Record(fields) = value else {
            return None;
        };
        let mut parts = Vec::with_capacity(self.key.len());
        for key in &self.key {
            let (_, v) = fields.iter().find(|(name, _)| name == key)?;
            parts.push(match v {
                apache_avro::types::Value::String(s) => s.clone(),
                apache_avro::types::Value::Union(_, inner) => match inner.as_ref() {
                    apache_avro::types::Value::String(s) => s.clone(),
                    _ => return None,
                },
                _ => return None,
            });
        }
        Some(parts.join("/"))
    }
}

/// A catalog problem, tied to the file that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the topic catalog has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("the catalog has no {} topic", .0.as_str())]
    MissingRole(Role),
}

/// The validated catalog: topics plus every schema version.
#[derive(Debug)]
pub struct Catalog {
    pub topics: Vec<Topic>,
    pub schemas: SchemaSet,
}

impl Catalog {
    /// Loads and validates `topics_dir` against `schemas_dir`; fails listing every problem.
    pub fn load(topics_dir: &Path, schemas_dir: &Path) -> Result<Self, CatalogError> {
        let (catalog, problems) = Self::load_unchecked(topics_dir, schemas_dir);
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(CatalogError::Invalid(problems))
        }
    }

    /// Loads what can be loaded and returns it with every problem found.
    pub fn load_unchecked(topics_dir: &Path, schemas_dir: &Path) -> (Self, Vec<Problem>) {
        let (schemas, schema_problems) = SchemaSet::load(schemas_dir);
        let mut problems: Vec<Problem> = schema_problems
            .into_iter()
            .map(|p| Problem {
                file: p.path,
                message: p.message,
            })
            .collect();
        let topics = read_topic_files(topics_dir, &mut problems);
        check_topics(&topics, topics_dir, &schemas, schemas_dir, &mut problems);
        check_history(&schemas, &mut problems);
        (Catalog { topics, schemas }, problems)
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The single topic that plays a pipeline role (dead letters, lake commits, ...).
    pub fn topic_for(&self, role: Role) -> Option<&Topic> {
        self.topics.iter().find(|t| t.role == role)
    }

    /// The topic that plays `role`, for stages that cannot run without it.
    pub fn require(&self, role: Role) -> Result<&Topic, CatalogError> {
        self.topic_for(role).ok_or(CatalogError::MissingRole(role))
    }

    pub fn raw_topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.iter().filter(|t| t.role == Role::Raw)
    }

    /// The raw topic of the customers' consent events.
    pub fn consent_topic(&self) -> Option<&Topic> {
        self.raw_topics()
            .find(|t| t.value_schema.as_deref() == Some(CONSENT_EVENT))
    }
}

fn read_topic_files(dir: &Path, problems: &mut Vec<Problem>) -> Vec<Topic> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) => {
            problems.push(Problem {
                file: dir.to_path_buf(),
                message: format!("cannot list topic files: {e}"),
            });
            return Vec::new();
        }
    };
    paths.sort();
    let mut topics = Vec::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|text| toml::from_str::<Topic>(&text).map_err(|e| e.message().to_string()));
        match parsed {
            Ok(mut topic) => {
                topic.file = path;
                topics.push(topic);
            }
            Err(message) => problems.push(Problem { file: path, message }),
        }
    }
    if topics.is_empty() && problems.is_empty() {
        problems.push(Problem {
            file: dir.to_path_buf(),
            message: "no topic files (*.toml)".into(),
        });
    }
    topics
}

fn check_topics(
    topics: &[Topic],
    topics_dir: &Path,
    schemas: &SchemaSet,
    schemas_dir: &Path,
    problems: &mut Vec<Problem>,
) {
    let mut first_file: HashMap<&str, &Path> = HashMap::new();
    let mut by_role: HashMap<Role, Vec<&str>> = HashMap::new();
    for topic in topics {
        let mut problem = |message: String| {
            problems.push(Problem {
                file: topic.file.clone(),
                message,
            })
        };
        if let Some(first) = first_file.insert(&topic.name, &topic.file) {
            problem(format!(
                "duplicate topic name '{}' (also declared in {})",
                topic.name,
                first.display()
            ));
        }
        if let Err(why) = check_name(&topic.name) {
            problem(format!("topic name '{}' {why}", topic.name));
        }
        if topic.partitions < 1 {
            problem(format!("partitions must be at least 1, found {}", topic.partitions));
        }
        match topic.retention_ms {
            Some(ms) if ms != -1 && ms < 1 => {
                problem(format!("retention_ms must be positive or -1 (forever), found {ms}"))
            }
            _ => {}
        }
        if let Some(p) = &topic.consent_purpose
            && (p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        {
            problem(format!(
                "consent_purpose '{p}' must be lowercase letters, digits and '_'"
            ));
        }
        let compacted = topic.cleanup_policy != CleanupPolicy::Delete;
        // Dead letters are keyed by where they came from, not by value fields.
        if compacted && topic.key.is_empty() && topic.role != Role::DeadLetter {
            problem("a compacted topic needs a key: compaction keeps the last record per key".into());
        }
        match (topic.role, &topic.source) {
            (Role::Raw, None) => problem("a raw topic needs a [source] saying what feeds it".into()),
            (Role::Raw, Some(_)) if !topic.name.starts_with("raw.") => {
                problem(format!("raw topic '{}' must be named raw.<source>.<event>", topic.name))
            }
            (role, Some(_)) if role != Role::Raw => problem("only raw topics have a [source]".into()),
            _ => {}
        }
        if let Some(source) = &topic.source {
            if source.http.is_some() && source.kind != SourceKind::HttpPoll {
                problem("[source.http] belongs to sources of kind http_poll".into());
            }
            if let Some(http) = source
                .http
                .as_ref()
                .filter(|h| h.commit_interval_ms.saturating_mul(2) > h.transaction_timeout_ms)
            {
                problem(format!(
                    "[source.http] commit_interval_ms ({}) must be at most half of transaction_timeout_ms ({}): \
                     a commit interval plus the slowest page must fit in one transaction",
                    http.commit_interval_ms, http.transaction_timeout_ms
                ));
            }
            if source.http.as_ref().is_some_and(|h| h.per_customer.is_some()) && topic.consent_purpose.is_none() {
                problem("a per_customer source reads customers by their consent: set consent_purpose".into());
            }
            if source.http.is_some() && source.mapping.is_empty() {
                problem("an http_poll source needs a [source.mapping] onto its schema".into());
            }
            if source.file.is_some() && source.mapping.is_empty() {
                problem("a [source.file] needs a [source.mapping] onto its schema".into());
            }
            let schema = topic.value_schema.as_ref().and_then(|n| schemas.current(n));
            if let (Some(version), false) = (schema, source.mapping.is_empty()) {
                let names: Vec<&str> = match &version.schema {
                    Schema::Record(r) => r.fields.iter().map(|f| f.name.as_str()).collect(),
                    _ => Vec::new(),
                };
                for field in source.mapping.keys() {
                    if !names.contains(&field.as_str()) {
                        problem(format!(
                            "[source.mapping] fills '{field}', which the schema does not have"
                        ));
                    }
                }
            }
        }
        by_role.entry(topic.role).or_default().push(&topic.name);
        match (&topic.value_schema, topic.role) {
            (None, Role::DeadLetter) => {
                if !topic.key.is_empty() {
                    problem("the dead-letter topic keeps the failed record's own key; declare no key fields".into());
                }
            }
            (None, _) => problem("value_schema is missing".into()),
            (Some(name), _) => match schemas.current(name) {
                None => problem(format!(
                    "value_schema '{name}' does not exist: no {} loaded",
                    schemas_dir.join(format!("{name}.avsc")).display()
                )),
                Some(version) => {
                    for key in &topic.key {
                        if let Err(why) = check_key_field(&version.schema, key) {
                            problem(format!("key field '{key}' {why} in schema '{name}'"));
                        }
                    }
                }
            },
        }
    }
    // The consent gate and the social pollers read one consent topic; purposes need it.
    let consent_topics: Vec<&str> = topics
        .iter()
        .filter(|t| t.role == Role::Raw && t.value_schema.as_deref() == Some(CONSENT_EVENT))
        .map(|t| t.name.as_str())
        .collect();
    let governed = topics.iter().find(|t| t.consent_purpose.is_some());
    let consent_problem = match (consent_topics.as_slice(), governed) {
        ([_, _, ..], _) => Some(format!(
            "several raw topics carry consent events: {}",
            consent_topics.join(", ")
        )),
        ([], Some(t)) => Some(format!(
            "{} names a consent_purpose, but no raw topic carries consent events",
            t.name
        )),
        _ => None,
    };
    if let Some(message) = consent_problem {
        problems.push(Problem {
            file: topics_dir.to_path_buf(),
            message,
        });
    }
    for role in Role::PIPELINE {
        let message = match by_role.get(&role).map(Vec::as_slice).unwrap_or_default() {
            [_] => continue,
            [] => format!("no topic has role {}", role.as_str()),
            several => format!(
                "role {} is declared by several topics: {}",
                role.as_str(),
                several.join(", ")
            ),
        };
        problems.push(Problem {
            file: topics_dir.to_path_buf(),
            message,
        });
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("is not a legal Kafka topic name");
    }
    if name.len() > 249 {
        return Err("is longer than Kafka's 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may only contain ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn check_key_field(schema: &Schema, key: &str) -> Result<(), &'static str> {
    let Schema::Record(record) = schema else {
        return Err("cannot be looked up: the value is not a record");
    };
    let field = record.fields.iter().find(|f| f.name == key).ok_or("does not exist")?;
    let is_string = match &field.schema {
        Schema::String | Schema::Uuid(_) => true,
        Schema::Union(u) => u.variants().iter().any(|v| matches!(v, Schema::String)),
        _ => false,
    };
    if is_string { Ok(()) } else { Err("is not a string") }
}

/// Every older schema version must stay readable by its event's current version,
/// or records still in the topics would stop landing after a producer upgrade.
fn check_history(schemas: &SchemaSet, problems: &mut Vec<Problem>) {
    for old in schemas.versions() {
        let Some(current) = schemas.current(&old.event) else {
            problems.push(Problem {
                file: old.path.clone(),
                message: format!("historical version of '{}', which has no current schema", old.event),
            });
            continue;
        };
        if old.fingerprint == current.fingerprint {
            continue;
        }
        if let Err(e) = SchemaCompatibility::can_read(&old.schema, &current.schema) {
            problems.push(Problem {
                file: old.path.clone(),
                message: format!(
                    "records written with it cannot be read with {}: {e}",
                    current.path.display()
                ),
            });
        }
    }
}
