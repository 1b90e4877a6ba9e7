//! Against the real Apache Kafka 4.x broker from tests/services/up.sh: Avro single-object
//! records survive a produce/consume round trip, and `topics apply` creates the catalog,
//! is idempotent, and reports drift without touching data.

use crate::common;

use hoffrec::catalog::Catalog;
use hoffrec::codec::{SchemaSet, read_header};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap()
}

/// Reads every partition of `topic` from the beginning. Partitions are assigned rather
/// than subscribed: the tests check what is on the topic, and a group member that leaves
/// mid-rebalance can block librdkafka's destroy.
fn consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", common::unique("it-group"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

async fn delete_topics(brokers: &str, names: &[String]) {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin(brokers).delete_topics(&refs, &AdminOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_records_round_trip_through_real_kafka() {
    let _services = common::needs!(Kafka);
    let brokers = common::kafka_bootstrap();
    common::require_service("Kafka", &brokers);
    let schemas = SchemaSet::load_strict(&common::repo().join("avro")).unwrap();
    let topic = common::unique("it-avro");
    admin(&brokers)
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();

    // Several event types on one topic: readers tell them apart by fingerprint alone.
    let events = [
        "page_view",
        "order",
        "real_estate_record",
        "recommendation",
        "social_profile",
    ];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut sent = HashMap::new();
    for i in 0..250i64 {
        let event = events[i as usize % events.len()];
        let value = common::sample_value(&schemas.current(event).unwrap().schema, i);
        let bytes = schemas.encode(event, value.clone()).unwrap();
        let seq = i.to_string();
        let key = format!("customer-{}", i % 17);
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(&seq),
        });
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&bytes).headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        sent.insert(seq, (event, value));
    }

    let consumer = consumer(&brokers, &topic);
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received < sent.len() {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {received} of {} records arrived", sent.len()))
            .unwrap();
        let seq = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "seq"))
            .and_then(|h| h.value)
            .unwrap();
        let (event, value) = &sent[std::str::from_utf8(seq).unwrap()];
        let payload = msg.payload().unwrap();
        let writer = schemas.by_fingerprint(read_header(payload).unwrap()).unwrap();
        assert_eq!(&writer.event, event);
        assert_eq!(&schemas.decode(payload, &writer.event).unwrap(), value);
        received += 1;
    }
    delete_topics(&brokers, &[topic]).await;
}

/// A copy of the repository catalog whose topic names carry a unique prefix.
fn prefixed_catalog(dir: &Path, prefix: &str) -> Vec<String> {
    common::copy_dir(&common::repo().join("topics"), dir);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().find(|l| l.starts_with("name = ")).unwrap();
        let name = line.trim_start_matches("name = ").trim_matches('"');
        let new = match name.strip_prefix("raw.") {
            Some(rest) => format!("raw.{prefix}.{rest}"),
            None => format!("{prefix}.{name}"),
        };
        std::fs::write(&path, text.replace(line, &format!("name = \"{new}\""))).unwrap();
        names.push(new);
    }
    names
}

fn apply(brokers: &str, topics: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hoffrec"))
        .args(["topics", "apply", "--brokers", brokers, "--topics-dir"])
        .arg(topics)
        .arg("--schemas-dir")
        .arg(common::repo().join("avro"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.code().is_some(), "{}", String::from_utf8_lossy(&out.stderr));
    (
        out.status.code().unwrap(),
        stdout + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_apply_creates_is_idempotent_and_reports_drift_without_data_loss() {
    let _services = common::needs!(Kafka);
    let brokers = common::kafka_bootstrap();
    common::require_service("Kafka", &brokers);
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("it").replace('-', "_");
    let names = prefixed_catalog(dir.path(), &prefix);
    assert!(Catalog::load(dir.path(), &common::repo().join("avro")).is_ok());

    let (code, out) = apply(&brokers, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{} created, 0 in sync, 0 drifted", names.len())),
        "{out}"
    );

    // The cluster now has what the catalog says, including compaction and retention.
    let recs = format!("{prefix}.recs.customer");
    let page_views = format!("raw.{prefix}.site.page_view");
    let admin = admin(&brokers);
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&recs), ResourceSpecifier::Topic(&page_views)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let recs_cfg = described[0].as_ref().unwrap();
    assert_eq!(
        recs_cfg.get("cleanup.policy").unwrap().value.as_deref(),
        Some("compact")
    );
    assert_eq!(
        recs_cfg.get("min.compaction.lag.ms").unwrap().value.as_deref(),
        Some("60000")
    );
    let pv_cfg = described[1].as_ref().unwrap();
    assert_eq!(pv_cfg.get("retention.ms").unwrap().value.as_deref(), Some("1209600000"));

    // Data written before a re-apply is still there after it.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    producer
        .send(
            FutureRecord::to(&page_views).key("c1").payload("kept"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let (code, out) = apply(&brokers, dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("0 created, {} in sync, 0 drifted", names.len())),
        "{out}"
    );

    let file = dir.path().join("raw.site.page_view.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("partitions = 6", "partitions = 8")
            .replace("retention_ms = 1209600000", "retention_ms = 86400000"),
    )
    .unwrap();
    let (code, out) = apply(&brokers, dir.path());
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!(
            "DRIFT    {page_views}: partitions is 6 on the cluster, 8 in the catalog"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "DRIFT    {page_views}: retention.ms is 1209600000 on the cluster, 86400000 in the catalog"
        )),
        "{out}"
    );

    let metadata = admin
        .inner()
        .fetch_metadata(Some(&page_views), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 6, "apply never repartitions");
    let consumer = consumer(&brokers, &page_views);
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("record still there")
        .unwrap();
    assert_eq!(msg.payload(), Some(&b"kept"[..]));
    delete_topics(&brokers, &names).await;
}
