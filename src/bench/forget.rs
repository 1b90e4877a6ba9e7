//! `hoffrec bench forget`: one erasure request for many customers on a large lake, the
//! time it takes and the files it rewrites.
//!
//! A fresh lake under the configured one gets `--events` seeded clickstream events and
//! orders of `--customers` customers over 90 days (landed directly through the ingest
//! batch code, a commit per ~50k sessions), and with `--fold` one fold builds the marts; then one
//! `forget` request erases `--erase` of them from every table and topic (the configured
//! broker's) and is timed.

use super::BenchError;
use super::mart::Events;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::lake::LakeUrl;
use crate::simulate::world;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct ForgetBenchArgs {
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    /// Customers erased in the one request.
    #[arg(long, default_value_t = 1_000)]
    pub erase: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Fold the marts before erasing, so that they are erased too (a first fold over the
    /// whole history: minutes at 10M events).
    #[arg(long)]
    pub fold: bool,
}

#[derive(Debug, Serialize)]
pub struct ForgetBenchReport {
    pub events: u64,
    pub customers: usize,
    pub erased: usize,
    pub land_s: f64,
    pub fold_s: f64,
    /// The whole request: registry, DELETEs, the second look, topics, audit.
    pub erase_s: f64,
    pub rows_deleted: u64,
    pub files_rewritten: u64,
    pub tables_touched: usize,
    /// The tables that took longest: (table, rows deleted, files rewritten).
    pub largest: Vec<(String, u64, u64)>,
}

pub async fn run(config: &Config, args: &ForgetBenchArgs) -> Result<ForgetBenchReport, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    let catalog =
        Catalog::load(&config.catalog.topics_dir, &config.catalog.schemas_dir).map_err(|e| setup(e.to_string()))?;
    crate::catalog::apply::apply(&catalog, &config.kafka)
        .await
        .map_err(|e| setup(e.to_string()))?;
    let files = crate::mart::files::load(&config.mart.sql_dir).map_err(|e| setup(e.to_string()))?;
    let mut config = config.clone();
    config.lake.url = format!(
        "{}/bench-forget-{}",
        config.lake.url.trim_end_matches('/'),
        chrono::Utc::now().timestamp_millis()
    );
    let lake = LakeUrl::parse(&config.lake.url).map_err(|e| setup(e.to_string()))?;
    let w = world::generate(args.seed, args.customers);
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xf0e7);

    let started = Instant::now();
    let mut events = Events::default();
    events.catalogue(&w);
    let progress = indicatif::ProgressBar::new(args.events).with_message("landing");
    let mut sessions = 0u64;
    while events.landed + events.count < args.events {
        let c = rng.random_range(0..w.customers.len());
        events.session(&w, c, rng.random_range(0..90), &mut rng);
        sessions += 1;
        if sessions.is_multiple_of(50_000) {
            events.land(&lake, &catalog.schemas).await?;
            events.count = 0;
            progress.set_position(events.landed);
        }
    }
    events.land(&lake, &catalog.schemas).await?;
    progress.finish_and_clear();
    let land_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    if args.fold {
        crate::mart::fold::fold(&lake, &catalog, &files)
            .await
            .map_err(|e| setup(e.to_string()))?;
    }
    let fold_s = started.elapsed().as_secs_f64();

    let customers: Vec<String> = w.customers.iter().take(args.erase).map(|c| c.id.clone()).collect();
    let request = crate::forget::Request::new(customers, Some("bench".into())).map_err(|e| setup(e.to_string()))?;
    let started = Instant::now();
    let report = crate::forget::erase(&config, &request, false)
        .await
        .map_err(|e| setup(e.to_string()))?;
    let erase_s = started.elapsed().as_secs_f64();
    let mut largest: Vec<(String, u64, u64)> = report
        .tables
        .iter()
        .filter(|t| t.version.is_some())
        .map(|t| (t.table.clone(), t.rows_deleted, t.files_rewritten))
        .collect();
    largest.sort_by_key(|t| std::cmp::Reverse(t.1));
    largest.truncate(5);
    let round = |s: f64| (s * 10.0).round() / 10.0;
    Ok(ForgetBenchReport {
        events: events.landed,
        customers: args.customers,
        erased: args.erase,
        land_s: round(land_s),
        fold_s: round(fold_s),
        erase_s: round(erase_s),
        rows_deleted: report.rows_deleted,
        files_rewritten: report.files_rewritten,
        tables_touched: report.tables.iter().filter(|t| t.version.is_some()).count(),
        largest,
    })
}
