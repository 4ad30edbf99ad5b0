//! Measured uplift of a campaign: treated against control, for conversion (Newcombe's
//! interval for a difference of proportions) and revenue per user (Welch's interval).
//! Numbers in, numbers out.

use serde::{Deserialize, Serialize};

/// Two-sided 95 %: the 0.975 quantile of the standard normal.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// One arm's totals over users (each counted once, whether or not they converted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    pub users: u64,
    /// Users with at least one attributed purchase.
    pub converters: u64,
    /// Sum over users of each user's attributed revenue, in cents (0 for non-converters).
    pub revenue_cents_sum: i64,
    /// Sum over users of the square of each user's attributed revenue in cents; exact.
    pub revenue_cents_sum_sq: u128,
}

impl Arm {
    /// Adds one user's outcome.
    pub fn record(&mut self, converted: bool, revenue_cents: i64) {
        self.users += 1;
        self.converters += u64::from(converted);
        self.revenue_cents_sum += revenue_cents;
        self.revenue_cents_sum_sq += u128::from(revenue_cents.unsigned_abs()).pow(2);
    }

    /// Share of users who converted; 0 for an empty arm.
    pub fn conversion_rate(&self) -> f64 {
        if self.users == 0 {
            0.0
        } else {
            self.converters as f64 / self.users as f64
        }
    }

    /// Mean revenue per user in cents; 0 for an empty arm.
    pub fn revenue_per_user(&self) -> f64 {
        if self.users == 0 {
            0.0
        } else {
            self.revenue_cents_sum as f64 / self.users as f64
        }
    }

    /// Sample variance of revenue per user (cents²), from exact integer sums; `None` below
    /// two users.
    pub fn revenue_variance(&self) -> Option<f64> {
        if self.users < 2 {
            return None;
        }
        let n = i128::from(self.users);
        let sum = i128::from(self.revenue_cents_sum);
        let sum_sq = i128::try_from(self.revenue_cents_sum_sq).unwrap_or(i128::MAX);
        // n·Σx² − (Σx)² is exact in i128 and never negative.
        let spread = n.saturating_mul(sum_sq) - sum * sum;
        Some(spread as f64 / (n * (n - 1)) as f64)
    }
}

/// A two-sided 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Treated against control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Uplift {
    pub treated_rate: f64,
    pub control_rate: f64,
    /// `treated_rate − control_rate`.
    pub absolute: f64,
    /// Newcombe's hybrid score interval (method 10 of Newcombe 1998: the Wilson score
    /// intervals of both rates combined); unlike the Wald interval it stays inside [−1, 1]
    /// and keeps its coverage for rare conversions and small arms. `None` if an arm is empty.
    pub absolute_ci: Option<Interval>,
    /// `absolute / control_rate`; `None` when the control arm has no conversions.
    pub relative: Option<f64>,
    /// Mean revenue per user, cents.
    pub treated_revenue_per_user: f64,
    pub control_revenue_per_user: f64,
    /// `treated_revenue_per_user − control_revenue_per_user`, cents.
    pub revenue_difference: f64,
    /// Welch's interval: the difference ± the t quantile at the Welch–Satterthwaite degrees of
    /// freedom times the unpooled standard error. `None` if an arm has fewer than two users.
    pub revenue_ci: Option<Interval>,
    /// The Welch–Satterthwaite degrees of freedom; `None` also when both variances are 0.
    pub revenue_df: Option<f64>,
}

