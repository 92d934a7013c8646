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
use skald_actors::ports::store::{
    AuditAction, AuditRecord, BeginOutcome, Conversation, Exchange, FinishedAnswer, MessageRole,
    NewExchange, Page, Store, StoreError, StoredMessage, UserExport, MAX_PAGE,
};
use skald_protocol::{FinishReason, Usage};

/// The schema, by version (`PRAGMA user_version`). Applied in order, once.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

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
}

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
        migrate(&mut conn).map_err(err)?;
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
    .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

const CONVERSATION_COLUMNS: &str = "id, user, bot, title, created_at_ms, updated_at_ms";
const MESSAGE_COLUMNS: &str =
    "id, conversation_id, role, content, created_at_ms, finish_reason, prompt_tokens, completion_tokens";

fn conversation_row(r: &Row) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: r.get(0)?,
        user: r.get(1)?,
        bot: r.get(2)?,
        title: r.get(3)?,
        created_at_ms: r.get(4)?,
        updated_at_ms: r.get(5)?,
    })
}

fn finish_reason(s: Option<String>) -> Option<FinishReason> {
    match s.as_deref()? {
        "stop" => Some(FinishReason::Stop),
        "length" => Some(FinishReason::Length),
        "cancelled" => Some(FinishReason::Cancelled),
        "error" => Some(FinishReason::Error),
        _ => None,
    }
}

fn usage(prompt: Option<i64>, completion: Option<i64>) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: prompt? as u64,
        completion_tokens: completion? as u64,
    })
}

fn message_row(r: &Row) -> rusqlite::Result<StoredMessage> {
    let role: String = r.get(2)?;
    Ok(StoredMessage {
        id: r.get(0)?,
        conversation_id: r.get(1)?,
        role: if role == "user" {
            MessageRole::User
        } else {
            MessageRole::Assistant
        },
        content: r.get(3)?,
        created_at_ms: r.get(4)?,
        finish_reason: finish_reason(r.get(5)?),
        usage: usage(r.get(6)?, r.get(7)?),
    })
}

const EXCHANGE_QUERY: &str = "SELECT e.client_id, e.conversation_id, e.user_message_id, \
     e.assistant_message_id, e.stream_id, m.finish_reason, m.prompt_tokens, m.completion_tokens \
     FROM exchanges e LEFT JOIN messages m ON m.id = e.assistant_message_id";

fn exchange_row(r: &Row) -> rusqlite::Result<(String, Exchange)> {
    let finished = match (finish_reason(r.get(5)?), usage(r.get(6)?, r.get(7)?)) {
        (Some(reason), Some(usage)) => Some((reason, usage)),
        _ => None,
    };
    Ok((
        r.get(0)?,
        Exchange {
            conversation_id: r.get(1)?,
            user_message_id: r.get(2)?,
            assistant_message_id: r.get(3)?,
            stream_id: r.get(4)?,
            finished,
        },
    ))
}

fn audit_row(r: &Row) -> rusqlite::Result<AuditRecord> {
    let action: String = r.get(3)?;
    Ok(AuditRecord {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        user: r.get(2)?,
        action: AuditAction::parse(&action).unwrap_or(AuditAction::AuthFailed),
        address: r.get(4)?,
        address_anonymised: r.get(5)?,
        detail: r.get(6)?,
    })
}

