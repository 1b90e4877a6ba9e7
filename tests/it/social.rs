//! The VK source against a fixture VK API on the real broker: only customers whose newest
//! consent is "given" with a linked VK account are asked for; errors arrive with HTTP 200
//! (a rate limit is retried, a private community list leaves the list empty); a deleted
//! profile lands marked; communities are paged with offset/count.

use crate::common;

use crate::common::lab::{Lab, field};
use apache_avro::types::Value as V;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hoffrec::codec::SchemaSet;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Vk {
    /// users.get calls by user id, and every groups.get query.
    users_asked: Vec<String>,
    groups_queries: Vec<HashMap<String, String>>,
    rate_limit_once: bool,
}

type Shared = Arc<Mutex<Vk>>;

fn query(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn reply(body: Json) -> Response {
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn users_get(State(vk): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    assert_eq!(q.get("access_token").map(String::as_str), Some("vk-token"));
    assert_eq!(q.get("v").map(String::as_str), Some("5.199"));
    let mut vk = vk.lock().unwrap();
    if vk.rate_limit_once {
        vk.rate_limit_once = false;
        return reply(json!({"error": {"error_code": 6, "error_msg": "Too many requests per second"}}));
    }
    let id = q.get("user_ids").cloned().unwrap_or_default();
    vk.users_asked.push(id.clone());
    let user = match id.as_str() {
        "1001" => json!({"id": 1001, "first_name": "Анна", "last_name": "Иванова", "is_closed": false,
                         "sex": 1, "bdate": "5.3.1990", "city": {"id": 1, "title": "Москва"},
                         "interests": "дизайн интерьера, сад"}),
        "1002" => json!({"id": 1002, "first_name": "Иван", "last_name": "Петров", "is_closed": true,
                         "can_access_closed": false, "sex": 2, "bdate": "12.7"}),
        "1003" => json!({"id": 1003, "first_name": "DELETED", "last_name": "", "deactivated": "deleted"}),
        other => panic!("asked for user {other}, who gave no consent"),
    };
    reply(json!({"response": [user]}))
}

async fn groups_get(State(vk): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    vk.lock().unwrap().groups_queries.push(q.clone());
    match q.get("user_id").map(String::as_str) {
        Some("1001") => {
            let all = [
                json!({"id": 20001, "name": "Ремонт и дизайн", "type": "page", "activity": "Дом и ремонт"}),
                json!({"id": 20002, "name": "Сад и огород", "type": "group", "activity": "Сад"}),
                json!({"id": 20003, "name": "DELETED", "type": "group", "deactivated": "deleted"}),
            ];
            let offset: usize = q["offset"].parse().unwrap();
            let count: usize = q["count"].parse().unwrap();
            let page: Vec<Json> = all.iter().skip(offset).take(count).cloned().collect();
            reply(json!({"response": {"count": all.len(), "items": page}}))
        }
        Some("1002") => reply(json!({"error": {"error_code": 30, "error_msg": "This profile is private"}})),
        _ => reply(json!({"response": {"count": 0, "items": []}})),
    }
}

fn consent(schemas: &SchemaSet, customer: &str, at: i64, action: &str, networks: &[&str]) -> (String, Vec<u8>) {
    let symbol = if action == "given" { 0 } else { 1 };
    let value = V::Record(vec![
        ("event_id".into(), V::String(format!("consent-{customer}-{at}"))),
        ("event_time".into(), V::TimestampMillis(at)),
        ("customer_id".into(), V::String(customer.into())),
        ("purpose".into(), V::String("social_profile".into())),
        ("action".into(), V::Enum(symbol, action.into())),
        (
            "networks".into(),
            V::Array(networks.iter().map(|n| V::String((*n).into())).collect()),
        ),
        ("channel".into(), V::String("site".into())),
    ]);
    (customer.to_string(), schemas.encode("consent", value).unwrap())
}

async fn record_consents<const N: usize>(lab: &Lab, topic: &str, consents: [(String, Vec<u8>); N]) {
    let producer = lab.producer();
    for (key, payload) in consents {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vk_profiles_of_consenting_customers_only() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let consents = lab.add_topic("raw.site.consent.toml", "consent");
    let profiles = lab.add_topic("raw.vk.profile.toml", "vk_profile");
    // Page communities two at a time so offset/count paging is exercised.
    let file = lab.topics_dir.join(format!("{profiles}.toml"));
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("page_size = 1000", "page_size = 2");
    std::fs::write(&file, text).unwrap();
    lab.apply_catalog().await;

    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    record_consents(
        &lab,
        &consents,
        [
            consent(&schemas, "c-1", 1000, "given", &["vk:1001", "instagram:17841"]),
            consent(&schemas, "c-2", 1000, "given", &["vk:1002"]),
            consent(&schemas, "c-3", 1000, "given", &["vk:1003"]),
            consent(&schemas, "c-4", 1000, "given", &["vk:1004"]),
            consent(&schemas, "c-4", 2000, "withdrawn", &["vk:1004"]),
            consent(&schemas, "c-5", 1000, "given", &["instagram:999"]),
        ],
    )
    .await;

    let vk: Shared = Arc::new(Mutex::new(Vk {
        rate_limit_once: true,
        ..Default::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/method/users.get", get(users_get))
        .route("/method/groups.get", get(groups_get))
        .with_state(vk.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (ok, out, err) = lab.command_with_env(
        &["connect", "--once", "--source", &profiles],
        &[("HOFFREC_VK_API", base.as_str()), ("HOFFREC_VK_TOKEN", "vk-token")],
    );
    assert!(ok, "{err}");
    let pass: Json = serde_json::from_str::<Json>(&out).unwrap()["passes"][0].clone();
    assert_eq!(pass["customers"], 3, "{pass}");
    if pass["records"] != 3 {
        let dead: Vec<String> = lab
            .read_topic(&lab.dlq)
            .iter()
            .map(|d| String::from_utf8_lossy(&d.0).into_owned())
            .collect();
        panic!("{pass} {dead:?}");
    }
    assert_eq!(pass["retries"], 1, "the code-6 answer was retried: {pass}");
    assert_eq!(vk.lock().unwrap().users_asked, ["1001", "1002", "1003"]);
    let offsets: Vec<String> = vk
        .lock()
        .unwrap()
        .groups_queries
        .iter()
        .filter(|q| q["user_id"] == "1001")
        .map(|q| q["offset"].clone())
        .collect();
    assert_eq!(offsets, ["0", "2"], "two pages of two");

    let landed: Vec<V> = lab
        .read_topic(&profiles)
        .iter()
        .map(|(p, _)| schemas.decode(p, "social_profile").unwrap())
        .collect();
    let by_customer = |c: &str| {
        landed
            .iter()
            .find(|v| field(v, "customer_id") == &V::String(c.into()))
            .unwrap()
    };
    let anna = by_customer("c-1");
    assert_eq!(field(anna, "network_user_id"), &V::String("1001".into()));
    assert_eq!(field(anna, "sex"), &V::Enum(1, "female".into()));
    assert_eq!(field(anna, "birth_date"), &V::Union(1, Box::new(V::Date(7368))));
    assert_eq!(field(anna, "city"), &V::Union(1, Box::new(V::String("Москва".into()))));
    assert_eq!(
        field(anna, "interests"),
        &V::Array(vec![V::String("дизайн интерьера".into()), V::String("сад".into())])
    );
    let V::Array(groups) = field(anna, "groups") else {
        panic!()
    };
    assert_eq!(groups.len(), 3);
    assert_eq!(field(&groups[0], "group_id"), &V::String("20001".into()));
    let ivan = by_customer("c-2");
    assert_eq!(field(ivan, "groups"), &V::Array(vec![]), "a private list is empty");
    assert_eq!(
        field(ivan, "birth_date"),
        &V::Union(0, Box::new(V::Null)),
        "no year, no date"
    );
    let deleted = by_customer("c-3");
    assert_eq!(
        field(deleted, "deactivated"),
        &V::Union(1, Box::new(V::String("deleted".into())))
    );

    // A dry run asks for one account, joins its first page of communities, maps it like a
    // pass, and produces nothing.
    let env = [("HOFFREC_VK_API", base.as_str()), ("HOFFREC_VK_TOKEN", "vk-token")];
    let (ok, _, err) = lab.command_with_env(&["connect", "--dry-run", "--source", &profiles], &env);
    assert!(!ok && err.contains("--account"), "{err}");
    let before = lab.read_topic(&profiles).len();
    let (ok, out, err) = lab.command_with_env(
        &[
            "connect",
            "--dry-run",
            "--source",
            &profiles,
            "--account",
            "1001",
            "--customer",
            "c-1",
        ],
        &env,
    );
    assert!(ok, "{err}");
    let dry: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["records"].as_array().unwrap().len(), 1, "{dry:#}");
    let record = &dry["records"][0];
    assert_eq!(record["key"], "c-1", "{dry:#}");
    assert_eq!(record["value"]["network_user_id"], "1001", "{dry:#}");
    assert_eq!(record["value"]["sex"], "female", "{dry:#}");
    assert_eq!(
        record["value"]["groups"].as_array().unwrap().len(),
        2,
        "the first page of communities: {dry:#}"
    );
    assert!(!dry["url"].as_str().unwrap().contains("vk-token"), "{dry:#}");
    assert_eq!(lab.read_topic(&profiles).len(), before, "nothing produced");
}

/// Instagram: the account id goes into the path, a professional account lands, and a
/// personal account's permission error (HTTP 400, Graph code 10) skips that customer.
#[tokio::test(flavor = "multi_thread")]
async fn instagram_reads_professional_accounts_only() {
    let _services = common::needs!(Kafka, Hdfs);
    let lab = Lab::new(1).await;
    let consents = lab.add_topic("raw.site.consent.toml", "consent");
    let profiles = lab.add_topic("raw.instagram.profile.toml", "ig_profile");
    lab.apply_catalog().await;
    let schemas = SchemaSet::load_strict(&lab.schemas_dir).unwrap();
    record_consents(
        &lab,
        &consents,
        [
            consent(&schemas, "c-1", 1000, "given", &["instagram:17841400000000001"]),
            consent(&schemas, "c-2", 1000, "given", &["instagram:17841400000000002"]),
        ],
    )
    .await;
    let app = Router::new().route(
        "/v21.0/{account}",
        get(
            |axum::extract::Path(account): axum::extract::Path<String>, RawQuery(raw): RawQuery| async move {
                let q = query(raw);
                assert!(q["fields"].contains("account_type"), "{q:?}");
                let (status, body) = match account.as_str() {
                    "17841400000000001" => (
                        200,
                        json!({"id": account, "username": "dacha_decor", "account_type": "BUSINESS", "media_count": 12}),
                    ),
                    _ => (
                        400,
                        json!({"error": {"message": "Unsupported get request: personal account", "type": "GraphMethodException",
                                         "code": 10, "is_transient": false, "fbtrace_id": "x"}}),
                    ),
                };
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body.to_string(),
                )
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (ok, out, err) = lab.command_with_env(
        &["connect", "--once", "--source", &profiles],
        &[
            ("HOFFREC_INSTAGRAM_API", base.as_str()),
            ("HOFFREC_INSTAGRAM_TOKEN", "ig"),
        ],
    );
    assert!(ok, "{err}");
    let pass: Json = serde_json::from_str::<Json>(&out).unwrap()["passes"][0].clone();
    assert_eq!(
        (
            pass["customers"].as_u64(),
            pass["records"].as_u64(),
            pass["skipped"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{pass}"
    );
    let landed: Vec<V> = lab
        .read_topic(&profiles)
        .iter()
        .map(|(p, _)| schemas.decode(p, "social_profile").unwrap())
        .collect();
    assert_eq!(field(&landed[0], "customer_id"), &V::String("c-1".into()));
    assert_eq!(field(&landed[0], "network"), &V::Enum(1, "instagram".into()));
    assert_eq!(
        field(&landed[0], "account_type"),
        &V::Union(1, Box::new(V::String("BUSINESS".into())))
    );
}
