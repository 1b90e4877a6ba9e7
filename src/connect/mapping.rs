//! A topic file's declared mapping applied to one source item: the result is JSON in the
//! shape of the topic's Avro record, which `json::to_avro` then checks and converts.

use crate::catalog::source::{FieldMap, FieldSpec};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// Applies `mapping` to `item`; the error names the field that could not be filled.
pub fn apply(item: &Json, mapping: &BTreeMap<String, FieldSpec>) -> Result<Json, String> {
    let mut out = Map::new();
    for (name, spec) in mapping {
        let value = field(item, spec).map_err(|e| format!("{name}: {e}"))?;
        if !value.is_null() {
            out.insert(name.clone(), value);
        }
    }
    Ok(Json::Object(out))
}

/// The value at a dotted path (`a.b.0.c`); numbers index arrays.
pub fn lookup<'a>(item: &'a Json, path: &str) -> Option<&'a Json> {
    if path.is_empty() {
        return Some(item);
    }
    path.split('.').try_fold(item, |at, step| match at {
        Json::Object(m) => m.get(step),
        Json::Array(a) => step.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A scalar as text, without JSON quotes.
pub fn text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn field(item: &Json, spec: &FieldSpec) -> Result<Json, String> {
    let map = match spec {
        FieldSpec::Path(path) => return Ok(lookup(item, path).cloned().unwrap_or(Json::Null)),
        FieldSpec::Full(map) => map,
    };
    let mut value = if let Some(v) = &map.value {
        v.clone()
    } else if let Some(t) = &map.template {
        Json::String(template(item, t)?)
    } else if let Some(p) = &map.path {
        lookup(item, p).cloned().unwrap_or(Json::Null)
    } else {
        return Err("declares none of path, value or template".into());
    };
    if value.is_null() {
        return Ok(map.default.clone().unwrap_or(Json::Null));
    }
    match convert(value, map) {
        Ok(v) => value = v,
        Err(_) if map.lenient => return Ok(Json::Null),
        Err(e) => return Err(e),
    }
    if let Some(fields) = &map.fields {
        value = nested(&value, fields)?;
    }
    Ok(value)
}

/// Translation, times, dates, scales, case and splitting, in that order.
fn convert(mut value: Json, map: &FieldMap) -> Result<Json, String> {
    if let Some(table) = &map.map {
        let key = text(&value).ok_or_else(|| format!("cannot translate {value}"))?;
        value = table
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("value {key:?} has no entry in the mapping table"))?;
    }
    if let Some(format) = &map.time_format {
        value = Json::from(epoch_ms(&value, format, map.time_zone.as_deref())?);
    }
    if let Some(format) = &map.date_format {
        let raw = text(&value).ok_or_else(|| format!("date {value} is not text"))?;
        let date = NaiveDate::parse_from_str(&raw, format)
            .map_err(|e| format!("date {raw:?} does not match {format}: {e}"))?;
        value = Json::String(date.format("%Y-%m-%d").to_string());
    }
    if let Some(scale) = map.scale {
        value = Json::from(scaled(&value, scale)?);
    }
    if map.lowercase
        && let Json::String(s) = &value
    {
        value = Json::String(s.to_lowercase());
    }
    if let Some(codes) = &map.keywords {
        let texts: Vec<String> = match &value {
            Json::Array(items) => items.iter().filter_map(text).collect(),
            other => text(other).into_iter().collect(),
        };
        let texts: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
        value = codes
            .iter()
            .filter(|(_, words)| {
                words
                    .iter()
                    .any(|w| texts.iter().any(|t| t.contains(&w.to_lowercase())))
            })
            .map(|(code, _)| Json::String(code.clone()))
            .collect();
    }
    if let Some(separator) = &map.split
        && let Json::String(s) = &value
    {
        value = s
            .split(separator.as_str())
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| Json::String(p.to_string()))
            .collect();
    }
    Ok(value)
}

