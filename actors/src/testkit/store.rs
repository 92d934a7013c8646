//! The contract every store passes: the same assertions run against the
//! embedded store (SQLite) always, and against ScyllaDB where a node is
//! available. Users are prefixed with `ns` so that runs on a shared
//! database never see each other.

use skald_protocol::{
    ClientMessageId, ConversationId, ErrorBody, ErrorCode, FinishReason, MessageId, StreamId,
    Usage, UserId,
};

use crate::ports::store::MAX_PAGE;
use crate::ports::store::{
    AnswerCheckpoint, AnswerEnd, AuditAction, AuditFilter, AuditRecord, BeginOutcome, Feedback,
    FeedbackFilter, FinishedAnswer, MessageRole, NewConversation, NewExchange, Page, Rating, Store,
    StoreError, StoredBot, ToolCall, UsageFilter, UsageRecord,
};
use crate::settings::BotSettings;
use crate::time::Month;

pub async fn run_all(store: &dyn Store, ns: &str) {
    exchanges_are_idempotent_and_private(store, ns).await;
    answers_are_stored_once(store, ns).await;
    tool_turns_and_reasoning_are_stored(store, ns).await;
    checkpoints_keep_partial_answers_and_never_undo_an_end(store, ns).await;
    interrupted_answers_are_closed_with_their_checkpoint(store, ns).await;
    conversations_page_newest_first(store, ns).await;
    messages_page_oldest_first_in_order(store, ns).await;
    delete_removes_a_conversation_and_its_keys(store, ns).await;
    export_then_erase_leaves_nothing(store, ns).await;
    concurrent_resends_create_one_message(store, ns).await;
    bots_are_stored_replaced_and_deleted(store, ns).await;
    feedback_is_the_owners_shown_listed_and_erased(store, ns).await;
    audit_is_listed_newest_first_filtered_and_erased(store, ns).await;
    usage_is_summed_by_user_bot_and_month_and_outlives_erasure(store, ns).await;
}

/// A user of this run (runs on a shared database never see each other).
pub fn ns_user(ns: &str, name: &str) -> UserId {
    UserId::from(format!("{ns}-{name}"))
}

fn key(id: &str) -> ClientMessageId {
    ClientMessageId::from(id)
}

/// A new exchange in a new conversation (or `conversation` if given).
pub fn exchange(
    user: &UserId,
    client_id: &str,
    conversation: Option<&ConversationId>,
    text: &str,
) -> NewExchange {
    NewExchange {
        user: user.clone(),
        client_id: key(client_id),
        conversation_id: conversation
            .cloned()
            .unwrap_or_else(ConversationId::generate),
        bot: "default".into(),
        new_conversation: conversation.is_none().then(|| NewConversation {
            title: text.chars().take(20).collect(),
        }),
        user_message_id: MessageId::generate(),
        text: text.into(),
        tool_call_id: None,
        assistant_message_id: MessageId::generate(),
        stream_id: StreamId::generate(),
        at_ms: crate::time::now_ms(),
    }
}

/// Marked estimated, so that the flag's round trip is checked.
const USAGE: Usage = Usage {
    prompt_tokens: 3,
    completion_tokens: 4,
    reasoning_tokens: None,
    estimated: true,
};

