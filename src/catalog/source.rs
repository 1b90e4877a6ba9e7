//! What a topic file says about its source beyond the kind: for HTTP pollers, how to call
//! the API, page through it and resume; for every source, how its fields map onto the
//! topic's Avro schema. Data only; `connect` does the work.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// `[source.http]`: one API endpoint polled for one raw topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// `${VAR:-default}` parts come from the environment, so the simulator, the tests and
    /// each deployment point a source at their own host without editing the file.
    pub url: String,
    /// Environment variable holding the access token; never written in the file.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Query parameter that carries the token (VK's `access_token`); absent: a Bearer header.
    #[serde(default)]
    pub token_param: Option<String>,
    /// Fixed query parameters, e.g. the API version.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub paging: Paging,
    /// Dotted path to the array of items in a response, e.g. `response.items`.
    pub items: String,
    /// How the API reports errors and rate limits.
    #[serde(default)]
    pub errors: Dialect,
    #[serde(default = "default_requests_per_s")]
    pub max_requests_per_s: f64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Pause between two polling passes.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Attempts per request on rate limits, 5xx and timeouts, with exponential backoff and jitter.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// A larger response is dead-lettered (its first 64 KiB) instead of read.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// A pass that pages further stops (an API paging in circles, or without end).
    #[serde(default = "default_max_pages_per_pass")]
    pub max_pages_per_pass: u64,
    /// A pass's records become visible in commits at least this often, so a long pass (a
    /// backfill) never outlives its Kafka transaction.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// How long the broker lets one transaction stay open (`transaction.timeout.ms`): a
    /// commit interval plus the slowest page with its retries must fit in it.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// When the API reports heavy usage (Graph `X-App-Usage` >= 90 %), wait this long.
    #[serde(default = "default_usage_pause_ms")]
    pub usage_pause_ms: u64,
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// Ask once per consenting customer (the social networks); cursors do not apply.
    #[serde(default)]
    pub per_customer: Option<PerCustomer>,
    /// Further lists fetched per customer and added to each of its items.
    #[serde(default)]
    pub joins: Vec<Join>,
}

/// The customers a social source may read: those whose newest consent event for the
/// topic's `consent_purpose` is `given` and names an account on `network` (`networks`
/// entries like `vk:123`).
/// Each item gets `_customer_id`, `_account_id` and `_pass_ms` for the mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerCustomer {
    pub network: String,
    /// Query parameter that takes the account id; absent, `{account}` in the URL does.
    #[serde(default)]
    pub param: Option<String>,
}

/// A list fetched for the same customer (e.g. VK `groups.get`), paged on its own, and put
/// into each item under `into`. Access denied (a private list) gives an empty list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    pub url: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Query parameter that takes the account id; absent, `{account}` in the URL does.
    #[serde(default)]
    pub param: Option<String>,
    pub paging: Paging,
    pub items: String,
    pub into: String,
}

