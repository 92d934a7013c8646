//! Reasoning models end to end: a real server in front of the load-test
//! mock upstream taught each form in which upstreams give their thinking.
//! The thinking reaches WebSocket clients as `reasoning` frames with their
//! own gap-free `seq` (replayed by `resume`), the OpenAI-compatible API as
//! `reasoning_content`, and the store with the answer; a model that thinks
//! past the first-token timeout is not cut; thinking past the bot's bound
//! is dropped while the answer still comes; an upstream that reports no
//! usage is settled with Skald's own count, marked as an estimate.

use serde_json::{json, Value};
use skald_actors::settings::BotSettings;
use skald_loadtest::mock_upstream::{answer_text, reasoning_text, MockUpstream};

use crate::common::*;

/// A server whose bot `<name>` asks the mock for model `<model>`.
async fn server_with(
    mock: &MockUpstream,
    bots: &[(&str, &str)],
    f: impl FnOnce(&mut skald::config::Config),
) -> TestServer {
    let base_url = mock.base_url();
    let bots: Vec<(String, String)> = bots
        .iter()
        .map(|(n, m)| (n.to_string(), m.to_string()))
        .collect();
    TestServer::with_config(move |c| {
        c.model.upstream_url = Some(base_url.parse().unwrap());
        c.model.upstream_model = "mock-normal".into();
        for (name, model) in bots {
            c.bots.insert(
                name,
                BotSettings {
                    model: Some(model),
                    ..BotSettings::default()
                },
            );
        }
        f(c);
    })
    .await
}

