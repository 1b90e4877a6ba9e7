//! Which HTTP sources a `connect` run polls, and opening one: its URL from the
//! environment, its token, HTTP client and transactional producer.

use super::error::ConnectError;
use super::fetch::Fetcher;
use super::pass::{Shared, Source, TXN_TIMEOUT};
use crate::catalog::source::HttpSpec;
use crate::catalog::{Catalog, Topic};
use crate::codec::{SchemaSet, SchemaVersion};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use reqwest::Url;
use std::sync::Arc;

/// Why a source cannot start; it is reported and tried again after its interval.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no [source.http]")]
    NoSpec,
    #[error("schema {0} is not loaded")]
    SchemaNotLoaded(String),
    #[error("url {url}: {error}")]
    Url { url: String, error: url::ParseError },
    #[error("environment variable {0} (the API token) is not set")]
    TokenNotSet(String),
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("kafka producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("kafka: {0}")]
    Transactions(#[source] KafkaError),
}

/// The raw topics to poll: `only`, or every one declaring `[source.http]`. Problems of
/// the catalog (an unknown topic, a schema not loaded) stop the command, all listed.
pub(super) fn declared<'a>(catalog: &'a Catalog, only: &[String]) -> Result<Vec<&'a Topic>, ConnectError> {
    let mut problems = Vec::new();
    let mut sources = Vec::new();
    for topic in catalog.raw_topics() {
        if !only.is_empty() && !only.contains(&topic.name) {
            continue;
        }
        if topic.source.as_ref().and_then(|s| s.http.as_ref()).is_none() {
            if only.contains(&topic.name) {
                problems.push(format!("{} declares no [source.http]", topic.name));
            }
            continue;
        }
        let event = topic.value_schema.clone().unwrap_or_default();
        if catalog.schemas.current(&event).is_none() {
            problems.push(format!("{}: schema {event} is not loaded", topic.name));
            continue;
        }
        sources.push(topic);
    }
    for name in only {
        if catalog.topic(name).is_none() {
            problems.push(format!("{name} is not in the topic catalog"));
        }
    }
    if sources.is_empty() && problems.is_empty() {
        problems.push("no topic declares an http_poll [source.http]".into());
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(ConnectError::Config(problems.join("; ")))
    }
}

/// What reading a source needs, without producing: its spec, schema, URL and HTTP client
/// (with its token).
pub(super) struct Reach {
    pub spec: HttpSpec,
    pub version: Arc<SchemaVersion>,
    pub url: Url,
    pub fetcher: Fetcher,
}

pub(super) fn reach(topic: &Topic, schemas: &SchemaSet) -> Result<Reach, OpenError> {
    let spec = topic
        .source
        .as_ref()
        .and_then(|s| s.http.clone())
        .ok_or(OpenError::NoSpec)?;
    let event = topic.value_schema.clone().unwrap_or_default();
    let version = schemas
        .current(&event)
        .cloned()
        .ok_or(OpenError::SchemaNotLoaded(event))?;
    let url = Url::parse(&expand(&spec.url)).map_err(|error| OpenError::Url {
        url: spec.url.clone(),
        error,
    })?;
    let token = match &spec.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.is_empty() => Some(t),
            _ => return Err(OpenError::TokenNotSet(var.clone())),
        },
        None => None,
    };
    let fetcher = Fetcher::new(&spec, token).map_err(OpenError::HttpClient)?;
    Ok(Reach {
        spec,
        version,
        url,
        fetcher,
    })
}

/// Everything one source needs to poll: its URL, token, HTTP client and transactional
/// producer (whose start aborts whatever a killed predecessor left open).
pub(super) fn open(topic: &Topic, shared: &Shared<'_>) -> Result<Source, OpenError> {
    let Reach {
        spec,
        version,
        url,
        fetcher,
    } = reach(topic, shared.schemas)?;
    let producer: FutureProducer = crate::kafka::client_config(&shared.kafka)
        .set("transactional.id", format!("hoffrec-connect-{}", topic.name))
        .set("transaction.timeout.ms", spec.transaction_timeout_ms.to_string())
        // librdkafka refuses a socket timeout beyond the transaction's (default 60 s).
        .set("socket.timeout.ms", spec.transaction_timeout_ms.min(60_000).to_string())
        .create()
        .map_err(OpenError::Producer)?;
    tokio::task::block_in_place(|| producer.init_transactions(TXN_TIMEOUT)).map_err(OpenError::Transactions)?;
    Ok(Source {
        topic: topic.clone(),
        spec,
        version,
        url,
        fetcher,
        producer,
    })
}

/// `${NAME:-default}` and `${NAME}` from the environment.
pub(super) fn expand(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 2..start + len];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        out.push_str(
            &std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or(default.to_string()),
        );
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_expand_from_the_environment_with_defaults() {
        assert_eq!(
            expand("${HOFFREC_SURELY_UNSET_VAR:-https://api.vk.com}/method"),
            "https://api.vk.com/method"
        );
        assert_eq!(expand("plain"), "plain");
    }
}
