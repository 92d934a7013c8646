//! Every CQL statement the ScyllaDB store runs, prepared once at connect.
//!
//! The [`statements!`] table declares, in one place, each statement's
//! text, whether it is idempotent (the driver retries only those: every
//! statement here is, except the lightweight transaction), its consistency
//! when it is not the session's (`scylla.consistency`), and the field of
//! [`Prepared`] that holds it once prepared. Bind markers are named
//! (`:user_id`), and each statement's values are a struct of
//! [`super::rows`] whose fields carry those names: the driver matches them
//! at every request. Tables are not qualified: the session runs in the
//! configured keyspace.
//!
//! Whether a statement is valid, reads one partition and fits its row
//! struct, the node checks: every statement is prepared at connect, and
//! the tests run each one against a real node. What no server checks (an
//! idempotency flag, a consistency level) is pinned by the tests here.

use ::scylla::client::session::Session;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::Consistency;

use super::ScyllaError;

/// One statement of the table.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub cql: &'static str,
    pub idempotent: bool,
    /// `None`: the session's consistency (`scylla.consistency`).
    pub consistency: Option<Consistency>,
}

/// Rows fetched per page by the statements that walk a whole partition
/// (export, erase, deleting a conversation).
pub const PAGE_SIZE: i32 = 500;

