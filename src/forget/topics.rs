//! The Kafka side of an erasure: tombstones on the compacted topics that hold a customer
//! under a key (`recs.customer`, cursors on `connect.offsets`, dead letters and consents
//! that name them), and a count of what only retention removes (records without a key).

use super::ForgetError;
use crate::catalog::Topic;
use crate::config::KafkaConfig;
use rdkafka::Message;
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::time::Duration;

/// What the erasure did on one topic.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TopicErased {
    pub topic: String,
    /// Keys tombstoned (compaction removes every earlier record under them).
    pub tombstones: u64,
    /// Records that carry a customer but that only the topic's retention removes.
    pub left_to_retention: u64,
}

/// A tombstone (null value) for each key, each acknowledged by the broker.
pub async fn tombstone(producer: &FutureProducer, topic: &str, keys: &BTreeSet<String>) -> Result<u64, ForgetError> {
    for key in keys {
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key.as_str());
        crate::kafka::send_and_wait(producer, record, Duration::from_secs(30)).await?;
    }
    Ok(keys.len() as u64)
}

/// Whether `id` occurs in `haystack` as a whole id: `c-1` is not in `c-17`.
fn contains(haystack: &[u8], id: &str) -> bool {
    let part_of_id = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b"-_:.@".contains(b));
    let n = id.len();
    n > 0
        && haystack.windows(n).enumerate().any(|(i, w)| {
            w == id.as_bytes()
                && !part_of_id(i.checked_sub(1).and_then(|j| haystack.get(j)))
                && !part_of_id(haystack.get(i + n))
        })
}

/// Reads `topic` to its end and returns the keys of live records (not yet tombstoned)
/// whose key, value or a header (a dead letter's original key) names one of the
/// customers, and how many records without a key do.
pub fn scan(kafka: &KafkaConfig, topic: &Topic, customers: &[String]) -> Result<(BTreeSet<String>, u64), ForgetError> {
    let mut keys = BTreeSet::new();
    let mut unkeyed = 0;
    tokio::task::block_in_place(|| {
        crate::connect::offsets::read_records(kafka, topic, |m| {
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let Some(payload) = m.payload() else {
                // A tombstone: what was under this key is gone already.
                if let Some(k) = &key {
                    keys.remove(k);
                }
                return Ok(());
            };
            let named = customers.iter().any(|c| {
                contains(payload, c)
                    || key.as_deref().is_some_and(|k| contains(k.as_bytes(), c))
                    || m.headers()
                        .is_some_and(|hs| hs.iter().any(|h| h.value.is_some_and(|v| contains(v, c))))
            });
            match (named, key) {
                (true, Some(k)) => {
                    keys.insert(k);
                }
                (true, None) => unkeyed += 1,
                (false, Some(k)) => {
                    // The newest record under a key decides whether it still names them.
                    keys.remove(&k);
                }
                (false, None) => {}
            }
            Ok(())
        })
    })?;
    Ok((keys, unkeyed))
}

/// Counts the records of a delete-policy topic (dead letters) whose key or value names
/// one of the customers: they cannot be removed one by one, only by the topic's retention.
pub fn count_named(kafka: &KafkaConfig, topic: &Topic, customers: &[String]) -> Result<u64, ForgetError> {
    let mut named = 0;
    tokio::task::block_in_place(|| {
        crate::connect::offsets::read_records(kafka, topic, |m| {
            let hit = |bytes: Option<&[u8]>| bytes.is_some_and(|b| customers.iter().any(|c| contains(b, c)));
            if hit(m.key()) || hit(m.payload()) {
                named += 1;
            }
            Ok(())
        })
    })?;
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn a_customer_is_found_inside_bytes() {
        assert!(contains(b"\x02c-17\x00", "c-17"));
        assert!(!contains(b"c-1", "c-17"));
        assert!(!contains(b"\x02c-17\x00", "c-1"));
        assert!(contains(b"site/c-1", "c-1"));
        assert!(!contains(b"anything", ""));
    }
}
