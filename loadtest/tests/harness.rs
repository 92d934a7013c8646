//! The harness end to end, in-process: the mock upstream in measurement mode,
//! the baseline relay in front of it, and a short bounded `run` against it.
//! Nothing here asserts on time: only on what was counted and delivered.

use skald_loadtest::idle::{self, IdleConfig};
use skald_loadtest::mock_upstream::{MockUpstream, STAMPED_MODEL};
use skald_loadtest::relay::{self, RelayConfig};
use skald_loadtest::{run, RunConfig};
use tokio::net::TcpListener;

async fn mock_and_relay(tokens_per_second: f64, answer_tokens: u32) -> (MockUpstream, String) {
    let mock = MockUpstream::on_loopback(tokens_per_second, answer_tokens)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
    relay::spawn(
        listener,
        RelayConfig {
            upstream_url: mock.base_url(),
            model: STAMPED_MODEL.into(),
        },
    );
    (mock, url)
}

#[tokio::test]
async fn a_short_run_through_the_baseline_relay_measures_every_token() {
    let (mock, url) = mock_and_relay(200.0, 8).await;
    let mut config = RunConfig::new(url, "unused");
    config.sessions = 6;
    config.messages_per_session = 2;
    config.ramp_per_second = 100.0;
    config.max_duration_s = 30;
    let report = run(config).await.unwrap();

    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.sessions_connected, 6);
    assert_eq!(report.messages_sent, 12);
    assert_eq!(report.messages_done, 12);
    // Every token the mock sent was stamped, relayed and measured once.
    assert_eq!(mock.stats().tokens_sent, 12 * 8);
    assert_eq!(report.stamped_tokens, 12 * 8);
    let figure = |key| report.latency[key].count;
    assert_eq!(figure("connect"), 6);
    assert_eq!(figure("send_to_ack"), 12);
    assert_eq!(figure("send_to_first_delta"), 12);
    assert_eq!(figure("added_per_token"), 96);
    assert_eq!(figure("inter_delta_gap"), report.deltas - 12);
    let added = report.latency["added_per_token"];
    assert!(added.p50_us <= added.p99_us && added.p99_us <= added.max_us);
    // Frames: ready + ack + deltas + done per message, in; one send per message, out.
    assert_eq!(report.frames_in, 6 + 12 * 2 + report.deltas);
    assert_eq!(report.frames_out, 12);
    assert!(report.table().contains("server-added latency per token"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["load"]["sessions"], 6);
    assert!(
        json["load"].get("secret").is_none(),
        "the secret stays out of reports"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_counted_not_hung() {
    // A port nobody listens on: every session fails to connect, quickly.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
    drop(listener);
    let mut config = RunConfig::new(url, "s");
    config.sessions = 3;
    config.max_duration_s = 20;
    let report = run(config).await.unwrap();
    assert_eq!(report.sessions_connected, 0);
    assert_eq!(
        report.errors.values().sum::<u64>(),
        3,
        "{:?}",
        report.errors
    );
}

#[tokio::test]
async fn idle_sessions_are_held_and_measured() {
    let (_mock, url) = mock_and_relay(0.0, 1).await;
    let report = idle::idle(IdleConfig {
        url,
        secret: "unused".into(),
        sessions: 20,
        concurrency: 5,
        hold_s: 0,
        settle_s: 0,
        // The relay runs in this process: measure ourselves.
        server_pid: Some(std::process::id()),
        processes: 1,
        source_offset: 0,
        user_prefix: "idle".into(),
    })
    .await
    .unwrap();
    assert_eq!((report.open, report.failed), (20, 0));
    assert!(report.kib_per_session.is_some());
}
