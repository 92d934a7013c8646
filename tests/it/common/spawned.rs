//! The real `skald` binary as a child process: what tests use where the
//! process itself is the subject (SIGKILL, its memory, its exit code).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

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

/// The binary under an open-files limit of `limit` (soft and hard, as
/// `ulimit -n` sets them, so the server cannot raise it).
pub fn skald_with_open_files(data_dir: &std::path::Path, limit: u32) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!(
            "ulimit -n {limit} && exec {}",
            env!("CARGO_BIN_EXE_skald")
        ))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SKALD_DATA_DIR", data_dir)
        .env("SKALD_SIMULATED_TOKENS_PER_SECOND", "0")
        .env("SKALD_SIMULATED_ANSWER_TOKENS", "7");
    command
}

/// Serves on `127.0.0.1:port` with the test secret and a slow model (five
/// tokens a second, fifty-token answers), plus `env`; returns once
/// `/healthz` answers.
pub async fn start(data: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Child {
    start_command(skald(data), port, env).await
}

/// [`start`] for a command of [`skald`] or [`skald_with_open_files`].
pub async fn start_command(mut command: Command, port: u16, env: &[(&str, &str)]) -> Child {
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

/// Runs `command` to its end: what it printed on stdout. Fails the test,
/// with what the command wrote to stderr, if it failed.
pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits (at most `within`) until `child` exited: how it exited.
pub fn wait_exit(child: &mut Child, within: std::time::Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Spawns `command` with its stdout piped (stderr as the command has it):
/// the child, and the lines of its stdout as they come, read on a thread.
pub fn spawn_reading_stdout(mut command: Command) -> (Child, Receiver<String>) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
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

/// The CPU time a process has used so far (user and system), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 14th and 15th fields of the line.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

/// How many file descriptors a process holds open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}
