//! The ScyllaDB store: `Store` over the `scylla` driver and the schema of
//! `migrations/`.
//!
//! The data model and its reasons are in docs/scylla.md; in short:
//! conversations partitioned by user (newest first), messages by
//! conversation (oldest first), idempotency keys and their exchanges by
//! user, audit records by user and month (plus a month index for erase and
//! export), all clustered by time-ordered ids. Every statement is in
//! [`statements`], prepared once at connect, marked idempotent or not (the
//! driver retries only idempotent ones); every row mapping is in [`rows`].
//! This file only sequences them.
//!
//! `begin_exchange` claims the key with a lightweight transaction whose row
//! holds the whole exchange, then writes the conversation and both messages
//! in one logged batch. If the process stops between the two, whoever finds
//! the key next (`exchange`, or `begin_exchange` on a resend) sees the
//! user's message missing and writes the batch from the key's row: an
//! `ack`, which is only ever sent after these writes, always points at a
//! stored message, and a retried `begin_exchange` with the same exchange
//! recognises its own claim and completes it.
//!
//! Full client addresses of audit records are written with a TTL that ends
//! 30 days after the record's time; ScyllaDB drops them by itself, so
//! [`Store::anonymise_addresses`] has nothing to do here and returns 0.

pub mod migrate;
pub mod rows;
#[cfg(test)]
mod schema_check;
pub mod statements;

use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::deserialize::row::DeserializeRow;
use ::scylla::errors::{
    ExecutionError, NewSessionError, PagerExecutionError, PrepareError, UseKeyspaceError,
};
use ::scylla::policies::load_balancing::DefaultPolicy;
use ::scylla::policies::retry::DefaultRetryPolicy;
use ::scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::{Consistency, SerialConsistency};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use skald_actors::ports::store::{
    AuditRecord, BeginOutcome, Conversation, Exchange, FinishedAnswer, NewExchange, Page, Store,
    StoreError, StoredMessage, UserExport,
};

pub use migrate::{migrate, Migration, MIGRATIONS};
use rows::{AuditRow, ConversationRow, KeyRow, MessageRow, MonthRow, ADDRESS_TTL_SECS};
use statements::Prepared;

/// Configuration of the ScyllaDB store (the `[scylla]` section).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaSettings {
    /// Contact points, `host:port` (`SKALD_SCYLLA_NODES`, comma-separated);
    /// empty: the embedded store is used instead.
    pub nodes: Vec<String>,
    /// `SKALD_SCYLLA_KEYSPACE`.
    pub keyspace: String,
    /// Replication of the keyspace when `skald migrate` creates it, a CQL
    /// map literal. Ignored once the keyspace exists (change it with
    /// `ALTER KEYSPACE`).
    pub replication: String,
    /// Consistency of every read and write; lightweight transactions use
    /// the matching serial consistency (`LOCAL_SERIAL` for `local_*`).
    pub consistency: ScyllaConsistency,
    /// The datacenter this instance prefers (its own); unset: any.
    pub local_datacenter: Option<String>,
    /// Bound on each request, retries included.
    pub request_timeout_ms: u64,
    /// Bound on opening a connection to a node.
    pub connect_timeout_ms: u64,
    /// Password authentication, when the cluster requires it.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Run the migrations at start (off: run `skald migrate` first).
    pub migrate_on_start: bool,
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        ScyllaSettings {
            nodes: Vec::new(),
            keyspace: "skald".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            consistency: ScyllaConsistency::LocalQuorum,
            local_datacenter: None,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            username: None,
            password: None,
            migrate_on_start: false,
        }
    }
}

impl std::fmt::Debug for ScyllaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaSettings")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("local_datacenter", &self.local_datacenter)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl ScyllaSettings {
    /// Whether ScyllaDB is configured at all.
    pub fn enabled(&self) -> bool {
        !self.nodes.is_empty()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Checks what can be checked without a cluster (for config validation).
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.iter().any(|n| n.trim().is_empty()) {
            return Err("scylla.nodes must not contain an empty address".into());
        }
        migrate::check_keyspace(&self.keyspace).map_err(|e| format!("scylla.keyspace: {e}"))?;
        migrate::check_replication(&self.replication)
            .map_err(|e| format!("scylla.replication: {e}"))?;
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(
                "scylla.request_timeout_ms and connect_timeout_ms must be at least 1".into(),
            );
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("scylla.password is set without scylla.username".into());
        }
        Ok(())
    }
}

