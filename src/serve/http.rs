//! `GET /v1/recommendations/{customer_id}`: the customer's list without what cannot be
//! sold now, or, for an unknown or `anon:` visitor, a named fallback (popular in the
//! page's category, then in the visitor's region, then overall). Answers carry an ETag
//! (same answer, same tag, on every replica) and Cache-Control.

use super::catalogue::Shared;
use super::store::Store;
use crate::config::ServeConfig;
use crate::telemetry::ServeMetrics;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct Api {
    pub store: Store,
    pub products: super::products::ProductStore,
    pub catalogue: Shared,
    pub config: ServeConfig,
    pub metrics: ServeMetrics,
}

pub fn router(api: Api) -> Router {
    let counter = |outcome: &str| {
        let labels = vec![
            ("route", "recommendations".to_string()),
            ("outcome", outcome.to_string()),
        ];
        api.metrics.requests.get_or_create(&labels).clone()
    };
    let state = Handler {
        answered: [counter("list"), counter("fallback"), counter("not_modified")],
        api,
    };
    Router::new()
        .route("/v1/recommendations/{customer_id}", get(recommendations))
        .with_state(state)
}

/// The API with its per-outcome counters made once (not a label set per request).
#[derive(Clone)]
struct Handler {
    api: Api,
    answered: [Counter; 3],
}

#[derive(Debug, Deserialize)]
struct Ask {
    placement: Option<String>,
    limit: Option<usize>,
    /// The category of the page the visitor is on, for the fallback.
    category: Option<String>,
    /// The visitor's region as the site knows it (geolocation, the chosen city), as the
    /// orders' delivery addresses name it, for the fallback.
    region: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ItemOut<'a> {
    pub product_id: &'a str,
    pub score: f64,
    pub reasons: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct Answer<'a> {
    pub customer_id: &'a str,
    pub placement: &'a str,
    pub items: Vec<ItemOut<'a>>,
    /// `None` for a customer's own list; else which fallback answered.
    pub fallback: Option<&'static str>,
    pub list_id: Option<&'a str>,
    pub model_version: Option<&'a str>,
    pub generated_at_ms: Option<i64>,
    pub list_age_ms: Option<i64>,
    /// Products of the list left out as out of stock or withdrawn.
    pub unavailable_dropped: usize,
}

async fn recommendations(
    State(Handler { api, answered }): State<Handler>,
    Path(customer): Path<String>,
    Query(ask): Query<Ask>,
    headers: HeaderMap,
) -> Response {
    let limit = api.config.limit(ask.limit);
    let placement = ask.placement.as_deref().unwrap_or("home");
    let catalogue = api.catalogue.current();
    let list = (!customer.starts_with("anon:"))
        .then(|| api.store.get(&customer))
        .flatten();
    let mut answer = Answer {
        customer_id: &customer,
        placement,
        items: Vec::new(),
        fallback: None,
        list_id: None,
        model_version: None,
        generated_at_ms: None,
        list_age_ms: None,
        unavailable_dropped: 0,
    };
    if let Some(list) = &list {
        let (sellable, dropped): (Vec<_>, Vec<_>) = list.items.iter().partition(|i| catalogue.sellable(&i.product_id));
        answer.unavailable_dropped = dropped.len();
        answer.items = sellable
            .into_iter()
            .take(limit)
            .map(|i| ItemOut {
                product_id: &i.product_id,
                score: i.score,
                reasons: i.reasons.iter().map(|r| &**r).collect(),
            })
            .collect();
        answer.list_id = Some(&list.list_id);
        answer.model_version = Some(&list.model_version);
        answer.generated_at_ms = Some(list.generated_at_ms);
        answer.list_age_ms = Some(chrono::Utc::now().timestamp_millis() - list.generated_at_ms);
    }
    // Made only for a fallback: most requests are answered by the customer's own list.
    let because: String;
    if answer.items.is_empty() {
        let (category, region) = (ask.category.as_deref(), ask.region.as_deref());
        let (fallback, popular) = catalogue.popular(category, region);
        answer.fallback = Some(fallback);
        because = fallback_reason(fallback, category, region);
        answer.items = fallback_items(popular, &because, None, limit);
    }
    api.metrics
        .unavailable_dropped
        .inc_by(answer.unavailable_dropped as u64);
    // What the answer is made of, minus its age: equal on every replica for equal data.
    let etag = etag(&[
        answer.list_id.unwrap_or(""),
        answer.fallback.unwrap_or(""),
        ask.category.as_deref().unwrap_or(""),
        ask.region.as_deref().unwrap_or(""),
        placement,
        &limit.to_string(),
        &catalogue.version.map(|v| v.to_string()).unwrap_or_default(),
    ]);
    let outcome = usize::from(answer.fallback.is_some());
    let (response, fresh) = respond(&answer, &etag, answer.fallback.is_some(), &api.config, &headers);
    answered[if fresh { 2 } else { outcome }].inc();
    response
}

/// The reason a fallback's items give: `popular_in_category:<id>`,
/// `popular_in_region:<r>`, or `popular`.
pub fn fallback_reason(fallback: &str, category: Option<&str>, region: Option<&str>) -> String {
    match (fallback, category, region) {
        ("category_popular", Some(c), _) => format!("popular_in_category:{c}"),
        ("region_popular", _, Some(r)) => format!("popular_in_region:{r}"),
        _ => "popular".to_string(),
    }
}

/// A fallback's items: the popular products it drew, without `except`, each giving
/// `because`.
pub fn fallback_items<'a>(
    popular: &'a [(String, f64)],
    because: &'a str,
    except: Option<&str>,
    limit: usize,
) -> Vec<ItemOut<'a>> {
    popular
        .iter()
        .filter(|(p, _)| Some(p.as_str()) != except)
        .take(limit)
        .map(|(p, buyers)| ItemOut {
            product_id: p,
            score: *buyers,
            reasons: vec![because],
        })
        .collect()
}

/// A strong validator from the parts an answer is made of.
pub fn etag(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    format!(
        "\"{}\"",
        digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The answer, or 304 when the client holds it already (and whether it did), with the
/// ETag and Cache-Control: a fallback is the same for everyone, so shared caches may keep
/// it; a customer's own list is private.
pub fn respond(
    answer: &impl Serialize,
    etag: &str,
    public: bool,
    config: &ServeConfig,
    headers: &HeaderMap,
) -> (Response, bool) {
    let cache = format!(
        "{}, max-age={}",
        if public { "public" } else { "private" },
        config.cache_max_age_s
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(answer).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    (response, fresh)
}
