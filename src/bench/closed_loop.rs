//! `hoffrec bench loop`: the closed loop over simulated days, three ways. Each arm gets the
//! same seeded world in its own lake; every day each customer is shown a list, reacts by
//! their hidden persona (the simulator's site), the reactions land and fold into the
//! marts, and the arm's ranker is updated:
//!
//! - `online`: retrained every day on the interactions so far (promoted if not worse);
//! - `frozen`: the model trained after the first day, kept;
//! - `popularity`: the most viewed products the customer has not bought, no model.
//!
//! The report is click-through (clicked / shown) per day per arm.

use super::BenchError;
use crate::config::Config;
use crate::recommend::Recommender;
use crate::recommend::model::Model;
use crate::simulate::react::{ShownList, react};
use crate::simulate::world::{self, World};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, clap::Args)]
pub struct LoopArgs {
    #[arg(long, default_value_t = 300)]
    pub customers: usize,
    #[arg(long, default_value_t = 10)]
    pub days: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Serialize)]
pub struct LoopReport {
    pub customers: usize,
    pub days: u32,
    /// Arm -> click-through per day (day 1 first).
    pub click_through: BTreeMap<String, Vec<f64>>,
    /// Arm -> click-through over the days after the first.
    pub after_day_one: BTreeMap<String, f64>,
}

pub const ARMS: [&str; 3] = ["online", "frozen", "popularity"];

pub async fn run(config: &Config, args: &LoopArgs) -> Result<LoopReport, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    let base = config.lake.url.trim_end_matches('/').to_string();
    let stamp = chrono::Utc::now().timestamp_millis();
    let mut report = LoopReport {
        customers: args.customers,
        days: args.days,
        click_through: BTreeMap::new(),
        after_day_one: BTreeMap::new(),
    };
    let files = crate::mart::files::load(&config.mart.sql_dir).map_err(|e| setup(e.to_string()))?;
    for arm in ARMS {
        let mut arm_config = config.clone();
        arm_config.lake.url = format!("{base}/bench-loop-{stamp}-{arm}");
        let r = Recommender::load(&arm_config).map_err(|e| setup(e.to_string()))?;
        let curve = one_arm(&r, &files, arm, args).await?;
        let later = &curve[1.min(curve.len())..];
        report
            .after_day_one
            .insert(arm.into(), later.iter().sum::<f64>() / later.len().max(1) as f64);
        report.click_through.insert(arm.into(), curve);
    }
    Ok(report)
}