/// The consistency levels that make sense for this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScyllaConsistency {
    One,
    LocalOne,
    Quorum,
    LocalQuorum,
    EachQuorum,
    All,
}

impl ScyllaConsistency {
    pub fn consistency(self) -> Consistency {
        match self {
            ScyllaConsistency::One => Consistency::One,
            ScyllaConsistency::LocalOne => Consistency::LocalOne,
            ScyllaConsistency::Quorum => Consistency::Quorum,
            ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
            ScyllaConsistency::EachQuorum => Consistency::EachQuorum,
            ScyllaConsistency::All => Consistency::All,
        }
    }

    /// The serial consistency of lightweight transactions: Paxos within the
    /// local datacenter for `local_*` levels, across the cluster otherwise.
    pub fn serial(self) -> SerialConsistency {
        match self {
            ScyllaConsistency::LocalOne | ScyllaConsistency::LocalQuorum => {
                SerialConsistency::LocalSerial
            }
            _ => SerialConsistency::Serial,
        }
    }
}

/// Errors of the ScyllaDB store. The driver's errors are large; they are
/// boxed so that every `Result` here stays small.
#[derive(Debug, thiserror::Error)]
pub enum ScyllaError {
    #[error("ScyllaDB settings: {0}")]
    Settings(String),
    #[error("could not connect to ScyllaDB: {0}")]
    Connect(Box<NewSessionError>),
    #[error("ScyllaDB schema: {0}")]
    Schema(String),
    #[error("could not prepare the statement {name}: {source}")]
    Prepare {
        name: &'static str,
        source: Box<PrepareError>,
    },
    #[error("ScyllaDB request failed: {0}")]
    Execution(Box<ExecutionError>),
    #[error("ScyllaDB paged request failed: {0}")]
    Pager(Box<PagerExecutionError>),
    #[error("could not use the keyspace: {0}")]
    UseKeyspace(Box<UseKeyspaceError>),
    #[error("unexpected ScyllaDB result: {0}")]
    Result(String),
    #[error("migration: {0}")]
    Migration(String),
}

impl ScyllaError {
    fn result(e: impl std::fmt::Display) -> ScyllaError {
        ScyllaError::Result(e.to_string())
    }

    fn prepare(name: &'static str, source: PrepareError) -> ScyllaError {
        ScyllaError::Prepare {
            name,
            source: Box::new(source),
        }
    }
}

