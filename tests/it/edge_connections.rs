//! Connections that never finish (slowloris), against the accept loop of
//! `edge::accept`: silent, dripping and idle keep-alive connections are
//! closed by the header-read timeout; at a pending cap the oldest pending
//! connection makes room; and under a lowered open-files limit, a host that
//! opens more connections than the process may hold leaves health checks
//! and sessions served. Figures (first-token times, RSS, CPU) are printed,
//! never asserted on time; what is asserted is that everyone is served and
//! that the attack's connections end.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::spawned::{
    cpu_seconds, open_fds, rss_bytes, skald_with_open_files, start_command,
};
use crate::common::{collect_stream, send, token, Client, Closed, TempDir, TestServer, WAIT};

/// Whether the server closes `tcp` (EOF or reset) within the wait; a
/// response before the close is read and passed over.
async fn closed_by_server(tcp: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Whether `tcp` is still open after `wait` (nothing to read, no end).
async fn still_open(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(wait, tcp.read(&mut buf))
        .await
        .is_err()
}

/// Sends `first`, then one byte of a header line every `every`, at most
/// `bytes` of them; returns once the server closed the connection (true)
/// or the drip ran out (false).
async fn drip(address: SocketAddr, first: &'static [u8], every: Duration, bytes: usize) -> bool {
    let Ok(tcp) = TcpStream::connect(address).await else {
        return true;
    };
    let (mut read, mut write) = tcp.into_split();
    let writing = async move {
        let _ = write.write_all(first).await;
        for _ in 0..bytes {
            tokio::time::sleep(every).await;
            if write.write_all(b"x").await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        closed = closed_by_server(&mut read) => closed,
        () = writing => false,
    }
}

#[tokio::test]
async fn silent_dripping_and_idle_keep_alive_connections_are_closed() {
    let server = TestServer::with_config(|c| c.connections.header_read_timeout_ms = 300).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let dripping = tokio::spawn(drip(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nX-Drip: ",
        Duration::from_millis(50),
        400,
    ));
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: skald\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0u8; 4096];
    let n = idle.read(&mut response).await.unwrap();
    assert!(
        String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 200"),
        "the keep-alive connection's first request is served"
    );

    assert!(
        closed_by_server(&mut silent).await,
        "a silent connection is closed"
    );
    assert!(dripping.await.unwrap(), "a dripping request is closed");
    assert!(
        closed_by_server(&mut idle).await,
        "an idle keep-alive connection is closed"
    );
    server.stop().await;
}

#[tokio::test]
async fn at_the_per_address_cap_the_oldest_pending_connection_makes_room() {
    let server = TestServer::with_config(|c| {
        c.connections.max_pending_per_address = 4;
        // Nothing here may end by its own timeout.
        c.connections.header_read_timeout_ms = 60_000;
        c.auth.auth_timeout_ms = 60_000;
    })
    .await;
    // A WebSocket waiting for its hello is pending, and the oldest.
    let mut waiting = Client::try_connect(&server.url(), None, None)
        .await
        .unwrap();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // A health check from the same address: served, and the oldest
    // pending connection (the WebSocket) is closed for it, 4408.
    let mut health = TcpStream::connect(server.addr).await.unwrap();
    health
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: skald\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    health.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(matches!(waiting.closed().await, Closed::Code(4408)));
    // Three pending now: a fourth fits, a fifth closes the oldest.
    let _fourth = TcpStream::connect(server.addr).await.unwrap();
    for tcp in &mut silent {
        assert!(still_open(tcp, Duration::from_millis(200)).await);
    }
    let _fifth = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut silent[0]).await);
    for tcp in &mut silent[1..] {
        assert!(still_open(tcp, Duration::from_millis(200)).await);
    }
    // An authenticated session is not pending: it stays while more come.
    let mut user = server.client("alice").await;
    let ack = send(&mut user, "m1", None, "still here?").await;
    let _more: Vec<TcpStream> = futures::future::join_all(
        (0..8).map(|_| async { TcpStream::connect(server.addr).await.unwrap() }),
    )
    .await;
    let result = collect_stream(&mut user, ack["stream_id"].as_str().unwrap(), 0).await;
    assert_eq!(result.done["finish_reason"], "stop");
    server.stop().await;
}

/// The open-files limit the attacked binary runs under.
const OPEN_FILES: u32 = 256;
/// Silent connections and dripping ones, from the same host as the health
/// checks and the users: together four times the limit.
const SILENT: usize = 600;
const DRIPPING: usize = 500;
/// The attack may not grow the server by more than this (1,100 connections
/// of hyper's state are a few MiB; an unbounded server holds them all).
const RSS_GROWTH_BOUND: u64 = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_host_over_the_open_files_limit_leaves_everyone_served_with_the_reserve() {
    slowloris_under_a_lowered_limit("reserve", "fd_reserve = 64").await;
}

/// Without a reserve the process runs out of descriptors: the accept loop
/// closes the oldest pending connection and backs off instead of spinning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_host_that_exhausts_descriptors_leaves_everyone_served() {
    slowloris_under_a_lowered_limit(
        "emfile",
        "fd_reserve = 0\nmax_pending = 100000\nmax_pending_per_address = 100000",
    )
    .await;
}

