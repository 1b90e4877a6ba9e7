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
//! ```

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

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
}

/// One authenticated producer.
#[derive(Debug, Clone)]
pub struct Producer {
    pub name: String,
    /// None: every event type.
    events: Option<HashSet<String>>,
}

impl Producer {
    pub fn may_send(&self, event_type: &str) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(event_type))
    }
}

/// The producers by key hash; `None` when no keys file is configured (anyone may post).
#[derive(Debug, Clone, Default)]
pub struct Producers(Option<HashMap<String, Producer>>);

impl Producers {
    /// Reads `path` (empty: no authentication). Lists every problem of the file at once;
    /// event types are checked against those the collector takes.
    pub fn load(path: &str, known_types: &[String]) -> Result<Self, String> {
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
            if by_hash
                .insert(
                    hash,
                    Producer {
                        name: name.clone(),
                        events,
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
        let p = Producers::load(path.to_str().unwrap(), &types).unwrap();
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
        let err = Producers::load(path.to_str().unwrap(), &types).unwrap_err();
        assert!(err.contains("64 hex digits") && err.contains("telepathy"), "{err}");
    }
}
