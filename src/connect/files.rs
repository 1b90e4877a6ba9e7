//! File drops read into JSON items, one per offer or row, for the topic's declared
//! mapping: YML catalogue feeds (XML, UTF-8 or Windows-1251), Yandex Metrica Logs API TSV
//! exports, CSV order exports. A row that cannot be read is returned as an error with its
//! text, so the importer can dead-letter it and go on.

use crate::catalog::source::{FileFormat, FileSpec};
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown encoding {0:?}")]
    Encoding(String),
    #[error("{0}")]
    Malformed(String),
}

/// One item, or the text of a part that could not be read and why.
pub type Item = Result<Json, (String, String)>;

/// Reads `bytes` as `spec` says.
pub fn read(bytes: &[u8], spec: &FileSpec) -> Result<Vec<Item>, FileError> {
    let text = decode(bytes, spec.encoding.as_deref())?;
    match spec.format {
        FileFormat::Yml => yml(&text),
        FileFormat::Tsv => Ok(tsv(&text)),
        FileFormat::Csv => csv_rows(&text),
    }
}

fn decode(bytes: &[u8], label: Option<&str>) -> Result<String, FileError> {
    let declared = label.map(str::to_string).or_else(|| xml_encoding(bytes));
    let encoding = match declared {
        Some(l) => encoding_rs::Encoding::for_label(l.trim().as_bytes()).ok_or(FileError::Encoding(l))?,
        None => encoding_rs::UTF_8,
    };
    // A byte-order mark wins over the label, as browsers do.
    let (text, _, _) = encoding.decode(bytes);
    Ok(text.into_owned())
}

