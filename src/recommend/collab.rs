//! Collaborative models learned from what customers did with products: EASE, an
//! item-item model with a closed form (Steck, "Embarrassingly Shallow Autoencoders",
//! 2019), and implicit-feedback ALS (Hu, Koren & Volinsky, 2008). Both read a customer x
//! product matrix of weights (purchases count most, then carts, then views, each decayed by
//! age) and score every product for a customer from their history alone, so a customer
//! that appeared after the fit is scored too (ALS folds them in).
//!
//! How they scale, n products, u customers, z non-zero cells, k factors:
//! - EASE inverts the n x n Gram matrix: O(n^3) time and 8 n^2 bytes while fitting, then
//!   keeps each product's `NEIGHBOURS` strongest weights. It is fitted on the `max_items`
//!   products most customers touched (4000 by default: about 1 GiB and tens of seconds at
//!   the peak); the rest of a 10k-100k catalogue gets no EASE score and is reached by ALS.
//! - ALS costs O(z k^2 + (u + n) k^3) per sweep and O((u + n) k) memory, so it covers the
//!   whole catalogue; a customer is folded in with one k x k solve.

use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, Side};
use std::collections::HashMap;

/// The strongest item-item weights EASE keeps per product.
pub const NEIGHBOURS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum CollabError {
    #[error("nothing to learn from: {0}")]
    Empty(&'static str),
    #[error("the Gram matrix is not positive definite (raise the regularisation)")]
    NotPositiveDefinite,
}

/// Customer x product weights, customers as rows of (product, weight).
#[derive(Debug, Clone, Default)]
pub struct Interactions {
    pub items: Vec<String>,
    pub index: HashMap<String, u32>,
    pub customers: Vec<String>,
    pub rows: Vec<Vec<(u32, f32)>>,
}

impl Interactions {
    /// From (customer, product, weight) cells; repeated cells add up.
    pub fn from_cells<'a>(cells: impl IntoIterator<Item = (&'a str, &'a str, f64)>) -> Self {
        let mut out = Self::default();
        let mut by_customer: HashMap<&str, HashMap<u32, f32>> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for (customer, item, weight) in cells {
            if weight <= 0.0 {
                continue;
            }
            let next = out.items.len() as u32;
            let i = *out.index.entry(item.to_string()).or_insert_with(|| {
                out.items.push(item.to_string());
                next
            });
            let row = by_customer.entry(customer).or_insert_with(|| {
                order.push(customer);
                HashMap::new()
            });
            *row.entry(i).or_default() += weight as f32;
        }
        for customer in order {
            let mut row: Vec<(u32, f32)> = by_customer.remove(customer).unwrap_or_default().into_iter().collect();
            row.sort_unstable_by_key(|(i, _)| *i);
            out.customers.push(customer.to_string());
            out.rows.push(row);
        }
        out
    }

    /// A history in this matrix's product indices (products it does not know are left out).
    pub fn history<'a>(&self, cells: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<(u32, f32)> {
        let mut row: HashMap<u32, f32> = HashMap::new();
        for (item, w) in cells {
            if let Some(&i) = self.index.get(item) {
                *row.entry(i).or_default() += w as f32;
            }
        }
        row.into_iter().collect()
    }
}

/// EASE, kept sparse: for each product the products it points to, strongest first; and
/// beside it item-kNN over the same matrix, which reaches past EASE's `max_items`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Ease {
    #[serde(default)]
    pub version: String,
    pub items: Vec<String>,
    /// Row per product of `Interactions::items`: (product, weight).
    pub weights: Vec<Vec<(u32, f32)>>,
    /// Row per product: its most similar products by cosine over who touched what
    /// (`item_knn`); empty in models fitted before it was kept.
    #[serde(default)]
    pub knn: Vec<Vec<(u32, f32)>>,
    /// Implicit ALS over the same matrix (its product factors in `items` order): it scores
    /// the whole catalogue where EASE keeps only `max_items`, and it ranks products the
    /// customer never touched by taste rather than by co-occurrence. `None` when turned off
    /// (`recommend.als_factors` 0) and in models fitted before it was kept.
    #[serde(default)]
    pub als: Option<Als>,
}

