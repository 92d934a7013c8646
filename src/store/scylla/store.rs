//! [`ScyllaStore`]: the `Store` port over the statements of
//! [`super::statements`] and the rows of [`super::rows`]. This file only
//! sequences them; docs/scylla.md says why each step is where it is.

use std::collections::{BTreeMap, HashMap};

use ::scylla::client::session::Session;
use ::scylla::deserialize::row::DeserializeRow;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use futures::{StreamExt, TryStreamExt};
use skald_actors::ports::store::{
    AnswerCheckpoint, AnswerEnd, AuditFilter, AuditRecord, BeginOutcome, Conversation, Exchange,
    Feedback, FeedbackFilter, FeedbackRecord, FinishedAnswer, NewExchange, Page, Store, StoreError,
    StoredBot, StoredMessage, UsageFilter, UsageRecord, UserExport,
};
use skald_protocol::{
    ClientMessageId, ConversationId, ErrorBody, ErrorCode, FinishReason, MessageId, Usage, UserId,
};

use super::migrate::{self, lwt_applied};
use super::rows::{self, *};
use super::scan;
use super::statements::Prepared;
use super::{connect_session, ScyllaError, ScyllaSettings};
use crate::store::usage_cursor;
use skald_actors::time::Month;

/// What a closed interrupted answer's error says (the embedded store says
/// the same).
pub use crate::store::sqlite::INTERRUPTED_MESSAGE;

/// Deletes of many keys of one user: one single-partition batch per chunk.
const KEY_DELETE_CHUNK: usize = 100;
/// Requests in flight at once for one call (an erase's partitions, a
/// batch of answers or checkpoints, the open answers of a sweep).
const CONCURRENCY: usize = 64;

/// The ScyllaDB implementation of [`Store`].
pub struct ScyllaStore {
    session: Session,
    st: Prepared,
    address_ttl_secs: u32,
    /// The exchange's writes: conversation (new, or touched), user message,
    /// pending answer, open answer. Logged: they land together or not at all.
    exchange_new: Batch,
    exchange_existing: Batch,
    /// A user's audit record: month index, record, and the address (TTL).
    audit_with_address: Batch,
    audit_without_address: Batch,
    /// A record without a user, with its address: one partition.
    anonymous_audit_with_address: Batch,
    /// A record in the operators' log by day, and the day's index.
    audit_day_with_address: Batch,
    audit_day_without_address: Batch,
    /// Feedback on the answer, in the operators' listing and its month
    /// index; withdrawn from both.
    feedback_given: Batch,
    feedback_withdrawn: Batch,
}

fn batch(kind: BatchType, statements: &[&PreparedStatement]) -> Batch {
    let mut batch = Batch::new(kind);
    for s in statements {
        batch.append_statement((*s).clone());
    }
    batch.set_is_idempotent(true);
    batch
}