/// `encoding="..."` from an XML declaration, if the file starts with one.
fn xml_encoding(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    let decl = head.strip_prefix("<?xml")?.split("?>").next()?.to_string();
    let value = &decl[decl.find("encoding=")? + "encoding=".len()..];
    // The quote may be any character in a broken file (the fuzz suite found a multi-byte one).
    let quote = value.chars().next()?;
    value[quote.len_utf8()..].split(quote).next().map(str::to_string)
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// One item per `<offer>`: its attributes and child elements by name, `params` as a map
/// (`name, unit` keys when a unit is given), `category_path` from the category tree and
/// `feed_time_ms` from `yml_catalog@date` (RFC 3339 or `YYYY-MM-DD hh:mm` Moscow time).
fn yml(text: &str) -> Result<Vec<Item>, FileError> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut categories: HashMap<String, (String, Option<String>)> = HashMap::new();
    let mut offers: Vec<Map<String, Json>> = Vec::new();
    let mut feed_time_ms: Option<i64> = None;
    let mut stack: Vec<String> = Vec::new();
    let mut offer: Option<Map<String, Json>> = None;
    let mut params = Map::new();
    let mut pending: Option<(String, Option<String>)> = None;
    let mut category: Option<(String, Option<String>)> = None;
    let mut text_buf = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| FileError::Malformed(format!("YML at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"yml_catalog" => {
                feed_time_ms = attr(&e, "date").and_then(|d| feed_time(&d));
                stack.push("yml_catalog".into());
            }
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match name.as_str() {
                    "offer" => {
                        let mut o = Map::new();
                        o.insert("id".into(), json!(attr(&e, "id").unwrap_or_default()));
                        let available = attr(&e, "available").is_none_or(|a| a != "false");
                        o.insert("available".into(), json!(available));
                        offer = Some(o);
                        params = Map::new();
                    }
                    "category" => category = Some((attr(&e, "id").unwrap_or_default(), attr(&e, "parentId"))),
                    "param" => pending = Some((attr(&e, "name").unwrap_or_default(), attr(&e, "unit"))),
                    _ => {}
                }
                text_buf.clear();
                stack.push(name);
            }
            Event::Text(t) => text_buf.push_str(&t.decode().map(|v| v.into_owned()).unwrap_or_default()),
            Event::GeneralRef(r) => {
                let name = r.decode().map(|v| v.into_owned()).unwrap_or_default();
                match quick_xml::escape::resolve_predefined_entity(&name) {
                    Some(c) => text_buf.push_str(c),
                    None => {
                        let code = name.strip_prefix("#x").map_or_else(
                            || name.strip_prefix('#').and_then(|d| d.parse::<u32>().ok()),
                            |h| u32::from_str_radix(h, 16).ok(),
                        );
                        text_buf.extend(code.and_then(char::from_u32));
                    }
                }
            }
            Event::CData(t) => text_buf.push_str(&String::from_utf8_lossy(&t.into_inner())),
            Event::End(e) => {
                let value = std::mem::take(&mut text_buf).trim().to_string();
                let name = stack.pop().unwrap_or_default();
                if let Some((id, parent)) = category.take() {
                    categories.insert(id, (value, parent));
                } else if let Some((pname, unit)) = pending.take() {
                    let key = unit.map_or(pname.clone(), |u| format!("{pname}, {u}"));
                    params.insert(key, json!(value));
                } else if let Some(o) = offer.as_mut()
                    && stack.last().is_some_and(|p| p == "offer")
                {
                    o.insert(name, json!(value));
                }
                if e.name().as_ref() == b"offer"
                    && let Some(mut o) = offer.take()
                {
                    o.insert("params".into(), Json::Object(std::mem::take(&mut params)));
                    offers.push(o);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(offers
        .into_iter()
        .map(|mut o| {
            let leaf = o.get("categoryId").and_then(Json::as_str).map(str::to_string);
            let path = leaf.map(|id| category_path(&categories, &id)).unwrap_or_default();
            o.insert("category_path".into(), json!(path));
            if let Some(ms) = feed_time_ms {
                o.insert("feed_time_ms".into(), json!(ms));
            }
            Ok(Json::Object(o))
        })
        .collect())
}

/// Names from the root to `leaf`; a missing parent ends the path, a cycle is cut.
fn category_path(categories: &HashMap<String, (String, Option<String>)>, leaf: &str) -> Vec<String> {
    let mut path = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut at = Some(leaf.to_string());
    while let Some(id) = at {
        if !seen.insert(id.clone()) {
            break;
        }
        let Some((name, parent)) = categories.get(&id) else {
            break;
        };
        path.push(name.clone());
        at = parent.clone();
    }
    path.reverse();
    path
}

fn feed_time(date: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(date) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = chrono::DateTime::parse_from_str(date, "%Y-%m-%dT%H:%M%:z") {
        return Some(t.timestamp_millis());
    }
    let naive = chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M").ok()?;
    // Older feeds write Moscow time without an offset.
    Some(naive.and_utc().timestamp_millis() - 3 * 3600 * 1000)
}

/// Metrica TSV: a header row of `ym:` names; `\t`, `\n`, `\\` and `\'` escapes; an empty
/// value means missing. Rows with the wrong number of columns are errors.
fn tsv(text: &str) -> Vec<Item> {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split('\t').collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            if cells.len() != names.len() {
                return Err((
                    line.to_string(),
                    format!("{} columns where the header has {}", cells.len(), names.len()),
                ));
            }
            let mut row = Map::new();
            for (name, cell) in names.iter().zip(cells) {
                if !cell.is_empty() {
                    row.insert((*name).to_string(), json!(unescape_tsv(cell)));
                }
            }
            Ok(Json::Object(row))
        })
        .collect()
}

