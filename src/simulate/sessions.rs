//! Site sessions as the site's own tracker would post them to the collector: a session
//! start with its referrer, a search, product views with dwell times, page views, and
//! sometimes a cart. What a customer looks at follows the hidden persona; undecided
//! shoppers (young families here) look at many products for a short time each.

use super::world::{Customer, Persona, START_MS, World};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};

const MINUTE_MS: i64 = 60_000;

/// Categories a persona browses, most likely first.
fn browses(p: Persona) -> &'static [&'static str] {
    match p {
        Persona::RenovatingOwner => &["81", "82", "4", "11", "12", "5"],
        Persona::RenterDecor => &["6", "31", "32", "5", "73"],
        Persona::YoungFamily => &["13", "11", "21", "31"],
        Persona::Gardener => &["71", "72", "73"],
    }
}

fn arrival(rng: &mut StdRng, p: Persona) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    match (p, rng.random_range(0..3)) {
        (Persona::RenovatingOwner | Persona::Gardener, 0 | 1) => ("search", Some("https://yandex.ru/"), Some("yandex")),
        (Persona::RenterDecor, 0 | 1) => ("social", Some("https://vk.com/"), None),
        (_, 0) => ("search", Some("https://www.google.com/"), Some("google")),
        _ => ("direct", None, None),
    }
}

/// `per_customer` sessions for every customer, in time order per customer.
pub fn generate(world: &World, per_customer: usize) -> Vec<Json> {
    let mut rng = StdRng::seed_from_u64(world.seed ^ 0x5e55_10f5);
    let mut events = Vec::new();
    for c in &world.customers {
        for s in 0..per_customer {
            session(world, c, s, &mut rng, &mut events);
        }
    }
    events
}

fn session(world: &World, c: &Customer, s: usize, rng: &mut StdRng, out: &mut Vec<Json>) {
    let session_id = format!("sim-{}-{}-s{s}", world.seed, c.id);
    let mut t =
        START_MS + rng.random_range(0..14) * 24 * 60 * MINUTE_MS + rng.random_range(8 * 60..23 * 60) * MINUTE_MS;
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("{session_id}-{n}")
    };
    let (source, referrer, engine) = arrival(rng, c.persona);
    let categories = browses(c.persona);
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
    let undecided = c.persona == Persona::YoungFamily;
    let views = if undecided {
        rng.random_range(6..12)
    } else {
        rng.random_range(2..6)
    };
    let options: Vec<_> = world.products.iter().filter(|p| p.category_id == category).collect();
    for position in 0..views {
        let p = options[rng.random_range(0..options.len())];
        let dwell = if undecided {
            rng.random_range(3_000..20_000)
        } else {
            rng.random_range(15_000..180_000)
        };
        t += 5_000;
        out.push(
            json!({"type": "page_view", "event_id": id(), "event_time": t, "customer_id": c.id,
            "session_id": session_id, "url": format!("https://hoff.ru/product/{}/", p.id), "page_type": "product",
            "category_id": category, "dwell_ms": dwell}),
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
            assert!(
                id.starts_with("71") || id.starts_with("72") || id.starts_with("73"),
                "{id}"
            );
        }
    }
}
