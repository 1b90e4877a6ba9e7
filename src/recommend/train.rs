//! `hoffrec train`: the ranker learns only from exposure: a product shown to a customer is
//! a positive if they reacted and a negative if they ignored it; products never shown are
//! not in the training set at all. smartcore fits no model incrementally, so each run refits
//! on a sliding window of the newest interactions, validates on the newest slice, and
//! promotes the new model only if it is not worse there than the current one.

use super::collab::{self, Ease};
use super::data::{Customer, Marts};
use super::metrics::{auc, ndcg_at};
use super::model::{FEATURES, Model};
use super::{RecommendError, Recommender, store};
use crate::mart::session::MartVersions;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One exposure: what was shown, to whom, whether they reacted, and the features.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingRow {
    pub customer_id: String,
    pub list_id: String,
    pub product_id: String,
    pub shown_ms: i64,
    pub label: i32,
    /// Where in the list it was shown (0 first), and how likely the policy was to show it
    /// (1 where the list was the ranker's own top, less in exploration slots).
    pub position: i64,
    pub propensity: f64,
    pub x: [f64; FEATURES.len()],
    /// The novel head's input, on next-purchase rows of never-bought products.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<super::novel::NovelX>,
}

#[derive(Debug, Clone, Deserialize)]
struct Interaction {
    customer_id: String,
    #[serde(flatten)]
    exposure: super::data::Exposure,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub rows: usize,
    pub positives: usize,
    pub validation_rows: usize,
    pub candidate: Model,
    pub current_version: String,
    pub current_auc: Option<f64>,
    pub current_ndcg_at_10: Option<f64>,
    pub promoted: bool,
    /// The EASE model refitted on this run, which candidates now come from.
    pub collab_version: Option<String>,
    /// What labelled the rows: `exposure` (shown and reacted or ignored) or
    /// `next_purchase` (listable then, bought since or not).
    pub labels: String,
    /// The decay of attention over list positions the weights corrected for, and the
    /// Newton steps the fit took from the model in use.
    pub position_decay: Option<f64>,
    pub newton_iterations: usize,
}

/// The exposure-labelled training set over the newest `window_days` of interactions; each
/// row's feedback features count the lists shown to its customer before its own.
pub async fn training_set(r: &Recommender, window_days: u32) -> Result<Vec<TrainingRow>, RecommendError> {
    let marts = Marts::open(&r.lake).await?;
    let day_ms = 86_400_000;
    let window_ms = i64::from(window_days) * day_ms;
    let history_ms = window_ms + super::data::FEEDBACK_DAYS * day_ms;
    let shown: Vec<Interaction> = marts
        .rows(&format!(
            "SELECT * FROM mart.interactions \
             WHERE shown_ms >= (SELECT max(shown_ms) FROM mart.interactions) - {history_ms} \
             ORDER BY shown_ms, list_id, position"
        ))
        .await?;
    let Some(newest) = shown.iter().map(|i| i.exposure.shown_ms).max() else {
        return Ok(Vec::new());
    };
    let catalogue = marts.catalogue().await?;
    let mut by_customer: BTreeMap<&str, Vec<&super::data::Exposure>> = BTreeMap::new();
    for i in &shown {
        by_customer.entry(i.customer_id.as_str()).or_default().push(&i.exposure);
    }
    let ids: Vec<String> = by_customer.keys().map(|s| s.to_string()).collect();
    let mut customers: HashMap<String, Customer> = HashMap::new();
    for chunk in ids.chunks(1_000) {
        for c in marts.customers_with(chunk, false).await? {
            customers.insert(c.portrait.customer_id.clone(), c);
        }
    }
    let mut rows = Vec::with_capacity(shown.len());
    for (customer, history) in by_customer {
        let Some(c) = customers.get_mut(customer) else { continue };
        // Everything shown in the window and the feedback days before it, not only the
        // newest days that ranking reads.
        c.shown = history.iter().map(|e| (*e).clone()).collect();
        let items: Vec<&super::data::Exposure> = history
            .into_iter()
            .filter(|e| e.shown_ms >= newest - window_ms)
            .collect();
        let at: Vec<(&str, i64)> = items.iter().map(|e| (e.product_id.as_str(), e.shown_ms)).collect();
        let xs = super::rank::features_of(c, &catalogue, &r.rules, &at);
        for (e, x) in items.into_iter().zip(xs) {
            // A product that left the catalogue has no features to learn from.
            let Some(x) = x else { continue };
            rows.push(TrainingRow {
                customer_id: customer.to_string(),
                list_id: e.list_id.clone(),
                product_id: e.product_id.clone(),
                shown_ms: e.shown_ms,
                label: i32::from(e.label > 0),
                position: e.position,
                propensity: e.propensity.unwrap_or(1.0),
                x,
                z: None,
            });
        }
    }
    rows.sort_by(|a, b| a.shown_ms.cmp(&b.shown_ms).then(a.list_id.cmp(&b.list_id)));
    Ok(rows)
}

