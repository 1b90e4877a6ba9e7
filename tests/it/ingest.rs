//! `hoffrec ingest` on the real broker and the real HDFS: exactly once through kill -9 and
//! rebalances, dead letters with their classes, age-based flushes, schema evolution,
//! table maintenance and the metrics endpoint.

use crate::common;

use crate::common::lab::{Lab, product_view, tail};
use crate::common::poll_until;
use apache_avro::types::Value;
use hoffrec::codec::{SchemaSet, encode_with};
use hoffrec::kafka::headers;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// Deterministic-enough randomness without another dependency.
fn random_ms(lo: u64, hi: u64) -> u64 {
    lo + (uuid::Uuid::new_v4().as_u128() % u128::from(hi - lo)) as u64
}

fn events(schemas: &SchemaSet, from: u64, to: u64) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .map(|i| {
            let id = format!("ev-{i:08}");
            let bytes = schemas
                .encode("product_view", product_view(&id, i % 500, Some(9_900)))
                .unwrap();
            (format!("c{}", i % 500), bytes)
        })
        .collect()
}

async fn wait_for_rows(lab: &Lab, n: u64, logs: &[&std::path::Path], timeout_s: u64) -> (u64, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_s);
    loop {
        let counts = lab.lake_counts().await;
        if counts.is_some_and(|(rows, _)| rows >= n) {
            return counts.unwrap_or_default();
        }
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|l| tail(l)).collect();
            panic!(
                "lake has {counts:?} rows, expected {n}; ingest logs:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_loses_and_repeats_nothing() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(3).await;
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    let all = events(&schemas, 0, 30_000);
    let env = [("HOFFREC__INGEST__MAX_BATCH_ROWS", "2000")];
    let mut worker = lab.ingest(&group, &env);
    let mut logs = vec![worker.log.clone()];
    let send = async {
        for chunk in all.chunks(500) {
            lab.send_all(&producer, chunk).await;
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    };
    let chaos = async {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(random_ms(800, 3_000))).await;
            worker.kill9();
            worker = lab.ingest(&group, &env);
            logs.push(worker.log.clone());
        }
    };
    tokio::join!(send, chaos);
    let log_refs: Vec<&std::path::Path> = logs.iter().map(|p| p.as_path()).collect();
    let (rows, distinct) = wait_for_rows(&lab, 30_000, &log_refs, 180).await;
    assert_eq!((rows, distinct), (30_000, 30_000), "exactly N rows, no id twice");
    // Nothing more arrives later either: every partition's stored offset is at its end.
    let ends = lab.end_offsets(&lab.raw, 3);
    let stored = poll_until("stored offsets to reach the end", Duration::from_secs(60), || async {
        let stored = lab.stored_offsets(&group, 3).await;
        (stored.iter().zip(&ends).all(|(s, e)| s.map(|s| s + 1) == Some(*e))).then_some(stored)
    })
    .await;
    assert_eq!(stored.len(), 3);
    assert!(worker.stop(), "clean stop; log: {}", tail(&worker.log));
    assert_eq!(lab.lake_counts().await, Some((30_000, 30_000)));
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_joining_and_leaving_keep_exactly_once() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(6).await;
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    let all = events(&schemas, 0, 24_000);
    let env = [("HOFFREC__INGEST__MAX_BATCH_ROWS", "1500")];
    let mut first = lab.ingest(&group, &env);
    let mut logs = vec![first.log.clone()];
    let send = async {
        for chunk in all.chunks(400) {
            lab.send_all(&producer, chunk).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let scale = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut second = lab.ingest(&group, &env);
        let mut third = lab.ingest(&group, &env);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(second.stop(), "second stops cleanly: {}", tail(&second.log));
        assert!(third.stop(), "third stops cleanly: {}", tail(&third.log));
        [second.log.clone(), third.log.clone()]
    };
    let ((), more) = tokio::join!(send, scale);
    logs.extend(more);
    let log_refs: Vec<&std::path::Path> = logs.iter().map(|p| p.as_path()).collect();
    let (rows, distinct) = wait_for_rows(&lab, 24_000, &log_refs, 180).await;
    assert_eq!((rows, distinct), (24_000, 24_000));
    let ends = lab.end_offsets(&lab.raw, 6);
    let stored = lab.stored_offsets(&group, 6).await;
    let stored_next: Vec<Option<i64>> = stored.iter().map(|s| s.map(|s| s + 1)).collect();
    assert_eq!(
        stored_next,
        ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(),
        "stored offset = end offset"
    );
    assert!(first.stop(), "{}", tail(&first.log));
}

