//! The store port: where conversations, messages and idempotency keys live.
//!
//! Shaped for ScyllaDB's access paths (DESIGN.md): conversations are read by
//! user, messages by conversation, ids are time-ordered (UUIDv7) so they can
//! be clustering keys. `begin_exchange` is the one write on the path to an
//! `ack`: it must be durable when it returns, and it must be atomic with
//! respect to the idempotency key, so that two connections of one user
//! racing with the same `send.id` create one message, not two.

use skald_protocol::{
    ClientMessageId, ConversationId, ErrorBody, FinishReason, MessageId, StreamId, Usage, UserId,
};

pub use crate::catalog::StoredBot;
use crate::time::Month;
pub use skald_protocol::http::{AuditAction, MessageRole, Rating, ToolCall};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub user: UserId,
    pub bot: String,
    pub title: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub role: MessageRole,
    pub content: String,
    pub created_at_ms: i64,
    /// `None` while an assistant message is still being generated, and for
    /// user messages.
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
    /// An answer's reasoning, when the model gave some.
    pub reasoning: Option<String>,
    /// The tools an answer called.
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// What the user said of an answer.
    pub feedback: Option<Feedback>,
}

/// A user's feedback on one of their answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub rating: Rating,
    /// Up to `MAX_FEEDBACK_COMMENT_CHARS` characters (the edge checks).
    pub comment: Option<String>,
    pub at_ms: i64,
}

/// A feedback as operators list it: with its answer's ids and bot, never
/// with the user or the answer's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRecord {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub bot: String,
    pub feedback: Feedback,
}

/// Which audit records a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user: Option<UserId>,
    pub action: Option<AuditAction>,
}

/// Which usage a listing sums: one month, everyone's or one user's, every
/// bot or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFilter {
    pub month: Month,
    pub user: Option<UserId>,
    pub bot: Option<String>,
}

/// What one user spent on one bot in one month: the answers begun
/// (requests) and the tokens of those that ended (prompt and completion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub user: UserId,
    pub bot: String,
    pub month: Month,
    pub tokens: u64,
    pub requests: u64,
}

/// Which feedback a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedbackFilter {
    pub bot: Option<String>,
    pub rating: Option<Rating>,
}

/// Everything one accepted `send` writes before its `ack`.
#[derive(Debug, Clone)]
pub struct NewExchange {
    pub user: UserId,
    /// The client's `send.id`: the idempotency key, unique per user.
    pub client_id: ClientMessageId,
    pub conversation_id: ConversationId,
    /// The conversation's bot (what usage is counted against).
    pub bot: String,
    /// Set when the conversation is new: created in the same write.
    pub new_conversation: Option<NewConversation>,
    pub user_message_id: MessageId,
    pub text: String,
    /// Set when `text` is a tool's result (stored with the `tool` role).
    pub tool_call_id: Option<String>,
    pub assistant_message_id: MessageId,
    pub stream_id: StreamId,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewConversation {
    pub title: String,
}

/// What an idempotency key points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub conversation_id: ConversationId,
    pub user_message_id: MessageId,
    pub assistant_message_id: MessageId,
    pub stream_id: StreamId,
    /// Set once the answer was stored as finished.
    pub finished: Option<AnswerEnd>,
}

/// How a stored answer ended: what its `done` said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnswerEnd {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// Set with `finish_reason: error`.
    pub error: Option<ErrorBody>,
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
    pub user: UserId,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub content: String,
    /// The model's reasoning (empty when none).
    pub reasoning: String,
    /// The tools the answer called (empty when none).
    pub tool_calls: Vec<ToolCall>,
    pub end: AnswerEnd,
    pub at_ms: i64,
}

/// What a live answer holds so far, written about once a second while it
/// streams, so that a crash loses at most the last interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerCheckpoint {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub content: String,
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

/// One audit record. `address` is the client address in full for 30 days,
/// then only its anonymised form (IPv4 /24, IPv6 /48) remains.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub at_ms: i64,
    /// The user, when known (failed authentications have none).
    pub user: Option<UserId>,
    pub action: AuditAction,
    pub address: Option<String>,
    pub address_anonymised: Option<String>,
    /// What the action was about: a conversation id, a bot, a user's
    /// limits, or a short reason; never message text.
    pub detail: String,
    /// Who acted when not the user themself: the operator (`sub`) behind
    /// an Admin API change.
    #[serde(default)]
    pub actor: Option<UserId>,
}

impl AuditRecord {
    /// A record made now; the address is kept in full and anonymised.
    pub fn now(
        action: AuditAction,
        user: Option<&UserId>,
        address: Option<std::net::IpAddr>,
        detail: impl Into<String>,
    ) -> AuditRecord {
        AuditRecord {
            id: uuid::Uuid::now_v7().to_string(),
            at_ms: crate::time::now_ms(),
            user: user.cloned(),
            action,
            address: address.map(|a| a.to_string()),
            address_anonymised: address.map(crate::addresses::anonymise),
            detail: detail.into(),
            actor: None,
        }
    }

