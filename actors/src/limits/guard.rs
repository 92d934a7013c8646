//! The failure policy around a shared limits backend (Redis).
//!
//! While the shared backend answers, every decision is made there, so all
//! instances share one limit. When it fails (an error or its command
//! timeout), the guard marks it down and, by policy:
//! - **fail open** (default): decides with this instance's in-process
//!   backend, and records the usage settled meanwhile in a ledger;
//! - **fail closed**: refuses with `unavailable`.
//!
//! Settles are never lost: a settle the shared backend could not take is
//! kept and replayed, and the ledger is added to the shared backend, when a
//! probe finds it back ([`LimitsGuard::probe`], run every second by the
//! QuotaKeeper). Only then does the guard route decisions to it again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::local::LocalLimits;
use crate::ports::limits::{
    LimitsBackend, LimitsError, QuotaLimits, QuotaUsage, RateDecision, RateLimit, Reservation,
    ReserveDecision,
};

/// What to do while the shared backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Open,
    Closed,
}

/// Counters for metrics and tests.
#[derive(Default)]
pub struct GuardCounters {
    /// Times the shared backend was found down.
    pub outages: AtomicU64,
    /// Decisions made by the in-process fallback.
    pub fallback_decisions: AtomicU64,
    /// Settles replayed and ledger entries added after an outage.
    pub reconciled: AtomicU64,
}

struct PendingSettle {
    user: String,
    month: String,
    id: String,
    tokens: u64,
    count_request: bool,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, LimitsError>> + Send + 'a>>;

pub struct LimitsGuard {
    primary: Arc<dyn LimitsBackend>,
    /// Present when `primary` is a shared backend that can fail.
    fallback: Option<LocalLimits>,
    policy: FailurePolicy,
    healthy: AtomicBool,
    fallback_reservations: Mutex<HashSet<String>>,
    ledger: Mutex<HashMap<(String, String), (u64, u64)>>,
    pending: Mutex<Vec<PendingSettle>>,
    pub counters: GuardCounters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LimitsGuard {
    /// In-process only (no shared backend, nothing can fail).
    pub fn local() -> LimitsGuard {
        LimitsGuard::build(Arc::new(LocalLimits::new()), None, FailurePolicy::Open)
    }

    /// A shared backend, with this instance's in-process fallback.
    pub fn shared(primary: Arc<dyn LimitsBackend>, policy: FailurePolicy) -> LimitsGuard {
        LimitsGuard::build(primary, Some(LocalLimits::new()), policy)
    }

    fn build(
        primary: Arc<dyn LimitsBackend>,
        fallback: Option<LocalLimits>,
        policy: FailurePolicy,
    ) -> LimitsGuard {
        LimitsGuard {
            primary,
            fallback,
            policy,
            healthy: AtomicBool::new(true),
            fallback_reservations: Mutex::default(),
            ledger: Mutex::default(),
            pending: Mutex::default(),
            counters: GuardCounters::default(),
        }
    }

    /// The backend's name and whether it is reachable.
    pub fn status(&self) -> (&'static str, bool) {
        (self.primary.name(), self.is_healthy())
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    fn mark_down(&self, error: &LimitsError) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            self.counters.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(backend = self.primary.name(), %error, policy = ?self.policy, "limits backend down");
        }
    }

    /// Runs `op` on the shared backend while it is up, else by policy.
    /// Returns the result and whether the fallback made it.
    async fn route<'s, T>(
        &'s self,
        op: impl Fn(&'s dyn LimitsBackend) -> BoxFut<'s, T>,
    ) -> Result<(T, bool), LimitsError> {
        let Some(fallback) = &self.fallback else {
            return op(&*self.primary).await.map(|v| (v, false));
        };
        if self.is_healthy() {
            let started = std::time::Instant::now();
            let result = op(&*self.primary).await;
            metrics::histogram!("skald_limits_backend_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(v) => return Ok((v, false)),
                Err(e) => {
                    metrics::counter!("skald_limits_backend_errors_total").increment(1);
                    self.mark_down(&e)
                }
            }
        }
        match self.policy {
            FailurePolicy::Closed => Err(LimitsError::Unavailable(format!(
                "{} is unreachable",
                self.primary.name()
            ))),
            FailurePolicy::Open => {
                self.counters
                    .fallback_decisions
                    .fetch_add(1, Ordering::Relaxed);
                op(fallback).await.map(|v| (v, true))
            }
        }
    }