/// How a fit weighs its rows and where it starts.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// Cap on each row's inverse-propensity and position weight (see the config); 1 or
    /// less weighs every row alike.
    pub max_weight: f64,
    /// The model in use, to start from (a warm start).
    pub start: Option<Model>,
}

/// A fitted candidate and what the fit found out on the way.
#[derive(Debug, Clone)]
pub struct Fit {
    pub model: Model,
    pub validation_rows: usize,
    /// How much less often position p is looked at than the top: `decay^p`, fitted on the
    /// exploration slots' reactions (none while they hold too few).
    pub position_decay: Option<f64>,
    pub newton_iterations: usize,
}

/// Reactions in exploration slots needed before their decay over positions is trusted.
const MIN_EXPLORED_REACTIONS: usize = 30;

/// Fits on all but the newest `validation_share` of rows, scores on the newest. Each row
/// weighs 1 / propensity (what exploration drew stands for all it could have drawn) and a
/// reaction also 1 / decay^position (a reaction low in a list is worth more than at the
/// top), each capped at `max_weight`.
pub fn fit(rows: &[TrainingRow], validation_share: f64, version: String, options: &FitOptions) -> Result<Fit, String> {
    let cut = ((rows.len() as f64) * (1.0 - validation_share)).round() as usize;
    let (train, valid) = rows.split_at(cut.min(rows.len()));
    let positives = train.iter().filter(|r| r.label == 1).count();
    if positives == 0 || positives == train.len() {
        return Err(format!(
            "the training window needs both reacted and ignored exposures ({positives} of {} reacted)",
            train.len()
        ));
    }
    let weighted = options.max_weight > 1.0;
    let explored: Vec<(i64, i32)> = train
        .iter()
        .filter(|r| r.propensity < 1.0)
        .map(|r| (r.position, r.label))
        .collect();
    let decay = if weighted {
        super::fit::position_decay(&explored, MIN_EXPLORED_REACTIONS)
    } else {
        None
    };
    let cap = options.max_weight.max(1.0);
    let w: Vec<f64> = train
        .iter()
        .map(|r| {
            if !weighted {
                return 1.0;
            }
            let policy = (1.0 / r.propensity.clamp(1e-9, 1.0)).min(cap);
            let looked = match decay {
                Some(g) if r.label == 1 => (1.0 / g.powi(r.position.clamp(0, 64) as i32)).min(cap),
                _ => 1.0,
            };
            policy * looked
        })
        .collect();
    let x: Vec<&[f64]> = train.iter().map(|r| r.x.as_slice()).collect();
    let y: Vec<i32> = train.iter().map(|r| r.label).collect();
    let start = options.start.as_ref().map(|m| (m.weights.as_slice(), m.bias));
    let fitted = super::fit::logistic(&x, &y, &w, 1.0, start)?;
    let mut model = Model {
        version,
        weights: fitted.weights,
        bias: fitted.bias,
        auc: None,
        ndcg_at_10: None,
        trained_rows: train.len() as u64,
        novel: None,
    };
    let (auc, ndcg) = evaluate(&model, valid);
    model.auc = auc;
    model.ndcg_at_10 = ndcg;
    Ok(Fit {
        model,
        validation_rows: valid.len(),
        position_decay: decay,
        newton_iterations: fitted.iterations,
    })
}

