//! Any instance serves any user: several servers on one real `redis-server`
//! (each with its own embedded store), a client that moves between them.
//! Resume on another instance, after the end too; cancel through another
//! instance; another user's ids refused wherever they are sent; `started`
//! on the user's other connections and nobody else's; an owner killed
//! (SIGKILL) under a follower; Redis restarted under live streams.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::cql::Keyspace;
use crate::common::redis_server::RedisServer;
use crate::common::*;

/// An instance on `redis`, with a model of `tokens_per_second` writing
/// `answer_tokens`, and a short stream lease.
async fn instance(redis: &RedisServer, tokens_per_second: f64, answer_tokens: u32) -> TestServer {
    instance_on(redis, None, tokens_per_second, answer_tokens).await
}

/// The same on a CQL keyspace shared with other instances (`None`: its own
/// embedded store).
async fn instance_on(
    redis: &RedisServer,
    keyspace: Option<&Keyspace>,
    tokens_per_second: f64,
    answer_tokens: u32,
) -> TestServer {
    let url = redis.url();
    let mut builder = TestServer::builder().config(move |c| {
        c.redis.url = Some(url.as_str().into());
        c.model.simulated_tokens_per_second = tokens_per_second;
        c.model.simulated_answer_tokens = answer_tokens;
        c.sessions.stream_lease_ms = 1_000;
    });
    if let Some(keyspace) = keyspace {
        builder = builder.store(keyspace.shared_store().await);
    }
    builder.start().await
}

/// Reads frames of `stream_id` until `n` deltas came; their text.
async fn deltas(client: &mut Client, stream_id: &str, n: usize) -> String {
    let mut text = String::new();
    let mut seen = 0;
    while seen < n {
        let frame = client.recv().await;
        if frame["type"] == "delta" && frame["stream_id"] == stream_id {
            assert_eq!(frame["seq"].as_u64(), Some(seen as u64), "{frame}");
            text.push_str(frame["text"].as_str().unwrap());
            seen += 1;
        }
    }
    text
}

/// Sends `text` as `id` and reads the first `n` deltas of its stream: the
/// ack and the stream id.
async fn under_way(client: &mut Client, id: &str, text: &str, n: usize) -> (Value, String) {
    let ack = send(client, id, None, text).await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    deltas(client, &stream_id, n).await;
    (ack, stream_id)
}

