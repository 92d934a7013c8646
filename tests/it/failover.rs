//! Named upstreams tried in a bot's order: a real server in front of two
//! load-test mock upstreams (each counts what it is asked), a primary that
//! fails in each way upstreams fail before their first token, and a backup
//! that answers; no failover after the first token; a primary that keeps
//! failing cooled down (skipped, visible in `/readyz` and `/metrics`).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use skald::config::UpstreamConfig;
use skald_actors::settings::BotSettings;
use skald_loadtest::mock_upstream::{answer_text, MockUpstream};

use crate::common::*;

fn upstream(url: &str, model: &str) -> UpstreamConfig {
    UpstreamConfig {
        url: url.parse().unwrap(),
        api_key: None,
        model: model.into(),
        connect_timeout_ms: 2_000,
        first_token_timeout_ms: 400,
    }
}

/// A server whose bot `b` tries `primary` (at `primary_url`, model
/// `primary_model`), then `backup` (the mock's ordinary answers).
async fn server(
    primary_url: &str,
    primary_model: &str,
    backup: &MockUpstream,
    f: impl FnOnce(&mut skald::config::Config),
) -> TestServer {
    let upstreams = BTreeMap::from([
        ("primary".to_owned(), upstream(primary_url, primary_model)),
        (
            "backup".to_owned(),
            upstream(&backup.base_url(), "mock-normal"),
        ),
    ]);
    TestServer::with_config(move |c| {
        c.upstreams = upstreams;
        c.bots.insert(
            "b".into(),
            BotSettings {
                upstreams: vec!["primary".into(), "backup".into()],
                ..BotSettings::default()
            },
        );
        // The default bot must name a configured upstream too.
        c.bots.get_mut("default").unwrap().upstreams = vec!["backup".into()];
        f(c);
    })
    .await
}

async fn ask(client: &mut Client, id: &str, text: &str) -> (Value, StreamResult) {
    client
        .send(json!({"type":"send","id":id,"bot":"b","text":text}))
        .await;
    let ack = client.recv_type("ack").await;
    let result = collect_stream(client, ack["stream_id"].as_str().unwrap(), 0).await;
    (ack, result)
}

async fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

/// Refused, 500, 429, silent past its first-token timeout: before any
/// token, the backup answers and the user sees nothing of it.
#[tokio::test]
async fn every_failure_before_the_first_token_is_answered_by_the_next_upstream() {
    let primary = mock_upstream(0.0, 5).await;
    let backup = mock_upstream(0.0, 5).await;
    let refused = closed_port_url().await;
    for (url, model) in [
        (refused.as_str(), "mock-normal"),
        (primary.base_url().as_str(), "mock-error-500"),
        (primary.base_url().as_str(), "mock-error-429-1"),
        (primary.base_url().as_str(), "mock-hang"),
        (primary.base_url().as_str(), "mock-slow-first-2000"),
    ] {
        let server = server(url, model, &backup, |_| {}).await;
        let mut client = server.client("failover").await;
        let asked_before = backup.stats().requests;
        let (_, result) = ask(&mut client, "f", "who answers?").await;
        assert_eq!(
            result.done["finish_reason"], "stop",
            "{model}: {}",
            result.done
        );
        assert_eq!(result.text, answer_text("who answers?", 5), "{model}");
        assert_eq!(backup.stats().requests, asked_before + 1, "{model}");
        server.stop().await;
    }
    primary.shutdown().await;
    backup.shutdown().await;
}

/// After the first token a failure ends the stream: no text twice.
#[tokio::test]
async fn no_failover_after_the_first_token() {
    let primary = mock_upstream(0.0, 10).await;
    let backup = mock_upstream(0.0, 5).await;
    let server = server(&primary.base_url(), "mock-drop-after-3", &backup, |_| {}).await;
    let mut client = server.client("no-failover").await;
    let (_, result) = ask(&mut client, "d", "drop me").await;
    assert_eq!(result.done["finish_reason"], "error", "{}", result.done);
    assert_eq!(result.done["error"]["code"], "upstream_error");
    assert_eq!(result.text, answer_text("drop me", 3));
    assert_eq!(backup.stats().requests, 0);
    server.stop().await;
    primary.shutdown().await;
    backup.shutdown().await;
}

