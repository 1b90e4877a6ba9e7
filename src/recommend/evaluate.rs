//! `hoffrec evaluate`: offline evaluation on any interaction log. The events before the
//! split are landed in a scratch lake as the raw events they are (views, carts, orders,
//! impressions, clicks), the production marts are folded over them, the ranker is trained
//! as `train` trains it (on exposures if the log has them, else on next purchases after
//! the marts of `train_label_horizon_days` before the split), and the production ranker
//! lists products for every customer seen before the split who bought after it. Baselines
//! are computed from the same events.

use super::collab::{self, Interactions};
use super::{RecommendError, Recommender, model::Model};
use crate::mart::session::MartVersions;
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

/// One method's scores over every evaluated customer, how long it took to fit and to rank
/// them all, and its `NDCG@k` per customer segment.
#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    #[serde(flatten)]
    pub scores: Scores,
    pub fit_ms: u64,
    pub rank_ms: u64,
    pub ndcg_by_segment: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NovelHeadReport {
    pub auc: Option<f64>,
    pub rows: u64,
    pub weights: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    pub events: usize,
    pub customers_evaluated: usize,
    pub catalogue: usize,
    pub model_version: String,
    /// What the ranker learned from: `exposure`, `next_purchase`, or `none` (the prior).
    pub ranker_labels: String,
    /// The ranker's weight per feature, as it was trained (or the prior's).
    pub ranker_weights: BTreeMap<String, f64>,
    /// The novel head's weights (standardised features), its AUC on customers it was not
    /// fitted on, and its rows; absent when the labels gave none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub novel_head: Option<NovelHeadReport>,
    /// Customers per segment: `new` (nothing bought before the split) or `returning`, and
    /// how many products they touched before it.
    pub segments: BTreeMap<String, usize>,
    pub hoffrec: MethodReport,
    pub popularity: MethodReport,
    pub recent_popularity: MethodReport,
    pub item_knn: MethodReport,
    pub ease: MethodReport,
    pub als: MethodReport,
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
    } else if name.ends_with(".csv.gz") {
        let options = datafusion::prelude::CsvReadOptions::new()
            .file_extension(".csv.gz")
            .file_compression_type(
                datafusion::datasource::file_format::file_compression_type::FileCompressionType::GZIP,
            );
        ctx.read_csv(name.as_str(), options).await
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

/// Scores of every product for one customer's (product, weight) history.
type ScoreRow<'a> = dyn Fn(&[(u32, f32)]) -> Vec<f32> + 'a;

/// The weight of one training event for the collaborative models: what it says about
/// interest (a purchase most), halved every `collab::HALF_LIFE_DAYS` before the split.
fn weight(e: &Event, split: i64) -> f64 {
    let base = match e.kind.as_str() {
        "purchase" => 5.0,
        "cart" => 3.0,
        "click" => 2.0,
        "view" => 1.0,
        _ => 0.0,
    };
    let age_days = (split - e.ts_ms).max(0) as f64 / 86_400_000.0;
    base * 0.5f64.powf(age_days / collab::HALF_LIFE_DAYS)
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
    let phase = indicatif::ProgressBar::new_spinner().with_message(format!("reading {}", file.display()));
    phase.enable_steady_tick(std::time::Duration::from_millis(200));
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
    let customers: Vec<String> = truth.keys().cloned().collect();
    let segment_of = |c: &str| -> [String; 2] {
        let touched = history.get(c).map_or(0, HashSet::len);
        let length = match touched {
            0..=4 => "history 1-4",
            5..=19 => "history 5-19",
            _ => "history 20+",
        };
        let kind = if bought_before.contains_key(c) {
            "returning"
        } else {
            "new"
        };
        [kind.to_string(), length.to_string()]
    };
    let mut segments: BTreeMap<String, usize> = BTreeMap::new();
    for c in &customers {
        for s in segment_of(c) {
            *segments.entry(s).or_default() += 1;
        }
    }
    let size = catalogue.len();
    let report = |lists: &HashMap<String, Vec<String>>, fit_ms: u64, rank_ms: u64| {
        let mut by_segment: BTreeMap<String, HashMap<String, HashSet<String>>> = BTreeMap::new();
        for (c, relevant) in &truth {
            for s in segment_of(c) {
                by_segment.entry(s).or_default().insert(c.clone(), relevant.clone());
            }
        }
        MethodReport {
            scores: score(lists, &truth, size, k),
            fit_ms,
            rank_ms,
            ndcg_by_segment: by_segment
                .iter()
                .map(|(s, t)| (s.clone(), score(lists, t, size, k)[&format!("NDCG@{k}")]))
                .collect(),
        }
    };

    // The production pipeline over a scratch lake.
    phase.set_message("landing the training events and folding the marts");
    let fit_started = std::time::Instant::now();
    let scratch = std::env::temp_dir().join(format!("hoffrec-evaluate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| RecommendError::Config(e.to_string()))?;
    let mut cfg = config.clone();
    cfg.lake.url = scratch.display().to_string();
    // The novel view scores the list without what the customer bought before, as it does
    // the baselines': the whole ranked pool, filtered, then cut to 2k.
    cfg.recommend.top_k = if exclude_seen { usize::MAX } else { 2 * k };
    let r = Recommender::load(&cfg)?;
    // Landings a label horizon apart: the marts as they stood one horizon before the split
    // are what the ranker learns next purchases from, and those up to
    // `train_novel_cutoffs` horizons before it what the novel head learns from (as
    // `train` reads them by time travel in production); the marts at the split are what
    // it ranks from.
    let files = crate::mart::files::load(&cfg.mart.sql_dir).map_err(|e| RecommendError::Config(e.to_string()))?;
    let horizon = i64::from(cfg.recommend.train_label_horizon_days) * 86_400_000;
    let cutoffs = i64::from(cfg.recommend.train_novel_cutoffs.max(1));
    let mut parts: Vec<Vec<Json>> = (0..=cutoffs).map(|_| Vec::new()).collect();
    for e in raw_events(&train) {
        let at = e["event_time"].as_i64().unwrap_or(i64::MIN);
        // Part f holds the events before `split - (cutoffs - f) * horizon`.
        let part = (0..cutoffs)
            .find(|f| at < split - (cutoffs - f) * horizon)
            .unwrap_or(cutoffs);
        parts[part as usize].push(e);
    }
    let mut thens: Vec<MartVersions> = Vec::new();
    for (f, events) in parts.into_iter().enumerate() {
        phase.set_message(format!(
            "landing the training events, part {} of {}, and folding the marts",
            f + 1,
            cutoffs + 1
        ));
        if !events.is_empty() {
            crate::ingest::direct::land_typed(&r.lake, &r.catalog, &events)
                .await
                .map_err(RecommendError::Config)?;
            crate::mart::fold::fold(&r.lake, &r.catalog, &files)
                .await
                .map_err(|e| RecommendError::Config(e.to_string()))?;
        }
        if (f as i64) < cutoffs
            && let Ok(m) = super::data::Marts::open(&r.lake).await
        {
            let v: MartVersions = m
                .versions
                .into_iter()
                .filter(|(k, _)| super::data::MARTS.contains(&k.as_str()))
                .collect();
            // An empty part leaves the marts as the one before it did.
            if !v.is_empty() && thens.first() != Some(&v) {
                thens.insert(0, v);
            }
        }
    }
    phase.set_message("training the ranker");
    let (model, labels) = match super::train::train_once_at(&r, 3650, 0.2, Some(thens)).await {
        Ok(t) => (t.candidate, t.labels),
        Err(e) => {
            tracing::info!(error = %e, "nothing to train the ranker on: the prior ranks");
            (Model::prior(), "none".to_string())
        }
    };
    let fit_ms = fit_started.elapsed().as_millis() as u64;
    phase.finish_and_clear();
    let ranking =
        |name: &str| indicatif::ProgressBar::new(customers.len() as u64).with_message(format!("ranking: {name}"));
    let started = std::time::Instant::now();
    let progress = ranking("hoffrec");
    let mut ours: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in customers.chunks(200) {
        for e in r.rank(chunk, &model).await? {
            let before = bought_before.get(e.customer_id.as_str());
            let list = e
                .list
                .into_iter()
                .map(|s| s.product_id)
                .filter(|p| !exclude_seen || !before.is_some_and(|b| b.contains(p.as_str())))
                .take(2 * k)
                .collect();
            ours.insert(e.customer_id, list);
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let hoffrec = report(&ours, fit_ms, started.elapsed().as_millis() as u64);
    let _ = std::fs::remove_dir_all(&scratch);

    // Baselines from the same training events.
    let empty = HashSet::new();
    let skip_for = |c: &str| -> &HashSet<&str> {
        if exclude_seen {
            bought_before.get(c).unwrap_or(&empty)
        } else {
            &empty
        }
    };
    let started = std::time::Instant::now();
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
    let fit_ms = started.elapsed().as_millis() as u64;
    let by_popularity = |weights: &HashMap<String, f64>| {
        let started = std::time::Instant::now();
        let lists: HashMap<String, Vec<String>> = customers
            .iter()
            .map(|c| (c.clone(), by_weight(weights, skip_for(c), 2 * k)))
            .collect();
        (lists, started.elapsed().as_millis() as u64)
    };
    let (lists, rank_ms) = by_popularity(&popular);
    let popularity = report(&lists, fit_ms, rank_ms);
    let (lists, rank_ms) = by_popularity(&recent);
    let recent_popularity = report(&lists, fit_ms, rank_ms);

    // Collaborative models over the same customer x product weights.
    let x = Interactions::from_cells(
        train
            .iter()
            .map(|e| (e.customer.as_str(), e.product.as_str(), weight(e, split))),
    );
    let row_of: HashMap<&str, usize> = x.customers.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let collab_lists = |name: &str, score_row: &ScoreRow| {
        let started = std::time::Instant::now();
        let progress = ranking(name);
        let lists: HashMap<String, Vec<String>> = customers
            .iter()
            .map(|c| {
                progress.inc(1);
                let row = row_of
                    .get(c.as_str())
                    .map(|&i| x.rows[i].as_slice())
                    .unwrap_or_default();
                let skip = skip_for(c);
                let best = collab::top(&score_row(row), 2 * k, |i| skip.contains(x.items[i as usize].as_str()));
                (
                    c.clone(),
                    best.into_iter().map(|i| x.items[i as usize].clone()).collect(),
                )
            })
            .collect();
        progress.finish_and_clear();
        (lists, started.elapsed().as_millis() as u64)
    };
    let started = std::time::Instant::now();
    let neighbours = collab::item_knn(&x);
    let fit_ms = started.elapsed().as_millis() as u64;
    let (lists, rank_ms) = collab_lists("item-kNN", &|row| {
        let mut s = vec![0f32; x.items.len()];
        for (i, _) in row {
            for (j, sim) in &neighbours[*i as usize] {
                s[*j as usize] += sim;
            }
        }
        s
    });
    let item_knn = report(&lists, fit_ms, rank_ms);
    let started = std::time::Instant::now();
    let ease_model = collab::Ease::fit(&x, config.recommend.ease_lambda, config.recommend.ease_max_items)
        .map_err(|e| RecommendError::Config(format!("EASE: {e}")))?;
    let fit_ms = started.elapsed().as_millis() as u64;
    let (lists, rank_ms) = collab_lists("EASE", &|row| ease_model.scores(row));
    let ease = report(&lists, fit_ms, rank_ms);
    let started = std::time::Instant::now();
    let als_model =
        collab::Als::fit(&x, collab::AlsParams::default()).map_err(|e| RecommendError::Config(format!("ALS: {e}")))?;
    let gram = als_model.gram();
    let fit_ms = started.elapsed().as_millis() as u64;
    let (lists, rank_ms) = collab_lists("ALS", &|row| als_model.scores_with(&gram, row));
    let als = report(&lists, fit_ms, rank_ms);
    Ok(EvaluateReport {
        events: events.len(),
        customers_evaluated: customers.len(),
        catalogue: size,
        model_version: model.version.clone(),
        ranker_labels: labels,
        ranker_weights: super::model::FEATURES
            .iter()
            .map(|f| f.to_string())
            .zip(model.weights.iter().copied())
            .chain([("bias".to_string(), model.bias)])
            .collect(),
        novel_head: model.novel.as_ref().map(|h| NovelHeadReport {
            auc: h.auc,
            rows: h.trained_rows,
            weights: super::novel::NOVEL_FEATURES
                .iter()
                .map(|f| f.to_string())
                .zip(h.weights.iter().copied())
                .chain([("bias".to_string(), h.bias)])
                .collect(),
        }),
        segments,
        hoffrec,
        popularity,
        recent_popularity,
        item_knn,
        ease,
        als,
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
    fn item_knn_keeps_the_products_bought_together() {
        let cells = [
            ("u1", "a", 1.0),
            ("u1", "b", 1.0),
            ("u2", "a", 1.0),
            ("u2", "b", 1.0),
            ("u3", "a", 1.0),
            ("u3", "c", 1.0),
            ("u4", "x", 1.0),
        ];
        let x = Interactions::from_cells(cells);
        let n = collab::item_knn(&x);
        let of = |p: &str| &n[x.index[p] as usize];
        let name = |i: u32| x.items[i as usize].as_str();
        assert_eq!(of("a").iter().map(|(i, _)| name(*i)).collect::<Vec<_>>(), ["b", "c"]);
        // cosine: 2 shared customers over sqrt(3 * 2)
        assert!((of("a")[0].1 - 2.0 / 6f32.sqrt()).abs() < 1e-6);
        assert!(of("x").is_empty());
    }

    #[test]
    fn purchases_weigh_most_and_old_events_least() {
        let at = |kind: &str, days_before: i64| Event {
            customer: "c".into(),
            product: "p".into(),
            ts_ms: 100 * 86_400_000 - days_before * 86_400_000,
            kind: kind.into(),
            quantity: 1.0,
            price_kopecks: 0,
            category: None,
            name: None,
        };
        let split = 100 * 86_400_000;
        assert_eq!(weight(&at("purchase", 0), split), 5.0);
        assert_eq!(weight(&at("purchase", 30), split), 2.5);
        assert!(weight(&at("view", 0), split) < weight(&at("cart", 0), split));
        assert_eq!(weight(&at("impression", 0), split), 0.0);
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
