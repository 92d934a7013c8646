//! The stream bus port: how instances that share a Redis serve each other's
//! users. A stream runs on one instance (its owner); its frames are
//! published, as they were cut, to a capped log per stream, so any instance
//! can replay and follow it; a lease per live stream says its owner is
//! alive; a control channel per instance carries `cancel`s; user events
//! (`started`) reach every instance.
//!
//! Redis Streams and pub/sub implement it (`src/bus/redis.rs`), as
//! resumable-stream libraries and Centrifugo's Redis engine do. Without
//! Redis there is no bus and no network hop on any stream's path.

use std::time::Duration;

use skald_protocol::{ServerFrame, SessionId, StreamId, UserId};

use crate::stream_log::StreamIds;
use crate::time::Month;

/// One server process, for as long as it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct InstanceId(pub String);

impl InstanceId {
    pub fn generate() -> InstanceId {
        InstanceId(uuid::Uuid::now_v7().to_string())
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What other instances need to know of a stream: who runs it, whose it is,
/// and what its quota reservation is (to settle it if its owner dies).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamMeta {
    pub owner: InstanceId,
    pub stream_id: StreamId,
    pub user: UserId,
    pub conversation_id: skald_protocol::ConversationId,
    pub message_id: skald_protocol::MessageId,
    pub quota_month: Month,
    pub prompt_tokens_estimate: u64,
}

impl StreamMeta {
    pub fn ids(&self) -> StreamIds {
        StreamIds {
            stream_id: self.stream_id.clone(),
            user: self.user.clone(),
            conversation_id: self.conversation_id.clone(),
            message_id: self.message_id.clone(),
        }
    }
}

/// Where a reader is in a published stream (the log's entry id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryId(pub String);

impl EntryId {
    /// Before the first entry.
    pub fn start() -> EntryId {
        EntryId("0-0".into())
    }
}

/// What one flush of the publisher writes, in one pipeline.
#[derive(Debug, Default)]
pub struct PublishBatch {
    /// Streams published for the first time (their meta and lease).
    pub announce: Vec<StreamMeta>,
    /// Each stream's new frames.
    pub frames: Vec<StreamFrames>,
}

/// One stream's frames of a [`PublishBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrames {
    pub stream_id: StreamId,
    /// Encoded frames, in order.
    pub frames: Vec<String>,
    /// The last frame is the stream's `done`: its log then expires after
    /// the resume window, and its lease is dropped.
    pub ended: bool,
}

/// A message of the control channel of one instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// Cancel this stream of this user (another user's cancel is refused
    /// where it was sent; the owner checks again).
    Cancel { stream_id: StreamId, user: UserId },
}

/// A user's event for that user's connections on every instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserEvent {
    /// The instance it comes from (which delivered it to its own
    /// connections already); the relay sets it.
    #[serde(default)]
    pub instance: Option<InstanceId>,
    pub user: UserId,
    /// The connection that caused it (it gets no copy).
    pub origin: SessionId,
    pub frame: ServerFrame,
}

/// What the bus delivers to this instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Control(Control),
    User(UserEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Redis cannot be reached or did not answer in time.
    #[error("stream bus unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait StreamBus: Send + Sync + 'static {
    /// This instance, as the others know it.
    fn instance(&self) -> &InstanceId;

    /// Announces new streams and publishes frames, in one round trip.
    async fn publish(&self, batch: &PublishBatch) -> Result<(), BusError>;

    /// Renews this instance's leases on its live streams until
    /// `until_ms`: a stream whose lease lapses is an orphan.
    async fn refresh_leases(&self, streams: &[StreamId], until_ms: i64) -> Result<(), BusError>;

    /// What is known of a stream (None: unknown or expired).
    async fn meta(&self, stream_id: &StreamId) -> Result<Option<StreamMeta>, BusError>;

    /// The published frames of each stream after its entry id, waiting up
    /// to `block` for one to come when none is there.
    async fn read(
        &self,
        after: &[(StreamId, EntryId)],
        block: Duration,
    ) -> Result<Vec<(StreamId, Vec<(EntryId, ServerFrame)>)>, BusError>;

    /// Live streams whose lease lapsed before `now_ms` (at most `limit`).
    async fn lapsed(&self, now_ms: i64, limit: usize) -> Result<Vec<StreamId>, BusError>;

    /// Takes the job of closing an orphan; true for exactly one instance.
    async fn claim_orphan(&self, stream_id: &StreamId) -> Result<bool, BusError>;

    /// Sends a control message to the instance that runs a stream.
    async fn control(&self, to: &InstanceId, control: &Control) -> Result<(), BusError>;

    /// Tells every instance about a user's event.
    async fn user_event(&self, event: &UserEvent) -> Result<(), BusError>;

    /// Starts delivering this instance's control messages and every user
    /// event; ends when the receiver is dropped. Reconnects by itself.
    async fn listen(&self) -> Result<tokio::sync::mpsc::Receiver<Incoming>, BusError>;
}
