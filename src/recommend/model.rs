//! The ranker: a logistic model over the candidate features. Until one is trained on
//! exposure-labelled interactions, a documented prior with hand-set weights ranks.

use serde::{Deserialize, Serialize};

/// Feature names, in vector order; `features::vector` fills them.
pub const FEATURES: [&str; 24] = [
    "neighbour",
    "affinity",
    "complement",
    "lifecycle",
    "repeat",
    "popular",
    "popularity",
    "conversion",
    "trend",
    "tier_match",
    "viewed_before",
    "collab",
    "bought_share",
    "recency",
    "repeat_share",
    // Never bought by this customer, and the collaborative score and popularity again for
    // those only: buying again and buying something new follow different evidence, and a
    // linear model needs the crosses to give each its own slope.
    "novel",
    "novel_collab",
    "novel_popularity",
    // Item-kNN (cosine over who touched what) over the customer's history, and again for
    // products never bought: the signal the simple neighbour baseline wins novel products on.
    "knn",
    "novel_knn",
    // What the customer did with earlier lists (before the one being scored): products of
    // this category they reacted to and ignored, and this very product. Shown and ignored
    // is the only rejection there is; never shown says nothing.
    "category_reacted",
    "category_ignored",
    "shown_reacted",
    "shown_ignored",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub version: String,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Validation metrics on the newest slice (absent for the prior).
    #[serde(default)]
    pub auc: Option<f64>,
    #[serde(default)]
    pub ndcg_at_10: Option<f64>,
    #[serde(default)]
    pub trained_rows: u64,
    /// The novel head, where the labels let one be fitted (`novel.rs`).
    #[serde(default)]
    pub novel: Option<super::novel::Head>,
}

impl Model {
    /// Hand-set weights for a deployment with nothing to learn from yet: what the
    /// collaborative model learned customers like them do next counts most, then evidence
    /// from the customer's own behaviour (neighbours of what they looked at, their
    /// departments, complements, what they keep rebuying), popularity least; what they
    /// were shown and ignored down, their reactions to a category up only a little (a
    /// trained model learns how much they say; the worked customer clicked swing
    /// accessories once and is still renovating).
    pub fn prior() -> Self {
        Self {
            version: "prior-v4".into(),
            weights: vec![
                1.6, 1.2, 1.4, 0.6, 0.8, 0.3, 0.8, 0.5, 0.2, 0.4, 0.2, 8.0, 2.0, 0.3, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0,
                0.2, -0.3, 0.0, -0.8,
            ],
            bias: -4.0,
            auc: None,
            ndcg_at_10: None,
            trained_rows: 0,
            novel: None,
        }
    }

    pub fn score(&self, x: &[f64]) -> f64 {
        let z: f64 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>() + self.bias;
        1.0 / (1.0 + (-z).exp())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_prior_prefers_behavioural_evidence() {
        let m = super::Model::prior();
        assert_eq!(m.weights.len(), super::FEATURES.len());
        let mut neighbour = vec![0.0; super::FEATURES.len()];
        neighbour[0] = 1.0;
        let mut popular = vec![0.0; super::FEATURES.len()];
        popular[5] = 1.0;
        assert!(m.score(&neighbour) > m.score(&popular));
    }
}
