//! The world behind the real sources' APIs, in their documented shapes, so the real
//! connectors run against it: the order API (page tokens, `updatedFrom`), VK `users.get`
//! and `groups.get` (errors with HTTP 200, offset/count), the YML feed, the register
//! gateway and the district price index CSV.

use super::world::{Customer, DISTRICTS, Persona, START_MS, World};
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

const PAGE: usize = 100;

pub fn router(world: Arc<World>) -> Router {
    Router::new()
        .route("/v2/orders", get(orders))
        .route("/method/users.get", get(vk_users))
        .route("/method/groups.get", get(vk_groups))
        .route("/feed.yml", get(feed))
        .route("/v1/records", get(register))
        .route("/prices.csv", get(prices))
        .with_state(world)
}

fn query(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn json_reply(body: Json) -> Response {
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// Naive Moscow time, as the order system writes it.
fn moscow(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + 3 * 3_600_000)
        .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn customer<'a>(world: &'a World, id: &str) -> Option<&'a Customer> {
    world.customers.iter().find(|c| c.id == id)
}

async fn orders(State(world): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    let from = q.get("updatedFrom").cloned().unwrap_or_default();
    let matching: Vec<_> = world.orders.iter().filter(|o| moscow(o.updated_ms) >= from).collect();
    let start: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let page: Vec<Json> = matching
        .iter()
        .skip(start)
        .take(PAGE)
        .map(|o| {
            let c = customer(&world, &o.customer_id);
            let total: f64 = o.lines.iter().map(|l| l.price_rub * f64::from(l.count)).sum();
            json!({
                "id": o.id, "customerId": o.customer_id, "status": o.status, "channel": "SITE",
                "updatedAt": moscow(o.updated_ms), "total": format!("{total:.2}"), "paymentType": "CARD",
                "items": o.lines.iter().map(|l| json!({"offerId": l.product_id, "count": l.count,
                    "price": format!("{:.2}", l.price_rub), "discount": "0"})).collect::<Vec<_>>(),
                "delivery": {"address": c.map(|c| json!({"region": c.region, "city": c.city, "district": c.district}))},
            })
        })
        .collect();
    let mut paging = json!({});
    if start + PAGE < matching.len() {
        paging["nextPageToken"] = json!((start + PAGE).to_string());
    }
    json_reply(json!({"result": {"orders": page, "paging": paging}}))
}

fn by_vk(world: &World, id: &str) -> Option<Customer> {
    let id: u64 = id.parse().ok()?;
    world.customers.iter().find(|c| c.vk_id == Some(id)).cloned()
}

async fn vk_users(State(world): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    let users: Vec<Json> = q
        .get("user_ids")
        .map(|ids| ids.split(',').filter_map(|id| by_vk(&world, id)).collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let interests = match c.persona {
                Persona::RenovatingOwner => "ремонт, дизайн интерьера",
                Persona::NewBuildOwner => "ремонт, новостройки",
                Persona::RenterDecor => "декор, уют",
                Persona::YoungFamily => "дети, семья",
                Persona::SettledFamily => "кулинария, путешествия",
                Persona::Gardener => "сад, цветы",
                Persona::Contractor => "строительство, отделка",
            };
            json!({"id": c.vk_id, "first_name": "Имя", "last_name": "Фамилия", "is_closed": false,
                   "sex": c.sex, "bdate": c.birth, "city": {"id": 1, "title": c.city}, "interests": interests})
        })
        .collect();
    json_reply(json!({"response": users}))
}

