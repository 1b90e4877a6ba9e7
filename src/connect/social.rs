//! Per-customer passes for the social networks: only customers with a recorded consent
//! are asked for, each with the account they linked; lists such as VK communities come
//! from joined requests. A private profile or list skips that customer (or leaves the
//! list empty); an expired token or a used-up quota ends the pass with the reason.

use super::consent::consenting;
use super::error::ConnectError;
use super::fetch::FetchError;
use super::pager::{PageError, Pager, with_param};
use super::pass::{Outcome, PassSummary, Shared, Source, Stop, dead_letter, produce_items};
use super::source::expand;
use crate::catalog::source::{Join, PerCustomer};
use reqwest::Url;
use serde_json::{Value as Json, json};
use tracing::warn;

pub(super) async fn pass(shared: &Shared<'_>, source: &Source, per: &PerCustomer) -> Result<PassSummary, ConnectError> {
    let mut summary = PassSummary {
        source: source.topic.name.clone(),
        ..Default::default()
    };
    let topic = shared
        .consent
        .as_ref()
        .ok_or_else(|| ConnectError::Config("no raw topic carries consent events".into()))?;
    // The catalog refuses a per-customer source without one.
    let purpose = source.topic.consent_purpose.as_deref().unwrap_or_default();
    let customers =
        tokio::task::block_in_place(|| consenting(&shared.kafka, topic, shared.schemas, purpose, &per.network))?;
    let pass_ms = chrono::Utc::now().timestamp_millis();
    for (n, (customer, account)) in customers.into_iter().enumerate() {
        // A daily pass over thousands of customers at a few requests per second outlasts
        // any transaction timeout; what is done becomes visible every 100 customers.
        if n > 0 && n % 100 == 0 {
            source.checkpoint()?;
        }
        summary.customers += 1;
        match customer_items(shared, source, per, &account, &mut summary).await {
            Outcome::Done(mut items) => {
                stamp(&mut items, &customer, &account, pass_ms);
                summary.records += produce_items(shared, source, &items, &mut summary.dead_letters).await?;
            }
            Outcome::Stopped(Stop::Customer) => summary.skipped += 1,
            Outcome::Stopped(Stop::Pass(reason)) => {
                summary.stopped = Some(reason);
                break;
            }
            Outcome::Failed(e) => return Err(e),
        }
    }
    Ok(summary)
}

/// The customer's items with every join filled in.
async fn customer_items(
    shared: &Shared<'_>,
    source: &Source,
    per: &PerCustomer,
    account: &str,
    summary: &mut PassSummary,
) -> Outcome<Vec<Json>> {
    let spec = &source.spec;
    let url = for_account(&source.url, &spec.params, per.param.as_deref(), account);
    let mut items = match walk(
        shared,
        source,
        Pager::new(&source.fetcher, &spec.paging, &spec.items, url),
        summary,
    )
    .await
    {
        Outcome::Done(items) => items,
        other => return other,
    };
    for join in &spec.joins {
        let url = match join_url(join, per, account) {
            Ok(u) => u,
            Err(e) => return e.into(),
        };
        let list = match walk(
            shared,
            source,
            Pager::new(&source.fetcher, &join.paging, &join.items, url),
            summary,
        )
        .await
        {
            Outcome::Done(list) => list,
            // A private list (VK 30/260, Graph permissions) is an empty one, not a lost customer.
            Outcome::Stopped(Stop::Customer) => Vec::new(),
            other => return other,
        };
        attach(&mut items, &join.into, &list);
    }
    Outcome::Done(items)
}

/// The first URL of a join's list for one account.
pub(super) fn join_url(join: &Join, per: &PerCustomer, account: &str) -> Result<Url, ConnectError> {
    let base =
        Url::parse(&expand(&join.url)).map_err(|e| ConnectError::Config(format!("join url {}: {e}", join.url)))?;
    let param = join.param.as_deref().or(per.param.as_deref());
    Ok(for_account(&base, &join.params, param, account))
}

/// Puts a join's list into every item, under the join's `into`.
pub(super) fn attach(items: &mut [Json], into: &str, list: &[Json]) {
    for item in items {
        if let Json::Object(m) = item {
            m.insert(into.to_string(), Json::Array(list.to_vec()));
        }
    }
}

/// What a per-customer pass adds to each item before mapping it: whose it is, through
/// which account, and when the pass ran.
pub(super) fn stamp(items: &mut [Json], customer: &str, account: &str, pass_ms: i64) {
    for item in items {
        if let Json::Object(m) = item {
            m.insert("_customer_id".into(), json!(customer));
            m.insert("_account_id".into(), json!(account));
            m.insert("_pass_ms".into(), json!(pass_ms));
        }
    }
}

pub(super) fn for_account(
    base: &Url,
    params: &std::collections::BTreeMap<String, String>,
    param: Option<&str>,
    account: &str,
) -> Url {
    let mut url = match param {
        Some(_) => base.clone(),
        None => Url::parse(
            &base
                .as_str()
                .replace("%7Baccount%7D", account)
                .replace("{account}", account),
        )
        .unwrap_or_else(|_| base.clone()),
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    match param {
        Some(p) => with_param(&url, p, account),
        None => url,
    }
}

async fn walk(
    shared: &Shared<'_>,
    source: &Source,
    mut pager: Pager<'_>,
    summary: &mut PassSummary,
) -> Outcome<Vec<Json>> {
    let mut all = Vec::new();
    loop {
        match pager.next().await {
            Ok(Some(items)) => {
                summary.pages += 1;
                all.extend(items);
            }
            Ok(None) => return Outcome::Done(all),
            Err(PageError::Refused { class, reason, body }) => {
                if let Err(e) = dead_letter(shared, source, &body, class, &reason).await {
                    return e.into();
                }
                summary.dead_letters += 1;
                return Outcome::Stopped(Stop::Customer);
            }
            Err(PageError::Fetch(e @ FetchError::Denied(_))) => {
                warn!(error = %e, "access denied; skipping");
                return Outcome::Stopped(Stop::Customer);
            }
            Err(PageError::Fetch(e @ (FetchError::Auth(_) | FetchError::Quota(_)))) => {
                warn!(error = %e, "source stopped for this pass");
                return Outcome::Stopped(Stop::Pass(format!("{}: {e}", e.class())));
            }
            Err(PageError::Fetch(error)) => {
                return ConnectError::Fetch {
                    source_topic: source.topic.name.clone(),
                    error,
                }
                .into();
            }
        }
    }
}
