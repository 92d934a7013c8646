//! The one table of settings (`docs/configuration.md` and the environment
//! variables come from it) and the reference generated from it.
//!
//! Every setting's key and default come from `Config::default()` itself;
//! its environment variable (if any) and its meaning come from
//! [`SETTINGS`]. A test fails when a setting has no entry here, when an
//! entry names a setting that no longer exists, or when
//! `docs/configuration.md` differs from what [`markdown`] generates
//! (`SKALD_BLESS=1 cargo test config_reference` rewrites it).

use std::collections::BTreeMap;

use crate::config::{Config, CONFIG_FILE_VAR};

/// One setting: its key in the file, its environment variable, and what it
/// means. Bot settings are documented once, as `bots.<name>.*`.
pub struct Setting {
    pub key: &'static str,
    /// The fixed environment variable that sets it, if any (code outside
    /// the repository starts the server with these names).
    pub env: Option<&'static str>,
    pub meaning: &'static str,
}

/// Every setting.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "listen",
        env: Some("SKALD_LISTEN"),
        meaning: "address and port to listen on",
    },
    Setting {
        key: "listen_backlog",
        env: None,
        meaning: "connections the kernel queues before they are accepted (capped by `net.core.somaxconn`); a burst above it waits a one-second SYN retransmit",
    },
    Setting {
        key: "data_dir",
        env: Some("SKALD_DATA_DIR"),
        meaning: "directory of the embedded parts: the SQLite store (`skald.db`), the quota counters (`quotas.db`), the spool, the development JWT secret",
    },
    Setting {
        key: "drain_timeout_ms",
        env: None,
        meaning: "at shutdown (SIGTERM, SIGINT), how long live streams may finish before they end with `unavailable`; new messages are refused meanwhile",
    },
    Setting {
        key: "allowed_origins",
        env: None,
        meaning: "browser origins allowed to open a WebSocket and to call the HTTP API from a page (CORS); empty allows all; requests without an Origin header are always allowed",
    },
    Setting {
        key: "connections.header_read_timeout_ms",
        env: None,
        meaning: "a request's line and headers must arrive within this time, counted from the connection's start and again from the end of each response on a keep-alive connection; a slower or silent connection is closed (slowloris)",
    },
    Setting {
        key: "connections.body_read_timeout_ms",
        env: None,
        meaning: "a request's body must arrive whole within this time, counted from the end of its headers; after it the request fails with `invalid_request`",
    },
    Setting {
        key: "connections.max_pending",
        env: None,
        meaning: "connections that are not an authenticated WebSocket session (a request in flight, an idle keep-alive, an upgrade waiting for `hello`), at most; at the cap the oldest is closed to make room; 0: half of what the open-files limit leaves after `fd_reserve`",
    },
    Setting {
        key: "connections.max_pending_per_address",
        env: None,
        meaning: "the same, per client address; at the cap that address's oldest is closed to make room; `trusted_proxies` have no per-address cap",
    },
    Setting {
        key: "connections.fd_reserve",
        env: None,
        meaning: "file descriptors never given to connections (the store, Redis, upstream requests): at the open-files limit less this, a new connection closes the oldest pending one, or is closed if none is pending; the soft open-files limit is raised to the hard one at start",
    },
    Setting {
        key: "trusted_proxies",
        env: Some("SKALD_TRUSTED_PROXIES"),
        meaning: "addresses and CIDRs of the load balancers in front (`[\"10.0.0.0/8\"]`; comma-separated in the variable): from them, the client's address is read from `forwarded_header` for limits, audit and anonymisation; from anyone else the header is ignored",
    },
    Setting {
        key: "forwarded_header",
        env: Some("SKALD_FORWARDED_HEADER"),
        meaning: "the header the trusted proxies write: `x-forwarded-for` (Nginx, HAProxy) or `forwarded` (RFC 7239); only this one is read, walked from the right past trusted hops",
    },
    Setting {
        key: "auth.jwt_secret",
        env: Some("SKALD_JWT_SECRET"),
        meaning: "HS256 secret (at least 32 bytes); unset and no public keys: a development secret is generated in the data dir",
    },
    Setting {
        key: "auth.audience",
        env: None,
        meaning: "required `aud` claim, when set",
    },
    Setting {
        key: "auth.issuer",
        env: None,
        meaning: "required `iss` claim, when set",
    },
    Setting {
        key: "auth.leeway_secs",
        env: None,
        meaning: "clock skew allowed on `exp` and `nbf`",
    },
    Setting {
        key: "auth.max_token_lifetime_secs",
        env: None,
        meaning: "longest token lifetime accepted (`exp - iat`, or `exp - now` without `iat`); unset: any",
    },
    Setting {
        key: "auth.auth_timeout_ms",
        env: None,
        meaning: "time to authenticate (header or `hello`) before the connection is closed 4408",
    },
    Setting {
        key: "auth.token_ttl_secs",
        env: None,
        meaning: "lifetime of tokens minted by `skald token`",
    },
    Setting {
        key: "auth.keys",
        env: None,
        meaning: "public keys for RS256, ES256 and EdDSA tokens: `[[auth.keys]]` with `kid`, `algorithm`, `public_key_pem`",
    },
    Setting {
        key: "websocket.max_frame_bytes",
        env: None,
        meaning: "largest inbound frame or message; larger closes the connection with 1009",
    },
    Setting {
        key: "websocket.read_buffer_bytes",
        env: None,
        meaning: "initial socket read buffer per connection (grows for a bigger frame and keeps that size; 3.5 KiB more per idle session at 4096)",
    },
    Setting {
        key: "websocket.write_buffer_bytes",
        env: None,
        meaning: "bytes buffered before a write reaches the socket (0: each frame is written as it is queued; the buffer keeps its largest size for the connection's life)",
    },
    Setting {
        key: "websocket.ping_interval_ms",
        env: None,
        meaning: "interval of WebSocket pings sent by the server",
    },
    Setting {
        key: "websocket.socket_send_buffer_bytes",
        env: None,
        meaning: "kernel send buffer per socket (SO_SNDBUF); unset: the OS default; small values bound kernel memory per slow client",
    },
    Setting {
        key: "websocket.idle_timeout_ms",
        env: None,
        meaning: "a connection silent this long (not even a pong), or not reading our writes this long, is closed",
    },
    Setting {
        key: "sessions.max_streams_per_session",
        env: None,
        meaning: "concurrent streams one connection may run; more is `busy`",
    },
    Setting {
        key: "sessions.max_invalid_frames",
        env: None,
        meaning: "`invalid_request` answers in a row before the connection is closed 4400",
    },
    Setting {
        key: "sessions.max_queued_frames",
        env: None,
        meaning: "control frames queued and unread before the connection is closed 4400 (deltas coalesce and are not counted)",
    },
    Setting {
        key: "sessions.first_token_timeout_ms",
        env: None,
        meaning: "time from the upstream request to its first token before `upstream_timeout`",
    },
    Setting {
        key: "sessions.token_idle_timeout_ms",
        env: None,
        meaning: "time between two tokens before `upstream_timeout`",
    },
    Setting {
        key: "sessions.resume_window_ms",
        env: None,
        meaning: "how long a finished stream stays resumable",
    },
    Setting {
        key: "sessions.store_timeout_ms",
        env: None,
        meaning: "time one attempt to store an answer may take; after three, `done` says `unavailable` (the answer could not be stored)",
    },
    Setting {
        key: "sessions.checkpoint_interval_ms",
        env: None,
        meaning: "how often live answers are checkpointed to the store (after a crash, an answer keeps what was streamed up to its last checkpoint)",
    },
    Setting {
        key: "sessions.stream_lease_ms",
        env: None,
        meaning: "with Redis: how long the instance running a stream holds its lease (renewed every third of it); when it lapses, another instance ends the stream for its followers (`unavailable`) and stores what was published",
    },
    Setting {
        key: "sessions.max_inbound_frames",
        env: None,
        meaning: "frames of one connection read and waiting for its session; a client that sends faster waits on TCP backpressure",
    },
    Setting {
        key: "model.upstream_url",
        env: Some("SKALD_UPSTREAM_URL"),
        meaning: "OpenAI-compatible base URL (e.g. https://api.openai.com/v1); unset: the built-in simulated model",
    },
    Setting {
        key: "model.upstream_api_key",
        env: Some("SKALD_UPSTREAM_API_KEY"),
        meaning: "API key sent upstream as a bearer token",
    },
    Setting {
        key: "model.upstream_model",
        env: Some("SKALD_UPSTREAM_MODEL"),
        meaning: "upstream model used when a bot names none",
    },
    Setting {
        key: "model.user_hash_key",
        env: Some("SKALD_USER_HASH_KEY"),
        meaning: "key of the keyed hash (HMAC-SHA256) sent upstream as `safety_identifier` instead of the user's `sub`; unset: a key made once in the data dir (`user-hash-key`; set it when several instances share an upstream account)",
    },
    Setting {
        key: "model.connect_timeout_ms",
        env: None,
        meaning: "TCP and TLS connect timeout to the upstream",
    },
    Setting {
        key: "model.cooldown_after_failures",
        env: None,
        meaning: "failures in a row after which an upstream is skipped while another upstream of a bot's list can answer",
    },
    Setting {
        key: "model.cooldown_ms",
        env: None,
        meaning: "how long such an upstream is skipped (one success ends it sooner)",
    },
    Setting {
        key: "upstreams.<name>.url",
        env: None,
        meaning: "a named upstream (`[upstreams.<name>]`): its OpenAI-compatible base URL; `model.upstream_url` defines the one named `default`",
    },
    Setting {
        key: "upstreams.<name>.api_key",
        env: None,
        meaning: "its API key, sent as a bearer token",
    },
    Setting {
        key: "upstreams.<name>.model",
        env: None,
        meaning: "its model when a bot names none (default `\"gpt-4o-mini\"`)",
    },
    Setting {
        key: "upstreams.<name>.connect_timeout_ms",
        env: None,
        meaning: "its TCP and TLS connect timeout (default 10000)",
    },
    Setting {
        key: "upstreams.<name>.first_token_timeout_ms",
        env: None,
        meaning: "time it has for its first token (a thought or a word) before the next upstream of a bot's list is tried (default 15000, also for `default`); the last upstream of a list waits as long as `sessions.first_token_timeout_ms` allows",
    },
    Setting {
        key: "model.simulated_tokens_per_second",
        env: Some("SKALD_SIMULATED_TOKENS_PER_SECOND"),
        meaning: "speed of the simulated model (0: as fast as possible)",
    },
    Setting {
        key: "model.simulated_answer_tokens",
        env: Some("SKALD_SIMULATED_ANSWER_TOKENS"),
        meaning: "length of the simulated model's answers, before the bot's `max_tokens`",
    },
    Setting {
        key: "limits.messages_per_minute",
        env: Some("SKALD_LIMIT_MESSAGES_PER_MINUTE"),
        meaning: "messages (`send`) per minute per user; more is `rate_limited` with `retry_after_ms`",
    },
    Setting {
        key: "limits.monthly_tokens",
        env: Some("SKALD_QUOTA_MONTHLY_TOKENS"),
        meaning: "tokens per user per UTC calendar month; used up is `quota_exceeded`",
    },
    Setting {
        key: "limits.monthly_requests",
        env: Some("SKALD_QUOTA_MONTHLY_REQUESTS"),
        meaning: "accepted messages per user per UTC calendar month; used up is `quota_exceeded`",
    },
    Setting {
        key: "limits.address_requests_per_minute",
        env: None,
        meaning: "new connections and HTTP requests per minute per client address; more is HTTP 429 with `Retry-After`",
    },
    Setting {
        key: "limits.max_connections_per_user",
        env: None,
        meaning: "open connections per user; one more is closed 4429",
    },
    Setting {
        key: "limits.connection_lease_ms",
        env: None,
        meaning: "a connection slot expires unless refreshed within this time (slots of a crashed instance free themselves)",
    },
    Setting {
        key: "limits.reservation_lease_ms",
        env: None,
        meaning: "a quota reservation never settled expires after this time (longer than any stream)",
    },
    Setting {
        key: "limits.users",
        env: None,
        meaning: "per-user overrides: `[limits.users.\"<sub>\"]` with `messages_per_minute`, `monthly_tokens`, `monthly_requests`",
    },
    Setting {
        key: "scylla.nodes",
        env: Some("SKALD_SCYLLA_NODES"),
        meaning: "ScyllaDB contact points (`host:port`); empty: the embedded store (SQLite in the data dir)",
    },
    Setting {
        key: "scylla.keyspace",
        env: Some("SKALD_SCYLLA_KEYSPACE"),
        meaning: "keyspace, created by `skald migrate`",
    },
    Setting {
        key: "scylla.replication",
        env: None,
        meaning: "keyspace replication, a CQL map literal",
    },
    Setting {
        key: "scylla.consistency",
        env: None,
        meaning: "consistency of reads and writes (`local_quorum`, `quorum`, `one`, …); lightweight transactions use the matching serial level",
    },
    Setting {
        key: "scylla.local_datacenter",
        env: None,
        meaning: "datacenter preferred for load balancing",
    },
    Setting {
        key: "scylla.request_timeout_ms",
        env: None,
        meaning: "bound on one ScyllaDB request",
    },
    Setting {
        key: "scylla.connect_timeout_ms",
        env: None,
        meaning: "bound on connecting to a node",
    },
    Setting {
        key: "scylla.username",
        env: None,
        meaning: "ScyllaDB user, if authentication is on",
    },
    Setting {
        key: "scylla.password",
        env: None,
        meaning: "ScyllaDB password (prefer the config file with restricted permissions)",
    },
    Setting {
        key: "scylla.migrate_on_start",
        env: None,
        meaning: "apply pending migrations at start (otherwise run `skald migrate` first)",
    },
    Setting {
        key: "scylla.address_ttl_secs",
        env: None,
        meaning: "how long an audit record keeps the client's full address: it is written with a TTL ending this long after the record's time, then only the anonymised form remains",
    },
    Setting {
        key: "redis.url",
        env: Some("SKALD_REDIS_URL"),
        meaning: "Redis shared by every instance for limits, quotas and live streams; unset: in-process",
    },
    Setting {
        key: "redis.command_timeout_ms",
        env: None,
        meaning: "bound on every Redis command, also while Redis is unreachable",
    },
    Setting {
        key: "redis.failure_policy",
        env: Some("SKALD_REDIS_FAILURE_POLICY"),
        meaning: "`open`: decide in-process while Redis is down and add the usage to Redis when it returns; `closed`: refuse with `unavailable`",
    },
    Setting {
        key: "redis.key_prefix",
        env: None,
        meaning: "prefix of every Redis key",
    },
    Setting {
        key: "redis.share_streams",
        env: None,
        meaning: "with Redis: publish live streams so that any instance resumes, cancels and announces them (`started`); `false` keeps each stream in the instance that runs it (one instance, or sticky sessions)",
    },
    Setting {
        key: "metrics.listen",
        env: Some("SKALD_METRICS_LISTEN"),
        meaning: "serve `/metrics` on this address of its own (a private interface), and no longer on `listen`; unset: on `listen`",
    },
    Setting {
        key: "metrics.token",
        env: Some("SKALD_METRICS_TOKEN"),
        meaning: "require `Authorization: Bearer <token>` on `/metrics` (401 otherwise); unset: open",
    },
    Setting {
        key: "tls.cert_path",
        env: Some("SKALD_TLS_CERT_PATH"),
        meaning: "serve HTTPS and `wss://` with this PEM certificate chain (the server's first), TLS 1.2 and 1.3, with `Strict-Transport-Security`; reloaded with the key on SIGHUP; unset: plain HTTP, for use behind a proxy that terminates TLS (`metrics.listen` stays plain)",
    },
    Setting {
        key: "tls.key_path",
        env: Some("SKALD_TLS_KEY_PATH"),
        meaning: "the PEM private key of `tls.cert_path` (PKCS#8, PKCS#1 or SEC1); set both or neither",
    },
    Setting {
        key: "log.format",
        env: Some("SKALD_LOG_FORMAT"),
        meaning: "`text` or `json`",
    },
    Setting {
        key: "demo.enabled",
        env: Some("SKALD_DEMO"),
        meaning: "serve the demo page at `GET /` and anonymous tokens at `POST /v1/demo/token` (turn off in production)",
    },
    Setting {
        key: "demo.token_ttl_secs",
        env: None,
        meaning: "lifetime of a demo token",
    },
    Setting {
        key: "demo.tokens_per_minute_per_address",
        env: None,
        meaning: "demo tokens per minute per client address",
    },
    Setting {
        key: "demo.identities_per_day_per_address",
        env: None,
        meaning: "new demo identities (anonymous `sub`s) per client address per day; renewing an identity's token does not count. With the demo bot's monthly budget per identity, this bounds what one address can draw from the model",
    },
    Setting {
        key: "demo.bot",
        env: None,
        meaning: "the bot every demo identity talks to, whatever its `send.bot` says; when `bots` has none of this name, one is made from `default` with `max_tokens = 256`, `messages_per_minute = 10`, `monthly_tokens = 5000` and `monthly_requests = 50` (configure `[bots.demo]` to change them)",
    },
    Setting {
        key: "bots.<name>.system_prompt",
        env: None,
        meaning: "always the first prompt message, in the system role; user text never goes there",
    },
    Setting {
        key: "bots.<name>.model",
        env: None,
        meaning: "upstream model of this bot; unset: its upstream's `model`",
    },
    Setting {
        key: "bots.<name>.allowed_origins",
        env: None,
        meaning: "browser origins (`https://shop.example`) that may use this bot; empty: any. From another origin, over WebSocket or the OpenAI-compatible API, there is no such bot (`not_found`); a caller without `Origin` (not a browser) is not limited",
    },
    Setting {
        key: "bots.<name>.upstreams",
        env: None,
        meaning: "named upstreams tried in this order until one gives a first token (a connection error, a timeout, a 5xx or a 429 moves to the next; after the first token, never); empty: `default`",
    },
    Setting {
        key: "bots.<name>.temperature",
        env: None,
        meaning: "sampling temperature, 0 to 2",
    },
    Setting {
        key: "bots.<name>.max_tokens",
        env: None,
        meaning: "longest answer in tokens; reaching it ends the stream with `finish_reason: \"length\"`",
    },
    Setting {
        key: "bots.<name>.max_answer_bytes",
        env: None,
        meaning: "longest answer text in bytes (262144); an upstream that sends more is cut there, at a character boundary, with `finish_reason: \"length\"`",
    },
    Setting {
        key: "bots.<name>.max_reasoning_chars",
        env: None,
        meaning: "most characters of a reasoning model's thinking sent and stored; thinking past it is dropped and the answer still comes",
    },
    Setting {
        key: "bots.<name>.max_message_chars",
        env: None,
        meaning: "longest accepted `send.text`, in characters",
    },
    Setting {
        key: "bots.<name>.history_messages",
        env: None,
        meaning: "earlier messages of the conversation put in the prompt",
    },
    Setting {
        key: "bots.<name>.max_history_chars",
        env: None,
        meaning: "cap on the characters of those earlier messages, oldest dropped first",
    },
    Setting {
        key: "bots.<name>.allow_client_system_prompt",
        env: None,
        meaning: "whether callers of the OpenAI-compatible API may add `system` / `developer` messages (after the bot's system prompt, which always comes first); off, they are refused with 400",
    },
    Setting {
        key: "bots.<name>.messages_per_minute",
        env: None,
        meaning: "this bot's rate limit over `limits.messages_per_minute`",
    },
    Setting {
        key: "bots.<name>.monthly_tokens",
        env: None,
        meaning: "this bot's token quota over `limits.monthly_tokens`",
    },
    Setting {
        key: "bots.<name>.monthly_requests",
        env: None,
        meaning: "this bot's request quota over `limits.monthly_requests`",
    },
];