fn answer(ex: &NewExchange, content: &str, reason: FinishReason) -> FinishedAnswer {
    FinishedAnswer {
        user: ex.user.clone(),
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: content.into(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
        end: AnswerEnd {
            finish_reason: reason,
            usage: USAGE,
            error: (reason == FinishReason::Error).then(|| ErrorBody {
                code: ErrorCode::UpstreamError,
                message: "the model failed".into(),
            }),
        },
        at_ms: crate::time::now_ms(),
    }
}

fn checkpoint(ex: &NewExchange, content: &str, at_ms: i64) -> AnswerCheckpoint {
    AnswerCheckpoint {
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: content.into(),
        at_ms,
    }
}

pub async fn exchanges_are_idempotent_and_private(store: &dyn Store, ns: &str) {
    let alice = ns_user(ns, "alice");
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
        .conversation(&ns_user(ns, "mallory"), &ex.conversation_id)
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
    let found = store.exchange(&alice, &key("c-1")).await.unwrap().unwrap();
    assert_eq!(found.conversation_id, ex.conversation_id);
    // Keys are per user.
    assert!(store
        .exchange(&ns_user(ns, "bob"), &key("c-1"))
        .await
        .unwrap()
        .is_none());
}

pub async fn answers_are_stored_once(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "ann");
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
        .finish_answers(vec![answer(&ex, text, FinishReason::Cancelled)])
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
    assert_eq!(messages[1].usage, Some(USAGE));
    let found = store.exchange(&user, &key("a-1")).await.unwrap().unwrap();
    assert_eq!(
        found.finished.map(|end| end.finish_reason),
        Some(FinishReason::Cancelled)
    );
    // A failed answer keeps the error its `done` carried.
    let failed = exchange(&user, "a-2", None, "again");
    store.begin_exchange(failed.clone()).await.unwrap();
    store
        .finish_answers(vec![answer(&failed, "part", FinishReason::Error)])
        .await
        .unwrap();
    let found = store.exchange(&user, &key("a-2")).await.unwrap().unwrap();
    let end = found.finished.expect("finished");
    assert_eq!(end.finish_reason, FinishReason::Error);
    assert_eq!(end.usage, USAGE);
    assert_eq!(end.error.map(|e| e.code), Some(ErrorCode::UpstreamError));
}

/// A tool's result as the message of an exchange, an answer that calls a
/// tool, and a reasoning model's thoughts: stored and read back as given.
pub async fn tool_turns_and_reasoning_are_stored(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "tess");
    let asked = exchange(&user, "t-1", None, "weather in Paris?");
    store.begin_exchange(asked.clone()).await.unwrap();
    let call = ToolCall {
        id: "call_1".into(),
        kind: Default::default(),
        function: skald_protocol::http::FunctionCall {
            name: "weather".into(),
            arguments: "{\"city\":\"Paris\"}".into(),
        },
    };
    store
        .finish_answers(vec![FinishedAnswer {
            reasoning: "The user wants the weather.".into(),
            tool_calls: vec![call.clone()],
            ..answer(&asked, "", FinishReason::Stop)
        }])
        .await
        .unwrap();
    let result = NewExchange {
        tool_call_id: Some("call_1".into()),
        ..exchange(&user, "t-2", Some(&asked.conversation_id), "sunny, 21 C")
    };
    store.begin_exchange(result.clone()).await.unwrap();
    store
        .finish_answers(vec![answer(&result, "It is sunny.", FinishReason::Stop)])
        .await
        .unwrap();
    let messages = store
        .recent_messages(&asked.conversation_id, 10)
        .await
        .unwrap();
    let seen: Vec<_> = messages
        .iter()
        .map(|m| {
            (
                m.role,
                m.content.as_str(),
                m.reasoning.as_deref(),
                m.tool_calls.as_slice(),
                m.tool_call_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (MessageRole::User, "weather in Paris?", None, &[][..], None),
            (
                MessageRole::Assistant,
                "",
                Some("The user wants the weather."),
                &[call][..],
                None
            ),
            (
                MessageRole::Tool,
                "sunny, 21 C",
                None,
                &[][..],
                Some("call_1")
            ),
            (MessageRole::Assistant, "It is sunny.", None, &[][..], None),
        ]
    );
    let page = store
        .list_messages(&user, &asked.conversation_id, 10, None)
        .await
        .unwrap()
        .expect("the conversation");
    assert_eq!(page.items, messages);
    let export = store.export_user(&user).await.unwrap();
    assert!(export
        .messages
        .iter()
        .any(|m| m.tool_call_id.as_deref() == Some("call_1")));
}

