//! The load-test harness against the real server: a short, bounded run
//! through Skald with the mock upstream in measurement mode. It proves the
//! harness and the server agree on the protocol; it asserts on counts only,
//! never on time (the figures themselves are benchmarks: docs/benchmarks.md).

mod common;

use common::{TestServer, SECRET};
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
    let server = TestServer::builder()
        .config(move |c| {
            c.model.upstream_url = Some(base_url);
            c.model.upstream_api_key = Some("sk-test".into());
            c.model.upstream_model = STAMPED_MODEL.into();
        })
        .start()
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
        assert_eq!(report.latency["added_per_token"].count, 160);
    }
    server.stop().await;
}
