//! A client that floods its connection with valid frames, against the real
//! binary: the server's memory must stay where it was (the inbound queue is
//! bounded: the reader waits, TCP pushes back on the client) and a
//! bystander's chat must go on. The figures are printed, not asserted on
//! time; the memory bound is the assertion.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::spawned::{rss_bytes, start};
use crate::common::{collect_stream, send, token, Client, TempDir};

/// Frames the flood sends: 40 000 of 3 900 characters is 156 MB, five times
/// the bound below (with an unbounded queue the server grew by 36 MiB at
/// half as many).
const FRAMES: usize = 40_000;
const TEXT_CHARS: usize = 3_900;
const RSS_GROWTH_BOUND: u64 = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sends_leaves_memory_where_it_was_and_bystanders_served() {
    let data = TempDir::new("flood");
    let port = crate::common::redis_server::free_port();
    let mut child = start(&data.0, port, &[]).await;
    let pid = child.id();
    let url = format!("ws://127.0.0.1:{port}/v1/ws");

    // Warm up: one full chat, so the baseline holds what a working server
    // holds.
    let mut bystander = Client::connect(&url, Some(&token("bystander"))).await;
    bystander.recv().await;
    let ack = send(&mut bystander, "warm", None, "warm up").await;
    collect_stream(&mut bystander, ack["stream_id"].as_str().unwrap(), 0).await;
    let baseline = rss_bytes(pid);

    let (flooder, _) = tokio_tungstenite::connect_async({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token("flooder")).parse().unwrap(),
        );
        request
    })
    .await
    .unwrap();
    let (mut sink, mut stream) = flooder.split();
    // It reads its answers (all `busy` after the first few), as the
    // reported client did, so nothing but the inbound side can grow.
    let reader = tokio::spawn(async move {
        let mut answers = 0u64;
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Text(_)) {
                answers += 1;
            }
        }
        answers
    });
    let text = "x".repeat(TEXT_CHARS);
    let writer = tokio::spawn(async move {
        for i in 0..FRAMES {
            let frame = json!({"type":"send","id":format!("f{i}"),"text":text}).to_string();
            if sink.feed(Message::Text(frame.into())).await.is_err() {
                return i;
            }
            if i % 64 == 0 && sink.flush().await.is_err() {
                return i;
            }
        }
        let _ = sink.flush().await;
        FRAMES
    });

    // Meanwhile: memory, sampled, and a bystander's chat.
    let mut peak = baseline;
    let started = Instant::now();
    let ack = send(&mut bystander, "during", None, "still there?").await;
    let mut first_token = None;
    let mut done = None;
    while done.is_none() || !writer.is_finished() {
        peak = peak.max(rss_bytes(pid));
        if done.is_none() {
            if let Ok(frame) =
                tokio::time::timeout(Duration::from_millis(50), bystander.recv()).await
            {
                if frame["type"] == "delta" && first_token.is_none() {
                    first_token = Some(started.elapsed());
                }
                if frame["type"] == "done" && frame["stream_id"] == ack["stream_id"] {
                    done = Some(frame);
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the flood ends"
        );
    }
    let written = writer.await.unwrap();
    peak = peak.max(rss_bytes(pid));
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "flood: {written} frames written; server RSS {:.1} MiB before, peak {:.1} MiB \
         (+{:.1} MiB); bystander first token after {:?}",
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        first_token
    );
    assert_eq!(
        written, FRAMES,
        "the flood was taken in full, never dropped"
    );
    assert!(
        growth < RSS_GROWTH_BOUND,
        "the flood grew the server by {growth} bytes"
    );
    let done = done.unwrap();
    assert_eq!(
        done["finish_reason"], "stop",
        "the bystander was served: {done}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let answers = reader.await.unwrap();
    assert!(answers > 0, "the flooder was answered");
}
