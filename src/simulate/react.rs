//! The simulated site showing recommendations: it reads the lists on `recs.customer`, shows
//! each to its customer (a `rec_impression` per item), and the customer reacts by their
//! hidden persona: they click products of the categories they want, more often near the
//! top of the list, and put some of those in the cart. Everything goes through the event
//! collector, so the feedback loop is the one the real site closes.

use super::world::{Persona, World, wants};
use apache_avro::types::Value;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value as Json, json};
use std::collections::HashMap;

/// One list as the site received it.
#[derive(Debug, Clone)]
pub struct ShownList {
    pub customer_id: String,
    pub list_id: String,
    pub model_version: String,
    pub products: Vec<String>,
    /// Each product's propensity, in the same order (a missing one is 1).
    pub propensities: Vec<f64>,
}

impl ShownList {
    /// Reads a decoded `recommendation` record.
    pub fn from_avro(v: &Value) -> Option<Self> {
        let Value::Record(fields) = v else { return None };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let text = |name: &str| match get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let Some(Value::Array(items)) = get("items") else {
            return None;
        };
        let (products, propensities) = items
            .iter()
            .filter_map(|i| {
                let Value::Record(f) = i else { return None };
                let field = |name: &str| f.iter().find(|(n, _)| n == name).map(|(_, v)| v);
                let Some(Value::String(id)) = field("product_id") else {
                    return None;
                };
                let propensity = match field("propensity") {
                    Some(Value::Double(p)) => *p,
                    _ => 1.0,
                };
                Some((id.clone(), propensity))
            })
            .unzip();
        Some(Self {
            customer_id: text("customer_id")?,
            list_id: text("list_id")?,
            model_version: text("model_version")?,
            products,
            propensities,
        })
    }
}

/// How likely a customer clicks a shown product: interest in its category, decaying with
/// the position in the list.
pub fn click_probability(persona: Persona, category: &str, position: usize) -> f64 {
    let wanted = wants(persona).iter().position(|c| *c == category);
    let interest = match wanted {
        Some(0..=1) => 0.45,
        Some(_) => 0.3,
        None => 0.03,
    };
    interest * 0.92f64.powi(position as i32)
}

