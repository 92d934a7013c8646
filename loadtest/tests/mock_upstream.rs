//! The mock upstream over real HTTP on loopback: the wire format, determinism,
//! every fault, and the counters the server's tests rely on.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skald_loadtest::mock_upstream::{answer_text, MockConfig, MockStats, MockUpstream};
use tokio::net::TcpListener;

async fn start(tokens_per_second: f64, answer_tokens: u32) -> MockUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = MockConfig {
        tokens_per_second,
        answer_tokens,
    };
    MockUpstream::start(listener, config).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn chat(model: &str, question: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "stream_options": { "include_usage": true },
        "temperature": 0.7,
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": question },
        ],
    })
}

async fn post(mock: &MockUpstream, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of complete SSE events in `body`.
fn events(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    let complete = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
    complete
        .split_terminator("\n\n")
        .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

/// The JSON chunks (all events but `[DONE]`).
fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/content")?.as_str())
        .collect()
}

fn content_chunks(chunks: &[Value]) -> usize {
    chunks
        .iter()
        .filter(|chunk| {
            chunk
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .is_some_and(|text| !text.is_empty())
        })
        .count()
}

/// Polls the counters until `done` holds, for up to 5 seconds.
async fn wait_for_stats(mock: &MockUpstream, done: impl Fn(&MockStats) -> bool) -> MockStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = mock.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the body until it ends; returns the bytes and whether it ended in an error.
async fn read_to_end(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            Ok(None) => return (body, false),
            Err(_) => return (body, true),
        }
    }
}

#[tokio::test]
async fn normal_stream_is_openai_chunks_with_usage_and_done() {
    let mock = start(0.0, 12).await;
    let response = post(&mock, &chat("gpt-test", "what is skald?", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (body, failed) = read_to_end(response).await;
    assert!(!failed);
    let events = events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = chunks(&events);
    // role, 12 tokens, finish, usage
    assert_eq!(chunks.len(), 15);

    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "gpt-test");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "");
    assert!(first["choices"][0]["finish_reason"].is_null());
    assert!(chunks.iter().all(|chunk| chunk["id"] == first["id"]));

    assert_eq!(content_chunks(&chunks), 12);
    assert_eq!(content(&chunks), answer_text("what is skald?", 12));

    let finish = &chunks[13];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = &chunks[14];
    assert_eq!(usage["choices"], json!([]));
    // "You are terse." (3) + "what is skald?" (3)
    assert_eq!(
        usage["usage"],
        json!({ "prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18 })
    );

    let stats = mock.stats();
    assert_eq!(
        stats,
        MockStats {
            requests: 1,
            completed: 1,
            client_disconnects: 0,
            tokens_sent: 12,
            reasoning_tokens_sent: 0,
        }
    );
    let last = mock.last_request().unwrap();
    assert_eq!(last["messages"][0]["role"], "system");
    assert_eq!(last["messages"][1]["content"], "what is skald?");
    mock.shutdown().await;
}

#[tokio::test]
async fn without_include_usage_there_is_no_usage_chunk() {
    let mock = start(0.0, 4).await;
    let mut body = chat("m", "hi", true);
    body.as_object_mut().unwrap().remove("stream_options");
    let (bytes, _) = read_to_end(post(&mock, &body).await).await;
    let chunks = chunks(&events(&bytes));
    assert_eq!(chunks.len(), 6);
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn max_tokens_below_answer_length_finishes_with_length() {
    let mock = start(0.0, 20).await;
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut body = chat("m", "long question", true);
        body[field] = json!(5);
        let (bytes, _) = read_to_end(post(&mock, &body).await).await;
        let chunks = chunks(&events(&bytes));
        assert_eq!(content_chunks(&chunks), 5, "{field}");
        assert_eq!(content(&chunks), answer_text("long question", 5));
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "length", "{field}");
        assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 5);
    }
    assert_eq!(mock.stats().tokens_sent, 10);
}

#[tokio::test]
async fn same_request_same_answer_different_question_different_answer() {
    let mock = start(0.0, 16).await;
    let mut texts = Vec::new();
    for question in ["tell me a story", "tell me a story", "something else"] {
        let (bytes, _) = read_to_end(post(&mock, &chat("m", question, true)).await).await;
        texts.push(content(&chunks(&events(&bytes))));
    }
    assert_eq!(texts[0], texts[1]);
    assert_eq!(texts[0], answer_text("tell me a story", 16));
    assert_ne!(texts[0], texts[2]);
    assert_eq!(texts[0].split_whitespace().count(), 16);
}