impl ScyllaStore {
    /// One audit record: its row and its user's month index (or its
    /// hour's, without a user), then its row in the operators' log by day
    /// with that day's index; each with the address under its TTL.
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let now = skald_actors::time::now_ms();
        let address = record.address.as_deref().and_then(|address| {
            rows::address_ttl_secs(record.at_ms, now, self.address_ttl_secs)
                .map(|ttl| (ttl, address))
        });
        self.append_audit_row(record, address).await?;
        let day = rows::audit_day(record.at_ms);
        let insert = AuditDayInsert::of(&day, record);
        let index = DayKey { day: &day };
        match address {
            Some((ttl, address)) => {
                let set = AuditDayAddress {
                    day: &day,
                    audit_id: &record.id,
                    ttl,
                    address,
                };
                self.session
                    .batch(&self.audit_day_with_address, (insert, set, index))
                    .await
            }
            None => {
                self.session
                    .batch(&self.audit_day_without_address, (insert, index))
                    .await
            }
        }
        .map_err(ScyllaError::from)?;
        Ok(())
    }

    /// The record in `audit_by_user` (or `audit_anonymous`).
    async fn append_audit_row(
        &self,
        record: &AuditRecord,
        address: Option<(i32, &str)>,
    ) -> Result<(), StoreError> {
        match record.user.as_ref() {
            Some(user) => {
                let user_id = user.as_str();
                let month = audit_month(record.at_ms);
                let index = UserMonth {
                    user_id,
                    month: &month,
                };
                let insert = AuditInsert::of(user_id, &month, record);
                match address {
                    Some((ttl, address)) => {
                        let set = AuditAddress {
                            user_id,
                            month: &month,
                            audit_id: &record.id,
                            ttl,
                            address,
                        };
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
                let hour = audit_hour(record.at_ms);
                let insert = AnonymousAudit::of(&hour, record);
                match address {
                    Some((ttl, address)) => {
                        let set = AnonymousAddress {
                            hour: &hour,
                            audit_id: &record.id,
                            ttl,
                            address,
                        };
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

    /// Connects, runs the migrations if `migrate_on_start`, checks that the
    /// schema is at least this build's version, and prepares every
    /// statement.
    pub async fn connect(settings: &ScyllaSettings) -> Result<ScyllaStore, ScyllaError> {
        let session = connect_session(settings).await?;
        if settings.migrate_on_start {
            let applied =
                migrate::migrate(&session, &settings.keyspace, &settings.replication).await?;
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
        ScyllaStore::from_session(session, settings).await
    }

    /// A store on a session already in the migrated keyspace.
    pub async fn from_session(
        session: Session,
        settings: &ScyllaSettings,
    ) -> Result<ScyllaStore, ScyllaError> {
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
        Ok(ScyllaStore {
            exchange_new: batch(
                BatchType::Logged,
                &[
                    &st.insert_conversation,
                    &st.insert_user_message,
                    &st.insert_pending_answer,
                    &st.insert_open_answer,
                    &st.insert_answer_owner,
                    &st.insert_usage,
                    &st.insert_usage_user,
                ],
            ),
            exchange_existing: batch(
                BatchType::Logged,
                &[
                    &st.touch_conversation,
                    &st.insert_user_message,
                    &st.insert_pending_answer,
                    &st.insert_open_answer,
                    &st.insert_answer_owner,
                    &st.insert_usage,
                    &st.insert_usage_user,
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
            audit_day_with_address: batch(
                BatchType::Logged,
                &[
                    &st.insert_audit_day,
                    &st.set_audit_day_address,
                    &st.insert_audit_day_index,
                ],
            ),
            audit_day_without_address: batch(
                BatchType::Logged,
                &[&st.insert_audit_day, &st.insert_audit_day_index],
            ),
            feedback_given: batch(
                BatchType::Logged,
                &[
                    &st.set_message_feedback,
                    &st.insert_feedback,
                    &st.insert_feedback_month,
                ],
            ),
            feedback_withdrawn: batch(
                BatchType::Logged,
                &[&st.set_message_feedback, &st.delete_feedback],
            ),
            address_ttl_secs: settings.address_ttl_secs,
            st,
            session,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn statements(&self) -> &Prepared {
        &self.st
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

    async fn fetch_one<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, ScyllaError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        Ok(self.fetch(statement, values).await?.into_iter().next())
    }

    /// The first `limit` users of a month from `from` on (every bucket's
    /// first `limit`, merged), and whether there are none after them.
    async fn usage_users(
        &self,
        month: &str,
        from: &str,
        limit: usize,
    ) -> Result<(Vec<String>, bool), ScyllaError> {
        let buckets: Vec<i32> = (0..USAGE_USER_BUCKETS).collect();
        let read = self
            .each(buckets, |bucket| async move {
                let values = UsageUsersFrom {
                    month,
                    bucket,
                    from_user: from,
                    fetch: limit as i32,
                };
                let rows: Vec<UsageUserRow> =
                    self.fetch(&self.st.select_usage_users, values).await?;
                Ok(rows)
            })
            .await?;
        let mut users: Vec<String> = read.into_iter().flatten().map(|r| r.user_id).collect();
        users.sort_unstable();
        let last = users.len() <= limit;
        users.truncate(limit);
        Ok((users, last))
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

    /// Runs `f` on every item, [`CONCURRENCY`] at a time; the first error
    /// wins (every write here is idempotent: the caller retries the whole).
    async fn each<T, F, Fut, O>(&self, items: Vec<T>, f: F) -> Result<Vec<O>, ScyllaError>
    where
        F: Fn(T) -> Fut,
        Fut: std::future::Future<Output = Result<O, ScyllaError>>,
    {
        futures::stream::iter(items)
            .map(f)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await
    }

    async fn conversation_row(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<Option<ConversationRow>, ScyllaError> {
        self.fetch_one(
            &self.st.select_conversation,
            ConversationKey {
                user_id: user.as_str(),
                conversation_id: id.as_str(),
            },
        )
        .await
    }

    /// Every conversation row of a user (traces included), paged.
    async fn conversation_rows(&self, user: &UserId) -> Result<Vec<ConversationRow>, ScyllaError> {
        self.fetch_all(
            &self.st.select_conversations_first,
            ConversationsFirst {
                user_id: user.as_str(),
                fetch: i32::MAX,
            },
        )
        .await
    }

    /// Every message row of a conversation (traces included), paged.
    async fn message_rows(
        &self,
        conversation_id: &ConversationId,
    ) -> Result<Vec<MessageRow>, ScyllaError> {
        self.fetch_all(
            &self.st.select_messages_after,
            MessagesAfter {
                conversation_id: conversation_id.as_str(),
                after: "",
                fetch: i32::MAX,
            },
        )
        .await
    }

    async fn key_intent(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
    ) -> Result<Option<NewExchange>, ScyllaError> {
        let row = self
            .fetch_one::<KeyRow>(
                &self.st.select_key,
                KeyOf {
                    user_id: user.as_str(),
                    client_id: client_id.as_str(),
                },
            )
            .await?;
        match row {
            None => Ok(None),
            Some(row) => row
                .into_intent(user)
                .map(Some)
                .ok_or_else(|| ScyllaError::Result("an idempotency key row lacks its ids".into())),
        }
    }

    /// The conversation, both messages and the open answer of an exchange,
    /// in one logged batch. Idempotent: the same exchange written twice is
    /// written once.
    async fn write_exchange(&self, ex: &NewExchange) -> Result<(), ScyllaError> {
        let message = UserMessage::of(ex);
        let answer = PendingAnswer::of(ex);
        let open = OpenAnswer::of(ex);
        let owner = AnswerOwner::of(ex);
        let (usage, usage_user) = (UsageBegun::of(ex), UsageUser::of(ex));
        match &ex.new_conversation {
            Some(new) => {
                let conversation = NewConversationRow::of(ex, new);
                self.session
                    .batch(
                        &self.exchange_new,
                        (
                            conversation,
                            message,
                            answer,
                            open,
                            owner,
                            usage,
                            usage_user,
                        ),
                    )
                    .await?;
            }
            None => {
                let touch = TouchConversation::new(&ex.user, &ex.conversation_id, ex.at_ms);
                self.session
                    .batch(
                        &self.exchange_existing,
                        (touch, message, answer, open, owner, usage, usage_user),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// What a claimed key points at; writes the exchange first if the claim
    /// was made but its writes were not.
    async fn complete(&self, intent: &NewExchange) -> Result<Exchange, ScyllaError> {
        let messages: Vec<MessageRow> = self
            .fetch(
                &self.st.select_messages_by_id,
                MessagesById {
                    conversation_id: intent.conversation_id.as_str(),
                    message_ids: vec![
                        intent.user_message_id.as_str(),
                        intent.assistant_message_id.as_str(),
                    ],
                },
            )
            .await?;
        let live = |id: &MessageId| {
            messages
                .iter()
                .find(|m| m.message_id == id.as_str() && m.role.is_some())
        };
        if live(&intent.user_message_id).is_none() {
            tracing::info!(
                conversation_id = %intent.conversation_id,
                message_id = %intent.user_message_id,
                "completing an exchange whose writes were interrupted"
            );
            self.write_exchange(intent).await?;
        }
        Ok(exchange_of(
            intent,
            live(&intent.assistant_message_id).and_then(MessageRow::end),
        ))
    }

    /// Stores one answer's end, unless its message is gone (its open
    /// answer is the caller's to delete, either way).
    async fn finish_answer(&self, answer: &FinishedAnswer) -> Result<(), ScyllaError> {
        let key = MessageKey {
            conversation_id: answer.conversation_id.as_str(),
            message_id: answer.message_id.as_str(),
        };
        let state: Option<AnswerStateRow> = self.fetch_one(&self.st.select_answer, key).await?;
        let began = state
            .filter(AnswerStateRow::exists)
            .and_then(|s| s.created_at);
        let usage = |began_ms: i64| UsageTokens {
            user_id: answer.user.as_str(),
            month: Month::of(began_ms).to_string(),
            message_id: answer.message_id.as_str(),
            tokens: answer.end.usage.total() as i64,
        };
        let Some(began) = began else {
            // Its conversation was deleted (or erased) while it was being
            // generated: there is nothing to store it in. Like the other
            // stores, that is not an error (the Persister would keep it
            // in the spool forever). Its tokens still count, in the month
            // it ended (its start went with its row), which is the month it
            // began but for an answer that straddles a month's end: that
            // one's tokens land in a row without a bot, which no listing
            // counts.
            tracing::debug!(message_id = %answer.message_id, "answer of a deleted conversation dropped");
            self.write(&self.st.set_usage_tokens, usage(answer.at_ms))
                .await?;
            return Ok(());
        };
        let touch = TouchConversation::new(&answer.user, &answer.conversation_id, answer.at_ms);
        let usage = usage(began.0);
        tokio::try_join!(
            self.write(&self.st.finish_answer, FinishAnswer::of(answer)),
            self.write(&self.st.touch_conversation, touch),
            self.write(&self.st.set_usage_tokens, usage),
        )?;
        Ok(())
    }

    /// Deletes the open answers of these messages: one unlogged batch per
    /// bucket (a batch of one partition is one write).
    async fn forget_open(&self, message_ids: Vec<String>) -> Result<(), ScyllaError> {
        let mut by_bucket: HashMap<i32, Vec<String>> = HashMap::new();
        for id in message_ids {
            by_bucket.entry(open_bucket(&id)).or_default().push(id);
        }
        self.each(by_bucket.into_values().collect(), |ids| async move {
            let mut deletes = Batch::new(BatchType::Unlogged);
            deletes.set_is_idempotent(true);
            let mut values = Vec::with_capacity(ids.len());
            for id in &ids {
                deletes.append_statement(self.st.delete_open_answer.clone());
                values.push(OpenAnswerKey::of(id));
            }
            self.session.batch(&deletes, values).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Closes one open answer if it was last written before the cutoff;
    /// forgets it if it ended or its message is gone. True if closed.
    async fn close_if_interrupted(
        &self,
        open: OpenAnswerRow,
        older_than_ms: i64,
    ) -> Result<bool, ScyllaError> {
        let key = OpenAnswerKey::of(&open.message_id);
        let Some(conversation_id) = open.conversation_id.map(ConversationId::from) else {
            return self
                .write(&self.st.delete_open_answer, key)
                .await
                .map(|_| false);
        };
        let message_key = || MessageKey {
            conversation_id: conversation_id.as_str(),
            message_id: &open.message_id,
        };
        let state: Option<AnswerStateRow> = self
            .fetch_one(&self.st.select_answer, message_key())
            .await?;
        let state = match state {
            Some(state) if state.exists() => state,
            trace => {
                // The conversation went: what a late write left there goes
                // too, then the open answer that led to it.
                if trace.is_some() {
                    self.write(&self.st.delete_message, message_key()).await?;
                }
                return self
                    .write(&self.st.delete_open_answer, key)
                    .await
                    .map(|_| false);
            }
        };
        if state.is_finished() {
            return self
                .write(&self.st.delete_open_answer, key)
                .await
                .map(|_| false);
        }
        let last_us = state.last_written_us().unwrap_or(0);
        if last_us >= write_time_us(older_than_ms) {
            return Ok(false);
        }
        let end = AnswerEnd {
            finish_reason: FinishReason::Error,
            usage: Usage::default(),
            error: Some(ErrorBody {
                code: ErrorCode::Unavailable,
                message: INTERRUPTED_MESSAGE.into(),
            }),
        };
        let message_id = MessageId::from(open.message_id.as_str());
        let content = state.checkpoint.unwrap_or_default();
        // Written as of just after its last checkpoint: if the answer's
        // real end arrives after all (its instance was cut off, not dead),
        // that end is later and wins.
        let close = FinishAnswer::new(&conversation_id, &message_id, &content, &end, last_us + 1);
        self.write(&self.st.finish_answer, close).await?;
        self.write(&self.st.delete_open_answer, key).await?;
        tracing::info!(%conversation_id, %message_id, "closed an interrupted answer");
        Ok(true)
    }

    /// What points at the answers of an erased or deleted conversation
    /// goes with them: their open-answer rows, their owner rows, their
    /// feedback in the operators' listing.
    async fn forget_answers(&self, messages: &[MessageRow]) -> Result<(), ScyllaError> {
        let answers = messages.iter().filter(|m| m.is_answer());
        let open: Vec<String> = answers
            .clone()
            .filter(|m| m.finish_reason.is_none())
            .map(|m| m.message_id.clone())
            .collect();
        self.forget_open(open).await?;
        // (answer id, the month of its feedback if it has some)
        let pointers: Vec<(String, Option<String>)> = answers
            .map(|m| {
                let month = m.feedback_rating.map(|_| answer_month(m.created_at));
                (m.message_id.clone(), month)
            })
            .collect();
        self.each(pointers, |(message_id, feedback_month)| async move {
            let key = AnswerKey {
                message_id: &message_id,
            };
            self.write(&self.st.delete_answer_owner, key).await?;
            if let Some(month) = feedback_month {
                let key = FeedbackKey {
                    month: &month,
                    message_id: &message_id,
                };
                self.write(&self.st.delete_feedback, key).await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// The answer `message_id` of `user`: its row and its conversation's
    /// bot; `None` when it is not one of theirs.
    async fn answer_of(
        &self,
        user: &UserId,
        message_id: &MessageId,
    ) -> Result<Option<(MessageRow, ConversationId, String)>, ScyllaError> {
        let key = AnswerKey {
            message_id: message_id.as_str(),
        };
        let owner: Option<AnswerOwnerRow> =
            self.fetch_one(&self.st.select_answer_owner, key).await?;
        let Some(conversation_id) = owner
            .filter(|o| o.user_id.as_deref() == Some(user.as_str()))
            .and_then(|o| o.conversation_id)
            .map(ConversationId::from)
        else {
            return Ok(None);
        };
        let Some(bot) = self
            .conversation_row(user, &conversation_id)
            .await?
            .filter(|c| c.is_live())
            .and_then(|c| c.bot)
        else {
            return Ok(None);
        };
        let rows: Vec<MessageRow> = self
            .fetch(
                &self.st.select_messages_by_id,
                MessagesById {
                    conversation_id: conversation_id.as_str(),
                    message_ids: vec![message_id.as_str()],
                },
            )
            .await?;
        let answer = rows
            .into_iter()
            .find(|m| m.is_answer() && m.created_at.is_some());
        Ok(answer.map(|m| (m, conversation_id, bot)))
    }
}

#[async_trait::async_trait]
impl Store for ScyllaStore {
    async fn conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        Ok(self
            .conversation_row(user, id)
            .await?
            .and_then(|r| r.into_conversation(user)))
    }

    async fn exchange(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
    ) -> Result<Option<Exchange>, StoreError> {
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
                None => Err(StoreError::NotFound("conversation")),
            };
        }
        let claim = self
            .session
            .execute_unpaged(&self.st.claim_key, ClaimKey::of(&ex))
            .await
            .map_err(ScyllaError::from)?;
        if !lwt_applied(claim)? {
            let Some(intent) = self.key_intent(&ex.user, &ex.client_id).await? else {
                return Err(StoreError::unavailable(
                    "the idempotency key was deleted while it was claimed; retry",
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

    async fn finish_answers(&self, answers: Vec<FinishedAnswer>) -> Result<(), StoreError> {
        // Each answer is idempotent: the caller retries the whole batch.
        // Their open answers go once they are stored: an answer must not
        // drop out of sight of `close_interrupted` before its end is in.
        let ids = answers.iter().map(|a| a.message_id.to_string()).collect();
        self.each(answers, |a| async move { self.finish_answer(&a).await })
            .await?;
        self.forget_open(ids).await?;
        Ok(())
    }

    /// One unconditional write per answer, no read and no lightweight
    /// transaction: a checkpoint goes to a column of its own, which a
    /// finished answer does not read, so a late one cannot undo an end.
    async fn checkpoint_answers(
        &self,
        checkpoints: Vec<AnswerCheckpoint>,
    ) -> Result<(), StoreError> {
        self.each(checkpoints, |cp| async move {
            let values = Checkpoint {
                conversation_id: cp.conversation_id.as_str(),
                message_id: cp.message_id.as_str(),
                written_us: write_time_us(cp.at_ms),
                ttl: CHECKPOINT_TTL_SECS,
                checkpoint: &cp.content,
            };
            self.write(&self.st.checkpoint_answer, values).await
        })
        .await?;
        Ok(())
    }

    async fn close_interrupted(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let buckets: Vec<i32> = (0..OPEN_ANSWER_BUCKETS).collect();
        let open: Vec<Vec<OpenAnswerRow>> = self
            .each(buckets, |bucket| {
                self.fetch_all(&self.st.select_open_answers, Bucket { bucket })
            })
            .await?;
        let closed = self
            .each(open.into_iter().flatten().collect(), |row| {
                self.close_if_interrupted(row, older_than_ms)
            })
            .await?;
        Ok(closed.into_iter().filter(|c| *c).count() as u64)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn recent_messages(
        &self,
        conversation_id: &ConversationId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut messages: Vec<StoredMessage> = self
            .fetch::<MessageRow>(
                &self.st.select_messages_last,
                MessagesLast {
                    conversation_id: conversation_id.as_str(),
                    fetch: i32::try_from(limit).unwrap_or(i32::MAX),
                },
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
        user: &UserId,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError> {
        let page = page_size(limit);
        let fetch = fetch_limit(page);
        let user_id = user.as_str();
        let fetched: Vec<ConversationRow> = match before {
            None => {
                self.fetch(
                    &self.st.select_conversations_first,
                    ConversationsFirst { user_id, fetch },
                )
                .await?
            }
            Some(before) => {
                self.fetch(
                    &self.st.select_conversations_before,
                    ConversationsBefore {
                        user_id,
                        before,
                        fetch,
                    },
                )
                .await?
            }
        };
        let (fetched, next) = split_page(fetched, page, |r| &r.conversation_id);
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
        user: &UserId,
        conversation_id: &ConversationId,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Option<Page<StoredMessage>>, StoreError> {
        if self.conversation(user, conversation_id).await?.is_none() {
            return Ok(None);
        }
        let page = page_size(limit);
        let fetched: Vec<MessageRow> = self
            .fetch(
                &self.st.select_messages_after,
                MessagesAfter {
                    conversation_id: conversation_id.as_str(),
                    after: after.unwrap_or(""),
                    fetch: fetch_limit(page),
                },
            )
            .await?;
        let (fetched, next) = split_page(fetched, page, |r| &r.message_id);
        Ok(Some(Page {
            items: fetched
                .into_iter()
                .filter_map(|r| r.into_message(conversation_id))
                .collect(),
            next,
        }))
    }

    async fn delete_conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<bool, StoreError> {
        let Some(row) = self.conversation_row(user, id).await? else {
            return Ok(false);
        };
        // Children first, the conversation row last: a delete that fails
        // half-way can be retried, the row still leads to what is left.
        let messages = self.message_rows(id).await?;
        let client_ids: Vec<&str> = messages
            .iter()
            .filter_map(|m| m.client_id.as_deref())
            .collect();
        for chunk in client_ids.chunks(KEY_DELETE_CHUNK) {
            let mut keys = Batch::new(BatchType::Unlogged);
            keys.set_is_idempotent(true);
            let mut values = Vec::with_capacity(chunk.len());
            for client_id in chunk {
                keys.append_statement(self.st.delete_key.clone());
                values.push(KeyOf {
                    user_id: user.as_str(),
                    client_id,
                });
            }
            self.session
                .batch(&keys, values)
                .await
                .map_err(ScyllaError::from)?;
        }
        self.forget_answers(&messages).await?;
        let partition = ConversationPartition {
            conversation_id: id.as_str(),
        };
        self.write(&self.st.delete_messages, partition).await?;
        self.write(
            &self.st.delete_conversation,
            ConversationKey {
                user_id: user.as_str(),
                conversation_id: id.as_str(),
            },
        )
        .await?;
        Ok(row.is_live())
    }

    async fn append_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        // One statement (or logged batch) a record, all in flight at once.
        futures::future::try_join_all(records.iter().map(|r| self.append_audit(r))).await?;
        Ok(())
    }

    async fn export_user(&self, user: &UserId) -> Result<UserExport, StoreError> {
        let mut export = UserExport::default();
        let mut ends: HashMap<String, Option<AnswerEnd>> = HashMap::new();
        for row in self.conversation_rows(user).await? {
            if let Some(conversation) = row.into_conversation(user) {
                for message in self.message_rows(&conversation.id).await? {
                    ends.insert(message.message_id.clone(), message.end());
                    export
                        .messages
                        .extend(message.into_message(&conversation.id));
                }
                export.conversations.push(conversation);
            }
        }
        let user_key = UserKey {
            user_id: user.as_str(),
        };
        for month in self
            .fetch_all::<MonthRow>(&self.st.select_audit_months, &user_key)
            .await?
        {
            let partition = UserMonth {
                user_id: user.as_str(),
                month: &month.month,
            };
            export.audit.extend(
                self.fetch_all::<AuditRow>(&self.st.select_audit, partition)
                    .await?
                    .into_iter()
                    .filter_map(|r| r.into_record(user)),
            );
        }
        for row in self
            .fetch_all::<KeyRow>(&self.st.select_all_keys, &user_key)
            .await?
        {
            let client_id = ClientMessageId::from(row.client_id.as_str());
            if let Some(intent) = row.into_intent(user) {
                let end = ends.get(intent.assistant_message_id.as_str()).cloned();
                let exchange = exchange_of(&intent, end.flatten());
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

    async fn erase_user(&self, user: &UserId) -> Result<(), StoreError> {
        // Partitions found through an index are deleted before the index:
        // an erase that fails half-way can be run again to the end.
        let conversations = self.conversation_rows(user).await?;
        self.each(conversations, |c| async move {
            let id = ConversationId::from(c.conversation_id);
            self.forget_answers(&self.message_rows(&id).await?).await?;
            self.write(
                &self.st.delete_messages,
                ConversationPartition {
                    conversation_id: id.as_str(),
                },
            )
            .await
        })
        .await?;
        let user_key = UserKey {
            user_id: user.as_str(),
        };
        self.write(&self.st.delete_user_conversations, &user_key)
            .await?;
        self.write(&self.st.delete_user_keys, &user_key).await?;
        let months = self
            .fetch_all::<MonthRow>(&self.st.select_audit_months, &user_key)
            .await?;
        self.each(months, |m| async move {
            let partition = UserMonth {
                user_id: user.as_str(),
                month: &m.month,
            };
            // The month's records in the operators' log first: the month
            // partition is what finds them.
            let records: Vec<AuditRow> = self.fetch_all(&self.st.select_audit, &partition).await?;
            for record in records {
                let Some(at_ms) = rows::ms(record.at) else {
                    continue;
                };
                let day = rows::audit_day(at_ms);
                let key = AuditDayKey {
                    day: &day,
                    audit_id: &record.audit_id,
                };
                self.write(&self.st.delete_audit_day_record, key).await?;
            }
            self.write(&self.st.delete_audit_month, partition).await
        })
        .await?;
        self.write(&self.st.delete_audit_months, &user_key).await?;
        Ok(())
    }

    /// Nothing to do on ScyllaDB: full addresses are written with a TTL
    /// that ends `scylla.address_ttl_secs` after the record's time, and the
    /// database drops them by itself (the anonymised form has no TTL).
    async fn anonymise_addresses(&self, _older_than_ms: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn set_feedback(
        &self,
        user: &UserId,
        message_id: &MessageId,
        feedback: Option<Feedback>,
    ) -> Result<bool, StoreError> {
        let Some((answer, conversation_id, bot)) = self.answer_of(user, message_id).await? else {
            return Ok(false);
        };
        let month = answer_month(answer.created_at);
        let (cid, mid) = (conversation_id.as_str(), message_id.as_str());
        let on_message = MessageFeedback::of(cid, mid, feedback.as_ref());
        let key = FeedbackKey {
            month: &month,
            message_id: mid,
        };
        match &feedback {
            Some(f) => {
                let listed = FeedbackInsert {
                    month: &month,
                    message_id: mid,
                    conversation_id: cid,
                    bot: &bot,
                    rating: i32::from(f.rating.as_i8()),
                    comment: f.comment.as_deref(),
                    at: rows::ts(f.at_ms),
                };
                let index = MonthKey { month: &month };
                self.session
                    .batch(&self.feedback_given, (on_message, listed, index))
                    .await
            }
            None => {
                self.session
                    .batch(&self.feedback_withdrawn, (on_message, key))
                    .await
            }
        }
        .map_err(ScyllaError::from)?;
        Ok(true)
    }

    async fn list_feedback(
        &self,
        filter: &FeedbackFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<FeedbackRecord>, StoreError> {
        let months: Vec<MonthRow> = self.fetch_all(&self.st.select_feedback_months, ()).await?;
        let months: Vec<String> = months.into_iter().map(|m| m.month).collect();
        let read = |month: String, before: String, fetch: i32| async move {
            let values = FeedbackBefore {
                month: &month,
                before: &before,
                fetch,
            };
            let rows: Vec<FeedbackRow> =
                self.fetch(&self.st.select_feedback_before, values).await?;
            Ok(rows
                .into_iter()
                .map(|row| {
                    let id = row.message_id.clone();
                    let kept = row.into_record().filter(|r| {
                        filter.bot.as_ref().is_none_or(|b| *b == r.bot)
                            && filter.rating.is_none_or(|w| w == r.feedback.rating)
                    });
                    (id, kept)
                })
                .collect())
        };
        Ok(scan::newest_first(&months, before, limit, read).await?)
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let wanted = |r: &AuditRecord| filter.action.is_none_or(|a| a == r.action);
        let page = match &filter.user {
            // One user's records: their month partitions, newest first.
            Some(user) => {
                let user_key = UserKey {
                    user_id: user.as_str(),
                };
                let months: Vec<MonthRow> = self
                    .fetch_all(&self.st.select_audit_months, &user_key)
                    .await?;
                let mut months: Vec<String> = months.into_iter().map(|m| m.month).collect();
                months.sort_unstable_by(|a, b| b.cmp(a));
                let read = |month: String, before: String, fetch: i32| async move {
                    let values = AuditOlder {
                        user_id: user.as_str(),
                        month: &month,
                        before: &before,
                        fetch,
                    };
                    let rows: Vec<AuditRow> =
                        self.fetch(&self.st.select_audit_older, values).await?;
                    Ok(rows
                        .into_iter()
                        .map(|row| (row.audit_id.clone(), row.into_record(user).filter(wanted)))
                        .collect())
                };
                scan::newest_first(&months, before, limit, read).await?
            }
            // Everyone's: the log by day, newest first.
            None => {
                let days: Vec<DayRow> = self.fetch_all(&self.st.select_audit_days, ()).await?;
                let days: Vec<String> = days.into_iter().map(|d| d.day).collect();
                let read = |day: String, before: String, fetch: i32| async move {
                    let values = AuditDayBefore {
                        day: &day,
                        before: &before,
                        fetch,
                    };
                    let rows: Vec<AuditDayRow> =
                        self.fetch(&self.st.select_audit_day_before, values).await?;
                    Ok(rows
                        .into_iter()
                        .map(|row| (row.audit_id.clone(), row.into_record().filter(wanted)))
                        .collect())
                };
                scan::newest_first(&days, before, limit, read).await?
            }
        };
        Ok(page)
    }

    async fn list_usage(
        &self,
        filter: &UsageFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<UsageRecord>, StoreError> {
        let limit = page_size(limit);
        let month = filter.month.to_string();
        let after = before.map(usage_cursor::parse);
        // Users are read in batches from the cursor's on, each summed by
        // bot, until the page is full, the users end, or [`scan::SCAN`]
        // users were read (a rare bot filter: a short page, with a cursor).
        // The users already summed whole (none yet: the cursor's user may
        // have bots left).
        let mut done_through: Option<String> = None;
        let mut scanned = 0;
        let mut items = Vec::new();
        loop {
            let from = done_through
                .as_deref()
                .or(after.as_ref().map(|(user, _)| user.as_str()))
                .unwrap_or("");
            let (users, last) = match &filter.user {
                Some(user) => (
                    Some(user.to_string())
                        .filter(|u| u.as_str() >= from)
                        .into_iter()
                        .collect(),
                    true,
                ),
                None => self.usage_users(&month, from, limit + 1).await?,
            };
            let users: Vec<String> = users
                .into_iter()
                .filter(|u| done_through.as_ref().is_none_or(|done| u > done))
                .collect();
            scanned += users.len();
            let mut sums = self
                .each(users, |user| async {
                    let key = UserMonth {
                        user_id: &user,
                        month: &month,
                    };
                    let rows: Vec<UsageRow> = self.fetch_all(&self.st.select_usage, key).await?;
                    Ok((user, usage_by_bot(rows)))
                })
                .await?;
            sums.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let last_user = sums.last().map(|(user, _)| user.clone());
            for (user, bots) in sums {
                for (bot, (requests, tokens)) in bots {
                    let seen = after.as_ref().is_some_and(|(u, b)| (&user, &bot) <= (u, b));
                    if seen || filter.bot.as_ref().is_some_and(|b| *b != bot) {
                        continue;
                    }
                    items.push(UsageRecord {
                        user: UserId::from(user.as_str()),
                        bot,
                        month: filter.month,
                        tokens,
                        requests,
                    });
                }
            }
            if items.len() > limit {
                items.truncate(limit);
                let next = items.last().map(usage_cursor::of);
                return Ok(Page { items, next });
            }
            let Some(last_user) = last_user.filter(|_| !last) else {
                return Ok(Page { items, next: None });
            };
            if scanned >= scan::SCAN {
                let next = Some(usage_cursor::after_every_bot(&last_user));
                return Ok(Page { items, next });
            }
            done_through = Some(last_user);
        }
    }

    async fn stored_bots(&self) -> Result<Vec<StoredBot>, StoreError> {
        let rows = self.fetch_all::<BotRow>(&self.st.select_bots, ()).await?;
        Ok(rows.into_iter().filter_map(BotRow::into_stored).collect())
    }

    async fn put_bot(&self, bot: StoredBot) -> Result<(), StoreError> {
        self.write(&self.st.upsert_bot, BotUpsert::of(&bot)).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.write(&self.st.ping, ()).await?;
        Ok(())
    }
}

/// A user's month of answers as (requests, tokens) by bot. Rows without a
/// bot (answers begun before migration 0004) are left out.
fn usage_by_bot(rows: Vec<UsageRow>) -> BTreeMap<String, (u64, u64)> {
    let mut by_bot = BTreeMap::new();
    for row in rows {
        let Some(bot) = row.bot else { continue };
        let (requests, tokens) = by_bot.entry(bot).or_insert((0, 0));
        *requests += 1;
        *tokens += row.tokens.unwrap_or(0).max(0) as u64;
    }
    by_bot
}
