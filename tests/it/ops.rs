//! Operations: Prometheus metrics, readiness while draining, a clean drain
//! on SIGTERM with nothing lost, and logs that hold no message text.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::spawned::{sigterm, wait_exit};
use crate::common::*;
use serde_json::json;

/// Parses Prometheus text format: every sample line is `name{labels} value`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let response = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    parse_metrics(&response.text().await.unwrap())
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_and_move_as_a_session_runs() {
    let _metrics = METRICS.lock().await;
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    let mut client = server.client("metered").await;
    let ack = send(&mut client, "1", None, "count me").await;
    let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
    client.send(json!({"type":"send","id":"2","text":""})).await;
    assert_eq!(client.recv().await["code"], "invalid_request");
    client.close().await;
    let moved_in =
        |after: &HashMap<String, f64>, series: &str| get(after, series) - get(&before, series);
    let after = eventually(
        "metrics never moved",
        Duration::from_millis(50),
        async || {
            let after = scrape(&server).await;
            let done = moved_in(
                &after,
                r#"skald_streams_finished_total{finish_reason="stop"}"#,
            ) >= 1.0
                && moved_in(&after, "skald_answers_stored_total") >= 1.0;
            done.then_some(after)
        },
    )
    .await;
    let moved = |series: &str| moved_in(&after, series);
    assert!(moved("skald_sessions_started_total") >= 1.0);
    assert!(moved("skald_streams_started_total") >= 1.0);
    assert!(moved(r#"skald_frames_sent_total{type="delta"}"#) >= result.deltas as f64);
    assert!(moved(r#"skald_frames_sent_total{type="ack"}"#) >= 1.0);
    assert!(moved(r#"skald_frames_received_total{type="send"}"#) >= 2.0);
    assert!(moved(r#"skald_refusals_total{code="invalid_request"}"#) >= 1.0);
    assert!(moved("skald_tokens_total") >= 20.0);
    assert!(get(&after, "skald_time_to_first_token_seconds_count") >= 1.0);
    assert!(
        get(
            &after,
            r#"skald_store_write_duration_seconds_count{op="begin_exchange"}"#
        ) >= 1.0
    );
    assert_eq!(
        get(&after, r#"skald_limits_backend_up{backend="embedded"}"#),
        1.0
    );
    // Label values are bounded: no user id anywhere.
    assert!(!after.keys().any(|k| k.contains("metered")));
    server.stop().await;
}

#[tokio::test]
async fn draining_turns_readyz_to_503_refuses_new_work_and_lets_streams_finish() {
    let mut server = TestServer::with_config(|c| {
        c.model.simulated_tokens_per_second = 20.0;
        c.model.simulated_answer_tokens = 30;
        c.drain_timeout_ms = 20_000;
    })
    .await;
    let mut client = server.client("drainee").await;
    let ack = send(&mut client, "1", None, "finish me").await;
    client.recv_type("delta").await;
    assert_eq!(server.get_json("/readyz", None).await.0, 200);
    server.begin_stop();
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        let (status, body) = server.get_json("/readyz", None).await;
        if status == 503 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["checks"]["draining"], true);
    // New messages are refused; the live stream goes on to its end.
    client
        .send(json!({"type":"send","id":"2","text":"too late"}))
        .await;
    let mut refused = false;
    let done = loop {
        let frame = client.recv().await;
        match frame["type"].as_str().unwrap() {
            "error" => {
                assert_eq!(frame["code"], "unavailable");
                refused = true;
            }
            "done" => break frame,
            _ => {}
        }
    };
    assert!(refused);
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["stream_id"], ack["stream_id"]);
    assert_eq!(client.closed().await, Closed::Code(1001));
}

/// The binary serving on a free port, with the simulated model and `toml`
/// settings in a configuration file (plus `env`); its stdout (the log)
/// goes to a channel.
struct Binary {
    child: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
    port: u16,
}

impl Binary {
    /// Starts it; returns once `/healthz` answers.
    async fn start(data: &std::path::Path, toml: &str, env: &[(&str, &str)]) -> Binary {
        let port = crate::common::redis_server::free_port();
        let config = data.join("skald.toml");
        std::fs::write(
            &config,
            // Top-level keys first: TOML puts everything after `[limits]` in it.
            format!("{toml}[limits]\naddress_requests_per_minute = 100000\nmax_connections_per_user = 1000\n"),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_skald"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SKALD_CONFIG", &config)
            .env("SKALD_DATA_DIR", data)
            .env("SKALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SKALD_JWT_SECRET", SECRET)
            .env("SKALD_DEMO", "0");
        for (k, v) in env {
            command.env(k, v);
        }
        command.stderr(Stdio::null());
        let (child, log) = crate::common::spawned::spawn_reading_stdout(command);
        wait_healthy(port).await;
        Binary { child, log, port }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.port)
    }

    /// A client as `user` (token on the upgrade) that has read its `ready`.
    async fn client(&self, user: &str) -> Client {
        let mut client = Client::connect(&self.url(), Some(&token(user))).await;
        client.recv().await;
        client
    }

    /// Waits until it exited after a SIGTERM; the exit must be a clean one.
    fn exits_cleanly(&mut self) {
        let status = wait_exit(&mut self.child, EXIT_WAIT);
        assert!(status.success(), "exit status {status}");
    }

    /// SIGTERM, and a clean exit: the log it wrote.
    fn stop(mut self) -> std::sync::mpsc::Receiver<String> {
        sigterm(&self.child);
        self.exits_cleanly();
        self.log
    }
}

/// How long a server may take to drain and exit after SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_fifty_streams_loses_nothing_and_exits_0() {
    let data = TempDir::new("drain");
    let mut binary = Binary::start(
        &data.0,
        "drain_timeout_ms = 30000\n",
        &[
            ("SKALD_SIMULATED_TOKENS_PER_SECOND", "20"),
            ("SKALD_SIMULATED_ANSWER_TOKENS", "30"),
        ],
    )
    .await;
    let url = binary.url();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::channel(64);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (url, acked_tx) = (url.clone(), acked_tx.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("drain-{i}");
            let mut client = Client::connect(&url, Some(&token(&user))).await;
            client.recv().await;
            let text = format!("stream {i}");
            let ack = send(&mut client, "1", None, &text).await;
            acked_tx.send(()).await.unwrap();
            let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
            assert_eq!(
                result.done["finish_reason"], "stop",
                "stream {i} finished within the drain window"
            );
            assert_eq!(client.closed().await, Closed::Code(1001));
            (
                user,
                ack["conversation_id"].as_str().unwrap().to_owned(),
                result.text,
            )
        }));
    }
    for _ in 0..50 {
        acked_rx.recv().await.unwrap();
    }
    sigterm(&binary.child);
    let mut finished = Vec::new();
    for task in tasks {
        finished.push(task.await.expect("every client got its done"));
    }
    binary.exits_cleanly();

    // Every accepted message and its answer were stored.
    let binary = Binary::start(&data.0, "", &[]).await;
    for (user, conversation, text) in finished {
        let body = messages_via_http(binary.port, &user, &conversation).await;
        assert_eq!(body["messages"][1]["content"].as_str().unwrap(), text);
        assert_eq!(body["messages"][1]["finish_reason"], "stop");
    }
    binary.stop();
}

#[tokio::test]
async fn a_drain_timeout_ends_streams_with_unavailable_and_keeps_their_text() {
    let data = TempDir::new("drain-timeout");
    let mut binary = Binary::start(
        &data.0,
        "drain_timeout_ms = 300\n",
        &[
            ("SKALD_SIMULATED_TOKENS_PER_SECOND", "20"),
            ("SKALD_SIMULATED_ANSWER_TOKENS", "400"),
        ],
    )
    .await;
    let mut client = binary.client("slowpoke").await;
    let ack = send(&mut client, "1", None, "a very long answer").await;
    client.recv_type("delta").await;
    sigterm(&binary.child);
    let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 1).await;
    assert_eq!(result.done["finish_reason"], "error");
    assert_eq!(result.done["error"]["code"], "unavailable");
    binary.exits_cleanly();
    let binary = Binary::start(&data.0, "", &[]).await;
    let conversation = ack["conversation_id"].as_str().unwrap();
    let body = messages_via_http(binary.port, "slowpoke", conversation).await;
    assert_eq!(body["messages"][1]["finish_reason"], "error");
    assert!(
        !body["messages"][1]["content"].as_str().unwrap().is_empty(),
        "the partial answer is kept"
    );
    binary.stop();
}

#[tokio::test]
async fn json_logs_of_a_session_hold_no_message_text() {
    let data = TempDir::new("logs");
    let binary = Binary::start(
        &data.0,
        "",
        &[
            ("SKALD_LOG_FORMAT", "json"),
            ("SKALD_LOG", "debug"),
            ("SKALD_SIMULATED_TOKENS_PER_SECOND", "0"),
        ],
    )
    .await;
    let mut client = binary.client("private").await;
    let secret = "my card number is 4970-1234-5678";
    let ack = send(&mut client, "1", None, secret).await;
    let answer = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
    client.close().await;
    let log = binary.stop();
    let lines: Vec<String> = log.try_iter().collect();
    assert!(lines.len() > 3, "the server logged: {lines:?}");
    for line in &lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed.get("level").is_some(), "{line}");
        assert!(
            !line.contains("4970-1234"),
            "message text in the log: {line}"
        );
        assert!(
            !line.contains(answer.text.trim()),
            "answer text in the log: {line}"
        );
    }
}

