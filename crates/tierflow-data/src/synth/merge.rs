//! All users' streams as one, in event-time order: a k-way merge over lazily advancing
//! users, so memory grows with the number of users (about 1 KB each, most of it the ChaCha
//! block buffer), never with the number of events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tierflow_events::ClickEvent;

use super::SynthConfig;
use super::catalogue::Catalogue;
use super::session::UserStream;

#[derive(Debug)]
pub(crate) struct Merge {
    catalogue: Catalogue,
    users: Vec<UserStream>,
    /// `(next event time, user position)`; ties go to the lower user index, deterministically.
    due: BinaryHeap<Reverse<(i64, usize)>>,
}

impl Merge {
    pub(crate) fn new(config: &SynthConfig) -> Self {
        let catalogue = Catalogue::new(config.seed);
        let users: Vec<UserStream> = (0..config.users)
            .map(|user| UserStream::new(config, &catalogue, user))
            .collect();
        let due = users
            .iter()
            .enumerate()
            .filter_map(|(position, user)| user.next_ts().map(|ts| Reverse((ts, position))))
            .collect();
        Self {
            catalogue,
            users,
            due,
        }
    }

    /// Event time of the next event.
    pub(crate) fn peek_ts(&self) -> Option<i64> {
        self.due.peek().map(|Reverse((ts, _))| *ts)
    }

    /// The next event in event-time order.
    pub(crate) fn pop(&mut self) -> Option<ClickEvent> {
        loop {
            let Reverse((_, position)) = self.due.pop()?;
            let user = &mut self.users[position];
            let event = user.pop(&self.catalogue);
            if let Some(ts) = user.next_ts() {
                self.due.push(Reverse((ts, position)));
            }
            // A user on the heap always has an event; the loop only guards that invariant.
            if event.is_some() {
                return event;
            }
        }
    }

    pub(crate) fn users(&self) -> usize {
        self.users.len()
    }

    /// Users with events still to come.
    pub(crate) fn active_users(&self) -> usize {
        self.due.len()
    }
}
