//! The ranker's fit: logistic regression with a weight per row, by Newton's method. The
//! rows of a closed loop are not a sample of what a customer could be shown: the policy
//! chose them (exploration slots were drawn with a known propensity) and the customer
//! looked at the top of a list more than at its end. Weighing each row by the inverse of
//! both makes the loss what it would be on an unbiased sample; smartcore's solver takes no
//! row weights, so this one does, and it starts from the model in use (a warm start: the
//! optimum moves little between refits, and Newton then needs a step or two).

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

/// A fitted model, and how many Newton steps it took.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub weights: Vec<f64>,
    pub bias: f64,
    pub iterations: usize,
}

/// Minimises sum_i w_i * logloss(y_i, x_i . weights + bias) + l2 / 2 * |weights|^2 (the
/// bias is not shrunk), from `start` if given. Rows must share one width.
pub fn logistic(x: &[&[f64]], y: &[i32], w: &[f64], l2: f64, start: Option<(&[f64], f64)>) -> Result<Fitted, String> {
    let d = x.first().map_or(0, |r| r.len());
    if x.is_empty() || x.len() != y.len() || x.len() != w.len() || x.iter().any(|r| r.len() != d) {
        return Err("rows, labels and weights must be as many, rows of one width".into());
    }
    let n = d + 1;
    let value = |beta: &[f64]| -> f64 {
        let loss: f64 = x
            .iter()
            .zip(y)
            .zip(w)
            .map(|((r, &y), &w)| {
                let t = dot(r, beta);
                // log(1 + e^t) - y t, stable for large |t|.
                w * (t.max(0.0) + (-t.abs()).exp().ln_1p() - f64::from(y) * t)
            })
            .sum();
        loss + 0.5 * l2 * beta[..d].iter().map(|b| b * b).sum::<f64>()
    };
    // The bias is the last coefficient. A start whose predictions are saturated gives a
    // near-singular Hessian and wild steps: start from the model in use only where it
    // fits these rows better than the all-zero model does.
    let zero = vec![0.0; n];
    let mut beta: Vec<f64> = match start {
        Some((weights, bias)) if weights.len() == d => {
            let warm: Vec<f64> = weights.iter().copied().chain([bias]).collect();
            if value(&warm) < value(&zero) { warm } else { zero }
        }
        _ => zero,
    };
    let mut current = value(&beta);
    for iteration in 1..=50 {
        let mut grad = vec![0.0; n];
        let mut hess = vec![0.0; n * n];
        for ((r, &y), &w) in x.iter().zip(y).zip(w) {
            let p = sigmoid(dot(r, &beta));
            let g = w * (p - f64::from(y));
            let h = w * p * (1.0 - p);
            for a in 0..n {
                let ra = if a < d { r[a] } else { 1.0 };
                grad[a] += g * ra;
                for b in 0..=a {
                    let rb = if b < d { r[b] } else { 1.0 };
                    hess[a * n + b] += h * ra * rb;
                }
            }
        }
        for a in 0..d {
            grad[a] += l2 * beta[a];
            hess[a * n + a] += l2;
        }
        // A tiny ridge keeps the bias's row positive definite when every row is alike.
        let h = Mat::<f64>::from_fn(n, n, |a, b| {
            let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
            hess[hi * n + lo] + if a == b { 1e-9 } else { 0.0 }
        });
        let g = Mat::<f64>::from_fn(n, 1, |a, _| grad[a]);
        let step = h
            .llt(Side::Lower)
            .map_err(|e| format!("the Hessian is not positive definite: {e:?}"))?
            .solve(&g);
        // At most `MAX_STEP` on any coefficient, then halved until the objective falls (a
        // damped Newton step); none that does means this is as low as it gets.
        let longest = (0..n).map(|a| step[(a, 0)].abs()).fold(0.0, f64::max);
        let mut scale = if longest > MAX_STEP { MAX_STEP / longest } else { 1.0 };
        let found = loop {
            let next: Vec<f64> = (0..n).map(|a| beta[a] - scale * step[(a, 0)]).collect();
            let v = value(&next);
            if v <= current {
                break Some((next, v));
            }
            if scale < 1e-8 {
                break None;
            }
            scale *= 0.5;
        };
        let Some((next, v)) = found else {
            return Ok(Fitted {
                weights: beta[..d].to_vec(),
                bias: beta[d],
                iterations: iteration,
            });
        };
        let moved = (0..n).map(|a| (next[a] - beta[a]).abs()).fold(0.0, f64::max);
        beta = next;
        current = v;
        if moved < 1e-7 {
            return Ok(Fitted {
                weights: beta[..d].to_vec(),
                bias: beta[d],
                iterations: iteration,
            });
        }
    }
    Ok(Fitted {
        weights: beta[..d].to_vec(),
        bias: beta[d],
        iterations: 50,
    })
}

