//! One retry policy for ingest's lake and Kafka steps: waits double from a first wait up to
//! 30 s, and the retries end either when the next wait would end past a window counted from
//! the first attempt (lake writes, sends: two minutes) or after a number of retries
//! (stored offsets read in the rebalance callback, which holds up the whole group).
//!
//! The revoke callback waits 150 s for running commits on the strength of the two-minute
//! window; a worker that gives up stops, and a restarted one resumes from the lake.

use super::IngestError;
use super::table::TableError;
use backon::{BackoffBuilder, BlockingRetryable, ExponentialBackoff, ExponentialBuilder, RetryableWithContext};
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tracing::warn;

/// The longest single wait.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How long lake writes and Kafka sends are retried, from the first attempt.
const WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    first: Duration,
    limit: Limit,
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    /// No retry whose wait would end this long after the first attempt.
    Window(Duration),
    Retries(usize),
}

impl Policy {
    /// Lake writes and Kafka sends: from `retry_backoff_ms`, for two minutes.
    pub fn lake(retry_backoff_ms: u64) -> Self {
        Self {
            first: Duration::from_millis(retry_backoff_ms),
            limit: Limit::Window(WINDOW),
        }
    }

    /// Reading stored offsets while the group waits for this worker's assignment: five
    /// retries from half a second (15.5 s of waiting at most).
    pub fn assignment() -> Self {
        Self {
            first: Duration::from_millis(500),
            limit: Limit::Retries(5),
        }
    }

    /// The waits between attempts, with the window starting now.
    pub fn delays(&self) -> Delays {
        let doubling = ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(MAX_WAIT)
            .with_factor(2.0);
        let (doubling, window) = match self.limit {
            Limit::Window(window) => (doubling.without_max_times(), Some(window)),
            Limit::Retries(n) => (doubling.with_max_times(n), None),
        };
        Delays {
            waits: doubling.build(),
            started: Instant::now(),
            waited: Duration::ZERO,
            window,
        }
    }
}

/// A policy's waits, as backon iterates them.
pub struct Delays {
    waits: ExponentialBackoff,
    started: Instant,
    /// The waits handed out so far: time spent at least, whoever does the sleeping.
    waited: Duration,
    window: Option<Duration>,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.waits.next()?;
        if let Some(window) = self.window {
            // Attempts take time too: the window is wall-clock time.
            let spent = self.started.elapsed().max(self.waited);
            if spent + wait >= window {
                return None;
            }
        }
        self.waited += wait;
        Some(wait)
    }
}

/// Runs a Kafka or lake step from the consumer thread, retrying any error; when the policy
/// gives up, the error names the step.
pub fn blocking<T, E, F, Fut>(handle: &Handle, policy: &Policy, what: &str, mut step: F) -> Result<T, IngestError>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    (|| handle.block_on(step()))
        .retry(policy.delays())
        .notify(|e, wait| warn!(step = what, error = %e, retry_in_ms = wait.as_millis() as u64, "retrying"))
        .call()
        .map_err(|e| IngestError::Step(format!("{what}: {e}")))
}

/// Runs a lake write, retrying only transient errors; `failed` says what failed in the
/// warning. The write gets `context` (the table, say) and hands it back for the next attempt.
pub async fn transient<C, T, F, Fut>(policy: &Policy, failed: &str, context: C, write: F) -> (C, Result<T, TableError>)
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = (C, Result<T, TableError>)>,
{
    write
        .retry(policy.delays())
        .context(context)
        .when(|e| matches!(e, TableError::Transient { .. }))
        .notify(|e, wait| warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{failed}; retrying"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn millis(d: Delays) -> Vec<u128> {
        d.map(|w| w.as_millis()).collect()
    }

    #[test]
    fn lake_waits_double_up_to_thirty_seconds_within_two_minutes() {
        // With attempts that fail at once: 61.5 s of waits up to the first 30 s one, then
        // one more; another 30 s would end at 121.5 s.
        assert_eq!(
            millis(Policy::lake(500).delays()),
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(millis(Policy::lake(20_000).delays()), [20000, 30000, 30000, 30000]);
    }

    #[test]
    fn time_spent_in_attempts_counts_against_the_window() {
        let mut delays = Policy::lake(500).delays();
        delays.window = Some(Duration::from_millis(1600));
        assert_eq!(delays.next(), Some(Duration::from_millis(500)));
        // 0.5 s waited but 0.7 s gone: the next 1 s wait would end at 1.7 s.
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(delays.next(), None);
    }

    #[test]
    fn assignment_retries_five_times_from_half_a_second() {
        assert_eq!(millis(Policy::assignment().delays()), [500, 1000, 2000, 4000, 8000]);
    }

    #[test]
    fn blocking_retries_any_error_and_names_the_step() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let calls = Cell::new(0);
        let ok = blocking(runtime.handle(), &Policy::lake(1), "step", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 3 { Err("not yet") } else { Ok(n) } }
        });
        assert_eq!(ok.unwrap(), 3);
        let quick = Policy {
            first: Duration::from_millis(1),
            limit: Limit::Retries(2),
        };
        calls.set(0);
        let err = blocking(runtime.handle(), &quick, "announce", || {
            calls.set(calls.get() + 1);
            async { Err::<(), _>("broker down") }
        });
        assert_eq!(calls.get(), 3);
        assert!(matches!(err, Err(IngestError::Step(m)) if m == "announce: broker down"));
    }

    #[test]
    fn transient_retries_only_transient_errors() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let error = |transient: bool| {
            let source = deltalake::errors::DeltaTableError::Generic("x".into());
            let table = "t".to_string();
            if transient {
                TableError::Transient { table, source }
            } else {
                TableError::Rejected { table, source }
            }
        };
        let (calls, landed) = runtime.block_on(transient(&Policy::lake(1), "write", 0, |calls| async move {
            let result = if calls < 2 { Err(error(true)) } else { Ok(()) };
            (calls + 1, result)
        }));
        assert!(landed.is_ok());
        assert_eq!(calls, 3);
        let (calls, refused) = runtime.block_on(transient(&Policy::lake(1), "write", 0, |calls| async move {
            (calls + 1, Err::<(), _>(error(false)))
        }));
        assert!(matches!(refused, Err(TableError::Rejected { .. })));
        assert_eq!(calls, 1);
    }
}
