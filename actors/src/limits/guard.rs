//! The failure policy around a shared limits backend (Redis): which
//! backend decides, and whether the shared one is up.
//!
//! While the shared backend answers, every decision is made there, so all
//! instances share one limit. When it fails (an error or its command
//! timeout), the guard marks it down and, by policy:
//! - **fail open** (default): decides with this instance's in-process
//!   backend (limits then hold per instance);
//! - **fail closed**: refuses with `unavailable`.
//!
//! What happens to the quota spent meanwhile (the ledger, the settles that
//! could not be applied) belongs to the QuotaKeeper, which also probes the
//! backend and marks it up again once everything is reconciled
//! ([`crate::limits::quota_keeper`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::local::LocalLimits;
use crate::ports::limits::{
    LimitsBackend, LimitsError, QuotaLimits, QuotaUsage, RateDecision, RateKey, RateLimit,
    Reservation, ReserveDecision, SlotClaim, SlotKey,
};
use crate::settings::LimitOverride;
use crate::time::Month;
use skald_protocol::UserId;

/// What to do while the shared backend is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Open,
    Closed,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, LimitsError>> + Send + 'a>>;

/// Who decided: the shared backend, or this instance's fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    Primary,
    Fallback,
}

pub struct LimitsGuard {
    primary: Arc<dyn LimitsBackend>,
    /// Present when `primary` is a shared backend that can fail.
    fallback: Option<LocalLimits>,
    policy: FailurePolicy,
    healthy: AtomicBool,
}

impl LimitsGuard {
    /// A backend of this instance alone (in-process, or the embedded one in
    /// the data dir): nothing to fall back to.
    pub fn local(backend: Arc<dyn LimitsBackend>) -> LimitsGuard {
        LimitsGuard::build(backend, None, FailurePolicy::Closed)
    }

    /// In-process limits, kept in memory only (tests, benchmarks).
    pub fn in_memory() -> LimitsGuard {
        LimitsGuard::local(Arc::new(LocalLimits::new()))
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

    /// Whether the shared backend can fail over (and so needs probing).
    pub fn is_shared(&self) -> bool {
        self.fallback.is_some()
    }

    pub(crate) fn primary(&self) -> &dyn LimitsBackend {
        &*self.primary
    }

    pub(crate) fn fallback(&self) -> Option<&LocalLimits> {
        self.fallback.as_ref()
    }

    pub(crate) fn mark_down(&self, error: &LimitsError) {
        if self.fallback.is_some() && self.healthy.swap(false, Ordering::Relaxed) {
            metrics::counter!("skald_limits_outages_total").increment(1);
            tracing::warn!(backend = self.primary.name(), %error, policy = ?self.policy, "limits backend down");
        }
    }

    pub(crate) fn mark_up(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(
                backend = self.primary.name(),
                "limits backend back; usage reconciled"
            );
        }
    }

    /// Runs `op` on the shared backend while it is up, else by policy.
    async fn route<'s, T>(
        &'s self,
        op: impl Fn(&'s dyn LimitsBackend) -> BoxFut<'s, T>,
    ) -> Result<(T, DecidedBy), LimitsError> {
        let Some(fallback) = &self.fallback else {
            return op(&*self.primary).await.map(|v| (v, DecidedBy::Primary));
        };
        if self.is_healthy() {
            let started = std::time::Instant::now();
            let result = op(&*self.primary).await;
            metrics::histogram!("skald_limits_backend_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(v) => return Ok((v, DecidedBy::Primary)),
                Err(e) => {
                    metrics::counter!("skald_limits_backend_errors_total").increment(1);
                    self.mark_down(&e)
                }
            }
        }
        match self.policy {
            FailurePolicy::Closed => Err(LimitsError::unavailable(format_args!(
                "{} is unreachable",
                self.primary.name()
            ))),
            FailurePolicy::Open => {
                metrics::counter!("skald_limits_fallback_decisions_total").increment(1);
                op(fallback).await.map(|v| (v, DecidedBy::Fallback))
            }
        }
    }

    pub async fn rate(
        &self,
        key: &RateKey,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError> {
        self.route(|b| Box::pin(b.rate(key, limit, now_ms)))
            .await
            .map(|(v, _)| v)
    }

    pub async fn acquire_slot(&self, claim: &SlotClaim, now_ms: i64) -> Result<bool, LimitsError> {
        self.route(|b| Box::pin(b.acquire_slot(claim, now_ms)))
            .await
            .map(|(v, _)| v)
    }

    /// Releases everywhere the slot may be (best effort: leases expire).
    pub async fn release_slot(&self, key: &SlotKey, holder: &str) {
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
    ) -> Result<(ReserveDecision, DecidedBy), LimitsError> {
        self.route(|b| Box::pin(b.reserve(reservation, limits, lease_ms, now_ms)))
            .await
    }

    pub async fn usage(
        &self,
        user: &UserId,
        month: Month,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError> {
        self.route(|b| Box::pin(b.usage(user, month, lease_ms, now_ms)))
            .await
            .map(|(v, _)| v)
    }

    /// Operators' per-user overrides, from the backend that keeps them (a
    /// shared backend that is down fails: the catalog keeps what it has).
    pub async fn user_limits(&self) -> Result<BTreeMap<UserId, LimitOverride>, LimitsError> {
        self.primary.user_limits().await
    }

    /// Stores (or with `None` deletes) a user's override where every
    /// instance reads it.
    pub async fn set_user_limits(
        &self,
        user: &UserId,
        limits: Option<&LimitOverride>,
    ) -> Result<(), LimitsError> {
        self.primary.set_user_limits(user, limits).await
    }

    /// Erases rate and slot state everywhere it may be.
    pub async fn forget(
        &self,
        rate_keys: &[RateKey],
        slot_keys: &[SlotKey],
    ) -> Result<(), LimitsError> {
        if let Some(fallback) = &self.fallback {
            fallback.forget(rate_keys, slot_keys).await?;
        }
        self.primary.forget(rate_keys, slot_keys).await
    }
}
