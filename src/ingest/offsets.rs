//! Where each partition a worker owns stands in the lake: the last offset stored in its
//! table's `txn` actions, which decides where reading starts and which records are replays.

use super::FastMap;
use rdkafka::topic_partition_list::Offset;

/// Per topic and partition: the last offset stored in the lake (None: nothing landed yet).
/// A partition is here exactly while it is assigned to this worker.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoredOffsets(FastMap<String, FastMap<i32, Option<i64>>>);

/// What to do with a consumed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Its partition is not (or no longer) ours: a leftover of a revoked assignment.
    NotOurs,
    /// At or before the stored offset: it is in the lake already.
    Replayed,
    Take,
}

impl StoredOffsets {
    pub fn set(&mut self, topic: &str, partition: i32, stored: Option<i64>) {
        match self.0.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, stored);
            }
            None => {
                self.0.entry(topic.to_string()).or_default().insert(partition, stored);
            }
        }
    }

    /// Adds a new assignment's partitions.
    pub fn extend(&mut self, assigned: StoredOffsets) {
        for (topic, partitions) in assigned.0 {
            self.0.entry(topic).or_default().extend(partitions);
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Whether the partition is ours, and what it has stored.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Option<i64>> {
        self.0.get(topic).and_then(|ps| ps.get(&partition)).copied()
    }

    /// The last offset stored for the partition; None when nothing is or it is not ours.
    pub fn last(&self, topic: &str, partition: i32) -> Option<i64> {
        self.get(topic, partition).flatten()
    }

    pub fn admit(&self, topic: &str, partition: i32, offset: i64) -> Admit {
        match self.get(topic, partition) {
            None => Admit::NotOurs,
            Some(Some(stored)) if offset <= stored => Admit::Replayed,
            Some(_) => Admit::Take,
        }
    }

    /// The topic's partitions that are ours.
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        self.0
            .get(topic)
            .map(|ps| ps.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Topics of which this partition is ours.
    pub fn topics_with(&self, partition: i32) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, ps)| ps.contains_key(&partition))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Every partition that is ours: topic, partition and stored offset.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, Option<i64>)> {
        self.0
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(&p, &s)| (t.as_str(), p, s)))
    }
}

/// Where reading a partition starts: right after its stored offset, or at the beginning
/// when nothing is stored, whatever Kafka's committed group offsets say.
pub fn start_after(stored: Option<i64>) -> Offset {
    stored.map_or(Offset::Beginning, |s| Offset::Offset(s + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_starts_right_after_the_stored_offset() {
        assert_eq!(start_after(None), Offset::Beginning);
        assert_eq!(start_after(Some(0)), Offset::Offset(1));
        assert_eq!(start_after(Some(41)), Offset::Offset(42));
    }

    #[test]
    fn only_records_past_the_stored_offset_of_our_partitions_are_taken() {
        let mut stored = StoredOffsets::default();
        stored.set("t", 0, Some(10));
        stored.set("t", 1, None);
        assert_eq!(stored.admit("t", 0, 9), Admit::Replayed);
        assert_eq!(stored.admit("t", 0, 10), Admit::Replayed);
        assert_eq!(stored.admit("t", 0, 11), Admit::Take);
        assert_eq!(stored.admit("t", 1, 0), Admit::Take);
        assert_eq!(stored.admit("t", 2, 0), Admit::NotOurs);
        assert_eq!(stored.admit("u", 0, 50), Admit::NotOurs);
        stored.clear();
        assert_eq!(stored.admit("t", 0, 11), Admit::NotOurs);
    }

    #[test]
    fn an_assignment_adds_partitions_and_a_commit_moves_one() {
        let mut stored = StoredOffsets::default();
        stored.set("t", 0, Some(3));
        let mut assigned = StoredOffsets::default();
        assigned.set("t", 1, Some(7));
        assigned.set("u", 0, None);
        stored.extend(assigned);
        stored.set("t", 0, Some(5));
        let mut all: Vec<_> = stored.iter().map(|(t, p, s)| (t.to_string(), p, s)).collect();
        all.sort();
        assert_eq!(
            all,
            [
                ("t".into(), 0, Some(5)),
                ("t".into(), 1, Some(7)),
                ("u".into(), 0, None)
            ]
        );
        let mut ps = stored.partitions("t");
        ps.sort();
        assert_eq!(ps, [0, 1]);
        let mut with_zero = stored.topics_with(0);
        with_zero.sort();
        assert_eq!(with_zero, ["t", "u"]);
        assert_eq!(stored.last("u", 0), None);
        assert_eq!(stored.get("u", 0), Some(None));
        assert_eq!(stored.get("u", 1), None);
    }
}
