//! `hoffrec bench mart`: the time of one incremental fold for a fixed-size batch, with 1x
//! and `--scale`x as much history in the lake.
//!
//! For each size: a fresh lake under the configured one gets a seeded clickstream and
//! orders over `--days` (x scale) days, landed directly through the ingest batch code,
//! and one untimed fold; then `--rounds` times a batch of `--batch-customers` sessions on
//! a new day is landed and the fold that takes it in is timed.

use super::BenchError;
use crate::catalog::Catalog;
use crate::codec::SchemaSet;
use crate::config::Config;
use crate::lake::LakeUrl;
use crate::simulate::world::{self, World};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::time::Instant;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, clap::Args)]
pub struct MartBenchArgs {
    #[arg(long, default_value_t = 5_000)]
    pub customers: usize,
    /// Days of history at 1x.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// Sessions per day of history.
    #[arg(long, default_value_t = 400)]
    pub active_per_day: usize,
    /// Sessions in each timed batch.
    #[arg(long, default_value_t = 200)]
    pub batch_customers: usize,
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Serialize)]
pub struct MartBenchRun {
    pub history_days: u32,
    pub history_events: u64,
    pub initial_fold_ms: u64,
    pub batch_events: u64,
    pub fold_ms: Vec<u64>,
    pub fold_ms_median: u64,
    /// Per mart, the median over rounds: all, computing the rows, writing them.
    pub mart_ms: BTreeMap<String, [u64; 3]>,
}

#[derive(Debug, Serialize)]
pub struct MartBenchReport {
    pub customers: usize,
    pub scale: u32,
    pub small: MartBenchRun,
    pub large: MartBenchRun,
    /// Large history's median fold time over the small one's: near 1 means the cost of a
    /// fold follows the batch, not the history.
    pub ratio: f64,
}

pub async fn run(config: &Config, args: &MartBenchArgs) -> Result<MartBenchReport, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    let catalog =
        Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir).map_err(|e| setup(e.to_string()))?;
    let files = crate::mart::files::load(&config.mart.sql_dir).map_err(|e| setup(e.to_string()))?;
    let base = config.lake.url.trim_end_matches('/');
    let stamp = chrono::Utc::now().timestamp_millis();
    let mut runs = Vec::new();
    for scale in [1, args.scale] {
        let lake = LakeUrl::parse(&format!("{base}/bench-mart-{stamp}-x{scale}")).map_err(|e| setup(e.to_string()))?;
        runs.push(one_size(&lake, &catalog, &files, args, args.days * scale).await?);
    }
    let large = runs.pop().ok_or_else(|| setup("no run".into()))?;
    let small = runs.pop().ok_or_else(|| setup("no run".into()))?;
    let ratio = large.fold_ms_median as f64 / small.fold_ms_median.max(1) as f64;
    Ok(MartBenchReport {
        customers: args.customers,
        scale: args.scale,
        small,
        large,
        ratio: (ratio * 100.0).round() / 100.0,
    })
}

async fn one_size(
    lake: &LakeUrl,
    catalog: &Catalog,
    files: &[crate::mart::files::MartFile],
    args: &MartBenchArgs,
    days: u32,
) -> Result<MartBenchRun, BenchError> {
    let w = world::generate(args.seed, args.customers);
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let mut history = Events::default();
    history.catalogue(&w);
    let progress = indicatif::ProgressBar::new(days as u64).with_message(format!("landing {days} days"));
    // A week per commit: realistic file sizes without one commit per day per topic.
    for week in (0..days).step_by(7) {
        for day in week..(week + 7).min(days) {
            for _ in 0..args.active_per_day {
                let c = rng.random_range(0..w.customers.len());
                history.session(&w, c, day, &mut rng);
            }
            progress.inc(1);
        }
        history.land(lake, &catalog.schemas).await?;
    }
    progress.finish_and_clear();
    let fold = |lake: &LakeUrl| {
        let lake = lake.clone();
        async move {
            crate::mart::fold::fold(&lake, catalog, files)
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))
        }
    };
    let started = Instant::now();
    fold(lake).await?;
    let initial_fold_ms = started.elapsed().as_millis() as u64;

    let mut fold_ms = Vec::new();
    let mut per_mart: BTreeMap<String, Vec<[u64; 3]>> = BTreeMap::new();
    let mut batch_events = 0;
    for round in 0..args.rounds {
        let mut batch = Events::default();
        for _ in 0..args.batch_customers {
            let c = rng.random_range(0..w.customers.len());
            batch.session(&w, c, days + round, &mut rng);
        }
        batch_events = batch.count;
        batch.land(lake, &catalog.schemas).await?;
        let started = Instant::now();
        let report = fold(lake).await?;
        fold_ms.push(started.elapsed().as_millis() as u64);
        for m in report.marts {
            per_mart
                .entry(m.mart)
                .or_default()
                .push([m.elapsed_ms, m.query_ms, m.write_ms]);
        }
    }
    Ok(MartBenchRun {
        history_days: days,
        history_events: history.landed,
        initial_fold_ms,
        batch_events,
        fold_ms_median: median(&fold_ms),
        fold_ms,
        mart_ms: per_mart
            .into_iter()
            .map(|(k, v)| {
                let part = |i: usize| median(&v.iter().map(|t| t[i]).collect::<Vec<_>>());
                (k, [part(0), part(1), part(2)])
            })
            .collect(),
    })
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Events waiting to be landed, by topic.
#[derive(Default)]
pub(super) struct Events {
    by_topic: BTreeMap<&'static str, Vec<(&'static str, Json)>>,
    pub count: u64,
    pub landed: u64,
    next_id: u64,
}

