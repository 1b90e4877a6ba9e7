//! One customer's list: candidates with the reasons they were proposed, the business
//! rules that remove or reorder them, the ranker's score, and the top K. The same code
//! serves `recommend` and `explain`, so what a marketer reads is what the site got.

use super::collab;
use super::data::{CatalogueView, Customer, Product};
use super::feedback::Feedback;
use super::model::{FEATURES, Model};
use super::novel::NovelX;
use super::policy::{Explore, explore_in};
use super::rules::{Rules, names};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Evidence for one candidate; each field is 0..=1.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Signals {
    pub neighbour: f64,
    pub affinity: f64,
    pub complement: f64,
    pub lifecycle: f64,
    pub repeat: f64,
    pub popular: f64,
    /// The collaborative model's score, over the customer's best-scored product.
    pub collab: f64,
    /// Of the customer's orders, the share this product was in.
    pub bought_share: f64,
    /// How recently they touched it, next to their newest touch (halves every
    /// `RECENCY_HALF_LIFE_DAYS`).
    pub recency: f64,
    /// Item-kNN's score, over the customer's best-scored product.
    pub knn: f64,
    /// EASE and item-kNN over the customer's best never-touched product, and by rank among
    /// the never-touched (1 / log2(rank + 2); 0 outside the `COLLABORATIVE` proposed).
    pub collab_new: f64,
    pub knn_new: f64,
    pub collab_rank: f64,
    pub knn_rank: f64,
    /// Item-kNN over the newest `RECENT_DAYS` of the customer's history only, over its best.
    pub knn_recent: f64,
    /// ALS (the customer folded in) over the customer's best never-touched product, and by
    /// rank among the never-touched, as for EASE.
    pub als_new: f64,
    pub als_rank: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub product_id: String,
    pub name: String,
    pub category_id: String,
    pub top_category: String,
    pub price_tier: i64,
    pub reasons: Vec<String>,
    pub signals: Signals,
    pub model_score: f64,
    pub lifecycle_weight: f64,
    pub tier_weight: f64,
    pub score: f64,
    /// How likely the policy was to put it on the list: 1 for the ranker's own top, the
    /// draw's chance for an exploration slot.
    pub propensity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub customer_id: String,
    pub portrait: super::data::Portrait,
    pub lifecycle_stage: String,
    pub target_tier: i64,
    pub model_version: String,
    /// Rule -> candidates it removed.
    pub rules_applied: BTreeMap<String, usize>,
    pub candidates: usize,
    pub list: Vec<Scored>,
}

#[derive(Default)]
struct Pool {
    reasons: HashMap<usize, Vec<String>>,
    signals: HashMap<usize, Signals>,
}

impl Pool {
    fn add(&mut self, product: usize, reason: String, set: impl Fn(&mut Signals)) {
        let r = self.reasons.entry(product).or_default();
        if !r.contains(&reason) {
            r.push(reason);
        }
        set(self.signals.entry(product).or_default());
    }
}

const SEEDS: usize = 10;
const PER_DEPARTMENT: usize = 15;
/// Products the collaborative model proposes per customer.
const COLLABORATIVE: usize = 50;
/// Products of their own the customer may be offered again, most often bought first.
const BUY_AGAIN: usize = 50;
const RECENCY_HALF_LIFE_DAYS: f64 = 14.0;
/// What the customer is into right now, for `knn_recent`.
const RECENT_DAYS: i64 = 14;

