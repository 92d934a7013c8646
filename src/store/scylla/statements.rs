//! Every CQL statement the ScyllaDB store runs, as a constant, prepared
//! once at connect.
//!
//! The [`statements!`] table declares, in one place, each statement's text,
//! whether it is idempotent (the driver retries only those: every statement
//! here is, except the lightweight transactions), and the field of
//! [`Prepared`] that holds it once prepared. Tables are not qualified: the
//! session runs in the configured keyspace. The tests of this module check
//! every statement against the schema of `migrations/` (tables, columns,
//! types of bind markers and of selected columns) and that each one reads or
//! writes a single partition.

use ::scylla::client::session::Session;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::Consistency;

use super::ScyllaError;

/// One statement of the table: its field name, text and idempotency.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub cql: &'static str,
    pub idempotent: bool,
}

/// Rows fetched per page by the statements that walk a whole partition
/// (export, erase, deleting a conversation).
pub const PAGE_SIZE: i32 = 500;

macro_rules! statements {
    ($( $(#[$doc:meta])* $field:ident, $konst:ident, idempotent = $idem:expr, $cql:expr; )*) => {
        $( $(#[$doc])* pub const $konst: &str = $cql; )*

        /// Every statement, in declaration order.
        pub const ALL: &[Def] = &[
            $( Def { name: stringify!($field), cql: $konst, idempotent: $idem }, )*
        ];

        /// The statements, prepared on one session.
        pub struct Prepared {
            $( pub $field: PreparedStatement, )*
        }

        impl Prepared {
            pub async fn prepare(session: &Session) -> Result<Prepared, ScyllaError> {
                Ok(Prepared {
                    $( $field: prepare(session, stringify!($field), $konst, $idem).await?, )*
                })
            }
        }
    };
}

async fn prepare(
    session: &Session,
    name: &'static str,
    cql: &'static str,
    idempotent: bool,
) -> Result<PreparedStatement, ScyllaError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|source| ScyllaError::prepare(name, source))?;
    statement.set_is_idempotent(idempotent);
    statement.set_page_size(PAGE_SIZE);
    if name == "ping" {
        // A node-local table: any one node answers.
        statement.set_consistency(Consistency::One);
    }
    Ok(statement)
}

/// The columns of a conversation row, in [`super::rows::ConversationRow`].
macro_rules! conversation_columns {
    () => {
        "conversation_id, bot, title, created_at, updated_at"
    };
}

/// The columns of a message row, in [`super::rows::MessageRow`].
macro_rules! message_columns {
    () => {
        "message_id, role, content, created_at, finish_reason, prompt_tokens, completion_tokens, client_id"
    };
}

/// The columns of an idempotency key row, in [`super::rows::KeyRow`].
macro_rules! key_columns {
    () => {
        "client_id, conversation_id, user_message_id, assistant_message_id, stream_id, created_at, bot, title, user_text"
    };
}

/// The columns of an audit row, in [`super::rows::AuditRow`].
macro_rules! audit_columns {
    () => {
        "audit_id, at, action, address, address_anonymised, detail"
    };
}

statements! {
    // --- conversations_by_user -------------------------------------------

    /// One conversation of a user (also a trace row without `created_at`).
    select_conversation, SELECT_CONVERSATION, idempotent = true,
    concat!("SELECT ", conversation_columns!(),
        " FROM conversations_by_user WHERE user_id = ? AND conversation_id = ?");

    /// The newest conversations of a user (first page); `LIMIT` is page + 1.
    select_conversations_first, SELECT_CONVERSATIONS_FIRST, idempotent = true,
    concat!("SELECT ", conversation_columns!(),
        " FROM conversations_by_user WHERE user_id = ? LIMIT ?");

    /// The next page: conversations older than the cursor.
    select_conversations_before, SELECT_CONVERSATIONS_BEFORE, idempotent = true,
    concat!("SELECT ", conversation_columns!(),
        " FROM conversations_by_user WHERE user_id = ? AND conversation_id < ? LIMIT ?");

    /// Every conversation of a user, paged (export, erase).
    select_all_conversations, SELECT_ALL_CONVERSATIONS, idempotent = true,
    concat!("SELECT ", conversation_columns!(),
        " FROM conversations_by_user WHERE user_id = ?");

    /// A new conversation (part of the exchange batch).
    insert_conversation, INSERT_CONVERSATION, idempotent = true,
    "INSERT INTO conversations_by_user (user_id, conversation_id, bot, title, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?)";

    /// A conversation's last activity (an exchange, an answer).
    touch_conversation, TOUCH_CONVERSATION, idempotent = true,
    "UPDATE conversations_by_user SET updated_at = ? WHERE user_id = ? AND conversation_id = ?";

    delete_conversation, DELETE_CONVERSATION, idempotent = true,
    "DELETE FROM conversations_by_user WHERE user_id = ? AND conversation_id = ?";

    delete_user_conversations, DELETE_USER_CONVERSATIONS, idempotent = true,
    "DELETE FROM conversations_by_user WHERE user_id = ?";

    // --- messages_by_conversation ----------------------------------------

    /// Some messages of a conversation by id (an exchange's two messages).
    select_messages_by_id, SELECT_MESSAGES_BY_ID, idempotent = true,
    concat!("SELECT ", message_columns!(),
        " FROM messages_by_conversation WHERE conversation_id = ? AND message_id IN ?");

    /// The oldest messages of a conversation (first page); `LIMIT` is page + 1.
    select_messages_first, SELECT_MESSAGES_FIRST, idempotent = true,
    concat!("SELECT ", message_columns!(),
        " FROM messages_by_conversation WHERE conversation_id = ? LIMIT ?");

    /// The next page: messages newer than the cursor.
    select_messages_after, SELECT_MESSAGES_AFTER, idempotent = true,
    concat!("SELECT ", message_columns!(),
        " FROM messages_by_conversation WHERE conversation_id = ? AND message_id > ? LIMIT ?");

    /// The newest messages of a conversation, newest first (prompt history).
    select_messages_last, SELECT_MESSAGES_LAST, idempotent = true,
    concat!("SELECT ", message_columns!(),
        " FROM messages_by_conversation WHERE conversation_id = ? ORDER BY message_id DESC LIMIT ?");

    /// Every message of a conversation, paged (export, delete, erase).
    select_all_messages, SELECT_ALL_MESSAGES, idempotent = true,
    concat!("SELECT ", message_columns!(),
        " FROM messages_by_conversation WHERE conversation_id = ?");

    /// The user's message of an exchange, with its idempotency key.
    insert_user_message, INSERT_USER_MESSAGE, idempotent = true,
    "INSERT INTO messages_by_conversation (conversation_id, message_id, role, content, created_at, client_id) \
     VALUES (?, ?, 'user', ?, ?, ?)";

    /// The answer of an exchange, before it is generated: no `content`, so
    /// that writing it again can never overwrite a finished answer.
    insert_pending_answer, INSERT_PENDING_ANSWER, idempotent = true,
    "INSERT INTO messages_by_conversation (conversation_id, message_id, role, created_at) \
     VALUES (?, ?, 'assistant', ?)";

    /// The finished answer: exactly the streamed text, why it ended, usage.
    finish_answer, FINISH_ANSWER, idempotent = true,
    "UPDATE messages_by_conversation SET content = ?, finish_reason = ?, prompt_tokens = ?, completion_tokens = ? \
     WHERE conversation_id = ? AND message_id = ?";

    delete_messages, DELETE_MESSAGES, idempotent = true,
    "DELETE FROM messages_by_conversation WHERE conversation_id = ?";

    // --- idempotency_keys ------------------------------------------------

    /// Claims a key: the one lightweight transaction of the write path.
    claim_key, CLAIM_KEY, idempotent = false,
    "INSERT INTO idempotency_keys (user_id, client_id, conversation_id, user_message_id, assistant_message_id, \
     stream_id, created_at, bot, title, user_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";

    select_key, SELECT_KEY, idempotent = true,
    concat!("SELECT ", key_columns!(),
        " FROM idempotency_keys WHERE user_id = ? AND client_id = ?");

    /// Every key of a user, paged (export).
    select_all_keys, SELECT_ALL_KEYS, idempotent = true,
    concat!("SELECT ", key_columns!(), " FROM idempotency_keys WHERE user_id = ?");

    delete_key, DELETE_KEY, idempotent = true,
    "DELETE FROM idempotency_keys WHERE user_id = ? AND client_id = ?";

    delete_user_keys, DELETE_USER_KEYS, idempotent = true,
    "DELETE FROM idempotency_keys WHERE user_id = ?";

    // --- audit -----------------------------------------------------------

    /// An audit record of a user, without its full address.
    insert_audit, INSERT_AUDIT, idempotent = true,
    "INSERT INTO audit_by_user (user_id, month, audit_id, at, action, address_anonymised, detail) \
     VALUES (?, ?, ?, ?, ?, ?, ?)";

    /// The full address of a user's audit record, until 30 days after it.
    set_audit_address, SET_AUDIT_ADDRESS, idempotent = true,
    "UPDATE audit_by_user USING TTL ? SET address = ? WHERE user_id = ? AND month = ? AND audit_id = ?";

    /// Records that the user has audit records in a month.
    insert_audit_month, INSERT_AUDIT_MONTH, idempotent = true,
    "INSERT INTO audit_months_by_user (user_id, month) VALUES (?, ?)";

    select_audit_months, SELECT_AUDIT_MONTHS, idempotent = true,
    "SELECT month FROM audit_months_by_user WHERE user_id = ?";

    /// A user's audit records of one month, paged.
    select_audit, SELECT_AUDIT, idempotent = true,
    concat!("SELECT ", audit_columns!(), " FROM audit_by_user WHERE user_id = ? AND month = ?");

    delete_audit_month, DELETE_AUDIT_MONTH, idempotent = true,
    "DELETE FROM audit_by_user WHERE user_id = ? AND month = ?";

    delete_audit_months, DELETE_AUDIT_MONTHS, idempotent = true,
    "DELETE FROM audit_months_by_user WHERE user_id = ?";

    /// An audit record without a user (failed authentication).
    insert_anonymous_audit, INSERT_ANONYMOUS_AUDIT, idempotent = true,
    "INSERT INTO audit_anonymous (hour, audit_id, at, action, address_anonymised, detail) \
     VALUES (?, ?, ?, ?, ?, ?)";

    set_anonymous_audit_address, SET_ANONYMOUS_AUDIT_ADDRESS, idempotent = true,
    "UPDATE audit_anonymous USING TTL ? SET address = ? WHERE hour = ? AND audit_id = ?";

    // --- health ----------------------------------------------------------

    /// Reachability (readiness, the spool's drain).
    ping, PING, idempotent = true,
    "SELECT release_version FROM system.local WHERE key = 'local'";
}

#[cfg(test)]
mod tests {
    use super::super::rows;
    use super::super::schema_check::{analyse, encode, marker_specs, schema, Kind, Val};
    use super::*;
    use skald_actors::ports::store::{
        AuditAction, AuditRecord, FinishedAnswer, NewConversation, NewExchange,
    };
    use skald_protocol::{FinishReason, Usage};

    /// Every statement, exactly. A change here is a change of the data
    /// access: check it against docs/scylla.md and the migrations.
    #[test]
    fn every_statement_is_pinned() {
        let expected: &[(&str, &str)] = &[
            ("select_conversation", "SELECT conversation_id, bot, title, created_at, updated_at FROM conversations_by_user WHERE user_id = ? AND conversation_id = ?"),
            ("select_conversations_first", "SELECT conversation_id, bot, title, created_at, updated_at FROM conversations_by_user WHERE user_id = ? LIMIT ?"),
            ("select_conversations_before", "SELECT conversation_id, bot, title, created_at, updated_at FROM conversations_by_user WHERE user_id = ? AND conversation_id < ? LIMIT ?"),
            ("select_all_conversations", "SELECT conversation_id, bot, title, created_at, updated_at FROM conversations_by_user WHERE user_id = ?"),
            ("insert_conversation", "INSERT INTO conversations_by_user (user_id, conversation_id, bot, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"),
            ("touch_conversation", "UPDATE conversations_by_user SET updated_at = ? WHERE user_id = ? AND conversation_id = ?"),
            ("delete_conversation", "DELETE FROM conversations_by_user WHERE user_id = ? AND conversation_id = ?"),
            ("delete_user_conversations", "DELETE FROM conversations_by_user WHERE user_id = ?"),
            ("select_messages_by_id", "SELECT message_id, role, content, created_at, finish_reason, prompt_tokens, completion_tokens, client_id FROM messages_by_conversation WHERE conversation_id = ? AND message_id IN ?"),
            ("select_messages_first", "SELECT message_id, role, content, created_at, finish_reason, prompt_tokens, completion_tokens, client_id FROM messages_by_conversation WHERE conversation_id = ? LIMIT ?"),
            ("select_messages_after", "SELECT message_id, role, content, created_at, finish_reason, prompt_tokens, completion_tokens, client_id FROM messages_by_conversation WHERE conversation_id = ? AND message_id > ? LIMIT ?"),
            ("select_messages_last", "SELECT message_id, role, content, created_at, finish_reason, prompt_tokens, completion_tokens, client_id FROM messages_by_conversation WHERE conversation_id = ? ORDER BY message_id DESC LIMIT ?"),
            ("select_all_messages", "SELECT message_id, role, content, created_at, finish_reason, prompt_tokens, completion_tokens, client_id FROM messages_by_conversation WHERE conversation_id = ?"),
            ("insert_user_message", "INSERT INTO messages_by_conversation (conversation_id, message_id, role, content, created_at, client_id) VALUES (?, ?, 'user', ?, ?, ?)"),
            ("insert_pending_answer", "INSERT INTO messages_by_conversation (conversation_id, message_id, role, created_at) VALUES (?, ?, 'assistant', ?)"),
            ("finish_answer", "UPDATE messages_by_conversation SET content = ?, finish_reason = ?, prompt_tokens = ?, completion_tokens = ? WHERE conversation_id = ? AND message_id = ?"),
            ("delete_messages", "DELETE FROM messages_by_conversation WHERE conversation_id = ?"),
            ("claim_key", "INSERT INTO idempotency_keys (user_id, client_id, conversation_id, user_message_id, assistant_message_id, stream_id, created_at, bot, title, user_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
            ("select_key", "SELECT client_id, conversation_id, user_message_id, assistant_message_id, stream_id, created_at, bot, title, user_text FROM idempotency_keys WHERE user_id = ? AND client_id = ?"),
            ("select_all_keys", "SELECT client_id, conversation_id, user_message_id, assistant_message_id, stream_id, created_at, bot, title, user_text FROM idempotency_keys WHERE user_id = ?"),
            ("delete_key", "DELETE FROM idempotency_keys WHERE user_id = ? AND client_id = ?"),
            ("delete_user_keys", "DELETE FROM idempotency_keys WHERE user_id = ?"),
            ("insert_audit", "INSERT INTO audit_by_user (user_id, month, audit_id, at, action, address_anonymised, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"),
            ("set_audit_address", "UPDATE audit_by_user USING TTL ? SET address = ? WHERE user_id = ? AND month = ? AND audit_id = ?"),
            ("insert_audit_month", "INSERT INTO audit_months_by_user (user_id, month) VALUES (?, ?)"),
            ("select_audit_months", "SELECT month FROM audit_months_by_user WHERE user_id = ?"),
            ("select_audit", "SELECT audit_id, at, action, address, address_anonymised, detail FROM audit_by_user WHERE user_id = ? AND month = ?"),
            ("delete_audit_month", "DELETE FROM audit_by_user WHERE user_id = ? AND month = ?"),
            ("delete_audit_months", "DELETE FROM audit_months_by_user WHERE user_id = ?"),
            ("insert_anonymous_audit", "INSERT INTO audit_anonymous (hour, audit_id, at, action, address_anonymised, detail) VALUES (?, ?, ?, ?, ?, ?)"),
            ("set_anonymous_audit_address", "UPDATE audit_anonymous USING TTL ? SET address = ? WHERE hour = ? AND audit_id = ?"),
            ("ping", "SELECT release_version FROM system.local WHERE key = 'local'"),
        ];
        let actual: Vec<(&str, &str)> = ALL.iter().map(|d| (d.name, d.cql)).collect();
        assert_eq!(actual, expected);
    }

    fn keyspace_statements() -> impl Iterator<Item = &'static Def> {
        ALL.iter().filter(|d| !d.cql.contains("system."))
    }

    #[test]
    fn statements_name_only_tables_and_columns_of_the_schema() {
        let schema = schema();
        for def in keyspace_statements() {
            let a = analyse(def.cql).unwrap_or_else(|e| panic!("{}: {e}", def.name));
            let table = schema
                .get(&a.table)
                .unwrap_or_else(|| panic!("{}: no table {}", def.name, a.table));
            let columns = a
                .selected
                .iter()
                .chain(a.assigned.iter().map(|(c, _)| c))
                .chain(a.restricted.iter().map(|(c, _, _)| c))
                .chain(a.order_by.iter());
            for column in columns {
                assert!(
                    table.column_type(column).is_some(),
                    "{}: {}.{column} does not exist",
                    def.name,
                    a.table
                );
            }
            // Every bind marker has a type (panics otherwise).
            marker_specs(&a, table);
        }
    }

    /// No statement scans: each names its whole partition key by equality,
    /// ranges and `IN` are on clustering columns only, and writes name
    /// their whole row (or whole partition, for deletes).
    #[test]
    fn every_statement_stays_in_one_partition() {
        let schema = schema();
        for def in keyspace_statements() {
            let a = analyse(def.cql).unwrap();
            let table = &schema[&a.table];
            let equal: Vec<&String> = a
                .restricted
                .iter()
                .filter(|(_, op, _)| op == "=")
                .map(|(c, _, _)| c)
                .collect();
            let keyed: Vec<&String> = match a.kind {
                Kind::Insert => a.assigned.iter().map(|(c, _)| c).collect(),
                _ => equal.clone(),
            };
            for key in &table.partition_key {
                assert!(
                    keyed.contains(&key),
                    "{}: does not fix the partition key column {key}",
                    def.name
                );
            }
            for (column, op, _) in &a.restricted {
                if op != "=" {
                    assert!(
                        table.clustering_key.contains(column),
                        "{}: {op} on {column}, which is not a clustering column",
                        def.name
                    );
                }
            }
            if matches!(a.kind, Kind::Insert | Kind::Update) {
                for key in table.partition_key.iter().chain(&table.clustering_key) {
                    assert!(keyed.contains(&key), "{}: does not name {key}", def.name);
                }
            }
            if let Some(column) = &a.order_by {
                assert_eq!(table.clustering_key.first(), Some(column), "{}", def.name);
            }
        }
    }

    #[test]
    fn only_lightweight_transactions_are_not_idempotent() {
        for def in keyspace_statements() {
            let a = analyse(def.cql).unwrap();
            assert_eq!(def.idempotent, !a.lwt, "{}", def.name);
        }
        let lwts: Vec<&str> = ALL
            .iter()
            .filter(|d| !d.idempotent)
            .map(|d| d.name)
            .collect();
        assert_eq!(lwts, ["claim_key"]);
    }

    #[test]
    fn nothing_filters_truncates_or_counts() {
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
    }

    #[test]
    fn selects_name_exactly_the_columns_of_their_row_types() {
        let expect = |name: &str| -> &'static [&'static str] {
            match name {
                "select_conversation"
                | "select_conversations_first"
                | "select_conversations_before"
                | "select_all_conversations" => rows::ConversationRow::COLUMNS,
                "select_messages_by_id"
                | "select_messages_first"
                | "select_messages_after"
                | "select_messages_last"
                | "select_all_messages" => rows::MessageRow::COLUMNS,
                "select_key" | "select_all_keys" => rows::KeyRow::COLUMNS,
                "select_audit" => rows::AuditRow::COLUMNS,
                "select_audit_months" => rows::MonthRow::COLUMNS,
                other => panic!("{other}: which row type reads it?"),
            }
        };
        for def in keyspace_statements() {
            let a = analyse(def.cql).unwrap();
            if a.kind == Kind::Select {
                assert_eq!(a.selected, expect(def.name), "{}", def.name);
            }
        }
    }

    fn exchange() -> NewExchange {
        NewExchange {
            user: "u-1".into(),
            client_id: "c-1".into(),
            conversation_id: "0190b7c2-7a1e-7000-8000-000000000001".into(),
            new_conversation: Some(NewConversation {
                bot: "default".into(),
                title: "Bonjour".into(),
            }),
            user_message_id: "0190b7c2-7a1e-7000-8000-000000000002".into(),
            text: "Bonjour, ça va ?".into(),
            assistant_message_id: "0190b7c2-7a1e-7000-8000-000000000003".into(),
            stream_id: "0190b7c2-7a1e-7000-8000-000000000004".into(),
            at_ms: 1_764_000_000_000,
        }
    }

    fn answer() -> FinishedAnswer {
        FinishedAnswer {
            user: "u-1".into(),
            conversation_id: "0190b7c2-7a1e-7000-8000-000000000001".into(),
            message_id: "0190b7c2-7a1e-7000-8000-000000000003".into(),
            content: "Très bien.".into(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
            },
            at_ms: 1_764_000_001_000,
        }
    }

    fn audit() -> AuditRecord {
        AuditRecord {
            id: "0190b7c2-7a1e-7000-8000-000000000005".into(),
            at_ms: 1_764_000_000_000,
            user: Some("u-1".into()),
            action: AuditAction::Exported,
            address: Some("192.0.2.17".into()),
            address_anonymised: Some("192.0.2.0/24".into()),
            detail: String::new(),
        }
    }

    /// The values the store binds to each statement serialize, through the
    /// driver, as the types of the columns their markers stand for: right
    /// count, right order, right types.
    #[test]
    fn bind_values_type_check_against_the_schema() {
        let schema = schema();
        let ex = exchange();
        let new = ex.new_conversation.clone().unwrap();
        let mut existing = exchange();
        existing.new_conversation = None;
        let answer = answer();
        let record = audit();
        let ids = ["a", "b"];
        for def in ALL {
            let Ok(a) = analyse(def.cql) else {
                panic!("{}", def.name)
            };
            if a.table.starts_with("system.") {
                assert!(a.markers.is_empty());
                continue;
            }
            let specs = marker_specs(&a, &schema[&a.table]);
            match def.name {
                "select_conversation" | "delete_conversation" => {
                    encode(&specs, &rows::conversation_key("u", "c"));
                }
                "select_conversations_first" => {
                    encode(&specs, &rows::conversations_first("u", 20));
                }
                "select_conversations_before" => {
                    encode(&specs, &rows::conversations_before("u", "c", 20));
                }
                "select_all_conversations"
                | "delete_user_conversations"
                | "delete_user_keys"
                | "select_all_keys"
                | "select_audit_months"
                | "delete_audit_months" => {
                    encode(&specs, &("u",));
                }
                "select_all_messages" | "delete_messages" => {
                    encode(&specs, &("c",));
                }
                "insert_conversation" => {
                    encode(&specs, &rows::insert_conversation(&ex, &new));
                }
                "touch_conversation" => {
                    encode(&specs, &rows::touch_conversation(1, "u", "c"));
                }
                "select_messages_by_id" => {
                    encode(&specs, &rows::messages_by_id("c", &ids));
                }
                "select_messages_first" | "select_messages_last" => {
                    encode(&specs, &rows::messages_limit("c", 10));
                }
                "select_messages_after" => {
                    encode(&specs, &rows::messages_after("c", "m", 10));
                }
                "insert_user_message" => {
                    encode(&specs, &rows::insert_user_message(&ex));
                }
                "insert_pending_answer" => {
                    encode(&specs, &rows::insert_pending_answer(&ex));
                }
                "finish_answer" => {
                    encode(&specs, &rows::finish_answer(&answer));
                }
                "claim_key" => {
                    encode(&specs, &rows::claim_key(&ex));
                    encode(&specs, &rows::claim_key(&existing));
                }
                "select_key" | "delete_key" => {
                    encode(&specs, &rows::key("u", "c"));
                }
                "insert_audit" => {
                    encode(&specs, &rows::insert_audit("u", "2025-11", &record));
                }
                "set_audit_address" => {
                    encode(
                        &specs,
                        &rows::set_audit_address(60, "192.0.2.17", "u", "2025-11", "a"),
                    );
                }
                "insert_audit_month" | "select_audit" | "delete_audit_month" => {
                    encode(&specs, &rows::user_month("u", "2025-11"));
                }
                "insert_anonymous_audit" => {
                    encode(
                        &specs,
                        &rows::insert_anonymous_audit("2025-11-24T16", &record),
                    );
                }
                "set_anonymous_audit_address" => {
                    encode(
                        &specs,
                        &rows::set_anonymous_audit_address(60, "192.0.2.17", "2025-11-24T16", "a"),
                    );
                }
                other => panic!("{other}: no bind values checked"),
            }
        }
    }

    /// `INSERT`s that leave a column out do not overwrite it: the pending
    /// answer never writes `content`, so writing an exchange again cannot
    /// undo its finished answer.
    #[test]
    fn the_pending_answer_does_not_write_what_the_answer_writes() {
        let pending = analyse(INSERT_PENDING_ANSWER).unwrap();
        let finish = analyse(FINISH_ANSWER).unwrap();
        for (column, _) in &finish.assigned {
            assert!(
                !pending.assigned.iter().any(|(c, _)| c == column),
                "{column} is written by both"
            );
        }
        assert!(pending
            .assigned
            .contains(&("role".into(), Val::Lit("assistant".into()))));
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
    }
}