async fn vk_groups(State(world): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    let Some(c) = q.get("user_id").and_then(|id| by_vk(&world, id)) else {
        return json_reply(json!({"error": {"error_code": 18, "error_msg": "User was deleted or banned"}}));
    };
    let groups: &[(u64, &str, &str)] = match c.persona {
        Persona::RenovatingOwner => &[
            (20001, "Ремонт и дизайн", "Дом и ремонт"),
            (20004, "Загородный дом", "Дом и ремонт"),
        ],
        Persona::NewBuildOwner => &[
            (20001, "Ремонт и дизайн", "Дом и ремонт"),
            (20008, "ЖК Новый квартал", "Соседи"),
        ],
        Persona::RenterDecor => &[(20005, "Уютный дом", "Дизайн")],
        Persona::YoungFamily => &[(20006, "Мамы района", "Семья")],
        Persona::SettledFamily => &[(20009, "Рецепты", "Кулинария")],
        Persona::Gardener => &[(20002, "Сад и огород", "Сад"), (20007, "Цветоводы", "Сад")],
        Persona::Contractor => &[(20010, "Отделочники", "Работа")],
    };
    let offset: usize = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let count: usize = q.get("count").and_then(|o| o.parse().ok()).unwrap_or(1000);
    let items: Vec<Json> = groups
        .iter()
        .skip(offset)
        .take(count)
        .map(|(id, name, activity)| json!({"id": id, "name": name, "type": "page", "activity": activity}))
        .collect();
    json_reply(json!({"response": {"count": groups.len(), "items": items}}))
}

async fn feed(State(world): State<Arc<World>>) -> Response {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let date = chrono::DateTime::from_timestamp_millis(START_MS)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let _ = write!(
        x,
        "<yml_catalog date=\"{date}\"><shop><name>Hoff</name><currencies><currency id=\"RUB\" rate=\"1\"/></currencies><categories>"
    );
    for c in &world.categories {
        let parent = c
            .parent
            .as_ref()
            .map(|p| format!(" parentId=\"{p}\""))
            .unwrap_or_default();
        let _ = write!(x, "<category id=\"{}\"{parent}>{}</category>", c.id, c.name);
    }
    x.push_str("</categories><offers>");
    for p in &world.products {
        let _ = write!(
            x,
            "<offer id=\"{}\" available=\"{}\"><name>{}</name><vendor>{}</vendor><price>{:.2}</price><currencyId>RUB</currencyId><categoryId>{}</categoryId></offer>",
            p.id,
            p.available,
            quick_xml::escape::escape(&p.name),
            p.vendor,
            p.price_rub,
            p.category_id
        );
    }
    x.push_str("</offers></shop></yml_catalog>");
    ([("content-type", "application/xml")], x).into_response()
}

async fn register(State(world): State<Arc<World>>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    let since: u64 = q.get("sinceId").and_then(|s| s.parse().ok()).unwrap_or(0);
    let matching: Vec<_> = world.register.iter().filter(|r| r.id >= since).collect();
    let start: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let records: Vec<Json> = matching
        .iter()
        .skip(start)
        .take(PAGE)
        .map(|r| {
            let c = customer(&world, &r.customer_id);
            let registered = chrono::DateTime::from_timestamp_millis(r.right_registration_ms)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            json!({
                "id": r.id, "matchedCustomerId": r.customer_id, "cadastralNumber": r.cadastral_number,
                "extractDate": chrono::DateTime::from_timestamp_millis(START_MS).map(|t| t.to_rfc3339()),
                "address": {"readableAddress": c.map(|c| format!("{}, {}", c.city, c.district)),
                            "region": c.map(|c| c.region.clone()), "district": c.map(|c| c.district.clone())},
                "objectType": r.object_type, "area": (r.area_sq_m * 10.0).round() / 10.0,
                "rightRegistrationDate": registered, "cadastralValue": format!("{:.2}", r.cadastral_value_rub),
                "yearBuilt": r.year_built, "objectsOnPlot": r.objects_on_plot,
            })
        })
        .collect();
    let mut body = json!({"records": records});
    if start + PAGE < matching.len() {
        body["nextPageToken"] = json!((start + PAGE).to_string());
    }
    json_reply(body)
}

async fn prices(State(world): State<Arc<World>>) -> Response {
    let mut csv = String::from("region,city,district,month,segment,price_per_m2\n");
    let mut seen = std::collections::BTreeSet::new();
    for c in &world.customers {
        if seen.insert((c.region.clone(), c.city.clone(), c.district.clone())) {
            let base = DISTRICTS.iter().find(|d| d.2 == c.district).map_or(250_000, |d| d.3);
            for (segment, factor) in [("new_build", 100), ("secondary", 110)] {
                let _ = writeln!(
                    csv,
                    "{},{},{},2026-10-01,{segment},{}",
                    c.region,
                    c.city,
                    c.district,
                    base * factor / 100
                );
            }
        }
    }
    ([("content-type", "text/csv")], csv).into_response()
}
