//! What the recommender reads from the marts: the catalogue with its features and
//! neighbours (shared by every customer), and per customer the portrait, what they did
//! with which products, and their departments.

use crate::lake::LakeUrl;
use datafusion::prelude::SessionContext;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading the marts: {0}")]
    Lake(String),
    #[error("query `{query}`: {message}")]
    Query { query: String, message: String },
}

/// One customer_portrait row (the columns the recommender uses).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Portrait {
    pub customer_id: String,
    pub as_of_ms: i64,
    pub lifecycle_stage: String,
    pub housing_market: String,
    pub renovation_scope: String,
    pub wealth_tier: String,
    pub spend_tier: String,
    pub new_homeowner: bool,
    pub renovation_burst_flag: bool,
    pub undecided_shopper: bool,
    pub brand_loyal: bool,
    pub has_sauna: bool,
    pub has_pool: bool,
    /// The consent purposes standing `given` (comma-separated).
    pub consents: String,
    pub orders: i64,
    pub sessions: i64,
    pub bulk_buyer: bool,
    pub district: Option<String>,
    pub days_since_registration: Option<i64>,
    /// The rule and raw rows behind each inferred attribute (`<attribute>_because`).
    pub housing_market_because: Option<String>,
    pub new_homeowner_because: Option<String>,
    pub wealth_tier_because: Option<String>,
    pub undecided_shopper_because: Option<String>,
    pub brand_loyal_because: Option<String>,
    pub renovation_burst_flag_because: Option<String>,
    pub renovation_scope_because: Option<String>,
    pub lifecycle_stage_because: Option<String>,
    pub consents_because: Option<String>,
    pub bulk_buyer_because: Option<String>,
}

impl Portrait {
    /// A column by name as text, for data-driven rules.
    pub fn field(&self, column: &str) -> Option<String> {
        Some(match column {
            "lifecycle_stage" => self.lifecycle_stage.clone(),
            "housing_market" => self.housing_market.clone(),
            "renovation_scope" => self.renovation_scope.clone(),
            "wealth_tier" => self.wealth_tier.clone(),
            "spend_tier" => self.spend_tier.clone(),
            "new_homeowner" => self.new_homeowner.to_string(),
            "renovation_burst_flag" => self.renovation_burst_flag.to_string(),
            "undecided_shopper" => self.undecided_shopper.to_string(),
            "brand_loyal" => self.brand_loyal.to_string(),
            "has_sauna" => self.has_sauna.to_string(),
            "has_pool" => self.has_pool.to_string(),
            "consents" => self.consents.clone(),
            "bulk_buyer" => self.bulk_buyer.to_string(),
            _ => return None,
        })
    }

    /// Each inferred attribute with its value and the evidence the marts recorded for it.
    pub fn evidence(&self) -> Vec<(&'static str, String, Option<&str>)> {
        [
            ("housing_market", &self.housing_market_because),
            ("new_homeowner", &self.new_homeowner_because),
            ("wealth_tier", &self.wealth_tier_because),
            ("renovation_scope", &self.renovation_scope_because),
            ("renovation_burst_flag", &self.renovation_burst_flag_because),
            ("lifecycle_stage", &self.lifecycle_stage_because),
            ("undecided_shopper", &self.undecided_shopper_because),
            ("brand_loyal", &self.brand_loyal_because),
            ("bulk_buyer", &self.bulk_buyer_because),
            ("consents", &self.consents_because),
        ]
        .into_iter()
        .map(|(attribute, b)| (attribute, self.field(attribute).unwrap_or_default(), b.as_deref()))
        .collect()
    }
}

