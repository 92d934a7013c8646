//! "The answer is durable before its `done`", path by path (ARCHITECTURE.md
//! states exactly what holds): a normal end, a stream actor that dies, and a
//! Persister that does not confirm in time (then `done` says so).

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use skald::model::simulated::SimulatedModel;
use skald::store::sqlite::SqliteStore;
use skald_actors::catalog::Catalog;
use skald_actors::hub::Hub;
use skald_actors::limits::guard::LimitsGuard;
use skald_actors::outbox::Outbox;
use skald_actors::ports::model::ModelRequest;
use skald_actors::ports::store::{BeginOutcome, Store, StoredMessage};
use skald_actors::registry::StartStream;
use skald_actors::settings::SessionSettings;
use skald_actors::stream::{Generation, StreamMsg};
use skald_actors::stream_log::{StreamIds, StreamLog};
use skald_actors::testkit::store::exchange;
use skald_actors::time::{Month, SystemClock};
use skald_actors::Services;
use skald_protocol::FinishReason;

use crate::common::faulty_store::FaultyStore;
use crate::common::*;

async fn hub(store: Arc<dyn Store>, dir: &TempDir) -> Arc<Hub> {
    Hub::start(Services {
        store,
        model: Arc::new(SimulatedModel {
            tokens_per_second: 20.0,
            answer_tokens: 200,
        }),
        catalog: Catalog::new(
            [("default".to_owned(), Default::default())].into(),
            Default::default(),
        ),
        sessions: SessionSettings {
            store_timeout_ms: 300,
            ..SessionSettings::default()
        },
        limits: Default::default(),
        limits_guard: Arc::new(LimitsGuard::in_memory()),
        clock: Arc::new(SystemClock),
        spool_path: dir.0.join("spool.jsonl"),
        bus: None,
    })
    .await
    .unwrap()
}

/// Stores an exchange and starts its stream through the registry, with an
/// outbox following it; returns the log and the outbox.
async fn start_stream(hub: &Hub, store: &dyn Store, user: &str) -> (Arc<StreamLog>, Arc<Outbox>) {
    let ex = exchange(&user.into(), "d-1", None, "question");
    assert_eq!(
        store.begin_exchange(ex.clone()).await.unwrap(),
        BeginOutcome::Created
    );
    let log = Arc::new(StreamLog::new(StreamIds {
        stream_id: ex.stream_id.clone(),
        user: ex.user.clone(),
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
    }));
    let outbox = Outbox::new(64);
    outbox.push_and_attach(None, log.clone(), Default::default());
    hub.directory
        .registry
        .start(StartStream {
            log: log.clone(),
            generation: Generation::Request(Box::new(ModelRequest {
                max_tokens: 1000,
                user: ex.user.clone(),
                ..skald_actors::testkit::model::request("question")
            })),
            prompt_tokens_estimate: 2,
            quota_month: Month::of(skald_actors::time::now_ms()),
        })
        .await
        .unwrap();
    (log, outbox)
}

