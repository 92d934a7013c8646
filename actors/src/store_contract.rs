//! The contract every store passes: the same assertions run against the
//! embedded store (SQLite) always, and against ScyllaDB where a node is
//! available. Users are prefixed with `ns` so that runs on a shared
//! database never see each other.

use skald_protocol::{FinishReason, Usage};

use crate::new_id;
use crate::ports::store::{
    AuditAction, AuditRecord, BeginOutcome, FinishedAnswer, MessageRole, NewConversation,
    NewExchange, Store,
};

pub async fn run_all(store: &dyn Store, ns: &str) {
    exchanges_are_idempotent_and_private(store, ns).await;
    answers_are_stored_once(store, ns).await;
    conversations_page_newest_first(store, ns).await;
    messages_page_oldest_first_in_order(store, ns).await;
    delete_removes_a_conversation_and_its_keys(store, ns).await;
    export_then_erase_leaves_nothing(store, ns).await;
    concurrent_resends_create_one_message(store, ns).await;
}

/// A new exchange in a new conversation (or `conversation` if given).
pub fn exchange(
    user: &str,
    client_id: &str,
    conversation: Option<&str>,
    text: &str,
) -> NewExchange {
    NewExchange {
        user: user.into(),
        client_id: client_id.into(),
        conversation_id: conversation.map(str::to_owned).unwrap_or_else(new_id),
        new_conversation: conversation.is_none().then(|| NewConversation {
            bot: "default".into(),
            title: text.chars().take(20).collect(),
        }),
        user_message_id: new_id(),
        text: text.into(),
        assistant_message_id: new_id(),
        stream_id: new_id(),
        at_ms: crate::time::now_ms(),
    }
}

fn answer(ex: &NewExchange, content: &str, reason: FinishReason) -> FinishedAnswer {
    FinishedAnswer {
        user: ex.user.clone(),
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: content.into(),
        finish_reason: reason,
        usage: Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        },
        at_ms: crate::time::now_ms(),
    }
}

pub async fn exchanges_are_idempotent_and_private(store: &dyn Store, ns: &str) {
    let alice = format!("{ns}-alice");
    let ex = exchange(&alice, "c-1", None, "Bonjour");
    assert_eq!(
        store.begin_exchange(ex.clone()).await.unwrap(),
        BeginOutcome::Created
    );
    let conversation = store
        .conversation(&alice, &ex.conversation_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conversation.user, alice);
    assert_eq!(conversation.bot, "default");
    assert!(store
        .conversation(&format!("{ns}-mallory"), &ex.conversation_id)
        .await
        .unwrap()
        .is_none());
    // The same key again: the first exchange, nothing written.
    let again = exchange(&alice, "c-1", None, "something else");
    match store.begin_exchange(again.clone()).await.unwrap() {
        BeginOutcome::Existing(existing) => {
            assert_eq!(existing.stream_id, ex.stream_id);
            assert_eq!(existing.assistant_message_id, ex.assistant_message_id);
            assert_eq!(existing.finished, None);
        }
        other => panic!("expected the existing exchange, got {other:?}"),
    }
    assert!(store
        .conversation(&alice, &again.conversation_id)
        .await
        .unwrap()
        .is_none());
    let found = store.exchange(&alice, "c-1").await.unwrap().unwrap();
    assert_eq!(found.conversation_id, ex.conversation_id);
    // Keys are per user.
    assert!(store
        .exchange(&format!("{ns}-bob"), "c-1")
        .await
        .unwrap()
        .is_none());
}

pub async fn answers_are_stored_once(store: &dyn Store, ns: &str) {
    let user = format!("{ns}-ann");
    let ex = exchange(&user, "a-1", None, "question");
    store.begin_exchange(ex.clone()).await.unwrap();
    let pending = store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(
        (pending[0].role, pending[0].content.as_str()),
        (MessageRole::User, "question")
    );
    assert_eq!(pending[1].role, MessageRole::Assistant);
    assert_eq!(pending[1].finish_reason, None);
    let text = "la réponse, byte for byte: \u{1F642} \"quoted\" \\ ";
    store
        .finish_answer(answer(&ex, text, FinishReason::Cancelled))
        .await
        .unwrap();
    // Stored twice (a retried batch): still one answer.
    store
        .finish_answers(vec![answer(&ex, text, FinishReason::Cancelled)])
        .await
        .unwrap();
    let messages = store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].content, text);
    assert_eq!(messages[1].finish_reason, Some(FinishReason::Cancelled));
    assert_eq!(
        messages[1].usage,
        Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 4
        })
    );
    let found = store.exchange(&user, "a-1").await.unwrap().unwrap();
    assert_eq!(
        found.finished.map(|(r, _)| r),
        Some(FinishReason::Cancelled)
    );
}

