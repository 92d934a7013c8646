//! The in-memory store: conversations, messages and idempotency keys in a
//! map behind one mutex.
//!
//! It keeps nothing across restarts. It is the store of tests and of the
//! demo until the embedded database lands; every operation is atomic
//! because it runs under the one lock.

use std::collections::HashMap;
use std::sync::Mutex;

use skald_actors::ports::store::{
    BeginOutcome, Conversation, Exchange, FinishedAnswer, MessageRole, NewExchange, Store,
    StoreError, StoredMessage,
};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conversations: HashMap<String, Conversation>,
    /// Messages per conversation, in insertion (= time) order.
    messages: HashMap<String, Vec<StoredMessage>>,
    /// (user, client id) -> exchange.
    exchanges: HashMap<(String, String), Exchange>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn conversation(&self, user: &str, id: &str) -> Result<Option<Conversation>, StoreError> {
        Ok(self
            .lock()
            .conversations
            .get(id)
            .filter(|c| c.user == user)
            .cloned())
    }

    async fn exchange(&self, user: &str, client_id: &str) -> Result<Option<Exchange>, StoreError> {
        Ok(self
            .lock()
            .exchanges
            .get(&(user.to_owned(), client_id.to_owned()))
            .cloned())
    }

    async fn begin_exchange(&self, ex: NewExchange) -> Result<BeginOutcome, StoreError> {
        let mut inner = self.lock();
        let key = (ex.user.clone(), ex.client_id.clone());
        if let Some(existing) = inner.exchanges.get(&key) {
            return Ok(BeginOutcome::Existing(existing.clone()));
        }
        match &ex.new_conversation {
            Some(new) => {
                inner.conversations.insert(
                    ex.conversation_id.clone(),
                    Conversation {
                        id: ex.conversation_id.clone(),
                        user: ex.user.clone(),
                        bot: new.bot.clone(),
                        title: new.title.clone(),
                        created_at_ms: ex.at_ms,
                        updated_at_ms: ex.at_ms,
                    },
                );
            }
            None => match inner.conversations.get_mut(&ex.conversation_id) {
                Some(c) if c.user == ex.user => c.updated_at_ms = ex.at_ms,
                _ => return Err(StoreError::NotFound("no such conversation".into())),
            },
        }
        let messages = inner
            .messages
            .entry(ex.conversation_id.clone())
            .or_default();
        messages.push(StoredMessage {
            id: ex.user_message_id.clone(),
            conversation_id: ex.conversation_id.clone(),
            role: MessageRole::User,
            content: ex.text,
            created_at_ms: ex.at_ms,
            finish_reason: None,
            usage: None,
        });
        messages.push(StoredMessage {
            id: ex.assistant_message_id.clone(),
            conversation_id: ex.conversation_id.clone(),
            role: MessageRole::Assistant,
            content: String::new(),
            created_at_ms: ex.at_ms,
            finish_reason: None,
            usage: None,
        });
        inner.exchanges.insert(
            key,
            Exchange {
                conversation_id: ex.conversation_id,
                user_message_id: ex.user_message_id,
                assistant_message_id: ex.assistant_message_id,
                stream_id: ex.stream_id,
                finished: None,
            },
        );
        Ok(BeginOutcome::Created)
    }

    async fn finish_answer(&self, answer: FinishedAnswer) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let message = inner
            .messages
            .get_mut(&answer.conversation_id)
            .and_then(|ms| ms.iter_mut().find(|m| m.id == answer.message_id))
            .ok_or_else(|| StoreError::NotFound("no such message".into()))?;
        message.content = answer.content;
        message.finish_reason = Some(answer.finish_reason);
        message.usage = Some(answer.usage);
        if let Some(c) = inner.conversations.get_mut(&answer.conversation_id) {
            c.updated_at_ms = answer.at_ms;
        }
        if let Some(ex) = inner
            .exchanges
            .values_mut()
            .find(|e| e.assistant_message_id == answer.message_id)
        {
            ex.finished = Some((answer.finish_reason, answer.usage));
        }
        Ok(())
    }

    async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let inner = self.lock();
        let all = inner
            .messages
            .get(conversation_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        Ok(all[all.len().saturating_sub(limit)..].to_vec())
    }
}
