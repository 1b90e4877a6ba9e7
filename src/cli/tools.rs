//! One-shot commands: check, inspect, import, query, evaluate; each prints its result and
//! exits.

use super::args::{EvaluateArgs, ExplainArgs, ForgetArgs, ImportArgs, SqlArgs};
use super::load_catalog;
use super::runtime::{block_on, print_report};
use crate::config::Config;
use crate::telemetry::Telemetry;
use anyhow::Context;
use std::process::ExitCode;

pub(super) fn config_show(config: &Config) -> anyhow::Result<ExitCode> {
    print!("{}", config.show());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn topics_validate(config: &Config) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    println!(
        "catalog ok: {} topics ({} raw), {} schemas",
        catalog.topics.len(),
        catalog.raw_topics().count(),
        catalog.schemas.events().count()
    );
    Ok(ExitCode::SUCCESS)
}

/// Exits 2 when the cluster differs from the catalog in ways `apply` does not change.
pub(super) fn topics_apply(config: &Config) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    let report = block_on(crate::catalog::apply::apply(&catalog, &config.kafka))?
        .with_context(|| format!("applying the catalog to {}", config.kafka.brokers))?;
    println!("{report}");
    Ok(if report.drift.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub(super) fn schemas_list(config: &Config) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    let mut versions: Vec<_> = catalog.schemas.versions().collect();
    versions.sort_by(|a, b| a.id.cmp(&b.id));
    for v in versions {
        let current = catalog
            .schemas
            .current(&v.event)
            .is_some_and(|c| c.fingerprint == v.fingerprint);
        println!(
            "{:<28} {:#018x}  {}",
            v.id,
            v.fingerprint,
            if current { "current" } else { "history" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn import(config: &Config, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    let summary = block_on(crate::connect::import::run(
        &catalog,
        &config.kafka,
        &args.source,
        &args.files,
    ))??;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn mart_once(config: &Config) -> anyhow::Result<ExitCode> {
    let telemetry = Telemetry::new();
    let summary = block_on(crate::mart::once(config, &telemetry))??;
    println!("{}", serde_json::to_string(&summary.last)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn mart_status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let marts = crate::mart::Marts::load(config)?;
    let statuses = block_on(crate::mart::status::status(&marts))??;
    if json {
        println!("{}", serde_json::to_string(&statuses)?);
    } else {
        print!("{}", crate::mart::status::render(&statuses));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn train_once(config: &Config) -> anyhow::Result<ExitCode> {
    let r = crate::recommend::Recommender::load(config)?;
    let rc = &config.recommend;
    print_report(crate::recommend::train::train_once(
        &r,
        rc.train_window_days,
        rc.train_validation_share,
    ))
}

pub(super) fn evaluate(config: &Config, args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    print_report(crate::recommend::evaluate::run(
        config,
        &args.interactions,
        &args.split_at,
        args.k,
        args.exclude_seen,
    ))
}

pub(super) fn explain(config: &Config, args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let Some(e) = block_on(crate::recommend::explain(config, &args.customer))?? else {
        anyhow::bail!("customer {} has no portrait in mart.customer_portrait", args.customer);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", crate::recommend::rank::render(&e));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn forget(config: &Config, args: &ForgetArgs) -> anyhow::Result<ExitCode> {
    if let Some(customer) = &args.status {
        let status = block_on(crate::forget::status(config, customer))??;
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let request = crate::forget::Request::new(args.customers.clone(), args.reason.clone())?;
    let report = block_on(crate::forget::erase(config, &request, args.vacuum))??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn sql(config: &Config, args: &SqlArgs) -> anyhow::Result<ExitCode> {
    let batches = block_on(query(config, &args.query))??;
    if args.json {
        let mut writer = arrow::json::LineDelimitedWriter::new(std::io::stdout());
        for batch in &batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    } else {
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every raw table and mart in the lake, registered under its SQL name, queried.
async fn query(config: &Config, sql: &str) -> anyhow::Result<Vec<arrow::record_batch::RecordBatch>> {
    let catalog = load_catalog(config)?;
    let lake = crate::lake::LakeUrl::parse(&config.lake.url)?;
    let marts: Vec<String> = crate::mart::files::load(&config.mart.sql_dir)
        .map(|files| files.into_iter().filter(|f| f.is_mart()).map(|f| f.name).collect())
        .unwrap_or_default();
    let (ctx, tables) = crate::mart::session::lake_session(&lake, &catalog, &marts).await?;
    tracing::debug!(?tables, "lake tables registered");
    let frame = ctx.sql(sql).await?;
    Ok(frame.collect().await?)
}
