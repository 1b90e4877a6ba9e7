//! The one async runtime a command runs on, and the shapes commands share: a stage
//! (metrics, signals, a JSON summary) and a one-shot report.

use crate::config::Config;
use crate::telemetry::Telemetry;
use anyhow::Context;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a finished command waits for the runtime's blocking threads.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs `future` to completion on a fresh runtime, then shuts the runtime down.
pub(super) fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let output = runtime.block_on(future);
    // librdkafka and the HDFS client keep background threads; do not wait on them.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    Ok(output)
}

/// A long-running stage: `/metrics` and signal handling, a JSON summary on stdout at the
/// end.
pub(super) fn run_stage<T, E, F, Fut>(config: &Config, stage: F) -> anyhow::Result<ExitCode>
where
    T: serde::Serialize,
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(Telemetry, CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    run_stage_with(config, |_: &Telemetry| Ok(axum::Router::new()), stage)
}

/// As `run_stage`, with more routes served beside `/metrics` (when `http.listen` is set).
pub(super) fn run_stage_with<T, E, R, F, Fut>(config: &Config, routes: R, stage: F) -> anyhow::Result<ExitCode>
where
    T: serde::Serialize,
    E: std::error::Error + Send + Sync + 'static,
    R: FnOnce(&Telemetry) -> anyhow::Result<axum::Router>,
    F: FnOnce(Telemetry, CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    run_stage_judged(config, routes, stage, |_| Ok(()))
}

/// As `run_stage_with`; after the summary is printed, `verdict` may fail the command
/// (exit 2, the reason on stderr): a scripted run's summary is printed either way.
pub(super) fn run_stage_judged<T, E, R, F, Fut>(
    config: &Config,
    routes: R,
    stage: F,
    verdict: impl FnOnce(&T) -> Result<(), String>,
) -> anyhow::Result<ExitCode>
where
    T: serde::Serialize,
    E: std::error::Error + Send + Sync + 'static,
    R: FnOnce(&Telemetry) -> anyhow::Result<axum::Router>,
    F: FnOnce(Telemetry, CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let summary = block_on(async {
        let (telemetry, shutdown) = start_stage(config, routes).await?;
        stage(telemetry, shutdown).await.map_err(anyhow::Error::from)
    })??;
    println!("{}", serde_json::to_string(&summary)?);
    match verdict(&summary) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(reason) => {
            eprintln!("error: {reason}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Metrics (served when `http.listen` is set, with `routes`) and a shutdown token
/// cancelled by Ctrl-C or SIGTERM.
async fn start_stage(
    config: &Config,
    routes: impl FnOnce(&Telemetry) -> anyhow::Result<axum::Router>,
) -> anyhow::Result<(Telemetry, CancellationToken)> {
    let telemetry = Telemetry::new();
    let shutdown = CancellationToken::new();
    if !config.http.listen.is_empty() {
        let routes = routes(&telemetry)?;
        telemetry
            .serve_with(&config.http.listen, routes, shutdown.clone())
            .await?;
    }
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    Ok((telemetry, shutdown))
}

async fn cancel_on_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stop requested; finishing the current work");
    token.cancel();
}

/// Runs a one-shot command and prints its report as (pretty) JSON.
pub(super) fn print_report<T, E>(command: impl Future<Output = Result<T, E>>) -> anyhow::Result<ExitCode>
where
    T: serde::Serialize,
    E: std::error::Error + Send + Sync + 'static,
{
    let report = block_on(command)??;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
