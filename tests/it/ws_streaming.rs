//! The chat path end to end on the simulated model: streaming, idempotency,
//! conversations, bad input, cancel, busy, disconnect and resume.

use crate::common::*;
use serde_json::json;
use skald_protocol::FinishReason;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_full_stream_is_gap_free_exact_and_stored() {
    let server = TestServer::start().await;
    let mut client = server.client("alice").await;
    let ack = send(&mut client, "c-1", None, "Bonjour").await;
    let stream_id = ack["stream_id"].as_str().unwrap();
    let result = collect_stream(&mut client, stream_id, 0).await;
    assert_eq!(result.text, simulated_answer("Bonjour", 20));
    assert_eq!(result.done["finish_reason"], "stop");
    assert_eq!(result.done["message_id"], ack["message_id"]);
    assert_eq!(result.done["usage"]["completion_tokens"], 20);
    assert!(result.done["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(result.done.get("error").is_none());
    let message = server.answer_of(&ack).await;
    assert_eq!(message.content, result.text, "stored byte for byte");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    server.stop().await;
}

#[tokio::test]
async fn max_tokens_ends_with_length() {
    let server =
        TestServer::with_config(|c| c.bots.get_mut("default").unwrap().max_tokens = 5).await;
    let mut client = server.client("bob").await;
    let ack = send(&mut client, "1", None, "long please").await;
    let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(result.done["finish_reason"], "length");
    assert_eq!(result.text, simulated_answer("long please", 5));
    server.stop().await;
}

#[tokio::test]
async fn resending_an_id_never_creates_a_second_message() {
    let server = TestServer::start().await;
    let mut client = server.client("carol").await;
    let ack = send(&mut client, "same", None, "first").await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    // While it streams, on the same connection: the same ack, no new stream.
    client
        .send(json!({"type":"send","id":"same","text":"different text"}))
        .await;
    let mut acks = 1;
    let mut dones = 0;
    while dones == 0 {
        let frame = client.recv().await;
        match frame["type"].as_str().unwrap() {
            "ack" => {
                assert_eq!(frame, ack);
                acks += 1;
            }
            "done" => dones += 1,
            "delta" => assert_eq!(frame["stream_id"], stream_id),
            _ => panic!("{frame}"),
        }
    }
    assert_eq!(acks, 2);
    // After it finished, on another connection: the ack, then its done.
    let mut other = server.client("carol").await;
    other
        .send(json!({"type":"send","id":"same","text":"again"}))
        .await;
    assert_eq!(other.recv().await, ack);
    let result = collect_stream(&mut other, &stream_id, 0).await;
    assert_eq!(result.done["finish_reason"], "stop");
    let messages = skald_actors::ports::store::Store::recent_messages(
        &server.store,
        &ack["conversation_id"].as_str().unwrap().into(),
        100,
    )
    .await
    .unwrap();
    assert_eq!(messages.len(), 2, "one user message and one answer");
    // Another user may use the same id: it is theirs.
    let mut dave = server.client("dave").await;
    let dave_ack = send(&mut dave, "same", None, "hello").await;
    assert_ne!(dave_ack["stream_id"], ack["stream_id"]);
    server.stop().await;
}

#[tokio::test]
async fn conversations_continue_and_belong_to_their_user() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let first = send(&mut alice, "1", None, "one").await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    collect_stream(&mut alice, first["stream_id"].as_str().unwrap(), 0).await;
    let second = send(&mut alice, "2", Some(&conversation), "two").await;
    assert_eq!(second["conversation_id"], conversation);
    collect_stream(&mut alice, second["stream_id"].as_str().unwrap(), 0).await;

    let mut mallory = server.client("mallory").await;
    mallory
        .send(json!({"type":"send","id":"x","conversation_id":conversation,"text":"let me in"}))
        .await;
    let error = mallory.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "not_found");
    assert_eq!(error["id"], "x");
    // Unknown conversation and unknown bot look the same.
    mallory
        .send(json!({"type":"send","id":"y","conversation_id":"nope","text":"hi"}))
        .await;
    assert_eq!(mallory.recv().await["code"], "not_found");
    mallory
        .send(json!({"type":"send","id":"z","bot":"nobody","text":"hi"}))
        .await;
    assert_eq!(mallory.recv().await["code"], "not_found");
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_keep_the_connection_until_ten_in_a_row() {
    let server = TestServer::start().await;
    let mut client = server.client("erin").await;
    for bad in [
        "{not json",
        r#"{"type":"subscribe"}"#,
        r#"{"type":"send","id":"a"}"#,
    ] {
        client.send_raw(Message::Text(bad.into())).await;
        let error = client.recv().await;
        assert_eq!(error["code"], "invalid_request", "{bad}");
    }
    // A valid frame resets the count; the connection still works.
    client.send(json!({"type":"ping","ts":1})).await;
    assert_eq!(client.recv().await["type"], "pong");
    for i in 0..10 {
        client
            .send_raw(Message::Text(format!("garbage {i}").into()))
            .await;
    }
    for _ in 0..10 {
        assert_eq!(client.recv().await["code"], "invalid_request");
    }
    assert_eq!(client.closed().await, Closed::Code(4400));
    server.stop().await;
}

#[tokio::test]
async fn text_must_be_within_the_bot_limits() {
    let server =
        TestServer::with_config(|c| c.bots.get_mut("default").unwrap().max_message_chars = 10)
            .await;
    let mut client = server.client("fay").await;
    client
        .send(json!({"type":"send","id":"long","text":"ééééééééééé"}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["code"], "message_too_long");
    assert_eq!(error["id"], "long");
    client
        .send(json!({"type":"send","id":"empty","text":""}))
        .await;
    assert_eq!(client.recv().await["code"], "invalid_request");
    client
        .send(json!({"type":"send","id":"blank","text":"   "}))
        .await;
    assert_eq!(client.recv().await["code"], "invalid_request");
    // Exactly at the limit (in characters, not bytes) is fine.
    send(&mut client, "max", None, "éééééééééé").await;
    // Refused sends stored nothing: the ids are still free.
    send(&mut client, "long", None, "short").await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_frames_close_1009() {
    let server = TestServer::with_config(|c| c.websocket.max_frame_bytes = 1024).await;
    let mut client = server.client("gus").await;
    let text = "x".repeat(4096);
    client
        .send_raw(Message::Text(
            json!({"type":"send","id":"big","text":text})
                .to_string()
                .into(),
        ))
        .await;
    assert_eq!(client.closed().await, Closed::Code(1009));
    server.stop().await;
}

#[tokio::test]
async fn cancel_ends_with_cancelled_and_stores_the_partial_answer() {
    let server = TestServer::with_model(20.0, 400).await;
    let mut client = server.client("hana").await;
    let ack = send(&mut client, "1", None, "tell me a long story").await;
    let stream_id = ack["stream_id"].as_str().unwrap();
    let first = client.recv_type("delta").await;
    let (text, done) = cancel_after_first_delta(&mut client, stream_id, &first).await;
    assert_eq!(done["finish_reason"], "cancelled");
    let tokens = done["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        (1..400).contains(&tokens),
        "usage counts what was made: {tokens}"
    );
    let message = server.answer_of(&ack).await;
    assert_eq!(message.content, text);
    assert_eq!(message.finish_reason, Some(FinishReason::Cancelled));
    // Cancelling again, or an unknown stream.
    client
        .send(json!({"type":"cancel","stream_id":"nope"}))
        .await;
    assert_eq!(client.recv().await["code"], "not_found");
    server.stop().await;
}

#[tokio::test]
async fn too_many_streams_is_busy() {
    let server = TestServer::with_config(|c| {
        c.sessions.max_streams_per_session = 2;
        c.model.simulated_tokens_per_second = 5.0;
    })
    .await;
    let mut client = server.client("ivan").await;
    client
        .send(json!({"type":"send","id":"1","text":"a"}))
        .await;
    client
        .send(json!({"type":"send","id":"2","text":"b"}))
        .await;
    client
        .send(json!({"type":"send","id":"3","text":"c"}))
        .await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "busy");
    assert_eq!(error["id"], "3");
    // A second send into a conversation that is still answering is busy too.
    let mut other = server.client("ivan").await;
    let ack = send(&mut other, "4", None, "d").await;
    other
        .send(json!({"type":"send","id":"5","conversation_id":ack["conversation_id"],"text":"e"}))
        .await;
    let error = other.recv_type("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_str()),
        (Some("busy"), Some("5"))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_does_not_lose_the_answer_and_resume_replays_it() {
    let server = TestServer::with_model(100.0, 30).await;
    let mut client = server.client("jo").await;
    let ack = send(&mut client, "1", None, "remember me").await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    let first = client.recv_type("delta").await;
    let seen_seq = first["seq"].as_i64().unwrap();
    client.close().await;

    // Another user cannot resume it.
    let mut mallory = server.client("mallory").await;
    mallory.resume(&stream_id, -1).await;
    assert_eq!(mallory.recv().await["code"], "not_found");

    // The owner resumes on a new connection after what it saw.
    let mut again = server.client("jo").await;
    again.resume(&stream_id, seen_seq).await;
    let rest = collect_stream(&mut again, &stream_id, (seen_seq + 1) as u64).await;
    let full = format!("{}{}", first["text"].as_str().unwrap(), rest.text);
    assert_eq!(full, simulated_answer("remember me", 30));
    assert_eq!(rest.done["finish_reason"], "stop");
    let message = server.answer_of(&ack).await;
    assert_eq!(message.content, full);

    // From the start, after the end: every delta again, same boundaries.
    let mut third = server.client("jo").await;
    third.resume(&stream_id, -1).await;
    let replay = collect_stream(&mut third, &stream_id, 0).await;
    assert_eq!(replay.text, full);
    assert_eq!(replay.deltas, rest.deltas + 1);
    server.stop().await;
}

#[tokio::test]
async fn an_answer_finishes_and_is_stored_with_nobody_connected() {
    let server = TestServer::with_config(|c| c.model.simulated_tokens_per_second = 100.0).await;
    let mut client = server.client("kim").await;
    let ack = send(&mut client, "1", None, "bye").await;
    client.close().await;
    let conversation = ack["conversation_id"].as_str().unwrap();
    let message_id = ack["message_id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = stored(&server.store, conversation, message_id)
            .await
            .unwrap();
        if message.finish_reason.is_some() {
            assert_eq!(message.finish_reason, Some(FinishReason::Stop));
            assert_eq!(message.content, simulated_answer("bye", 20));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "answer never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let server = TestServer::start().await;
    let mut client = server.client("lee").await;
    server.stop().await;
    assert_eq!(client.closed().await, Closed::Code(1001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_coalesced_deltas_and_slows_nobody() {
    let server = TestServer::with_config(|c| {
        c.model.simulated_tokens_per_second = 0.0;
        c.model.simulated_answer_tokens = 3000;
        c.bots.get_mut("default").unwrap().max_tokens = 3000;
        // Small kernel buffers on both sides, so that the server's
        // writes block as soon as this client stops reading.
        c.websocket.socket_send_buffer_bytes = Some(4096);
    })
    .await;
    let mut slow = Client::connect_small_buffer(&server.url(), &token("slow")).await;
    assert_eq!(slow.recv().await["type"], "ready");
    let ack = send(&mut slow, "1", None, "flood me").await;
    // Meanwhile another session streams its whole answer.
    let mut fast = server.client("fast").await;
    let fast_ack = send(&mut fast, "1", None, "me too").await;
    let fast_result = collect_stream(&mut fast, fast_ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(fast_result.text, simulated_answer("me too", 3000));
    // The slow reader finally reads: everything, exact, gap-free, in fewer
    // frames than tokens.
    let result = collect_stream(&mut slow, ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(result.text, simulated_answer("flood me", 3000));
    assert!(
        result.deltas < 3000,
        "deltas coalesce when the client is behind: {} frames for 3000 tokens",
        result.deltas
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_that_do_not_answer_pings_are_closed() {
    let server = TestServer::with_config(|c| {
        c.websocket.ping_interval_ms = 100;
        c.websocket.idle_timeout_ms = 400;
    })
    .await;
    // This client reads (and so answers pings) for a while: it stays open.
    let mut alive = server.client("alive").await;
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(1000);
    alive.send(json!({"type":"ping","ts":1})).await;
    assert_eq!(alive.recv().await["type"], "pong");
    while tokio::time::Instant::now() < until {
        alive.send(json!({"type":"ping","ts":2})).await;
        assert_eq!(alive.recv().await["type"], "pong");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // This one goes silent (no reads, so no pongs): closed after the timeout.
    let mut silent = server.client("silent").await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    // Reading now, the client answers the queued pings into a closed
    // socket, so it may see the reset before the close frame: either way
    // the server closed it (a connection left open would time out here).
    let closed = silent.closed().await;
    assert!(
        matches!(closed, Closed::Code(1000) | Closed::NoFrame),
        "{closed:?}"
    );
    server.stop().await;
}