impl Ease {
    /// Fits on the `max_items` products most customers touched, with L2 weight `lambda`.
    pub fn fit(x: &Interactions, lambda: f64, max_items: usize) -> Result<Self, CollabError> {
        let n_all = x.items.len();
        if n_all == 0 {
            return Err(CollabError::Empty("no product has an interaction"));
        }
        let mut reach = vec![0u32; n_all];
        for row in &x.rows {
            for (i, _) in row {
                reach[*i as usize] += 1;
            }
        }
        let mut kept: Vec<u32> = (0..n_all as u32).collect();
        kept.sort_by_key(|&i| (std::cmp::Reverse(reach[i as usize]), i));
        kept.truncate(max_items.max(1));
        let mut dense = vec![u32::MAX; n_all];
        for (d, &i) in kept.iter().enumerate() {
            dense[i as usize] = d as u32;
        }
        let n = kept.len();
        // G = X'X + lambda I over the kept products.
        let mut g = Mat::<f64>::zeros(n, n);
        for row in &x.rows {
            let cells: Vec<(usize, f64)> = row
                .iter()
                .filter(|(i, _)| dense[*i as usize] != u32::MAX)
                .map(|(i, w)| (dense[*i as usize] as usize, f64::from(*w)))
                .collect();
            for &(a, wa) in &cells {
                for &(b, wb) in &cells {
                    g[(a, b)] += wa * wb;
                }
            }
        }
        for d in 0..n {
            g[(d, d)] += lambda;
        }
        let p = g
            .llt(Side::Lower)
            .map_err(|_| CollabError::NotPositiveDefinite)?
            .inverse();
        // B = -P / diag(P) column by column, zero diagonal: row a holds the weights from a.
        let mut weights = vec![Vec::new(); n_all];
        for (a, &ia) in kept.iter().enumerate() {
            let mut row: Vec<(u32, f32)> = (0..n)
                .filter(|&b| b != a)
                .map(|b| (kept[b], (-p[(a, b)] / p[(b, b)]) as f32))
                .filter(|(_, w)| *w > 0.0)
                .collect();
            row.sort_by(|l, r| r.1.total_cmp(&l.1).then(l.0.cmp(&r.0)));
            row.truncate(NEIGHBOURS);
            weights[ia as usize] = row;
        }
        Ok(Self {
            version: String::new(),
            items: x.items.clone(),
            weights,
            knn: item_knn(x),
            als: None,
        })
    }

    /// Item-kNN scores of every product for a history: the summed similarity to what the
    /// customer touched (cosine, as `item_knn` keeps it; the history's weights do not
    /// count, so one strong purchase does not drown the rest).
    pub fn knn_scores(&self, history: &[(u32, f32)]) -> Vec<f32> {
        let mut s = vec![0.0f32; self.items.len()];
        for (i, _) in history {
            for (j, sim) in self.knn.get(*i as usize).into_iter().flatten() {
                s[*j as usize] += sim;
            }
        }
        s
    }

    /// Scores of every product for a history (in the fitted matrix's indices).
    pub fn scores(&self, history: &[(u32, f32)]) -> Vec<f32> {
        let mut s = vec![0.0f32; self.items.len()];
        for (i, w) in history {
            for (j, b) in self.weights.get(*i as usize).into_iter().flatten() {
                s[*j as usize] += w * b;
            }
        }
        s
    }
}

/// Item-kNN with cosine similarity over who touched what, each product keeping its
/// `NEIGHBOURS` most similar: pairs are counted once over every customer's
/// `MAX_HISTORY` strongest products, so the cost is bounded per customer (at most
/// 200 x 200 pairs each), not quadratic in the log.
pub fn item_knn(x: &Interactions) -> Vec<Vec<(u32, f32)>> {
    const MAX_HISTORY: usize = 200;
    let n = x.items.len();
    let mut reach = vec![0f32; n];
    let mut co: Vec<HashMap<u32, f32>> = vec![HashMap::new(); n];
    for row in &x.rows {
        let mut items: Vec<&(u32, f32)> = row.iter().collect();
        items.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        items.truncate(MAX_HISTORY);
        for (a, _) in &items {
            reach[*a as usize] += 1.0;
            for (b, _) in items.iter().filter(|(b, _)| b != a) {
                *co[*a as usize].entry(*b).or_default() += 1.0;
            }
        }
    }
    co.into_iter()
        .enumerate()
        .map(|(a, row)| {
            let mut v: Vec<(u32, f32)> = row
                .into_iter()
                .map(|(b, c)| (b, c / (reach[a] * reach[b as usize]).sqrt()))
                .collect();
            v.sort_by(|l, r| r.1.total_cmp(&l.1).then(l.0.cmp(&r.0)));
            v.truncate(NEIGHBOURS);
            v
        })
        .collect()
}

/// Interest in a product halves every this many days of age.
pub const HALF_LIFE_DAYS: f64 = 30.0;

/// What a customer's dealings with one product say about their interest, as the marts
/// hold them: each order it was in most (up to `MAX_ORDERS`: what is bought again and
/// again says more than what was bought once), then a cart, then each view (up to five),
/// halved every `HALF_LIFE_DAYS` of age. Fitting and serving weigh histories the same way.
pub fn interest(views: i64, carts: i64, orders: i64, age_days: f64) -> f64 {
    const MAX_ORDERS: i64 = 20;
    let base = 5.0 * orders.clamp(0, MAX_ORDERS) as f64 + if carts > 0 { 3.0 } else { 0.0 } + views.clamp(0, 5) as f64;
    base * 0.5f64.powf(age_days.max(0.0) / HALF_LIFE_DAYS)
}

