//! A small Nelder–Mead minimiser for the few-parameter maximum-likelihood fits of the
//! baselines (BG/NBD has 4 parameters, Gamma-Gamma 3): derivative-free, dependency-free,
//! deterministic.

/// Where a minimisation ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Minimum {
    pub(crate) point: Vec<f64>,
    pub(crate) value: f64,
}

/// Minimises `f` from `start` with restarts: each round builds a fresh simplex (axis steps
/// of `step`) around the best point so far, which unsticks a collapsed simplex; it stops
/// when a round improves by less than `tolerance` (relative). Non-finite values of `f`
/// count as +∞, so `f` may return NaN outside its domain.
pub(crate) fn minimize(
    f: &dyn Fn(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    tolerance: f64,
) -> Minimum {
    const ROUNDS: usize = 20;
    const EVALUATIONS_PER_ROUND: usize = 4_000;
    let mut best = Minimum {
        point: start.to_vec(),
        value: finite_or_inf(f(start)),
    };
    for _ in 0..ROUNDS {
        let next = nelder_mead(f, &best.point, step, EVALUATIONS_PER_ROUND, tolerance);
        let improved = next.value < best.value;
        let small = best.value.is_finite()
            && best.value - next.value <= tolerance * (best.value.abs() + tolerance);
        if improved {
            best = next;
        }
        if !improved || small {
            break;
        }
    }
    best
}

fn finite_or_inf(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::INFINITY }
}

/// One Nelder–Mead run (reflection 1, expansion 2, contraction ½, shrink ½) until the
/// simplex's values agree within `tolerance` (relative) or `max_evaluations` are spent.
fn nelder_mead(
    f: &dyn Fn(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    max_evaluations: usize,
    tolerance: f64,
) -> Minimum {
    let n = start.len();
    let value = |p: &[f64]| finite_or_inf(f(p));
    let mut simplex: Vec<Vec<f64>> = (0..=n)
        .map(|i| {
            let mut p = start.to_vec();
            if i > 0 {
                p[i - 1] += step;
            }
            p
        })
        .collect();
    let mut values: Vec<f64> = simplex.iter().map(|p| value(p)).collect();
    let mut evaluations = n + 1;
    while evaluations < max_evaluations {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|i, j| values[*i].total_cmp(&values[*j]));
        simplex = order.iter().map(|i| simplex[*i].clone()).collect();
        values = order.iter().map(|i| values[*i]).collect();
        let (best, worst) = (values[0], values[n]);
        if best.is_finite() && worst - best <= tolerance * (best.abs() + tolerance) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|d| simplex[..n].iter().map(|p| p[d]).sum::<f64>() / n as f64)
            .collect();
        // The point at `t` along the line from the centroid to the worst vertex.
        let along = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[n])
                .map(|(c, w)| c + t * (w - c))
                .collect()
        };
        let reflected = along(-1.0);
        let f_reflected = value(&reflected);
        evaluations += 1;
        if f_reflected < values[0] {
            let expanded = along(-2.0);
            let f_expanded = value(&expanded);
            evaluations += 1;
            (simplex[n], values[n]) = if f_expanded < f_reflected {
                (expanded, f_expanded)
            } else {
                (reflected, f_reflected)
            };
        } else if f_reflected < values[n - 1] {
            (simplex[n], values[n]) = (reflected, f_reflected);
        } else {
            let outside = f_reflected < values[n];
            let contracted = along(if outside { -0.5 } else { 0.5 });
            let f_contracted = value(&contracted);
            evaluations += 1;
            if f_contracted < values[n].min(f_reflected) {
                (simplex[n], values[n]) = (contracted, f_contracted);
            } else {
                for i in 1..=n {
                    simplex[i] = simplex[0]
                        .iter()
                        .zip(&simplex[i])
                        .map(|(b, p)| b + 0.5 * (p - b))
                        .collect();
                    values[i] = value(&simplex[i]);
                }
                evaluations += n;
            }
        }
    }
    let best = (0..=n)
        .min_by(|i, j| values[*i].total_cmp(&values[*j]))
        .unwrap_or(0);
    Minimum {
        point: simplex[best].clone(),
        value: values[best],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rosenbrock_minimum() {
        let rosenbrock = |p: &[f64]| (1.0 - p[0]).powi(2) + 100.0 * (p[1] - p[0] * p[0]).powi(2);
        let m = minimize(&rosenbrock, &[-1.2, 1.0], 0.5, 1e-14);
        assert!(
            (m.point[0] - 1.0).abs() < 1e-4 && (m.point[1] - 1.0).abs() < 1e-4,
            "{m:?}"
        );
    }

    #[test]
    fn treats_nan_as_infinitely_bad() {
        let bowl = |p: &[f64]| {
            if p[0] < 0.0 {
                f64::NAN
            } else {
                (p[0] - 2.0).powi(2) + p[1] * p[1]
            }
        };
        let m = minimize(&bowl, &[0.5, 0.5], 1.0, 1e-14);
        assert!(
            (m.point[0] - 2.0).abs() < 1e-4 && m.point[1].abs() < 1e-4,
            "{m:?}"
        );
    }
}
