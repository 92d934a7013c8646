//! The embedded store: SQLite (rusqlite, bundled library) in one file under
//! the data dir. The default on a fresh machine and the store of the tests.
//!
//! Why SQLite: durable transactions in one file with nothing to install,
//! and a library compiled into the binary. WAL mode with `synchronous=FULL`
//! makes every commit durable before it returns (an `ack` promises the user
//! message survives a crash); the Persister batches answers so that a busy
//! server pays one fsync per batch, not per answer. One connection behind a
//! mutex for writes, used from blocking tasks (SQLite serialises writers
//! anyway), and a second one for the reads on a `send`'s path (the
//! idempotency lookup, the conversation and its recent messages): in WAL
//! mode readers do not wait for a writer, so a `send` never queues behind
//! another one's fsync or a Persister batch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use rusqlite_migration::{Migrations, M};
use skald_actors::ports::store::{
    AnswerCheckpoint, AnswerEnd, AuditAction, AuditFilter, AuditRecord, BeginOutcome, Conversation,
    Exchange, Feedback, FeedbackFilter, FeedbackRecord, FinishedAnswer, MessageRole, NewExchange,
    Page, Rating, Store, StoreError, StoredBot, StoredMessage, UsageFilter, UsageRecord,
    UserExport, MAX_PAGE,
};
use skald_actors::time::Month;
use skald_protocol::{
    ClientMessageId, ConversationId, ErrorBody, ErrorCode, FinishReason, MessageId, Usage, UserId,
};

/// The schema, in order (`rusqlite_migration` keeps the version in
/// `PRAGMA user_version`). Never edit one that shipped: add the next.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    bot TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX conversations_by_user ON conversations (user, id);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
CREATE INDEX messages_by_user ON messages (user);
CREATE TABLE exchanges (
    user TEXT NOT NULL,
    client_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    user_message_id TEXT NOT NULL,
    assistant_message_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    PRIMARY KEY (user, client_id)
);
CREATE INDEX exchanges_by_conversation ON exchanges (conversation_id);
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    user TEXT,
    action TEXT NOT NULL,
    address TEXT,
    address_anonymised TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_user ON audit (user);
CREATE INDEX audit_by_time ON audit (at_ms);
"#,
        ),
        // Checkpoints of live answers, and the error a failed answer's
        // `done` carried (replayed to a resent `send.id`).
        M::up(
            r#"
ALTER TABLE messages ADD COLUMN written_at_ms INTEGER;
ALTER TABLE messages ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE messages ADD COLUMN error_code TEXT;
ALTER TABLE messages ADD COLUMN error_message TEXT;
CREATE INDEX messages_unfinished ON messages (written_at_ms)
    WHERE role = 'assistant' AND finish_reason IS NULL;
"#,
        ),
        // What the OpenAI-compatible API and reasoning models add to a
        // message: the reasoning and tool calls of an answer (tool calls
        // as a JSON array), the call a `tool` message answers; and whether
        // an answer's usage is Skald's estimate (the upstream gave none).
        M::up(
            r#"
ALTER TABLE messages ADD COLUMN reasoning TEXT;
ALTER TABLE messages ADD COLUMN tool_calls TEXT;
ALTER TABLE messages ADD COLUMN tool_call_id TEXT;
ALTER TABLE messages ADD COLUMN usage_estimated INTEGER;
"#,
        ),
        // The Admin API: bots stored at runtime (`settings` is the JSON of
        // `[bots.<name>]`, NULL for a deletion), who made an audited change
        // when not the user themself, users' feedback on answers, and
        // usage by answer (kept when its conversation is deleted or its
        // user erased: counters, with no content), counted from the
        // answers already stored.
        M::up(
            r#"
CREATE TABLE bots (
    name TEXT PRIMARY KEY,
    settings TEXT,
    updated_at_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
ALTER TABLE audit ADD COLUMN actor TEXT;
ALTER TABLE messages ADD COLUMN feedback_rating INTEGER;
ALTER TABLE messages ADD COLUMN feedback_comment TEXT;
ALTER TABLE messages ADD COLUMN feedback_at_ms INTEGER;
CREATE INDEX messages_with_feedback ON messages (id) WHERE feedback_rating IS NOT NULL;
CREATE INDEX audit_by_user_newest ON audit (user, id);
CREATE TABLE answer_usage (
    message_id TEXT PRIMARY KEY,
    month TEXT NOT NULL,
    user TEXT NOT NULL,
    bot TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_by_month ON answer_usage (month, user, bot);
INSERT INTO answer_usage (message_id, month, user, bot, tokens)
SELECT m.id, strftime('%Y-%m', m.created_at_ms / 1000, 'unixepoch'), m.user, c.bot,
       COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0)
FROM messages m JOIN conversations c ON c.id = m.conversation_id
WHERE m.role = 'assistant';
"#,
        ),
    ])
}

