//! Who a social source may read: the consent events the site posts (`raw.site.consent`,
//! kept forever) folded to each customer's newest decision for a purpose. Read again at
//! the start of every pass, so a withdrawal stops the next pass for that customer.

use super::offsets::{OffsetsError, read_topic};
use crate::catalog::Topic;
use crate::codec::SchemaSet;
use crate::config::KafkaConfig;
use apache_avro::types::Value;
use std::collections::HashMap;

/// (customer id, account id on `network`) for every customer whose newest consent for
/// `purpose` is `given` and names an account there; sorted by customer id.
pub fn consenting(
    kafka: &KafkaConfig,
    topic: &Topic,
    schemas: &SchemaSet,
    purpose: &str,
    network: &str,
) -> Result<Vec<(String, String)>, OffsetsError> {
    // customer -> (when, given, networks). Time, then id, orders them, as the marts'
    // consent gate does (`mart::consent`): both must agree on the newest.
    type When = (i64, String);
    let mut newest: HashMap<String, (When, bool, Vec<String>)> = HashMap::new();
    read_topic(kafka, topic, |payload| {
        let Ok(Value::Record(fields)) = schemas.decode(payload, "consent") else {
            // Ingest dead-letters what does not decode; here it simply grants nothing.
            return Ok(());
        };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let (Some(Value::String(customer)), Some(Value::String(p))) = (get("customer_id"), get("purpose")) else {
            return Ok(());
        };
        if p != purpose {
            return Ok(());
        }
        let at = match get("event_time") {
            Some(Value::TimestampMillis(ms)) => *ms,
            _ => 0,
        };
        let id = match get("event_id") {
            Some(Value::String(id)) => id.clone(),
            _ => String::new(),
        };
        let at = (at, id);
        let given = matches!(get("action"), Some(Value::Enum(_, a)) if a == "given");
        let networks = match get("networks") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if newest.get(customer).is_none_or(|(t, _, _)| at >= *t) {
            newest.insert(customer.clone(), (at, given, networks));
        }
        Ok(())
    })?;
    let prefix = format!("{network}:");
    let mut out: Vec<(String, String)> = newest
        .into_iter()
        .filter(|(_, (_, given, _))| *given)
        .filter_map(|(customer, (_, _, networks))| {
            networks
                .iter()
                .find_map(|n| n.strip_prefix(&prefix).map(str::to_string))
                // The id goes into API calls (`user_ids=`) and URL paths: digits only.
                .filter(|account| !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit()))
                .map(|account| (customer, account))
        })
        .collect();
    out.sort();
    Ok(out)
}
