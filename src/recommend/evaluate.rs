//! `hoffrec evaluate`: offline evaluation on any interaction log. The events before the
//! split are landed in a scratch lake as the raw events they are (views, carts, orders,
//! impressions, clicks), the production marts are folded over them, a model is trained if
//! the log has exposures, and the production ranker lists products for every customer seen
//! before the split who bought after it. Baselines are computed from the same events.

use super::{RecommendError, Recommender, model::Model};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
struct Row {
    customer_id: Json,
    product_id: Json,
    ts: Json,
    event: String,
    #[serde(default)]
    quantity: Option<f64>,
    #[serde(default)]
    price: Option<f64>,
    #[serde(default)]
    category: Option<Json>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Clone)]
struct Event {
    customer: String,
    product: String,
    ts_ms: i64,
    kind: String,
    quantity: f64,
    price_kopecks: i64,
    category: Option<String>,
    name: Option<String>,
}

/// `HR@k`, `NDCG@k`, `Recall@2k` and `coverage` (distinct products in the top k of all
/// lists over the catalogue).
pub type Scores = BTreeMap<String, f64>;

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    pub events: usize,
    pub customers_evaluated: usize,
    pub catalogue: usize,
    pub model_version: String,
    pub hoffrec: Scores,
    pub popularity: Scores,
    pub recent_popularity: Scores,
    pub item_knn: Scores,
}

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Milliseconds since the epoch from epoch seconds or milliseconds, RFC 3339, or a date.
pub fn parse_time(v: &str) -> Option<i64> {
    let v = v.trim().trim_matches('"');
    if let Ok(n) = v.parse::<i64>() {
        return Some(if n > 100_000_000_000 { n } else { n * 1000 });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.timestamp_millis());
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

async fn read_log(path: &Path) -> Result<Vec<Event>, RecommendError> {
    let err = |e: String| RecommendError::Config(format!("{}: {e}", path.display()));
    let ctx = datafusion::prelude::SessionContext::new();
    let name = path.display().to_string();
    let df = if name.ends_with(".parquet") {
        ctx.read_parquet(name.as_str(), Default::default()).await
    } else {
        ctx.read_csv(name.as_str(), Default::default()).await
    }
    .map_err(|e| err(e.to_string()))?;
    let batches = df.collect().await.map_err(|e| err(e.to_string()))?;
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        writer.write(b).map_err(|e| err(e.to_string()))?;
    }
    writer.finish().map_err(|e| err(e.to_string()))?;
    let rows: Vec<Row> = serde_json::from_slice(&writer.into_inner())
        .map_err(|e| err(format!("{e} (columns customer_id, product_id, ts, event are required)")))?;
    let mut events = Vec::with_capacity(rows.len());
    for (n, r) in rows.into_iter().enumerate() {
        let ts_ms = parse_time(&text(&r.ts)).ok_or_else(|| err(format!("row {}: cannot read ts {}", n + 1, r.ts)))?;
        let kind = r.event.trim().to_lowercase();
        if !["view", "cart", "purchase", "impression", "click"].contains(&kind.as_str()) {
            return Err(err(format!(
                "row {}: event `{kind}` is not view|cart|purchase|impression|click",
                n + 1
            )));
        }
        events.push(Event {
            customer: text(&r.customer_id),
            product: text(&r.product_id),
            ts_ms,
            kind,
            quantity: r.quantity.unwrap_or(1.0),
            price_kopecks: (r.price.unwrap_or(0.0) * 100.0).round() as i64,
            category: r.category.as_ref().map(text),
            name: r.name,
        });
    }
    Ok(events)
}

