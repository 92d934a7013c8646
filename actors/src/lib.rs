//! Skald's actors: sessions, streams, the stream registry and supervision,
//! and the ports (traits) they need from the outside world.
//!
//! This crate knows the protocol and nothing of axum, fred, scylla or
//! async-openai: `src/` implements the ports in [`ports`] with real
//! libraries and runs the socket tasks that feed a [`session::Session`] and
//! drain its [`outbox::Outbox`]. See ARCHITECTURE.md for who supervises whom.

use std::collections::HashMap;
use std::sync::Arc;

pub mod addresses;
pub mod hub;
pub mod limits;
pub mod outbox;
pub mod persister;
pub mod ports;
pub mod prompt;
pub mod registry;
pub mod session;
pub mod settings;
pub mod store_contract;
pub mod stream;
pub mod stream_log;
pub mod supervisor;
pub mod time;

use limits::guard::LimitsGuard;
use ports::model::ModelProvider;
use ports::store::Store;
use settings::{BotSettings, LimitSettings, SessionSettings};
use time::Clock;

/// The adapters and settings every actor shares.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub model: Arc<dyn ModelProvider>,
    /// Always holds `"default"` (configuration validation ensures it).
    pub bots: HashMap<String, BotSettings>,
    pub sessions: SessionSettings,
    pub limits: LimitSettings,
    /// Where limits and quotas are decided (Redis with its failure policy,
    /// or in-process).
    pub limits_guard: Arc<LimitsGuard>,
    pub clock: Arc<dyn Clock>,
    /// The Persister's spool file (in the data dir).
    pub spool_path: std::path::PathBuf,
}

impl Services {
    pub fn default_bot(&self) -> BotSettings {
        self.bots.get("default").cloned().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActorsError {
    #[error("could not start an actor: {0}")]
    Spawn(String),
    #[error("an actor did not answer: {0}")]
    Call(String),
    #[error("the actor system is stopped")]
    Stopped,
}

/// A new time-ordered unique id (UUIDv7, hyphenated).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
