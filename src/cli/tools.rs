//! One-shot commands: check, inspect, import, query, evaluate; each prints its result and
//! exits.

use super::args::{DlqCommand, EvaluateArgs, ExplainArgs, ForgetArgs, ImportArgs, OffsetsCommand, SqlArgs, TailArgs};
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

pub(super) fn connect_offsets(config: &Config, command: &OffsetsCommand) -> anyhow::Result<ExitCode> {
    use crate::connect::offsets;
    let catalog = load_catalog(config)?;
    let topic = catalog.require(crate::catalog::Role::ConnectorOffsets)?;
    let known = |source: &str| -> anyhow::Result<()> {
        let declared = catalog.topic(source).is_some_and(|t| t.source.is_some());
        anyhow::ensure!(
            declared,
            "no source '{source}' in the catalog (a raw topic with a [source])"
        );
        Ok(())
    };
    let cursors = || offsets::list(&config.kafka, topic, &catalog.schemas);
    match command {
        OffsetsCommand::List { source } => {
            let all = cursors()?;
            for c in all.iter().filter(|c| source.as_ref().is_none_or(|s| &c.connector == s)) {
                println!("{}", serde_json::to_string(c)?);
            }
        }
        OffsetsCommand::Set { source, stream, cursor } => {
            known(source)?;
            let producer: rdkafka::producer::FutureProducer = crate::kafka::client_config(&config.kafka).create()?;
            block_on(offsets::save(
                &producer,
                topic,
                &catalog.schemas,
                source,
                stream,
                cursor,
            ))??;
            eprintln!("{source}/{stream}: cursor set to {cursor}");
        }
        OffsetsCommand::Reset { source, stream } => {
            known(source)?;
            let producer: rdkafka::producer::FutureProducer = crate::kafka::client_config(&config.kafka).create()?;
            let streams: Vec<String> = match stream {
                Some(s) => vec![s.clone()],
                None => cursors()?
                    .into_iter()
                    .filter(|c| &c.connector == source)
                    .map(|c| c.stream)
                    .collect(),
            };
            for s in &streams {
                block_on(offsets::reset(&producer, topic, source, s))??;
            }
            eprintln!("{source}: {} cursor(s) removed", streams.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn dlq(config: &Config, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    use crate::ingest::replay;
    let catalog = load_catalog(config)?;
    let (DlqCommand::List(f) | DlqCommand::Replay { filter: f }) = command;
    let since_ms = match &f.since {
        Some(t) => Some(
            crate::recommend::evaluate::parse_time(t)
                .with_context(|| format!("--since '{t}' is not a time (RFC 3339, a date, or epoch s/ms)"))?,
        ),
        None => None,
    };
    let filter = replay::Filter {
        class: f.class.clone(),
        since_ms,
        source: f.source.clone(),
    };
    match command {
        DlqCommand::List(_) => {
            let dlq = catalog.require(crate::catalog::Role::DeadLetter)?;
            for letter in replay::letters(&config.kafka, dlq, &filter)? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        DlqCommand::Replay { .. } => {
            anyhow::ensure!(
                filter.class.is_some(),
                "replay needs --class: replay what was fixed, not everything"
            );
            let summary = replay::replay(&config.kafka, &catalog, &filter)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn tail(config: &Config, args: &TailArgs) -> anyhow::Result<ExitCode> {
    let catalog = load_catalog(config)?;
    let options = crate::catalog::tail::Options {
        from_beginning: args.from_beginning,
        key: args.key.clone(),
        json: args.json,
        exit_at_end: args.exit_at_end,
        max: args.max,
    };
    let summary = crate::catalog::tail::tail(
        &config.kafka,
        &catalog,
        &args.topic,
        &options,
        &mut std::io::stdout().lock(),
    )?;
    tracing::info!(
        printed = summary.printed,
        undecodable = summary.undecodable,
        "tail done"
    );
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