/// The training events as the raw events the connectors would have produced.
fn raw_events(train: &[Event]) -> Vec<Json> {
    let mut out = Vec::new();
    let mut products: BTreeMap<&str, &Event> = BTreeMap::new();
    for e in train {
        products.entry(e.product.as_str()).or_insert(e);
    }
    for (id, e) in &products {
        let category = e.category.clone().unwrap_or_else(|| "unknown".into());
        out.push(
            json!({"type": "catalogue_product", "event_id": format!("eval-cat-{id}"), "event_time": e.ts_ms,
            "product_id": id, "name": e.name.clone().unwrap_or_else(|| id.to_string()), "category_id": category,
            "category_path": [category], "brand": null, "price_kopecks": e.price_kopecks.max(0),
            "old_price_kopecks": null, "available": true, "attributes": {}, "url": null}),
        );
    }
    for (n, e) in train.iter().enumerate() {
        let day = e.ts_ms.div_euclid(86_400_000);
        let session = format!("{}-{day}", e.customer);
        let id = format!("eval-{n}");
        let price = e.price_kopecks.max(0);
        out.push(match e.kind.as_str() {
            "view" => json!({"type": "product_view", "event_id": id, "event_time": e.ts_ms, "customer_id": e.customer,
                "session_id": session, "product_id": e.product, "dwell_ms": 0, "price_kopecks": null,
                "list_id": null, "position": null}),
            "cart" => json!({"type": "cart_add", "event_id": id, "event_time": e.ts_ms, "customer_id": e.customer,
                "session_id": session, "product_id": e.product, "quantity": e.quantity.max(1.0) as i32,
                "price_kopecks": price, "list_id": null}),
            "purchase" => json!({"type": "order", "event_id": id, "event_time": e.ts_ms, "customer_id": e.customer,
                "order_id": format!("eval-o-{n}"), "channel": "log", "status": "paid",
                "lines": [{"product_id": e.product, "quantity": e.quantity.max(1.0) as i32,
                "price_kopecks": price, "discount_kopecks": 0}], "total_kopecks": price, "delivery_address": null,
                "payment_method": null}),
            "impression" => json!({"type": "rec_impression", "event_id": id, "event_time": e.ts_ms,
                "customer_id": e.customer, "session_id": null, "list_id": session, "placement": "log",
                "product_id": e.product, "position": 0, "model_version": "log"}),
            _ => json!({"type": "rec_click", "event_id": id, "event_time": e.ts_ms, "customer_id": e.customer,
                "session_id": null, "list_id": session, "product_id": e.product, "position": 0,
                "model_version": "log"}),
        });
    }
    out
}

fn score(
    lists: &HashMap<String, Vec<String>>,
    truth: &HashMap<String, HashSet<String>>,
    catalogue: usize,
    k: usize,
) -> Scores {
    let (mut hr, mut ndcg, mut recall) = (0.0, 0.0, 0.0);
    let mut shown: HashSet<&str> = HashSet::new();
    for (c, relevant) in truth {
        let list = lists.get(c).map(Vec::as_slice).unwrap_or_default();
        let top = &list[..list.len().min(k)];
        shown.extend(top.iter().map(String::as_str));
        hr += f64::from(top.iter().any(|p| relevant.contains(p)));
        let dcg: f64 = top
            .iter()
            .enumerate()
            .filter(|(_, p)| relevant.contains(*p))
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let idcg: f64 = (0..relevant.len().min(k)).map(|i| 1.0 / ((i + 2) as f64).log2()).sum();
        ndcg += dcg / idcg.max(f64::MIN_POSITIVE);
        let hits = list[..list.len().min(2 * k)]
            .iter()
            .filter(|p| relevant.contains(*p))
            .count();
        recall += hits as f64 / relevant.len().max(1) as f64;
    }
    let n = truth.len().max(1) as f64;
    let r = |x: f64| (x * 10_000.0).round() / 10_000.0;
    BTreeMap::from([
        (format!("HR@{k}"), r(hr / n)),
        (format!("NDCG@{k}"), r(ndcg / n)),
        (format!("Recall@{}", 2 * k), r(recall / n)),
        ("coverage".to_string(), r(shown.len() as f64 / catalogue.max(1) as f64)),
    ])
}

/// Ranks by a per-product weight, skipping what `skip` says the customer has.
fn by_weight(weights: &HashMap<String, f64>, skip: &HashSet<&str>, k: usize) -> Vec<String> {
    let mut v: Vec<(&str, f64)> = weights
        .iter()
        .filter(|(p, _)| !skip.contains(p.as_str()))
        .map(|(p, w)| (p.as_str(), *w))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    v.into_iter().take(k).map(|(p, _)| p.to_string()).collect()
}

