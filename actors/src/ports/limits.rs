//! The limits port: where rate-limit state, connection slots and quota
//! counters live (Redis, shared by every instance; or in-process).
//!
//! Every operation is one atomic step in the backend (one Lua script in
//! Redis), so parallel requests, on one instance or many, cannot overspend:
//! a quota is reserved before a stream starts and settled when it ends.
//! Operations are idempotent where a client library may retry them:
//! `reserve` and `settle` carry the stream id, and a second `settle` of the
//! same id changes nothing. Time is passed in by the caller (its injectable
//! clock), so the backends agree and tests can move the month.

use std::collections::BTreeMap;
use std::net::IpAddr;

use skald_protocol::{StreamId, UserId};

use crate::settings::LimitOverride;
use crate::time::Month;

/// Who a rate limit counts: a user's messages, or an address's new
/// connections and HTTP requests, its demo tokens, or the new demo
/// identities it was given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    User(UserId),
    Address(IpAddr),
    DemoTokens(IpAddr),
    DemoIdentities(IpAddr),
}

impl std::fmt::Display for RateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateKey::User(user) => write!(f, "user:{user}"),
            RateKey::Address(address) => write!(f, "addr:{address}"),
            RateKey::DemoTokens(address) => write!(f, "demo:{address}"),
            RateKey::DemoIdentities(address) => write!(f, "demoid:{address}"),
        }
    }
}

/// A set of slots: a user's open connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotKey(pub UserId);

impl std::fmt::Display for SlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn:{}", self.0)
    }
}

/// A claim on one of the slots of `key`: `holder` takes (or refreshes) its
/// slot among at most `max`; a slot not refreshed within `lease_ms` expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    pub key: SlotKey,
    pub holder: String,
    pub max: u32,
    pub lease_ms: u64,
}

/// A rate: `count` events a `period`, and a burst of as many (GCRA: the
/// allowance refills continuously, one event every `period / count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub period: RatePeriod,
}

/// The period of a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePeriod {
    Minute,
    Day,
}

impl RatePeriod {
    /// "minute", "day": for refusals.
    pub fn name(self) -> &'static str {
        match self {
            RatePeriod::Minute => "minute",
            RatePeriod::Day => "day",
        }
    }

    fn micros(self) -> u64 {
        match self {
            RatePeriod::Minute => 60_000_000,
            RatePeriod::Day => 86_400_000_000,
        }
    }
}

impl RateLimit {
    pub fn per_minute(count: u32) -> RateLimit {
        RateLimit {
            count,
            period: RatePeriod::Minute,
        }
    }

    pub fn per_day(count: u32) -> RateLimit {
        RateLimit {
            count,
            period: RatePeriod::Day,
        }
    }

    /// GCRA's emission interval, in microseconds.
    pub fn interval_us(self) -> u64 {
        self.period.micros() / u64::from(self.count.max(1))
    }

    /// GCRA's tolerance: how far ahead of now the theoretical arrival time
    /// may run (a full period's burst).
    pub fn tolerance_us(self) -> u64 {
        self.interval_us() * u64::from(self.count.max(1) - 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    pub monthly_tokens: u64,
    pub monthly_requests: u64,
}

/// A reservation made when a `send` is accepted, settled when its stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The stream id: one reservation per stream.
    pub id: StreamId,
    pub user: UserId,
    pub month: Month,
    /// Tokens wanted: the prompt estimate plus the bot's max tokens.
    pub tokens: u64,
    /// Fewer tokens than this left is `quota_exceeded` (the prompt alone
    /// would not fit).
    pub min_tokens: u64,
}

/// The end of a reservation: what its stream really used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    /// The reservation's id (its stream's).
    pub id: StreamId,
    pub user: UserId,
    pub month: Month,
    /// Tokens to count (0 gives the reservation back).
    pub tokens: u64,
    /// Whether the request counts (false when the `send` was refused
    /// before its `ack`).
    pub count_request: bool,
}

