//! `hoffrec simulate`: a seeded world of customers with hidden personas and a home-goods
//! catalogue, served behind the real sources' APIs so the real connectors run against it,
//! and a client that posts the customers' consents to the event collector.

pub mod export;
pub mod react;
pub mod serve;
pub mod sessions;
pub mod world;

use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("cannot write {path}: {source}")]
    Dump {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the collector at {url} refused events: {reason}")]
    Collector { url: String, reason: String },
    #[error("reading the lists on {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world's seed: the same seed gives the same world.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 2000)]
    pub customers: usize,
    /// Write the world as JSON here.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// Write the world's history as an interaction log (CSV) for `hoffrec evaluate`.
    #[arg(long, value_name = "FILE")]
    pub export_interactions: Option<PathBuf>,
    /// Serve the source APIs on this address until Ctrl-C/SIGTERM.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Post the customers' consents (and --sessions) to this collector, e.g. http://127.0.0.1:8088.
    #[arg(long, value_name = "URL")]
    pub collector: Option<String>,
    /// Site sessions per customer to post to the collector.
    #[arg(long, default_value_t = 0)]
    pub sessions: usize,
    /// Show the lists on recs.customer to the simulated customers and post their
    /// impressions, clicks and carts to --collector (the closed loop).
    #[arg(long, requires = "collector")]
    pub react: bool,
    /// Where the closed loop reads the lists: set by the caller when `react` is, because
    /// it needs the catalog and the Kafka configuration, which are not flags.
    #[arg(skip)]
    pub site: Option<react::Site>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub customers: usize,
    pub products: usize,
    pub orders: usize,
    pub register_records: usize,
    pub consents_posted: usize,
    pub site_events_posted: usize,
    pub interactions_exported: usize,
    pub site: Option<react::SiteSummary>,
}

pub async fn run(args: &Args, shutdown: CancellationToken) -> Result<Summary, SimulateError> {
    let world = Arc::new(world::generate(args.seed, args.customers));
    let mut summary = Summary {
        seed: args.seed,
        customers: world.customers.len(),
        products: world.products.len(),
        orders: world.orders.len(),
        register_records: world.register.len(),
        consents_posted: 0,
        site_events_posted: 0,
        interactions_exported: 0,
        site: None,
    };
    if let Some(path) = &args.export_interactions {
        summary.interactions_exported = export::write_csv(&world, path).map_err(|source| SimulateError::Dump {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let Some(path) = &args.dump {
        let text = serde_json::to_string_pretty(world.as_ref()).unwrap_or_default();
        std::fs::write(path, text).map_err(|source| SimulateError::Dump {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let Some(url) = &args.collector {
        summary.consents_posted = post(url, &consents(&world)).await?;
        summary.site_events_posted = post(url, &sessions::generate(&world, args.sessions)).await?;
    }
    let site = args.site.as_ref().map(|site| {
        let (world, shutdown) = (world.clone(), shutdown.clone());
        let (seed, site) = (args.seed, site.clone());
        tokio::spawn(async move { react::show_lists(&world, &site, seed, shutdown).await })
    });
    if let Some(addr) = &args.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimulateError::Listen {
                addr: addr.clone(),
                source,
            })?;
        tracing::info!(addr, customers = summary.customers, "simulated sources are serving");
        let app = serve::router(world.clone());
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown({
                let shutdown = shutdown.clone();
                async move { shutdown.cancelled().await }
            })
            .await;
    }
    if let Some(task) = site {
        shutdown.cancelled().await;
        summary.site = Some(task.await.map_err(|e| SimulateError::Collector {
            url: String::new(),
            reason: e.to_string(),
        })??);
    }
    Ok(summary)
}

/// The consents the site records before the world's data is read: `social_profile` for
/// every customer who linked a VK account, `real_estate_profile` for every customer the
/// register has a record of (the marts use neither without it).
fn consents(world: &world::World) -> Vec<serde_json::Value> {
    let consent = |c: &world::Customer, purpose: &str, networks: Vec<String>| {
        serde_json::json!({"type": "consent", "event_id": format!("sim-consent-{}-{}-{purpose}", world.seed, c.id),
            "event_time": world::START_MS - 86_400_000, "customer_id": c.id, "purpose": purpose,
            "action": "given", "networks": networks, "channel": "site"})
    };
    let mut out = Vec::new();
    for c in &world.customers {
        if let Some(vk) = c.vk_id {
            out.push(consent(c, "social_profile", vec![format!("vk:{vk}")]));
        }
        if world.register.iter().any(|r| r.customer_id == c.id) {
            out.push(consent(c, "real_estate_profile", vec![]));
        }
    }
    out
}

/// Posts events to the collector in batches; any refusal is an error naming it.
async fn post(url: &str, events: &[serde_json::Value]) -> Result<usize, SimulateError> {
    let refused = |reason: String| SimulateError::Collector {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::Client::new();
    for chunk in events.chunks(500) {
        let body = serde_json::json!({ "events": chunk }).to_string();
        let mut request = client
            .post(format!("{}/v1/events", url.trim_end_matches('/')))
            .header("content-type", "application/json")
            .body(body);
        // A collector with producer keys wants the simulated site's.
        if let Ok(key) = std::env::var("HOFFREC_COLLECTOR_KEY")
            && !key.is_empty()
        {
            request = request.bearer_auth(key);
        }
        let answer = request.send().await.map_err(|e| refused(e.to_string()))?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| refused(e.to_string()))?;
        let rejected = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["rejected"].as_array().map(Vec::len))
            .unwrap_or(usize::MAX);
        if !status.is_success() || rejected != 0 {
            return Err(refused(format!("HTTP {status}: {text}")));
        }
    }
    Ok(events.len())
}
