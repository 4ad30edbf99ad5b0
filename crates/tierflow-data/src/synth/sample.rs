//! Seeded draws: one ChaCha8 stream per (seed, purpose, user), and the few distributions the
//! simulator needs, each costing one or two random numbers.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

/// The random stream of one part of the simulation.
pub(crate) type SimRng = ChaCha8Rng;

/// What a random stream is for; part of its key, so the streams never overlap.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    User = 0,
    Catalogue = 1,
    Dials = 2,
}

/// The stream for `purpose` and `stream` (the user index for users) under `seed`. Keyed
/// directly, so a user's draws depend on nothing but `(seed, user_index)`.
pub(crate) fn rng_for(seed: u64, purpose: Purpose, stream: u64) -> SimRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(b"tierflow");
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// Uniform in `[0, 1)`.
pub(crate) fn unit(rng: &mut SimRng) -> f64 {
    rng.random::<f64>()
}

/// `true` with probability `p` (any `p`; ≤ 0 never, ≥ 1 always).
pub(crate) fn chance(rng: &mut SimRng, p: f64) -> bool {
    unit(rng) < p
}

pub(crate) fn normal(rng: &mut SimRng) -> f64 {
    rng.sample(StandardNormal)
}

/// Exponential with mean 1.
pub(crate) fn exp1(rng: &mut SimRng) -> f64 {
    rng.sample(Exp1)
}

/// Log-normal with the given median and log-scale spread.
pub(crate) fn lognormal(rng: &mut SimRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Uniform in `[low, high)`.
pub(crate) fn between(rng: &mut SimRng, low: f64, high: f64) -> f64 {
    low + (high - low) * unit(rng)
}

/// Log-uniform in `[low, high)` (both > 0): as likely 1–10 as 10–100.
pub(crate) fn log_uniform(rng: &mut SimRng, low: f64, high: f64) -> f64 {
    low * (high / low).powf(unit(rng))
}

/// Poisson by Knuth's product method; meant for small means (capped at 30).
pub(crate) fn poisson(rng: &mut SimRng, mean: f64) -> u32 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    let limit = (-mean.min(30.0)).exp();
    let mut product = unit(rng);
    let mut count = 0;
    while product > limit {
        product *= unit(rng);
        count += 1;
    }
    count
}

/// Geometric on `0, 1, 2, …` with the given mean: a count with a long tail.
pub(crate) fn geometric(rng: &mut SimRng, mean: f64) -> u32 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    let keep_going = mean / (1.0 + mean);
    // ln(1 - u) is ≤ 0 and finite for u in [0, 1).
    let draws = (1.0 - unit(rng)).ln() / keep_going.ln();
    draws.floor().min(f64::from(u32::MAX)) as u32
}

/// Turns non-negative weights into a cumulative distribution ending at exactly 1. All-zero
/// weights become uniform.
pub(crate) fn cumulative<const N: usize>(weights: [f64; N]) -> [f64; N] {
    let total: f64 = weights.iter().sum();
    let mut cdf = [0.0; N];
    let mut running = 0.0;
    for (slot, weight) in cdf.iter_mut().zip(weights) {
        running += if total > 0.0 {
            weight / total
        } else {
            1.0 / N as f64
        };
        *slot = running;
    }
    if let Some(last) = cdf.last_mut() {
        *last = 1.0;
    }
    cdf
}

/// The index a uniform `u` in `[0, 1)` falls on in a cumulative distribution.
pub(crate) fn index_in(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c <= u)
        .min(cdf.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_seed_purpose_and_user() {
        let first = |seed, purpose, stream| unit(&mut rng_for(seed, purpose, stream));
        let base = first(1, Purpose::User, 0);
        assert_eq!(base, first(1, Purpose::User, 0));
        assert_ne!(base, first(2, Purpose::User, 0));
        assert_ne!(base, first(1, Purpose::Dials, 0));
        assert_ne!(base, first(1, Purpose::User, 1));
    }

    #[test]
    fn counts_have_the_requested_means() {
        let mut rng = rng_for(7, Purpose::User, 0);
        let n = 20_000;
        let mean = |rng: &mut SimRng, draw: fn(&mut SimRng, f64) -> u32, m: f64| {
            (0..n).map(|_| f64::from(draw(rng, m))).sum::<f64>() / f64::from(n)
        };
        for m in [0.3, 1.0, 4.0] {
            let p = mean(&mut rng, poisson, m);
            let g = mean(&mut rng, geometric, m);
            assert!((p - m).abs() < 0.05 * m + 0.02, "poisson {m}: {p}");
            assert!((g - m).abs() < 0.06 * m + 0.02, "geometric {m}: {g}");
        }
        assert_eq!(poisson(&mut rng, 0.0), 0);
        assert_eq!(geometric(&mut rng, f64::NAN), 0);
    }

    #[test]
    fn cumulative_picks_by_weight() {
        let cdf = cumulative([1.0, 0.0, 3.0]);
        assert_eq!(cdf, [0.25, 0.25, 1.0]);
        assert_eq!(index_in(&cdf, 0.0), 0);
        assert_eq!(index_in(&cdf, 0.2499), 0);
        assert_eq!(index_in(&cdf, 0.25), 2);
        assert_eq!(index_in(&cdf, 0.999_999), 2);
        assert_eq!(cumulative([0.0, 0.0]), [0.5, 1.0]);
    }
}
