//! The one configuration struct, loaded from defaults, an optional TOML file
//! (`SKALD_CONFIG`) and environment variables, in that order of precedence.
//!
//! Environment variables are an explicit table ([`ENV_VARS`]): their names
//! are fixed because code outside the repository starts the server with
//! them, and the table is also the source of the configuration reference.
//! Unknown keys in the file are errors, and [`Config::validate`] rejects
//! values that make no sense before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use skald_actors::limits::guard::FailurePolicy;
use skald_actors::settings::{BotSettings, LimitSettings, SessionSettings};

use crate::store::scylla::ScyllaSettings;

/// Every environment variable the server reads, and the setting it sets
/// (its meaning is in `config_reference::MEANINGS`).
pub const ENV_VARS: &[(&str, &str)] = &[
    ("SKALD_LISTEN", "listen"),
    ("SKALD_DATA_DIR", "data_dir"),
    ("SKALD_JWT_SECRET", "auth.jwt_secret"),
    ("SKALD_UPSTREAM_URL", "model.upstream_url"),
    ("SKALD_UPSTREAM_API_KEY", "model.upstream_api_key"),
    ("SKALD_UPSTREAM_MODEL", "model.upstream_model"),
    (
        "SKALD_SIMULATED_TOKENS_PER_SECOND",
        "model.simulated_tokens_per_second",
    ),
    (
        "SKALD_SIMULATED_ANSWER_TOKENS",
        "model.simulated_answer_tokens",
    ),
    (
        "SKALD_LIMIT_MESSAGES_PER_MINUTE",
        "limits.messages_per_minute",
    ),
    ("SKALD_QUOTA_MONTHLY_TOKENS", "limits.monthly_tokens"),
    ("SKALD_QUOTA_MONTHLY_REQUESTS", "limits.monthly_requests"),
    ("SKALD_LOG_FORMAT", "log.format"),
    ("SKALD_SCYLLA_NODES", "scylla.nodes"),
    ("SKALD_SCYLLA_KEYSPACE", "scylla.keyspace"),
    ("SKALD_DEMO", "demo.enabled"),
    ("SKALD_REDIS_URL", "redis.url"),
    ("SKALD_REDIS_FAILURE_POLICY", "redis.failure_policy"),
];

/// The variable that names the TOML configuration file.
pub const CONFIG_FILE_VAR: &str = "SKALD_CONFIG";

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
    pub auth: AuthConfig,
    pub websocket: WebSocketConfig,
    pub sessions: SessionSettings,
    pub model: ModelConfig,
    pub limits: LimitSettings,
    pub redis: RedisConfig,
    /// ScyllaDB; without nodes, the embedded store is used.
    pub scylla: ScyllaSettings,
    pub demo: DemoConfig,
    pub log: LogConfig,
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
            auth: AuthConfig::default(),
            websocket: WebSocketConfig::default(),
            sessions: SessionSettings::default(),
            model: ModelConfig::default(),
            limits: LimitSettings::default(),
            redis: RedisConfig::default(),
            scylla: ScyllaSettings::default(),
            demo: DemoConfig::default(),
            log: LogConfig::default(),
            bots: BTreeMap::from([("default".to_owned(), BotSettings::default())]),
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub jwt_secret: Option<String>,
    /// Required `aud` when set.
    pub audience: Option<String>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Time for a connection to authenticate before it is closed 4408.
    pub auth_timeout_ms: u64,
    /// Lifetime of tokens minted by `skald token`.
    pub token_ttl_secs: u64,
    /// Public keys for RS256, ES256 and EdDSA tokens, chosen by `kid`.
    pub keys: Vec<PublicKeyConfig>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            audience: None,
            issuer: None,
            leeway_secs: 30,
            auth_timeout_ms: 10_000,
            token_ttl_secs: 3600,
            keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
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

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub upstream_url: Option<String>,
    pub upstream_api_key: Option<String>,
    pub upstream_model: String,
    pub connect_timeout_ms: u64,
    pub simulated_tokens_per_second: f64,
    pub simulated_answer_tokens: u32,
}

