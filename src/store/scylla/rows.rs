//! Rows both ways, through the driver's derives: the bind values of each
//! statement as a struct whose fields are named after the statement's
//! (named) bind markers (`SerializeRow`), and each selected row as a struct
//! whose fields are named after the selected columns (`DeserializeRow`).
//! The driver matches them by name against the prepared statement's
//! metadata at every request, and refuses a missing, extra or mistyped
//! value or column: the real node the tests run against checks every
//! statement and every row here. What is left is pure conversion into
//! the port's types, tested below without a database.

use ::scylla::value::{CqlTimestamp, MaybeUnset};
use ::scylla::{DeserializeRow, SerializeRow};
use skald_actors::ports::store::{
    AnswerEnd, AuditAction, AuditRecord, Conversation, Exchange, Feedback, FeedbackRecord,
    FinishedAnswer, MessageRole, NewConversation, NewExchange, Rating, StoredBot, StoredMessage,
    MAX_PAGE,
};
use skald_actors::time::{rfc3339, Month};
use skald_protocol::{
    ClientMessageId, ConversationId, ErrorBody, ErrorCode, FinishReason, MessageId, StreamId,
    Usage, UserId,
};

/// How long a checkpoint of a live answer is kept after it was written:
/// long enough for any instance to close the answer if its own died (they
/// sweep every 30 s), short enough that the checkpoint of an answer that
/// kept streaming after its conversation was deleted (which lands in the
/// deleted partition) does not outlive the deletion by more than a day.
pub const CHECKPOINT_TTL_SECS: i32 = 86_400;

/// Partitions of `open_answers`: enough that no partition holds many open
/// answers (or the tombstones of many closed ones), few enough that
/// `close_interrupted` reads them all in one round of requests.
pub const OPEN_ANSWER_BUCKETS: i32 = 32;

/// Partitions of a month's `usage_users`: every exchange writes its user
/// there, so a month is spread over this many partitions rather than one.
pub const USAGE_USER_BUCKETS: i32 = 8;

// --- values ---------------------------------------------------------------

pub fn ts(ms: i64) -> CqlTimestamp {
    CqlTimestamp(ms)
}

pub fn ms(ts: Option<CqlTimestamp>) -> Option<i64> {
    ts.map(|t| t.0)
}

/// A write time (`USING TIMESTAMP`, microseconds) for an event of `at_ms`.
pub fn write_time_us(at_ms: i64) -> i64 {
    at_ms.saturating_mul(1000)
}

