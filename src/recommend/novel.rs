//! The novel head: a second logistic model that orders products the customer never
//! bought. Learned from next-purchase labels, one model mostly learns repeat purchases
//! (nearly every positive row is a rebuy), so how it orders new products barely moves its
//! loss. The head is fitted on the never-bought rows alone, on standardised features that
//! say where a product stands among the customer's new options and whether other
//! customers are starting to buy it, and scores every never-bought candidate.

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

/// Feature names, in vector order; `rank::novel_features` fills them.
pub const NOVEL_FEATURES: [&str; 19] = [
    // Item-kNN and EASE over the customer's best never-bought score, and by rank among
    // the never-bought (1 / log2(rank + 2); 0 outside the top `COLLABORATIVE`).
    "knn_new",
    "collab_new",
    "knn_rank",
    "collab_rank",
    // Item-kNN over what the customer touched in the last two weeks only.
    "knn_recent",
    "popularity",
    // ln(1 + customers who bought it in the newest 7 days; who first bought it in the
    // newest 28 and 14 days): what people are starting to buy.
    "buyers_7d",
    "new_buyers_28d",
    "new_buyers_14d",
    // How much history the customer has, and how it changes what the evidence means.
    "history",
    "history_knn",
    "history_collab",
    "history_popularity",
    "neighbour",
    "affinity",
    "viewed_before",
    // ALS over the customer's best never-bought score, by rank, and with history.
    "als_new",
    "als_rank",
    "history_als",
];

pub type NovelX = [f64; NOVEL_FEATURES.len()];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Standardisation the weights were fitted on.
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    /// AUC on the held-out customers, before the refit on all of them.
    #[serde(default)]
    pub auc: Option<f64>,
    #[serde(default)]
    pub trained_rows: u64,
}

impl Head {
    pub fn score(&self, z: &NovelX) -> f64 {
        let t: f64 = (0..z.len())
            .map(|j| self.weights.get(j).copied().unwrap_or(0.0) * self.standard(z, j))
            .sum::<f64>()
            + self.bias;
        1.0 / (1.0 + (-t).exp())
    }

    /// Moves the bias so that the mean score on `rows` is their share of positives: the
    /// head learns from older snapshots too, whose labels span longer horizons, while it
    /// must speak the main model's probability (of a purchase within one horizon), as the
    /// newest snapshot's rows give it, for one list to hold both.
    pub fn calibrate(&mut self, rows: &[(&str, i32, NovelX)]) {
        let positives = rows.iter().filter(|r| r.1 == 1).count() as f64;
        if rows.is_empty() || positives == 0.0 {
            return;
        }
        for _ in 0..50 {
            let (p, slope) = rows.iter().fold((0.0, 0.0), |(p, slope), r| {
                let s = self.score(&r.2);
                (p + s, slope + s * (1.0 - s))
            });
            if slope <= 0.0 {
                return;
            }
            // Newton on the bias, damped: from a saturated start a full step overshoots.
            let step = ((positives - p) / slope).clamp(-4.0, 4.0);
            self.bias += step;
            if step.abs() < 1e-6 {
                return;
            }
        }
    }

    fn standard(&self, z: &NovelX, j: usize) -> f64 {
        let (m, s) = (
            self.mean.get(j).copied().unwrap_or(0.0),
            self.sd.get(j).copied().unwrap_or(1.0),
        );
        (z[j] - m) / s
    }
}

/// Fits the head on never-bought rows `(customer, label, z)`: AUC on a fifth of the
/// customers (chosen by a hash of the id, so no customer is on both sides), then the
/// weights refitted on every row. `None` without both labels.
pub fn fit(rows: &[(&str, i32, NovelX)]) -> Result<Option<Head>, String> {
    let positives = rows.iter().filter(|r| r.1 == 1).count();
    if positives == 0 || positives == rows.len() {
        return Ok(None);
    }
    let n = rows.len() as f64;
    let width = NOVEL_FEATURES.len();
    let mean: Vec<f64> = (0..width)
        .map(|j| rows.iter().map(|r| r.2[j]).sum::<f64>() / n)
        .collect();
    let sd: Vec<f64> = (0..width)
        .map(|j| {
            let v = rows.iter().map(|r| (r.2[j] - mean[j]).powi(2)).sum::<f64>() / n;
            if v > 1e-12 { v.sqrt() } else { 1.0 }
        })
        .collect();
    let mut head = Head {
        weights: vec![0.0; width],
        bias: 0.0,
        mean,
        sd,
        auc: None,
        trained_rows: rows.len() as u64,
    };
    let held_out = |c: &str| fnv(c).is_multiple_of(5);
    let train: Vec<&(&str, i32, NovelX)> = rows.iter().filter(|r| !held_out(r.0)).collect();
    if let Some((w, b)) = logistic(&head, &train)? {
        let trial = Head {
            weights: w,
            bias: b,
            ..head.clone()
        };
        let scored: Vec<(f64, i32)> = rows
            .iter()
            .filter(|r| held_out(r.0))
            .map(|r| (trial.score(&r.2), r.1))
            .collect();
        head.auc = super::metrics::auc(&scored);
    }
    let all: Vec<&(&str, i32, NovelX)> = rows.iter().collect();
    let Some((w, b)) = logistic(&head, &all)? else {
        return Ok(None);
    };
    head.weights = w;
    head.bias = b;
    Ok(Some(head))
}

