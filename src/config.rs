//! Typed, layered configuration: built-in defaults, then a TOML file, then `HOFFREC__`
//! environment variables (`HOFFREC__KAFKA__BROKERS` sets `kafka.brokers`), then command-line
//! flags. Unknown keys are rejected and every problem is reported at once, each with the
//! layer it came from, so one run of `hoffrec config show` says all that is wrong.

pub use crate::lake::maintenance::MaintenanceConfig;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const ENV_PREFIX: &str = "HOFFREC__";
/// Read when no `--config` is given and the file exists.
pub const DEFAULT_FILE: &str = "hoffrec.toml";

/// Maps whose keys are free-form (passed through to librdkafka and to the HDFS client).
const FREE_MAPS: [&str; 2] = ["kafka.properties", "lake.hdfs_options"];

/// SASL mechanisms librdkafka (built with OpenSSL and Cyrus SASL) offers.
const SASL_MECHANISMS: [&str; 5] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub catalog: CatalogConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub collector: CollectorConfig,
    pub ingest: IngestConfig,
    pub mart: MartConfig,
    pub recommend: RecommendConfig,
    pub forget: ForgetConfig,
    pub serve: ServeConfig,
}

/// The site's read path (`hoffrec serve`), answering on `http.listen`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where the replica keeps its snapshot of the lists; empty: no snapshot (a restart
    /// reads the whole topic).
    pub state_dir: String,
    pub snapshot_interval_ms: u64,
    /// An older snapshot is not used: the list topic forgets tombstones after
    /// `delete.retention.ms` (24 h by default), so an erased list could come back.
    pub max_snapshot_age_ms: u64,
    /// How often the catalogue (stock, popularity) is read from the lake.
    pub catalogue_refresh_ms: u64,
    pub cache_max_age_s: u64,
    pub default_limit: usize,
    pub max_limit: usize,
    /// `hoffrec refresh`: how often it looks for lists to make again, lists older than
    /// this are made again, and at most this many customers are asked for per look.
    pub refresh_interval_ms: u64,
    pub max_list_age_ms: u64,
    pub refresh_max_per_interval: usize,
}

impl ServeConfig {
    /// How many items an answer carries: what was asked, within 1..=`max_limit`.
    pub fn limit(&self, asked: Option<usize>) -> usize {
        asked.unwrap_or(self.default_limit).clamp(1, self.max_limit.max(1))
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            state_dir: String::new(),
            snapshot_interval_ms: 30_000,
            max_snapshot_age_ms: 12 * 3_600_000,
            catalogue_refresh_ms: 30_000,
            cache_max_age_s: 60,
            default_limit: 10,
            max_limit: 50,
            refresh_interval_ms: 60_000,
            max_list_age_ms: 24 * 3_600_000,
            refresh_max_per_interval: 10_000,
        }
    }
}

/// Erasure (`hoffrec forget`): requests on `privacy.erasure`, records on `privacy.audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForgetConfig {
    /// Consumer group of `hoffrec forget --follow`.
    pub group: String,
}