fn find_exchange(
    conn: &Connection,
    user: &str,
    client_id: &str,
) -> rusqlite::Result<Option<Exchange>> {
    conn.query_row(
        &format!("{EXCHANGE_QUERY} WHERE e.user = ?1 AND e.client_id = ?2"),
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
    let changed = tx.execute(
        "UPDATE messages SET content = ?1, finish_reason = ?2, prompt_tokens = ?3, \
         completion_tokens = ?4 WHERE id = ?5 AND conversation_id = ?6",
        params![
            answer.content,
            answer.finish_reason.as_str(),
            answer.usage.prompt_tokens as i64,
            answer.usage.completion_tokens as i64,
            answer.message_id,
            answer.conversation_id
        ],
    )?;
    if changed > 0 {
        tx.execute(
            "UPDATE conversations SET updated_at_ms = MAX(updated_at_ms, ?1) WHERE id = ?2",
            params![answer.at_ms, answer.conversation_id],
        )?;
    }
    Ok(())
}

fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id)
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
    async fn conversation(&self, user: &str, id: &str) -> Result<Option<Conversation>, StoreError> {
        let (user, id) = (user.to_owned(), id.to_owned());
        self.read(move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1 AND user = ?2"
                ),
                params![id, user],
                conversation_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn exchange(&self, user: &str, client_id: &str) -> Result<Option<Exchange>, StoreError> {
        let (user, client_id) = (user.to_owned(), client_id.to_owned());
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
                        ex.user,
                        ex.client_id,
                        ex.conversation_id,
                        ex.user_message_id,
                        ex.assistant_message_id,
                        ex.stream_id
                    ],
                )
                .map_err(unavailable)?;
            if claimed == 0 {
                let existing = find_exchange(&tx, &ex.user, &ex.client_id)
                    .map_err(unavailable)?
                    .ok_or_else(|| StoreError::Unavailable("idempotency key vanished".into()))?;
                return Ok(BeginOutcome::Existing(existing));
            }
            match &ex.new_conversation {
                Some(new) => {
                    tx.execute(
                        "INSERT INTO conversations (id, user, bot, title, created_at_ms, updated_at_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![ex.conversation_id, ex.user, new.bot, new.title, ex.at_ms],
                    )
                    .map_err(unavailable)?;
                }
                None => {
                    let touched = tx
                        .execute(
                            "UPDATE conversations SET updated_at_ms = ?1 WHERE id = ?2 AND user = ?3",
                            params![ex.at_ms, ex.conversation_id, ex.user],
                        )
                        .map_err(unavailable)?;
                    if touched == 0 {
                        return Err(StoreError::NotFound("no such conversation".into()));
                    }
                }
            }
            let insert = "INSERT INTO messages (id, conversation_id, user, role, content, created_at_ms) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
            tx.execute(
                insert,
                params![ex.user_message_id, ex.conversation_id, ex.user, "user", ex.text, ex.at_ms],
            )
            .map_err(unavailable)?;
            tx.execute(
                insert,
                params![ex.assistant_message_id, ex.conversation_id, ex.user, "assistant", "", ex.at_ms],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(BeginOutcome::Created)
        })
        .await
    }

    async fn finish_answer(&self, answer: FinishedAnswer) -> Result<(), StoreError> {
        self.finish_answers(vec![answer]).await
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

    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 \
                     ORDER BY id DESC LIMIT ?2"
                ))
                .map_err(unavailable)?;
            let mut messages = stmt
                .query_map(params![conversation_id, limit as i64], message_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            messages.reverse();
            Ok(messages)
        })
        .await
    }

    async fn list_conversations(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError> {
        let (user, before, limit) = (user.to_owned(), before.map(str::to_owned), clamp(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user = ?1 \
                     AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
                ))
                .map_err(unavailable)?;
            let items = stmt
                .query_map(params![user, before, limit as i64 + 1], conversation_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            Ok(page(items, limit, |c| c.id.clone()))
        })
        .await
    }

    async fn list_messages(
        &self,
        user: &str,
        conversation_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Option<Page<StoredMessage>>, StoreError> {
        let (user, conversation_id) = (user.to_owned(), conversation_id.to_owned());
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
                    params![conversation_id, after, limit as i64 + 1],
                    message_row,
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            Ok(Some(page(items, limit, |m| m.id.clone())))
        })
        .await
    }

    async fn delete_conversation(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let (user, id) = (user.to_owned(), id.to_owned());
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
                tx.execute(sql, params![id]).map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.run(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO audit (id, at_ms, user, action, address, address_anonymised, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    record.id,
                    record.at_ms,
                    record.user,
                    record.action.as_str(),
                    record.address,
                    record.address_anonymised,
                    record.detail
                ],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn export_user(&self, user: &str) -> Result<UserExport, StoreError> {
        let user = user.to_owned();
        self.run(move |conn| {
            let all = |sql: &str| -> Result<rusqlite::Statement<'_>, StoreError> {
                conn.prepare(sql).map_err(unavailable)
            };
            let conversations = all(&format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user = ?1 ORDER BY id"
            ))?
            .query_map(params![user], conversation_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(unavailable)?;
            let messages = all(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE user = ?1 ORDER BY conversation_id, id"
            ))?
            .query_map(params![user], message_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(unavailable)?;
            let audit = all(
                "SELECT id, at_ms, user, action, address, address_anonymised, detail FROM audit \
                 WHERE user = ?1 ORDER BY at_ms, id",
            )?
            .query_map(params![user], audit_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(unavailable)?;
            let idempotency_keys = all(&format!("{EXCHANGE_QUERY} WHERE e.user = ?1 ORDER BY e.client_id"))?
                .query_map(params![user], exchange_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(unavailable)?;
            Ok(UserExport {
                conversations,
                messages,
                audit,
                idempotency_keys,
            })
        })
        .await
    }

    async fn erase_user(&self, user: &str) -> Result<(), StoreError> {
        let user = user.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(unavailable)?;
            for sql in [
                "DELETE FROM messages WHERE user = ?1",
                "DELETE FROM exchanges WHERE user = ?1",
                "DELETE FROM conversations WHERE user = ?1",
                "DELETE FROM audit WHERE user = ?1",
            ] {
                tx.execute(sql, params![user]).map_err(unavailable)?;
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "skald-sqlite-{tag}-{}-{}",
            std::process::id(),
            skald_actors::new_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn passes_the_store_contract() {
        let dir = temp_dir("contract");
        let store = SqliteStore::open_in(&dir).unwrap();
        skald_actors::store_contract::run_all(&store, "sqlite").await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn survives_reopening_and_migrates_once() {
        let dir = temp_dir("reopen");
        let ex = skald_actors::store_contract::exchange("u", "k", None, "kept");
        {
            let store = SqliteStore::open_in(&dir).unwrap();
            store.begin_exchange(ex.clone()).await.unwrap();
        }
        let store = SqliteStore::open_in(&dir).unwrap();
        assert!(store.exchange("u", "k").await.unwrap().is_some());
        assert!(store
            .conversation("u", &ex.conversation_id)
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
        };
        store.append_audit(record("old", 1_000)).await.unwrap();
        store.append_audit(record("new", 10_000)).await.unwrap();
        assert_eq!(store.anonymise_addresses(5_000).await.unwrap(), 1);
        let audit = store.export_user("u").await.unwrap().audit;
        assert_eq!(audit[0].address, None);
        assert_eq!(audit[0].address_anonymised.as_deref(), Some("198.51.100.0"));
        assert_eq!(audit[1].address.as_deref(), Some("198.51.100.23"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
