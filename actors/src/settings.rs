//! Settings the actors read: bots and session behaviour.
//!
//! They are plain serde structs so that the server's one configuration
//! struct (in `src/config.rs`) can embed them: every field has a default,
//! unknown fields are refused, and [`BotSettings::validate`] /
//! [`SessionSettings::validate`] reject values that make no sense before the
//! server starts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One bot: the system prompt, model and limits a `send.bot` selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotSettings {
    /// Always the first prompt message, in the system role. User text never
    /// goes there.
    pub system_prompt: String,
    /// Upstream model name; unset means the upstream's own.
    pub model: Option<String>,
    /// Named upstreams (`[upstreams.<name>]`) tried in this order before
    /// the first token; empty: the upstream named `default`.
    pub upstreams: Vec<String>,
    /// Browser origins (`https://shop.example`) that may use this bot;
    /// empty: any. A connection or request from another origin finds no
    /// such bot (`not_found`); one without an `Origin` (not a browser) is
    /// not limited.
    pub allowed_origins: Vec<String>,
    pub temperature: f64,
    /// Upper bound of an answer, in tokens; reaching it ends the stream with
    /// `finish_reason: "length"`.
    pub max_tokens: u32,
    /// Upper bound of an answer's text, in bytes (UTF-8): an upstream that
    /// sends more (one huge delta, or a model ignoring `max_tokens`) is cut
    /// there, at a character boundary, with `finish_reason: "length"`.
    pub max_answer_bytes: u32,
    /// Upper bound of a reasoning model's thinking kept and sent, in
    /// characters: thinking past it is dropped (counted, not stored), the
    /// answer still comes.
    pub max_reasoning_chars: u32,
    /// Longest accepted `send.text`, in characters (Unicode scalar values).
    pub max_message_chars: u32,
    /// How many earlier messages of the conversation go into the prompt.
    pub history_messages: usize,
    /// Cap on the characters of those earlier messages (the seed caps user
    /// context); the oldest are dropped first.
    pub max_history_chars: usize,
    /// Whether a caller of the OpenAI-compatible API may add its own
    /// `system` / `developer` messages (after the bot's system prompt,
    /// which always comes first). Off: they are refused.
    pub allow_client_system_prompt: bool,
    /// This bot's own limits over the global ones (a user's own override
    /// still wins): messages per minute, monthly tokens and requests.
    pub messages_per_minute: Option<u32>,
    pub monthly_tokens: Option<u64>,
    pub monthly_requests: Option<u64>,
}

impl Default for BotSettings {
    fn default() -> Self {
        BotSettings {
            system_prompt:
                "You are a helpful, concise assistant. Answer in the language of the user.".into(),
            model: None,
            upstreams: Vec::new(),
            allowed_origins: Vec::new(),
            temperature: 0.7,
            max_tokens: 500,
            max_answer_bytes: 256 * 1024,
            max_reasoning_chars: 200_000,
            max_message_chars: 4000,
            history_messages: 20,
            max_history_chars: 8000,
            allow_client_system_prompt: false,
            messages_per_minute: None,
            monthly_tokens: None,
            monthly_requests: None,
        }
    }
}

/// `scheme://host[:port]`, as browsers send `Origin`: no path, query or
/// user.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

impl BotSettings {
    /// Whether a caller from browser origin `site` (None: not a browser)
    /// may use this bot.
    pub fn admits_origin(&self, site: Option<&str>) -> bool {
        match site {
            Some(site) if !self.allowed_origins.is_empty() => self
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(site)),
            _ => true,
        }
    }

    pub fn validate(&self, name: &str) -> Result<(), String> {
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(format!("bots.{name}.temperature must be within 0..=2"));
        }
        if self.max_tokens == 0 {
            return Err(format!("bots.{name}.max_tokens must be at least 1"));
        }
        if self.max_answer_bytes == 0 {
            return Err(format!("bots.{name}.max_answer_bytes must be at least 1"));
        }
        if self.max_message_chars == 0 {
            return Err(format!("bots.{name}.max_message_chars must be at least 1"));
        }
        if let Some(bad) = self.allowed_origins.iter().find(|o| !is_origin(o)) {
            return Err(format!(
                "bots.{name}.allowed_origins: {bad:?} is not an origin (scheme://host[:port], nothing after)"
            ));
        }
        if self.messages_per_minute == Some(0) {
            return Err(format!(
                "bots.{name}.messages_per_minute must be at least 1"
            ));
        }
        Ok(())
    }
}

/// How sessions and streams behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Streams one connection may run at once; one more `send` is `busy`.
    pub max_streams_per_session: usize,
    /// `invalid_request` answers in a row before the connection is closed 4400.
    pub max_invalid_frames: u32,
    /// Control frames (`ack`, `error`, `pong`…) queued and unread before the
    /// connection is closed 4400. Deltas are not counted: they coalesce.
    pub max_queued_frames: usize,
    /// From the upstream request to its first token.
    pub first_token_timeout_ms: u64,
    /// Between two tokens.
    pub token_idle_timeout_ms: u64,
    /// How long a finished stream stays resumable.
    pub resume_window_ms: u64,
    /// How long one attempt to store an answer may take; after three,
    /// `done` says the answer could not be stored.
    pub store_timeout_ms: u64,
    /// How often live answers are checkpointed to the store (a crash loses
    /// at most this much of an answer).
    pub checkpoint_interval_ms: u64,
    /// With a stream bus: how long a stream's owner holds its lease (renewed
    /// every third of it); when it lapses, other instances end the stream.
    pub stream_lease_ms: u64,
    /// Frames of one connection read and not yet handled by its session;
    /// the reader waits for room (TCP backpressure on a flooding client).
    pub max_inbound_frames: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            max_streams_per_session: 4,
            max_invalid_frames: 10,
            max_queued_frames: 256,
            first_token_timeout_ms: 60_000,
            token_idle_timeout_ms: 60_000,
            resume_window_ms: 60_000,
            store_timeout_ms: 5_000,
            checkpoint_interval_ms: 1_000,
            stream_lease_ms: 5_000,
            max_inbound_frames: 8,
        }
    }
}

