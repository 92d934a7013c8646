//! The real embedded store behind fault switches: a test can take it down
//! (every call fails with `Unavailable`, as a store outage does) or make the
//! caller panic on a chosen text (a bug inside a session).

use std::sync::atomic::{AtomicBool, Ordering};

use skald::store::sqlite::SqliteStore;
use skald_actors::ports::store::{
    AnswerCheckpoint, AuditFilter, AuditRecord, BeginOutcome, Conversation, Exchange, Feedback,
    FeedbackFilter, FeedbackRecord, FinishedAnswer, NewExchange, Page, Store, StoreError,
    StoredBot, StoredMessage, UsageFilter, UsageRecord, UserExport,
};
use skald_protocol::{ClientMessageId, ConversationId, MessageId, UserId};

pub struct FaultyStore {
    pub inner: SqliteStore,
    pub down: AtomicBool,
    /// Only `begin_exchange` fails (the write of an exchange; reads work),
    /// after 200 ms, as a store that times out does.
    pub begin_down: AtomicBool,
    /// `begin_exchange` panics when the text contains this.
    pub panic_on: Option<String>,
    /// `finish_answers` waits this long first (a wedged store).
    pub finish_delay: std::sync::Mutex<std::time::Duration>,
}

impl FaultyStore {
    pub fn new(inner: SqliteStore) -> FaultyStore {
        FaultyStore {
            inner,
            down: AtomicBool::new(false),
            begin_down: AtomicBool::new(false),
            panic_on: None,
            finish_delay: std::sync::Mutex::new(std::time::Duration::ZERO),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::unavailable("switched off by the test"))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        self.check()?;
        self.inner.conversation(user, id).await
    }
    async fn exchange(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        self.check()?;
        self.inner.exchange(user, client_id).await
    }
    async fn begin_exchange(&self, exchange: NewExchange) -> Result<BeginOutcome, StoreError> {
        if let Some(trigger) = &self.panic_on {
            if exchange.text.contains(trigger.as_str()) {
                panic!("injected fault for a test");
            }
        }
        self.check()?;
        if self.begin_down.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            return Err(StoreError::unavailable(
                "exchange writes switched off by the test",
            ));
        }
        self.inner.begin_exchange(exchange).await
    }
    async fn finish_answers(&self, answers: Vec<FinishedAnswer>) -> Result<(), StoreError> {
        let delay = *self.finish_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.check()?;
        self.inner.finish_answers(answers).await
    }
    async fn checkpoint_answers(
        &self,
        checkpoints: Vec<AnswerCheckpoint>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.checkpoint_answers(checkpoints).await
    }
    async fn close_interrupted(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.close_interrupted(older_than_ms).await
    }
    async fn recent_messages(
        &self,
        id: &ConversationId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.check()?;
        self.inner.recent_messages(id, limit).await
    }
    async fn list_conversations(
        &self,
        user: &UserId,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError> {
        self.check()?;
        self.inner.list_conversations(user, limit, before).await
    }
    async fn list_messages(
        &self,
        user: &UserId,
        conversation_id: &ConversationId,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Option<Page<StoredMessage>>, StoreError> {
        self.check()?;
        self.inner
            .list_messages(user, conversation_id, limit, after)
            .await
    }
    async fn delete_conversation(
        &self,
        user: &UserId,
        id: &ConversationId,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete_conversation(user, id).await
    }
    async fn append_audits(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_audits(records).await
    }
    async fn export_user(&self, user: &UserId) -> Result<UserExport, StoreError> {
        self.check()?;
        self.inner.export_user(user).await
    }
    async fn erase_user(&self, user: &UserId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.erase_user(user).await
    }
    async fn anonymise_addresses(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.anonymise_addresses(older_than_ms).await
    }
    async fn set_feedback(
        &self,
        user: &UserId,
        message_id: &MessageId,
        feedback: Option<Feedback>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.set_feedback(user, message_id, feedback).await
    }
    async fn list_feedback(
        &self,
        filter: &FeedbackFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<FeedbackRecord>, StoreError> {
        self.check()?;
        self.inner.list_feedback(filter, limit, before).await
    }
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError> {
        self.check()?;
        self.inner.list_audit(filter, limit, before).await
    }
    async fn list_usage(
        &self,
        filter: &UsageFilter,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Page<UsageRecord>, StoreError> {
        self.check()?;
        self.inner.list_usage(filter, limit, before).await
    }
    async fn stored_bots(&self) -> Result<Vec<StoredBot>, StoreError> {
        self.check()?;
        self.inner.stored_bots().await
    }
    async fn put_bot(&self, bot: StoredBot) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_bot(bot).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}
