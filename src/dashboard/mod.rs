//! The dashboard, served by the binary beside `/metrics` (`hoffrec dashboard --http ADDR`,
//! or `hoffrec demo --http ADDR`): pipeline health, a customer page and the model versions.
//!
//! It reads only what every deployment has: the stages' Prometheus metrics (this
//! process's registry plus `http.scrape_urls` for stages running elsewhere), the lake's
//! Delta logs, the marts and the model store. The page is one static file whose script
//! polls the JSON API under `/api/`.

pub mod pipeline;

use crate::config::Config;
use crate::recommend::data::{DataError, Marts as MartReader};
use crate::recommend::{RecommendError, Recommender, model::Model, rank::Explanation, store};
use crate::telemetry::Telemetry;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("dashboard configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Recommend(#[from] RecommendError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("no customer {0} in mart.customer_portrait")]
    NoCustomer(String),
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = match self {
            DashboardError::NoCustomer(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

pub struct Dashboard {
    recommender: Recommender,
    mart_files: crate::mart::Marts,
    telemetry: Telemetry,
    scrape_urls: Vec<String>,
    http: reqwest::Client,
    rates: Mutex<pipeline::Rates>,
    /// `http.dashboard_token`, if set.
    token: Option<String>,
    /// `http.serve_url`, if set.
    serve_url: Option<String>,
}

/// One line of the customer search.
#[derive(Debug, Serialize, Deserialize)]
pub struct CustomerHit {
    pub customer_id: String,
    pub lifecycle_stage: Option<String>,
    pub wealth_tier: Option<String>,
    pub orders: Option<i64>,
    pub sessions: Option<i64>,
    /// Products shown to the customer so far (rows of mart.interactions).
    #[serde(default)]
    pub shown: i64,
}

/// A product shown to the customer and what happened (a row of mart.interactions).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Shown {
    pub product_id: String,
    pub name: Option<String>,
    pub shown_ms: Option<i64>,
    pub position: Option<i64>,
    pub model_version: Option<String>,
    pub clicked: bool,
    pub carted: bool,
    pub purchased: bool,
}

#[derive(Debug, Serialize)]
pub struct CustomerPage {
    pub explanation: Explanation,
    pub shown: Vec<Shown>,
    /// The answer the site gets for this customer from `hoffrec serve` (`http.serve_url`).
    pub served_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Models {
    pub current: Option<String>,
    pub models: Vec<Model>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub served_secs: u64,
}

#[derive(Debug, Deserialize)]
struct Search {
    #[serde(default)]
    q: String,
}

const PAGE: &str = include_str!("page.html");

/// With `http.dashboard_token` set, the API answers only that bearer token.
async fn bearer(
    State(token): State<Arc<Option<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = token.as_deref() else {
        return next.run(request).await;
    };
    let sent = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared in constant time, so the answer's timing says nothing about the token.
    let same = sent.len() == token.len() && sent.bytes().zip(token.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
    if same {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "the dashboard API needs its token"})),
        )
            .into_response()
    }
}

impl Dashboard {
    pub fn load(config: &Config, telemetry: &Telemetry) -> Result<Self, DashboardError> {
        let mart_files = crate::mart::Marts::load(config).map_err(|e| DashboardError::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| DashboardError::Config(e.to_string()))?;
        Ok(Self {
            recommender: Recommender::load(config)?,
            mart_files,
            telemetry: telemetry.clone(),
            scrape_urls: config.http.scrape_urls.clone(),
            http,
            rates: Mutex::new(pipeline::Rates::default()),
            token: config
                .http
                .dashboard_token
                .is_set()
                .then(|| config.http.dashboard_token.expose().to_string()),
            serve_url: (!config.http.serve_url.is_empty()).then(|| config.http.serve_url.clone()),
        })
    }

    pub fn router(self) -> Router {
        let token = Arc::new(self.token.clone());
        let api = Router::new()
            .route("/api/pipeline", get(api_pipeline))
            .route("/api/customers", get(api_customers))
            .route("/api/customer/{id}", get(api_customer))
            .route("/api/models", get(api_models))
            .route_layer(axum::middleware::from_fn_with_state(token, bearer))
            .with_state(Arc::new(self));
        // The page itself is static and holds no data.
        Router::new().route("/", get(|| async { Html(PAGE) })).merge(api)
    }

    pub async fn health(&self) -> pipeline::Health {
        let mut text = self.telemetry.render();
        let mut unreachable = Vec::new();
        for url in &self.scrape_urls {
            match self.scrape(url).await {
                Ok(more) => text.push_str(&more),
                Err(e) => unreachable.push(format!("{url}: {e}")),
            }
        }
        let samples = crate::telemetry::samples(&text);
        let mut health = match self.rates.lock() {
            Ok(mut rates) => pipeline::from_metrics(&samples, &mut rates, Instant::now()),
            Err(poisoned) => pipeline::from_metrics(&samples, &mut poisoned.into_inner(), Instant::now()),
        };
        health.unreachable = unreachable;
        health.tables = self.tables().await.unwrap_or_else(|e| {
            vec![pipeline::TableCommit {
                table: format!("lake unreadable: {e}"),
                version: None,
                last_commit_ms: None,
                lag_commits: None,
            }]
        });
        health
    }

