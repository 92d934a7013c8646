//! The load-test harness against the real server: a short, bounded run
//! through Skald with the mock upstream in measurement mode. It proves the
//! harness and the server agree on the protocol; it asserts on counts only,
//! never on time (the figures themselves are benchmarks: docs/benchmarks.md).

use crate::common::{TestServer, SECRET};
use skald_loadtest::mock_upstream::{MockConfig, MockUpstream, STAMPED_MODEL};
use skald_loadtest::{run, RunConfig};

#[tokio::test]
async fn a_short_bounded_load_through_skald_measures_every_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = MockUpstream::start(
        listener,
        MockConfig {
            tokens_per_second: 100.0,
            answer_tokens: 10,
        },
    )
    .await
    .unwrap();
    let base_url = mock.base_url();
    let server = TestServer::with_config(move |c| {
        c.model.upstream_url = Some(base_url.parse().unwrap());
        c.model.upstream_api_key = Some("sk-test".into());
        c.model.upstream_model = STAMPED_MODEL.into();
    })
    .await;

    let mut load = RunConfig::new(server.url(), SECRET);
    load.sessions = 8;
    load.messages_per_session = 2;
    load.ramp_per_second = 50.0;
    load.max_duration_s = 60;
    // Twice, with the same users: the second run must get fresh answers,
    // not the first run's replayed (`send.id` is an idempotency key per user).
    for round in 1..=2u64 {
        let report = run(load.clone()).await.unwrap();
        assert!(report.errors.is_empty(), "{}", report.table());
        assert_eq!(report.sessions_connected, 8);
        assert_eq!(report.messages_done, 16);
        // Every token the mock sent reached a client with its stamp, once.
        assert_eq!(mock.stats().tokens_sent, round * 16 * 10);
        assert_eq!(report.stamped_tokens, 16 * 10);
        assert_eq!(report.latency["send_to_ack"].count, 16);
        assert_eq!(report.latency["send_to_first_delta"].count, 16);
        // The first stamp of each answer dates the upstream request.
        assert_eq!(report.latency["send_to_upstream"].count, 16);
        assert_eq!(report.latency["added_per_token"].count, 160);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_held_connection_storm_keeps_every_session_open() {
    let _metrics = crate::common::METRICS.lock().await;
    let server = TestServer::builder().start().await;
    let mut load = RunConfig::new(server.url(), SECRET);
    load.sessions = 30;
    load.messages_per_session = 0;
    load.ramp_per_second = 100.0;
    load.hold_s = 1;
    load.max_duration_s = 30;
    let holding = tokio::spawn(run(load));
    // While the storm holds its sessions, the server has them all open
    // (the metrics lock keeps other servers from setting the gauge).
    let mut open = String::new();
    for _ in 0..250 {
        let metrics = server
            .http(reqwest::Method::GET, "/metrics", None)
            .send()
            .await;
        let text = metrics.unwrap().text().await.unwrap();
        open = text
            .lines()
            .find_map(|l| l.strip_prefix("skald_sessions_open "))
            .unwrap_or_default()
            .to_owned();
        if open == "30" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(open, "30", "sessions open while the storm holds them");
    let report = holding.await.unwrap().unwrap();
    assert!(report.errors.is_empty(), "{}", report.table());
    assert_eq!(report.sessions_connected, 30);
    assert_eq!(report.latency["connect"].count, 30);
    assert_eq!(report.messages_sent, 0);
    server.stop().await;
}