fn unescape_tsv(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn csv_rows(text: &str) -> Result<Vec<Item>, FileError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| FileError::Malformed(format!("CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    Ok(reader
        .records()
        .map(|record| {
            let record = record.map_err(|e| (String::new(), format!("CSV row: {e}")))?;
            let mut row = Map::new();
            for (name, cell) in names.iter().zip(record.iter()) {
                if !cell.is_empty() {
                    row.insert(name.clone(), json!(cell));
                }
            }
            Ok(Json::Object(row))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = r#"<?xml version="1.0" encoding="windows-1251"?>
<yml_catalog date="2024-05-22T14:37+03:00"><shop><name>Store</name>
 <currencies><currency id="RUB" rate="1"/></currencies>
 <categories><category id="1">Сад</category><category id="10" parentId="1">Садовая мебель</category>
  <category id="11" parentId="10">Качели</category><category id="7" parentId="8">Петля</category><category id="8" parentId="7">Цикл</category></categories>
 <offers><offer id="80642640" available="true"><name>Качели &quot;Лето&quot;</name><vendor>BrandA</vendor><price>45990.50</price>
  <oldprice>52990</oldprice><currencyId>RUB</currencyId><categoryId>11</categoryId>
  <param name="Цвет">серый</param><param name="Ширина" unit="см">240</param></offer>
  <offer id="2" available="false"><name>Петля</name><price>10</price><categoryId>7</categoryId></offer></offers></shop></yml_catalog>"#;

    #[test]
    fn an_xml_declaration_quoted_oddly_does_not_panic() {
        // Found by tests/it/fuzz.rs: a multi-byte character where the quote should be.
        let decl = "<?xml version=\"1.0\" encoding=\u{fffd}UTF-8\u{fffd}?><a/>";
        assert_eq!(xml_encoding(decl.as_bytes()).as_deref(), Some("UTF-8"));
        assert_eq!(xml_encoding(b"<?xml encoding=").as_deref(), None);
    }

    #[test]
    fn yml_in_windows_1251_gives_offers_with_category_paths() {
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(FEED);
        let spec = FileSpec {
            format: FileFormat::Yml,
            encoding: None,
        };
        let items: Vec<Json> = read(&bytes, &spec).unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(items.len(), 2);
        let swing = &items[0];
        assert_eq!(swing["id"], "80642640");
        assert_eq!(swing["name"], "Качели \"Лето\"");
        assert_eq!(swing["price"], "45990.50");
        assert_eq!(swing["available"], true);
        assert_eq!(swing["category_path"], json!(["Сад", "Садовая мебель", "Качели"]));
        assert_eq!(swing["params"], json!({"Цвет": "серый", "Ширина, см": "240"}));
        assert_eq!(swing["feed_time_ms"], 1_716_377_820_000i64);
        // A cyclic tree is cut instead of looping.
        assert_eq!(items[1]["category_path"], json!(["Цикл", "Петля"]));
        assert_eq!(items[1]["available"], false);
    }

    #[test]
    fn metrica_tsv_rows_and_a_short_row() {
        let text = "ym:s:visitID\tym:s:clientID\tym:s:referer\tym:s:startURL\n\
                    7311111111111111111\t1700000000123456789\thttps://www.google.com/\thttps://store.example/a\\tb\n\
                    7311111111111111112\t0\t\thttps://store.example/\n\
                    broken\trow\n";
        let spec = FileSpec {
            format: FileFormat::Tsv,
            encoding: Some("utf-8".into()),
        };
        let items = read(text.as_bytes(), &spec).unwrap();
        assert_eq!(items.len(), 3);
        let first = items[0].as_ref().unwrap();
        assert_eq!(first["ym:s:visitID"], "7311111111111111111");
        assert_eq!(first["ym:s:startURL"], "https://store.example/a\tb");
        assert!(
            items[1].as_ref().unwrap().get("ym:s:referer").is_none(),
            "empty means missing"
        );
        let (line, why) = items[2].as_ref().unwrap_err();
        assert_eq!(line, "broken\trow");
        assert!(why.contains("2 columns"), "{why}");
    }

    #[test]
    fn csv_with_quotes() {
        let text = "order_id,customer,total\n\"A-1\",\"Иванова, Анна\",\"100.50\"\n";
        let spec = FileSpec {
            format: FileFormat::Csv,
            encoding: None,
        };
        let items = read(text.as_bytes(), &spec).unwrap();
        assert_eq!(items[0].as_ref().unwrap()["customer"], "Иванова, Анна");
    }
}