/// Token counts are `bigint`: a `u64` beyond `i64::MAX` (never seen) is
/// stored as `i64::MAX` rather than wrapping.
pub fn tokens_to_cql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn tokens_from_cql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `None` binds as "unset": the column is not written at all (a bound
/// `null` would write a tombstone).
fn unset_if_none<T>(value: Option<T>) -> MaybeUnset<T> {
    match value {
        Some(v) => MaybeUnset::Set(v),
        None => MaybeUnset::Unset,
    }
}

/// The partition of a user's audit records: the UTC month, `YYYY-MM`.
pub fn audit_month(at_ms: i64) -> String {
    Month::of(at_ms).to_string()
}

/// The partition of audit records without a user: the UTC hour,
/// `YYYY-MM-DDTHH`.
pub fn audit_hour(at_ms: i64) -> String {
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` cut after the hour.
    let mut stamp = rfc3339(at_ms);
    stamp.truncate(13);
    stamp
}

/// The TTL to write a full address with, so that it disappears `ttl_secs`
/// after the record's time (not after the write: a record written late,
/// from the spool, still loses its address on time). `None`: the time is
/// over, the address is not written at all.
pub fn address_ttl_secs(at_ms: i64, now_ms: i64, ttl_secs: u32) -> Option<i32> {
    let ttl_secs = i64::from(ttl_secs).min(i64::from(i32::MAX));
    let age_ms = now_ms.saturating_sub(at_ms).max(0);
    let left_ms = ttl_secs * 1000 - age_ms;
    if left_ms <= 0 {
        return None;
    }
    // Round up: an address never expires before its time.
    let secs = (left_ms + 999) / 1000;
    Some(secs.min(ttl_secs) as i32)
}

/// The partition of `open_answers` an answer is listed in (FNV-1a of its
/// id: stable across builds and instances).
pub fn open_bucket(message_id: &str) -> i32 {
    bucket(message_id, OPEN_ANSWER_BUCKETS)
}

/// The partition of a month's `usage_users` a user is listed in.
pub fn usage_user_bucket(user: &str) -> i32 {
    bucket(user, USAGE_USER_BUCKETS)
}

/// One of `buckets` partitions for `key` (FNV-1a: stable across builds and
/// instances).
fn bucket(key: &str, buckets: i32) -> i32 {
    use std::hash::Hasher;
    let mut hash = fnv::FnvHasher::default();
    hash.write(key.as_bytes());
    (hash.finish() % buckets as u64) as i32
}

// --- pages ----------------------------------------------------------------

/// The page size actually served: at least 1, at most [`MAX_PAGE`].
pub fn page_size(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// The `LIMIT` bound for a page: one row more than the page, to learn
/// whether there is a next page without a second query.
pub fn fetch_limit(page: usize) -> i32 {
    i32::try_from(page + 1).unwrap_or(i32::MAX)
}

/// Cuts the rows fetched with [`fetch_limit`] into this page and the cursor
/// of the next one (the id of the page's last row). Rows the page skips
/// (traces of late updates) still count, so the cursor always advances.
pub fn split_page<R>(
    mut rows: Vec<R>,
    page: usize,
    id: impl Fn(&R) -> &str,
) -> (Vec<R>, Option<String>) {
    if rows.len() > page {
        rows.truncate(page);
        let next = rows.last().map(|r| id(r).to_owned());
        (rows, next)
    } else {
        (rows, None)
    }
}

// --- rows read ------------------------------------------------------------

/// A row of `conversations_by_user`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct ConversationRow {
    pub conversation_id: String,
    pub bot: Option<String>,
    pub title: Option<String>,
    pub created_at: Option<CqlTimestamp>,
    pub updated_at: Option<CqlTimestamp>,
}

impl ConversationRow {
    /// A conversation exists once its creation was written; a row with
    /// only `updated_at` is what an update leaves when it lands after a
    /// delete: reads skip it (erase still removes it).
    pub fn is_live(&self) -> bool {
        self.created_at.is_some()
    }

    pub fn into_conversation(self, user: &UserId) -> Option<Conversation> {
        let created_at_ms = ms(self.created_at)?;
        Some(Conversation {
            id: self.conversation_id.into(),
            user: user.clone(),
            bot: self.bot.unwrap_or_default(),
            title: self.title.unwrap_or_default(),
            created_at_ms,
            updated_at_ms: ms(self.updated_at).unwrap_or(created_at_ms),
        })
    }
}

/// How a stored answer ended, from its columns: `None` while it has no
/// finish reason. The error is read only for `finish_reason: error` (an
/// answer closed as interrupted and then finished for real keeps the
/// close's error cells, which no longer apply).
fn end_of(
    finish_reason: Option<&str>,
    usage: Option<Usage>,
    error_code: Option<&str>,
    error_message: Option<&str>,
) -> Option<AnswerEnd> {
    let finish_reason: FinishReason = finish_reason?.parse().ok()?;
    let error = (finish_reason == FinishReason::Error).then(|| ErrorBody {
        code: error_code
            .and_then(|c| c.parse().ok())
            .unwrap_or(ErrorCode::Internal),
        message: error_message.unwrap_or_default().to_owned(),
    });
    Some(AnswerEnd {
        finish_reason,
        usage: usage.unwrap_or_default(),
        error,
    })
}

/// A row of `messages_by_conversation`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct MessageRow {
    pub message_id: String,
    pub role: Option<String>,
    pub content: Option<String>,
    /// What a live answer held at its last checkpoint.
    pub checkpoint: Option<String>,
    pub created_at: Option<CqlTimestamp>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub client_id: Option<String>,
    pub reasoning: Option<String>,
    pub tool_calls: Option<String>,
    pub tool_call_id: Option<String>,
    pub usage_estimated: Option<bool>,
    pub feedback_rating: Option<i32>,
    pub feedback_comment: Option<String>,
    pub feedback_at: Option<CqlTimestamp>,
}

impl MessageRow {
    /// The user's feedback on this answer, if any.
    pub fn feedback(&self) -> Option<Feedback> {
        feedback_of(
            self.feedback_rating,
            self.feedback_comment.clone(),
            self.feedback_at,
        )
    }

    pub fn is_answer(&self) -> bool {
        self.role.as_deref() == Some(MessageRole::Assistant.as_str())
    }

    fn usage(&self) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: tokens_from_cql(self.prompt_tokens?),
            completion_tokens: tokens_from_cql(self.completion_tokens?),
            reasoning_tokens: self.reasoning_tokens.map(tokens_from_cql),
            estimated: self.usage_estimated.unwrap_or(false),
        })
    }

    /// How the answer ended, if it did.
    pub fn end(&self) -> Option<AnswerEnd> {
        end_of(
            self.finish_reason.as_deref(),
            self.usage(),
            self.error_code.as_deref(),
            self.error_message.as_deref(),
        )
    }

    /// `None` for a row that was never inserted (cells an update left
    /// after its conversation was deleted). A live answer's content is its
    /// last checkpoint; a finished one's is what it finished with.
    pub fn into_message(self, conversation_id: &ConversationId) -> Option<StoredMessage> {
        let role: MessageRole = self.role.as_deref()?.parse().ok()?;
        let created_at_ms = ms(self.created_at)?;
        let feedback = self.feedback();
        let end = self.end();
        let usage = self.usage();
        let content = match end {
            Some(_) => self.content,
            None => self.checkpoint.or(self.content),
        };
        Some(StoredMessage {
            id: self.message_id.into(),
            conversation_id: conversation_id.clone(),
            role,
            content: content.unwrap_or_default(),
            created_at_ms,
            finish_reason: end.map(|e| e.finish_reason),
            usage,
            feedback,
            tool_calls: crate::store::tool_calls_of_column(self.tool_calls.as_deref()),
            reasoning: self.reasoning,
            tool_call_id: self.tool_call_id,
        })
    }
}

/// What `finish_answers` and `close_interrupted` read of an answer before
/// they write it.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct AnswerStateRow {
    pub role: Option<String>,
    pub created_at: Option<CqlTimestamp>,
    pub finish_reason: Option<String>,
    pub checkpoint: Option<String>,
    /// The write time of the checkpoint (microseconds): the checkpoint's
    /// own time, which it is written with.
    pub checkpoint_us: Option<i64>,
}

impl AnswerStateRow {
    /// Whether the message was inserted (not a trace of a late update).
    pub fn exists(&self) -> bool {
        self.role.is_some() && self.created_at.is_some()
    }

    pub fn is_finished(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// When the answer was last written, in microseconds: the time of its
    /// last checkpoint, or its creation if it has none.
    pub fn last_written_us(&self) -> Option<i64> {
        let created = write_time_us(ms(self.created_at)?);
        Some(self.checkpoint_us.unwrap_or(created))
    }
}

/// A row of `idempotency_keys`: the intent of one exchange.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct KeyRow {
    pub client_id: String,
    pub conversation_id: Option<String>,
    pub user_message_id: Option<String>,
    pub assistant_message_id: Option<String>,
    pub stream_id: Option<String>,
    pub created_at: Option<CqlTimestamp>,
    pub bot: Option<String>,
    pub title: Option<String>,
    pub user_text: Option<String>,
    pub tool_call_id: Option<String>,
}

impl KeyRow {
    /// The exchange this key claimed, as `begin_exchange` received it.
    /// `None` when a column every claim writes is missing (a row this code
    /// did not write).
    pub fn into_intent(self, user: &UserId) -> Option<NewExchange> {
        Some(NewExchange {
            user: user.clone(),
            client_id: ClientMessageId::from(self.client_id),
            conversation_id: ConversationId::from(self.conversation_id?),
            // Keys claimed before migration 0004 have a bot only when the
            // conversation was new.
            bot: self.bot.unwrap_or_default(),
            new_conversation: self.title.map(|title| NewConversation { title }),
            user_message_id: MessageId::from(self.user_message_id?),
            text: self.user_text.unwrap_or_default(),
            tool_call_id: self.tool_call_id,
            assistant_message_id: MessageId::from(self.assistant_message_id?),
            stream_id: StreamId::from(self.stream_id?),
            at_ms: ms(self.created_at)?,
        })
    }
}

/// What a key points at, with the answer's end (from its message row).
pub fn exchange_of(intent: &NewExchange, finished: Option<AnswerEnd>) -> Exchange {
    Exchange {
        conversation_id: intent.conversation_id.clone(),
        user_message_id: intent.user_message_id.clone(),
        assistant_message_id: intent.assistant_message_id.clone(),
        stream_id: intent.stream_id.clone(),
        finished,
    }
}

/// A row of `audit_by_user`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct AuditRow {
    pub audit_id: String,
    pub at: Option<CqlTimestamp>,
    pub action: Option<String>,
    pub address: Option<String>,
    pub address_anonymised: Option<String>,
    pub detail: Option<String>,
    pub actor: Option<String>,
}

impl AuditRow {
    pub fn into_record(self, user: &UserId) -> Option<AuditRecord> {
        Some(AuditRecord {
            id: self.audit_id,
            at_ms: ms(self.at)?,
            user: Some(user.clone()),
            action: self.action.as_deref()?.parse::<AuditAction>().ok()?,
            address: self.address,
            address_anonymised: self.address_anonymised,
            detail: self.detail.unwrap_or_default(),
            actor: self.actor.map(UserId::from),
        })
    }
}

/// A row of `audit_months_by_user`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct MonthRow {
    pub month: String,
}

/// A row of `open_answers`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct OpenAnswerRow {
    pub message_id: String,
    pub conversation_id: Option<String>,
}

// --- bind values ----------------------------------------------------------
//
// One struct per shape of bind markers; the field names are the markers'
// names (`:user_id`), which the driver matches against the prepared
// statement's metadata.

#[derive(SerializeRow)]
pub struct UserKey<'a> {
    pub user_id: &'a str,
}

#[derive(SerializeRow)]
pub struct ConversationKey<'a> {
    pub user_id: &'a str,
    pub conversation_id: &'a str,
}

/// The first page of a user's conversations.
#[derive(SerializeRow)]
pub struct ConversationsFirst<'a> {
    pub user_id: &'a str,
    pub fetch: i32,
}

/// The next page: conversations older than `before`.
#[derive(SerializeRow)]
pub struct ConversationsBefore<'a> {
    pub user_id: &'a str,
    pub before: &'a str,
    pub fetch: i32,
}

#[derive(SerializeRow)]
pub struct NewConversationRow<'a> {
    pub user_id: &'a str,
    pub conversation_id: &'a str,
    pub bot: &'a str,
    pub title: &'a str,
    pub created_at: CqlTimestamp,
}

impl<'a> NewConversationRow<'a> {
    pub fn of(ex: &'a NewExchange, new: &'a NewConversation) -> Self {
        NewConversationRow {
            user_id: ex.user.as_str(),
            conversation_id: ex.conversation_id.as_str(),
            bot: &ex.bot,
            title: &new.title,
            created_at: ts(ex.at_ms),
        }
    }
}

/// A conversation's last activity, written as of that activity (so a
/// delete after it shadows it, and the latest activity wins).
#[derive(SerializeRow)]
pub struct TouchConversation<'a> {
    pub user_id: &'a str,
    pub conversation_id: &'a str,
    pub updated_at: CqlTimestamp,
    pub written_us: i64,
}

impl<'a> TouchConversation<'a> {
    pub fn new(user: &'a UserId, conversation_id: &'a ConversationId, at_ms: i64) -> Self {
        TouchConversation {
            user_id: user.as_str(),
            conversation_id: conversation_id.as_str(),
            updated_at: ts(at_ms),
            written_us: write_time_us(at_ms),
        }
    }
}

#[derive(SerializeRow)]
pub struct ConversationPartition<'a> {
    pub conversation_id: &'a str,
}

#[derive(SerializeRow)]
pub struct MessageKey<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
}

#[derive(SerializeRow)]
pub struct MessagesById<'a> {
    pub conversation_id: &'a str,
    pub message_ids: Vec<&'a str>,
}

/// Messages newer than `after` (`""` for the first page: every id is
/// greater).
#[derive(SerializeRow)]
pub struct MessagesAfter<'a> {
    pub conversation_id: &'a str,
    pub after: &'a str,
    pub fetch: i32,
}

/// The newest `fetch` messages.
#[derive(SerializeRow)]
pub struct MessagesLast<'a> {
    pub conversation_id: &'a str,
    pub fetch: i32,
}

#[derive(SerializeRow)]
pub struct UserMessage<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub role: &'static str,
    pub content: &'a str,
    pub created_at: CqlTimestamp,
    pub client_id: &'a str,
    pub tool_call_id: MaybeUnset<&'a str>,
}

impl<'a> UserMessage<'a> {
    pub fn of(ex: &'a NewExchange) -> Self {
        UserMessage {
            conversation_id: ex.conversation_id.as_str(),
            message_id: ex.user_message_id.as_str(),
            role: match ex.tool_call_id {
                Some(_) => MessageRole::Tool.as_str(),
                None => MessageRole::User.as_str(),
            },
            content: &ex.text,
            created_at: ts(ex.at_ms),
            client_id: ex.client_id.as_str(),
            tool_call_id: unset_if_none(ex.tool_call_id.as_deref()),
        }
    }
}

#[derive(SerializeRow)]
pub struct PendingAnswer<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub created_at: CqlTimestamp,
}

impl<'a> PendingAnswer<'a> {
    pub fn of(ex: &'a NewExchange) -> Self {
        PendingAnswer {
            conversation_id: ex.conversation_id.as_str(),
            message_id: ex.assistant_message_id.as_str(),
            created_at: ts(ex.at_ms),
        }
    }
}

/// The end of an answer, written as of its end (`written_us`): a delete of
/// its conversation after the end shadows it, and an answer closed as
/// interrupted (written as of its last checkpoint) is overwritten by the
/// real end if that arrives after all.
#[derive(SerializeRow)]
pub struct FinishAnswer<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub written_us: i64,
    pub content: &'a str,
    pub finish_reason: &'static str,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub reasoning_tokens: MaybeUnset<i64>,
    pub error_code: MaybeUnset<&'static str>,
    pub error_message: MaybeUnset<&'a str>,
    /// Unset (left as they are) where only the text and the end are known
    /// (an interrupted answer closed from its checkpoint).
    pub reasoning: MaybeUnset<&'a str>,
    pub tool_calls: MaybeUnset<String>,
    pub usage_estimated: MaybeUnset<bool>,
}

impl<'a> FinishAnswer<'a> {
    pub fn new(
        conversation_id: &'a ConversationId,
        message_id: &'a MessageId,
        content: &'a str,
        end: &'a AnswerEnd,
        written_us: i64,
    ) -> Self {
        FinishAnswer {
            conversation_id: conversation_id.as_str(),
            message_id: message_id.as_str(),
            written_us,
            content,
            finish_reason: end.finish_reason.as_str(),
            prompt_tokens: tokens_to_cql(end.usage.prompt_tokens),
            completion_tokens: tokens_to_cql(end.usage.completion_tokens),
            reasoning_tokens: unset_if_none(end.usage.reasoning_tokens.map(tokens_to_cql)),
            error_code: unset_if_none(end.error.as_ref().map(|e| e.code.as_str())),
            error_message: unset_if_none(end.error.as_ref().map(|e| e.message.as_str())),
            reasoning: MaybeUnset::Unset,
            tool_calls: MaybeUnset::Unset,
            usage_estimated: unset_if_none(end.usage.estimated.then_some(true)),
        }
    }

    pub fn of(answer: &'a FinishedAnswer) -> Self {
        FinishAnswer {
            reasoning: unset_if_none(
                (!answer.reasoning.is_empty()).then_some(answer.reasoning.as_str()),
            ),
            tool_calls: unset_if_none(crate::store::tool_calls_column(&answer.tool_calls)),
            ..FinishAnswer::new(
                &answer.conversation_id,
                &answer.message_id,
                &answer.content,
                &answer.end,
                write_time_us(answer.at_ms),
            )
        }
    }
}

/// A live answer's text so far, written as of the checkpoint's time: its
/// write time is how other instances tell a live answer from a dead one.
#[derive(SerializeRow)]
pub struct Checkpoint<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub written_us: i64,
    pub ttl: i32,
    pub checkpoint: &'a str,
}

#[derive(SerializeRow)]
pub struct OpenAnswer<'a> {
    pub bucket: i32,
    pub message_id: &'a str,
    pub conversation_id: &'a str,
}

impl<'a> OpenAnswer<'a> {
    pub fn of(ex: &'a NewExchange) -> Self {
        OpenAnswer {
            bucket: open_bucket(ex.assistant_message_id.as_str()),
            message_id: ex.assistant_message_id.as_str(),
            conversation_id: ex.conversation_id.as_str(),
        }
    }
}

#[derive(SerializeRow)]
pub struct OpenAnswerKey<'a> {
    pub bucket: i32,
    pub message_id: &'a str,
}

impl<'a> OpenAnswerKey<'a> {
    pub fn of(message_id: &'a str) -> Self {
        OpenAnswerKey {
            bucket: open_bucket(message_id),
            message_id,
        }
    }
}

#[derive(SerializeRow)]
pub struct Bucket {
    pub bucket: i32,
}

/// The claim of an idempotency key: the whole intent; `bot` and `title`
/// only for a new conversation.
#[derive(SerializeRow)]
pub struct ClaimKey<'a> {
    pub user_id: &'a str,
    pub client_id: &'a str,
    pub conversation_id: &'a str,
    pub user_message_id: &'a str,
    pub assistant_message_id: &'a str,
    pub stream_id: &'a str,
    pub created_at: CqlTimestamp,
    pub bot: MaybeUnset<&'a str>,
    pub title: MaybeUnset<&'a str>,
    pub user_text: &'a str,
    pub tool_call_id: MaybeUnset<&'a str>,
}

impl<'a> ClaimKey<'a> {
    pub fn of(ex: &'a NewExchange) -> Self {
        let new = ex.new_conversation.as_ref();
        ClaimKey {
            user_id: ex.user.as_str(),
            client_id: ex.client_id.as_str(),
            conversation_id: ex.conversation_id.as_str(),
            user_message_id: ex.user_message_id.as_str(),
            assistant_message_id: ex.assistant_message_id.as_str(),
            stream_id: ex.stream_id.as_str(),
            created_at: ts(ex.at_ms),
            bot: MaybeUnset::Set(&ex.bot),
            title: unset_if_none(new.map(|n| n.title.as_str())),
            user_text: &ex.text,
            tool_call_id: unset_if_none(ex.tool_call_id.as_deref()),
        }
    }
}

#[derive(SerializeRow)]
pub struct KeyOf<'a> {
    pub user_id: &'a str,
    pub client_id: &'a str,
}

/// A user's audit record, without its full address.
#[derive(SerializeRow)]
pub struct AuditInsert<'a> {
    pub user_id: &'a str,
    pub month: &'a str,
    pub audit_id: &'a str,
    pub at: CqlTimestamp,
    pub action: &'static str,
    pub address_anonymised: MaybeUnset<&'a str>,
    pub detail: &'a str,
    pub actor: MaybeUnset<&'a str>,
}

impl<'a> AuditInsert<'a> {
    pub fn of(user: &'a str, month: &'a str, r: &'a AuditRecord) -> Self {
        AuditInsert {
            user_id: user,
            month,
            audit_id: &r.id,
            at: ts(r.at_ms),
            action: r.action.as_str(),
            address_anonymised: unset_if_none(r.address_anonymised.as_deref()),
            detail: &r.detail,
            actor: unset_if_none(r.actor.as_ref().map(|a| a.as_str())),
        }
    }
}

/// The full address of a user's audit record, with its TTL.
#[derive(SerializeRow)]
pub struct AuditAddress<'a> {
    pub user_id: &'a str,
    pub month: &'a str,
    pub audit_id: &'a str,
    pub ttl: i32,
    pub address: &'a str,
}

#[derive(SerializeRow)]
pub struct UserMonth<'a> {
    pub user_id: &'a str,
    pub month: &'a str,
}

/// An audit record without a user (a failed authentication).
#[derive(SerializeRow)]
pub struct AnonymousAudit<'a> {
    pub hour: &'a str,
    pub audit_id: &'a str,
    pub at: CqlTimestamp,
    pub action: &'static str,
    pub address_anonymised: MaybeUnset<&'a str>,
    pub detail: &'a str,
}

impl<'a> AnonymousAudit<'a> {
    pub fn of(hour: &'a str, r: &'a AuditRecord) -> Self {
        AnonymousAudit {
            hour,
            audit_id: &r.id,
            at: ts(r.at_ms),
            action: r.action.as_str(),
            address_anonymised: unset_if_none(r.address_anonymised.as_deref()),
            detail: &r.detail,
        }
    }
}

#[derive(SerializeRow)]
pub struct AnonymousAddress<'a> {
    pub hour: &'a str,
    pub audit_id: &'a str,
    pub ttl: i32,
    pub address: &'a str,
}

// --- usage ----------------------------------------------------------------

/// An answer's row of usage (its bot), and its user in the month's index:
/// both written with the exchange.
#[derive(SerializeRow)]
pub struct UsageBegun<'a> {
    pub user_id: &'a str,
    pub month: String,
    pub message_id: &'a str,
    pub bot: &'a str,
}

impl<'a> UsageBegun<'a> {
    pub fn of(ex: &'a NewExchange) -> Self {
        UsageBegun {
            user_id: ex.user.as_str(),
            month: Month::of(ex.at_ms).to_string(),
            message_id: ex.assistant_message_id.as_str(),
            bot: &ex.bot,
        }
    }
}

#[derive(SerializeRow)]
pub struct UsageUser<'a> {
    pub month: String,
    pub bucket: i32,
    pub user_id: &'a str,
}

impl<'a> UsageUser<'a> {
    pub fn of(ex: &'a NewExchange) -> Self {
        UsageUser {
            month: Month::of(ex.at_ms).to_string(),
            bucket: usage_user_bucket(ex.user.as_str()),
            user_id: ex.user.as_str(),
        }
    }
}

/// An answer's tokens, once it ended (in the month it began).
#[derive(SerializeRow)]
pub struct UsageTokens<'a> {
    pub user_id: &'a str,
    pub month: String,
    pub message_id: &'a str,
    pub tokens: i64,
}

/// A month's users of one bucket, from `from` on.
#[derive(SerializeRow)]
pub struct UsageUsersFrom<'a> {
    pub month: &'a str,
    pub bucket: i32,
    pub from_user: &'a str,
    pub fetch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct UsageUserRow {
    pub user_id: String,
}

/// One answer's usage. `bot` is null for an answer that began before
/// migration 0004 and ended after it; `tokens` until it ends.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct UsageRow {
    pub bot: Option<String>,
    pub tokens: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(finish_reason: Option<&str>) -> MessageRow {
        MessageRow {
            message_id: "m".into(),
            role: Some("assistant".into()),
            content: Some("final".into()),
            checkpoint: Some("partial".into()),
            created_at: Some(ts(5)),
            finish_reason: finish_reason.map(str::to_owned),
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            reasoning_tokens: Some(2),
            error_code: Some("unavailable".into()),
            error_message: Some("interrupted".into()),
            client_id: None,
            reasoning: None,
            tool_calls: None,
            tool_call_id: None,
            usage_estimated: None,
            feedback_rating: None,
            feedback_comment: None,
            feedback_at: None,
        }
    }

    /// A live answer shows its checkpoint; a finished one what it finished
    /// with, whatever checkpoint landed late.
    #[test]
    fn live_answers_read_their_checkpoint_and_finished_ones_their_content() {
        let c = ConversationId::from("c");
        let live = message(None).into_message(&c).unwrap();
        assert_eq!(live.content, "partial");
        assert_eq!(live.finish_reason, None);
        let done = message(Some("stop")).into_message(&c).unwrap();
        assert_eq!(done.content, "final");
        assert_eq!(done.finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            done.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                reasoning_tokens: Some(2),
                estimated: false,
            })
        );
        let pending = MessageRow {
            content: None,
            checkpoint: None,
            ..message(None)
        };
        assert_eq!(pending.into_message(&c).unwrap().content, "");
        let trace = MessageRow {
            role: None,
            ..message(Some("stop"))
        };
        assert_eq!(trace.into_message(&c), None, "a trace of a late update");
    }

    /// The error of an end is the one of `finish_reason: error` only: a
    /// close's error cells under a later real end do not apply.
    #[test]
    fn an_end_carries_its_error_only_when_it_is_an_error() {
        let end = message(Some("error")).end().unwrap();
        assert_eq!(end.finish_reason, FinishReason::Error);
        assert_eq!(
            end.error,
            Some(ErrorBody {
                code: ErrorCode::Unavailable,
                message: "interrupted".into()
            })
        );
        assert_eq!(message(Some("stop")).end().unwrap().error, None);
        assert_eq!(message(None).end(), None);
        assert_eq!(message(Some("teleported")).end(), None);
        let unknown_code = MessageRow {
            error_code: Some("new_code".into()),
            ..message(Some("error"))
        };
        assert_eq!(
            unknown_code.end().unwrap().error.unwrap().code,
            ErrorCode::Internal
        );
    }

    #[test]
    fn an_answer_was_last_written_at_its_last_checkpoint() {
        let state = |created: Option<i64>, checkpoint_us: Option<i64>| AnswerStateRow {
            role: Some("assistant".into()),
            created_at: created.map(ts),
            finish_reason: None,
            checkpoint: None,
            checkpoint_us,
        };
        assert_eq!(state(Some(1_000), None).last_written_us(), Some(1_000_000));
        assert_eq!(
            state(Some(1_000), Some(5_000_999)).last_written_us(),
            Some(5_000_999)
        );
        // The checkpoint's own time counts, whatever the creation's.
        assert_eq!(state(Some(1_000), Some(10)).last_written_us(), Some(10));
        assert_eq!(state(None, Some(10)).last_written_us(), None);
        assert!(!state(None, None).exists());
    }

    #[test]
    fn a_key_row_reads_back_as_its_exchange_and_a_partial_one_does_not() {
        let user = UserId::from("u");
        let row = KeyRow {
            client_id: "c-1".into(),
            conversation_id: Some("c".into()),
            user_message_id: Some("m1".into()),
            assistant_message_id: Some("m2".into()),
            stream_id: Some("s".into()),
            created_at: Some(ts(7)),
            bot: Some("default".into()),
            title: Some("Bonjour".into()),
            user_text: Some("Bonjour !".into()),
            tool_call_id: None,
        };
        let intent = row.clone().into_intent(&user).unwrap();
        assert_eq!(intent.client_id, "c-1");
        assert_eq!(intent.at_ms, 7);
        assert_eq!(intent.new_conversation.unwrap().title, "Bonjour");
        assert_eq!(intent.bot, "default");
        let existing = KeyRow {
            title: None,
            ..row.clone()
        };
        assert!(existing
            .into_intent(&user)
            .unwrap()
            .new_conversation
            .is_none());
        let partial = KeyRow {
            stream_id: None,
            ..row
        };
        assert!(partial.into_intent(&user).is_none());
    }

    #[test]
    fn every_audit_action_reads_back_and_an_unknown_one_does_not() {
        let user = UserId::from("u");
        for action in <AuditAction as strum::VariantArray>::VARIANTS {
            let row = AuditRow {
                audit_id: "a".into(),
                at: Some(ts(1)),
                action: Some(action.as_str().into()),
                address: None,
                address_anonymised: None,
                detail: None,
                actor: None,
            };
            assert_eq!(row.into_record(&user).unwrap().action, *action);
        }
        let unknown = AuditRow {
            audit_id: "a".into(),
            at: Some(ts(1)),
            action: Some("teleported".into()),
            address: None,
            address_anonymised: None,
            detail: None,
            actor: None,
        };
        assert_eq!(unknown.into_record(&user), None);
    }

    #[test]
    fn token_counts_never_wrap() {
        assert_eq!(tokens_to_cql(0), 0);
        assert_eq!(tokens_to_cql(42), 42);
        assert_eq!(tokens_to_cql(u64::MAX), i64::MAX);
        assert_eq!(tokens_from_cql(42), 42);
        assert_eq!(tokens_from_cql(-1), 0);
    }

    #[test]
    fn audit_partitions_are_utc_months_and_hours() {
        assert_eq!(audit_month(0), "1970-01");
        assert_eq!(audit_hour(0), "1970-01-01T00");
        // 2025-11-24 16:00:00 UTC.
        let t = 1_764_000_000_000;
        assert_eq!(audit_hour(t), "2025-11-24T16");
        assert_eq!(audit_hour(t - 1), "2025-11-24T15");
        let new_year_2025 = 1_735_689_600_000;
        assert_eq!(audit_hour(new_year_2025 - 1), "2024-12-31T23");
        assert_eq!(audit_month(new_year_2025 - 1), "2024-12");
        assert_eq!(audit_hour(new_year_2025), "2025-01-01T00");
        assert_eq!(audit_hour(951_782_400_000), "2000-02-29T00");
        for t in (0..400).map(|d| d * 86_400_000 + 1_700_000_000_000i64) {
            assert!(audit_hour(t).starts_with(&audit_month(t)), "{t}");
        }
    }

    #[test]
    fn addresses_live_their_ttl_from_the_record() {
        let day = 86_400_000;
        let now = 1_764_000_000_000;
        let thirty = 30 * 86_400;
        assert_eq!(address_ttl_secs(now, now, thirty), Some(2_592_000));
        assert_eq!(
            address_ttl_secs(now - day, now, thirty),
            Some(2_592_000 - 86_400)
        );
        assert_eq!(address_ttl_secs(now - 1, now, thirty), Some(2_592_000));
        assert_eq!(address_ttl_secs(now - 30 * day + 1, now, thirty), Some(1));
        assert_eq!(address_ttl_secs(now - 30 * day, now, thirty), None);
        assert_eq!(address_ttl_secs(now - 31 * day, now, thirty), None);
        // A record from a clock ahead of ours still gets at most its TTL.
        assert_eq!(address_ttl_secs(now + day, now, thirty), Some(2_592_000));
        assert_eq!(address_ttl_secs(i64::MIN, now, thirty), None);
        assert_eq!(address_ttl_secs(now - 1_500, now, 3), Some(2));
        assert_eq!(address_ttl_secs(now, now, 0), None);
        assert_eq!(address_ttl_secs(now, now, u32::MAX), Some(i32::MAX));
    }

    #[test]
    fn pages_fetch_one_more_row_and_point_at_their_last() {
        assert_eq!(page_size(0), 1);
        assert_eq!(page_size(20), 20);
        assert_eq!(page_size(usize::MAX), MAX_PAGE);
        assert_eq!(fetch_limit(20), 21);
        let ids = |n: usize| (0..n).map(|i| format!("id-{i}")).collect::<Vec<_>>();
        let (page, next) = split_page(ids(3), 2, |s| s.as_str());
        assert_eq!(page, ["id-0", "id-1"]);
        assert_eq!(next.as_deref(), Some("id-1"));
        let (page, next) = split_page(ids(2), 2, |s| s.as_str());
        assert_eq!(page.len(), 2);
        assert_eq!(next, None);
        let (page, next) = split_page(ids(0), 2, |s| s.as_str());
        assert!(page.is_empty());
        assert_eq!(next, None);
    }

    /// Open answers spread over every bucket, and an id always lands in
    /// the same one (the bucket is part of the key a finish deletes).
    #[test]
    fn open_answers_spread_over_stable_buckets() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let id = MessageId::generate();
            let bucket = open_bucket(id.as_str());
            assert!((0..OPEN_ANSWER_BUCKETS).contains(&bucket));
            assert_eq!(open_bucket(id.as_str()), bucket);
            seen.insert(bucket);
        }
        assert_eq!(seen.len(), OPEN_ANSWER_BUCKETS as usize);
        // Pinned: a change would strand the open answers of a running
        // cluster in buckets nobody deletes from.
        assert_eq!(open_bucket("0190b7c2-7a1e-7000-8000-000000000003"), 13);
    }

    /// Text ids order as their bytes: lowercase hyphenated UUIDv7 strings
    /// sort in creation order, which is what the clustering order relies on.
    #[test]
    fn uuidv7_strings_sort_in_time_order() {
        let ids: Vec<String> = (0..2000)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        let mut by_bytes = ids.clone();
        by_bytes.sort_by_key(|s| *uuid::Uuid::parse_str(s).unwrap().as_bytes());
        assert_eq!(by_bytes, ids);
        assert!(ids.iter().all(|s| s == &s.to_lowercase()));
        assert!(
            ids.iter().all(|s| s.as_str() > ""),
            "`after = \"\"` is the first page"
        );
    }
}