pub async fn conversations_page_newest_first(store: &dyn Store, ns: &str) {
    let user = format!("{ns}-pat");
    let mut ids = Vec::new();
    for i in 0..5 {
        let ex = exchange(&user, &format!("p-{i}"), None, &format!("conversation {i}"));
        ids.push(ex.conversation_id.clone());
        store.begin_exchange(ex).await.unwrap();
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_conversations(&user, 2, before.as_deref())
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|c| c.id.clone()));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging must end");
    }
    assert_eq!(seen, ids, "newest first, each once");
    let other = store
        .list_conversations(&format!("{ns}-nobody"), 10, None)
        .await
        .unwrap();
    assert!(other.items.is_empty() && other.next.is_none());
}

pub async fn messages_page_oldest_first_in_order(store: &dyn Store, ns: &str) {
    let user = format!("{ns}-ord");
    let first = exchange(&user, "o-0", None, "m0");
    let conversation = first.conversation_id.clone();
    store.begin_exchange(first).await.unwrap();
    for i in 1..4 {
        store
            .begin_exchange(exchange(
                &user,
                &format!("o-{i}"),
                Some(&conversation),
                &format!("m{i}"),
            ))
            .await
            .unwrap();
    }
    let mut texts = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_messages(&user, &conversation, 3, after.as_deref())
            .await
            .unwrap()
            .unwrap();
        texts.extend(
            page.items
                .iter()
                .filter(|m| m.role == MessageRole::User)
                .map(|m| m.content.clone()),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(texts, ["m0", "m1", "m2", "m3"]);
    assert!(store
        .list_messages(&format!("{ns}-mallory"), &conversation, 10, None)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .list_messages(&user, "no-such-id", 10, None)
        .await
        .unwrap()
        .is_none());
    let recent = store.recent_messages(&conversation, 2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].content, "m3", "the last two, oldest first");
}

pub async fn delete_removes_a_conversation_and_its_keys(store: &dyn Store, ns: &str) {
    let user = format!("{ns}-del");
    let ex = exchange(&user, "d-1", None, "forget me");
    store.begin_exchange(ex.clone()).await.unwrap();
    assert!(!store
        .delete_conversation(&format!("{ns}-mallory"), &ex.conversation_id)
        .await
        .unwrap());
    assert!(store
        .conversation(&user, &ex.conversation_id)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .delete_conversation(&user, &ex.conversation_id)
        .await
        .unwrap());
    assert!(store
        .conversation(&user, &ex.conversation_id)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .list_messages(&user, &ex.conversation_id, 10, None)
        .await
        .unwrap()
        .is_none());
    assert!(store.exchange(&user, "d-1").await.unwrap().is_none());
    assert!(!store
        .delete_conversation(&user, &ex.conversation_id)
        .await
        .unwrap());
}

pub async fn export_then_erase_leaves_nothing(store: &dyn Store, ns: &str) {
    let user = format!("{ns}-gdpr");
    let other = format!("{ns}-keep");
    let ex = exchange(&user, "g-1", None, "personal data");
    store.begin_exchange(ex.clone()).await.unwrap();
    store
        .finish_answer(answer(&ex, "an answer", FinishReason::Stop))
        .await
        .unwrap();
    let kept = exchange(&other, "g-1", None, "not erased");
    store.begin_exchange(kept.clone()).await.unwrap();
    let audit = |who: &str, action| AuditRecord {
        id: new_id(),
        at_ms: crate::time::now_ms(),
        user: Some(who.into()),
        action,
        address: Some("203.0.113.7".into()),
        address_anonymised: Some("203.0.113.0".into()),
        detail: String::new(),
    };
    store
        .append_audit(audit(&user, AuditAction::ConversationCreated))
        .await
        .unwrap();
    store
        .append_audit(audit(&other, AuditAction::ConversationCreated))
        .await
        .unwrap();
    let export = store.export_user(&user).await.unwrap();
    assert_eq!(export.conversations.len(), 1);
    assert_eq!(export.messages.len(), 2);
    assert!(export.messages.iter().any(|m| m.content == "an answer"));
    assert_eq!(export.audit.len(), 1);
    assert_eq!(export.audit[0].address.as_deref(), Some("203.0.113.7"));
    assert_eq!(export.idempotency_keys.len(), 1);
    store.erase_user(&user).await.unwrap();
    let after = store.export_user(&user).await.unwrap();
    assert_eq!(
        after,
        Default::default(),
        "export after erase returns nothing"
    );
    assert!(store.exchange(&user, "g-1").await.unwrap().is_none());
    assert!(store
        .conversation(&user, &ex.conversation_id)
        .await
        .unwrap()
        .is_none());
    // Nobody else lost anything.
    let kept_export = store.export_user(&other).await.unwrap();
    assert_eq!(kept_export.conversations.len(), 1);
    assert_eq!(kept_export.audit.len(), 1);
}

pub async fn concurrent_resends_create_one_message(store: &dyn Store, ns: &str) {
    let user = format!("{ns}-race");
    let attempts = (0..8).map(|_| store.begin_exchange(exchange(&user, "same", None, "once")));
    let outcomes = futures::future::join_all(attempts).await;
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(BeginOutcome::Created)))
        .count();
    assert_eq!(created, 1);
    let conversations = store.list_conversations(&user, 10, None).await.unwrap();
    assert_eq!(conversations.items.len(), 1);
}