pub async fn checkpoints_keep_partial_answers_and_never_undo_an_end(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "cp");
    let ex = exchange(&user, "k-1", None, "question");
    store.begin_exchange(ex.clone()).await.unwrap();
    let now = crate::time::now_ms();
    store
        .checkpoint_answers(vec![checkpoint(&ex, "partial", now)])
        .await
        .unwrap();
    let messages = store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(messages[1].content, "partial");
    assert_eq!(messages[1].finish_reason, None, "still live");
    store
        .finish_answers(vec![answer(&ex, "partial and done", FinishReason::Stop)])
        .await
        .unwrap();
    // A late checkpoint (the batch raced the end) changes nothing.
    store
        .checkpoint_answers(vec![checkpoint(&ex, "partial", now + 1)])
        .await
        .unwrap();
    let messages = store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(messages[1].content, "partial and done");
    assert_eq!(messages[1].finish_reason, Some(FinishReason::Stop));
    // A checkpoint of a deleted conversation's answer is dropped quietly.
    store
        .delete_conversation(&user, &ex.conversation_id)
        .await
        .unwrap();
    store
        .checkpoint_answers(vec![checkpoint(&ex, "gone", now + 2)])
        .await
        .unwrap();
    assert!(store
        .recent_messages(&ex.conversation_id, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn interrupted_answers_are_closed_with_their_checkpoint(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "crash");
    let now = crate::time::now_ms();
    let dead = exchange(&user, "x-1", None, "lost mid-answer");
    let live = exchange(&user, "x-2", None, "still streaming");
    let done = exchange(&user, "x-3", None, "finished");
    for ex in [&dead, &live, &done] {
        store.begin_exchange(ex.clone()).await.unwrap();
    }
    store
        .checkpoint_answers(vec![
            checkpoint(&dead, "what was streamed", now - 60_000),
            checkpoint(&live, "recent", now + 60_000),
        ])
        .await
        .unwrap();
    store
        .finish_answers(vec![answer(&done, "complete", FinishReason::Stop)])
        .await
        .unwrap();
    let closed = store.close_interrupted(now).await.unwrap();
    assert!(closed >= 1, "the dead answer is closed");
    let dead_key = store.exchange(&user, &key("x-1")).await.unwrap().unwrap();
    let end = dead_key.finished.expect("closed");
    assert_eq!(end.finish_reason, FinishReason::Error);
    assert!(end.error.is_some(), "a closed answer says why");
    let messages = store
        .recent_messages(&dead.conversation_id, 10)
        .await
        .unwrap();
    assert_eq!(messages[1].content, "what was streamed");
    assert_eq!(messages[1].finish_reason, Some(FinishReason::Error));
    // Checkpointed after the cutoff: left alone.
    let live_key = store.exchange(&user, &key("x-2")).await.unwrap().unwrap();
    assert_eq!(live_key.finished, None);
    // Finished answers are never touched.
    let done_key = store.exchange(&user, &key("x-3")).await.unwrap().unwrap();
    assert_eq!(
        done_key.finished.map(|e| e.finish_reason),
        Some(FinishReason::Stop)
    );
    // Closing again closes nothing more of these.
    store.close_interrupted(now).await.unwrap();
    let again = store.exchange(&user, &key("x-1")).await.unwrap().unwrap();
    assert_eq!(again.finished, Some(end));
}

pub async fn conversations_page_newest_first(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "pat");
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
        .list_conversations(&ns_user(ns, "nobody"), 10, None)
        .await
        .unwrap();
    assert!(other.items.is_empty() && other.next.is_none());
}

pub async fn messages_page_oldest_first_in_order(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "ord");
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
        .list_messages(&ns_user(ns, "mallory"), &conversation, 10, None)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .list_messages(&user, &ConversationId::from("no-such-id"), 10, None)
        .await
        .unwrap()
        .is_none());
    let recent = store.recent_messages(&conversation, 2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].content, "m3", "the last two, oldest first");
}

