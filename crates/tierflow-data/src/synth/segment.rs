//! Who the users are: five latent segments, and the per-user behaviour drawn from each, with
//! enough spread inside a segment that segments overlap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tierflow_events::EventTime;

use super::SynthConfig;
use super::catalogue::{CATEGORY_COUNT, Catalogue, DEALS};
use super::rhythm::Rhythm;
use super::sample::{self, SimRng};

const DAY_MS: f64 = EventTime::MILLIS_PER_DAY as f64;

/// A user's latent type: what a model should learn to recognise from behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// Frequent visits, high basket values, rarely churn.
    LoyalHighSpender,
    /// Frequent visits, cheap products and the `deals` category, moderate buying.
    BargainHunter,
    /// Visit now and then, rarely buy.
    Browser,
    /// Activity fades exponentially from the start; some stop entirely part-way.
    Decaying,
    /// First appear part-way through the span; some stay, some leave soon.
    NewUser,
}

impl Segment {
    pub const ALL: [Segment; 5] = [
        Self::LoyalHighSpender,
        Self::BargainHunter,
        Self::Browser,
        Self::Decaying,
        Self::NewUser,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LoyalHighSpender => "loyal_high_spender",
            Self::BargainHunter => "bargain_hunter",
            Self::Browser => "browser",
            Self::Decaying => "decaying",
            Self::NewUser => "new_user",
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Segment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown segment {s:?}"))
    }
}

/// How common each segment is: relative weights, normalised when drawn (so they need not sum
/// to 1). The default sums to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentMix {
    pub loyal_high_spender: f64,
    pub bargain_hunter: f64,
    pub browser: f64,
    pub decaying: f64,
    pub new_user: f64,
}

impl Default for SegmentMix {
    fn default() -> Self {
        Self {
            loyal_high_spender: 0.10,
            bargain_hunter: 0.25,
            browser: 0.35,
            decaying: 0.15,
            new_user: 0.15,
        }
    }
}

impl SegmentMix {
    /// Everyone in one segment.
    pub fn only(segment: Segment) -> Self {
        let mut mix = Self {
            loyal_high_spender: 0.0,
            bargain_hunter: 0.0,
            browser: 0.0,
            decaying: 0.0,
            new_user: 0.0,
        };
        *mix.weight_mut(segment) = 1.0;
        mix
    }

    /// The weight as configured (not normalised).
    pub fn weight(&self, segment: Segment) -> f64 {
        match segment {
            Segment::LoyalHighSpender => self.loyal_high_spender,
            Segment::BargainHunter => self.bargain_hunter,
            Segment::Browser => self.browser,
            Segment::Decaying => self.decaying,
            Segment::NewUser => self.new_user,
        }
    }

    /// Sets one segment's weight.
    pub fn with(mut self, segment: Segment, weight: f64) -> Self {
        *self.weight_mut(segment) = weight;
        self
    }

    fn weight_mut(&mut self, segment: Segment) -> &mut f64 {
        match segment {
            Segment::LoyalHighSpender => &mut self.loyal_high_spender,
            Segment::BargainHunter => &mut self.bargain_hunter,
            Segment::Browser => &mut self.browser,
            Segment::Decaying => &mut self.decaying,
            Segment::NewUser => &mut self.new_user,
        }
    }

    /// The share of users expected in `segment`, as the generator draws it.
    pub fn fraction(&self, segment: Segment) -> f64 {
        let weights = self.usable_weights();
        weights[segment as usize] / weights.iter().sum::<f64>()
    }

    /// Weights the generator can use: bad ones (negative, NaN, infinite) count as 0, and a
    /// mix with nothing left falls back to the default. [`super::SynthConfig::validate`]
    /// refuses such mixes up front.
    fn usable_weights(&self) -> [f64; 5] {
        let weights = Segment::ALL.map(|s| {
            let w = self.weight(s);
            if w.is_finite() && w > 0.0 { w } else { 0.0 }
        });
        if weights.iter().sum::<f64>() > 0.0 {
            weights
        } else {
            Self::default().usable_weights()
        }
    }

    fn pick(&self, u: f64) -> Segment {
        Segment::ALL[sample::index_in(&sample::cumulative(self.usable_weights()), u)]
    }
}

/// When a user is around: the segment (first draw of the user's stream, so it is cheap to
/// recover) and the span they are active in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Life {
    pub(crate) segment: Segment,
    /// No session starts before this.
    pub(crate) active_from_ms: i64,
    /// A hard stop (churn) inside the span: no session starts at or after this.
    pub(crate) stops_at_ms: Option<i64>,
}

