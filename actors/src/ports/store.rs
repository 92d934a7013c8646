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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FinishedAnswer {
    pub user: String,
    pub conversation_id: String,
    pub message_id: String,
    pub content: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub at_ms: i64,
}

/// One page of a listing, with the opaque cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `before` (conversations) or `after` (messages) for the next
    /// page; `None` on the last page.
    pub next: Option<String>,
}

/// Largest page a listing returns, whatever the caller asks.
pub const MAX_PAGE: usize = 200;

/// What the audit log records (the seed's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    ConversationCreated,
    ConversationDeleted,
    Exported,
    Erased,
    AuthFailed,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ConversationCreated => "conversation_created",
            AuditAction::ConversationDeleted => "conversation_deleted",
            AuditAction::Exported => "exported",
            AuditAction::Erased => "erased",
            AuditAction::AuthFailed => "auth_failed",
        }
    }

    pub fn parse(s: &str) -> Option<AuditAction> {
        [
            AuditAction::ConversationCreated,
            AuditAction::ConversationDeleted,
            AuditAction::Exported,
            AuditAction::Erased,
            AuditAction::AuthFailed,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One audit record. `address` is the client address in full for 30 days,
/// then only its anonymised form (IPv4 /24, IPv6 /48) remains.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub at_ms: i64,
    /// The user, when known (failed authentications have none).
    pub user: Option<String>,
    pub action: AuditAction,
    pub address: Option<String>,
    pub address_anonymised: Option<String>,
    /// A conversation id, or a short reason; never message text.
    pub detail: String,
}

impl AuditRecord {
    /// A record made now; the address is kept in full and anonymised.
    pub fn now(
        action: AuditAction,
        user: Option<&str>,
        address: Option<std::net::IpAddr>,
        detail: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord {
            id: crate::new_id(),
            at_ms: crate::time::now_ms(),
            user: user.map(str::to_owned),
            action,
            address: address.map(|a| a.to_string()),
            address_anonymised: address.map(crate::addresses::anonymise),
            detail: detail.into(),
        }
    }
}

/// Everything the server holds about one user (GDPR export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserExport {
    pub conversations: Vec<Conversation>,
    pub messages: Vec<StoredMessage>,
    pub audit: Vec<AuditRecord>,
    /// (client id, exchange) pairs: the idempotency keys.
    pub idempotency_keys: Vec<(String, Exchange)>,
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
    /// Idempotent; an answer whose message no longer exists (its
    /// conversation was deleted meanwhile) is dropped without error.
    async fn finish_answer(&self, answer: FinishedAnswer) -> Result<(), StoreError>;

    /// The last `limit` messages of a conversation, oldest first.
    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Stores several answers at once (the Persister's batches). Each is
    /// idempotent: storing the same answer twice leaves one answer.
    async fn finish_answers(&self, answers: Vec<FinishedAnswer>) -> Result<(), StoreError> {
        for answer in answers {
            self.finish_answer(answer).await?;
        }
        Ok(())
    }

    /// The user's conversations, newest first, older than `before` (the
    /// `next` of the previous page: an id; the HTTP layer makes it opaque).
    /// `limit` is capped at [`MAX_PAGE`].
    async fn list_conversations(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError>;

    /// Messages of the user's conversation, oldest first, after `after`.
    /// `None` when the conversation does not exist or is another user's.
    async fn list_messages(
        &self,
        user: &str,
        conversation_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Option<Page<StoredMessage>>, StoreError>;

    /// Deletes a conversation of the user with its messages and their
    /// idempotency keys. False when there was none to delete.
    async fn delete_conversation(&self, user: &str, id: &str) -> Result<bool, StoreError>;

    async fn append_audit(&self, record: AuditRecord) -> Result<(), StoreError>;

    /// Every record about the user.
    async fn export_user(&self, user: &str) -> Result<UserExport, StoreError>;

    /// Erases every record about the user: conversations, messages,
    /// idempotency keys, audit records. An export afterwards is empty.
    async fn erase_user(&self, user: &str) -> Result<(), StoreError>;

    /// Replaces full client addresses older than `older_than_ms` by their
    /// anonymised form. Returns how many records changed.
    async fn anonymise_addresses(&self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// Reachability, for readiness and the spool's drain.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