/// Every API response says not to cache or sniff it, unless its route says
/// otherwise (the widget is cached); the README lists these headers.
#[tokio::test]
async fn api_responses_are_not_cached_or_sniffed() {
    let server = TestServer::start().await;
    for (path, user) in [
        ("/v1/usage", Some("hedy")),
        ("/v1/conversations", Some("hedy")),
        ("/v1/usage", None),
        ("/readyz", None),
        ("/healthz", None),
        ("/metrics", None),
        ("/no/such/route", None),
    ] {
        let response = server
            .http(reqwest::Method::GET, path, user)
            .send()
            .await
            .unwrap();
        let h = response.headers();
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    let widget = server
        .http(reqwest::Method::GET, "/widget.js", None)
        .send()
        .await
        .unwrap();
    assert_ne!(widget.headers()["cache-control"], "no-store");
    assert_eq!(widget.headers()["x-content-type-options"], "nosniff");
    server.stop().await;
}

/// `metrics.token` closes `/metrics` to whoever lacks it; `metrics.listen`
/// moves it to an address of its own.
#[tokio::test]
async fn metrics_can_require_a_token_and_listen_apart() {
    let server =
        TestServer::with_config(|c| c.metrics.token = Some("scrape-me-scrape-me".into())).await;
    let url = format!("http://{}/metrics", server.addr);
    let client = reqwest::Client::new();
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(client.get(&url)).await, 401);
    assert_eq!(status(client.get(&url).bearer_auth("scrape-me")).await, 401);
    let refused = client.get(&url).send().await.unwrap();
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        status(client.get(&url).bearer_auth("scrape-me-scrape-me")).await,
        200
    );
    server.stop().await;

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    let server = TestServer::with_config(move |c| c.metrics.listen = Some(metrics_addr)).await;
    assert_eq!(
        status(client.get(format!("http://{}/metrics", server.addr))).await,
        404,
        "no longer on the main listener"
    );
    let apart = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(apart.status(), 200);
    assert!(apart.text().await.unwrap().contains("skald_"));
    server.stop().await;
}
