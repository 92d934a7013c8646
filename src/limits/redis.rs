//! The Redis limits backend (fred): rate limits, connection slots and
//! monthly quotas shared by every server instance.
//!
//! Why it is built this way:
//!
//! - **One Lua script per operation.** Each operation reads, decides and
//!   writes inside one script, which Redis runs atomically, so parallel
//!   requests on one instance or many cannot read the same counter and both
//!   spend it (the "budgets leak under concurrency" pitfall). Scripts are
//!   loaded once (`SCRIPT LOAD`, then `EVALSHA`); a Redis that lost its
//!   script cache (restart, failover) answers `NOSCRIPT` and the call falls
//!   back to `EVAL` with the body, which also caches it again.
//! - **Time comes from the caller.** `now_ms` and every limit are script
//!   arguments; Redis `TIME` is never read. The in-process backend
//!   (`skald_actors::limits::local`) and this one therefore make the same
//!   decision for the same inputs (same GCRA with a microsecond TAT, same
//!   leases, same integer rounding), and tests can move the clock (month
//!   rollover, lease expiry). Key TTLs are only housekeeping, set with a
//!   margin past the moment the key stops mattering.
//! - **Hash tags.** All keys one script touches share one `{...}` hash tag
//!   (the user and month for quotas), so the scripts are valid on a Redis
//!   Cluster. User ids and keys may contain any character, so `%`, `{`, `}`
//!   and `|` are percent-encoded inside the tag: no id can end the tag early
//!   or collide with another one.
//! - **Bounded waits while Redis is down.** fred reconnects by itself,
//!   forever, with a capped exponential backoff, and `connect` does not wait
//!   for Redis beyond a short bound, so the server starts while Redis is
//!   unreachable. Every command is sent with `fail_fast` (refused at once
//!   while the client is not connected, never queued for a reconnection,
//!   never retried over a new connection) and a timeout (`command_timeout`,
//!   also fred's default command timeout, and the bound of a whole
//!   operation) for a connection that is up but does not answer; an
//!   unresponsive connection is dropped and reconnected.
//!   Every failure is [`LimitsError::Unavailable`], and the caller applies
//!   its failure policy (fail open to the in-process limiter, or closed).
//!
//! Keys (`<p>` is the configured prefix, `{...}` the encoded hash tag):
//!
//! | key | type | content | TTL |
//! | --- | --- | --- | --- |
//! | `<p>:rl:{key}` | string | GCRA theoretical arrival time, µs | until the TAT + 60 s |
//! | `<p>:slots:{key}` | zset | holder -> lease expiry, ms | until the last lease + 60 s |
//! | `<p>:q:{user\|month}` | hash | `tokens`, `requests` used | 62 days from the last write |
//! | `<p>:q:{user\|month}:res` | hash | reservation id -> `tokens:made_at_ms` | 62 days from the last write |
//! | `<p>:user_limits` | hash | user -> the operator's override (JSON) | none |
//!
//! Numbers: Lua numbers are doubles, exact up to 2^53. Timestamps in µs
//! (~1.8e15) fit; counts and limits above 2^53 - 1 are clamped to it (for a
//! limit that means "unlimited"). Numbers are written back with
//! `string.format('%.0f', n)`, never `tostring` (which would print `1e+15`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use fred::types::config::{Config, Options, ReconnectPolicy, TcpConfig, UnresponsiveConfig};
use fred::types::{Builder, ClusterHash, ConnectHandle, CustomCommand, Value};
use skald_actors::ports::limits::{
    LimitsBackend, LimitsError, QuotaLimits, QuotaUsage, RateDecision, RateKey, RateLimit,
    Reservation, ReserveDecision, Settle, SlotClaim, SlotKey,
};
use skald_actors::settings::LimitOverride;
use skald_actors::time::Month;
use skald_actors::UserId;