impl std::fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelConfig")
            .field("upstream_url", &self.upstream_url)
            .field(
                "upstream_api_key",
                &self.upstream_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("upstream_model", &self.upstream_model)
            .finish_non_exhaustive()
    }
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
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL; unset: limits and quotas in-process.
    pub url: Option<String>,
    /// Bound on every Redis command, also while Redis is unreachable.
    pub command_timeout_ms: u64,
    pub failure_policy: FailurePolicy,
    /// Prefix of every key Skald writes.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            command_timeout_ms: 250,
            failure_policy: FailurePolicy::Open,
            key_prefix: "skald".into(),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("failure_policy", &self.failure_policy)
            .finish_non_exhaustive()
    }
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
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: true,
            token_ttl_secs: 900,
            tokens_per_minute_per_address: 10,
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
    /// the environment variables of [`ENV_VARS`], and validates the result.
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
        for (name, key) in ENV_VARS {
            if let Some(value) = env(name) {
                figment = figment.merge(Serialized::global(key, env_value(key, &value)));
            }
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.listen_backlog == 0 {
            return invalid("listen_backlog must be at least 1".into());
        }
        if !self.bots.contains_key("default") {
            return invalid("bots.default must exist".into());
        }
        for (name, bot) in &self.bots {
            bot.validate(name).map_err(ConfigError::Invalid)?;
        }
        self.sessions.validate().map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.scylla.validate().map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.redis.url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
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
        if self.auth.auth_timeout_ms == 0 {
            return invalid("auth.auth_timeout_ms must be at least 1".into());
        }
        if matches!(&self.auth.jwt_secret, Some(s) if s.len() < 32) {
            return invalid("auth.jwt_secret (SKALD_JWT_SECRET) must be at least 32 bytes".into());
        }
        for key in &self.auth.keys {
            if !["RS256", "ES256", "EdDSA"].contains(&key.algorithm.as_str()) {
                return invalid(format!(
                    "auth.keys[kid={}].algorithm must be RS256, ES256 or EdDSA",
                    key.kid
                ));
            }
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
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(format!(
                    "model.upstream_url must be an http(s) URL, got {url:?}"
                ));
            }
        }
        Ok(())
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth.auth_timeout_ms)
    }
}

/// An environment value as the configuration expects it: numbers and
/// booleans typed for the keys that hold them, text as is for the others
/// (a secret made of digits stays a string).
fn env_value(key: &str, value: &str) -> figment::value::Value {
    const TEXT_KEYS: [&str; 10] = [
        "scylla.keyspace",
        "redis.url",
        "redis.failure_policy",
        "listen",
        "data_dir",
        "auth.jwt_secret",
        "model.upstream_url",
        "model.upstream_api_key",
        "model.upstream_model",
        "log.format",
    ];
    if TEXT_KEYS.contains(&key) {
        return value.into();
    }
    if key == "scylla.nodes" {
        let nodes: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        return nodes.into();
    }
    if key == "demo.enabled" {
        match value.trim() {
            "1" | "true" | "yes" | "on" => return true.into(),
            "0" | "false" | "no" | "off" => return false.into(),
            _ => {}
        }
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
            config.auth.jwt_secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            config.model.upstream_url.as_deref(),
            Some("http://127.0.0.1:1/v1")
        );
        assert_eq!(config.model.upstream_api_key.as_deref(), Some("sk-1234"));
        assert_eq!(config.model.upstream_model, "m");
        assert_eq!(config.model.simulated_tokens_per_second, 7.5);
        assert_eq!(config.model.simulated_answer_tokens, 9);
        assert_eq!(config.limits.messages_per_minute, 3);
        assert_eq!(config.limits.monthly_tokens, 4);
        assert_eq!(config.limits.monthly_requests, 5);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.redis.url.as_deref(), Some("redis://127.0.0.1:6390"));
        assert_eq!(config.redis.failure_policy, FailurePolicy::Closed);
        assert!(!config.demo.enabled);
        assert_eq!(config.scylla.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(config.scylla.keyspace, "chat");
    }

    #[test]
    fn a_numeric_secret_stays_a_string() {
        let digits = "12345678901234567890123456789012345";
        let config = load(&[("SKALD_JWT_SECRET", digits)]).unwrap();
        assert_eq!(config.auth.jwt_secret.as_deref(), Some(digits));
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
