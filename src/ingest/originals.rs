//! Every record's original key, bytes and headers, kept until its batch commits so a
//! batch the lake refuses can still be dead-lettered whole. One growing arena per batch
//! instead of two or three allocations per record: this sits on the per-record path.

use std::collections::HashMap;

pub type Headers = Vec<(String, Vec<u8>)>;

struct Entry {
    partition: i32,
    offset: i64,
    kafka_ms: Option<i64>,
    /// Key and payload are `bytes[start..split]` and `bytes[split..end]`.
    start: usize,
    split: usize,
    end: usize,
    has_key: bool,
}

#[derive(Default)]
pub struct Originals {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Only records that carry headers have an entry here.
    headers: HashMap<usize, Headers>,
}

/// One record as it arrived.
pub struct Original<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: &'a [(String, Vec<u8>)],
}

impl Originals {
    /// Keeps a record; returns its index.
    pub fn push(&mut self, at: (i32, i64, Option<i64>), key: Option<&[u8]>, payload: &[u8], headers: Headers) -> u32 {
        let (partition, offset, kafka_ms) = at;
        let index = self.entries.len() as u32;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key.unwrap_or_default());
        let split = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        if !headers.is_empty() {
            self.headers.insert(self.entries.len(), headers);
        }
        self.entries.push(Entry {
            partition,
            offset,
            kafka_ms,
            start,
            split,
            end: self.bytes.len(),
            has_key: key.is_some(),
        });
        index
    }

    /// Partition, offset and Kafka timestamp of the record at `index`.
    pub fn coordinates(&self, index: usize) -> Option<(i32, i64, Option<i64>)> {
        self.entries.get(index).map(|e| (e.partition, e.offset, e.kafka_ms))
    }

    /// Forgets every record but keeps the memory, so the next batch does not fault in
    /// and zero fresh pages as its arena grows.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.headers.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<Original<'_>> {
        let e = self.entries.get(index)?;
        Some(Original {
            partition: e.partition,
            offset: e.offset,
            key: e.has_key.then(|| &self.bytes[e.start..e.split]),
            payload: &self.bytes[e.split..e.end],
            headers: self.headers.get(&index).map_or(&[], Vec::as_slice),
        })
    }

    pub fn last(&self) -> Option<Original<'_>> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = Original<'_>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_they_went_in() {
        let mut o = Originals::default();
        o.push((0, 10, Some(5)), Some(b"k1"), b"payload-one", Vec::new());
        o.push((3, 11, None), None, b"", vec![("h".into(), b"v".to_vec())]);
        assert_eq!(o.push((1, 12, None), Some(b""), b"p3", Vec::new()), 2);
        assert_eq!(o.coordinates(0), Some((0, 10, Some(5))));
        let all: Vec<_> = o.iter().collect();
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].partition, all[0].offset), (0, 10));
        assert_eq!(all[0].key, Some(&b"k1"[..]));
        assert_eq!(all[0].payload, b"payload-one");
        assert!(all[0].headers.is_empty());
        assert_eq!(all[1].key, None);
        assert_eq!(all[1].payload, b"");
        assert_eq!(all[1].headers, &[("h".to_string(), b"v".to_vec())]);
        assert_eq!(all[2].key, Some(&b""[..]));
        assert_eq!(o.last().map(|l| l.offset), Some(12));
    }
}
