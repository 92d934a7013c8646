//! The operators' API: the admin role's gate; bots created, changed and
//! deleted at runtime (validated as the file's, kept by the store, used by
//! every instance); users' limit overrides; the audit of every change.

use std::time::Duration;

use serde_json::Value;
use skald_actors::settings::BotSettings;

use crate::common::cql::Keyspace;
use crate::common::redis_server::RedisServer;
use crate::common::*;

async fn get(server: &TestServer, path: &str, bearer: Option<String>) -> (u16, Value) {
    let mut request = server.http(reqwest::Method::GET, path, None);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn admin(sub: &str) -> String {
    token_with(sub, |c| c.roles = vec!["admin".into()])
}

#[tokio::test]
async fn only_the_admin_role_opens_the_admin_api_and_it_shows_the_bots_in_force() {
    let server = TestServer::with_config(|c| {
        c.bots.insert(
            "shop".into(),
            BotSettings {
                system_prompt: "You sell shoes.".into(),
                max_tokens: 321,
                allowed_origins: vec!["https://shop.example".into()],
                ..BotSettings::default()
            },
        );
    })
    .await;
    // No token, a token without the role, another role: refused, in the
    // contract's shape.
    for (bearer, status, code) in [
        (None, 401, "unauthorized"),
        (Some(token("ops")), 403, "forbidden"),
        (
            Some(token_with("ops", |c| c.roles = vec!["support".into()])),
            403,
            "forbidden",
        ),
    ] {
        for path in ["/v1/admin/bots", "/v1/admin/bots/shop"] {
            let (got, body) = get(&server, path, bearer.clone()).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{path}: {body}"
            );
        }
    }
    let (status, body) = get(&server, "/v1/admin/bots", Some(admin("ops"))).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["bots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"default") && names.contains(&"shop"),
        "{names:?}"
    );
    let (status, shop) = get(&server, "/v1/admin/bots/shop", Some(admin("ops"))).await;
    assert_eq!(status, 200, "{shop}");
    assert_eq!(shop["system_prompt"], "You sell shoes.");
    assert_eq!(shop["max_tokens"], 321);
    assert_eq!(shop["allowed_origins"][0], "https://shop.example");
    let (status, body) = get(&server, "/v1/admin/bots/nobody", Some(admin("ops"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    server.stop().await;
}

/// A request as `bearer` with an optional JSON body: the status and the
/// JSON answer (Null if none).
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.http(method, path, None).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    call(
        server,
        reqwest::Method::PUT,
        path,
        &admin("ops"),
        Some(body),
    )
    .await
}

async fn delete(server: &TestServer, path: &str) -> (u16, Value) {
    call(server, reqwest::Method::DELETE, path, &admin("ops"), None).await
}

/// What a `send` of `text` to `bot` gets first: its ack or its error.
pub async fn send_to(client: &mut Client, id: &str, bot: &str, text: &str) -> Value {
    client
        .send(serde_json::json!({"type":"send","id":id,"bot":bot,"text":text}))
        .await;
    client.recv_type_of(&["ack", "error"]).await
}

#[tokio::test]
async fn an_admin_creates_changes_and_deletes_bots_at_runtime_and_they_outlive_a_restart() {
    let data = TempDir::new("admin-bots");
    let file_bots = |c: &mut skald::config::Config| {
        c.bots.insert("shop".into(), BotSettings::default());
    };
    let server = TestServer::builder()
        .data_dir(&data.0)
        .config(file_bots)
        .start()
        .await;
    let sales = serde_json::json!({"system_prompt": "You sell.", "max_message_chars": 5});
    // Only an admin may change bots; a refused change changes nothing.
    let (status, _) = call(
        &server,
        reqwest::Method::PUT,
        "/v1/admin/bots/sales",
        &token("mallory"),
        Some(sales.clone()),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        get(&server, "/v1/admin/bots/sales", Some(admin("ops")))
            .await
            .0,
        404
    );
    let (status, created) = put(&server, "/v1/admin/bots/sales", sales).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        (
            &created["name"],
            &created["source"],
            &created["max_message_chars"]
        ),
        (&"sales".into(), &"api".into(), &5.into())
    );
    // Unset settings take their defaults, as in the file.
    assert_eq!(created["max_tokens"], BotSettings::default().max_tokens);
    // In force at once for the next send.
    let mut client = server.client("alice").await;
    let refused = send_to(&mut client, "s-1", "sales", "0123456789").await;
    assert_eq!(refused["code"], "message_too_long", "{refused}");
    assert_eq!(
        send_to(&mut client, "s-2", "sales", "hi").await["type"],
        "ack"
    );
    // A bot read back from GET is a valid body (its name and source too).
    let (_, mut read) = get(&server, "/v1/admin/bots/sales", Some(admin("ops"))).await;
    read["max_message_chars"] = 50.into();
    let (status, replaced) = put(&server, "/v1/admin/bots/sales", read).await;
    assert_eq!((status, &replaced["max_message_chars"]), (200, &50.into()));
    let acked = send_to(&mut client, "s-3", "sales", "0123456789").await;
    assert_eq!(acked["type"], "ack", "{acked}");
    // `default` stays; a deleted bot is gone for everyone, a file's too.
    let (status, body) = delete(&server, "/v1/admin/bots/default").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(delete(&server, "/v1/admin/bots/sales").await.0, 204);
    assert_eq!(delete(&server, "/v1/admin/bots/shop").await.0, 204);
    assert_eq!(delete(&server, "/v1/admin/bots/shop").await.0, 404);
    for name in ["sales", "shop"] {
        let path = format!("/v1/admin/bots/{name}");
        assert_eq!(get(&server, &path, Some(admin("ops"))).await.0, 404);
        let refused = send_to(&mut client, &format!("gone-{name}"), name, "hi").await;
        assert_eq!(refused["code"], "not_found", "{refused}");
    }
    let (status, _) = put(
        &server,
        "/v1/admin/bots/kept",
        serde_json::json!({"max_tokens": 7}),
    )
    .await;
    assert_eq!(status, 200);
    // Every change is in the operator's audit record, with the operator as
    // its actor and the bot as what it was about.
    let changes = operators_changes(&server, "ops", 5).await;
    let expected = [
        ("bot_changed", "bot:sales"),
        ("bot_changed", "bot:sales"),
        ("bot_deleted", "bot:sales"),
        ("bot_deleted", "bot:shop"),
        ("bot_changed", "bot:kept"),
    ]
    .map(|(a, d)| ("ops".to_owned(), a.to_owned(), d.to_owned()));
    assert_eq!(changes, expected);
    drop(client);
    server.stop().await;
    // The store keeps them: after a restart, the same bots are in force.
    let server = TestServer::builder()
        .data_dir(&data.0)
        .config(file_bots)
        .start()
        .await;
    let (status, kept) = get(&server, "/v1/admin/bots/kept", Some(admin("ops"))).await;
    assert_eq!(
        (status, &kept["max_tokens"], &kept["source"]),
        (200, &7.into(), &"api".into())
    );
    for gone in ["sales", "shop"] {
        let path = format!("/v1/admin/bots/{gone}");
        assert_eq!(
            get(&server, &path, Some(admin("ops"))).await.0,
            404,
            "{gone}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_bot_settings_are_refused_naming_the_field_and_change_nothing() {
    let server = TestServer::start().await;
    let path = "/v1/admin/bots/sales";
    for (body, names) in [
        (
            serde_json::json!({"temperature": 5}),
            "bots.sales.temperature",
        ),
        (serde_json::json!({"temperature": "hot"}), "`temperature`"),
        (serde_json::json!({"max_tokens": -1}), "`max_tokens`"),
        (serde_json::json!({"colour": "blue"}), "colour"),
        (
            serde_json::json!({"upstreams": ["nowhere"]}),
            "bots.sales.upstreams",
        ),
        (
            serde_json::json!({"allowed_origins": ["shop.example"]}),
            "bots.sales.allowed_origins",
        ),
        (
            serde_json::json!({"messages_per_minute": 0}),
            "bots.sales.messages_per_minute",
        ),
        (serde_json::json!({"name": "other"}), "\"other\""),
        (serde_json::json!([1, 2]), "invalid body"),
    ] {
        let (status, answer) = put(&server, path, body.clone()).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{body}: {answer}"
        );
        assert!(
            message.contains(names),
            "{body}: {message:?} should name {names}"
        );
    }
    let not_json = server
        .http(reqwest::Method::PUT, path, None)
        .bearer_auth(admin("ops"))
        .body("max_tokens = 5")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    for bad_name in ["a b", "é", &"x".repeat(65)] {
        let path = format!("/v1/admin/bots/{}", urlencoding(bad_name));
        let (status, answer) = put(&server, &path, serde_json::json!({})).await;
        assert_eq!(status, 400, "{bad_name:?}: {answer}");
    }
    // Nothing was stored.
    assert_eq!(get(&server, path, Some(admin("ops"))).await.0, 404);
    let (_, all) = get(&server, "/v1/admin/bots", Some(admin("ops"))).await;
    assert!(
        all["bots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["source"] == "file"),
        "{all}"
    );
    server.stop().await;
}

/// Percent-encodes a path segment.
fn urlencoding(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_users_limits_set_by_an_admin_apply_to_their_next_send_and_are_audited() {
    let server = TestServer::start().await;
    let path = "/v1/admin/users/alice/limits";
    let (status, none) = get(&server, path, Some(admin("ops"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        none,
        serde_json::json!({"messages_per_minute": null, "monthly_tokens": null, "monthly_requests": null})
    );
    assert_eq!(get(&server, path, Some(token("alice"))).await.0, 403);
    let limits = serde_json::json!({"messages_per_minute": 1, "monthly_tokens": 1234, "monthly_requests": null});
    let (status, stored) = put(&server, path, limits.clone()).await;
    assert_eq!((status, &stored), (200, &limits));
    assert_eq!(get(&server, path, Some(admin("ops"))).await.1, limits);
    let (_, usage) = server.get_json("/v1/usage", Some("alice")).await;
    assert_eq!(usage["tokens_limit"], 1234, "{usage}");
    // One message a minute: the second is refused; Bob is not touched.
    let mut alice = server.client("alice").await;
    assert_eq!(
        send_to(&mut alice, "a-1", "default", "hi").await["type"],
        "ack"
    );
    let refused = send_to(&mut alice, "a-2", "default", "hi again").await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    let mut bob = server.client("bob").await;
    assert_eq!(
        send_to(&mut bob, "b-1", "default", "hi").await["type"],
        "ack"
    );
    assert_eq!(
        send_to(&mut bob, "b-2", "default", "hi again").await["type"],
        "ack"
    );
    // Bad overrides name the field and change nothing.
    for (body, names) in [
        (
            serde_json::json!({"messages_per_minute": 0}),
            "limits.messages_per_minute",
        ),
        (serde_json::json!({"monthly_tokenz": 5}), "monthly_tokenz"),
        (
            serde_json::json!({"monthly_tokens": "lots"}),
            "`monthly_tokens`",
        ),
    ] {
        let (status, answer) = put(&server, path, body.clone()).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message.contains(names), "{message:?} should name {names}");
    }
    assert_eq!(get(&server, path, Some(admin("ops"))).await.1, limits);
    // Deleted: the global limits again.
    assert_eq!(delete(&server, path).await.0, 204);
    let (_, usage) = server.get_json("/v1/usage", Some("alice")).await;
    assert_eq!(usage["tokens_limit"], test_config().limits.monthly_tokens);
    // Both changes are in Alice's audit record, made by the operator.
    let changes = operators_changes(&server, "alice", 2).await;
    let expected = [
        ("user_limits_changed", "limits"),
        ("user_limits_deleted", "limits"),
    ]
    .map(|(a, d)| ("ops".to_owned(), a.to_owned(), d.to_owned()));
    assert_eq!(changes, expected);
    server.stop().await;
}

/// The (actor, action, detail) of the records made by an operator in
/// `user`'s export, once `count` are there (audit records are written in
/// the Persister's batches).
async fn operators_changes(
    server: &TestServer,
    user: &str,
    count: usize,
) -> Vec<(String, String, String)> {
    eventually(
        "the audit records were never written",
        Duration::from_millis(50),
        async || {
            let (_, export) = server.get_json("/v1/export", Some(user)).await;
            let changes: Vec<(String, String, String)> = export["audit"]
                .as_array()?
                .iter()
                .filter_map(|a| {
                    let text = |k: &str| a[k].as_str().map(str::to_owned);
                    Some((text("actor")?, text("action")?, text("detail")?))
                })
                .collect();
            (changes.len() >= count).then_some(changes)
        },
    )
    .await
}

/// Two instances on one Redis and one CQL keyspace: what an operator
/// changes through one is in force on the other within two seconds (each
/// instance reads the stored bots and overrides every second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_one_instance_is_used_by_another_within_two_seconds() {
    let test = "a_change_made_on_one_instance_is_used_by_another_within_two_seconds";
    let Some(keyspace) = Keyspace::shared(test).await else {
        return;
    };
    let redis = RedisServer::start();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let url = redis.url();
        let server = TestServer::builder()
            .config(move |c| c.redis.url = Some(url.as_str().into()))
            .store(keyspace.shared_store().await)
            .start()
            .await;
        instances.push(server);
    }
    let (a, b) = (&instances[0], &instances[1]);
    let mut on_b = b.client("carol").await;
    // A bot created on A: B answers with it.
    let name = format!("roaming-{}", std::process::id());
    let path = format!("/v1/admin/bots/{name}");
    let (status, _) = put(a, &path, serde_json::json!({"max_message_chars": 5})).await;
    assert_eq!(status, 200);
    let created = std::time::Instant::now();
    let mut n = 0;
    let seen = eventually(
        "B never used the bot created on A",
        Duration::from_millis(20),
        async || {
            n += 1;
            let first = send_to(&mut on_b, &format!("c-{n}"), &name, "0123456789").await;
            (first["code"] == "message_too_long").then(|| created.elapsed())
        },
    )
    .await;
    assert!(seen < Duration::from_secs(2), "B used it after {seen:?}");
    // Its deletion on A: B refuses it as unknown.
    assert_eq!(delete(a, &path).await.0, 204);
    let deleted = std::time::Instant::now();
    let gone = eventually(
        "B still used the bot deleted on A",
        Duration::from_millis(20),
        async || {
            n += 1;
            let first = send_to(&mut on_b, &format!("c-{n}"), &name, "hi").await;
            (first["code"] == "not_found").then(|| deleted.elapsed())
        },
    )
    .await;
    assert!(gone < Duration::from_secs(2), "B dropped it after {gone:?}");
    // A user's limits set on A hold on B.
    let limits = serde_json::json!({"monthly_tokens": 4321});
    assert_eq!(put(a, "/v1/admin/users/carol/limits", limits).await.0, 200);
    let set = std::time::Instant::now();
    let applied = eventually(
        "B never applied Carol's limits",
        Duration::from_millis(20),
        async || {
            let (_, usage) = b.get_json("/v1/usage", Some("carol")).await;
            (usage["tokens_limit"] == 4321).then(|| set.elapsed())
        },
    )
    .await;
    assert!(
        applied < Duration::from_secs(2),
        "B applied them after {applied:?}"
    );
    drop(on_b);
    for server in instances {
        server.stop().await;
    }
}