/// One product_features row.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    pub category_id: String,
    pub category_name: String,
    pub top_category: String,
    pub price_kopecks: i64,
    pub available: bool,
    pub price_tier: i64,
    pub viewers: i64,
    pub buyers: i64,
    pub conversion: f64,
    pub trend: f64,
    /// Of its buyers, the share who bought it again in another order.
    pub repeat_share: f64,
    /// Customers who bought it in the newest 7 days of the marts, and who bought it for the
    /// first time in the newest 28 and 14: relative to the newest event, not to a mart
    /// fold, so `catalogue` counts them on read.
    #[serde(skip)]
    pub buyers_7d: i64,
    #[serde(skip)]
    pub new_buyers_28d: i64,
    #[serde(skip)]
    pub new_buyers_14d: i64,
}

#[derive(Debug, Deserialize)]
struct Uptake {
    product_id: String,
    buyers_7d: i64,
    new_buyers_28d: i64,
    new_buyers_14d: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Neighbour {
    pub product_id: String,
    pub neighbour_id: String,
    pub co_viewers: i64,
    pub co_buyers: i64,
}

/// One customer_product row.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Touched {
    pub customer_id: String,
    pub product_id: String,
    pub views: i64,
    pub carts: i64,
    pub purchased_qty: f64,
    /// Orders it was in (a second order is a rebuy).
    pub purchase_orders: i64,
    pub last_viewed_ms: Option<i64>,
    pub last_purchased_ms: Option<i64>,
    /// When they first looked at, carted or bought it.
    pub first_seen_ms: Option<i64>,
}

/// One customer_category row.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Department {
    pub customer_id: String,
    pub top_category: String,
    pub orders: i64,
    pub spend_kopecks: i64,
    pub burst: Option<f64>,
    pub views: i64,
    pub views_recent: i64,
}

/// One product shown to the customer in a list (a `mart.interactions` row): reacted to
/// (clicked, carted, bought) or ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Exposure {
    pub product_id: String,
    pub list_id: String,
    pub shown_ms: i64,
    pub position: i64,
    pub label: i64,
    /// How likely the list's policy was to show it (1 for the exploited slots).
    pub propensity: Option<f64>,
}

/// How far back shown lists count as feedback on the customer's tastes.
pub const FEEDBACK_DAYS: i64 = 28;

/// The catalogue side, the same for every customer.
#[derive(Debug, Clone, Default)]
pub struct CatalogueView {
    pub products: Vec<Product>,
    pub by_id: HashMap<String, usize>,
    pub neighbours: HashMap<String, Vec<Neighbour>>,
    /// The current collaborative model, once `hoffrec train` has fitted one.
    pub collab: Option<std::sync::Arc<CollabView>>,
}

/// The EASE model joined to this catalogue once, not per customer.
#[derive(Debug, Clone)]
pub struct CollabView {
    pub ease: super::collab::Ease,
    /// EASE product index -> catalogue index (products no longer in the catalogue: none).
    pub catalogue_of: Vec<Option<usize>>,
    pub ease_of: HashMap<String, u32>,
    /// ALS's product-factor Gram matrix, which folding a customer in needs: computed once.
    pub als_gram: Option<faer::Mat<f64>>,
}

impl CollabView {
    pub fn new(ease: super::collab::Ease, products: &HashMap<String, usize>) -> Self {
        let catalogue_of = ease.items.iter().map(|p| products.get(p).copied()).collect();
        let ease_of = ease
            .items
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let als_gram = ease.als.as_ref().map(super::collab::Als::gram);
        Self {
            ease,
            catalogue_of,
            ease_of,
            als_gram,
        }
    }
}

impl Product {
    /// How many customers it reached: its viewers, or its buyers where a log has
    /// purchases and no clickstream.
    pub fn reach(&self) -> i64 {
        self.viewers.max(self.buyers)
    }
}

impl CatalogueView {
    pub fn product(&self, id: &str) -> Option<&Product> {
        self.by_id.get(id).map(|&i| &self.products[i])
    }
}

/// Everything known about one customer.
#[derive(Debug, Clone, Default)]
pub struct Customer {
    pub portrait: Portrait,
    pub touched: Vec<Touched>,
    pub departments: Vec<Department>,
    /// The newest `FEEDBACK_DAYS` of lists shown to them, oldest first.
    pub shown: Vec<Exposure>,
}

