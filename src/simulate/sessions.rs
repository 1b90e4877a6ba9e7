//! Site sessions as the site's own tracker would post them to the collector: a session
//! start with its referrer, a search, product views with dwell times, page views, and
//! sometimes a cart. What a customer looks at follows the hidden persona and traits:
//! undecided shoppers spend their newest visit (about an hour) going through twenty
//! products of one department; brand-loyal ones type the address in and look at their
//! brand; the others mostly arrive from a search engine and look at whatever it shows.

use super::world::{Customer, DAY_MS, Persona, World, undecided_department, wants};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};

fn arrival(rng: &mut StdRng, c: &Customer) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    if c.favourite_vendor.is_some() {
        return ("direct", None, None);
    }
    match (c.persona, rng.random_range(0..10)) {
        (_, 0..=4) => ("search", Some("https://yandex.ru/"), Some("yandex")),
        (_, 5..=6) => ("search", Some("https://www.google.com/"), Some("google")),
        (Persona::RenterDecor | Persona::YoungFamily, _) => ("social", Some("https://vk.com/"), None),
        _ => ("direct", None, None),
    }
}

/// `per_customer` sessions for every customer, two days apart, the newest starting at
/// the customer's last visit; in time order per customer.
pub fn generate(world: &World, per_customer: usize) -> Vec<Json> {
    let mut rng = StdRng::seed_from_u64(world.seed ^ 0x5e55_10f5);
    let mut events = Vec::new();
    for c in &world.customers {
        for s in 0..per_customer {
            let newest = s + 1 == per_customer;
            let start = c.last_visit_ms - (per_customer - 1 - s) as i64 * 2 * DAY_MS;
            session(
                world,
                c,
                s,
                start,
                newest && c.truth.undecided_shopper,
                &mut rng,
                &mut events,
            );
        }
    }
    events
}

fn session(world: &World, c: &Customer, s: usize, start: i64, undecided: bool, rng: &mut StdRng, out: &mut Vec<Json>) {
    let session_id = format!("sim-{}-{}-s{s}", world.seed, c.id);
    let mut t = start;
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("{session_id}-{n}")
    };
    let (source, referrer, engine) = arrival(rng, c);
    let categories = if undecided {
        undecided_department(c.persona)
    } else {
        wants(c.persona)
    };
    let category = categories[rng.random_range(0..categories.len())];
    let category_name = world
        .categories
        .iter()
        .find(|k| k.id == category)
        .map_or("", |k| k.name.as_str());
    out.push(
        json!({"type": "site_session_start", "event_id": id(), "event_time": t, "customer_id": c.id,
        "session_id": session_id, "traffic_source": source, "referrer": referrer, "search_engine": engine,
        "search_phrase": engine.map(|_| category_name.to_lowercase()),
        "landing_url": format!("https://hoff.ru/catalog/{category}/"), "region": c.region}),
    );
    t += 20_000;
    let results = world.products.iter().filter(|p| p.category_id == category).count();
    out.push(
        json!({"type": "search", "event_id": id(), "event_time": t, "customer_id": c.id,
        "session_id": session_id, "query": category_name.to_lowercase(), "results_count": results,
        "category_id": category}),
    );
    let views = if undecided { 20 } else { rng.random_range(3..=5) };
    for position in 0..views {
        // An undecided visit wanders over the department; a decisive one stays in a category.
        let in_category = if undecided {
            categories[rng.random_range(0..categories.len())]
        } else {
            category
        };
        let options: Vec<_> = world.products.iter().filter(|p| p.category_id == in_category).collect();
        let brand: Vec<_> = options
            .iter()
            .filter(|p| c.favourite_vendor.as_deref() == Some(p.vendor.as_str()))
            .collect();
        let p = if !brand.is_empty() && (!undecided || rng.random_bool(0.75)) {
            brand[rng.random_range(0..brand.len())]
        } else {
            &options[rng.random_range(0..options.len())]
        };
        let dwell = if undecided {
            rng.random_range(120_000..180_000)
        } else {
            rng.random_range(15_000..120_000)
        };
        t += 5_000;
        out.push(
            json!({"type": "page_view", "event_id": id(), "event_time": t, "customer_id": c.id,
            "session_id": session_id, "url": format!("https://hoff.ru/product/{}/", p.id), "page_type": "product",
            "category_id": in_category, "dwell_ms": dwell}),
        );
        out.push(
            json!({"type": "product_view", "event_id": id(), "event_time": t, "customer_id": c.id,
            "session_id": session_id, "product_id": p.id, "dwell_ms": dwell,
            "price_kopecks": (p.price_rub * 100.0) as i64, "list_id": "search", "position": position}),
        );
        t += dwell;
        if !undecided && rng.random_bool(0.15) {
            out.push(
                json!({"type": "cart_add", "event_id": id(), "event_time": t, "customer_id": c.id,
                "session_id": session_id, "product_id": p.id, "quantity": 1,
                "price_kopecks": (p.price_rub * 100.0) as i64, "list_id": "search"}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_deterministic_and_follow_personas() {
        let world = super::super::world::generate(5, 60);
        let a = generate(&world, 2);
        assert_eq!(a, generate(&world, 2));
        let gardeners: Vec<&str> = world
            .customers
            .iter()
            .filter(|c| c.persona == Persona::Gardener)
            .map(|c| c.id.as_str())
            .collect();
        for e in a
            .iter()
            .filter(|e| e["type"] == "product_view" && gardeners.contains(&e["customer_id"].as_str().unwrap_or("")))
        {
            let id = e["product_id"].as_str().unwrap();
            assert!(["71", "72", "73", "6"].iter().any(|c| id.starts_with(c)), "{id}");
        }
    }
}
