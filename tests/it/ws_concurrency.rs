//! Many sessions at once, and a session that panics while others stream on.

use std::sync::Arc;

use crate::common::faulty_store::FaultyStore;
use crate::common::*;
use serde_json::json;
use skald::store::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_stream_at_once() {
    let server = TestServer::with_model(50.0, 25).await;
    let url = server.url();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{i}");
            let mut client = Client::connect(&url, Some(&token(&user))).await;
            assert_eq!(client.recv().await["type"], "ready");
            let text = format!("question number {i}");
            let ack = send(&mut client, "q", None, &text).await;
            let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
            assert_eq!(result.text, simulated_answer(&text, 25), "session {i}");
            assert_eq!(result.done["finish_reason"], "stop");
            client.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("every session streams its whole answer");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_closes_1011_and_others_stream_on() {
    // The real store, made to panic inside the session actor on a chosen
    // text: the closest thing to a bug in a session, injected through a port.
    let dir = TempDir::new("panicking-store");
    let mut store = FaultyStore::new(SqliteStore::open_in(&dir.0).unwrap());
    store.panic_on = Some("PANIC".into());
    let server = TestServer::builder()
        .config(|c| {
            c.model.simulated_tokens_per_second = 40.0;
            c.model.simulated_answer_tokens = 40;
        })
        .store(Arc::new(store))
        .start()
        .await;
    let mut others = Vec::new();
    for i in 0..5 {
        let mut client = server.client(&format!("calm-{i}")).await;
        let ack = send(&mut client, "1", None, "steady").await;
        others.push((client, ack));
    }
    let mut victim = server.client("victim").await;
    victim
        .send(json!({"type":"send","id":"boom","text":"PANIC now"}))
        .await;
    let error = victim.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "internal");
    assert_eq!(victim.closed().await, Closed::Code(1011));

    for (client, ack) in &mut others {
        let result = collect_stream(client, ack["stream_id"].as_str().unwrap(), 0).await;
        assert_eq!(result.done["finish_reason"], "stop");
        assert_eq!(result.text, simulated_answer("steady", 40));
    }
    // New sessions still work after the failure.
    let mut late = server.client("late").await;
    let ack = send(&mut late, "1", None, "still there?").await;
    collect_stream(&mut late, ack["stream_id"].as_str().unwrap(), 0).await;
    server.stop().await;
}