/// AUC over all rows, and NDCG@10 averaged over lists (shown products re-ranked by score).
pub fn evaluate(model: &Model, rows: &[TrainingRow]) -> (Option<f64>, Option<f64>) {
    let scored: Vec<(f64, i32)> = rows.iter().map(|r| (model.score(&r.x), r.label)).collect();
    let mut lists: BTreeMap<&str, Vec<(f64, i32)>> = BTreeMap::new();
    for (r, s) in rows.iter().zip(&scored) {
        lists.entry(r.list_id.as_str()).or_default().push(*s);
    }
    let ndcgs: Vec<f64> = lists.into_values().filter_map(|l| ndcg_at(l, 10)).collect();
    let ndcg = (!ndcgs.is_empty()).then(|| ndcgs.iter().sum::<f64>() / ndcgs.len() as f64);
    (auc(&scored), ndcg)
}

/// One row of `mart.customer_product`, as the collaborative model reads it.
#[derive(Debug, Clone, Deserialize)]
struct Dealt {
    customer_id: String,
    product_id: String,
    views: Option<i64>,
    carts: Option<i64>,
    purchased_qty: Option<f64>,
    purchase_orders: Option<i64>,
    last_ms: Option<i64>,
}

/// What customers did with products in the newest `window_days` of these marts (views,
/// carts, purchases by `collab::interest`), as the collaborative models read it.
async fn collab_interactions(marts: &Marts, window_days: u32) -> Result<collab::Interactions, RecommendError> {
    let window_ms = i64::from(window_days) * 86_400_000;
    let rows: Vec<Dealt> = marts
        .rows(&format!(
            "WITH t AS (SELECT customer_id, product_id, views, carts, purchased_qty, purchase_orders, \
                        greatest(coalesce(last_viewed_ms, 0), coalesce(last_purchased_ms, 0)) AS last_ms \
                        FROM mart.customer_product) \
             SELECT * FROM t WHERE last_ms >= (SELECT max(last_ms) FROM t) - {window_ms} \
             ORDER BY customer_id, product_id"
        ))
        .await?;
    let newest = rows.iter().filter_map(|d| d.last_ms).max().unwrap_or_default();
    let cells: Vec<(&str, &str, f64)> = rows
        .iter()
        .map(|d| {
            let age_days = (newest - d.last_ms.unwrap_or(newest)) as f64 / 86_400_000.0;
            let w = collab::interest(
                d.views.unwrap_or(0),
                d.carts.unwrap_or(0),
                d.purchase_orders
                    .unwrap_or(0)
                    .max(i64::from(d.purchased_qty.unwrap_or(0.0) > 0.0)),
                age_days,
            );
            (d.customer_id.as_str(), d.product_id.as_str(), w)
        })
        .collect();
    Ok(collab::Interactions::from_cells(cells))
}

