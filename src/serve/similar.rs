//! `GET /v1/products/{product_id}/similar`: what to show beside a product, from
//! `recs.product`: "similar" (viewed by the same customers) and "bought together" (bought
//! by the same customers), without what the newest catalogue cannot sell. A product with
//! no similar products (new, or nobody viewed it with another) gets the popular products
//! of its category, then overall, named as the fallback.

use super::catalogue::Catalogue;
use super::http::{Api, ItemOut, etag, fallback_items, fallback_reason, respond};
use crate::recommend::products::Related;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct Handler {
    api: Api,
    /// Answers: related lists, fallback, not modified.
    answered: [Counter; 3],
}

pub fn router(api: Api) -> Router {
    let counter = |outcome: &str| {
        let labels = vec![("route", "similar".to_string()), ("outcome", outcome.to_string())];
        api.metrics.requests.get_or_create(&labels).clone()
    };
    let state = Handler {
        answered: [counter("list"), counter("fallback"), counter("not_modified")],
        api,
    };
    Router::new()
        .route("/v1/products/{product_id}/similar", get(similar))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct Ask {
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Answer<'a> {
    product_id: &'a str,
    similar: Vec<ItemOut<'a>>,
    bought_together: Vec<ItemOut<'a>>,
    /// `None` when `similar` is the product's own; else which fallback filled it.
    fallback: Option<&'static str>,
    generated_at_ms: Option<i64>,
    list_age_ms: Option<i64>,
    mart_version: Option<i64>,
    /// Related products left out as out of stock or withdrawn.
    unavailable_dropped: usize,
}

async fn similar(
    State(Handler { api, answered }): State<Handler>,
    Path(product): Path<String>,
    Query(ask): Query<Ask>,
    headers: HeaderMap,
) -> Response {
    let limit = api.config.limit(ask.limit);
    let catalogue = api.catalogue.current();
    let lists = api.products.get(&product);
    let mut answer = Answer {
        product_id: &product,
        similar: Vec::new(),
        bought_together: Vec::new(),
        fallback: None,
        generated_at_ms: lists.as_ref().map(|l| l.generated_at_ms),
        list_age_ms: lists
            .as_ref()
            .map(|l| chrono::Utc::now().timestamp_millis() - l.generated_at_ms),
        mart_version: lists.as_ref().map(|l| l.mart_version),
        unavailable_dropped: 0,
    };
    if let Some(lists) = &lists {
        let mut dropped = 0;
        answer.similar = sellable(&lists.similar, &catalogue, limit, &mut dropped);
        answer.bought_together = sellable(&lists.bought_together, &catalogue, limit, &mut dropped);
        answer.unavailable_dropped = dropped;
    }
    let because: String;
    if answer.similar.is_empty() {
        let category = catalogue.category_of(&product);
        let (fallback, popular) = catalogue.popular(category, None);
        answer.fallback = Some(fallback);
        because = fallback_reason(fallback, category, None);
        answer.similar = fallback_items(popular, &because, Some(product.as_str()), limit);
    }
    api.metrics
        .unavailable_dropped
        .inc_by(answer.unavailable_dropped as u64);
    let etag = etag(&[
        &product,
        &answer.generated_at_ms.map(|t| t.to_string()).unwrap_or_default(),
        answer.fallback.unwrap_or(""),
        &limit.to_string(),
        &catalogue.version.map(|v| v.to_string()).unwrap_or_default(),
    ]);
    let outcome = usize::from(answer.fallback.is_some());
    // Product pages are the same for every visitor: shared caches may keep them.
    let (response, fresh) = respond(&answer, &etag, true, &api.config, &headers);
    answered[if fresh { 2 } else { outcome }].inc();
    response
}

/// The first `limit` related products the catalogue can sell; counts the others.
fn sellable<'a>(items: &'a [Related], catalogue: &Catalogue, limit: usize, dropped: &mut usize) -> Vec<ItemOut<'a>> {
    let (keep, gone): (Vec<_>, Vec<_>) = items.iter().partition(|r| catalogue.sellable(&r.product_id));
    *dropped += gone.len();
    keep.into_iter()
        .take(limit)
        .map(|r| ItemOut {
            product_id: &r.product_id,
            score: r.score,
            reasons: r.reasons.iter().map(String::as_str).collect(),
        })
        .collect()
}