impl Default for ForgetConfig {
    fn default() -> Self {
        Self {
            group: "hoffrec-forget".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    pub client_id: String,
    /// Replication factor for topics `topics apply` creates; -1 takes the broker's default.
    pub replication_factor: i32,
    pub request_timeout_ms: u64,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    pub security_protocol: String,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (these take the username and password), GSSAPI
    /// (Kerberos: `sasl.kerberos.*` in `properties`) or OAUTHBEARER; empty leaves
    /// librdkafka's default, GSSAPI.
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: Secret,
    /// Further librdkafka properties, passed through as given (e.g. `ssl.ca.location`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            client_id: "hoffrec".into(),
            replication_factor: -1,
            request_timeout_ms: 30_000,
            security_protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Lake root: a local path, `file:///abs/path`, `hdfs://host:port/path` (one NameNode)
    /// or `hdfs://nameservice/path` (NameNode HA, resolved through the Hadoop settings).
    pub url: String,
    /// Hadoop client settings for an HDFS lake, over those hdfs-native reads from
    /// `HADOOP_CONF_DIR`'s core-site.xml and hdfs-site.xml: the NameNodes of a nameservice
    /// (`dfs.ha.namenodes.<ns>`, `dfs.namenode.rpc-address.<ns>.<nn>`), Kerberos
    /// (`hadoop.security.authentication`), and so on. Passed through as given.
    pub hdfs_options: BTreeMap<String, String>,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            url: "./lake".into(),
            hdfs_options: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    pub topics_dir: PathBuf,
    pub schemas_dir: PathBuf,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            topics_dir: "topics".into(),
            schemas_dir: "avro".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `hoffrec=debug,rdkafka=warn`.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "hoffrec=info,deltalake_core=error,warn".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address for `/metrics`, `/healthz` and `/readyz`, e.g. `127.0.0.1:9464`; empty turns it off.
    /// `hoffrec dashboard` and `hoffrec demo` serve the dashboard there too.
    pub listen: String,
    /// Other stages' `/metrics` URLs the dashboard adds to this process's own metrics.
    pub scrape_urls: Vec<String>,
    /// Where `hoffrec serve` answers, e.g. `http://serve.internal:8090`: the dashboard
    /// links each customer to the answer the site gets. Empty: no link (`hoffrec demo`
    /// serves on its own `--http` address and links there).
    pub serve_url: String,
    /// When set, the dashboard's JSON API (customer data) answers only requests with
    /// `Authorization: Bearer <token>`; the page passes `#token=...` from its address.
    pub dashboard_token: Secret,
}

/// The site's event collector (`POST /v1/events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    pub listen: String,
    /// Who may post: a TOML file of producers, each with the SHA-256 of its bearer key and
    /// the event types it may send. Empty: anyone who reaches `listen` may post.
    pub keys_file: String,
    /// Larger bodies are answered 413.
    pub max_body_bytes: u64,
    /// More events in one request are answered 413.
    pub max_events_per_request: u64,
    /// Events dated later than now + this are refused: a far-future time would outrank
    /// every later decision (a consent withdrawal, say).
    pub max_future_ms: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8088".into(),
            keys_file: String::new(),
            max_body_bytes: 4 * 1024 * 1024,
            max_events_per_request: 1000,
            max_future_ms: 300_000,
        }
    }
}

/// The landing stage: raw topics -> micro-batches -> Delta tables under `<lake>/raw/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Kafka consumer group; also the prefix of the Delta `txn` app ids that store offsets.
    pub group: String,
    /// Raw topics to land; empty means every raw topic in the catalog.
    pub topics: Vec<String>,
    /// Consumer threads in this process, each a group member with its own batches.
    pub workers: u32,
    /// A topic's batch is flushed when it holds this many rows ...
    pub max_batch_rows: u64,
    /// ... or this many bytes of Avro payload ...
    pub max_batch_bytes: u64,
    /// ... or its oldest record has waited this long, even with no further traffic.
    pub flush_interval_ms: u64,
    /// Batches of one topic between flush and settled commit: the first commits while the
    /// others' data files are written (commits themselves stay one at a time, in order).
    pub max_batches_in_flight: u64,
    /// Event ids remembered per topic after they landed, to drop re-sent events.
    pub dedup_horizon_events: u64,
    /// Events stamped further than this in the future are rejected.
    pub max_future_ms: u64,
    /// Events stamped before this instant (ms since the epoch) are rejected.
    pub min_event_time_ms: i64,
    /// Numeric fields whose name ends with one of these must not be negative.
    pub non_negative_suffixes: Vec<String>,
    /// String fields with these names are lower-cased (all strings are trimmed).
    pub lowercase_fields: Vec<String>,
    /// Target Parquet file size for writes and compaction.
    pub target_file_bytes: u64,
    /// First wait before retrying a failed lake write; doubles up to 30 s.
    pub retry_backoff_ms: u64,
    pub maintenance: MaintenanceConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            group: "hoffrec-ingest".into(),
            topics: Vec::new(),
            workers: 1,
            max_batch_rows: 250_000,
            max_batch_bytes: 64 * 1024 * 1024,
            flush_interval_ms: 5_000,
            max_batches_in_flight: 2,
            dedup_horizon_events: 200_000,
            max_future_ms: 24 * 3600 * 1000,
            min_event_time_ms: 946_684_800_000,
            non_negative_suffixes: ["_kopecks", "_ms", "_sq_m", "quantity"].map(String::from).to_vec(),
            lowercase_fields: vec!["email".into()],
            target_file_bytes: 128 * 1024 * 1024,
            retry_backoff_ms: 500,
            maintenance: MaintenanceConfig::default(),
        }
    }
}