/// The next frame of a type, skipping others.
async fn next(client: &mut Client, kind: &str) -> Value {
    client.recv_type(kind).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_on_another_instance_goes_on_gap_free_to_one_done() {
    let redis = RedisServer::start();
    let (a, b) = (
        instance(&redis, 40.0, 40).await,
        instance(&redis, 40.0, 40).await,
    );
    let mut on_a = a.client("roamer").await;
    let ack = send(&mut on_a, "r-1", None, "a long one please").await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    let first = deltas(&mut on_a, &stream_id, 10).await;
    on_a.close().await; // the phone drops from A…

    let mut on_b = b.client("roamer").await; // …and lands on B
    let started = Instant::now();
    on_b.resume(&stream_id, 9).await;
    let first_replayed = next(&mut on_b, "delta").await;
    eprintln!(
        "resume on another instance: first replayed delta after {:?}",
        started.elapsed()
    );
    assert_eq!(first_replayed["seq"], 10, "{first_replayed}");
    let mut rest = first_replayed["text"].as_str().unwrap().to_owned();
    let result = collect_stream(&mut on_b, &stream_id, 11).await;
    rest.push_str(&result.text);
    assert_eq!(
        format!("{first}{rest}"),
        simulated_answer("a long one please", 40),
        "the same answer, every byte once"
    );
    assert_eq!(result.done["finish_reason"], "stop");
    // Exactly one done.
    on_b.send(json!({"type":"ping","ts":1})).await;
    assert_eq!(on_b.recv().await["type"], "pong");

    // After its end, any instance replays it whole, as it was cut.
    let mut late = b.client("roamer").await;
    late.resume(&stream_id, -1).await;
    let whole = collect_stream(&mut late, &stream_id, 0).await;
    assert_eq!(whole.text, simulated_answer("a long one please", 40));
    assert_eq!(whole.done, result.done);
    a.stop().await;
    b.stop().await;
}

/// A client can be ahead of what the owner has published (it read the
/// frames from the owner): another instance then waits for them rather
/// than refusing the resume; once the stream has ended, its cut is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_ahead_of_what_was_published_waits_for_it() {
    let redis = RedisServer::start();
    let (a, b) = (
        instance(&redis, 20.0, 40).await,
        instance(&redis, 20.0, 40).await,
    );
    let mut on_a = a.client("ahead").await;
    let (_, stream_id) = under_way(&mut on_a, "ah-1", "run ahead", 5).await;
    // At 20 tokens/s, seq 24 is a second ahead of anything published.
    let mut on_b = b.client("ahead").await;
    on_b.resume(&stream_id, 24).await;
    let first = on_b.recv().await;
    assert_eq!(first["type"], "delta", "{first}");
    assert_eq!(first["seq"], 25, "{first}");
    let rest = collect_stream(&mut on_b, &stream_id, 26).await;
    let whole = simulated_answer("run ahead", 40);
    assert!(
        whole.ends_with(&format!("{}{}", first["text"].as_str().unwrap(), rest.text)),
        "the frames after seq 24, and one done"
    );
    // Ended, the cut is final: beyond it is refused.
    let mut late = b.client("ahead").await;
    late.resume(&stream_id, 1000).await;
    let refused = late.recv().await;
    assert_eq!(refused["code"], "invalid_request", "{refused}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_share_streams_off_a_stream_stays_where_it_runs() {
    let redis = RedisServer::start();
    let url = redis.url();
    let unshared = |url: String| {
        TestServer::builder().config(move |c| {
            c.redis.url = Some(url.as_str().into());
            c.redis.share_streams = false;
            c.model.simulated_tokens_per_second = 0.0;
        })
    };
    let a = unshared(url.clone()).start().await;
    let b = unshared(url).start().await;
    let mut on_a = a.client("homebody").await;
    let ack = send(&mut on_a, "h-1", None, "stay").await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    collect_stream(&mut on_a, &stream_id, 0).await;
    // Its own instance replays it; another knows nothing of it.
    let mut again = a.client("homebody").await;
    again.resume(&stream_id, -1).await;
    assert_eq!(
        collect_stream(&mut again, &stream_id, 0).await.done["finish_reason"],
        "stop"
    );
    let mut on_b = b.client("homebody").await;
    on_b.resume(&stream_id, -1).await;
    let refused = next(&mut on_b, "error").await;
    assert_eq!(refused["code"], "not_found", "{refused}");
    assert_eq!(refused["stream_id"], stream_id);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_another_instance_stops_the_stream_where_it_runs() {
    let redis = RedisServer::start();
    let (a, b) = (
        instance(&redis, 10.0, 400).await,
        instance(&redis, 10.0, 400).await,
    );
    let mut on_a = a.client("canceller").await;
    let (_, stream_id) = under_way(&mut on_a, "c-1", "tell me everything", 2).await;

    let mut on_b = b.client("canceller").await;
    let sent = Instant::now();
    on_b.send(json!({"type":"cancel","stream_id":stream_id}))
        .await;
    let done = next(&mut on_a, "done").await;
    eprintln!(
        "cancel through another instance: done on the owner after {:?}",
        sent.elapsed()
    );
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "cancelled long before its 40 s end"
    );
    // B follows it too, and sees the same end.
    on_b.resume(&stream_id, -1).await;
    let followed = collect_stream(&mut on_b, &stream_id, 0).await;
    assert_eq!(followed.done["finish_reason"], "cancelled");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_stream_is_not_found_on_every_instance() {
    let redis = RedisServer::start();
    let (a, b) = (
        instance(&redis, 10.0, 100).await,
        instance(&redis, 10.0, 100).await,
    );
    let mut owner = a.client("owner").await;
    let (_, stream_id) = under_way(&mut owner, "o-1", "mine", 1).await;
    for server in [&a, &b] {
        let mut intruder = server.client("intruder").await;
        for frame in [
            json!({"type":"cancel","stream_id":stream_id}),
            json!({"type":"resume","stream_id":stream_id,"after_seq":-1}),
        ] {
            intruder.send(frame.clone()).await;
            let error = next(&mut intruder, "error").await;
            assert_eq!(error["code"], "not_found", "{frame}");
            assert_eq!(error["stream_id"], stream_id.as_str());
        }
    }
    // The owner's stream was not touched.
    let result = collect_stream(&mut owner, &stream_id, 1).await;
    assert_eq!(result.done["finish_reason"], "stop");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_reaches_the_users_other_connections_on_every_instance_only() {
    let redis = RedisServer::start();
    let (a, b) = (
        instance(&redis, 100.0, 10).await,
        instance(&redis, 100.0, 10).await,
    );
    let mut sender = a.client("tabs").await;
    let mut same_instance = a.client("tabs").await;
    let mut other_instance = b.client("tabs").await;
    let mut stranger = b.client("stranger").await;
    let ack = send(&mut sender, "t-1", None, "Bonjour").await;
    for tab in [&mut same_instance, &mut other_instance] {
        let started = next(tab, "started").await;
        assert_eq!(started["stream_id"], ack["stream_id"]);
        assert_eq!(started["conversation_id"], ack["conversation_id"]);
        assert_eq!(started["message_id"], ack["message_id"]);
        assert_eq!(started["bot"], "default");
        assert_eq!(started["user_message"]["content"], "Bonjour");
        assert!(started["user_message"]["created_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        // A tab showing it follows it live.
        tab.resume(ack["stream_id"].as_str().unwrap(), -1).await;
        let result = collect_stream(tab, ack["stream_id"].as_str().unwrap(), 0).await;
        assert_eq!(result.text, simulated_answer("Bonjour", 10));
    }
    // The sender got its ack, not a started; the stranger got nothing.
    collect_stream(&mut sender, ack["stream_id"].as_str().unwrap(), 0).await;
    for client in [&mut sender, &mut stranger] {
        client.send(json!({"type":"ping","ts":9})).await;
        let frame = client.recv().await;
        assert_eq!(frame["type"], "pong", "{frame}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_stream_leaves_streams_running_where_they_are() {
    let mut redis = RedisServer::start();
    let a = instance(&redis, 20.0, 60).await;
    let mut on_a = a.client("weather").await;
    let (ack, stream_id) = under_way(&mut on_a, "w-1", "storm", 3).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    // The stream ran on in its own instance, whole.
    let result = collect_stream(&mut on_a, &stream_id, 3).await;
    assert_eq!(result.done["finish_reason"], "stop");
    let (_, stored) = a
        .get_json(
            &format!(
                "/v1/conversations/{}/messages",
                ack["conversation_id"].as_str().unwrap()
            ),
            Some("weather"),
        )
        .await;
    assert_eq!(
        stored["messages"][1]["content"],
        simulated_answer("storm", 60)
    );
    // What could not be published was said.
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("skald_bus_errors_total"),
        "bus errors counted"
    );
    a.stop().await;
}

/// The instance running a stream dies (SIGKILL) while two others follow
/// it: both followers get `done` `error`/`unavailable` within about a lease,
/// with what was published before it; the quota reservation is settled from
/// it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_under_two_followers_ends_their_stream_once() {
    owner_killed_under_two_followers(None).await;
}

/// The same with the three instances on one CQL keyspace: the history,
/// read through a survivor, holds the user message and, once, the answer
/// as it was published, closed as `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_on_a_shared_keyspace_leaves_what_was_published_in_the_history() {
    let test = "an_owner_killed_on_a_shared_keyspace_leaves_what_was_published_in_the_history";
    let Some(keyspace) = Keyspace::shared(test).await else {
        return;
    };
    owner_killed_under_two_followers(Some(&keyspace)).await;
}

async fn owner_killed_under_two_followers(keyspace: Option<&Keyspace>) {
    let redis = RedisServer::start();
    let data = TempDir::new("owner");
    let config = match keyspace {
        Some(keyspace) => keyspace.config_file(&data.0),
        None => data.0.join("skald.toml"),
    };
    let mut toml = std::fs::read_to_string(&config).unwrap_or_default();
    toml.push_str("[sessions]\nstream_lease_ms = 1000\n");
    std::fs::write(&config, toml).unwrap();
    let port = crate::common::redis_server::free_port();
    let url = redis.url();
    let mut owner = crate::common::spawned::start(
        &data.0,
        port,
        &[
            ("SKALD_REDIS_URL", url.as_str()),
            ("SKALD_CONFIG", config.to_str().unwrap()),
            ("SKALD_SIMULATED_TOKENS_PER_SECOND", "10"),
            ("SKALD_SIMULATED_ANSWER_TOKENS", "500"),
        ],
    )
    .await;
    let (b, c) = (
        instance_on(&redis, keyspace, 10.0, 10).await,
        instance_on(&redis, keyspace, 10.0, 10).await,
    );
    let mut on_owner = Client::connect(
        &format!("ws://127.0.0.1:{port}/v1/ws"),
        Some(&token("orphaned")),
    )
    .await;
    on_owner.recv().await;
    let (ack, stream_id) = under_way(&mut on_owner, "k-1", "a story that will not end", 3).await;
    let mut followers = Vec::new();
    let mut head = String::new();
    for server in [&b, &c] {
        let mut follower = server.client("orphaned").await;
        follower.resume(&stream_id, -1).await;
        head = deltas(&mut follower, &stream_id, 3).await;
        followers.push(follower);
    }
    owner.kill().unwrap(); // SIGKILL
    owner.wait().unwrap();
    let killed = Instant::now();
    let mut texts = Vec::new();
    for follower in &mut followers {
        let result = collect_stream(follower, &stream_id, 3).await;
        assert_eq!(result.done["finish_reason"], "error", "{}", result.done);
        assert_eq!(result.done["error"]["code"], "unavailable");
        texts.push(result.text);
    }
    eprintln!(
        "owner killed: followers got done after {:?}",
        killed.elapsed()
    );
    assert_eq!(texts[0], texts[1], "both saw the same published frames");
    // The reservation was settled once, from what was published.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, usage) = b.get_json("/v1/usage", Some("orphaned")).await;
        if usage["requests_used"] == 1 {
            assert!(usage["tokens_used"].as_u64().unwrap() > 3, "{usage}");
            break;
        }
        assert_eq!(usage["requests_used"], 0, "settled at most once: {usage}");
        assert!(Instant::now() < deadline, "never settled: {usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if keyspace.is_some() {
        // The answer as it was published (what the followers saw), stored
        // once and closed.
        let conversation = ack["conversation_id"].as_str().unwrap();
        let path = format!("/v1/conversations/{conversation}/messages");
        let deadline = Instant::now() + WAIT;
        let messages = loop {
            let (status, body) = c.get_json(&path, Some("orphaned")).await;
            assert_eq!(status, 200, "{body}");
            let messages = body["messages"].as_array().unwrap().clone();
            if messages.len() == 2 && messages[1]["finish_reason"] == "error" {
                break messages;
            }
            assert!(Instant::now() < deadline, "never closed: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(messages[0]["content"], "a story that will not end");
        assert_eq!(messages[1]["content"], format!("{head}{}", texts[0]));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, usage) = c.get_json("/v1/usage", Some("orphaned")).await;
    assert_eq!(usage["requests_used"], 1, "once: {usage}");
    b.stop().await;
    c.stop().await;
}