/// EASE, and ALS beside it (`als_factors` > 0), over these marts' window; `None` while no
/// customer has touched a product.
async fn ease_of(r: &Recommender, marts: &Marts, window_days: u32) -> Result<Option<Ease>, RecommendError> {
    let x = collab_interactions(marts, window_days).await?;
    if x.items.is_empty() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let mut ease =
        Ease::fit(&x, r.ease_lambda, r.ease_max_items).map_err(|e| RecommendError::Config(format!("EASE: {e}")))?;
    ease.version = format!("ease{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let ease_ms = started.elapsed().as_millis() as u64;
    let started = std::time::Instant::now();
    if r.als_factors > 0 {
        let params = collab::AlsParams {
            factors: r.als_factors,
            ..Default::default()
        };
        ease.als = Some(collab::Als::fit(&x, params).map_err(|e| RecommendError::Config(format!("ALS: {e}")))?);
    }
    tracing::info!(
        version = %ease.version,
        products = x.items.len(),
        customers = x.rows.len(),
        ease_ms,
        als_ms = started.elapsed().as_millis() as u64,
        "EASE and ALS fitted"
    );
    Ok(Some(ease))
}

/// Refits EASE and ALS on the newest `window_days` of the marts and makes them the ones
/// candidates come from. `None` while no customer has touched a product.
pub async fn fit_collab(r: &Recommender, window_days: u32) -> Result<Option<Ease>, RecommendError> {
    let marts = Marts::open(&r.lake).await?;
    let ease = ease_of(r, &marts, window_days).await?;
    if let Some(e) = &ease {
        store::promote_ease(&r.lake, e).await?;
    }
    Ok(ease)
}

#[derive(Debug, Clone, Deserialize)]
struct Bought {
    customer_id: String,
    product_id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Newest {
    newest_ms: Option<i64>,
}

/// Next-purchase rows, for a log without exposures: `then` (the marts as they were
/// earlier) gives each customer the candidates ranking would have listed and their
/// features, with an EASE fitted on `then` alone; a candidate is a positive if `now` shows
/// it bought after everything `then` knew, a negative otherwise. Customers who bought
/// nothing since give no rows.
pub async fn next_purchase_set(
    r: &Recommender,
    then: &Marts,
    now: &Marts,
    window_days: u32,
) -> Result<Vec<TrainingRow>, RecommendError> {
    let newest: Vec<Newest> = then
        .rows(
            "SELECT max(greatest(coalesce(last_viewed_ms, 0), coalesce(last_purchased_ms, 0))) AS newest_ms \
             FROM mart.customer_product",
        )
        .await?;
    let Some(cutoff) = newest.first().and_then(|n| n.newest_ms) else {
        return Ok(Vec::new());
    };
    let after: Vec<Bought> = now
        .rows(&format!(
            "SELECT customer_id, product_id FROM mart.customer_product WHERE last_purchased_ms > {cutoff}"
        ))
        .await?;
    let mut bought: BTreeMap<&str, std::collections::HashSet<&str>> = BTreeMap::new();
    for b in &after {
        bought
            .entry(b.customer_id.as_str())
            .or_default()
            .insert(b.product_id.as_str());
    }
    let mut catalogue = then.catalogue().await?;
    if let Some(ease) = ease_of(r, then, window_days).await? {
        catalogue.collab = Some(std::sync::Arc::new(super::data::CollabView::new(
            ease,
            &catalogue.by_id,
        )));
    }
    let ids: Vec<String> = bought.keys().map(|s| s.to_string()).collect();
    let mut rows = Vec::new();
    for chunk in ids.chunks(1_000) {
        let mut customers = then.customers(chunk).await?;
        customers.sort_by(|a, b| a.portrait.customer_id.cmp(&b.portrait.customer_id));
        for c in customers {
            let id = c.portrait.customer_id.as_str();
            let Some(next) = bought.get(id) else { continue };
            for l in super::rank::listable(&c, &catalogue, &r.rules) {
                rows.push(TrainingRow {
                    customer_id: id.to_string(),
                    list_id: id.to_string(),
                    position: 0,
                    propensity: 1.0,
                    label: i32::from(next.contains(l.product_id.as_str())),
                    product_id: l.product_id,
                    shown_ms: cutoff,
                    x: l.x,
                    z: l.z,
                });
            }
        }
    }
    Ok(rows)
}

/// Whether rows hold both reacted and ignored examples.
fn both_labels(rows: &[TrainingRow]) -> bool {
    rows.iter().any(|r| r.label == 1) && rows.iter().any(|r| r.label == 0)
}

/// Builds the set, fits, compares with the current model on the same newest slice, and
/// promotes the new model if its AUC there is not worse.
pub async fn train_once(
    r: &Recommender,
    window_days: u32,
    validation_share: f64,
) -> Result<TrainReport, RecommendError> {
    train_once_at(r, window_days, validation_share, None).await
}

/// The marts' versions `f` label horizons ago for f = 1..=`novel_cutoffs`, newest first,
/// by commit time; a lake younger than a cutoff gives fewer.
async fn snapshots(r: &Recommender) -> Result<Vec<MartVersions>, RecommendError> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for f in 1..=i64::from(r.novel_cutoffs.max(1)) {
        let at = now - f * i64::from(r.label_horizon_days) * 86_400_000;
        let v = crate::mart::session::mart_versions_at(&r.lake, &super::data::MARTS, at)
            .await
            .map_err(|e| RecommendError::Config(e.to_string()))?;
        if v.is_empty() && f > 1 {
            break;
        }
        out.push(v);
    }
    Ok(out)
}

/// `train_once`, with the marts' earlier versions for next-purchase labels given, newest
/// first (an offline evaluation folds its log in steps), instead of read a horizon apart
/// by commit time.
pub async fn train_once_at(
    r: &Recommender,
    window_days: u32,
    validation_share: f64,
    thens: Option<Vec<MartVersions>>,
) -> Result<TrainReport, RecommendError> {
    // The collaborative model needs no exposures: it is refitted even when the ranker
    // has nothing to learn from yet.
    let collab_version = fit_collab(r, window_days).await?.map(|e| e.version);
    let mut rows = training_set(r, window_days).await?;
    let mut labels = "exposure";
    // Never-bought rows of older snapshots: only the novel head learns from them.
    let mut older: Vec<TrainingRow> = Vec::new();
    if !both_labels(&rows) {
        let thens = match thens {
            Some(v) => v,
            None => snapshots(r).await?,
        };
        let now = Marts::open(&r.lake).await?;
        rows = Vec::new();
        for (i, then) in thens.iter().enumerate() {
            let earlier = Marts::open_at(&r.lake, then)
                .await
                .map_err(|e| RecommendError::Config(format!("next-purchase labels: {e}")))?;
            let set = next_purchase_set(r, &earlier, &now, window_days).await?;
            if i == 0 {
                rows = set;
            } else {
                older.extend(set.into_iter().filter(|r| r.z.is_some()));
            }
        }
        labels = "next_purchase";
    }
    let version = format!("m{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let current = store::current(&r.lake).await?.unwrap_or_else(Model::prior);
    // The prior's hand-set weights are no start for a fit; a trained model is.
    let options = FitOptions {
        max_weight: r.max_ips_weight,
        start: (current.trained_rows > 0).then(|| current.clone()),
    };
    let fitted = fit(&rows, validation_share, version, &options)
        .map_err(|e| RecommendError::Config(format!("training: {e}")))?;
    let (mut candidate, validation_rows) = (fitted.model, fitted.validation_rows);
    let novel: Vec<(&str, i32, super::novel::NovelX)> = rows
        .iter()
        .chain(&older)
        .filter_map(|r| Some((r.customer_id.as_str(), r.label, r.z?)))
        .collect();
    candidate.novel = super::novel::fit(&novel).map_err(|e| RecommendError::Config(format!("novel head: {e}")))?;
    if let Some(head) = candidate.novel.as_mut() {
        let newest: Vec<_> = rows
            .iter()
            .filter_map(|r| Some((r.customer_id.as_str(), r.label, r.z?)))
            .collect();
        head.calibrate(&newest);
    }
    let valid = &rows[rows.len() - validation_rows..];
    let (current_auc, current_ndcg) = evaluate(&current, valid);
    let promoted = match (candidate.auc, current_auc) {
        (Some(new), Some(old)) => new >= old,
        (Some(_), None) => true,
        (None, _) => false,
    };
    store::save(&r.lake, &candidate).await?;
    if promoted {
        store::promote(&r.lake, &candidate).await?;
    }
    tracing::info!(
        version = %candidate.version,
        auc = ?candidate.auc,
        current = ?current_auc,
        promoted,
        newton_iterations = fitted.newton_iterations,
        position_decay = ?fitted.position_decay,
        "model trained"
    );
    Ok(TrainReport {
        rows: rows.len(),
        positives: rows.iter().filter(|r| r.label == 1).count(),
        validation_rows,
        candidate,
        current_version: current.version,
        current_auc,
        current_ndcg_at_10: current_ndcg,
        promoted,
        collab_version,
        labels: labels.to_string(),
        position_decay: fitted.position_decay,
        newton_iterations: fitted.newton_iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_ndcg_on_known_cases() {
        assert_eq!(auc(&[(0.9, 1), (0.1, 0)]), Some(1.0));
        assert_eq!(auc(&[(0.1, 1), (0.9, 0)]), Some(0.0));
        assert_eq!(auc(&[(0.5, 1), (0.5, 0)]), Some(0.5));
        assert_eq!(auc(&[(0.5, 1)]), None);
        assert_eq!(ndcg_at(vec![(0.9, 1), (0.1, 0)], 10), Some(1.0));
        let worst = ndcg_at(vec![(0.1, 1), (0.9, 0)], 10).unwrap();
        assert!((worst - 1.0 / 3f64.log2()).abs() < 1e-12);
    }

    #[test]
    fn the_model_learns_which_evidence_predicts_reactions() {
        // Reactions follow the neighbour signal; popularity is noise.
        let rows: Vec<TrainingRow> = (0..400)
            .map(|i| {
                let mut x = [0.0; FEATURES.len()];
                x[0] = f64::from(i % 2);
                x[5] = f64::from((i / 2) % 2);
                TrainingRow {
                    customer_id: format!("c{i}"),
                    list_id: format!("l{}", i / 4),
                    product_id: format!("p{i}"),
                    shown_ms: i64::from(i),
                    label: i % 2,
                    position: 0,
                    propensity: 1.0,
                    x,
                    z: None,
                }
            })
            .collect();
        let f = fit(&rows, 0.2, "t".into(), &FitOptions::default()).unwrap();
        let (m, valid) = (f.model, f.validation_rows);
        assert_eq!(valid, 80);
        assert!(m.weights[0] > m.weights[5].abs(), "{:?}", m.weights);
        assert_eq!(m.auc, Some(1.0));
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainSummary {
    pub runs: u64,
    pub promoted: u64,
    pub skipped_no_new_interactions: u64,
    pub failed: u64,
}

/// Retrains every `recommend.train_interval_ms` when the interactions mart has new
/// commits; a window without both kinds of exposure is logged and waited out.
pub async fn run(
    config: &crate::config::Config,
    telemetry: &crate::telemetry::Telemetry,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<TrainSummary, RecommendError> {
    let r = Recommender::load(config)?;
    let rc = &config.recommend;
    let mut summary = TrainSummary::default();
    let mut seen: Option<u64> = None;
    telemetry.set_ready(true);
    loop {
        let interactions = crate::mart::tables::MartTable::open(&r.lake, "interactions")
            .await
            .map_err(|e| RecommendError::Config(e.to_string()))?;
        let version = interactions.version();
        if version.is_some() && version != seen {
            summary.runs += 1;
            match train_once(&r, rc.train_window_days, rc.train_validation_share).await {
                Ok(report) => {
                    seen = version;
                    summary.promoted += u64::from(report.promoted);
                }
                Err(RecommendError::Config(e)) => {
                    tracing::warn!(error = %e, "not trained this time");
                    summary.failed += 1;
                }
                Err(e) => return Err(e),
            }
        } else {
            summary.skipped_no_new_interactions += 1;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_millis(rc.train_interval_ms)) => {}
        }
    }
    telemetry.set_ready(false);
    Ok(summary)
}