fn default_requests_per_s() -> f64 {
    3.0
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_interval_ms() -> u64 {
    60_000
}
fn default_attempts() -> u32 {
    6
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_max_response_bytes() -> u64 {
    32 * 1024 * 1024
}
fn default_max_pages_per_pass() -> u64 {
    100_000
}
fn default_commit_interval_ms() -> u64 {
    60_000
}
fn default_transaction_timeout_ms() -> u64 {
    900_000
}
fn default_usage_pause_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paging {
    /// One request per pass.
    None,
    /// VK: `offset` grows by `count` until it reaches the total or a page is empty.
    OffsetCount {
        #[serde(default = "offset_param")]
        offset_param: String,
        #[serde(default = "count_param")]
        count_param: String,
        page_size: u32,
        /// Dotted path to the total, e.g. `response.count`.
        total: String,
    },
    /// Graph API: follow the absolute URL at `next` until it is absent (pages may be empty).
    CursorNext { next: String },
    /// Order APIs: send the token from `next` back as `param` until it is absent.
    PageToken { param: String, next: String },
    /// RetailCRM-style: `param` = 1, 2, ... until the page number reaches the total pages
    /// at `total_pages` (or a page is empty).
    PageNumber { param: String, total_pages: String },
}

fn offset_param() -> String {
    "offset".into()
}
fn count_param() -> String {
    "count".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Plain REST: the HTTP status says it (429 and 5xx retry, 401/403 stop).
    #[default]
    Http,
    /// VK: errors arrive with HTTP 200 as `{"error": {"error_code": N}}`.
    Vk,
    /// Meta Graph API: `{"error": {"code": N, "is_transient": ..}}` and `X-App-Usage`.
    Graph,
}

/// Resume from the largest `field` value seen, sent back as `param` on the next pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    pub param: String,
    /// Dotted path in each item, e.g. `updatedAt` or `id`.
    pub field: String,
    /// Where the mapping reads `field` as a time: how far past now a value may be (clock
    /// skew). A later-dated item is still produced but never moves the cursor, so one bad
    /// date cannot skip every later item for good.
    #[serde(default = "default_max_future_ms")]
    pub max_future_ms: u64,
    /// Where `field` is a time: each pass asks again from this long before the cursor, so
    /// items that show up late with an earlier time still arrive. Repeats carry the same
    /// event id and ingest drops them.
    #[serde(default)]
    pub lookback_ms: u64,
    /// The API returns items in ascending `field` order (an `updatedFrom` filter sorted by
    /// update time): a commit in the middle of a pass may then carry the cursor, so a
    /// restart resumes there instead of redoing the pass.
    #[serde(default)]
    pub ascending: bool,
}

fn default_max_future_ms() -> u64 {
    300_000
}

/// How one Avro field is filled from a source item. A bare string is a path.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FieldSpec {
    Path(String),
    Full(Box<FieldMap>),
}

// By hand rather than `untagged`, so a typo names the unknown key instead of "did not
// match any variant".
impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Json::deserialize(deserializer)? {
            Json::String(path) => Ok(Self::Path(path)),
            table @ Json::Object(_) => serde_json::from_value(table)
                .map(|m| Self::Full(Box::new(m)))
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "a field mapping is a path or a table, found {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// Dotted path in the item (`buyer.id`, `items.0.price`); absent values become null.
    #[serde(default)]
    pub path: Option<String>,
    /// A constant.
    #[serde(default)]
    pub value: Option<Json>,
    /// Text with `{path}` placeholders, e.g. `order-{id}-{updatedAt}` for stable event ids.
    #[serde(default)]
    pub template: Option<String>,
    /// Source values translated one to one (VK `sex` 1 -> `female`); unknown values fail.
    #[serde(default)]
    pub map: Option<BTreeMap<String, Json>>,
    /// `unix_s`, `unix_ms`, `rfc3339`, or a chrono format such as `%Y-%m-%dT%H:%M:%S%z`.
    #[serde(default)]
    pub time_format: Option<String>,
    /// Offset for times written without one, e.g. `+03:00` for Moscow (no DST since 2014).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Multiplier for numbers and numeric strings, rounded: `100` turns roubles into kopecks.
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub lowercase: bool,
    /// A chrono date format; the value becomes `YYYY-MM-DD` (for `date` fields).
    #[serde(default)]
    pub date_format: Option<String>,
    /// Text split on this separator into a list of trimmed, non-empty parts.
    #[serde(default)]
    pub split: Option<String>,
    /// Codes whose keywords occur (case-insensitively) in the text or list of texts, e.g.
    /// `{ sauna = ["баня", "сауна"] }` over the names of buildings on a plot.
    #[serde(default)]
    pub keywords: Option<BTreeMap<String, Vec<String>>>,
    /// The field's value when the item has none (used as is, not converted).
    #[serde(default)]
    pub default: Option<Json>,
    /// A value that does not convert becomes null instead of failing the item (VK birth
    /// dates without a year, for instance).
    #[serde(default)]
    pub lenient: bool,
    /// For an object, its fields; for an array, the fields of each element.
    #[serde(default)]
    pub fields: Option<BTreeMap<String, FieldSpec>>,
}

/// `[source.file]`: a file drop read by `hoffrec import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub format: FileFormat,
    /// `utf-8`, `windows-1251`, ... (WHATWG labels). Absent: a byte-order mark or the XML
    /// declaration decides, else UTF-8.
    #[serde(default)]
    pub encoding: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Yandex Market YML catalogue: one item per `<offer>`, with `category_path` resolved.
    Yml,
    /// Tab-separated with a header row (Yandex Metrica Logs API exports).
    Tsv,
    /// Comma-separated with a header row and quoting (order exports).
    Csv,
}