/// Every product proposed for the customer, with why.
fn candidates(c: &Customer, cat: &CatalogueView, rules: &Rules, ctx: &Context) -> Pool {
    let (p, bought) = (&c.portrait, &ctx.bought);
    let mut pool = Pool::default();
    let index = |id: &str| cat.by_id.get(id).copied();
    // Most recent things the customer looked at or bought seed neighbours and complements.
    let mut seeds: Vec<_> = c.touched.iter().collect();
    seeds.sort_by_key(|t| std::cmp::Reverse(t.last_viewed_ms.max(t.last_purchased_ms)));
    for t in seeds.iter().take(SEEDS) {
        for n in cat.neighbours.get(&t.product_id).into_iter().flatten() {
            let Some(i) = index(&n.neighbour_id) else { continue };
            let strength = (2 * n.co_buyers + n.co_viewers) as f64;
            let reason = if n.co_buyers > 0 {
                "bought_together"
            } else {
                "also_viewed"
            };
            pool.add(i, format!("{reason}:{}", t.product_id), |s| {
                s.neighbour = s.neighbour.max(strength / (strength + 2.0))
            });
        }
        let Some(seed) = cat.product(&t.product_id) else {
            continue;
        };
        for wanted in rules.complements_of(seed) {
            for i in (0..cat.products.len()).filter(|&i| names(wanted, &cat.products[i])) {
                pool.add(i, format!("complements:{}", t.product_id), |s| s.complement = 1.0);
            }
        }
    }
    // The customer's departments, by recent views and purchases.
    let weight = |d: &super::data::Department| (d.views_recent + 3 * d.orders) as f64;
    let total: f64 = c.departments.iter().map(weight).sum::<f64>().max(1.0);
    let mut departments: Vec<_> = c.departments.iter().filter(|d| weight(d) > 0.0).collect();
    departments.sort_by(|a, b| {
        weight(b)
            .total_cmp(&weight(a))
            .then(a.top_category.cmp(&b.top_category))
    });
    for d in departments.iter().take(3) {
        let affinity = weight(d) / total;
        let burst = d.top_category == "Ремонт" && p.renovation_burst_flag;
        for i in popular_in(cat, |q| q.top_category == d.top_category, PER_DEPARTMENT) {
            pool.add(i, format!("category_affinity:{}", d.top_category), |s| {
                s.affinity = s.affinity.max(affinity)
            });
            if burst {
                pool.add(i, "renovation_burst".into(), |s| s.affinity = s.affinity.max(0.9));
            }
        }
    }
    // Categories they reacted to in earlier lists.
    for category in ctx.feedback.liked_categories(3) {
        for i in popular_in(cat, |q| q.category_id == category, PER_DEPARTMENT) {
            pool.add(i, format!("reacted_to:{category}"), |_| {});
        }
    }
    // The stage of settling in brings its departments.
    if let Some(weights) = rules.lifecycle.get(&p.lifecycle_stage) {
        for (key, w) in weights.iter().filter(|(_, w)| **w > 1.0) {
            for i in popular_in(cat, |q| names(key, q), PER_DEPARTMENT) {
                pool.add(i, format!("lifecycle:{}", p.lifecycle_stage), |s| {
                    s.lifecycle = (w - 1.0).min(1.0)
                });
                if p.new_homeowner {
                    pool.add(i, "new_homeowner".into(), |_| {});
                }
            }
        }
    }
    // Consumables bought before come back.
    let replenished: HashSet<&str> = bought
        .iter()
        .filter_map(|id| cat.product(id))
        .filter(|q| rules.is_replenished(q))
        .map(|q| q.category_id.as_str())
        .collect();
    for category in replenished {
        for i in popular_in(cat, |q| q.category_id == *category, PER_DEPARTMENT) {
            pool.add(i, "replenish".into(), |s| s.repeat = 1.0);
        }
    }
    // What they keep buying, where rules or data say it comes back; and how recently and
    // how often they touched each of their products, wherever it was proposed from.
    let newest = c
        .touched
        .iter()
        .filter_map(|t| t.last_viewed_ms.max(t.last_purchased_ms))
        .max()
        .unwrap_or_default();
    let orders = p
        .orders
        .max(c.touched.iter().map(|t| t.purchase_orders).max().unwrap_or(0))
        .max(1) as f64;
    let mut again: Vec<(&super::data::Touched, usize)> = c
        .touched
        .iter()
        .filter(|t| t.purchase_orders > 0)
        .filter_map(|t| Some((t, index(&t.product_id)?)))
        .filter(|(_, i)| rules.is_replenished(&cat.products[*i]))
        .collect();
    again.sort_by(|a, b| {
        b.0.purchase_orders
            .cmp(&a.0.purchase_orders)
            .then(b.0.last_purchased_ms.cmp(&a.0.last_purchased_ms))
            .then(a.1.cmp(&b.1))
    });
    for (_, i) in again.into_iter().take(BUY_AGAIN) {
        pool.add(i, "buy_again".into(), |_| {});
    }
    for i in popular_in(cat, |_| true, 30) {
        pool.add(i, "popular".into(), |s| s.popular = 1.0);
    }
    for t in &c.touched {
        let Some(s) = index(&t.product_id).and_then(|i| pool.signals.get_mut(&i)) else {
            continue;
        };
        let age_days = (newest - t.last_viewed_ms.max(t.last_purchased_ms).unwrap_or(newest)) as f64 / 86_400_000.0;
        s.recency = 0.5f64.powf(age_days.max(0.0) / RECENCY_HALF_LIFE_DAYS);
        s.bought_share = (t.purchase_orders as f64 / orders).min(1.0);
    }
    // What customers with a history like theirs went on to (EASE over the whole history,
    // weighed as it was fitted); every candidate gets its score as evidence.
    if let Some(cf) = cat.collab.as_deref() {
        let mut history: Vec<(u32, f32)> = Vec::new();
        let mut recent: Vec<(u32, f32)> = Vec::new();
        for t in &c.touched {
            let Some(&j) = cf.ease_of.get(&t.product_id) else {
                continue;
            };
            let at = t.last_viewed_ms.max(t.last_purchased_ms).unwrap_or(newest);
            let w = collab::interest(
                t.views,
                t.carts,
                t.purchase_orders.max(i64::from(t.purchased_qty > 0.0)),
                (newest - at) as f64 / 86_400_000.0,
            ) as f32;
            history.push((j, w));
            if at >= newest - RECENT_DAYS * 86_400_000 {
                recent.push((j, w));
            }
        }
        let touched: HashSet<u32> = history.iter().map(|(j, _)| *j).collect();
        // The best overall (often what they already buy) and the best they never touched.
        propose(&mut pool, cat, cf, &cf.ease.scores(&history), &touched, true, |s, v| {
            (s.collab, s.collab_new, s.collab_rank) = (v.over_best, v.over_best_new, v.rank_new)
        });
        // Item-kNN proposes what the customer never touched from the whole catalogue
        // (EASE covers only its `max_items`).
        propose(
            &mut pool,
            cat,
            cf,
            &cf.ease.knn_scores(&history),
            &touched,
            false,
            |s, v| (s.knn, s.knn_new, s.knn_rank) = (v.over_best, v.over_best_new, v.rank_new),
        );
        // ALS proposes by taste over the whole catalogue, beyond what co-occurs.
        if let (Some(als), Some(gram)) = (&cf.ease.als, &cf.als_gram) {
            propose(
                &mut pool,
                cat,
                cf,
                &als.scores_with(gram, &history),
                &touched,
                false,
                |s, v| (s.als_new, s.als_rank) = (v.over_best_new, v.rank_new),
            );
        }
        let recent = cf.ease.knn_scores(&recent);
        let best = recent.iter().copied().fold(0.0f32, f32::max);
        if best > 0.0 {
            for (&i, s) in pool.signals.iter_mut() {
                if let Some(&j) = cf.ease_of.get(&cat.products[i].product_id) {
                    s.knn_recent = f64::from(recent[j as usize].max(0.0) / best);
                }
            }
        }
    }
    pool
}