impl Settle {
    /// Gives a reservation back unused (its `send` was refused).
    pub fn release(reservation: &Reservation) -> Settle {
        Settle {
            id: reservation.id.clone(),
            user: reservation.user.clone(),
            month: reservation.month,
            tokens: 0,
            count_request: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveDecision {
    /// Granted this many tokens (maybe fewer than wanted: the stream's
    /// max tokens shrink to fit what is left of the month).
    Granted {
        tokens: u64,
    },
    TokensExhausted,
    RequestsExhausted,
}

/// A user's month: what was spent, and what live reservations hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    pub tokens_used: u64,
    pub requests_used: u64,
    pub tokens_reserved: u64,
    pub requests_reserved: u64,
}

impl QuotaUsage {
    /// The decision on a new reservation against this month: a request
    /// more must fit, and at least `min_tokens` of what is left (the grant
    /// is what is left, up to what was wanted). The in-process and embedded
    /// backends decide with this; the Redis script is its Lua twin, held
    /// to it by the contract suite.
    pub fn decide(&self, r: &Reservation, limits: QuotaLimits) -> ReserveDecision {
        if self.requests_used + self.requests_reserved + 1 > limits.monthly_requests {
            return ReserveDecision::RequestsExhausted;
        }
        let left = limits
            .monthly_tokens
            .saturating_sub(self.tokens_used + self.tokens_reserved);
        let grant = r.tokens.min(left);
        if grant < r.min_tokens.max(1) {
            return ReserveDecision::TokensExhausted;
        }
        ReserveDecision::Granted { tokens: grant }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The backend cannot be reached or did not answer in time.
    #[error("limits backend unavailable: {0}")]
    Unavailable(String),
}

impl LimitsError {
    pub fn unavailable(why: impl std::fmt::Display) -> LimitsError {
        LimitsError::Unavailable(why.to_string())
    }
}

#[async_trait::async_trait]
pub trait LimitsBackend: Send + Sync + 'static {
    /// One event against a GCRA rate limit.
    async fn rate(
        &self,
        key: &RateKey,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError>;

    /// Takes (or refreshes) the claimed slot. False when all are taken.
    async fn acquire_slot(&self, claim: &SlotClaim, now_ms: i64) -> Result<bool, LimitsError>;

    async fn release_slot(&self, key: &SlotKey, holder: &str) -> Result<(), LimitsError>;

    /// Reserves a request and up to `reservation.tokens` tokens. Idempotent
    /// on `reservation.id`. Reservations older than `lease_ms` are dropped
    /// (their server died), so a crash cannot hold a quota forever.
    async fn reserve(
        &self,
        reservation: &Reservation,
        limits: QuotaLimits,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<ReserveDecision, LimitsError>;

    /// Ends reservations: adds each one's tokens (and its request, if
    /// counted) to its month and releases the rest. Returns, for each, false
    /// when there was no such reservation (already settled, or expired).
    /// A backend that can send them together (Redis: one pipeline) does.
    async fn settle(&self, settles: &[Settle]) -> Result<Vec<bool>, LimitsError>;

    /// Adds usage directly (usage spent while this backend was down).
    async fn add_usage(
        &self,
        user: &UserId,
        month: Month,
        tokens: u64,
        requests: u64,
    ) -> Result<(), LimitsError>;

    async fn usage(
        &self,
        user: &UserId,
        month: Month,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError>;

    /// Deletes limit state (GDPR erasure): these rate keys and slot keys.
    /// Quota counters are kept: they are counters without content, and
    /// erasing them would give an erased user a fresh month.
    async fn forget(&self, rate_keys: &[RateKey], slot_keys: &[SlotKey])
        -> Result<(), LimitsError>;

    /// Operators' per-user limit overrides (the Admin API), every one
    /// stored.
    async fn user_limits(&self) -> Result<BTreeMap<UserId, LimitOverride>, LimitsError>;

    /// Stores a user's override, replacing any; `None` deletes it.
    async fn set_user_limits(
        &self,
        user: &UserId,
        limits: Option<&LimitOverride>,
    ) -> Result<(), LimitsError>;

    /// Reachability, for readiness and recovery.
    async fn ping(&self) -> Result<(), LimitsError>;

    fn name(&self) -> &'static str;
}