/// The marts: SQL in `mart_sql/` folded incrementally into `<lake>/mart/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MartConfig {
    /// Ordered SQL files (views and marts).
    pub sql_dir: PathBuf,
    /// Consumer group reading `lake.commits` (the trigger; one mart process at a time).
    pub group: String,
    /// After a lake commit arrives, wait this long for more before folding, so a burst
    /// of commits costs one fold. Every millisecond here is one a fresh list waits.
    pub debounce_ms: u64,
    /// Fold at least this often even with no lake commits seen (0: only on commits).
    pub interval_ms: u64,
    /// Parquet file size when mart tables are compacted.
    pub target_file_bytes: u64,
    /// Compaction, checkpoints and vacuum of the mart tables, run between folds. Vacuum
    /// retention also bounds how long the mart stage may stay down: a combining mart reads
    /// its inputs as of its last fold.
    pub maintenance: MaintenanceConfig,
}

impl Default for MartConfig {
    fn default() -> Self {
        Self {
            sql_dir: PathBuf::from("mart_sql"),
            group: "hoffrec-mart".into(),
            debounce_ms: 50,
            interval_ms: 60_000,
            target_file_bytes: 128 * 1024 * 1024,
            maintenance: MaintenanceConfig::default(),
        }
    }
}

/// The recommender: `mart.changes` -> ranked lists on `recs.customer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendConfig {
    /// Consumer group over `mart.changes`; run more members to scale.
    pub group: String,
    /// Products per list.
    pub top_k: usize,
    /// Changes are gathered at most this long into one batch (one read of the marts)...
    pub batch_ms: u64,
    /// ...and a batch closes early once no change has come for this long: a fold announces
    /// its customers at once, so waiting on only delays their lists.
    pub batch_quiet_ms: u64,
    /// How long the site may show a list.
    pub valid_for_ms: u64,
    /// How often the promoted model is re-read from the lake (hot swap).
    pub model_check_ms: u64,
    /// Business rules (TOML); unset means the built-in `src/recommend/rules.toml`.
    pub rules_file: Option<PathBuf>,
    /// `hoffrec train`: interactions of the newest this many days form the training set ...
    pub train_window_days: u32,
    /// ... of which the newest share validates (AUC, NDCG@10) instead of training ...
    pub train_validation_share: f64,
    /// ... and the stage retrains this often when the interactions mart has new commits.
    pub train_interval_ms: u64,
    /// EASE's L2 regularisation (larger: closer to popularity, smoother weights).
    pub ease_lambda: f64,
    /// EASE is fitted on this many products, those most customers touched (memory and time
    /// grow with its square and cube); ALS covers the rest of the catalogue.
    pub ease_max_items: usize,
    /// Latent factors of the implicit ALS fitted beside EASE (0: no ALS). Time grows with
    /// their cube per product and customer, memory with products x factors.
    pub als_factors: usize,
    /// Without both reacted and ignored exposures the ranker learns from next purchases:
    /// the marts as they were this many days ago give each customer's candidates and
    /// features, and what they bought since labels them.
    pub train_label_horizon_days: u32,
    /// The novel head (what never-bought products a customer buys next) learns from this
    /// many such snapshots, a horizon apart: new products are bought far less often than
    /// old ones, and one horizon holds too few of them.
    pub train_novel_cutoffs: u32,
    /// Places in each published list given to exploration: products drawn uniformly from
    /// the `explore_pool` ranked just below the ranker's own top, at random places, each
    /// logged with its propensity. Without them a model learns only about what it already
    /// shows. 0 turns exploration off.
    pub explore_slots: usize,
    pub explore_pool: usize,
    /// Training weighs an exposure by 1 / propensity (exploration) and a reaction by
    /// 1 / how often its position is looked at (position bias), each capped at this.
    pub train_max_ips_weight: f64,
}

