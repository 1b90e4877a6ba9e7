//! The site's read path on the real broker and HDFS: lists the `recommend` stage publishes
//! are served; an anonymous visitor gets a named fallback; a product going out of stock
//! leaves the served list without a new list; a replica started late is ready only once
//! it has caught up, and then answers the same; kill -9 and a restart answer the same
//! from the snapshot without reading the topic again.

use crate::common;
use crate::common::history::{self, NOW, WORKED};
use crate::common::lab::{Lab, Worker};
use crate::recommend::{announce, folded_lake};
use hoffrec::catalog::Role;
use serde_json::Value as Json;
use std::time::Duration;

struct Answer {
    status: u16,
    etag: Option<String>,
    body: Json,
}

async fn get(addr: &str, path: &str, if_none_match: Option<&str>) -> Option<Answer> {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.ok()?;
    let body = serde_json::from_str(&text).unwrap_or(Json::Null);
    Some(Answer { status, etag, body })
}

fn serve(lab: &Lab, addr: &str, state: &std::path::Path) -> Worker {
    lab.hoffrec(
        &["serve"],
        &[
            ("HOFFREC__HTTP__LISTEN", addr),
            ("HOFFREC__SERVE__STATE_DIR", state.to_str().unwrap()),
            ("HOFFREC__SERVE__SNAPSHOT_INTERVAL_MS", "200"),
            ("HOFFREC__SERVE__CATALOGUE_REFRESH_MS", "200"),
        ],
    )
}

async fn ready(addr: &str) {
    common::poll_until("ready", Duration::from_secs(60), || async {
        get(addr, "/readyz", None).await.filter(|a| a.status == 200).map(|_| ())
    })
    .await;
}

/// The customer's own list as served (not a fallback).
async fn own_list(addr: &str, customer: &str) -> Json {
    common::poll_until(
        &format!("{customer}'s list served"),
        Duration::from_secs(120),
        || async {
            let a = get(addr, &format!("/v1/recommendations/{customer}"), None).await?;
            (a.status == 200 && a.body["fallback"].is_null()).then_some(a.body)
        },
    )
    .await
}

fn products(answer: &Json) -> Vec<String> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product_id"].as_str().unwrap().to_string())
        .collect()
}