/// Uplift of `treated` over `control` with 95 % intervals.
pub fn uplift(treated: Arm, control: Arm) -> Uplift {
    let treated_rate = treated.conversion_rate();
    let control_rate = control.conversion_rate();
    let absolute = treated_rate - control_rate;
    let absolute_ci = (treated.users > 0 && control.users > 0).then(|| {
        newcombe(
            treated.converters,
            treated.users,
            control.converters,
            control.users,
        )
    });
    let relative = (control_rate > 0.0).then(|| absolute / control_rate);
    let revenue_difference = treated.revenue_per_user() - control.revenue_per_user();
    let (revenue_ci, revenue_df) = match welch(&treated, &control) {
        None => (None, None),
        Some((se, df)) => match df {
            None => (
                Some(Interval {
                    low: revenue_difference,
                    high: revenue_difference,
                }),
                None,
            ),
            Some(df) => {
                let half = student_t_quantile(0.975, df) * se;
                (
                    Some(Interval {
                        low: revenue_difference - half,
                        high: revenue_difference + half,
                    }),
                    Some(df),
                )
            }
        },
    };
    Uplift {
        treated_rate,
        control_rate,
        absolute,
        absolute_ci,
        relative,
        treated_revenue_per_user: treated.revenue_per_user(),
        control_revenue_per_user: control.revenue_per_user(),
        revenue_difference,
        revenue_ci,
        revenue_df,
    }
}

