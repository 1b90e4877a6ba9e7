//! Helpers shared by the integration tests: whether and where the real services are,
//! unique names, and polling with deadlines instead of sleeping.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) use services::{needs, needs_alone};

/// The real Kafka broker started by tests/services/up.sh (the test holds `needs!(Kafka)`).
pub fn kafka_bootstrap() -> String {
    services::address(services::Service::Kafka)
}

/// The real HDFS NameNode started by tests/services/up.sh (the test holds `needs!(Hdfs)`).
pub fn hdfs_url() -> String {
    services::address(services::Service::Hdfs)
}

/// Fails with a useful message when a service is not listening, instead of a timeout later.
pub fn require_service(what: &str, host_port: &str) {
    let addr = host_port
        .trim_start_matches("hdfs://")
        .split(',')
        .next()
        .unwrap_or_default();
    if std::net::TcpStream::connect_timeout(&addr.parse().expect("host:port"), Duration::from_secs(3)).is_err() {
        panic!("{what} is not reachable at {host_port}: start it with tests/services/up.sh");
    }
}

/// A name no other test or earlier run has used.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A 127.0.0.1 address with a port nobody listens on right now, for a child to bind.
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("127.0.0.1:{port}")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `f` until it returns Some or the deadline passes.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copies a directory (one level plus subdirectories) for tests that break a catalog.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A deterministic, fully populated value for any schema (unions take their last,
/// non-null branch), so round trips exercise every field.
pub fn sample_value(schema: &apache_avro::Schema, seed: i64) -> apache_avro::types::Value {
    use apache_avro::Schema as S;
    use apache_avro::types::Value as V;
    match schema {
        S::Null => V::Null,
        S::Boolean => V::Boolean(seed % 2 == 0),
        S::Int => V::Int(seed as i32 + 7),
        S::Long => V::Long(seed * 1_000 + 3),
        S::Float => V::Float(seed as f32 + 0.5),
        S::Double => V::Double(seed as f64 * 1.25 + 0.5),
        S::Bytes => V::Bytes(vec![1, 2, seed as u8]),
        S::String => V::String(format!("текст-{seed}")),
        S::Date => V::Date(20_000 + seed as i32),
        S::TimestampMillis => V::TimestampMillis(1_790_000_000_000 + seed),
        S::Array(a) => V::Array(vec![sample_value(&a.items, seed), sample_value(&a.items, seed + 1)]),
        S::Map(m) => V::Map([("k".to_string(), sample_value(&m.types, seed))].into_iter().collect()),
        S::Union(u) => {
            let idx = u.variants().len() - 1;
            V::Union(idx as u32, Box::new(sample_value(&u.variants()[idx], seed)))
        }
        S::Record(r) => V::Record(
            r.fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.clone(), sample_value(&f.schema, seed + i as i64)))
                .collect(),
        ),
        S::Enum(e) => {
            let idx = (seed as usize) % e.symbols.len();
            V::Enum(idx as u32, e.symbols[idx].clone())
        }
        other => panic!("sample_value: add a case for {other:?}"),
    }
}

pub mod browser;
pub mod history;
pub mod lab;
pub mod services;
