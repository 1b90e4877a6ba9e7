//! `hoffrec bench loop`: the closed loop over simulated days, three ways. Each arm gets the
//! same seeded world in its own lake; every day each customer is shown a list, reacts by
//! their hidden persona (the simulator's site), the reactions land and fold into the
//! marts, and the arm's ranker is updated:
//!
//! - `online`: retrained every day on the interactions so far (promoted if not worse);
//! - `frozen`: the model trained after the first day, kept;
//! - `popularity`: the most viewed products the customer has not bought, no model.
//!
//! The report is click-through (clicked / shown) per day per arm, averaged over `--seeds`
//! worlds with a 95% confidence interval, and online's lead over frozen on the days after
//! the first, per seed: a lead that only some seeds show is noise.

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
    /// Worlds to run, seeded `seed`, `seed + 1`, ...
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
}

#[derive(Debug, Serialize)]
pub struct LoopReport {
    pub customers: usize,
    pub days: u32,
    pub seeds: Vec<u64>,
    /// Arm -> click-through per day (day 1 first), the mean over seeds.
    pub click_through: BTreeMap<String, Vec<f64>>,
    /// Arm -> half the width of each day's 95% confidence interval over seeds (0 for one).
    pub click_through_ci95: BTreeMap<String, Vec<f64>>,
    /// Arm -> click-through over the days after the first, the mean over seeds.
    pub after_day_one: BTreeMap<String, f64>,
    /// Per seed, arm -> click-through over the days after the first.
    pub per_seed: Vec<BTreeMap<String, f64>>,
    /// Online over frozen after day one, relative (0.05 = 5% more clicks per shown item).
    pub online_over_frozen: Lead,
}

#[derive(Debug, Default, Serialize)]
pub struct Lead {
    pub per_seed: Vec<f64>,
    pub mean: f64,
    pub ci95: f64,
    /// Every seed's lead has the same sign as the mean.
    pub signs_agree: bool,
}

/// Mean and half the width of the 95% confidence interval (Student's t) of `xs`.
pub fn mean_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // t quantiles at 0.975 for 1..=9 degrees of freedom; the normal's beyond.
    const T: [f64; 9] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262];
    let t = T.get(n - 2).copied().unwrap_or(1.96);
    (mean, t * (var / n as f64).sqrt())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub const ARMS: [&str; 3] = ["online", "frozen", "popularity"];

pub async fn run(config: &Config, args: &LoopArgs) -> Result<LoopReport, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    let base = config.lake.url.trim_end_matches('/').to_string();
    let stamp = chrono::Utc::now().timestamp_millis();
    let files = crate::mart::files::load(&config.mart.sql_dir).map_err(|e| setup(e.to_string()))?;
    let seeds: Vec<u64> = (0..args.seeds.max(1)).map(|i| args.seed + i).collect();
    // Arm -> seed -> click-through per day.
    let mut curves: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for &seed in &seeds {
        for arm in ARMS {
            let mut arm_config = config.clone();
            arm_config.lake.url = format!("{base}/bench-loop-{stamp}-s{seed}-{arm}");
            let r = Recommender::load(&arm_config).map_err(|e| setup(e.to_string()))?;
            let curve = one_arm(&r, &files, arm, args, seed).await?;
            curves.entry(arm.into()).or_default().push(curve);
        }
    }
    let after = |curve: &[f64]| {
        let later = &curve[1.min(curve.len())..];
        later.iter().sum::<f64>() / later.len().max(1) as f64
    };
    let mut report = LoopReport {
        customers: args.customers,
        days: args.days,
        seeds: seeds.clone(),
        click_through: BTreeMap::new(),
        click_through_ci95: BTreeMap::new(),
        after_day_one: BTreeMap::new(),
        per_seed: vec![BTreeMap::new(); seeds.len()],
        online_over_frozen: Lead::default(),
    };
    for (arm, runs) in &curves {
        let (means, cis): (Vec<f64>, Vec<f64>) = (0..args.days as usize)
            .map(|d| {
                let day: Vec<f64> = runs.iter().filter_map(|c| c.get(d).copied()).collect();
                let (m, ci) = mean_ci95(&day);
                (round3(m), round3(ci))
            })
            .unzip();
        report.click_through.insert(arm.clone(), means);
        report.click_through_ci95.insert(arm.clone(), cis);
        let laters: Vec<f64> = runs.iter().map(|c| after(c)).collect();
        report.after_day_one.insert(
            arm.clone(),
            round3(laters.iter().sum::<f64>() / laters.len().max(1) as f64),
        );
        for (i, l) in laters.into_iter().enumerate() {
            report.per_seed[i].insert(arm.clone(), round3(l));
        }
    }
    let leads: Vec<f64> = report
        .per_seed
        .iter()
        .map(|s| {
            let (online, frozen) = (
                s.get("online").copied().unwrap_or(0.0),
                s.get("frozen").copied().unwrap_or(0.0),
            );
            round3(online / frozen.max(1e-9) - 1.0)
        })
        .collect();
    let (mean, ci95) = mean_ci95(&leads);
    report.online_over_frozen = Lead {
        signs_agree: leads.iter().all(|l| l.signum() == mean.signum() && *l != 0.0),
        per_seed: leads,
        mean: round3(mean),
        ci95: round3(ci95),
    };
    Ok(report)
}

async fn one_arm(
    r: &Recommender,
    files: &[crate::mart::files::MartFile],
    arm: &str,
    args: &LoopArgs,
    seed: u64,
) -> Result<Vec<f64>, BenchError> {
    let err = |e: String| BenchError::Setup(format!("{arm}, seed {seed}: {e}"));
    let w = world::generate(seed, args.customers);
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
    let mut rng = StdRng::seed_from_u64(seed ^ 0x100f);
    let mut frozen: Option<Model> = None;
    let mut curve = Vec::new();
    let progress =
        indicatif::ProgressBar::new(u64::from(args.days)).with_message(format!("closed loop: {arm}, seed {seed}"));
    for day in 1..=args.days {
        let model = match arm {
            "frozen" => frozen.clone().unwrap_or_else(Model::prior),
            _ => crate::recommend::store::current(&r.lake)
                .await
                .map_err(|e| err(e.to_string()))?
                .unwrap_or_else(Model::prior),
        };
        let now = world::START_MS + 20 * DAY_MS + i64::from(day) * DAY_MS;
        let mut lists = if arm == "popularity" {
            popular_lists(r, &ids, day).await.map_err(err)?
        } else {
            r.lists(&ids, &model, now)
                .await
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .map(|e| ShownList {
                    list_id: format!("{}-d{day}", e.customer_id),
                    customer_id: e.customer_id,
                    model_version: e.model_version,
                    propensities: e.list.iter().map(|s| s.propensity).collect(),
                    products: e.list.into_iter().map(|s| s.product_id).collect(),
                })
                .collect()
        };
        // The reactions draw from one seeded generator, so they must meet the lists in the
        // same order every run; the marts return customers in no particular order.
        lists.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
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
                propensities: Vec::new(),
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
