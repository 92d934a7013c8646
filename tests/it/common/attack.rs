//! Tools of the hostile-client suite (`hostile.rs`): a configuration file
//! for the spawned binary, a sampler of its resident memory, raw WebSocket
//! connections whose two halves an attack drives on its own, a tally of
//! what the server wrote on them, and unsigned (`alg: none`) tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// Writes `toml` as `skald.toml` in `dir`; the path is for `SKALD_CONFIG`.
pub fn config_file(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("skald.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The binary as [`super::spawned::start`] spawns it, its log (stdout,
/// and stderr for a panic) written to `log` instead of dropped, so that a
/// failing case can show what the server said.
pub async fn start_logged(
    data: &Path,
    port: u16,
    env: &[(&str, &str)],
    log: &Path,
) -> std::process::Child {
    let mut command = super::spawned::skald(data);
    let file = std::fs::File::create(log).unwrap();
    command
        .env("SKALD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SKALD_JWT_SECRET", super::SECRET)
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    super::wait_healthy(port).await;
    child
}

/// The last `lines` lines of a file (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The highest resident memory of a process, read from /proc every few
/// milliseconds until [`RssSampler::stop`].
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(super::spawned::rss_bytes(pid)));
        // Fallible: the process may be killed while this runs (a failing
        // case drops its server).
        let rss = move || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib * 1024)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let Some(now) = rss() else { return };
                    peak.fetch_max(now, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        RssSampler { peak, stop, task }
    }

    /// The peak so far, sampling once more now.
    pub async fn stop(mut self, pid: u32) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
        self.peak
            .fetch_max(super::spawned::rss_bytes(pid), Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// A TCP connection upgraded to `/v1/ws` (with a bearer token if given),
/// nothing of the server's frames read yet: the handshake is read byte by
/// byte so that no frame is swallowed with it.
pub async fn upgraded(addr: SocketAddr, token: Option<&str>) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(super::raw_ws::upgrade_request(addr, token).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, tcp.read_u8())
            .await
            .expect("the upgrade is answered")
            .expect("the connection stays open during the handshake");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// What the server wrote on a connection, frame by frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub texts: u64,
    pub pings: u64,
    pub pongs: u64,
    /// The code of the server's close frame, if one came.
    pub close: Option<u16>,
    pub bytes: u64,
}

/// Reads server frames from `read` until the connection ends, a close frame
/// comes, or `stop` is set (checked at least every 100 ms); counts them.
pub async fn tally<R: AsyncReadExt + Unpin>(mut read: R, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut buffered = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some((frame, used)) = super::raw_ws::parse(&buffered) {
            match frame.opcode {
                0x1 => tally.texts += 1,
                0x9 => tally.pings += 1,
                0xA => tally.pongs += 1,
                0x8 => {
                    tally.close = frame
                        .payload
                        .get(..2)
                        .map(|code| u16::from_be_bytes([code[0], code[1]]));
                    return tally;
                }
                _ => {}
            }
            buffered.drain(..used);
        }
        if stop.load(Ordering::Relaxed) {
            return tally;
        }
        match tokio::time::timeout(Duration::from_millis(100), read.read(&mut chunk)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return tally,
            Ok(Ok(n)) => {
                tally.bytes += n as u64;
                buffered.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// A token whose header is `header` (e.g. `{"alg":"none"}`), with valid
/// claims for `sub` and the given signature segment (empty: unsigned).
pub fn unsigned_token(header: &serde_json::Value, sub: &str, signature: &str) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = skald::auth::now_secs();
    let claims = serde_json::json!({"sub": sub, "exp": now + 600, "iat": now});
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}