/// Largest integer a Lua number (a double) holds exactly.
const MAX_EXACT: u64 = (1 << 53) - 1;
/// How long rate and slot keys outlive the moment they stop mattering
/// (covers clock skew between instances).
const KEY_MARGIN_MS: u64 = 60_000;
/// Quota keys live this long after their last write (a month and then some).
const QUOTA_TTL_MS: u64 = 62 * 24 * 60 * 60 * 1000;
/// Reconnection backoff: 100 ms, doubling, capped at 2 s, forever.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;
/// The longest `connect` waits for the first connection (it waits at least
/// `command_timeout`, at least [`FIRST_CONNECT_MIN`]).
const FIRST_CONNECT_MIN: Duration = Duration::from_secs(1);
const FIRST_CONNECT_MAX: Duration = Duration::from_secs(5);
/// TCP connect (and TLS handshake) bound per attempt, and for fred's own
/// commands on a new connection (HELLO, AUTH, SELECT).
const CONNECT_TIMEOUT_MIN: Duration = Duration::from_secs(2);

/// Where and how to reach Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS.
    pub url: String,
    /// The most one operation may take, including while Redis is down
    /// (it fails with `Unavailable` then).
    pub command_timeout: Duration,
    /// Prefix of every key (default `skald`); must not contain `{` or `}`.
    pub key_prefix: String,
}

impl RedisSettings {
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
    pub const DEFAULT_KEY_PREFIX: &'static str = "skald";

    /// Settings with the default timeout and prefix.
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            key_prefix: Self::DEFAULT_KEY_PREFIX.into(),
        }
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl Default for RedisSettings {
    fn default() -> RedisSettings {
        RedisSettings::new("redis://127.0.0.1:6379")
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.redacted_url())
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// A configuration that cannot work. Redis being unreachable is not one of
/// these: `connect` succeeds and keeps connecting in the background.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid Redis key prefix {0:?}: it must not contain '{{' or '}}'")]
    InvalidPrefix(String),
    #[error("invalid Redis command timeout: it must be more than zero")]
    InvalidTimeout,
}

/// The limits backend on Redis. Cheap to share behind an `Arc`; one fred
/// client (one pipelined connection) serves every caller.
pub struct RedisLimits {
    client: Client,
    /// Applied to every command: timeout, fail fast, one attempt.
    options: Options,
    /// The bound of one operation.
    timeout: Duration,
    prefix: String,
    /// Strings never to show in an error message (the password).
    secrets: Vec<String>,
    /// The SHA-1 of each script, from its first `SCRIPT LOAD` on this
    /// client's Redis.
    shas: [OnceLock<String>; SCRIPTS],
    task: ConnectHandle,
}

/// Connects to Redis. Returns once connected, or after a short bound
/// (the larger of `command_timeout` and 1 s, at most 5 s) with a client that
/// keeps connecting in the background: operations fail with
/// [`LimitsError::Unavailable`] until Redis answers. Only a configuration
/// that cannot work (bad URL, prefix or timeout) is an error.
pub async fn connect(settings: RedisSettings) -> Result<RedisLimits, RedisSetupError> {
    RedisLimits::connect(settings).await
}

/// The client builder every Skald client of this Redis uses (limits, the
/// stream bus): checked settings, the password kept aside for redaction,
/// keep-connecting in the background, bounded commands and connects, no
/// retries, TCP_NODELAY, an unresponsive connection dropped. Returns the
/// builder and the secrets never to show.
pub(crate) fn prepare(settings: &RedisSettings) -> Result<(Builder, Vec<String>), RedisSetupError> {
    if settings.key_prefix.contains(['{', '}']) {
        return Err(RedisSetupError::InvalidPrefix(settings.key_prefix.clone()));
    }
    let timeout = settings.command_timeout;
    if timeout.is_zero() {
        return Err(RedisSetupError::InvalidTimeout);
    }
    let mut secrets: Vec<String> = url_password(&settings.url).into_iter().collect();
    let mut config =
        Config::from_url(&settings.url).map_err(|e| invalid_url(settings, e, &secrets))?;
    if let Some(password) = config.password.clone() {
        secrets.push(password);
    }
    secrets.retain(|s| !s.is_empty());
    // Keep trying to connect in the background when the first attempt
    // fails (the default would give up and return the error).
    config.fail_fast = false;
    let connect_timeout = timeout.max(CONNECT_TIMEOUT_MIN);
    // A connection that leaves a command unanswered this long is closed
    // and reconnected (a paused or half-open server).
    let unresponsive = (timeout * 4).max(CONNECT_TIMEOUT_MIN);
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = connect_timeout;
            c.max_command_attempts = 1;
            c.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(unresponsive),
                interval: unresponsive / 4,
            };
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ));
    Ok((builder, secrets))
}

