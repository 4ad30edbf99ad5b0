//! Taobao UserBehavior (Alibaba Tianchi; `user,item,category,behavior,unix_seconds`, no
//! header) to views, carts, wishlists and purchases, streamed in input order.
//!
//! Decisions:
//! - `pv` → `product_view`, `cart` → `add_to_cart`, `fav` → `wishlist_add`, `buy` →
//!   `purchase`; anything else is rejected (`behavior unknown`).
//! - **No prices in the data.** A purchase gets `quantity` 1, `price` = `revenue` =
//!   [`TaobaoOptions::unit_price`] (default 1.0), so revenue counts units bought.
//! - **Sessions** are cut per user by inactivity: an event more than
//!   [`TaobaoOptions::session_gap_minutes`] before the user's current session's first event
//!   or after its last one starts session `{user}-{n+1}` (n from 1). The file is time
//!   ordered, but a slightly out-of-order event still joins the session it falls near.
//! - Ids are integers (the data set's definition), written back without leading zeros.
//!   `event_id` = `taobao-{user}-{unix_seconds}-{line}`.

use std::collections::HashMap;
use std::io::Read;

use tierflow_events::{EventTime, EventType};

use super::report::Emitter;
use super::rows::{Reason, Row, Rows};
use super::{ImportError, bare_event, is_currency_code, wire_time};

/// How to fill in what the Taobao data does not carry.
#[derive(Debug, Clone, PartialEq)]
pub struct TaobaoOptions {
    /// Price of every unit bought (the data set has none); purchase revenue = this.
    pub unit_price: f64,
    /// Inactivity that ends a session.
    pub session_gap_minutes: u32,
    /// ISO 4217 code put on purchases.
    pub currency: String,
}

impl TaobaoOptions {
    pub const DEFAULT_UNIT_PRICE: f64 = 1.0;
    pub const DEFAULT_SESSION_GAP_MINUTES: u32 = 30;
    pub const DEFAULT_CURRENCY: &'static str = "CNY";

    fn check(&self) -> Result<(), ImportError> {
        if !(self.unit_price.is_finite() && self.unit_price >= 0.0) {
            return Err(ImportError::Options(format!(
                "the Taobao unit price must be a finite number ≥ 0, got {}",
                self.unit_price
            )));
        }
        if !is_currency_code(&self.currency) {
            return Err(ImportError::Options(format!(
                "the Taobao currency must be a three-letter ISO 4217 code such as CNY, got {:?}",
                self.currency
            )));
        }
        Ok(())
    }
}

impl Default for TaobaoOptions {
    fn default() -> Self {
        Self {
            unit_price: Self::DEFAULT_UNIT_PRICE,
            session_gap_minutes: Self::DEFAULT_SESSION_GAP_MINUTES,
            currency: Self::DEFAULT_CURRENCY.to_owned(),
        }
    }
}

const FIELDS: usize = 5;

pub(super) fn import<R: Read>(
    options: &TaobaoOptions,
    input: R,
    out: &mut Emitter<'_>,
) -> Result<(), ImportError> {
    options.check()?;
    let gap_millis = i64::from(options.session_gap_minutes) * EventTime::MILLIS_PER_MINUTE;
    let mut sessions: HashMap<u64, Session> = HashMap::new();
    let mut rows = Rows::new(input, b',', false);
    while let Some(row) = rows.next_row()? {
        out.row_read();
        let behavior = match Behavior::parse(row) {
            Ok(behavior) => behavior,
            Err(reason) => {
                out.reject(&reason, row.line, 1);
                continue;
            }
        };
        let n = sessions
            .entry(behavior.user)
            .or_default()
            .place(behavior.ts.unix_millis(), gap_millis);
        let mut event = bare_event(
            format!(
                "taobao-{}-{}-{}",
                behavior.user, behavior.unix_seconds, row.line
            ),
            behavior.user.to_string(),
            behavior.event_type,
            behavior.ts,
            format!("{}-{n}", behavior.user),
        );
        event.product_id = Some(behavior.item.to_string());
        event.category = Some(behavior.category.to_string());
        if behavior.event_type == EventType::Purchase {
            event.price = Some(options.unit_price);
            event.quantity = Some(1);
            event.revenue = Some(options.unit_price);
            event.currency = Some(options.currency.clone());
        }
        out.emit(event, row.line, 1)?;
    }
    Ok(())
}

