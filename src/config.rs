//! The one configuration struct, loaded from defaults, an optional TOML file
//! (`SKALD_CONFIG`) and environment variables, in that order of precedence.
//!
//! Environment variables and what every setting means are one table,
//! [`crate::config_reference::SETTINGS`]: the variables' names are fixed
//! because code outside the repository starts the server with them, and the
//! same table generates the configuration reference. A variable's value is
//! typed by its setting's default (a number, a boolean, a list, else text),
//! so no second table says which is which. Unknown keys in the file are
//! errors, and [`Config::validate`] rejects values that make no sense before
//! anything starts. Secrets are [`Secret`]s: never printed, not even by
//! `Debug`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use skald_actors::limits::guard::FailurePolicy;
use skald_actors::settings::{BotSettings, LimitSettings, SessionSettings};
use url::Url;

use crate::config_reference::SETTINGS;
use crate::edge::client_ip::{ForwardedHeader, TrustedProxies};
use crate::store::scylla::ScyllaSettings;

/// The variable that names the TOML configuration file.
pub const CONFIG_FILE_VAR: &str = "SKALD_CONFIG";

/// A secret setting (a key, a password): redacted in `Debug` and when
/// serialized, readable only through [`Secret::expose`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Connections the kernel queues before they are accepted (capped by
    /// `net.core.somaxconn`). tokio's default, 128, overflows in a burst of
    /// reconnects, and each overflowed client waits a one-second SYN
    /// retransmit.
    pub listen_backlog: u32,
    pub data_dir: PathBuf,
    /// At shutdown, how long live streams may run on before they are ended
    /// with `unavailable`.
    pub drain_timeout_ms: u64,
    /// Browser origins allowed to open a WebSocket; empty allows all. A
    /// request without an `Origin` header (not a browser) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Load balancers whose forwarding header names the client (see
    /// `edge::client_ip`).
    pub trusted_proxies: TrustedProxies,
    pub forwarded_header: ForwardedHeader,
    pub connections: ConnectionsConfig,
    pub auth: AuthConfig,
    pub websocket: WebSocketConfig,
    pub sessions: SessionSettings,
    pub model: ModelConfig,
    /// Named upstreams (`[upstreams.<name>]`), besides the one `[model]`
    /// and `SKALD_UPSTREAM_*` define, named `default`.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub limits: LimitSettings,
    pub redis: RedisConfig,
    /// ScyllaDB; without nodes, the embedded store is used.
    pub scylla: ScyllaSettings,
    pub demo: DemoConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// TLS served directly; unset: plain HTTP (behind a terminating proxy).
    pub tls: crate::tls::TlsConfig,
    /// Bots by name; `default` always exists.
    pub bots: BTreeMap<String, BotSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listen_backlog: 4096,
            data_dir: PathBuf::from("./data"),
            drain_timeout_ms: 30_000,
            allowed_origins: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            forwarded_header: ForwardedHeader::default(),
            connections: ConnectionsConfig::default(),
            auth: AuthConfig::default(),
            websocket: WebSocketConfig::default(),
            sessions: SessionSettings::default(),
            model: ModelConfig::default(),
            upstreams: BTreeMap::new(),
            limits: LimitSettings::default(),
            redis: RedisConfig::default(),
            scylla: ScyllaSettings::default(),
            demo: DemoConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            tls: crate::tls::TlsConfig::default(),
            bots: BTreeMap::from([("default".to_owned(), BotSettings::default())]),
        }
    }
}

/// What a connection may hold before it is an authenticated session (see
/// `edge::accept` and `edge::pending`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// A request's line and headers must arrive within this time, from the
    /// connection's start or the end of the previous response.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this time, from its headers.
    pub body_read_timeout_ms: u64,
    /// Connections that are not an authenticated session, at most; 0: half
    /// of what the open-files limit leaves after `fd_reserve`.
    pub max_pending: usize,
    /// The same, per client address (trusted proxies have no such cap).
    pub max_pending_per_address: usize,
    /// File descriptors never given to connections (the store, Redis,
    /// upstream requests).
    pub fd_reserve: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_pending: 0,
            max_pending_per_address: 256,
            fd_reserve: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub jwt_secret: Option<Secret>,
    /// Required `aud` when set.
    pub audience: Option<String>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Longest lifetime accepted (`exp - iat`); unset: any.
    pub max_token_lifetime_secs: Option<u64>,
    /// Time for a connection to authenticate before it is closed 4408.
    pub auth_timeout_ms: u64,
    /// Lifetime of tokens minted by `skald token`.
    pub token_ttl_secs: u64,
    /// Public keys for RS256, ES256 and EdDSA tokens, chosen by `kid`.
    pub keys: Vec<PublicKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            audience: None,
            issuer: None,
            leeway_secs: 30,
            max_token_lifetime_secs: None,
            auth_timeout_ms: 10_000,
            token_ttl_secs: 3600,
            keys: Vec::new(),
        }
    }
}