impl Life {
    pub(crate) fn segment(rng: &mut SimRng, config: &SynthConfig) -> Segment {
        config.mix.pick(sample::unit(rng))
    }

    pub(crate) fn draw(rng: &mut SimRng, config: &SynthConfig) -> Self {
        let segment = Self::segment(rng, config);
        let start = config.start.unix_millis();
        let end = config.end().unix_millis();
        let at_day = |day: f64, from: i64| from.saturating_add((day * DAY_MS) as i64);
        let active_from_ms = match segment {
            Segment::NewUser => {
                let fraction = sample::between(rng, 0.05, 0.85);
                start.saturating_add(((end - start) as f64 * fraction) as i64)
            }
            _ => start,
        };
        let stop_day = match segment {
            // Steady segments churn at a small constant hazard per day.
            Segment::LoyalHighSpender => Some(sample::exp1(rng) / 0.000_4),
            Segment::BargainHunter => Some(sample::exp1(rng) / 0.001),
            Segment::Browser => Some(sample::exp1(rng) / 0.003),
            Segment::Decaying => {
                let stops = sample::chance(rng, 0.5);
                let day = sample::between(rng, 7.0, 60.0);
                stops.then_some(day)
            }
            Segment::NewUser => {
                let stops = sample::chance(rng, 0.35);
                let day = sample::between(rng, 5.0, 40.0);
                stops.then_some(day)
            }
        };
        let stops_at_ms = stop_day
            .map(|day| at_day(day, active_from_ms))
            .filter(|&at| at < end);
        Self {
            segment,
            active_from_ms,
            stops_at_ms,
        }
    }
}

/// Where a visit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Web,
    App,
    Email,
    Ads,
}

impl Channel {
    const ALL: [Channel; 4] = [Self::Web, Self::App, Self::Email, Self::Ads];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::App => "app",
            Self::Email => "email",
            Self::Ads => "ads",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    Desktop,
    Mobile,
    Tablet,
}

impl Device {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
        }
    }
}

/// How many visits a user makes over time relative to their base rate.
#[derive(Debug, Clone, Copy)]
enum Activity {
    Steady,
    /// `exp(-per_day × days since from_ms)`.
    Decaying {
        from_ms: i64,
        per_day: f64,
    },
    /// `1 + boost × exp(-days since from_ms / 7)`: eager first weeks.
    Onboarding {
        from_ms: i64,
        boost: f64,
    },
}

impl Activity {
    fn at(self, ms: i64) -> f64 {
        match self {
            Self::Steady => 1.0,
            Self::Decaying { from_ms, per_day } => {
                (-per_day * (ms - from_ms) as f64 / DAY_MS).exp()
            }
            Self::Onboarding { from_ms, boost } => {
                1.0 + boost * (-((ms - from_ms) as f64 / DAY_MS) / 7.0).exp()
            }
        }
    }

    fn peak(self) -> f64 {
        match self {
            Self::Steady | Self::Decaying { .. } => 1.0,
            Self::Onboarding { boost, .. } => 1.0 + boost,
        }
    }
}

/// The median behaviour of a segment; users spread around it.
struct Base {
    sessions_per_day: f64,
    product_views: f64,
    p_search_entry: f64,
    p_navigate: f64,
    p_add: f64,
    p_wishlist: f64,
    p_remove: f64,
    p_checkout: f64,
    p_purchase: f64,
    /// Category weights scale with `(median price / 30 €)^-price_beta`.
    price_beta: f64,
    price_picks: i8,
    extra_quantity: f64,
    p_refund: f64,
    deals_affinity: f64,
    /// web, app, email, ads.
    channels: [f64; 4],
    /// Scales the per-user spread.
    spread: f64,
}

