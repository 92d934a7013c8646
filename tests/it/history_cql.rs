//! The history and GDPR API through the real server with the ScyllaDB
//! store on a CQL node: the same tests as `history.rs` (each in a keyspace
//! of its own), and what only a store shared by instances does: a `send.id`
//! resent to another instance, and the answers of a dead instance closed
//! by the next one that starts.

use std::sync::Arc;

use serde_json::{json, Value};
use skald_actors::ports::store::Store;
use skald_actors::testkit::store::exchange;
use skald_protocol::{ConversationId, MessageId, StreamId, UserId};

use crate::common::cql::Keyspace;
use crate::common::*;
use crate::history::{self, messages};

/// Each `name => body` runs the history test `body` on a fresh keyspace;
/// every server of it (a restart too) connects to the keyspace anew, as an
/// instance does.
macro_rules! on_cql {
    ($($name:ident => $body:path),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(ks) = Keyspace::shared(stringify!($name)).await else {
                return;
            };
            $body(&async || Some(ks.shared_store().await)).await;
        }
    )*};
}

on_cql!(
    history_returns_exactly_what_was_streamed_even_when_cancelled => history::history_returns_exactly_what_was_streamed_even_when_cancelled_on,
    conversations_page_with_opaque_cursors_and_bad_input_is_refused => history::conversations_page_with_opaque_cursors_and_bad_input_is_refused_on,
    other_users_get_404_and_no_token_gets_401 => history::other_users_get_404_and_no_token_gets_401_on,
    delete_then_export_then_erase_leaves_nothing => history::delete_then_export_then_erase_leaves_nothing_on,
    history_and_idempotency_survive_a_restart => history::history_and_idempotency_survive_a_restart_on,
    concurrent_writers_in_one_conversation_keep_order => history::concurrent_writers_in_one_conversation_keep_order_on,
);

/// Two instances on one keyspace: a `send.id` resent to the other instance
/// gets the first ack and the same `done`, and the same id sent to both at
/// once creates one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_id_is_idempotent_across_instances_sharing_the_keyspace() {
    let Some(ks) =
        Keyspace::shared("a_send_id_is_idempotent_across_instances_sharing_the_keyspace").await
    else {
        return;
    };
    let on_ks = async || Some(ks.shared_store().await);
    let a = history::instant_on(&on_ks).await.start().await;
    let b = history::instant_on(&on_ks).await.start().await;
    let mut on_a = a.client("shared").await;
    let ack = send(&mut on_a, "once", None, "asked on a").await;
    let done = collect_stream(&mut on_a, ack["stream_id"].as_str().unwrap(), 0)
        .await
        .done;
    assert_eq!(done["finish_reason"], "stop");

    let mut on_b = b.client("shared").await;
    on_b.send(json!({"type":"send","id":"once","text":"asked on a"}))
        .await;
    assert_eq!(on_b.recv().await, ack, "the first ack");
    assert_eq!(on_b.recv().await, done, "the same done");
    let conversation = ack["conversation_id"].as_str().unwrap();
    assert_eq!(messages(&b, "shared", conversation).await.len(), 2);

    // The same new id to both instances at the same moment.
    let mut tasks = Vec::new();
    for url in [a.url(), b.url()] {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url, Some(&token("racer"))).await;
            client.recv().await;
            send(&mut client, "raced", None, "sent twice").await
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        acks.push(task.await.unwrap());
    }
    assert_eq!(acks[0], acks[1], "one exchange, the same ack on both");
    let (_, listed) = a.get_json("/v1/conversations", Some("racer")).await;
    assert_eq!(listed["conversations"].as_array().unwrap().len(), 1);
    a.stop().await;
    b.stop().await;
}

/// The answers of an instance that died (begun ten minutes ago, last
/// checkpointed then) are closed by the next instance that starts: as
/// `error`, `unavailable`, with what was checkpointed, in the history and
/// to a resent `send.id`; an answer another instance checkpointed a moment
/// ago is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_answers_are_closed_at_start() {
    let Some(ks) = Keyspace::shared("interrupted_answers_are_closed_at_start").await else {
        return;
    };
    let store = ks.shared_store().await;
    let user = UserId::from("died");
    let ten_minutes_ago = skald_actors::time::now_ms() - 600_000;
    // Ids as that instance made them then (UUIDv7 carry their time), a
    // millisecond apart so that they sort as they were made.
    let old_id = |ms: i64| {
        let at = ten_minutes_ago + ms;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            (at / 1000) as u64,
            (at % 1000) as u32 * 1_000_000,
        );
        uuid::Uuid::new_v7(ts).to_string()
    };
    let mut dead = exchange(&user, "dead", None, "asked before the crash");
    dead.conversation_id = ConversationId::from(old_id(0));
    dead.user_message_id = MessageId::from(old_id(1));
    dead.assistant_message_id = MessageId::from(old_id(2));
    dead.stream_id = StreamId::from(old_id(3));
    dead.at_ms = ten_minutes_ago;
    let live = exchange(&user, "live", None, "streaming elsewhere");
    store.begin_exchange(dead.clone()).await.unwrap();
    store.begin_exchange(live.clone()).await.unwrap();
    store
        .checkpoint_answers(vec![
            checkpoint(&dead, "what was streamed", ten_minutes_ago + 1_000),
            checkpoint(&live, "still going", skald_actors::time::now_ms()),
        ])
        .await
        .unwrap();

    let server = TestServer::builder()
        .store(ks.shared_store().await)
        .start()
        .await;
    let listed = messages(&server, "died", dead.conversation_id.as_str()).await;
    assert_eq!(listed[1]["finish_reason"], "error", "{listed:?}");
    assert_eq!(listed[1]["content"], "what was streamed");
    let mut client = server.client("died").await;
    client
        .send(json!({"type":"send","id":"dead","text":"asked before the crash"}))
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["message_id"], dead.assistant_message_id.as_str());
    let done = client.recv().await;
    assert_eq!(
        (
            done["finish_reason"].as_str(),
            done["error"]["code"].as_str()
        ),
        (Some("error"), Some("unavailable")),
        "{done}"
    );
    let listed = messages(&server, "died", live.conversation_id.as_str()).await;
    assert_eq!(
        listed[1]["finish_reason"],
        Value::Null,
        "left to its instance"
    );
    assert_eq!(listed[1]["content"], "still going");
    server.stop().await;
    drop::<Arc<dyn Store>>(store);
}
