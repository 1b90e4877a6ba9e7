//! The Avro single-object codec over every schema in avro/: round trips, schema
//! evolution, distinct errors, and agreement with another implementation (fastavro).

use crate::common;

use apache_avro::types::Value;
use hoffrec::codec::{CodecError, MAGIC, SchemaSet, encode_with};
use std::process::Command;

fn schemas() -> SchemaSet {
    SchemaSet::load_strict(&common::repo().join("avro")).expect("repository schemas load")
}

#[test]
fn every_schema_round_trips() {
    let set = schemas();
    let mut checked = 0;
    for version in set.events() {
        let value = common::sample_value(&version.schema, 11);
        let bytes = set.encode(&version.event, value.clone()).unwrap();
        assert_eq!(bytes[..2], MAGIC);
        assert_eq!(bytes[2..10], version.fingerprint.to_le_bytes());
        let decoded = set.decode(&bytes, &version.event).unwrap();
        assert_eq!(decoded, value, "round trip of {}", version.id);
        checked += 1;
    }
    assert!(checked >= 18, "expected every event schema, checked {checked}");
}

#[test]
fn record_written_with_older_version_is_read_with_newer() {
    let set = schemas();
    let old = set
        .versions()
        .find(|v| v.id == "product_view.v1")
        .expect("history/product_view.v1.avsc");
    let current = set.current("product_view").unwrap();
    assert_ne!(old.fingerprint, current.fingerprint);

    let value = common::sample_value(&old.schema, 5);
    let bytes = encode_with(old, value.clone()).unwrap();
    let (decoded, writer) = set.decode_as(&bytes, current).unwrap();
    assert_eq!(writer.id, "product_view.v1");

    let Value::Record(old_fields) = value else {
        panic!("record")
    };
    let Value::Record(new_fields) = decoded else {
        panic!("record")
    };
    assert_eq!(new_fields.len(), old_fields.len() + 2);
    for (name, v) in &old_fields {
        assert_eq!(
            new_fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            Some(v),
            "field {name}"
        );
    }
    for added in ["list_id", "position"] {
        let (_, v) = new_fields.iter().find(|(n, _)| n == added).unwrap();
        assert_eq!(v, &Value::Union(0, Box::new(Value::Null)), "{added} takes its default");
    }
}

#[test]
fn broken_records_give_distinct_clear_errors() {
    let set = schemas();
    let good = set
        .encode(
            "page_view",
            common::sample_value(&set.current("page_view").unwrap().schema, 1),
        )
        .unwrap();

    let err = set.decode(&good[..6], "page_view").unwrap_err();
    assert!(matches!(err, CodecError::TruncatedHeader { len: 6 }), "{err}");

    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'{';
    let err = set.decode(&wrong_magic, "page_view").unwrap_err();
    assert!(matches!(err, CodecError::WrongMagic { .. }), "{err}");
    assert!(err.to_string().contains("not Avro single-object encoding"));

    let mut unknown = good.clone();
    unknown[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let err = set.decode(&unknown, "page_view").unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::UnknownFingerprint {
                fingerprint: 0x0123_4567_89ab_cdef
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("0x0123456789abcdef"), "{err}");

    let err = set.decode(&good[..good.len() - 3], "page_view").unwrap_err();
    assert!(matches!(err, CodecError::TruncatedBody { .. }), "{err}");

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0]);
    let err = set.decode(&trailing, "page_view").unwrap_err();
    assert!(matches!(err, CodecError::TrailingBytes { extra: 2, .. }), "{err}");

    let err = set
        .encode("page_view", Value::Record(vec![("url".into(), Value::Int(3))]))
        .unwrap_err();
    assert!(matches!(err, CodecError::InvalidValue { .. }), "{err}");

    let classes = [
        "truncated_header",
        "wrong_magic",
        "unknown_fingerprint",
        "truncated_body",
        "trailing_bytes",
    ];
    let unique: std::collections::HashSet<_> = classes.iter().collect();
    assert_eq!(unique.len(), classes.len());
}

/// The fingerprints on the wire must be the ones Python and Java compute, since the
/// site's consumers are not Rust. fastavro also decodes a record we wrote and writes one
/// we decode, for a schema with logical types (where apache-avro's own form differs).
#[test]
fn fingerprints_and_bytes_agree_with_fastavro() {
    let set = schemas();
    let script = r#"
import sys, json, glob, io, os, fastavro
from fastavro.schema import to_parsing_canonical_form, fingerprint
root = sys.argv[1]
out = {}
for path in sorted(glob.glob(os.path.join(root, "**", "*.avsc"), recursive=True)):
    parsed = fastavro.parse_schema(json.load(open(path)))
    pcf = to_parsing_canonical_form(parsed)
    out[os.path.relpath(path, root)] = {"pcf": pcf, "fp": fingerprint(pcf, "CRC-64-AVRO")}
# Decode the record Rust wrote (stdin: hex), then write one back for Rust to decode.
schema = fastavro.parse_schema(json.load(open(os.path.join(root, "page_view.avsc"))))
fp = bytes.fromhex(out["page_view.avsc"]["fp"])
rust_bytes = bytes.fromhex(sys.stdin.read().strip())
assert rust_bytes[:2] == b"\xc3\x01" and rust_bytes[2:10] == fp, "header"
rec = fastavro.schemaless_reader(io.BytesIO(rust_bytes[10:]), schema)
rec["url"] = "https://hoff.ru/from-python"
buf = io.BytesIO(); fastavro.schemaless_writer(buf, schema, rec)
out["_python_record"] = (b"\xc3\x01" + fp + buf.getvalue()).hex()
out["_rust_record_event_time_ms"] = int(rec["event_time"].timestamp() * 1000)
print(json.dumps(out))
"#;
    let page_view = set.current("page_view").unwrap();
    let value = common::sample_value(&page_view.schema, 3);
    let rust_bytes = set.encode("page_view", value).unwrap();
    let hex: String = rust_bytes.iter().map(|b| format!("{b:02x}")).collect();

    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(common::repo().join("avro"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(hex.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fastavro check failed (pip install fastavro): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let python: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let mut compared = 0;
    for version in set.versions() {
        let rel = version
            .path
            .strip_prefix(common::repo().join("avro"))
            .unwrap()
            .to_string_lossy()
            .to_string();
        let theirs = &python[&rel];
        assert_eq!(
            theirs["pcf"].as_str().unwrap(),
            version.canonical_form,
            "canonical form of {rel}"
        );
        let ours: String = version
            .fingerprint
            .to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(theirs["fp"].as_str().unwrap(), ours, "fingerprint of {rel}");
        compared += 1;
    }
    assert_eq!(compared, set.versions().count());

    // fastavro read our timestamp as the same instant.
    assert_eq!(
        python["_rust_record_event_time_ms"].as_i64().unwrap(),
        1_790_000_000_000 + 3 + 1
    );

    let python_hex = python["_python_record"].as_str().unwrap();
    let python_bytes: Vec<u8> = (0..python_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&python_hex[i..i + 2], 16).unwrap())
        .collect();
    let decoded = set.decode(&python_bytes, "page_view").unwrap();
    let Value::Record(fields) = decoded else {
        panic!("record")
    };
    assert!(fields.contains(&("url".to_string(), Value::String("https://hoff.ru/from-python".into()))));
}