/// Implicit ALS: confidence 1 + alpha * weight on observed cells, preference 1 there and 0
/// elsewhere; only the product factors are kept, customers are folded in. The k x k work
/// per row goes through faer's matrix products, not loops of our own.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Als {
    pub items: Vec<String>,
    pub factors: usize,
    pub alpha: f64,
    pub lambda: f64,
    /// n x k, row per product.
    pub item_factors: Vec<Vec<f64>>,
    /// `item_factors` as one matrix, built once on first use.
    #[serde(skip)]
    dense: std::sync::OnceLock<Mat<f64>>,
}

#[derive(Debug, Clone, Copy)]
pub struct AlsParams {
    pub factors: usize,
    pub alpha: f64,
    pub lambda: f64,
    pub iterations: usize,
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        Self {
            factors: 32,
            alpha: 10.0,
            lambda: 0.1,
            iterations: 10,
            seed: 1,
        }
    }
}

/// Solves (Y'Y + sum (c - 1) y y' + lambda I) x = sum c y for one row's cells, with
/// Y = `factors` (a row per index) and c = 1 + alpha * weight.
fn solve_row(yty: &Mat<f64>, factors: &Mat<f64>, cells: &[(u32, f32)], alpha: f64, lambda: f64) -> Mat<f64> {
    let k = yty.nrows();
    let m = cells.len();
    let y = Mat::<f64>::from_fn(m, k, |i, r| factors[(cells[i].0 as usize, r)]);
    let extra = Mat::<f64>::from_fn(m, k, |i, r| alpha * f64::from(cells[i].1) * y[(i, r)]);
    let c = Mat::<f64>::from_fn(m, 1, |i, _| 1.0 + alpha * f64::from(cells[i].1));
    let mut a = yty + y.transpose() * &extra;
    for d in 0..k {
        a[(d, d)] += lambda;
    }
    let b = y.transpose() * &c;
    match a.llt(Side::Lower) {
        Ok(llt) => llt.solve(&b),
        Err(_) => Mat::zeros(k, 1),
    }
}

fn dense(rows: &[Vec<f64>], k: usize) -> Mat<f64> {
    Mat::from_fn(rows.len(), k, |i, r| rows[i].get(r).copied().unwrap_or(0.0))
}

/// Solves every row against `factors` and returns them as a matrix, a row per row.
fn solve_all(rows: &[Vec<(u32, f32)>], factors: &Mat<f64>, p: &AlsParams) -> Mat<f64> {
    let k = factors.ncols();
    let gram = factors.transpose() * factors;
    let solved: Vec<Mat<f64>> = rows
        .iter()
        .map(|row| solve_row(&gram, factors, row, p.alpha, p.lambda))
        .collect();
    Mat::from_fn(rows.len(), k, |i, r| solved[i][(r, 0)])
}

impl Als {
    pub fn fit(x: &Interactions, p: AlsParams) -> Result<Self, CollabError> {
        use rand::{Rng, SeedableRng};
        let (n, k) = (x.items.len(), p.factors.max(1));
        if n == 0 || x.rows.is_empty() {
            return Err(CollabError::Empty("no customer has an interaction"));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
        let start: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..k).map(|_| rng.random_range(-0.01..0.01)).collect())
            .collect();
        let mut items = dense(&start, k);
        let mut by_item: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
        for (u, row) in x.rows.iter().enumerate() {
            for (i, w) in row {
                by_item[*i as usize].push((u as u32, *w));
            }
        }
        for _ in 0..p.iterations {
            let users = solve_all(&x.rows, &items, &p);
            items = solve_all(&by_item, &users, &p);
        }
        let item_factors = (0..n).map(|i| (0..k).map(|r| items[(i, r)]).collect()).collect();
        let als = Self {
            items: x.items.clone(),
            factors: k,
            alpha: p.alpha,
            lambda: p.lambda,
            item_factors,
            dense: std::sync::OnceLock::new(),
        };
        let _ = als.dense.set(items);
        Ok(als)
    }

    fn matrix(&self) -> &Mat<f64> {
        self.dense.get_or_init(|| dense(&self.item_factors, self.factors))
    }

    /// Scores of every product for a history, folding the customer in.
    pub fn scores(&self, history: &[(u32, f32)]) -> Vec<f32> {
        self.scores_with(&self.gram(), history)
    }

    /// As `scores`, with the product factors' Gram matrix computed once for many customers.
    pub fn scores_with(&self, yty: &Mat<f64>, history: &[(u32, f32)]) -> Vec<f32> {
        let f = self.matrix();
        let u = solve_row(yty, f, history, self.alpha, self.lambda);
        let s = f * &u;
        (0..s.nrows()).map(|i| s[(i, 0)] as f32).collect()
    }

    pub fn gram(&self) -> Mat<f64> {
        let f = self.matrix();
        f.transpose() * f
    }
}

