//! `hoffrec connect --dry-run --source TOPIC`: one page of a source, asked for from where
//! its stored cursor stands (or for one `--account` of a per-customer source, with the
//! first page of each of its joins) and mapped exactly as a pass maps it, printed with the
//! records it would produce and the items it would dead-letter. Nothing is produced and no
//! producer is opened: a transactional one under the connector's id would fence the
//! connector that is running.

use super::error::ConnectError;
use super::pager::{PageError, Pager};
use super::{listing, offsets, produce, social, source};
use crate::catalog::{Catalog, Role};
use crate::config::KafkaConfig;
use serde::Serialize;
use serde_json::Value as Json;

#[derive(Debug, Serialize)]
pub struct DryRun {
    pub source: String,
    /// The page asked for (the token is added when asking, never printed).
    pub url: String,
    /// The stored cursor the page starts from (listing sources).
    pub cursor: Option<String>,
    /// Items on the page.
    pub items: usize,
    /// What a pass would produce: key and value as the topic's consumers decode it.
    pub records: Vec<Record>,
    /// Items a pass would dead-letter as `invalid_item`, with why.
    pub invalid: Vec<Invalid>,
    /// Whether the source has pages after this one.
    pub more_pages: bool,
}

#[derive(Debug, Serialize)]
pub struct Record {
    pub key: Option<String>,
    pub value: Json,
}

#[derive(Debug, Serialize)]
pub struct Invalid {
    pub item: Json,
    pub reason: String,
}

pub async fn run(
    catalog: &Catalog,
    kafka: &KafkaConfig,
    source_topic: &str,
    account: Option<&str>,
    customer: Option<&str>,
) -> Result<DryRun, ConnectError> {
    let topic = *source::declared(catalog, &[source_topic.to_string()])?
        .first()
        .ok_or_else(|| ConnectError::Config(format!("{source_topic} declares no [source.http]")))?;
    let per_customer = topic
        .source
        .as_ref()
        .and_then(|s| s.http.as_ref())
        .is_some_and(|h| h.per_customer.is_some());
    match (per_customer, account) {
        (true, None) => {
            return Err(ConnectError::Config(format!(
                "{source_topic} is asked per customer: give --account ID (the account a customer linked)"
            )));
        }
        (false, Some(_)) => {
            return Err(ConnectError::Config(format!(
                "{source_topic} is one listing: --account does not apply"
            )));
        }
        _ => {}
    }
    let reach = source::reach(topic, &catalog.schemas)
        .map_err(|e| ConnectError::Config(format!("{source_topic} cannot start: {e}")))?;
    let spec = &reach.spec;
    let (url, cursor) = match (&spec.per_customer, account) {
        (Some(per), Some(account)) => (
            social::for_account(&reach.url, &spec.params, per.param.as_deref(), account),
            None,
        ),
        _ => {
            let offsets_topic = catalog.require(Role::ConnectorOffsets)?;
            let stored = tokio::task::block_in_place(|| offsets::load(kafka, offsets_topic, &catalog.schemas))?;
            let cursor = stored.get(&(topic.name.clone(), "default".into())).cloned();
            (listing::first_page(topic, spec, &reach.url, cursor.as_deref()), cursor)
        }
    };
    let mut pager = Pager::new(&reach.fetcher, &spec.paging, &spec.items, url.clone());
    let mut page = first(&mut pager, source_topic).await?;
    let more_pages = pager.has_more();
    if let (Some(per), Some(account)) = (&spec.per_customer, account) {
        for join in &spec.joins {
            let url = social::join_url(join, per, account)?;
            let list = first(
                &mut Pager::new(&reach.fetcher, &join.paging, &join.items, url),
                source_topic,
            )
            .await?;
            social::attach(&mut page, &join.into, &list);
        }
        let now = chrono::Utc::now().timestamp_millis();
        social::stamp(&mut page, customer.unwrap_or("dry-run"), account, now);
    }
    let mut run = DryRun {
        source: topic.name.clone(),
        url: url.to_string(),
        cursor,
        items: page.len(),
        records: Vec::new(),
        invalid: Vec::new(),
        more_pages,
    };
    for item in page {
        match produce::prepare(topic, &reach.version, &item) {
            Ok((key, payload)) => {
                // Decoded back from the bytes a pass would produce, so what is printed is
                // what the topic's readers would get.
                let value = catalog
                    .schemas
                    .decode(&payload, &reach.version.event)
                    .map_err(|e| e.to_string())
                    .and_then(|v| Json::try_from(v).map_err(|e| e.to_string()));
                match value {
                    Ok(value) => run.records.push(Record { key, value }),
                    Err(reason) => run.invalid.push(Invalid { item, reason }),
                }
            }
            Err(reason) => run.invalid.push(Invalid { item, reason }),
        }
    }
    Ok(run)
}

/// The first page of a walk, or why a pass would not get it.
async fn first(pager: &mut Pager<'_>, source_topic: &str) -> Result<Vec<Json>, ConnectError> {
    match pager.next().await {
        Ok(page) => Ok(page.unwrap_or_default()),
        Err(PageError::Refused { class, reason, .. }) => Err(ConnectError::Config(format!(
            "{source_topic}: the page would be dead-lettered as {class}: {reason}"
        ))),
        Err(PageError::Fetch(error)) => Err(ConnectError::Fetch {
            source_topic: source_topic.to_string(),
            error,
        }),
    }
}