/// A refusal of the request itself (a 4xx other than 429) is not tried
/// elsewhere, and the client gets the status, not the provider's words.
#[tokio::test]
async fn a_refused_request_is_not_failed_over_and_its_body_is_not_echoed() {
    let backup = mock_upstream(0.0, 5).await;
    // The mock answers 404 (a JSON error body) to a path it does not serve.
    let wrong_path = format!("{}/nothing-here", backup.base_url());
    let server = server(&wrong_path, "mock-normal", &backup, |_| {}).await;
    let mut client = server.client("refused").await;
    let (_, result) = ask(&mut client, "r", "hello").await;
    assert_eq!(
        result.done["error"]["code"], "upstream_error",
        "{}",
        result.done
    );
    assert_eq!(backup.stats().requests, 0, "not tried elsewhere");
    server.stop().await;
    backup.shutdown().await;
}

/// A primary that keeps failing is skipped for the cool-down: asked
/// `cooldown_after_failures` times, then left alone while the backup
/// answers; `/readyz` says so and stays ready; `/metrics` counts it all.
#[tokio::test]
async fn a_primary_that_keeps_failing_cools_down() {
    let primary = mock_upstream(0.0, 5).await;
    let backup = mock_upstream(0.0, 5).await;
    let server = server(&primary.base_url(), "mock-error-503", &backup, |c| {
        c.model.cooldown_after_failures = 2;
        c.model.cooldown_ms = 60_000;
    })
    .await;
    let mut client = server.client("cooling").await;
    for i in 0..5 {
        let (_, result) = ask(&mut client, &format!("c{i}"), "again").await;
        assert_eq!(result.done["finish_reason"], "stop", "{}", result.done);
    }
    assert_eq!(primary.stats().requests, 2, "skipped after two failures");
    assert_eq!(backup.stats().requests, 5);
    let (status, ready) = server.get_json("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["checks"]["upstreams"]["primary"], "cooling_down",
        "{ready}"
    );
    assert_eq!(ready["checks"]["upstreams"]["backup"], "ok", "{ready}");
    let metrics = server.metrics().await;
    for series in [
        "skald_upstream_skipped_total{upstream=\"primary\"}",
        "skald_upstream_failures_total{upstream=\"primary\"}",
        "skald_upstream_requests_total{upstream=\"backup\"}",
    ] {
        assert!(metrics.contains(series), "{series} in /metrics");
    }
    server.stop().await;
    primary.shutdown().await;
    backup.shutdown().await;
}

/// A 429 with `Retry-After` is honoured at once: the primary is left alone
/// for that long, from its first refusal, while the backup answers.
#[tokio::test]
async fn a_retry_after_is_honoured_from_the_first_refusal() {
    let primary = mock_upstream(0.0, 5).await;
    let backup = mock_upstream(0.0, 5).await;
    let server = server(&primary.base_url(), "mock-error-429-30", &backup, |c| {
        c.model.cooldown_after_failures = 100;
    })
    .await;
    let mut client = server.client("patient").await;
    for i in 0..3 {
        let (_, result) = ask(&mut client, &format!("w{i}"), "later").await;
        assert_eq!(result.done["finish_reason"], "stop", "{}", result.done);
    }
    assert_eq!(primary.stats().requests, 1, "asked once, then left alone");
    let (_, ready) = server.get_json("/readyz", None).await;
    assert_eq!(
        ready["checks"]["upstreams"]["primary"], "cooling_down",
        "{ready}"
    );
    server.stop().await;
    primary.shutdown().await;
    backup.shutdown().await;
}