/// The `k` best-scored product indices, skipping `skip`, best first.
pub fn top(scores: &[f32], k: usize, skip: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut v: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .filter(|(i, s)| **s > 0.0 && !skip(*i as u32))
        .map(|(i, s)| (i as u32, *s))
        .collect();
    let cut = k.min(v.len());
    if cut > 0 && cut < v.len() {
        v.select_nth_unstable_by(cut - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(cut);
    }
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v.into_iter().map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tastes: customers who buy a, b, c and customers who buy x, y, z.
    fn two_tastes() -> Interactions {
        let mut cells = Vec::new();
        let names: Vec<String> = (0..40).map(|n| format!("u{n}")).collect();
        for (n, u) in names.iter().enumerate() {
            let taste: &[&str] = if n % 2 == 0 { &["a", "b", "c"] } else { &["x", "y", "z"] };
            // Each leaves one of their taste's products out.
            for (k, item) in taste.iter().enumerate() {
                if k != n % 3 {
                    cells.push((u.as_str(), *item, 1.0));
                }
            }
        }
        Interactions::from_cells(cells.iter().map(|(u, i, w)| (*u, *i, *w)))
    }

    fn best(x: &Interactions, scores: &[f32], seen: &[&str]) -> String {
        let skip: Vec<u32> = seen.iter().map(|s| x.index[*s]).collect();
        let i = top(scores, 1, |i| skip.contains(&i))[0];
        x.items[i as usize].clone()
    }

    #[test]
    fn ease_completes_a_taste() {
        let x = two_tastes();
        let ease = Ease::fit(&x, 1.0, 100).unwrap();
        let h = x.history([("a", 1.0), ("b", 1.0)]);
        assert_eq!(best(&x, &ease.scores(&h), &["a", "b"]), "c");
        let h = x.history([("y", 1.0)]);
        let s = ease.scores(&h);
        assert!(s[x.index["x"] as usize] > s[x.index["a"] as usize]);
    }

    #[test]
    fn als_completes_a_taste() {
        let x = two_tastes();
        let als = Als::fit(
            &x,
            AlsParams {
                factors: 4,
                ..Default::default()
            },
        )
        .unwrap();
        let h = x.history([("x", 1.0), ("z", 1.0)]);
        assert_eq!(best(&x, &als.scores(&h), &["x", "z"]), "y");
    }

    #[test]
    fn als_stored_beside_ease_reaches_products_ease_left_out() {
        // More customers of a, b, c: EASE keeps those three, and x, y, z are beyond its cap.
        let extra: Vec<String> = (0..10).map(|n| format!("w{n}")).collect();
        let mut cells: Vec<(&str, &str, f64)> = Vec::new();
        let base = two_tastes();
        for (u, row) in base.customers.iter().zip(&base.rows) {
            cells.extend(
                row.iter()
                    .map(|(i, w)| (u.as_str(), base.items[*i as usize].as_str(), f64::from(*w))),
            );
        }
        for u in &extra {
            cells.extend(["a", "b", "c"].map(|i| (u.as_str(), i, 1.0)));
        }
        let x = Interactions::from_cells(cells);
        let mut ease = Ease::fit(&x, 1.0, 3).unwrap();
        let left_out = ["x", "y", "z"];
        assert!(left_out.iter().all(|i| ease.weights[x.index[*i] as usize].is_empty()));
        let params = AlsParams {
            factors: 4,
            ..Default::default()
        };
        ease.als = Some(Als::fit(&x, params).unwrap());
        let stored: Ease = serde_json::from_str(&serde_json::to_string(&ease).unwrap()).unwrap();
        let h = x.history([(left_out[0], 1.0), (left_out[2], 1.0)]);
        assert!(ease.scores(&h).iter().all(|&s| s == 0.0), "EASE has nothing to say");
        let als = stored.als.expect("ALS is stored with EASE");
        assert_eq!(best(&x, &als.scores(&h), &[left_out[0], left_out[2]]), left_out[1]);
    }

    #[test]
    fn ease_keeps_only_the_most_reached_products() {
        let x = two_tastes();
        let ease = Ease::fit(&x, 1.0, 3).unwrap();
        let pointing = ease.weights.iter().filter(|w| !w.is_empty()).count();
        assert!(pointing <= 3, "{pointing}");
        assert!(matches!(
            Ease::fit(&Interactions::default(), 1.0, 10),
            Err(CollabError::Empty(_))
        ));
    }
}
