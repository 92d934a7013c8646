//! The mock upstream over real HTTP on loopback: the wire format, determinism,
//! every fault, the reasoning forms, tool calls and echo, and the counters the
//! server's tests rely on.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skald_loadtest::mock_upstream::{answer_text, MockStats, MockUpstream};

async fn start(tokens_per_second: f64, answer_tokens: u32) -> MockUpstream {
    MockUpstream::on_loopback(tokens_per_second, answer_tokens)
        .await
        .unwrap()
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

/// Asserts that the mock answered its `requests` requests without
/// completing any or sending a token (every one an injected error).
fn served_nothing(mock: &MockUpstream, requests: u64) {
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.completed, stats.tokens_sent),
        (requests, 0, 0)
    );
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
    served_nothing(&mock, 1);
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

// ---- reasoning, failures, tool calls and echo (model-name parts) ----

/// Every SSE event of a complete body, framed by eventsource-stream (which
/// also sees `event:` names, unlike [`events`]).
async fn sse(body: &[u8]) -> Vec<eventsource_stream::Event> {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let bytes = futures::stream::iter([Ok::<_, std::convert::Infallible>(body.to_vec())]);
    bytes
        .eventsource()
        .map(|event| event.unwrap())
        .collect()
        .await
}

/// The concatenated string field at `pointer` of every chunk.
fn joined(chunks: &[Value], pointer: &str) -> String {
    chunks
        .iter()
        .filter_map(|chunk| chunk.pointer(pointer)?.as_str())
        .collect()
}

/// Index of the first chunk whose `pointer` holds a non-empty string.
fn first_with(chunks: &[Value], pointer: &str) -> Option<usize> {
    chunks.iter().position(|chunk| {
        chunk
            .pointer(pointer)
            .and_then(Value::as_str)
            .is_some_and(|text| !text.is_empty())
    })
}

#[tokio::test]
async fn reasoning_in_a_delta_field_comes_before_the_answer() {
    use skald_loadtest::mock_upstream::reasoning_text;
    for (model, field, other) in [
        ("mock-reasoning-content-5", "reasoning_content", "reasoning"),
        ("mock-reasoning-5", "reasoning", "reasoning_content"),
    ] {
        let mock = start(0.0, 6).await;
        let (body, failed) = read_to_end(post(&mock, &chat(model, "why?", true)).await).await;
        assert!(!failed, "{model}");
        let events = events(&body);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks = chunks(&events);
        let thinking = format!("/choices/0/delta/{field}");
        assert_eq!(
            joined(&chunks, &thinking),
            reasoning_text("why?", 5),
            "{model}"
        );
        assert_eq!(content(&chunks), answer_text("why?", 6), "{model}");
        assert_eq!(joined(&chunks, &format!("/choices/0/delta/{other}")), "");
        // All the thinking, then the answer: role, 5 thinking, 6 answer.
        assert_eq!(first_with(&chunks, &thinking), Some(1), "{model}");
        assert_eq!(
            first_with(&chunks, "/choices/0/delta/content"),
            Some(6),
            "{model}"
        );
        assert_eq!(chunks[12]["choices"][0]["finish_reason"], "stop");
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["completion_tokens"], 11, "{model}: thinking counts");
        assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 5);
        assert_eq!(usage["total_tokens"], 11 + 4);
        let stats = mock.stats();
        assert_eq!((stats.tokens_sent, stats.reasoning_tokens_sent), (6, 5));
        assert_eq!(stats.completed, 1);
    }
}

#[tokio::test]
async fn think_tags_open_the_content() {
    use skald_loadtest::mock_upstream::{reasoning_text, think_content};
    let mock = start(0.0, 4).await;
    let (body, _) = read_to_end(post(&mock, &chat("mock-think-3", "q", true)).await).await;
    let chunks = chunks(&events(&body));
    let thinking = reasoning_text("q", 3);
    assert_eq!(
        content(&chunks),
        think_content(&thinking, &answer_text("q", 4))
    );
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/content")?.as_str())
        .filter(|text| !text.is_empty())
        .collect();
    assert_eq!(pieces.len(), 3 + 4);
    assert!(pieces[0].starts_with("<think>") && !pieces[0].contains("</think>"));
    assert!(pieces[2].ends_with("</think>"), "{pieces:?}");
    assert!(pieces[3..].iter().all(|piece| !piece.contains("think>")));
    assert_eq!(joined(&chunks, "/choices/0/delta/reasoning_content"), "");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 3);
    assert_eq!(usage["completion_tokens"], 7);
}

