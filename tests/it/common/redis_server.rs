//! A real `redis-server` process per test, on a free loopback port, with no
//! persistence, that a test can stop (to see how the server copes with Redis
//! being down), pause, and restart on the same port.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

/// How long a started server has to answer PING.
const START_WAIT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: TempDir::new("redis"),
        };
        // Someone may take the free port before redis-server binds it: then
        // it exits at once, and another port is tried.
        for _ in 0..4 {
            match server.spawn() {
                Ok(()) => return server,
                Err(Exited(_)) => server.port = free_port(),
            }
        }
        server.spawn().unwrap_or_else(|Exited(why)| panic!("{why}"));
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|Exited(why)| panic!("{why}"));
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Whether the server answers PING right now.
    pub fn answers(&self) -> bool {
        ping(self.port)
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// Starts redis-server and waits until it answers PING. Panics if it
    /// cannot start or does not answer within [`START_WAIT`].
    fn spawn(&mut self) -> Result<(), Exited> {
        let log = self.dir.0.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: these tests start real Redis servers. \
                 Run ./scripts/test, which installs it (Debian package redis-server)."
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(Exited(format!(
                    "redis-server on port {} exited ({status}): {}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "redis-server on port {} did not answer PING within {START_WAIT:?}: {}",
                    self.port,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// redis-server exited while starting (its log says why).
struct Exited(String);

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused (SIGSTOPped) server too.
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Sends an inline PING; true on `+PONG`.
fn ping(port: u16) -> bool {
    let addr = ([127, 0, 0, 1], port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    let ok = stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n";
    let _ = stream.shutdown(Shutdown::Both);
    ok
}
