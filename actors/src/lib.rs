//! Skald's actors: sessions, streams, the stream registry and supervision,
//! and the ports (traits) they need from the outside world.
//!
//! This crate knows the protocol and nothing of axum, fred, scylla or
//! async-openai: `src/` implements the ports in [`ports`] with real
//! libraries and runs the socket tasks that feed a [`session::Session`] and
//! drain its [`outbox::Outbox`]. See ARCHITECTURE.md for who supervises whom.
//!
//! The modules form a one-way graph: [`slot`] and the leaf actors
//! ([`persister`], [`limits`], [`stream`]) know nothing of the others;
//! [`registry`] knows streams; [`directory`] holds the slots of the shared
//! actors; [`session`] talks to them through the directory; [`supervisor`]
//! starts sessions; [`root`] starts everything; [`hub`] is the facade the
//! edge holds.

use std::sync::Arc;

pub mod addresses;
pub mod board;
pub mod catalog;
pub mod directory;
pub mod exchange;
pub mod hub;
pub mod limits;
pub mod outbox;
pub mod persister;
pub mod ports;
pub mod prompt;
pub mod registry;
pub mod relay;
mod root;
pub mod session;
pub mod settings;
pub mod slot;
pub mod stream;
pub mod stream_log;
pub mod supervisor;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;

pub use skald_protocol::{ClientMessageId, ConversationId, MessageId, SessionId, StreamId, UserId};

use limits::guard::LimitsGuard;
use ports::bus::StreamBus;
use ports::model::ModelProvider;
use ports::store::Store;
use settings::{LimitSettings, SessionSettings};
use time::Clock;

/// The adapters and settings every actor shares.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub model: Arc<dyn ModelProvider>,
    /// The bots and per-user overrides in force (the file's, changed at
    /// runtime through the Admin API).
    pub catalog: catalog::Catalog,
    pub sessions: SessionSettings,
    pub limits: LimitSettings,
    /// Where limits and quotas are decided (Redis with its failure policy,
    /// or in-process).
    pub limits_guard: Arc<LimitsGuard>,
    pub clock: Arc<dyn Clock>,
    /// The Persister's spool file (in the data dir).
    pub spool_path: std::path::PathBuf,
    /// The stream bus shared with other instances (Redis); `None`: this
    /// instance alone, and nothing is published.
    pub bus: Option<Arc<dyn StreamBus>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActorsError {
    #[error("could not start an actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("an actor did not answer in time")]
    Timeout,
    #[error("the actor system is stopped")]
    Stopped,
}