/// Wilson's score interval for `successes` of `n` (n > 0) at [`Z_95`].
pub fn wilson(successes: u64, n: u64) -> Interval {
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = Z_95 * Z_95;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// Newcombe's method 10 for `x1/n1 − x2/n2`.
fn newcombe(x1: u64, n1: u64, x2: u64, n2: u64) -> Interval {
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let (w1, w2) = (wilson(x1, n1), wilson(x2, n2));
    let d = p1 - p2;
    Interval {
        low: d - ((p1 - w1.low).powi(2) + (w2.high - p2).powi(2)).sqrt(),
        high: d + ((w1.high - p1).powi(2) + (p2 - w2.low).powi(2)).sqrt(),
    }
}

/// Standard error of the difference of means and the Welch–Satterthwaite degrees of freedom
/// (`None` when both variances are 0); `None` if an arm has fewer than two users.
fn welch(a: &Arm, b: &Arm) -> Option<(f64, Option<f64>)> {
    let va = a.revenue_variance()? / a.users as f64;
    let vb = b.revenue_variance()? / b.users as f64;
    let se = (va + vb).sqrt();
    if se == 0.0 {
        return Some((0.0, None));
    }
    let df = (va + vb).powi(2) / (va * va / (a.users - 1) as f64 + vb * vb / (b.users - 1) as f64);
    Some((se, Some(df)))
}

/// The `p` quantile (0.5 ≤ p < 1) of Student's t with `df` > 0 degrees of freedom, by
/// bisection on the distribution function (regularised incomplete beta).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 1.0_f64);
    while student_t_cdf(high, df) < p {
        high *= 2.0;
        if high > 1e12 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if student_t_cdf(mid, df) < p {
            low = mid;
        } else {
            high = mid;
        }
        if high - low <= 1e-13 * high.max(1.0) {
            break;
        }
    }
    0.5 * (low + high)
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * regularised_incomplete_beta(df / (df + t * t), 0.5 * df, 0.5);
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// I_x(a, b), by the continued fraction (Lentz), using the symmetry for fast convergence.
fn regularised_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=500 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    fn arm(revenues_cents: &[i64]) -> Arm {
        let mut arm = Arm::default();
        for &r in revenues_cents {
            arm.record(r > 0, r);
        }
        arm
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        close(ln_gamma(1.0), 0.0, 1e-13);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-13);
        close(ln_gamma(5.0), 24f64.ln(), 1e-12);
        close(ln_gamma(10.5), 1_133_278.388_7f64.ln(), 1e-9);
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        // Two-sided 95 % critical values of Student's t.
        for (df, expected) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (10.0, 2.228_138_852),
            (30.0, 2.042_272_456),
            (1e7, Z_95),
        ] {
            close(student_t_quantile(0.975, df), expected, 1e-6);
        }
        close(student_t_cdf(0.0, 3.0), 0.5, 1e-15);
        close(student_t_cdf(-2.228_138_852, 10.0), 0.025, 1e-9);
    }

    #[test]
    fn wilson_matches_the_published_interval() {
        // Newcombe (1998), Table I: 81/263 → 0.2553 to 0.3662 (Wilson score, no correction).
        let w = wilson(81, 263);
        close(w.low, 0.2553, 5e-5);
        close(w.high, 0.3662, 5e-5);
        // 0/10 → 0 to 0.2775.
        let w = wilson(0, 10);
        close(w.low, 0.0, 1e-12);
        close(w.high, 0.2775, 5e-5);
    }

    #[test]
    fn newcombe_matches_the_published_examples() {
        // Newcombe (1998), Statistics in Medicine 17:873–890, Table II, method 10.
        let i = newcombe(56, 70, 48, 80);
        close(i.low, 0.0524, 5e-5);
        close(i.high, 0.3339, 5e-5);
        let i = newcombe(9, 10, 3, 10);
        close(i.low, 0.1705, 5e-5);
        close(i.high, 0.8090, 5e-5);
    }

    #[test]
    fn conversion_uplift_with_interval() {
        let treated = Arm {
            users: 70,
            converters: 56,
            ..Arm::default()
        };
        let control = Arm {
            users: 80,
            converters: 48,
            ..Arm::default()
        };
        let u = uplift(treated, control);
        close(u.treated_rate, 0.8, 1e-15);
        close(u.control_rate, 0.6, 1e-15);
        close(u.absolute, 0.2, 1e-12);
        close(u.relative.unwrap(), 0.2 / 0.6, 1e-12);
        let ci = u.absolute_ci.unwrap();
        assert!(ci.contains(0.2) && !ci.contains(0.0), "{ci:?}");
    }

    #[test]
    fn revenue_difference_with_welch_interval_equal_variances() {
        // Means 2000 and 1000 cents, both sample variances 1e6, n = 3: se = √(2e6/3),
        // df = 4, half width = 2.776445105 × 816.496581 = 2266.95794.
        let u = uplift(arm(&[1000, 2000, 3000]), arm(&[0, 1000, 2000]));
        close(u.treated_revenue_per_user, 2000.0, 1e-9);
        close(u.control_revenue_per_user, 1000.0, 1e-9);
        close(u.revenue_difference, 1000.0, 1e-9);
        close(u.revenue_df.unwrap(), 4.0, 1e-9);
        let ci = u.revenue_ci.unwrap();
        close(ci.low, 1000.0 - 2266.95794, 1e-4);
        close(ci.high, 1000.0 + 2266.95794, 1e-4);
    }

    #[test]
    fn revenue_welch_degrees_of_freedom_unequal_arms() {
        // Treated [0, 0, 0, 4000]: mean 1000, s² = (3·1000² + 3000²)/3 = 4e6, s²/n = 1e6.
        // Control [0, 200]: mean 100, s² = 2·100²/1 = 2e4, s²/n = 1e4.
        // df = (1e6 + 1e4)² / ((1e6)²/3 + (1e4)²/1) = 1.0201e12 / 3.334333e11 = 3.0593899.
        let treated = arm(&[0, 0, 0, 4000]);
        assert_eq!(treated.revenue_cents_sum_sq, 16_000_000);
        close(treated.revenue_variance().unwrap(), 4e6, 1e-6);
        let u = uplift(treated, arm(&[0, 200]));
        close(u.revenue_difference, 900.0, 1e-9);
        close(
            u.revenue_df.unwrap(),
            1.0201e12 / 3.334_333_333_333e11,
            1e-6,
        );
        let half = student_t_quantile(0.975, u.revenue_df.unwrap()) * 1.01e6f64.sqrt();
        let ci = u.revenue_ci.unwrap();
        close(ci.high - ci.low, 2.0 * half, 1e-6);
        // t(0.975, 3.06) lies between the table values for 3 (3.182) and 4 (2.776) df.
        assert!(half > 2.776 * 1004.98 && half < 3.183 * 1004.99, "{half}");
    }

    #[test]
    fn degenerate_arms_give_no_interval() {
        let u = uplift(Arm::default(), arm(&[100]));
        assert_eq!(u.absolute_ci, None);
        assert_eq!(u.revenue_ci, None);
        assert_eq!(u.relative, Some(-1.0));
        let u = uplift(arm(&[0, 0]), arm(&[0, 0, 0]));
        assert_eq!(u.relative, None);
        assert_eq!(
            u.revenue_ci,
            Some(Interval {
                low: 0.0,
                high: 0.0
            })
        );
        assert_eq!(u.revenue_df, None);
    }
}
