//! A small customer history with known answers, landed into a lake through the same
//! batch and commit code ingest uses. `worked` is the customer from design.md: a garden
//! swing after 50 minutes over 20 swings and accessories, arrived from a search engine,
//! heavy and rising renovation spending (partner renovation store), delivery to an
//! expensive cottage settlement, a secondary-market house with a sauna and a pool
//! registered six weeks ago, social and register consent given.

use hoffrec::codec::SchemaSet;
use hoffrec::lake::LakeUrl;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;

pub const DAY: i64 = 86_400_000;
/// 2026-11-20T10:00:00Z, the worked customer's order.
pub const NOW: i64 = 1_795_168_800_000;
pub const WORKED: &str = "c-worked";

/// (topic, event name, event) in time order.
pub fn events() -> Vec<(String, String, Json)> {
    let mut out: Vec<(&str, &str, Json)> = Vec::new();
    let mut n = 0;
    let mut id = |p: &str| {
        n += 1;
        format!("{p}-{n}")
    };
    // The catalogue: swings, swing accessories, soundproofing, wallpaper, rugs, plants.
    let products = [
        ("71001", "Качели Лофт", "71", ["Сад", "Качели"], "Garden Way", 2_800_000),
        ("71002", "Качели Сканди", "71", ["Сад", "Качели"], "Hoff", 5_600_000),
        ("71003", "Качели Классика", "71", ["Сад", "Качели"], "Askona", 9_000_000),
        (
            "72001",
            "Подушка для качелей",
            "72",
            ["Сад", "Аксессуары для качелей"],
            "Hoff",
            250_000,
        ),
        (
            "72002",
            "Тент для качелей",
            "72",
            ["Сад", "Аксессуары для качелей"],
            "Garden Way",
            450_000,
        ),
        (
            "81001",
            "Звукоизоляция Стандарт",
            "81",
            ["Ремонт", "Звукоизоляция"],
            "Hoff",
            400_000,
        ),
        ("40001", "Обои Лофт", "4", ["Обои", "Обои"], "Hoff", 250_000),
        (
            "32001",
            "Ковёр Модерн",
            "32",
            ["Текстиль", "Ковры"],
            "Askona",
            1_800_000,
        ),
        (
            "73001",
            "Монстера",
            "73",
            ["Сад", "Растения и цветы"],
            "Garden Way",
            90_000,
        ),
    ];
    for (pid, name, cat, path, brand, price) in products {
        out.push((
            "raw.store.catalogue",
            "catalogue_product",
            json!({"event_id": id("cat"), "event_time": NOW - 60 * DAY, "product_id": pid, "name": name,
                "category_id": cat, "category_path": path, "brand": brand, "price_kopecks": price,
                "old_price_kopecks": null, "available": true, "attributes": {}, "url": null}),
        ));
    }
    // District prices: Zhukovka is a wealthy cottage settlement, Maryino is not.
    for (district, price) in [("Жуковка", 65_000_000), ("Марьино", 18_000_000)] {
        out.push((
            "raw.district.price_index",
            "district_price_index",
            json!({"event_id": id("dpi"), "event_time": NOW - 30 * DAY, "region": "Московская область",
                "city": "Одинцово", "district": district, "period_start": (NOW - 30 * DAY) / DAY,
                "price_per_sq_m_kopecks": price, "market": "secondary"}),
        ));
    }
    // The worked customer: renovation goods at the partner store, doubling lately.
    let stroydom = |id: String, at: i64, amount: i64| {
        json!({"event_id": id.clone(), "event_time": at, "customer_id": WORKED, "partner": "stroydom",
            "partner_order_id": id, "lines": [{"sku": "S-1", "name": "Штукатурка", "category": "Смеси",
            "quantity": 10.0, "price_kopecks": amount / 10}], "total_kopecks": amount,
            "delivery_address": {"region": "Московская область", "city": "Одинцово", "district": "Жуковка",
            "street": null, "house": null, "flat": null, "postal_code": null, "lat": null, "lon": null}})
    };
    // Baseline: 100k roubles spread over 56 days before the window; 100k in the last 14 days.
    for (k, days_ago) in [(0, 60), (1, 45), (2, 30), (3, 20)] {
        let _ = k;
        out.push((
            "raw.partner.stroydom.order",
            "partner_order",
            stroydom(id("sd"), NOW - days_ago * DAY, 2_500_000),
        ));
    }
    for days_ago in [10, 3] {
        out.push((
            "raw.partner.stroydom.order",
            "partner_order",
            stroydom(id("sd"), NOW - days_ago * DAY, 5_000_000),
        ));
    }
    // The register does not say new build or resale (the connector lands "unknown"); the
    // marts derive it from the build year and the right's registration. They use the
    // record under her consent, given before it was extracted.
    out.push((
        "raw.site.consent",
        "consent",
        json!({"event_id": id("cons"), "event_time": NOW - 41 * DAY, "customer_id": WORKED,
            "purpose": "real_estate_profile", "action": "given", "networks": [], "channel": "site"}),
    ));
    out.push((
        "raw.register.real_estate",
        "real_estate_record",
        json!({"event_id": id("egrn"), "event_time": NOW - 40 * DAY, "customer_id": WORKED,
            "cadastral_number": "50:20:0010101:123", "address": "Одинцово, Жуковка, 7",
            "region": "Московская область", "district": "Жуковка", "object_type": "house", "area_sq_m": 320.0,
            "right_registration_date": (NOW - 42 * DAY) / DAY, "cadastral_value_kopecks": 9_500_000_000i64,
            "market": "unknown", "build_year": 2009, "amenities": ["sauna", "pool"]}),
    ));
    out.push((
        "raw.site.consent",
        "consent",
        json!({"event_id": id("cons"), "event_time": NOW - 2 * DAY, "customer_id": WORKED,
            "purpose": "social_profile", "action": "given", "networks": ["vk"], "channel": "site"}),
    ));
    out.push((
        "raw.vk.profile",
        "social_profile",
        json!({"event_id": id("vk"), "event_time": NOW - DAY, "customer_id": WORKED, "network": "vk",
            "network_user_id": "1001", "sex": "female", "birth_date": null, "birth_year": 1985,
            "city": "Одинцово", "interests": ["сад", "дизайн интерьера"], "groups": [],
            "account_type": null, "deactivated": null}),
    ));
    // The session: from a search engine, 50 minutes over 20 views of swings and accessories.
    let session = "s-worked-1";
    let start = NOW - 50 * 60_000;
    out.push((
        "raw.site.session_start",
        "site_session_start",
        json!({"event_id": id("ss"), "event_time": start, "customer_id": WORKED, "session_id": session,
            "device_id": null, "traffic_source": "search", "referrer": "https://yandex.ru/", "search_engine": "yandex",
            "search_phrase": "качели садовые", "utm_source": null, "utm_medium": null, "utm_campaign": null,
            "utm_content": null, "utm_term": null, "landing_url": "https://hoff.ru/catalog/71/", "user_agent": null,
            "region": "Московская область"}),
    ));
    let viewed = ["71001", "71002", "71003", "72001", "72002"];
    for v in 0..20i64 {
        let pid = viewed[(v % 5) as usize];
        let at = start + 60_000 + v * 140_000;
        out.push((
            "raw.site.page_view",
            "page_view",
            json!({"event_id": id("pv"), "event_time": at, "customer_id": WORKED, "session_id": session,
                "url": format!("https://hoff.ru/product/{pid}/"), "page_type": "product", "category_id": "71",
                "dwell_ms": 150_000}),
        ));
        out.push((
            "raw.site.product_view",
            "product_view",
            json!({"event_id": id("prv"), "event_time": at, "customer_id": WORKED, "session_id": session,
                "product_id": format!("{pid}"), "dwell_ms": 150_000, "price_kopecks": null, "list_id": null,
                "position": null}),
        ));
    }
    // 20 views over 5 distinct products; more distinct ones make the shopper undecided.
    for (k, pid) in ["71001", "71002", "71003", "72001", "72002", "81001", "40001", "32001"]
        .iter()
        .enumerate()
    {
        out.push((
            "raw.site.product_view",
            "product_view",
            json!({"event_id": id("prv"), "event_time": start + 30_000 + k as i64 * 1_000, "customer_id": WORKED,
                "session_id": session, "product_id": pid, "dwell_ms": 5_000, "price_kopecks": null,
                "list_id": null, "position": null}),
        ));
    }
    out.push((
        "raw.store.order",
        "order",
        json!({"event_id": id("ord"), "event_time": NOW, "customer_id": WORKED, "order_id": "o-1",
            "channel": "site", "status": "paid", "lines": [{"product_id": "71003", "quantity": 1,
            "price_kopecks": 9_000_000, "discount_kopecks": 0}], "total_kopecks": 9_000_000,
            "delivery_address": {"region": "Московская область", "city": "Одинцово", "district": "Жуковка",
            "street": "Лесная", "house": "7", "flat": null, "postal_code": null, "lat": null, "lon": null},
            "payment_method": "card"}),
    ));
    // Recommendations shown to the worked customer: one clicked, one ignored.
    for (pos, pid) in ["72001", "81001"].iter().enumerate() {
        out.push((
            "raw.site.rec_impression",
            "rec_impression",
            json!({"event_id": id("imp"), "event_time": NOW + 60_000, "customer_id": WORKED,
                "session_id": session, "list_id": "l-1", "placement": "home", "product_id": pid,
                "position": pos as i32, "model_version": "m1"}),
        ));
    }
    out.push((
        "raw.site.rec_click",
        "rec_click",
        json!({"event_id": id("clk"), "event_time": NOW + 120_000, "customer_id": WORKED, "session_id": session,
            "list_id": "l-1", "product_id": "72001", "position": 0, "model_version": "m1"}),
    ));
    // A renter in an ordinary district who buys a rug after a direct visit.
    out.push((
        "raw.site.session_start",
        "site_session_start",
        json!({"event_id": id("ss"), "event_time": NOW - 5 * DAY, "customer_id": "c-renter", "session_id": "s-r",
            "device_id": null, "traffic_source": "direct", "referrer": null, "search_engine": null,
            "search_phrase": null, "utm_source": null, "utm_medium": null, "utm_campaign": null,
            "utm_content": null, "utm_term": null, "landing_url": "https://hoff.ru/", "user_agent": null,
            "region": "Москва"}),
    ));
    for (k, pid) in ["32001", "71001"].iter().enumerate() {
        out.push((
            "raw.site.product_view",
            "product_view",
            json!({"event_id": id("prv"), "event_time": NOW - 5 * DAY + 1_000 * k as i64, "customer_id": "c-renter",
                "session_id": "s-r", "product_id": pid, "dwell_ms": 30_000, "price_kopecks": null,
                "list_id": null, "position": null}),
        ));
    }
    out.push((
        "raw.store.order",
        "order",
        json!({"event_id": id("ord"), "event_time": NOW - 5 * DAY + 600_000, "customer_id": "c-renter",
            "order_id": "o-2", "channel": "site", "status": "paid", "lines": [{"product_id": "32001",
            "quantity": 1, "price_kopecks": 1_800_000, "discount_kopecks": 0}], "total_kopecks": 1_800_000,
            "delivery_address": {"region": "Москва", "city": "Москва", "district": "Марьино", "street": null,
            "house": null, "flat": "12", "postal_code": null, "lat": null, "lon": null}, "payment_method": null}),
    ));
    // ...whose order is cancelled a day later: the second version replaces the first.
    out.push((
        "raw.store.order",
        "order",
        json!({"event_id": id("ord"), "event_time": NOW - 4 * DAY, "customer_id": "c-renter",
            "order_id": "o-2", "channel": "site", "status": "cancelled", "lines": [{"product_id": "32001",
            "quantity": 1, "price_kopecks": 1_800_000, "discount_kopecks": 0}], "total_kopecks": 1_800_000,
            "delivery_address": {"region": "Москва", "city": "Москва", "district": "Марьино", "street": null,
            "house": null, "flat": "12", "postal_code": null, "lat": null, "lon": null}, "payment_method": null}),
    ));
    // The renter also searched, carted, shops at the partner home store, and linked a
    // personal Instagram account (no professional profile to read).
    out.push((
        "raw.site.search",
        "search",
        json!({"event_id": id("q"), "event_time": NOW - 5 * DAY + 500, "customer_id": "c-renter", "session_id": "s-r",
            "query": "ковёр", "results_count": 12, "category_id": "32"}),
    ));
    out.push((
        "raw.site.cart_add",
        "cart_add",
        json!({"event_id": id("cart"), "event_time": NOW - 5 * DAY + 2_000, "customer_id": "c-renter",
            "session_id": "s-r", "product_id": "32001", "quantity": 1, "price_kopecks": 1_800_000, "list_id": null}),
    ));
    out.push((
        "raw.partner.uyutdom.order",
        "partner_order",
        json!({"event_id": id("ud"), "event_time": NOW - 8 * DAY, "customer_id": "c-renter", "partner": "uyutdom",
            "partner_order_id": "u-1", "lines": [{"sku": "U-9", "name": "Плед", "category": "Текстиль",
            "quantity": 2.0, "price_kopecks": 150_000}], "total_kopecks": 300_000, "delivery_address": null}),
    ));
    out.push((
        "raw.instagram.profile",
        "social_profile",
        json!({"event_id": id("ig"), "event_time": NOW - 6 * DAY, "customer_id": "c-renter", "network": "instagram",
            "network_user_id": "ig-1", "sex": "unknown", "birth_date": null, "birth_year": null, "city": null,
            "interests": [], "groups": [], "account_type": "PERSONAL", "deactivated": "personal_account"}),
    ));
    out.sort_by_key(|(_, _, e)| e["event_time"].as_i64().unwrap_or_default());
    out.into_iter()
        .map(|(t, e, j)| (t.to_string(), e.to_string(), j))
        .collect()
}