    pub async fn rate(
        &self,
        key: &str,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError> {
        self.route(|b| Box::pin(b.rate(key, limit, now_ms)))
            .await
            .map(|(v, _)| v)
    }

    pub async fn acquire_slot(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<bool, LimitsError> {
        self.route(|b| Box::pin(b.acquire_slot(key, holder, max, lease_ms, now_ms)))
            .await
            .map(|(v, _)| v)
    }

    /// Releases everywhere the slot may be (best effort: leases expire).
    pub async fn release_slot(&self, key: &str, holder: &str) {
        if let Some(fallback) = &self.fallback {
            let _ = fallback.release_slot(key, holder).await;
        }
        if self.is_healthy() {
            if let Err(e) = self.primary.release_slot(key, holder).await {
                self.mark_down(&e);
            }
        }
    }

    pub async fn reserve(
        &self,
        reservation: &Reservation,
        limits: QuotaLimits,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<ReserveDecision, LimitsError> {
        let (decision, on_fallback) = self
            .route(|b| Box::pin(b.reserve(reservation, limits, lease_ms, now_ms)))
            .await?;
        if on_fallback && matches!(decision, ReserveDecision::Granted { .. }) {
            lock(&self.fallback_reservations).insert(reservation.id.clone());
        }
        Ok(decision)
    }

    /// Settles a reservation where it was made. Never fails: what the
    /// shared backend cannot take now is kept for the next probe.
    pub async fn settle(
        &self,
        user: &str,
        month: &str,
        id: &str,
        tokens: u64,
        count_request: bool,
    ) {
        if let Some(fallback) = &self.fallback {
            if lock(&self.fallback_reservations).remove(id) {
                let _ = fallback
                    .settle(user, month, id, tokens, count_request)
                    .await;
                let mut ledger = lock(&self.ledger);
                let entry = ledger
                    .entry((user.to_owned(), month.to_owned()))
                    .or_default();
                entry.0 += tokens;
                entry.1 += u64::from(count_request);
                return;
            }
        }
        let result = if self.is_healthy() || self.fallback.is_none() {
            self.primary
                .settle(user, month, id, tokens, count_request)
                .await
        } else {
            Err(LimitsError::Unavailable("down".into()))
        };
        if let Err(e) = result {
            if self.fallback.is_some() {
                self.mark_down(&e);
            }
            tracing::warn!(%id, "settle deferred until the limits backend is back");
            lock(&self.pending).push(PendingSettle {
                user: user.to_owned(),
                month: month.to_owned(),
                id: id.to_owned(),
                tokens,
                count_request,
            });
        }
    }

    pub async fn usage(
        &self,
        user: &str,
        month: &str,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError> {
        self.route(|b| Box::pin(b.usage(user, month, lease_ms, now_ms)))
            .await
            .map(|(v, _)| v)
    }

    /// Erases a user's limit state everywhere it may be, including what the
    /// ledger and deferred settles hold for the user.
    pub async fn forget(
        &self,
        rate_keys: &[String],
        slot_keys: &[String],
        user: &str,
        months: &[String],
    ) -> Result<(), LimitsError> {
        if let Some(fallback) = &self.fallback {
            fallback.forget(rate_keys, slot_keys, user, months).await?;
            lock(&self.ledger).retain(|(u, _), _| u != user);
            lock(&self.pending).retain(|s| s.user != user);
        }
        self.primary
            .forget(rate_keys, slot_keys, user, months)
            .await
    }

    /// Pings the shared backend; when it answers, replays deferred settles
    /// and adds the ledger, then routes decisions to it again. Returns
    /// whether it is healthy.
    pub async fn probe(&self) -> bool {
        if self.fallback.is_none() {
            return true;
        }
        if let Err(e) = self.primary.ping().await {
            self.mark_down(&e);
            return false;
        }
        let pending: Vec<PendingSettle> = std::mem::take(&mut *lock(&self.pending));
        let mut failed = Vec::new();
        for s in pending {
            match self
                .primary
                .settle(&s.user, &s.month, &s.id, s.tokens, s.count_request)
                .await
            {
                Ok(applied) => {
                    if !applied {
                        tracing::warn!(id = %s.id, "deferred settle found no reservation (expired or already applied)");
                    }
                    self.counters.reconciled.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => failed.push(s),
            }
        }
        let ledger: Vec<_> = lock(&self.ledger).drain().collect();
        let mut unsent = Vec::new();
        for ((user, month), (tokens, requests)) in ledger {
            match self
                .primary
                .add_usage(&user, &month, tokens, requests)
                .await
            {
                Ok(()) => {
                    self.counters.reconciled.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => unsent.push(((user, month), (tokens, requests))),
            }
        }
        let back = failed.is_empty() && unsent.is_empty();
        lock(&self.pending).extend(failed);
        let mut ledger = lock(&self.ledger);
        for (key, (tokens, requests)) in unsent {
            let entry = ledger.entry(key).or_default();
            entry.0 += tokens;
            entry.1 += requests;
        }
        drop(ledger);
        if back && !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(
                backend = self.primary.name(),
                "limits backend back; usage reconciled"
            );
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process backend behind a switch: a real backend whose
    /// reachability the test controls.
    struct Switchable {
        inner: LocalLimits,
        up: AtomicBool,
    }

    impl Switchable {
        fn check(&self) -> Result<(), LimitsError> {
            if self.up.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(LimitsError::Unavailable("switched off".into()))
            }
        }
    }

    #[async_trait::async_trait]
    impl LimitsBackend for Switchable {
        async fn rate(
            &self,
            key: &str,
            limit: RateLimit,
            now_ms: i64,
        ) -> Result<RateDecision, LimitsError> {
            self.check()?;
            self.inner.rate(key, limit, now_ms).await
        }
        async fn acquire_slot(
            &self,
            key: &str,
            holder: &str,
            max: u32,
            lease_ms: u64,
            now_ms: i64,
        ) -> Result<bool, LimitsError> {
            self.check()?;
            self.inner
                .acquire_slot(key, holder, max, lease_ms, now_ms)
                .await
        }
        async fn release_slot(&self, key: &str, holder: &str) -> Result<(), LimitsError> {
            self.check()?;
            self.inner.release_slot(key, holder).await
        }
        async fn reserve(
            &self,
            r: &Reservation,
            limits: QuotaLimits,
            lease_ms: u64,
            now_ms: i64,
        ) -> Result<ReserveDecision, LimitsError> {
            self.check()?;
            self.inner.reserve(r, limits, lease_ms, now_ms).await
        }
        async fn settle(
            &self,
            user: &str,
            month: &str,
            id: &str,
            tokens: u64,
            count_request: bool,
        ) -> Result<bool, LimitsError> {
            self.check()?;
            self.inner
                .settle(user, month, id, tokens, count_request)
                .await
        }
        async fn add_usage(
            &self,
            user: &str,
            month: &str,
            tokens: u64,
            requests: u64,
        ) -> Result<(), LimitsError> {
            self.check()?;
            self.inner.add_usage(user, month, tokens, requests).await
        }
        async fn usage(
            &self,
            user: &str,
            month: &str,
            lease_ms: u64,
            now_ms: i64,
        ) -> Result<QuotaUsage, LimitsError> {
            self.check()?;
            self.inner.usage(user, month, lease_ms, now_ms).await
        }
        async fn forget(
            &self,
            rate_keys: &[String],
            slot_keys: &[String],
            user: &str,
            months: &[String],
        ) -> Result<(), LimitsError> {
            self.check()?;
            self.inner.forget(rate_keys, slot_keys, user, months).await
        }
        async fn ping(&self) -> Result<(), LimitsError> {
            self.check()
        }
        fn name(&self) -> &'static str {
            "switchable"
        }
    }

    const LIMITS: QuotaLimits = QuotaLimits {
        monthly_tokens: 10_000,
        monthly_requests: 100,
    };

    fn reservation(id: &str) -> Reservation {
        Reservation {
            id: id.into(),
            user: "u".into(),
            month: "2026-01".into(),
            tokens: 100,
            min_tokens: 1,
        }
    }

    fn setup(policy: FailurePolicy) -> (Arc<Switchable>, LimitsGuard) {
        let backend = Arc::new(Switchable {
            inner: LocalLimits::new(),
            up: AtomicBool::new(true),
        });
        let guard = LimitsGuard::shared(backend.clone(), policy);
        (backend, guard)
    }

    #[tokio::test]
    async fn fail_open_decides_locally_and_reconciles_every_token() {
        let (backend, guard) = setup(FailurePolicy::Open);
        // Reserved while up, settled while down: deferred.
        guard
            .reserve(&reservation("before"), LIMITS, 60_000, 0)
            .await
            .unwrap();
        backend.up.store(false, Ordering::Relaxed);
        guard.settle("u", "2026-01", "before", 30, true).await;
        assert!(!guard.is_healthy());
        // Reserved and settled while down: on the fallback, into the ledger.
        assert!(matches!(
            guard
                .reserve(&reservation("during"), LIMITS, 60_000, 0)
                .await
                .unwrap(),
            ReserveDecision::Granted { .. }
        ));
        guard.settle("u", "2026-01", "during", 12, true).await;
        assert_eq!(
            guard
                .rate("k", RateLimit { per_minute: 1 }, 0)
                .await
                .unwrap(),
            RateDecision::Allowed
        );
        assert!(!guard.probe().await, "still down");
        backend.up.store(true, Ordering::Relaxed);
        assert!(guard.probe().await);
        assert!(guard.is_healthy());
        let usage = backend
            .inner
            .usage("u", "2026-01", 60_000, 0)
            .await
            .unwrap();
        assert_eq!(
            (usage.tokens_used, usage.requests_used),
            (42, 2),
            "nothing lost"
        );
        assert_eq!(usage.tokens_reserved, 0);
        // A second probe adds nothing twice.
        guard.probe().await;
        let again = backend
            .inner
            .usage("u", "2026-01", 60_000, 0)
            .await
            .unwrap();
        assert_eq!(again.tokens_used, 42);
    }

    #[tokio::test]
    async fn fail_closed_refuses_while_down() {
        let (backend, guard) = setup(FailurePolicy::Closed);
        backend.up.store(false, Ordering::Relaxed);
        assert!(guard
            .rate("k", RateLimit { per_minute: 5 }, 0)
            .await
            .is_err());
        assert!(guard
            .reserve(&reservation("x"), LIMITS, 60_000, 0)
            .await
            .is_err());
        backend.up.store(true, Ordering::Relaxed);
        assert!(guard.probe().await);
        assert!(guard
            .rate("k", RateLimit { per_minute: 5 }, 0)
            .await
            .is_ok());
    }
}
