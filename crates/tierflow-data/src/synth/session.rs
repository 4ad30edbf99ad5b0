//! One user's life as a lazy, time-ordered event stream: visits down the purchase funnel,
//! then refunds days later. Holds one planned event at a time, so a user costs O(1) memory.

use tierflow_events::click::CLICK_SCHEMA_VERSION;
use tierflow_events::{ClickEvent, EventTime, EventType};

use super::SynthConfig;
use super::catalogue::{Catalogue, ProductRef};
use super::sample::{self, Purpose, SimRng};
use super::segment::{Channel, Device, Life, Profile};

const SECOND_MS: f64 = EventTime::MILLIS_PER_SECOND as f64;
const DAY_MS: f64 = EventTime::MILLIS_PER_DAY as f64;
/// Thirty minutes of silence end a visit, as web analytics count them.
const SESSION_GAP_MS: i64 = 30 * EventTime::MILLIS_PER_MINUTE;
const MAX_GAP_MS: f64 = 20.0 * 60.0 * SECOND_MS;
const MAX_PRODUCT_VIEWS: u32 = 60;
const MAX_QUANTITY: u32 = 10;
/// Above this unit price people buy one at a time.
const SINGLE_ITEM_CENTS: i64 = 15_000;

/// Which `session_id` an event carries.
#[derive(Debug, Clone, Copy)]
enum SessionTag {
    /// The n-th visit (1-based).
    Visit(u32),
    /// A refund is handled outside any visit: its own session, named after the order.
    Refund(u32),
}

/// An event decided but not yet turned into strings.
#[derive(Debug, Clone, Copy)]
struct Planned {
    ts: i64,
    kind: EventType,
    session: SessionTag,
    channel: Channel,
    device: Device,
    product: Option<ProductRef>,
    /// A category without a product: what a search was for.
    category: Option<u16>,
    quantity: Option<u32>,
    order: Option<u32>,
    revenue_cents: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct CartLine {
    product: ProductRef,
    price_cents: i64,
    quantity: u32,
}

/// Where the current visit is in the funnel.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Waiting for the next visit to start.
    Between,
    /// The landing event (page view or search) comes next.
    Entry,
    /// Looking around: product views, navigation, cart removals; then checkout or leave.
    Browse,
    /// Just viewed this product: add it to the cart, wish for it, or move on.
    Viewed(ProductRef),
    /// Checkout started: pay or abandon.
    Checkout,
    /// No more visits (span over or the user churned).
    Finished,
}

#[derive(Debug, Clone, Copy)]
struct Visit {
    number: u32,
    channel: Channel,
    device: Device,
    views_left: u32,
    focus: u16,
}

/// One user's generator. The merge asks for [`UserStream::next_ts`] and takes events with
/// [`UserStream::pop`]; both are in non-decreasing event time.
#[derive(Debug)]
pub(crate) struct UserStream {
    user_id: String,
    rng: SimRng,
    profile: Profile,
    end_ms: i64,
    /// The next event of the current (or next) visit.
    head: Option<Planned>,
    /// Refunds due later; rarely more than one or two.
    refunds: Vec<Planned>,
    stage: Stage,
    visit: Visit,
    clock_ms: i64,
    next_visit_from_ms: i64,
    cart: Vec<CartLine>,
    visits: u32,
    orders: u32,
    events: u64,
}

impl UserStream {
    pub(crate) fn new(config: &SynthConfig, catalogue: &Catalogue, user_index: u64) -> Self {
        let mut rng = sample::rng_for(config.seed, Purpose::User, user_index);
        let life = Life::draw(&mut rng, config);
        let profile = Profile::draw(&mut rng, life, config, catalogue);
        let mut stream = Self {
            user_id: super::user_id(user_index),
            rng,
            end_ms: config.end().unix_millis(),
            head: None,
            refunds: Vec::new(),
            stage: Stage::Between,
            visit: Visit {
                number: 0,
                channel: Channel::Web,
                device: Device::Desktop,
                views_left: 0,
                focus: 0,
            },
            clock_ms: life.active_from_ms,
            next_visit_from_ms: life.active_from_ms,
            cart: Vec::new(),
            visits: 0,
            orders: 0,
            events: 0,
            profile,
        };
        stream.head = stream.plan_next(catalogue);
        stream
    }