/// A collaborative score as the features read it.
#[derive(Debug, Clone, Copy)]
struct Proposed {
    over_best: f64,
    over_best_new: f64,
    rank_new: f64,
}

/// Adds the `COLLABORATIVE` best-scored products the customer never touched (and with
/// `best_overall` the best of all) as candidates, then gives every candidate its score
/// over the customer's best through `set`.
fn propose(
    pool: &mut Pool,
    cat: &CatalogueView,
    cf: &super::data::CollabView,
    scores: &[f32],
    touched: &HashSet<u32>,
    best_overall: bool,
    set: impl Fn(&mut Signals, Proposed),
) {
    let best = scores.iter().copied().fold(0.0f32, f32::max);
    if best <= 0.0 {
        return;
    }
    let outside = |j: u32| cf.catalogue_of[j as usize].is_none();
    let new = collab::top(scores, COLLABORATIVE, |j| outside(j) || touched.contains(&j));
    let best_new = new.first().map_or(0.0, |&j| scores[j as usize]);
    let rank_new: HashMap<u32, f64> = new
        .iter()
        .enumerate()
        .map(|(r, &j)| (j, 1.0 / ((r + 2) as f64).log2()))
        .collect();
    let mut proposed = new.clone();
    if best_overall {
        proposed.extend(collab::top(scores, COLLABORATIVE, outside));
    }
    for j in proposed {
        if let Some(i) = cf.catalogue_of[j as usize] {
            pool.add(i, "collaborative".into(), |_| {});
        }
    }
    for (&i, s) in pool.signals.iter_mut() {
        if let Some(&j) = cf.ease_of.get(&cat.products[i].product_id) {
            let v = scores[j as usize].max(0.0);
            let over_best_new = if best_new > 0.0 {
                f64::from((v / best_new).min(1.0))
            } else {
                0.0
            };
            set(
                s,
                Proposed {
                    over_best: f64::from(v / best),
                    over_best_new,
                    rank_new: rank_new.get(&j).copied().unwrap_or(0.0),
                },
            );
        }
    }
}

