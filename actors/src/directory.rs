//! The directory of the shared actors: their slots, and the state every
//! session reads (the services, whether the server is draining).
//!
//! The root supervisor fills the slots and refills one when it restarts
//! its actor; sessions and the hub call the actors through them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::board::UserBoard;
use crate::limits::quota_keeper::QuotaMsg;
use crate::limits::rate_limiter::RateLimiterMsg;
use crate::persister::PersisterMsg;
use crate::registry::RegistryMsg;
use crate::relay::RelayMsg;
use crate::slot::Slot;
use crate::Services;

pub struct Directory {
    pub services: Arc<Services>,
    pub registry: Arc<Slot<RegistryMsg>>,
    pub rate_limiter: Arc<Slot<RateLimiterMsg>>,
    pub quota_keeper: Arc<Slot<QuotaMsg>>,
    pub persister: Arc<Slot<PersisterMsg>>,
    /// Empty when no stream bus is configured.
    pub relay: Arc<Slot<RelayMsg>>,
    /// This instance's connections by user.
    pub board: Arc<UserBoard>,
    draining: AtomicBool,
}

impl Directory {
    pub fn new(services: Arc<Services>) -> Directory {
        Directory {
            services,
            registry: Slot::empty(),
            rate_limiter: Slot::empty(),
            quota_keeper: Slot::empty(),
            persister: Slot::empty(),
            relay: Slot::empty(),
            board: Arc::default(),
            draining: AtomicBool::new(false),
        }
    }

    /// From now on, new messages are refused (`unavailable`): the server
    /// is draining before it stops.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The time limits and quotas use.
    pub fn now_ms(&self) -> i64 {
        self.services.clock.now_ms()
    }
}
