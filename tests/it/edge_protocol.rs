//! What the edge answers to broken input, over real sockets: RFC 6455 close
//! codes for broken framing (before and after authentication), the `id` of
//! every refused `send` and the `stream_id` of every refused `cancel` or
//! `resume`, and PROTOCOL.md's JSON body for every HTTP error, the
//! framework's own rejections included.

use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::raw_ws::{frame, text, RawWs};
use crate::common::*;

/// Each case: what is written after the upgrade, and the close code the
/// server must answer with.
fn violations() -> Vec<(&'static str, Vec<u8>, u16)> {
    vec![
        ("invalid UTF-8 text", text(&[0x7b, 0xff, 0xfe, 0x7d]), 1007),
        ("unmasked frame", frame(true, 0, 0x1, false, b"{}"), 1002),
        ("reserved bits", frame(true, 0b100, 0x1, true, b"{}"), 1002),
        (
            "fragmented control frame",
            frame(false, 0, 0x9, true, b"ping"),
            1002,
        ),
        (
            "continuation without a start",
            frame(true, 0, 0x0, true, b"rest"),
            1002,
        ),
        (
            "reserved data opcode",
            frame(true, 0, 0x3, true, b"x"),
            1002,
        ),
        (
            "reserved control opcode",
            frame(true, 0, 0xb, true, b""),
            1002,
        ),
        (
            "oversized control frame",
            frame(true, 0, 0x9, true, &[b'p'; 126]),
            1002,
        ),
        (
            "malformed close payload",
            frame(true, 0, 0x8, true, &[0x03]),
            1002,
        ),
        (
            "a text frame over max_frame_bytes",
            text(&vec![b' '; 70 * 1024]),
            1009,
        ),
    ]
}

#[tokio::test]
async fn broken_framing_closes_with_the_rfc_6455_code_before_and_after_auth() {
    let server = TestServer::start().await;
    for (case, bytes, code) in violations() {
        for authenticated in [false, true] {
            let token = token("framer");
            let mut ws = RawWs::connect(server.addr, authenticated.then_some(token.as_str())).await;
            ws.write(&bytes).await;
            assert_eq!(
                ws.close_code().await,
                Some(code),
                "{case}, {}",
                if authenticated {
                    "authenticated"
                } else {
                    "before hello"
                }
            );
        }
    }
    // A frame before the violation is still answered first: the server
    // reads in order.
    let mut ws = RawWs::connect(server.addr, Some(&token("framer"))).await;
    ws.write(&text(br#"{"type":"ping","ts":7}"#)).await;
    ws.write(&text(&[0xff])).await;
    let mut pong = false;
    while let Some(f) = ws.read().await {
        if f.opcode == 0x1 && String::from_utf8_lossy(&f.payload).contains("\"pong\"") {
            pong = true;
        }
        if f.opcode == 0x8 {
            assert_eq!(u16::from_be_bytes([f.payload[0], f.payload[1]]), 1007);
            break;
        }
    }
    assert!(pong, "the ping before the bad frame was answered");
    server.stop().await;
}

/// tungstenite answers every WebSocket ping with a pong that waits in the
/// write buffer until the client reads it: a client that pings and never
/// reads would grow it without bound (a deaf flood of a million pings grew
/// the server by 130 MiB). Over 120 pings a minute the connection closes
/// 4400, before and after authentication.
#[tokio::test]
async fn a_ping_flood_closes_the_connection_4400_before_and_after_auth() {
    let server = TestServer::start().await;
    for authenticated in [false, true] {
        let token = token("pinger");
        let mut ws = RawWs::connect(server.addr, authenticated.then_some(token.as_str())).await;
        // One over the budget: nothing is left unread when the server
        // closes (unread bytes would turn its close into a reset).
        let mut pings = Vec::new();
        for _ in 0..121 {
            pings.extend(frame(true, 0, 0x9, true, &[b'p'; 125]));
        }
        ws.write(&pings).await;
        assert_eq!(
            ws.close_code().await,
            Some(4400),
            "{}",
            if authenticated {
                "authenticated"
            } else {
                "before hello"
            }
        );
    }
    // A client that pings now and then is answered and stays.
    let mut client = server.client("calm").await;
    for _ in 0..10 {
        client.send_raw(Message::Ping(b"hi".to_vec().into())).await;
    }
    let ack = send(&mut client, "c1", None, "still open?").await;
    collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
    server.stop().await;
}

#[tokio::test]
async fn protocol_violations_are_counted_by_their_close_code() {
    let _metrics = METRICS.lock().await;
    let server = TestServer::start().await;
    let count = |text: &str, code: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "skald_disconnects_total{{close_code=\"{code}\"}} "
                ))
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let scrape = || async {
        server
            .http(Method::GET, "/metrics", None)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let mut ws = RawWs::connect(server.addr, Some(&token("counted"))).await;
    ws.write(&frame(true, 0, 0x1, false, b"{}")).await;
    assert_eq!(ws.close_code().await, Some(1002));
    let mut ws = RawWs::connect(server.addr, Some(&token("counted"))).await;
    ws.write(&text(&[0xc3, 0x28])).await;
    assert_eq!(ws.close_code().await, Some(1007));
    let after = scrape().await;
    assert!(
        count(&after, "1002") >= count(&before, "1002") + 1.0,
        "{after}"
    );
    assert!(
        count(&after, "1007") >= count(&before, "1007") + 1.0,
        "{after}"
    );
    server.stop().await;
}

/// The next `error` frame (skipping anything else).
async fn next_error(client: &mut Client) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == "error" {
            return frame;
        }
    }
}

