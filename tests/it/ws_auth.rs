//! Authentication and admission at the WebSocket edge, against a real
//! server: hello vs header, every kind of bad token, auth timeout, origins.

use crate::common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn hello_frame_authenticates_and_ready_describes_the_session() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.url(), None).await;
    client
        .send(json!({"type":"hello","token":token("u-42"),"client":"test/1"}))
        .await;
    let ready = client.recv().await;
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["user"], "u-42");
    assert_eq!(ready["protocol"], 1);
    assert!(!ready["session_id"].as_str().unwrap().is_empty());
    assert_eq!(ready["limits"]["max_message_chars"], 4000);
    assert_eq!(ready["limits"]["messages_per_minute"], 50);
    assert_eq!(ready["limits"]["tokens_remaining"], 100000);
    server.stop().await;
}

#[tokio::test]
async fn header_authenticates_and_a_tokenless_hello_is_then_accepted() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.url(), Some(&token("u-h"))).await;
    let ready = client.recv().await;
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["user"], "u-h");
    client.send(json!({"type":"hello"})).await;
    client.send(json!({"type":"ping","ts":7})).await;
    assert_eq!(client.recv().await, json!({"type":"pong","ts":7}));
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_get_unauthorized_then_4401() {
    let server = TestServer::start().await;
    let now = skald::auth::now_secs();
    let bad = [
        ("garbage", "not-a-jwt".to_owned()),
        ("expired", token_with("u", |c| c.exp = now - 120)),
        ("future nbf", token_with("u", |c| c.nbf = Some(now + 600))),
        ("empty sub", token_with("", |_| {})),
        (
            "wrong secret",
            skald::auth::mint(
                "some-other-secret-some-other-secret-xx",
                &skald::auth::Claims {
                    sub: "u".into(),
                    exp: now + 60,
                    iat: None,
                    nbf: None,
                    aud: None,
                    iss: None,
                    tenant: None,
                    roles: vec![],
                },
            )
            .unwrap(),
        ),
    ];
    for (what, token) in &bad {
        // Through hello.
        let mut client = Client::connect(&server.url(), None).await;
        client.send(json!({"type":"hello","token":token})).await;
        let error = client.recv().await;
        assert_eq!(error["type"], "error", "{what}: {error}");
        assert_eq!(error["code"], "unauthorized", "{what}");
        assert_eq!(client.closed().await, Closed::Code(4401), "{what}");
        // Through the header.
        let mut client = Client::connect(&server.url(), Some(token)).await;
        assert_eq!(client.recv().await["code"], "unauthorized", "{what}");
        assert_eq!(client.closed().await, Closed::Code(4401), "{what}");
    }
    // A hello without token, and a first frame that is not a hello.
    for first in [
        json!({"type":"hello"}),
        json!({"type":"send","id":"a","text":"hi"}),
    ] {
        let mut client = Client::connect(&server.url(), None).await;
        client.send(first.clone()).await;
        assert_eq!(client.recv().await["code"], "unauthorized", "{first}");
        assert_eq!(client.closed().await, Closed::Code(4401), "{first}");
    }
    server.stop().await;
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let server = TestServer::with_config(|c| {
        c.auth.audience = Some("skald-test".into());
        c.auth.issuer = Some("https://id.test".into());
    })
    .await;
    let wrong_aud = token_with("u", |c| {
        c.aud = Some("other".into());
        c.iss = Some("https://id.test".into());
    });
    let mut client = Client::connect(&server.url(), Some(&wrong_aud)).await;
    assert_eq!(client.recv().await["code"], "unauthorized");
    assert_eq!(client.closed().await, Closed::Code(4401));
    let right = token_with("u", |c| {
        c.aud = Some("skald-test".into());
        c.iss = Some("https://id.test".into());
    });
    let mut client = Client::connect(&server.url(), Some(&right)).await;
    assert_eq!(client.recv().await["type"], "ready");
    server.stop().await;
}

#[tokio::test]
async fn silent_connections_are_closed_4408() {
    let server = TestServer::with_config(|c| c.auth.auth_timeout_ms = 300).await;
    let mut client = Client::connect(&server.url(), None).await;
    let error = client.recv().await;
    assert_eq!(error["code"], "unauthorized");
    assert_eq!(client.closed().await, Closed::Code(4408));
    server.stop().await;
}

#[tokio::test]
async fn binary_frame_before_auth_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.url(), None).await;
    client.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    client.recv().await;
    assert_eq!(client.closed().await, Closed::Code(4400));
    server.stop().await;
}

#[tokio::test]
async fn origin_allow_list_refuses_other_sites_with_403() {
    let server =
        TestServer::with_config(|c| c.allowed_origins = vec!["https://shop.example".into()]).await;
    let refused = Client::try_connect(
        &server.url(),
        Some(&token("u")),
        Some("https://evil.example"),
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        Err(other) => panic!("expected HTTP 403, got {other:?}"),
        Ok(_) => panic!("expected HTTP 403, the upgrade was accepted"),
    }
    let mut allowed = Client::try_connect(
        &server.url(),
        Some(&token("u")),
        Some("https://shop.example"),
    )
    .await
    .unwrap();
    assert_eq!(allowed.recv().await["type"], "ready");
    // Not a browser: no Origin header, allowed.
    let mut cli = Client::connect(&server.url(), Some(&token("u"))).await;
    assert_eq!(cli.recv().await["type"], "ready");
    server.stop().await;
}