/// The algorithms a public key may verify (HS256 is the shared secret's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublicKeyAlgorithm {
    RS256,
    ES256,
    EdDSA,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    pub kid: String,
    pub algorithm: PublicKeyAlgorithm,
    /// The public key, PEM-encoded.
    pub public_key_pem: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest inbound frame or message; bigger closes with 1009.
    pub max_frame_bytes: usize,
    /// Read buffer per connection (tungstenite's default is 128 KiB, which
    /// would dominate the memory of an idle session). Client frames are
    /// small; a bigger one grows the buffer, which keeps that size.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before a write is pushed to the socket (0: each frame
    /// is written as it is queued; a delta already carries every token that
    /// arrived since the connection's last write). The buffer keeps its
    /// largest size for the connection's life.
    pub write_buffer_bytes: usize,
    pub ping_interval_ms: u64,
    /// A connection that sends nothing (not even a pong) this long is closed.
    pub idle_timeout_ms: u64,
    /// The kernel's send buffer per socket (SO_SNDBUF); unset: the OS
    /// default, which autotunes up to megabytes. A small one bounds kernel
    /// memory per slow client: our writer then coalesces deltas instead.
    pub socket_send_buffer_bytes: Option<usize>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_frame_bytes: 64 * 1024,
            read_buffer_bytes: 512,
            write_buffer_bytes: 0,
            ping_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            socket_send_buffer_bytes: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub upstream_url: Option<Url>,
    pub upstream_api_key: Option<Secret>,
    pub upstream_model: String,
    pub connect_timeout_ms: u64,
    pub simulated_tokens_per_second: f64,
    pub simulated_answer_tokens: u32,
    /// Key of the hash sent upstream as `safety_identifier` instead of the
    /// user's `sub`; unset: a key made once in the data dir (set it when
    /// several instances share an upstream account).
    pub user_hash_key: Option<Secret>,
    /// Failures in a row after which an upstream is skipped while another
    /// of a bot's list can answer.
    pub cooldown_after_failures: u32,
    /// How long it is skipped.
    pub cooldown_ms: u64,
}

/// One named upstream: `[upstreams.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// OpenAI-compatible base URL.
    pub url: Url,
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// The model when a bot names none.
    #[serde(default = "default_upstream_model")]
    pub model: String,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time it has for its first token (a thought or a word) before the
    /// next upstream of a bot's list is tried; the last one of the list
    /// waits as long as `sessions.first_token_timeout_ms` allows.
    #[serde(default = "default_attempt_timeout_ms")]
    pub first_token_timeout_ms: u64,
}

fn default_upstream_model() -> String {
    ModelConfig::default().upstream_model
}

fn default_connect_timeout_ms() -> u64 {
    ModelConfig::default().connect_timeout_ms
}

/// An upstream's `first_token_timeout_ms` unless configured (also the
/// `default` upstream's, which `[model]` defines).
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 15_000;

fn default_attempt_timeout_ms() -> u64 {
    DEFAULT_ATTEMPT_TIMEOUT_MS
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            upstream_url: None,
            upstream_api_key: None,
            upstream_model: "gpt-4o-mini".into(),
            connect_timeout_ms: 10_000,
            simulated_tokens_per_second: 50.0,
            simulated_answer_tokens: 120,
            user_hash_key: None,
            cooldown_after_failures: 3,
            cooldown_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL (it may hold a password: it is a
    /// secret); unset: limits and quotas in-process.
    pub url: Option<Secret>,
    /// Bound on every Redis command, also while Redis is unreachable.
    pub command_timeout_ms: u64,
    pub failure_policy: FailurePolicy,
    /// Prefix of every key Skald writes.
    pub key_prefix: String,
    /// Publish live streams to Redis so that any instance resumes, cancels
    /// and announces them (the stream bus); off keeps them in the instance
    /// that runs them (one instance, or sticky sessions).
    pub share_streams: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            command_timeout_ms: 250,
            failure_policy: FailurePolicy::Open,
            key_prefix: "skald".into(),
            share_streams: true,
        }
    }
}