pub async fn delete_removes_a_conversation_and_its_keys(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "del");
    let ex = exchange(&user, "d-1", None, "forget me");
    store.begin_exchange(ex.clone()).await.unwrap();
    assert!(!store
        .delete_conversation(&ns_user(ns, "mallory"), &ex.conversation_id)
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
    assert!(store.exchange(&user, &key("d-1")).await.unwrap().is_none());
    assert!(!store
        .delete_conversation(&user, &ex.conversation_id)
        .await
        .unwrap());
}

pub async fn export_then_erase_leaves_nothing(store: &dyn Store, ns: &str) {
    let user = ns_user(ns, "gdpr");
    let other = ns_user(ns, "keep");
    let ex = exchange(&user, "g-1", None, "personal data");
    store.begin_exchange(ex.clone()).await.unwrap();
    store
        .finish_answers(vec![answer(&ex, "an answer", FinishReason::Stop)])
        .await
        .unwrap();
    let kept = exchange(&other, "g-1", None, "not erased");
    store.begin_exchange(kept.clone()).await.unwrap();
    let audit = |who: &UserId, action| AuditRecord {
        id: uuid::Uuid::now_v7().to_string(),
        at_ms: crate::time::now_ms(),
        user: Some(who.clone()),
        action,
        address: Some("203.0.113.7".into()),
        address_anonymised: Some("203.0.113.0".into()),
        detail: String::new(),
        actor: None,
    };
    // An operator's change about the user keeps who made it.
    let operator = ns_user(ns, "ops");
    store
        .append_audits(vec![
            audit(&user, AuditAction::UserLimitsChanged).by(&operator)
        ])
        .await
        .unwrap();
    store
        .append_audits(vec![audit(&other, AuditAction::ConversationCreated)])
        .await
        .unwrap();
    let export = store.export_user(&user).await.unwrap();
    assert_eq!(export.conversations.len(), 1);
    assert_eq!(export.messages.len(), 2);
    assert!(export.messages.iter().any(|m| m.content == "an answer"));
    assert_eq!(export.audit.len(), 1);
    assert_eq!(export.audit[0].address.as_deref(), Some("203.0.113.7"));
    assert_eq!(export.audit[0].action, AuditAction::UserLimitsChanged);
    assert_eq!(export.audit[0].actor.as_ref(), Some(&operator));
    assert_eq!(export.idempotency_keys.len(), 1);
    store.erase_user(&user).await.unwrap();
    let after = store.export_user(&user).await.unwrap();
    assert_eq!(
        after,
        Default::default(),
        "export after erase returns nothing"
    );
    assert!(store.exchange(&user, &key("g-1")).await.unwrap().is_none());
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
    let user = ns_user(ns, "race");
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

/// Bots are global: this run's bots are those whose name starts with `ns`.
pub async fn bots_are_stored_replaced_and_deleted(store: &dyn Store, ns: &str) {
    let operator = ns_user(ns, "ops");
    let bot = |name: &str, settings: Option<BotSettings>| StoredBot {
        name: format!("{ns}-{name}"),
        settings,
        updated_at_ms: crate::time::now_ms(),
        updated_by: operator.clone(),
    };
    let mine = || async {
        let mut bots: Vec<StoredBot> = store
            .stored_bots()
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.name.starts_with(ns))
            .collect();
        bots.sort_by(|a, b| a.name.cmp(&b.name));
        bots
    };
    let sales = BotSettings {
        system_prompt: "You sell.".into(),
        allowed_origins: vec!["https://shop.example".into()],
        monthly_tokens: Some(77),
        ..BotSettings::default()
    };
    store
        .put_bot(bot("sales", Some(sales.clone())))
        .await
        .unwrap();
    store.put_bot(bot("gone", None)).await.unwrap();
    let bots = mine().await;
    let names: Vec<&str> = bots.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, [format!("{ns}-gone"), format!("{ns}-sales")]);
    assert_eq!(bots[0].settings, None, "a deletion is kept, as a tombstone");
    assert_eq!(bots[1].settings.as_ref(), Some(&sales));
    assert_eq!(bots[1].updated_by, operator);
    let replaced = BotSettings {
        max_tokens: 9,
        ..sales
    };
    store
        .put_bot(bot("sales", Some(replaced.clone())))
        .await
        .unwrap();
    store
        .put_bot(bot("gone", Some(BotSettings::default())))
        .await
        .unwrap();
    let bots = mine().await;
    assert_eq!(bots.len(), 2, "a put replaces, never adds");
    assert_eq!(bots[1].settings.as_ref(), Some(&replaced));
    assert_eq!(bots[0].settings.as_ref(), Some(&BotSettings::default()));
    store.put_bot(bot("sales", None)).await.unwrap();
    assert_eq!(mine().await[1].settings, None);
}