#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("embedded store at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("embedded store at {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("embedded store at {path}: schema migration: {source}")]
    Migrate {
        path: String,
        source: rusqlite_migration::Error,
    },
}

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::unavailable(e)
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/skald.db` and migrates it.
    pub fn open_in(dir: &Path) -> Result<SqliteStore, SqliteError> {
        std::fs::create_dir_all(dir).map_err(|source| SqliteError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        SqliteStore::open(&dir.join("skald.db"))
    }

    pub fn open(path: &Path) -> Result<SqliteStore, SqliteError> {
        let err = |source| SqliteError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|source| SqliteError::Migrate {
                path: path.display().to_string(),
                source,
            })?;
        let reader = Connection::open(path).map_err(err)?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writing connection in a blocking task.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        on(self.conn.clone(), f).await
    }

    /// Runs `f`, which only reads, on the reading connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        on(self.reader.clone(), f).await
    }
}

/// Runs `f` on `conn` in a blocking task (SQLite calls block).
async fn on<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    })
    .await
    .map_err(StoreError::unavailable)?
}

const CONVERSATION_COLUMNS: &str = "id, user, bot, title, created_at_ms, updated_at_ms";
const MESSAGE_COLUMNS: &str = "id, conversation_id, role, content, created_at_ms, finish_reason, \
     prompt_tokens, completion_tokens, reasoning_tokens, usage_estimated, reasoning, tool_calls, \
     tool_call_id, feedback_rating, feedback_comment, feedback_at_ms";
/// What a stored answer's end reads from (after the message columns, or
/// alone in the exchange query).
const END_COLUMNS: &str = "finish_reason, prompt_tokens, completion_tokens, reasoning_tokens, \
     usage_estimated, error_code, error_message";

fn text<T: From<String>>(r: &Row, i: usize) -> rusqlite::Result<T> {
    r.get::<_, String>(i).map(T::from)
}

fn conversation_row(r: &Row) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: text(r, 0)?,
        user: text(r, 1)?,
        bot: r.get(2)?,
        title: r.get(3)?,
        created_at_ms: r.get(4)?,
        updated_at_ms: r.get(5)?,
    })
}

fn finish_reason(s: Option<String>) -> Option<FinishReason> {
    s?.parse().ok()
}

/// Usage from its columns, starting at `i` (prompt, completion, reasoning,
/// estimated).
fn usage_at(r: &Row, i: usize) -> rusqlite::Result<Option<Usage>> {
    let (prompt, completion): (Option<i64>, Option<i64>) = (r.get(i)?, r.get(i + 1)?);
    let reasoning: Option<i64> = r.get(i + 2)?;
    let estimated: Option<bool> = r.get(i + 3)?;
    Ok(prompt.zip(completion).map(|(p, c)| Usage {
        prompt_tokens: p as u64,
        completion_tokens: c as u64,
        reasoning_tokens: reasoning.map(|n| n as u64),
        estimated: estimated.unwrap_or(false),
    }))
}

/// The end of an answer from [`END_COLUMNS`], starting at `i`.
fn end_at(r: &Row, i: usize) -> rusqlite::Result<Option<AnswerEnd>> {
    let Some(finish_reason) = finish_reason(r.get(i)?) else {
        return Ok(None);
    };
    let usage = usage_at(r, i + 1)?.unwrap_or_default();
    let code: Option<String> = r.get(i + 5)?;
    let message: Option<String> = r.get(i + 6)?;
    let error = code.map(|code| ErrorBody {
        code: code.parse().unwrap_or(ErrorCode::Internal),
        message: message.unwrap_or_default(),
    });
    Ok(Some(AnswerEnd {
        finish_reason,
        usage,
        error,
    }))
}

fn message_row(r: &Row) -> rusqlite::Result<StoredMessage> {
    let role: String = r.get(2)?;
    Ok(StoredMessage {
        id: text(r, 0)?,
        conversation_id: text(r, 1)?,
        role: role.parse().unwrap_or(MessageRole::Assistant),
        content: r.get(3)?,
        created_at_ms: r.get(4)?,
        finish_reason: finish_reason(r.get(5)?),
        usage: usage_at(r, 6)?,
        reasoning: r.get(10)?,
        tool_calls: super::tool_calls_of_column(r.get::<_, Option<String>>(11)?.as_deref()),
        tool_call_id: r.get(12)?,
        feedback: feedback_at(r, 13)?,
    })
}

/// Feedback from its columns (rating, comment, time), starting at `i`.
fn feedback_at(r: &Row, i: usize) -> rusqlite::Result<Option<Feedback>> {
    let rating: Option<i8> = r.get(i)?;
    let Some(rating) = rating.and_then(|n| Rating::try_from(n).ok()) else {
        return Ok(None);
    };
    Ok(Some(Feedback {
        rating,
        comment: r.get(i + 1)?,
        at_ms: r.get::<_, Option<i64>>(i + 2)?.unwrap_or_default(),
    }))
}

fn exchange_query() -> String {
    format!(
        "SELECT e.client_id, e.conversation_id, e.user_message_id, e.assistant_message_id, \
         e.stream_id, {} FROM exchanges e LEFT JOIN messages m ON m.id = e.assistant_message_id",
        END_COLUMNS
            .split(", ")
            .map(|c| format!("m.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn exchange_row(r: &Row) -> rusqlite::Result<(ClientMessageId, Exchange)> {
    Ok((
        text(r, 0)?,
        Exchange {
            conversation_id: text(r, 1)?,
            user_message_id: text(r, 2)?,
            assistant_message_id: text(r, 3)?,
            stream_id: text(r, 4)?,
            finished: end_at(r, 5)?,
        },
    ))
}

fn audit_row(r: &Row) -> rusqlite::Result<AuditRecord> {
    let action: String = r.get(3)?;
    Ok(AuditRecord {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        user: r.get::<_, Option<String>>(2)?.map(UserId::from),
        action: action.parse().unwrap_or(AuditAction::AuthFailed),
        address: r.get(4)?,
        address_anonymised: r.get(5)?,
        detail: r.get(6)?,
        actor: r.get::<_, Option<String>>(7)?.map(UserId::from),
    })
}

fn find_exchange(
    conn: &Connection,
    user: &str,
    client_id: &str,
) -> rusqlite::Result<Option<Exchange>> {
    conn.query_row(
        &format!(
            "{} WHERE e.user = ?1 AND e.client_id = ?2",
            exchange_query()
        ),
        params![user, client_id],
        exchange_row,
    )
    .optional()
    .map(|found| found.map(|(_, e)| e))
}

fn owns(conn: &Connection, user: &str, conversation_id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM conversations WHERE id = ?1 AND user = ?2",
        params![conversation_id, user],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

fn finish_in(tx: &Transaction, answer: &FinishedAnswer) -> rusqlite::Result<()> {
    let end = &answer.end;
    let changed = tx.execute(
        "UPDATE messages SET content = ?1, finish_reason = ?2, prompt_tokens = ?3, \
         completion_tokens = ?4, reasoning_tokens = ?5, error_code = ?6, error_message = ?7, \
         written_at_ms = ?8, reasoning = ?11, tool_calls = ?12, usage_estimated = ?13 \
         WHERE id = ?9 AND conversation_id = ?10",
        params![
            answer.content,
            end.finish_reason.as_str(),
            end.usage.prompt_tokens as i64,
            end.usage.completion_tokens as i64,
            end.usage.reasoning_tokens.map(|n| n as i64),
            end.error.as_ref().map(|e| e.code.as_str()),
            end.error.as_ref().map(|e| e.message.as_str()),
            answer.at_ms,
            answer.message_id.as_str(),
            answer.conversation_id.as_str(),
            (!answer.reasoning.is_empty()).then_some(answer.reasoning.as_str()),
            super::tool_calls_column(&answer.tool_calls),
            end.usage.estimated.then_some(true)
        ],
    )?;
    if changed > 0 {
        tx.execute(
            "UPDATE conversations SET updated_at_ms = MAX(updated_at_ms, ?1) WHERE id = ?2",
            params![answer.at_ms, answer.conversation_id.as_str()],
        )?;
    }
    // Counted even when the conversation was deleted while it streamed.
    tx.execute(
        "UPDATE answer_usage SET tokens = ?1 WHERE message_id = ?2",
        params![end.usage.total() as i64, answer.message_id.as_str()],
    )?;
    Ok(())
}

fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> &str) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|item| id(item).to_owned())
    } else {
        None
    };
    Page { items, next }
}

fn clamp(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        let (user, id) = (user.clone(), id.clone());
        self.read(move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1 AND user = ?2"
                ),
                params![id.as_str(), user.as_str()],
                conversation_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn exchange(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        let (user, client_id) = (user.clone(), client_id.clone());
        self.read(move |conn| find_exchange(conn, &user, &client_id).map_err(unavailable))
            .await
    }

    async fn begin_exchange(&self, ex: NewExchange) -> Result<BeginOutcome, StoreError> {
        self.run(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            let claimed = tx
                .execute(
                    "INSERT OR IGNORE INTO exchanges (user, client_id, conversation_id, \
                     user_message_id, assistant_message_id, stream_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        ex.user.as_str(),
                        ex.client_id.as_str(),
                        ex.conversation_id.as_str(),
                        ex.user_message_id.as_str(),
                        ex.assistant_message_id.as_str(),
                        ex.stream_id.as_str()
                    ],
                )
                .map_err(unavailable)?;
            if claimed == 0 {
                let existing = find_exchange(&tx, &ex.user, &ex.client_id)
                    .map_err(unavailable)?
                    .ok_or_else(|| StoreError::unavailable("idempotency key vanished"))?;
                return Ok(BeginOutcome::Existing(existing));
            }
            match &ex.new_conversation {
                Some(new) => {
                    tx.execute(
                        "INSERT INTO conversations (id, user, bot, title, created_at_ms, updated_at_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![ex.conversation_id.as_str(), ex.user.as_str(), ex.bot, new.title, ex.at_ms],
                    )
                    .map_err(unavailable)?;
                }
                None => {
                    let touched = tx
                        .execute(
                            "UPDATE conversations SET updated_at_ms = ?1 WHERE id = ?2 AND user = ?3",
                            params![ex.at_ms, ex.conversation_id.as_str(), ex.user.as_str()],
                        )
                        .map_err(unavailable)?;
                    if touched == 0 {
                        return Err(StoreError::NotFound("conversation"));
                    }
                }
            }
            let insert = "INSERT INTO messages (id, conversation_id, user, role, content, \
                          created_at_ms, written_at_ms, tool_call_id) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)";
            let asked = match ex.tool_call_id {
                Some(_) => MessageRole::Tool,
                None => MessageRole::User,
            };
            tx.execute(
                "INSERT INTO answer_usage (message_id, month, user, bot) VALUES (?1, ?2, ?3, ?4)",
                params![
                    ex.assistant_message_id.as_str(),
                    Month::of(ex.at_ms).to_string(),
                    ex.user.as_str(),
                    ex.bot
                ],
            )
            .map_err(unavailable)?;
            for (id, role, content, tool_call_id) in [
                (&ex.user_message_id, asked, ex.text.as_str(), ex.tool_call_id.as_deref()),
                (&ex.assistant_message_id, MessageRole::Assistant, "", None),
            ] {
                tx.execute(
                    insert,
                    params![
                        id.as_str(),
                        ex.conversation_id.as_str(),
                        ex.user.as_str(),
                        role.as_str(),
                        content,
                        ex.at_ms,
                        tool_call_id
                    ],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(BeginOutcome::Created)
        })
        .await
    }

    async fn finish_answers(&self, answers: Vec<FinishedAnswer>) -> Result<(), StoreError> {
        self.run(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for answer in &answers {
                finish_in(&tx, answer).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn checkpoint_answers(
        &self,
        checkpoints: Vec<AnswerCheckpoint>,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for cp in &checkpoints {
                tx.execute(
                    "UPDATE messages SET content = ?1, written_at_ms = ?2 \
                     WHERE id = ?3 AND conversation_id = ?4 AND finish_reason IS NULL",
                    params![
                        cp.content,
                        cp.at_ms,
                        cp.message_id.as_str(),
                        cp.conversation_id.as_str()
                    ],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn close_interrupted(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.run(move |conn| {
            conn.execute(
                "UPDATE messages SET finish_reason = 'error', prompt_tokens = 0, \
                 completion_tokens = 0, error_code = ?1, error_message = ?2 \
                 WHERE role = 'assistant' AND finish_reason IS NULL AND written_at_ms < ?3",
                params![
                    ErrorCode::Unavailable.as_str(),
                    INTERRUPTED_MESSAGE,
                    older_than_ms
                ],
            )
            .map(|n| n as u64)
            .map_err(unavailable)
        })
        .await
    }

    async fn recent_messages(
        &self,
        conversation_id: &ConversationId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conversation_id = conversation_id.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 \
                     ORDER BY id DESC LIMIT ?2"
                ))
                .map_err(unavailable)?;
            let mut messages = stmt
                .query_map(params![conversation_id.as_str(), limit as i64], message_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            messages.reverse();
            Ok(messages)
        })
        .await
    }

    async fn list_conversations(
        &self,
        user: &UserId,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError> {
        let (user, before, limit) = (user.clone(), before.map(str::to_owned), clamp(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user = ?1 \
                     AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let items = stmt
                .query_map(
                    params![user.as_str(), before, limit as i64 + 1],
                    conversation_row,
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            Ok(page(items, limit, |c| c.id.as_str()))
        })
        .await
    }

    async fn list_messages(
        &self,
        user: &UserId,
        conversation_id: &ConversationId,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Option<Page<StoredMessage>>, StoreError> {
        let (user, conversation_id) = (user.clone(), conversation_id.clone());
        let (after, limit) = (after.map(str::to_owned), clamp(limit));
        self.read(move |conn| {
            if !owns(conn, &user, &conversation_id).map_err(unavailable)? {
                return Ok(None);
            }
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 \
                     AND (?2 IS NULL OR id > ?2) ORDER BY id ASC LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let items = stmt
                .query_map(
                    params![conversation_id.as_str(), after, limit as i64 + 1],
                    message_row,
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            Ok(Some(page(items, limit, |m| m.id.as_str())))
        })
        .await
    }

    async fn delete_conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<bool, StoreError> {
        let (user, id) = (user.clone(), id.clone());
        self.run(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            if !owns(&tx, &user, &id).map_err(unavailable)? {
                return Ok(false);
            }
            for sql in [
                "DELETE FROM messages WHERE conversation_id = ?1",
                "DELETE FROM exchanges WHERE conversation_id = ?1",
                "DELETE FROM conversations WHERE id = ?1",
            ] {
                tx.execute(sql, params![id.as_str()]).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn append_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        self.run(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO audit (id, at_ms, user, action, address, address_anonymised, detail, actor) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(unavailable)?;
                for record in &records {
                    insert
                        .execute(params![
                            record.id,
                            record.at_ms,
                            record.user.as_ref().map(|u| u.as_str()),
                            record.action.as_str(),
                            record.address,
                            record.address_anonymised,
                            record.detail,
                            record.actor.as_ref().map(|u| u.as_str())
                        ])
                        .map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn export_user(&self, user: &UserId) -> Result<UserExport, StoreError> {
        let user = user.clone();
        self.run(move |conn| {
            fn all<T>(
                conn: &Connection,
                sql: &str,
                user: &str,
                row: impl FnMut(&Row) -> rusqlite::Result<T>,
            ) -> Result<Vec<T>, StoreError> {
                conn.prepare(sql)
                    .and_then(|mut stmt| {
                        stmt.query_map(params![user], row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(unavailable)
            }
            Ok(UserExport {
                conversations: all(
                    conn,
                    &format!(
                        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user = ?1 ORDER BY id"
                    ),
                    &user,
                    conversation_row,
                )?,
                messages: all(
                    conn,
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE user = ?1 \
                         ORDER BY conversation_id, id"
                    ),
                    &user,
                    message_row,
                )?,
                audit: all(
                    conn,
                    "SELECT id, at_ms, user, action, address, address_anonymised, detail, actor FROM audit \
                     WHERE user = ?1 ORDER BY at_ms, id",
                    &user,
                    audit_row,
                )?,
                idempotency_keys: all(
                    conn,
                    &format!("{} WHERE e.user = ?1 ORDER BY e.client_id", exchange_query()),
                    &user,
                    exchange_row,
                )?,
            })
        })
        .await
    }

    async fn erase_user(&self, user: &UserId) -> Result<(), StoreError> {
        let user = user.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for sql in [
                "DELETE FROM messages WHERE user = ?1",
                "DELETE FROM exchanges WHERE user = ?1",
                "DELETE FROM conversations WHERE user = ?1",
                "DELETE FROM audit WHERE user = ?1",
            ] {
                tx.execute(sql, params![user.as_str()])
                    .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn anonymise_addresses(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.run(move |conn| {
            conn.execute(
                "UPDATE audit SET address = NULL WHERE at_ms < ?1 AND address IS NOT NULL",
                params![older_than_ms],
            )
            .map(|n| n as u64)
            .map_err(unavailable)
        })
        .await
    }

    async fn set_feedback(
        &self,
        user: &UserId,
        message_id: &MessageId,
        feedback: Option<Feedback>,
    ) -> Result<bool, StoreError> {
        let (user, message_id) = (user.clone(), message_id.clone());
        self.run(move |conn| {
            let (rating, comment, at_ms) = match feedback {
                Some(f) => (Some(f.rating.as_i8()), f.comment, Some(f.at_ms)),
                None => (None, None, None),
            };
            conn.execute(
                "UPDATE messages SET feedback_rating = ?1, feedback_comment = ?2, feedback_at_ms = ?3 \
                 WHERE id = ?4 AND user = ?5 AND role = 'assistant'",
                params![rating, comment, at_ms, message_id.as_str(), user.as_str()],
            )
            .map(|changed| changed == 1)
            .map_err(unavailable)
        })
        .await
    }

    async fn list_feedback(
        &self,
        filter: &FeedbackFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<FeedbackRecord>, StoreError> {
        let (filter, before, limit) = (filter.clone(), before.map(str::to_owned), clamp(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT m.id, m.conversation_id, c.bot, m.feedback_rating, m.feedback_comment, \
                     m.feedback_at_ms FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                     WHERE m.feedback_rating IS NOT NULL AND (?1 IS NULL OR m.id < ?1) \
                     AND (?2 IS NULL OR c.bot = ?2) AND (?3 IS NULL OR m.feedback_rating = ?3) \
                     ORDER BY m.id DESC LIMIT ?4",
                )
                .map_err(unavailable)?;
            let rating = filter.rating.map(Rating::as_i8);
            let items = stmt
                .query_map(params![before, filter.bot, rating, limit as i64 + 1], |r| {
                    let Some(feedback) = feedback_at(r, 3)? else {
                        return Ok(None);
                    };
                    Ok(Some(FeedbackRecord {
                        message_id: text(r, 0)?,
                        conversation_id: text(r, 1)?,
                        bot: r.get(2)?,
                        feedback,
                    }))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            let items = items.into_iter().flatten().collect();
            Ok(page(items, limit, |f: &FeedbackRecord| f.message_id.as_str()))
        })
        .await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let (filter, before, limit) = (filter.clone(), before.map(str::to_owned), clamp(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, at_ms, user, action, address, address_anonymised, detail, actor \
                     FROM audit WHERE (?1 IS NULL OR user = ?1) AND (?2 IS NULL OR action = ?2) \
                     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
                )
                .map_err(unavailable)?;
            let user = filter.user.as_ref().map(|u| u.as_str());
            let action = filter.action.map(AuditAction::as_str);
            let items = stmt
                .query_map(params![user, action, before, limit as i64 + 1], audit_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            Ok(page(items, limit, |r: &AuditRecord| r.id.as_str()))
        })
        .await
    }

    async fn list_usage(
        &self,
        filter: &UsageFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<UsageRecord>, StoreError> {
        let (filter, limit) = (filter.clone(), clamp(limit));
        let after = before.map(super::usage_cursor::parse);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT user, bot, COUNT(*), SUM(tokens) FROM answer_usage \
                     WHERE month = ?1 AND (?2 IS NULL OR user = ?2) AND (?3 IS NULL OR bot = ?3) \
                     AND (?4 IS NULL OR (user, bot) > (?4, ?5)) \
                     GROUP BY user, bot ORDER BY user, bot LIMIT ?6",
                )
                .map_err(unavailable)?;
            let month = filter.month.to_string();
            let user = filter.user.as_ref().map(|u| u.as_str());
            let (after_user, after_bot) = after.unzip();
            let mut items = stmt
                .query_map(
                    params![
                        month,
                        user,
                        filter.bot,
                        after_user,
                        after_bot,
                        limit as i64 + 1
                    ],
                    |r| {
                        Ok(UsageRecord {
                            user: UserId::from(r.get::<_, String>(0)?),
                            bot: r.get(1)?,
                            month: filter.month,
                            requests: r.get::<_, i64>(2)? as u64,
                            tokens: r.get::<_, i64>(3)? as u64,
                        })
                    },
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            let next = (items.len() > limit).then(|| {
                items.truncate(limit);
                items.last().map(super::usage_cursor::of)
            });
            Ok(Page {
                items,
                next: next.flatten(),
            })
        })
        .await
    }

    async fn stored_bots(&self) -> Result<Vec<StoredBot>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, settings, updated_at_ms, updated_by FROM bots")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |r| {
                    let settings: Option<String> = r.get(1)?;
                    Ok(super::stored_bot(
                        r.get(0)?,
                        settings.as_deref(),
                        r.get(2)?,
                        r.get(3)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            Ok(rows.into_iter().flatten().collect())
        })
        .await
    }

    async fn put_bot(&self, bot: StoredBot) -> Result<(), StoreError> {
        self.run(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO bots (name, settings, updated_at_ms, updated_by) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    bot.name,
                    super::bot_settings_column(&bot),
                    bot.updated_at_ms,
                    bot.updated_by.as_str()
                ],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }
}

/// What a closed interrupted answer's error says.
pub const INTERRUPTED_MESSAGE: &str =
    "the answer was interrupted (the server stopped); this is what was saved of it";

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "skald-sqlite-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn passes_the_store_contract() {
        let dir = temp_dir("contract");
        let store = SqliteStore::open_in(&dir).unwrap();
        skald_actors::testkit::store::run_all(&store, "sqlite").await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn survives_reopening_and_migrates_once() {
        let dir = temp_dir("reopen");
        let user = UserId::from("u");
        let ex = skald_actors::testkit::store::exchange(&user, "k", None, "kept");
        {
            let store = SqliteStore::open_in(&dir).unwrap();
            store.begin_exchange(ex.clone()).await.unwrap();
        }
        let store = SqliteStore::open_in(&dir).unwrap();
        assert!(store
            .exchange(&user, &ClientMessageId::from("k"))
            .await
            .unwrap()
            .is_some());
        assert!(store
            .conversation(&user, &ex.conversation_id)
            .await
            .unwrap()
            .is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn old_addresses_keep_only_their_anonymised_form() {
        let dir = temp_dir("anon");
        let store = SqliteStore::open_in(&dir).unwrap();
        let record = |id: &str, at_ms| AuditRecord {
            id: id.into(),
            at_ms,
            user: Some("u".into()),
            action: AuditAction::AuthFailed,
            address: Some("198.51.100.23".into()),
            address_anonymised: Some("198.51.100.0".into()),
            detail: "bad signature".into(),
            actor: None,
        };
        store
            .append_audits(vec![record("old", 1_000)])
            .await
            .unwrap();
        store
            .append_audits(vec![record("new", 10_000)])
            .await
            .unwrap();
        assert_eq!(store.anonymise_addresses(5_000).await.unwrap(), 1);
        let audit = store.export_user(&"u".into()).await.unwrap().audit;
        assert_eq!(audit[0].address, None);
        assert_eq!(audit[0].address_anonymised.as_deref(), Some("198.51.100.0"));
        assert_eq!(audit[1].address.as_deref(), Some("198.51.100.23"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