/// Where Prometheus scrapes `/metrics`: on the main listener (default), or
/// on an address of its own (a private interface); with a bearer token
/// when set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` here, and no longer on `listen`.
    pub listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` on `/metrics`.
    pub token: Option<Secret>,
}

/// The demo: a page with the widget at `GET /`, and short-lived anonymous
/// tokens from `POST /v1/demo/token`. On by default (a fresh machine shows a
/// working chat); off in production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    pub enabled: bool,
    /// Lifetime of a demo token.
    pub token_ttl_secs: u64,
    /// Demo tokens per minute per client address.
    pub tokens_per_minute_per_address: u32,
    /// New demo identities per client address per day (renewals of an
    /// identity are not new).
    pub identities_per_day_per_address: u32,
    /// The bot every demo identity talks to, whatever its `send.bot`; when
    /// `bots` has none of this name, [`DemoConfig::built_in_bot`].
    pub bot: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: true,
            token_ttl_secs: 900,
            tokens_per_minute_per_address: 10,
            identities_per_day_per_address: 20,
            bot: "demo".into(),
        }
    }
}

impl DemoConfig {
    /// The demo's bot when none is configured: the default bot's prompt
    /// and model, with short answers and a small monthly budget per
    /// identity. With `identities_per_day_per_address`, what one address
    /// can draw from the model is bounded.
    pub fn built_in_bot(default: &BotSettings) -> BotSettings {
        BotSettings {
            max_tokens: 256,
            messages_per_minute: Some(10),
            monthly_tokens: Some(5_000),
            monthly_requests: Some(50),
            ..default.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then the file named by `SKALD_CONFIG` (if set), then
    /// the environment variables of [`SETTINGS`], and validates the result.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(|name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = env(CONFIG_FILE_VAR) {
            if !std::path::Path::new(&path).is_file() {
                return Err(ConfigError::Invalid(format!(
                    "{CONFIG_FILE_VAR}={path}: no such file"
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let defaults = crate::config_reference::defaults();
        for setting in SETTINGS {
            let Some(name) = setting.env else { continue };
            if let Some(value) = env(name) {
                let typed = env_value(defaults.get(setting.key), &value);
                figment = figment.merge(Serialized::global(setting.key, typed));
            }
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The names of every upstream: `default` from `[model]` (when it has
    /// a URL), then `[upstreams]`.
    pub fn upstream_names(&self) -> Vec<&str> {
        let default = self.model.upstream_url.as_ref().map(|_| "default");
        default
            .into_iter()
            .chain(self.upstreams.keys().map(String::as_str))
            .collect()
    }

    fn validate_upstreams(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.model.upstream_url.is_some() && self.upstreams.contains_key("default") {
            return invalid(
                "upstreams.default and model.upstream_url (SKALD_UPSTREAM_URL) both define the upstream `default`: keep one".into(),
            );
        }
        for (name, u) in &self.upstreams {
            if !matches!(u.url.scheme(), "http" | "https") {
                return invalid(format!("upstreams.{name}.url must be http or https"));
            }
            if u.connect_timeout_ms == 0 || u.first_token_timeout_ms == 0 {
                return invalid(format!(
                    "upstreams.{name}.connect_timeout_ms and first_token_timeout_ms must be at least 1"
                ));
            }
            if u.model.trim().is_empty() {
                return invalid(format!("upstreams.{name}.model must not be empty"));
            }
        }
        if self.model.cooldown_after_failures == 0 {
            return invalid("model.cooldown_after_failures must be at least 1".into());
        }
        for (name, bot) in &self.bots {
            self.validate_bot(name, bot).map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// A bot's settings, as a `[bots.<name>]` table or the Admin API gives
    /// them: valid values, and upstreams that this configuration defines.
    /// The message names the field (`bots.<name>.<field>`).
    pub fn validate_bot(&self, name: &str, bot: &BotSettings) -> Result<(), String> {
        bot.validate(name)?;
        let names = self.upstream_names();
        let wanted: Vec<&str> = if bot.upstreams.is_empty() {
            // Without any upstream, the simulated model answers.
            if names.is_empty() {
                return Ok(());
            }
            vec!["default"]
        } else {
            bot.upstreams.iter().map(String::as_str).collect()
        };
        match wanted.iter().find(|n| !names.contains(n)) {
            Some(missing) => {
                Err(format!(
                "bots.{name}.upstreams names `{missing}`, which is not configured (configured: {})",
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            ))
            }
            None => Ok(()),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.listen_backlog == 0 {
            return invalid("listen_backlog must be at least 1".into());
        }
        if !self.bots.contains_key("default") {
            return invalid("bots.default must exist".into());
        }
        self.validate_upstreams()?;
        self.tls.validate().map_err(ConfigError::Invalid)?;
        if self.auth.max_token_lifetime_secs == Some(0) {
            return invalid(
                "auth.max_token_lifetime_secs must be at least 1 (unset it for any)".into(),
            );
        }
        self.sessions.validate().map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.scylla.validate().map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.redis.url {
            let scheme = Url::parse(url.expose()).map(|u| u.scheme().to_owned());
            if !matches!(scheme.as_deref(), Ok("redis" | "rediss")) {
                return invalid("redis.url must be a redis:// or rediss:// URL".into());
            }
        }
        if self.redis.command_timeout_ms == 0 {
            return invalid("redis.command_timeout_ms must be at least 1".into());
        }
        let ws = &self.websocket;
        if ws.max_frame_bytes < 256 {
            return invalid("websocket.max_frame_bytes must be at least 256".into());
        }
        if ws.read_buffer_bytes == 0 || ws.ping_interval_ms == 0 || ws.idle_timeout_ms == 0 {
            return invalid(
                "websocket.read_buffer_bytes, ping_interval_ms and idle_timeout_ms must be at least 1"
                    .into(),
            );
        }
        let c = &self.connections;
        if c.header_read_timeout_ms == 0
            || c.body_read_timeout_ms == 0
            || c.max_pending_per_address == 0
        {
            return invalid(
                "connections.header_read_timeout_ms, body_read_timeout_ms and max_pending_per_address must be at least 1"
                    .into(),
            );
        }
        if self.demo.identities_per_day_per_address == 0
            || self.demo.tokens_per_minute_per_address == 0
        {
            return invalid(
                "demo.identities_per_day_per_address and tokens_per_minute_per_address must be at least 1"
                    .into(),
            );
        }
        if self.auth.auth_timeout_ms == 0 {
            return invalid("auth.auth_timeout_ms must be at least 1".into());
        }
        if matches!(&self.auth.jwt_secret, Some(s) if s.expose().len() < 32) {
            return invalid("auth.jwt_secret (SKALD_JWT_SECRET) must be at least 32 bytes".into());
        }
        let m = &self.model;
        if !(m.simulated_tokens_per_second >= 0.0 && m.simulated_tokens_per_second.is_finite()) {
            return invalid("model.simulated_tokens_per_second must be 0 or more".into());
        }
        if m.connect_timeout_ms == 0 {
            return invalid("model.connect_timeout_ms must be at least 1".into());
        }
        if m.simulated_answer_tokens == 0 {
            return invalid("model.simulated_answer_tokens must be at least 1".into());
        }
        if let Some(url) = &m.upstream_url {
            if !matches!(url.scheme(), "http" | "https") {
                return invalid(format!(
                    "model.upstream_url must be an http(s) URL, got {url}"
                ));
            }
        }
        Ok(())
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth.auth_timeout_ms)
    }

    /// The bots the server runs: the configured ones, and with the demo on,
    /// the demo's bot if none of its name is configured.
    pub fn bots_in_force(&self) -> BTreeMap<String, BotSettings> {
        let mut bots = self.bots.clone();
        if self.demo.enabled && !bots.contains_key(&self.demo.bot) {
            let default = bots.get("default").cloned().unwrap_or_default();
            bots.insert(self.demo.bot.clone(), DemoConfig::built_in_bot(&default));
        }
        bots
    }
}

/// An environment value typed like its setting's default (`default` is
/// the default as TOML text, absent for settings unset by default, which
/// are text): a number stays a number, `1`/`true`/`on` a boolean, a list is
/// comma-separated; anything else, and any value of a text setting, is text
/// (a secret made of digits stays a string).
fn env_value(default: Option<&String>, value: &str) -> figment::value::Value {
    let Some(default) = default else {
        return value.into();
    };
    if default.starts_with('[') {
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        return items.into();
    }
    if default == "true" || default == "false" {
        return match value.trim() {
            "1" | "true" | "yes" | "on" => true.into(),
            "0" | "false" | "no" | "off" => false.into(),
            other => other.into(),
        };
    }
    if default.starts_with('"') {
        return value.into();
    }
    value
        .parse()
        .unwrap_or_else(|_| figment::value::Value::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_serve_a_working_server() {
        let config = load(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.bots.contains_key("default"));
    }

    #[test]
    fn every_documented_variable_is_read() {
        let config = load(&[
            ("SKALD_LISTEN", "0.0.0.0:9000"),
            ("SKALD_DATA_DIR", "/tmp/skald-x"),
            ("SKALD_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("SKALD_UPSTREAM_URL", "http://127.0.0.1:1/v1"),
            ("SKALD_UPSTREAM_API_KEY", "sk-1234"),
            ("SKALD_UPSTREAM_MODEL", "m"),
            ("SKALD_SIMULATED_TOKENS_PER_SECOND", "7.5"),
            ("SKALD_SIMULATED_ANSWER_TOKENS", "9"),
            ("SKALD_LIMIT_MESSAGES_PER_MINUTE", "3"),
            ("SKALD_QUOTA_MONTHLY_TOKENS", "4"),
            ("SKALD_QUOTA_MONTHLY_REQUESTS", "5"),
            ("SKALD_LOG_FORMAT", "json"),
            ("SKALD_REDIS_URL", "redis://127.0.0.1:6390"),
            ("SKALD_REDIS_FAILURE_POLICY", "closed"),
            ("SKALD_DEMO", "0"),
            ("SKALD_SCYLLA_NODES", "10.0.0.1:9042, 10.0.0.2:9042"),
            ("SKALD_SCYLLA_KEYSPACE", "chat"),
        ])
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/skald-x"));
        assert_eq!(
            config.auth.jwt_secret.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            config.model.upstream_url.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:1/v1")
        );
        assert_eq!(
            config.model.upstream_api_key.as_ref().map(Secret::expose),
            Some("sk-1234")
        );
        assert_eq!(config.model.upstream_model, "m");
        assert_eq!(config.model.simulated_tokens_per_second, 7.5);
        assert_eq!(config.model.simulated_answer_tokens, 9);
        assert_eq!(config.limits.messages_per_minute, 3);
        assert_eq!(config.limits.monthly_tokens, 4);
        assert_eq!(config.limits.monthly_requests, 5);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(
            config.redis.url.as_ref().map(Secret::expose),
            Some("redis://127.0.0.1:6390")
        );
        assert_eq!(config.redis.failure_policy, FailurePolicy::Closed);
        assert!(!config.demo.enabled);
        assert_eq!(config.scylla.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(config.scylla.keyspace, "chat");
    }

    #[test]
    fn a_numeric_secret_stays_a_string() {
        let digits = "12345678901234567890123456789012345";
        let config = load(&[("SKALD_JWT_SECRET", digits)]).unwrap();
        assert_eq!(
            config.auth.jwt_secret.as_ref().map(Secret::expose),
            Some(digits)
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains(digits), "secrets never print: {debug}");
    }

    #[test]
    fn file_then_environment() {
        let dir = std::env::temp_dir().join(format!("skald-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("skald.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:7000"
allowed_origins = ["https://example.com"]
[bots.support]
system_prompt = "You help with orders."
max_tokens = 50
[sessions]
max_streams_per_session = 2
"#,
        )
        .unwrap();
        let config = load(&[
            (CONFIG_FILE_VAR, path.to_str().unwrap()),
            ("SKALD_LISTEN", "127.0.0.1:7001"),
        ])
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.allowed_origins, ["https://example.com"]);
        assert_eq!(config.bots["support"].max_tokens, 50);
        assert!(config.bots.contains_key("default"));
        assert_eq!(config.sessions.max_streams_per_session, 2);

        std::fs::write(&path, "listen_on = \"x\"\n").unwrap();
        let err = load(&[(CONFIG_FILE_VAR, path.to_str().unwrap())]).unwrap_err();
        assert!(err.to_string().contains("listen_on"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let cases = [
            ("SKALD_LISTEN", "not an address", "listen"),
            ("SKALD_JWT_SECRET", "short", "jwt_secret"),
            ("SKALD_UPSTREAM_URL", "ftp://x", "upstream_url"),
            (
                "SKALD_SIMULATED_ANSWER_TOKENS",
                "0",
                "simulated_answer_tokens",
            ),
            (
                "SKALD_SIMULATED_TOKENS_PER_SECOND",
                "-1",
                "simulated_tokens_per_second",
            ),
            ("SKALD_LOG_FORMAT", "xml", "format"),
            ("SKALD_REDIS_URL", "http://x", "redis.url"),
            ("SKALD_REDIS_FAILURE_POLICY", "sometimes", "failure_policy"),
            (
                "SKALD_LIMIT_MESSAGES_PER_MINUTE",
                "0",
                "messages_per_minute",
            ),
        ];
        for (var, value, needle) in cases {
            let err = load(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(needle), "{var}={value}: {err}");
        }
        let missing = load(&[(CONFIG_FILE_VAR, "/nonexistent/skald.toml")]).unwrap_err();
        assert!(missing.to_string().contains("no such file"));
    }
}
