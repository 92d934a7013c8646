//! Rate limits and quotas through the real server, on both backends: the
//! in-process one, and Redis (real `redis-server` processes started here).
//! Then what only Redis can show: two instances sharing one limit, and
//! Redis failing and coming back.

use std::sync::Arc;
use std::time::Duration;

use crate::common::redis_server::RedisServer;
use crate::common::*;
use serde_json::{json, Value};
use skald::config::Config;
use skald_actors::limits::guard::FailurePolicy;
use skald_actors::settings::{BotSettings, LimitOverride};
use skald_actors::time::OffsetClock;

/// Which backend a test runs on. The Redis server lives as long as this.
enum Backend {
    Local,
    Redis(RedisServer),
}

impl Backend {
    fn both() -> Vec<Backend> {
        vec![Backend::Local, Backend::Redis(RedisServer::start())]
    }

    fn apply(&self, config: &mut Config) {
        if let Backend::Redis(redis) = self {
            config.redis.url = Some(redis.url().as_str().into());
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Local => "in-process",
            Backend::Redis(_) => "redis",
        }
    }
}

async fn server(backend: &Backend, f: impl FnOnce(&mut Config)) -> TestServer {
    let mut builder = TestServer::builder();
    backend.apply(&mut builder.config);
    f(&mut builder.config);
    builder.start().await
}

async fn http_get(server: &TestServer, path: &str, user: &str) -> (u16, Value, Option<String>) {
    http_get_with(server, path, user, &[]).await
}

/// `http_get` with these extra headers.
async fn http_get_with(
    server: &TestServer,
    path: &str,
    user: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new()
        .get(format!("http://{}{path}", server.addr))
        .bearer_auth(token(user));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap_or(Value::Null), retry)
}