/// Every frame of `stream_id` up to its `done`, in order.
async fn frames_until_done(client: &mut Client, stream_id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame["stream_id"] != stream_id {
            continue;
        }
        let done = frame["type"] == "done";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// The text of the frames of one type, checking their `seq` runs from
/// `first` without a gap.
fn text_of(frames: &[Value], kind: &str, first: u64) -> String {
    let mut text = String::new();
    for (seq, frame) in (first..).zip(frames.iter().filter(|f| f["type"] == kind)) {
        assert_eq!(
            frame["seq"].as_u64(),
            Some(seq),
            "{kind} seq without gaps: {frame}"
        );
        text.push_str(frame["text"].as_str().unwrap());
    }
    text
}

async fn ask(client: &mut Client, id: &str, bot: &str, text: &str) -> Value {
    client
        .send(json!({"type":"send","id":id,"bot":bot,"text":text}))
        .await;
    let ack = client.recv_type("ack").await;
    assert_eq!(ack["id"], id, "{ack}");
    ack
}

#[tokio::test]
async fn every_form_of_thinking_streams_as_reasoning_frames_and_is_stored() {
    let mock = mock_upstream(0.0, 12).await;
    let forms = [
        ("content", "mock-reasoning-content-7"),
        ("field", "mock-reasoning-7"),
        ("tags", "mock-think-7"),
        ("split", "mock-think-split-7"),
    ];
    let server = server_with(&mock, &forms, |_| {}).await;
    let mut client = server.client("thinker").await;
    for (bot, _) in forms {
        let question = format!("why is the sky blue, {bot}?");
        let ack = ask(&mut client, bot, bot, &question).await;
        let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
        let frames = frames_until_done(&mut client, &stream_id).await;
        let thinking = reasoning_text(&question, 7);
        assert_eq!(text_of(&frames, "reasoning", 0), thinking, "{bot}");
        assert_eq!(
            text_of(&frames, "delta", 0),
            answer_text(&question, 12),
            "{bot}"
        );
        let first_delta = frames.iter().position(|f| f["type"] == "delta").unwrap();
        assert!(
            frames[first_delta..]
                .iter()
                .all(|f| f["type"] != "reasoning"),
            "{bot}: the thinking comes before the answer"
        );
        let done = frames.last().unwrap();
        assert_eq!(done["finish_reason"], "stop", "{bot}: {done}");
        assert_eq!(done["usage"]["reasoning_tokens"], 7, "{bot}: {done}");
        let stored = server.answer_of(&ack).await;
        assert_eq!(
            stored.reasoning.as_deref(),
            Some(thinking.as_str()),
            "{bot}"
        );
        assert_eq!(stored.content, answer_text(&question, 12), "{bot}");
    }

    // Resumed on another connection, after the first reasoning frame and
    // before any delta: the rest of both, with their first boundaries.
    let question = "resume me";
    let ack = ask(&mut client, "again", "split", question).await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    let first = frames_until_done(&mut client, &stream_id).await;
    let mut other = server.client("thinker").await;
    other
        .send(json!({"type":"resume","stream_id":stream_id,"after_seq":-1,"after_reasoning_seq":0}))
        .await;
    let replayed = frames_until_done(&mut other, &stream_id).await;
    let expected: Vec<&Value> = first
        .iter()
        .filter(|f| !(f["type"] == "reasoning" && f["seq"] == 0))
        .collect();
    assert_eq!(replayed.iter().collect::<Vec<_>>(), expected);

    // The history API and the OpenAI-compatible API give it too.
    let (_, page) = server
        .get_json(
            &format!(
                "/v1/conversations/{}/messages",
                ack["conversation_id"].as_str().unwrap()
            ),
            Some("thinker"),
        )
        .await;
    assert_eq!(
        page["messages"][1]["reasoning"],
        reasoning_text(question, 7)
    );
    let completion: Value = server
        .http(
            reqwest::Method::POST,
            "/v1/chat/completions",
            Some("thinker"),
        )
        .json(&json!({"model": "tags", "messages": [{"role": "user", "content": question}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = &completion["choices"][0]["message"];
    assert_eq!(
        message["reasoning_content"],
        reasoning_text(question, 7),
        "{completion}"
    );
    assert_eq!(message["content"], answer_text(question, 12));
    assert_eq!(
        completion["usage"]["completion_tokens_details"]["reasoning_tokens"],
        7
    );
    server.stop().await;
    mock.shutdown().await;
}

/// A model that thinks for longer than the first-token timeout is working
/// all along: its first thought is its sign of life.
#[tokio::test]
async fn a_model_thinking_past_the_first_token_timeout_is_not_cut() {
    let mock = mock_upstream(0.0, 5).await;
    let server = server_with(&mock, &[("slow", "mock-slow-think-50-1200")], |c| {
        c.sessions.first_token_timeout_ms = 400;
        c.sessions.token_idle_timeout_ms = 400;
    })
    .await;
    let mut client = server.client("patient").await;
    let ack = ask(&mut client, "s", "slow", "take your time").await;
    let frames = frames_until_done(&mut client, ack["stream_id"].as_str().unwrap()).await;
    let done = frames.last().unwrap();
    assert_eq!(done["finish_reason"], "stop", "{done}");
    assert_eq!(
        text_of(&frames, "delta", 0),
        answer_text("take your time", 5)
    );
    assert!(!text_of(&frames, "reasoning", 0).is_empty());
    server.stop().await;
    mock.shutdown().await;
}

/// Thinking past the bot's `max_reasoning_chars` is neither sent nor
/// stored; the answer still comes whole.
#[tokio::test]
async fn thinking_past_the_bots_bound_is_dropped_and_the_answer_still_comes() {
    let mock = mock_upstream(0.0, 6).await;
    let question = "think a lot";
    let bound = reasoning_text(question, 40).chars().count() / 4;
    let server = server_with(&mock, &[("deep", "mock-reasoning-content-40")], |c| {
        c.bots.get_mut("deep").unwrap().max_reasoning_chars = bound as u32;
    })
    .await;
    let mut client = server.client("bounded").await;
    let ack = ask(&mut client, "d", "deep", question).await;
    let frames = frames_until_done(&mut client, ack["stream_id"].as_str().unwrap()).await;
    let thinking = text_of(&frames, "reasoning", 0);
    assert!(
        thinking.chars().count() <= bound,
        "{} > {bound}",
        thinking.chars().count()
    );
    assert!(reasoning_text(question, 40).starts_with(&thinking));
    assert_eq!(text_of(&frames, "delta", 0), answer_text(question, 6));
    assert_eq!(
        server.answer_of(&ack).await.reasoning.as_deref(),
        Some(thinking.as_str())
    );
    server.stop().await;
    mock.shutdown().await;
}

/// An upstream that never sends usage is settled with Skald's own count,
/// marked as an estimate in `done` and in the stored answer.
#[tokio::test]
async fn an_answer_without_upstream_usage_is_counted_and_marked_estimated() {
    let mock = mock_upstream(0.0, 8).await;
    let server = server_with(
        &mock,
        &[("quiet", "mock-no-usage"), ("plain", "mock-normal")],
        |_| {},
    )
    .await;
    let mut client = server.client("counted").await;
    let ack = ask(&mut client, "q", "quiet", "how many tokens?").await;
    let frames = frames_until_done(&mut client, ack["stream_id"].as_str().unwrap()).await;
    let done = frames.last().unwrap();
    assert_eq!(done["usage"]["estimated"], true, "{done}");
    assert_eq!(done["usage"]["completion_tokens"], 8, "{done}");
    let stored = server.answer_of(&ack).await;
    assert!(stored.usage.unwrap().estimated);
    // The upstream's own count is not marked.
    let ack = ask(&mut client, "p", "plain", "and now?").await;
    let frames = frames_until_done(&mut client, ack["stream_id"].as_str().unwrap()).await;
    assert_eq!(frames.last().unwrap()["usage"].get("estimated"), None);
    server.stop().await;
    mock.shutdown().await;
}
