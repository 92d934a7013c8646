//! What operators read (PROTOCOL.md, Admin API): the audit log, newest
//! first and filtered, and usage per user, bot and month; both behind the
//! admin role, both paged with opaque cursors.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

fn admin() -> String {
    token_with("ops", |c| c.roles = vec!["admin".into()])
}

/// GET `path` with `bearer` (None: no token): the status and the body.
async fn get(server: &TestServer, path: &str, bearer: Option<String>) -> (u16, Value) {
    let mut request = server.http(Method::GET, path, None);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The (action, user, actor, resource) of the audit events of a page.
fn summary(page: &Value) -> Vec<(String, Value, Value, String)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["user"].clone(),
                e["actor"].clone(),
                e["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn operators_read_the_audit_log_newest_first_filtered_and_paged() {
    let server = TestServer::start().await;
    // Alice makes a conversation and deletes it; a forged token fails; an
    // operator changes a bot.
    let mut alice = server.client("alice").await;
    let ack = send(&mut alice, "a-1", None, "hello").await;
    alice.recv_type("done").await;
    let conversation = ack["conversation_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{conversation}");
    assert_eq!(server.delete(&path, Some("alice")).await, 204);
    let forged = format!("{}x", token("mallory"));
    assert_eq!(get(&server, "/v1/usage", Some(forged)).await.0, 401);
    let bot = json!({"system_prompt": "Be brief.", "model": "mock"});
    let response = server
        .http(Method::PUT, "/v1/admin/bots/brief", None)
        .bearer_auth(admin())
        .json(&bot)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Only operators read it.
    assert_eq!(get(&server, "/v1/admin/audit", None).await.0, 401);
    let (status, refused) = get(&server, "/v1/admin/audit", Some(token("alice"))).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &json!("forbidden"))
    );

    // Audit records are written in the Persister's batches: wait for all four.
    let page = eventually(
        "the audit records were never listed",
        Duration::from_millis(50),
        async || {
            let (status, page) = get(&server, "/v1/admin/audit", Some(admin())).await;
            assert_eq!(status, 200, "{page}");
            (page["events"].as_array()?.len() >= 4).then_some(page)
        },
    )
    .await;
    let null = Value::Null;
    assert_eq!(
        summary(&page),
        [
            ("bot_changed", json!("ops"), json!("ops"), "bot:brief"),
            (
                "auth_failed",
                null.clone(),
                null.clone(),
                "token refused: bad signature"
            ),
            (
                "conversation_deleted",
                json!("alice"),
                null.clone(),
                &*conversation
            ),
            (
                "conversation_created",
                json!("alice"),
                null.clone(),
                &*conversation
            ),
        ]
        .map(|(a, u, o, r)| (a.to_owned(), u, o, r.to_owned())),
        "newest first: {page}"
    );
    assert_eq!(page["next"], Value::Null);
    let failed = &page["events"][1];
    assert_eq!(
        failed["address"], "127.0.0.1",
        "a fresh record keeps its address"
    );
    assert!(
        failed["at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 in UTC: {failed}"
    );

    // Filters: one user, one action.
    let (_, mine) = get(&server, "/v1/admin/audit?user=alice", Some(admin())).await;
    let actions: Vec<String> = summary(&mine).into_iter().map(|s| s.0).collect();
    assert_eq!(actions, ["conversation_deleted", "conversation_created"]);
    let (_, failures) = get(&server, "/v1/admin/audit?action=auth_failed", Some(admin())).await;
    assert_eq!(
        failures["events"].as_array().unwrap().len(),
        1,
        "{failures}"
    );

    // Pages of one, following the cursor, give the same four in order.
    let mut seen = Vec::new();
    let mut query = "/v1/admin/audit?limit=1".to_owned();
    loop {
        let (status, page) = get(&server, &query, Some(admin())).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(summary(&page));
        let Some(next) = page["next"].as_str() else {
            break;
        };
        assert!(seen.len() < 10, "the cursor never ends");
        query = format!("/v1/admin/audit?limit=1&before={next}");
    }
    assert_eq!(seen, summary(&page));

    // Bad input is a clear 400.
    for (query, names) in [
        ("?action=exploded", "unknown action \"exploded\""),
        ("?limit=0", "limit"),
        ("?before=not-a-cursor", "cursor"),
    ] {
        let (status, answer) =
            get(&server, &format!("/v1/admin/audit{query}"), Some(admin())).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(message.contains(names), "{message:?} should name {names}");
    }
    server.stop().await;
}