/// The longest move of one coefficient in one Newton step.
const MAX_STEP: f64 = 5.0;

fn dot(r: &[f64], beta: &[f64]) -> f64 {
    r.iter().zip(beta).map(|(a, b)| a * b).sum::<f64>() + beta[r.len()]
}

fn sigmoid(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// How much more often the top of a list is looked at than position `p`: `gamma^p`, with
/// `gamma` fitted by maximum likelihood to the reactions in exploration slots, where what
/// was shown did not depend on how good it was, so only the position moves the rate.
/// `None` with fewer than `min_reactions` reactions there to tell.
pub fn position_decay(explored: &[(i64, i32)], min_reactions: usize) -> Option<f64> {
    let reactions = explored.iter().filter(|(_, y)| *y == 1).count();
    if reactions < min_reactions {
        return None;
    }
    let mut best = (f64::NEG_INFINITY, 1.0);
    for step in 0..=60 {
        let gamma = 0.4 + 0.01 * f64::from(step);
        // The rate at the top that fits best for this decay.
        let exposure: f64 = explored.iter().map(|(p, _)| gamma.powi(*p as i32)).sum();
        let top = (reactions as f64 / exposure).min(1.0 - 1e-9);
        let ll: f64 = explored
            .iter()
            .map(|(p, y)| {
                let q = (top * gamma.powi(*p as i32)).clamp(1e-12, 1.0 - 1e-12);
                if *y == 1 { q.ln() } else { (1.0 - q).ln() }
            })
            .sum();
        if ll > best.0 {
            best = (ll, gamma);
        }
    }
    Some(best.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn weights_count_as_repeated_rows_and_a_warm_start_needs_few_steps() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let rows: Vec<[f64; 2]> = (0..2000)
            .map(|_| [rng.random_range(0.0..1.0), rng.random_range(0.0..1.0)])
            .collect();
        let y: Vec<i32> = rows
            .iter()
            .map(|r| i32::from(rng.random_bool(sigmoid(3.0 * r[0] - r[1] - 1.0))))
            .collect();
        let x: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
        let cold = logistic(&x, &y, &vec![1.0; x.len()], 1.0, None).unwrap();
        assert!((cold.weights[0] - 3.0).abs() < 0.6, "{cold:?}");
        assert!((cold.weights[1] + 1.0).abs() < 0.6, "{cold:?}");
        // Weight 2 on every row is the set twice.
        let doubled: Vec<&[f64]> = x.iter().chain(&x).copied().collect();
        let y2: Vec<i32> = y.iter().chain(&y).copied().collect();
        let twice = logistic(&doubled, &y2, &vec![1.0; doubled.len()], 1.0, None).unwrap();
        let weighted = logistic(&x, &y, &vec![2.0; x.len()], 1.0, None).unwrap();
        for (a, b) in twice.weights.iter().zip(&weighted.weights) {
            assert!((a - b).abs() < 1e-6, "{twice:?} {weighted:?}");
        }
        let warm = logistic(&x, &y, &vec![1.0; x.len()], 1.0, Some((&cold.weights, cold.bias))).unwrap();
        assert!(warm.iterations < cold.iterations, "{warm:?} {cold:?}");
        assert!(logistic(&x, &y[1..], &vec![1.0; x.len()], 1.0, None).is_err());
        // A start far off (saturated predictions, a near-singular Hessian) ends at the
        // same optimum instead of running off.
        let wild = logistic(&x, &y, &vec![1.0; x.len()], 1.0, Some((&[40.0, -60.0], 500.0))).unwrap();
        for (a, b) in wild
            .weights
            .iter()
            .chain([&wild.bias])
            .zip(cold.weights.iter().chain([&cold.bias]))
        {
            assert!((a - b).abs() < 1e-4, "{wild:?} {cold:?}");
        }
        // Rows nearly separated by one feature: steps stay bounded, the fit converges.
        let sep: Vec<i32> = rows.iter().map(|r| i32::from(r[0] > 0.5)).collect();
        let steep = logistic(&x, &sep, &vec![1.0; x.len()], 1.0, None).unwrap();
        assert!(steep.iterations < 50 && steep.weights[0] > 10.0, "{steep:?}");
    }

    #[test]
    fn the_decay_over_positions_is_found_from_random_slots() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let explored: Vec<(i64, i32)> = (0..20_000)
            .map(|_| {
                let p = rng.random_range(0..10i64);
                (p, i32::from(rng.random_bool(0.3 * 0.85f64.powi(p as i32))))
            })
            .collect();
        let gamma = position_decay(&explored, 30).unwrap();
        assert!((gamma - 0.85).abs() < 0.03, "{gamma}");
        assert_eq!(position_decay(&explored[..10], 30), None);
    }
}
