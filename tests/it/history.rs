//! Persistence through the real server: the history and GDPR API, restarts,
//! store outages and the spool, ordering, audit.
//!
//! The tests that hold for every store take the store their servers use as
//! an argument (`store`: `None` for the embedded store of the data dir);
//! `history_cql.rs` runs the same ones on a CQL node.

use std::sync::Arc;
use std::time::Duration;

use crate::common::faulty_store::FaultyStore;
use crate::common::*;
use serde_json::{json, Value};
use skald::store::sqlite::SqliteStore;
use skald_actors::ports::store::Store;

/// What makes the store of a test's server (a restart makes it again);
/// `None`: the embedded store in the server's data dir.
pub(crate) trait StoreFactory: AsyncFn() -> Option<Arc<dyn Store>> {}
impl<F: AsyncFn() -> Option<Arc<dyn Store>>> StoreFactory for F {}

/// The embedded store.
pub(crate) async fn embedded() -> Option<Arc<dyn Store>> {
    None
}

/// A server builder on the store `store` makes, whose simulated model
/// answers at once (tests of what is stored, not of pacing).
pub(crate) async fn instant_on(store: &impl StoreFactory) -> Builder {
    on(store)
        .await
        .config(|c| c.model.simulated_tokens_per_second = 0.0)
}

/// A server builder on the store `store` makes.
pub(crate) async fn on(store: &impl StoreFactory) -> Builder {
    let builder = TestServer::builder();
    match store().await {
        Some(store) => builder.store(store),
        None => builder,
    }
}

/// A conversation's messages as `user`, through the history API.
pub(crate) async fn messages(server: &TestServer, user: &str, conversation: &str) -> Vec<Value> {
    let (status, body) = server
        .get_json(
            &format!("/v1/conversations/{conversation}/messages?limit=200"),
            Some(user),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

/// Streams one answer and returns (ack, the streamed text, done).
async fn chat(
    client: &mut Client,
    id: &str,
    conversation: Option<&str>,
    text: &str,
) -> (Value, String, Value) {
    let ack = send(client, id, conversation, text).await;
    let result = collect_stream(client, ack["stream_id"].as_str().unwrap(), 0).await;
    (ack, result.text, result.done)
}

#[tokio::test]
async fn history_returns_exactly_what_was_streamed_even_when_cancelled() {
    history_returns_exactly_what_was_streamed_even_when_cancelled_on(&embedded).await;
}

pub(crate) async fn history_returns_exactly_what_was_streamed_even_when_cancelled_on(
    store: &impl StoreFactory,
) {
    let server = on(store)
        .await
        .config(|c| {
            c.model.simulated_tokens_per_second = 30.0;
            c.model.simulated_answer_tokens = 300;
        })
        .start()
        .await;
    let mut client = server.client("hist").await;
    let ack = send(&mut client, "1", None, "long story").await;
    let stream_id = ack["stream_id"].as_str().unwrap();
    let first = client.recv_type("delta").await;
    let (text, done) = cancel_after_first_delta(&mut client, stream_id, &first).await;
    assert_eq!(done["finish_reason"], "cancelled");
    let conversation = ack["conversation_id"].as_str().unwrap();
    let listed = messages(&server, "hist", conversation).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0]["role"].as_str(), listed[0]["content"].as_str()),
        (Some("user"), Some("long story"))
    );
    assert_eq!(listed[1]["role"], "assistant");
    assert_eq!(listed[1]["id"], ack["message_id"]);
    assert_eq!(
        listed[1]["content"].as_str().unwrap(),
        text,
        "byte for byte"
    );
    assert_eq!(listed[1]["finish_reason"], "cancelled");
    assert_eq!(listed[1]["usage"], done["usage"]);
    assert!(listed[1]["created_at"].as_str().unwrap().ends_with('Z'));
    server.stop().await;
}

#[tokio::test]
async fn conversations_page_with_opaque_cursors_and_bad_input_is_refused() {
    conversations_page_with_opaque_cursors_and_bad_input_is_refused_on(&embedded).await;
}

