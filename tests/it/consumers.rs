//! The README's consumer guide: its Python (fastavro), Java (Avro's
//! `BinaryMessageDecoder`) and Node (avsc) snippets, kept whole in `tests/consumers/`,
//! decode a list read from the real broker to the list hoffrec's own reader sees.

use crate::common;
use crate::common::lab::Lab;
use hoffrec::catalog::Role;
use serde_json::{Value as Json, json};
use std::io::Write;
use std::process::{Command, Stdio};

fn run(mut command: Command, value: &[u8]) -> Json {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the snippet's runtime is installed (tests/setup.sh)");
    child.stdin.take().unwrap().write_all(value).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guides_python_java_and_node_snippets_decode_the_same_list() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let recs = lab.topic_of(Role::Recommendations);
    let schemas = lab.schemas();
    let version = schemas.current("recommendation").unwrap();
    let list = json!({"customer_id": "c-guide", "list_id": "l-guide-1", "generated_at": 1_796_000_000_000i64,
    "valid_until": 1_796_086_400_000i64, "model_version": "m-guide",
    "items": [
        {"product_id": "73001", "rank": 1, "score": 0.8125, "reasons": ["new_homeowner", "complements:51002"], "propensity": 1.0},
        {"product_id": "51002", "rank": 2, "score": 1.0e-4, "reasons": ["уют \"дома\""], "propensity": 0.25}
    ]});
    let payload =
        hoffrec::codec::encode_with(version, hoffrec::codec::json::to_avro(&list, &version.schema).unwrap()).unwrap();
    let producer = lab.producer();
    hoffrec::kafka::send_and_wait(
        &producer,
        rdkafka::producer::FutureRecord::to(&recs)
            .key("c-guide")
            .payload(&payload),
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    let (value, _) = lab.read_topic(&recs).pop().expect("the list on the topic");

    let ours = hoffrec::serve::store::List::decode(&schemas, &value).unwrap();
    let expected = json!({"customer_id": ours.customer_id, "list_id": ours.list_id, "model_version": ours.model_version,
        "items": ours.items.iter().map(|i| json!({"product_id": i.product_id, "score": i.score, "reasons": i.reasons})).collect::<Vec<_>>()});
    let avro = common::repo().join("avro");
    let snippets = common::repo().join("tests/consumers");

    let mut python = Command::new("python3");
    python.arg(snippets.join("decode_recs.py")).arg(&avro);
    assert_eq!(run(python, &value), expected, "Python (fastavro)");

    let services = std::env::var("HOFFREC_SERVICES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/hoffrec/services"));
    let classpath =
        std::fs::read_to_string(services.join("avro.classpath")).expect("tests/services/up.sh resolves the Avro jars");
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(classpath.trim())
        .arg(snippets.join("DecodeRecs.java"))
        .arg(&avro);
    assert_eq!(run(java, &value), expected, "Java (BinaryMessageDecoder)");

    // avsc is installed beside the snippet by tests/setup.sh (tests/consumers/package.json).
    let mut node = Command::new("node");
    node.arg(snippets.join("decode_recs.js")).arg(&avro);
    assert_eq!(run(node, &value), expected, "Node (avsc)");
}

/// The guide quotes the snippets whole, so what readers copy is what the test runs.
#[test]
fn the_readme_quotes_the_snippets_whole() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    for file in ["decode_recs.py", "DecodeRecs.java", "decode_recs.js"] {
        let text = std::fs::read_to_string(common::repo().join("tests/consumers").join(file)).unwrap();
        assert!(
            readme.contains(text.trim_end()),
            "README quotes tests/consumers/{file} whole"
        );
    }
}