/// A row of `bots`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct BotRow {
    pub name: String,
    pub settings: Option<String>,
    pub updated_at: Option<CqlTimestamp>,
    pub updated_by: Option<String>,
}

impl BotRow {
    pub fn into_stored(self) -> Option<StoredBot> {
        crate::store::stored_bot(
            self.name,
            self.settings.as_deref(),
            ms(self.updated_at).unwrap_or_default(),
            self.updated_by.unwrap_or_default(),
        )
    }
}

/// A bot stored, replaced or deleted.
#[derive(SerializeRow)]
pub struct BotUpsert<'a> {
    pub name: &'a str,
    pub settings: Option<String>,
    pub updated_at: CqlTimestamp,
    pub updated_by: &'a str,
}

impl<'a> BotUpsert<'a> {
    pub fn of(bot: &'a StoredBot) -> Self {
        BotUpsert {
            name: &bot.name,
            settings: crate::store::bot_settings_column(bot),
            updated_at: ts(bot.updated_at_ms),
            updated_by: bot.updated_by.as_str(),
        }
    }
}

/// Feedback from its columns; a rating that does not read is none.
fn feedback_of(
    rating: Option<i32>,
    comment: Option<String>,
    at: Option<CqlTimestamp>,
) -> Option<Feedback> {
    let rating = Rating::try_from(i8::try_from(rating?).ok()?).ok()?;
    Some(Feedback {
        rating,
        comment,
        at_ms: ms(at).unwrap_or_default(),
    })
}