impl Customer {
    /// The customer without the products they first touched at or after `at_ms`: a list
    /// shown then must be judged on what was known then, or a click (which opens the
    /// product's card, a view) would explain itself.
    pub fn before(&self, at_ms: i64) -> Customer {
        Customer {
            touched: self
                .touched
                .iter()
                .filter(|t| t.first_seen_ms.is_none_or(|f| f < at_ms))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

/// The rows of a query as `T`s (through Arrow's JSON writer: column names are field names).
pub async fn rows<T: DeserializeOwned>(ctx: &SessionContext, query: &str) -> Result<Vec<T>, DataError> {
    let err = |message: String| DataError::Query {
        query: query.to_string(),
        message,
    };
    let batches = ctx
        .sql(query)
        .await
        .map_err(|e| err(e.to_string()))?
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        writer.write(b).map_err(|e| err(e.to_string()))?;
    }
    writer.finish().map_err(|e| err(e.to_string()))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
}

pub struct Marts {
    ctx: SessionContext,
    /// The registered tables (`mart.<name>`).
    found: Vec<String>,
    /// Their Delta versions, by mart name.
    pub versions: crate::mart::session::MartVersions,
}

pub const MARTS: [&str; 5] = [
    "customer_portrait",
    "customer_product",
    "customer_category",
    "product_features",
    "product_neighbour",
];

impl Marts {
    /// A session over the marts as they are now (open again to see newer versions).
    pub async fn open(lake: &LakeUrl) -> Result<Self, DataError> {
        // Training also reads the interactions; ranking does not need them to exist.
        let names: Vec<String> = MARTS
            .iter()
            .chain(["interactions"].iter())
            .map(|s| s.to_string())
            .collect();
        let (ctx, found, versions) = crate::mart::session::mart_session(lake, &names)
            .await
            .map_err(|e| DataError::Lake(e.to_string()))?;
        for m in MARTS {
            if !found.iter().any(|f| f == &format!("mart.{m}")) {
                return Err(DataError::Lake(format!(
                    "mart.{m} does not exist yet (run `hoffrec mart run` first)"
                )));
            }
        }
        Ok(Self { ctx, found, versions })
    }

    /// The marts as they were at the versions given (each of `MARTS` must be there).
    pub async fn open_at(lake: &LakeUrl, at: &crate::mart::session::MartVersions) -> Result<Self, DataError> {
        for m in MARTS {
            if !at.contains_key(m) {
                return Err(DataError::Lake(format!("mart.{m} had no version then")));
            }
        }
        let ctx = crate::mart::session::mart_session_at(lake, at)
            .await
            .map_err(|e| DataError::Lake(e.to_string()))?;
        Ok(Self {
            ctx,
            found: at.keys().map(|m| format!("mart.{m}")).collect(),
            versions: at.clone(),
        })
    }

    /// Whether `mart.<name>` exists (the interactions appear only once something was shown).
    pub fn has(&self, name: &str) -> bool {
        self.found.iter().any(|f| f == &format!("mart.{name}"))
    }

    pub async fn rows<T: DeserializeOwned>(&self, query: &str) -> Result<Vec<T>, DataError> {
        rows(&self.ctx, query).await
    }

    pub async fn catalogue(&self) -> Result<CatalogueView, DataError> {
        let mut products: Vec<Product> = self
            .rows("SELECT * FROM mart.product_features ORDER BY product_id")
            .await?;
        let by_id: HashMap<String, usize> = products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.product_id.clone(), i))
            .collect();
        let uptake: Vec<Uptake> = self
            .rows(
                "WITH n AS (SELECT max(greatest(coalesce(last_viewed_ms, 0), coalesce(last_purchased_ms, 0))) \
                            AS newest FROM mart.customer_product) \
                 SELECT cp.product_id, \
                   sum(CASE WHEN cp.last_purchased_ms >= n.newest - 604800000 THEN 1 ELSE 0 END) AS buyers_7d, \
                   sum(CASE WHEN cp.first_bought_ms >= n.newest - 2419200000 THEN 1 ELSE 0 END) AS new_buyers_28d, \
                   sum(CASE WHEN cp.first_bought_ms >= n.newest - 1209600000 THEN 1 ELSE 0 END) AS new_buyers_14d \
                 FROM mart.customer_product cp CROSS JOIN n WHERE cp.purchased_qty > 0 GROUP BY cp.product_id",
            )
            .await?;
        for u in uptake {
            if let Some(&i) = by_id.get(&u.product_id) {
                let p = &mut products[i];
                (p.buyers_7d, p.new_buyers_28d, p.new_buyers_14d) = (u.buyers_7d, u.new_buyers_28d, u.new_buyers_14d);
            }
        }
        let mut neighbours: HashMap<String, Vec<Neighbour>> = HashMap::new();
        let rows: Vec<Neighbour> = self
            .rows("SELECT * FROM mart.product_neighbour ORDER BY product_id, neighbour_rank")
            .await?;
        for n in rows {
            neighbours.entry(n.product_id.clone()).or_default().push(n);
        }
        Ok(CatalogueView {
            products,
            by_id,
            neighbours,
            collab: None,
        })
    }