macro_rules! boxed_from {
    ($($variant:ident($error:ty)),* $(,)?) => {
        $(impl From<$error> for ScyllaError {
            fn from(e: $error) -> ScyllaError {
                ScyllaError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Connect(NewSessionError),
    Execution(ExecutionError),
    Pager(PagerExecutionError),
    UseKeyspace(UseKeyspaceError),
);

impl From<ScyllaError> for StoreError {
    fn from(e: ScyllaError) -> StoreError {
        // The driver's messages name nodes and statements, never the
        // password (which only the settings hold, redacted in Debug).
        StoreError::Unavailable(e.to_string())
    }
}

/// A session on the cluster, not yet in the keyspace: for `skald migrate`
/// (then [`migrate`]) and for [`ScyllaStore::connect`].
pub async fn connect_session(settings: &ScyllaSettings) -> Result<Session, ScyllaError> {
    settings.validate().map_err(ScyllaError::Settings)?;
    if !settings.enabled() {
        return Err(ScyllaError::Settings("scylla.nodes is empty".into()));
    }
    let mut balancing = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &settings.local_datacenter {
        balancing = balancing
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(settings.consistency.consistency())
        .serial_consistency(Some(settings.consistency.serial()))
        .request_timeout(Some(settings.request_timeout()))
        // Retries only statements marked idempotent (and never serial ones).
        .retry_policy(Arc::new(DefaultRetryPolicy::new()))
        .load_balancing_policy(balancing.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&settings.nodes)
        .connection_timeout(settings.connect_timeout())
        .default_execution_profile_handle(profile.into_handle())
        // Write times from this process only grow: a write issued after a
        // delete (an audit record after an erase) is never shadowed by it.
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let Some(username) = &settings.username {
        builder = builder.user(username, settings.password.clone().unwrap_or_default());
    }
    Ok(builder.build().await?)
}

/// The ScyllaDB implementation of [`Store`].
pub struct ScyllaStore {
    session: Session,
    st: Prepared,
    /// The exchange's writes: conversation (new, or touched), user message,
    /// pending answer. Logged: they land together or not at all.
    exchange_new: Batch,
    exchange_existing: Batch,
    /// A user's audit record: month index, record, and the address (TTL).
    audit_with_address: Batch,
    audit_without_address: Batch,
    /// A record without a user, with its address: one partition.
    anonymous_audit_with_address: Batch,
}

impl ScyllaStore {
    /// Connects, runs the migrations if `migrate_on_start`, checks that the
    /// schema is at least this build's version, and prepares every
    /// statement.
    pub async fn connect(settings: &ScyllaSettings) -> Result<ScyllaStore, ScyllaError> {
        let session = connect_session(settings).await?;
        if settings.migrate_on_start {
            let applied = migrate(&session, &settings.keyspace, &settings.replication).await?;
            tracing::info!(?applied, keyspace = %settings.keyspace, "ScyllaDB migrations applied");
        } else {
            session
                .use_keyspace(&settings.keyspace, false)
                .await
                .map_err(|e| {
                    ScyllaError::Schema(format!(
                        "keyspace {}: {e} (run `skald migrate` first)",
                        settings.keyspace
                    ))
                })?;
        }
        ScyllaStore::from_session(session).await
    }

    /// A store on a session already in the migrated keyspace.
    pub async fn from_session(session: Session) -> Result<ScyllaStore, ScyllaError> {
        let applied = migrate::applied_versions(&session)
            .await
            .map_err(|e| ScyllaError::Schema(format!("{e} (run `skald migrate` first)")))?;
        let version = applied.last().map_or(0, |(v, _)| *v);
        if version < migrate::latest_version() {
            return Err(ScyllaError::Schema(format!(
                "the schema is at version {version}, this build needs {}: run `skald migrate`",
                migrate::latest_version()
            )));
        }
        let st = Prepared::prepare(&session).await?;
        let batch = |kind, statements: &[&PreparedStatement]| {
            let mut batch = Batch::new(kind);
            for s in statements {
                batch.append_statement((*s).clone());
            }
            batch.set_is_idempotent(true);
            batch
        };
        Ok(ScyllaStore {
            exchange_new: batch(
                BatchType::Logged,
                &[
                    &st.insert_conversation,
                    &st.insert_user_message,
                    &st.insert_pending_answer,
                ],
            ),
            exchange_existing: batch(
                BatchType::Logged,
                &[
                    &st.touch_conversation,
                    &st.insert_user_message,
                    &st.insert_pending_answer,
                ],
            ),
            audit_with_address: batch(
                BatchType::Logged,
                &[
                    &st.insert_audit_month,
                    &st.insert_audit,
                    &st.set_audit_address,
                ],
            ),
            audit_without_address: batch(
                BatchType::Logged,
                &[&st.insert_audit_month, &st.insert_audit],
            ),
            anonymous_audit_with_address: batch(
                BatchType::Unlogged,
                &[&st.insert_anonymous_audit, &st.set_anonymous_audit_address],
            ),
            st,
            session,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The rows of one bounded read (a `LIMIT`, a key, or an `IN` list).
    async fn fetch<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, ScyllaError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.session.execute_unpaged(statement, values).await?;
        let rows = result.into_rows_result().map_err(ScyllaError::result)?;
        let typed = rows.rows::<R>().map_err(ScyllaError::result)?;
        typed
            .collect::<Result<Vec<R>, _>>()
            .map_err(ScyllaError::result)
    }

    /// Every row of a partition, page by page.
    async fn fetch_all<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, ScyllaError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + Unpin,
    {
        let pager = self.session.execute_iter(statement.clone(), values).await?;
        let stream = pager.rows_stream::<R>().map_err(ScyllaError::result)?;
        stream.try_collect().await.map_err(ScyllaError::result)
    }

    async fn write(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<(), ScyllaError> {
        self.session.execute_unpaged(statement, values).await?;
        Ok(())
    }

    async fn key_intent(
        &self,
        user: &str,
        client_id: &str,
    ) -> Result<Option<NewExchange>, ScyllaError> {
        let row = self
            .fetch::<KeyRow>(&self.st.select_key, rows::key(user, client_id))
            .await?
            .into_iter()
            .next();
        match row {
            None => Ok(None),
            Some(row) => row
                .into_intent(user)
                .map(Some)
                .ok_or_else(|| ScyllaError::Result("an idempotency key row lacks its ids".into())),
        }
    }

    /// The conversation and both messages of an exchange, in one logged
    /// batch. Idempotent: the same exchange written twice is written once.
    async fn write_exchange(&self, ex: &NewExchange) -> Result<(), ScyllaError> {
        let message = rows::insert_user_message(ex);
        let answer = rows::insert_pending_answer(ex);
        match &ex.new_conversation {
            Some(new) => {
                let conversation = rows::insert_conversation(ex, new);
                self.session
                    .batch(&self.exchange_new, (conversation, message, answer))
                    .await?;
            }
            None => {
                let touch = rows::touch_conversation(ex.at_ms, &ex.user, &ex.conversation_id);
                self.session
                    .batch(&self.exchange_existing, (touch, message, answer))
                    .await?;
            }
        }
        Ok(())
    }

    /// What a claimed key points at; writes the exchange first if the claim
    /// was made but its writes were not.
    async fn complete(&self, intent: &NewExchange) -> Result<Exchange, ScyllaError> {
        let ids = [
            intent.user_message_id.as_str(),
            intent.assistant_message_id.as_str(),
        ];
        let messages: Vec<StoredMessage> = self
            .fetch::<MessageRow>(
                &self.st.select_messages_by_id,
                rows::messages_by_id(&intent.conversation_id, &ids),
            )
            .await?
            .into_iter()
            .filter_map(|r| r.into_message(&intent.conversation_id))
            .collect();
        if !messages.iter().any(|m| m.id == intent.user_message_id) {
            tracing::info!(
                conversation_id = %intent.conversation_id,
                message_id = %intent.user_message_id,
                "completing an exchange whose writes were interrupted"
            );
            self.write_exchange(intent).await?;
        }
        let answer = messages
            .iter()
            .find(|m| m.id == intent.assistant_message_id);
        Ok(rows::exchange_of(intent, answer))
    }

    async fn messages_of(&self, conversation_id: &str) -> Result<Vec<StoredMessage>, ScyllaError> {
        Ok(self
            .fetch_all::<MessageRow>(&self.st.select_all_messages, (conversation_id,))
            .await?
            .into_iter()
            .filter_map(|r| r.into_message(conversation_id))
            .collect())
    }
}

/// Deletes of many keys of one user: one single-partition batch per chunk.
const KEY_DELETE_CHUNK: usize = 100;
/// Partitions deleted at once by an erase.
const ERASE_CONCURRENCY: usize = 8;
/// Answers stored at once by `finish_answers`.
const FINISH_CONCURRENCY: usize = 16;

#[async_trait::async_trait]
impl Store for ScyllaStore {
    async fn conversation(&self, user: &str, id: &str) -> Result<Option<Conversation>, StoreError> {
        Ok(self
            .fetch::<ConversationRow>(
                &self.st.select_conversation,
                rows::conversation_key(user, id),
            )
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_conversation(user)))
    }

    async fn exchange(&self, user: &str, client_id: &str) -> Result<Option<Exchange>, StoreError> {
        match self.key_intent(user, client_id).await? {
            None => Ok(None),
            Some(intent) => Ok(Some(self.complete(&intent).await?)),
        }
    }

    async fn begin_exchange(&self, ex: NewExchange) -> Result<BeginOutcome, StoreError> {
        if ex.new_conversation.is_none()
            && self
                .conversation(&ex.user, &ex.conversation_id)
                .await?
                .is_none()
        {
            // Not this user's conversation; a resend of a key used before
            // still gets its first exchange.
            return match self.exchange(&ex.user, &ex.client_id).await? {
                Some(existing) => Ok(BeginOutcome::Existing(existing)),
                None => Err(StoreError::NotFound("no such conversation".into())),
            };
        }
        let claim = self
            .session
            .execute_unpaged(&self.st.claim_key, rows::claim_key(&ex))
            .await
            .map_err(ScyllaError::from)?;
        if !migrate::lwt_applied(claim)? {
            let Some(intent) = self.key_intent(&ex.user, &ex.client_id).await? else {
                return Err(StoreError::Unavailable(
                    "the idempotency key was deleted while it was claimed; retry".into(),
                ));
            };
            if intent.user_message_id != ex.user_message_id {
                return Ok(BeginOutcome::Existing(self.complete(&intent).await?));
            }
            // Our own claim, from an earlier attempt of this same exchange
            // (a retry after a timeout): finish its writes below.
        }
        self.write_exchange(&ex).await?;
        Ok(BeginOutcome::Created)
    }

    async fn finish_answer(&self, answer: FinishedAnswer) -> Result<(), StoreError> {
        let exists = self
            .fetch::<MessageRow>(
                &self.st.select_messages_by_id,
                rows::messages_by_id(&answer.conversation_id, &[answer.message_id.as_str()]),
            )
            .await?
            .into_iter()
            .any(|r| r.into_message(&answer.conversation_id).is_some());
        if !exists {
            // Its conversation was deleted (or erased) while it was being
            // generated: there is nothing to store it in. Like the other
            // stores, that is not an error (the Persister would keep it
            // in the spool forever).
            tracing::debug!(message_id = %answer.message_id, "answer of a deleted conversation dropped");
            return Ok(());
        }
        let touch = rows::touch_conversation(answer.at_ms, &answer.user, &answer.conversation_id);
        tokio::try_join!(
            self.write(&self.st.finish_answer, rows::finish_answer(&answer)),
            self.write(&self.st.touch_conversation, touch),
        )?;
        Ok(())
    }

    async fn finish_answers(&self, answers: Vec<FinishedAnswer>) -> Result<(), StoreError> {
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(answers)
            .map(|a| self.finish_answer(a))
            .buffer_unordered(FINISH_CONCURRENCY)
            .collect()
            .await;
        // Each answer is idempotent: the caller retries the whole batch.
        results.into_iter().collect()
    }

    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let mut messages: Vec<StoredMessage> = self
            .fetch::<MessageRow>(
                &self.st.select_messages_last,
                rows::messages_limit(conversation_id, limit),
            )
            .await?
            .into_iter()
            .filter_map(|r| r.into_message(conversation_id))
            .collect();
        messages.reverse();
        Ok(messages)
    }

    async fn list_conversations(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError> {
        let page = rows::page_size(limit);
        let fetched = match before {
            None => {
                self.fetch::<ConversationRow>(
                    &self.st.select_conversations_first,
                    rows::conversations_first(user, page),
                )
                .await?
            }
            Some(before) => {
                self.fetch::<ConversationRow>(
                    &self.st.select_conversations_before,
                    rows::conversations_before(user, before, page),
                )
                .await?
            }
        };
        let (fetched, next) = rows::split_page(fetched, page, |r| &r.conversation_id);
        Ok(Page {
            items: fetched
                .into_iter()
                .filter_map(|r| r.into_conversation(user))
                .collect(),
            next,
        })
    }

    async fn list_messages(
        &self,
        user: &str,
        conversation_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Option<Page<StoredMessage>>, StoreError> {
        if self.conversation(user, conversation_id).await?.is_none() {
            return Ok(None);
        }
        let page = rows::page_size(limit);
        let fetched = match after {
            None => {
                self.fetch::<MessageRow>(
                    &self.st.select_messages_first,
                    rows::messages_limit(conversation_id, rows::fetch_limit(page)),
                )
                .await?
            }
            Some(after) => {
                self.fetch::<MessageRow>(
                    &self.st.select_messages_after,
                    rows::messages_after(conversation_id, after, page),
                )
                .await?
            }
        };
        let (fetched, next) = rows::split_page(fetched, page, |r| &r.message_id);
        Ok(Some(Page {
            items: fetched
                .into_iter()
                .filter_map(|r| r.into_message(conversation_id))
                .collect(),
            next,
        }))
    }

    async fn delete_conversation(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let key = rows::conversation_key(user, id);
        let Some(row) = self
            .fetch::<ConversationRow>(&self.st.select_conversation, key)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(false);
        };
        // Children first, the conversation row last: a delete that fails
        // half-way can be retried, the row still leads to what is left.
        let client_ids: Vec<String> = self
            .fetch_all::<MessageRow>(&self.st.select_all_messages, (id,))
            .await?
            .into_iter()
            .filter_map(|m| m.client_id)
            .collect();
        for chunk in client_ids.chunks(KEY_DELETE_CHUNK) {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            let mut values = Vec::with_capacity(chunk.len());
            for client_id in chunk {
                batch.append_statement(self.st.delete_key.clone());
                values.push(rows::key(user, client_id));
            }
            self.session
                .batch(&batch, values)
                .await
                .map_err(ScyllaError::from)?;
        }
        self.write(&self.st.delete_messages, (id,)).await?;
        self.write(&self.st.delete_conversation, key).await?;
        Ok(row.is_live())
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<(), StoreError> {
        let address = record.address.as_deref().and_then(|address| {
            rows::address_ttl_secs(record.at_ms, skald_actors::time::now_ms())
                .map(|ttl| (ttl, address))
        });
        match record.user.as_deref() {
            Some(user) => {
                let month = rows::audit_month(record.at_ms);
                let index = rows::user_month(user, &month);
                let insert = rows::insert_audit(user, &month, &record);
                match address {
                    Some((ttl, address)) => {
                        let set = rows::set_audit_address(ttl, address, user, &month, &record.id);
                        self.session
                            .batch(&self.audit_with_address, (index, insert, set))
                            .await
                    }
                    None => {
                        self.session
                            .batch(&self.audit_without_address, (index, insert))
                            .await
                    }
                }
            }
            None => {
                let hour = rows::audit_hour(record.at_ms);
                let insert = rows::insert_anonymous_audit(&hour, &record);
                match address {
                    Some((ttl, address)) => {
                        let set =
                            rows::set_anonymous_audit_address(ttl, address, &hour, &record.id);
                        self.session
                            .batch(&self.anonymous_audit_with_address, (insert, set))
                            .await
                    }
                    None => {
                        self.session
                            .execute_unpaged(&self.st.insert_anonymous_audit, insert)
                            .await
                    }
                }
            }
        }
        .map_err(ScyllaError::from)?;
        Ok(())
    }

    async fn export_user(&self, user: &str) -> Result<UserExport, StoreError> {
        let mut export = UserExport::default();
        for row in self
            .fetch_all::<ConversationRow>(&self.st.select_all_conversations, (user,))
            .await?
        {
            if let Some(conversation) = row.into_conversation(user) {
                export
                    .messages
                    .extend(self.messages_of(&conversation.id).await?);
                export.conversations.push(conversation);
            }
        }
        for month in self
            .fetch_all::<MonthRow>(&self.st.select_audit_months, (user,))
            .await?
        {
            export.audit.extend(
                self.fetch_all::<AuditRow>(
                    &self.st.select_audit,
                    rows::user_month(user, &month.month),
                )
                .await?
                .into_iter()
                .filter_map(|r| r.into_record(user)),
            );
        }
        for row in self
            .fetch_all::<KeyRow>(&self.st.select_all_keys, (user,))
            .await?
        {
            let client_id = row.client_id.clone();
            if let Some(intent) = row.into_intent(user) {
                let answer = export
                    .messages
                    .iter()
                    .find(|m| m.id == intent.assistant_message_id);
                let exchange = rows::exchange_of(&intent, answer);
                export.idempotency_keys.push((client_id, exchange));
            }
        }
        // The same order as the other stores: oldest first.
        export.conversations.sort_by(|a, b| a.id.cmp(&b.id));
        export
            .messages
            .sort_by(|a, b| (&a.conversation_id, &a.id).cmp(&(&b.conversation_id, &b.id)));
        export
            .audit
            .sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        export.idempotency_keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(export)
    }

    async fn erase_user(&self, user: &str) -> Result<(), StoreError> {
        // Partitions found through an index are deleted before the index:
        // an erase that fails half-way can be run again to the end.
        let conversations = self
            .fetch_all::<ConversationRow>(&self.st.select_all_conversations, (user,))
            .await?;
        futures::stream::iter(conversations)
            .map(|c| async move {
                self.write(&self.st.delete_messages, (c.conversation_id.as_str(),))
                    .await
            })
            .buffer_unordered(ERASE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        self.write(&self.st.delete_user_conversations, (user,))
            .await?;
        self.write(&self.st.delete_user_keys, (user,)).await?;
        let months = self
            .fetch_all::<MonthRow>(&self.st.select_audit_months, (user,))
            .await?;
        futures::stream::iter(months)
            .map(|m| async move {
                self.write(
                    &self.st.delete_audit_month,
                    rows::user_month(user, &m.month),
                )
                .await
            })
            .buffer_unordered(ERASE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        self.write(&self.st.delete_audit_months, (user,)).await?;
        Ok(())
    }

    /// Nothing to do on ScyllaDB: full addresses are written with a TTL
    /// that ends [`ADDRESS_TTL_SECS`] after the record's time, and the
    /// database drops them by itself (the anonymised form has no TTL).
    async fn anonymise_addresses(&self, _older_than_ms: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.write(&self.st.ping, ()).await?;
        Ok(())
    }
}

/// The seed's 30 days, as the TTL of a full address.
pub const ADDRESS_TTL: Duration = Duration::from_secs(ADDRESS_TTL_SECS as u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_local_quorum_and_three_replicas() {
        let s = ScyllaSettings::default();
        assert!(!s.enabled());
        assert_eq!(s.keyspace, "skald");
        assert_eq!(
            s.replication,
            "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
        assert_eq!(s.consistency, ScyllaConsistency::LocalQuorum);
        assert_eq!(s.consistency.consistency(), Consistency::LocalQuorum);
        assert_eq!(s.consistency.serial(), SerialConsistency::LocalSerial);
        assert_eq!(s.request_timeout(), Duration::from_secs(5));
        assert_eq!(s.connect_timeout(), Duration::from_secs(5));
        assert!(!s.migrate_on_start);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn settings_read_as_the_config_file_writes_them() {
        let s: ScyllaSettings = serde_json::from_value(serde_json::json!({
            "nodes": ["10.0.0.1:9042", "10.0.0.2:9042"],
            "keyspace": "chat",
            "replication": "{'class': 'NetworkTopologyStrategy', 'eu-west': 3}",
            "consistency": "each_quorum",
            "local_datacenter": "eu-west",
            "request_timeout_ms": 2000,
            "username": "skald",
            "password": "hunter2",
            "migrate_on_start": true
        }))
        .unwrap();
        assert!(s.enabled());
        assert_eq!(s.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(s.consistency.consistency(), Consistency::EachQuorum);
        assert_eq!(s.consistency.serial(), SerialConsistency::Serial);
        assert_eq!(s.request_timeout(), Duration::from_secs(2));
        assert_eq!(s.connect_timeout_ms, 5_000, "unset keys keep their default");
        assert_eq!(s.validate(), Ok(()));
        let unknown = serde_json::from_value::<ScyllaSettings>(serde_json::json!({"node": []}));
        assert!(unknown.is_err(), "unknown keys are errors");
        for (name, level) in [
            ("one", Consistency::One),
            ("local_one", Consistency::LocalOne),
            ("quorum", Consistency::Quorum),
            ("local_quorum", Consistency::LocalQuorum),
            ("each_quorum", Consistency::EachQuorum),
            ("all", Consistency::All),
        ] {
            let c: ScyllaConsistency = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(c.consistency(), level);
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(name));
        }
    }

    #[test]
    fn the_password_never_shows() {
        let s = ScyllaSettings {
            username: Some("skald".into()),
            password: Some("hunter2".into()),
            ..ScyllaSettings::default()
        };
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("<redacted>") && debug.contains("skald"),
            "{debug}"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_connecting() {
        let bad = |f: fn(&mut ScyllaSettings)| {
            let mut s = ScyllaSettings {
                nodes: vec!["127.0.0.1:9042".into()],
                ..ScyllaSettings::default()
            };
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.keyspace = "my-keyspace".into()).contains("scylla.keyspace"));
        assert!(bad(|s| s.replication = "3".into()).contains("scylla.replication"));
        assert!(bad(|s| s.request_timeout_ms = 0).contains("request_timeout_ms"));
        assert!(bad(|s| s.nodes.push(" ".into())).contains("empty address"));
        assert!(bad(|s| s.password = Some("x".into())).contains("username"));
    }

    #[test]
    fn errors_become_unavailable_without_secrets() {
        let e = ScyllaError::Schema("the schema is at version 0".into());
        let store: StoreError = e.into();
        assert_eq!(
            store,
            StoreError::Unavailable("ScyllaDB schema: the schema is at version 0".into())
        );
    }

    #[tokio::test]
    async fn connecting_without_nodes_fails_at_once() {
        let err = connect_session(&ScyllaSettings::default())
            .await
            .expect_err("no nodes");
        assert!(err.to_string().contains("scylla.nodes is empty"), "{err}");
    }

    #[test]
    fn the_address_ttl_is_thirty_days() {
        assert_eq!(ADDRESS_TTL, Duration::from_secs(2_592_000));
    }
}