/// Whose an answer is (`answers_by_id`), written with its exchange.
#[derive(SerializeRow)]
pub struct AnswerOwner<'a> {
    pub message_id: &'a str,
    pub user_id: &'a str,
    pub conversation_id: &'a str,
}

impl<'a> AnswerOwner<'a> {
    pub fn of(ex: &'a NewExchange) -> Self {
        AnswerOwner {
            message_id: ex.assistant_message_id.as_str(),
            user_id: ex.user.as_str(),
            conversation_id: ex.conversation_id.as_str(),
        }
    }
}

/// A row of `answers_by_id`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct AnswerOwnerRow {
    pub user_id: Option<String>,
    pub conversation_id: Option<String>,
}

/// An answer's key in `answers_by_id`.
#[derive(SerializeRow)]
pub struct AnswerKey<'a> {
    pub message_id: &'a str,
}

/// The feedback columns of an answer (all null: none).
#[derive(SerializeRow)]
pub struct MessageFeedback<'a> {
    pub conversation_id: &'a str,
    pub message_id: &'a str,
    pub rating: Option<i32>,
    pub comment: Option<&'a str>,
    pub at: Option<CqlTimestamp>,
}

impl<'a> MessageFeedback<'a> {
    pub fn of(conversation_id: &'a str, message_id: &'a str, f: Option<&'a Feedback>) -> Self {
        MessageFeedback {
            conversation_id,
            message_id,
            rating: f.map(|f| i32::from(f.rating.as_i8())),
            comment: f.and_then(|f| f.comment.as_deref()),
            at: f.map(|f| ts(f.at_ms)),
        }
    }
}

