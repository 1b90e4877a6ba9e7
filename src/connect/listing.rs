//! A pass of a source that is one listing (not asked per customer): pages through the
//! API from the stored cursor and moves the cursor to the latest item it produced.

use super::error::ConnectError;
use super::fetch::FetchError;
use super::mapping::{cursor_ms, format_ms, lookup, text, time_format_of};
use super::pager::{PageError, Pager};
use super::pass::{PassSummary, Shared, Source, dead_letter, produce_items};
use crate::catalog::Topic;
use crate::catalog::source::{HttpSpec, Incremental};
use reqwest::Url;
use std::time::{Duration, Instant};
use tracing::warn;

/// One pass from `committed`, which a commit in the middle of the pass moves along, so a
/// pass that fails later resumes from there.
pub(super) async fn pass(
    shared: &Shared<'_>,
    source: &Source,
    committed: &mut Option<String>,
) -> Result<PassSummary, ConnectError> {
    let cursor = committed.clone();
    let spec = &source.spec;
    let mut summary = PassSummary {
        source: source.topic.name.clone(),
        cursor: cursor.clone(),
        ..Default::default()
    };
    let clock = spec
        .incremental
        .as_ref()
        .and_then(|inc| CursorClock::new(&source.topic, inc));
    let first = first_page(&source.topic, spec, &source.url, cursor.as_deref());
    let mut pager = Pager::new(&source.fetcher, &spec.paging, &spec.items, first);
    let mut best = cursor.clone();
    let mut complete = true;
    let commit_every = Duration::from_millis(spec.commit_interval_ms);
    let mut opened = Instant::now();
    loop {
        let items = match pager.next().await {
            Ok(Some(items)) => items,
            Ok(None) => break,
            Err(PageError::Refused { class, reason, body }) => {
                dead_letter(shared, source, &body, class, &reason).await?;
                summary.dead_letters += 1;
                complete = false;
                break;
            }
            Err(PageError::Fetch(e @ (FetchError::Auth(_) | FetchError::Quota(_) | FetchError::Denied(_)))) => {
                warn!(error = %e, "source stopped for this pass");
                summary.stopped = Some(format!("{}: {e}", e.class()));
                complete = false;
                break;
            }
            Err(PageError::Fetch(error)) => {
                return Err(ConnectError::Fetch {
                    source_topic: source.topic.name.clone(),
                    error,
                });
            }
        };
        summary.pages += 1;
        for item in &items {
            if let Some(inc) = &spec.incremental
                && let Some(value) = lookup(item, &inc.field).and_then(text)
            {
                if clock.as_ref().is_some_and(|k| k.in_future(&value)) {
                    summary.future_items += 1;
                } else if best.as_deref().is_none_or(|b| later(&value, b)) {
                    best = Some(value);
                }
            }
        }
        summary.records += produce_items(shared, source, &items, &mut summary.dead_letters).await?;
        if opened.elapsed() >= commit_every {
            // A long pass makes what it has visible well inside its transaction's timeout.
            // With items in ascending cursor order the cursor goes along, so a restart
            // resumes here; otherwise it redoes the pass and ingest drops the repeats.
            let moved = best
                .as_ref()
                .filter(|b| spec.incremental.as_ref().is_some_and(|i| i.ascending) && committed.as_ref() != Some(*b));
            if let Some(b) = moved {
                source.save_cursor(shared, b).await?;
            }
            source.checkpoint()?;
            if let Some(b) = moved {
                *committed = Some(b.clone());
                summary.cursor = Some(b.clone());
            }
            summary.commits += 1;
            opened = Instant::now();
        }
    }
    if summary.future_items > 0 {
        warn!(
            items = summary.future_items,
            "items dated beyond now + max_future_ms were produced but do not move the cursor"
        );
    }
    // Items may come in any order within a pass, so the cursor moves only after a whole
    // pass; a repeat after a crash is harmless, since event ids are derived from the item.
    if complete && best != cursor {
        if let Some(b) = &best {
            source.save_cursor(shared, b).await?;
        }
        summary.cursor = best;
    }
    Ok(summary)
}

/// The first page's URL: the declared parameters, and the cursor (moved back by the
/// lookback) when there is one.
pub(super) fn first_page(topic: &Topic, spec: &HttpSpec, url: &Url, cursor: Option<&str>) -> Url {
    let mut first = url.clone();
    {
        let mut query = first.query_pairs_mut();
        for (k, v) in &spec.params {
            query.append_pair(k, v);
        }
        if let (Some(inc), Some(c)) = (&spec.incremental, cursor) {
            let clock = CursorClock::new(topic, inc);
            let from = clock.as_ref().and_then(|k| k.looked_back(c));
            query.append_pair(&inc.param, from.as_deref().unwrap_or(c));
        }
    }
    first
}

/// A time cursor read as the mapping reads its field: bounded by now + skew, and moved
/// back by the lookback when sent. `None` for cursors that are not times (record ids).
struct CursorClock<'a> {
    format: &'a str,
    zone: Option<&'a str>,
    ceiling_ms: i64,
    lookback_ms: i64,
}

impl<'a> CursorClock<'a> {
    fn new(topic: &'a Topic, inc: &Incremental) -> Option<Self> {
        let mapping = &topic.source.as_ref()?.mapping;
        let (format, zone) = time_format_of(mapping, &inc.field)?;
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX / 2);
        Some(Self {
            format,
            zone,
            ceiling_ms: chrono::Utc::now().timestamp_millis() + ms(inc.max_future_ms),
            lookback_ms: ms(inc.lookback_ms),
        })
    }

    fn in_future(&self, value: &str) -> bool {
        cursor_ms(value, self.format, self.zone).is_some_and(|ms| ms > self.ceiling_ms)
    }

    fn looked_back(&self, cursor: &str) -> Option<String> {
        if self.lookback_ms == 0 {
            return None;
        }
        let ms = cursor_ms(cursor, self.format, self.zone)?;
        format_ms(ms - self.lookback_ms, self.format, self.zone)
    }
}

/// Whether cursor value `a` comes after `b`: numerically when both are numbers, else as text
/// (ISO-8601 times of one format order correctly as text).
fn later(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x > y,
        _ => a > b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_compare_as_numbers_or_text() {
        assert!(later("10", "9"));
        assert!(later("2026-03-02T00:00:00", "2026-03-01T23:59:59"));
        assert!(!later("2026-03-01", "2026-03-01"));
    }
}
