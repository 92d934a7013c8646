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

/// The (user, bot, requests) of a usage page, and its tokens by user.
fn usage_rows(page: &Value) -> Vec<(String, String, u64)> {
    page["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["bot"].as_str().unwrap().to_owned(),
                u["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn operators_read_usage_by_user_bot_and_month_and_it_outlives_erasure() {
    let server = TestServer::with_config(|c| {
        c.bots.insert("brief".into(), Default::default());
    })
    .await;
    // Alice: two answers of the default bot; Bob: one of `brief`.
    let mut alice = server.client("alice").await;
    for id in ["a-1", "a-2"] {
        let ack = crate::admin::send_to(&mut alice, id, "default", "hello").await;
        assert_eq!(ack["type"], "ack", "{ack}");
        alice.recv_type("done").await;
    }
    let mut bob = server.client("bob").await;
    let ack = crate::admin::send_to(&mut bob, "b-1", "brief", "hello").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    bob.recv_type("done").await;

    assert_eq!(get(&server, "/v1/admin/usage", None).await.0, 401);
    let (status, refused) = get(&server, "/v1/admin/usage", Some(token("alice"))).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &json!("forbidden"))
    );

    // Answers end in the Persister's batches: wait until every token is
    // there, then each user's tokens are what their quota counted.
    let quota_tokens = async |user: &str| {
        let (_, usage) = server.get_json("/v1/usage", Some(user)).await;
        usage["tokens_used"].as_u64().unwrap()
    };
    let (alice_tokens, bob_tokens) = (quota_tokens("alice").await, quota_tokens("bob").await);
    assert!(alice_tokens > 0 && bob_tokens > 0);
    let page = eventually(
        "usage never matched the quota counters",
        Duration::from_millis(50),
        async || {
            let (status, page) = get(&server, "/v1/admin/usage", Some(admin())).await;
            assert_eq!(status, 200, "{page}");
            let tokens: Vec<u64> = page["usage"]
                .as_array()?
                .iter()
                .map(|u| u["tokens"].as_u64().unwrap())
                .collect();
            (tokens == [alice_tokens, bob_tokens]).then_some(page)
        },
    )
    .await;
    let month = page["usage"][0]["month"].as_str().unwrap().to_owned();
    assert_eq!(month.len(), 7, "YYYY-MM: {month}");
    let expected = [("alice", "default", 2), ("bob", "brief", 1)]
        .map(|(u, b, r)| (u.to_owned(), b.to_owned(), r));
    assert_eq!(usage_rows(&page), expected);
    assert_eq!(page["next"], Value::Null);

    // Filters: a user, a bot, a month (this one named, and one long gone).
    for (query, rows) in [
        ("?user=bob", &expected[1..]),
        ("?bot=default", &expected[..1]),
        (&*format!("?month={month}"), &expected[..]),
        ("?month=2020-01", &[][..]),
    ] {
        let (status, page) = get(&server, &format!("/v1/admin/usage{query}"), Some(admin())).await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(usage_rows(&page), rows, "{query}");
    }
    // Pages of one, following the cursor.
    let (_, first) = get(&server, "/v1/admin/usage?limit=1", Some(admin())).await;
    assert_eq!(usage_rows(&first), &expected[..1]);
    let next = first["next"].as_str().expect("a second page");
    let (_, second) = get(
        &server,
        &format!("/v1/admin/usage?limit=1&before={next}"),
        Some(admin()),
    )
    .await;
    assert_eq!(usage_rows(&second), &expected[1..]);
    assert_eq!(second["next"], Value::Null);

    // Bad input is a clear 400.
    for (query, names) in [
        ("?month=2026-13", "month must be YYYY-MM"),
        ("?month=last", "month must be YYYY-MM"),
        ("?limit=1000", "limit"),
    ] {
        let (status, answer) =
            get(&server, &format!("/v1/admin/usage{query}"), Some(admin())).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(message.contains(names), "{message:?} should name {names}");
    }

    // Alice erases herself: her usage stays (counters, no content).
    assert_eq!(server.delete("/v1/me", Some("alice")).await, 204);
    let (_, after) = get(&server, "/v1/admin/usage", Some(admin())).await;
    assert_eq!(usage_rows(&after), expected);
    server.stop().await;
}