    /// The customers asked for that have a portrait, in no particular order.
    pub async fn customers(&self, ids: &[String]) -> Result<Vec<Customer>, DataError> {
        self.customers_with(ids, true).await
    }

    /// `customers`, with their newest lists (`shown`) read only when `feedback` is set: the
    /// training set brings its own, over a longer window.
    pub async fn customers_with(&self, ids: &[String], feedback: bool) -> Result<Vec<Customer>, DataError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids
            .iter()
            .map(|id| format!("'{}'", id.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        // Four small reads of separate tables: at once, they cost the slowest, not the sum.
        let portrait_q = format!("SELECT * FROM mart.customer_portrait WHERE customer_id IN ({list})");
        let touched_q = format!("SELECT * FROM mart.customer_product WHERE customer_id IN ({list})");
        let departments_q = format!("SELECT * FROM mart.customer_category WHERE customer_id IN ({list})");
        let shown_q = format!(
            "SELECT * FROM mart.interactions WHERE customer_id IN ({list}) \
             AND shown_ms >= (SELECT max(shown_ms) FROM mart.interactions) - {} \
             ORDER BY shown_ms, list_id, position",
            FEEDBACK_DAYS * 86_400_000
        );
        #[derive(Deserialize)]
        struct Shown {
            customer_id: String,
            #[serde(flatten)]
            exposure: Exposure,
        }
        let shown = async {
            match feedback && self.has("interactions") {
                true => self.rows::<Shown>(&shown_q).await,
                false => Ok(Vec::new()),
            }
        };
        let (portraits, touched, departments, shown) = tokio::try_join!(
            self.rows::<Portrait>(&portrait_q),
            self.rows::<Touched>(&touched_q),
            self.rows::<Department>(&departments_q),
            shown
        )?;
        let mut out: HashMap<String, Customer> = portraits
            .into_iter()
            .map(|p| {
                (
                    p.customer_id.clone(),
                    Customer {
                        portrait: p,
                        ..Default::default()
                    },
                )
            })
            .collect();
        for t in touched {
            if let Some(c) = out.get_mut(&t.customer_id) {
                c.touched.push(t);
            }
        }
        for d in departments {
            if let Some(c) = out.get_mut(&d.customer_id) {
                c.departments.push(d);
            }
        }
        for r in shown {
            if let Some(c) = out.get_mut(&r.customer_id) {
                c.shown.push(r.exposure);
            }
        }
        Ok(out.into_values().collect())
    }
}