/// What the features and rules need to know about the customer besides the candidate.
pub struct Context<'a> {
    bought: HashSet<&'a str>,
    bought_categories: HashSet<&'a str>,
    viewed: HashSet<&'a str>,
    target: i64,
    max_reach: f64,
    /// ln(1 + products bought) / ln(201): 0 for a new customer, 1 at 200 products.
    history: f64,
    /// What they did with every list shown to them so far.
    feedback: Feedback<'a>,
}

impl<'a> Context<'a> {
    pub fn new(c: &'a Customer, cat: &'a CatalogueView, rules: &Rules) -> Self {
        Self::before(c, cat, rules, None)
    }

    /// The context of a list shown at `before_ms` (`None`: now): only earlier lists count
    /// as feedback.
    fn before(c: &'a Customer, cat: &'a CatalogueView, rules: &Rules, before_ms: Option<i64>) -> Self {
        let bought: HashSet<&str> = c
            .touched
            .iter()
            .filter(|t| t.purchased_qty > 0.0)
            .map(|t| t.product_id.as_str())
            .collect();
        let bought_count = bought.len();
        let bought_categories = bought
            .iter()
            .filter_map(|id| cat.product(id))
            .map(|q| q.category_id.as_str())
            .collect();
        Self {
            bought,
            bought_categories,
            viewed: c
                .touched
                .iter()
                .filter(|t| t.views > 0)
                .map(|t| t.product_id.as_str())
                .collect(),
            target: rules.target_tier(&c.portrait),
            max_reach: cat.products.iter().map(Product::reach).max().unwrap_or(0).max(1) as f64,
            history: (1.0 + bought_count as f64).ln() / 201f64.ln(),
            feedback: Feedback::of(c, cat, before_ms),
        }
    }
}

fn popularity(q: &Product, ctx: &Context) -> f64 {
    (1.0 + q.reach() as f64).ln() / (1.0 + ctx.max_reach).ln()
}

/// The novel head's input for a candidate the customer never bought, in
/// `novel::NOVEL_FEATURES` order; `None` for one they did.
pub fn novel_features(q: &Product, s: &Signals, ctx: &Context) -> Option<NovelX> {
    let id = q.product_id.as_str();
    if ctx.bought.contains(id) {
        return None;
    }
    let ln = |n: i64| (1.0 + n.max(0) as f64).ln();
    let (popularity, history) = (popularity(q, ctx), ctx.history);
    Some([
        s.knn_new,
        s.collab_new,
        s.knn_rank,
        s.collab_rank,
        s.knn_recent,
        popularity,
        ln(q.buyers_7d),
        ln(q.new_buyers_28d),
        ln(q.new_buyers_14d),
        history,
        history * s.knn_new,
        history * s.collab_new,
        history * popularity,
        s.neighbour,
        s.affinity,
        f64::from(ctx.viewed.contains(id)),
        s.als_new,
        s.als_rank,
        history * s.als_new,
    ])
}

/// The ranker's score: the novel head's for a never-bought candidate when the model has
/// one, the main model's otherwise.
fn score(model: &Model, x: &[f64; FEATURES.len()], z: Option<&NovelX>) -> f64 {
    match (&model.novel, z) {
        (Some(head), Some(z)) => head.score(z),
        _ => model.score(x),
    }
}

/// The ranker's input for one candidate, in `model::FEATURES` order.
pub fn features(q: &Product, s: &Signals, ctx: &Context) -> [f64; FEATURES.len()] {
    let popularity = popularity(q, ctx);
    let novel = f64::from(!ctx.bought.contains(q.product_id.as_str()));
    let [category_reacted, category_ignored, shown_reacted, shown_ignored] = ctx.feedback.values(q);
    [
        s.neighbour,
        s.affinity,
        s.complement,
        s.lifecycle,
        s.repeat,
        s.popular,
        popularity,
        q.conversion,
        (q.trend / 3.0).min(1.0),
        f64::from(q.price_tier == ctx.target),
        f64::from(ctx.viewed.contains(q.product_id.as_str())),
        s.collab,
        s.bought_share,
        s.recency,
        q.repeat_share,
        novel,
        novel * s.collab,
        novel * popularity,
        s.knn,
        novel * s.knn,
        category_reacted,
        category_ignored,
        shown_reacted,
        shown_ignored,
    ]
}

