//! Ranking metrics the ranker and the novel head are validated with.

/// Probability that a random positive scores above a random negative (ties count half).
pub fn auc(scored: &[(f64, i32)]) -> Option<f64> {
    let mut v = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (pos, neg) = (
        v.iter().filter(|s| s.1 == 1).count(),
        v.iter().filter(|s| s.1 != 1).count(),
    );
    if pos == 0 || neg == 0 {
        return None;
    }
    // Rank-sum with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += v[i..=j].iter().filter(|s| s.1 == 1).count() as f64 * avg;
        i = j + 1;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

pub fn ndcg_at(mut list: Vec<(f64, i32)>, k: usize) -> Option<f64> {
    let gain = |rel: i32, i: usize| f64::from(rel) / ((i + 2) as f64).log2();
    let mut ideal: Vec<i32> = list.iter().map(|s| s.1).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, &r)| gain(r, i)).sum();
    if idcg == 0.0 {
        return None;
    }
    list.sort_by(|a, b| b.0.total_cmp(&a.0));
    let dcg: f64 = list.iter().take(k).enumerate().map(|(i, s)| gain(s.1, i)).sum();
    Some(dcg / idcg)
}