const fn base(segment: Segment) -> Base {
    match segment {
        Segment::LoyalHighSpender => Base {
            sessions_per_day: 0.45,
            product_views: 7.0,
            p_search_entry: 0.35,
            p_navigate: 0.10,
            p_add: 0.18,
            p_wishlist: 0.04,
            p_remove: 0.05,
            p_checkout: 0.70,
            p_purchase: 0.88,
            price_beta: 0.0,
            price_picks: -2,
            extra_quantity: 0.4,
            p_refund: 0.03,
            deals_affinity: 0.5,
            channels: [0.35, 0.40, 0.20, 0.05],
            spread: 1.0,
        },
        Segment::BargainHunter => Base {
            sessions_per_day: 0.40,
            product_views: 9.0,
            p_search_entry: 0.60,
            p_navigate: 0.15,
            p_add: 0.13,
            p_wishlist: 0.06,
            p_remove: 0.08,
            p_checkout: 0.50,
            p_purchase: 0.75,
            price_beta: 1.3,
            price_picks: 3,
            extra_quantity: 0.5,
            p_refund: 0.06,
            deals_affinity: 4.0,
            channels: [0.35, 0.20, 0.25, 0.20],
            spread: 1.0,
        },
        Segment::Browser => Base {
            sessions_per_day: 0.18,
            product_views: 5.0,
            p_search_entry: 0.40,
            p_navigate: 0.12,
            p_add: 0.05,
            p_wishlist: 0.09,
            p_remove: 0.10,
            p_checkout: 0.25,
            p_purchase: 0.50,
            price_beta: 0.3,
            price_picks: 1,
            extra_quantity: 0.2,
            p_refund: 0.05,
            deals_affinity: 1.0,
            channels: [0.50, 0.10, 0.05, 0.35],
            spread: 1.0,
        },
        Segment::Decaying => Base {
            sessions_per_day: 0.40,
            product_views: 6.0,
            p_search_entry: 0.40,
            p_navigate: 0.10,
            p_add: 0.15,
            p_wishlist: 0.05,
            p_remove: 0.06,
            p_checkout: 0.55,
            p_purchase: 0.80,
            price_beta: 0.2,
            price_picks: 1,
            extra_quantity: 0.4,
            p_refund: 0.05,
            deals_affinity: 1.0,
            channels: [0.45, 0.25, 0.15, 0.15],
            spread: 1.0,
        },
        Segment::NewUser => Base {
            sessions_per_day: 0.30,
            product_views: 6.0,
            p_search_entry: 0.45,
            p_navigate: 0.12,
            p_add: 0.12,
            p_wishlist: 0.06,
            p_remove: 0.07,
            p_checkout: 0.50,
            p_purchase: 0.80,
            price_beta: 0.3,
            price_picks: 1,
            extra_quantity: 0.3,
            p_refund: 0.04,
            deals_affinity: 1.2,
            channels: [0.40, 0.10, 0.05, 0.45],
            spread: 1.5,
        },
    }
}

/// Everything that drives one user's sessions, drawn once.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) life: Life,
    sessions_per_day: f64,
    activity: Activity,
    rhythm: Rhythm,
    /// Mean product views per visit (at least 1).
    pub(crate) product_views: f64,
    pub(crate) p_search_entry: f64,
    pub(crate) p_navigate: f64,
    pub(crate) p_add: f64,
    pub(crate) p_wishlist: f64,
    pub(crate) p_remove: f64,
    pub(crate) p_checkout: f64,
    pub(crate) p_purchase: f64,
    pub(crate) p_switch_category: f64,
    pub(crate) price_picks: i8,
    pub(crate) extra_quantity: f64,
    pub(crate) p_refund: f64,
    category_cdf: [f64; CATEGORY_COUNT],
    channel_cdf: [f64; 4],
    mobile_share: f64,
}