/// A row of `feedback_by_month`, written and read.
#[derive(Debug, Clone, PartialEq, Eq, SerializeRow, DeserializeRow)]
pub struct FeedbackRow {
    pub message_id: String,
    pub conversation_id: Option<String>,
    pub bot: Option<String>,
    pub rating: Option<i32>,
    pub comment: Option<String>,
    pub at: Option<CqlTimestamp>,
}

impl FeedbackRow {
    pub fn into_record(self) -> Option<FeedbackRecord> {
        Some(FeedbackRecord {
            feedback: feedback_of(self.rating, self.comment, self.at)?,
            message_id: self.message_id.into(),
            conversation_id: self.conversation_id?.into(),
            bot: self.bot.unwrap_or_default(),
        })
    }
}

/// A feedback row with its partition, to insert.
#[derive(SerializeRow)]
pub struct FeedbackInsert<'a> {
    pub month: &'a str,
    pub message_id: &'a str,
    pub conversation_id: &'a str,
    pub bot: &'a str,
    pub rating: i32,
    pub comment: Option<&'a str>,
    pub at: CqlTimestamp,
}

#[derive(SerializeRow)]
pub struct FeedbackKey<'a> {
    pub month: &'a str,
    pub message_id: &'a str,
}

#[derive(SerializeRow)]
pub struct MonthKey<'a> {
    pub month: &'a str,
}

