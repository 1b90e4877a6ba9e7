//! Erasure on the real broker and HDFS: a customer with orders, visits, a VK profile and a
//! register record, landed through the simulator's APIs, the connectors, the collector and
//! ingest and folded into the marts, is erased by `hoffrec forget`, which is killed -9
//! part-way and run again. Spark then finds no row of theirs (by id, or by their register
//! record's cadastral number) in any table, at the current version or in any data file
//! left after the vacuum; other customers keep every row; the list topic has a tombstone;
//! the audit record names every table; their later events are dropped at ingest until
//! they consent again.

use crate::common;
use crate::common::lab::Lab;
use crate::simulate::{land_world, landed};
use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every lake table of the lab that may hold a customer (as `hoffrec forget` lists them).
fn lake_tables(lab: &Lab, sql: &std::path::Path) -> Vec<String> {
    let catalog = hoffrec::catalog::Catalog::load(&lab.topics_dir, &lab.schemas_dir).unwrap();
    let mut paths: Vec<String> = catalog
        .raw_topics()
        .map(|t| hoffrec::lake::raw::path(&t.name))
        .collect();
    let marts = hoffrec::mart::files::load(sql).unwrap();
    paths.extend(
        marts
            .iter()
            .filter(|f| f.is_mart())
            .map(|f| hoffrec::lake::mart::path(&f.name)),
    );
    paths
}

/// (all rows, the customer's rows) of a table at its newest version.
async fn rows(lab: &Lab, path: &str, customer: &str) -> (u64, u64) {
    let table = hoffrec::lake::open_table(&lab.lake_url(), path).await.unwrap();
    if table.version().is_none() {
        return (0, 0);
    }
    let ctx = datafusion::prelude::SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", table.table_provider().await.unwrap()).unwrap();
    let has_customer = ctx
        .table("t")
        .await
        .unwrap()
        .schema()
        .field_with_unqualified_name("customer_id")
        .is_ok();
    let hers = if has_customer {
        format!("sum(CASE WHEN customer_id = '{customer}' THEN 1 ELSE 0 END)")
    } else {
        "0".into()
    };
    let batches = ctx
        .sql(&format!(
            "SELECT count(*) AS n, CAST(coalesce({hers}, 0) AS BIGINT) AS hers FROM t"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let b = &batches[0];
    (
        b.column(0).as_primitive::<Int64Type>().value(0) as u64,
        b.column(1).as_primitive::<Int64Type>().value(0) as u64,
    )
}

async fn counts(lab: &Lab, tables: &[String], customer: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for t in tables {
        out.insert(t.clone(), rows(lab, t, customer).await);
    }
    out
}

/// Every record of a topic as (key, value), tombstones as `None`.
fn keyed(lab: &Lab, topic: &str) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &lab.brokers)
        .set("group.id", common::unique("read"))
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut left = 0;
    for p in 0..metadata.topics()[0].partitions().len() as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        left += high - low;
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while left > 0 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            left -= 1;
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

async fn post(collector: &str, events: &[Json]) {
    let answer = reqwest::Client::new()
        .post(format!("http://{collector}/v1/events"))
        .header("content-type", "application/json")
        .body(json!({ "events": events }).to_string())
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap());
}