/// Feedback is listed for everyone: this run's is on its own bot.
pub async fn feedback_is_the_owners_shown_listed_and_erased(store: &dyn Store, ns: &str) {
    let (user, other) = (ns_user(ns, "rater"), ns_user(ns, "stranger"));
    let bot = format!("{ns}-rated");
    let mut answers = Vec::new();
    for (i, text) in ["first", "second", "third"].into_iter().enumerate() {
        let mut ex = exchange(&user, &format!("fb-{i}"), None, text);
        ex.bot = bot.clone();
        store.begin_exchange(ex.clone()).await.unwrap();
        store
            .finish_answers(vec![answer(&ex, "an answer", FinishReason::Stop)])
            .await
            .unwrap();
        answers.push(ex);
    }
    let feedback = |rating, comment: Option<&str>| Feedback {
        rating,
        comment: comment.map(str::to_owned),
        at_ms: crate::time::now_ms(),
    };
    let up = feedback(Rating::Up, None);
    let down = feedback(Rating::Down, Some("wrong: it is blue, not red"));
    let set = |who: &UserId, id: &MessageId, f: Option<Feedback>| {
        let (who, id) = (who.clone(), id.clone());
        async move { store.set_feedback(&who, &id, f).await.unwrap() }
    };
    // Only the owner, only on an answer.
    assert!(!set(&other, &answers[0].assistant_message_id, Some(up.clone())).await);
    assert!(!set(&user, &answers[0].user_message_id, Some(up.clone())).await);
    assert!(!set(&user, &MessageId::generate(), Some(up.clone())).await);
    assert!(set(&user, &answers[0].assistant_message_id, Some(down.clone())).await);
    assert!(set(&user, &answers[1].assistant_message_id, Some(down.clone())).await);
    assert!(set(&user, &answers[2].assistant_message_id, Some(up.clone())).await);
    // Replaced, not added.
    assert!(set(&user, &answers[1].assistant_message_id, Some(up.clone())).await);
    // Shown on the answer in the history.
    let page = store
        .list_messages(&user, &answers[0].conversation_id, 10, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items[0].feedback, None, "the user message has none");
    assert_eq!(
        page.items[1]
            .feedback
            .as_ref()
            .map(|f| (f.rating, f.comment.as_deref())),
        Some((Rating::Down, Some("wrong: it is blue, not red")))
    );
    // Listed newest answer first, filtered, paged.
    let all = |filter: FeedbackFilter, limit: usize| async move {
        all_pages(limit, |before| {
            let filter = filter.clone();
            async move { store.list_feedback(&filter, limit, before.as_deref()).await }
        })
        .await
    };
    let mine = FeedbackFilter {
        bot: Some(bot.clone()),
        rating: None,
    };
    let listed = all(mine.clone(), 1).await;
    let ids: Vec<&MessageId> = listed.iter().map(|r| &r.message_id).collect();
    let newest_first: Vec<&MessageId> = answers
        .iter()
        .rev()
        .map(|a| &a.assistant_message_id)
        .collect();
    assert_eq!(ids, newest_first);
    assert_eq!(listed[2].conversation_id, answers[0].conversation_id);
    assert_eq!(listed[2].bot, bot);
    assert_eq!(
        listed[2].feedback.comment.as_deref(),
        Some("wrong: it is blue, not red")
    );
    let downs = FeedbackFilter {
        rating: Some(Rating::Down),
        ..mine.clone()
    };
    let listed = all(downs.clone(), 50).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].message_id, answers[0].assistant_message_id);
    // Withdrawn: gone from the answer and the listing.
    assert!(set(&user, &answers[0].assistant_message_id, None).await);
    assert!(all(downs, 50).await.is_empty());
    let export = store.export_user(&user).await.unwrap();
    let rated = export
        .messages
        .iter()
        .filter(|m| m.feedback.is_some())
        .count();
    assert_eq!(rated, 2, "the export holds the feedback");
    // Erased with the user.
    store.erase_user(&user).await.unwrap();
    assert!(all(mine, 50).await.is_empty());
}