#[derive(SerializeRow)]
pub struct FeedbackBefore<'a> {
    pub month: &'a str,
    pub before: &'a str,
    pub fetch: i32,
}

/// The UTC month of an answer, from its creation time: the partition of
/// its feedback.
pub fn answer_month(created_at: Option<CqlTimestamp>) -> String {
    Month::of(ms(created_at).unwrap_or_default()).to_string()
}

/// The partition of the operators' audit log: the UTC day, `YYYY-MM-DD`.
pub fn audit_day(at_ms: i64) -> String {
    let mut stamp = rfc3339(at_ms);
    stamp.truncate(10);
    stamp
}

/// An audit record in the operators' log, without its full address.
#[derive(SerializeRow)]
pub struct AuditDayInsert<'a> {
    pub day: &'a str,
    pub audit_id: &'a str,
    pub user_id: MaybeUnset<&'a str>,
    pub at: CqlTimestamp,
    pub action: &'static str,
    pub address_anonymised: MaybeUnset<&'a str>,
    pub detail: &'a str,
    pub actor: MaybeUnset<&'a str>,
}

impl<'a> AuditDayInsert<'a> {
    pub fn of(day: &'a str, r: &'a AuditRecord) -> Self {
        AuditDayInsert {
            day,
            audit_id: &r.id,
            user_id: unset_if_none(r.user.as_ref().map(|u| u.as_str())),
            at: ts(r.at_ms),
            action: r.action.as_str(),
            address_anonymised: unset_if_none(r.address_anonymised.as_deref()),
            detail: &r.detail,
            actor: unset_if_none(r.actor.as_ref().map(|a| a.as_str())),
        }
    }
}