impl Default for RecommendConfig {
    fn default() -> Self {
        Self {
            group: "hoffrec-recommend".into(),
            top_k: 10,
            batch_ms: 1_000,
            batch_quiet_ms: 20,
            valid_for_ms: 7 * 24 * 3600 * 1000,
            model_check_ms: 10_000,
            rules_file: None,
            train_window_days: 28,
            train_validation_share: 0.2,
            train_interval_ms: 15 * 60 * 1000,
            ease_lambda: 50.0,
            ease_max_items: 4000,
            als_factors: 32,
            train_label_horizon_days: 7,
            train_novel_cutoffs: 3,
            explore_slots: 2,
            explore_pool: 20,
            train_max_ips_weight: 10.0,
        }
    }
}

/// A credential. Shown as `********` by `Debug` and when serialised (so `config show`
/// and logs never print it); the value is only reachable through [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "********" } else { "\"\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_set() { "********" } else { "" })
    }
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub brokers: Option<String>,
    pub lake: Option<String>,
    pub topics_dir: Option<PathBuf>,
    pub schemas_dir: Option<PathBuf>,
    pub http: Option<String>,
    pub group: Option<String>,
    pub collector_listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("the configuration has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads the layers from the real environment: the process's configuration. Its
    /// lake's HDFS settings become the settings of that HDFS store in this process, so
    /// every stage that opens the lake by URL (`LakeUrl::parse`) uses them.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let config = Self::load_with_env(file, overrides, std::env::vars())?;
        crate::lake::LakeUrl::with_settings(&config.lake.url, &config.lake.hdfs_options)
            .map_err(|e| ConfigError::Invalid(vec![format!("lake.url: {e}")]))?;
        Ok(config)
    }

    /// Loads the layers with an explicit environment (tests pass their own).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_path_buf())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_FILE).exists() => figment = figment.merge(Toml::file_exact(DEFAULT_FILE)),
            None => {}
        }
        let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        figment = figment.merge(Layer::env(env)).merge(Layer::flags(overrides.entries()));
        let merged: Json = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.into_iter().map(|e| e.to_string()).collect()))?;
        let reference = serde_json::to_value(Config::default()).expect("defaults serialise");
        let mut problems = Vec::new();
        // Bad values are replaced by their defaults and unknown keys dropped, so the value
        // checks below still run and the user sees every problem in one go.
        let normalized = normalize(&merged, &reference, "", &figment, &mut problems);
        match serde_json::from_value::<Config>(normalized) {
            Ok(config) => {
                problems.extend(config.validate());
                if problems.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError::Invalid(problems))
                }
            }
            Err(e) => {
                problems.push(e.to_string());
                Err(ConfigError::Invalid(problems))
            }
        }
    }

    /// Checks values against each other and against what the stages accept.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            problems.push("kafka.brokers is empty: give host:port of at least one broker".into());
        }
        if k.replication_factor == 0 || k.replication_factor < -1 {
            problems.push(format!(
                "kafka.replication_factor must be -1 (broker default) or at least 1, found {}",
                k.replication_factor
            ));
        }
        if k.request_timeout_ms == 0 {
            problems.push("kafka.request_timeout_ms must be positive".into());
        }
        let protocols = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
        if !protocols.contains(&k.security_protocol.as_str()) {
            problems.push(format!(
                "kafka.security_protocol '{}' is not one of {}",
                k.security_protocol,
                protocols.join(", ")
            ));
        }
        if !k.sasl_mechanism.is_empty() && !SASL_MECHANISMS.contains(&k.sasl_mechanism.as_str()) {
            problems.push(format!(
                "kafka.sasl_mechanism '{}' is not one of {}",
                k.sasl_mechanism,
                SASL_MECHANISMS.join(", ")
            ));
        }
        // Kerberos and OAuth bring their own credentials (a keytab or ticket cache, a token
        // endpoint, set in kafka.properties); the other mechanisms need both of these.
        let own_credentials = ["GSSAPI", "OAUTHBEARER"].contains(&k.sasl_mechanism.as_str());
        if k.security_protocol.starts_with("sasl")
            && !own_credentials
            && (k.sasl_username.is_empty() || !k.sasl_password.is_set())
        {
            problems.push(
                "kafka.security_protocol uses SASL but kafka.sasl_username or kafka.sasl_password is empty".into(),
            );
        }
        if let Err(e) = crate::lake::LakeUrl::parse(&self.lake.url) {
            problems.push(format!("lake.url: {e}"));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "http.listen '{}' is not host:port (e.g. 127.0.0.1:9464)",
                self.http.listen
            ));
        }
        for url in &self.http.scrape_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("http.scrape_urls: '{url}' is not an http(s) URL"));
            }
        }
        let serve_url = &self.http.serve_url;
        if !(serve_url.is_empty() || serve_url.starts_with("http://") || serve_url.starts_with("https://")) {
            problems.push(format!("http.serve_url: '{serve_url}' is not an http(s) URL"));
        }
        if self.collector.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "collector.listen '{}' is not host:port (e.g. 127.0.0.1:8088)",
                self.collector.listen
            ));
        }
        if self.collector.max_events_per_request == 0 || self.collector.max_body_bytes == 0 {
            problems.push("collector.max_events_per_request and collector.max_body_bytes must be above 0".into());
        }
        problems.extend(self.ingest.validate());
        let v = &self.serve;
        if v.default_limit == 0 || v.default_limit > v.max_limit {
            problems.push(format!(
                "serve.default_limit ({}) must be between 1 and serve.max_limit ({})",
                v.default_limit, v.max_limit
            ));
        }
        if v.snapshot_interval_ms == 0 || v.catalogue_refresh_ms == 0 || v.refresh_interval_ms == 0 {
            problems.push(
                "serve.snapshot_interval_ms, serve.catalogue_refresh_ms and serve.refresh_interval_ms must be positive"
                    .into(),
            );
        }
        let r = &self.recommend;
        if r.explore_slots >= r.top_k.max(1) {
            problems.push(format!(
                "recommend.explore_slots ({}) must be below recommend.top_k ({})",
                r.explore_slots, r.top_k
            ));
        }
        if r.explore_slots > 0 && r.explore_pool < r.explore_slots {
            problems.push(format!(
                "recommend.explore_pool ({}) must hold at least recommend.explore_slots ({})",
                r.explore_pool, r.explore_slots
            ));
        }
        if r.als_factors > 256 {
            problems.push(format!(
                "recommend.als_factors ({}) must be at most 256 (each product's solve grows with its cube)",
                r.als_factors
            ));
        }
        if r.train_max_ips_weight.is_nan() || r.train_max_ips_weight < 1.0 {
            problems.push(format!(
                "recommend.train_max_ips_weight must be at least 1, found {}",
                r.train_max_ips_weight
            ));
        }
        if self.mart.target_file_bytes == 0 {
            problems.push("mart.target_file_bytes must be positive".into());
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            problems.push(format!("log.format '{}' is not one of text, json", self.log.format));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            problems.push(format!("log.filter '{}' is not a tracing filter: {e}", self.log.filter));
        }
        problems
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn show(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

impl IngestConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.group.trim().is_empty() {
            problems.push("ingest.group is empty".into());
        }
        if !(1..=64).contains(&self.workers) {
            problems.push(format!("ingest.workers must be 1 to 64, found {}", self.workers));
        }
        for (key, value) in [
            ("max_batch_rows", self.max_batch_rows),
            ("max_batch_bytes", self.max_batch_bytes),
            ("flush_interval_ms", self.flush_interval_ms),
            ("max_batches_in_flight", self.max_batches_in_flight),
            ("target_file_bytes", self.target_file_bytes),
            ("retry_backoff_ms", self.retry_backoff_ms),
        ] {
            if value == 0 {
                problems.push(format!("ingest.{key} must be positive"));
            }
        }
        problems
    }
}

