//! The business rules, loaded from TOML (`rules.toml` next to this file is the default,
//! `recommend.rules_file` overrides it): exclusions by portrait condition, durable and
//! replenished categories, complements, lifecycle weights, and the price tier to aim at.
//! Categories are named as the catalogue feed names them (see `names`), so a new
//! catalogue needs new names in the file, not new code.

use super::data::{Portrait, Product};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT: &str = include_str!("rules.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub exclude: Vec<Exclude>,
    pub durable: Categories,
    pub replenish: Replenish,
    #[serde(default)]
    pub complements: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub lifecycle: BTreeMap<String, BTreeMap<String, f64>>,
    pub price_tier: PriceTier,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclude {
    pub rule: String,
    /// Portrait column -> values; the rule applies when every column has one of them.
    pub when: BTreeMap<String, Vec<String>>,
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Categories {
    pub categories: Vec<String>,
}

/// What comes back: the categories the business names, and any product the data shows
/// customers buy again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replenish {
    pub categories: Vec<String>,
    /// A product at least this share of whose buyers bought it again in another order
    /// (`product_features.repeat_share`) is replenished whatever its category.
    #[serde(default = "default_repeat_share")]
    pub repeat_share: f64,
}

fn default_repeat_share() -> f64 {
    0.1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub wealth: BTreeMap<String, i64>,
    pub spend: BTreeMap<String, i64>,
    pub default: i64,
    pub weight_by_distance: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Rules {
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, RulesError> {
        let (name, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| RulesError::Invalid {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?,
            ),
            None => ("(built-in rules.toml)".to_string(), DEFAULT.to_string()),
        };
        let rules: Rules = toml::from_str(&text).map_err(|e| RulesError::Invalid {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        for e in &rules.exclude {
            for column in e.when.keys() {
                if Portrait::field(&Portrait::default(), column).is_none() {
                    problems.push(format!("exclude `{}`: no portrait column `{column}`", e.rule));
                }
            }
        }
        if rules.price_tier.weight_by_distance.is_empty() {
            problems.push("price_tier.weight_by_distance is empty".into());
        }
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(RulesError::Invalid {
                path: name,
                message: problems.join("; "),
            })
        }
    }

    /// The exclusion rules that apply to this customer.
    pub fn exclusions<'a>(&'a self, p: &Portrait) -> Vec<&'a Exclude> {
        self.exclude
            .iter()
            .filter(|e| {
                e.when
                    .iter()
                    .all(|(column, values)| p.field(column).is_some_and(|v| values.contains(&v)))
            })
            .collect()
    }

    /// The price tier (1..=3) this customer's list aims at.
    pub fn target_tier(&self, p: &Portrait) -> i64 {
        let t = &self.price_tier;
        t.wealth
            .get(&p.wealth_tier)
            .or_else(|| t.spend.get(&p.spend_tier))
            .copied()
            .unwrap_or(t.default)
    }

    /// How much a product's price tier suits the target; a product without a price (tier
    /// 0) is neither here nor there.
    pub fn tier_weight(&self, target: i64, tier: i64) -> f64 {
        if tier == 0 {
            return 1.0;
        }
        let w = &self.price_tier.weight_by_distance;
        let d = (target - tier).unsigned_abs() as usize;
        w.get(d).or(w.last()).copied().unwrap_or(1.0)
    }

    /// The lifecycle weight of a product for a stage (its leaf category's weight first,
    /// then its department's).
    pub fn lifecycle_weight(&self, stage: &str, product: &Product) -> f64 {
        let Some(weights) = self.lifecycle.get(stage) else {
            return 1.0;
        };
        weights
            .iter()
            .filter(|(key, _)| names(key, product))
            .max_by_key(|(key, _)| key.as_str() != product.top_category)
            .map_or(1.0, |(_, w)| *w)
    }

    pub fn is_durable(&self, product: &Product) -> bool {
        self.durable.categories.iter().any(|c| names(c, product))
    }

    pub fn is_replenished(&self, product: &Product) -> bool {
        product.repeat_share >= self.replenish.repeat_share
            || self.replenish.categories.iter().any(|c| names(c, product))
    }

    /// The categories that complement this product's.
    pub fn complements_of<'a>(&'a self, product: &'a Product) -> impl Iterator<Item = &'a String> + 'a {
        self.complements
            .iter()
            .filter(move |(key, _)| names(key, product))
            .flat_map(|(_, wanted)| wanted)
    }
}

impl Exclude {
    pub fn applies_to(&self, product: &Product) -> bool {
        self.categories.iter().any(|c| names(c, product))
    }
}

/// Whether a category as the rules name it is this product's: its leaf category's name,
/// its department's, or the two as a path (`Ремонт/Звукоизоляция`).
pub fn names(category: &str, product: &Product) -> bool {
    match category.split_once('/') {
        Some((department, leaf)) => department == product.top_category && leaf == product.category_name,
        None => category == product.category_name || category == product.top_category,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_rules_load() {
        let r = Rules::load(None).unwrap();
        let mut p = Portrait {
            housing_market: "secondary".into(),
            renovation_scope: "full".into(),
            wealth_tier: "high".into(),
            ..Default::default()
        };
        let fired: Vec<&str> = r.exclusions(&p).iter().map(|e| e.rule.as_str()).collect();
        assert_eq!(fired, ["secondary_home_no_new_build_materials"]);
        assert_eq!(r.target_tier(&p), 3);
        p.renovation_scope = "none".into();
        assert_eq!(r.exclusions(&p).len(), 2);
    }

    #[test]
    fn categories_are_named_as_the_catalogue_names_them() {
        let r = Rules::load(None).unwrap();
        let product = |department: &str, leaf: &str| Product {
            category_id: "any-id".into(),
            top_category: department.into(),
            category_name: leaf.into(),
            ..Default::default()
        };
        let soundproofing = product("Ремонт", "Звукоизоляция");
        let secondary = &r.exclude[0];
        assert!(secondary.applies_to(&soundproofing));
        // The same leaf name under another department is another category.
        assert!(!secondary.applies_to(&product("Сад", "Звукоизоляция")));
        assert!(!secondary.applies_to(&product("Ремонт", "Краски")));
        let flowers = product("Сад", "Растения и цветы");
        assert_eq!(r.lifecycle_weight("renovating", &flowers), 0.15);
        // A leaf's weight wins over its department's.
        assert_eq!(r.lifecycle_weight("decorating", &flowers), 1.5);
        assert_eq!(r.lifecycle_weight("decorating", &product("Сад", "Качели")), 1.2);
        assert_eq!(r.lifecycle_weight("decorating", &product("Кухни", "Кухни")), 1.0);
        assert!(r.is_durable(&product("Сад", "Качели")));
        assert!(r.is_replenished(&flowers));
        // Groceries nobody named: the data says they come back.
        let mut milk = product("Молочное", "Молоко");
        assert!(!r.is_replenished(&milk));
        milk.repeat_share = 0.4;
        assert!(r.is_replenished(&milk));
        let swing = product("Сад", "Качели");
        let complements: Vec<&String> = r.complements_of(&swing).collect();
        assert_eq!(complements, ["Аксессуары для качелей"]);
    }

    #[test]
    fn unknown_columns_are_named() {
        let text = DEFAULT.replace("housing_market = [", "housing = [");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, text).unwrap();
        let e = Rules::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("no portrait column `housing`"), "{e}");
    }
}
