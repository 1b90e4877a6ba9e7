//! Which tests need the real services, and when they may use them.
//!
//! A plain `cargo test` has no Kafka broker and no HDFS. A test that needs them starts with
//! `let _services = common::needs!(Kafka, Hdfs);`, which returns from the test with one
//! line on stderr when an address is not set. `tests/run.sh` sets the addresses and also
//! `HOFFREC_REQUIRE_SERVICES=1`, under which a missing address fails the test instead: in
//! CI a broken setup must not pass as a run of skips.
//!
//! All tests share one process, and `restarts` stops and starts the services under load.
//! It holds them alone (`needs_alone!`) while every other service test holds them shared,
//! so no test sees a restart it did not ask for.

use std::io::Write;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Set by tests/run.sh: a service test without its address fails rather than skips.
const REQUIRE: &str = "HOFFREC_REQUIRE_SERVICES";

static SERVICES: RwLock<()> = RwLock::new(());

#[derive(Clone, Copy, Debug)]
pub enum Service {
    Kafka,
    Hdfs,
}

impl Service {
    fn variable(self) -> &'static str {
        match self {
            Service::Kafka => "KAFKA_BOOTSTRAP",
            Service::Hdfs => "HDFS_URL",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Service::Kafka => "the real Kafka broker",
            Service::Hdfs => "the real HDFS",
        }
    }

    /// The address tests/run.sh exported, if any.
    fn address(self) -> Option<String> {
        std::env::var(self.variable()).ok().filter(|a| !a.is_empty())
    }
}

/// The services, held by a running test until it ends.
pub struct Claim(Guard);

enum Guard {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

/// Claims `needs` for the test on this thread (shared, or `alone` for a test that restarts
/// them), or `None` after saying why on stderr when an address is not set.
///
/// Panics instead of skipping when `HOFFREC_REQUIRE_SERVICES=1`.
pub fn claim(needs: &[Service], alone: bool) -> Option<Claim> {
    let missing: Vec<Service> = needs.iter().copied().filter(|s| s.address().is_none()).collect();
    if !missing.is_empty() {
        // libtest names each test's thread after the test.
        let test = std::thread::current().name().unwrap_or("this test").to_string();
        let what = missing.iter().map(|s| s.what()).collect::<Vec<_>>().join(" and ");
        let set = missing.iter().map(|s| s.variable()).collect::<Vec<_>>().join("/");
        if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
            panic!("{test} needs {what}, but {set} is not set while {REQUIRE}=1 (tests/run.sh sets both)");
        }
        // Not `eprintln!`: libtest swallows what a passing test prints, and a skip should show.
        let _ = writeln!(
            std::io::stderr(),
            "skipping {test}: needs {what}; run tests/run.sh (or set {set})"
        );
        return None;
    }
    Some(Claim(if alone {
        Guard::Alone(SERVICES.write().unwrap_or_else(PoisonError::into_inner))
    } else {
        Guard::Shared(SERVICES.read().unwrap_or_else(PoisonError::into_inner))
    }))
}

/// The address of a service a test has claimed.
pub fn address(service: Service) -> String {
    service.address().unwrap_or_else(|| {
        panic!(
            "{} is not set: a test using {} starts with `common::needs!`",
            service.variable(),
            service.what()
        )
    })
}

/// `let _services = common::needs!(Kafka, Hdfs);` at the top of a test that needs them:
/// holds them until the test ends, or returns from the test when they are not configured.
macro_rules! needs {
    ($($service:ident),+ $(,)?) => {
        match $crate::common::services::claim(&[$($crate::common::services::Service::$service),+], false) {
            Some(claim) => claim,
            None => return,
        }
    };
}

/// `needs!` for a test that stops and starts the services: no other service test runs
/// while it holds them.
macro_rules! needs_alone {
    ($($service:ident),+ $(,)?) => {
        match $crate::common::services::claim(&[$($crate::common::services::Service::$service),+], true) {
            Some(claim) => claim,
            None => return,
        }
    };
}

pub(crate) use {needs, needs_alone};
