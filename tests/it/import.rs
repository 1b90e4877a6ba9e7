//! `hoffrec import` on the real broker: a Windows-1251 YML catalogue feed and a Metrica
//! visits TSV export land in their raw topics through the declared mappings; an offer
//! without a price and a short TSV row go to the dead-letter topic with the reason.

use crate::common;

use crate::common::lab::{Lab, field};
use apache_avro::types::Value as V;
use hoffrec::codec::SchemaSet;

const FEED: &str = r#"<?xml version="1.0" encoding="windows-1251"?>
<yml_catalog date="2026-11-20 09:00"><shop><name>Hoff</name><company>Hoff</company><url>https://hoff.ru</url>
 <currencies><currency id="RUR" rate="1"/></currencies>
 <categories><category id="1">Сад</category><category id="10" parentId="1">Садовая мебель</category>
  <category id="11" parentId="10">Качели</category><category id="2">Текстиль</category><category id="20" parentId="2">Шторы</category></categories>
 <offers>
  <offer id="80642640" available="true"><name>Качели садовые «Лето»</name><vendor>Hoff</vendor><price>45990</price><oldprice>52990.50</oldprice>
   <currencyId>RUR</currencyId><categoryId>11</categoryId><url>https://hoff.ru/p/80642640</url>
   <param name="Цвет">серый</param><param name="Ширина" unit="см">240</param></offer>
  <offer id="70000001" available="false"><name>Штора блэкаут</name><price>2990</price><categoryId>20</categoryId></offer>
  <offer id="70000002"><name>Штора без цены</name><categoryId>20</categoryId></offer>
 </offers></shop></yml_catalog>"#;

