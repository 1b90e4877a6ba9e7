//! The dashboard in a real headless Chromium, over a live `hoffrec demo --http`: the page
//! loads with pipeline health from every stage, a customer is found by search and their
//! recommendations with reasons are visible, what was shown to a customer is listed, and
//! the model versions are charted. The demo then stops cleanly on SIGTERM.

use crate::common;

use crate::common::browser::Browser;
use serde_json::Value as Json;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Kills the demo if the test fails before stopping it.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn api(http: &reqwest::Client, url: &str) -> Option<Json> {
    let r = http.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    serde_json::from_str(&r.text().await.ok()?).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_pipeline_a_customer_and_the_models_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let mut demo = Running(Some(
        Command::new(env!("CARGO_BIN_EXE_hoffrec"))
            .current_dir(common::repo())
            .args([
                "demo",
                "--duration",
                "240",
                "--customers",
                "60",
                "--http",
                &addr,
                "--lake-dir",
            ])
            .arg(dir.path().join("lake"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    // A customer who has been shown recommendations, for the "what was shown" table.
    let shown_customer = common::poll_until("a customer with shown lists", Duration::from_secs(150), || async {
        let hits = api(&http, &format!("{base}/api/customers?q=c-")).await?;
        hits.as_array()?
            .iter()
            .find(|h| h["shown"].as_i64().unwrap_or(0) > 0)
            .and_then(|h| h["customer_id"].as_str().map(String::from))
    })
    .await;

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    let long = Duration::from_secs(60);
    // Pipeline health: every stage counted, rates after the second refresh, lake commits.
    let stages = browser
        .wait_text("stage rates", "#stages", long, |t| {
            t.contains("ingest") && t.contains("recommend") && !t.contains('…')
        })
        .await;
    for stage in ["connect", "collect", "ingest", "mart", "recommend"] {
        assert!(stages.contains(stage), "{stage} missing:\n{stages}");
    }
    let tables = browser
        .wait_text("lake commits", "#tables", long, |t| {
            t.contains("raw.site_product_view") && t.contains("mart.customer_portrait")
        })
        .await;
    assert!(tables.contains("raw.store_order"), "{tables}");

    // Search by part of an id, pick a hit: the list with reasons appears.
    browser.type_into("#customer-search", "c-0").await;
    browser.click("#customer-find").await;
    let hits = browser
        .wait_text("search hits", "#customer-hits button.hit", long, |t| t.contains("c-0"))
        .await;
    assert!(hits.contains("orders"), "{hits}");
    browser.click("#customer-hits button.hit").await;
    let recs = browser.wait_text("a list", "#recs li", long, |t| !t.is_empty()).await;
    assert!(recs.contains("tier"), "{recs}");
    let reasons = browser.texts("#recs .reason").await;
    assert!(!reasons.is_empty(), "no reason codes shown:\n{recs}");
    let portrait = browser.texts("#portrait").await.join("\n");
    assert!(portrait.contains("lifecycle_stage"), "{portrait}");

    // The exact id of a customer who was shown lists: what was shown and what happened.
    browser.type_into("#customer-search", &shown_customer).await;
    browser.click("#customer-find").await;
    // A search clears the page first, so this is the new customer's page, not the last one.
    browser
        .wait_text("the customer page", "#customer-id", long, |t| {
            t.contains(&shown_customer)
        })
        .await;
    assert!(browser.texts("#customer-hits button.hit").await.is_empty());
    let shown = browser
        .wait_text("the shown table", "#shown", long, |t| t.contains("position"))
        .await;
    assert!(!shown.contains("nothing shown yet"), "{shown}");

    // The page links her to what the site is served now: the demo's own `serve`.
    browser
        .wait_text("the served link", "#served", long, |t| t.contains("served"))
        .await;
    let page = api(&http, &format!("{base}/api/customer/{shown_customer}"))
        .await
        .unwrap();
    let served_url = page["served_url"].as_str().expect("a served_url").to_string();
    assert_eq!(served_url, format!("{base}/v1/recommendations/{shown_customer}"));
    let served = common::poll_until("her served list", Duration::from_secs(60), || async {
        api(&http, &served_url).await.filter(|a| a["fallback"].is_null())
    })
    .await;
    assert_eq!(served["customer_id"], shown_customer.as_str(), "{served}");
    assert!(!served["items"].as_array().unwrap().is_empty(), "{served}");

    // Model versions: the demo trains every 20 s; the chart marks each version.
    let models = browser
        .wait_text("a trained model", "#model-table", Duration::from_secs(120), |t| {
            t.contains("current")
        })
        .await;
    assert!(models.contains("AUC"), "{models}");
    assert!(
        !browser.texts("#model-chart circle").await.is_empty(),
        "no points charted"
    );
    browser
        .screenshot(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"))
        .await;
    drop(browser);

    // Ctrl-C / SIGTERM stops the demo cleanly, with its summary.
    let demo = demo.0.take().unwrap();
    let pid = demo.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = demo.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with('{')), "no summary: {stdout}");
}

/// With `http.dashboard_token` set, the JSON API (customer data) answers only the token;
/// the static page and `/metrics` stay as they are.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_api_needs_its_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let _dashboard = Running(Some(
        Command::new(env!("CARGO_BIN_EXE_hoffrec"))
            .current_dir(common::repo())
            .args(["--lake", dir.path().to_str().unwrap(), "dashboard", "--http", &addr])
            .env("HOFFREC__HTTP__DASHBOARD_TOKEN", "let-me-in")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let status = |path: &'static str, token: Option<&'static str>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut request = http.get(format!("{base}{path}"));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            request.send().await.ok().map(|r| r.status().as_u16())
        }
    };
    common::poll_until("the dashboard to answer", Duration::from_secs(60), || status("/", None)).await;
    assert_eq!(status("/api/models", None).await, Some(401));
    assert_eq!(status("/api/models", Some("guess")).await, Some(401));
    assert_eq!(status("/api/models", Some("let-me-in")).await, Some(200));
    assert_eq!(status("/", None).await, Some(200));
    assert_eq!(status("/metrics", None).await, Some(200));
}
