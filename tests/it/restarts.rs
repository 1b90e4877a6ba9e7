//! The real services restarting under load: the Kafka broker, then the DataNode, then the
//! NameNode are stopped and started again (by the project's own scripts) while `ingest`,
//! `mart run` and `recommend` run and events keep coming. Afterwards no row is lost or
//! landed twice, and every stage has caught up by itself: nobody restarts a hoffrec process.
//!
//! A binary of its own: cargo runs test binaries one after another, so no other test sees
//! the services go away.

use crate::common;

use crate::common::lab::{Lab, Worker, field, product_view, tail};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use std::process::Command;
use std::time::{Duration, Instant};

const EVENTS: u64 = 24_000;

/// Stops one service with `down.sh --only`, leaves it down a few seconds, then `up.sh`
/// starts it again and waits until Kafka and HDFS both round-trip.
fn restart(service: &str) {
    let dir = common::repo().join("tests/services");
    let state = std::env::var("HOFFREC_SERVICES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/hoffrec/services"));
    assert!(
        state.join(format!("{service}.pid")).exists(),
        "the restart tests need the services started by tests/services/up.sh (no {service}.pid in {})",
        state.display()
    );
    let down = Command::new("bash")
        .arg(dir.join("down.sh"))
        .args(["--only", service])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    std::thread::sleep(Duration::from_secs(5));
    let up = Command::new("bash").arg(dir.join("up.sh")).output().unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
}

/// A producer that waits out a broker restart instead of failing the send.
fn patient_producer(lab: &Lab) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &lab.brokers)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "600000")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Product views `from..to`, spread over 400 customers (`customer` for all, if given).
async fn send(lab: &Lab, producer: &FutureProducer, from: u64, to: u64, customer: Option<u64>) {
    let schemas = lab.schemas();
    let sends: Vec<_> = (from..to)
        .map(|i| {
            let c = customer.unwrap_or(i % 400);
            let bytes = schemas
                .encode("product_view", product_view(&format!("ev-{i:08}"), c, Some(9_900)))
                .unwrap();
            (format!("c{c}"), bytes)
        })
        .collect();
    // The producer waits out a restart (`message.timeout.ms`), so the send does too.
    lab.send_all(producer, &sends).await;
}

fn alive(stages: &mut [(&str, &mut Worker)]) {
    for (name, w) in stages.iter_mut() {
        assert!(w.exited().is_none(), "{name} exited: {}", tail(&w.log));
    }
}

/// Copies the stages' logs out of the lab when the test ends, pass or fail, since the
/// lab's directory goes with it: `$TMPDIR/hoffrec-restarts-logs`.
struct KeepLogs<'a>(&'a Lab);

impl Drop for KeepLogs<'_> {
    fn drop(&mut self) {
        let to = std::env::temp_dir().join("hoffrec-restarts-logs");
        let _ = std::fs::remove_dir_all(&to);
        let _ = std::fs::create_dir_all(&to);
        for entry in std::fs::read_dir(self.0.dir.path()).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
            }
        }
    }
}

fn sql_json(lab: &Lab, env: &[(&str, &str)], query: &str) -> Option<serde_json::Value> {
    let (ok, out, _) = lab.command_with_env(&["sql", "--json", query], env);
    ok.then(|| serde_json::from_str(out.lines().next()?).ok())?
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_datanode_and_namenode_restarts_under_load_lose_and_repeat_nothing() {
    let _services = common::needs_alone!(Kafka, Hdfs);
    let lab = Lab::new(3).await;
    let _keep = KeepLogs(&lab);
    let sql_dir = lab.add_unique_raw_topics().await;
    let sql_env = sql_dir.to_string_lossy().into_owned();
    let env = [
        ("HOFFREC__MART__SQL_DIR", sql_env.as_str()),
        ("HOFFREC__INGEST__MAX_BATCH_ROWS", "2000"),
        ("HOFFREC__MART__DEBOUNCE_MS", "500"),
        ("HOFFREC__RECOMMEND__BATCH_MS", "200"),
    ];
    let group = common::unique("g");
    let mut ingest = lab.ingest(&group, &env);
    let mut marts = lab.hoffrec(&["mart", "run"], &env);
    let mut recommend = lab.hoffrec(&["recommend"], &env);
    let producer = patient_producer(&lab);

    let load = async {
        for chunk in 0..EVENTS / 500 {
            send(&lab, &producer, chunk * 500, (chunk + 1) * 500, None).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let chaos = async {
        for service in ["kafka", "datanode", "namenode"] {
            tokio::time::sleep(Duration::from_secs(4)).await;
            tokio::task::block_in_place(|| restart(service));
        }
    };
    tokio::join!(load, chaos);

    // Every row exactly once.
    let deadline = Instant::now() + Duration::from_secs(300);
    let counts = loop {
        let counts = lab.lake_counts().await;
        if counts.is_some_and(|(rows, _)| rows >= EVENTS) || Instant::now() > deadline {
            break counts;
        }
        alive(&mut [("ingest", &mut ingest)]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        counts,
        Some((EVENTS, EVENTS)),
        "rows, distinct ids; ingest: {}",
        tail(&ingest.log)
    );
    let dead: i64 = lab.end_offsets(&lab.dlq, 3).iter().sum();
    assert_eq!(dead, 0, "nothing dead-lettered: an outage is not the records' fault");

    // The marts fold every row (each view counts once in customer_product), and a customer
    // seen only after the restarts gets a list: the stages caught up by themselves.
    send(&lab, &producer, EVENTS, EVENTS + 1, Some(999)).await;
    let views = "SELECT CAST(sum(views) AS BIGINT) AS views FROM mart.customer_product";
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let row = sql_json(&lab, &env, views);
        if row.as_ref().is_some_and(|r| r["views"] == EVENTS + 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "marts hold {row:?} views; mart log: {}",
            tail(&marts.log)
        );
        alive(&mut [("ingest", &mut ingest), ("mart run", &mut marts)]);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let recs = lab.topic_of(hoffrec::catalog::Role::Recommendations);
    let schemas = lab.schemas();
    let deadline = Instant::now() + Duration::from_secs(180);
    let last = apache_avro::types::Value::String("c999".into());
    loop {
        let listed = lab.read_topic(&recs).iter().any(|(v, _)| {
            schemas
                .decode(v, "recommendation")
                .is_ok_and(|r| *field(&r, "customer_id") == last)
        });
        if listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no list for c999; recommend log: {}",
            tail(&recommend.log)
        );
        alive(&mut [("recommend", &mut recommend)]);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (name, w) in [
        ("ingest", &mut ingest),
        ("mart run", &mut marts),
        ("recommend", &mut recommend),
    ] {
        assert!(w.stop(), "{name} stops cleanly: {}", tail(&w.log));
    }
    assert_eq!(lab.lake_counts().await, Some((EVENTS + 1, EVENTS + 1)));
}
