//! The `openai` load generator against the mock upstream over loopback: what
//! it counts on normal streams, and how each failure is classified.

use skald_loadtest::mock_upstream::MockUpstream;
use skald_loadtest::openai::{self, OpenAiLoad};
use tokio::net::TcpListener;

async fn mock(tokens_per_second: f64, answer_tokens: u32) -> MockUpstream {
    MockUpstream::on_loopback(tokens_per_second, answer_tokens)
        .await
        .unwrap()
}

fn load(mock: &MockUpstream, model: &str, concurrency: u64, requests: u64) -> OpenAiLoad {
    let mut load = OpenAiLoad::new(mock.base_url(), model);
    load.label = "mock".into();
    load.concurrency = concurrency;
    load.requests = requests;
    load.max_duration_s = 30;
    load.request_timeout_s = 10;
    load
}

#[tokio::test]
async fn counts_every_stream_token_and_first_token() {
    let mock = mock(500.0, 8).await;
    let mut load = load(&mock, "gpt-test", 4, 12);
    // This process serves the mock: its CPU time is the server's.
    load.server_pids = vec![std::process::id()];
    let report = openai::run(load).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.requests_sent, report.requests_done), (12, 12));
    assert_eq!(report.tokens, 12 * 8, "from the usage chunks");
    assert_eq!(report.content_deltas, 12 * 8);
    assert_eq!(report.streams_without_usage, 0);
    let figure = |key: &str| report.latency[key];
    assert_eq!(figure("time_to_first_token").count, 12);
    assert_eq!(figure("time_to_headers").count, 12);
    assert_eq!(figure("request").count, 12);
    assert_eq!(figure("inter_token_gap").count, 12 * 7);
    let first = figure("time_to_first_token");
    assert!(first.p50_us <= first.p99_us && first.p99_us <= first.max_us);
    // 8 tokens at 500/s: the whole request takes at least 14 ms.
    assert!(
        figure("request").p50_us >= 14_000,
        "{:?}",
        figure("request")
    );
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.completed, stats.tokens_sent),
        (12, 12, 96)
    );
    let server = &report.servers[0];
    assert!(server.rss_after_kib > 0 && server.cpu_us_per_token.is_some());
    assert!(report.table().contains("request to first content token"));
    let json = serde_json::to_value(&report).unwrap();
    assert!(
        json["load"].get("token").is_none(),
        "the token stays out of reports"
    );
    assert_eq!(json["load"]["concurrency"], 4);
}

#[tokio::test]
async fn classifies_failures() {
    let mock = mock(0.0, 6).await;
    for (model, kind) in [
        ("mock-error-429-3", "http_429"),
        ("mock-error-503", "http_503"),
        ("mock-drop-after-2", "incomplete"),
        ("mock-error-after-1", "stream_error"),
        ("mock-error-event-after-1", "stream_error"),
    ] {
        let report = openai::run(load(&mock, model, 2, 4)).await.unwrap();
        assert_eq!(
            report.errors.get(kind),
            Some(&4),
            "{model}: {:?}",
            report.errors
        );
        assert_eq!(report.errors.len(), 1, "{model}: {:?}", report.errors);
        assert_eq!(report.requests_done, 0, "{model}");
    }
    // No usage chunk: the content deltas are counted instead.
    let report = openai::run(load(&mock, "mock-no-usage", 2, 4))
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.streams_without_usage, report.tokens), (4, 4 * 6));
    // Thinking is counted, and is no content token.
    let report = openai::run(load(&mock, "mock-reasoning-3", 1, 2))
        .await
        .unwrap();
    assert_eq!((report.reasoning_deltas, report.content_deltas), (6, 12));
    assert_eq!(report.tokens, 2 * (3 + 6), "the usage counts the thinking");
}

#[tokio::test]
async fn timeouts_and_the_deadline_bound_the_run() {
    let mock = mock(0.0, 6).await;
    let mut hanging = load(&mock, "mock-hang-after-1", 2, 2);
    hanging.request_timeout_s = 1;
    let started = std::time::Instant::now();
    let report = openai::run(hanging).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        report.errors.get("timeout"),
        Some(&2),
        "{:?}",
        report.errors
    );
    assert_eq!(report.latency["time_to_first_token"].count, 2);
    assert_eq!(
        report.tokens, 2,
        "a cut stream's tokens are delivered tokens"
    );

    let mut endless = load(&mock, "mock-hang", 3, 1_000);
    endless.max_duration_s = 1;
    let report = openai::run(endless).await.unwrap();
    assert_eq!(
        report.requests_sent, 3,
        "no request starts after the deadline"
    );
    assert_eq!(
        report.errors.get("deadline"),
        Some(&3),
        "{:?}",
        report.errors
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let mut load = OpenAiLoad::new(url, "m");
    load.concurrency = 2;
    load.requests = 3;
    load.max_duration_s = 10;
    let report = openai::run(load).await.unwrap();
    assert_eq!(
        report.errors.get("connect"),
        Some(&3),
        "{:?}",
        report.errors
    );
}
