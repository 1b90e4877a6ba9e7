//! Who may post to the event collector: producers from `collector.keys_file`, each with
//! the SHA-256 of its bearer key (the file never holds a key) and the event types it may
//! send. Rotating a key is adding the new hash beside the old, then removing the old.
//!
//! ```toml
//! [producers.site]
//! key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! events = ["page_view", "product_view", "search", "cart", "consent", "rec_impression"]
//!
//! [producers.app]
//! key_sha256 = "..."
//! events = ["*"]
//! max_events_per_s = 500.0   # optional: a token bucket per producer, 429 beyond it
//! burst_events = 5000        # optional: what it may send at once (default: one full request)
//! ```

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    producers: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key_sha256: String,
    events: Vec<String>,
    #[serde(default)]
    max_events_per_s: f64,
    #[serde(default)]
    burst_events: Option<u64>,
}

/// One authenticated producer.
#[derive(Debug, Clone)]
pub struct Producer {
    pub name: String,
    /// None: every event type.
    events: Option<HashSet<String>>,
    /// None: no rate limit.
    limit: Option<Arc<Bucket>>,
}

impl Producer {
    pub fn may_send(&self, event_type: &str) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(event_type))
    }

    /// Takes `events` from the producer's bucket, or says how long until they fit. One
    /// producer flooding the collector slows only itself.
    pub fn admit(&self, events: usize) -> Result<(), Duration> {
        self.limit.as_ref().map_or(Ok(()), |b| b.take(events as f64))
    }
}

/// A token bucket: `rate` events per second, up to `burst` at once.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    fn take(&self, n: f64) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, at) = *state;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= n {
            *state = (tokens - n, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((n - tokens) / self.rate))
        }
    }
}

/// The producers by key hash; `None` when no keys file is configured (anyone may post).
#[derive(Debug, Clone, Default)]
pub struct Producers(Option<HashMap<String, Producer>>);

impl Producers {
    /// Reads `path` (empty: no authentication). Lists every problem of the file at once;
    /// event types are checked against those the collector takes.
    /// A burst below `max_events_per_request` could refuse a full request for ever.
    pub fn load(path: &str, known_types: &[String], max_events_per_request: u64) -> Result<Self, String> {
        if path.is_empty() {
            return Ok(Self(None));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("collector.keys_file {path}: {e}"))?;
        let file: KeysFile = toml::from_str(&text).map_err(|e| format!("collector.keys_file {path}: {e}"))?;
        let mut problems = Vec::new();
        let mut by_hash = HashMap::new();
        for (name, entry) in file.producers {
            let hash = entry.key_sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!("producer {name}: key_sha256 must be 64 hex digits"));
            }
            for e in entry.events.iter().filter(|e| *e != "*" && !known_types.contains(e)) {
                problems.push(format!("producer {name}: the collector takes no event type {e}"));
            }
            let events = (!entry.events.iter().any(|e| e == "*")).then(|| entry.events.into_iter().collect());
            let burst = entry.burst_events.unwrap_or(max_events_per_request);
            if !entry.max_events_per_s.is_finite() || entry.max_events_per_s < 0.0 {
                problems.push(format!("producer {name}: max_events_per_s must be a number >= 0"));
            }
            if entry.max_events_per_s > 0.0 && burst < max_events_per_request {
                problems.push(format!(
                    "producer {name}: burst_events ({burst}) is below collector.max_events_per_request \
                     ({max_events_per_request}), so a full request could never pass"
                ));
            }
            let limit = (entry.max_events_per_s > 0.0 && entry.max_events_per_s.is_finite())
                .then(|| Arc::new(Bucket::new(entry.max_events_per_s, burst as f64)));
            if by_hash
                .insert(
                    hash,
                    Producer {
                        name: name.clone(),
                        events,
                        limit,
                    },
                )
                .is_some()
            {
                problems.push(format!("producer {name}: its key is also another producer's"));
            }
        }
        if problems.is_empty() {
            Ok(Self(Some(by_hash)))
        } else {
            Err(format!("collector.keys_file {path}: {}", problems.join("; ")))
        }
    }

    pub fn required(&self) -> bool {
        self.0.is_some()
    }

    /// The producer whose key is in the `Authorization: Bearer` header. `Ok(None)` when no
    /// keys are configured; `Err` with the reason when they are and this one is not known.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<&Producer>, &'static str> {
        let Some(producers) = &self.0 else {
            return Ok(None);
        };
        let key = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or("an Authorization: Bearer key is required")?;
        producers.get(&sha256_hex(key)).map(Some).ok_or("the key is not known")
    }
}

/// Hex SHA-256, as `key_sha256` holds it (`printf %s KEY | sha256sum`).
pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_by_hash_and_events_by_producer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let types = vec!["product_view".to_string(), "consent".to_string()];
        std::fs::write(
            &path,
            format!(
                "[producers.site]\nkey_sha256 = \"{}\"\nevents = [\"product_view\"]\n[producers.app]\nkey_sha256 = \"{}\"\nevents = [\"*\"]\n",
                sha256_hex("site-key"),
                sha256_hex("app-key")
            ),
        )
        .unwrap();
        let p = Producers::load(path.to_str().unwrap(), &types, 1000).unwrap();
        let site = p.authenticate(Some("Bearer site-key")).unwrap().unwrap();
        assert!(site.may_send("product_view") && !site.may_send("consent"));
        assert!(
            p.authenticate(Some("Bearer app-key"))
                .unwrap()
                .unwrap()
                .may_send("consent")
        );
        assert!(p.authenticate(Some("Bearer guess")).is_err());
        assert!(p.authenticate(None).is_err());
        assert!(Producers::default().authenticate(None).unwrap().is_none());

        std::fs::write(&path, "[producers.x]\nkey_sha256 = \"abc\"\nevents = [\"telepathy\"]\n").unwrap();
        let err = Producers::load(path.to_str().unwrap(), &types, 1000).unwrap_err();
        assert!(err.contains("64 hex digits") && err.contains("telepathy"), "{err}");

        std::fs::write(
            &path,
            format!(
                "[producers.x]\nkey_sha256 = \"{}\"\nevents = [\"*\"]\nmax_events_per_s = 10.0\nburst_events = 5\n",
                sha256_hex("x")
            ),
        )
        .unwrap();
        let err = Producers::load(path.to_str().unwrap(), &types, 6).unwrap_err();
        assert!(err.contains("burst_events (5) is below"), "{err}");
    }

    #[test]
    fn a_bucket_lets_its_burst_through_then_its_rate() {
        let bucket = Bucket::new(10.0, 5.0);
        assert!(bucket.take(5.0).is_ok());
        let wait = bucket.take(2.0).unwrap_err();
        assert!(
            wait > Duration::from_millis(150) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        std::thread::sleep(wait);
        assert!(bucket.take(2.0).is_ok());
    }
}