/// The HTTP API answers CORS preflights (an embedded widget calls it from
/// the site's origin, with a bearer token and a JSON body): for the origins
/// the WebSocket accepts, and no other.
#[tokio::test]
async fn pages_on_allowed_origins_may_call_the_http_api_and_no_others() {
    let preflight = async |server: &TestServer, origin: &str| {
        let response = server
            .http(reqwest::Method::OPTIONS, "/v1/messages/m/feedback", None)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "PUT")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            let value = response.headers().get(name);
            value.map(|v| v.to_str().unwrap().to_owned())
        };
        (
            response.status().as_u16(),
            header("access-control-allow-origin"),
            header("access-control-allow-methods"),
            header("access-control-allow-headers"),
        )
    };
    let open = TestServer::start().await;
    let (status, origin, methods, headers) = preflight(&open, "https://any.example").await;
    assert_eq!((status, origin.as_deref()), (200, Some("*")));
    assert!(methods.unwrap().contains("PUT"));
    assert!(headers.unwrap().contains("authorization"));
    // The answer itself carries the header, whatever its status.
    let answer = open
        .http(reqwest::Method::GET, "/v1/usage", None)
        .header("Origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.headers()["access-control-allow-origin"], "*");
    open.stop().await;
    let listed =
        TestServer::with_config(|c| c.allowed_origins = vec!["https://shop.example".into()]).await;
    let allowed = preflight(&listed, "https://shop.example").await;
    assert_eq!(allowed.1.as_deref(), Some("https://shop.example"));
    let refused = preflight(&listed, "https://evil.example").await;
    assert_eq!(refused.1, None, "no CORS grant for another site");
    listed.stop().await;
}

/// PROTOCOL.md: a bot's `allowed_origins` limit which browser origins may
/// use it; to any other, on every edge, there is no such bot. Callers that
/// are not browsers (no `Origin`) are not limited, and other bots are open.
#[tokio::test]
async fn a_bots_origins_limit_who_may_use_it_on_every_edge() {
    let server = TestServer::with_config(|c| {
        c.bots.insert(
            "shop".into(),
            skald_actors::settings::BotSettings {
                allowed_origins: vec!["https://shop.example".into()],
                ..Default::default()
            },
        );
    })
    .await;
    let send_to = |bot: &str, i: usize| json!({"type": "send", "id": format!("to-{bot}-{i}"), "bot": bot, "text": "hi"});
    for (i, (origin, shop_answer)) in [
        (Some("https://shop.example"), "ack"),
        (Some("https://SHOP.example"), "ack"),
        (Some("https://evil.example"), "error"),
        (None, "ack"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut client = Client::try_connect(&server.url(), Some(&token("buyer")), origin)
            .await
            .unwrap();
        assert_eq!(client.recv().await["type"], "ready");
        client.send(send_to("shop", i)).await;
        let answer = client.recv_type_of(&["ack", "error"]).await;
        assert_eq!(answer["type"], shop_answer, "{origin:?}: {answer}");
        if shop_answer == "error" {
            assert_eq!(answer["code"], "not_found", "{answer}");
        }
        // The default bot admits every origin.
        client.send(send_to("default", i)).await;
        assert_eq!(
            client.recv_type_of(&["ack", "error"]).await["type"],
            "ack",
            "{origin:?}"
        );
        client.close().await;
    }
    // The OpenAI-compatible edge: the same bot, the same answer.
    let ask = |origin: &'static str| {
        server
            .http(reqwest::Method::POST, "/v1/chat/completions", Some("buyer"))
            .header("origin", origin)
            .json(&json!({"model": "shop", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(ask("https://evil.example").await.unwrap().status(), 404);
    assert_eq!(ask("https://shop.example").await.unwrap().status(), 200);
    let shared = &server;
    let listed = |origin: &'static str| async move {
        let body: serde_json::Value = shared
            .http(reqwest::Method::GET, "/v1/models", Some("buyer"))
            .header("origin", origin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(!listed("https://evil.example")
        .await
        .contains(&"shop".to_owned()));
    assert!(listed("https://shop.example")
        .await
        .contains(&"shop".to_owned()));
    server.stop().await;
}

/// PROTOCOL.md: a session lives as long as its token, and a `hello` with a
/// fresh token for the same `sub` keeps it; any other `hello` closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_with_its_token_unless_a_hello_refreshes_it() {
    let server = TestServer::with_config(|c| c.auth.leeway_secs = 0).await;
    let now = skald::auth::now_secs();
    let short = token_with("u-t", |c| c.exp = now + 2);
    let mut lapsing = Client::connect(&server.url(), Some(&short)).await;
    assert_eq!(lapsing.recv().await["type"], "ready");
    let mut kept = Client::connect(&server.url(), None).await;
    kept.send(json!({"type":"hello","token":short})).await;
    assert_eq!(kept.recv().await["type"], "ready");
    kept.send(json!({"type":"hello","token":token("u-t")}))
        .await;

    let error = lapsing.recv().await;
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("expired"),
        "{error}"
    );
    assert_eq!(lapsing.closed().await, Closed::Code(4401));
    // Both tokens ran out at the same second; only the refreshed session
    // lives on, and serves.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    kept.send(json!({"type":"send","id":"k-1","text":"still here?"}))
        .await;
    assert_eq!(kept.recv().await["type"], "ack");

    let refusals = [
        ("another user", token("u-other")),
        ("a bad token", token_with("u-t", |c| c.exp = now - 60)),
    ];
    for (what, token) in refusals {
        let mut client = Client::connect(&server.url(), Some(&self::token("u-t"))).await;
        assert_eq!(client.recv().await["type"], "ready");
        client.send(json!({"type":"hello","token":token})).await;
        let error = client.recv().await;
        assert_eq!(error["code"], "unauthorized", "{what}: {error}");
        assert_eq!(client.closed().await, Closed::Code(4401), "{what}");
    }
    server.stop().await;
}