/// The catalogue says `product` is out of stock now (a newer catalogue record, landed),
/// and the marts fold it in.
async fn out_of_stock(lab: &Lab, product: &str) {
    let mut catalogue = history::catalogue_and_crowd(3);
    catalogue.extend(history::events());
    let (topic, event, mut item) = catalogue
        .into_iter()
        .find(|(t, _, j)| t == "raw.store.catalogue" && j["product_id"] == product)
        .expect("the product came from the catalogue");
    item["event_id"] = Json::String(common::unique("stock"));
    item["event_time"] = Json::from(NOW);
    item["available"] = Json::Bool(false);
    let lake = lab.lake_url();
    history::land(&lake, &[(topic, event, item)], 1, |_| async {}).await;
    let catalog = hoffrec::catalog::Catalog::load(&lab.topics_dir, &lab.schemas_dir).unwrap();
    let files = hoffrec::mart::files::load(&common::repo().join("mart_sql")).unwrap();
    hoffrec::mart::fold::fold(&lake, &catalog, &files).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn served_lists_follow_the_topic_and_the_catalogue_across_replicas_and_restarts() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    lab.add_raw_topics().await;
    let lake = lab.lake_url();
    folded_lake(&lake).await;
    let (addr, state) = (common::free_addr(), lab.dir.path().join("serve-a"));
    let mut first = serve(&lab, &addr, &state);
    ready(&addr).await;

    // recommend publishes; serve answers with that list.
    let changes = lab.topic_of(Role::MartChanges);
    let (producer, schemas) = (lab.producer(), lab.schemas());
    let mut recommend = lab.hoffrec(&["recommend"], &[("HOFFREC__RECOMMEND__BATCH_MS", "200")]);
    announce(&producer, &schemas, &changes, WORKED).await;
    let list = own_list(&addr, WORKED).await;
    assert!(recommend.stop(), "{}", common::lab::tail(&recommend.log));
    let served = products(&list);
    assert_eq!(served.len(), 10, "{list:#}");
    assert!(
        list["model_version"].is_string() && list["list_age_ms"].is_i64(),
        "{list:#}"
    );
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["reasons"].is_array()),
        "{list:#}"
    );
    eprintln!("first answer {} ms after the list was generated", list["list_age_ms"]);

    // The same answer again is 304 Not Modified under its ETag.
    let path = format!("/v1/recommendations/{WORKED}");
    let a = get(&addr, &path, None).await.unwrap();
    let tag = a.etag.expect("an ETag");
    assert_eq!(get(&addr, &path, Some(&tag)).await.unwrap().status, 304);

    // Visitors without a list get a named fallback, by the page's category when given.
    let anon = get(&addr, "/v1/recommendations/anon:device-1", None)
        .await
        .unwrap()
        .body;
    assert_eq!(anon["fallback"], "popular", "{anon:#}");
    assert!(!products(&anon).is_empty(), "{anon:#}");
    let plants = get(&addr, "/v1/recommendations/stranger?category=73&limit=3", None)
        .await
        .unwrap()
        .body;
    assert_eq!(plants["fallback"], "category_popular", "{plants:#}");
    let mut catalogue = history::catalogue_and_crowd(3);
    catalogue.extend(history::events());
    let category_of = |p: &str| {
        catalogue
            .iter()
            .find(|(t, _, j)| t == "raw.store.catalogue" && j["product_id"] == p)
            .map(|(_, _, j)| j["category_id"].clone())
    };
    assert!(!products(&plants).is_empty(), "{plants:#}");
    for p in products(&plants) {
        assert_eq!(category_of(&p), Some(Json::from("73")), "{p} is a plant: {plants:#}");
    }
    assert_eq!(plants["items"][0]["reasons"][0], "popular_in_category:73");

    // A visitor the site knows only by region gets what that region's customers bought
    // most, by the test's own SQL over the marts.
    let (region, local_best) = region_popular(&lake).await;
    let region_q: String = url::form_urlencoded::byte_serialize(region.as_bytes()).collect();
    let local = get(
        &addr,
        &format!("/v1/recommendations/anon:device-2?region={region_q}&limit=50"),
        None,
    )
    .await
    .unwrap()
    .body;
    assert_eq!(local["fallback"], "region_popular", "{local:#}");
    assert_eq!(products(&local), local_best, "{local:#}");
    assert_eq!(local["items"][0]["reasons"][0], format!("popular_in_region:{region}"));
    let nowhere = get(&addr, "/v1/recommendations/anon:device-3?region=Atlantis", None)
        .await
        .unwrap()
        .body;
    assert_eq!(nowhere["fallback"], "popular", "an unknown region: {nowhere:#}");

    // Her first product goes out of stock in the catalogue: it leaves her served list,
    // which is the same list (no new one was published).
    let gone = served[0].clone();
    out_of_stock(&lab, &gone).await;
    let after = common::poll_until("the product leaves the list", Duration::from_secs(60), || async {
        let a = get(&addr, &path, None).await?.body;
        (!products(&a).contains(&gone)).then_some(a)
    })
    .await;
    assert_eq!(after["list_id"], list["list_id"], "the same list: {after:#}");
    assert_eq!(after["unavailable_dropped"], 1, "{after:#}");
    assert_eq!(products(&after), served[1..], "the rest in order");

    // A replica started now is ready only once it holds what the topic holds.
    let (late_addr, late_state) = (common::free_addr(), lab.dir.path().join("serve-b"));
    let mut late = serve(&lab, &late_addr, &late_state);
    ready(&late_addr).await;
    let at_once = get(&late_addr, &path, None).await.unwrap().body;
    assert_eq!(
        at_once["list_id"], list["list_id"],
        "ready means caught up: {at_once:#}"
    );
    assert!(at_once["fallback"].is_null());

    // Kill -9 and restart: the same answers, from the snapshot, without reading the topic.
    let snapshot = state.join(format!("{}.snapshot", lab.topic_of(Role::Recommendations)));
    common::poll_until("a snapshot", Duration::from_secs(30), || async {
        snapshot.exists().then_some(())
    })
    .await;
    first.kill9();
    let mut again = serve(&lab, &addr, &state);
    ready(&addr).await;
    let restarted = get(&addr, &path, None).await.unwrap().body;
    assert_eq!(restarted["list_id"], list["list_id"], "{restarted:#}");
    assert_eq!(products(&restarted), products(&after));
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let read = hoffrec::telemetry::samples(&metrics)
        .into_iter()
        .find(|s| s.name == "hoffrec_serve_records_total")
        .map(|s| s.value);
    assert_eq!(read, Some(0.0), "nothing read again after the snapshot: {metrics}");
    assert!(again.stop(), "{}", common::lab::tail(&again.log));
    assert!(late.stop(), "{}", common::lab::tail(&late.log));
}