#[tokio::test]
async fn tokens_are_paced() {
    let mock = start(100.0, 20).await;
    let started = Instant::now();
    let (bytes, _) = read_to_end(post(&mock, &chat("m", "q", true)).await).await;
    let elapsed = started.elapsed();
    assert_eq!(content_chunks(&chunks(&events(&bytes))), 20);
    // Token i is due i/100 s after the first: at least 190 ms in all.
    assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn non_streaming_answer_is_one_completion() {
    let mock = start(0.0, 8).await;
    let response = post(&mock, &chat("m", "plain", false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        answer_text("plain", 8)
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 8);
    assert_eq!(mock.stats().completed, 1);
    assert_eq!(mock.stats().tokens_sent, 8);
}

#[tokio::test]
async fn drop_after_3_sends_three_tokens_then_aborts() {
    let mock = start(0.0, 50).await;
    let response = post(&mock, &chat("mock-drop-after-3", "q", true)).await;
    assert_eq!(response.status(), 200);
    let (bytes, failed) = read_to_end(response).await;
    assert!(failed, "the body must end in an error, not cleanly");
    let events = events(&bytes);
    assert!(!events.iter().any(|data| data == "[DONE]"));
    let chunks = chunks(&events);
    assert_eq!(chunks.len(), 4, "role + 3 tokens");
    assert_eq!(content_chunks(&chunks), 3);
    assert_eq!(content(&chunks), answer_text("q", 3));
    assert!(chunks
        .iter()
        .all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    // Give a wrongly counted disconnect time to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = mock.stats();
    assert_eq!(stats.tokens_sent, 3);
    assert_eq!(stats.completed, 0);
    assert_eq!(
        stats.client_disconnects, 0,
        "a deliberate drop is no disconnect"
    );
}

#[tokio::test]
async fn client_dropping_the_stream_counts_as_disconnect() {
    let mock = start(50.0, 120).await;
    let mut response = post(&mock, &chat("m", "q", true)).await;
    let mut body = Vec::new();
    while content_chunks(&chunks(&events(&body))) < 2 {
        body.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    drop(response);
    let stats = wait_for_stats(&mock, |stats| stats.client_disconnects == 1).await;
    assert_eq!(stats.client_disconnects, 1);
    assert_eq!(stats.completed, 0);
    assert!(stats.tokens_sent < 120, "{stats:?}");
}

#[tokio::test]
async fn hang_after_2_goes_silent_until_the_client_leaves() {
    let mock = start(0.0, 50).await;
    let mut response = post(&mock, &chat("mock-hang-after-2", "q", true)).await;
    let mut body = Vec::new();
    while content_chunks(&chunks(&events(&body))) < 2 {
        body.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    let more = tokio::time::timeout(Duration::from_millis(300), response.chunk()).await;
    assert!(more.is_err(), "nothing may arrive after the 2 tokens");
    assert_eq!(content_chunks(&chunks(&events(&body))), 2);
    drop(response);
    let stats = wait_for_stats(&mock, |stats| stats.client_disconnects == 1).await;
    assert_eq!(stats.client_disconnects, 1);
    assert_eq!(stats.tokens_sent, 2);
    assert_eq!(stats.completed, 0);
}

#[tokio::test]
async fn hang_never_answers_and_counts_the_disconnect() {
    let mock = start(0.0, 5).await;
    let request = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&chat("mock-hang", "q", true))
        .timeout(Duration::from_millis(300))
        .send();
    let error = request.await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    let stats = wait_for_stats(&mock, |stats| stats.client_disconnects == 1).await;
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.client_disconnects, 1);
    assert_eq!(stats.tokens_sent, 0);
}

#[tokio::test]
async fn slow_first_delays_the_first_token() {
    let mock = start(0.0, 5).await;
    let started = Instant::now();
    let response = post(&mock, &chat("mock-slow-first-300", "q", true)).await;
    let (bytes, failed) = read_to_end(response).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!failed);
    let events = events(&bytes);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(content(&chunks(&events)), answer_text("q", 5));
}

#[tokio::test]
async fn error_500_is_an_openai_error() {
    let mock = start(0.0, 5).await;
    let response = post(&mock, &chat("mock-error-500", "q", true)).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("injected"));
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.completed, stats.tokens_sent),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn bad_json_is_400_invalid_request_error() {
    let mock = start(0.0, 5).await;
    for body in ["{not json", r#"{"model": "m"}"#] {
        let response = client()
            .post(format!("{}/chat/completions", mock.base_url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(error["error"]["message"].is_string());
    }
    assert_eq!(mock.stats().requests, 2);
    assert_eq!(mock.stats().completed, 0);
}

#[tokio::test]
async fn stats_and_healthz_endpoints() {
    let mock = start(0.0, 3).await;
    let root = mock.base_url().trim_end_matches("/v1").to_owned();
    let health = client()
        .get(format!("{root}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    read_to_end(post(&mock, &chat("m", "q", true)).await).await;
    let stats: Value = client()
        .get(format!("{root}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({
            "requests": 1,
            "completed": 1,
            "client_disconnects": 0,
            "tokens_sent": 3,
            "reasoning_tokens_sent": 0,
        })
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams_promptly() {
    let mock = start(0.0, 10).await;
    let mut response = post(&mock, &chat("mock-hang-after-1", "q", true)).await;
    response.chunk().await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(3), mock.shutdown())
        .await
        .expect("shutdown must not wait for the hanging stream");
    let (_, failed) = tokio::time::timeout(Duration::from_secs(3), read_to_end(response))
        .await
        .unwrap();
    assert!(failed, "an interrupted stream must not look complete");
}