/// Waits until the stream of `log` has generated `tokens` tokens.
async fn until_tokens(log: &StreamLog, tokens: u64) {
    while log.text_and_tokens().1 < tokens {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The actor running the stream of `log`, found through the registry.
async fn stream_actor(hub: &Hub, log: &StreamLog) -> ActorRef<StreamMsg> {
    hub.directory
        .registry
        .lookup(&log.ids.stream_id, &log.ids.user)
        .await
        .unwrap()
        .actor
        .unwrap()
}

/// The answer of the stream of `log`, as the store has it now.
async fn stored_answer(store: &dyn Store, log: &StreamLog) -> StoredMessage {
    store
        .recent_messages(&log.ids.conversation_id, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == log.ids.message_id)
        .unwrap()
}

/// Drains the outbox until its `done`; the text of its deltas and the done.
async fn until_done(outbox: &Outbox) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for frame in outbox.drain().frames {
            let frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
            if frame["type"] == "done" {
                return frame;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no done");
        let _ = tokio::time::timeout(Duration::from_millis(100), outbox.notified()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_actor_killed_mid_answer_is_stored_before_its_done() {
    let dir = TempDir::new("killed-stream");
    let store = Arc::new(SqliteStore::open_in(&dir.0).unwrap());
    let hub = hub(store.clone(), &dir).await;
    let (log, outbox) = start_stream(&hub, store.as_ref(), "killed").await;
    until_tokens(&log, 5).await;
    stream_actor(&hub, &log).await.kill();
    let done = until_done(&outbox).await;
    // The moment `done` is visible, the store has the answer.
    let answer = stored_answer(store.as_ref(), &log).await;
    assert_eq!(done["finish_reason"], "error");
    assert_eq!(done["error"]["code"], "internal");
    assert_eq!(answer.finish_reason, Some(FinishReason::Error));
    assert_eq!(
        answer.content,
        log.text_and_tokens().0,
        "what was generated"
    );
    assert!(!answer.content.is_empty());
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_confirm_makes_done_say_so() {
    let dir = TempDir::new("wedged-store");
    let store = Arc::new(FaultyStore::new(SqliteStore::open_in(&dir.0).unwrap()));
    let hub = hub(store.clone(), &dir).await;
    let (log, outbox) = start_stream(&hub, store.as_ref(), "wedged").await;
    until_tokens(&log, 3).await;
    // The store hangs on the answer's write far longer than three attempts
    // of `store_timeout` (300 ms here).
    *store.finish_delay.lock().unwrap() = Duration::from_secs(30);
    let _ = stream_actor(&hub, &log).await.cast(StreamMsg::Cancel);
    let done = until_done(&outbox).await;
    assert_eq!(done["finish_reason"], "error", "{done}");
    assert_eq!(done["error"]["code"], "unavailable", "{done}");
    assert_eq!(done["error"]["message"], "the answer could not be stored");
    *store.finish_delay.lock().unwrap() = Duration::ZERO;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_answer_is_stored_before_its_done() {
    let dir = TempDir::new("finished");
    let store = Arc::new(SqliteStore::open_in(&dir.0).unwrap());
    let hub = hub(store.clone(), &dir).await;
    let (log, outbox) = start_stream(&hub, store.as_ref(), "finisher").await;
    let _ = stream_actor(&hub, &log).await.cast(StreamMsg::Cancel);
    let done = until_done(&outbox).await;
    let answer = stored_answer(store.as_ref(), &log).await;
    assert_eq!(done["finish_reason"], "cancelled");
    assert_eq!(answer.finish_reason, Some(FinishReason::Cancelled));
    assert_eq!(answer.content, log.text_and_tokens().0);
    hub.shutdown().await;
}

/// The upstream request begins while the exchange is made durable (the
/// commit is off the time to the first token); when the exchange cannot be
/// made, the `send` is refused, nothing is stored, and that request is
/// aborted: the provider sees its client go away, and no answer streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_that_cannot_be_made_aborts_its_upstream_request() {
    let dir = TempDir::new("prestart-aborted");
    let store = Arc::new(FaultyStore::new(SqliteStore::open_in(&dir.0).unwrap()));
    // A slow answer: still streaming when the refusal aborts it.
    let mock = mock_upstream(20.0, 200).await;
    let url = mock.base_url();
    let server = TestServer::builder()
        .store(store.clone())
        .data_dir(&dir.0)
        .config(move |c| {
            c.model.upstream_url = Some(url.parse().unwrap());
            c.model.upstream_model = "mock-normal".into();
        })
        .start()
        .await;
    let mut client = server.client("prestarted").await;
    store
        .begin_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    client
        .send(serde_json::json!({"type":"send","id":"p-1","text":"never stored"}))
        .await;
    let refused = client.recv_type_of(&["ack", "error"]).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(
        mock.stats().requests,
        1,
        "the request began before the commit"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while mock.stats().client_disconnects < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream request was never aborted: {:?}",
            mock.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.stats().completed, 0, "no answer ran to its end");
    let (_, list) = server
        .get_json("/v1/conversations", Some("prestarted"))
        .await;
    assert_eq!(
        list["conversations"],
        serde_json::json!([]),
        "nothing stored"
    );
    server.stop().await;
    mock.shutdown().await;
}
