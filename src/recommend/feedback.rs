//! What a customer did with the lists shown to them: the ranker's feedback features and a
//! candidate source. Shown and reacted to (clicked, carted, bought) counts for the product
//! and its category; shown and ignored is the only rejection there is; never shown says
//! nothing.

use super::data::{CatalogueView, Customer, Product};
use std::collections::HashMap;

/// What a customer did with the lists shown to them before a moment: per category and
/// per product, how many shown products they reacted to and how many they ignored.
#[derive(Debug, Default)]
pub struct Feedback<'a> {
    by_category: HashMap<&'a str, (u32, u32)>,
    by_product: HashMap<&'a str, (u32, u32)>,
}

impl<'a> Feedback<'a> {
    /// From the lists shown in the `FEEDBACK_DAYS` before `before_ms` (a training row sees
    /// only what came before its own list, as ranking did then), or every list loaded.
    pub fn of(c: &'a Customer, cat: &'a CatalogueView, before_ms: Option<i64>) -> Self {
        let mut f = Self::default();
        let (from, to) = match before_ms {
            Some(t) => (t.saturating_sub(super::data::FEEDBACK_DAYS * 86_400_000), t),
            None => (i64::MIN, i64::MAX),
        };
        for e in c.shown.iter().filter(|e| e.shown_ms >= from && e.shown_ms < to) {
            let reacted = u32::from(e.label > 0);
            let p = f.by_product.entry(e.product_id.as_str()).or_default();
            (p.0, p.1) = (p.0 + reacted, p.1 + 1 - reacted);
            if let Some(q) = cat.product(&e.product_id) {
                let k = f.by_category.entry(q.category_id.as_str()).or_default();
                (k.0, k.1) = (k.0 + reacted, k.1 + 1 - reacted);
            }
        }
        f
    }

    /// The features' values for `q`, in `FEATURES` order from `category_reacted` on.
    pub(super) fn values(&self, q: &Product) -> [f64; 4] {
        let log_share = |n: u32, at: f64| ((1.0 + f64::from(n)).ln() / (1.0 + at).ln()).min(1.0);
        let (cr, ci) = self
            .by_category
            .get(q.category_id.as_str())
            .copied()
            .unwrap_or_default();
        let (pr, pi) = self.by_product.get(q.product_id.as_str()).copied().unwrap_or_default();
        [
            log_share(cr, 10.0),
            log_share(ci, 50.0),
            f64::from(pr.min(1)),
            f64::from(pi.min(3)) / 3.0,
        ]
    }

    /// The categories they reacted to most, most first.
    pub(super) fn liked_categories(&self, n: usize) -> Vec<&'a str> {
        let mut liked: Vec<(&str, u32)> = self
            .by_category
            .iter()
            .filter(|(_, (r, _))| *r > 0)
            .map(|(k, (r, _))| (*k, *r))
            .collect();
        liked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        liked.into_iter().take(n).map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::data::Exposure;

    fn catalogue() -> CatalogueView {
        let products: Vec<Product> = ["a1", "a2", "b1"]
            .iter()
            .map(|id| Product {
                product_id: id.to_string(),
                category_id: id[..1].to_string(),
                ..Default::default()
            })
            .collect();
        let by_id = products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.product_id.clone(), i))
            .collect();
        CatalogueView {
            products,
            by_id,
            ..Default::default()
        }
    }

    #[test]
    fn only_lists_shown_before_count_and_ignoring_is_rejection() {
        let cat = catalogue();
        let shown = |product: &str, at: i64, label: i64| Exposure {
            product_id: product.into(),
            list_id: format!("l{at}"),
            shown_ms: at,
            label,
            ..Default::default()
        };
        let c = Customer {
            shown: vec![
                shown("a1", 10, 1),
                shown("b1", 10, 0),
                shown("a2", 20, 0),
                shown("b1", 20, 0),
            ],
            ..Default::default()
        };
        let a2 = cat.product("a2").unwrap();
        let b1 = cat.product("b1").unwrap();
        // Before the second list: one reaction in category a, b1 ignored once.
        let then = Feedback::of(&c, &cat, Some(20));
        assert_eq!(then.values(a2)[2..], [0.0, 0.0]);
        assert!(then.values(a2)[0] > 0.0);
        assert!((then.values(b1)[3] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(then.liked_categories(3), vec!["a"]);
        // Everything: a2 ignored once now, b1 twice.
        let now = Feedback::of(&c, &cat, None);
        assert!((now.values(a2)[3] - 1.0 / 3.0).abs() < 1e-12);
        assert!((now.values(b1)[3] - 2.0 / 3.0).abs() < 1e-12);
        assert!(now.values(b1)[1] > then.values(b1)[1]);
        // Nothing shown yet says nothing.
        assert_eq!(Feedback::of(&c, &cat, Some(10)).values(b1), [0.0; 4]);
    }
}
