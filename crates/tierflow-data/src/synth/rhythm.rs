//! When people shop: the hour-of-day and day-of-week shape of visit rates, per user.
//!
//! Times are read in UTC, which the simulation treats as the shoppers' local time.

use tierflow_events::EventTime;

use super::sample::{self, SimRng};

/// Relative visit rate per hour of the day (mean 1): quiet nights, a lunch bump, an evening
/// peak around 20–21h.
const HOURLY: [f64; 24] = mean_one([
    0.35, 0.20, 0.12, 0.08, 0.07, 0.10, 0.25, 0.50, 0.75, 0.90, 1.00, 1.05, //
    1.20, 1.15, 1.00, 0.95, 1.00, 1.10, 1.35, 1.60, 1.85, 1.90, 1.50, 0.85,
]);
const HOURLY_MAX: f64 = max(&HOURLY);
// The evening peak dwarfs the night.
const _: () = assert!(HOURLY[20] > 4.0 * HOURLY[3]);

/// Relative visit rate per weekday, Monday first: weekends busier.
const WEEKLY: [f64; 7] = [0.96, 0.92, 0.93, 0.97, 1.00, 1.08, 1.14];
const SATURDAY: usize = 5;

const fn mean_one<const N: usize>(mut raw: [f64; N]) -> [f64; N] {
    let mut total = 0.0;
    let mut i = 0;
    while i < N {
        total += raw[i];
        i += 1;
    }
    let mut i = 0;
    while i < N {
        raw[i] = raw[i] * N as f64 / total;
        i += 1;
    }
    raw
}

const fn max(values: &[f64]) -> f64 {
    let mut best = values[0];
    let mut i = 1;
    while i < values.len() {
        if values[i] > best {
            best = values[i];
        }
        i += 1;
    }
    best
}

/// Hour of the day, 0–23.
pub(crate) fn hour_of_day(ms: i64) -> usize {
    (ms.rem_euclid(EventTime::MILLIS_PER_DAY) / EventTime::MILLIS_PER_HOUR) as usize
}

/// Day of the week, Monday = 0 (1970-01-01 was a Thursday).
pub(crate) fn day_of_week(ms: i64) -> usize {
    (ms.div_euclid(EventTime::MILLIS_PER_DAY) + 3).rem_euclid(7) as usize
}

/// One user's rhythm: the shared shape, shifted a couple of hours for early birds and night
/// owls, with a personal taste for weekends.
#[derive(Debug, Clone)]
pub(crate) struct Rhythm {
    hour_shift: usize,
    weekly: [f64; 7],
    peak: f64,
}

impl Rhythm {
    pub(crate) fn draw(rng: &mut SimRng) -> Self {
        // -2..=2 hours, mostly 0.
        let shift = (sample::normal(rng) * 0.9).round().clamp(-2.0, 2.0) as i64;
        let weekend_taste = sample::lognormal(rng, 1.0, 0.35);
        let mut weekly = WEEKLY;
        for factor in &mut weekly[SATURDAY..] {
            *factor *= weekend_taste;
        }
        let weekly = mean_one(weekly);
        Self {
            hour_shift: shift.rem_euclid(24) as usize,
            peak: HOURLY_MAX * max(&weekly),
            weekly,
        }
    }

    /// Relative visit rate at `ms` (mean about 1 over a week).
    pub(crate) fn factor(&self, ms: i64) -> f64 {
        let hour = (hour_of_day(ms) + 24 - self.hour_shift) % 24;
        HOURLY[hour] * self.weekly[day_of_week(ms)]
    }

    /// An upper bound of [`Rhythm::factor`].
    pub(crate) fn peak(&self) -> f64 {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::sample::{Purpose, rng_for};

    #[test]
    fn calendar_arithmetic() {
        let t = |text| EventTime::parse_rfc3339(text).unwrap().unix_millis();
        assert_eq!(day_of_week(t("2026-01-01T12:00:00Z")), 3); // a Thursday
        assert_eq!(day_of_week(t("2026-01-05T00:00:00Z")), 0); // a Monday
        assert_eq!(day_of_week(t("1969-12-28T23:00:00Z")), 6); // a Sunday
        assert_eq!(hour_of_day(t("2026-01-01T21:59:59Z")), 21);
        assert_eq!(hour_of_day(t("1969-12-31T23:30:00Z")), 23);
    }

    #[test]
    fn rhythm_averages_one_and_peaks_in_the_evening() {
        let mean: f64 = HOURLY.iter().sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-12);
        let mut rng = rng_for(3, Purpose::User, 0);
        for _ in 0..100 {
            let rhythm = Rhythm::draw(&mut rng);
            let samples = (0..7 * 24).map(|h| rhythm.factor(h * EventTime::MILLIS_PER_HOUR));
            let (mut sum, mut top) = (0.0, 0.0_f64);
            for f in samples {
                sum += f;
                top = top.max(f);
            }
            assert!((sum / 168.0 - 1.0).abs() < 0.05, "{rhythm:?}");
            assert!(top <= rhythm.peak() + 1e-12);
        }
    }
}
