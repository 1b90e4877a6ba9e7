//! One HTTP JSON API as a source sees it: paced requests, the API's own way of reporting
//! errors turned into what a poller does about them, and retries with backoff and jitter
//! for the kinds worth retrying.

use crate::catalog::source::{Dialect, HttpSpec};
use backon::{ExponentialBuilder, Retryable};
use serde_json::Value as Json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Too many requests (HTTP 429, VK 6/9, Graph 4/17/32/613/80002): wait, then retry.
    #[error("rate limited: {reason}")]
    RateLimited {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Timeouts, connection trouble, 5xx, errors the API calls transient: retry.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The token is expired or revoked (401/403, VK 5, Graph 190/102): stop the source.
    #[error("not authorised: {0}")]
    Auth(String),
    /// A daily quota is used up (VK 29): stop calling until the next pass.
    #[error("quota used up: {0}")]
    Quota(String),
    /// This object may not be read (VK 15/18/30/203/260, Graph 10/200-299): skip it.
    #[error("access denied: {0}")]
    Denied(String),
    /// The API refused the request or answered something unusable: dead-letter the body.
    #[error("{reason}")]
    Malformed { reason: String, body: Vec<u8> },
    /// The body is larger than `max_response_bytes`; its beginning is kept.
    #[error("{reason}")]
    TooLarge { reason: String, body: Vec<u8> },
}

impl FetchError {
    pub fn class(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Transient(_) => "transient",
            Self::Auth(_) => "auth",
            Self::Quota(_) => "quota",
            Self::Denied(_) => "denied",
            Self::Malformed { .. } => "malformed_response",
            Self::TooLarge { .. } => "oversize_response",
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient(_))
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A `Retry-After` longer than this is taken as this: a server asking for hours would stall
/// the source past its next passes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How much of an oversize body a dead letter keeps.
const KEPT_OF_OVERSIZE: usize = 64 * 1024;

pub struct Fetcher {
    http: reqwest::Client,
    spec: HttpSpec,
    token: Option<String>,
    /// Earliest moment the next request may start (rate limit and usage pauses).
    next_slot: Mutex<Instant>,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

impl Fetcher {
    pub fn new(spec: &HttpSpec, token: Option<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(spec.timeout_ms))
            .user_agent(concat!("hoffrec/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            spec: spec.clone(),
            token,
            next_slot: Mutex::new(Instant::now()),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    pub fn spec(&self) -> &HttpSpec {
        &self.spec
    }

    /// GETs `url` and returns its JSON body, retrying what is worth retrying.
    pub async fn get(&self, url: &reqwest::Url) -> Result<Json, FetchError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.spec.backoff_ms))
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(self.spec.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        (|| self.once(url))
            .retry(backoff)
            .when(FetchError::retryable)
            .adjust(|e, wait| wait.map(|w| e.retry_after().map_or(w, |after| after.max(w))))
            .notify(|e, wait| {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "retrying source request");
            })
            .await
    }

    async fn once(&self, url: &reqwest::Url) -> Result<Json, FetchError> {
        self.pace().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = self.http.get(url.clone());
        match (&self.token, &self.spec.token_param) {
            (Some(token), Some(param)) => request = request.query(&[(param, token)]),
            (Some(token), None) => request = request.bearer_auth(token),
            _ => {}
        }
        // reqwest's errors carry the whole URL, token parameter included, and every retry
        // logs the error: name the endpoint without its query instead.
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::Transient(format!("{}: {}", endpoint(url), e.without_url())))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self.read_body(response, url).await?;
        if self.spec.errors == Dialect::Graph
            && let Some(usage) = headers.get("x-app-usage").and_then(|v| v.to_str().ok())
            && app_usage_percent(usage) >= 90.0
        {
            let mut slot = self.next_slot.lock().await;
            *slot = (*slot).max(Instant::now() + Duration::from_millis(self.spec.usage_pause_ms));
            tracing::warn!(usage, "the API reports heavy app usage; pausing this source");
        }
        let retry_after = retry_after(&headers);
        let json = serde_json::from_slice::<Json>(&body);
        classify(self.spec.errors, status.as_u16(), retry_after, json.ok(), body.to_vec())
    }

