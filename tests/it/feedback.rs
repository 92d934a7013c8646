//! Feedback on answers (PROTOCOL.md): given and withdrawn by the answer's
//! owner only, checked, shown in the history and the export, listed for
//! operators, erased with the user.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

async fn rate(server: &TestServer, user: &str, message_id: &str, body: Value) -> (u16, Value) {
    let path = format!("/v1/messages/{message_id}/feedback");
    let response = server
        .http(Method::PUT, &path, Some(user))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn listed(server: &TestServer, query: &str) -> (u16, Value) {
    let admin = token_with("ops", |c| c.roles = vec!["admin".into()]);
    let response = server
        .http(Method::GET, &format!("/v1/admin/feedback{query}"), None)
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `text` as `user` and waits for its `done`: the ack.
async fn answered(server: &TestServer, user: &str, id: &str, text: &str) -> Value {
    let mut client = server.client(user).await;
    let ack = send(&mut client, id, None, text).await;
    client.recv_type("done").await;
    ack
}

#[tokio::test]
async fn the_owner_rates_an_answer_it_shows_in_the_history_and_export_and_operators_list_it() {
    let server = TestServer::start().await;
    let ack = answered(&server, "alice", "f-1", "what colour is the sky?").await;
    let answer = ack["message_id"].as_str().unwrap();
    let conversation = ack["conversation_id"].as_str().unwrap();
    let (status, _) = rate(
        &server,
        "alice",
        answer,
        json!({"rating": -1, "comment": "it is blue"}),
    )
    .await;
    assert_eq!(status, 204);
    let history = messages_via_http(server.addr.port(), "alice", conversation).await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(
        messages[0].get("feedback"),
        None,
        "the user message has none"
    );
    assert_eq!(
        messages[1]["feedback"],
        json!({"rating": -1, "comment": "it is blue"})
    );
    let (_, export) = server.get_json("/v1/export", Some("alice")).await;
    let exported: Vec<&Value> = export["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.get("feedback"))
        .collect();
    assert_eq!(exported, [&json!({"rating": -1, "comment": "it is blue"})]);
    // Operators list it, with the answer's ids and bot, never the user.
    let (status, page) = listed(&server, "?rating=-1").await;
    assert_eq!(status, 200, "{page}");
    let entry = &page["feedback"][0];
    assert_eq!(
        (
            &entry["message_id"],
            &entry["conversation_id"],
            &entry["bot"],
            &entry["rating"],
            &entry["comment"]
        ),
        (
            &answer.into(),
            &conversation.into(),
            &"default".into(),
            &(-1).into(),
            &"it is blue".into()
        )
    );
    assert!(entry["at"].as_str().unwrap().ends_with('Z'), "{entry}");
    assert_eq!(entry.get("user"), None);
    assert_eq!(listed(&server, "?rating=1").await.1["feedback"], json!([]));
    assert_eq!(listed(&server, "?bot=other").await.1["feedback"], json!([]));
    // Changed, then withdrawn.
    assert_eq!(
        rate(&server, "alice", answer, json!({"rating": 1})).await.0,
        204
    );
    assert_eq!(
        listed(&server, "?rating=1").await.1["feedback"][0]["comment"],
        Value::Null
    );
    let path = format!("/v1/messages/{answer}/feedback");
    assert_eq!(server.delete(&path, Some("alice")).await, 204);
    let history = messages_via_http(server.addr.port(), "alice", conversation).await;
    assert_eq!(history["messages"][1].get("feedback"), None);
    assert_eq!(listed(&server, "").await.1["feedback"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn feedback_from_anyone_but_the_owner_or_out_of_shape_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let ack = answered(&server, "alice", "f-1", "hello").await;
    let answer = ack["message_id"].as_str().unwrap();
    let conversation = ack["conversation_id"].as_str().unwrap();
    let history = messages_via_http(server.addr.port(), "alice", conversation).await;
    let question = history["messages"][0]["id"].as_str().unwrap().to_owned();
    let up = json!({"rating": 1});
    // Another user, a user message, an unknown id: the same 404.
    for (user, id) in [
        ("mallory", answer),
        ("alice", question.as_str()),
        ("alice", "nope"),
    ] {
        let (status, body) = rate(&server, user, id, up.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{user} {id}"
        );
    }
    let path = format!("/v1/messages/{answer}/feedback");
    assert_eq!(server.delete(&path, Some("mallory")).await, 404);
    assert_eq!(
        server
            .http(Method::PUT, &path, None)
            .json(&up)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    for (body, names) in [
        (json!({"rating": 2}), "rating"),
        (json!({"rating": 0}), "rating"),
        (json!({"rating": "up"}), "rating"),
        (json!({}), "rating"),
        (json!({"rating": 1, "stars": 5}), "stars"),
        (json!({"rating": -1, "comment": "x".repeat(2001)}), "2001"),
    ] {
        let (status, answer_body) = rate(&server, "alice", answer, body.clone()).await;
        let message = answer_body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{body}: {answer_body}");
        assert!(message.contains(names), "{message:?} should name {names}");
    }
    // At the limit, accepted.
    let longest = json!({"rating": -1, "comment": "é".repeat(2000)});
    assert_eq!(rate(&server, "alice", answer, longest).await.0, 204);
    // Operators only, and a bad filter is a 400.
    let (status, _) = server.get_json("/v1/admin/feedback", Some("alice")).await;
    assert_eq!(status, 403);
    assert_eq!(listed(&server, "?rating=up").await.0, 400);
    assert_eq!(listed(&server, "?before=%%%").await.0, 400);
    server.stop().await;
}

#[tokio::test]
async fn erasure_takes_the_users_feedback_with_it() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for (user, id) in [("alice", "a-1"), ("bob", "b-1")] {
        let ack = answered(&server, user, id, "rate me").await;
        let answer = ack["message_id"].as_str().unwrap().to_owned();
        assert_eq!(
            rate(&server, user, &answer, json!({"rating": 1})).await.0,
            204
        );
        ids.push(answer);
    }
    assert_eq!(server.delete("/v1/me", Some("alice")).await, 204);
    let (_, page) = listed(&server, "").await;
    let left: Vec<&str> = page["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [ids[1].as_str()], "only Bob's is left");
    server.stop().await;
}