macro_rules! statements {
    ($( $(#[$doc:meta])* $field:ident, $konst:ident,
        idempotent = $idem:expr, consistency = $cl:expr, $cql:expr; )*) => {
        $( $(#[$doc])* pub const $konst: &str = $cql; )*

        /// Every statement, in declaration order.
        pub const ALL: &[Def] = &[
            $( Def { name: stringify!($field), cql: $konst, idempotent: $idem, consistency: $cl }, )*
        ];

        /// The statements, prepared on one session.
        pub struct Prepared {
            $( pub $field: PreparedStatement, )*
        }

        impl Prepared {
            pub async fn prepare(session: &Session) -> Result<Prepared, ScyllaError> {
                let mut defs = ALL.iter();
                Ok(Prepared {
                    $( $field: prepare(session, defs.next().expect("one def per field")).await?, )*
                })
            }

            /// Each prepared statement with its definition (tests check
            /// that the flags of the table are the ones prepared).
            pub fn each(&self) -> Vec<(&'static Def, &PreparedStatement)> {
                ALL.iter().zip([$( &self.$field, )*]).collect()
            }
        }
    };
}

async fn prepare(session: &Session, def: &'static Def) -> Result<PreparedStatement, ScyllaError> {
    let mut statement = session
        .prepare(def.cql)
        .await
        .map_err(|source| ScyllaError::prepare(def.name, source))?;
    statement.set_is_idempotent(def.idempotent);
    statement.set_page_size(PAGE_SIZE);
    if let Some(consistency) = def.consistency {
        statement.set_consistency(consistency);
    }
    Ok(statement)
}

statements! {
    // --- conversations_by_user -------------------------------------------

    /// One conversation of a user (also a trace row without `created_at`).
    select_conversation, SELECT_CONVERSATION, idempotent = true, consistency = None,
    "SELECT conversation_id, bot, title, created_at, updated_at FROM conversations_by_user \
     WHERE user_id = :user_id AND conversation_id = :conversation_id";

    /// The newest conversations of a user: a first page (`LIMIT` is the
    /// page + 1), or all of them, paged (export, erase).
    select_conversations_first, SELECT_CONVERSATIONS_FIRST, idempotent = true, consistency = None,
    "SELECT conversation_id, bot, title, created_at, updated_at FROM conversations_by_user \
     WHERE user_id = :user_id LIMIT :fetch";

    /// The next page: conversations older than the cursor.
    select_conversations_before, SELECT_CONVERSATIONS_BEFORE, idempotent = true, consistency = None,
    "SELECT conversation_id, bot, title, created_at, updated_at FROM conversations_by_user \
     WHERE user_id = :user_id AND conversation_id < :before LIMIT :fetch";

    /// A new conversation (part of the exchange batch).
    insert_conversation, INSERT_CONVERSATION, idempotent = true, consistency = None,
    "INSERT INTO conversations_by_user (user_id, conversation_id, bot, title, created_at, updated_at) \
     VALUES (:user_id, :conversation_id, :bot, :title, :created_at, :created_at)";

    /// A conversation's last activity (an exchange, an answer), written as
    /// of that activity.
    touch_conversation, TOUCH_CONVERSATION, idempotent = true, consistency = None,
    "UPDATE conversations_by_user USING TIMESTAMP :written_us SET updated_at = :updated_at \
     WHERE user_id = :user_id AND conversation_id = :conversation_id";

    delete_conversation, DELETE_CONVERSATION, idempotent = true, consistency = None,
    "DELETE FROM conversations_by_user WHERE user_id = :user_id AND conversation_id = :conversation_id";

    delete_user_conversations, DELETE_USER_CONVERSATIONS, idempotent = true, consistency = None,
    "DELETE FROM conversations_by_user WHERE user_id = :user_id";

    // --- messages_by_conversation ----------------------------------------

    /// Some messages of a conversation by id (an exchange's two messages).
    select_messages_by_id, SELECT_MESSAGES_BY_ID, idempotent = true, consistency = None,
    "SELECT message_id, role, content, checkpoint, created_at, finish_reason, prompt_tokens, \
     completion_tokens, reasoning_tokens, error_code, error_message, client_id, reasoning, \
     tool_calls, tool_call_id, usage_estimated, feedback_rating, feedback_comment, feedback_at \
     FROM messages_by_conversation WHERE conversation_id = :conversation_id AND message_id IN :message_ids";

    /// The oldest messages after the cursor (`''` for the first page):
    /// one page (`LIMIT` is the page + 1), or all of them, paged.
    select_messages_after, SELECT_MESSAGES_AFTER, idempotent = true, consistency = None,
    "SELECT message_id, role, content, checkpoint, created_at, finish_reason, prompt_tokens, \
     completion_tokens, reasoning_tokens, error_code, error_message, client_id, reasoning, \
     tool_calls, tool_call_id, usage_estimated, feedback_rating, feedback_comment, feedback_at \
     FROM messages_by_conversation WHERE conversation_id = :conversation_id AND message_id > :after \
     LIMIT :fetch";

    /// The newest messages of a conversation, newest first (prompt history).
    select_messages_last, SELECT_MESSAGES_LAST, idempotent = true, consistency = None,
    "SELECT message_id, role, content, checkpoint, created_at, finish_reason, prompt_tokens, \
     completion_tokens, reasoning_tokens, error_code, error_message, client_id, reasoning, \
     tool_calls, tool_call_id, usage_estimated, feedback_rating, feedback_comment, feedback_at \
     FROM messages_by_conversation WHERE conversation_id = :conversation_id \
     ORDER BY message_id DESC LIMIT :fetch";

    /// Whether an answer exists, whether it ended, and when it was last
    /// written (its checkpoint's write time is the checkpoint's time).
    select_answer, SELECT_ANSWER, idempotent = true, consistency = None,
    "SELECT role, created_at, finish_reason, checkpoint, WRITETIME(checkpoint) AS checkpoint_us \
     FROM messages_by_conversation WHERE conversation_id = :conversation_id AND message_id = :message_id";

    /// The message of an exchange (the user's, or a tool's result), with
    /// its idempotency key.
    insert_user_message, INSERT_USER_MESSAGE, idempotent = true, consistency = None,
    "INSERT INTO messages_by_conversation (conversation_id, message_id, role, content, created_at, \
     client_id, tool_call_id) \
     VALUES (:conversation_id, :message_id, :role, :content, :created_at, :client_id, :tool_call_id)";

    /// The answer of an exchange, before it is generated: no `content`, so
    /// that writing it again can never overwrite a finished answer.
    insert_pending_answer, INSERT_PENDING_ANSWER, idempotent = true, consistency = None,
    "INSERT INTO messages_by_conversation (conversation_id, message_id, role, created_at) \
     VALUES (:conversation_id, :message_id, 'assistant', :created_at)";

    /// The end of an answer: exactly the streamed text, why it ended,
    /// usage, the error of an `error` end; written as of the end.
    finish_answer, FINISH_ANSWER, idempotent = true, consistency = None,
    "UPDATE messages_by_conversation USING TIMESTAMP :written_us SET content = :content, \
     finish_reason = :finish_reason, prompt_tokens = :prompt_tokens, completion_tokens = :completion_tokens, \
     reasoning_tokens = :reasoning_tokens, error_code = :error_code, error_message = :error_message, \
     reasoning = :reasoning, tool_calls = :tool_calls, usage_estimated = :usage_estimated \
     WHERE conversation_id = :conversation_id AND message_id = :message_id";

    /// What a live answer holds so far: its own column, which no end
    /// reads, so a late checkpoint can never undo an end; written as of the
    /// checkpoint, with a TTL.
    checkpoint_answer, CHECKPOINT_ANSWER, idempotent = true, consistency = None,
    "UPDATE messages_by_conversation USING TIMESTAMP :written_us AND TTL :ttl SET checkpoint = :checkpoint \
     WHERE conversation_id = :conversation_id AND message_id = :message_id";

    /// One message row (the trace a late write left in a deleted
    /// conversation).
    delete_message, DELETE_MESSAGE, idempotent = true, consistency = None,
    "DELETE FROM messages_by_conversation WHERE conversation_id = :conversation_id AND message_id = :message_id";

    delete_messages, DELETE_MESSAGES, idempotent = true, consistency = None,
    "DELETE FROM messages_by_conversation WHERE conversation_id = :conversation_id";

    // --- open_answers ----------------------------------------------------

    /// An answer begins (part of the exchange batch).
    insert_open_answer, INSERT_OPEN_ANSWER, idempotent = true, consistency = None,
    "INSERT INTO open_answers (bucket, message_id, conversation_id) \
     VALUES (:bucket, :message_id, :conversation_id)";

    /// The open answers of one bucket (`close_interrupted`).
    select_open_answers, SELECT_OPEN_ANSWERS, idempotent = true, consistency = None,
    "SELECT message_id, conversation_id FROM open_answers WHERE bucket = :bucket";

    /// An answer ended (or its conversation went).
    delete_open_answer, DELETE_OPEN_ANSWER, idempotent = true, consistency = None,
    "DELETE FROM open_answers WHERE bucket = :bucket AND message_id = :message_id";

    // --- idempotency_keys ------------------------------------------------

    /// Claims a key: the one lightweight transaction of the write path.
    claim_key, CLAIM_KEY, idempotent = false, consistency = None,
    "INSERT INTO idempotency_keys (user_id, client_id, conversation_id, user_message_id, \
     assistant_message_id, stream_id, created_at, bot, title, user_text, tool_call_id) \
     VALUES (:user_id, :client_id, :conversation_id, :user_message_id, :assistant_message_id, \
     :stream_id, :created_at, :bot, :title, :user_text, :tool_call_id) IF NOT EXISTS";

    select_key, SELECT_KEY, idempotent = true, consistency = None,
    "SELECT client_id, conversation_id, user_message_id, assistant_message_id, stream_id, created_at, \
     bot, title, user_text, tool_call_id FROM idempotency_keys WHERE user_id = :user_id AND client_id = :client_id";

    /// Every key of a user, paged (export).
    select_all_keys, SELECT_ALL_KEYS, idempotent = true, consistency = None,
    "SELECT client_id, conversation_id, user_message_id, assistant_message_id, stream_id, created_at, \
     bot, title, user_text, tool_call_id FROM idempotency_keys WHERE user_id = :user_id";

    delete_key, DELETE_KEY, idempotent = true, consistency = None,
    "DELETE FROM idempotency_keys WHERE user_id = :user_id AND client_id = :client_id";

    delete_user_keys, DELETE_USER_KEYS, idempotent = true, consistency = None,
    "DELETE FROM idempotency_keys WHERE user_id = :user_id";

    // --- audit -----------------------------------------------------------

    /// An audit record of a user, without its full address.
    insert_audit, INSERT_AUDIT, idempotent = true, consistency = None,
    "INSERT INTO audit_by_user (user_id, month, audit_id, at, action, address_anonymised, detail, actor) \
     VALUES (:user_id, :month, :audit_id, :at, :action, :address_anonymised, :detail, :actor)";

    /// The full address of a user's audit record, until its TTL ends.
    set_audit_address, SET_AUDIT_ADDRESS, idempotent = true, consistency = None,
    "UPDATE audit_by_user USING TTL :ttl SET address = :address \
     WHERE user_id = :user_id AND month = :month AND audit_id = :audit_id";

    /// Records that the user has audit records in a month.
    insert_audit_month, INSERT_AUDIT_MONTH, idempotent = true, consistency = None,
    "INSERT INTO audit_months_by_user (user_id, month) VALUES (:user_id, :month)";

    select_audit_months, SELECT_AUDIT_MONTHS, idempotent = true, consistency = None,
    "SELECT month FROM audit_months_by_user WHERE user_id = :user_id";

    /// A user's audit records of one month, paged.
    select_audit, SELECT_AUDIT, idempotent = true, consistency = None,
    "SELECT audit_id, at, action, address, address_anonymised, detail, actor FROM audit_by_user \
     WHERE user_id = :user_id AND month = :month";

    delete_audit_month, DELETE_AUDIT_MONTH, idempotent = true, consistency = None,
    "DELETE FROM audit_by_user WHERE user_id = :user_id AND month = :month";

    delete_audit_months, DELETE_AUDIT_MONTHS, idempotent = true, consistency = None,
    "DELETE FROM audit_months_by_user WHERE user_id = :user_id";

    /// A user's audit records of one month, newest first, older than the
    /// cursor (`scan::NEWEST` for the first page).
    select_audit_older, SELECT_AUDIT_OLDER, idempotent = true, consistency = None,
    "SELECT audit_id, at, action, address, address_anonymised, detail, actor FROM audit_by_user \
     WHERE user_id = :user_id AND month = :month AND audit_id < :before \
     ORDER BY audit_id DESC LIMIT :fetch";

    /// Every audit record by day, for operators (with the day's index).
    insert_audit_day, INSERT_AUDIT_DAY, idempotent = true, consistency = None,
    "INSERT INTO audit_by_day (day, audit_id, user_id, at, action, address_anonymised, detail, actor) \
     VALUES (:day, :audit_id, :user_id, :at, :action, :address_anonymised, :detail, :actor)";

    set_audit_day_address, SET_AUDIT_DAY_ADDRESS, idempotent = true, consistency = None,
    "UPDATE audit_by_day USING TTL :ttl SET address = :address WHERE day = :day AND audit_id = :audit_id";

    insert_audit_day_index, INSERT_AUDIT_DAY_INDEX, idempotent = true, consistency = None,
    "INSERT INTO audit_days (scope, day) VALUES ('all', :day)";

    select_audit_days, SELECT_AUDIT_DAYS, idempotent = true, consistency = None,
    "SELECT day FROM audit_days WHERE scope = 'all'";

    /// A day's records, newest first, older than the cursor.
    select_audit_day_before, SELECT_AUDIT_DAY_BEFORE, idempotent = true, consistency = None,
    "SELECT audit_id, user_id, at, action, address, address_anonymised, detail, actor \
     FROM audit_by_day WHERE day = :day AND audit_id < :before LIMIT :fetch";

    delete_audit_day_record, DELETE_AUDIT_DAY_RECORD, idempotent = true, consistency = None,
    "DELETE FROM audit_by_day WHERE day = :day AND audit_id = :audit_id";

    // --- usage ----------------------------------------------------------------

    /// An answer's usage row (part of the exchange batch) ...
    insert_usage, INSERT_USAGE, idempotent = true, consistency = None,
    "INSERT INTO usage_by_user (user_id, month, message_id, bot) \
     VALUES (:user_id, :month, :message_id, :bot)";

    /// ... its user in the month's index (also in the batch) ...
    insert_usage_user, INSERT_USAGE_USER, idempotent = true, consistency = None,
    "INSERT INTO usage_users (month, bucket, user_id) VALUES (:month, :bucket, :user_id)";

    /// ... and its tokens when it ends (a value, not an increment: a retry
    /// writes the same).
    set_usage_tokens, SET_USAGE_TOKENS, idempotent = true, consistency = None,
    "UPDATE usage_by_user SET tokens = :tokens \
     WHERE user_id = :user_id AND month = :month AND message_id = :message_id";

    select_usage_users, SELECT_USAGE_USERS, idempotent = true, consistency = None,
    "SELECT user_id FROM usage_users WHERE month = :month AND bucket = :bucket \
     AND user_id >= :from_user LIMIT :fetch";

    /// A user's month, summed by the caller (paged: a row per answer).
    select_usage, SELECT_USAGE, idempotent = true, consistency = None,
    "SELECT bot, tokens FROM usage_by_user WHERE user_id = :user_id AND month = :month";

    /// An audit record without a user (failed authentication).
    insert_anonymous_audit, INSERT_ANONYMOUS_AUDIT, idempotent = true, consistency = None,
    "INSERT INTO audit_anonymous (hour, audit_id, at, action, address_anonymised, detail) \
     VALUES (:hour, :audit_id, :at, :action, :address_anonymised, :detail)";

    set_anonymous_audit_address, SET_ANONYMOUS_AUDIT_ADDRESS, idempotent = true, consistency = None,
    "UPDATE audit_anonymous USING TTL :ttl SET address = :address WHERE hour = :hour AND audit_id = :audit_id";

    // --- answers_by_id and feedback ----------------------------------------

    /// Whose an answer is (part of the exchange batch).
    insert_answer_owner, INSERT_ANSWER_OWNER, idempotent = true, consistency = None,
    "INSERT INTO answers_by_id (message_id, user_id, conversation_id) \
     VALUES (:message_id, :user_id, :conversation_id)";

    select_answer_owner, SELECT_ANSWER_OWNER, idempotent = true, consistency = None,
    "SELECT user_id, conversation_id FROM answers_by_id WHERE message_id = :message_id";

    delete_answer_owner, DELETE_ANSWER_OWNER, idempotent = true, consistency = None,
    "DELETE FROM answers_by_id WHERE message_id = :message_id";

    /// The feedback on an answer, with the answer (null: none).
    set_message_feedback, SET_MESSAGE_FEEDBACK, idempotent = true, consistency = None,
    "UPDATE messages_by_conversation SET feedback_rating = :rating, feedback_comment = :comment, \
     feedback_at = :at WHERE conversation_id = :conversation_id AND message_id = :message_id";

    /// The feedback on an answer, for operators.
    insert_feedback, INSERT_FEEDBACK, idempotent = true, consistency = None,
    "INSERT INTO feedback_by_month (month, message_id, conversation_id, bot, rating, comment, at) \
     VALUES (:month, :message_id, :conversation_id, :bot, :rating, :comment, :at)";

    delete_feedback, DELETE_FEEDBACK, idempotent = true, consistency = None,
    "DELETE FROM feedback_by_month WHERE month = :month AND message_id = :message_id";

    insert_feedback_month, INSERT_FEEDBACK_MONTH, idempotent = true, consistency = None,
    "INSERT INTO feedback_months (scope, month) VALUES ('all', :month)";

    select_feedback_months, SELECT_FEEDBACK_MONTHS, idempotent = true, consistency = None,
    "SELECT month FROM feedback_months WHERE scope = 'all'";

    /// A month's feedback, newest answers first, older than the cursor.
    select_feedback_before, SELECT_FEEDBACK_BEFORE, idempotent = true, consistency = None,
    "SELECT message_id, conversation_id, bot, rating, comment, at FROM feedback_by_month \
     WHERE month = :month AND message_id < :before LIMIT :fetch";

    // --- bots --------------------------------------------------------------

    /// Every stored bot (one partition).
    select_bots, SELECT_BOTS, idempotent = true, consistency = None,
    "SELECT name, settings, updated_at, updated_by FROM bots WHERE scope = 'all'";

    /// A bot stored, replaced or deleted (`settings` null).
    upsert_bot, UPSERT_BOT, idempotent = true, consistency = None,
    "INSERT INTO bots (scope, name, settings, updated_at, updated_by) \
     VALUES ('all', :name, :settings, :updated_at, :updated_by)";

    // --- health ----------------------------------------------------------

    /// Reachability (readiness, the spool's drain): a node-local table,
    /// any one node answers.
    ping, PING, idempotent = true, consistency = Some(Consistency::One),
    "SELECT release_version FROM system.local WHERE key = 'local'";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement's idempotency and consistency, which no server
    /// checks: the driver retries an idempotent statement after a timeout,
    /// so a statement marked idempotent by mistake could apply twice, and
    /// one marked not idempotent loses the retries. A change here is a
    /// change of the data access: check it against docs/scylla.md.
    #[test]
    fn every_statement_has_its_pinned_idempotency_and_consistency() {
        let not_idempotent = ["claim_key"];
        let own_consistency = [("ping", Consistency::One)];
        for def in ALL {
            assert_eq!(
                def.idempotent,
                !not_idempotent.contains(&def.name),
                "{}: idempotency",
                def.name
            );
            let expected = own_consistency
                .iter()
                .find(|(name, _)| *name == def.name)
                .map(|(_, c)| *c);
            assert_eq!(def.consistency, expected, "{}: consistency", def.name);
        }
        let names: Vec<&str> = ALL.iter().map(|d| d.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each statement once");
        assert_eq!(names.len(), 58, "a statement added or removed: pin it here");
    }

    /// Lightweight transactions are the statements with an `IF`; none of
    /// them may be retried blindly (a retry of an applied claim reports
    /// "not applied"), and nothing else is one.
    #[test]
    fn only_lightweight_transactions_are_not_idempotent() {
        for def in ALL {
            let lwt = def.cql.contains(" IF ");
            assert_eq!(def.idempotent, !lwt, "{}", def.name);
        }
    }

    /// Writes carry the time of what they record, where a later delete
    /// must win over them (`USING TIMESTAMP`): the answer's end, its
    /// checkpoints, a conversation's activity. Everything else uses the
    /// client's monotonic write time.
    #[test]
    fn event_time_writes_are_exactly_the_persisters() {
        let timed: Vec<&str> = ALL
            .iter()
            .filter(|d| d.cql.contains("USING TIMESTAMP :written_us"))
            .map(|d| d.name)
            .collect();
        assert_eq!(
            timed,
            ["touch_conversation", "finish_answer", "checkpoint_answer"]
        );
    }

    /// Nothing scans, truncates, drops or counts; every bind marker is
    /// named (the values are matched by name).
    #[test]
    fn nothing_filters_truncates_or_counts_and_every_marker_is_named() {
        let migrations: Vec<String> = super::super::MIGRATIONS
            .iter()
            .flat_map(|m| super::super::migrate::statements(m.cql))
            .collect();
        for cql in ALL
            .iter()
            .map(|d| d.cql)
            .chain(migrations.iter().map(String::as_str))
        {
            let upper = cql.to_uppercase();
            for banned in ["ALLOW FILTERING", "TRUNCATE", "COUNTER", "DROP "] {
                assert!(!upper.contains(banned), "{banned} in {cql}");
            }
        }
        for def in ALL {
            assert!(!def.cql.contains('?'), "{}: a positional marker", def.name);
        }
    }

    /// The statements that read one row type select the same columns (the
    /// driver then checks those against the struct).
    #[test]
    fn statements_of_one_row_type_select_the_same_columns() {
        let columns = |cql: &str| {
            let start = "SELECT ".len();
            cql[start..cql.find(" FROM ").unwrap()].to_owned()
        };
        for group in [
            &[
                SELECT_CONVERSATION,
                SELECT_CONVERSATIONS_FIRST,
                SELECT_CONVERSATIONS_BEFORE,
            ][..],
            &[
                SELECT_MESSAGES_BY_ID,
                SELECT_MESSAGES_AFTER,
                SELECT_MESSAGES_LAST,
            ],
            &[SELECT_KEY, SELECT_ALL_KEYS],
            &[SELECT_AUDIT, SELECT_AUDIT_OLDER],
        ] {
            let first = columns(group[0]);
            for cql in group {
                assert_eq!(columns(cql), first, "{cql}");
            }
        }
    }
}