impl Overrides {
    fn entries(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            ("kafka.brokers", self.brokers.clone()),
            ("lake.url", self.lake.clone()),
            ("catalog.topics_dir", path(&self.topics_dir)),
            ("catalog.schemas_dir", path(&self.schemas_dir)),
            ("http.listen", self.http.clone()),
            ("ingest.group", self.group.clone()),
            ("collector.listen", self.collector_listen.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// A layer built in memory (environment variables, flags) with a name for error messages.
struct Layer {
    name: &'static str,
    data: Json,
}

impl Layer {
    fn env(vars: Vec<(String, String)>) -> Self {
        let mut root = serde_json::Map::new();
        for (name, value) in vars {
            let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
            insert_path(&mut root, &path, Json::String(value));
        }
        Layer {
            name: "HOFFREC__ environment variables",
            data: Json::Object(root),
        }
    }

    fn flags(entries: Vec<(&'static str, String)>) -> Self {
        let mut root = serde_json::Map::new();
        for (key, value) in entries {
            let path: Vec<String> = key.split('.').map(String::from).collect();
            insert_path(&mut root, &path, Json::String(value));
        }
        Layer {
            name: "command-line flags",
            data: Json::Object(root),
        }
    }
}

impl figment::Provider for Layer {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name)
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::defaults(&self.data).data()
    }
}

fn insert_path(map: &mut serde_json::Map<String, Json>, path: &[String], value: Json) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = map
                .entry(first.clone())
                .or_insert_with(|| Json::Object(Default::default()));
            if !entry.is_object() {
                *entry = Json::Object(Default::default());
            }
            if let Json::Object(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Walks the merged value against the defaults' shape, coercing environment strings to
/// the expected scalar type and collecting every unknown key and type mismatch.
fn normalize(value: &Json, reference: &Json, path: &str, figment: &Figment, problems: &mut Vec<String>) -> Json {
    let origin = || origin_of(figment, path);
    match reference {
        Json::Object(ref_map) if FREE_MAPS.contains(&path) => match value {
            Json::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            Json::String(scalar_string(v).unwrap_or_else(|| v.to_string())),
                        )
                    })
                    .collect(),
            ),
            _ => {
                problems.push(format!("{path} must be a table of string values{}", origin()));
                Json::Object(ref_map.clone())
            }
        },
        Json::Object(ref_map) => {
            let Json::Object(map) = value else {
                problems.push(format!("{} must be a table{}", display_path(path), origin()));
                return reference.clone();
            };
            let mut out = serde_json::Map::new();
            for (key, v) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match ref_map.get(key) {
                    Some(r) => {
                        out.insert(key.clone(), normalize(v, r, &child, figment, problems));
                    }
                    None => problems.push(format!(
                        "unknown key '{child}'{}; known keys here: {}",
                        origin_of(figment, &child),
                        ref_map.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                }
            }
            Json::Object(out)
        }
        Json::String(_) => match scalar_string(value) {
            Some(s) => Json::String(s),
            None => {
                problems.push(format!("{path} must be a string{}", origin()));
                reference.clone()
            }
        },
        Json::Bool(_) => match value {
            Json::Bool(_) => value.clone(),
            Json::String(s) if s == "true" || s == "false" => Json::Bool(s == "true"),
            _ => {
                problems.push(format!("{path} must be true or false, found {value}{}", origin()));
                reference.clone()
            }
        },
        Json::Number(n) if n.is_f64() => {
            let parsed = match value {
                Json::Number(v) => v.as_f64(),
                Json::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match parsed.and_then(serde_json::Number::from_f64) {
                Some(v) => Json::Number(v),
                None => {
                    problems.push(format!("{path} must be a number, found {value}{}", origin()));
                    reference.clone()
                }
            }
        }
        Json::Number(n) => {
            let signed = n.is_i64() && !n.is_u64() || n.as_i64().is_some_and(|v| v < 0);
            let parsed = match value {
                Json::Number(v) => Some(v.clone()),
                Json::String(s) => s.trim().parse::<i64>().ok().map(Into::into),
                _ => None,
            };
            match parsed {
                Some(v) if v.is_u64() || (signed && v.is_i64()) => Json::Number(v),
                _ => {
                    let kind = if signed { "an integer" } else { "a non-negative integer" };
                    problems.push(format!("{path} must be {kind}, found {value}{}", origin()));
                    reference.clone()
                }
            }
        }
        // Lists from the environment or flags come as comma-separated strings.
        Json::Array(_) => match value {
            Json::Array(items) if items.iter().all(Json::is_string) => value.clone(),
            Json::String(s) => Json::Array(
                s.split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| Json::String(v.into()))
                    .collect(),
            ),
            _ => {
                problems.push(format!("{path} must be a list of strings{}", origin()));
                reference.clone()
            }
        },
        _ => value.clone(),
    }
}

