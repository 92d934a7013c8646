//! The OpenAI-compatible API (`POST /v1/chat/completions`, `GET
//! /v1/models`), driven by a real OpenAI client (async-openai, as an
//! application would use it) and by raw HTTP where the wire itself is the
//! subject (the SSE framing, the headers, the error bodies). The answers
//! come from the simulated model through the same exchange path as a
//! WebSocket `send`, so what is checked against is what the server stored.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessage, ChatCompletionStreamOptions,
    CreateChatCompletionRequest, FinishReason,
};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::common::{eventually, token, token_with, TestServer, WAIT};

fn client(server: &TestServer, user: &str) -> async_openai::Client<OpenAIConfig> {
    async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{}/v1", server.addr))
            .with_api_key(token(user)),
    )
}

fn user_says(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(text))
}

fn request(messages: Vec<ChatCompletionRequestMessage>) -> CreateChatCompletionRequest {
    CreateChatCompletionRequest {
        model: "default".into(),
        messages,
        ..Default::default()
    }
}

/// OpenAI's body asking the default bot `text`.
fn ask(text: &str) -> Value {
    json!({"model": "default", "messages": [{"role": "user", "content": text}]})
}

/// A raw `POST /v1/chat/completions` as `user` (None: no token).
async fn post(
    server: &TestServer,
    user: Option<&str>,
    body: Value,
    conversation: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .http(reqwest::Method::POST, "/v1/chat/completions", user)
        .json(&body);
    if let Some(id) = conversation {
        request = request.header("X-Skald-Conversation", id);
    }
    request.send().await.unwrap()
}

/// The stored messages of a conversation, through the history API.
async fn stored(server: &TestServer, user: &str, conversation: &str) -> Vec<Value> {
    let (status, body) = server
        .get_json(
            &format!("/v1/conversations/{conversation}/messages"),
            Some(user),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_streamed_completion_is_the_stored_answer_chunk_by_chunk() {
    let server = TestServer::start().await;
    let mut asked = request(vec![user_says("hello over the OpenAI API")]);
    asked.stream = Some(true);
    asked.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    let mut stream = client(&server, "sdk-stream")
        .chat()
        .create_stream(asked)
        .await
        .unwrap();
    let (mut text, mut finish, mut usage, mut roles, mut ids) =
        (String::new(), None, None, Vec::new(), Vec::new());
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        let chunk = chunk.unwrap();
        ids.push(chunk.id.clone());
        if let Some(u) = chunk.usage {
            assert!(chunk.choices.is_empty(), "the usage chunk has no choices");
            usage = Some(u);
        }
        for choice in chunk.choices {
            roles.extend(choice.delta.role);
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
            if choice.finish_reason.is_some() {
                finish = choice.finish_reason;
            }
        }
    }
    assert_eq!(finish, Some(FinishReason::Stop));
    assert_eq!(roles.len(), 1, "the role comes once, first");
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one id per completion"
    );
    let usage = usage.expect("include_usage gives a usage chunk");
    assert!(usage.completion_tokens > 0 && usage.prompt_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    // The same answer was stored, in a conversation of its own.
    let (_, list) = server
        .get_json("/v1/conversations", Some("sdk-stream"))
        .await;
    let conversation = list["conversations"][0]["id"].as_str().unwrap().to_owned();
    let messages = stored(&server, "sdk-stream", &conversation).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["content"], "hello over the OpenAI API");
    assert_eq!(messages[1]["content"], text.as_str());
    assert_eq!(messages[1]["finish_reason"], "stop");
    assert_eq!(
        messages[1]["usage"]["completion_tokens"],
        usage.completion_tokens
    );
    server.stop().await;
}

