//! A replica's local snapshot: every list and the topic positions they reflect, so a
//! restart reads only what came after instead of the whole topic. JSON lines, a header
//! first; written to a temporary file and renamed, so a kill leaves the old one whole.

use super::store::{List, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {path} line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    topic: String,
    written_at_ms: i64,
    lists: usize,
    next: BTreeMap<i32, i64>,
}

/// A held list written as `List` is read back, without copying its strings.
#[derive(Serialize)]
struct ListRef<'a> {
    customer_id: &'a str,
    list_id: &'a str,
    generated_at_ms: i64,
    model_version: &'a str,
    items: Vec<ItemRef<'a>>,
}

#[derive(Serialize)]
struct ItemRef<'a> {
    product_id: &'a str,
    score: f64,
    reasons: Vec<&'a str>,
}

pub fn path(dir: &Path, topic: &str) -> PathBuf {
    dir.join(format!("{topic}.snapshot"))
}

/// Writes the store's lists; returns how many.
pub fn save(dir: &Path, topic: &str, store: &Store) -> Result<usize, SnapshotError> {
    let target = path(dir, topic);
    let tmp = target.with_extension("snapshot.tmp");
    let io = |source| SnapshotError::Io {
        path: tmp.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let (lists, next) = store.consistent_copy();
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut out = BufWriter::new(file);
    let header = Header {
        topic: topic.to_string(),
        written_at_ms: chrono::Utc::now().timestamp_millis(),
        lists: lists.len(),
        next,
    };
    write_line(&mut out, &header).map_err(io)?;
    for held in &lists {
        let list = ListRef {
            customer_id: &held.customer_id,
            list_id: &held.list_id,
            generated_at_ms: held.generated_at_ms,
            model_version: &held.model_version,
            items: held
                .items
                .iter()
                .map(|i| ItemRef {
                    product_id: &i.product_id,
                    score: i.score,
                    reasons: i.reasons.iter().map(|r| &**r).collect(),
                })
                .collect(),
        };
        write_line(&mut out, &list).map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &target).map_err(io)?;
    Ok(lists.len())
}

/// Loads a snapshot into the store if there is one for `topic` no older than
/// `max_age_ms`; returns the lists loaded, or `None` when the topic is read from the start.
pub fn load(dir: &Path, topic: &str, max_age_ms: u64, store: &Store) -> Result<Option<usize>, SnapshotError> {
    let target = path(dir, topic);
    let file = match std::fs::File::open(&target) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path: target, source }),
    };
    let corrupt = |line: usize, message: String| SnapshotError::Corrupt {
        path: target.clone(),
        line,
        message,
    };
    let mut lines = std::io::BufReader::new(file).lines();
    let first = lines
        .next()
        .ok_or_else(|| corrupt(1, "empty".into()))?
        .map_err(|source| SnapshotError::Io {
            path: target.clone(),
            source,
        })?;
    let header: Header = serde_json::from_str(&first).map_err(|e| corrupt(1, e.to_string()))?;
    let age_ms = chrono::Utc::now()
        .timestamp_millis()
        .saturating_sub(header.written_at_ms);
    if header.topic != topic || u64::try_from(age_ms).unwrap_or(0) > max_age_ms {
        // Older than the topic keeps tombstones: an erased list could come back.
        tracing::info!(
            age_ms,
            "snapshot too old or of another topic; reading the topic from the start"
        );
        return Ok(None);
    }
    let mut lists = Vec::with_capacity(header.lists);
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|source| SnapshotError::Io {
            path: target.clone(),
            source,
        })?;
        lists.push(serde_json::from_str::<List>(&line).map_err(|e| corrupt(i + 2, e.to_string()))?);
    }
    if lists.len() != header.lists {
        return Err(corrupt(
            lists.len() + 1,
            format!("{} lists, header says {}", lists.len(), header.lists),
        ));
    }
    let n = lists.len();
    store.restore(lists, header.next);
    Ok(Some(n))
}

fn write_line<T: Serialize>(out: &mut impl Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::store::{Change, Item};

    #[test]
    fn a_snapshot_brings_back_the_lists_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::default();
        let list = |c: &str| List {
            customer_id: c.into(),
            list_id: format!("l-{c}"),
            generated_at_ms: 5,
            model_version: "m1".into(),
            items: vec![Item {
                product_id: "p1".into(),
                score: 0.5,
                reasons: vec!["popular".into()],
            }],
        };
        store.apply(0, 7, vec![Change::Put(list("a")), Change::Put(list("b"))]);
        store.apply(1, 3, vec![Change::Put(list("c")), Change::Remove("b".into())]);
        assert_eq!(save(dir.path(), "recs", &store).unwrap(), 2);
        let back = Store::default();
        assert_eq!(load(dir.path(), "recs", 60_000, &back).unwrap(), Some(2));
        assert_eq!(back.positions(), BTreeMap::from([(0, 7), (1, 3)]));
        assert_eq!(back.get("c").unwrap().to_list(), list("c"));
        assert!(back.get("b").is_none());
        // Too old (or another topic): read from the start instead.
        assert_eq!(load(dir.path(), "other", 60_000, &Store::default()).unwrap(), None);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(load(dir.path(), "recs", 1, &Store::default()).unwrap(), None);
    }
}
