//! The board of this instance's open connections by user: where a user's
//! events (`started`) are delivered to that user's other connections.
//!
//! Not an actor: it is a map read under a short lock by whoever delivers
//! (a session on this instance, or the relay for an event from another
//! instance), and written when a session starts and stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use skald_protocol::{ServerFrame, SessionId, UserId};

use crate::outbox::Outbox;

/// One connection on the board.
type Seat = (SessionId, Weak<Outbox>);

#[derive(Default)]
pub struct UserBoard {
    users: Mutex<HashMap<UserId, Vec<Seat>>>,
}

impl UserBoard {
    pub fn join(&self, user: &UserId, session: &SessionId, outbox: &Arc<Outbox>) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let seats = users.entry(user.clone()).or_default();
        // Seats of sessions that ended without leaving (a panic) go now.
        seats.retain(|(_, outbox)| outbox.strong_count() > 0);
        seats.push((session.clone(), Arc::downgrade(outbox)));
    }

    pub fn leave(&self, user: &UserId, session: &SessionId) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sessions) = users.get_mut(user) {
            sessions.retain(|(s, outbox)| s != session && outbox.strong_count() > 0);
            if sessions.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Gives `frame` to every connection of `user` here but `origin`.
    /// Returns how many got it.
    pub fn deliver(&self, user: &UserId, origin: &SessionId, frame: &ServerFrame) -> usize {
        let outboxes: Vec<Arc<Outbox>> = {
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            users
                .get(user)
                .into_iter()
                .flatten()
                .filter(|(s, _)| s != origin)
                .filter_map(|(_, outbox)| outbox.upgrade())
                .collect()
        };
        for outbox in &outboxes {
            outbox.push(frame);
        }
        outboxes.len()
    }
}