    /// Event time of the next event, `None` when the user has nothing more to say.
    pub(crate) fn next_ts(&self) -> Option<i64> {
        let refund = self.refunds.iter().map(|r| r.ts).min();
        match (self.head.map(|h| h.ts), refund) {
            (Some(head), Some(refund)) => Some(head.min(refund)),
            (head, refund) => head.or(refund),
        }
    }

    /// The next event, in event-time order.
    pub(crate) fn pop(&mut self, catalogue: &Catalogue) -> Option<ClickEvent> {
        let due_refund = self
            .refunds
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.ts)
            .map(|(i, r)| (i, r.ts));
        let planned = match (self.head, due_refund) {
            (Some(head), Some((i, refund_ts))) if refund_ts < head.ts => {
                self.refunds.swap_remove(i)
            }
            (Some(head), _) => {
                // Planning the next event may schedule a refund; it is always later.
                self.head = self.plan_next(catalogue);
                head
            }
            (None, Some((i, _))) => self.refunds.swap_remove(i),
            (None, None) => return None,
        };
        Some(self.materialise(&planned, catalogue))
    }

    fn materialise(&mut self, planned: &Planned, catalogue: &Catalogue) -> ClickEvent {
        self.events += 1;
        // "u00000042" → "00000042"
        let digits = &self.user_id[1..];
        let session_id = match planned.session {
            SessionTag::Visit(n) => format!("s{digits}-{n}"),
            SessionTag::Refund(order) => format!("s{digits}-r{order}"),
        };
        let product = planned.product.map(|p| catalogue.product(p));
        let category = planned
            .product
            .map(|p| p.category)
            .or(planned.category)
            .map(|c| catalogue.category(c).name.to_owned());
        let price = product.map(|p| cents_to_eur(p.price_cents));
        let revenue = planned.revenue_cents.map(cents_to_eur);
        ClickEvent {
            schema_version: CLICK_SCHEMA_VERSION,
            event_id: format!("e{digits}-{}", self.events),
            user_id: self.user_id.clone(),
            event_type: planned.kind,
            ts: EventTime::from_unix_millis(planned.ts),
            session_id,
            product_id: product.map(|p| p.id.clone()),
            category,
            price,
            quantity: planned.quantity,
            currency: (price.is_some() || revenue.is_some()).then(|| "EUR".to_owned()),
            order_id: planned.order.map(|o| format!("o{digits}-{o}")),
            revenue,
            channel: Some(planned.channel.as_str().to_owned()),
            device: Some(planned.device.as_str().to_owned()),
        }
    }

    /// Walks the funnel until the next event, starting visits as needed.
    fn plan_next(&mut self, catalogue: &Catalogue) -> Option<Planned> {
        loop {
            match self.stage {
                Stage::Finished => return None,
                Stage::Between => match self.next_visit_start() {
                    Some(start) => self.begin_visit(start),
                    None => {
                        self.stage = Stage::Finished;
                        return None;
                    }
                },
                Stage::Entry => {
                    self.stage = Stage::Browse;
                    return Some(self.landing(self.profile.p_search_entry));
                }
                Stage::Browse => {
                    if self.visit.views_left == 0 {
                        if !self.cart.is_empty() && self.chance(self.profile.p_checkout) {
                            self.stage = Stage::Checkout;
                            let ts = self.step(35.0, 0.6)?;
                            let items = self.cart.iter().map(|l| l.quantity).sum();
                            return Some(Planned {
                                quantity: Some(items),
                                ..self.plain(EventType::CheckoutStart, ts)
                            });
                        }
                        self.end_visit();
                        continue;
                    }
                    let u = sample::unit(&mut self.rng);
                    if !self.cart.is_empty() && u < self.profile.p_remove {
                        let ts = self.step(15.0, 0.7)?;
                        let line = (sample::unit(&mut self.rng) * self.cart.len() as f64) as usize;
                        let line = self.cart.swap_remove(line.min(self.cart.len() - 1));
                        return Some(Planned {
                            product: Some(line.product),
                            quantity: Some(line.quantity),
                            ..self.plain(EventType::RemoveFromCart, ts)
                        });
                    }
                    if u < self.profile.p_remove + self.profile.p_navigate {
                        // Back to a listing or a new search, maybe somewhere else.
                        self.step(20.0, 0.8)?;
                        self.visit.focus = self.profile.pick_category(&mut self.rng);
                        return Some(self.landing(0.5));
                    }
                    let ts = self.step(25.0, 0.8)?;
                    if self.chance(self.profile.p_switch_category) {
                        self.visit.focus = self.profile.pick_category(&mut self.rng);
                    }
                    let product = catalogue.pick_product(
                        self.visit.focus,
                        self.profile.price_picks,
                        &mut self.rng,
                    );
                    self.visit.views_left -= 1;
                    self.stage = Stage::Viewed(product);
                    return Some(Planned {
                        product: Some(product),
                        ..self.plain(EventType::ProductView, ts)
                    });
                }
                Stage::Viewed(product) => {
                    self.stage = Stage::Browse;
                    let u = sample::unit(&mut self.rng);
                    if u < self.profile.p_add {
                        let ts = self.step(20.0, 0.7)?;
                        let quantity = self.add_to_cart(product, catalogue);
                        return Some(Planned {
                            product: Some(product),
                            quantity: Some(quantity),
                            ..self.plain(EventType::AddToCart, ts)
                        });
                    }
                    if u < self.profile.p_add + self.profile.p_wishlist {
                        let ts = self.step(15.0, 0.7)?;
                        return Some(Planned {
                            product: Some(product),
                            ..self.plain(EventType::WishlistAdd, ts)
                        });
                    }
                }
                Stage::Checkout => {
                    if !self.chance(self.profile.p_purchase) {
                        self.end_visit();
                        continue;
                    }
                    let ts = self.step(90.0, 0.5)?;
                    let purchase = self.purchase(ts);
                    self.end_visit();
                    return Some(purchase);
                }
            }
        }
    }

    /// The next visit start after the current one, by thinning a Poisson process whose rate
    /// follows the user's activity and rhythm; `None` once past the span or the churn date.
    fn next_visit_start(&mut self) -> Option<i64> {
        let deadline = self
            .profile
            .life
            .stops_at_ms
            .map_or(self.end_ms, |stop| stop.min(self.end_ms));
        let peak = self.profile.peak_session_rate();
        if !(peak.is_finite() && peak > 0.0) {
            return None;
        }
        let mut t = self.next_visit_from_ms as f64;
        loop {
            t += sample::exp1(&mut self.rng) / peak * DAY_MS;
            if t >= deadline as f64 {
                return None;
            }
            let ms = t as i64;
            if sample::unit(&mut self.rng) * peak < self.profile.session_rate(ms) {
                return Some(ms);
            }
        }
    }

    fn begin_visit(&mut self, start_ms: i64) {
        self.visits += 1;
        let channel = self.profile.pick_channel(&mut self.rng);
        let device = self.profile.pick_device(channel, &mut self.rng);
        let extra_views = sample::geometric(&mut self.rng, self.profile.product_views - 1.0);
        self.visit = Visit {
            number: self.visits,
            channel,
            device,
            views_left: (1 + extra_views).min(MAX_PRODUCT_VIEWS),
            focus: self.profile.pick_category(&mut self.rng),
        };
        self.clock_ms = start_ms;
        self.cart.clear();
        self.stage = Stage::Entry;
    }

    fn end_visit(&mut self) {
        // An abandoned cart is forgotten with its visit.
        self.cart.clear();
        self.next_visit_from_ms = self.clock_ms.saturating_add(SESSION_GAP_MS);
        self.stage = Stage::Between;
    }

    /// A page view or (with `p_search`) a search for the focused category, at the clock.
    fn landing(&mut self, p_search: f64) -> Planned {
        if self.chance(p_search) {
            Planned {
                category: Some(self.visit.focus),
                ..self.plain(EventType::Search, self.clock_ms)
            }
        } else {
            self.plain(EventType::PageView, self.clock_ms)
        }
    }

    /// Adds `product` to the cart; returns how many were added.
    fn add_to_cart(&mut self, product: ProductRef, catalogue: &Catalogue) -> u32 {
        let price_cents = catalogue.product(product).price_cents;
        let quantity = if price_cents > SINGLE_ITEM_CENTS {
            1
        } else {
            (1 + sample::poisson(&mut self.rng, self.profile.extra_quantity)).min(MAX_QUANTITY)
        };
        match self.cart.iter_mut().find(|l| l.product == product) {
            Some(line) => line.quantity += quantity,
            None => self.cart.push(CartLine {
                product,
                price_cents,
                quantity,
            }),
        }
        quantity
    }

    /// Pays for the cart, and perhaps schedules a refund some days later.
    fn purchase(&mut self, ts: i64) -> Planned {
        self.orders += 1;
        let order = self.orders;
        let items: u32 = self.cart.iter().map(|l| l.quantity).sum();
        let total: i64 = self
            .cart
            .iter()
            .map(|l| l.price_cents * i64::from(l.quantity))
            .sum();
        let purchase = Planned {
            quantity: Some(items),
            order: Some(order),
            revenue_cents: Some(total),
            ..self.plain(EventType::Purchase, ts)
        };
        if self.chance(self.profile.p_refund) {
            let delay = sample::between(&mut self.rng, 2.0, 21.0) * DAY_MS;
            let refund_ts = ts.saturating_add(delay as i64);
            // Half return everything, half send one item back.
            let whole = self.chance(0.5);
            let pick = (sample::unit(&mut self.rng) * self.cart.len() as f64) as usize;
            let line = self.cart[pick.min(self.cart.len() - 1)];
            let refund = if whole {
                Planned {
                    session: SessionTag::Refund(order),
                    ..purchase
                }
            } else {
                Planned {
                    session: SessionTag::Refund(order),
                    product: Some(line.product),
                    quantity: Some(1),
                    revenue_cents: Some(line.price_cents),
                    ..purchase
                }
            };
            if refund_ts < self.end_ms {
                self.refunds.push(Planned {
                    ts: refund_ts,
                    kind: EventType::Refund,
                    ..refund
                });
            }
        }
        purchase
    }

    /// An event of the current visit with no product, order or money.
    fn plain(&self, kind: EventType, ts: i64) -> Planned {
        Planned {
            ts,
            kind,
            session: SessionTag::Visit(self.visit.number),
            channel: self.visit.channel,
            device: self.visit.device,
            product: None,
            category: None,
            quantity: None,
            order: None,
            revenue_cents: None,
        }
    }

    /// Moves the clock by a think time (log-normal around `median_s` seconds); `None`, and
    /// the user finished, when that runs past the end of the span.
    fn step(&mut self, median_s: f64, sigma: f64) -> Option<i64> {
        let gap = sample::lognormal(&mut self.rng, median_s * SECOND_MS, sigma)
            .clamp(SECOND_MS, MAX_GAP_MS);
        self.clock_ms = self.clock_ms.saturating_add(gap as i64);
        if self.clock_ms >= self.end_ms {
            self.stage = Stage::Finished;
            self.cart.clear();
            return None;
        }
        Some(self.clock_ms)
    }

    fn chance(&mut self, p: f64) -> bool {
        sample::chance(&mut self.rng, p)
    }
}

fn cents_to_eur(cents: i64) -> f64 {
    cents as f64 / 100.0
}