fn scalar_string(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "the configuration" } else { path }
}

fn origin_of(figment: &Figment, path: &str) -> String {
    match figment.find_metadata(path) {
        Some(md) => match &md.source {
            Some(source) => format!(" (from {} {source})", md.name),
            None => format!(" (from {})", md.name),
        },
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("hoffrec.toml");
        std::fs::write(&file, toml).expect("write config");
        Config::load_with_env(Some(&file), &Overrides::default(), Vec::new())
    }

    #[test]
    fn hdfs_options_pass_through_with_hadoop_keys() {
        let config = load(
            r#"
[lake]
url = "hdfs://hoffrec-ha/lake"
[lake.hdfs_options]
"dfs.ha.namenodes.hoffrec-ha" = "nn1,nn2"
"dfs.namenode.rpc-address.hoffrec-ha.nn1" = "nn1.example:8020"
"hadoop.security.authentication" = "kerberos"
"#,
        )
        .expect("valid");
        assert_eq!(config.lake.hdfs_options["dfs.ha.namenodes.hoffrec-ha"], "nn1,nn2");
        assert_eq!(config.lake.hdfs_options["hadoop.security.authentication"], "kerberos");
        // Unknown keys are still refused next to the free-form map.
        let err = load("[lake]\nurl = \"./lake\"\nhdfs_option = {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key 'lake.hdfs_option'"), "{err}");
    }

    #[test]
    fn sasl_mechanisms_and_their_credentials() {
        let kerberos = load(
            r#"
[kafka]
security_protocol = "sasl_ssl"
sasl_mechanism = "GSSAPI"
[kafka.properties]
"sasl.kerberos.service.name" = "kafka"
"sasl.kerberos.keytab" = "/etc/security/keytabs/hoffrec.keytab"
"sasl.kerberos.principal" = "hoffrec/host.example@EXAMPLE.COM"
"#,
        )
        .expect("Kerberos needs no username or password");
        assert_eq!(kerberos.kafka.properties["sasl.kerberos.service.name"], "kafka");

        let err = load("[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.sasl_username or kafka.sasl_password is empty"),
            "{err}"
        );
        let err = load("[kafka]\nsasl_mechanism = \"scram\"\n").unwrap_err().to_string();
        assert!(err.contains("kafka.sasl_mechanism 'scram' is not one of"), "{err}");
    }
}
