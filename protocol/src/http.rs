//! The bodies of the HTTP API (PROTOCOL.md's tables), typed once here and
//! exported to TypeScript with the frames, so the server builds them from
//! types rather than `json!` and the TypeScript client holds no copy.
//!
//! Times are RFC 3339 strings (UTC), as the API returns them.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};

use crate::codes::FinishReason;
use crate::ids::{ClientMessageId, ConversationId, MessageId, StreamId, UserId};
use crate::server::Usage;

/// Who wrote a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
    /// A tool's result given through the OpenAI-compatible API, answered
    /// like a user message (its `tool_call_id` names the call).
    Tool,
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What the audit log records (the seed's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum AuditAction {
    ConversationCreated,
    ConversationDeleted,
    Exported,
    Erased,
    AuthFailed,
    /// An operator created or replaced a bot (`detail`: `bot:<name>`).
    BotChanged,
    /// An operator deleted a bot.
    BotDeleted,
    /// An operator set a user's limits (the record is the user's).
    UserLimitsChanged,
    /// An operator removed a user's limits.
    UserLimitsDeleted,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A conversation of the caller (`GET /v1/conversations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "Conversation"))]
pub struct ConversationView {
    pub id: ConversationId,
    pub bot: String,
    pub title: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A stored message (`GET /v1/conversations/{id}/messages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS), ts(rename = "StoredMessage"))]
pub struct MessageView {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub role: MessageRole,
    pub content: String,
    /// RFC 3339.
    pub created_at: String,
    /// Null for user messages and answers still being generated.
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
    /// What a reasoning model thought before its answer; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub reasoning: Option<String>,
    /// The tools an answer called (the OpenAI-compatible API); absent when
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(test, ts(optional, as = "Option<Vec<ToolCall>>"))]
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub tool_call_id: Option<String>,
    /// What the user said of an answer; absent when nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub feedback: Option<Feedback>,
}

/// A user's rating of an answer: `1` (good) or `-1` (bad) on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i8", into = "i8")]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "1 | -1"))]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_i8(self) -> i8 {
        self.into()
    }
}

impl TryFrom<i8> for Rating {
    type Error = &'static str;

    fn try_from(n: i8) -> Result<Rating, &'static str> {
        match n {
            1 => Ok(Rating::Up),
            -1 => Ok(Rating::Down),
            _ => Err("a rating is 1 (good) or -1 (bad)"),
        }
    }
}

impl From<Rating> for i8 {
    fn from(r: Rating) -> i8 {
        match r {
            Rating::Up => 1,
            Rating::Down => -1,
        }
    }
}

/// Longest feedback comment, in characters.
pub const MAX_FEEDBACK_COMMENT_CHARS: usize = 2000;

/// A user's feedback on an answer: the body of
/// `PUT /v1/messages/{id}/feedback`, and what the history shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Feedback {
    pub rating: Rating,
    /// Up to [`MAX_FEEDBACK_COMMENT_CHARS`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub comment: Option<String>,
}

/// One record of the audit log as operators read it
/// (`GET /v1/admin/audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AuditEvent {
    pub id: String,
    /// RFC 3339.
    pub at: String,
    /// Whose record it is; null for failed authentications.
    pub user: Option<UserId>,
    /// The operator who made the change; null when the user acted.
    pub actor: Option<UserId>,
    pub action: AuditAction,
    /// What it was about: a conversation id, `bot:<name>`, `limits`, or a
    /// short reason; never message text.
    pub resource: String,
    /// The client address in full for 30 days, then anonymised (IPv4 /24,
    /// IPv6 /48).
    pub address: Option<String>,
}

/// `GET /v1/admin/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next: Option<String>,
}

/// One feedback as operators list it (`GET /v1/admin/feedback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct FeedbackEntry {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    pub bot: String,
    pub rating: Rating,
    pub comment: Option<String>,
    /// RFC 3339: when it was given.
    pub at: String,
}

/// `GET /v1/admin/feedback`: newest answers first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct FeedbackPage {
    pub feedback: Vec<FeedbackEntry>,
    pub next: Option<String>,
}

/// One tool call of an answer, in OpenAI's shape: `{"id","type":"function",
/// "function":{"name","arguments"}}`; `arguments` is the model's text (JSON
/// when the model wrote valid JSON), kept as it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionCall,
}

/// The kind of a tool call: OpenAI defines only `function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    #[default]
    Function,
}

/// The function a tool call names, and its arguments as the model wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// `GET /v1/conversations`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ConversationPage {
    pub conversations: Vec<ConversationView>,
    /// Pass as `before` for the next page; null on the last one.
    pub next: Option<String>,
}

/// `GET /v1/conversations/{id}/messages`: oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct MessagePage {
    pub messages: Vec<MessageView>,
    /// Pass as `after` for the next page; null on the last one.
    pub next: Option<String>,
}

/// `GET /v1/usage`: this month's counters (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UsageReport {
    /// `YYYY-MM`.
    pub month: String,
    pub tokens_used: u64,
    pub tokens_limit: u64,
    pub requests_used: u64,
    pub requests_limit: u64,
}

/// What one user spent on one bot in one month, for operators
/// (`GET /v1/admin/usage`): the answers begun and the tokens (prompt and
/// completion) of those that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UsageEntry {
    pub user: UserId,
    pub bot: String,
    /// `YYYY-MM`.
    pub month: String,
    pub tokens: u64,
    pub requests: u64,
}

/// `GET /v1/admin/usage`: by user, then bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UsagePage {
    pub usage: Vec<UsageEntry>,
    pub next: Option<String>,
}

/// An idempotency key in the export: a `send.id` and what it created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ExportedKey {
    pub send_id: ClientMessageId,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub stream_id: StreamId,
}

/// An audit record about the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AuditView {
    pub id: String,
    /// RFC 3339.
    pub at: String,
    pub action: AuditAction,
    /// The full client address for 30 days, then null.
    pub address: Option<String>,
    /// The address with its last bits cleared (IPv4 /24, IPv6 /48).
    pub address_anonymised: Option<String>,
    pub detail: String,
    /// The operator who made the change, when not the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub actor: Option<UserId>,
}

/// The usage counters kept for the caller (they survive erasure: counters
/// without content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ExportedUsage {
    pub month: String,
    pub tokens_used: u64,
    pub requests_used: u64,
}

/// `GET /v1/export`: every record the server holds about the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Export {
    pub user: UserId,
    /// RFC 3339.
    pub exported_at: String,
    pub conversations: Vec<ConversationView>,
    pub messages: Vec<MessageView>,
    pub idempotency_keys: Vec<ExportedKey>,
    pub audit: Vec<AuditView>,
    /// Null when the limits backend could not say.
    pub usage: Option<ExportedUsage>,
}

/// `POST /v1/demo/token`: an anonymous, short-lived token for the demo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct DemoToken {
    pub token: String,
    pub expires_in: u64,
}