/// Every page of a listing, `limit` at a time: `list(before)` reads one.
async fn all_pages<T, F, Fut>(limit: usize, mut list: F) -> Vec<T>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, StoreError>>,
{
    let mut items = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..10_000 {
        let page = list(before.take()).await.unwrap();
        assert!(page.items.len() <= limit);
        items.extend(page.items);
        match page.next {
            Some(next) => before = Some(next),
            None => return items,
        }
    }
    panic!("a listing never ended");
}

async fn all_audit(store: &dyn Store, filter: &AuditFilter, limit: usize) -> Vec<AuditRecord> {
    all_pages(limit, |before| async move {
        store.list_audit(filter, limit, before.as_deref()).await
    })
    .await
}

/// The audit log is shared: this run's records are those of its users.
pub async fn audit_is_listed_newest_first_filtered_and_erased(store: &dyn Store, ns: &str) {
    let (alice, bob, ops) = (
        ns_user(ns, "audited"),
        ns_user(ns, "other"),
        ns_user(ns, "ops"),
    );
    let address = Some("198.51.100.7".parse().unwrap());
    let records = [
        AuditRecord::now(
            AuditAction::ConversationCreated,
            Some(&alice),
            address,
            "c-1",
        ),
        AuditRecord::now(AuditAction::Exported, Some(&bob), address, ""),
        AuditRecord::now(
            AuditAction::UserLimitsChanged,
            Some(&alice),
            address,
            "limits",
        )
        .by(&ops),
        AuditRecord::now(AuditAction::AuthFailed, None, address, "bad signature"),
    ];
    store.append_audits(records.to_vec()).await.unwrap();
    let ids = |records: &[AuditRecord]| records.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let of_alice = AuditFilter {
        user: Some(alice.clone()),
        action: None,
    };
    let listed = all_audit(store, &of_alice, 1).await;
    assert_eq!(
        ids(&listed),
        ids(&[records[2].clone(), records[0].clone()]),
        "newest first"
    );
    assert_eq!(listed[0], records[2], "every field, the actor too");
    let changes = AuditFilter {
        user: Some(alice.clone()),
        action: Some(AuditAction::UserLimitsChanged),
    };
    assert_eq!(
        ids(&all_audit(store, &changes, 10).await),
        ids(&records[2..3])
    );
    // Everyone's log holds them all, the record without a user too.
    let everyone = all_audit(store, &AuditFilter::default(), MAX_PAGE).await;
    let mine: Vec<String> = ids(&everyone)
        .into_iter()
        .filter(|id| records.iter().any(|r| r.id == *id))
        .collect();
    let newest_first: Vec<String> = records.iter().rev().map(|r| r.id.clone()).collect();
    assert_eq!(mine, newest_first);
    // Erased with their user, from every listing.
    store.erase_user(&alice).await.unwrap();
    assert!(all_audit(store, &of_alice, 10).await.is_empty());
    let everyone = ids(&all_audit(store, &AuditFilter::default(), MAX_PAGE).await);
    assert!(!everyone.contains(&records[0].id) && !everyone.contains(&records[2].id));
    assert!(everyone.contains(&records[1].id) && everyone.contains(&records[3].id));
}

async fn all_usage(store: &dyn Store, filter: &UsageFilter, limit: usize) -> Vec<UsageRecord> {
    all_pages(limit, |before| async move {
        store.list_usage(filter, limit, before.as_deref()).await
    })
    .await
}

