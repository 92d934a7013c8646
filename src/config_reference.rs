//! The configuration reference (`docs/configuration.md`), generated from
//! the configuration struct so that it cannot drift.
//!
//! Every setting's key and default come from `Config::default()` itself;
//! its meaning comes from [`MEANINGS`]. A test fails when a setting has no
//! meaning here, when a meaning names a setting that no longer exists, or
//! when `docs/configuration.md` differs from what [`markdown`] generates
//! (`SKALD_BLESS=1 cargo test config_reference` rewrites it).

use std::collections::BTreeMap;

use crate::config::{Config, CONFIG_FILE_VAR, ENV_VARS};

/// What each setting means. Bot settings are documented once, as `bots.<name>.*`.
pub const MEANINGS: &[(&str, &str)] = &[
    ("listen", "address and port to listen on"),
    ("listen_backlog", "connections the kernel queues before they are accepted (capped by `net.core.somaxconn`); a burst above it waits a one-second SYN retransmit"),
    ("data_dir", "directory for the files of embedded parts (the development JWT secret)"),
    ("drain_timeout_ms", "at shutdown (SIGTERM, SIGINT), how long live streams may finish before they end with `unavailable`; new messages are refused meanwhile"),
    ("allowed_origins", "browser origins allowed to open a WebSocket; empty allows all; requests without an Origin header are always allowed"),
    ("auth.jwt_secret", "HS256 secret (at least 32 bytes); unset and no public keys: a development secret is generated in the data dir"),
    ("auth.audience", "required `aud` claim, when set"),
    ("auth.issuer", "required `iss` claim, when set"),
    ("auth.leeway_secs", "clock skew allowed on `exp` and `nbf`"),
    ("auth.auth_timeout_ms", "time to authenticate (header or `hello`) before the connection is closed 4408"),
    ("auth.token_ttl_secs", "lifetime of tokens minted by `skald token`"),
    ("auth.keys", "public keys for RS256, ES256 and EdDSA tokens: `[[auth.keys]]` with `kid`, `algorithm`, `public_key_pem`"),
    ("websocket.max_frame_bytes", "largest inbound frame or message; larger closes the connection with 1009"),
    ("websocket.read_buffer_bytes", "initial socket read buffer per connection (grows for a bigger frame and keeps that size; 3.5 KiB more per idle session at 4096)"),
    ("websocket.write_buffer_bytes", "bytes buffered before a write reaches the socket (0: each frame is written as it is queued; the buffer keeps its largest size for the connection's life)"),
    ("websocket.ping_interval_ms", "interval of WebSocket pings sent by the server"),
    ("websocket.socket_send_buffer_bytes", "kernel send buffer per socket (SO_SNDBUF); unset: the OS default; small values bound kernel memory per slow client"),
    ("websocket.idle_timeout_ms", "a connection silent this long (not even a pong), or not reading our writes this long, is closed"),
    ("sessions.max_streams_per_session", "concurrent streams one connection may run; more is `busy`"),
    ("sessions.max_invalid_frames", "`invalid_request` answers in a row before the connection is closed 4400"),
    ("sessions.max_queued_frames", "control frames queued and unread before the connection is closed 4400 (deltas coalesce and are not counted)"),
    ("sessions.first_token_timeout_ms", "time from the upstream request to its first token before `upstream_timeout`"),
    ("sessions.token_idle_timeout_ms", "time between two tokens before `upstream_timeout`"),
    ("sessions.resume_window_ms", "how long a finished stream stays resumable"),
    ("sessions.store_timeout_ms", "time allowed to store an answer before its `done` is sent anyway"),
    ("model.upstream_url", "OpenAI-compatible base URL (e.g. https://api.openai.com/v1); unset: the built-in simulated model"),
    ("model.upstream_api_key", "API key sent upstream as a bearer token"),
    ("model.upstream_model", "upstream model used when a bot names none"),
    ("model.connect_timeout_ms", "TCP and TLS connect timeout to the upstream"),
    ("model.simulated_tokens_per_second", "speed of the simulated model (0: as fast as possible)"),
    ("model.simulated_answer_tokens", "length of the simulated model's answers, before the bot's `max_tokens`"),
    ("limits.messages_per_minute", "messages (`send`) per minute per user; more is `rate_limited` with `retry_after_ms`"),
    ("limits.monthly_tokens", "tokens per user per UTC calendar month; used up is `quota_exceeded`"),
    ("limits.monthly_requests", "accepted messages per user per UTC calendar month; used up is `quota_exceeded`"),
    ("limits.address_requests_per_minute", "new connections and HTTP requests per minute per client address; more is HTTP 429 with `Retry-After`"),
    ("limits.max_connections_per_user", "open connections per user; one more is closed 4429"),
    ("limits.connection_lease_ms", "a connection slot expires unless refreshed within this time (slots of a crashed instance free themselves)"),
    ("limits.reservation_lease_ms", "a quota reservation never settled expires after this time (longer than any stream)"),
    ("limits.users", "per-user overrides: `[limits.users.\"<sub>\"]` with `messages_per_minute`, `monthly_tokens`, `monthly_requests`"),
    ("scylla.nodes", "ScyllaDB contact points (`host:port`); empty: the embedded store (SQLite in the data dir)"),
    ("scylla.keyspace", "keyspace, created by `skald migrate`"),
    ("scylla.replication", "keyspace replication, a CQL map literal"),
    ("scylla.consistency", "consistency of reads and writes (`local_quorum`, `quorum`, `one`, …); lightweight transactions use the matching serial level"),
    ("scylla.local_datacenter", "datacenter preferred for load balancing"),
    ("scylla.request_timeout_ms", "bound on one ScyllaDB request"),
    ("scylla.connect_timeout_ms", "bound on connecting to a node"),
    ("scylla.username", "ScyllaDB user, if authentication is on"),
    ("scylla.password", "ScyllaDB password (prefer the config file with restricted permissions)"),
    ("scylla.migrate_on_start", "apply pending migrations at start (otherwise run `skald migrate` first)"),
    ("redis.url", "Redis shared by every instance for limits and quotas; unset: in-process"),
    ("redis.command_timeout_ms", "bound on every Redis command, also while Redis is unreachable"),
    ("redis.failure_policy", "`open`: decide in-process while Redis is down and add the usage to Redis when it returns; `closed`: refuse with `unavailable`"),
    ("redis.key_prefix", "prefix of every Redis key"),
    ("log.format", "`text` or `json`"),
    ("demo.enabled", "serve the demo page at `GET /` and anonymous tokens at `POST /v1/demo/token` (turn off in production)"),
    ("demo.token_ttl_secs", "lifetime of a demo token"),
    ("demo.tokens_per_minute_per_address", "demo tokens per minute per client address"),
    ("bots.<name>.system_prompt", "always the first prompt message, in the system role; user text never goes there"),
    ("bots.<name>.model", "upstream model of this bot; unset: `model.upstream_model`"),
    ("bots.<name>.temperature", "sampling temperature, 0 to 2"),
    ("bots.<name>.max_tokens", "longest answer in tokens; reaching it ends the stream with `finish_reason: \"length\"`"),
    ("bots.<name>.max_message_chars", "longest accepted `send.text`, in characters"),
    ("bots.<name>.history_messages", "earlier messages of the conversation put in the prompt"),
    ("bots.<name>.max_history_chars", "cap on the characters of those earlier messages, oldest dropped first"),
    ("bots.<name>.messages_per_minute", "this bot's rate limit over `limits.messages_per_minute`"),
    ("bots.<name>.monthly_tokens", "this bot's token quota over `limits.monthly_tokens`"),
    ("bots.<name>.monthly_requests", "this bot's request quota over `limits.monthly_requests`"),
];