impl Profile {
    /// Draws the behaviour that follows `life` from the same stream.
    pub(crate) fn draw(
        rng: &mut SimRng,
        life: Life,
        config: &SynthConfig,
        catalogue: &Catalogue,
    ) -> Self {
        let base = base(life.segment);
        let s = base.spread;
        // One latent engagement level moves visits and conversion together, so that within a
        // segment past spend still predicts future spend.
        let engagement = sample::normal(rng);
        let mut spread = |sigma: f64| (s * sigma * sample::normal(rng)).exp();
        let sessions_per_day = base.sessions_per_day * (0.4 * s * engagement).exp() * spread(0.25);
        let conversion = (0.2 * s * engagement).exp() * spread(0.25);
        let product_views = (base.product_views * spread(0.3)).max(1.0);
        let p_add = (base.p_add * conversion).min(0.9);
        let p_checkout = (base.p_checkout * conversion).min(0.95);
        let p_purchase = (base.p_purchase * spread(0.15)).min(0.97);
        let extra_quantity = base.extra_quantity * spread(0.3);
        let p_refund = (base.p_refund * spread(0.4)).min(0.5);
        let p_wishlist = base.p_wishlist * spread(0.3);
        let price_beta = base.price_beta + 0.35 * s * sample::normal(rng);

        let activity = match life.segment {
            Segment::Decaying => Activity::Decaying {
                from_ms: config.start.unix_millis(),
                per_day: std::f64::consts::LN_2 / sample::log_uniform(rng, 10.0, 45.0),
            },
            Segment::NewUser => Activity::Onboarding {
                from_ms: life.active_from_ms,
                boost: sample::between(rng, 0.5, 2.0),
            },
            _ => Activity::Steady,
        };
        let rhythm = Rhythm::draw(rng);

        let mut weights = [0.0; CATEGORY_COUNT];
        for (w, (c, category)) in weights
            .iter_mut()
            .zip(catalogue.categories().iter().enumerate())
        {
            let affinity = if c == DEALS { base.deals_affinity } else { 1.0 };
            *w = category.traffic * (category.median_eur / 30.0).powf(-price_beta) * affinity;
        }
        // Two favourite categories, chosen by the same taste, get most of the attention.
        for _ in 0..2 {
            let favourite = sample::index_in(&sample::cumulative(weights), sample::unit(rng));
            weights[favourite] *= 3.0;
        }
        let channels = base.channels.map(|w| w * sample::lognormal(rng, 1.0, 0.5));
        let mobile_share = sample::between(rng, 0.2, 0.85);

        Self {
            life,
            sessions_per_day,
            activity,
            rhythm,
            product_views,
            p_search_entry: base.p_search_entry,
            p_navigate: base.p_navigate,
            p_add,
            p_wishlist,
            p_remove: base.p_remove,
            p_checkout,
            p_purchase,
            p_switch_category: 0.25,
            price_picks: base.price_picks,
            extra_quantity,
            p_refund,
            category_cdf: sample::cumulative(weights),
            channel_cdf: sample::cumulative(channels),
            mobile_share,
        }
    }

    /// Expected visits per day at `ms`.
    pub(crate) fn session_rate(&self, ms: i64) -> f64 {
        self.sessions_per_day * self.activity.at(ms) * self.rhythm.factor(ms)
    }

    /// An upper bound of [`Profile::session_rate`], for thinning.
    pub(crate) fn peak_session_rate(&self) -> f64 {
        self.sessions_per_day * self.activity.peak() * self.rhythm.peak()
    }

    pub(crate) fn pick_category(&self, rng: &mut SimRng) -> u16 {
        sample::index_in(&self.category_cdf, sample::unit(rng)) as u16
    }

    pub(crate) fn pick_channel(&self, rng: &mut SimRng) -> Channel {
        Channel::ALL[sample::index_in(&self.channel_cdf, sample::unit(rng))]
    }

    /// The app runs on phones and tablets; the rest follows the user's habits.
    pub(crate) fn pick_device(&self, channel: Channel, rng: &mut SimRng) -> Device {
        let u = sample::unit(rng);
        match channel {
            Channel::App if u < 0.85 => Device::Mobile,
            Channel::App => Device::Tablet,
            _ if u < self.mobile_share => Device::Mobile,
            _ if u < self.mobile_share + 0.08 => Device::Tablet,
            _ => Device::Desktop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for segment in Segment::ALL {
            assert_eq!(segment.as_str().parse::<Segment>(), Ok(segment));
            assert_eq!(
                serde_json::to_string(&segment).unwrap(),
                format!("\"{segment}\"")
            );
        }
        assert!("loyal".parse::<Segment>().is_err());
    }

    #[test]
    fn mix_fractions() {
        let mix = SegmentMix::default();
        let total: f64 = Segment::ALL.iter().map(|&s| mix.weight(s)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let only = SegmentMix::only(Segment::Browser);
        assert_eq!(only.fraction(Segment::Browser), 1.0);
        assert_eq!(only.pick(0.0), Segment::Browser);
        assert_eq!(only.pick(0.999), Segment::Browser);
        let broken = SegmentMix {
            browser: f64::NAN,
            ..SegmentMix::only(Segment::Decaying)
        };
        assert_eq!(broken.fraction(Segment::Decaying), 1.0);
        let empty = SegmentMix {
            browser: 0.0,
            ..SegmentMix::only(Segment::Browser)
        };
        assert_eq!(empty.fraction(Segment::Browser), 0.35);
    }

    #[test]
    fn activity_shapes() {
        let day = EventTime::MILLIS_PER_DAY;
        let decaying = Activity::Decaying {
            from_ms: 0,
            per_day: std::f64::consts::LN_2 / 10.0,
        };
        assert!((decaying.at(10 * day) - 0.5).abs() < 1e-12);
        let onboarding = Activity::Onboarding {
            from_ms: day,
            boost: 2.0,
        };
        assert_eq!(onboarding.at(day), onboarding.peak());
        assert!(onboarding.at(60 * day) < 1.001);
    }
}