impl SessionSettings {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            (
                "max_streams_per_session",
                self.max_streams_per_session as u64,
            ),
            ("max_invalid_frames", self.max_invalid_frames as u64),
            ("max_queued_frames", self.max_queued_frames as u64),
            ("first_token_timeout_ms", self.first_token_timeout_ms),
            ("token_idle_timeout_ms", self.token_idle_timeout_ms),
            ("store_timeout_ms", self.store_timeout_ms),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
            ("max_inbound_frames", self.max_inbound_frames as u64),
            ("stream_lease_ms", self.stream_lease_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("sessions.{name} must be at least 1"));
            }
        }
        Ok(())
    }

    pub fn first_token_timeout(&self) -> Duration {
        Duration::from_millis(self.first_token_timeout_ms)
    }

    pub fn token_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.token_idle_timeout_ms)
    }

    pub fn resume_window(&self) -> Duration {
        Duration::from_millis(self.resume_window_ms)
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }

    pub fn stream_lease(&self) -> Duration {
        Duration::from_millis(self.stream_lease_ms)
    }

    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }
}

/// Limit values that a bot or a user may override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverride {
    pub messages_per_minute: Option<u32>,
    pub monthly_tokens: Option<u64>,
    pub monthly_requests: Option<u64>,
}

impl LimitOverride {
    /// `path` names the override in the message (`limits.users.<sub>`).
    pub fn validate(&self, path: &str) -> Result<(), String> {
        if self.messages_per_minute == Some(0) {
            return Err(format!("{path}.messages_per_minute must be at least 1"));
        }
        Ok(())
    }
}

/// Rate limits and quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Messages (`send`) per minute per user.
    pub messages_per_minute: u32,
    /// Tokens per user per UTC calendar month.
    pub monthly_tokens: u64,
    /// Requests (accepted `send`s) per user per UTC calendar month.
    pub monthly_requests: u64,
    /// New connections and HTTP requests per minute per client address.
    pub address_requests_per_minute: u32,
    /// Open connections per user; one more is closed 4429.
    pub max_connections_per_user: u32,
    /// A connection's slot expires unless refreshed within this time (a
    /// crashed instance's slots free themselves).
    pub connection_lease_ms: u64,
    /// A quota reservation expires after this time if never settled (a
    /// crashed instance's reservations free themselves); longer than any
    /// stream can run.
    pub reservation_lease_ms: u64,
    /// Per-user overrides, by user id (`sub`).
    pub users: std::collections::BTreeMap<String, LimitOverride>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            messages_per_minute: 50,
            monthly_tokens: 100_000,
            monthly_requests: 1_000,
            address_requests_per_minute: 100,
            max_connections_per_user: 20,
            connection_lease_ms: 120_000,
            reservation_lease_ms: 900_000,
            users: Default::default(),
        }
    }
}

/// The limits that apply to one user talking to one bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub messages_per_minute: u32,
    pub monthly_tokens: u64,
    pub monthly_requests: u64,
}

impl LimitSettings {
    /// The user's override, then the bot's, then the global value (the
    /// override in force comes from the [`crate::catalog::Catalog`]).
    pub fn effective(&self, user: Option<&LimitOverride>, bot: &BotSettings) -> EffectiveLimits {
        let pick = |u: Option<u64>, b: Option<u64>, g: u64| u.or(b).unwrap_or(g);
        EffectiveLimits {
            messages_per_minute: user
                .and_then(|o| o.messages_per_minute)
                .or(bot.messages_per_minute)
                .unwrap_or(self.messages_per_minute),
            monthly_tokens: pick(
                user.and_then(|o| o.monthly_tokens),
                bot.monthly_tokens,
                self.monthly_tokens,
            ),
            monthly_requests: pick(
                user.and_then(|o| o.monthly_requests),
                bot.monthly_requests,
                self.monthly_requests,
            ),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("messages_per_minute", self.messages_per_minute as u64),
            (
                "address_requests_per_minute",
                self.address_requests_per_minute as u64,
            ),
            (
                "max_connections_per_user",
                self.max_connections_per_user as u64,
            ),
            ("connection_lease_ms", self.connection_lease_ms),
            ("reservation_lease_ms", self.reservation_lease_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        for (user, o) in &self.users {
            o.validate(&format!("limits.users.{user}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bots_origins_are_origins_and_limit_browsers_only() {
        let bot = |origins: &[&str]| BotSettings {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            ..BotSettings::default()
        };
        for bad in [
            "shop.example",
            "https://shop.example/",
            "https://a@shop.example",
            "https:// x",
            "://x",
        ] {
            let error = bot(&[bad]).validate("shop").unwrap_err();
            assert!(
                error.contains("bots.shop.allowed_origins"),
                "{bad}: {error}"
            );
        }
        let shop = bot(&["https://shop.example", "http://localhost:3000"]);
        shop.validate("shop").unwrap();
        assert!(shop.admits_origin(Some("https://Shop.Example")));
        assert!(shop.admits_origin(Some("http://localhost:3000")));
        assert!(!shop.admits_origin(Some("https://evil.example")));
        assert!(!shop.admits_origin(Some("http://localhost:3001")));
        assert!(shop.admits_origin(None), "not a browser");
        assert!(bot(&[]).admits_origin(Some("https://any.example")));
    }
}
