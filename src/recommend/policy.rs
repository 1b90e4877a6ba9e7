//! The policy that turns a ranking into the list the site shows: the ranker's own top,
//! with a few places given to exploration, each item logged with its propensity so that
//! training can weigh what exploration found (`fit.rs`).

/// Exploration in a published list: `slots` of its places go to products drawn uniformly
/// from the `pool` ranked just below the exploited top, at random places.
#[derive(Debug, Clone, Copy, Default)]
pub struct Explore {
    pub slots: usize,
    pub pool: usize,
}

/// Cuts the ranked `list` to `k`, `explore.slots` of them drawn uniformly without
/// replacement from the `explore.pool` ranked right after the exploited `k - slots`, each
/// put at a random place with its propensity (slots / pool: every product of the pool is
/// equally likely to be drawn), which `mark` records on the item. Too short a list is not
/// explored.
pub(super) fn explore_in<T>(list: &mut Vec<T>, k: usize, explore: Explore, seed: u64, mark: impl Fn(&mut T, f64)) {
    use rand::seq::index::sample;
    use rand::{Rng, SeedableRng};
    let kept = k.saturating_sub(explore.slots);
    let pool = list.len().saturating_sub(kept).min(explore.pool);
    let slots = explore.slots.min(pool);
    if slots == 0 || pool <= slots {
        list.truncate(k);
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut runners: Vec<T> = list.drain(kept..kept + pool).collect();
    list.truncate(kept);
    let mut drawn: Vec<usize> = sample(&mut rng, pool, slots).into_vec();
    // Drained from the back, so the indexes left stay valid.
    drawn.sort_unstable_by(|a, b| b.cmp(a));
    for i in drawn {
        let mut s = runners.swap_remove(i);
        mark(&mut s, slots as f64 / pool as f64);
        let at = rng.random_range(0..=list.len());
        list.insert(at, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone)]
    struct Item {
        product_id: String,
        propensity: f64,
    }

    fn ranked(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                product_id: format!("p{i:02}"),
                propensity: 1.0,
            })
            .collect()
    }

    fn explore(list: &mut Vec<Item>, k: usize, e: Explore, seed: u64) {
        explore_in(list, k, e, seed, |s, p| s.propensity = p);
    }

    #[test]
    fn exploration_draws_from_just_below_the_top_with_its_propensity() {
        let policy = Explore { slots: 2, pool: 20 };
        let mut drawn = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut list = ranked(40);
            explore(&mut list, 10, policy, seed);
            assert_eq!(list.len(), 10);
            // The ranker's own eight, in their order.
            let own: Vec<&str> = list
                .iter()
                .filter(|s| s.propensity == 1.0)
                .map(|s| s.product_id.as_str())
                .collect();
            assert_eq!(own, ["p00", "p01", "p02", "p03", "p04", "p05", "p06", "p07"]);
            for s in list.iter().filter(|s| s.propensity < 1.0) {
                assert_eq!(s.propensity, 0.1);
                drawn.insert(s.product_id.clone());
            }
        }
        // Every product of ranks 8..28 gets drawn, none beyond.
        assert_eq!(drawn.len(), 20, "{drawn:?}");
        assert!(drawn.iter().all(|p| ("p08".."p28").contains(&p.as_str())));
        // The same seed draws the same list.
        let (mut a, mut b) = (ranked(40), ranked(40));
        explore(&mut a, 10, policy, 7);
        explore(&mut b, 10, policy, 7);
        let ids = |l: &[Item]| l.iter().map(|s| s.product_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn no_exploration_or_too_few_candidates_keep_the_top() {
        let mut list = ranked(9);
        explore(&mut list, 10, Explore { slots: 2, pool: 20 }, 1);
        assert!(list.iter().all(|s| s.propensity == 1.0) && list.len() == 9);
        let mut list = ranked(40);
        explore(&mut list, 10, Explore::default(), 1);
        assert_eq!(list.len(), 10);
        assert!(list.iter().enumerate().all(|(i, s)| s.product_id == format!("p{i:02}")));
    }
}
