//! The event collector on the real broker: a burst of concurrent posts loses nothing
//! (events in = records on the raw topic + refusals with reasons, each refusal also on the
//! dead-letter topic), and malformed bodies are refused and kept.

use crate::common;

use crate::common::lab::{Lab, tail};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

fn post(addr: &str, body: &str) -> std::io::Result<(u16, Value)> {
    post_as(addr, body, None)
}

fn post_as(addr: &str, body: &str, key: Option<&str>) -> std::io::Result<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn event(thread: usize, post: usize, i: usize) -> Value {
    let id = format!("t{thread}-p{post}-e{i}");
    let mut e = json!({
        "type": "product_view",
        "event_id": id,
        "event_time": "2026-11-25T12:00:00+03:00",
        "customer_id": format!("c{}", i % 37),
        "session_id": "s1",
        "product_id": format!("p{i}"),
        "dwell_ms": "2500",
        "price_kopecks": 129_900
    });
    // Every seventh event is broken in one of three ways.
    match i % 21 {
        0 => e["customer_id"] = Value::Null,
        7 => e["dwell_ms"] = json!("long"),
        14 => e["type"] = json!("telepathy"),
        _ => {}
    }
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_concurrent_posts_loses_nothing() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(3).await;
    let (mut collector, addr) = lab.collect().await;

    let (threads, posts, per_post) = (8, 15, 21);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let (mut accepted, mut rejected) = (0u64, 0u64);
                for p in 0..posts {
                    let events: Vec<Value> = (0..per_post).map(|i| event(t, p, i)).collect();
                    let (status, answer) = post(&addr, &json!({ "events": events }).to_string()).unwrap();
                    assert_eq!(status, 200, "{answer}");
                    accepted += answer["accepted"].as_u64().unwrap();
                    for r in answer["rejected"].as_array().unwrap() {
                        assert!(!r["reason"].as_str().unwrap().is_empty());
                        assert_eq!(r["retry"], false, "{r}");
                        rejected += 1;
                    }
                }
                (accepted, rejected)
            })
        })
        .collect();
    let (mut accepted, mut rejected) = (0, 0);
    for h in handles {
        let (a, r) = h.join().unwrap();
        accepted += a;
        rejected += r;
    }
    let sent = (threads * posts * per_post) as u64;
    assert_eq!(accepted + rejected, sent);
    assert_eq!(rejected, (threads * posts * 3) as u64, "three broken events per post");

    let (status, answer) = post(&addr, "{\"events\": not json").unwrap();
    assert_eq!(status, 400, "{answer}");

    // Accepted means on the broker: the raw topic holds exactly the accepted events, and
    // the dead-letter topic every refusal plus the malformed body.
    let on_topic: i64 = lab.end_offsets(&lab.raw, 3).iter().sum();
    let dead: i64 = lab.end_offsets(&lab.dlq, 3).iter().sum();
    assert_eq!(on_topic as u64, accepted, "log: {}", tail(&collector.log));
    assert_eq!(dead as u64, rejected + 1);
    assert!(collector.stop());
}

/// The README's "Adding a source" walk-through: a new site event needs one schema file and
/// one topic file; the collector takes it and ingest lands it, with no code change.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_collector_source_needs_only_a_topic_file_and_a_schema() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let schema = json!({
        "type": "record", "name": "RoomPlannerSave", "namespace": "hoffrec.events",
        "doc": "A customer saved a room in the site's room planner.",
        "fields": [
            {"name": "event_id", "type": "string", "doc": "Unique id of this event."},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": "When."},
            {"name": "customer_id", "type": "string", "doc": "Customer."},
            {"name": "room", "type": "string", "doc": "Room kind, e.g. living_room."},
            {"name": "area_sq_m", "type": "double", "doc": "Floor area."},
            {"name": "items", "type": {"type": "array", "items": "string"}, "default": [], "doc": "Products placed."}
        ]
    });
    std::fs::write(lab.schemas_dir.join("room_planner_save.avsc"), schema.to_string()).unwrap();
    let source = lab.raw.split('.').nth(1).unwrap().to_string();
    let topic = format!("raw.{source}.room_planner_save");
    std::fs::write(
        lab.topics_dir.join(format!("{topic}.toml")),
        format!(
            "name = \"{topic}\"\nrole = \"raw\"\npartitions = 2\ncleanup_policy = \"delete\"\nretention_ms = 604800000\nvalue_schema = \"room_planner_save\"\nkey = [\"customer_id\"]\n\n[source]\nkind = \"collector\"\ndescription = \"The room planner posts saved rooms.\"\n"
        ),
    )
    .unwrap();
    lab.apply_catalog().await;

    let (mut collector, addr) = lab.collect().await;
    let mut ingest = lab.ingest(&common::unique("g"), &[]);
    let events: Vec<Value> = (0..30)
        .map(|i| {
            json!({"type": "room_planner_save", "event_id": format!("room-{i}"),
                   "event_time": 1_795_590_000_000i64 + i, "customer_id": format!("c{}", i % 4),
                   "room": if i % 2 == 0 { "living_room" } else { "bedroom" },
                   "area_sq_m": 18.5, "items": ["sofa-1", "rug-7"]})
        })
        .chain([json!({"type": "room_planner_save", "event_id": "bad", "customer_id": "c1"})])
        .collect();
    let (status, answer) = post(&addr, &json!({ "events": events }).to_string()).unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["accepted"], 30, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 30, "{answer}");

    // Rows, and the nested `items` arrays in them, all reach the lake.
    let (rows, items) = common::poll_until("room planner rows in the lake", Duration::from_secs(90), || async {
        let out = lab
            .query_topic(
                &topic,
                "SELECT count(*), sum(cardinality(items)) FROM t WHERE room IS NOT NULL",
            )
            .await?;
        let get = |i: usize| {
            let column = out.first()?.column(i);
            let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64).ok()?;
            column
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        };
        (get(0)? == 30).then(|| (get(0), get(1)))
    })
    .await;
    assert_eq!(rows, Some(30), "ingest log: {}", tail(&ingest.log));
    assert_eq!(items, Some(60), "two items per saved room");
    assert!(collector.stop());
    assert!(ingest.stop());
}

