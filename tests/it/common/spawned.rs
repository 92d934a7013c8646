//! The real `skald` binary as a child process: what tests use where the
//! process itself is the subject (SIGKILL, its memory, its exit code).

use std::process::{Child, Command, Stdio};

/// The binary with nothing from the test runner's environment but `PATH`,
/// its data dir, and a simulated model that answers at once.
pub fn skald(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skald"));
    command.env_clear();
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    command.env("SKALD_DATA_DIR", data_dir);
    command.env("SKALD_SIMULATED_TOKENS_PER_SECOND", "0");
    command.env("SKALD_SIMULATED_ANSWER_TOKENS", "7");
    command
}

/// Serves on `127.0.0.1:port` with the test secret and a slow model (five
/// tokens a second, fifty-token answers), plus `env`; returns once
/// `/healthz` answers.
pub async fn start(data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut command = skald(data);
    command
        .env("SKALD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SKALD_JWT_SECRET", super::SECRET)
        .env("SKALD_SIMULATED_TOKENS_PER_SECOND", "5")
        .env("SKALD_SIMULATED_ANSWER_TOKENS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    super::wait_healthy(port).await;
    child
}

/// The resident memory of a process, in bytes (`VmRSS` of /proc).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}
