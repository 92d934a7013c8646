//! The demo cannot be farmed: new demo identities are bounded per address
//! and day, and each talks to the demo's bot only, with its short answers
//! and small monthly budget, whatever bot its `send` names.

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{collect_stream, send, Client, TestServer};

/// `POST /v1/demo/token`, renewing `renew` if given: status, body,
/// `Retry-After`.
async fn demo_token(server: &TestServer, renew: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new().post(format!("http://{}/v1/demo/token", server.addr));
    if let Some(token) = renew {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        response.json().await.unwrap(),
        retry,
    )
}

/// The claims of a token (its signature is the server's business).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn new_demo_identities_are_bounded_per_address_and_day_renewals_are_not() {
    let server = TestServer::with_config(|c| c.demo.identities_per_day_per_address = 2).await;
    let (status, first, _) = demo_token(&server, None).await;
    assert_eq!(status, 200, "{first}");
    let (status, second, _) = demo_token(&server, None).await;
    assert_eq!(status, 200, "{second}");
    let first = first["token"].as_str().unwrap().to_owned();
    let second = second["token"].as_str().unwrap();
    assert_ne!(claims(&first)["sub"], claims(second)["sub"]);

    let (status, refused, retry_after) = demo_token(&server, None).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "rate_limited");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 new demo identities a day"), "{message}");
    // A day / 2: twelve hours until the next one.
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((43_000..=43_200).contains(&retry_after), "{retry_after}");

    // The same visitor keeps their identity: not a new one.
    let (status, renewed, _) = demo_token(&server, Some(&first)).await;
    assert_eq!(status, 200, "{renewed}");
    let renewed = renewed["token"].as_str().unwrap();
    assert_eq!(claims(renewed)["sub"], claims(&first)["sub"]);
    assert_eq!(claims(renewed)["roles"], json!(["demo"]));
    server.stop().await;
}

#[tokio::test]
async fn a_demo_identity_talks_to_the_demo_bot_with_its_small_budget() {
    // Answers longer than the demo bot's 256 tokens.
    let server = TestServer::with_config(|c| {
        c.model.simulated_tokens_per_second = 0.0;
        c.model.simulated_answer_tokens = 300;
    })
    .await;
    let (_, body, _) = demo_token(&server, None).await;
    let token = body["token"].as_str().unwrap();
    let mut visitor = Client::connect(&server.url(), Some(token)).await;
    let ready = visitor.recv().await;
    assert_eq!(ready["limits"]["tokens_remaining"], 5_000, "{ready}");
    assert_eq!(ready["limits"]["messages_per_minute"], 10, "{ready}");

    // It names the default bot; it gets the demo's.
    visitor
        .send(json!({"type":"send","id":"d1","bot":"default","text":"hello"}))
        .await;
    let ack = visitor.recv_type("ack").await;
    let answer = collect_stream(&mut visitor, ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(answer.done["finish_reason"], "length", "{}", answer.done);
    assert_eq!(answer.done["usage"]["completion_tokens"], 256);

    // Anyone else has the default bot and the global limits.
    let mut user = server.client("alice").await;
    let ack = send(&mut user, "u1", None, "hello").await;
    let answer = collect_stream(&mut user, ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(answer.done["finish_reason"], "stop", "{}", answer.done);
    assert_eq!(answer.done["usage"]["completion_tokens"], 300);
    server.stop().await;
}