#[tokio::test]
async fn every_refused_send_carries_its_id_and_every_refused_stream_call_its_stream() {
    let server = TestServer::start().await;
    let mut client = server.client("refused").await;
    for bad in [
        json!({"type":"send","id":"x","text":null}),
        json!({"type":"send","id":"x","text":7}),
        json!({"type":"send","id":"x"}),
        json!({"type":"send","id":"x","text":"t","conversation_id":12}),
    ] {
        client.send(bad.clone()).await;
        let error = next_error(&mut client).await;
        assert_eq!(error["code"], "invalid_request", "{bad}");
        assert_eq!(error["id"], "x", "{bad} -> {error}");
    }
    // Refused after decoding, too.
    client
        .send(json!({"type":"send","id":"y","text":"   "}))
        .await;
    let error = next_error(&mut client).await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("invalid_request"), Some("y"))
    );
    client
        .send(json!({"type":"send","id":"z","text":"hi","bot":"nope"}))
        .await;
    let error = next_error(&mut client).await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("not_found"), Some("z"))
    );

    for frame in [
        json!({"type":"cancel","stream_id":"no-such-stream"}),
        json!({"type":"resume","stream_id":"no-such-stream","after_seq":-1}),
    ] {
        client.send(frame.clone()).await;
        let error = next_error(&mut client).await;
        assert_eq!(error["code"], "not_found", "{frame}");
        assert_eq!(error["stream_id"], "no-such-stream", "{frame} -> {error}");
    }
    // A resume beyond the stream's end names the stream too.
    let ack = send(&mut client, "real", None, "hello").await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    collect_stream(&mut client, &stream_id, 0).await;
    client
        .send(json!({"type":"resume","stream_id":stream_id,"after_seq":10_000}))
        .await;
    let error = next_error(&mut client).await;
    assert_eq!(error["code"], "invalid_request");
    assert_eq!(error["stream_id"], stream_id.as_str());
    // A decoding error of a resume names its stream.
    client
        .send(json!({"type":"resume","stream_id":"s-1","after_seq":"soon"}))
        .await;
    let error = next_error(&mut client).await;
    assert_eq!(error["stream_id"], "s-1", "{error}");
    server.stop().await;
}

#[tokio::test]
async fn every_http_error_is_the_protocols_json() {
    let server = TestServer::start().await;
    let cases: Vec<(Method, String, Option<&str>, u16, &str)> = vec![
        // The framework's own rejections.
        (
            Method::GET,
            "/v1/conversations?limit=1&limit=2".into(),
            Some("h"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/conversations?limit=abc".into(),
            Some("h"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/conversations?before=%%%".into(),
            Some("h"),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/v1/no-such-route".into(),
            Some("h"),
            404,
            "not_found",
        ),
        (Method::GET, "/nothing/here".into(), None, 404, "not_found"),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some("h"),
            405,
            "invalid_request",
        ),
        (
            Method::PATCH,
            "/v1/me".into(),
            Some("h"),
            405,
            "invalid_request",
        ),
        // Ours.
        (Method::GET, "/v1/usage".into(), None, 401, "unauthorized"),
        (
            Method::GET,
            "/v1/conversations/nope/messages".into(),
            Some("h"),
            404,
            "not_found",
        ),
        (
            Method::DELETE,
            "/v1/conversations/nope".into(),
            Some("h"),
            404,
            "not_found",
        ),
    ];
    for (method, path, user, status, code) in cases {
        let response = server
            .http(method.clone(), &path, user)
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path}");
        assert_eq!(response.status().as_u16(), status, "{what}");
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with("application/json"), "{what}: {kind}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    server.stop().await;
}
