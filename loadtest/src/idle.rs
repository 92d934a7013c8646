//! `idle`: hold N authenticated idle sessions and measure the server's
//! memory per session from `/proc/PID/status`.
//!
//! One process can hold at most its open-files limit of sockets (20 000 on
//! the team's machines), so `--processes K` spreads the sessions over K child
//! processes of this same binary, each on its own range of 127.x.y.z source
//! addresses. Children print `IDLE-READY <open> <failed>` when their sessions
//! are up, then hold them until their stdin closes or the hold time ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde::Serialize;
use skald_protocol::ServerFrame;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Target, Ws};
use crate::procfs::rss_kib;

/// Sockets a process keeps for itself (stdio, runtime, listeners).
const RESERVED_FDS: u64 = 64;
pub const MAX_HOLD_S: u64 = 3_600;

#[derive(Clone, Debug, Serialize)]
pub struct IdleConfig {
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    pub sessions: u64,
    /// Connections in flight at once while opening.
    pub concurrency: usize,
    /// How long to hold the sessions once open.
    pub hold_s: u64,
    /// Wait after the last session opened before reading the server's memory.
    pub settle_s: u64,
    pub server_pid: Option<u32>,
    pub processes: u32,
    pub source_offset: u64,
    pub user_prefix: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleReport {
    pub sessions: u64,
    pub open: u64,
    pub failed: u64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub kib_per_session: Option<f64>,
    pub open_s: f64,
}

/// This process's soft open-files limit.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The most sessions one process can hold.
pub fn sessions_per_process_ceiling() -> u64 {
    open_files_limit()
        .unwrap_or(1024)
        .saturating_sub(RESERVED_FDS)
}

/// Opens this process's share of sessions; returns them and the failures.
async fn open_sessions(config: &IdleConfig) -> anyhow::Result<(Vec<Ws>, BTreeMap<String, u64>)> {
    let target = Target::parse(&config.url)?;
    let ceiling = sessions_per_process_ceiling();
    if config.sessions > ceiling {
        bail!(
            "{} sessions exceed this process's open-files ceiling of {ceiling}: use --processes",
            config.sessions
        );
    }
    let gate = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(config.sessions as usize);
    for index in 0..config.sessions {
        let permit = gate.clone().acquire_owned().await?;
        let (target, secret) = (target.clone(), config.secret.clone());
        let user = format!("{}-{}", config.user_prefix, config.source_offset + index);
        let source = client::source_ip(config.source_offset + index);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let token = client::mint_token(&secret, &user, MAX_HOLD_S + 600)
                .map_err(|_| "token".to_owned())?;
            let mut ws = timeout(
                Duration::from_secs(30),
                client::connect(&target, &token, Some(source)),
            )
            .await
            .map_err(|_| "connect_timeout".to_owned())?
            .map_err(|e| format!("connect: {}", e.root_cause()))?;
            let ready = timeout(Duration::from_secs(30), async {
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message {
                        match serde_json::from_str::<ServerFrame>(text.as_str()) {
                            Ok(ServerFrame::Ready { .. }) => return Ok(()),
                            Ok(ServerFrame::Error { code, .. }) => {
                                return Err(code.as_str().to_owned())
                            }
                            _ => {}
                        }
                    }
                }
                Err("closed".to_owned())
            })
            .await
            .map_err(|_| "ready_timeout".to_owned())?;
            ready.map(|()| ws)
        }));
    }
    let mut open = Vec::new();
    let mut failed = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(Ok(ws)) => open.push(ws),
            Ok(Err(kind)) => *failed.entry(kind).or_default() += 1,
            Err(_) => *failed.entry("panic".into()).or_default() += 1,
        }
    }
    Ok((open, failed))
}

/// Keeps the sessions alive (answering pings) until `until` or `stop`.
async fn hold(sessions: Vec<Ws>, until: Instant, stop: impl std::future::Future<Output = ()>) {
    let readers: Vec<_> = sessions
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                // Reading answers the server's pings (tungstenite queues the pong).
                while let Some(Ok(_)) = ws.next().await {}
            })
        })
        .collect();
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        () = stop => {}
    }
    for reader in readers {
        reader.abort();
    }
}

