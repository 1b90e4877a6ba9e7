//! Parsing Canonical Form and CRC-64-AVRO fingerprints, as the Avro specification defines them.
//!
//! apache-avro 0.22 keeps logical types in its canonical form (AVRO-4004), so its
//! fingerprints disagree with Java's and Python's for any schema with a timestamp or date.
//! The site's consumers are not Rust, so the fingerprint on the wire must be the spec's:
//! this module computes the form from the schema JSON itself.

use apache_avro::rabin::Rabin;
use digest::Digest;
use serde_json::{Map, Value};
use std::collections::HashSet;

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The schema's Parsing Canonical Form, or a message naming what makes it unparseable.
pub fn parsing_canonical_form(schema: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut seen = HashSet::new();
    write_schema(schema, None, &mut seen, &mut out)?;
    Ok(out)
}

/// CRC-64-AVRO (Rabin) of the canonical form, as the u64 whose little-endian bytes go on the wire.
pub fn fingerprint(canonical_form: &str) -> u64 {
    let digest = Rabin::digest(canonical_form.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest);
    u64::from_le_bytes(bytes)
}

fn write_schema(
    schema: &Value,
    namespace: Option<&str>,
    seen: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    match schema {
        Value::String(name) => {
            if PRIMITIVES.contains(&name.as_str()) {
                out.push_str(&quote(name));
            } else {
                // A reference to a named type defined earlier.
                out.push_str(&quote(&full_name(name, None, namespace).0));
            }
            Ok(())
        }
        Value::Array(branches) => {
            out.push('[');
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_schema(branch, namespace, seen, out)?;
            }
            out.push(']');
            Ok(())
        }
        Value::Object(obj) => write_object(obj, namespace, seen, out),
        other => Err(format!("a schema must be a string, array or object, found {other}")),
    }
}

fn write_object(
    obj: &Map<String, Value>,
    namespace: Option<&str>,
    seen: &mut HashSet<String>,
    out: &mut String,
) -> Result<(), String> {
    let kind = obj
        .get("type")
        .ok_or_else(|| "a schema object needs a \"type\"".to_string())?;
    let kind = match kind {
        Value::String(kind) => kind.as_str(),
        // {"type": {...}} or {"type": [...]} wraps another schema.
        nested => return write_schema(nested, namespace, seen, out),
    };
    match kind {
        "record" | "error" | "enum" | "fixed" => {
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a {kind} needs a \"name\""))?;
            let declared_ns = obj.get("namespace").and_then(Value::as_str);
            let (full, own_ns) = full_name(name, declared_ns, namespace);
            if !seen.insert(full.clone()) {
                out.push_str(&quote(&full));
                return Ok(());
            }
            out.push_str(&format!("{{\"name\":{},\"type\":{}", quote(&full), quote(kind)));
            match kind {
                "enum" => {
                    let symbols = obj
                        .get("symbols")
                        .and_then(Value::as_array)
                        .ok_or_else(|| format!("enum {full} needs \"symbols\""))?;
                    let symbols: Vec<String> = symbols
                        .iter()
                        .map(|s| {
                            s.as_str()
                                .map(quote)
                                .ok_or(format!("enum {full}: symbols must be strings"))
                        })
                        .collect::<Result<_, _>>()?;
                    out.push_str(&format!(",\"symbols\":[{}]", symbols.join(",")));
                }
                "fixed" => {
                    let size = obj
                        .get("size")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| format!("fixed {full} needs an integer \"size\""))?;
                    out.push_str(&format!(",\"size\":{size}"));
                }
                _ => {
                    let fields = obj
                        .get("fields")
                        .and_then(Value::as_array)
                        .ok_or_else(|| format!("record {full} needs \"fields\""))?;
                    out.push_str(",\"fields\":[");
                    for (i, field) in fields.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let fname = field
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("record {full}: every field needs a \"name\""))?;
                        let ftype = field
                            .get("type")
                            .ok_or_else(|| format!("record {full}: field {fname} needs a \"type\""))?;
                        out.push_str(&format!("{{\"name\":{},\"type\":", quote(fname)));
                        write_schema(ftype, own_ns.as_deref(), seen, out)?;
                        out.push('}');
                    }
                    out.push(']');
                }
            }
            out.push('}');
            Ok(())
        }
        "array" => {
            let items = obj.get("items").ok_or("an array needs \"items\"")?;
            out.push_str("{\"type\":\"array\",\"items\":");
            write_schema(items, namespace, seen, out)?;
            out.push('}');
            Ok(())
        }
        "map" => {
            let values = obj.get("values").ok_or("a map needs \"values\"")?;
            out.push_str("{\"type\":\"map\",\"values\":");
            write_schema(values, namespace, seen, out)?;
            out.push('}');
            Ok(())
        }
        // A primitive with attributes (logicalType and the like) canonicalises to its name.
        primitive if PRIMITIVES.contains(&primitive) => {
            out.push_str(&quote(primitive));
            Ok(())
        }
        reference => {
            out.push_str(&quote(&full_name(reference, None, namespace).0));
            Ok(())
        }
    }
}

/// The full name of a named type and the namespace its nested types inherit.
fn full_name(name: &str, declared: Option<&str>, enclosing: Option<&str>) -> (String, Option<String>) {
    if let Some((ns, _)) = name.rsplit_once('.') {
        return (name.to_string(), Some(ns.to_string()));
    }
    match declared.or(enclosing).filter(|ns| !ns.is_empty()) {
        Some(ns) => (format!("{ns}.{name}"), Some(ns.to_string())),
        None => (name.to_string(), None),
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn logical_types_and_docs_are_stripped() {
        let schema = json!({"type": "record", "name": "E", "namespace": "a.b", "doc": "x",
            "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": "y"},
                       {"name": "o", "type": ["null", "string"], "default": null}]});
        assert_eq!(
            parsing_canonical_form(&schema).unwrap(),
            r#"{"name":"a.b.E","type":"record","fields":[{"name":"t","type":"long"},{"name":"o","type":["null","string"]}]}"#
        );
    }

    #[test]
    fn second_use_of_a_named_type_is_its_full_name() {
        let schema = json!({"type": "record", "name": "R", "namespace": "n", "fields": [
            {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["x"]}},
            {"name": "b", "type": "E"}]});
        assert_eq!(
            parsing_canonical_form(&schema).unwrap(),
            r#"{"name":"n.R","type":"record","fields":[{"name":"a","type":{"name":"n.E","type":"enum","symbols":["x"]}},{"name":"b","type":"n.E"}]}"#
        );
    }

    #[test]
    fn fingerprint_of_primitive_matches_the_spec_vectors() {
        // Values from the Avro Java test suite (TestSchemaNormalization / schema-tests.txt).
        assert_eq!(fingerprint("\"int\""), 0x7275d51a3f395c8f);
        assert_eq!(fingerprint("\"null\""), 0x63dd24e7cc258f8a);
    }
}