/// The lake failing after a commit landed (its checkpoint write, say) is told apart from
/// a refused batch by the log itself: every row is committed once, none is dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_after_the_commit_landed_dead_letters_nothing() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    lab.send_all(&producer, &events(&schemas, 0, 2_000)).await;
    let mut worker = lab.ingest(&group, &[("HOFFREC_TEST_REJECT_AFTER_COMMIT", "1")]);
    let (rows, distinct) = wait_for_rows(&lab, 2_000, &[worker.log.as_path()], 120).await;
    assert_eq!((rows, distinct), (2_000, 2_000));
    assert!(worker.stop(), "{}", tail(&worker.log));
    let log = tail(&worker.log);
    assert!(log.contains("failed after the commit landed"), "{log}");
    let dead = lab.read_topic(&lab.dlq);
    assert!(
        dead.is_empty(),
        "{} dead letters, first: {:?}",
        dead.len(),
        dead.first().map(|d| &d.1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_reach_the_dead_letter_topic_with_their_class() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    let good = |i: u64| {
        schemas
            .encode("product_view", product_view(&format!("good-{i}"), i, Some(100)))
            .unwrap()
    };
    let mut unknown_fp = vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8];
    unknown_fp.extend_from_slice(&good(99)[10..]);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("wrong_magic", b"this is not avro at all".to_vec()),
        ("unknown_fingerprint", unknown_fp),
        (
            "missing_required_field",
            schemas
                .encode("product_view", {
                    let Value::Record(mut f) = product_view("bad-missing", 1, None) else {
                        unreachable!()
                    };
                    f[2].1 = Value::String("   ".into());
                    Value::Record(f)
                })
                .unwrap(),
        ),
        (
            "negative_value",
            schemas
                .encode("product_view", product_view("bad-price", 2, Some(-500)))
                .unwrap(),
        ),
        ("duplicate_event", good(0)),
        (
            "wrong_event_type",
            schemas
                .encode(
                    "page_view",
                    common::sample_value(&schemas.current("page_view").unwrap().schema, 3),
                )
                .unwrap(),
        ),
    ];
    let mut records = Vec::new();
    for (i, (class, bytes)) in bad.iter().enumerate() {
        records.push((format!("k{i}"), good(i as u64)));
        records.push((format!("bad-{class}"), bytes.clone()));
    }
    // The duplicate repeats good-0 after it; everything else around it is good.
    for (key, bytes) in &records {
        lab.send(&producer, key, bytes).await;
    }
    let mut worker = lab.ingest(&group, &[]);
    let good_count = bad.len() as u64;
    let (rows, distinct) = wait_for_rows(&lab, good_count, &[worker.log.as_path()], 120).await;
    assert_eq!((rows, distinct), (good_count, good_count));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &lab.brokers)
        .set("group.id", common::unique("dlq-reader"))
        .create()
        .unwrap();
    let meta = consumer
        .fetch_metadata(Some(&lab.dlq), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in meta.topics()[0].partitions() {
        tpl.add_partition_offset(&lab.dlq, p.id(), Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen: HashMap<String, (Vec<u8>, String, String)> = HashMap::new();
    while seen.len() < bad.len() {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("dead letters so far: {:?}; log: {}", seen.keys(), tail(&worker.log)))
            .unwrap();
        let h = hoffrec::kafka::header_texts(&m);
        let class = h[headers::ERROR_CLASS].clone();
        assert_eq!(h[headers::SOURCE_TOPIC], lab.raw);
        // Its own key says where it was, so erasure can tombstone this one letter.
        let own = format!(
            "{}/{}/{}",
            lab.raw,
            h[headers::SOURCE_PARTITION],
            h[headers::SOURCE_OFFSET]
        );
        assert_eq!(m.key(), Some(own.as_bytes()));
        assert!(!h[headers::ERROR_MESSAGE].is_empty());
        seen.insert(
            class,
            (
                m.payload().unwrap_or_default().to_vec(),
                h[headers::SOURCE_KEY].clone(),
                h[headers::SOURCE_OFFSET].clone(),
            ),
        );
    }
    for (i, (class, bytes)) in bad.iter().enumerate() {
        let (payload, key, offset) = seen
            .get(*class)
            .unwrap_or_else(|| panic!("no dead letter of class {class}"));
        assert_eq!(payload, bytes, "{class}: original bytes kept");
        assert_eq!(key, &format!("bad-{class}"), "{class}: original key kept");
        assert_eq!(offset, &(2 * i + 1).to_string(), "{class}: source offset");
    }
    assert!(worker.stop());

    // `hoffrec tail` shows the same letters to scripts: bytes, class, where from.
    let (ok, out, err) = lab.command_with_env(&["tail", &lab.dlq, "--from-beginning", "--exit-at-end", "--json"], &[]);
    assert!(ok, "{err}");
    let letters: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (class, bytes) in &bad {
        let letter = letters
            .iter()
            .find(|l| l["headers"][headers::ERROR_CLASS] == *class)
            .unwrap_or_else(|| panic!("tail shows no {class} letter: {out}"));
        let shown = match (&letter["value"], &letter["value_base64"]) {
            (serde_json::Value::String(text), serde_json::Value::Null) => text.as_bytes().to_vec(),
            (_, serde_json::Value::String(b64)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(&shown, bytes, "{class}");
        assert_eq!(letter["headers"][headers::SOURCE_KEY], format!("bad-{class}"));
    }
    // And the raw topic decoded, one key.
    let (ok, out, err) = lab.command_with_env(
        &[
            "tail",
            &lab.raw,
            "--from-beginning",
            "--exit-at-end",
            "--json",
            "--key",
            "k1",
        ],
        &[],
    );
    assert!(ok, "{err}");
    let views: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(views.len(), 1, "{out}");
    assert_eq!(views[0]["key"], "k1");
    assert!(views[0]["value"]["event_id"].is_string(), "decoded: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_batch_lands_within_the_max_age_then_tables_are_maintained() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(2).await;
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    let mut worker = lab.ingest(
        &group,
        &[
            ("HOFFREC__INGEST__FLUSH_INTERVAL_MS", "700"),
            ("HOFFREC__INGEST__MAX_BATCH_ROWS", "1000000"),
        ],
    );
    // Several trickles, each a partial batch flushed by age alone: many small files.
    for round in 0..4u64 {
        lab.send_all(&producer, &events(&schemas, round * 5, round * 5 + 5))
            .await;
        let (rows, _) = wait_for_rows(&lab, round * 5 + 5, &[worker.log.as_path()], 60).await;
        assert_eq!(rows, round * 5 + 5);
    }
    assert!(worker.stop());
    // Every commit was announced on lake.commits with its rows and offsets.
    let announced = lake_commits(&lab, 20).await;
    assert_eq!(announced.iter().map(|(rows, _)| rows).sum::<i64>(), 20);
    let last_offsets: i64 = announced.iter().map(|(_, o)| o).sum();
    assert!(last_offsets > 0);
    let table = lab.open_table().await.unwrap();
    let files_before = table.snapshot().unwrap().log_data().num_files();
    assert!(files_before >= 4, "trickles made {files_before} files");
    let config = hoffrec::config::MaintenanceConfig {
        interval_ms: 1,
        min_commits: 0,
        vacuum_retention_hours: 0,
        compact_every_commits: 0,
    };
    let report = hoffrec::lake::maintenance::run(
        &lab.lake_url(),
        &hoffrec::lake::raw::path(&lab.raw),
        &config,
        64 << 20,
        None,
    )
    .await
    .unwrap();
    assert!(report.compacted && report.files_removed >= 4, "{report:?}");
    let table = lab.open_table().await.unwrap();
    let files_after = table.snapshot().unwrap().log_data().num_files();
    assert!(
        files_after < files_before,
        "{files_after} files after compaction, {files_before} before"
    );
    assert_eq!(lab.lake_counts().await, Some((20, 20)), "compaction keeps every row");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producer_moving_to_a_new_schema_version_keeps_landing() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    // Start where the producer is: product_view v1 is the current contract.
    let v1 = lab.schemas_dir.join("history/product_view.v1.avsc");
    let v2 = lab.schemas_dir.join("product_view.avsc");
    let v2_text = std::fs::read_to_string(&v2).unwrap();
    std::fs::rename(&v1, &v2).unwrap();
    let old = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    let group = common::unique("g");
    let producer = lab.producer();
    let mut worker = lab.ingest(&group, &[]);
    let v1_version = old.current("product_view").unwrap();
    for i in 0..10u64 {
        let Value::Record(mut f) = product_view(&format!("v1-{i}"), i, Some(1)) else {
            unreachable!()
        };
        f.truncate(7);
        lab.send(&producer, "c", &encode_with(v1_version, Value::Record(f)).unwrap())
            .await;
    }
    wait_for_rows(&lab, 10, &[worker.log.as_path()], 60).await;
    let table = lab.open_table().await.unwrap();
    let schema = table.snapshot().unwrap().snapshot().arrow_schema();
    assert!(
        schema.field_with_name("list_id").is_err(),
        "v1 table has no list_id yet"
    );

    // The new version is published: v1 moves to history, v2 becomes current.
    std::fs::create_dir_all(lab.schemas_dir.join("history")).unwrap();
    std::fs::copy(&v2, &v1).unwrap();
    std::fs::write(&v2, v2_text).unwrap();
    let new = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    for i in 0..10u64 {
        let Value::Record(mut f) = product_view(&format!("v2-{i}"), i, Some(1)) else {
            unreachable!()
        };
        f[7].1 = Value::Union(1, Box::new(Value::String(format!("list-{i}"))));
        f[8].1 = Value::Union(1, Box::new(Value::Int(i as i32)));
        lab.send(&producer, "c", &new.encode("product_view", Value::Record(f)).unwrap())
            .await;
    }
    wait_for_rows(&lab, 20, &[worker.log.as_path()], 60).await;
    let rows = lab
        .query("SELECT count(list_id) AS with_list, count(*) AS n, count(DISTINCT _writer_schema) AS w FROM t")
        .await
        .unwrap();
    let col = |i: usize| {
        rows[0]
            .column(i)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!(
        (col(0), col(1), col(2)),
        (10, 20, 2),
        "v2 rows carry list_id; both versions landed"
    );
    assert!(worker.stop());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_reports_the_ingest_metrics() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let addr = common::free_addr();
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    let mut worker = lab.ingest(&group, &[("HOFFREC__HTTP__LISTEN", addr.as_str())]);
    lab.send_all(&producer, &events(&schemas, 0, 50)).await;
    lab.send(&producer, "x", b"garbage").await;
    wait_for_rows(&lab, 50, &[worker.log.as_path()], 60).await;
    let text = poll_until("metrics with landed records", Duration::from_secs(30), || async {
        let text = http_get(&addr, "/metrics").ok()?;
        // Lag comes from librdkafka's statistics, every 5 s.
        (text.contains("hoffrec_ingest_records_landed_total") && text.contains("hoffrec_ingest_consumer_lag{"))
            .then_some(text)
    })
    .await;
    for name in [
        "hoffrec_ingest_records_in_total",
        "hoffrec_ingest_records_landed_total",
        "hoffrec_ingest_dead_letters_total",
        "hoffrec_ingest_batch_rows",
        "hoffrec_ingest_batch_bytes",
        "hoffrec_ingest_flush_seconds",
        "hoffrec_ingest_commit_seconds",
        "hoffrec_ingest_consumer_lag",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(text.contains("class=\"truncated_header\""), "{text}");
    assert!(http_get(&addr, "/healthz").unwrap().contains("ok"));
    assert!(http_get(&addr, "/readyz").unwrap().contains("ready"));
    assert!(worker.stop());
}

/// Reads `lake.commits` until `rows` rows are announced: (rows, sum of last offsets) per record.
async fn lake_commits(lab: &Lab, rows: i64) -> Vec<(i64, i64)> {
    let schemas = lab.schemas();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &lab.brokers)
        .set("group.id", common::unique("commits-reader"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&lab.commits, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while out.iter().map(|(r, _)| r).sum::<i64>() < rows {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("lake.commits records")
            .unwrap();
        assert_eq!(m.key(), Some(format!("raw/{}", lab.raw).as_bytes()), "keyed by table");
        let Value::Record(f) = schemas.decode(m.payload().unwrap(), "lake_commit").unwrap() else {
            panic!("not a record")
        };
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        let Value::Long(n) = get("rows") else { panic!("rows") };
        let Value::Array(offsets) = get("offsets") else {
            panic!("offsets")
        };
        let sum = offsets
            .iter()
            .map(|o| match o {
                Value::Record(f) => match &f[2].1 {
                    Value::Long(v) => *v,
                    _ => 0,
                },
                _ => 0,
            })
            .sum();
        out.push((n, sum));
    }
    out
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_reads_the_raw_table_from_hdfs() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(2).await;
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    let mut worker = lab.ingest(&group, &[]);
    lab.send_all(&producer, &events(&schemas, 0, 1_000)).await;
    wait_for_rows(&lab, 1_000, &[worker.log.as_path()], 60).await;
    assert!(worker.stop());
    let url = lab.lake_url().table_url(&hoffrec::lake::raw::path(&lab.raw)).unwrap();
    let out = std::process::Command::new("python3")
        .arg(common::repo().join("tests/spark/read_delta.py"))
        .arg(url.as_str())
        .output()
        .expect("python3 runs (tests/setup.sh installs pyspark and delta-spark)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spark failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line from spark");
    let seen: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(seen["rows"], 1_000);
    assert_eq!(seen["distinct_event_ids"], 1_000);
    let columns: Vec<&str> = seen["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for c in ["event_id", "customer_id", "event_date", "_kafka_offset"] {
        assert!(columns.contains(&c), "{c} missing from {columns:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn analysts_query_the_landed_tables_with_hoffrec_sql() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(2).await;
    let group = common::unique("g");
    let schemas = lab.schemas();
    let producer = lab.producer();
    let mut worker = lab.ingest(&group, &[]);
    lab.send_all(&producer, &events(&schemas, 0, 40)).await;
    wait_for_rows(&lab, 40, &[worker.log.as_path()], 60).await;
    assert!(worker.stop());
    let table = format!("raw.{}", hoffrec::mart::session::sql_name(&lab.raw));
    let query = format!(
        "SELECT count(*) AS n, count(DISTINCT customer_id) AS customers, sum(price_kopecks) AS kopecks FROM {table}"
    );
    let (ok, stdout, stderr) = lab.run(&["sql", "--json", &query]);
    assert!(ok, "{stderr}");
    let row: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default()).unwrap();
    assert_eq!(row["n"], 40);
    assert_eq!(row["customers"], 40);
    assert_eq!(row["kopecks"], 40 * 9_900);
    let (ok, stdout, _) = lab.run(&[
        "sql",
        &format!("SELECT event_date, count(*) AS n FROM {table} GROUP BY 1"),
    ]);
    assert!(
        ok && stdout.contains("event_date") && stdout.contains("| 40 "),
        "{stdout}"
    );
    let (ok, _, stderr) = lab.run(&["sql", "SELECT * FROM raw.no_such_table"]);
    assert!(!ok && stderr.contains("no_such_table"), "{stderr}");
}