#[tokio::test]
async fn think_split_cuts_the_tags_across_chunks() {
    use skald_loadtest::mock_upstream::{reasoning_text, think_content, DEFAULT_REASONING_TOKENS};
    let mock = start(0.0, 10).await;
    let (body, failed) =
        read_to_end(post(&mock, &chat("mock-think-split", "split me", true)).await).await;
    assert!(!failed);
    let chunks = chunks(&events(&body));
    let thinking = reasoning_text("split me", DEFAULT_REASONING_TOKENS);
    let expected = think_content(&thinking, &answer_text("split me", 10));
    assert_eq!(content(&chunks), expected);
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/content")?.as_str())
        .filter(|text| !text.is_empty())
        .collect();
    assert_eq!(pieces[0], "<th", "the opening tag is cut");
    assert!(
        pieces.iter().all(|piece| !piece.contains("</think>")),
        "the closing tag is cut: {pieces:?}"
    );
    // One chunk holds the end of the closing tag and the answer's start.
    let answer = answer_text("split me", 10);
    assert!(
        pieces.iter().any(|piece| piece
            .strip_prefix("nk>")
            .is_some_and(|rest| !rest.is_empty() && answer.starts_with(rest))),
        "{pieces:?}"
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["completion_tokens_details"]["reasoning_tokens"],
        DEFAULT_REASONING_TOKENS
    );
    assert_eq!(usage["completion_tokens"], DEFAULT_REASONING_TOKENS + 10);
    let stats = mock.stats();
    assert_eq!(
        stats.tokens_sent + stats.reasoning_tokens_sent,
        pieces.len() as u64
    );
}

#[tokio::test]
async fn slow_thinking_shows_signs_of_life_before_the_first_token() {
    let mock = start(0.0, 3).await;
    let sent = Instant::now();
    let mut response = post(&mock, &chat("mock-slow-think-100-1000", "q", true)).await;
    let mut body = Vec::new();
    // (arrival, thinking chunks so far) each time more thinking arrived.
    let mut arrivals = vec![(sent, 0)];
    let mut first_content = None;
    while let Some(bytes) = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("no 5 s silence")
        .unwrap()
    {
        body.extend_from_slice(&bytes);
        let chunks = chunks(&events(&body));
        let thinking = chunks
            .iter()
            .filter(|chunk| {
                chunk
                    .pointer("/choices/0/delta/reasoning_content")
                    .is_some()
            })
            .count();
        if thinking > arrivals.last().unwrap().1 {
            arrivals.push((Instant::now(), thinking));
        }
        if first_content.is_none() && content_chunks(&chunks) > 0 {
            first_content = Some(sent.elapsed());
        }
    }
    let first_content = first_content.expect("an answer");
    assert!(
        first_content >= Duration::from_millis(1000),
        "{first_content:?}"
    );
    assert!(first_content < Duration::from_secs(4), "{first_content:?}");
    assert_eq!(arrivals.last().unwrap().1, 10, "one every 100 ms for 1 s");
    let longest = arrivals
        .windows(2)
        .map(|pair| pair[1].0 - pair[0].0)
        .max()
        .unwrap();
    assert!(
        longest < Duration::from_millis(600),
        "thinking is a sign of life at least every 100 ms (with slack): {longest:?}"
    );
    assert_eq!(content(&chunks(&events(&body))), answer_text("q", 3));
}