    /// The body, up to `max_response_bytes`: a larger one is refused with its beginning
    /// (64 KiB) kept for the dead letter, never read whole into memory.
    async fn read_body(&self, mut response: reqwest::Response, url: &reqwest::Url) -> Result<Vec<u8>, FetchError> {
        let cap = usize::try_from(self.spec.max_response_bytes).unwrap_or(usize::MAX);
        let too_large = |mut kept: Vec<u8>| {
            kept.truncate(KEPT_OF_OVERSIZE);
            FetchError::TooLarge {
                reason: format!(
                    "{}: the response is larger than max_response_bytes = {cap}",
                    endpoint(url)
                ),
                body: kept,
            }
        };
        let mut body = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                FetchError::Transient(format!("{}: reading the body: {}", endpoint(url), e.without_url()))
            })?;
            let Some(chunk) = chunk else { return Ok(body) };
            if body.len() + chunk.len() > cap {
                body.extend_from_slice(&chunk[..KEPT_OF_OVERSIZE.saturating_sub(body.len()).min(chunk.len())]);
                return Err(too_large(body));
            }
            body.extend_from_slice(&chunk);
        }
    }

    async fn pace(&self) {
        let interval = if self.spec.max_requests_per_s > 0.0 {
            Duration::from_secs_f64(1.0 / self.spec.max_requests_per_s)
        } else {
            Duration::ZERO
        };
        let start = {
            let mut slot = self.next_slot.lock().await;
            let start = (*slot).max(Instant::now());
            *slot = start + interval;
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// The `Retry-After` seconds, at most `MAX_RETRY_AFTER`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// Where a request went, without query or credentials (tokens and API keys ride there).
fn endpoint(url: &reqwest::Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
        + &url.port().map_or(String::new(), |p| format!(" (port {p})"))
}

/// The largest of the percentages in a Graph `X-App-Usage` header (absent or odd: 0).
fn app_usage_percent(header: &str) -> f64 {
    serde_json::from_str::<Json>(header)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|m| m.values().filter_map(Json::as_f64).fold(0.0_f64, f64::max))
        })
        .unwrap_or(0.0)
}

