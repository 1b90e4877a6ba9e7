//! `hoffrec connect` against a fixture order API on the real broker: page-token paging, a
//! 429 with Retry-After and a 503 retried, an item that does not map dead-lettered, the
//! cursor stored on the connector-offsets topic and sent back on the next pass, and a
//! revoked token stopping the source with the reason.

use crate::common;

use crate::common::lab::{Lab, field};
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hoffrec::codec::SchemaSet;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Api {
    orders: Vec<Json>,
    /// Query strings of every request, in order.
    seen: Vec<HashMap<String, String>>,
    /// Failures still to serve before answering normally: (status, Retry-After).
    faults: Vec<(u16, Option<&'static str>)>,
    token: String,
    /// A page token whose request hangs, to kill the connector in the middle of a pass.
    stall: Option<String>,
    /// How long every answer takes, for passes longer than a transaction may stay open.
    delay_ms: u64,
    /// With `stall`: the stalled request answers after this long, once, instead of hanging.
    stall_once_ms: u64,
}

type Shared = Arc<Mutex<Api>>;

/// Orders with `updatedAt >= updatedFrom`, two per page, as the order API pages them.
async fn orders(State(api): State<Shared>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q: HashMap<String, String> = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let delay = api.lock().unwrap().delay_ms;
    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    let stalled = api.lock().unwrap().stall.clone();
    if stalled.is_some() && q.get("pageToken") == stalled.as_ref() {
        let once_ms = {
            let mut api = api.lock().unwrap();
            api.seen.push(q.clone());
            if api.stall_once_ms > 0 {
                api.stall = None;
            }
            api.stall_once_ms
        };
        let ms = if once_ms > 0 { once_ms } else { 120_000 };
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut api = api.lock().unwrap();
    api.seen.push(q.clone());
    if let Some((status, after)) = api.faults.pop() {
        let mut r = (StatusCode::from_u16(status).unwrap(), "busy").into_response();
        if let Some(a) = after {
            r.headers_mut().insert("retry-after", a.parse().unwrap());
        }
        return r;
    }
    let bearer = format!("Bearer {}", api.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return (StatusCode::UNAUTHORIZED, "{\"message\":\"token revoked\"}").into_response();
    }
    let from = q.get("updatedFrom").cloned().unwrap_or_default();
    let mut matching: Vec<&Json> = api
        .orders
        .iter()
        .filter(|o| o["updatedAt"].as_str().unwrap() >= from.as_str())
        .collect();
    matching.sort_by_key(|o| o["updatedAt"].as_str().unwrap().to_string());
    let start: usize = q.get("pageToken").map_or(0, |t| t.parse().unwrap());
    let page: Vec<&Json> = matching.iter().skip(start).take(2).copied().collect();
    let mut paging = json!({});
    if start + 2 < matching.len() {
        paging["nextPageToken"] = json!((start + 2).to_string());
    }
    let body = json!({"result": {"orders": page, "paging": paging}}).to_string();
    ([("content-type", "application/json")], body).into_response()
}

fn order(id: u64, updated: &str, status: &str) -> Json {
    json!({
        "id": id, "customerId": format!("c-{}", id % 3), "status": status, "channel": "SITE",
        "updatedAt": updated, "total": "12990.50", "paymentType": "CARD",
        "items": [{"offerId": "sofa-1", "count": 1, "price": "12990.50", "discount": "0"}],
        "delivery": {"address": {"region": "Москва", "city": "Москва", "district": "Хамовники",
                                 "street": "Остоженка", "house": "7", "postcode": "119034"}}
    })
}

async fn serve(api: Shared) -> String {
    serve_router(Router::new().route("/v2/orders", get(orders)).with_state(api)).await
}

/// The order API serving `orders` to the token `s3cret`, and its address.
async fn order_api(orders: Vec<Json>) -> (Shared, String) {
    let api: Shared = Arc::new(Mutex::new(Api {
        orders,
        token: "s3cret".into(),
        ..Default::default()
    }));
    let base = serve(api.clone()).await;
    (api, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_order_poller_pages_retries_dead_letters_and_resumes_from_its_cursor() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.store.order.toml", "order");
    lab.apply_catalog().await;
    let api: Shared = Arc::new(Mutex::new(Api {
        orders: vec![
            order(1, "2026-03-01T10:00:00", "PAID"),
            order(2, "2026-03-01T11:00:00", "DELIVERED"),
            order(3, "2026-03-01T12:00:00", "TELEPORTED"),
            order(4, "2026-03-01T13:00:00", "CREATED"),
            order(5, "2026-03-01T14:30:00", "CANCELLED"),
        ],
        // Popped from the back: the first request gets 429 (retry after 1 s), the second 503.
        faults: vec![(503, None), (429, Some("1"))],
        token: "s3cret".into(),
        ..Default::default()
    }));
    let base = serve(api.clone()).await;
    let env = [
        ("HOFFREC_ORDERS_API", base.as_str()),
        ("HOFFREC_ORDERS_TOKEN", "s3cret"),
    ];

    let run = |env: &[(&str, &str)]| {
        let out = lab.command_with_env(&["connect", "--once", "--source", &topic], env);
        assert!(out.0, "connect failed: {}", out.2);
        serde_json::from_str::<Json>(&out.1).unwrap()["passes"][0].clone()
    };
    let first = run(&env);
    if first["records"] != 4 {
        let dead = lab.read_topic(&lab.dlq);
        panic!("{first} {:?}", dead.iter().map(|d| d.1.clone()).collect::<Vec<_>>());
    }
    assert_eq!(first["dead_letters"], 1, "{first}");
    assert_eq!(first["pages"], 3, "{first}");
    assert_eq!(first["retries"], 2, "{first}");
    assert_eq!(first["cursor"], "2026-03-01T14:30:00", "{first}");

    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    let records = lab.read_topic(&topic);
    assert_eq!(records.len(), 4);
    let values: Vec<_> = records
        .iter()
        .map(|(v, _)| schemas.decode(v, "order").unwrap())
        .collect();
    let two = values
        .iter()
        .find(|v| field(v, "order_id") == &apache_avro::types::Value::String("2".into()))
        .unwrap();
    use apache_avro::types::Value as V;
    assert_eq!(field(two, "event_id"), &V::String("order-2-2026-03-01T11:00:00".into()));
    // 11:00 Moscow time is 08:00 UTC.
    assert_eq!(field(two, "event_time"), &V::TimestampMillis(1_772_352_000_000));
    assert_eq!(field(two, "status"), &V::String("delivered".into()));
    assert_eq!(field(two, "channel"), &V::String("site".into()));
    assert_eq!(field(two, "total_kopecks"), &V::Long(1_299_050));
    let V::Array(lines) = field(two, "lines") else { panic!() };
    assert_eq!(field(&lines[0], "price_kopecks"), &V::Long(1_299_050));
    let V::Union(_, address) = field(two, "delivery_address") else {
        panic!()
    };
    assert_eq!(
        field(address, "district"),
        &V::Union(1, Box::new(V::String("Хамовники".into())))
    );

    let dead = lab.read_topic(&lab.dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1["hoffrec.error.class"], "invalid_item");
    assert!(
        dead[0].1["hoffrec.error.message"].contains("TELEPORTED"),
        "{:?}",
        dead[0].1
    );
    assert_eq!(dead[0].1["hoffrec.source.topic"], format!("connect:{topic}"));
    let kept: Json = serde_json::from_slice(&dead[0].0).unwrap();
    assert_eq!(kept["id"], 3, "the original item is kept");

    // A new pass, as after a restart: it asks for changes since the stored cursor.
    api.lock().unwrap().orders.extend([
        order(6, "2026-03-02T09:00:00", "PAID"),
        order(5, "2026-03-02T10:00:00", "DELIVERED"),
    ]);
    api.lock().unwrap().seen.clear();
    let second = run(&env);
    assert_eq!(
        api.lock().unwrap().seen[0].get("updatedFrom").map(String::as_str),
        Some("2026-03-01T14:30:00")
    );
    // The API's `updatedFrom` is inclusive, so the boundary order comes again with the same
    // event id (ingest drops it); nothing before the cursor is fetched again.
    assert_eq!(second["records"], 3, "{second}");
    assert_eq!(second["cursor"], "2026-03-02T10:00:00");
    let ids: std::collections::HashSet<String> = lab
        .read_topic(&topic)
        .iter()
        .map(|(v, _)| match field(&schemas.decode(v, "order").unwrap(), "event_id") {
            V::String(s) => s.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(ids.len(), 6, "{ids:?}");

    // A revoked token stops the source for this pass with the reason; the cursor stays,
    // and `--once` exits non-zero after printing the summary.
    let (ok, out, err) = lab.command_with_env(
        &["connect", "--once", "--source", &topic],
        &[("HOFFREC_ORDERS_API", base.as_str()), ("HOFFREC_ORDERS_TOKEN", "old")],
    );
    assert!(!ok && err.contains("stopped: auth"), "{err}");
    let third = serde_json::from_str::<Json>(&out).unwrap()["passes"][0].clone();
    assert!(third["stopped"].as_str().unwrap().starts_with("auth"), "{third}");
    assert_eq!(third["cursor"], "2026-03-02T10:00:00");

    // Operators see the cursor, move it back, and reset it.
    let listed = || {
        let (ok, out, err) = lab.command_with_env(&["connect", "offsets", "list", "--source", &topic], &[]);
        assert!(ok, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<Json>(l).unwrap()["cursor"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(), ["2026-03-02T10:00:00"]);
    let (ok, _, err) = lab.command_with_env(
        &[
            "connect",
            "offsets",
            "set",
            "--source",
            &topic,
            "--cursor",
            "2026-03-01T12:30:00",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(listed(), ["2026-03-01T12:30:00"]);
    api.lock().unwrap().seen.clear();
    run(&env);
    assert_eq!(
        api.lock().unwrap().seen[0].get("updatedFrom").map(String::as_str),
        Some("2026-03-01T12:30:00"),
        "the next pass starts from the cursor set"
    );
    let (ok, _, err) = lab.command_with_env(&["connect", "offsets", "reset", "--source", &topic], &[]);
    assert!(ok, "{err}");
    assert!(listed().is_empty(), "reset removes the cursor");
    api.lock().unwrap().seen.clear();
    let fourth = run(&env);
    assert_eq!(
        api.lock().unwrap().seen[0].get("updatedFrom"),
        None,
        "from the beginning"
    );
    assert_eq!(fourth["records"], 6, "{fourth}");
    let (ok, _, err) = lab.command_with_env(
        &["connect", "offsets", "set", "--source", "raw.nope", "--cursor", "x"],
        &[],
    );
    assert!(!ok && err.contains("no source 'raw.nope'"), "{err}");
}

/// `connect --dry-run` prints one page mapped from where the cursor stands, with the item
/// a pass would dead-letter, and produces nothing: no records, no letters, no cursor.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_prints_one_mapped_page_and_produces_nothing() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.store.order.toml", "order");
    lab.apply_catalog().await;
    let (api, base) = order_api(vec![
        order(1, "2026-03-01T10:00:00", "PAID"),
        order(2, "2026-03-01T11:00:00", "TELEPORTED"),
        order(4, "2026-03-01T12:00:00", "CREATED"),
    ])
    .await;
    let env = [
        ("HOFFREC_ORDERS_API", base.as_str()),
        ("HOFFREC_ORDERS_TOKEN", "s3cret"),
    ];
    let dry = || {
        let (ok, out, err) = lab.command_with_env(&["connect", "--dry-run", "--source", &topic], &env);
        assert!(ok, "{err}");
        serde_json::from_str::<Json>(&out).unwrap()
    };
    let first = dry();
    assert_eq!(first["items"], 2, "one page of two: {first:#}");
    assert_eq!(first["more_pages"], true, "{first:#}");
    assert!(first["cursor"].is_null(), "{first:#}");
    assert_eq!(first["records"].as_array().unwrap().len(), 1, "{first:#}");
    assert_eq!(first["records"][0]["key"], "c-1", "{first:#}");
    assert_eq!(first["records"][0]["value"]["status"], "paid", "{first:#}");
    assert_eq!(first["records"][0]["value"]["total_kopecks"], 1_299_050, "{first:#}");
    assert!(
        first["invalid"][0]["reason"].as_str().unwrap().contains("TELEPORTED"),
        "{first:#}"
    );
    assert!(!first["url"].as_str().unwrap().contains("s3cret"), "{first:#}");
    assert!(lab.read_topic(&topic).is_empty(), "no records");
    assert!(lab.read_topic(&lab.dlq).is_empty(), "no dead letters");

    // After a pass the dry run starts where the stored cursor stands.
    let (ok, _, err) = lab.command_with_env(&["connect", "--once", "--source", &topic], &env);
    assert!(ok, "{err}");
    api.lock().unwrap().seen.clear();
    let after = dry();
    assert_eq!(after["cursor"], "2026-03-01T12:00:00", "{after:#}");
    assert_eq!(
        api.lock().unwrap().seen[0].get("updatedFrom").map(String::as_str),
        Some("2026-03-01T12:00:00")
    );
    assert_eq!(after["records"][0]["value"]["order_id"], "4", "{after:#}");
    assert_eq!(lab.read_topic(&topic).len(), 2, "only the pass produced");

    let (ok, _, err) = lab.command_with_env(&["connect", "--dry-run"], &env);
    assert!(!ok && err.contains("exactly one --source"), "{err}");
}

/// One order dated far in the future (a wrong clock at the source) is produced but does
/// not become the cursor, so later orders still arrive; and with a lookback, an order that
/// shows up late with a time before the cursor is still fetched.
#[tokio::test(flavor = "multi_thread")]
async fn a_future_dated_item_does_not_poison_the_cursor_and_the_lookback_finds_late_items() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.store.order.toml", "order");
    let file = lab.topics_dir.join(format!("{topic}.toml"));
    let text = std::fs::read_to_string(&file).unwrap();
    let declared = r#"incremental = { param = "updatedFrom", field = "updatedAt" }"#;
    assert!(text.contains(declared));
    let with_lookback = r#"incremental = { param = "updatedFrom", field = "updatedAt", lookback_ms = 3600000 }"#;
    std::fs::write(&file, text.replace(declared, with_lookback)).unwrap();
    lab.apply_catalog().await;
    let (api, base) = order_api(vec![
        order(1, "2026-03-01T10:00:00", "PAID"),
        order(2, "2099-01-01T00:00:00", "PAID"),
        order(3, "2026-03-01T12:00:00", "PAID"),
    ])
    .await;
    let env = [
        ("HOFFREC_ORDERS_API", base.as_str()),
        ("HOFFREC_ORDERS_TOKEN", "s3cret"),
    ];
    let run = || {
        let out = lab.command_with_env(&["connect", "--once", "--source", &topic], &env);
        assert!(out.0, "connect failed: {}", out.2);
        serde_json::from_str::<Json>(&out.1).unwrap()["passes"][0].clone()
    };
    let first = run();
    assert_eq!(first["records"], 3, "the future-dated order is still produced: {first}");
    assert_eq!(first["future_items"], 1, "{first}");
    assert_eq!(first["cursor"], "2026-03-01T12:00:00", "{first}");

    // A new order, and one that became visible late with an earlier time than the cursor.
    api.lock().unwrap().orders.extend([
        order(4, "2026-03-02T09:00:00", "PAID"),
        order(5, "2026-03-01T11:30:00", "PAID"),
    ]);
    api.lock().unwrap().seen.clear();
    let second = run();
    assert_eq!(
        api.lock().unwrap().seen[0].get("updatedFrom").map(String::as_str),
        Some("2026-03-01T11:00:00"),
        "an hour before the cursor"
    );
    assert_eq!(second["cursor"], "2026-03-02T09:00:00", "{second}");
    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    let orders: std::collections::BTreeSet<String> = lab
        .read_topic(&topic)
        .iter()
        .map(|(v, _)| match field(&schemas.decode(v, "order").unwrap(), "order_id") {
            apache_avro::types::Value::String(s) => s.clone(),
            _ => panic!(),
        })
        .collect();
    let want: std::collections::BTreeSet<String> = (1..=5).map(|i| i.to_string()).collect();
    assert_eq!(orders, want);
}

/// A source that cannot start (its token is not set) is reported, and the other sources'
/// passes still run and land; `--once` then exits non-zero naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_without_its_token_does_not_stop_the_others() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let orders = lab.add_topic("raw.store.order.toml", "order");
    let partner = lab.add_topic("raw.partner.uyutdom.order.toml", "partner_order");
    lab.apply_catalog().await;
    let (_api, base) = order_api(vec![
        order(1, "2026-03-01T10:00:00", "PAID"),
        order(2, "2026-03-01T11:00:00", "PAID"),
    ])
    .await;
    let env = [
        ("HOFFREC_ORDERS_API", base.as_str()),
        ("HOFFREC_ORDERS_TOKEN", "s3cret"),
        ("HOFFREC_UYUTDOM_TOKEN", ""),
    ];
    let (ok, _, err) = lab.command_with_env(&["connect", "--once", "--source", &orders, "--source", &partner], &env);
    assert!(!ok, "a source that cannot start fails --once");
    assert!(err.contains(&partner) && err.contains("HOFFREC_UYUTDOM_TOKEN"), "{err}");
    assert_eq!(lab.read_topic(&orders).len(), 2, "the orders source still ran: {err}");
}

/// A pass that takes longer than its Kafka transaction may stay open (a backfill) makes
/// its records visible in commits along the way and completes; with items in ascending
/// order the cursor moves with each commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_pass_longer_than_its_transaction_commits_along_the_way() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.store.order.toml", "order");
    let file = lab.topics_dir.join(format!("{topic}.toml"));
    let declared = r#"incremental = { param = "updatedFrom", field = "updatedAt" }"#;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(declared));
    let chunked = "incremental = { param = \"updatedFrom\", field = \"updatedAt\", ascending = true }\n\
                   commit_interval_ms = 1000\ntransaction_timeout_ms = 5000";
    std::fs::write(&file, text.replace(declared, chunked)).unwrap();
    lab.apply_catalog().await;
    // 20 pages of two orders, 900 ms each: 18 s, past the 5 s transaction timeout and
    // the broker's 10 s sweep for timed-out transactions.
    let (api, base) = order_api(
        (1..=40)
            .map(|i| order(i, &format!("2026-03-01T10:{i:02}:00"), "PAID"))
            .collect(),
    )
    .await;
    api.lock().unwrap().delay_ms = 900;
    let env = [
        ("HOFFREC_ORDERS_API", base.as_str()),
        ("HOFFREC_ORDERS_TOKEN", "s3cret"),
    ];
    let (ok, out, err) = lab.command_with_env(&["connect", "--once", "--source", &topic], &env);
    assert!(ok, "{err}");
    let pass = serde_json::from_str::<Json>(&out).unwrap()["passes"][0].clone();
    assert_eq!(pass["records"], 40, "{pass}");
    assert!(pass["commits"].as_u64() >= Some(5), "{pass}");
    assert_eq!(pass["cursor"], "2026-03-01T10:40:00", "{pass}");
    assert_eq!(lab.read_topic(&topic).len(), 40);
}

/// A page slower than the transaction may stay open: the broker aborts the transaction and
/// fences the source's producer, so the pass fails; the source opens again with a new
/// producer, and its next pass delivers every order once, without a restart of `connect`.
#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_source_opens_again_and_delivers_everything_once() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.store.order.toml", "order");
    let file = lab.topics_dir.join(format!("{topic}.toml"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("interval_ms = 60000\n"));
    let fast = "interval_ms = 500\ntimeout_ms = 30000\ncommit_interval_ms = 2000\ntransaction_timeout_ms = 5000\n";
    std::fs::write(&file, text.replace("interval_ms = 60000\n", fast)).unwrap();
    lab.apply_catalog().await;
    let (api, base) = order_api(
        (1..=6)
            .map(|i| order(i, &format!("2026-03-01T10:{i:02}:00"), "PAID"))
            .collect(),
    )
    .await;
    // The second page answers after 16 s, once: past the 5 s timeout and the broker's
    // 10 s sweep, with the first page's records already in the open transaction.
    {
        let mut api = api.lock().unwrap();
        api.stall = Some("2".into());
        api.stall_once_ms = 16_000;
    }
    let env = [
        ("HOFFREC_ORDERS_API", base.as_str()),
        ("HOFFREC_ORDERS_TOKEN", "s3cret"),
    ];
    let mut connect = lab.hoffrec(&["connect", "--source", &topic], &env);
    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    let distinct = || {
        lab.read_topic(&topic)
            .iter()
            .map(|(v, _)| format!("{:?}", field(&schemas.decode(v, "order").unwrap(), "event_id")))
            .collect::<std::collections::HashSet<String>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while distinct().len() < 6 {
        let log = common::lab::tail(&connect.log);
        assert!(std::time::Instant::now() < deadline, "not every order arrived: {log}");
        assert!(connect.exited().is_none(), "connect keeps running: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    connect.stop();
    let log = std::fs::read_to_string(&connect.log).unwrap();
    assert!(log.contains("opening the source again"), "{log}");
    // Later passes send the cursor back and the inclusive API repeats its last order,
    // which ingest drops by event id; nothing else appears twice.
    let (records, ids) = (lab.read_topic(&topic).len(), distinct().len());
    assert_eq!(ids, 6);
    assert!(records - ids < records / 2, "{records} records for {ids} orders");
}

/// Killed after producing the first page of a pass, the connector's records stay invisible
/// (its transaction never commits); the restarted one aborts it, redoes the pass from the
/// stored cursor, and readers see every order exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_connector_killed_mid_pass_resumes_with_no_gap_and_no_duplicate() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.store.order.toml", "order");
    lab.apply_catalog().await;
    let api: Shared = Arc::new(Mutex::new(Api {
        orders: (1..=5)
            .map(|i| order(i, &format!("2026-03-01T1{i}:00:00"), "PAID"))
            .collect(),
        token: "s3cret".into(),
        stall: Some("2".into()),
        ..Default::default()
    }));
    let base = serve(api.clone()).await;
    let env = [
        ("HOFFREC_ORDERS_API", base.as_str()),
        ("HOFFREC_ORDERS_TOKEN", "s3cret"),
    ];

    let mut first = lab.hoffrec(&["connect", "--once", "--source", &topic], &env);
    common::poll_until(
        "the connector to ask for the second page",
        std::time::Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let asked = api
                    .lock()
                    .unwrap()
                    .seen
                    .iter()
                    .any(|q| q.get("pageToken").map(String::as_str) == Some("2"));
                asked.then_some(())
            }
        },
    )
    .await;
    first.kill9();
    // The first page (two orders) reached the broker before the kill, inside a transaction
    // that never commits: only a read-uncommitted reader sees it.
    let uncommitted: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &lab.brokers)
        .set("group.id", common::unique("peek"))
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let high: i64 = (0..6)
        .map(|p| {
            rdkafka::consumer::Consumer::fetch_watermarks(&uncommitted, &topic, p, std::time::Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert_eq!(high, 2, "the first page was produced before the kill");

    api.lock().unwrap().stall = None;
    let (ok, out, err) = lab.command_with_env(&["connect", "--once", "--source", &topic], &env);
    assert!(ok, "{err}");
    let pass: Json = serde_json::from_str::<Json>(&out).unwrap()["passes"][0].clone();
    assert_eq!(pass["records"], 5, "{pass}");
    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    let ids: Vec<String> = lab
        .read_topic(&topic)
        .iter()
        .map(|(v, _)| match field(&schemas.decode(v, "order").unwrap(), "event_id") {
            apache_avro::types::Value::String(s) => s.clone(),
            _ => panic!(),
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (5, 5), "{ids:?}");
}

/// An API that hangs is retried after each timeout and then fails the pass (the cursor
/// stays, nothing becomes visible); one that answers HTML instead of JSON is dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts_fail_the_pass_and_malformed_bodies_are_dead_lettered() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let topic = lab.add_topic("raw.store.order.toml", "order");
    let file = lab.topics_dir.join(format!("{topic}.toml"));
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "max_requests_per_s = 10.0",
        "max_requests_per_s = 10.0\ntimeout_ms = 300\nmax_attempts = 3\nbackoff_ms = 50",
    );
    std::fs::write(&file, text).unwrap();
    lab.apply_catalog().await;

    let hangs = Router::new().route(
        "/v2/orders",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            "{}"
        }),
    );
    let base = serve_router(hangs).await;
    let env = [("HOFFREC_ORDERS_API", base.as_str()), ("HOFFREC_ORDERS_TOKEN", "t")];
    let (ok, _, err) = lab.command_with_env(&["connect", "--once", "--source", &topic], &env);
    assert!(!ok, "a pass whose requests all time out fails");
    assert!(err.contains("temporary failure"), "{err}");
    assert_eq!(
        err.matches("retrying source request").count(),
        2,
        "three attempts: {err}"
    );

    let html = Router::new().route("/v2/orders", get(|| async { "<html>maintenance</html>" }));
    let base = serve_router(html).await;
    let env = [("HOFFREC_ORDERS_API", base.as_str()), ("HOFFREC_ORDERS_TOKEN", "t")];
    let (ok, out, err) = lab.command_with_env(&["connect", "--once", "--source", &topic], &env);
    assert!(ok, "{err}");
    let pass: Json = serde_json::from_str::<Json>(&out).unwrap()["passes"][0].clone();
    assert_eq!(
        (pass["records"].as_u64(), pass["dead_letters"].as_u64()),
        (Some(0), Some(1)),
        "{pass}"
    );
    assert_eq!(pass["cursor"], Json::Null, "an incomplete pass stores no cursor");
    let dead = lab.read_topic(&lab.dlq);
    assert_eq!(dead[0].1["hoffrec.error.class"], "malformed_response");
    assert_eq!(dead[0].0, b"<html>maintenance</html>", "the body is kept as it came");
}

async fn serve_router(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
