//! The long-running stages: each runs until Ctrl-C or SIGTERM (or its `--once` pass) and
//! prints its summary as JSON.

use super::args::ConnectArgs;
use super::load_catalog;
use super::runtime::{block_on, run_stage, run_stage_judged, run_stage_with};
use crate::catalog::Role;
use crate::config::Config;
use crate::telemetry::Telemetry;
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) fn ingest(config: &Config) -> anyhow::Result<ExitCode> {
    run_stage(config, |telemetry, shutdown| async move {
        crate::ingest::run(config, &telemetry, shutdown).await
    })
}

pub(super) fn forget(config: &Config) -> anyhow::Result<ExitCode> {
    run_stage(config, |telemetry, shutdown| async move {
        crate::forget::run(config, &telemetry, shutdown).await
    })
}

pub(super) fn collect(config: &Config) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    run_stage(config, |telemetry, shutdown| async move {
        crate::connect::collector::run(&catalog, &config.kafka, &config.collector, &telemetry, shutdown).await
    })
}

pub(super) fn serve(config: &Config) -> anyhow::Result<ExitCode> {
    if config.http.listen.is_empty() {
        anyhow::bail!("serve answers on http.listen: give --http ADDR or set HOFFREC__HTTP__LISTEN");
    }
    let catalog = load_catalog(config)?;
    let served = crate::serve::Served::default();
    let routes = served.clone();
    run_stage_with(
        config,
        move |telemetry| Ok(crate::serve::routes(config, telemetry, &routes)),
        |telemetry, shutdown| async move { crate::serve::run(config, catalog, served, &telemetry, shutdown).await },
    )
}

pub(super) fn refresh(config: &Config) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    run_stage(config, |telemetry, shutdown| async move {
        crate::serve::refresh::run(config, catalog, &telemetry, shutdown).await
    })
}

pub(super) fn connect(config: &Config, args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    if args.dry_run {
        let [source] = args.sources.as_slice() else {
            anyhow::bail!("--dry-run takes exactly one --source TOPIC");
        };
        let run = block_on(crate::connect::dry_run::run(
            &catalog,
            &config.kafka,
            source,
            args.account.as_deref(),
            args.customer.as_deref(),
        ))??;
        println!("{}", serde_json::to_string_pretty(&run)?);
        return Ok(ExitCode::SUCCESS);
    }
    let once = args.once;
    run_stage_judged(
        config,
        |_| Ok(axum::Router::new()),
        |telemetry, shutdown| async move {
            crate::connect::poller::run(&catalog, &config.kafka, &args.sources, args.once, &telemetry, shutdown).await
        },
        // A scripted pass that did not get everything must not look like one that did.
        |summary| match (once, summary.unfinished()) {
            (true, Some(why)) => Err(why),
            _ => Ok(()),
        },
    )
}

pub(super) fn simulate(config: &Config, mut args: crate::simulate::Args) -> anyhow::Result<ExitCode> {
    if args.react
        && let Some(collector) = &args.collector
    {
        let catalog = load_catalog(config)?;
        let recs_topic = catalog.require(Role::Recommendations)?.name.clone();
        args.site = Some(crate::simulate::react::Site {
            kafka: config.kafka.clone(),
            recs_topic,
            schemas: Arc::new(catalog.schemas),
            collector: collector.clone(),
        });
    }
    run_stage(config, |_telemetry, shutdown| async move {
        crate::simulate::run(&args, shutdown).await
    })
}

pub(super) fn mart(config: &Config) -> anyhow::Result<ExitCode> {
    run_stage(config, |telemetry, shutdown| async move {
        crate::mart::run(config, &telemetry, shutdown).await
    })
}

pub(super) fn recommend(config: &Config) -> anyhow::Result<ExitCode> {
    run_stage(config, |telemetry, shutdown| async move {
        crate::recommend::run(config, &telemetry, shutdown).await
    })
}

pub(super) fn train(config: &Config) -> anyhow::Result<ExitCode> {
    run_stage(config, |telemetry, shutdown| async move {
        crate::recommend::train::run(config, &telemetry, shutdown).await
    })
}

pub(super) fn dashboard(config: &Config) -> anyhow::Result<ExitCode> {
    if config.http.listen.is_empty() {
        anyhow::bail!("hoffrec dashboard needs an address to serve on: --http 127.0.0.1:8080");
    }
    run_stage_with(config, dashboard_routes(config), |telemetry, shutdown| async move {
        crate::dashboard::run(&telemetry, shutdown).await
    })
}

/// The demo settles its addresses and its lake before the runtime starts: the connectors
/// find the simulator through environment variables, and the dashboard reads the lake.
pub(super) fn demo(mut config: Config, mut args: crate::demo::DemoArgs) -> anyhow::Result<ExitCode> {
    args.simulator_addr = free_address()?;
    args.collector_addr = free_address()?;
    for (var, _) in crate::demo::SOURCE_ENV {
        // SAFETY: no other thread exists yet; the runtime and every client start after.
        unsafe {
            std::env::set_var(format!("{var}_API"), format!("http://{}", args.simulator_addr));
            std::env::set_var(format!("{var}_TOKEN"), "demo");
        }
    }
    std::fs::create_dir_all(&args.lake_dir).with_context(|| format!("creating {}", args.lake_dir.display()))?;
    config.lake.url = std::fs::canonicalize(&args.lake_dir)?.display().to_string();
    // The demo serves the lists beside its dashboard, which links to them.
    if config.http.serve_url.is_empty() && !config.http.listen.is_empty() {
        config.http.serve_url = format!("http://{}", config.http.listen);
    }
    let config = &config;
    let served = crate::serve::Served::default();
    let routes = served.clone();
    run_stage_with(
        config,
        move |telemetry| {
            let dashboard = crate::dashboard::Dashboard::load(config, telemetry)?.router();
            Ok(dashboard.merge(crate::serve::routes(config, telemetry, &routes)))
        },
        |telemetry, shutdown| async move { crate::demo::run(config, &args, served, &telemetry, shutdown).await },
    )
}

/// A local port nobody listens on now.
fn free_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

fn dashboard_routes(config: &Config) -> impl FnOnce(&Telemetry) -> anyhow::Result<axum::Router> + '_ {
    move |telemetry| Ok(crate::dashboard::Dashboard::load(config, telemetry)?.router())
}