pub(crate) fn invalid_url(
    settings: &RedisSettings,
    error: FredError,
    secrets: &[String],
) -> RedisSetupError {
    RedisSetupError::InvalidUrl {
        url: settings.redacted_url(),
        reason: redact(error.details(), secrets),
    }
}

/// Waits a short bound (the command timeout, within 1 to 5 s) for the first
/// connection, and says whether it came; the client keeps trying after.
pub(crate) async fn wait_connected(
    client: &impl ClientLike,
    settings: &RedisSettings,
    what: &str,
) -> bool {
    let wait = settings
        .command_timeout
        .clamp(FIRST_CONNECT_MIN, FIRST_CONNECT_MAX);
    let connected = tokio::time::timeout(wait, async {
        while !client.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok();
    if connected {
        tracing::info!(url = %settings.redacted_url(), "{what}: connected to Redis");
    } else {
        tracing::warn!(
            url = %settings.redacted_url(),
            waited_ms = wait.as_millis() as u64,
            "{what}: Redis is not reachable yet; connecting in the background"
        );
    }
    connected
}

impl RedisLimits {
    /// See [`connect`].
    pub async fn connect(settings: RedisSettings) -> Result<RedisLimits, RedisSetupError> {
        let (builder, secrets) = prepare(&settings)?;
        let client = builder
            .build()
            .map_err(|e| invalid_url(&settings, e, &secrets))?;
        let task = client.connect();
        wait_connected(&client, &settings, "limits").await;
        let timeout = settings.command_timeout;
        Ok(RedisLimits {
            client,
            options: Options {
                timeout: Some(timeout),
                fail_fast: true,
                max_attempts: Some(1),
                ..Options::default()
            },
            timeout,
            prefix: settings.key_prefix,
            secrets,
            shas: Default::default(),
            task,
        })
    }

    /// Whether the client holds a live connection right now.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The key holding the GCRA state of rate `key`.
    pub fn rate_key(&self, key: &RateKey) -> String {
        format!("{}:rl:{{{}}}", self.prefix, tag(&key.to_string()))
    }

    /// The key holding the slots of `key`.
    pub fn slots_key(&self, key: &SlotKey) -> String {
        format!("{}:slots:{{{}}}", self.prefix, tag(&key.to_string()))
    }

    /// The keys of a user's month: its counters, and its reservations.
    pub fn quota_keys(&self, user: &UserId, month: Month) -> (String, String) {
        let month = month.to_string();
        let counters = format!("{}:q:{{{}|{}}}", self.prefix, tag(user), tag(&month));
        let reservations = format!("{counters}:res");
        (counters, reservations)
    }

    /// The hash of operators' per-user overrides.
    pub fn user_limits_key(&self) -> String {
        format!("{}:user_limits", self.prefix)
    }

    fn unavailable(&self, what: &str, error: impl fmt::Display) -> LimitsError {
        LimitsError::Unavailable(redact(&format!("redis {what}: {error}"), &self.secrets))
    }

    /// Runs `script` atomically, within `command_timeout` in all (the first
    /// use, or the first after Redis lost its scripts, takes two commands).
    async fn run(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, LimitsError> {
        tokio::time::timeout(self.timeout, self.run_script(script, keys, args))
            .await
            .unwrap_or_else(|_| Err(self.unavailable(script.name, "timed out")))
    }

    async fn run_script(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, LimitsError> {
        let client = self.client.with_options(&self.options);
        eval(&client, script.lua, &self.shas[script.index], keys, args)
            .await
            .map_err(|e| self.unavailable(script.name, e))
    }

    /// Runs `script` and reads its reply: an array of `n` integers.
    async fn run_ints(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
        n: usize,
    ) -> Result<Vec<i64>, LimitsError> {
        let reply = self.run(script, keys, args).await?;
        ints(reply, n).ok_or_else(|| self.unavailable(script.name, "unexpected script reply"))
    }
}

impl Drop for RedisLimits {
    fn drop(&mut self) {
        // Ends the connection and its reconnection loop (which would
        // otherwise retry forever for a client nobody uses).
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl LimitsBackend for RedisLimits {
    async fn rate(
        &self,
        key: &RateKey,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError> {
        let reply = self
            .run_ints(
                &RATE,
                vec![self.rate_key(key)],
                vec![
                    now_ms.to_string(),
                    limit.interval_us().to_string(),
                    limit.tolerance_us().to_string(),
                    KEY_MARGIN_MS.to_string(),
                ],
                2,
            )
            .await?;
        Ok(if reply[0] == 1 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after_ms: (reply[1].max(1)) as u64,
            }
        })
    }

    async fn acquire_slot(&self, claim: &SlotClaim, now_ms: i64) -> Result<bool, LimitsError> {
        let reply = self
            .run_ints(
                &SLOT_ACQUIRE,
                vec![self.slots_key(&claim.key)],
                vec![
                    claim.holder.clone(),
                    claim.max.to_string(),
                    exact(claim.lease_ms),
                    now_ms.to_string(),
                    KEY_MARGIN_MS.to_string(),
                ],
                1,
            )
            .await?;
        Ok(reply[0] == 1)
    }

    async fn release_slot(&self, key: &SlotKey, holder: &str) -> Result<(), LimitsError> {
        self.run(
            &SLOT_RELEASE,
            vec![self.slots_key(key)],
            vec![holder.to_owned()],
        )
        .await?;
        Ok(())
    }

    async fn reserve(
        &self,
        r: &Reservation,
        limits: QuotaLimits,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<ReserveDecision, LimitsError> {
        let (counters, reservations) = self.quota_keys(&r.user, r.month);
        let reply = self
            .run_ints(
                &RESERVE,
                vec![counters, reservations],
                vec![
                    r.id.to_string(),
                    exact(r.tokens),
                    exact(r.min_tokens),
                    exact(limits.monthly_tokens),
                    exact(limits.monthly_requests),
                    // The in-process backend compares with `lease_ms as i64`.
                    (lease_ms as i64).to_string(),
                    now_ms.to_string(),
                    QUOTA_TTL_MS.to_string(),
                ],
                2,
            )
            .await?;
        Ok(match reply[0] {
            1 => ReserveDecision::Granted {
                tokens: reply[1].max(0) as u64,
            },
            2 => ReserveDecision::TokensExhausted,
            _ => ReserveDecision::RequestsExhausted,
        })
    }

    /// Each settle is its own script (they touch different users' keys);
    /// sent together, they share one pipelined connection.
    async fn settle(&self, settles: &[Settle]) -> Result<Vec<bool>, LimitsError> {
        let each = settles.iter().map(|settle| async move {
            let (counters, reservations) = self.quota_keys(&settle.user, settle.month);
            let reply = self
                .run_ints(
                    &SETTLE,
                    vec![counters, reservations],
                    vec![
                        settle.id.to_string(),
                        exact(settle.tokens),
                        if settle.count_request { "1" } else { "0" }.to_owned(),
                        QUOTA_TTL_MS.to_string(),
                    ],
                    1,
                )
                .await?;
            Ok(reply[0] == 1)
        });
        futures::future::join_all(each).await.into_iter().collect()
    }

    async fn add_usage(
        &self,
        user: &UserId,
        month: Month,
        tokens: u64,
        requests: u64,
    ) -> Result<(), LimitsError> {
        let (counters, _) = self.quota_keys(user, month);
        self.run(
            &ADD_USAGE,
            vec![counters],
            vec![exact(tokens), exact(requests), QUOTA_TTL_MS.to_string()],
        )
        .await?;
        Ok(())
    }

    async fn usage(
        &self,
        user: &UserId,
        month: Month,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError> {
        let (counters, reservations) = self.quota_keys(user, month);
        let reply = self
            .run_ints(
                &USAGE,
                vec![counters, reservations],
                vec![(lease_ms as i64).to_string(), now_ms.to_string()],
                4,
            )
            .await?;
        let n = |i: usize| reply[i].max(0) as u64;
        Ok(QuotaUsage {
            tokens_used: n(0),
            requests_used: n(1),
            tokens_reserved: n(2),
            requests_reserved: n(3),
        })
    }

    async fn forget(
        &self,
        rate_keys: &[RateKey],
        slot_keys: &[SlotKey],
    ) -> Result<(), LimitsError> {
        // One DEL per key: the keys live in different hash slots.
        let mut keys: Vec<String> = rate_keys.iter().map(|k| self.rate_key(k)).collect();
        keys.extend(slot_keys.iter().map(|k| self.slots_key(k)));
        for key in keys {
            self.client
                .with_options(&self.options)
                .del::<i64, _>(key)
                .await
                .map_err(|e| self.unavailable("del", e))?;
        }
        Ok(())
    }

    async fn user_limits(&self) -> Result<BTreeMap<UserId, LimitOverride>, LimitsError> {
        let all: HashMap<String, String> = self
            .client
            .with_options(&self.options)
            .hgetall(self.user_limits_key())
            .await
            .map_err(|e| self.unavailable("user limits", e))?;
        Ok(crate::limits::read_user_limits(all))
    }

    async fn set_user_limits(
        &self,
        user: &UserId,
        limits: Option<&LimitOverride>,
    ) -> Result<(), LimitsError> {
        let client = self.client.with_options(&self.options);
        let key = self.user_limits_key();
        match limits {
            Some(limits) => {
                client
                    .hset::<(), _, _>(
                        key,
                        (user.as_str(), crate::limits::user_limits_json(limits)),
                    )
                    .await
            }
            None => client.hdel::<(), _, _>(key, user.as_str()).await,
        }
        .map_err(|e| self.unavailable("user limits", e))
    }

    async fn ping(&self) -> Result<(), LimitsError> {
        self.client
            .with_options(&self.options)
            .ping::<Value>(None)
            .await
            .map(|_| ())
            .map_err(|e| self.unavailable("ping", e))
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// Runs the Lua script `lua` on `client`: `EVALSHA`, after a `SCRIPT LOAD`
/// the first time (`sha` keeps its hash), and on `NOSCRIPT` (a Redis that
/// lost its scripts) `EVAL` with the body. Routed by the first key.
///
/// The keys and arguments are taken by value and become the command's
/// values without a copy (a flush of the stream bus carries every frame);
/// the fallback shares them (reference-counted).
///
/// These go through `custom` commands: fred 10.1 has no `LuaInterface`
/// for `WithOptions`, so `with_options(..).evalsha(..)` would deref to the
/// bare client and silently drop the timeout and fail-fast options.
pub(crate) async fn eval<C: ClientLike>(
    client: &C,
    lua: &'static str,
    sha: &OnceLock<String>,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<Value, FredError> {
    let slot = ClusterHash::Custom(fred::util::redis_keyslot(keys[0].as_bytes()));
    let command = |name: &'static str| CustomCommand::new_static(name, slot.clone(), false);
    let hash = match sha.get() {
        Some(hash) => hash.clone(),
        None => {
            let hash: String = client.custom(command("SCRIPT"), vec!["LOAD", lua]).await?;
            sha.get_or_init(|| hash).clone()
        }
    };
    let mut call = Vec::with_capacity(2 + keys.len() + args.len());
    call.push(Value::from(hash));
    call.push(Value::from(keys.len() as i64));
    call.extend(keys.into_iter().chain(args).map(Value::from));
    match client.custom(command("EVALSHA"), call.clone()).await {
        Err(e) if e.details().starts_with("NOSCRIPT") => {
            call[0] = Value::from(lua);
            client.custom(command("EVAL"), call).await
        }
        other => other,
    }
}

/// A Lua script; `index` is its place in [`RedisLimits::shas`].
struct Script {
    name: &'static str,
    lua: &'static str,
    index: usize,
}

/// How many scripts there are (the length of [`RedisLimits::shas`]).
const SCRIPTS: usize = 7;

/// GCRA, as `skald_actors::limits::local::gcra`.
/// KEYS: TAT (µs). ARGV: now_ms, interval_us, tolerance_us, margin_ms.
/// Reply: {1, 0} allowed, {0, retry_after_ms} limited.
static RATE: Script = Script {
    name: "rate",
    index: 0,
    lua: r#"
local now = tonumber(ARGV[1]) * 1000
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
if tat - now > tolerance then
  local retry = math.floor((tat - tolerance - now + 999) / 1000)
  if retry < 1 then retry = 1 end
  return {0, retry}
end
local new_tat = tat + interval
local ttl = math.floor((new_tat - now + 999) / 1000) + tonumber(ARGV[4])
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl))
return {1, 0}
"#,
};

/// KEYS: zset holder -> lease expiry (ms).
/// ARGV: holder, max, lease_ms, now_ms, margin_ms. Reply: {1} taken, {0} full.
static SLOT_ACQUIRE: Script = Script {
    name: "acquire_slot",
    index: 1,
    lua: r#"
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return {0}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local ttl = tonumber(last[2]) - now
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl + tonumber(ARGV[5])))
return {1}
"#,
};

/// KEYS: zset. ARGV: holder.
static SLOT_RELEASE: Script = Script {
    name: "release_slot",
    index: 2,
    lua: r#"
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"#,
};

/// The start of the reserve and usage scripts: drops reservations older
/// than the lease (ARGV[lease_arg], now in ARGV[now_arg]) from KEYS[2] and
/// sums the live ones; `mine` is the tokens of reservation `ARGV[1]`.
macro_rules! live_reservations {
    ($lease:literal, $now:literal) => {
        concat!(
            "
local lease = tonumber(ARGV[",
            $lease,
            "])
local now = tonumber(ARGV[",
            $now,
            "])
local reserved_tokens, reserved_requests, mine = 0, 0, nil
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local id, value = entries[i], entries[i + 1]
  local sep = string.find(value, ':', 1, true)
  local tokens, made_at = nil, nil
  if sep then
    tokens = tonumber(string.sub(value, 1, sep - 1))
    made_at = tonumber(string.sub(value, sep + 1))
  end
  if tokens and made_at and now - made_at < lease then
    reserved_tokens = reserved_tokens + tokens
    reserved_requests = reserved_requests + 1
    if id == ARGV[1] then mine = tokens end
  else
    redis.call('HDEL', KEYS[2], id)
  end
end
local used = redis.call('HMGET', KEYS[1], 'tokens', 'requests')
local tokens_used = tonumber(used[1]) or 0
local requests_used = tonumber(used[2]) or 0
"
        )
    };
}

/// KEYS: month counters, reservations.
/// ARGV: id, tokens, min_tokens, monthly_tokens, monthly_requests, lease_ms,
/// now_ms, ttl_ms. Reply: {1, granted}, {2, 0} tokens exhausted,
/// {3, 0} requests exhausted.
static RESERVE: Script = Script {
    name: "reserve",
    index: 3,
    lua: concat!(
        live_reservations!("6", "7"),
        r#"
if mine then return {1, mine} end
if requests_used + reserved_requests + 1 > tonumber(ARGV[5]) then return {3, 0} end
local left = tonumber(ARGV[4]) - (tokens_used + reserved_tokens)
if left < 0 then left = 0 end
local grant = tonumber(ARGV[2])
if left < grant then grant = left end
local min_tokens = tonumber(ARGV[3])
if min_tokens < 1 then min_tokens = 1 end
if grant < min_tokens then return {2, 0} end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f:%.0f', grant, now))
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return {1, grant}
"#
    ),
};

/// KEYS: month counters, reservations. ARGV: id, tokens, count_request
/// (`1`/`0`), ttl_ms. Reply: {1} settled, {0} no such reservation.
static SETTLE: Script = Script {
    name: "settle",
    index: 4,
    lua: r#"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return {0} end
redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[2])
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'requests', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1}
"#,
};

/// KEYS: month counters. ARGV: tokens, requests, ttl_ms.
static ADD_USAGE: Script = Script {
    name: "add_usage",
    index: 5,
    lua: r#"
redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'requests', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#,
};

/// KEYS: month counters, reservations. ARGV: lease_ms, now_ms.
/// Reply: {tokens_used, requests_used, tokens_reserved, requests_reserved}.
/// (ARGV[1] is not a reservation id here, and `mine` is unused.)
static USAGE: Script = Script {
    name: "usage",
    index: 6,
    lua: concat!(
        live_reservations!("1", "2"),
        r#"
return {tokens_used, requests_used, reserved_tokens, reserved_requests}
"#
    ),
};

/// A count or limit as a script argument, clamped to what a double holds.
fn exact(n: u64) -> String {
    n.min(MAX_EXACT).to_string()
}

/// Percent-encodes the characters that would end a hash tag early (`{`,
/// `}`), separate the parts of a quota tag (`|`), or make encodings collide
/// (`%`).
fn tag(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
    out
}

/// The reply of a script as `n` integers.
fn ints(reply: Value, n: usize) -> Option<Vec<i64>> {
    let values = match reply {
        Value::Array(values) => values,
        _ => return None,
    };
    let ints: Vec<i64> = values.iter().map(|v| v.as_i64()).collect::<Option<_>>()?;
    (ints.len() == n).then_some(ints)
}

/// The password written in a URL (as written, maybe percent-encoded);
/// `redis://secret@host` (a lone userinfo) counts as one, as some servers
/// take it. Parsed by the `url` crate.
fn url_password(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    Some(parsed.password().unwrap_or(parsed.username()).to_owned()).filter(|p| !p.is_empty())
}

/// The URL with its password (or a lone userinfo) replaced by `***`; a URL
/// that does not parse is not shown at all.
fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<an invalid URL>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    } else if !parsed.username().is_empty() {
        let _ = parsed.set_username("***");
    }
    parsed.to_string()
}

pub(crate) fn redact(message: &str, secrets: &[String]) -> String {
    secrets.iter().fold(message.to_owned(), |m, secret| {
        m.replace(secret.as_str(), "***")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_cannot_end_early_or_collide() {
        assert_eq!(tag("a{b}c"), "a%7Bb%7Dc");
        assert_eq!(tag("%7B"), "%257B");
        assert_eq!(tag("u|2026-01"), "u%7C2026-01");
        assert_ne!(tag("a{"), tag("a%7B"));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://:p%40ss@h"), "rediss://:***@h");
        assert_eq!(redact_url("redis://tok@h/1?x=a@b"), "redis://***@h/1?x=a@b");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(url_password("redis://u:pw@h").as_deref(), Some("pw"));
        assert_eq!(url_password("redis://h"), None);
        assert_eq!(
            redact("auth failed for pw", &["pw".to_owned()]),
            "auth failed for ***"
        );
    }

    #[test]
    fn replies_are_checked() {
        let reply = Value::Array(vec![Value::Integer(1), Value::Integer(7)]);
        assert_eq!(ints(reply.clone(), 2), Some(vec![1, 7]));
        assert_eq!(ints(reply, 3), None);
        assert_eq!(ints(Value::Null, 1), None);
    }

    #[test]
    fn every_script_has_its_own_sha_slot() {
        let all = [
            &RATE,
            &SLOT_ACQUIRE,
            &SLOT_RELEASE,
            &RESERVE,
            &SETTLE,
            &ADD_USAGE,
            &USAGE,
        ];
        for (i, script) in all.iter().enumerate() {
            assert_eq!(script.index, i, "{}", script.name);
        }
        assert_eq!(all.len(), SCRIPTS);
    }

    #[test]
    fn large_numbers_are_clamped_to_exact_doubles() {
        assert_eq!(exact(u64::MAX), "9007199254740991");
        assert_eq!(exact(42), "42");
    }
}