/// The events one shown list produces: impressions for every item, then the clicks (each
/// opening the product's card: a view) and carts the customer's persona leads to. Customers the world does not know ignore lists.
pub fn react(world: &World, list: &ShownList, now_ms: i64, rng: &mut StdRng) -> Vec<Json> {
    let Some(customer) = world.customers.iter().find(|c| c.id == list.customer_id) else {
        return Vec::new();
    };
    let categories: HashMap<&str, &str> = world
        .products
        .iter()
        .map(|p| (p.id.as_str(), p.category_id.as_str()))
        .collect();
    let mut out = Vec::new();
    for (position, product) in list.products.iter().enumerate() {
        let id = format!("{}-{position}", list.list_id);
        let propensity = list.propensities.get(position).copied().unwrap_or(1.0);
        out.push(
            json!({"type": "rec_impression", "event_id": format!("imp-{id}"), "event_time": now_ms,
            "customer_id": customer.id, "session_id": null, "list_id": list.list_id, "placement": "home",
            "product_id": product, "position": position, "model_version": list.model_version,
            "propensity": propensity}),
        );
        let category = categories.get(product.as_str()).copied().unwrap_or("");
        if rng.random_bool(click_probability(customer.persona, category, position)) {
            let price = world
                .products
                .iter()
                .find(|p| &p.id == product)
                .map_or(0, |p| (p.price_rub * 100.0) as i64);
            out.push(
                json!({"type": "rec_click", "event_id": format!("clk-{id}"), "event_time": now_ms + 5_000,
                "customer_id": customer.id, "session_id": null, "list_id": list.list_id,
                "product_id": product, "position": position, "model_version": list.model_version}),
            );
            // The click opens the product's card, which the site's tracker logs as a view
            // attributed to the list.
            out.push(
                json!({"type": "product_view", "event_id": format!("view-{id}"), "event_time": now_ms + 6_000,
                "customer_id": customer.id, "session_id": format!("rec-{}", list.list_id), "product_id": product,
                "dwell_ms": rng.random_range(20_000..90_000i64), "price_kopecks": price,
                "list_id": list.list_id, "position": position}),
            );
            if rng.random_bool(0.3) {
                out.push(
                    json!({"type": "cart_add", "event_id": format!("cart-{id}"), "event_time": now_ms + 60_000,
                    "customer_id": customer.id, "session_id": format!("rec-{}", list.list_id),
                    "product_id": product, "quantity": 1, "price_kopecks": price, "list_id": list.list_id}),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn customers_click_what_their_persona_wants() {
        let world = super::super::world::generate(4, 200);
        let gardener = world.customers.iter().find(|c| c.persona == Persona::Gardener).unwrap();
        let of = |prefix: &str| -> Vec<String> {
            world
                .products
                .iter()
                .filter(|p| p.category_id == prefix)
                .take(10)
                .map(|p| p.id.clone())
                .collect()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let clicks = |products: Vec<String>, rng: &mut StdRng| -> usize {
            (0..200)
                .map(|n| {
                    let list = ShownList {
                        customer_id: gardener.id.clone(),
                        list_id: format!("l{n}"),
                        model_version: "m".into(),
                        products: products.clone(),
                        propensities: Vec::new(),
                    };
                    react(&world, &list, 0, rng)
                        .iter()
                        .filter(|e| e["type"] == "rec_click")
                        .count()
                })
                .sum()
        };
        let garden = clicks(of("71"), &mut rng);
        let renovation = clicks(of("81"), &mut rng);
        assert!(
            garden > 5 * renovation.max(1),
            "garden {garden} vs renovation {renovation}"
        );
        let list = ShownList {
            customer_id: gardener.id.clone(),
            list_id: "x".into(),
            model_version: "m".into(),
            products: of("71"),
            propensities: Vec::new(),
        };
        let impressions = react(&world, &list, 0, &mut rng)
            .iter()
            .filter(|e| e["type"] == "rec_impression")
            .count();
        assert_eq!(impressions, 10);
    }
}

/// Where the simulated site reads the lists from.
#[derive(Debug, Clone)]
pub struct Site {
    pub kafka: crate::config::KafkaConfig,
    pub recs_topic: String,
    pub schemas: std::sync::Arc<crate::codec::SchemaSet>,
    pub collector: String,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SiteSummary {
    pub lists_shown: u64,
    pub impressions: u64,
    pub clicks: u64,
}

/// Shows every list that arrives on the recommendations topic until `shutdown`.
pub async fn show_lists(
    world: &World,
    site: &Site,
    seed: u64,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<SiteSummary, super::SimulateError> {
    use rand::SeedableRng;
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let kafka_err = |source| super::SimulateError::Kafka {
        topic: site.recs_topic.clone(),
        source,
    };
    // The site, unlike a stage, has nothing to finish before its place is kept: a run
    // with the same seed picks up the lists published since the last one.
    let consumer: StreamConsumer =
        crate::kafka::consumer_config(&site.kafka, &format!("hoffrec-sim-site-{seed}"), "earliest")
            .set("enable.auto.commit", "true")
            .create()
            .map_err(kafka_err)?;
    consumer.subscribe(&[site.recs_topic.as_str()]).map_err(kafka_err)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x517e);
    let mut summary = SiteSummary::default();
    let opened = std::time::Instant::now();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m.map_err(kafka_err)?,
        };
        let Some(list) = message
            .payload()
            .and_then(|p| site.schemas.decode(p, "recommendation").ok())
            .and_then(|v| ShownList::from_avro(&v))
        else {
            continue;
        };
        // The world's own clock: the site opens after the customers' visits, and a real
        // second passes as a second there, so portraits stay as of the world's time.
        let now = super::world::SITE_OPENS_MS + opened.elapsed().as_millis() as i64;
        let events = react(world, &list, now, &mut rng);
        summary.lists_shown += 1;
        summary.impressions += events.iter().filter(|e| e["type"] == "rec_impression").count() as u64;
        summary.clicks += events.iter().filter(|e| e["type"] == "rec_click").count() as u64;
        match super::post(&site.collector, &events).await {
            Ok(_) => {}
            // The collector stops with everything else; the last list simply goes unseen.
            Err(_) if shutdown.is_cancelled() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(summary)
}
