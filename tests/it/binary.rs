//! The `skald` binary as a user runs it: no configuration at all, a token
//! from `skald token`, a chat, and a clean stop on SIGTERM.

use std::process::{Command, Stdio};

use crate::common::spawned::{run_ok, sigterm, skald, spawn_reading_stdout, start, wait_exit};
use crate::common::{collect_stream, messages_via_http, send, Client, TempDir, WAIT};

#[tokio::test]
async fn runs_with_nothing_configured_and_mints_dev_tokens() {
    let data = TempDir::new("binary");
    let token = run_ok(skald(&data.0).args(["token", "--sub", "alice"]))
        .trim()
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert!(
        data.0.join("dev-jwt-secret").is_file(),
        "development secret kept in the data dir"
    );

    let mut command = skald(&data.0);
    command
        .env("SKALD_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::null());
    let (mut child, rx) = spawn_reading_stdout(command);
    let mut logs = Vec::new();
    let address = loop {
        let line = rx.recv_timeout(WAIT).expect("the server logs its address");
        logs.push(line.clone());
        if let Some(rest) = line.split("ws://").nth(1) {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    assert!(
        logs.iter().any(|l| l.contains("skald token --sub")),
        "tells how to get a token: {logs:?}"
    );
    let url = format!("ws://{address}/v1/ws");
    let mut client = Client::connect(&url, Some(&token)).await;
    assert_eq!(client.recv().await["user"], "alice");
    let ack = send(&mut client, "1", None, "hello").await;
    let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(result.text, crate::common::simulated_answer("hello", 7));

    // An operator's token for development opens the Admin API; alice's
    // does not.
    let admin = run_ok(skald(&data.0).args(["token", "--sub", "ops", "--role", "admin"]))
        .trim()
        .to_owned();
    let bots = format!("http://{address}/v1/admin/bots");
    for (bearer, status) in [(&admin, 200), (&token, 403)] {
        let response = reqwest::Client::new()
            .get(&bots)
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
    }

    // The container's health check command.
    run_ok(
        skald(&data.0)
            .env("SKALD_LISTEN", &address)
            .arg("healthcheck"),
    );

    sigterm(&child);
    let status = wait_exit(&mut child, WAIT);
    assert!(status.success(), "exit status {status}");
    assert_eq!(client.closed().await, crate::common::Closed::Code(1001));
}

/// SIGKILL mid-answer, then a restart: the user message survived (it was
/// durable before its `ack`), and the interrupted answer is closed as
/// `error` holding what was checkpointed (a prefix of what was streamed,
/// at most a checkpoint interval short), in the history and to a resend of
/// its `send.id` alike.
#[tokio::test]
async fn an_answer_interrupted_by_sigkill_is_closed_with_what_was_streamed() {
    let data = TempDir::new("sigkill");
    answer_interrupted_by_sigkill(&data.0, &[], Restart::ClosesEveryOpenAnswer).await;
}

/// What the restarted server does with the answer its predecessor left.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restart {
    /// A store of this instance alone: it closes the answer at start.
    ClosesEveryOpenAnswer,
    /// A shared store: another instance could still be streaming it, so
    /// it stays open until nobody checkpointed it for a while (closing it
    /// then is tested in `history_cql.rs`).
    LeavesRecentAnswersOpen,
}

/// The SIGKILL test on the store `env` configures (empty: the embedded one).
pub(crate) async fn answer_interrupted_by_sigkill(
    data: &std::path::Path,
    env: &[(&str, &str)],
    restart: Restart,
) {
    let port = crate::common::redis_server::free_port();
    let mut child = start(data, port, env).await;
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let mut client = Client::connect(&url, Some(&crate::common::token("kim"))).await;
    client.recv().await;
    let ack = send(&mut client, "k-1", None, "do not lose me").await;
    // Five tokens a second: after 2.5 s, two checkpoints (one a second) hold
    // a part of what was streamed.
    let mut streamed = String::new();
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        let frame = client.recv().await;
        if frame["type"] == "delta" {
            streamed.push_str(frame["text"].as_str().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let mut child = start(data, port, env).await;
    let conversation = ack["conversation_id"].as_str().unwrap();
    let body = messages_via_http(port, "kim", conversation).await;
    assert_eq!(body["messages"][0]["content"], "do not lose me", "{body}");
    let answer = &body["messages"][1];
    match restart {
        Restart::ClosesEveryOpenAnswer => assert_eq!(answer["finish_reason"], "error", "{body}"),
        Restart::LeavesRecentAnswersOpen => {
            assert_eq!(answer["finish_reason"], serde_json::Value::Null, "{body}")
        }
    }
    let stored = answer["content"].as_str().unwrap();
    assert!(!stored.is_empty(), "a checkpoint was kept: {body}");
    assert!(
        streamed.starts_with(stored),
        "the stored answer is a prefix of what was streamed: {stored:?} / {streamed:?}"
    );
    // A resend of the id: its ack, and a done that says the same as the
    // history, never a second message.
    let mut client = Client::connect(&url, Some(&crate::common::token("kim"))).await;
    client.recv().await;
    client
        .send(serde_json::json!({"type":"send","id":"k-1","text":"do not lose me"}))
        .await;
    assert_eq!(client.recv().await, ack);
    let done = client.recv().await;
    assert_eq!(done["finish_reason"], "error");
    assert_eq!(done["error"]["code"], "unavailable");
    let body = messages_via_http(port, "kim", conversation).await;
    assert_eq!(body["messages"].as_array().unwrap().len(), 2, "{body}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn refuses_bad_configuration_with_a_clear_error() {
    let data = TempDir::new("binary-bad");
    let output = skald(&data.0)
        .env("SKALD_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen"), "{stderr}");
}

/// What the container does: an unprivileged user whose only writable place
/// is the data dir (here: `nobody`, working directory `/`).
#[tokio::test]
async fn runs_as_an_unprivileged_user_writing_only_its_data_dir() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root || Command::new("setpriv").arg("--version").output().is_err() {
        return crate::common::skip_or_fail(
            "root",
            "runs_as_an_unprivileged_user_writing_only_its_data_dir",
            "this test needs root and setpriv to switch to nobody",
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("nobody");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.0.join("skald");
    std::fs::copy(env!("CARGO_BIN_EXE_skald"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.0.join("data");
    std::fs::create_dir(&data).unwrap();
    assert!(Command::new("chown")
        .args(["65534:65534"])
        .arg(&data)
        .status()
        .unwrap()
        .success());
    let port = crate::common::redis_server::free_port();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .current_dir("/")
        .env_clear()
        .env("SKALD_DATA_DIR", &data)
        .env("SKALD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SKALD_SIMULATED_TOKENS_PER_SECOND", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::common::wait_healthy(port).await;
    // It generated its development secret and its database in the data dir.
    let token = run_ok(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&binary)
            .args(["token", "--sub", "nobody-user"])
            .current_dir("/")
            .env_clear()
            .env("SKALD_DATA_DIR", &data),
    )
    .trim()
    .to_owned();
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/v1/ws"), Some(&token)).await;
    client.recv().await;
    let ack = send(&mut client, "1", None, "hello").await;
    let result = collect_stream(&mut client, ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(result.done["finish_reason"], "stop");
    assert!(data.join("skald.db").is_file());
    child.kill().unwrap();
    child.wait().unwrap();
}
