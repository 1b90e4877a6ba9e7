//! Lake commits running in the background. A revoke waits for them before the partitions go
//! to another worker, so the new owner reads offsets no commit of ours will move again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Shared between a worker's flush pipeline, which starts commits, and its rebalance
/// callback, which waits for them.
#[derive(Clone, Default)]
pub struct Running(Arc<AtomicUsize>);

/// One commit running; dropped when it is done, however it ends.
pub struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Running {
    pub fn start(&self) -> RunningGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        RunningGuard(self.0.clone())
    }

    /// Whether any commit is running.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }

    /// Blocks until no commit runs or `limit` passes; false when they are still running.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.0.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_when_every_guard_is_gone() {
        let running = Running::default();
        assert!(running.wait_idle(Duration::ZERO));
        let first = running.start();
        let second = running.clone().start();
        assert!(!running.wait_idle(Duration::from_millis(10)));
        drop(first);
        assert!(!running.wait_idle(Duration::from_millis(10)));
        let waiter = {
            let running = running.clone();
            std::thread::spawn(move || running.wait_idle(Duration::from_secs(10)))
        };
        drop(second);
        assert!(waiter.join().unwrap());
    }
}