/// Sends and returns the first frame answering it (`ack` or `error`).
async fn try_send(client: &mut Client, id: &str, extra: Value) -> Value {
    let mut frame = json!({"type":"send","id":id,"text":format!("message {id}")});
    if let (Some(f), Some(e)) = (frame.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    client.send(frame).await;
    loop {
        let answer = client.recv().await;
        if answer["id"] == id && matches!(answer["type"].as_str(), Some("ack" | "error")) {
            return answer;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_per_minute_are_exact_per_user_and_per_bot() {
    for backend in Backend::both() {
        let server = server(&backend, |c| {
            c.limits.messages_per_minute = 3;
            c.bots.insert(
                "strict".into(),
                BotSettings {
                    messages_per_minute: Some(1),
                    ..BotSettings::default()
                },
            );
        })
        .await;
        let mut alice = server.client("alice").await;
        for i in 0..3 {
            assert_eq!(
                try_send(&mut alice, &format!("m{i}"), json!({})).await["type"],
                "ack",
                "{}",
                backend.name()
            );
        }
        let refused = try_send(&mut alice, "m3", json!({})).await;
        assert_eq!(refused["code"], "rate_limited", "{}", backend.name());
        let retry = refused["retry_after_ms"].as_u64().unwrap();
        assert!(retry > 0 && retry <= 20_000, "retry_after_ms {retry}");
        // The refused message took nothing from the quota: the reservation
        // made alongside its rate check was given back.
        let usage = poll_usage(&server, "alice", |u| u["requests_used"] == 3).await;
        let left = usage["tokens_limit"].as_u64().unwrap() - usage["tokens_used"].as_u64().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut again = Client::connect(&server.url(), Some(&token("alice"))).await;
            let ready = again.recv().await;
            if ready["limits"]["tokens_remaining"].as_u64() == Some(left) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a reservation was kept: {ready} ({})",
                backend.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Users are isolated.
        let mut bob = server.client("bob").await;
        assert_eq!(try_send(&mut bob, "b0", json!({})).await["type"], "ack");
        // A bot's own, stricter limit.
        let mut carol = server.client("carol").await;
        assert_eq!(
            try_send(&mut carol, "c0", json!({"bot":"strict"})).await["type"],
            "ack"
        );
        assert_eq!(
            try_send(&mut carol, "c1", json!({"bot":"strict"})).await["code"],
            "rate_limited"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_every_token_of_every_done() {
    for backend in Backend::both() {
        let server = server(&backend, |c| {
            c.limits.monthly_requests = 3;
            c.limits.users.insert(
                "vip".into(),
                LimitOverride {
                    monthly_requests: Some(5),
                    ..LimitOverride::default()
                },
            );
        })
        .await;
        let mut dan = server.client("dan").await;
        let mut total = 0;
        for i in 0..3 {
            let ack = try_send(&mut dan, &format!("q{i}"), json!({})).await;
            assert_eq!(ack["type"], "ack", "{}: {ack}", backend.name());
            let result = collect_stream(&mut dan, ack["stream_id"].as_str().unwrap(), 0).await;
            total += result.done["usage"]["prompt_tokens"].as_u64().unwrap()
                + result.done["usage"]["completion_tokens"].as_u64().unwrap();
        }
        let refused = try_send(&mut dan, "q3", json!({})).await;
        assert_eq!(refused["code"], "quota_exceeded", "{}", backend.name());
        // Settles are asynchronous: poll the usage API until it has them all.
        let usage = poll_usage(&server, "dan", |u| u["requests_used"] == 3).await;
        assert_eq!(
            usage["tokens_used"].as_u64().unwrap(),
            total,
            "{}",
            backend.name()
        );
        assert_eq!(usage["requests_limit"], 3);
        assert_eq!(usage["tokens_limit"], 100_000);
        assert_eq!(
            usage["month"],
            skald_actors::time::Month::of(skald_actors::time::now_ms()).to_string()
        );
        // A new session is told what is left.
        let mut again = Client::connect(&server.url(), Some(&token("dan"))).await;
        let ready = again.recv().await;
        assert_eq!(
            ready["limits"]["tokens_remaining"].as_u64().unwrap(),
            100_000 - total
        );
        // A user's override wins.
        let (_, vip, _) = http_get(&server, "/v1/usage", "vip").await;
        assert_eq!(vip["requests_limit"], 5);
        server.stop().await;
    }
}

async fn poll_usage(server: &TestServer, user: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body, _) = http_get(server, "/v1/usage", user).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "usage never reached: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_token_quota_shrinks_the_answer_then_refuses() {
    for backend in Backend::both() {
        let server = server(&backend, |c| {
            c.limits.monthly_tokens = 30;
            c.model.simulated_answer_tokens = 100;
        })
        .await;
        let mut eve = server.client("eve").await;
        let ack = try_send(&mut eve, "t0", json!({})).await;
        assert_eq!(ack["type"], "ack", "{}: {ack}", backend.name());
        let result = collect_stream(&mut eve, ack["stream_id"].as_str().unwrap(), 0).await;
        assert_eq!(
            result.done["finish_reason"], "length",
            "cut to what the month has left"
        );
        let usage = result.done["usage"].clone();
        let spent =
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
        assert!(
            spent <= 30 + 5,
            "at most the quota plus the prompt estimate error: {usage}"
        );
        poll_usage(&server, "eve", |u| u["requests_used"] == 1).await;
        assert_eq!(
            try_send(&mut eve, "t1", json!({})).await["code"],
            "quota_exceeded"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_and_requests_per_address_are_limited() {
    for backend in Backend::both() {
        let server = server(&backend, |c| c.limits.max_connections_per_user = 2).await;
        let _one = server.client("fred").await;
        let two = server.client("fred").await;
        let mut three = Client::connect(&server.url(), Some(&token("fred"))).await;
        assert_eq!(
            three.recv().await["code"],
            "rate_limited",
            "{}",
            backend.name()
        );
        assert_eq!(three.closed().await, Closed::Code(4429));
        // Closing one frees its slot.
        two.close().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut again = Client::connect(&server.url(), Some(&token("fred"))).await;
            if again.recv().await["type"] == "ready" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "slot never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.stop().await;

        let server = self::server(&backend, |c| c.limits.address_requests_per_minute = 3).await;
        for _ in 0..2 {
            assert_eq!(http_get(&server, "/v1/usage", "gil").await.0, 200);
        }
        let _ws = server.client("gil").await;
        let (status, body, retry) = http_get(&server, "/v1/usage", "gil").await;
        assert_eq!(status, 429, "{}", backend.name());
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
        match Client::try_connect(&server.url(), Some(&token("gil")), None).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429)
            }
            _ => panic!("upgrade over the address limit must be refused with 429"),
        }
        server.stop().await;
    }
}

/// One request from `server`'s loopback peer, saying it forwards `client`
/// (after a hop the client wrote itself); its status and body.
async fn forwarded_get(server: &TestServer, path: &str, user: &str, client: &str) -> (u16, Value) {
    let hops = format!("198.51.100.250, {client}");
    let (status, body, _) = http_get_with(server, path, user, &[("x-forwarded-for", &hops)]).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_counted_and_audited_apart() {
    let behind_proxy = |c: &mut Config| {
        c.limits.address_requests_per_minute = 2;
        c.trusted_proxies = serde_json::from_value(json!(["127.0.0.0/8"])).unwrap();
    };
    let server = server(&Backend::Local, behind_proxy).await;
    for _ in 0..2 {
        assert_eq!(
            forwarded_get(&server, "/v1/usage", "ida", "203.0.113.1")
                .await
                .0,
            200
        );
    }
    assert_eq!(
        forwarded_get(&server, "/v1/usage", "ida", "203.0.113.1")
            .await
            .0,
        429
    );
    // Another client of the same proxy has a bucket of its own, on HTTP
    // and on the WebSocket upgrade, and the audit log records its address.
    assert_eq!(
        forwarded_get(&server, "/v1/export", "ida", "203.0.113.2")
            .await
            .0,
        200
    );
    let bearer = format!("Bearer {}", token("ida"));
    let upgrade = |client: &'static str| {
        let (url, bearer) = (server.url(), bearer.clone());
        async move {
            let hops = format!("203.0.113.77, {client}");
            let headers = [
                ("authorization", bearer.as_str()),
                ("x-forwarded-for", &hops),
            ];
            Client::try_connect_with(&url, &headers).await
        }
    };
    match upgrade("203.0.113.1").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        _ => panic!("the forwarded address is over its limit: its upgrade must be refused"),
    }
    let mut ws = upgrade("203.0.113.2")
        .await
        .expect("a second request of 203.0.113.2");
    assert_eq!(ws.recv().await["type"], "ready");
    // The audit record is written behind the answer: export again (from
    // fresh addresses, each with its own bucket) until it shows.
    let deadline = tokio::time::Instant::now() + WAIT;
    for i in 10.. {
        let (_, export) =
            forwarded_get(&server, "/v1/export", "ida", &format!("203.0.113.{i}")).await;
        let addresses: Vec<&str> = export["audit"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "exported")
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert!(
            addresses.iter().all(|a| a.starts_with("203.0.113.")),
            "only forwarded addresses are audited: {addresses:?}"
        );
        if addresses.contains(&"203.0.113.2") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{export}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;

    // Without the proxy on the list, the header is the client's word and
    // is ignored: every forwarded address shares the peer's bucket.
    let server = self::server(&Backend::Local, |c| {
        c.limits.address_requests_per_minute = 2
    })
    .await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            forwarded_get(&server, "/v1/usage", "ida", client).await.0,
            200
        );
    }
    assert_eq!(
        forwarded_get(&server, "/v1/usage", "ida", "203.0.113.3")
            .await
            .0,
        429
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_roll_over_with_the_utc_month() {
    for backend in Backend::both() {
        let clock = Arc::new(OffsetClock::default());
        let mut builder = TestServer::builder();
        backend.apply(&mut builder.config);
        builder.config.limits.monthly_requests = 1;
        let server = builder.clock(clock.clone()).start().await;
        let mut hal = server.client("hal").await;
        assert_eq!(try_send(&mut hal, "r0", json!({})).await["type"], "ack");
        let month = poll_usage(&server, "hal", |u| u["requests_used"] == 1).await["month"].clone();
        assert_eq!(
            try_send(&mut hal, "r1", json!({})).await["code"],
            "quota_exceeded"
        );
        let now = skald_actors::time::now_ms();
        clock.advance_ms(skald_actors::time::Month::of(now).next_start_ms() - now + 1_000);
        assert_eq!(
            try_send(&mut hal, "r2", json!({})).await["type"],
            "ack",
            "{}",
            backend.name()
        );
        let next = poll_usage(&server, "hal", |u| u["requests_used"] == 1).await;
        assert_ne!(next["month"], month);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_every_limit() {
    let redis = Backend::Redis(RedisServer::start());
    let configure = |c: &mut Config| {
        c.limits.messages_per_minute = 1_000;
        c.limits.monthly_requests = 10;
        c.limits.max_connections_per_user = 100;
        c.model.simulated_tokens_per_second = 0.0;
    };
    let a = server(&redis, configure).await;
    let b = server(&redis, configure).await;
    // 30 concurrent sends across both instances against 10 requests.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let url = if i % 2 == 0 { a.url() } else { b.url() };
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url, Some(&token("crowd"))).await;
            assert_eq!(client.recv().await["type"], "ready");
            try_send(&mut client, &format!("s{i}"), json!({})).await["type"] == "ack"
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += usize::from(task.await.unwrap());
    }
    assert_eq!(accepted, 10, "exactly the quota, across two instances");
    // A rate limit is one limit across instances too.
    let limited = |c: &mut Config| {
        c.limits.messages_per_minute = 4;
    };
    let c = server(&redis, limited).await;
    let d = server(&redis, limited).await;
    let mut on_c = c.client("rita").await;
    let mut on_d = d.client("rita").await;
    let mut acks = 0;
    for i in 0..6 {
        let client = if i % 2 == 0 { &mut on_c } else { &mut on_d };
        acks += usize::from(try_send(client, &format!("x{i}"), json!({})).await["type"] == "ack");
    }
    assert_eq!(acks, 4);
    // So is the number of a user's open connections.
    let two_each = |c: &mut Config| c.limits.max_connections_per_user = 2;
    let e = server(&redis, two_each).await;
    let f = server(&redis, two_each).await;
    let _on_e = e.client("connie").await;
    let _on_f = f.client("connie").await;
    for third in [&e, &f] {
        let mut client = Client::connect(&third.url(), Some(&token("connie"))).await;
        assert_eq!(client.recv().await["code"], "rate_limited");
        assert_eq!(client.closed().await, Closed::Code(4429));
    }
    for s in [a, b, c, d, e, f] {
        s.stop().await;
    }
}

async fn readyz(server: &TestServer) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}/readyz", server.addr))
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_then_reconciles_every_token() {
    let mut redis_server = RedisServer::start();
    let url = redis_server.url();
    let server = TestServer::with_config(|c| {
        c.redis.url = Some(url.clone().as_str().into());
        c.model.simulated_tokens_per_second = 0.0;
    })
    .await;
    let mut ida = server.client("ida").await;
    let ack = try_send(&mut ida, "before", json!({})).await;
    let before = collect_stream(&mut ida, ack["stream_id"].as_str().unwrap(), 0).await;
    poll_usage(&server, "ida", |u| u["requests_used"] == 1).await;

    redis_server.stop();
    // Every send is still answered, within a bounded time, and accepted.
    let mut during_tokens = 0;
    for i in 0..3 {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            try_send(&mut ida, &format!("during{i}"), json!({})),
        )
        .await
        .expect("a send is answered in bounded time while Redis is down");
        assert_eq!(answer["type"], "ack", "fail open: {answer}");
        let result = collect_stream(&mut ida, answer["stream_id"].as_str().unwrap(), 0).await;
        during_tokens += result.done["usage"]["prompt_tokens"].as_u64().unwrap()
            + result.done["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 200, "fail-open keeps serving: {body}");
    assert_eq!(body["checks"]["limits"]["status"], "down");

    redis_server.restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = readyz(&server).await;
        if body["checks"]["limits"]["status"] == "ok" {
            assert_eq!(status, 200);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never seen back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Redis restarted empty (no persistence in this test), so what it holds
    // now is exactly what was spent while it was down: the ledger.
    let usage = poll_usage(&server, "ida", |u| u["requests_used"] == 3).await;
    assert_eq!(usage["tokens_used"].as_u64().unwrap(), during_tokens);
    assert!(before.done["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_when_configured() {
    let mut redis_server = RedisServer::start();
    let url = redis_server.url();
    let server = TestServer::with_config(|c| {
        c.redis.url = Some(url.clone().as_str().into());
        c.redis.failure_policy = FailurePolicy::Closed;
    })
    .await;
    let mut jon = server.client("jon").await;
    assert_eq!(try_send(&mut jon, "ok", json!({})).await["type"], "ack");
    redis_server.stop();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        try_send(&mut jon, "refused", json!({})),
    )
    .await
    .expect("answered in bounded time");
    assert_eq!(answer["code"], "unavailable");
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    redis_server.restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut i = 0;
    loop {
        i += 1;
        if try_send(&mut jon, &format!("retry{i}"), json!({})).await["type"] == "ack" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(readyz(&server).await.0, 200);
    server.stop().await;
}

/// Defect: `DELETE /v1/me` handed a user at `quota_exceeded` a fresh
/// month. Erasure removes personal data, not the usage counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_yourself_does_not_reset_the_quota() {
    for backend in Backend::both() {
        let server = server(&backend, |c| c.limits.monthly_requests = 2).await;
        let mut eve = server.client("eve").await;
        for i in 0..2 {
            let ack = try_send(&mut eve, &format!("e{i}"), json!({})).await;
            assert_eq!(ack["type"], "ack", "{}: {ack}", backend.name());
            collect_stream(&mut eve, ack["stream_id"].as_str().unwrap(), 0).await;
        }
        poll_usage(&server, "eve", |u| u["requests_used"] == 2).await;
        let refused = try_send(&mut eve, "e2", json!({})).await;
        assert_eq!(refused["code"], "quota_exceeded", "{}", backend.name());
        let erased = server
            .http(reqwest::Method::DELETE, "/v1/me", Some("eve"))
            .send()
            .await
            .unwrap();
        assert_eq!(erased.status(), 204);
        let mut eve = server.client("eve").await;
        for i in 3..6 {
            let refused = try_send(&mut eve, &format!("e{i}"), json!({})).await;
            assert_eq!(
                refused["code"],
                "quota_exceeded",
                "{}: after erasure, {refused}",
                backend.name()
            );
        }
        let (_, usage, _) = http_get(&server, "/v1/usage", "eve").await;
        assert_eq!(usage["requests_used"], 2, "{}", backend.name());
        server.stop().await;
    }
}

/// Defect: the default (in-process) limits forgot the month's usage at
/// every restart. The embedded default keeps it in the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_quota_survives_a_restart() {
    let dir = TempDir::new("quota-restart");
    let start = || {
        let mut builder = TestServer::builder().data_dir(&dir.0);
        builder.config.limits.monthly_requests = 3;
        builder.start()
    };
    let server = start().await;
    let mut kai = server.client("kai").await;
    let ack = try_send(&mut kai, "k0", json!({})).await;
    let result = collect_stream(&mut kai, ack["stream_id"].as_str().unwrap(), 0).await;
    let spent = result.done["usage"]["prompt_tokens"].as_u64().unwrap()
        + result.done["usage"]["completion_tokens"].as_u64().unwrap();
    let before = poll_usage(&server, "kai", |u| u["requests_used"] == 1).await;
    assert_eq!(before["tokens_used"].as_u64(), Some(spent));
    server.stop().await;

    let server = start().await;
    let (_, after, _) = http_get(&server, "/v1/usage", "kai").await;
    assert_eq!(after["requests_used"], 1, "{after}");
    assert_eq!(after["tokens_used"].as_u64(), Some(spent), "{after}");
    let mut kai = server.client("kai").await;
    for i in 1..3 {
        let ack = try_send(&mut kai, &format!("k{i}"), json!({})).await;
        collect_stream(&mut kai, ack["stream_id"].as_str().unwrap(), 0).await;
    }
    let refused = try_send(&mut kai, "k3", json!({})).await;
    assert_eq!(
        refused["code"], "quota_exceeded",
        "three in the month, restart or not"
    );
    server.stop().await;
}
