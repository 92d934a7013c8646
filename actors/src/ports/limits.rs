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

/// A rate: `per_minute` events a minute, and a burst of as many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
}

impl RateLimit {
    /// GCRA's emission interval, in microseconds.
    pub fn interval_us(self) -> u64 {
        60_000_000 / u64::from(self.per_minute.max(1))
    }

    /// GCRA's tolerance: how far ahead of now the theoretical arrival time
    /// may run (a full minute's burst).
    pub fn tolerance_us(self) -> u64 {
        self.interval_us() * u64::from(self.per_minute.max(1) - 1)
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
    pub id: String,
    pub user: String,
    /// `YYYY-MM`, UTC.
    pub month: String,
    /// Tokens wanted: the prompt estimate plus the bot's max tokens.
    pub tokens: u64,
    /// Fewer tokens than this left is `quota_exceeded` (the prompt alone
    /// would not fit).
    pub min_tokens: u64,
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The backend cannot be reached or did not answer in time.
    #[error("limits backend unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait LimitsBackend: Send + Sync + 'static {
    /// One event against a GCRA rate limit.
    async fn rate(
        &self,
        key: &str,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError>;

    /// Takes (or refreshes) `holder`'s slot among at most `max`; slots not
    /// refreshed within `lease_ms` expire. False when all slots are taken.
    async fn acquire_slot(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<bool, LimitsError>;

    async fn release_slot(&self, key: &str, holder: &str) -> Result<(), LimitsError>;

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

    /// Ends a reservation: adds `tokens` (and the request, if
    /// `count_request`) to the month and releases the rest. Returns false
    /// when there was no such reservation (already settled, or expired).
    async fn settle(
        &self,
        user: &str,
        month: &str,
        id: &str,
        tokens: u64,
        count_request: bool,
    ) -> Result<bool, LimitsError>;

    /// Adds usage directly (usage spent while this backend was down).
    async fn add_usage(
        &self,
        user: &str,
        month: &str,
        tokens: u64,
        requests: u64,
    ) -> Result<(), LimitsError>;

    async fn usage(
        &self,
        user: &str,
        month: &str,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError>;

    /// Deletes a user's limit state (GDPR erasure): these rate keys and slot
    /// keys, and the user's quota months listed.
    async fn forget(
        &self,
        rate_keys: &[String],
        slot_keys: &[String],
        user: &str,
        months: &[String],
    ) -> Result<(), LimitsError>;

    /// Reachability, for readiness and recovery.
    async fn ping(&self) -> Result<(), LimitsError>;

    fn name(&self) -> &'static str;
}