    /// The same record, made by `actor` (an operator).
    pub fn by(self, actor: &UserId) -> AuditRecord {
        AuditRecord {
            actor: Some(actor.clone()),
            ..self
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
    pub idempotency_keys: Vec<(ClientMessageId, Exchange)>,
}

/// The error of an adapter, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation; retrying later
    /// may work. Sessions answer `unavailable`.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The operation referenced something that does not exist.
    #[error("not found: {0}")]
    NotFound(&'static str),
}

impl StoreError {
    pub fn unavailable(source: impl Into<BoxError>) -> StoreError {
        StoreError::Unavailable(source.into())
    }
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The conversation if it exists and belongs to `user` (another user's
    /// conversation is `None`, exactly like a missing one).
    async fn conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError>;

    /// The exchange an idempotency key points at.
    async fn exchange(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
    ) -> Result<Option<Exchange>, StoreError>;

    /// Atomically: claim the idempotency key, create the conversation if new,
    /// store the user message and the pending assistant message. Durable
    /// when it returns.
    async fn begin_exchange(&self, exchange: NewExchange) -> Result<BeginOutcome, StoreError>;

    /// Stores answers' final content, end and usage (the Persister's
    /// batches). Each is idempotent: storing the same answer twice leaves
    /// one answer; an answer whose message no longer exists (its
    /// conversation was deleted meanwhile) is dropped without error.
    async fn finish_answers(&self, answers: Vec<FinishedAnswer>) -> Result<(), StoreError>;

    /// Stores what live answers hold so far. A checkpoint never overwrites
    /// a finished answer.
    async fn checkpoint_answers(
        &self,
        checkpoints: Vec<AnswerCheckpoint>,
    ) -> Result<(), StoreError>;

    /// Ends, as `finish_reason: "error"` with what was checkpointed,
    /// every unfinished answer last written before `older_than_ms`: the
    /// answers of an instance that died. Returns how many.
    async fn close_interrupted(&self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// Whether other server instances write this store too (then only
    /// answers that stopped being checkpointed are interrupted ones).
    fn is_shared(&self) -> bool {
        false
    }

    /// The last `limit` messages of a conversation, oldest first.
    async fn recent_messages(
        &self,
        conversation_id: &ConversationId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The user's conversations, newest first, older than `before` (the
    /// `next` of the previous page: an id; the HTTP layer makes it opaque).
    /// `limit` is capped at [`MAX_PAGE`].
    async fn list_conversations(
        &self,
        user: &UserId,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError>;

    /// Messages of the user's conversation, oldest first, after `after`.
    /// `None` when the conversation does not exist or is another user's.
    async fn list_messages(
        &self,
        user: &UserId,
        conversation_id: &ConversationId,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Option<Page<StoredMessage>>, StoreError>;

    /// Deletes a conversation of the user with its messages and their
    /// idempotency keys. False when there was none to delete.
    async fn delete_conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<bool, StoreError>;

    /// Appends audit records, in one durable write where the store can (the
    /// Persister batches them as it batches answers: a flood of refused
    /// tokens must not cost a commit each).
    async fn append_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError>;

    /// Every record about the user.
    async fn export_user(&self, user: &UserId) -> Result<UserExport, StoreError>;

    /// Erases every record about the user: conversations, messages,
    /// idempotency keys, audit records. An export afterwards is empty.
    async fn erase_user(&self, user: &UserId) -> Result<(), StoreError>;

    /// Replaces full client addresses older than `older_than_ms` by their
    /// anonymised form. Returns how many records changed.
    async fn anonymise_addresses(&self, older_than_ms: i64) -> Result<u64, StoreError>;

    /// Sets (or with `None` removes) the user's feedback on one of their
    /// answers. False when `message_id` is not an answer of `user` (another
    /// user's is exactly like a missing one).
    async fn set_feedback(
        &self,
        user: &UserId,
        message_id: &MessageId,
        feedback: Option<Feedback>,
    ) -> Result<bool, StoreError>;

    /// Feedback on answers, newest answers first, older than `before` (the
    /// `next` of the previous page: an answer's id). A page may hold fewer
    /// than `limit` items and still have a `next` (filters are applied
    /// while reading, and a page reads a bounded number of records).
    async fn list_feedback(
        &self,
        filter: &FeedbackFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<FeedbackRecord>, StoreError>;

    /// Audit records, newest first, older than `before` (the `next` of the
    /// previous page), paged as [`Store::list_feedback`].
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError>;

    /// Usage by user and bot in a month, ordered by user then bot, after
    /// `before` (the `next` of the previous page). Counted as answers
    /// begin and end, and kept when conversations are deleted or their
    /// user erased (counters, with no content).
    async fn list_usage(
        &self,
        filter: &UsageFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<UsageRecord>, StoreError>;

    /// The bots stored through the Admin API, deletions included (as
    /// tombstones), in any order.
    async fn stored_bots(&self) -> Result<Vec<StoredBot>, StoreError>;

    /// Stores a bot (or its tombstone), replacing what was stored under its
    /// name. Durable when it returns.
    async fn put_bot(&self, bot: StoredBot) -> Result<(), StoreError>;

    /// Reachability, for readiness and the spool's drain.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