#[tokio::test]
async fn rate_limited_answers_429_with_retry_after() {
    let mock = start(0.0, 5).await;
    for (model, retry_after) in [("mock-error-429-7", "7"), ("mock-error-429", "1")] {
        let response = post(&mock, &chat(model, "q", true)).await;
        assert_eq!(response.status(), 429, "{model}");
        assert_eq!(response.headers()["retry-after"], retry_after, "{model}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "requests");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert!(body["error"]["message"].is_string());
    }
    served_nothing(&mock, 2);
}

#[tokio::test]
async fn unavailable_answers_503() {
    let mock = start(0.0, 5).await;
    for stream in [true, false] {
        let response = post(&mock, &chat("mock-error-503", "q", stream)).await;
        assert_eq!(response.status(), 503);
        assert!(response.headers().get("retry-after").is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error");
    }
    assert_eq!(mock.stats().tokens_sent, 0);
}

#[tokio::test]
async fn error_after_3_is_a_data_line_with_an_error_then_done() {
    let mock = start(0.0, 20).await;
    let response = post(&mock, &chat("mock-error-after-3", "q", true)).await;
    assert_eq!(response.status(), 200);
    let (body, failed) = read_to_end(response).await;
    assert!(!failed, "the body ends cleanly");
    let events = sse(&body).await;
    let data: Vec<&str> = events.iter().map(|event| event.data.as_str()).collect();
    assert_eq!(
        data.last(),
        Some(&"[DONE]"),
        "vLLM sends [DONE] after the error"
    );
    assert!(events.iter().all(|event| event.event == "message"));
    let error: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("after 3"));
    let chunks: Vec<Value> = data[..data.len() - 2]
        .iter()
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(chunks.len(), 4, "role and 3 tokens");
    assert_eq!(content(&chunks), answer_text("q", 3));
    assert!(chunks
        .iter()
        .all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    assert!(chunks.iter().all(|chunk| chunk["usage"].is_null()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = mock.stats();
    assert_eq!(stats.tokens_sent, 3);
    assert_eq!(stats.completed, 0, "an error is no completion");
    assert_eq!(stats.client_disconnects, 0);
}

#[tokio::test]
async fn error_event_after_2_is_an_sse_error_event_and_the_end() {
    let mock = start(0.0, 20).await;
    let (body, failed) =
        read_to_end(post(&mock, &chat("mock-error-event-after-2", "q", true)).await).await;
    assert!(!failed, "the body ends cleanly");
    let events = sse(&body).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    let error: Value = serde_json::from_str(&last.data).unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("after 2"));
    assert!(events.iter().all(|event| event.data != "[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    assert_eq!(content(&chunks), answer_text("q", 2));
    assert_eq!(mock.stats().completed, 0);
}

#[tokio::test]
async fn no_usage_ends_with_done_but_without_the_usage_chunk() {
    let mock = start(0.0, 4).await;
    let (body, failed) = read_to_end(post(&mock, &chat("mock-no-usage", "q", true)).await).await;
    assert!(!failed);
    let events = events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = chunks(&events);
    assert_eq!(chunks.len(), 6, "role, 4 tokens, finish: no usage chunk");
    assert!(chunks.iter().all(|chunk| chunk["usage"].is_null()));
    assert!(chunks.iter().all(|chunk| chunk["choices"] != json!([])));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(mock.stats().completed, 1);
}

#[tokio::test]
async fn reasoning_combines_with_an_error_after_answer_tokens() {
    use skald_loadtest::mock_upstream::{reasoning_text, DEFAULT_REASONING_TOKENS};
    let mock = start(0.0, 20).await;
    let model = "mock-reasoning-content+error-after-3";
    let (body, _) = read_to_end(post(&mock, &chat(model, "q", true)).await).await;
    let events = sse(&body).await;
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|event| serde_json::from_str::<Value>(&event.data).ok())
        .collect();
    assert_eq!(
        joined(&chunks, "/choices/0/delta/reasoning_content"),
        reasoning_text("q", DEFAULT_REASONING_TOKENS)
    );
    assert_eq!(
        content(&chunks),
        answer_text("q", 3),
        "N counts answer tokens"
    );
    assert!(chunks.last().unwrap()["error"]["message"].is_string());
    let stats = mock.stats();
    assert_eq!(
        (stats.tokens_sent, stats.reasoning_tokens_sent),
        (3, u64::from(DEFAULT_REASONING_TOKENS))
    );
}

fn with_tool(mut body: Value, name: &str) -> Value {
    body["tools"] = json!([{
        "type": "function",
        "function": { "name": name, "parameters": { "type": "object" } },
    }]);
    body
}

#[tokio::test]
async fn tool_call_streams_like_openai() {
    use skald_loadtest::mock_upstream::{tool_call_arguments, DEFAULT_TOOL_NAME};
    let mock = start(0.0, 50).await;
    for (body, name) in [
        (
            with_tool(
                chat("mock-tool-call", "weather in Oslo", true),
                "get_weather",
            ),
            "get_weather",
        ),
        (
            chat("mock-tool-call", "weather in Oslo", true),
            DEFAULT_TOOL_NAME,
        ),
    ] {
        let (bytes, failed) = read_to_end(post(&mock, &body).await).await;
        assert!(!failed);
        let events = events(&bytes);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks = chunks(&events);
        let first = &chunks[0]["choices"][0]["delta"];
        assert_eq!(first["role"], "assistant");
        assert!(first["content"].is_null());
        let call = &first["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], name);
        assert_eq!(call["function"]["arguments"], "");
        let (fragments, finish, usage) = (
            &chunks[1..chunks.len() - 2],
            &chunks[chunks.len() - 2],
            &chunks[chunks.len() - 1],
        );
        assert!(fragments.len() > 3, "arguments come in pieces");
        for fragment in fragments {
            let call = &fragment["choices"][0]["delta"]["tool_calls"][0];
            assert_eq!(call["index"], 0);
            assert!(call.get("id").is_none() && call["function"].get("name").is_none());
        }
        let arguments = joined(
            fragments,
            "/choices/0/delta/tool_calls/0/function/arguments",
        );
        assert_eq!(arguments, tool_call_arguments("weather in Oslo"));
        let parsed: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(parsed, json!({ "query": "weather in Oslo" }));
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(usage["usage"]["completion_tokens"], fragments.len());
        assert_eq!(content(&chunks), "");
    }
}

#[tokio::test]
async fn echo_returns_exactly_what_was_sent() {
    use skald_loadtest::mock_upstream::echo_tokens;
    let message = "<script>alert('x')</script>  two  spaces é \"quoted\"\n\tand </think> end ";
    let mock = start(0.0, 3).await;
    let (body, failed) = read_to_end(post(&mock, &chat("mock-echo", message, true)).await).await;
    assert!(!failed);
    let chunks = chunks(&events(&body));
    assert_eq!(content(&chunks), message);
    let tokens = echo_tokens(message);
    assert_eq!(content_chunks(&chunks), tokens.len(), "word by word");
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/content")?.as_str())
        .filter(|text| !text.is_empty())
        .collect();
    assert_eq!(pieces, tokens);
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        tokens.len()
    );

    // The request's limit cuts the echo like any answer.
    let mut limited = chat("mock-echo", message, true);
    limited["max_tokens"] = json!(2);
    let (body, _) = read_to_end(post(&mock, &limited).await).await;
    let cut = self::chunks(&events(&body));
    assert_eq!(content(&cut), tokens[..2].concat());
    assert_eq!(cut[cut.len() - 2]["choices"][0]["finish_reason"], "length");

    let plain = post(&mock, &chat("mock-echo", message, false)).await;
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain["choices"][0]["message"]["content"], message);
}

#[tokio::test]
async fn echo_combines_with_split_thinking() {
    use skald_loadtest::mock_upstream::{reasoning_text, think_content};
    let mock = start(0.0, 3).await;
    let message = "über <b>bold</b>";
    let model = "mock-echo+think-split-2";
    let (body, _) = read_to_end(post(&mock, &chat(model, message, true)).await).await;
    let chunks = chunks(&events(&body));
    assert_eq!(
        content(&chunks),
        think_content(&reasoning_text(message, 2), message)
    );
}

#[tokio::test]
async fn non_streaming_reasoning_and_tool_calls() {
    use skald_loadtest::mock_upstream::{reasoning_text, think_content, tool_call_arguments};
    let mock = start(0.0, 4).await;
    let body: Value = post(&mock, &chat("mock-reasoning-3", "q", false))
        .await
        .json()
        .await
        .unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning"], reasoning_text("q", 3));
    assert_eq!(message["content"], answer_text("q", 4));
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        3
    );

    let body: Value = post(&mock, &chat("mock-think-2", "q", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        think_content(&reasoning_text("q", 2), &answer_text("q", 4))
    );

    let body: Value = post(&mock, &with_tool(chat("mock-tool-call", "q", false), "f"))
        .await
        .json()
        .await
        .unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "f");
    assert_eq!(call["function"]["arguments"], tool_call_arguments("q"));

    let failed = post(&mock, &chat("mock-error-after-1", "q", false)).await;
    assert_eq!(failed.status(), 500);
    let body: Value = post(&mock, &chat("mock-no-usage", "q", false))
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("usage").is_none());
}
