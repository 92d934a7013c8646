//! The OpenAI-compatible path end to end: a real server, the real
//! async-openai client, and the mock upstream of `loadtest/` over real HTTP,
//! including an upstream that drops mid-stream, one that never answers, one
//! that goes silent, one that fails, and a cancel that must close the
//! upstream request.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use skald_actors::settings::BotSettings;
use skald_loadtest::mock_upstream::{answer_text, MockUpstream};
use skald_protocol::FinishReason;

/// A server whose bots each use one mock behaviour.
async fn server_for(mock: &MockUpstream) -> TestServer {
    let base_url = mock.base_url();
    TestServer::builder()
        .config(move |c| {
            c.model.upstream_url = Some(base_url.parse().unwrap());
            c.model.upstream_api_key = Some("sk-test-secret".into());
            c.model.upstream_model = "mock-normal".into();
            c.sessions.first_token_timeout_ms = 700;
            c.sessions.token_idle_timeout_ms = 700;
            for (name, model) in [
                ("drop", "mock-drop-after-3"),
                ("hang", "mock-hang"),
                ("stall", "mock-hang-after-2"),
                ("fail", "mock-error-500"),
            ] {
                c.bots.insert(
                    name.into(),
                    BotSettings {
                        model: Some(model.into()),
                        ..BotSettings::default()
                    },
                );
            }
        })
        .start()
        .await
}

/// The mock upstream (at this pace and length), a server on it
/// ([`server_for`]) and a client of that server.
struct Rig {
    upstream: MockUpstream,
    server: TestServer,
    client: Client,
}

impl Rig {
    async fn start(tokens_per_second: f64, answer_tokens: u32) -> Rig {
        let upstream = mock_upstream(tokens_per_second, answer_tokens).await;
        let server = server_for(&upstream).await;
        let client = server.client("oa").await;
        Rig {
            upstream,
            server,
            client,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
        self.upstream.shutdown().await;
    }
}

async fn ask(client: &mut Client, id: &str, bot: &str, text: &str) -> (Value, StreamResult) {
    client
        .send(json!({"type":"send","id":id,"bot":bot,"text":text}))
        .await;
    let ack = client.recv().await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let result = collect_stream(client, ack["stream_id"].as_str().unwrap(), 0).await;
    (ack, result)
}

/// One 4 MiB upstream delta is cut at the bot's `max_answer_bytes`, at a
/// character boundary, with `length`; what is stored is what was streamed.
#[tokio::test]
async fn an_answer_is_cut_at_the_bots_max_answer_bytes() {
    let upstream = mock_upstream(0.0, 12).await;
    let base_url = upstream.base_url();
    // The default timeouts: 4 MiB through a debug build takes a while.
    let server = TestServer::builder()
        .config(move |c| {
            c.model.upstream_url = Some(base_url.parse().unwrap());
            c.bots.insert(
                "huge".into(),
                BotSettings {
                    model: Some("mock-big-delta-4194304".into()),
                    max_answer_bytes: 1001,
                    ..BotSettings::default()
                },
            );
        })
        .start()
        .await;
    let mut client = server.client("hugo").await;
    let (ack, result) = ask(&mut client, "h-1", "huge", "a lot").await;
    assert_eq!(result.done["finish_reason"], "length", "{}", result.done);
    assert_eq!(
        result.text,
        "é".repeat(500),
        "1 000 of the 1 001 bytes: no half character"
    );
    assert_eq!(server.answer_of(&ack).await.content, result.text);
    server.stop().await;
}

#[tokio::test]
async fn streams_through_async_openai_with_the_upstreams_usage() {
    let mut rig = Rig::start(0.0, 12).await;
    let (ack, result) = ask(&mut rig.client, "1", "default", "Salut toi").await;
    assert_eq!(result.text, answer_text("Salut toi", 12));
    assert_eq!(result.done["finish_reason"], "stop");
    assert_eq!(result.done["usage"]["completion_tokens"], 12);
    let request = rig.upstream.last_request().unwrap();
    assert_eq!(request["model"], "mock-normal");
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages.last().unwrap()["role"], "user");
    assert_eq!(messages.last().unwrap()["content"], "Salut toi");
    // The mock counts prompt words: the usage is the upstream's, not ours.
    let words: u64 = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap().split_whitespace().count() as u64)
        .sum();
    assert_eq!(result.done["usage"]["prompt_tokens"], words);
    let message = rig.server.answer_of(&ack).await;
    assert_eq!(message.content, result.text);
    rig.stop().await;
}

#[tokio::test]
async fn an_upstream_that_drops_mid_stream_gives_upstream_error() {
    let mut rig = Rig::start(0.0, 12).await;
    let (ack, result) = ask(&mut rig.client, "1", "drop", "hello").await;
    assert_eq!(result.done["finish_reason"], "error");
    assert_eq!(result.done["error"]["code"], "upstream_error");
    assert_eq!(result.text, answer_text("hello", 3));
    assert_eq!(result.done["usage"]["completion_tokens"], 3);
    let message = rig.server.answer_of(&ack).await;
    assert_eq!(message.content, result.text);
    assert_eq!(message.finish_reason, Some(FinishReason::Error));
    rig.stop().await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_times_out() {
    let mut rig = Rig::start(0.0, 12).await;
    let (_, result) = ask(&mut rig.client, "1", "hang", "hello?").await;
    assert_eq!(result.done["finish_reason"], "error");
    assert_eq!(result.done["error"]["code"], "upstream_timeout");
    assert_eq!(result.text, "");
    // Silent after two tokens: also a timeout, with what came before kept.
    let (_, result) = ask(&mut rig.client, "2", "stall", "and you?").await;
    assert_eq!(result.done["error"]["code"], "upstream_timeout");
    assert_eq!(result.text, answer_text("and you?", 2));
    // The timed-out requests were closed upstream.
    wait_for(|| rig.upstream.stats().client_disconnects >= 2).await;
    rig.stop().await;
}

#[tokio::test]
async fn an_upstream_error_never_leaks_the_api_key() {
    let mut rig = Rig::start(0.0, 12).await;
    let (_, result) = ask(&mut rig.client, "1", "fail", "hello").await;
    assert_eq!(result.done["error"]["code"], "upstream_error");
    assert!(!result.done.to_string().contains("sk-test-secret"));
    rig.stop().await;
}

#[tokio::test]
async fn cancel_closes_the_upstream_request() {
    let mut rig = Rig::start(20.0, 400).await;
    rig.client
        .send(json!({"type":"send","id":"1","text":"a long one"}))
        .await;
    let ack = rig.client.recv().await;
    let stream_id = ack["stream_id"].as_str().unwrap();
    rig.client.recv_type("delta").await;
    assert_eq!(rig.upstream.stats().client_disconnects, 0);
    rig.client
        .send(json!({"type":"cancel","stream_id":stream_id}))
        .await;
    let done = rig.client.recv_type("done").await;
    assert_eq!(done["finish_reason"], "cancelled");
    wait_for(|| rig.upstream.stats().client_disconnects == 1).await;
    let sent = rig.upstream.stats().tokens_sent;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.upstream.stats().tokens_sent,
        sent,
        "the upstream stopped generating"
    );
    assert!(sent < 400);
    rig.stop().await;
}

async fn wait_for(condition: impl Fn() -> bool) {
    eventually(
        "condition never held",
        Duration::from_millis(20),
        async || condition().then_some(()),
    )
    .await
}