/// `hoffrec refresh` asks for a new list when a product of it can no longer be sold and
/// when a newer model is promoted, without any change to the customer's portrait.
#[tokio::test(flavor = "multi_thread")]
async fn lists_are_made_again_when_a_product_goes_out_of_stock_or_a_model_is_promoted() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    lab.add_raw_topics().await;
    let lake = lab.lake_url();
    folded_lake(&lake).await;
    let (changes, recs) = (lab.topic_of(Role::MartChanges), lab.topic_of(Role::Recommendations));
    let (producer, schemas) = (lab.producer(), lab.schemas());
    let mut recommend = lab.hoffrec(
        &["recommend"],
        &[
            ("HOFFREC__RECOMMEND__BATCH_MS", "200"),
            ("HOFFREC__RECOMMEND__MODEL_CHECK_MS", "100"),
        ],
    );
    let lists = || {
        lab.read_topic(&recs)
            .iter()
            .filter_map(|(v, _)| hoffrec::serve::store::List::decode(&schemas, v).ok())
            .filter(|l| l.customer_id == WORKED)
            .collect::<Vec<_>>()
    };
    announce(&producer, &schemas, &changes, WORKED).await;
    let first = common::poll_until("her first list", Duration::from_secs(120), || async { lists().pop() }).await;
    let mut refresh = lab.hoffrec(&["refresh"], &[("HOFFREC__SERVE__REFRESH_INTERVAL_MS", "300")]);

    // Her first product goes out of stock: a new list comes without it.
    let gone = first.items[0].product_id.clone();
    out_of_stock(&lab, &gone).await;
    let second = common::poll_until("a list without the product", Duration::from_secs(120), || async {
        lists().pop().filter(|l| l.list_id != first.list_id)
    })
    .await;
    assert!(
        second.items.iter().all(|i| i.product_id != gone),
        "{gone} left: {second:?}"
    );

    // A newer model is promoted: her list is made again by it.
    let mut newer = hoffrec::recommend::model::Model::prior();
    newer.version = "m-refresh-2".into();
    hoffrec::recommend::store::promote(&lake, &newer).await.unwrap();
    let third = common::poll_until("a list from the promoted model", Duration::from_secs(120), || async {
        lists().pop().filter(|l| l.model_version == "m-refresh-2")
    })
    .await;
    assert_ne!(third.list_id, second.list_id);
    assert!(refresh.stop(), "{}", common::lab::tail(&refresh.log));
    assert!(recommend.stop(), "{}", common::lab::tail(&recommend.log));
}