impl Events {
    fn push(&mut self, topic: &'static str, event: &'static str, mut json: Json) {
        self.next_id += 1;
        json["event_id"] = json!(format!("bench-{}", self.next_id));
        self.by_topic.entry(topic).or_default().push((event, json));
        self.count += 1;
    }

    pub fn catalogue(&mut self, w: &World) {
        for product in super::closed_loop::catalogue(w) {
            self.push("raw.store.catalogue", "catalogue_product", product);
        }
    }

    /// One visit on `day`: arrival, five product views in one category, sometimes a cart,
    /// sometimes an order delivered to the customer's district.
    pub fn session(&mut self, w: &World, customer: usize, day: u32, rng: &mut StdRng) {
        let c = &w.customers[customer];
        let session = format!("bench-{}-{day}-{}", c.id, rng.random_range(0..u32::MAX));
        let mut t = world::START_MS + day as i64 * DAY_MS + rng.random_range(8..22) * 3_600_000;
        let source = ["search", "direct", "ad", "social"][rng.random_range(0..4)];
        self.push(
            "raw.site.session_start",
            "site_session_start",
            json!({"event_time": t, "customer_id": c.id, "session_id": session, "device_id": null,
                "traffic_source": source, "referrer": null, "search_engine": null, "search_phrase": null,
                "utm_source": null, "utm_medium": null, "utm_campaign": null, "utm_content": null,
                "utm_term": null, "landing_url": "https://hoff.ru/", "user_agent": null, "region": c.region}),
        );
        let category = &w.products[rng.random_range(0..w.products.len())].category_id;
        let options: Vec<_> = w.products.iter().filter(|p| &p.category_id == category).collect();
        for _ in 0..5 {
            let p = options[rng.random_range(0..options.len())];
            let dwell: i64 = rng.random_range(5_000..120_000);
            t += 10_000;
            self.push(
                "raw.site.page_view",
                "page_view",
                json!({"event_time": t, "customer_id": c.id, "session_id": session,
                    "url": format!("https://hoff.ru/product/{}/", p.id), "page_type": "product",
                    "category_id": p.category_id, "dwell_ms": dwell}),
            );
            self.push(
                "raw.site.product_view",
                "product_view",
                json!({"event_time": t, "customer_id": c.id, "session_id": session, "product_id": p.id,
                    "dwell_ms": dwell, "price_kopecks": null, "list_id": null, "position": null}),
            );
            t += dwell;
        }
        let p = options[rng.random_range(0..options.len())];
        let price = (p.price_rub * 100.0) as i64;
        if rng.random_bool(0.15) {
            self.push(
                "raw.site.cart_add",
                "cart_add",
                json!({"event_time": t, "customer_id": c.id, "session_id": session, "product_id": p.id,
                    "quantity": 1, "price_kopecks": price, "list_id": null}),
            );
        }
        if rng.random_bool(0.05) {
            self.push(
                "raw.store.order",
                "order",
                json!({"event_time": t + 60_000, "customer_id": c.id, "order_id": format!("bench-o-{}", self.next_id),
                    "channel": "site", "status": "paid", "lines": [{"product_id": p.id, "quantity": 1,
                    "price_kopecks": price, "discount_kopecks": 0}], "total_kopecks": price,
                    "delivery_address": {"region": c.region, "city": c.city, "district": c.district,
                    "street": null, "house": null, "flat": null, "postal_code": null, "lat": null, "lon": null},
                    "payment_method": null}),
            );
        }
    }

    pub async fn land(&mut self, lake: &LakeUrl, schemas: &SchemaSet) -> Result<(), BenchError> {
        for (topic, events) in std::mem::take(&mut self.by_topic) {
            let items: Vec<(&str, &Json)> = events.iter().map(|(e, j)| (*e, j)).collect();
            crate::ingest::direct::land_json(lake, schemas, topic, &items)
                .await
                .map_err(|e| BenchError::Setup(format!("{topic}: {e}")))?;
            self.landed += events.len() as u64;
        }
        Ok(())
    }
}
