//! Valid clickstream events made on the spot, stamped with the wall clock when produced, so
//! that event time → output time is the pipeline's latency. The mix is a shop's: mostly
//! product views, some carts, a few purchases.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use tierflow_events::{ClickEvent, EventTime, EventType};

use crate::UserDistribution;

/// Share of each event type, in per mille: 80 % product views, 15 % add to cart, 5 % purchases.
const MIX: [(EventType, u32); 3] = [
    (EventType::ProductView, 800),
    (EventType::AddToCart, 150),
    (EventType::Purchase, 50),
];

/// Draws users and builds events; one per producing task.
#[derive(Debug)]
pub(crate) struct EventMaker {
    rng: ChaCha8Rng,
    users: u64,
    zipf: Option<Zipf<f64>>,
    /// Distinguishes the event ids of runs against the same topic.
    run: String,
    seq: u64,
}

impl EventMaker {
    pub(crate) fn new(users: u64, distribution: UserDistribution, seed: u64, run: &str) -> Self {
        let zipf = match distribution {
            UserDistribution::Uniform => None,
            UserDistribution::Zipf => {
                Some(Zipf::new(users.max(1) as f64, 1.0).expect("valid Zipf parameters"))
            }
        };
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            users: users.max(1),
            zipf,
            run: run.to_owned(),
            seq: 0,
        }
    }

    /// The user id of index `i` (also the Kafka key).
    pub(crate) fn user_id(i: u64) -> String {
        format!("u{i:08}")
    }

    fn next_user(&mut self) -> u64 {
        match &self.zipf {
            // Zipf draws 1..=n.
            Some(zipf) => (zipf.sample(&mut self.rng) as u64).saturating_sub(1),
            None => self.rng.random_range(0..self.users),
        }
    }

    /// The next event, stamped `ts`: its key (the user id) and JSON value.
    pub(crate) fn next(&mut self, ts: EventTime) -> (String, Vec<u8>) {
        let user = self.next_user();
        let user_id = Self::user_id(user);
        self.seq += 1;
        let pick = self.rng.random_range(0..1000);
        let mut acc = 0;
        let mut event_type = EventType::ProductView;
        for (t, share) in MIX {
            acc += share;
            if pick < acc {
                event_type = t;
                break;
            }
        }
        let product = self.rng.random_range(0..5_000u32);
        let price = f64::from(self.rng.random_range(199..19_999u32)) / 100.0;
        let quantity = self.rng.random_range(1..4u32);
        // One session per user and 30 minutes of wall clock.
        let session_id = format!("{user_id}-{}", ts.unix_millis() / 1_800_000);
        let purchase = event_type == EventType::Purchase;
        let event = ClickEvent {
            schema_version: tierflow_events::click::CLICK_SCHEMA_VERSION,
            event_id: format!("{}-{}", self.run, self.seq),
            user_id: user_id.clone(),
            event_type,
            ts,
            session_id,
            product_id: Some(format!("p{product}")),
            category: Some(format!("c{}", product % 40)),
            price: Some(price),
            quantity: (event_type != EventType::ProductView).then_some(quantity),
            currency: Some("EUR".into()),
            order_id: purchase.then(|| format!("o-{}-{}", self.run, self.seq)),
            revenue: purchase.then(|| (price * f64::from(quantity) * 100.0).round() / 100.0),
            channel: Some(if user.is_multiple_of(3) { "app" } else { "web" }.into()),
            device: Some(
                if user.is_multiple_of(2) {
                    "mobile"
                } else {
                    "desktop"
                }
                .into(),
            ),
        };
        (user_id, event.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_valid() {
        for distribution in [UserDistribution::Uniform, UserDistribution::Zipf] {
            let mut maker = EventMaker::new(1_000, distribution, 1, "r");
            for _ in 0..2_000 {
                let (key, value) = maker.next(EventTime::now());
                let event = ClickEvent::from_json(&value).expect("valid event");
                assert_eq!(event.user_id, key);
            }
        }
    }
}
