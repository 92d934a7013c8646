//! The in-process limits backend: the default when no Redis is configured,
//! and the fallback of an instance while Redis is down. Same algorithms as
//! the Redis scripts (GCRA, slots with leases, reservations with leases),
//! under one mutex, so every operation is atomic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use skald_protocol::{StreamId, UserId};

use crate::ports::limits::{
    LimitsBackend, LimitsError, QuotaLimits, QuotaUsage, RateDecision, RateKey, RateLimit,
    Reservation, ReserveDecision, Settle, SlotClaim, SlotKey,
};
use crate::settings::LimitOverride;
use crate::time::Month;

/// Past this many rate keys, expired ones are dropped on the next check.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct LocalLimits {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Theoretical arrival time per key, µs.
    tats: HashMap<RateKey, i64>,
    /// Holder -> lease expiry (ms) per key.
    slots: HashMap<SlotKey, HashMap<String, i64>>,
    months: HashMap<(UserId, Month), MonthUsage>,
    user_limits: BTreeMap<UserId, LimitOverride>,
}

#[derive(Default)]
struct MonthUsage {
    tokens_used: u64,
    requests_used: u64,
    /// Reservation id -> (tokens, made at ms).
    reservations: HashMap<StreamId, (u64, i64)>,
}

impl MonthUsage {
    fn drop_expired(&mut self, lease_ms: u64, now_ms: i64) {
        self.reservations
            .retain(|_, (_, at)| now_ms - *at < lease_ms as i64);
    }

    fn usage(&self) -> QuotaUsage {
        QuotaUsage {
            tokens_used: self.tokens_used,
            requests_used: self.requests_used,
            tokens_reserved: self.reservations.values().map(|(t, _)| t).sum(),
            requests_reserved: self.reservations.len() as u64,
        }
    }
}

impl LocalLimits {
    pub fn new() -> LocalLimits {
        LocalLimits::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// GCRA on a stored theoretical arrival time. Returns the decision and the
/// new TAT to store (None: leave it).
pub fn gcra(tat_us: Option<i64>, limit: RateLimit, now_ms: i64) -> (RateDecision, Option<i64>) {
    let now = now_ms * 1000;
    let interval = limit.interval_us() as i64;
    let tolerance = limit.tolerance_us() as i64;
    let tat = tat_us.unwrap_or(now).max(now);
    if tat - now > tolerance {
        let wait_us = tat - tolerance - now;
        let retry_after_ms = (wait_us as u64).div_ceil(1000).max(1);
        return (RateDecision::Limited { retry_after_ms }, None);
    }
    (RateDecision::Allowed, Some(tat + interval))
}

#[async_trait::async_trait]
impl LimitsBackend for LocalLimits {
    async fn rate(
        &self,
        key: &RateKey,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError> {
        let mut inner = self.lock();
        if inner.tats.len() > PRUNE_ABOVE {
            let now = now_ms * 1000;
            inner.tats.retain(|_, tat| *tat > now);
        }
        let (decision, new_tat) = gcra(inner.tats.get(key).copied(), limit, now_ms);
        if let Some(tat) = new_tat {
            inner.tats.insert(key.clone(), tat);
        }
        Ok(decision)
    }

    async fn acquire_slot(&self, claim: &SlotClaim, now_ms: i64) -> Result<bool, LimitsError> {
        let mut inner = self.lock();
        let slots = inner.slots.entry(claim.key.clone()).or_default();
        slots.retain(|_, expiry| *expiry > now_ms);
        if !slots.contains_key(&claim.holder) && slots.len() >= claim.max as usize {
            return Ok(false);
        }
        slots.insert(claim.holder.clone(), now_ms + claim.lease_ms as i64);
        Ok(true)
    }

    async fn release_slot(&self, key: &SlotKey, holder: &str) -> Result<(), LimitsError> {
        let mut inner = self.lock();
        if let Some(slots) = inner.slots.get_mut(key) {
            slots.remove(holder);
            if slots.is_empty() {
                inner.slots.remove(key);
            }
        }
        Ok(())
    }

    async fn reserve(
        &self,
        r: &Reservation,
        limits: QuotaLimits,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<ReserveDecision, LimitsError> {
        let mut inner = self.lock();
        let month = inner.months.entry((r.user.clone(), r.month)).or_default();
        month.drop_expired(lease_ms, now_ms);
        if let Some((tokens, _)) = month.reservations.get(&r.id) {
            return Ok(ReserveDecision::Granted { tokens: *tokens });
        }
        let decision = month.usage().decide(r, limits);
        if let ReserveDecision::Granted { tokens } = decision {
            month.reservations.insert(r.id.clone(), (tokens, now_ms));
        }
        Ok(decision)
    }

    async fn settle(&self, settles: &[Settle]) -> Result<Vec<bool>, LimitsError> {
        let mut inner = self.lock();
        Ok(settles
            .iter()
            .map(|settle| {
                let Some(m) = inner.months.get_mut(&(settle.user.clone(), settle.month)) else {
                    return false;
                };
                if m.reservations.remove(&settle.id).is_none() {
                    return false;
                }
                m.tokens_used += settle.tokens;
                m.requests_used += u64::from(settle.count_request);
                true
            })
            .collect())
    }

    async fn add_usage(
        &self,
        user: &UserId,
        month: Month,
        tokens: u64,
        requests: u64,
    ) -> Result<(), LimitsError> {
        let mut inner = self.lock();
        let m = inner.months.entry((user.clone(), month)).or_default();
        m.tokens_used += tokens;
        m.requests_used += requests;
        Ok(())
    }

    async fn usage(
        &self,
        user: &UserId,
        month: Month,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError> {
        let mut inner = self.lock();
        Ok(match inner.months.get_mut(&(user.clone(), month)) {
            Some(m) => {
                m.drop_expired(lease_ms, now_ms);
                m.usage()
            }
            None => QuotaUsage::default(),
        })
    }

    async fn forget(
        &self,
        rate_keys: &[RateKey],
        slot_keys: &[SlotKey],
    ) -> Result<(), LimitsError> {
        let mut inner = self.lock();
        for key in rate_keys {
            inner.tats.remove(key);
        }
        for key in slot_keys {
            inner.slots.remove(key);
        }
        Ok(())
    }

    async fn user_limits(&self) -> Result<BTreeMap<UserId, LimitOverride>, LimitsError> {
        Ok(self.lock().user_limits.clone())
    }

    async fn set_user_limits(
        &self,
        user: &UserId,
        limits: Option<&LimitOverride>,
    ) -> Result<(), LimitsError> {
        let mut inner = self.lock();
        match limits {
            Some(limits) => inner.user_limits.insert(user.clone(), limits.clone()),
            None => inner.user_limits.remove(user),
        };
        Ok(())
    }

    async fn ping(&self) -> Result<(), LimitsError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_contract() {
        crate::testkit::limits::run_all(&LocalLimits::new(), "local").await;
    }

    #[test]
    fn a_daily_rate_allows_its_burst_then_one_every_period_over_count() {
        let limit = RateLimit::per_day(20);
        let mut tat = None;
        for _ in 0..20 {
            let (decision, next) = gcra(tat, limit, 0);
            assert_eq!(decision, RateDecision::Allowed);
            tat = next;
        }
        // The next comes back after a day / 20 = 4,320 s.
        assert_eq!(
            gcra(tat, limit, 0).0,
            RateDecision::Limited {
                retry_after_ms: 4_320_000
            }
        );
        assert_eq!(gcra(tat, limit, 4_320_000).0, RateDecision::Allowed);
    }
}