async fn slowloris_under_a_lowered_limit(case: &str, connections: &str) {
    let data = TempDir::new(&format!("slowloris-{case}"));
    let config = data.0.join("skald.toml");
    std::fs::write(
        &config,
        format!("[connections]\nheader_read_timeout_ms = 3000\n{connections}\n"),
    )
    .unwrap();
    let port = crate::common::redis_server::free_port();
    let mut child = start_command(
        skald_with_open_files(&data.0, OPEN_FILES),
        port,
        &[
            ("SKALD_CONFIG", config.to_str().unwrap()),
            ("SKALD_SIMULATED_TOKENS_PER_SECOND", "50"),
            ("SKALD_SIMULATED_ANSWER_TOKENS", "10"),
        ],
    )
    .await;
    let pid = child.id();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let url = format!("ws://{address}/v1/ws");

    let mut bystander = Client::connect(&url, Some(&token("bystander"))).await;
    bystander.recv().await;
    let before = first_token(&mut bystander, "before").await;
    let baseline = rss_bytes(pid);
    let cpu_before = cpu_seconds(pid);

    let started = Instant::now();
    let mut attack = Vec::new();
    for i in 0..SILENT + DRIPPING {
        attack.push(if i < SILENT {
            tokio::spawn(drip(address, b"", Duration::from_secs(1), 0))
        } else {
            tokio::spawn(drip(
                address,
                b"GET /v1/ws HTTP/1.1\r\nHost: skald\r\nX-Drip: ",
                Duration::from_secs(1),
                30,
            ))
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut peak = rss_bytes(pid);
    let fds_during = open_fds(pid);

    // Health checks from the attacker's own address.
    let mut health_ms = Vec::new();
    for _ in 0..5 {
        let at = Instant::now();
        let status = reqwest::Client::builder()
            .timeout(WAIT)
            .build()
            .unwrap()
            .get(format!("http://{address}/healthz"))
            .send()
            .await
            .expect("/healthz answers during the attack")
            .status();
        assert_eq!(status, 200);
        health_ms.push(at.elapsed().as_millis());
        peak = peak.max(rss_bytes(pid));
    }
    // The open session goes on, and a new user gets in.
    let during = first_token(&mut bystander, "during").await;
    let mut newcomer = Client::connect(&url, Some(&token("newcomer"))).await;
    assert_eq!(newcomer.recv().await["type"], "ready");
    let newcomer_first = first_token(&mut newcomer, "newcomer").await;
    peak = peak.max(rss_bytes(pid));

    let mut closed = 0;
    for task in attack {
        closed += usize::from(task.await.unwrap());
    }
    let attack_secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    eprintln!(
        "slowloris[{case}]: {} connections under ulimit -n {OPEN_FILES}: bystander first token \
         {before:.1} ms before, {during:.1} ms during, a newcomer's {newcomer_first:.1} ms; \
         /healthz {health_ms:?} ms; RSS {:.1} MiB before, {:.1} MiB peak; {fds_during} fds \
         open; server CPU {cpu:.2} s over {attack_secs:.1} s; {closed} closed by the server",
        SILENT + DRIPPING,
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0,
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_BOUND,
        "RSS grew by {} bytes",
        peak - baseline
    );
    assert_eq!(
        closed,
        SILENT + DRIPPING,
        "every connection of the attack is closed by the server"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Sends a message and reads its answer whole; the time from the send to
/// its first delta, in milliseconds.
async fn first_token(client: &mut Client, id: &str) -> f64 {
    let sent = Instant::now();
    client
        .send(json!({"type": "send", "id": id, "text": "still served?"}))
        .await;
    let ack = client.recv_type("ack").await;
    let stream_id = ack["stream_id"].as_str().unwrap().to_owned();
    let first = client.recv_type("delta").await;
    let first_ms = sent.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(first["seq"], 0);
    let rest = collect_stream(client, &stream_id, 1).await;
    assert_eq!(rest.done["finish_reason"], "stop");
    first_ms
}

/// The counts are the process's: with `/metrics` on a listener of its own,
/// the gauges count the main listener's connections too (a scrape from the
/// metrics listener once reset them to its own one connection).
#[tokio::test]
async fn the_connection_gauges_count_every_listener_of_the_process() {
    const HELD: usize = 5;
    let data = TempDir::new("gauges-across-listeners");
    let port = crate::common::redis_server::free_port();
    let metrics_port = crate::common::redis_server::free_port();
    let mut child = crate::common::spawned::start(
        &data.0,
        port,
        &[("SKALD_METRICS_LISTEN", &format!("127.0.0.1:{metrics_port}"))],
    )
    .await;
    // Connections on the main listener that never finish their request.
    let mut held = Vec::new();
    for _ in 0..HELD {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(tcp);
    }
    let gauge = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    let scrape = || async {
        reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // The held connections are accepted asynchronously: look until they
    // are all counted (the scrape's own connection is one more).
    let deadline = Instant::now() + WAIT;
    let (open, pending) = loop {
        let text = scrape().await;
        let open = gauge(&text, "skald_connections_open ");
        let pending = gauge(&text, "skald_connections_pending ");
        if open > HELD as f64 || Instant::now() > deadline {
            break (open, pending);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(open, (HELD + 1) as f64, "open: held + the scrape");
    assert_eq!(pending, (HELD + 1) as f64, "pending: held + the scrape");
    drop(held);
}
