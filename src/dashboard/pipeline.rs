//! Pipeline health for the dashboard: per-stage totals and rates, consumer lag and dead
//! letters from the stages' metrics; the last commit of every raw table and mart from the
//! lake's Delta logs.

use crate::telemetry::Sample;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A stage's throughput counter: (stage, what is counted, metric, only samples with this
/// label value).
type StageCounter = (
    &'static str,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

const STAGES: [StageCounter; 5] = [
    (
        "connect",
        "records from source APIs",
        "hoffrec_connect_records_total",
        None,
    ),
    (
        "collect",
        "site events accepted",
        "hoffrec_collector_events_total",
        Some(("outcome", "accepted")),
    ),
    ("ingest", "records landed", "hoffrec_ingest_records_landed_total", None),
    (
        "mart",
        "portraits changed",
        "hoffrec_mart_changed_customers_total",
        None,
    ),
    ("recommend", "lists published", "hoffrec_recommend_lists_total", None),
];

/// Rates are taken over at most this window of samples.
const RATE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct StageHealth {
    pub stage: &'static str,
    pub counts: &'static str,
    pub total: f64,
    /// None until two samples at least a second apart exist.
    pub per_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetters {
    pub stage: &'static str,
    /// The raw topic (ingest) or source (connect).
    pub origin: String,
    pub class: String,
    pub count: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableCommit {
    pub table: String,
    pub version: Option<u64>,
    pub last_commit_ms: Option<i64>,
    /// Marts only: raw commits not folded in yet.
    pub lag_commits: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    pub generated_at_ms: i64,
    pub stages: Vec<StageHealth>,
    /// Records not landed yet, per raw topic.
    pub consumer_lag: BTreeMap<String, f64>,
    pub dead_letters: Vec<DeadLetters>,
    pub tables: Vec<TableCommit>,
    /// Metrics endpoints that did not answer.
    pub unreachable: Vec<String>,
}

/// Stage totals over time, so each request can report a rate.
#[derive(Default)]
pub struct Rates {
    history: VecDeque<(Instant, Vec<f64>)>,
}

impl Rates {
    /// Records `totals` (one per stage) and returns the rate of each since the oldest
    /// sample in the window.
    pub fn observe(&mut self, now: Instant, totals: &[f64]) -> Vec<Option<f64>> {
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.history.pop_front();
        }
        let rates = match self.history.front() {
            Some((t, old)) if now.duration_since(*t) >= Duration::from_secs(1) => {
                let secs = now.duration_since(*t).as_secs_f64();
                totals
                    .iter()
                    .zip(old)
                    // A restarted stage resets its counters; count from zero then.
                    .map(|(new, old)| Some(if new >= old { (new - old) / secs } else { new / secs }))
                    .collect()
            }
            _ => vec![None; totals.len()],
        };
        self.history.push_back((now, totals.to_vec()));
        rates
    }
}

/// The metric side of the health view.
pub fn from_metrics(samples: &[Sample], rates: &mut Rates, now: Instant) -> Health {
    let totals: Vec<f64> = STAGES
        .iter()
        .map(|(_, _, metric, only)| {
            samples
                .iter()
                .filter(|s| s.name == *metric)
                .filter(|s| only.is_none_or(|(k, v)| s.label(k) == Some(v)))
                .map(|s| s.value)
                .sum()
        })
        .collect();
    let per_second = rates.observe(now, &totals);
    let stages = STAGES
        .iter()
        .zip(totals.iter().zip(per_second))
        .map(|((stage, counts, _, _), (total, per_second))| StageHealth {
            stage,
            counts,
            total: *total,
            per_second,
        })
        .collect();
    let mut consumer_lag = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "hoffrec_ingest_consumer_lag") {
        *consumer_lag
            .entry(s.label("topic").unwrap_or("?").to_string())
            .or_insert(0.0) += s.value;
    }
    let mut dead: BTreeMap<(&'static str, String, String), f64> = BTreeMap::new();
    for (stage, metric, origin) in [
        ("ingest", "hoffrec_ingest_dead_letters_total", "topic"),
        ("connect", "hoffrec_connect_dead_letters_total", "source"),
    ] {
        for s in samples.iter().filter(|s| s.name == metric && s.value > 0.0) {
            let key = (
                stage,
                s.label(origin).unwrap_or("?").to_string(),
                s.label("class").unwrap_or("?").to_string(),
            );
            *dead.entry(key).or_insert(0.0) += s.value;
        }
    }
    Health {
        generated_at_ms: chrono::Utc::now().timestamp_millis(),
        stages,
        consumer_lag,
        dead_letters: dead
            .into_iter()
            .map(|((stage, origin, class), count)| DeadLetters {
                stage,
                origin,
                class,
                count,
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_oldest_sample_in_the_window() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(r.observe(t0, &[10.0]), vec![None]);
        assert_eq!(r.observe(t0 + Duration::from_millis(500), &[20.0]), vec![None]);
        assert_eq!(r.observe(t0 + Duration::from_secs(2), &[30.0]), vec![Some(10.0)]);
        // A restarted stage counts from zero.
        assert_eq!(r.observe(t0 + Duration::from_secs(4), &[8.0]), vec![Some(2.0)]);
        // Samples older than the window are dropped.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(r.observe(later, &[108.0]), vec![None]);
    }

    #[test]
    fn health_sums_stages_lag_and_dead_letters_by_class() {
        let text = "hoffrec_ingest_records_landed_total{topic=\"raw.a\"} 5\n\
                    hoffrec_ingest_records_landed_total{topic=\"raw.b\"} 7\n\
                    hoffrec_collector_events_total{event=\"page_view\",outcome=\"accepted\"} 4\n\
                    hoffrec_collector_events_total{event=\"page_view\",outcome=\"invalid\"} 9\n\
                    hoffrec_ingest_consumer_lag{topic=\"raw.a\",partition=\"0\"} 3\n\
                    hoffrec_ingest_consumer_lag{topic=\"raw.a\",partition=\"1\"} 2\n\
                    hoffrec_ingest_dead_letters_total{topic=\"raw.a\",class=\"decode\"} 1\n\
                    hoffrec_ingest_dead_letters_total{topic=\"raw.a\",class=\"checks\"} 0\n";
        let h = from_metrics(&crate::telemetry::samples(text), &mut Rates::default(), Instant::now());
        let total = |stage: &str| h.stages.iter().find(|s| s.stage == stage).map(|s| s.total);
        assert_eq!(total("ingest"), Some(12.0));
        assert_eq!(total("collect"), Some(4.0));
        assert_eq!(h.consumer_lag.get("raw.a"), Some(&5.0));
        assert_eq!(h.dead_letters.len(), 1);
        assert_eq!(
            (h.dead_letters[0].class.as_str(), h.dead_letters[0].count),
            ("decode", 1.0)
        );
    }
}