/// The region most customers live in, and its customers' most bought sellable products
/// (most buyers first, then by id; at most 50).
async fn region_popular(lake: &hoffrec::lake::LakeUrl) -> (String, Vec<String>) {
    let marts = [
        "customer_product".to_string(),
        "customer_portrait".to_string(),
        "product_features".to_string(),
    ];
    let (ctx, _, _) = hoffrec::mart::session::mart_session(lake, &marts).await.unwrap();
    #[derive(serde::Deserialize)]
    struct Region {
        region: String,
    }
    let region: Vec<Region> = hoffrec::recommend::data::rows(
        &ctx,
        "SELECT region FROM mart.customer_portrait WHERE region IS NOT NULL
         GROUP BY region ORDER BY count(*) DESC, region LIMIT 1",
    )
    .await
    .unwrap();
    let region = region.first().expect("customers with a delivery region").region.clone();
    #[derive(serde::Deserialize)]
    struct Product {
        product_id: String,
    }
    let sql = format!(
        "SELECT cp.product_id, count(*) AS n FROM mart.customer_product cp
         JOIN mart.customer_portrait p ON p.customer_id = cp.customer_id
         JOIN mart.product_features f ON f.product_id = cp.product_id
         WHERE cp.purchased_qty > 0 AND f.available AND p.region = '{}'
         GROUP BY cp.product_id ORDER BY n DESC, cp.product_id LIMIT 50",
        region.replace('\'', "''")
    );
    let best: Vec<Product> = hoffrec::recommend::data::rows(&ctx, &sql).await.unwrap();
    assert!(!best.is_empty(), "{region}'s customers bought something");
    (region, best.into_iter().map(|p| p.product_id).collect())
}

#[derive(serde::Deserialize)]
struct Neighbour {
    product_id: String,
    neighbour_id: String,
}

/// The sellable neighbours of each product in the mart, in the order the site should see
/// them, by the test's own SQL: shared `count` first, then the other count, then id.
async fn neighbours(lake: &hoffrec::lake::LakeUrl, count: &str, other: &str) -> Vec<Neighbour> {
    let marts = ["product_neighbour".to_string(), "product_features".to_string()];
    let (ctx, _, _) = hoffrec::mart::session::mart_session(lake, &marts).await.unwrap();
    let sql = format!(
        "SELECT n.product_id, n.neighbour_id FROM mart.product_neighbour n
         JOIN mart.product_features f ON f.product_id = n.neighbour_id
         WHERE n.{count} > 0 AND f.available AND n.neighbour_id <> n.product_id
         ORDER BY n.product_id, n.{count} DESC, n.{other} DESC, n.neighbour_id"
    );
    hoffrec::recommend::data::rows(&ctx, &sql).await.unwrap()
}

fn of(rows: &[Neighbour], product: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| r.product_id == product)
        .map(|r| r.neighbour_id.clone())
        .collect()
}

