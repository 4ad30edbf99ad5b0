//! The stored form of a user's state: one format-version byte, then a compact bincode image
//! (times relative to the user's newest event, sparse per-type counts), so a typical active
//! user fits in well under 1 KiB. Decoding an older format goes through its own wire type and
//! a migration, so a deploy never has to wipe Redis.

use serde::{Deserialize, Serialize};
use tierflow_events::{EventTime, EventType};

use crate::spec::LEVELS;
use crate::state::{Bucket, Lifetime, Published, SessionMark, UserState};

/// Format of the bytes `encode_state` writes.
pub const STATE_FORMAT_VERSION: u8 = 3;

/// Stored state that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateDecodeError {
    #[error("stored user state is empty")]
    Empty,
    #[error("stored user state has format {found}; this build reads up to {STATE_FORMAT_VERSION}")]
    UnknownFormat { found: u8 },
    #[error("stored user state (format {format}) is corrupt: {reason}")]
    Corrupt { format: u8, reason: String },
}

/// Largest state the decoder accepts: a corrupt length must not allocate gigabytes.
const MAX_STATE_BYTES: usize = 64 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_STATE_BYTES>()
}

/// Format 1 on the wire. Times are milliseconds *behind* `newest_ms`, bucket indices are
/// buckets behind the newest bucket of their level: small numbers, short varints.
#[derive(Serialize, Deserialize)]
struct WireV1 {
    newest_ms: Option<i64>,
    first_seen_back: u64,
    levels: [Vec<WireBucket>; LEVELS.len()],
    recent_ids: Vec<[u8; 8]>,
    sessions: Vec<(u32, u64, u64)>,
    purchases_back: Vec<u64>,
    open_cart_cents: i64,
    /// `None` when the cart was never touched.
    cart_back: Option<u64>,
    applied: Vec<(i32, i64)>,
}

/// Format 2: format 1 plus the lifetime aggregates.
#[derive(Serialize, Deserialize)]
struct WireV2 {
    base: WireV1,
    orders: u32,
    purchase_days: u32,
    net_spend_cents: i64,
    first_purchase_back: Option<u64>,
}

