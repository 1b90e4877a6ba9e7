//! What the read path needs of the newest catalogue (`mart.product_features`): which
//! products can be sold now, and the popular ones for visitors without a list, overall,
//! per category, and per region (`mart.product_region`). Read again every
//! `serve.catalogue_refresh_ms`, so a product that goes out of stock leaves every served
//! list without a new list being published.

use crate::lake::LakeUrl;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many popular products a fallback can draw from, overall and per category.
const POPULAR: usize = 100;

#[derive(Debug, Default)]
pub struct Catalogue {
    /// The `product_features` version read; `None` before the first read.
    pub version: Option<u64>,
    available: HashSet<String>,
    /// (product, buyers), most bought first.
    popular: Vec<(String, f64)>,
    popular_in: HashMap<String, Vec<(String, f64)>>,
    /// (product, buyers living there), most bought first, per region.
    popular_in_region: HashMap<String, Vec<(String, f64)>>,
    /// Each product's category, for a product page's fallback.
    category_of: HashMap<String, String>,
}

impl Catalogue {
    /// Whether a product may be shown: unknown before the first read, so then everything.
    pub fn sellable(&self, product: &str) -> bool {
        self.version.is_none() || self.available.contains(product)
    }

    pub fn category_of(&self, product: &str) -> Option<&str> {
        self.category_of.get(product).map(String::as_str)
    }

    /// Popular products in `category` if it has any, else in `region` if it has any, else
    /// overall; which it was.
    pub fn popular(&self, category: Option<&str>, region: Option<&str>) -> (&'static str, &[(String, f64)]) {
        if let Some(in_category) = category.and_then(|c| self.popular_in.get(c)) {
            return ("category_popular", in_category);
        }
        match region.and_then(|r| self.popular_in_region.get(r)) {
            Some(in_region) => ("region_popular", in_region),
            None => ("popular", &self.popular),
        }
    }
}

#[derive(serde::Deserialize)]
struct Row {
    product_id: String,
    category_id: Option<String>,
    available: Option<bool>,
    buyers: Option<i64>,
    viewers_recent: Option<i64>,
}

#[derive(serde::Deserialize)]
struct RegionRow {
    region: String,
    product_id: String,
    buyers: i64,
}

/// Reads the catalogue; `None` while the mart does not exist yet.
pub async fn read(lake: &LakeUrl) -> Result<Option<Catalogue>, String> {
    let marts = ["product_features".to_string(), "product_region".to_string()];
    let (ctx, _, versions) = crate::mart::session::mart_session(lake, &marts)
        .await
        .map_err(|e| e.to_string())?;
    if !versions.contains_key("product_features") {
        return Ok(None);
    }
    let mut rows: Vec<Row> = crate::recommend::data::rows(
        &ctx,
        "SELECT product_id, category_id, available, buyers, viewers_recent FROM mart.product_features",
    )
    .await
    .map_err(|e| e.to_string())?;
    // Every product's category, sellable or not: an out-of-stock product's page still
    // falls back to its category.
    let category_of: HashMap<String, String> = rows
        .iter()
        .filter_map(|r| Some((r.product_id.clone(), r.category_id.clone()?)))
        .collect();
    rows.retain(|r| r.available == Some(true));
    // Bought by most customers, then viewed by most lately: what "popular" means to a
    // visitor the store knows nothing about.
    rows.sort_by(|a, b| (b.buyers, b.viewers_recent, &a.product_id).cmp(&(a.buyers, a.viewers_recent, &b.product_id)));
    let mut popular_in: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    let mut popular = Vec::with_capacity(POPULAR);
    for r in &rows {
        let entry = (r.product_id.clone(), r.buyers.unwrap_or(0) as f64);
        if popular.len() < POPULAR {
            popular.push(entry.clone());
        }
        if let Some(c) = &r.category_id {
            let in_category = popular_in.entry(c.clone()).or_default();
            if in_category.len() < POPULAR {
                in_category.push(entry);
            }
        }
    }
    let available: HashSet<String> = rows.iter().map(|r| r.product_id.clone()).collect();
    let mut popular_in_region: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    if versions.contains_key("product_region") {
        // Ties by id, so every replica gives the same order.
        let by_region: Vec<RegionRow> = crate::recommend::data::rows(
            &ctx,
            "SELECT region, product_id, buyers FROM mart.product_region WHERE buyers > 0
             ORDER BY region, buyers DESC, product_id",
        )
        .await
        .map_err(|e| e.to_string())?;
        for r in by_region.into_iter().filter(|r| available.contains(&r.product_id)) {
            let in_region = popular_in_region.entry(r.region).or_default();
            if in_region.len() < POPULAR {
                in_region.push((r.product_id, r.buyers as f64));
            }
        }
    }
    Ok(Some(Catalogue {
        version: versions.get("product_features").copied(),
        category_of,
        available,
        popular,
        popular_in,
        popular_in_region,
    }))
}

#[cfg(test)]
impl Catalogue {
    /// A catalogue read at version 1 that sells exactly `sellable`.
    pub fn for_tests(sellable: &[&str]) -> Self {
        Self {
            version: Some(1),
            available: sellable.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// The newest catalogue read, shared with the handlers.
#[derive(Debug, Default, Clone)]
pub struct Shared(Arc<RwLock<Arc<Catalogue>>>);

impl Shared {
    pub fn current(&self) -> Arc<Catalogue> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the catalogue now and then every `every` until `shutdown`; a failed read
    /// keeps the one before.
    pub async fn keep_current(&self, lake: LakeUrl, every: Duration, shutdown: CancellationToken) {
        loop {
            match read(&lake).await {
                Ok(Some(c)) if c.version != self.current().version => {
                    tracing::info!(version = c.version, sellable = c.available.len(), "catalogue read");
                    *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(c);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the catalogue; keeping the last one"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