fn listed(answer: &Json, list: &str) -> Vec<String> {
    answer[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product_id"].as_str().unwrap().to_string())
        .collect()
}

/// `refresh` publishes each product's related products from `mart.product_neighbour` to
/// `recs.product`; `serve` answers product pages with them, leaves out what goes out of
/// stock, and falls back to the category's popular products for a product nobody shares.
#[tokio::test(flavor = "multi_thread")]
async fn product_pages_get_the_products_the_same_customers_viewed_and_bought() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    lab.add_raw_topics().await;
    let lake = lab.lake_url();
    folded_lake(&lake).await;
    let bought = neighbours(&lake, "co_buyers", "co_viewers").await;
    let viewed = neighbours(&lake, "co_viewers", "co_buyers").await;
    // The product sharing the most customers' purchases, then views, with others.
    let product = {
        let mut counts: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for r in &bought {
            counts.entry(&r.product_id).or_default().0 += 1;
        }
        for r in &viewed {
            counts.entry(&r.product_id).or_default().1 += 1;
        }
        let best = counts.into_iter().max_by_key(|(p, n)| (*n, std::cmp::Reverse(*p)));
        best.expect("the crowd viewed products together").0.to_string()
    };
    let (want_bought, want_similar) = (of(&bought, &product), of(&viewed, &product));
    assert!(want_similar.len() >= 2, "{product}: {want_similar:?}");
    eprintln!("{product}: similar {want_similar:?}, bought together {want_bought:?}");

    let mut refresh = lab.hoffrec(&["refresh"], &[("HOFFREC__SERVE__REFRESH_INTERVAL_MS", "300")]);
    let (addr, state) = (common::free_addr(), lab.dir.path().join("serve"));
    let mut server = serve(&lab, &addr, &state);
    ready(&addr).await;
    let path = format!("/v1/products/{product}/similar?limit=50");
    let page = common::poll_until("the product's related products", Duration::from_secs(120), || async {
        let a = get(&addr, &path, None).await?;
        (a.status == 200 && a.body["fallback"].is_null()).then_some(a.body)
    })
    .await;
    assert_eq!(listed(&page, "bought_together"), want_bought, "{page:#}");
    assert_eq!(listed(&page, "similar"), want_similar, "{page:#}");
    assert!(
        page["similar"][0]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("viewed_together:"),
        "{page:#}"
    );
    // What serve answers is what the topic holds.
    let schemas = lab.schemas();
    let published = lab
        .read_topic(&lab.topic_of(Role::ProductRecommendations))
        .iter()
        .filter_map(|(v, _)| hoffrec::serve::products::decode(&schemas, v).ok())
        .rfind(|l| l.product_id == product)
        .expect("the product's record on recs.product");
    assert_eq!(page["generated_at_ms"], published.generated_at_ms, "{page:#}");

    // The product most viewed with it goes out of stock: it leaves the page, and the
    // record is the same one.
    let gone = want_similar[0].clone();
    out_of_stock(&lab, &gone).await;
    let after = common::poll_until("the product leaves the page", Duration::from_secs(60), || async {
        let a = get(&addr, &path, None).await?.body;
        (!listed(&a, "similar").contains(&gone)).then_some(a)
    })
    .await;
    let without = |l: &[String]| l.iter().filter(|p| **p != gone).cloned().collect::<Vec<_>>();
    assert_eq!(listed(&after, "similar"), without(&want_similar), "{after:#}");
    assert_eq!(listed(&after, "bought_together"), without(&want_bought), "{after:#}");
    assert_eq!(after["generated_at_ms"], page["generated_at_ms"], "{after:#}");
    assert!(after["unavailable_dropped"].as_u64().unwrap() >= 1, "{after:#}");

    // A product nobody shares gets its category's popular products, named; one the
    // catalogue does not know gets the popular ones.
    let unknown = get(&addr, "/v1/products/no-such-product/similar", None)
        .await
        .unwrap()
        .body;
    assert_eq!(unknown["fallback"], "popular", "{unknown:#}");
    assert!(!listed(&unknown, "similar").is_empty(), "{unknown:#}");
    let marts = ["product_neighbour".to_string(), "product_features".to_string()];
    let (ctx, _, _) = hoffrec::mart::session::mart_session(&lake, &marts).await.unwrap();
    #[derive(serde::Deserialize)]
    struct Lonely {
        product_id: String,
        category_id: String,
    }
    let lonely: Vec<Lonely> = hoffrec::recommend::data::rows(
        &ctx,
        "SELECT f.product_id, f.category_id FROM mart.product_features f
         WHERE f.available AND f.category_id IS NOT NULL
           AND f.product_id NOT IN (SELECT product_id FROM mart.product_neighbour)
         ORDER BY f.product_id LIMIT 1",
    )
    .await
    .unwrap();
    let lonely = lonely.first().expect("a product nobody viewed with another");
    let page = get(&addr, &format!("/v1/products/{}/similar", lonely.product_id), None)
        .await
        .unwrap()
        .body;
    assert_eq!(page["fallback"], "category_popular", "{page:#}");
    assert_eq!(
        page["similar"][0]["reasons"][0],
        format!("popular_in_category:{}", lonely.category_id),
        "{page:#}"
    );
    assert!(!listed(&page, "similar").contains(&lonely.product_id), "{page:#}");
    assert!(server.stop(), "{}", common::lab::tail(&server.log));
    assert!(refresh.stop(), "{}", common::lab::tail(&refresh.log));
}
