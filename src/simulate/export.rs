//! `hoffrec simulate --export-interactions FILE`: the world's history as an interaction log
//! for `hoffrec evaluate` (customer_id, product_id, ts, event, quantity, price, category,
//! name). Every order line is a purchase, browsed before: a view of the product and of
//! others in its category shortly before the order. The site sessions add the customers'
//! browsing, moved 75 days back into the same window as the orders.

use super::world::{DAY_MS, World};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, serde::Serialize)]
pub struct Interaction {
    pub customer_id: String,
    pub product_id: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
    pub event: &'static str,
    pub quantity: f64,
    pub price: f64,
    pub category: String,
    pub name: String,
}

pub fn interactions(world: &World) -> Vec<Interaction> {
    let products: HashMap<&str, &super::world::Product> = world.products.iter().map(|p| (p.id.as_str(), p)).collect();
    let row = |customer: &str, product: &str, ts: i64, event: &'static str, quantity: f64| {
        let p = products.get(product)?;
        Some(Interaction {
            customer_id: customer.to_string(),
            product_id: product.to_string(),
            ts,
            event,
            quantity,
            price: p.price_rub,
            category: p.category_id.clone(),
            name: p.name.clone(),
        })
    };
    let mut out = Vec::new();
    for o in world.orders.iter().filter(|o| o.status != "CANCELLED") {
        for (n, l) in o.lines.iter().enumerate() {
            let category = products.get(l.product_id.as_str()).map(|p| p.category_id.as_str());
            let browsed = world
                .products
                .iter()
                .filter(|p| Some(p.category_id.as_str()) == category)
                .take(3)
                .map(|p| p.id.as_str());
            for (k, p) in browsed.enumerate() {
                out.extend(row(
                    &o.customer_id,
                    p,
                    o.updated_ms - 3_600_000 + k as i64 * 60_000,
                    "view",
                    1.0,
                ));
            }
            out.extend(row(
                &o.customer_id,
                &l.product_id,
                o.updated_ms - 1_800_000,
                "view",
                1.0,
            ));
            out.extend(row(
                &o.customer_id,
                &l.product_id,
                o.updated_ms + n as i64,
                "purchase",
                f64::from(l.count),
            ));
        }
    }
    for e in super::sessions::generate(world, 2) {
        let (Some(kind), Some(c), Some(p), Some(t)) = (
            e["type"].as_str(),
            e["customer_id"].as_str(),
            e["product_id"].as_str(),
            e["event_time"].as_i64(),
        ) else {
            continue;
        };
        let event = match kind {
            "product_view" => "view",
            "cart_add" => "cart",
            _ => continue,
        };
        out.extend(row(c, p, t - 75 * DAY_MS, event, 1.0));
    }
    out.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.customer_id.cmp(&b.customer_id)));
    out
}

pub fn write_csv(world: &World, path: &Path) -> Result<usize, std::io::Error> {
    let rows = interactions(world);
    let mut w = csv::Writer::from_path(path)?;
    for r in &rows {
        w.serialize(r).map_err(std::io::Error::other)?;
    }
    w.flush()?;
    Ok(rows.len())
}
