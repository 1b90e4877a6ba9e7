//! Against the real Apache Kafka 4.x broker from tests/services/up.sh: Avro single-object
//! records survive a produce/consume round trip, `topics apply` creates the catalog,
//! is idempotent, and reports drift without touching data, and hoffrec's own client
//! settings reach the broker's TLS + SASL/SCRAM listener.

use crate::common;

use hoffrec::catalog::Catalog;
use hoffrec::codec::{SchemaSet, read_header};
use hoffrec::config::{Config, KafkaConfig, Secret};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
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

/// The broker's SASL_SSL listener as tests/services/up.sh made it: its address, the CA
/// that signed the broker's certificate, and the SCRAM-SHA-512 user.
struct SaslSsl {
    bootstrap: String,
    ca: PathBuf,
    username: String,
    password: String,
}

fn sasl_ssl_listener() -> SaslSsl {
    let state = std::env::var("HOFFREC_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hoffrec/services"));
    let dir = state.join("kafka/sasl_ssl");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; start the broker with tests/services/up.sh",
                    dir.join(name).display()
                )
            })
            .trim()
            .to_string()
    };
    SaslSsl {
        bootstrap: read("bootstrap"),
        ca: dir.join("ca.pem"),
        username: read("username"),
        password: read("password"),
    }
}

/// hoffrec's `[kafka]` settings for the listener, as an operator would write them.
fn sasl_ssl_config(listener: &SaslSsl, password: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: listener.bootstrap.clone(),
        client_id: common::unique("it-sasl"),
        security_protocol: "sasl_ssl".into(),
        sasl_mechanism: "SCRAM-SHA-512".into(),
        sasl_username: listener.username.clone(),
        sasl_password: Secret::new(password),
        properties: [("ssl.ca.location".to_string(), listener.ca.display().to_string())].into(),
        ..KafkaConfig::default()
    }
}

/// Keeps the client-level errors librdkafka reports (a refused login among them).
#[derive(Default)]
struct SeenErrors(Mutex<Vec<(KafkaError, String)>>);

impl ClientContext for SeenErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((error, reason.to_string()));
    }
}

impl ProducerContext for SeenErrors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// A record goes through TLS (verified against the CA up.sh made) and SCRAM-SHA-512 login
/// with hoffrec's own `kafka::client_config`, and comes back; the same settings with a
/// wrong password are refused with an authentication error, which the stages treat as
/// fatal. Without rdkafka's `ssl` feature the first client cannot even be created.
#[tokio::test(flavor = "multi_thread")]
async fn records_round_trip_over_tls_and_scram_and_a_wrong_password_is_refused() {
    let _services = common::needs!(Kafka);
    let listener = sasl_ssl_listener();
    common::require_service("Kafka's SASL_SSL listener", &listener.bootstrap);
    let kafka = sasl_ssl_config(&listener, &listener.password);
    let config = Config {
        kafka: kafka.clone(),
        ..Config::default()
    };
    assert_eq!(config.validate(), Vec::<String>::new());

    let topic = common::unique("it-sasl");
    let producer: FutureProducer = hoffrec::kafka::client_config(&kafka)
        .create()
        .unwrap_or_else(|e| panic!("a sasl_ssl producer: {e}"));
    let (partition, offset) = hoffrec::kafka::send_and_wait(
        &producer,
        FutureRecord::to(&topic).key("customer-1").payload("over tls"),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("produce over SASL_SSL: {e}"));

    let consumer: StreamConsumer =
        hoffrec::kafka::consumer_config(&kafka, &common::unique("it-sasl-group"), "earliest")
            .create()
            .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    // Owned copies: a fetched message still alive would keep the consumer's destroy waiting.
    let (key, payload) = {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("the record comes back over SASL_SSL within 30 s")
            .unwrap();
        (msg.key().map(<[u8]>::to_vec), msg.payload().map(<[u8]>::to_vec))
    };
    drop(consumer);
    assert_eq!(key.as_deref(), Some(&b"customer-1"[..]));
    assert_eq!(payload.as_deref(), Some(&b"over tls"[..]));

    // The same settings with a wrong password: the broker refuses the login.
    let wrong = sasl_ssl_config(&listener, "not-the-password");
    let refused: BaseProducer<SeenErrors> = hoffrec::kafka::client_config(&wrong)
        .create_with_context(SeenErrors::default())
        .unwrap();
    refused
        .send(BaseRecord::to(&topic).key("customer-2").payload("never lands"))
        .map_err(|(e, _)| e)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        refused.poll(Duration::from_millis(100));
        let seen = refused.context().0.lock().unwrap().clone();
        if let Some(found) = seen
            .into_iter()
            .find(|(e, _)| e.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication))
        {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no authentication error within 30 s; errors: {:?}",
            refused.context().0.lock().unwrap()
        );
    };
    assert!(refusal.1.contains("SCRAM-SHA-512"), "{}", refusal.1);
    assert!(hoffrec::kafka::error_is_fatal(&refusal.0), "{:?}", refusal.0);
    drop(refused);

    delete_topics(&common::kafka_bootstrap(), &[topic]).await;
}
