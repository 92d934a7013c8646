//! `skald backup` and `skald restore` (the real binary) against a server
//! that is writing: a backup taken under load restores to a consistent
//! store, one taken at rest restores to the same history, and what would
//! overwrite or mislead is refused.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::spawned::skald;
use crate::common::*;

const USERS: [&str; 4] = ["ada", "bob", "cy", "di"];

/// Runs `skald <args>` on `data_dir`: its exit, stdout and stderr.
fn run(data_dir: &Path, args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let output = skald(data_dir).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What the server holds of each user: conversations, messages, keys (the
/// export without its time, audit and usage).
async fn history(server: &TestServer) -> Vec<Value> {
    let mut all = Vec::new();
    for user in USERS {
        let (status, export) = server.get_json("/v1/export", Some(user)).await;
        assert_eq!(status, 200);
        all.push(serde_json::json!({
            "conversations": export["conversations"],
            "messages": export["messages"],
            "keys": export["idempotency_keys"],
        }));
    }
    all
}

/// A user's conversation, `rounds` messages long, each answered.
async fn chat(server: &TestServer, user: &'static str, rounds: usize) {
    let mut client = server.client(user).await;
    let mut conversation: Option<String> = None;
    for i in 0..rounds {
        let ack = send(
            &mut client,
            &format!("{user}-{i}"),
            conversation.as_deref(),
            "hello",
        )
        .await;
        conversation = Some(ack["conversation_id"].as_str().unwrap().to_owned());
        client.recv_type("done").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_consistent_and_one_at_rest_restores_identical() {
    let dir = TempDir::new("backup");
    let data = dir.0.join("data");
    let server = TestServer::builder().data_dir(&data).start().await;
    let server = std::sync::Arc::new(server);
    // Four users write while the first backup is taken.
    let load: Vec<_> = USERS
        .into_iter()
        .map(|user| {
            let server = server.clone();
            tokio::spawn(async move { chat(&server, user, 40).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let under_load = dir.0.join("under-load");
    let (ok, out, err) = run(&data, &["backup".as_ref(), under_load.as_os_str()]);
    assert!(ok, "{err}");
    assert!(out.contains("MB/s"), "says its throughput: {out}");
    assert!(
        load.iter().any(|l| !l.is_finished()),
        "the backup was taken while the users wrote"
    );
    for l in load {
        l.await.unwrap();
    }
    let at_rest = dir.0.join("at-rest");
    let (ok, _, err) = run(&data, &["backup".as_ref(), at_rest.as_os_str()]);
    assert!(ok, "{err}");
    let source = history(&server).await;

    // Restored at rest: the same history, message for message.
    let restored = dir.0.join("restored");
    let (ok, out, err) = run(&restored, &["restore".as_ref(), at_rest.as_os_str()]);
    assert!(ok, "{err}");
    assert!(out.contains("skald.db"), "{out}");
    let second = TestServer::builder().data_dir(&restored).start().await;
    assert_eq!(history(&second).await, source);
    second.stop().await;

    // Restored from under load: a consistent earlier state, every message
    // readable, each in the source as it was; an answer that was streaming
    // when the backup was taken is closed at the restored server's start
    // as interrupted (`error`), holding a prefix of what it became.
    let earlier = dir.0.join("earlier");
    let (ok, _, err) = run(&earlier, &["restore".as_ref(), under_load.as_os_str()]);
    assert!(ok, "{err}");
    let third = TestServer::builder().data_dir(&earlier).start().await;
    let then = history(&third).await;
    third.stop().await;
    let mut messages_then = 0;
    for (then, now) in then.iter().zip(&source) {
        let now_messages = now["messages"].as_array().unwrap();
        for message in then["messages"].as_array().unwrap() {
            messages_then += 1;
            let found = now_messages
                .iter()
                .find(|m| m["id"] == message["id"])
                .unwrap_or_else(|| panic!("{message} is not in the source"));
            let interrupted =
                message["finish_reason"] == "error" && found["finish_reason"] == "stop";
            if interrupted {
                let (then, now) = (message["content"].as_str(), found["content"].as_str());
                assert!(
                    now.unwrap().starts_with(then.unwrap()),
                    "{message} then {found}"
                );
            } else {
                assert_eq!(message, found);
            }
        }
    }
    let messages_now: usize = source
        .iter()
        .map(|h| h["messages"].as_array().unwrap().len())
        .sum();
    assert!(
        messages_then > 0 && messages_then < messages_now,
        "{messages_then} of {messages_now} messages in the backup under load"
    );

    // Refused: a backup into a non-empty directory, a restore over a
    // store, a directory that is not a backup.
    let (ok, _, err) = run(&data, &["backup".as_ref(), at_rest.as_os_str()]);
    assert!(!ok && err.contains("not empty"), "{err}");
    let (ok, _, err) = run(&restored, &["restore".as_ref(), at_rest.as_os_str()]);
    assert!(
        !ok && err.contains("restore into an empty data dir"),
        "{err}"
    );
    let (ok, _, err) = run(
        &dir.0.join("fresh"),
        &["restore".as_ref(), data.as_os_str()],
    );
    assert!(!ok && err.contains("not a complete Skald backup"), "{err}");
    std::sync::Arc::into_inner(server)
        .expect("the load is over")
        .stop()
        .await;
}

#[test]
fn a_backup_of_scylladb_points_to_the_clusters_snapshots() {
    let dir = TempDir::new("backup-scylla");
    let output = skald(&dir.0)
        .env("SKALD_SCYLLA_NODES", "127.0.0.1:1")
        .args(["backup", dir.0.join("dest").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains("cluster's snapshots"), "{err}");
}

/// A backup holds what the store held when it was taken; a full client
/// address past its 30 days in it is anonymised when the restored server
/// starts, in the log operators read too.
#[tokio::test]
async fn addresses_past_thirty_days_in_a_backup_are_anonymised_when_restored() {
    let dir = TempDir::new("backup-addresses");
    let data = dir.0.join("data");
    let server = TestServer::builder().data_dir(&data).start().await;
    // A record of 31 days ago whose address the hourly sweep has not
    // reached yet.
    let at_ms = skald_actors::time::now_ms() - 31 * 86_400_000;
    rusqlite::Connection::open(data.join("skald.db"))
        .unwrap()
        .execute(
            "INSERT INTO audit (id, at_ms, user, action, address, address_anonymised, detail) \
             VALUES ('01a00000-0000-7000-8000-000000000001', ?1, 'old-user', 'exported', \
             '203.0.113.7', '203.0.113.0', 'an old export')",
            [at_ms],
        )
        .unwrap();
    let backup = dir.0.join("backup");
    let (ok, _, err) = run(&data, &["backup".as_ref(), backup.as_os_str()]);
    assert!(ok, "{err}");
    server.stop().await;
    let restored = dir.0.join("restored");
    let (ok, _, err) = run(&restored, &["restore".as_ref(), backup.as_os_str()]);
    assert!(ok, "{err}");
    let server = TestServer::builder().data_dir(&restored).start().await;
    let admin = token_with("ops", |c| c.roles = vec!["admin".into()]);
    let address = eventually(
        "the address was never anonymised",
        Duration::from_millis(50),
        async || {
            let response = server
                .http(reqwest::Method::GET, "/v1/admin/audit?user=old-user", None)
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            let page: Value = response.json().await.unwrap();
            let address = page["events"][0]["address"].clone();
            (address != "203.0.113.7").then_some(address)
        },
    )
    .await;
    assert_eq!(address, "203.0.113.0");
    let full: Option<String> = rusqlite::Connection::open(restored.join("skald.db"))
        .unwrap()
        .query_row(
            "SELECT address FROM audit WHERE user = 'old-user'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(full, None, "the full address is gone from the file");
    server.stop().await;
}