async fn one_arm(
    r: &Recommender,
    files: &[crate::mart::files::MartFile],
    arm: &str,
    args: &LoopArgs,
) -> Result<Vec<f64>, BenchError> {
    let err = |e: String| BenchError::Setup(format!("{arm}: {e}"));
    let w = world::generate(args.seed, args.customers);
    // Day 0: the catalogue and two visits per customer, before any list is shown.
    let mut first: Vec<Json> = crate::simulate::sessions::generate(&w, 2);
    first.extend(catalogue(&w));
    crate::ingest::direct::land_typed(&r.lake, &r.catalog, &first)
        .await
        .map_err(err)?;
    let fold = || async {
        crate::mart::fold::fold(&r.lake, &r.catalog, files)
            .await
            .map_err(|e| err(e.to_string()))
    };
    fold().await?;
    let ids: Vec<String> = w.customers.iter().map(|c| c.id.clone()).collect();
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x100f);
    let mut frozen: Option<Model> = None;
    let mut curve = Vec::new();
    let progress = indicatif::ProgressBar::new(u64::from(args.days)).with_message(format!("closed loop: {arm}"));
    for day in 1..=args.days {
        let model = match arm {
            "frozen" => frozen.clone().unwrap_or_else(Model::prior),
            _ => crate::recommend::store::current(&r.lake)
                .await
                .map_err(|e| err(e.to_string()))?
                .unwrap_or_else(Model::prior),
        };
        let mut lists = if arm == "popularity" {
            popular_lists(r, &ids, day).await.map_err(err)?
        } else {
            r.rank(&ids, &model)
                .await
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .map(|e| ShownList {
                    list_id: format!("{}-d{day}", e.customer_id),
                    customer_id: e.customer_id,
                    model_version: e.model_version,
                    products: e.list.into_iter().map(|s| s.product_id).collect(),
                })
                .collect()
        };
        // The reactions draw from one seeded generator, so they must meet the lists in the
        // same order every run; the marts return customers in no particular order.
        lists.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        let now = world::START_MS + 20 * DAY_MS + i64::from(day) * DAY_MS;
        let mut events = Vec::new();
        for list in &lists {
            events.extend(react(&w, list, now, &mut rng));
        }
        let shown = events.iter().filter(|e| e["type"] == "rec_impression").count();
        let clicked = events.iter().filter(|e| e["type"] == "rec_click").count();
        curve.push((clicked as f64 / shown.max(1) as f64 * 1000.0).round() / 1000.0);
        crate::ingest::direct::land_typed(&r.lake, &r.catalog, &events)
            .await
            .map_err(err)?;
        fold().await?;
        let retrain = arm == "online" || (arm == "frozen" && frozen.is_none());
        if retrain {
            match crate::recommend::train::train_once(r, 365, 0.2).await {
                Ok(t) if arm == "frozen" => frozen = Some(t.candidate),
                Ok(_) => {}
                Err(e) => tracing::info!(arm, day, error = %e, "no model this day"),
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(curve)
}

/// The baseline: the ten most viewed products the customer has not bought.
async fn popular_lists(r: &Recommender, ids: &[String], day: u32) -> Result<Vec<ShownList>, String> {
    let marts = crate::recommend::data::Marts::open(&r.lake)
        .await
        .map_err(|e| e.to_string())?;
    let catalogue = marts.catalogue().await.map_err(|e| e.to_string())?;
    let mut ranked: Vec<&crate::recommend::data::Product> = catalogue.products.iter().filter(|p| p.available).collect();
    ranked.sort_by(|a, b| b.viewers.cmp(&a.viewers).then(a.product_id.cmp(&b.product_id)));
    let customers = marts.customers(ids).await.map_err(|e| e.to_string())?;
    Ok(customers
        .iter()
        .map(|c| {
            let bought: Vec<&str> = c
                .touched
                .iter()
                .filter(|t| t.purchased_qty > 0.0)
                .map(|t| t.product_id.as_str())
                .collect();
            ShownList {
                customer_id: c.portrait.customer_id.clone(),
                list_id: format!("{}-d{day}", c.portrait.customer_id),
                model_version: "popularity".into(),
                products: ranked
                    .iter()
                    .filter(|p| !bought.contains(&p.product_id.as_str()))
                    .take(10)
                    .map(|p| p.product_id.clone())
                    .collect(),
            }
        })
        .collect())
}

/// The world's catalogue as `catalogue_product` events.
pub fn catalogue(w: &World) -> Vec<Json> {
    w.products
        .iter()
        .map(|p| {
            let leaf = w.categories.iter().find(|c| c.id == p.category_id);
            let mut path: Vec<String> = leaf
                .and_then(|l| l.parent.as_ref())
                .and_then(|id| w.categories.iter().find(|c| &c.id == id))
                .map(|c| c.name.clone())
                .into_iter()
                .collect();
            path.extend(leaf.map(|l| l.name.clone()));
            serde_json::json!({"type": "catalogue_product", "event_id": format!("loop-cat-{}", p.id),
                "event_time": world::START_MS, "product_id": p.id, "name": p.name,
                "category_id": p.category_id, "category_path": path, "brand": p.vendor,
                "price_kopecks": (p.price_rub * 100.0) as i64, "old_price_kopecks": null,
                "available": p.available, "attributes": {}, "url": null})
        })
        .collect()
}