fn logistic(head: &Head, rows: &[&(&str, i32, NovelX)]) -> Result<Option<(Vec<f64>, f64)>, String> {
    // Scoped here: its `get` would shadow the slice's on every Vec in this file.
    use smartcore::linalg::basic::arrays::Array;
    let positives = rows.iter().filter(|r| r.1 == 1).count();
    if positives == 0 || positives == rows.len() {
        return Ok(None);
    }
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| (0..NOVEL_FEATURES.len()).map(|j| head.standard(&r.2, j)).collect())
        .collect();
    let y: Vec<i32> = rows.iter().map(|r| r.1).collect();
    let x = DenseMatrix::from_2d_vec(&x).map_err(|e| e.to_string())?;
    let params = LogisticRegressionParameters::default().with_alpha(1.0);
    let fitted = LogisticRegression::fit(&x, &y, params).map_err(|e| e.to_string())?;
    let (c, i) = (fitted.coefficients(), fitted.intercept());
    Ok(Some((
        (0..NOVEL_FEATURES.len()).map(|j| *c.get((0, j))).collect(),
        *i.get((0, 0)),
    )))
}

/// FNV-1a: a split (or a seed) that is the same on every run and machine.
pub(super) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_learns_the_signal_and_is_judged_on_customers_it_never_saw() {
        // Purchases of new products follow knn_new; popularity is noise.
        let ids: Vec<String> = (0..600).map(|i| format!("c{}", i / 6)).collect();
        let rows: Vec<(&str, i32, NovelX)> = (0..600)
            .map(|i| {
                let mut z = [0.0; NOVEL_FEATURES.len()];
                z[0] = f64::from(i % 2) * 0.8 + 0.1;
                z[5] = f64::from((i / 2) % 2);
                (ids[i as usize].as_str(), i % 2, z)
            })
            .collect();
        let head = fit(&rows).unwrap().unwrap();
        assert!(head.weights[0] > head.weights[5].abs(), "{:?}", head.weights);
        assert_eq!(head.auc, Some(1.0));
        let (mut hi, mut lo) = ([0.0; NOVEL_FEATURES.len()], [0.0; NOVEL_FEATURES.len()]);
        hi[0] = 0.9;
        lo[0] = 0.1;
        assert!(head.score(&hi) > head.score(&lo));
        // A constant feature standardises to 0 instead of dividing by zero.
        assert_eq!(head.sd[1], 1.0);
    }

    #[test]
    fn calibration_matches_the_share_of_positives() {
        let mut head = Head {
            weights: vec![1.0; NOVEL_FEATURES.len()],
            bias: 3.0,
            mean: vec![0.0; NOVEL_FEATURES.len()],
            sd: vec![1.0; NOVEL_FEATURES.len()],
            auc: None,
            trained_rows: 0,
        };
        let rows: Vec<(&str, i32, NovelX)> = (0..100)
            .map(|i| {
                let mut z = [0.0; NOVEL_FEATURES.len()];
                z[0] = f64::from(i % 7) / 7.0;
                ("c", i32::from(i % 10 == 0), z)
            })
            .collect();
        head.calibrate(&rows);
        let mean = rows.iter().map(|r| head.score(&r.2)).sum::<f64>() / 100.0;
        assert!((mean - 0.1).abs() < 1e-4, "{mean}");
    }

    #[test]
    fn one_label_fits_nothing() {
        let rows: Vec<(&str, i32, NovelX)> = (0..10).map(|_| ("c", 0, [0.0; NOVEL_FEATURES.len()])).collect();
        assert!(fit(&rows).unwrap().is_none());
    }
}