fn nested(value: &Json, fields: &BTreeMap<String, FieldSpec>) -> Result<Json, String> {
    match value {
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| apply(v, fields).map_err(|e| format!("[{i}].{e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        Json::Object(_) => apply(value, fields),
        other => Err(format!("expected an object or array, found {other}")),
    }
}

fn template(item: &Json, template: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in template {template:?}"))?;
        let path = &rest[open + 1..open + close];
        let value = lookup(item, path)
            .and_then(text)
            .ok_or_else(|| format!("template part {{{path}}} is missing"))?;
        out.push_str(&value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The time format and zone the mapping reads the item's `path` with, if it reads it as
/// a time (the order API's `updatedAt` for `event_time`).
pub(super) fn time_format_of<'a>(
    mapping: &'a BTreeMap<String, FieldSpec>,
    path: &str,
) -> Option<(&'a str, Option<&'a str>)> {
    mapping.values().find_map(|spec| match spec {
        FieldSpec::Full(m) if m.path.as_deref() == Some(path) => {
            m.time_format.as_deref().map(|f| (f, m.time_zone.as_deref()))
        }
        _ => None,
    })
}

/// A cursor value as epoch milliseconds, read as the mapping reads it.
pub(super) fn cursor_ms(value: &str, format: &str, zone: Option<&str>) -> Option<i64> {
    epoch_ms(&Json::String(value.to_string()), format, zone).ok()
}

/// Epoch milliseconds written back in the source's own format, for a query parameter.
pub(super) fn format_ms(ms: i64, format: &str, zone: Option<&str>) -> Option<String> {
    match format {
        "unix_s" => return Some((ms.div_euclid(1000)).to_string()),
        "unix_ms" => return Some(ms.to_string()),
        "rfc3339" => {
            return DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
        _ => {}
    }
    let offset = offset_of(zone)?;
    Some(offset.timestamp_millis_opt(ms).single()?.format(format).to_string())
}

fn offset_of(zone: Option<&str>) -> Option<FixedOffset> {
    match zone {
        None | Some("UTC") | Some("Z") => FixedOffset::east_opt(0),
        Some(z) => DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{z}"))
            .ok()
            .map(|t| *t.offset()),
    }
}

fn epoch_ms(value: &Json, format: &str, zone: Option<&str>) -> Result<i64, String> {
    let bad = |why: &str| format!("time {value} does not match {format}: {why}");
    match format {
        "unix_s" => {
            return number(value)
                .map(|s| (s * 1000.0).round() as i64)
                .ok_or_else(|| bad("not a number"));
        }
        "unix_ms" => {
            return number(value)
                .map(|ms| ms.round() as i64)
                .ok_or_else(|| bad("not a number"));
        }
        _ => {}
    }
    let raw = text(value).ok_or_else(|| bad("not text"))?;
    if format == "rfc3339" {
        return DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.timestamp_millis())
            .map_err(|e| bad(&e.to_string()));
    }
    if format.contains("%z") || format.contains("%:z") {
        return DateTime::parse_from_str(&raw, format)
            .map(|t| t.timestamp_millis())
            .map_err(|e| bad(&e.to_string()));
    }
    let offset = offset_of(zone).ok_or_else(|| bad("time_zone must be an offset such as +03:00"))?;
    let naive = NaiveDateTime::parse_from_str(&raw, format)
        .or_else(|_| NaiveDate::parse_from_str(&raw, format).map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default()))
        .map_err(|e| bad(&e.to_string()))?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| bad("not a valid local time"))
}

fn number(value: &Json) -> Option<f64> {
    match value {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().replace(',', ".").parse().ok(),
        _ => None,
    }
}

fn scaled(value: &Json, scale: f64) -> Result<i64, String> {
    number(value)
        .map(|n| (n * scale).round() as i64)
        .ok_or_else(|| format!("expected a number, found {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(toml_text: &str) -> BTreeMap<String, FieldSpec> {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn cursor_times_round_trip_in_the_source_format() {
        for (value, format, zone) in [
            ("2026-03-01T11:00:00", "%Y-%m-%dT%H:%M:%S", Some("+03:00")),
            ("2019-02-15T17:29:03+0000", "%Y-%m-%dT%H:%M:%S%z", None),
            ("2026-03-01T08:00:00Z", "rfc3339", None),
            ("1772352000", "unix_s", None),
        ] {
            let ms = cursor_ms(value, format, zone).unwrap();
            assert_eq!(format_ms(ms, format, zone).as_deref(), Some(value), "{format}");
        }
        // 11:00 in Moscow is 08:00 UTC.
        assert_eq!(
            cursor_ms("2026-03-01T11:00:00", "%Y-%m-%dT%H:%M:%S", Some("+03:00")),
            cursor_ms("2026-03-01T08:00:00Z", "rfc3339", None)
        );
        assert_eq!(cursor_ms("12345", "%Y-%m-%dT%H:%M:%S", None), None);
    }

    #[test]
    fn paths_templates_tables_times_and_scales() {
        let item = json!({"id": 77, "updatedAt": "2026-03-01 12:30:00", "buyer": {"id": "c-1"},
            "total": "1234.50", "sex": 1, "email": "A@B.RU",
            "items": [{"offerId": "p1", "count": 2, "price": 10.5}],
            "ts": "2019-02-15T17:29:03+0000"});
        let mapping = spec(
            r#"
            customer_id = "buyer.id"
            event_id = { template = "order-{id}-{updatedAt}" }
            event_time = { path = "updatedAt", time_format = "%Y-%m-%d %H:%M:%S", time_zone = "+03:00" }
            total_kopecks = { path = "total", scale = 100 }
            sex = { path = "sex", map = { "0" = "unknown", "1" = "female", "2" = "male" } }
            email = { path = "email", lowercase = true }
            channel = { value = "store" }
            posted = { path = "ts", time_format = "%Y-%m-%dT%H:%M:%S%z" }
            missing = "nowhere.at.all"
            lines = { path = "items", fields = { product_id = "offerId", quantity = "count", price_kopecks = { path = "price", scale = 100 } } }
            "#,
        );
        let out = apply(&item, &mapping).unwrap();
        assert_eq!(out["customer_id"], "c-1");
        assert_eq!(out["event_id"], "order-77-2026-03-01 12:30:00");
        // 12:30 in Moscow is 09:30 UTC.
        assert_eq!(out["event_time"], 1_772_357_400_000i64);
        assert_eq!(out["total_kopecks"], 123_450);
        assert_eq!(out["sex"], "female");
        assert_eq!(out["email"], "a@b.ru");
        assert_eq!(out["channel"], "store");
        assert_eq!(out["posted"], 1_550_251_743_000i64);
        assert!(out.get("missing").is_none());
        assert_eq!(
            out["lines"],
            json!([{"product_id": "p1", "quantity": 2, "price_kopecks": 1050}])
        );
    }

    #[test]
    fn failures_name_the_field() {
        let mapping = spec(r#"sex = { path = "sex", map = { "1" = "female" } }"#);
        let e = apply(&json!({"sex": 7}), &mapping).unwrap_err();
        assert!(e.starts_with("sex:") && e.contains("\"7\""), "{e}");
        let mapping = spec(r#"event_id = { template = "x-{id}" }"#);
        assert!(apply(&json!({}), &mapping).unwrap_err().contains("{id}"));
        let mapping = spec(r#"t = { path = "t", time_format = "%d.%m.%Y" }"#);
        assert_eq!(
            apply(&json!({"t": "5.3.1990"}), &mapping).unwrap()["t"],
            636_595_200_000i64
        );
        assert!(
            apply(&json!({"t": "12.7"}), &mapping)
                .unwrap_err()
                .starts_with("t: time")
        );
    }
}