/// Every setting of the default configuration with its default, as TOML
/// text; bot settings under `bots.<name>.`. Settings unset by default are
/// absent.
pub fn defaults() -> BTreeMap<String, String> {
    let value = toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Integer(0));
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
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
    for setting in SETTINGS {
        let default = defaults
            .get(setting.key)
            .map(String::as_str)
            .unwrap_or("unset");
        let env = setting.env.map(|e| format!("`{e}`")).unwrap_or_default();
        page.push_str(&format!(
            "| `{}` | {env} | `{}` | {} |\n",
            setting.key,
            default.replace('|', "\\|"),
            setting.meaning
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
        let documented: BTreeSet<&str> = SETTINGS.iter().map(|s| s.key).collect();
        assert_eq!(documented.len(), SETTINGS.len(), "each setting once");
        for key in serialized.keys() {
            assert!(
                documented.contains(key.as_str()),
                "setting {key} has no entry in SETTINGS"
            );
        }
        // Options that default to unset do not serialize: check them by name.
        let optional = [
            "auth.jwt_secret",
            "auth.audience",
            "auth.issuer",
            "auth.max_token_lifetime_secs",
            "model.upstream_url",
            "metrics.listen",
            "metrics.token",
            "tls.cert_path",
            "tls.key_path",
            "model.user_hash_key",
            "model.upstream_api_key",
            "bots.<name>.model",
            "upstreams.<name>.url",
            "upstreams.<name>.api_key",
            "upstreams.<name>.model",
            "upstreams.<name>.connect_timeout_ms",
            "upstreams.<name>.first_token_timeout_ms",
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
                "SETTINGS documents {key}, which is not a setting"
            );
        }
        let names: BTreeSet<&str> = SETTINGS.iter().filter_map(|s| s.env).collect();
        assert_eq!(
            names.len(),
            SETTINGS.iter().filter(|s| s.env.is_some()).count(),
            "each environment variable sets one setting"
        );
        assert!(names.iter().all(|n| n.starts_with("SKALD_")));
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
