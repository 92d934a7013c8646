//! An OpenAI-compatible chat-completions server that answers with
//! deterministic text at a controlled pace.
//!
//! It exists so that Skald's streaming path can be tested and load-tested
//! against a real HTTP upstream (driven by the real async-openai client)
//! without a model provider: answers are reproducible, the token rate is a
//! parameter, and faults (dropped connections, hangs, 500, 503 and 429
//! answers, errors inside the stream, slow first tokens) and the shapes real
//! upstreams send (thinking in `reasoning_content`, `reasoning` or
//! `<think>` tags, tool calls, an echo of the question) are chosen per request
//! through the `model` field (see [`faults`] for the table).
//! The model `mock-stamped` is the measurement mode: each token carries the
//! time the mock sent it (see [`stamped_token`]).
//! [`MockStats`] lets tests prove what happened on the upstream side, in
//! particular that a cancelled Skald stream really closed its upstream request.

mod answer;
mod faults;
mod handler;
mod plan;
mod request;
mod sse;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use answer::{
    answer_text, echo_tokens, parse_stamps, reasoning_text, stamped_token, think_content,
    tool_call_arguments, DEFAULT_TOOL_NAME,
};
pub use faults::DEFAULT_REASONING_TOKENS;

/// The model name that turns on the measurement mode: every token's text is
/// `@<µs since the Unix epoch when the mock sent it> `.
pub const STAMPED_MODEL: &str = "mock-stamped";

/// Microseconds since the Unix epoch (the clock stamps are read against).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// How the mock answers a normal (fault-free) request.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Content tokens per second; 0 (or any non-positive value) sends them as
    /// fast as possible.
    pub tokens_per_second: f64,
    /// Length of every answer in tokens, unless the request's
    /// `max_completion_tokens` / `max_tokens` cuts it shorter.
    pub answer_tokens: u32,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            tokens_per_second: 50.0,
            answer_tokens: 120,
        }
    }
}

/// Counters the tests read to prove what happened upstream.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MockStats {
    /// Chat-completion requests received (including rejected ones).
    pub requests: u64,
    /// Streams that ended normally (finish chunk, then `[DONE]`), plus
    /// non-streaming answers sent; an injected error is not a completion.
    pub completed: u64,
    /// Requests whose response was dropped before completion because the
    /// client went away (deliberate fault drops are not counted).
    pub client_disconnects: u64,
    /// Answer tokens written (content words, echo tokens, tool-call
    /// argument fragments; with `think-split`, the chunks holding answer text).
    pub tokens_sent: u64,
    /// Thinking tokens written (the reasoning modes; with `think-split`, the
    /// chunks before the answer).
    pub reasoning_tokens_sent: u64,
}

/// Live counters behind [`MockStats`].
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    completed: AtomicU64,
    client_disconnects: AtomicU64,
    tokens_sent: AtomicU64,
    reasoning_tokens_sent: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> MockStats {
        MockStats {
            requests: self.requests.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::SeqCst),
            client_disconnects: self.client_disconnects.load(Ordering::SeqCst),
            tokens_sent: self.tokens_sent.load(Ordering::SeqCst),
            reasoning_tokens_sent: self.reasoning_tokens_sent.load(Ordering::SeqCst),
        }
    }
}

/// State shared by every request of one mock server.
struct Shared {
    config: MockConfig,
    counters: Counters,
    last_request: Mutex<Option<serde_json::Value>>,
    /// Flips to `true` once on shutdown; streams and hangs watch it so the
    /// graceful shutdown never waits on an endless response.
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn new(config: MockConfig) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            counters: Counters::default(),
            last_request: Mutex::new(None),
            shutdown: watch::channel(false).0,
        })
    }
}

/// A mock upstream running in the background of the current tokio runtime.
///
/// Dropping it shuts the server down (without waiting); [`shutdown`]
/// (MockUpstream::shutdown) also waits until it has stopped.
pub struct MockUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl MockUpstream {
    /// Serves on the given listener until the returned handle is dropped or shut down.
    pub async fn start(listener: TcpListener, config: MockConfig) -> std::io::Result<MockUpstream> {
        let addr = listener.local_addr()?;
        let shared = Shared::new(config);
        let mut stop = shared.shutdown.subscribe();
        let signal = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        let task = tokio::spawn(run(listener, shared.clone(), signal));
        Ok(MockUpstream {
            shared,
            addr,
            task: Some(task),
        })
    }

    /// The OpenAI base URL of this server, e.g. `http://127.0.0.1:PORT/v1`.
    /// Serves on a free port of 127.0.0.1, at this pace and length (what
    /// the tests and the examples start).
    pub async fn on_loopback(
        tokens_per_second: f64,
        answer_tokens: u32,
    ) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let config = MockConfig {
            tokens_per_second,
            answer_tokens,
        };
        MockUpstream::start(listener, config).await
    }

    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}/v1")
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.shared.counters.snapshot()
    }

    /// The JSON body of the most recent chat request that parsed as JSON.
    pub fn last_request(&self) -> Option<serde_json::Value> {
        lock(&self.shared.last_request).clone()
    }

    /// Stops accepting, ends open streams and hangs, and waits for the server to stop.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Runs until `shutdown` resolves (used by the binary).
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listener, Shared::new(config), shutdown).await
}

/// Serves `shared` on `listener`; when `signal` resolves, flips the shared
/// shutdown flag (ending streams) and waits for connections to close.
async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;

    let trigger = shared.clone();
    let listener = listener.tap_io(|tcp| {
        // Tokens are small writes; do not let Nagle batch them.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            signal.await;
            trigger.shutdown.send_replace(true);
        })
        .await
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handler::chat_completions))
        .route("/stats", get(handler::stats))
        .route("/healthz", get(handler::healthz))
        .with_state(shared)
}

/// Locks a mutex, ignoring poisoning (the data is a plain snapshot).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