/// One row that passed every check.
#[derive(Debug)]
struct Behavior {
    user: u64,
    item: u64,
    category: u64,
    event_type: EventType,
    unix_seconds: i64,
    ts: EventTime,
}

impl Behavior {
    fn parse(row: Row<'_>) -> Result<Self, Reason> {
        if row.len() != FIELDS {
            return Err(format!("wrong number of fields (expected {FIELDS})").into());
        }
        let user = id(row, 0, "user_id")?;
        let item = id(row, 1, "item_id")?;
        let category = id(row, 2, "category_id")?;
        let event_type = match row.text(3, "behavior")? {
            "pv" => EventType::ProductView,
            "cart" => EventType::AddToCart,
            "fav" => EventType::WishlistAdd,
            "buy" => EventType::Purchase,
            "" => return Err("behavior missing".into()),
            _ => return Err("behavior unknown".into()),
        };
        let unix_seconds = match row.text(4, "timestamp")? {
            "" => return Err("timestamp missing".into()),
            text => text
                .parse::<i64>()
                .map_err(|_| "timestamp not an integer")?,
        };
        let ts = unix_seconds
            .checked_mul(EventTime::MILLIS_PER_SECOND)
            .and_then(wire_time)
            .ok_or("timestamp out of range (years 0000 to 9999)")?;
        Ok(Self {
            user,
            item,
            category,
            event_type,
            unix_seconds,
            ts,
        })
    }
}

fn id(row: Row<'_>, index: usize, name: &'static str) -> Result<u64, Reason> {
    match row.text(index, name)? {
        "" => Err(format!("{name} missing").into()),
        text if text.bytes().all(|b| b.is_ascii_digit()) => text
            .parse()
            .map_err(|_| format!("{name} not an integer").into()),
        _ => Err(format!("{name} not an integer").into()),
    }
}

/// A user's current session.
#[derive(Debug, Default)]
struct Session {
    /// 0 before the user's first event.
    n: u32,
    first_millis: i64,
    last_millis: i64,
}

impl Session {
    /// The session number of an event at `millis`, opening a new session when it is more
    /// than `gap` away from the current one.
    fn place(&mut self, millis: i64, gap: i64) -> u32 {
        let joins = self.n > 0
            && millis >= self.first_millis.saturating_sub(gap)
            && millis <= self.last_millis.saturating_add(gap);
        if joins {
            self.first_millis = self.first_millis.min(millis);
            self.last_millis = self.last_millis.max(millis);
        } else {
            self.n = self.n.saturating_add(1);
            self.first_millis = millis;
            self.last_millis = millis;
        }
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = EventTime::MILLIS_PER_MINUTE;

    #[test]
    fn sessions_break_after_the_gap_and_tolerate_disorder() {
        let mut session = Session::default();
        let numbers: Vec<u32> = [0, 10, 40, 71, 60, 30, 200, 169, 168]
            .iter()
            .map(|minute| session.place(minute * MIN, 30 * MIN))
            .collect();
        // 0, 10, 40: one session (each within 30 minutes of the span). 71 is 31 after 40:
        // session 2, which 60 and 30 join (span [30, 71]). 200: session 3. 169 is 31 before
        // 200: session 4, which 168 joins.
        assert_eq!(numbers, [1, 1, 1, 2, 2, 2, 3, 4, 4]);
    }

    #[test]
    fn options_are_checked() {
        assert!(TaobaoOptions::default().check().is_ok());
        for bad in [
            TaobaoOptions {
                unit_price: -1.0,
                ..TaobaoOptions::default()
            },
            TaobaoOptions {
                unit_price: f64::NAN,
                ..TaobaoOptions::default()
            },
            TaobaoOptions {
                currency: "cny".into(),
                ..TaobaoOptions::default()
            },
        ] {
            assert!(
                matches!(bad.check(), Err(ImportError::Options(_))),
                "{bad:?}"
            );
        }
    }
}