/// Runs `idle` in this process, or as the parent of `processes` children.
pub async fn idle(config: IdleConfig) -> anyhow::Result<IdleReport> {
    if config.hold_s > MAX_HOLD_S {
        bail!("--hold must be at most {MAX_HOLD_S} s");
    }
    let before = config.server_pid.map(rss_kib).transpose()?;
    let started = Instant::now();
    let (open, failed, local) = if config.processes <= 1 {
        let (sessions, failed) = open_sessions(&config).await?;
        for (kind, n) in &failed {
            tracing::warn!("{n} sessions failed: {kind}");
        }
        (sessions.len() as u64, failed.values().sum(), Some(sessions))
    } else {
        let (open, failed, children) = spawn_children(&config).await?;
        return finish_with_children(config, before, started, open, failed, children).await;
    };
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(config.settle_s)).await;
    let report = measure(&config, before, open, failed, open_s)?;
    eprintln!("{}", serde_json::to_string(&report)?);
    if let Some(sessions) = local {
        hold(
            sessions,
            Instant::now() + Duration::from_secs(config.hold_s),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await;
    }
    Ok(report)
}

fn measure(
    config: &IdleConfig,
    before: Option<u64>,
    open: u64,
    failed: u64,
    open_s: f64,
) -> anyhow::Result<IdleReport> {
    let after = config.server_pid.map(rss_kib).transpose()?;
    let kib_per_session = match (before, after) {
        (Some(b), Some(a)) if open > 0 => Some((a as f64 - b as f64) / open as f64),
        _ => None,
    };
    Ok(IdleReport {
        sessions: config.sessions,
        open,
        failed,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_session,
        open_s,
    })
}

type Children = Vec<tokio::process::Child>;

async fn spawn_children(config: &IdleConfig) -> anyhow::Result<(u64, u64, Children)> {
    let exe = std::env::current_exe()?;
    let k = u64::from(config.processes);
    let share = config.sessions.div_ceil(k);
    let mut children = Vec::new();
    let mut lines = Vec::new();
    for child in 0..k {
        let sessions = share.min(config.sessions.saturating_sub(child * share));
        if sessions == 0 {
            break;
        }
        let mut process = tokio::process::Command::new(&exe)
            .args(["idle", "--child", "--url", &config.url, "--processes", "1"])
            .args(["--sessions", &sessions.to_string()])
            .args([
                "--source-offset",
                &(config.source_offset + child * share).to_string(),
            ])
            .args(["--concurrency", &config.concurrency.to_string()])
            .args(["--hold", &config.hold_s.to_string()])
            .args(["--settle", "0", "--user-prefix", &config.user_prefix])
            .env("SKALD_LOADTEST_SECRET", &config.secret)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a child process")?;
        let stdout = process.stdout.take().context("child stdout")?;
        lines.push(BufReader::new(stdout).lines());
        children.push(process);
    }
    let (mut open, mut failed) = (0, 0);
    for mut child_lines in lines {
        let deadline = Duration::from_secs(600);
        loop {
            let line = timeout(deadline, child_lines.next_line())
                .await
                .context("a child did not open its sessions in 600 s")??
                .context("a child exited before opening its sessions")?;
            if let Some(rest) = line.strip_prefix("IDLE-READY ") {
                let mut parts = rest
                    .split_whitespace()
                    .map(|p| p.parse::<u64>().unwrap_or(0));
                open += parts.next().unwrap_or(0);
                failed += parts.next().unwrap_or(0);
                break;
            }
        }
    }
    Ok((open, failed, children))
}

async fn finish_with_children(
    config: IdleConfig,
    before: Option<u64>,
    started: Instant,
    open: u64,
    failed: u64,
    mut children: Children,
) -> anyhow::Result<IdleReport> {
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(config.settle_s)).await;
    let report = measure(&config, before, open, failed, open_s)?;
    eprintln!("{}", serde_json::to_string(&report)?);
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(config.hold_s)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for child in &mut children {
        drop(child.stdin.take()); // EOF: the child closes its sessions and exits
    }
    for child in &mut children {
        let _ = timeout(Duration::from_secs(30), child.wait()).await;
    }
    Ok(report)
}

/// A child's part: open, report `IDLE-READY`, hold until stdin closes.
pub async fn child(config: IdleConfig) -> anyhow::Result<()> {
    let (sessions, failed) = open_sessions(&config).await?;
    println!(
        "IDLE-READY {} {}",
        sessions.len(),
        failed.values().sum::<u64>()
    );
    let stop = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    hold(
        sessions,
        Instant::now() + Duration::from_secs(config.hold_s + 60),
        stop,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_open_files_ceiling() {
        assert!(open_files_limit().is_some());
        assert!(sessions_per_process_ceiling() < open_files_limit().unwrap());
    }
}