/// Features of the given products for a customer, each as ranking computed them for the
/// list it was shown in: products first touched since, and lists shown since, do not
/// count (products no candidate source proposed get no evidence, only their own
/// features); `None` for ids not in the catalogue. The training set uses this so training
/// and serving agree. Rows of one list share their `shown_ms` and should be adjacent.
pub fn features_of(
    c: &Customer,
    cat: &CatalogueView,
    rules: &Rules,
    shown: &[(&str, i64)],
) -> Vec<Option<[f64; FEATURES.len()]>> {
    let mut out = Vec::with_capacity(shown.len());
    for group in shown.chunk_by(|a, b| a.1 == b.1) {
        let at = group[0].1;
        let then = c.before(at);
        let ctx = Context::before(&then, cat, rules, Some(at));
        let pool = candidates(&then, cat, rules, &ctx);
        for (id, _) in group {
            out.push(cat.by_id.get(*id).map(|&i| {
                let s = pool.signals.get(&i).copied().unwrap_or_default();
                features(&cat.products[i], &s, &ctx)
            }));
        }
    }
    out
}

/// Why the rules keep a candidate off the customer's list, if they do.
fn removed_by(q: &Product, ctx: &Context, exclusions: &[&super::rules::Exclude], rules: &Rules) -> Option<String> {
    if !q.available {
        Some("unavailable".to_string())
    } else if let Some(e) = exclusions.iter().find(|e| e.applies_to(q)) {
        Some(e.rule.clone())
    } else if rules.is_durable(q) && ctx.bought_categories.contains(q.category_id.as_str()) {
        Some("durable_already_bought".to_string())
    } else if ctx.bought.contains(q.product_id.as_str()) && !rules.is_replenished(q) {
        Some("already_bought".to_string())
    } else {
        None
    }
}

/// A candidate the rules let onto the list, with what the ranker reads of it.
pub struct Listed {
    pub product_id: String,
    pub x: [f64; FEATURES.len()],
    /// The novel head's input, for a product the customer never bought.
    pub z: Option<NovelX>,
}

/// Every candidate the rules let onto the customer's list, with the ranker's features:
/// what ranking scores, so a ranker trained on these rows learns what it will be asked.
pub fn listable(c: &Customer, cat: &CatalogueView, rules: &Rules) -> Vec<Listed> {
    let ctx = Context::new(c, cat, rules);
    let pool = candidates(c, cat, rules, &ctx);
    let exclusions = rules.exclusions(&c.portrait);
    let mut out: Vec<Listed> = pool
        .reasons
        .keys()
        .map(|&i| (i, &cat.products[i]))
        .filter(|(_, q)| removed_by(q, &ctx, &exclusions, rules).is_none())
        .map(|(i, q)| {
            let s = pool.signals.get(&i).copied().unwrap_or_default();
            Listed {
                product_id: q.product_id.clone(),
                x: features(q, &s, &ctx),
                z: novel_features(q, &s, &ctx),
            }
        })
        .collect();
    out.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    out
}

/// Ranks the catalogue for one customer; `k` items in the list.
pub fn rank(c: &Customer, cat: &CatalogueView, rules: &Rules, model: &Model, k: usize) -> Explanation {
    rank_exploring(c, cat, rules, model, k, Explore::default(), 0)
}

