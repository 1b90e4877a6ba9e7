//! Walking an API's pages: the first request from the base URL and fixed parameters, then
//! the next one as the source's paging style says, until the API says there is no more.

use super::fetch::{FetchError, Fetcher};
use super::mapping::{lookup, text};
use crate::catalog::source::Paging;
use reqwest::Url;
use serde_json::Value as Json;

#[derive(Debug)]
pub enum PageError {
    Fetch(FetchError),
    /// The response has no array where the items should be; the body is kept.
    NoItems {
        reason: String,
        body: Vec<u8>,
    },
}

pub struct Pager<'a> {
    fetcher: &'a Fetcher,
    paging: &'a Paging,
    items: &'a str,
    first: Url,
    next: Option<Url>,
    offset: u64,
}

impl<'a> Pager<'a> {
    /// `base` already carries every fixed parameter.
    pub fn new(fetcher: &'a Fetcher, paging: &'a Paging, items: &'a str, base: Url) -> Self {
        let mut first = base;
        let mut next = first.clone();
        match paging {
            Paging::OffsetCount {
                offset_param,
                count_param,
                page_size,
                ..
            } => {
                first = with_param(&first, count_param, &page_size.to_string());
                next = with_param(&first, offset_param, "0");
            }
            Paging::PageNumber { param, .. } => next = with_param(&first, param, "1"),
            _ => {}
        }
        Self {
            fetcher,
            paging,
            items,
            first,
            next: Some(next),
            offset: 0,
        }
    }

    /// The items of the next page, or None after the last one.
    pub async fn next(&mut self) -> Result<Option<Vec<Json>>, PageError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let body = self.fetcher.get(&url).await.map_err(PageError::Fetch)?;
        // An object where the items are is one item (a Graph `GET /{user-id}`).
        let items = match lookup(&body, self.items) {
            Some(Json::Array(items)) => items.clone(),
            Some(one @ Json::Object(_)) => vec![one.clone()],
            _ => {
                return Err(PageError::NoItems {
                    reason: format!("the response has no array or object at '{}'", self.items),
                    body: serde_json::to_vec(&body).unwrap_or_default(),
                });
            }
        };
        self.next = match self.paging {
            Paging::None => None,
            Paging::OffsetCount {
                offset_param,
                page_size,
                total,
                ..
            } => {
                self.offset += u64::from(*page_size);
                let total = lookup(&body, total).and_then(Json::as_u64).unwrap_or(0);
                (!items.is_empty() && self.offset < total)
                    .then(|| with_param(&self.first, offset_param, &self.offset.to_string()))
            }
            // Graph pages may be empty and still have `next`: only its absence ends the walk.
            Paging::CursorNext { next } => lookup(&body, next)
                .and_then(Json::as_str)
                .and_then(|n| Url::parse(n).ok()),
            Paging::PageToken { param, next } => lookup(&body, next)
                .and_then(text)
                .filter(|t| !t.is_empty())
                .map(|t| with_param(&self.first, param, &t)),
            Paging::PageNumber { param, total_pages } => {
                self.offset += 1;
                let total = lookup(&body, total_pages).and_then(Json::as_u64).unwrap_or(0);
                (!items.is_empty() && self.offset < total)
                    .then(|| with_param(&self.first, param, &(self.offset + 1).to_string()))
            }
        };
        Ok(Some(items))
    }
}

/// `base` with one query parameter set (replacing an earlier value of the same name).
pub fn with_param(base: &Url, name: &str, value: &str) -> Url {
    let mut url = base.clone();
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::source::{Dialect, HttpSpec};
    use axum::extract::RawQuery;
    use axum::routing::get;
    use serde_json::json;

    fn spec(paging: Paging) -> HttpSpec {
        HttpSpec {
            url: String::new(),
            token_env: None,
            token_param: None,
            params: Default::default(),
            paging,
            items: "data".into(),
            errors: Dialect::Graph,
            max_requests_per_s: 0.0,
            timeout_ms: 5000,
            interval_ms: 1000,
            max_attempts: 2,
            backoff_ms: 10,
            usage_pause_ms: 10,
            incremental: None,
            per_customer: None,
            joins: Vec::new(),
        }
    }

    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    async fn walk(spec: &HttpSpec, url: &str) -> Vec<Vec<Json>> {
        let fetcher = Fetcher::new(spec, None).unwrap();
        let mut pager = Pager::new(&fetcher, &spec.paging, &spec.items, Url::parse(url).unwrap());
        let mut pages = Vec::new();
        while let Some(items) = pager.next().await.unwrap() {
            pages.push(items);
        }
        pages
    }

    #[tokio::test]
    async fn graph_cursor_paging_follows_next_through_an_empty_page() {
        let base = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
        let b = base.clone();
        let app = axum::Router::new().route(
            "/media",
            get(move |RawQuery(q): RawQuery| {
                let b = b.get().cloned().unwrap_or_default();
                async move {
                    let body = match q.as_deref() {
                        None => json!({"data": [{"id": "1"}], "paging": {"next": format!("{b}/media?after=A")}}),
                        Some("after=A") => json!({"data": [], "paging": {"next": format!("{b}/media?after=B")}}),
                        _ => json!({"data": [{"id": "2"}], "paging": {"cursors": {"before": "B"}}}),
                    };
                    body.to_string()
                }
            }),
        );
        let url = serve(app).await;
        base.set(url.clone()).unwrap();
        let pages = walk(
            &spec(Paging::CursorNext {
                next: "paging.next".into(),
            }),
            &format!("{url}/media"),
        )
        .await;
        assert_eq!(pages.len(), 3, "an empty page with next is not the end");
        assert_eq!(pages[2][0]["id"], "2");
    }

    #[tokio::test]
    async fn page_numbers_run_to_the_total() {
        let app = axum::Router::new().route(
            "/orders",
            get(|RawQuery(q): RawQuery| async move {
                let page: u64 = q.unwrap_or_default().trim_start_matches("page=").parse().unwrap();
                json!({"data": [{"page": page}], "pagination": {"totalPageCount": 3}}).to_string()
            }),
        );
        let url = serve(app).await;
        let paging = Paging::PageNumber {
            param: "page".into(),
            total_pages: "pagination.totalPageCount".into(),
        };
        let pages = walk(&spec(paging), &format!("{url}/orders")).await;
        let numbers: Vec<u64> = pages.iter().map(|p| p[0]["page"].as_u64().unwrap()).collect();
        assert_eq!(numbers, [1, 2, 3]);
    }

    #[test]
    fn paging_parameters_replace_earlier_values() {
        let base = Url::parse("http://h/x?v=5.199&offset=0").unwrap();
        assert_eq!(
            with_param(&base, "offset", "1000").as_str(),
            "http://h/x?v=5.199&offset=1000"
        );
    }
}