pub async fn run(
    config: &crate::config::Config,
    file: &Path,
    split_at: &str,
    k: usize,
    exclude_seen: bool,
) -> Result<EvaluateReport, RecommendError> {
    let k = k.max(1);
    let split =
        parse_time(split_at).ok_or_else(|| RecommendError::Config(format!("--split-at {split_at}: not a time")))?;
    let events = read_log(file).await?;
    let (train, test): (Vec<Event>, Vec<Event>) = events.iter().cloned().partition(|e| e.ts_ms < split);
    let seen: HashSet<&str> = train.iter().map(|e| e.customer.as_str()).collect();
    let mut bought_before: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut history: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in &train {
        history.entry(&e.customer).or_default().insert(&e.product);
        if e.kind == "purchase" {
            bought_before.entry(&e.customer).or_default().insert(&e.product);
        }
    }
    let mut truth: HashMap<String, HashSet<String>> = HashMap::new();
    for e in test
        .iter()
        .filter(|e| e.kind == "purchase" && seen.contains(e.customer.as_str()))
    {
        let before = bought_before.get(e.customer.as_str());
        if exclude_seen && before.is_some_and(|b| b.contains(e.product.as_str())) {
            continue;
        }
        truth.entry(e.customer.clone()).or_default().insert(e.product.clone());
    }
    let catalogue: BTreeSet<&str> = train.iter().map(|e| e.product.as_str()).collect();

    // The production pipeline over a scratch lake.
    let scratch = std::env::temp_dir().join(format!("hoffrec-evaluate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| RecommendError::Config(e.to_string()))?;
    let mut cfg = config.clone();
    cfg.lake.url = scratch.display().to_string();
    cfg.recommend.top_k = 2 * k;
    let r = Recommender::load(&cfg)?;
    crate::ingest::direct::land_typed(&r.lake, &r.catalog, &raw_events(&train))
        .await
        .map_err(RecommendError::Config)?;
    let files = crate::mart::files::load(&cfg.mart.sql_dir).map_err(|e| RecommendError::Config(e.to_string()))?;
    crate::mart::fold::fold(&r.lake, &r.catalog, &files)
        .await
        .map_err(|e| RecommendError::Config(e.to_string()))?;
    let model = match super::train::train_once(&r, 3650, 0.2).await {
        Ok(t) => t.candidate,
        Err(_) => Model::prior(),
    };
    let customers: Vec<String> = truth.keys().cloned().collect();
    let progress = indicatif::ProgressBar::new(customers.len() as u64).with_message("ranking");
    let mut ours: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in customers.chunks(200) {
        for e in r.rank(chunk, &model).await? {
            ours.insert(e.customer_id, e.list.into_iter().map(|s| s.product_id).collect());
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let _ = std::fs::remove_dir_all(&scratch);

    // Baselines from the same training events.
    let mut popular: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut recent: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in train.iter().filter(|e| e.kind != "impression") {
        popular.entry(&e.product).or_default().insert(&e.customer);
        if e.ts_ms >= split - 7 * 86_400_000 {
            recent.entry(&e.product).or_default().insert(&e.customer);
        }
    }
    let count = |m: &HashMap<&str, HashSet<&str>>| -> HashMap<String, f64> {
        m.iter().map(|(p, c)| (p.to_string(), c.len() as f64)).collect()
    };
    let (popular, recent) = (count(&popular), count(&recent));
    let mut co: HashMap<(&str, &str), f64> = HashMap::new();
    for items in history.values() {
        for a in items {
            for b in items.iter().filter(|b| *b != a) {
                *co.entry((*a, *b)).or_default() += 1.0;
            }
        }
    }
    let item_count: HashMap<&str, f64> = history.values().flatten().fold(HashMap::new(), |mut m, p| {
        *m.entry(*p).or_default() += 1.0;
        m
    });
    let empty = HashSet::new();
    let lists = |f: &dyn Fn(&str) -> HashMap<String, f64>| -> HashMap<String, Vec<String>> {
        customers
            .iter()
            .map(|c| {
                let skip = if exclude_seen {
                    bought_before.get(c.as_str()).unwrap_or(&empty)
                } else {
                    &empty
                };
                (c.clone(), by_weight(&f(c), skip, 2 * k))
            })
            .collect()
    };
    let popularity = lists(&|_| popular.clone());
    let recent_popularity = lists(&|_| recent.clone());
    let knn = lists(&|c| {
        let mut w: HashMap<String, f64> = HashMap::new();
        for h in history.get(c).into_iter().flatten() {
            for ((a, b), n) in co.iter().filter(|((a, _), _)| a == h) {
                let sim = n / (item_count[a] * item_count[b]).sqrt();
                *w.entry(b.to_string()).or_default() += sim;
            }
        }
        w
    });
    let size = catalogue.len();
    Ok(EvaluateReport {
        events: events.len(),
        customers_evaluated: customers.len(),
        catalogue: size,
        model_version: model.version,
        hoffrec: score(&ours, &truth, size, k),
        popularity: score(&popularity, &truth, size, k),
        recent_popularity: score(&recent_popularity, &truth, size, k),
        item_knn: score(&knn, &truth, size, k),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_the_usual_forms() {
        assert_eq!(parse_time("1767225600"), Some(1_767_225_600_000));
        assert_eq!(parse_time("1767225600000"), Some(1_767_225_600_000));
        assert_eq!(parse_time("2026-01-01"), Some(1_767_225_600_000));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Some(1_767_225_600_000));
        assert_eq!(parse_time("2026-01-01 00:00:00"), Some(1_767_225_600_000));
        assert_eq!(parse_time("soon"), None);
    }

    #[test]
    fn metrics_on_a_known_list() {
        let lists = HashMap::from([("c".to_string(), vec!["a".to_string(), "b".to_string()])]);
        let truth = HashMap::from([("c".to_string(), HashSet::from(["b".to_string()]))]);
        let s = score(&lists, &truth, 4, 10);
        assert_eq!(s["HR@10"], 1.0);
        assert_eq!(s["Recall@20"], 1.0);
        assert_eq!(s["NDCG@10"], (1.0 / 3f64.log2() * 10_000.0).round() / 10_000.0);
        assert_eq!(s["coverage"], 0.5);
    }
}