const VISITS: &str = "ym:s:visitID\tym:s:clientID\tym:s:dateTime\tym:s:lastTrafficSource\tym:s:lastSearchEngineRoot\tym:s:referer\tym:s:startURL\n\
7311111111111111111\t1700000000123456789\t2026-11-20 21:14:03\torganic\tgoogle\thttps://www.google.com/\thttps://hoff.ru/catalog/sad/kacheli/\n\
7311111111111111112\t1700000000123456790\t2026-11-20 23:59:59\tdirect\t\t\thttps://hoff.ru/\n\
7311111111111111113\t17\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_yml_feed_and_a_metrica_export_import_through_their_mappings() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let catalogue = lab.add_topic("raw.store.catalogue.toml", "catalogue");
    let visits = lab.add_topic("raw.site.session_start.toml", "session_start");
    lab.apply_catalog().await;
    let (feed, _, _) = encoding_rs::WINDOWS_1251.encode(FEED);
    let feed_path = lab.dir.path().join("feed.yml");
    std::fs::write(&feed_path, &feed).unwrap();
    let visits_path = lab.dir.path().join("visits.tsv");
    std::fs::write(&visits_path, VISITS).unwrap();

    let (ok, out, err) = lab.run(&["import", "--source", &catalogue, feed_path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    if summary["records"] != 2 {
        let reasons: Vec<String> = lab
            .read_topic(&lab.dlq)
            .into_iter()
            .map(|d| d.1["hoffrec.error.message"].clone())
            .collect();
        panic!("{summary}: {reasons:?}");
    }
    assert_eq!(summary["dead_letters"], 1, "{summary}");

    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    let products: Vec<V> = lab
        .read_topic(&catalogue)
        .iter()
        .map(|(v, _)| schemas.decode(v, "catalogue_product").unwrap())
        .collect();
    let swing = products
        .iter()
        .find(|p| field(p, "product_id") == &V::String("80642640".into()))
        .unwrap();
    assert_eq!(field(swing, "name"), &V::String("Качели садовые «Лето»".into()));
    assert_eq!(
        field(swing, "category_path"),
        &V::Array(vec![
            V::String("Сад".into()),
            V::String("Садовая мебель".into()),
            V::String("Качели".into())
        ])
    );
    assert_eq!(field(swing, "price_kopecks"), &V::Long(4_599_000));
    assert_eq!(
        field(swing, "old_price_kopecks"),
        &V::Union(1, Box::new(V::Long(5_299_050)))
    );
    assert_eq!(field(swing, "available"), &V::Boolean(true));
    // "2026-11-20 09:00" without an offset is Moscow time: 06:00 UTC.
    assert_eq!(field(swing, "event_time"), &V::TimestampMillis(1_795_154_400_000));
    let V::Map(attributes) = field(swing, "attributes") else {
        panic!()
    };
    assert_eq!(attributes["Ширина, см"], V::String("240".into()));

    let (ok, out, err) = lab.run(&["import", "--source", &visits, visits_path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["records"], 2, "{summary}");
    assert_eq!(summary["dead_letters"], 1, "{summary}");
    let sessions: Vec<V> = lab
        .read_topic(&visits)
        .iter()
        .map(|(v, _)| schemas.decode(v, "site_session_start").unwrap())
        .collect();
    let first = sessions
        .iter()
        .find(|s| field(s, "session_id") == &V::String("metrica-7311111111111111111".into()))
        .unwrap();
    assert_eq!(field(first, "traffic_source"), &V::Enum(1, "search".into()));
    assert_eq!(
        field(first, "customer_id"),
        &V::String("anon:ym-1700000000123456789".into())
    );
    let second = sessions
        .iter()
        .find(|s| field(s, "session_id") == &V::String("metrica-7311111111111111112".into()))
        .unwrap();
    assert_eq!(
        field(second, "referrer"),
        &V::Union(0, Box::new(V::Null)),
        "empty is missing"
    );

    let dead = lab.read_topic(&lab.dlq);
    let classes: Vec<&str> = dead.iter().map(|d| d.1["hoffrec.error.class"].as_str()).collect();
    assert_eq!(classes.len(), 2, "{dead:?}");
    assert!(
        classes.contains(&"invalid_item") && classes.contains(&"unreadable_row"),
        "{classes:?}"
    );
    let no_price = dead
        .iter()
        .find(|d| d.1["hoffrec.error.class"] == "invalid_item")
        .unwrap();
    assert!(
        no_price.1["hoffrec.error.message"].contains("price_kopecks"),
        "{:?}",
        no_price.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_district_price_index_csv_imports_and_a_bad_row_is_kept() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.district.price_index.toml", "price_index");
    lab.apply_catalog().await;
    let path = lab.dir.path().join("prices.csv");
    std::fs::write(
        &path,
        "region,city,district,month,segment,price_per_m2\n\
         Москва,Москва,Хамовники,2026-10-01,secondary,\"1250000.50\"\n\
         Московская область,Красногорск,Опалиха,2026-10-01,new_build,210000\n\
         Москва,Москва,Арбат,2026-10-01,secondary,дорого\n",
    )
    .unwrap();
    let (ok, out, err) = lab.run(&["import", "--source", &topic, path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (summary["records"].as_u64(), summary["dead_letters"].as_u64()),
        (Some(2), Some(1)),
        "{summary}"
    );
    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    let rows: Vec<V> = lab
        .read_topic(&topic)
        .iter()
        .map(|(v, _)| schemas.decode(v, "district_price_index").unwrap())
        .collect();
    let khamovniki = rows
        .iter()
        .find(|r| field(r, "district") == &V::String("Хамовники".into()))
        .unwrap();
    assert_eq!(field(khamovniki, "price_per_sq_m_kopecks"), &V::Long(125_000_050));
    assert_eq!(field(khamovniki, "market"), &V::Enum(2, "secondary".into()));
    // 2026-10-01 is day 20727 since the epoch.
    assert_eq!(field(khamovniki, "period_start"), &V::Date(20727));
    let dead = lab.read_topic(&lab.dlq);
    assert!(
        dead[0].1["hoffrec.error.message"].contains("price_per_sq_m_kopecks"),
        "{:?}",
        dead[0].1
    );
}