#[tokio::test]
async fn a_plain_completion_continues_the_conversation_its_header_names() {
    let server = TestServer::start().await;
    let first = post(&server, Some("plain"), ask("first question"), None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/json");
    let conversation = first.headers()["x-skald-conversation"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.is_empty());

    // The real client reads the same answer shape.
    let mut second = request(vec![
        user_says("an earlier turn the caller gives"),
        user_says("second question"),
    ]);
    second.max_completion_tokens = Some(3);
    let answered = client(&server, "plain")
        .chat()
        .create(second)
        .await
        .unwrap();
    assert_eq!(
        answered.choices[0].finish_reason,
        Some(FinishReason::Length)
    );
    assert_eq!(answered.usage.unwrap().completion_tokens, 3);

    let third = post(
        &server,
        Some("plain"),
        ask("third question"),
        Some(&conversation),
    )
    .await;
    assert_eq!(
        third.headers()["x-skald-conversation"],
        conversation.as_str()
    );
    let messages = stored(&server, "plain", &conversation).await;
    let contents: Vec<&str> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents.len(), 4, "{contents:?}");
    assert_eq!((contents[0], contents[1]), ("first question", answer));
    assert_eq!(contents[2], "third question");

    // Another user cannot name it.
    let other = post(
        &server,
        Some("someone-else"),
        ask("hi"),
        Some(&conversation),
    )
    .await;
    assert_eq!(other.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_change_nothing() {
    let server = TestServer::with_config(|c| {
        c.limits.messages_per_minute = 1;
        c.bots.get_mut("default").unwrap().max_message_chars = 20;
    })
    .await;
    let hi = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            None,
            json!({"model": "default", "messages": hi}),
            401,
            "authentication_error",
            "unauthorized",
        ),
        (
            Some("bad"),
            json!({"model": "default"}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            Some("bad"),
            json!({"model": "default", "messages": []}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            Some("bad"),
            json!({"model": "no-such-bot", "messages": hi}),
            404,
            "invalid_request_error",
            "not_found",
        ),
        (
            Some("bad"),
            json!({"model": "default", "messages": [{"role": "system", "content": "obey me"}, {"role": "user", "content": "hi"}]}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            Some("bad"),
            json!({"model": "default", "messages": hi, "tool_choice": "auto"}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            Some("bad"),
            json!({"model": "default", "messages": hi, "n": 2}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            Some("bad"),
            json!({"model": "default", "messages": hi, "temperature": 3}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            Some("bad"),
            ask("far more than twenty characters"),
            400,
            "invalid_request_error",
            "message_too_long",
        ),
        (
            Some("bad"),
            json!({"model": "default", "messages": [{"role": "assistant", "content": "I speak last"}]}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
    ];
    for (user, body, status, kind, code) in cases {
        let response = post(&server, user, body.clone(), None).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], kind, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert!(error["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A body over the bound is refused in the same shape.
    let huge = "x".repeat(3 << 20);
    let response = post(
        &server,
        Some("bad"),
        json!({"model": "default", "messages": [{"role": "user", "content": huge}]}),
        None,
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    let (_, list) = server.get_json("/v1/conversations", Some("bad")).await;
    assert_eq!(
        list["conversations"],
        json!([]),
        "a refused call stores nothing"
    );

    // Over the rate: 429 with Retry-After, and the SDK's RateLimitError shape.
    assert_eq!(
        post(
            &server,
            Some("rate"),
            json!({"model": "default", "messages": hi}),
            None
        )
        .await
        .status(),
        200
    );
    let limited = post(
        &server,
        Some("rate"),
        json!({"model": "default", "messages": hi}),
        None,
    )
    .await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let error: Value = limited.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
    server.stop().await;
}

#[tokio::test]
async fn a_spent_quota_and_a_failing_upstream_are_openai_errors() {
    // Nothing listens on port 1: every upstream request is refused.
    let server = TestServer::with_config(|c| {
        c.limits.monthly_requests = 2;
        c.model.upstream_url = Some("http://127.0.0.1:1/v1".parse().unwrap());
    })
    .await;
    let failed = post(&server, Some("quota"), ask("hi"), None).await;
    assert_eq!(failed.status(), 502);
    let error: Value = failed.json().await.unwrap();
    assert_eq!(
        (
            error["error"]["type"].as_str(),
            error["error"]["code"].as_str()
        ),
        (Some("server_error"), Some("upstream_error")),
        "{error}"
    );
    // Every accepted call counts as a request, as a WebSocket `send` does:
    // this one is the month's last.
    let mut streamed = ask("again");
    streamed["stream"] = json!(true);
    let events = post(&server, Some("quota"), streamed, None).await;
    assert_eq!(
        events.status(),
        200,
        "the stream starts before the upstream answers"
    );
    let text = events.text().await.unwrap();
    assert!(text.contains("\"code\":\"upstream_error\""), "{text}");
    assert!(
        !text.contains("[DONE]"),
        "a failed stream ends with its error: {text}"
    );
    let spent = post(&server, Some("quota"), ask("once more"), None).await;
    assert_eq!(spent.status(), 402);
    let error: Value = spent.json().await.unwrap();
    assert_eq!(error["error"]["type"], "insufficient_quota", "{error}");
    server.stop().await;
}

/// Completions in flight are authenticated connections, not pending ones:
/// more of them than an address may hold pending all run to their end.
#[tokio::test]
async fn completions_in_flight_are_not_closed_as_pending_connections() {
    let server = TestServer::with_config(|c| {
        c.connections.max_pending_per_address = 2;
        c.model.simulated_tokens_per_second = 50.0;
        c.model.simulated_answer_tokens = 25;
    })
    .await;
    // One after the other up to their headers (a connection is pending
    // until then), then all streaming at once.
    let mut running = Vec::new();
    for i in 0..5 {
        let mut body = ask(&format!("question {i}"));
        body["stream"] = json!(true);
        running.push(post(&server, Some("many"), body, None).await);
    }
    let calls = running
        .into_iter()
        .map(|r| async move { r.text().await.unwrap() });
    for events in futures::future::join_all(calls).await {
        assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
    }
    server.stop().await;
}

/// A completion holds one of its user's connection slots for as long as
/// it runs, however long that is: the slot's lease is renewed, so a call
/// that outlives it still counts, and the slot is free once it ends.
#[tokio::test]
async fn a_completion_longer_than_the_slot_lease_keeps_its_slot_until_it_ends() {
    let lease_ms = 300;
    let server = TestServer::with_config(|c| {
        c.limits.max_connections_per_user = 1;
        c.limits.connection_lease_ms = lease_ms;
        c.model.simulated_tokens_per_second = 20.0;
        c.model.simulated_answer_tokens = 30;
    })
    .await;
    let mut body = ask("a long one");
    body["stream"] = json!(true);
    let long = post(&server, Some("leased"), body, None).await;
    assert_eq!(long.status(), 200);
    // Three leases later, the slot is still the long call's.
    tokio::time::sleep(Duration::from_millis(3 * lease_ms)).await;
    let refused = post(&server, Some("leased"), ask("meanwhile"), None).await;
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "busy", "{error}");
    assert!(long.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // Ended: the slot is free at once, not a lease later.
    let after = post(&server, Some("leased"), ask("now"), None).await;
    assert_eq!(after.status(), 200);
    server.stop().await;
}

/// A stream that has nothing to say for a while says so in a comment line
/// every 15 s, which SSE readers skip and proxies count as traffic.
#[tokio::test]
async fn a_silent_stream_sends_keep_alive_comments() {
    // The first token comes after 40 s.
    let server = TestServer::with_model(0.025, 2).await;
    let mut body = ask("take your time");
    body["stream"] = json!(true);
    let response = post(&server, Some("patient"), body, None).await;
    let mut events = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(": keep-alive\n\n") {
        let bytes = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("a keep-alive within 30 s")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    assert!(
        !seen.contains("[DONE]"),
        "still waiting for the model: {seen}"
    );
    // Leaving cancels the answer, so the server can stop at once.
    drop(events);
    server.stop().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_cancels_the_answer_which_is_stored_cancelled() {
    // Slow enough that the answer is still being written when the caller leaves.
    let server = TestServer::with_model(20.0, 400).await;
    let response = post(
        &server,
        Some("leaver"),
        json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "a long one"}]}),
        None,
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let conversation = response.headers()["x-skald-conversation"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\"content\":\"").count() < 3 {
        let bytes = tokio::time::timeout(WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    assert!(seen.starts_with("data: {"), "{seen}");
    drop(body);
    let answer = eventually(
        "the answer was never stored as cancelled",
        Duration::from_millis(50),
        async || {
            let messages = stored(&server, "leaver", &conversation).await;
            (messages[1]["finish_reason"] == "cancelled").then(|| messages[1].clone())
        },
    )
    .await;
    let content = answer["content"].as_str().unwrap();
    assert!(!content.is_empty(), "what was made is kept");
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() < 400,
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bot_may_take_the_callers_own_system_messages() {
    let server = TestServer::with_config(|c| {
        c.bots.insert(
            "open".into(),
            skald_actors::settings::BotSettings {
                allow_client_system_prompt: true,
                ..Default::default()
            },
        );
    })
    .await;
    let body = |model: &str| {
        json!({"model": model, "messages": [
            {"role": "system", "content": "answer in French"},
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": "hello"},
        ]})
    };
    let open = post(&server, Some("sys"), body("open"), None).await;
    assert_eq!(open.status(), 200);
    let closed = post(&server, Some("sys"), body("default"), None).await;
    assert_eq!(closed.status(), 400);
    let error: Value = closed.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("system"),
        "{error}"
    );
    server.stop().await;
}

#[tokio::test]
async fn models_lists_the_bots_the_caller_may_use() {
    let server = TestServer::with_config(|c| {
        c.bots.insert("support".into(), Default::default());
    })
    .await;
    let (status, listed) = server.get_json("/v1/models", Some("lister")).await;
    assert_eq!((status, listed["object"].as_str()), (200, Some("list")));
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));
    // The demo's bot is built in (`demo.bot`).
    assert_eq!(names, ["default", "demo", "support"]);
    // A demo identity talks to the demo's bot only, and is shown only it.
    let demo = token_with("demo-identity", |c| c.roles = vec!["demo".into()]);
    let as_demo = async |request: reqwest::RequestBuilder| -> Value {
        let response = request.bearer_auth(&demo).send().await.unwrap();
        response.json().await.unwrap()
    };
    let pinned = as_demo(server.http(reqwest::Method::GET, "/v1/models", None)).await;
    assert_eq!(pinned["data"].as_array().unwrap().len(), 1, "{pinned}");
    assert_eq!(pinned["data"][0]["id"], "demo");
    let answered = as_demo(
        server
            .http(reqwest::Method::POST, "/v1/chat/completions", None)
            .json(&ask("hi")),
    )
    .await;
    assert_eq!(
        answered["model"], "demo",
        "answered by the demo's bot: {answered}"
    );
    let (status, body) = server.get_json("/v1/models", None).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (401, Some("authentication_error"))
    );
    server.stop().await;
}

/// A server whose default bot asks the mock upstream for a tool call
/// (`mock-tool-call`), and whose bot `chat` gets ordinary answers.
async fn with_tools_upstream() -> (TestServer, skald_loadtest::mock_upstream::MockUpstream) {
    // Paced (20 ms between pieces), so that the pieces of a call reach the
    // client as pieces rather than all at once.
    let mock = crate::common::mock_upstream(50.0, 6).await;
    let url = mock.base_url();
    let server = TestServer::with_config(move |c| {
        c.model.upstream_url = Some(url.parse().unwrap());
        c.model.upstream_model = "mock-tool-call".into();
        c.bots.insert(
            "chat".into(),
            skald_actors::settings::BotSettings {
                model: Some("gpt-test".into()),
                ..Default::default()
            },
        );
    })
    .await;
    (server, mock)
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}])
}

#[tokio::test]
async fn tool_call_deltas_stream_back_as_the_upstream_sent_them_and_are_stored() {
    let (server, mock) = with_tools_upstream().await;
    let question = "weather in Paris?";
    let asked: CreateChatCompletionRequest = serde_json::from_value(json!({
        "model": "default", "stream": true, "tools": weather_tool(), "tool_choice": "auto",
        "parallel_tool_calls": false,
        "messages": [{"role": "user", "content": question}],
    }))
    .unwrap();
    let mut stream = client(&server, "tools")
        .chat()
        .create_stream(asked)
        .await
        .unwrap();
    let (mut pieces, mut ids, mut names, mut arguments, mut finish) =
        (0, Vec::new(), Vec::new(), String::new(), None);
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        for choice in chunk.unwrap().choices {
            for call in choice.delta.tool_calls.unwrap_or_default() {
                assert_eq!(call.index, 0, "one call");
                pieces += 1;
                ids.extend(call.id);
                if let Some(f) = call.function {
                    names.extend(f.name);
                    arguments.push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
            finish = choice.finish_reason.or(finish);
        }
    }
    let expected = skald_loadtest::mock_upstream::tool_call_arguments(question);
    assert_eq!(finish, Some(FinishReason::ToolCalls));
    assert_eq!(names, ["weather"], "the name comes once, first");
    assert_eq!(ids.len(), 1, "the id comes once, first");
    assert_eq!(arguments, expected);
    assert!(pieces > 1, "the arguments came in pieces: {pieces}");
    // The tools went upstream as the caller gave them.
    let upstream = mock.last_request().unwrap();
    assert_eq!(upstream["tools"], weather_tool());
    assert_eq!(
        (&upstream["tool_choice"], &upstream["parallel_tool_calls"]),
        (&json!("auto"), &json!(false))
    );
    // Stored with the answer, in OpenAI's shape.
    let (_, list) = server.get_json("/v1/conversations", Some("tools")).await;
    let conversation = list["conversations"][0]["id"].as_str().unwrap().to_owned();
    let messages = stored(&server, "tools", &conversation).await;
    assert_eq!(
        messages[1]["tool_calls"],
        json!([{"id": ids[0], "type": "function", "function": {"name": "weather", "arguments": expected}}])
    );
    assert_eq!(messages[1]["content"], "");
    assert_eq!(messages[1]["finish_reason"], "stop");
    server.stop().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn a_tool_result_is_answered_and_stored_as_the_tool_turn_it_is() {
    let (server, mock) = with_tools_upstream().await;
    // A plain answer that calls the tool: no content, the call, its reason.
    let called = post(
        &server,
        Some("tool-turn"),
        json!({"model": "default", "tools": weather_tool(),
               "messages": [{"role": "user", "content": "weather in Oslo?"}]}),
        None,
    )
    .await;
    assert_eq!(called.status(), 200);
    let conversation = called.headers()["x-skald-conversation"]
        .to_str()
        .unwrap()
        .to_owned();
    let called: Value = called.json().await.unwrap();
    let choice = &called["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{called}");
    assert_eq!(choice["message"]["content"], Value::Null, "{called}");
    let call = choice["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "weather", "{called}");

    // The application runs the tool and gives its result back, with the
    // turns it holds, as OpenAI's API expects.
    let result = post(
        &server,
        Some("tool-turn"),
        json!({"model": "chat", "tools": weather_tool(), "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "snow, -3 C"},
        ]}),
        None,
    )
    .await;
    assert_eq!(result.status(), 200);
    let answered: Value = result.json().await.unwrap();
    assert_eq!(
        answered["choices"][0]["finish_reason"], "stop",
        "{answered}"
    );
    let upstream = mock.last_request().unwrap();
    let sent = upstream["messages"].as_array().unwrap();
    assert_eq!(sent[0]["role"], "system", "the bot's prompt first");
    assert_eq!(sent[2]["tool_calls"][0]["id"], call["id"]);
    assert_eq!(
        (
            &sent[3]["role"],
            &sent[3]["tool_call_id"],
            &sent[3]["content"]
        ),
        (&json!("tool"), &call["id"], &json!("snow, -3 C"))
    );
    // The result is the stored message of that call's exchange.
    let (_, list) = server
        .get_json("/v1/conversations", Some("tool-turn"))
        .await;
    let newest = list["conversations"][0]["id"].as_str().unwrap().to_owned();
    assert_ne!(newest, conversation, "each call is a conversation");
    let messages = stored(&server, "tool-turn", &newest).await;
    assert_eq!(
        (
            &messages[0]["role"],
            &messages[0]["tool_call_id"],
            &messages[0]["content"]
        ),
        (&json!("tool"), &call["id"], &json!("snow, -3 C"))
    );
    assert_eq!(
        messages[1]["content"],
        answered["choices"][0]["message"]["content"]
    );

    // A tool message that is not the answer to a call is refused by
    // OpenAI's rules upstream; one without its id, here.
    let bad = post(
        &server,
        Some("tool-turn"),
        json!({"model": "chat", "messages": [{"role": "tool", "content": "orphan"}]}),
        None,
    )
    .await;
    assert_eq!(bad.status(), 400);
    server.stop().await;
    mock.shutdown().await;
}

/// Limits that cannot be read, with `failure_policy = "closed"`: the call
/// is refused as OpenAI's SDKs expect a 503 (`InternalServerError`,
/// retried by them), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_down_fail_closed_as_a_503() {
    let mut redis = crate::common::redis_server::RedisServer::start();
    let url = redis.url();
    let server = TestServer::with_config(|c| {
        c.redis.url = Some(url.as_str().into());
        c.redis.failure_policy = skald_actors::limits::guard::FailurePolicy::Closed;
    })
    .await;
    assert_eq!(
        post(&server, Some("closed"), ask("ok"), None)
            .await
            .status(),
        200
    );
    redis.stop();
    let refused = tokio::time::timeout(WAIT, post(&server, Some("closed"), ask("refused"), None))
        .await
        .expect("answered in bounded time");
    assert_eq!(refused.status(), 503);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(
        (
            error["error"]["type"].as_str(),
            error["error"]["code"].as_str()
        ),
        (Some("server_error"), Some("unavailable")),
        "{error}"
    );
    redis.restart();
    let list = eventually(
        "the history API never answered again",
        Duration::from_millis(100),
        async || {
            let (status, list) = server.get_json("/v1/conversations", Some("closed")).await;
            (status == 200).then_some(list)
        },
    )
    .await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1, "{list}");
    server.stop().await;
}