/// `rank`, with `explore.slots` of the `k` places drawn as `Explore` says; the draw is
/// seeded by `seed`, so a list can be made again.
pub fn rank_exploring(
    c: &Customer,
    cat: &CatalogueView,
    rules: &Rules,
    model: &Model,
    k: usize,
    explore: Explore,
    seed: u64,
) -> Explanation {
    let p = &c.portrait;
    let ctx = Context::new(c, cat, rules);
    let pool = candidates(c, cat, rules, &ctx);
    let candidates = pool.reasons.len();

    // Rules: remove what must not be offered, counting what each rule removed.
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    let exclusions = rules.exclusions(p);
    let target = ctx.target;
    let mut list: Vec<Scored> = Vec::new();
    for (i, reasons) in pool.reasons {
        let q = &cat.products[i];
        let removed_by = removed_by(q, &ctx, &exclusions, rules);
        if let Some(rule) = removed_by {
            *applied.entry(rule).or_default() += 1;
            continue;
        }
        let s = pool.signals.get(&i).copied().unwrap_or_default();
        let x = features(q, &s, &ctx);
        let model_score = score(model, &x, novel_features(q, &s, &ctx).as_ref());
        let lifecycle_weight = rules.lifecycle_weight(&p.lifecycle_stage, q);
        let tier_weight = rules.tier_weight(target, q.price_tier);
        let mut reasons = reasons;
        if q.price_tier == target {
            reasons.push(format!("price_tier:{target}"));
        }
        list.push(Scored {
            product_id: q.product_id.clone(),
            name: q.name.clone(),
            category_id: q.category_id.clone(),
            top_category: q.top_category.clone(),
            price_tier: q.price_tier,
            reasons,
            signals: s,
            model_score,
            lifecycle_weight,
            tier_weight,
            score: model_score * lifecycle_weight * tier_weight,
            propensity: 1.0,
        });
    }
    if p.lifecycle_stage.is_empty() || !rules.lifecycle.contains_key(&p.lifecycle_stage) {
        applied.entry("no_lifecycle_weights".into()).or_default();
    }
    list.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.product_id.cmp(&b.product_id)));
    explore_in(&mut list, k, explore, seed, |s, propensity| {
        s.propensity = propensity;
        s.reasons.push("explore".into());
    });
    Explanation {
        customer_id: p.customer_id.clone(),
        portrait: p.clone(),
        lifecycle_stage: p.lifecycle_stage.clone(),
        target_tier: target,
        model_version: model.version.clone(),
        rules_applied: applied,
        candidates,
        list,
    }
}

/// The `n` products matching `keep` that reached the most customers, best first.
fn popular_in(cat: &CatalogueView, keep: impl Fn(&super::data::Product) -> bool, n: usize) -> Vec<usize> {
    let mut found: Vec<usize> = (0..cat.products.len()).filter(|&i| keep(&cat.products[i])).collect();
    found.sort_by(|&a, &b| {
        let (p, q) = (&cat.products[a], &cat.products[b]);
        q.reach().cmp(&p.reach()).then(p.product_id.cmp(&q.product_id))
    });
    found.truncate(n);
    found
}

/// The explanation as a marketer reads it.
pub fn render(e: &Explanation) -> String {
    let p = &e.portrait;
    let mut out = format!("Customer {}\n", e.customer_id);
    out.push_str(&format!(
        "  lifecycle: {}   home: {} (new owner: {}, sauna: {}, pool: {})\n",
        p.lifecycle_stage, p.housing_market, p.new_homeowner, p.has_sauna, p.has_pool
    ));
    out.push_str(&format!(
        "  wealth: {}   spend: {}   renovation: {} (burst: {})   undecided: {}   brand loyal: {}\n",
        p.wealth_tier, p.spend_tier, p.renovation_scope, p.renovation_burst_flag, p.undecided_shopper, p.brand_loyal
    ));
    out.push_str(&format!(
        "  aiming at price tier {} of 3; model {}; {} candidates\n",
        e.target_tier, e.model_version, e.candidates
    ));
    out.push_str("Why the portrait says so:\n");
    for (attribute, value, because) in p.evidence() {
        out.push_str(&format!(
            "  {attribute} = {value}\n      {}\n",
            because.unwrap_or("(no evidence recorded: fold the marts again)")
        ));
    }
    out.push_str("Rules applied (candidates removed):\n");
    if e.rules_applied.is_empty() {
        out.push_str("  none\n");
    }
    for (rule, n) in &e.rules_applied {
        out.push_str(&format!("  {rule}: {n}\n"));
    }
    out.push_str("List:\n");
    for (i, s) in e.list.iter().enumerate() {
        out.push_str(&format!(
            "  {:>2}. {:<8} {:<28} {:<10} tier {}  score {:.3} = model {:.3} x lifecycle {:.2} x tier {:.2}\n      because: {}\n",
            i + 1,
            s.product_id,
            s.name,
            s.top_category,
            s.price_tier,
            s.score,
            s.model_score,
            s.lifecycle_weight,
            s.tier_weight,
            s.reasons.join(", ")
        ));
    }
    out
}
