//! JSON as senders write it, turned into Avro values of a given schema: numbers or
//! numeric strings for numbers, integers or strings for strings, epoch milliseconds or RFC 3339 times with an offset for
//! timestamps, `YYYY-MM-DD` or day numbers for dates, and field defaults for what is absent.

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::types::Value;
use serde_json::Value as Json;

/// Converts `json` to a value of the record schema `schema`; the error names the field.
pub fn to_avro(json: &Json, schema: &Schema) -> Result<Value, String> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| e.to_string())?;
    convert(json, schema, resolved.get_names(), "")
}

fn convert(json: &Json, schema: &Schema, names: &NamesRef, path: &str) -> Result<Value, String> {
    let bad = |want: &str| {
        let shown: String = json.to_string().chars().take(60).collect();
        let at = if path.is_empty() { "event" } else { path };
        Err(format!("{at}: expected {want}, found {shown}"))
    };
    match schema {
        Schema::Null => match json {
            Json::Null => Ok(Value::Null),
            _ => bad("null"),
        },
        Schema::Boolean => match json {
            Json::Bool(b) => Ok(Value::Boolean(*b)),
            _ => bad("true or false"),
        },
        Schema::Int => int(json)
            .and_then(|v| i32::try_from(v).ok())
            .map(Value::Int)
            .map_or_else(|| bad("a 32-bit integer"), Ok),
        Schema::Long => int(json).map(Value::Long).map_or_else(|| bad("an integer"), Ok),
        Schema::Float => float(json)
            .map(|v| Value::Float(v as f32))
            .map_or_else(|| bad("a number"), Ok),
        Schema::Double => float(json).map(Value::Double).map_or_else(|| bad("a number"), Ok),
        Schema::String | Schema::Uuid(_) => match json {
            Json::String(s) => Ok(Value::String(s.clone())),
            // APIs send ids as numbers (VK, order systems); the text of an integer is exact.
            Json::Number(n) if n.is_i64() || n.is_u64() => Ok(Value::String(n.to_string())),
            _ => bad("a string"),
        },
        Schema::Enum(e) => match json {
            Json::String(s) => match e.symbols.iter().position(|x| x == s) {
                Some(i) => Ok(Value::Enum(i as u32, s.clone())),
                None => bad(&format!("one of {}", e.symbols.join(", "))),
            },
            _ => bad("a string"),
        },
        Schema::TimestampMillis => match json {
            Json::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => Ok(Value::TimestampMillis(t.timestamp_millis())),
                Err(_) => bad("epoch milliseconds or an RFC 3339 time with an offset"),
            },
            _ => int(json)
                .map(Value::TimestampMillis)
                .map_or_else(|| bad("epoch milliseconds"), Ok),
        },
        Schema::Date => match json {
            Json::String(s) => match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(d) => Ok(Value::Date((d - chrono::NaiveDate::default()).num_days() as i32)),
                Err(_) => bad("a date YYYY-MM-DD"),
            },
            _ => int(json)
                .and_then(|v| i32::try_from(v).ok())
                .map(Value::Date)
                .map_or_else(|| bad("a date"), Ok),
        },
        Schema::Array(a) => match json {
            Json::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| convert(v, &a.items, names, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            _ => bad("an array"),
        },
        Schema::Map(m) => match json {
            Json::Object(map) => map
                .iter()
                .map(|(k, v)| convert(v, &m.types, names, &format!("{path}.{k}")).map(|v| (k.clone(), v)))
                .collect::<Result<_, _>>()
                .map(Value::Map),
            _ => bad("an object"),
        },
        Schema::Record(r) => {
            let Json::Object(map) = json else {
                return bad("an object");
            };
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let child = if path.is_empty() {
                    f.name.clone()
                } else {
                    format!("{path}.{}", f.name)
                };
                let value = match (map.get(&f.name), &f.default) {
                    (Some(v), _) => convert(v, &f.schema, names, &child)?,
                    (None, Some(default)) => convert(default, &f.schema, names, &child)?,
                    (None, None) => return Err(format!("{child}: required field is missing")),
                };
                fields.push((f.name.clone(), value));
            }
            Ok(Value::Record(fields))
        }
        Schema::Union(u) => {
            let variants = u.variants();
            if json.is_null()
                && let Some(i) = variants.iter().position(|s| *s == Schema::Null)
            {
                return Ok(Value::Union(i as u32, Box::new(Value::Null)));
            }
            let mut last = String::new();
            for (i, s) in variants.iter().enumerate().filter(|(_, s)| **s != Schema::Null) {
                match convert(json, s, names, path) {
                    Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        Schema::Ref { name } => match names.get(name) {
            Some(target) => convert(json, target, names, path),
            None => Err(format!("{path}: undefined type {name}")),
        },
        other => Err(format!("{path}: the collector does not accept {other:?} fields")),
    }
}

fn int(json: &Json) -> Option<i64> {
    match json {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({
            "type": "record", "name": "E", "fields": [
                {"name": "id", "type": "string"},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "qty", "type": "int"},
                {"name": "price", "type": ["null", "long"], "default": null},
                {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["a", "b"]}},
                {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn coerces_types_and_fills_defaults() {
        let v = to_avro(
            &json!({"id": "x", "at": "2026-11-25T10:00:00+03:00", "qty": "2", "kind": "b"}),
            &schema(),
        )
        .unwrap();
        let Value::Record(f) = v else { panic!() };
        // 10:00 at +03:00 is 07:00 UTC.
        assert_eq!(f[1].1, Value::TimestampMillis(1_795_590_000_000));
        assert_eq!(f[2].1, Value::Int(2));
        assert_eq!(f[3].1, Value::Union(0, Box::new(Value::Null)));
        assert_eq!(f[4].1, Value::Enum(1, "b".into()));
        assert_eq!(f[5].1, Value::Array(vec![]));
    }

    #[test]
    fn errors_name_the_field() {
        let e = to_avro(&json!({"id": "x", "at": 1, "qty": 1.5, "kind": "a"}), &schema()).unwrap_err();
        assert!(e.starts_with("qty:"), "{e}");
        let e = to_avro(&json!({"at": 1, "qty": 1, "kind": "a"}), &schema()).unwrap_err();
        assert!(e.contains("id: required"), "{e}");
        let e = to_avro(&json!({"id": "x", "at": 1, "qty": 1, "kind": "c"}), &schema()).unwrap_err();
        assert!(e.contains("one of a, b"), "{e}");
    }
}
