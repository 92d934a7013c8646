//! Row mappings both ways: the rows the statements select, as structs the
//! driver deserializes by column name, turned into the port's types; and the
//! bind values of each statement, built from the port's types. Everything
//! here is pure, so it is tested without a database (the tests also run the
//! driver's own serialization and deserialization against the column types
//! of `migrations/`).

use ::scylla::value::{CqlTimestamp, MaybeUnset};
use ::scylla::DeserializeRow;
use skald_actors::ports::store::{
    AuditAction, AuditRecord, Conversation, Exchange, FinishedAnswer, MessageRole, NewConversation,
    NewExchange, StoredMessage, MAX_PAGE,
};
use skald_protocol::{FinishReason, Usage};

/// How long a full client address is kept: 30 days, then only its
/// anonymised form remains (the seed's rule).
pub const ADDRESS_TTL_SECS: i32 = 30 * 24 * 3600;

// --- values ---------------------------------------------------------------

pub fn ts(ms: i64) -> CqlTimestamp {
    CqlTimestamp(ms)
}

fn ms(ts: Option<CqlTimestamp>) -> Option<i64> {
    ts.map(|t| t.0)
}

/// Token counts are `bigint`: a `u64` beyond `i64::MAX` (never seen) is
/// stored as `i64::MAX` rather than wrapping.
pub fn tokens_to_cql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn tokens_from_cql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub fn finish_reason_from_cql(s: &str) -> Option<FinishReason> {
    [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Cancelled,
        FinishReason::Error,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

fn role_from_cql(s: &str) -> Option<MessageRole> {
    [MessageRole::User, MessageRole::Assistant]
        .into_iter()
        .find(|r| r.as_str() == s)
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
    skald_actors::time::month_of(at_ms)
}

/// The partition of audit records without a user: the UTC hour,
/// `YYYY-MM-DDTHH`.
pub fn audit_hour(at_ms: i64) -> String {
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` cut after the hour.
    let mut stamp = skald_actors::time::rfc3339(at_ms);
    stamp.truncate(13);
    stamp
}

/// The TTL to write a full address with, so that it disappears 30 days
/// after the record's time (not after the write: a record written late,
/// from the spool, still loses its address on time). `None`: the 30 days
/// are over, the address is not written at all.
pub fn address_ttl_secs(at_ms: i64, now_ms: i64) -> Option<i32> {
    let age_ms = now_ms.saturating_sub(at_ms).max(0);
    let left_ms = i64::from(ADDRESS_TTL_SECS) * 1000 - age_ms;
    if left_ms <= 0 {
        return None;
    }
    // Round up: an address never expires before its 30 days.
    let secs = (left_ms + 999) / 1000;
    Some(secs.min(i64::from(ADDRESS_TTL_SECS)) as i32)
}

// --- pages ----------------------------------------------------------------

/// The page size actually served: at least 1, at most [`MAX_PAGE`].
pub fn page_size(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// The `LIMIT` bound for a page: one row more than the page, to learn
/// whether there is a next page without a second query.
pub fn fetch_limit(page: usize) -> i32 {
    (page + 1) as i32
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

/// A row of `conversations_by_user` (columns of `conversation_columns!`).
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct ConversationRow {
    pub conversation_id: String,
    pub bot: Option<String>,
    pub title: Option<String>,
    pub created_at: Option<CqlTimestamp>,
    pub updated_at: Option<CqlTimestamp>,
}

impl ConversationRow {
    pub const COLUMNS: &'static [&'static str] = &[
        "conversation_id",
        "bot",
        "title",
        "created_at",
        "updated_at",
    ];

    /// A conversation exists once its creation was written; a row with
    /// only `updated_at` is what an update leaves when it lands after a
    /// delete: reads skip it (erase still removes it).
    pub fn is_live(&self) -> bool {
        self.created_at.is_some()
    }

    pub fn into_conversation(self, user: &str) -> Option<Conversation> {
        let created_at_ms = ms(self.created_at)?;
        Some(Conversation {
            id: self.conversation_id,
            user: user.to_owned(),
            bot: self.bot.unwrap_or_default(),
            title: self.title.unwrap_or_default(),
            created_at_ms,
            updated_at_ms: ms(self.updated_at).unwrap_or(created_at_ms),
        })
    }
}

/// A row of `messages_by_conversation` (columns of `message_columns!`).
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct MessageRow {
    pub message_id: String,
    pub role: Option<String>,
    pub content: Option<String>,
    pub created_at: Option<CqlTimestamp>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub client_id: Option<String>,
}

impl MessageRow {
    pub const COLUMNS: &'static [&'static str] = &[
        "message_id",
        "role",
        "content",
        "created_at",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "client_id",
    ];

    /// `None` for a row that was never inserted (cells an answer's update
    /// left after its conversation was deleted).
    pub fn into_message(self, conversation_id: &str) -> Option<StoredMessage> {
        let role = role_from_cql(self.role.as_deref()?)?;
        let created_at_ms = ms(self.created_at)?;
        let usage = match (self.prompt_tokens, self.completion_tokens) {
            (Some(p), Some(c)) => Some(Usage {
                prompt_tokens: tokens_from_cql(p),
                completion_tokens: tokens_from_cql(c),
            }),
            _ => None,
        };
        Some(StoredMessage {
            id: self.message_id,
            conversation_id: conversation_id.to_owned(),
            role,
            content: self.content.unwrap_or_default(),
            created_at_ms,
            finish_reason: self
                .finish_reason
                .as_deref()
                .and_then(finish_reason_from_cql),
            usage,
        })
    }
}

/// A row of `idempotency_keys` (columns of `key_columns!`): the intent of
/// one exchange.
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
}

impl KeyRow {
    pub const COLUMNS: &'static [&'static str] = &[
        "client_id",
        "conversation_id",
        "user_message_id",
        "assistant_message_id",
        "stream_id",
        "created_at",
        "bot",
        "title",
        "user_text",
    ];

    /// The exchange this key claimed, as `begin_exchange` received it.
    /// `None` when a column every claim writes is missing (a row this code
    /// did not write).
    pub fn into_intent(self, user: &str) -> Option<NewExchange> {
        Some(NewExchange {
            user: user.to_owned(),
            client_id: self.client_id,
            conversation_id: self.conversation_id?,
            new_conversation: self.bot.map(|bot| NewConversation {
                bot,
                title: self.title.unwrap_or_default(),
            }),
            user_message_id: self.user_message_id?,
            text: self.user_text.unwrap_or_default(),
            assistant_message_id: self.assistant_message_id?,
            stream_id: self.stream_id?,
            at_ms: ms(self.created_at)?,
        })
    }
}

/// What a key points at, with the answer's state from its message.
pub fn exchange_of(intent: &NewExchange, answer: Option<&StoredMessage>) -> Exchange {
    Exchange {
        conversation_id: intent.conversation_id.clone(),
        user_message_id: intent.user_message_id.clone(),
        assistant_message_id: intent.assistant_message_id.clone(),
        stream_id: intent.stream_id.clone(),
        finished: answer.and_then(|m| {
            m.finish_reason
                .map(|reason| (reason, m.usage.unwrap_or_default()))
        }),
    }
}

/// A row of `audit_by_user` (columns of `audit_columns!`).
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct AuditRow {
    pub audit_id: String,
    pub at: Option<CqlTimestamp>,
    pub action: Option<String>,
    pub address: Option<String>,
    pub address_anonymised: Option<String>,
    pub detail: Option<String>,
}

impl AuditRow {
    pub const COLUMNS: &'static [&'static str] = &[
        "audit_id",
        "at",
        "action",
        "address",
        "address_anonymised",
        "detail",
    ];

    pub fn into_record(self, user: &str) -> Option<AuditRecord> {
        Some(AuditRecord {
            id: self.audit_id,
            at_ms: ms(self.at)?,
            user: Some(user.to_owned()),
            action: AuditAction::parse(self.action.as_deref()?)?,
            address: self.address,
            address_anonymised: self.address_anonymised,
            detail: self.detail.unwrap_or_default(),
        })
    }
}

/// A row of `audit_months_by_user`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct MonthRow {
    pub month: String,
}

impl MonthRow {
    pub const COLUMNS: &'static [&'static str] = &["month"];
}

// --- bind values ----------------------------------------------------------
//
// One function per statement that takes values, in the order of its bind
// markers; the tests serialize each against the statement's marker types.

/// `SELECT_CONVERSATION`, `DELETE_CONVERSATION`.
pub fn conversation_key<'a>(user: &'a str, conversation_id: &'a str) -> (&'a str, &'a str) {
    (user, conversation_id)
}

/// `SELECT_CONVERSATIONS_FIRST`.
pub fn conversations_first(user: &str, page: usize) -> (&str, i32) {
    (user, fetch_limit(page))
}

/// `SELECT_CONVERSATIONS_BEFORE`.
pub fn conversations_before<'a>(
    user: &'a str,
    before: &'a str,
    page: usize,
) -> (&'a str, &'a str, i32) {
    (user, before, fetch_limit(page))
}

/// `INSERT_CONVERSATION`.
pub fn insert_conversation<'a>(
    ex: &'a NewExchange,
    new: &'a NewConversation,
) -> (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    CqlTimestamp,
    CqlTimestamp,
) {
    (
        &ex.user,
        &ex.conversation_id,
        &new.bot,
        &new.title,
        ts(ex.at_ms),
        ts(ex.at_ms),
    )
}

/// `TOUCH_CONVERSATION`.
pub fn touch_conversation<'a>(
    at_ms: i64,
    user: &'a str,
    conversation_id: &'a str,
) -> (CqlTimestamp, &'a str, &'a str) {
    (ts(at_ms), user, conversation_id)
}

/// `SELECT_MESSAGES_BY_ID`.
pub fn messages_by_id<'a>(conversation_id: &'a str, ids: &[&'a str]) -> (&'a str, Vec<&'a str>) {
    (conversation_id, ids.to_vec())
}

/// `SELECT_MESSAGES_FIRST`, `SELECT_MESSAGES_LAST` (with `limit` rows).
pub fn messages_limit(conversation_id: &str, limit: i32) -> (&str, i32) {
    (conversation_id, limit)
}

/// `SELECT_MESSAGES_AFTER`.
pub fn messages_after<'a>(
    conversation_id: &'a str,
    after: &'a str,
    page: usize,
) -> (&'a str, &'a str, i32) {
    (conversation_id, after, fetch_limit(page))
}

/// `INSERT_USER_MESSAGE`.
pub fn insert_user_message(ex: &NewExchange) -> (&str, &str, &str, CqlTimestamp, &str) {
    (
        &ex.conversation_id,
        &ex.user_message_id,
        &ex.text,
        ts(ex.at_ms),
        &ex.client_id,
    )
}

/// `INSERT_PENDING_ANSWER`.
pub fn insert_pending_answer(ex: &NewExchange) -> (&str, &str, CqlTimestamp) {
    (&ex.conversation_id, &ex.assistant_message_id, ts(ex.at_ms))
}

/// `FINISH_ANSWER`.
pub fn finish_answer(a: &FinishedAnswer) -> (&str, &'static str, i64, i64, &str, &str) {
    (
        &a.content,
        a.finish_reason.as_str(),
        tokens_to_cql(a.usage.prompt_tokens),
        tokens_to_cql(a.usage.completion_tokens),
        &a.conversation_id,
        &a.message_id,
    )
}

type ClaimValues<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    CqlTimestamp,
    MaybeUnset<&'a str>,
    MaybeUnset<&'a str>,
    &'a str,
);

/// `CLAIM_KEY`: the whole intent; `bot` and `title` only for a new
/// conversation.
pub fn claim_key(ex: &NewExchange) -> ClaimValues<'_> {
    let new = ex.new_conversation.as_ref();
    (
        &ex.user,
        &ex.client_id,
        &ex.conversation_id,
        &ex.user_message_id,
        &ex.assistant_message_id,
        &ex.stream_id,
        ts(ex.at_ms),
        unset_if_none(new.map(|n| n.bot.as_str())),
        unset_if_none(new.map(|n| n.title.as_str())),
        &ex.text,
    )
}

/// `SELECT_KEY`, `DELETE_KEY`.
pub fn key<'a>(user: &'a str, client_id: &'a str) -> (&'a str, &'a str) {
    (user, client_id)
}

type AuditValues<'a> = (
    &'a str,
    &'a str,
    &'a str,
    CqlTimestamp,
    &'static str,
    MaybeUnset<&'a str>,
    &'a str,
);

/// `INSERT_AUDIT`.
pub fn insert_audit<'a>(user: &'a str, month: &'a str, r: &'a AuditRecord) -> AuditValues<'a> {
    (
        user,
        month,
        &r.id,
        ts(r.at_ms),
        r.action.as_str(),
        unset_if_none(r.address_anonymised.as_deref()),
        &r.detail,
    )
}

/// `SET_AUDIT_ADDRESS`.
pub fn set_audit_address<'a>(
    ttl: i32,
    address: &'a str,
    user: &'a str,
    month: &'a str,
    id: &'a str,
) -> (i32, &'a str, &'a str, &'a str, &'a str) {
    (ttl, address, user, month, id)
}

/// `INSERT_AUDIT_MONTH`, `SELECT_AUDIT`, `DELETE_AUDIT_MONTH`.
pub fn user_month<'a>(user: &'a str, month: &'a str) -> (&'a str, &'a str) {
    (user, month)
}

type AnonymousAuditValues<'a> = (
    &'a str,
    &'a str,
    CqlTimestamp,
    &'static str,
    MaybeUnset<&'a str>,
    &'a str,
);

/// `INSERT_ANONYMOUS_AUDIT`.
pub fn insert_anonymous_audit<'a>(hour: &'a str, r: &'a AuditRecord) -> AnonymousAuditValues<'a> {
    (
        hour,
        &r.id,
        ts(r.at_ms),
        r.action.as_str(),
        unset_if_none(r.address_anonymised.as_deref()),
        &r.detail,
    )
}

/// `SET_ANONYMOUS_AUDIT_ADDRESS`.
pub fn set_anonymous_audit_address<'a>(
    ttl: i32,
    address: &'a str,
    hour: &'a str,
    id: &'a str,
) -> (i32, &'a str, &'a str, &'a str) {
    (ttl, address, hour, id)
}

#[cfg(test)]
mod tests {
    use super::super::schema_check::CellRow;
    use super::super::statements::*;
    use super::*;

    const USER: &str = "u-1";

    fn exchange(new: bool) -> NewExchange {
        NewExchange {
            user: USER.into(),
            client_id: "c-1".into(),
            conversation_id: "0190b7c2-7a1e-7000-8000-000000000001".into(),
            new_conversation: new.then(|| NewConversation {
                bot: "default".into(),
                title: "Bonjour".into(),
            }),
            user_message_id: "0190b7c2-7a1e-7000-8000-000000000002".into(),
            text: "Bonjour, ça va ? 'quoted' ; -- not a comment".into(),
            assistant_message_id: "0190b7c2-7a1e-7000-8000-000000000003".into(),
            stream_id: "0190b7c2-7a1e-7000-8000-000000000004".into(),
            at_ms: 1_764_000_000_123,
        }
    }

    fn answer(reason: FinishReason) -> FinishedAnswer {
        FinishedAnswer {
            user: USER.into(),
            conversation_id: "0190b7c2-7a1e-7000-8000-000000000001".into(),
            message_id: "0190b7c2-7a1e-7000-8000-000000000003".into(),
            content: "Très bien, merci.\n```rust\nfn main() {}\n```".into(),
            finish_reason: reason,
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
            },
            at_ms: 1_764_000_005_000,
        }
    }

    #[test]
    fn a_new_conversation_is_written_and_read_back() {
        let ex = exchange(true);
        let mut row = CellRow::default();
        row.apply(
            INSERT_CONVERSATION,
            &insert_conversation(&ex, ex.new_conversation.as_ref().unwrap()),
        );
        let read: ConversationRow = row.select(SELECT_CONVERSATION);
        assert!(read.is_live());
        let expected = Conversation {
            id: ex.conversation_id.clone(),
            user: USER.into(),
            bot: "default".into(),
            title: "Bonjour".into(),
            created_at_ms: ex.at_ms,
            updated_at_ms: ex.at_ms,
        };
        assert_eq!(read.clone().into_conversation(USER), Some(expected.clone()));

        row.apply(
            TOUCH_CONVERSATION,
            &touch_conversation(ex.at_ms + 5, USER, &ex.conversation_id),
        );
        let touched: ConversationRow = row.select(SELECT_ALL_CONVERSATIONS);
        assert_eq!(
            touched.into_conversation(USER),
            Some(Conversation {
                updated_at_ms: ex.at_ms + 5,
                ..expected
            })
        );
    }

    /// An update that lands after a delete leaves a row with `updated_at`
    /// only: not a conversation.
    #[test]
    fn a_touched_but_never_created_conversation_is_skipped() {
        let mut row = CellRow::default();
        row.apply(TOUCH_CONVERSATION, &touch_conversation(5, USER, "c"));
        let read: ConversationRow = row.select(SELECT_CONVERSATION);
        assert!(!read.is_live());
        assert_eq!(read.conversation_id, "c");
        assert_eq!(read.into_conversation(USER), None);
    }

    #[test]
    fn an_exchange_then_its_answer_are_written_and_read_back() {
        let ex = exchange(false);
        let mut user_row = CellRow::default();
        user_row.apply(INSERT_USER_MESSAGE, &insert_user_message(&ex));
        let user_msg: MessageRow = user_row.select(SELECT_MESSAGES_BY_ID);
        assert_eq!(user_msg.client_id.as_deref(), Some("c-1"));
        assert_eq!(
            user_msg.into_message(&ex.conversation_id),
            Some(StoredMessage {
                id: ex.user_message_id.clone(),
                conversation_id: ex.conversation_id.clone(),
                role: MessageRole::User,
                content: ex.text.clone(),
                created_at_ms: ex.at_ms,
                finish_reason: None,
                usage: None,
            })
        );

        let mut answer_row = CellRow::default();
        answer_row.apply(INSERT_PENDING_ANSWER, &insert_pending_answer(&ex));
        let pending = answer_row
            .select::<MessageRow>(SELECT_MESSAGES_LAST)
            .into_message(&ex.conversation_id)
            .unwrap();
        assert_eq!(pending.role, MessageRole::Assistant);
        assert_eq!(pending.content, "");
        assert_eq!(pending.finish_reason, None);
        assert_eq!(exchange_of(&ex, Some(&pending)).finished, None);

        for reason in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Cancelled,
            FinishReason::Error,
        ] {
            let a = answer(reason);
            answer_row.apply(FINISH_ANSWER, &finish_answer(&a));
            // Writing the exchange again (completing it) keeps the answer.
            answer_row.apply(INSERT_PENDING_ANSWER, &insert_pending_answer(&ex));
            let finished = answer_row
                .select::<MessageRow>(SELECT_ALL_MESSAGES)
                .into_message(&ex.conversation_id)
                .unwrap();
            assert_eq!(
                finished,
                StoredMessage {
                    id: ex.assistant_message_id.clone(),
                    conversation_id: ex.conversation_id.clone(),
                    role: MessageRole::Assistant,
                    content: a.content.clone(),
                    created_at_ms: ex.at_ms,
                    finish_reason: Some(reason),
                    usage: Some(a.usage),
                }
            );
            assert_eq!(
                exchange_of(&ex, Some(&finished)),
                Exchange {
                    conversation_id: ex.conversation_id.clone(),
                    user_message_id: ex.user_message_id.clone(),
                    assistant_message_id: ex.assistant_message_id.clone(),
                    stream_id: ex.stream_id.clone(),
                    finished: Some((reason, a.usage)),
                }
            );
        }
    }

    /// An answer's update that lands after its conversation was deleted
    /// leaves cells without a role: not a message.
    #[test]
    fn an_answer_without_its_insert_is_skipped() {
        let mut row = CellRow::default();
        row.apply(FINISH_ANSWER, &finish_answer(&answer(FinishReason::Stop)));
        let read: MessageRow = row.select(SELECT_MESSAGES_FIRST);
        assert_eq!(read.role, None);
        assert_eq!(read.into_message("c"), None);
    }

    /// The claim's row is the whole exchange: read back, it is what
    /// `begin_exchange` was given (this is what completing an interrupted
    /// exchange writes).
    #[test]
    fn a_claimed_key_reads_back_as_its_exchange() {
        for new in [true, false] {
            let ex = exchange(new);
            let mut row = CellRow::default();
            row.apply(CLAIM_KEY, &claim_key(&ex));
            let read: KeyRow = row.select(SELECT_KEY);
            assert_eq!(read.client_id, "c-1");
            assert_eq!(read.bot.is_some(), new);
            let intent = read.into_intent(USER).unwrap();
            assert_eq!(format!("{intent:?}"), format!("{ex:?}"));
        }
    }

    #[test]
    fn a_key_row_missing_an_id_is_not_an_exchange() {
        let ex = exchange(true);
        let mut row = CellRow::default();
        row.apply(CLAIM_KEY, &claim_key(&ex));
        let mut read: KeyRow = row.select(SELECT_ALL_KEYS);
        read.stream_id = None;
        assert!(read.into_intent(USER).is_none());
    }

    fn record(address: bool) -> AuditRecord {
        AuditRecord {
            id: "0190b7c2-7a1e-7000-8000-000000000009".into(),
            at_ms: 1_764_000_000_000,
            user: Some(USER.into()),
            action: AuditAction::ConversationDeleted,
            address: address.then(|| "2001:db8:1234:5678::1".into()),
            address_anonymised: address.then(|| "2001:db8:1234::/48".into()),
            detail: "0190b7c2-7a1e-7000-8000-000000000001".into(),
        }
    }

    #[test]
    fn an_audit_record_is_written_and_read_back() {
        for with_address in [true, false] {
            let r = record(with_address);
            let month = audit_month(r.at_ms);
            assert_eq!(month, "2025-11");
            let mut row = CellRow::default();
            row.apply(INSERT_AUDIT, &insert_audit(USER, &month, &r));
            if let Some(address) = &r.address {
                row.apply(
                    SET_AUDIT_ADDRESS,
                    &set_audit_address(3600, address, USER, &month, &r.id),
                );
            }
            let read: AuditRow = row.select(SELECT_AUDIT);
            assert_eq!(read.into_record(USER), Some(r));

            let mut index = CellRow::default();
            index.apply(INSERT_AUDIT_MONTH, &user_month(USER, &month));
            let m: MonthRow = index.select(SELECT_AUDIT_MONTHS);
            assert_eq!(m.month, month);
        }
    }

    #[test]
    fn every_audit_action_reads_back() {
        for action in [
            AuditAction::ConversationCreated,
            AuditAction::ConversationDeleted,
            AuditAction::Exported,
            AuditAction::Erased,
            AuditAction::AuthFailed,
        ] {
            let r = AuditRecord {
                action,
                ..record(false)
            };
            let mut row = CellRow::default();
            row.apply(INSERT_AUDIT, &insert_audit(USER, "2025-11", &r));
            let read: AuditRow = row.select(SELECT_AUDIT);
            assert_eq!(read.into_record(USER).unwrap().action, action);
        }
        let unknown = AuditRow {
            audit_id: "a".into(),
            at: Some(ts(1)),
            action: Some("teleported".into()),
            address: None,
            address_anonymised: None,
            detail: None,
        };
        assert_eq!(unknown.into_record(USER), None);
    }

    #[test]
    fn an_anonymous_audit_record_writes_its_hour_partition() {
        let r = AuditRecord {
            user: None,
            action: AuditAction::AuthFailed,
            ..record(true)
        };
        let hour = audit_hour(r.at_ms);
        let mut row = CellRow::default();
        row.apply(INSERT_ANONYMOUS_AUDIT, &insert_anonymous_audit(&hour, &r));
        row.apply(
            SET_ANONYMOUS_AUDIT_ADDRESS,
            &set_anonymous_audit_address(60, r.address.as_deref().unwrap(), &hour, &r.id),
        );
        assert_eq!(row.cells["hour"], hour.as_bytes());
        assert_eq!(row.cells["action"], b"auth_failed");
        assert_eq!(row.cells["address"], r.address.unwrap().as_bytes());
    }

    #[test]
    fn finish_reasons_are_stored_as_the_protocol_names_them() {
        for reason in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Cancelled,
            FinishReason::Error,
        ] {
            assert_eq!(finish_reason_from_cql(reason.as_str()), Some(reason));
        }
        assert_eq!(finish_reason_from_cql("stop"), Some(FinishReason::Stop));
        assert_eq!(finish_reason_from_cql("STOP"), None);
        assert_eq!(finish_reason_from_cql(""), None);
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
        // The last millisecond of a leap year, and the next.
        let new_year_2025 = 1_735_689_600_000;
        assert_eq!(audit_hour(new_year_2025 - 1), "2024-12-31T23");
        assert_eq!(audit_month(new_year_2025 - 1), "2024-12");
        assert_eq!(audit_hour(new_year_2025), "2025-01-01T00");
        assert_eq!(audit_hour(951_782_400_000), "2000-02-29T00");
        // The hour's month is the month's partition.
        for t in (0..400).map(|d| d * 86_400_000 + 1_700_000_000_000i64) {
            assert!(audit_hour(t).starts_with(&audit_month(t)), "{t}");
        }
    }

    #[test]
    fn addresses_live_thirty_days_from_the_record() {
        let day = 86_400_000;
        let now = 1_764_000_000_000;
        assert_eq!(ADDRESS_TTL_SECS, 2_592_000);
        assert_eq!(address_ttl_secs(now, now), Some(2_592_000));
        assert_eq!(address_ttl_secs(now - day, now), Some(2_592_000 - 86_400));
        assert_eq!(address_ttl_secs(now - 1, now), Some(2_592_000));
        assert_eq!(address_ttl_secs(now - 30 * day + 1, now), Some(1));
        assert_eq!(address_ttl_secs(now - 30 * day, now), None);
        assert_eq!(address_ttl_secs(now - 31 * day, now), None);
        // A record from a clock ahead of ours still gets at most 30 days.
        assert_eq!(address_ttl_secs(now + day, now), Some(2_592_000));
        assert_eq!(address_ttl_secs(i64::MIN, now), None);
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
}