/// The full address of a record in the operators' log, with its TTL.
#[derive(SerializeRow)]
pub struct AuditDayAddress<'a> {
    pub day: &'a str,
    pub audit_id: &'a str,
    pub ttl: i32,
    pub address: &'a str,
}

#[derive(SerializeRow)]
pub struct DayKey<'a> {
    pub day: &'a str,
}

#[derive(SerializeRow)]
pub struct AuditDayKey<'a> {
    pub day: &'a str,
    pub audit_id: &'a str,
}

/// A row of `audit_days`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct DayRow {
    pub day: String,
}

/// A row of `audit_by_day`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct AuditDayRow {
    pub audit_id: String,
    pub user_id: Option<String>,
    pub at: Option<CqlTimestamp>,
    pub action: Option<String>,
    pub address: Option<String>,
    pub address_anonymised: Option<String>,
    pub detail: Option<String>,
    pub actor: Option<String>,
}

impl AuditDayRow {
    pub fn into_record(self) -> Option<AuditRecord> {
        Some(AuditRecord {
            id: self.audit_id,
            at_ms: ms(self.at)?,
            user: self.user_id.map(UserId::from),
            action: self.action.as_deref()?.parse::<AuditAction>().ok()?,
            address: self.address,
            address_anonymised: self.address_anonymised,
            detail: self.detail.unwrap_or_default(),
            actor: self.actor.map(UserId::from),
        })
    }
}

/// A user's month of audit records, newest first, older than `before`
/// when set.
#[derive(SerializeRow)]
pub struct AuditOlder<'a> {
    pub user_id: &'a str,
    pub month: &'a str,
    pub before: &'a str,
    pub fetch: i32,
}

/// A day of the operators' log, older than `before`.
#[derive(SerializeRow)]
pub struct AuditDayBefore<'a> {
    pub day: &'a str,
    pub before: &'a str,
    pub fetch: i32,
}
