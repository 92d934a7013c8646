//! The store port: where conversations, messages and idempotency keys live.
//!
//! Shaped for ScyllaDB's access paths (DESIGN.md): conversations are read by
//! user, messages by conversation, ids are time-ordered (UUIDv7) so they can
//! be clustering keys. `begin_exchange` is the one write on the path to an
//! `ack`: it must be durable when it returns, and it must be atomic with
//! respect to the idempotency key, so that two connections of one user
//! racing with the same `send.id` create one message, not two.

use skald_protocol::{FinishReason, Usage};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub user: String,
    pub bot: String,
    pub title: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRole {
    User,
    Assistant,
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: String,
    pub conversation_id: String,
    pub role: MessageRole,
    pub content: String,
    pub created_at_ms: i64,
    /// `None` while an assistant message is still being generated, and for
    /// user messages.
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
}

/// Everything one accepted `send` writes before its `ack`.
#[derive(Debug, Clone)]
pub struct NewExchange {
    pub user: String,
    /// The client's `send.id`: the idempotency key, unique per user.
    pub client_id: String,
    pub conversation_id: String,
    /// Set when the conversation is new: created in the same write.
    pub new_conversation: Option<NewConversation>,
    pub user_message_id: String,
    pub text: String,
    pub assistant_message_id: String,
    pub stream_id: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewConversation {
    pub bot: String,
    pub title: String,
}

/// What an idempotency key points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub conversation_id: String,
    pub user_message_id: String,
    pub assistant_message_id: String,
    pub stream_id: String,
    /// Set once the answer was stored.
    pub finished: Option<(FinishReason, Usage)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginOutcome {
    Created,
    /// The key was used before: nothing was written.
    Existing(Exchange),
}

/// The final state of an answer.
#[derive(Debug, Clone)]
pub struct FinishedAnswer {
    pub user: String,
    pub conversation_id: String,
    pub message_id: String,
    pub content: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation; retrying later
    /// may work. Sessions answer `unavailable`.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation referenced something that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The conversation if it exists and belongs to `user` (another user's
    /// conversation is `None`, exactly like a missing one).
    async fn conversation(&self, user: &str, id: &str) -> Result<Option<Conversation>, StoreError>;

    /// The exchange an idempotency key points at.
    async fn exchange(&self, user: &str, client_id: &str) -> Result<Option<Exchange>, StoreError>;

    /// Atomically: claim the idempotency key, create the conversation if new,
    /// store the user message and the pending assistant message.
    async fn begin_exchange(&self, exchange: NewExchange) -> Result<BeginOutcome, StoreError>;

    /// Stores the answer's final content, finish reason and usage.
    async fn finish_answer(&self, answer: FinishedAnswer) -> Result<(), StoreError>;

    /// The last `limit` messages of a conversation, oldest first.
    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
}