/// Lands `events` in `slices` successive commits per topic (1: everything at once), calling
/// `after_slice` after each slice so a test can fold between them.
pub async fn land<F, Fut>(lake: &LakeUrl, events: &[(String, String, Json)], slices: usize, mut after_slice: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let schemas = SchemaSet::load_strict(&super::repo().join("avro")).unwrap();
    let per = events.len().div_ceil(slices);
    for (s, chunk) in events.chunks(per).enumerate() {
        let mut by_topic: BTreeMap<&str, Vec<(&str, &Json)>> = BTreeMap::new();
        for (topic, event, json) in chunk {
            by_topic.entry(topic).or_default().push((event, json));
        }
        for (topic, items) in by_topic {
            hoffrec::ingest::direct::land_json(lake, &schemas, topic, &items)
                .await
                .unwrap_or_else(|e| panic!("{topic}: {e}"));
        }
        after_slice(s).await;
    }
}

/// The simulator's whole catalogue and a crowd of shoppers browsing it (popularity,
/// neighbours), to rank against; the worked customer's own history is in `events()`.
pub fn catalogue_and_crowd(seed: u64) -> Vec<(String, String, Json)> {
    use rand::{Rng, SeedableRng};
    let w = hoffrec::simulate::world::generate(seed, 80);
    let mut out = Vec::new();
    for p in &w.products {
        let leaf = w.categories.iter().find(|c| c.id == p.category_id).unwrap();
        let mut path: Vec<String> = leaf
            .parent
            .as_ref()
            .and_then(|id| w.categories.iter().find(|c| &c.id == id))
            .map(|c| c.name.clone())
            .into_iter()
            .collect();
        path.push(leaf.name.clone());
        out.push((
            "raw.store.catalogue".to_string(),
            "catalogue_product".to_string(),
            json!({"event_id": format!("crowd-cat-{}", p.id), "event_time": NOW - 20 * DAY, "product_id": p.id,
                "name": p.name, "category_id": p.category_id, "category_path": path, "brand": p.vendor,
                "price_kopecks": (p.price_rub * 100.0) as i64, "old_price_kopecks": null, "available": true,
                "attributes": {}, "url": null}),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (n, c) in w.customers.iter().enumerate() {
        let session = format!("crowd-s-{n}");
        for v in 0..8 {
            let p = &w.products[rng.random_range(0..w.products.len())];
            out.push((
                "raw.site.product_view".to_string(),
                "product_view".to_string(),
                json!({"event_id": format!("crowd-pv-{n}-{v}"), "event_time": NOW - 10 * DAY + v * 60_000,
                    "customer_id": format!("crowd-{}", c.id), "session_id": session, "product_id": p.id,
                    "dwell_ms": 20_000, "price_kopecks": null, "list_id": null, "position": null}),
            ));
        }
    }
    out
}
