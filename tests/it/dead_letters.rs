//! Operators' dead-letter tools on the real broker and HDFS: records written with a schema
//! version hoffrec does not know yet are dead-lettered; `hoffrec dlq list` shows them;
//! once the version is shipped, `hoffrec dlq replay --class unknown_fingerprint` puts them
//! back on their topic and they land; a second replay puts nothing back.

use crate::common;
use crate::common::lab::Lab;
use crate::simulate::landed;
use apache_avro::types::Value;
use serde_json::Value as Json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_class_of_dead_letters_is_replayed_once() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    // A newer product_view the producer ships before hoffrec has it: one more optional field.
    let current = std::fs::read_to_string(lab.schemas_dir.join("product_view.avsc")).unwrap();
    let mut newer: Json = serde_json::from_str(&current).unwrap();
    newer["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "room", "type": ["null", "string"], "default": null, "doc": "Room shown."}));
    let shipped = tempfile::tempdir().unwrap();
    std::fs::write(shipped.path().join("product_view.avsc"), newer.to_string()).unwrap();
    let newer_set = hoffrec::codec::SchemaSet::load_strict(shipped.path()).unwrap();

    let schemas = lab.schemas();
    let producer = lab.producer();
    let mut records = Vec::new();
    for i in 0..3u64 {
        let view = common::lab::product_view(&format!("known-{i}"), i, None);
        records.push((format!("known-{i}"), schemas.encode("product_view", view).unwrap()));
    }
    for i in 0..2u64 {
        let Value::Record(mut fields) = common::lab::product_view(&format!("late-{i}"), i, None) else {
            unreachable!()
        };
        fields.push((
            "room".into(),
            Value::Union(1, Box::new(Value::String("kitchen".into()))),
        ));
        records.push((
            format!("late-{i}"),
            newer_set.encode("product_view", Value::Record(fields)).unwrap(),
        ));
    }
    lab.send_all(&producer, &records).await;
    let group = common::unique("replay");
    let mut ingest = lab.ingest(&group, &[]);
    common::poll_until("3 known views landed", Duration::from_secs(120), || async {
        landed(&lab, &lab.raw).await.filter(|n| *n == 3)
    })
    .await;
    let list = || {
        let (ok, out, err) = lab.command_with_env(&["dlq", "list", "--class", "unknown_fingerprint"], &[]);
        assert!(ok, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<Json>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let letters = common::poll_until("two letters", Duration::from_secs(60), || async {
        let l = list();
        (l.len() == 2).then_some(l)
    })
    .await;
    let mut keys: Vec<&str> = letters.iter().map(|l| l["source_key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["late-0", "late-1"]);
    assert!(letters.iter().all(|l| l["source"] == lab.raw.as_str()));

    // Without --class, replay refuses.
    let (ok, _, err) = lab.command_with_env(&["dlq", "replay"], &[]);
    assert!(!ok && err.contains("--class"), "{err}");

    // Ship the version (the old current one joins the history), restart ingest, replay.
    let history = lab.schemas_dir.join("history");
    std::fs::write(history.join("product_view.v2.avsc"), &current).unwrap();
    std::fs::write(lab.schemas_dir.join("product_view.avsc"), newer.to_string()).unwrap();
    assert!(ingest.stop(), "{}", common::lab::tail(&ingest.log));
    let mut ingest = lab.ingest(&group, &[]);
    let replay = || {
        let (ok, out, err) = lab.command_with_env(&["dlq", "replay", "--class", "unknown_fingerprint"], &[]);
        assert!(ok, "{err}");
        serde_json::from_str::<Json>(&out).unwrap()
    };
    let first = replay();
    assert_eq!(first["replayed"], 2, "{first}");
    common::poll_until("the replayed views landed", Duration::from_secs(120), || async {
        landed(&lab, &lab.raw).await.filter(|n| *n == 5)
    })
    .await;
    let again = replay();
    assert_eq!(again["replayed"], 0, "each letter once: {again}");
    assert!(list().is_empty(), "replayed letters are no longer live");
    assert_eq!(landed(&lab, &lab.raw).await, Some(5));
    assert!(ingest.stop(), "{}", common::lab::tail(&ingest.log));
}