fn classify(
    dialect: Dialect,
    status: u16,
    retry_after: Option<Duration>,
    json: Option<Json>,
    body: Vec<u8>,
) -> Result<Json, FetchError> {
    let error = json.as_ref().and_then(|j| j.get("error")).filter(|e| e.is_object());
    if let Some(e) = error {
        let message = |code: i64| {
            let text = ["error_msg", "message"]
                .iter()
                .find_map(|k| e.get(*k).and_then(Json::as_str))
                .unwrap_or("");
            format!("code {code}: {text}")
        };
        match dialect {
            Dialect::Vk => {
                let code = e.get("error_code").and_then(Json::as_i64).unwrap_or(0);
                return Err(match code {
                    6 => FetchError::RateLimited {
                        reason: message(code),
                        retry_after: Some(Duration::from_secs(1)),
                    },
                    9 => FetchError::RateLimited {
                        reason: message(code),
                        retry_after: Some(Duration::from_secs(5)),
                    },
                    1 | 10 => FetchError::Transient(message(code)),
                    5 => FetchError::Auth(message(code)),
                    29 => FetchError::Quota(message(code)),
                    7 | 14 | 15 | 18 | 30 | 203 | 260 => FetchError::Denied(message(code)),
                    _ => FetchError::Malformed {
                        reason: format!("the API refused the request: {}", message(code)),
                        body,
                    },
                });
            }
            Dialect::Graph => {
                let code = e.get("code").and_then(Json::as_i64).unwrap_or(0);
                let transient = e.get("is_transient").and_then(Json::as_bool).unwrap_or(false);
                return Err(match code {
                    4 | 17 | 32 | 613 | 80002 | 341 | 368 => FetchError::RateLimited {
                        reason: message(code),
                        retry_after,
                    },
                    _ if transient => FetchError::Transient(message(code)),
                    1 | 2 => FetchError::Transient(message(code)),
                    102 | 190 => FetchError::Auth(message(code)),
                    10 | 200..=299 => FetchError::Denied(message(code)),
                    _ => FetchError::Malformed {
                        reason: format!("the API refused the request: {}", message(code)),
                        body,
                    },
                });
            }
            Dialect::Http => {}
        }
    }
    match status {
        200..=299 => json.ok_or_else(|| FetchError::Malformed {
            reason: format!("HTTP {status} with a body that is not JSON"),
            body,
        }),
        429 => Err(FetchError::RateLimited {
            reason: "HTTP 429".into(),
            retry_after,
        }),
        500..=599 | 408 => Err(FetchError::Transient(format!("HTTP {status}"))),
        401 | 403 => Err(FetchError::Auth(format!("HTTP {status}"))),
        _ => Err(FetchError::Malformed {
            reason: format!("HTTP {status}: the API refused the request"),
            body,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn transport_errors_name_the_endpoint_but_never_the_token() {
        let spec: HttpSpec = toml::from_str(
            r#"url = "http://127.0.0.1:1/method/users.get"
               token_param = "access_token"
               paging = { style = "none" }
               items = "response"
               max_attempts = 1"#,
        )
        .unwrap();
        let fetcher = Fetcher::new(&spec, Some("vk1.secret-token".into())).unwrap();
        let url = reqwest::Url::parse("http://127.0.0.1:1/method/users.get?apiKey=partner-key&v=5.199").unwrap();
        let error = fetcher.get(&url).await.unwrap_err().to_string();
        assert!(error.contains("http://127.0.0.1/method/users.get"), "{error}");
        assert!(
            !error.contains("secret-token") && !error.contains("partner-key"),
            "{error}"
        );
    }

    #[test]
    fn retry_after_is_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
    }

    fn vk(code: i64) -> Result<Json, FetchError> {
        let body = json!({"error": {"error_code": code, "error_msg": "x"}});
        classify(Dialect::Vk, 200, None, Some(body), Vec::new())
    }

    fn graph(code: i64, transient: bool) -> Result<Json, FetchError> {
        let body = json!({"error": {"code": code, "message": "x", "is_transient": transient}});
        classify(Dialect::Graph, 400, None, Some(body), Vec::new())
    }

    #[test]
    fn vk_errors_arrive_with_http_200_and_are_classified_by_code() {
        let class = |code| vk(code).unwrap_err().class();
        assert_eq!(class(6), "rate_limited");
        assert_eq!(class(9), "rate_limited");
        assert_eq!(class(10), "transient");
        assert_eq!(class(5), "auth");
        assert_eq!(class(29), "quota");
        for code in [15, 18, 30, 260] {
            assert_eq!(class(code), "denied", "code {code}");
        }
        assert_eq!(class(100), "malformed_response");
        let ok = json!({"response": {"count": 0, "items": []}});
        assert!(classify(Dialect::Vk, 200, None, Some(ok), Vec::new()).is_ok());
    }

    #[test]
    fn graph_errors_and_plain_statuses() {
        assert_eq!(graph(4, false).unwrap_err().class(), "rate_limited");
        assert_eq!(graph(80002, false).unwrap_err().class(), "rate_limited");
        assert_eq!(graph(190, false).unwrap_err().class(), "auth");
        assert_eq!(graph(100, true).unwrap_err().class(), "transient");
        assert_eq!(graph(200, false).unwrap_err().class(), "denied");
        assert_eq!(graph(100, false).unwrap_err().class(), "malformed_response");
        let after = Some(Duration::from_secs(2));
        let limited = classify(Dialect::Http, 429, after, None, Vec::new()).unwrap_err();
        assert_eq!(limited.retry_after(), after);
        assert_eq!(
            classify(Dialect::Http, 503, None, None, Vec::new())
                .unwrap_err()
                .class(),
            "transient"
        );
        assert_eq!(
            classify(Dialect::Http, 401, None, None, Vec::new())
                .unwrap_err()
                .class(),
            "auth"
        );
        let garbage = classify(Dialect::Http, 200, None, None, b"<html>".to_vec()).unwrap_err();
        assert_eq!(garbage.class(), "malformed_response");
    }

    #[test]
    fn app_usage_is_the_largest_percentage() {
        assert_eq!(
            app_usage_percent(r#"{"call_count":28,"total_cputime":95,"total_time":25}"#),
            95.0
        );
        assert_eq!(app_usage_percent("garbage"), 0.0);
    }
}
