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
    /// This page cannot be used or paged on; `class` says why for the dead letter, and
    /// the body (or its beginning) is kept.
    Refused {
        class: &'static str,
        reason: String,
        body: Vec<u8>,
    },
}

impl From<FetchError> for PageError {
    fn from(e: FetchError) -> Self {
        let class = e.class();
        match e {
            FetchError::Malformed { reason, body } | FetchError::TooLarge { reason, body } => {
                Self::Refused { class, reason, body }
            }
            other => Self::Fetch(other),
        }
    }
}

pub struct Pager<'a> {
    fetcher: &'a Fetcher,
    paging: &'a Paging,
    items: &'a str,
    first: Url,
    next: Option<Url>,
    offset: u64,
    /// Every URL asked for in this walk: an API that sends one again pages in circles.
    visited: std::collections::HashSet<String>,
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
            visited: Default::default(),
        }
    }

    /// Whether a page is left to ask for.
    pub fn has_more(&self) -> bool {
        self.next.is_some()
    }

    /// The items of the next page, or None after the last one.
    pub async fn next(&mut self) -> Result<Option<Vec<Json>>, PageError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let refused = |class, reason| PageError::Refused {
            class,
            reason,
            body: Vec::new(),
        };
        let max_pages = self.fetcher.spec().max_pages_per_pass;
        if self.visited.len() as u64 >= max_pages {
            return Err(refused(
                "too_many_pages",
                format!("more than max_pages_per_pass = {max_pages} pages"),
            ));
        }
        if !self.visited.insert(url.to_string()) {
            // Named without the query: a Graph `next` link carries the access token.
            return Err(refused(
                "paging_loop",
                format!("the API sent page {} again", url.path()),
            ));
        }
        let body = self.fetcher.get(&url).await?;
        // An object where the items are is one item (a Graph `GET /{user-id}`).
        let items = match lookup(&body, self.items) {
            Some(Json::Array(items)) => items.clone(),
            Some(one @ Json::Object(_)) => vec![one.clone()],
            _ => {
                return Err(PageError::Refused {
                    class: "malformed_response",
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
            // The token goes with every request, so a link is followed only to the
            // source's own scheme, host and port.
            Paging::CursorNext { next } => match lookup(&body, next).and_then(Json::as_str).map(Url::parse) {
                Some(Ok(n)) if n.origin() != self.first.origin() => {
                    return Err(PageError::Refused {
                        class: "foreign_next_link",
                        reason: format!(
                            "the next link leads to {} instead of {}",
                            n.host_str().unwrap_or("no host"),
                            self.first.host_str().unwrap_or("no host")
                        ),
                        body: serde_json::to_vec(&body).unwrap_or_default(),
                    });
                }
                Some(Ok(n)) => Some(n),
                _ => None,
            },
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
            max_response_bytes: 1 << 20,
            max_pages_per_pass: 100,
            commit_interval_ms: 60_000,
            transaction_timeout_ms: 900_000,
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

    /// What the first pages of a walk give, the refusal's class and kept body included.
    async fn first_outcomes(spec: &HttpSpec, url: &str, n: usize) -> Vec<Result<usize, (&'static str, usize)>> {
        let fetcher = Fetcher::new(spec, None).unwrap();
        let mut pager = Pager::new(&fetcher, &spec.paging, &spec.items, Url::parse(url).unwrap());
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(match pager.next().await {
                Ok(Some(items)) => Ok(items.len()),
                Ok(None) => break,
                Err(PageError::Refused { class, body, .. }) => Err((class, body.len())),
                Err(PageError::Fetch(e)) => panic!("{e}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn next_links_elsewhere_loops_and_oversize_bodies_are_refused() {
        let cursor = spec(Paging::CursorNext {
            next: "paging.next".into(),
        });
        // The token goes with every request: a link to another host is not followed.
        let elsewhere = serve(axum::Router::new().route(
            "/media",
            get(|| async {
                json!({"data": [{"id": "1"}], "paging": {"next": "http://evil.example/steal"}}).to_string()
            }),
        ))
        .await;
        let got = first_outcomes(&cursor, &format!("{elsewhere}/media"), 3).await;
        assert!(matches!(got[..], [Err(("foreign_next_link", n))] if n > 0), "{got:?}");

        // A next link back to a page already read ends the walk instead of circling.
        let base = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
        let b = base.clone();
        let circle = serve(axum::Router::new().route(
            "/media",
            get(move || {
                let b = b.get().cloned().unwrap_or_default();
                async move { json!({"data": [{"id": "1"}], "paging": {"next": format!("{b}/media")}}).to_string() }
            }),
        ))
        .await;
        base.set(circle.clone()).unwrap();
        let got = first_outcomes(&cursor, &format!("{circle}/media"), 3).await;
        assert_eq!(got, [Ok(1), Err(("paging_loop", 0))]);

        // A body over max_response_bytes (1 MiB here) is refused, its first 64 KiB kept.
        let huge = serve(axum::Router::new().route(
            "/media",
            get(|| async { format!("{{\"data\": [\"{}\"]}}", "x".repeat(2 << 20)) }),
        ))
        .await;
        let got = first_outcomes(&cursor, &format!("{huge}/media"), 1).await;
        assert_eq!(got, [Err(("oversize_response", 64 * 1024))]);
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