/// With producer keys, strangers get 401 and leave nothing behind; a key sends only its
/// event types; far-future times, odd social account ids and oversized requests are
/// refused whoever sends them.
#[tokio::test(flavor = "multi_thread")]
async fn only_known_producers_post_and_only_what_they_may() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let consent = lab.add_topic("raw.site.consent.toml", "consent");
    lab.apply_catalog().await;
    let keys = lab.topics_dir.parent().unwrap().join("collector-keys.toml");
    let hash = |k: &str| hoffrec::connect::producers::sha256_hex(k);
    std::fs::write(
        &keys,
        format!(
            "[producers.site]\nkey_sha256 = \"{}\"\nevents = [\"product_view\"]\n\n[producers.app]\nkey_sha256 = \"{}\"\nevents = [\"*\"]\n\n\
             [producers.partner]\nkey_sha256 = \"{}\"\nevents = [\"product_view\"]\nmax_events_per_s = 0.2\nburst_events = 5\n",
            hash("site-key"),
            hash("app-key"),
            hash("partner-key")
        ),
    )
    .unwrap();
    let addr = common::free_addr();
    let mut collector = lab.hoffrec(
        &["collect", "--listen", &addr],
        &[
            ("HOFFREC__COLLECTOR__KEYS_FILE", keys.to_str().unwrap()),
            ("HOFFREC__COLLECTOR__MAX_EVENTS_PER_REQUEST", "5"),
        ],
    );
    common::poll_until("the collector to listen", Duration::from_secs(60), || async {
        std::net::TcpStream::connect(&addr).ok().map(|_| ())
    })
    .await;
    let view = json!({"type": "product_view", "event_id": "v1", "event_time": "2026-11-25T12:00:00+03:00",
                      "customer_id": "c1", "session_id": "s1", "product_id": "p1", "dwell_ms": 100});
    let consent_event = |id: &str, time: &str, account: &str| {
        json!({"type": "consent", "event_id": id, "event_time": time, "customer_id": "c1",
               "purpose": "social_profile", "action": "given", "networks": [account], "channel": "site"})
    };
    let body = |events: Vec<Value>| json!({ "events": events }).to_string();

    for key in [None, Some("guess")] {
        let (status, answer) = post_as(&addr, &body(vec![view.clone()]), key).unwrap();
        assert_eq!((status, &answer["retry"]), (401, &json!(false)), "{answer}");
    }
    let (status, answer) = post_as(
        &addr,
        &body(vec![
            view.clone(),
            consent_event("k1", "2026-11-25T12:00:00Z", "vk:123"),
        ]),
        Some("site-key"),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["class"], "forbidden_event_type", "{answer}");

    let (status, answer) = post_as(
        &addr,
        &body(vec![
            consent_event("k2", "2026-11-25T12:00:00Z", "vk:123"),
            consent_event("k3", "2026-11-25T12:00:00Z", "vk:1,2,3"),
            consent_event("k4", "2026-11-25T12:00:00Z", "instagram:../../me"),
            consent_event("k5", "2099-01-01T00:00:00Z", "vk:123"),
        ]),
        Some("app-key"),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let classes: Vec<&str> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["invalid_account", "invalid_account", "event_from_the_future"]);

    let (status, _) = post_as(&addr, &body(vec![view.clone(); 6]), Some("app-key")).unwrap();
    assert_eq!(status, 413);

    // What reached the broker: two accepted events, and dead letters only for the refused
    // events of known producers (one forbidden type, three refused consents).
    let on = |t: &str, partitions| lab.end_offsets(t, partitions).iter().sum::<i64>();
    assert_eq!((on(&lab.raw, 1), on(&consent, 6)), (1, 1));
    assert_eq!(on(&lab.dlq, 3), 4, "{}", tail(&collector.log));

    // A rate-limited producer gets its burst, then 429 with a retry hint, nothing dead-
    // lettered; the others are not slowed by it.
    let (status, answer) = post_as(&addr, &body(vec![view.clone(); 5]), Some("partner-key")).unwrap();
    assert_eq!((status, &answer["accepted"]), (200, &json!(5)), "{answer}");
    let (status, answer) = post_as(&addr, &body(vec![view.clone()]), Some("partner-key")).unwrap();
    assert_eq!((status, &answer["retry"]), (429, &json!(true)), "{answer}");
    assert!(
        answer["retry_after_s"].as_u64().is_some_and(|s| (1..=6).contains(&s)),
        "{answer}"
    );
    let (status, answer) = post_as(&addr, &body(vec![view.clone(); 5]), Some("app-key")).unwrap();
    assert_eq!((status, &answer["accepted"]), (200, &json!(5)), "{answer}");
    assert_eq!((on(&lab.raw, 1), on(&lab.dlq, 3)), (11, 4));
    assert!(collector.stop());
}
