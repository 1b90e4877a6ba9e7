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
        if let Paging::OffsetCount {
            offset_param,
            count_param,
            page_size,
            ..
        } = paging
        {
            first = with_param(&first, count_param, &page_size.to_string());
            next = with_param(&first, offset_param, "0");
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

    #[test]
    fn paging_parameters_replace_earlier_values() {
        let base = Url::parse("http://h/x?v=5.199&offset=0").unwrap();
        assert_eq!(
            with_param(&base, "offset", "1000").as_str(),
            "http://h/x?v=5.199&offset=1000"
        );
    }
}