/// Format 3: format 2 plus the pipeline's decision memory.
#[derive(Serialize, Deserialize)]
struct WireV3 {
    base: WireV2,
    tier: Option<u8>,
    /// Signed: a decision time may lie after the newest event (a fresh
    /// state's default, or a clock that moved back), and must survive.
    tier_since_back: i64,
    score_back: Option<i64>,
    /// `UserState::rules`, as the rules layer encoded it.
    rules: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct WireBucket {
    back: u32,
    /// Bit `i` set = `counts` holds the count of `EventType::ALL[i]`.
    types: u16,
    counts: Vec<u32>,
    revenue_cents: i64,
    refund_cents: i64,
    sessions: u32,
    categories: [u8; 4],
}

pub fn encode_state(state: &UserState) -> Vec<u8> {
    let newest = state.newest_ms.unwrap_or(0);
    let back = |ts: i64| newest.saturating_sub(ts);
    let published = &state.published;
    let wire = WireV3 {
        base: wire_v2(state),
        tier: published.tier,
        tier_since_back: back(published.tier_since_ms),
        score_back: published.score_ms.map(back),
        rules: state.rules.clone(),
    };
    let mut bytes = Vec::with_capacity(512);
    bytes.push(STATE_FORMAT_VERSION);
    bincode::serde::encode_into_std_write(&wire, &mut bytes, config())
        .expect("user state always encodes into memory");
    bytes
}

fn wire_v2(state: &UserState) -> WireV2 {
    let newest = state.newest_ms.unwrap_or(0);
    let back = |ts: i64| newest.saturating_sub(ts).max(0) as u64;
    WireV2 {
        base: wire_v1(state),
        orders: state.lifetime.orders,
        purchase_days: state.lifetime.purchase_days,
        net_spend_cents: state.lifetime.net_spend_cents,
        first_purchase_back: state.lifetime.first_purchase_ms.map(back),
    }
}

fn wire_v1(state: &UserState) -> WireV1 {
    let newest = state.newest_ms.unwrap_or(0);
    let back = |ts: i64| newest.saturating_sub(ts).max(0) as u64;
    WireV1 {
        newest_ms: state.newest_ms,
        first_seen_back: back(state.first_seen_ms),
        levels: std::array::from_fn(|l| {
            let newest_bucket = LEVELS[l].bucket_of(EventTime::from_unix_millis(newest));
            state.levels[l]
                .iter()
                .map(|b| {
                    let mut types = 0u16;
                    let mut counts = Vec::new();
                    for (i, &count) in b.counts.iter().enumerate() {
                        if count > 0 {
                            types |= 1 << i;
                            counts.push(count);
                        }
                    }
                    WireBucket {
                        back: (newest_bucket - b.index).clamp(0, i64::from(u32::MAX)) as u32,
                        types,
                        counts,
                        revenue_cents: b.revenue_cents,
                        refund_cents: b.refund_cents,
                        sessions: b.sessions,
                        categories: b.categories.to_le_bytes(),
                    }
                })
                .collect()
        }),
        recent_ids: state.recent_ids.iter().map(|h| h.to_le_bytes()).collect(),
        sessions: state
            .sessions
            .iter()
            .map(|s| (s.hash, back(s.first_ms), back(s.last_ms)))
            .collect(),
        purchases_back: state.purchases_ms.iter().map(|&t| back(t)).collect(),
        open_cart_cents: state.open_cart_cents,
        cart_back: (state.cart_updated_ms != 0).then(|| back(state.cart_updated_ms)),
        applied: state.applied.clone(),
    }
}

/// First byte of a stored value that carries, beside the state, an undo image: the state
/// before the write (the pipeline's transactional mode rolls back to it when the write's Kafka
/// transaction never committed). Readers that only want the state use [`decode_state`], which
/// understands both forms.
pub const UNDO_ENVELOPE: u8 = 0xE1;

/// `state` plus its undo image (`None`: the user had no state before this write).
pub fn encode_with_undo(state: &UserState, undo: Option<&UserState>) -> Vec<u8> {
    let current = encode_state(state);
    let previous = undo.map(encode_state).unwrap_or_default();
    let mut bytes = Vec::with_capacity(5 + current.len() + previous.len());
    bytes.push(UNDO_ENVELOPE);
    bytes.extend_from_slice(&(current.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&current);
    bytes.extend_from_slice(&previous);
    bytes
}

/// A stored value as `(state, undo)`: `undo` is `Some` only for values written with
/// [`encode_with_undo`] (`Some(None)`: there was no state before).
#[allow(clippy::type_complexity)]
pub fn decode_with_undo(
    bytes: &[u8],
) -> Result<(UserState, Option<Option<UserState>>), StateDecodeError> {
    if bytes.first() != Some(&UNDO_ENVELOPE) {
        return decode_state(bytes).map(|state| (state, None));
    }
    let corrupt = |reason: &str| StateDecodeError::Corrupt {
        format: UNDO_ENVELOPE,
        reason: reason.to_owned(),
    };
    let len = bytes
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| corrupt("truncated envelope"))?;
    let current = bytes
        .get(5..5 + len)
        .ok_or_else(|| corrupt("envelope shorter than its state"))?;
    let previous = &bytes[5 + len..];
    if current.first() == Some(&UNDO_ENVELOPE) || previous.first() == Some(&UNDO_ENVELOPE) {
        return Err(corrupt("nested envelope"));
    }
    let state = decode_state(current)?;
    let undo = if previous.is_empty() {
        None
    } else {
        Some(decode_state(previous)?)
    };
    Ok((state, Some(undo)))
}

pub fn decode_state(bytes: &[u8]) -> Result<UserState, StateDecodeError> {
    if bytes.first() == Some(&UNDO_ENVELOPE) {
        return decode_with_undo(bytes).map(|(state, _)| state);
    }
    let (&format, body) = bytes.split_first().ok_or(StateDecodeError::Empty)?;
    match format {
        STATE_FORMAT_VERSION => {
            let wire: WireV3 = decode_body(format, body)?;
            let newest = wire.base.base.newest_ms.unwrap_or(0);
            let mut state = from_v2(wire.base, format)?;
            let at = |back: i64| {
                newest
                    .checked_sub(back)
                    .ok_or_else(|| StateDecodeError::Corrupt {
                        format,
                        reason: format!("decision time {back} ms before {newest} overflows"),
                    })
            };
            state.published = Published {
                tier: wire.tier,
                tier_since_ms: at(wire.tier_since_back)?,
                score_ms: wire.score_back.map(at).transpose()?,
            };
            state.rules = wire.rules;
            Ok(state)
        }
        // Older formats are decoded with their own wire types and migrated.
        2 => from_v2(decode_body(format, body)?, format),
        1 => {
            let wire: WireV1 = decode_body(format, body)?;
            let mut state =
                from_v1(wire).map_err(|reason| StateDecodeError::Corrupt { format, reason })?;
            state.lifetime = migrate_lifetime(&state);
            Ok(state)
        }
        found => Err(StateDecodeError::UnknownFormat { found }),
    }
}

fn time_back(newest: i64, back: u64, format: u8) -> Result<i64, StateDecodeError> {
    i64::try_from(back)
        .ok()
        .and_then(|b| newest.checked_sub(b))
        .ok_or_else(|| StateDecodeError::Corrupt {
            format,
            reason: format!("time offset {back} out of range"),
        })
}

fn from_v2(wire: WireV2, format: u8) -> Result<UserState, StateDecodeError> {
    let newest = wire.base.newest_ms.unwrap_or(0);
    let mut state =
        from_v1(wire.base).map_err(|reason| StateDecodeError::Corrupt { format, reason })?;
    state.lifetime = Lifetime {
        orders: wire.orders,
        purchase_days: wire.purchase_days,
        net_spend_cents: wire.net_spend_cents,
        first_purchase_ms: wire
            .first_purchase_back
            .map(|back| time_back(newest, back, format))
            .transpose()?,
    };
    Ok(state)
}

fn decode_body<T: for<'de> Deserialize<'de>>(
    format: u8,
    body: &[u8],
) -> Result<T, StateDecodeError> {
    let (value, read) = bincode::serde::decode_from_slice(body, config()).map_err(|e| {
        StateDecodeError::Corrupt {
            format,
            reason: e.to_string(),
        }
    })?;
    if read != body.len() {
        return Err(StateDecodeError::Corrupt {
            format,
            reason: format!("{} trailing bytes", body.len() - read),
        });
    }
    Ok(value)
}

/// Format 1 had no lifetime aggregates: rebuild them from what it kept (the 90-day ring and
/// the purchase memory), the best a migration can know.
fn migrate_lifetime(state: &UserState) -> Lifetime {
    let purchase = EventType::Purchase.index();
    let ring = &state.levels[LEVELS.len() - 1];
    let mut days: Vec<i64> = state
        .purchases_ms
        .iter()
        .map(|t| t.div_euclid(crate::spec::DAY_MS))
        .collect();
    days.dedup();
    Lifetime {
        orders: ring.iter().map(|b| b.counts[purchase]).sum(),
        purchase_days: days.len() as u32,
        net_spend_cents: ring
            .iter()
            .map(|b| b.revenue_cents.saturating_sub(b.refund_cents))
            .fold(0i64, i64::saturating_add),
        first_purchase_ms: state.purchases_ms.first().copied(),
    }
}

fn from_v1(wire: WireV1) -> Result<UserState, String> {
    let newest = wire.newest_ms.unwrap_or(0);
    let at = |back: u64| -> Result<i64, String> {
        i64::try_from(back)
            .ok()
            .and_then(|b| newest.checked_sub(b))
            .ok_or_else(|| format!("time offset {back} out of range"))
    };
    let mut levels: [Vec<Bucket>; LEVELS.len()] = Default::default();
    for (l, ring) in wire.levels.into_iter().enumerate() {
        let newest_bucket = LEVELS[l].bucket_of(EventTime::from_unix_millis(newest));
        for b in ring {
            let mut counts = [0u32; EventType::ALL.len()];
            let mut values = b.counts.into_iter();
            for (i, slot) in counts.iter_mut().enumerate() {
                if b.types & (1 << i) != 0 {
                    *slot = values
                        .next()
                        .ok_or("bucket counts shorter than its type mask")?;
                }
            }
            if values.next().is_some() || b.types >> EventType::ALL.len() != 0 {
                return Err("bucket counts do not match its type mask".into());
            }
            levels[l].push(Bucket {
                index: newest_bucket - i64::from(b.back),
                counts,
                revenue_cents: b.revenue_cents,
                refund_cents: b.refund_cents,
                sessions: b.sessions,
                categories: u32::from_le_bytes(b.categories),
            });
        }
    }
    Ok(UserState {
        newest_ms: wire.newest_ms,
        first_seen_ms: at(wire.first_seen_back)?,
        levels,
        recent_ids: wire
            .recent_ids
            .into_iter()
            .map(u64::from_le_bytes)
            .collect(),
        sessions: wire
            .sessions
            .into_iter()
            .map(|(hash, first, last)| {
                Ok(SessionMark {
                    hash,
                    first_ms: at(first)?,
                    last_ms: at(last)?,
                })
            })
            .collect::<Result<_, String>>()?,
        purchases_ms: wire
            .purchases_back
            .into_iter()
            .map(at)
            .collect::<Result<_, _>>()?,
        open_cart_cents: wire.open_cart_cents,
        cart_updated_ms: match wire.cart_back {
            Some(back) => at(back)?,
            None => 0,
        },
        applied: wire.applied,
        lifetime: Lifetime::default(),
        published: Published::default(),
        rules: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use tierflow_events::{ClickEvent, EventType};

    use super::*;

    fn purchase(id: &str, ts_ms: i64, revenue: f64) -> ClickEvent {
        ClickEvent {
            schema_version: 1,
            event_id: id.into(),
            user_id: "u1".into(),
            event_type: EventType::Purchase,
            ts: EventTime::from_unix_millis(ts_ms),
            session_id: "s1".into(),
            product_id: None,
            category: None,
            price: None,
            quantity: None,
            currency: None,
            order_id: None,
            revenue: Some(revenue),
            channel: None,
            device: None,
        }
    }

    #[test]
    fn format_1_state_migrates_its_lifetime_from_the_90_day_ring() {
        let day = crate::spec::DAY_MS;
        let mut state = UserState::default();
        let t0 = 1_750_000_000_000;
        for (i, (d, r)) in [(0, 10.0), (0, 5.0), (3, 20.0), (40, 7.5)]
            .iter()
            .enumerate()
        {
            assert_eq!(
                state.apply(&purchase(&format!("e{i}"), t0 + d * day + i as i64, *r)),
                crate::Applied::Updated
            );
        }
        assert_eq!(state.lifetime.orders, 4);
        assert_eq!(state.lifetime.purchase_days, 3);
        assert_eq!(state.lifetime.net_spend_cents, 4250);
        assert_eq!(state.lifetime.first_purchase_ms, Some(t0));

        // Current format: exact round trip.
        assert_eq!(decode_state(&encode_state(&state)).unwrap(), state);

        // Format 1 bytes (as an older build wrote them) decode and migrate.
        let mut v1 = vec![1u8];
        bincode::serde::encode_into_std_write(wire_v1(&state), &mut v1, config()).unwrap();
        let migrated = decode_state(&v1).unwrap();
        assert_eq!(migrated.lifetime, state.lifetime);
        assert_eq!(
            UserState {
                lifetime: state.lifetime,
                ..migrated
            },
            state
        );
    }

    #[test]
    fn format_2_state_migrates_with_no_decisions_and_format_3_keeps_them() {
        let mut state = UserState::default();
        let t0 = 1_750_000_000_000;
        state.apply(&purchase("e1", t0, 10.0));
        state.apply(&purchase("e2", t0 + 5_000, 12.5));
        state.published = Published {
            tier: Some(3),
            tier_since_ms: t0,
            score_ms: Some(t0 + 5_000),
        };
        state.rules = vec![1, 2, 3, 250];
        let bytes = encode_state(&state);
        assert_eq!(bytes[0], STATE_FORMAT_VERSION);
        assert_eq!(decode_state(&bytes).unwrap(), state);

        // Decision times after the newest event (the default 0 of a state
        // whose events predate 1970, or a clock that stepped back) survive.
        for published in [
            Published::default(),
            Published {
                tier: Some(1),
                tier_since_ms: t0 + 86_400_000,
                score_ms: Some(t0 + 1),
            },
        ] {
            let mut early = UserState::default();
            early.apply(&purchase("e0", -1, 1.0));
            early.published = published;
            assert_eq!(decode_state(&encode_state(&early)).unwrap(), early);
        }

        let mut v2 = vec![2u8];
        bincode::serde::encode_into_std_write(wire_v2(&state), &mut v2, config()).unwrap();
        let migrated = decode_state(&v2).unwrap();
        assert_eq!(migrated.published, Published::default());
        assert!(migrated.rules.is_empty());
        assert_eq!(
            UserState {
                published: state.published,
                rules: state.rules.clone(),
                ..migrated
            },
            state
        );
    }

    #[test]
    fn undo_envelope_round_trips_and_plain_readers_see_the_state() {
        let mut before = UserState::default();
        before.apply(&purchase("e1", 1_750_000_000_000, 10.0));
        let mut after = before.clone();
        after.apply(&purchase("e2", 1_750_000_100_000, 5.0));
        let bytes = encode_with_undo(&after, Some(&before));
        assert_eq!(decode_state(&bytes).unwrap(), after);
        assert_eq!(
            decode_with_undo(&bytes).unwrap(),
            (after.clone(), Some(Some(before)))
        );
        let fresh = encode_with_undo(&after, None);
        assert_eq!(
            decode_with_undo(&fresh).unwrap(),
            (after.clone(), Some(None))
        );
        assert_eq!(
            decode_with_undo(&encode_state(&after)).unwrap(),
            (after, None)
        );
        for cut in [1, 3, 6, bytes.len() - 1] {
            assert!(decode_with_undo(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