fn product_view(customer: &str, product: &str) -> Json {
    json!({"type": "product_view", "event_id": common::unique("view"), "event_time": chrono::Utc::now().timestamp_millis(),
        "customer_id": customer, "session_id": common::unique("s"), "product_id": product, "dwell_ms": 1000,
        "price_kopecks": null, "list_id": null, "position": null})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_customer_is_gone_everywhere_also_after_a_kill_9() {
    use hoffrec::simulate::world;
    const SEED: u64 = 11;
    const CUSTOMERS: usize = 40;
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let sql_dir = lab.add_unique_raw_topics().await;
    let sql = sql_dir.to_str().unwrap();
    let env = [("HOFFREC__MART__SQL_DIR", sql)];
    let topic = |suffix: &str| format!("raw.{}.{suffix}", lab.raw.split('.').nth(1).unwrap());
    let w = world::generate(SEED, CUSTOMERS);
    let who = w
        .customers
        .iter()
        .find(|c| {
            c.vk_id.is_some()
                && w.register.iter().any(|r| r.customer_id == c.id)
                && w.orders.iter().any(|o| o.customer_id == c.id)
        })
        .expect("seed 11 draws a customer with orders, VK and a register record");
    let cadastral = w
        .register
        .iter()
        .find(|r| r.customer_id == who.id)
        .unwrap()
        .cadastral_number
        .clone();
    let crate::simulate::Landed {
        mut collector,
        collector_addr,
        mut simulator,
        mut ingest,
        ..
    } = land_world(&lab, SEED, &w, "forget").await;
    let (ok, _, err) = lab.command_with_env(&["mart", "run", "--once"], &env);
    assert!(ok, "{err}");
    let tables = lake_tables(&lab, &sql_dir);
    let before = counts(&lab, &tables, &who.id).await;
    for held in [
        "store.order",
        "vk.profile",
        "register.real_estate",
        "site.session_start",
        "site.consent",
    ] {
        let path = hoffrec::lake::raw::path(&topic(held));
        assert!(before[&path].1 > 0, "{held} holds her rows: {before:?}");
    }
    for mart in ["customer_portrait", "order_state", "session"] {
        assert!(before[&hoffrec::lake::mart::path(mart)].1 > 0, "{mart}: {before:?}");
    }

    // A dead letter naming her and one naming someone else (not Avro: ingest keeps them).
    let other = w.customers.iter().find(|c| c.id != who.id).unwrap();
    let letter = |id: &str| (id.to_string(), format!("not avro, customer {id}").into_bytes());
    lab.send_all(&lab.producer(), &[letter(&who.id), letter(&other.id)])
        .await;
    let names = |v: &Option<Vec<u8>>, id: &str| v.as_deref().is_some_and(|b| b == letter(id).1.as_slice());
    common::poll_until("both dead letters", Duration::from_secs(60), || async {
        let letters = keyed(&lab, &lab.dlq);
        (letters.iter().any(|(_, v)| names(v, &who.id)) && letters.iter().any(|(_, v)| names(v, &other.id)))
            .then_some(())
    })
    .await;

    // The first run is killed once it has erased her from some tables but not all.
    let mut first = lab.hoffrec(&["forget", "--customer", &who.id, "--reason", "account deleted"], &env);
    // The first table holding her that it DELETEs from (tables go in this order).
    let earliest = tables.iter().find(|t| before[*t].1 > 0).unwrap().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while rows(&lab, &earliest, &who.id).await.1 > 0 && first.exited().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            common::lab::tail(&first.log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        first.exited().is_none(),
        "killed mid-way, not after: {}",
        common::lab::tail(&first.log)
    );
    first.kill9();
    let part = counts(&lab, &tables, &who.id).await;
    assert!(
        part.values().any(|(_, hers)| *hers > 0),
        "some of her rows were left by the kill: {part:?}"
    );

    // Run again, vacuuming at once: it completes.
    let vacuum_now = [
        ("HOFFREC__MART__SQL_DIR", sql),
        ("HOFFREC__MART__MAINTENANCE__VACUUM_RETENTION_HOURS", "0"),
    ];
    let (ok, out, err) = lab.command_with_env(
        &[
            "forget",
            "--customer",
            &who.id,
            "--reason",
            "account deleted",
            "--vacuum",
        ],
        &vacuum_now,
    );
    assert!(ok, "{err}");
    let report: Json = serde_json::from_str(&out).unwrap();
    assert!(report["files_vacuumed"].as_u64().unwrap() > 0, "{report:#}");
    let after = counts(&lab, &tables, &who.id).await;
    for t in &tables {
        let ((all, hers), (now, left)) = (before[t], after[t]);
        assert_eq!(left, 0, "{t} still holds her rows");
        // Marts recompute as ingest goes on; raw tables lose exactly her rows.
        if t.starts_with("raw/") {
            assert_eq!(now, all - hers, "{t}: other customers' rows unchanged");
        }
    }

    // The status says done, per table.
    let (ok, out, err) = lab.command_with_env(&["forget", "--status", &who.id], &env);
    assert!(ok, "{err}");
    let status: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(status["complete"], true, "{status:#}");
    assert_eq!(status["tables"].as_array().unwrap().len(), tables.len(), "{status:#}");

    // The audit record: every table, the versions, her only as a hash.
    let audit = lab.topic_of(hoffrec::catalog::Role::Audit);
    let schemas = lab.schemas();
    let records: Vec<Json> = keyed(&lab, &audit)
        .into_iter()
        .filter_map(|(_, v)| v)
        .map(|v| Json::try_from(schemas.decode(&v, "erasure_audit").unwrap()).unwrap())
        .collect();
    let last = records.last().expect("an audit record");
    assert_eq!(last["customer_hash"], hoffrec::lake::erased::hash(&who.id));
    let named: Vec<&str> = last["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(named, tables.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!serde_json::to_string(last).unwrap().contains(&who.id), "{last:#}");

    // Her list is tombstoned.
    let recs = lab.topic_of(hoffrec::catalog::Role::Recommendations);
    let hers: Vec<_> = keyed(&lab, &recs)
        .into_iter()
        .filter(|(k, _)| k.as_deref() == Some(&who.id))
        .collect();
    assert!(matches!(hers.last(), Some((_, None))), "a tombstone last: {hers:?}");

    // Her dead letter and her consents are tombstoned on their compacted topics; the other
    // customer's letter stays.
    let live = |topic: &str| {
        let mut newest = BTreeMap::new();
        for (k, v) in keyed(&lab, topic) {
            newest.insert(k.expect("compacted topics have keys"), v);
        }
        newest
    };
    let letters = live(&lab.dlq);
    assert!(
        !letters.values().any(|v| names(v, &who.id)),
        "her dead letter is tombstoned"
    );
    assert!(letters.values().any(|v| names(v, &other.id)), "the other letter stays");
    let consents = topic("site.consent");
    let hers_named = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .is_some_and(|b| b.windows(who.id.len()).any(|w| w == who.id.as_bytes()))
    };
    assert!(
        keyed(&lab, &consents).iter().any(|(_, v)| hers_named(v)),
        "she had consents"
    );
    assert!(!live(&consents).values().any(hers_named), "her consents are tombstoned");
    for t in [lab.dlq.as_str(), consents.as_str()] {
        let erased = report["topics"].as_array().unwrap().iter().find(|e| e["topic"] == t);
        assert!(
            erased.is_some_and(|e| e["tombstones"].as_u64() > Some(0)),
            "{t}: {report:#}"
        );
    }

    // Spark, reading the lake itself, finds nothing of her: not by id, not by her record.
    let urls: Vec<String> = tables
        .iter()
        .filter(|t| after[*t].0 > 0 || before[*t].0 > 0)
        .map(|t| lab.lake_url().table_url(t).unwrap().to_string())
        .collect();
    let spark = std::process::Command::new("python3")
        .arg(common::repo().join("tests/spark/erased.py"))
        .args([who.id.as_str(), cadastral.as_str()])
        .args(&urls)
        .output()
        .expect("python3 runs (tests/setup.sh installs pyspark and delta-spark)");
    let stdout = String::from_utf8_lossy(&spark.stdout);
    assert!(
        spark.status.success(),
        "spark: {stdout}\n{}",
        String::from_utf8_lossy(&spark.stderr)
    );
    let seen: Json = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for url in &urls {
        assert_eq!(seen[url]["current"], 0, "{url}: {seen:#}");
        assert_eq!(seen[url]["any_file"], 0, "{url}, data files after vacuum: {seen:#}");
    }

    // Her next visit is dropped at ingest; someone else's lands.
    let views = lab.raw.clone();
    let views_path = hoffrec::lake::raw::path(&views);
    let product = &w.products[0].id;
    let landed_before = landed(&lab, &views).await.unwrap();
    post(
        &collector_addr,
        &[product_view(&who.id, product), product_view(&other.id, product)],
    )
    .await;
    common::poll_until("the other customer's view landed", Duration::from_secs(60), || async {
        landed(&lab, &views).await.filter(|n| *n > landed_before)
    })
    .await;
    assert_eq!(rows(&lab, &views_path, &who.id).await.1, 0, "her view was dropped");

    // She consents again: her events land from then on.
    post(
        &collector_addr,
        &[json!({"type": "consent", "event_id": common::unique("consent"), "event_time": chrono::Utc::now().timestamp_millis(),
            "customer_id": who.id, "purpose": "social_profile", "action": "given", "networks": [], "channel": "site"})],
    )
    .await;
    common::poll_until(
        "her view lands after the new consent",
        Duration::from_secs(90),
        || async {
            post(&collector_addr, &[product_view(&who.id, product)]).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            (rows(&lab, &views_path, &who.id).await.1 > 0).then_some(())
        },
    )
    .await;

    assert!(ingest.stop(), "{}", common::lab::tail(&ingest.log));
    assert!(simulator.stop());
    assert!(collector.stop());
}

/// The site's way in: an `erasure_request` on `privacy.erasure`, carried out by `hoffrec
/// forget --follow`, which records it on the audit topic.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_request_from_the_site_is_carried_out() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let schemas = lab.schemas();
    let producer = lab.producer();
    let views = schemas.current("product_view").unwrap();
    let records: Vec<(String, Vec<u8>)> = (0..3u64)
        .flat_map(|c| (0..5).map(move |i| (c, i)))
        .map(|(c, i)| {
            let event = common::lab::product_view(&format!("e{c}-{i}"), c, None);
            (format!("c{c}"), hoffrec::codec::encode_with(views, event).unwrap())
        })
        .collect();
    lab.send_all(&producer, &records).await;
    let mut ingest = lab.ingest(&common::unique("follow"), &[]);
    common::poll_until("15 views landed", Duration::from_secs(120), || async {
        landed(&lab, &lab.raw).await.filter(|n| *n >= 15)
    })
    .await;
    let mut follow = lab.hoffrec(&["forget", "--follow"], &[]);
    let request = json!({"request_id": common::unique("req"), "customer_id": "c1", "reason": "account deleted",
        "requested_at": chrono::Utc::now().timestamp_millis()});
    let version = schemas.current("erasure_request").unwrap();
    let payload = hoffrec::codec::encode_with(
        version,
        hoffrec::codec::json::to_avro(&request, &version.schema).unwrap(),
    )
    .unwrap();
    let erasure = lab.topic_of(hoffrec::catalog::Role::Erasure);
    hoffrec::kafka::send_and_wait(
        &producer,
        rdkafka::producer::FutureRecord::to(&erasure)
            .key("c1")
            .payload(&payload),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let audit = lab.topic_of(hoffrec::catalog::Role::Audit);
    let hash = hoffrec::lake::erased::hash("c1");
    let record = common::poll_until("the audit record", Duration::from_secs(120), || async {
        keyed(&lab, &audit)
            .into_iter()
            .filter_map(|(_, v)| v)
            .map(|v| Json::try_from(schemas.decode(&v, "erasure_audit").unwrap()).unwrap())
            .find(|r| r["customer_hash"] == hash)
    })
    .await;
    assert_eq!(record["request_id"], request["request_id"], "{record:#}");
    assert_eq!(record["reason"], "account deleted", "{record:#}");
    let path = hoffrec::lake::raw::path(&lab.raw);
    let table = record["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == path)
        .unwrap()
        .clone();
    assert_eq!(table["rows_deleted"], 5, "{record:#}");
    assert_eq!(rows(&lab, &path, "c1").await, (10, 0));
    assert!(follow.stop(), "{}", common::lab::tail(&follow.log));
    assert!(ingest.stop(), "{}", common::lab::tail(&ingest.log));
}
