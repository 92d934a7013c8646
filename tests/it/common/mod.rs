//! Shared test fixtures: a real server on a free loopback port, real
//! WebSocket clients, tokens signed with the test secret.

pub mod attack;
pub mod cql;
pub mod faulty_store;
pub mod raw_ws;
pub mod redis_server;
pub mod spawned;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use skald::auth::{self, Claims};
use skald::config::Config;
use skald::server::Server;
use skald::store::sqlite::SqliteStore;
use skald_actors::ports::store::Store;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Generous bound for anything a test waits for; tests never assert on time.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub addr: SocketAddr,
    /// The server's store (SQLite in its data dir), to check what was stored.
    pub store: SqliteStore,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _data_dir: Option<TempDir>,
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = rand_u64();
        let path =
            std::env::temp_dir().join(format!("skald-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// A configuration for tests: fast simulated model, test secret.
pub fn test_config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.auth.jwt_secret = Some(SECRET.into());
    config.model.simulated_tokens_per_second = 200.0;
    config.model.simulated_answer_tokens = 20;
    // Every test client comes from 127.0.0.1: the per-address limit has its
    // own tests.
    config.limits.address_requests_per_minute = 1_000_000;
    // Nor may a burst of test clients close each other's connections as
    // pending ones of one address (`edge_connections` tests that cap).
    config.connections.max_pending_per_address = 1_000_000;
    config
}

pub struct Builder {
    pub config: Config,
    pub store: Option<Arc<dyn Store>>,
    pub clock: Option<Arc<dyn skald_actors::time::Clock>>,
    /// A data dir that outlives the server (restart tests); else a temporary one.
    pub data_dir: Option<std::path::PathBuf>,
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder {
            config: test_config(),
            store: None,
            clock: None,
            data_dir: None,
        }
    }

    pub async fn start() -> TestServer {
        TestServer::builder().start().await
    }

    /// A server whose simulated model writes `tokens_per_second` (0: at
    /// once) and answers `answer_tokens` tokens.
    pub async fn with_model(tokens_per_second: f64, answer_tokens: u32) -> TestServer {
        TestServer::with_config(|c| {
            c.model.simulated_tokens_per_second = tokens_per_second;
            c.model.simulated_answer_tokens = answer_tokens;
        })
        .await
    }

    /// A server on the test configuration as `f` changes it.
    pub async fn with_config(f: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::builder().config(f).start().await
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// An HTTP request to this server as `user` (None: no token).
    pub fn http(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new().request(method, format!("http://{}{path}", self.addr));
        match user {
            Some(user) => request.bearer_auth(token(user)),
            None => request,
        }
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self
            .http(reqwest::Method::GET, "/metrics", None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// GET as `user`: the status and the JSON body (Null if none).
    pub async fn get_json(&self, path: &str, user: Option<&str>) -> (u16, Value) {
        let response = self
            .http(reqwest::Method::GET, path, user)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// DELETE `path` as `user` (None: no token): the status.
    pub async fn delete(&self, path: &str, user: Option<&str>) -> u16 {
        self.http(reqwest::Method::DELETE, path, user)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Sends the shutdown signal without waiting (drain tests).
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops")
                .unwrap();
        }
    }

    /// The stored answer an `ack` announced.
    pub async fn answer_of(&self, ack: &Value) -> skald_actors::ports::store::StoredMessage {
        stored(
            &self.store,
            ack["conversation_id"].as_str().unwrap(),
            ack["message_id"].as_str().unwrap(),
        )
        .await
        .unwrap_or_else(|| panic!("no stored answer for {ack}"))
    }

    /// An authenticated client (hello frame) that has read its `ready`.
    pub async fn client(&self, user: &str) -> Client {
        let mut client = Client::connect(&self.url(), None).await;
        client
            .send(json!({"type":"hello","token":token(user)}))
            .await;
        let ready = client.recv().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        client
    }
}

impl Builder {
    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Builder {
        f(&mut self.config);
        self
    }

    pub fn store(mut self, store: Arc<dyn Store>) -> Builder {
        self.store = Some(store);
        self
    }

    pub fn data_dir(mut self, dir: &std::path::Path) -> Builder {
        self.data_dir = Some(dir.to_owned());
        self
    }

    pub fn clock(mut self, clock: Arc<dyn skald_actors::time::Clock>) -> Builder {
        self.clock = Some(clock);
        self
    }

    pub async fn start(mut self) -> TestServer {
        let (dir, data_dir) = match self.data_dir.clone() {
            Some(dir) => (dir, None),
            None => {
                let temp = TempDir::new("server");
                (temp.0.clone(), Some(temp))
            }
        };
        self.config.data_dir = dir.clone();
        let sqlite = SqliteStore::open_in(&dir).unwrap();
        let store: Arc<dyn Store> = self.store.unwrap_or_else(|| Arc::new(sqlite.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let mut server = Server::new(self.config).with_store(store);
        if let Some(clock) = self.clock {
            server = server.with_clock(clock);
        }
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            addr,
            store: sqlite,
            shutdown: Some(tx),
            task: Some(task),
            _data_dir: data_dir,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn token(user: &str) -> String {
    token_with(user, |_| {})
}

pub fn token_with(user: &str, f: impl FnOnce(&mut Claims)) -> String {
    let now = auth::now_secs();
    let mut claims = Claims {
        sub: user.into(),
        exp: now + 600,
        iat: Some(now),
        nbf: None,
        aud: None,
        iss: None,
        tenant: None,
        roles: Vec::new(),
    };
    f(&mut claims);
    auth::mint(SECRET, &claims).unwrap()
}

/// What a client saw when the server closed the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    /// The TCP connection ended without a close frame.
    NoFrame,
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str, bearer: Option<&str>) -> Client {
        Client::try_connect(url, bearer, None)
            .await
            .expect("upgrade accepted")
    }

    pub async fn try_connect(
        url: &str,
        bearer: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let authorization = bearer.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = [
            authorization.as_deref().map(|v| ("authorization", v)),
            origin.map(|v| ("origin", v)),
        ]
        .into_iter()
        .flatten()
        .collect();
        Client::try_connect_with(url, &headers).await
    }

    /// Opens a connection whose upgrade request carries these headers.
    pub async fn try_connect_with(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                value.parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client { ws })
    }

    /// A client whose socket receive buffer is tiny, so that the server's
    /// writes block as soon as it stops reading.
    pub async fn connect_small_buffer(url: &str, bearer: &str) -> Client {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        Client { ws }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    /// Asks to resume `stream_id` after `after_seq` (-1: from its start).
    pub async fn resume(&mut self, stream_id: &str, after_seq: i64) {
        self.send(json!({"type":"resume","stream_id":stream_id,"after_seq":after_seq}))
            .await;
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next JSON frame. Panics on close or after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        // One deadline for the frame: the server's pings must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("connection open")
                .expect("no socket error");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame whose `type` is `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        self.recv_type_of(&[kind]).await
    }

    /// Reads until a frame of one of these types, skipping others.
    pub async fn recv_type_of(&mut self, kinds: &[&str]) -> Value {
        loop {
            let frame = self.recv().await;
            if kinds.iter().any(|k| frame["type"] == *k) {
                return frame;
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Closed {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed within the wait");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Closed::Code(u16::from(frame.code))
                }
                Some(Ok(Message::Close(None))) => {
                    return Closed::Code(u16::from(WsCloseCode::Status))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Closed::NoFrame,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Everything one stream sent: its deltas (checked gap-free) and its `done`.
pub struct StreamResult {
    pub text: String,
    pub deltas: usize,
    pub done: Value,
}

/// Reads frames of `stream_id` until its `done`; asserts `seq` starts at
/// `first_seq` and grows by one. Frames of other streams are skipped.
pub async fn collect_stream(client: &mut Client, stream_id: &str, first_seq: u64) -> StreamResult {
    let mut text = String::new();
    let mut next = first_seq;
    let mut deltas = 0;
    loop {
        let frame = client.recv().await;
        if frame["stream_id"] != stream_id {
            continue;
        }
        match frame["type"].as_str().unwrap() {
            "delta" => {
                assert_eq!(
                    frame["seq"].as_u64(),
                    Some(next),
                    "seq without gaps: {frame}"
                );
                next += 1;
                deltas += 1;
                text.push_str(frame["text"].as_str().unwrap());
            }
            "done" => {
                return StreamResult {
                    text,
                    deltas,
                    done: frame,
                }
            }
            other => panic!("unexpected frame {other}: {frame}"),
        }
    }
}

/// Cancels `stream_id`, whose first delta (`seq` 0, `first`) the client
/// read, and reads the rest of the stream as [`collect_stream`] does: the
/// whole text streamed (`first` included) and the `done`.
pub async fn cancel_after_first_delta(
    client: &mut Client,
    stream_id: &str,
    first: &Value,
) -> (String, Value) {
    assert_eq!(first["seq"], 0, "{first}");
    client
        .send(json!({"type":"cancel","stream_id":stream_id}))
        .await;
    let rest = collect_stream(client, stream_id, 1).await;
    (
        format!("{}{}", first["text"].as_str().unwrap(), rest.text),
        rest.done,
    )
}

/// Sends a message and returns its ack, skipping frames of other streams
/// and the `started` of sends from the user's other sessions.
pub async fn send(client: &mut Client, id: &str, conversation: Option<&str>, text: &str) -> Value {
    client
        .send(json!({"type":"send","id":id,"conversation_id":conversation,"text":text}))
        .await;
    let ack = loop {
        let frame = client.recv().await;
        if !matches!(frame["type"].as_str(), Some("delta" | "done" | "started")) {
            break frame;
        }
    };
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["id"], id);
    ack
}

/// The answer the simulated model gives to `text` with the test config.
pub fn simulated_answer(text: &str, tokens: u32) -> String {
    let model = skald::model::simulated::SimulatedModel {
        tokens_per_second: 0.0,
        answer_tokens: tokens,
    };
    let request = skald_actors::testkit::model::request(text);
    model.answer(&request).0.concat()
}

/// A checkpoint of the answer of `ex`: `content` streamed so far, taken
/// at `at_ms` (what a stream writes to the store as it goes).
pub fn checkpoint(
    ex: &skald_actors::ports::store::NewExchange,
    content: &str,
    at_ms: i64,
) -> skald_actors::ports::store::AnswerCheckpoint {
    skald_actors::ports::store::AnswerCheckpoint {
        conversation_id: ex.conversation_id.clone(),
        message_id: ex.assistant_message_id.clone(),
        content: content.into(),
        at_ms,
    }
}

/// The stored content of a message.
pub async fn stored(
    store: &SqliteStore,
    conversation_id: &str,
    message_id: &str,
) -> Option<skald_actors::ports::store::StoredMessage> {
    store
        .recent_messages(&conversation_id.into(), 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == message_id)
}

/// A conversation's messages, as `user`, from the server on `port` (a
/// spawned binary): `GET /v1/conversations/{id}/messages`.
pub async fn messages_via_http(port: u16, user: &str, conversation: &str) -> Value {
    reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/v1/conversations/{conversation}/messages"
        ))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until a server on `port` (a spawned binary) answers `/healthz`.
pub async fn wait_healthy(port: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every `every` until it gives something, for at most
/// [`WAIT`]: what it gave. Fails the test with `what_never_happened` when
/// the wait is over.
pub async fn eventually<T>(
    what_never_happened: &str,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what_never_happened}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Held by every test that reads `/metrics`: the metrics registry is one
/// per process (the `metrics` facade is global), and each server writes its
/// own counters into it at a scrape, so two servers scraped at once would
/// overwrite each other's absolute values.
pub static METRICS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the skip named `name` is allowed: `SKALD_ALLOW_SKIP` (names,
/// comma-separated) lists it. CI never sets it, so there a test that cannot
/// run fails.
pub fn skip_allowed(name: &str) -> bool {
    std::env::var("SKALD_ALLOW_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|allowed| allowed.trim() == name)
}

/// For a test that cannot run here (`why`): with the skip `name` allowed,
/// prints a SKIPPED line and returns; otherwise fails the test, saying how
/// to make it run or how to allow the skip.
pub fn skip_or_fail(name: &str, test: &str, why: &str) {
    if skip_allowed(name) {
        // Straight to stderr: the harness does not capture it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: {why} (allowed by SKALD_ALLOW_SKIP={name})"
        );
        return;
    }
    panic!(
        "{test} cannot run: {why}; or allow the skip with SKALD_ALLOW_SKIP={name} (CI never does)"
    );
}

/// The mock upstream of `loadtest/` on a free port, at this pace and length.
pub async fn mock_upstream(
    tokens_per_second: f64,
    answer_tokens: u32,
) -> skald_loadtest::mock_upstream::MockUpstream {
    skald_loadtest::mock_upstream::MockUpstream::on_loopback(tokens_per_second, answer_tokens)
        .await
        .unwrap()
}