    async fn scrape(&self, url: &str) -> Result<String, reqwest::Error> {
        self.http.get(url).send().await?.error_for_status()?.text().await
    }

    async fn tables(&self) -> Result<Vec<pipeline::TableCommit>, crate::mart::fold::FoldError> {
        let m = &self.mart_files;
        let mut out = Vec::new();
        for raw in crate::mart::fold::open_raw(&m.lake, &m.catalog).await? {
            out.push(pipeline::TableCommit {
                table: format!("raw.{}", raw.sql_name),
                version: raw.version(),
                last_commit_ms: raw.last_commit_ms().await,
                lag_commits: None,
            });
        }
        for s in crate::mart::status::status(m).await? {
            let table = crate::mart::tables::MartTable::open(&m.lake, &s.mart).await?;
            out.push(pipeline::TableCommit {
                table: format!("mart.{}", s.mart),
                version: s.version,
                last_commit_ms: crate::mart::tables::last_commit_ms(&table.table).await,
                lag_commits: Some(s.lag_versions),
            });
        }
        Ok(out)
    }

    pub async fn search(&self, q: &str) -> Result<Vec<CustomerHit>, DashboardError> {
        let marts = self.marts().await?;
        let pattern = q.trim().replace('\'', "''").replace('%', "");
        let shown = if marts.has("interactions") {
            "SELECT customer_id, count(*) AS shown FROM mart.interactions GROUP BY customer_id"
        } else {
            "SELECT '' AS customer_id, 0 AS shown"
        };
        Ok(marts
            .rows(&format!(
                "SELECT p.customer_id, p.lifecycle_stage, p.wealth_tier, p.orders, p.sessions, \
                        coalesce(s.shown, 0) AS shown \
                 FROM mart.customer_portrait p LEFT JOIN ({shown}) s ON s.customer_id = p.customer_id \
                 WHERE p.customer_id LIKE '%{pattern}%' \
                 ORDER BY p.customer_id = '{pattern}' DESC, p.orders DESC, p.customer_id LIMIT 20"
            ))
            .await?)
    }

    pub async fn customer(&self, id: &str) -> Result<CustomerPage, DashboardError> {
        let r = &self.recommender;
        let model = store::current(&r.lake).await?.unwrap_or_else(Model::prior);
        let explanation = r
            .rank(&[id.to_string()], &model)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| DashboardError::NoCustomer(id.to_string()))?;
        let marts = self.marts().await?;
        let shown = if marts.has("interactions") {
            marts
                .rows(&format!(
                    "SELECT i.product_id, p.name, i.shown_ms, i.position, i.model_version, \
                            i.clicked, i.carted, i.purchased \
                     FROM mart.interactions i LEFT JOIN mart.product_features p ON p.product_id = i.product_id \
                     WHERE i.customer_id = '{}' ORDER BY i.shown_ms DESC, i.position LIMIT 50",
                    id.replace('\'', "''")
                ))
                .await?
        } else {
            Vec::new()
        };
        let served_url = self.serve_url.as_ref().and_then(|base| {
            let mut url = reqwest::Url::parse(base).ok()?;
            // The id as one path segment, escaped by the url crate.
            url.path_segments_mut()
                .ok()?
                .pop_if_empty()
                .extend(["v1", "recommendations", id]);
            Some(url.to_string())
        });
        Ok(CustomerPage {
            explanation,
            shown,
            served_url,
        })
    }

    pub async fn models(&self) -> Result<Models, DashboardError> {
        let lake = &self.recommender.lake;
        Ok(Models {
            current: store::current(lake).await?.map(|m| m.version),
            models: store::history(lake).await?,
        })
    }

    async fn marts(&self) -> Result<MartReader, DashboardError> {
        Ok(MartReader::open(&self.recommender.lake).await?)
    }
}

async fn api_pipeline(State(d): State<Arc<Dashboard>>) -> Json<pipeline::Health> {
    Json(d.health().await)
}

async fn api_customers(
    State(d): State<Arc<Dashboard>>,
    Query(s): Query<Search>,
) -> Result<Json<Vec<CustomerHit>>, DashboardError> {
    Ok(Json(d.search(&s.q).await?))
}

async fn api_customer(
    State(d): State<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> Result<Json<CustomerPage>, DashboardError> {
    Ok(Json(d.customer(&id).await?))
}

async fn api_models(State(d): State<Arc<Dashboard>>) -> Result<Json<Models>, DashboardError> {
    Ok(Json(d.models().await?))
}

/// `hoffrec dashboard`: the routes are served by the stage's HTTP endpoint; this waits
/// for the stop signal.
pub async fn run(telemetry: &Telemetry, shutdown: CancellationToken) -> Result<Summary, DashboardError> {
    let started = Instant::now();
    telemetry.set_ready(true);
    shutdown.cancelled().await;
    telemetry.set_ready(false);
    Ok(Summary {
        served_secs: started.elapsed().as_secs(),
    })
}