/// Every setting of the default configuration with its default, as TOML
/// values; bot settings under `bots.<name>.`. Unset options are absent from
/// the serialized form, so they are added with the default `unset`.
pub fn defaults() -> BTreeMap<String, String> {
    let value = toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Integer(0));
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    for (key, _) in MEANINGS {
        out.entry((*key).to_owned())
            .or_insert_with(|| "unset".to_owned());
    }
    out
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = match prefix {
                    "" => k.clone(),
                    "bots" => "bots.<name>".to_owned(),
                    p => format!("{p}.{k}"),
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// The whole reference page.
pub fn markdown() -> String {
    let defaults = defaults();
    let env_of = |key: &str| {
        ENV_VARS
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(name, _)| format!("`{name}`"))
            .unwrap_or_default()
    };
    let mut page = String::from(
        "# Configuration reference\n\n\
         Generated from the configuration struct by `src/config_reference.rs`; a test keeps \
         it current (`SKALD_BLESS=1 cargo test config_reference` rewrites it).\n\n",
    );
    page.push_str(&format!(
        "Settings come from the defaults below, then the TOML file named by `{CONFIG_FILE_VAR}` \
         (if set), then the environment variables listed. Unknown keys in the file are errors. \
         Every bot (`[bots.<name>]`) has the same settings as `bots.default`, which always exists.\n\n"
    ));
    page.push_str("| setting | environment | default | meaning |\n| --- | --- | --- | --- |\n");
    for (key, meaning) in MEANINGS {
        let default = defaults.get(*key).map(String::as_str).unwrap_or("unset");
        page.push_str(&format!(
            "| `{key}` | {} | `{}` | {meaning} |\n",
            env_of(key),
            default.replace('|', "\\|")
        ));
    }
    page.push_str("\n## Production example\n\nSee `docs/skald.production.toml`.\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_setting_has_a_meaning_and_every_meaning_a_setting() {
        let value = toml::Value::try_from(Config::default()).unwrap();
        let mut serialized = BTreeMap::new();
        flatten("", &value, &mut serialized);
        let documented: BTreeSet<&str> = MEANINGS.iter().map(|(k, _)| *k).collect();
        for key in serialized.keys() {
            assert!(
                documented.contains(key.as_str()),
                "setting {key} has no meaning in MEANINGS"
            );
        }
        // Options that default to unset do not serialize: check them by name.
        let optional = [
            "auth.jwt_secret",
            "auth.audience",
            "auth.issuer",
            "model.upstream_url",
            "model.upstream_api_key",
            "bots.<name>.model",
            "bots.<name>.messages_per_minute",
            "bots.<name>.monthly_tokens",
            "bots.<name>.monthly_requests",
            "limits.users",
            "redis.url",
            "websocket.socket_send_buffer_bytes",
            "scylla.local_datacenter",
            "scylla.username",
            "scylla.password",
        ];
        for key in &documented {
            assert!(
                serialized.contains_key(*key) || optional.contains(key),
                "MEANINGS documents {key}, which is not a setting"
            );
        }
        for (name, key) in ENV_VARS {
            assert!(
                documented.contains(key),
                "{name} maps to {key}, which is not documented"
            );
        }
    }

    #[test]
    fn config_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let generated = markdown();
        if std::env::var_os("SKALD_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/configuration.md is stale: run `SKALD_BLESS=1 cargo test config_reference`"
        );
    }

    #[test]
    fn the_production_example_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/skald.production.toml");
        let path = path.to_str().unwrap().to_owned();
        let config =
            Config::load_from(|name| (name == CONFIG_FILE_VAR).then(|| path.clone())).unwrap();
        assert!(!config.allowed_origins.is_empty());
        assert!(config.model.upstream_url.is_some());
    }
}