pub(crate) async fn conversations_page_with_opaque_cursors_and_bad_input_is_refused_on(
    store: &impl StoreFactory,
) {
    let server = instant_on(store).await.start().await;
    let mut client = server.client("pager").await;
    let mut created = Vec::new();
    for i in 0..5 {
        let (ack, _, _) = chat(&mut client, &format!("c{i}"), None, &format!("topic {i}")).await;
        created.push(ack["conversation_id"].as_str().unwrap().to_owned());
    }
    created.reverse();
    let mut seen = Vec::new();
    let mut path = "/v1/conversations?limit=2".to_owned();
    loop {
        let (status, body) = server.get_json(&path, Some("pager")).await;
        assert_eq!(status, 200, "{body}");
        for c in body["conversations"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_owned());
            assert!(c["title"].as_str().unwrap().starts_with("topic"));
            assert_eq!(c["bot"], "default");
        }
        match body["next"].as_str() {
            Some(next) => {
                assert!(
                    !created.iter().any(|id| next.contains(id.as_str())),
                    "opaque cursor"
                );
                path = format!("/v1/conversations?limit=2&before={next}");
            }
            None => break,
        }
    }
    assert_eq!(seen, created, "newest first");
    for bad in [
        "limit=0",
        "limit=1000",
        "limit=abc",
        "before=%%%",
        "before=bm90IGEgY3Vyc29y!",
    ] {
        let (status, body) = server
            .get_json(&format!("/v1/conversations?{bad}"), Some("pager"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    server.stop().await;
}

#[tokio::test]
async fn other_users_get_404_and_no_token_gets_401() {
    other_users_get_404_and_no_token_gets_401_on(&embedded).await;
}

pub(crate) async fn other_users_get_404_and_no_token_gets_401_on(store: &impl StoreFactory) {
    let server = on(store).await.start().await;
    let mut owner = server.client("owner").await;
    let (ack, _, _) = chat(&mut owner, "1", None, "private").await;
    let conversation = ack["conversation_id"].as_str().unwrap();
    let path = format!("/v1/conversations/{conversation}/messages");
    let (status, body) = server.get_json(&path, Some("intruder")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let deleted = server
        .delete(
            &format!("/v1/conversations/{conversation}"),
            Some("intruder"),
        )
        .await;
    assert_eq!(deleted, 404);
    assert_eq!(
        messages(&server, "owner", conversation).await.len(),
        2,
        "nothing deleted"
    );
    for path in [
        "/v1/conversations",
        path.as_str(),
        "/v1/export",
        "/v1/usage",
    ] {
        let (status, body) = server.get_json(path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
    }
    assert_eq!(server.delete("/v1/me", None).await, 401);
    server.stop().await;
}

#[tokio::test]
async fn delete_then_export_then_erase_leaves_nothing() {
    delete_then_export_then_erase_leaves_nothing_on(&embedded).await;
}

pub(crate) async fn delete_then_export_then_erase_leaves_nothing_on(store: &impl StoreFactory) {
    let server = on(store).await.start().await;
    let mut client = server.client("gdpr").await;
    let (kept, _, _) = chat(&mut client, "1", None, "keep this").await;
    let (gone, _, _) = chat(&mut client, "2", None, "delete this").await;
    let gone_id = gone["conversation_id"].as_str().unwrap();
    let deleted = server
        .delete(&format!("/v1/conversations/{gone_id}"), Some("gdpr"))
        .await;
    assert_eq!(deleted, 204);
    let (status, _) = server
        .get_json(
            &format!("/v1/conversations/{gone_id}/messages"),
            Some("gdpr"),
        )
        .await;
    assert_eq!(status, 404);
    // The deleted conversation's send id is free again.
    let (again, _, _) = chat(&mut client, "2", None, "a new message").await;
    assert_ne!(again["conversation_id"], gone["conversation_id"]);

    let (status, export) = server.get_json("/v1/export", Some("gdpr")).await;
    assert_eq!(status, 200);
    assert_eq!(export["user"], "gdpr");
    assert_eq!(export["conversations"].as_array().unwrap().len(), 2);
    assert_eq!(export["messages"].as_array().unwrap().len(), 4);
    assert_eq!(export["idempotency_keys"].as_array().unwrap().len(), 2);
    let actions: Vec<&str> = export["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"conversation_created") && actions.contains(&"conversation_deleted"),
        "{actions:?}"
    );
    assert!(export["audit"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0."));
    assert!(export.to_string().contains("keep this"));
    let _ = kept;

    assert_eq!(server.delete("/v1/me", Some("gdpr")).await, 204);
    let (_, after) = server.get_json("/v1/export", Some("gdpr")).await;
    for field in ["conversations", "messages", "idempotency_keys", "audit"] {
        assert_eq!(after[field], json!([]), "{field} after erase: {after}");
    }
    // The month's usage counters stay: counters without content.
    assert_eq!(
        after["usage"], export["usage"],
        "usage kept through erasure"
    );
    assert_eq!(after["usage"]["requests_used"], 3);
    // The erased streams cannot be resumed.
    let mut again = server.client("gdpr").await;
    again
        .send(json!({"type":"resume","stream_id":kept["stream_id"],"after_seq":-1}))
        .await;
    assert_eq!(again.recv().await["code"], "not_found");
    server.stop().await;
}

#[tokio::test]
async fn history_and_idempotency_survive_a_restart() {
    history_and_idempotency_survive_a_restart_on(&embedded).await;
}

pub(crate) async fn history_and_idempotency_survive_a_restart_on(store: &impl StoreFactory) {
    let dir = TempDir::new("restart");
    let server = instant_on(store).await.data_dir(&dir.0).start().await;
    let mut client = server.client("durable").await;
    let (ack, text, _) = chat(&mut client, "same-id", None, "remember").await;
    server.stop().await;

    let server = on(store).await.data_dir(&dir.0).start().await;
    let conversation = ack["conversation_id"].as_str().unwrap();
    let listed = messages(&server, "durable", conversation).await;
    assert_eq!(listed[1]["content"].as_str().unwrap(), text);
    // The same send id after the restart: the first ack, then its done.
    let mut client = server.client("durable").await;
    client
        .send(json!({"type":"send","id":"same-id","text":"remember"}))
        .await;
    assert_eq!(client.recv().await, ack);
    let done = client.recv().await;
    assert_eq!(
        (done["type"].as_str(), done["finish_reason"].as_str()),
        (Some("done"), Some("stop"))
    );
    assert_eq!(
        messages(&server, "durable", conversation).await.len(),
        2,
        "no second message"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_spools_answers_and_refuses_new_sends_then_drains() {
    let dir = TempDir::new("outage");
    let store = Arc::new(FaultyStore::new(SqliteStore::open_in(&dir.0).unwrap()));
    let server = TestServer::builder()
        .store(store.clone())
        .config(|c| {
            c.model.simulated_tokens_per_second = 40.0;
            c.model.simulated_answer_tokens = 30;
        })
        .start()
        .await;
    let mut client = server.client("spool").await;
    let ack = send(&mut client, "1", None, "during the outage").await;
    client.recv_type("delta").await;
    store.set_down(true);
    // The answer finishes while the store is down: done is still sent.
    let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 1).await;
    assert_eq!(result.done["finish_reason"], "stop");
    // A new send cannot be promised: unavailable, no ack.
    client
        .send(json!({"type":"send","id":"2","text":"refused"}))
        .await;
    let refused = client.recv().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("unavailable"))
    );
    let (status, _) = server.get_json("/v1/conversations", Some("spool")).await;
    assert_eq!(status, 503);
    let (status, ready) = server.get_json("/readyz", None).await;
    assert_eq!(
        (status, ready["checks"]["store"].as_str()),
        (503, Some("down"))
    );
    store.set_down(false);
    // Drained within a few seconds: the answer is there, complete.
    let conversation = ack["conversation_id"].as_str().unwrap();
    let listed = eventually(
        "the spool never drained",
        Duration::from_millis(100),
        async || {
            let listed = messages(&server, "spool", conversation).await;
            (listed[1]["finish_reason"] == "stop").then_some(listed)
        },
    )
    .await;
    let expected = simulated_answer("during the outage", 30);
    assert_eq!(listed[1]["content"].as_str().unwrap(), expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_in_one_conversation_keep_order() {
    concurrent_writers_in_one_conversation_keep_order_on(&embedded).await;
}

pub(crate) async fn concurrent_writers_in_one_conversation_keep_order_on(
    store: &impl StoreFactory,
) {
    let server = instant_on(store).await.start().await;
    let mut first = server.client("writer").await;
    let (ack, _, _) = chat(&mut first, "0", None, "start").await;
    let conversation = ack["conversation_id"].as_str().unwrap().to_owned();
    let url = server.url();
    let mut tasks = Vec::new();
    for i in 1..=6 {
        let (url, conversation) = (url.clone(), conversation.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url, Some(&token("writer"))).await;
            client.recv().await;
            let (ack, text, _) = chat(
                &mut client,
                &format!("w{i}"),
                Some(&conversation),
                &format!("writer {i}"),
            )
            .await;
            (ack["message_id"].as_str().unwrap().to_owned(), text)
        }));
    }
    let mut answers = std::collections::HashMap::new();
    for task in tasks {
        let (id, text) = task.await.unwrap();
        answers.insert(id, text);
    }
    let listed = messages(&server, "writer", &conversation).await;
    assert_eq!(listed.len(), 14);
    let ids: Vec<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "listed in the order they were accepted");
    for m in &listed {
        if let Some(text) = answers.get(m["id"].as_str().unwrap()) {
            assert_eq!(m["content"].as_str().unwrap(), text);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn failed_authentications_are_audited_with_the_address() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.url(), Some("not-a-token")).await;
    assert_eq!(client.closed().await, Closed::Code(4401));
    let (status, _) = server.get_json("/v1/usage", None).await;
    assert_eq!(status, 401);
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/usage", server.addr))
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Audit records go through the Persister: read the file until both land.
    let path = server.store.path().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let rows: Vec<(Option<String>, Option<String>)> = conn
            .prepare("SELECT address, address_anonymised FROM audit WHERE action = 'auth_failed'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if rows.len() >= 2 {
            for (address, anonymised) in rows {
                assert_eq!(address.as_deref(), Some("127.0.0.1"));
                assert_eq!(anonymised.as_deref(), Some("127.0.0.0"));
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "auth failures never audited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
