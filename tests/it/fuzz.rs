//! Bounded fuzzing of what strangers and sources hand hoffrec: the collector's JSON turned
//! into Avro for every collector schema, source items through every topic's mapping, file
//! drops (YML, TSV, CSV) and the Avro decoder, on arbitrary and on mutated valid input.
//! Errors are expected; a panic fails. `HOFFREC_FUZZ_CASES` (default 256 per target) runs
//! longer: `HOFFREC_FUZZ_CASES=100000 cargo test --release --test it fuzz::`. No services needed.

use hoffrec::catalog::Catalog;
use hoffrec::catalog::source::{FileFormat, FileSpec};
use proptest::prelude::*;
use serde_json::Value as Json;
use std::path::Path;

fn config() -> ProptestConfig {
    let cases = std::env::var("HOFFREC_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

static CATALOG: std::sync::LazyLock<Catalog> = std::sync::LazyLock::new(|| {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    Catalog::load(&repo.join("topics"), &repo.join("avro")).unwrap()
});

fn catalog() -> &'static Catalog {
    &CATALOG
}

/// Field names the schemas and mappings use, so generated objects reach deep code.
const NAMES: &[&str] = &[
    "type",
    "event_id",
    "event_time",
    "customer_id",
    "session_id",
    "product_id",
    "dwell_ms",
    "price_kopecks",
    "networks",
    "action",
    "purpose",
    "channel",
    "query",
    "quantity",
    "id",
    "updatedAt",
    "items",
    "status",
    "total",
    "customerId",
    "delivery",
    "address",
    "offerId",
    "ym:s:visitID",
    "ym:s:dateTime",
    "month",
    "region",
    "city",
    "district",
    "segment",
];

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        ".{0,24}".prop_map(Json::String),
        prop::sample::select(vec![
            "2026-11-25T12:00:00+03:00",
            "2026-02-30",
            "1795590000000",
            "-1",
            "1e308",
            "vk:1,2,3",
            "given",
            "PAID",
            "99999999999999999999",
            "",
            "NaN",
        ])
        .prop_map(|s| Json::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec((prop::sample::select(NAMES.to_vec()), inner), 0..10)
                .prop_map(|fields| { Json::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn collector_json_into_every_schema(event in json()) {
        let catalog = catalog();
        for topic in catalog.raw_topics() {
            let name = topic.value_schema.clone().unwrap_or_default();
            if let Some(version) = catalog.schemas.current(&name)
                && let Ok(value) = hoffrec::codec::json::to_avro(&event, &version.schema)
            {
                let _ = hoffrec::codec::encode_with(version, value);
            }
        }
    }

    #[test]
    fn source_items_through_every_mapping(item in json()) {
        for topic in catalog().raw_topics() {
            if let Some(source) = &topic.source {
                let _ = hoffrec::connect::mapping::apply(&item, &source.mapping);
            }
        }
    }

    #[test]
    fn file_drops_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), text in ".{0,512}") {
        for format in [FileFormat::Yml, FileFormat::Tsv, FileFormat::Csv] {
            for encoding in [None, Some("windows-1251".to_string())] {
                let spec = FileSpec { format, encoding };
                let _ = hoffrec::connect::files::read(&bytes, &spec);
                let _ = hoffrec::connect::files::read(text.as_bytes(), &spec);
            }
        }
    }

    #[test]
    fn yml_feeds_cut_and_flipped(cut in 0usize..1200, at in 0usize..1200, byte in any::<u8>()) {
        let mut feed = YML.as_bytes().to_vec();
        if let Some(b) = feed.get_mut(at) {
            *b = byte;
        }
        feed.truncate(cut);
        let _ = hoffrec::connect::files::read(&feed, &FileSpec { format: FileFormat::Yml, encoding: None });
    }

    #[test]
    fn avro_of_any_bytes_and_of_flipped_valid_records(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        at in 0usize..64,
        byte in any::<u8>(),
        cut in 0usize..64,
    ) {
        let catalog = catalog();
        let _ = catalog.schemas.decode(&bytes, "product_view");
        let valid = catalog.schemas.encode("product_view", product_view()).unwrap();
        // Past the header too: the fingerprint stays known and the body is what breaks.
        let mut flipped = valid.clone();
        if let Some(b) = flipped.get_mut(at) {
            *b = byte;
        }
        let _ = catalog.schemas.decode(&flipped, "product_view");
        let _ = catalog.schemas.decode(&valid[..cut.min(valid.len())], "product_view");
        let mut prefixed = valid[..10].to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = catalog.schemas.decode(&prefixed, "product_view");
    }
}

fn product_view() -> apache_avro::types::Value {
    let catalog = catalog();
    let version = catalog.schemas.current("product_view").unwrap();
    let event = serde_json::json!({
        "type": "product_view", "event_id": "e1", "event_time": 1_795_590_000_000i64,
        "customer_id": "c1", "session_id": "s1", "product_id": "p1", "dwell_ms": 2500,
        "price_kopecks": 129_900
    });
    hoffrec::codec::json::to_avro(&event, &version.schema).unwrap()
}

const YML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<yml_catalog date="2026-11-01 10:00">
  <shop>
    <categories>
      <category id="1">Ремонт</category>
      <category id="2" parentId="1">Звукоизоляция</category>
    </categories>
    <offers>
      <offer id="p1" available="true">
        <name>Панель &quot;Тишина&quot;</name>
        <price>1290.50</price>
        <categoryId>2</categoryId>
        <vendor>Acme</vendor>
        <param name="Материал">минвата</param>
      </offer>
      <offer id="p2" available="false"><name>Плинтус</name><price>99</price><categoryId>1</categoryId></offer>
    </offers>
  </shop>
</yml_catalog>
"#;