/// Usage is listed for everyone: this run's is in a month of its own (a
/// past one, picked from `ns`), where only its users are.
pub async fn usage_is_summed_by_user_bot_and_month_and_outlives_erasure(
    store: &dyn Store,
    ns: &str,
) {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hash = DefaultHasher::new();
    ns.hash(&mut hash);
    let pick = hash.finish();
    let month = Month::parse(&format!("{}-{:02}", 1980 + pick % 40, 1 + (pick >> 8) % 12)).unwrap();
    let earlier = month.previous();
    let in_month = |m: Month, offset_ms: i64| m.previous().next_start_ms() + offset_ms;
    let (a, b) = (ns_user(ns, "usage-a"), ns_user(ns, "usage-b"));
    // A: two finished answers of `alpha` (in one conversation) and one
    // unfinished of `beta`; B: one of `alpha` this month and one earlier.
    let mut first = exchange(&a, "u-1", None, "one");
    first.bot = "alpha".into();
    first.at_ms = in_month(month, 1_000);
    let mut second = exchange(&a, "u-2", Some(&first.conversation_id), "two");
    second.bot = "alpha".into();
    second.at_ms = in_month(month, 2_000);
    let mut open = exchange(&a, "u-3", None, "three");
    open.bot = "beta".into();
    open.at_ms = in_month(month, 3_000);
    let mut of_b = exchange(&b, "u-4", None, "four");
    of_b.bot = "alpha".into();
    of_b.at_ms = in_month(month, 4_000);
    let mut old = exchange(&b, "u-5", None, "five");
    old.bot = "alpha".into();
    old.at_ms = in_month(earlier, 5_000);
    for ex in [&first, &second, &open, &of_b, &old] {
        store.begin_exchange(ex.clone()).await.unwrap();
    }
    // B deletes the conversation while its answer streams: the answer is
    // not stored, its usage still counts.
    store
        .delete_conversation(&b, &of_b.conversation_id)
        .await
        .unwrap();
    let finished: Vec<FinishedAnswer> = [&first, &second, &of_b, &old]
        .into_iter()
        .map(|ex| FinishedAnswer {
            at_ms: ex.at_ms + 60_000,
            ..answer(ex, "an answer", FinishReason::Stop)
        })
        .collect();
    store.finish_answers(finished.clone()).await.unwrap();
    // An answer stored twice (a replayed spool) counts once.
    store.finish_answers(finished[..1].to_vec()).await.unwrap();
    let tokens = USAGE.total();
    let row = |user: &UserId, bot: &str, m: Month, requests: u64, tokens: u64| UsageRecord {
        user: user.clone(),
        bot: bot.into(),
        month: m,
        tokens,
        requests,
    };
    let everyone = UsageFilter {
        month,
        user: None,
        bot: None,
    };
    let expected = vec![
        row(&a, "alpha", month, 2, 2 * tokens),
        row(&a, "beta", month, 1, 0),
        row(&b, "alpha", month, 1, tokens),
    ];
    for limit in [1, 2, MAX_PAGE] {
        assert_eq!(
            all_usage(store, &everyone, limit).await,
            expected,
            "pages of {limit}"
        );
    }
    let of_a = UsageFilter {
        user: Some(a.clone()),
        ..everyone.clone()
    };
    assert_eq!(all_usage(store, &of_a, 1).await, expected[..2]);
    let alpha = UsageFilter {
        bot: Some("alpha".into()),
        ..everyone.clone()
    };
    assert_eq!(
        all_usage(store, &alpha, 1).await,
        [expected[0].clone(), expected[2].clone()]
    );
    let before = UsageFilter {
        month: earlier,
        user: Some(b.clone()),
        bot: None,
    };
    assert_eq!(
        all_usage(store, &before, 10).await,
        [row(&b, "alpha", earlier, 1, tokens)]
    );
    // Counters, with no content: kept when the user is erased.
    store.erase_user(&a).await.unwrap();
    assert_eq!(all_usage(store, &everyone, MAX_PAGE).await, expected);
}
