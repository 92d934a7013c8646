//! Connections that have not authenticated yet, counted per address and in
//! total, oldest first.
//!
//! A connection is *pending* from its accept until it is an authenticated
//! WebSocket session: while its request arrives, while it is an HTTP
//! keep-alive connection, and while an upgraded socket waits for its
//! `hello`. Each of those stages has its own timeout, so a pending
//! connection cannot live long; the caps here bound how many there are at
//! once, so that a host that opens connections and never finishes them
//! (slowloris) cannot hold every file descriptor of the process.
//!
//! At a cap, the **oldest** pending connection is closed to make room for
//! the new one, instead of refusing the new one: an honest request
//! completes within milliseconds of its connection, so the oldest pending
//! connection is the likeliest to be an attacker's, and a health check or
//! a user arriving from the same address as an attacker is still served.
//! Addresses of `trusted_proxies` have no per-address cap (every client of
//! a load balancer arrives from its address); the total cap still holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::client_ip::TrustedProxies;

/// Why a pending connection was closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Eviction {
    /// Its address had `max_pending_per_address` connections pending.
    Address,
    /// `max_pending` connections were pending.
    Total,
    /// The process was out of file descriptors (or at its reserve).
    Descriptors,
}

/// The caps, from `[connections]`.
#[derive(Debug, Clone)]
pub struct PendingCaps {
    pub total: usize,
    pub per_address: usize,
    /// Addresses without a per-address cap.
    pub exempt: TrustedProxies,
}

/// The table of pending connections.
#[derive(Debug)]
pub struct PendingTable {
    caps: PendingCaps,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Oldest first (ids grow with time).
    by_age: BTreeMap<u64, Entry>,
    by_address: HashMap<IpAddr, BTreeSet<u64>>,
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    evict: CancellationToken,
}

/// One pending connection's place in the table; dropping it (the session
/// authenticated, or the connection ended) gives the place back.
#[derive(Debug)]
pub struct Pending {
    id: u64,
    address: IpAddr,
    evicted: CancellationToken,
    table: Arc<PendingTable>,
}

impl PendingTable {
    pub fn new(caps: PendingCaps) -> Arc<PendingTable> {
        Arc::new(PendingTable {
            caps,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Counts a new connection from `address`, first closing the oldest
    /// pending connection of its address, or of all, if a cap is reached.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Pending {
        let address = address.to_canonical();
        let mut inner = self.lock();
        if !self.caps.exempt.trusts(address) {
            let oldest_here = inner
                .by_address
                .get(&address)
                .filter(|ids| ids.len() >= self.caps.per_address)
                .and_then(|ids| ids.first().copied());
            if let Some(id) = oldest_here {
                inner.evict(id, Eviction::Address);
            }
        }
        if inner.by_age.len() >= self.caps.total {
            if let Some(id) = inner.by_age.keys().next().copied() {
                inner.evict(id, Eviction::Total);
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let evicted = CancellationToken::new();
        inner.by_age.insert(
            id,
            Entry {
                address,
                evict: evicted.clone(),
            },
        );
        inner.by_address.entry(address).or_default().insert(id);
        metrics::gauge!("skald_connections_pending").set(inner.by_age.len() as f64);
        Pending {
            id,
            address,
            evicted,
            table: self.clone(),
        }
    }

    /// Closes the oldest pending connection, if there is one.
    pub fn evict_oldest(&self, why: Eviction) -> bool {
        let mut inner = self.lock();
        match inner.by_age.keys().next().copied() {
            Some(id) => {
                inner.evict(id, why);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_age.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The table holds no invariant a panic could break halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.by_age.remove(&id)?;
        if let Some(ids) = self.by_address.get_mut(&entry.address) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_address.remove(&entry.address);
            }
        }
        metrics::gauge!("skald_connections_pending").set(self.by_age.len() as f64);
        Some(entry)
    }

    fn evict(&mut self, id: u64, why: Eviction) {
        if let Some(entry) = self.remove(id) {
            entry.evict.cancel();
            let reason: &'static str = why.into();
            metrics::counter!("skald_connections_evicted_total", "reason" => reason).increment(1);
            tracing::debug!(client = %entry.address, reason, "pending connection closed to make room");
        }
    }
}

impl Pending {
    /// Resolves when this connection was closed to make room.
    pub fn evicted(&self) -> CancellationToken {
        self.evicted.clone()
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.table.lock().remove(self.id);
    }
}

/// A connection's pending place, shared with the requests it carries: the
/// WebSocket upgrade takes it along, and its session gives it back once
/// authenticated; an OpenAI-compatible completion gives it back once its
/// caller is authenticated. Any other HTTP connection keeps it until it
/// closes.
#[derive(Debug, Clone, Default)]
pub struct PendingSlot(Arc<Mutex<Option<Pending>>>);

impl PendingSlot {
    pub fn new(pending: Pending) -> PendingSlot {
        PendingSlot(Arc::new(Mutex::new(Some(pending))))
    }

    pub fn take(&self) -> Option<Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(total: usize, per_address: usize, exempt: &[&str]) -> Arc<PendingTable> {
        let exempt = exempt.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PendingTable::new(PendingCaps {
            total,
            per_address,
            exempt: TrustedProxies::try_from(exempt).unwrap(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_at_its_cap_loses_its_oldest_connection_and_no_other() {
        let t = table(100, 2, &[]);
        let a1 = t.admit(ip("10.0.0.1"));
        let b1 = t.admit(ip("10.0.0.2"));
        let a2 = t.admit(ip("10.0.0.1"));
        let a3 = t.admit(ip("10.0.0.1"));
        assert!(a1.evicted().is_cancelled());
        assert!(!a2.evicted().is_cancelled() && !a3.evicted().is_cancelled());
        assert!(!b1.evicted().is_cancelled());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn at_the_total_cap_the_oldest_of_all_goes() {
        let t = table(2, 10, &[]);
        let a = t.admit(ip("10.0.0.1"));
        let b = t.admit(ip("10.0.0.2"));
        let c = t.admit(ip("10.0.0.3"));
        assert!(a.evicted().is_cancelled());
        assert!(!b.evicted().is_cancelled() && !c.evicted().is_cancelled());
        assert_eq!(t.len(), 2);
        // The evicted guard's drop changes nothing more.
        drop(a);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_dropped_place_is_given_back_and_evict_oldest_takes_the_oldest() {
        let t = table(10, 10, &[]);
        let a = t.admit(ip("10.0.0.1"));
        let b = t.admit(ip("10.0.0.1"));
        drop(a);
        assert_eq!(t.len(), 1);
        assert!(t.evict_oldest(Eviction::Descriptors));
        assert!(b.evicted().is_cancelled());
        assert!(t.is_empty());
        assert!(!t.evict_oldest(Eviction::Descriptors));
    }

    #[test]
    fn trusted_proxies_have_no_per_address_cap_but_count_in_the_total() {
        let t = table(3, 1, &["10.0.0.0/8"]);
        let held: Vec<_> = (0..3).map(|_| t.admit(ip("10.1.1.1"))).collect();
        assert!(held.iter().all(|p| !p.evicted().is_cancelled()));
        let more = t.admit(ip("10.1.1.1"));
        assert!(held[0].evicted().is_cancelled());
        assert!(!more.evicted().is_cancelled());
    }

    #[test]
    fn a_mapped_ipv4_address_is_its_ipv4_address() {
        let t = table(10, 1, &[]);
        let a = t.admit(ip("::ffff:10.0.0.1"));
        let _b = t.admit(ip("10.0.0.1"));
        assert!(a.evicted().is_cancelled());
    }
}
