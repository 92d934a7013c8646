//! A first measurement of the chat path (the load-test harness makes it
//! rigorous): N concurrent sessions each send one message to an in-process
//! server whose model is the simulated one, wrapped so that every token
//! carries the moment the model produced it; then one session alone sends
//! messages one after another. The client, in the same process and on the
//! same clock, reports:
//! - `send` to `ack` (the user message durable in the store), and `send`
//!   to the first `delta`;
//! - the latency the server added to each token: receipt minus production.
//!
//! On the embedded store always; with `--cql host:port`, also with the
//! ScyllaDB store against that node (a fresh keyspace, migrated at start as
//! `scylla.migrate_on_start` does), so the stores are compared in one run.
//!
//! `cargo run --release --example stream_latency -- [sessions] [tokens/s] [tokens] [--cql host:port]`
//! (defaults 200, 20, 60). Figures depend on the machine and on the client
//! sharing its cores: compare runs on the same machine, not across machines.

use std::sync::Arc;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use skald::config::Config;
use skald::model::simulated::SimulatedModel;
use skald::server::Server;
use skald::store::scylla::ScyllaSettings;
use skald_actors::ports::model::{
    ModelError, ModelEvent, ModelProvider, ModelRequest, TokenStream,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod support;

const SECRET: &str = "example-secret-example-secret-example";
/// Messages the lone session sends, one after another.
const ALONE_SENDS: usize = 200;

/// The simulated model, with each token replaced by its production time in
/// microseconds since `epoch`.
struct Stamped {
    inner: SimulatedModel,
    epoch: Instant,
}

#[async_trait::async_trait]
impl ModelProvider for Stamped {
    async fn start(&self, request: ModelRequest) -> Result<TokenStream, ModelError> {
        let epoch = self.epoch;
        let stream = self.inner.start(request).await?;
        Ok(Box::pin(stream.map(move |event| match event {
            Ok(ModelEvent::Token(_)) => Ok(ModelEvent::Token(format!(
                "{} ",
                epoch.elapsed().as_micros()
            ))),
            other => other,
        })))
    }

    fn name(&self) -> &'static str {
        "stamped-simulated"
    }
}

#[derive(Default)]
struct Samples {
    ack_us: Vec<u64>,
    first_delta_us: Vec<u64>,
    token_us: Vec<u64>,
    deltas: u64,
}

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.ack_us.extend(other.ack_us);
        self.first_delta_us.extend(other.first_delta_us);
        self.token_us.extend(other.token_us);
        self.deltas += other.deltas;
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(name: &str, values: &mut [u64]) {
    values.sort_unstable();
    println!(
        "{name:<28} n={:<7} p50={:>8.3} ms  p90={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        values.len(),
        percentile(values, 50.0) as f64 / 1000.0,
        percentile(values, 90.0) as f64 / 1000.0,
        percentile(values, 99.0) as f64 / 1000.0,
        values.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An authenticated connection of `user` that has read its `ready`.
async fn connect(url: &str, user: String) -> anyhow::Result<Ws> {
    let token = skald_loadtest::client::mint_token(SECRET, &user, 600)?;
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let _ready = ws.next().await;
    Ok(ws)
}

/// Sends one message and reads its stream to the end (cancelling it right
/// after the `ack` when `cancel`).
async fn exchange(ws: &mut Ws, epoch: Instant, id: &str, cancel: bool) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    let sent = epoch.elapsed().as_micros() as u64;
    let send = json!({"type":"send","id":id,"text":"measure me"});
    ws.send(Message::Text(send.to_string().into())).await?;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let now = epoch.elapsed().as_micros() as u64;
        let frame: Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("ack") => {
                samples.ack_us.push(now - sent);
                if cancel {
                    let cancel = json!({"type":"cancel","stream_id":frame["stream_id"]});
                    ws.send(Message::Text(cancel.to_string().into())).await?;
                }
            }
            Some("delta") => {
                if samples.deltas == 0 {
                    samples.first_delta_us.push(now - sent);
                }
                samples.deltas += 1;
                for stamp in frame["text"].as_str().unwrap_or("").split_whitespace() {
                    let produced: u64 = stamp.parse()?;
                    samples.token_us.push(now.saturating_sub(produced));
                }
            }
            Some("done") => break,
            Some("error") => anyhow::bail!("refused: {frame}"),
            _ => {}
        }
    }
    Ok(samples)
}

/// One server on `store` (`None`: the embedded one): the burst, then the
/// lone session.
async fn run(
    label: &str,
    cql: Option<ScyllaSettings>,
    sessions: usize,
    rate: f64,
    tokens: u32,
) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let data_dir = std::env::temp_dir().join(format!(
        "skald-example-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    if let Some(settings) = cql {
        config.scylla = settings;
    }
    config.auth.jwt_secret = Some(skald::config::Secret::new(SECRET));
    config.sessions.max_streams_per_session = 1;
    // Every client of this example comes from 127.0.0.1.
    config.limits.address_requests_per_minute = 1_000_000;
    config.limits.messages_per_minute = 1_000_000;
    let model = Arc::new(Stamped {
        inner: SimulatedModel {
            tokens_per_second: rate,
            answer_tokens: tokens,
        },
        epoch,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/v1/ws", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::new(config).with_model(model).run(listener, async {
        let _ = stopped.await;
    }));
    // The server is up once it accepts a session.
    let mut probe = loop {
        match connect(&url, "probe".into()).await {
            Ok(ws) => break ws,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    exchange(&mut probe, epoch, "warm-up", true).await?;

    let mut clients = Vec::new();
    for i in 0..sessions {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let mut ws = connect(&url, format!("user-{i}")).await?;
            let samples = exchange(&mut ws, epoch, "1", false).await?;
            let _ = ws.close(None).await;
            anyhow::Ok(samples)
        }));
    }
    let mut burst = Samples::default();
    for client in clients {
        burst.extend(client.await??);
    }
    let mut alone = Samples::default();
    let mut ws = connect(&url, "alone".into()).await?;
    for i in 0..ALONE_SENDS {
        alone.extend(exchange(&mut ws, epoch, &format!("a-{i}"), true).await?);
    }
    let _ = ws.close(None).await;

    println!(
        "== {label}: {sessions} sessions, simulated model at {rate} tokens/s, {tokens} tokens each; {} tokens in {} deltas",
        burst.token_us.len(),
        burst.deltas
    );
    report("send -> ack, burst", &mut burst.ack_us);
    report("send -> first delta, burst", &mut burst.first_delta_us);
    report("added latency per token", &mut burst.token_us);
    report("send -> ack, one session", &mut alone.ack_us);
    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(data_dir);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cql = support::take_cql_node(&mut args)?;
    let sessions: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let rate: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20.0);
    let tokens: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);

    run("embedded store", None, sessions, rate, tokens).await?;
    if let Some(node) = cql {
        let settings = support::fresh_keyspace(&node);
        run(
            &format!("CQL node {node}"),
            Some(settings),
            sessions,
            rate,
            tokens,
        )
        .await?;
    }
    Ok(())
}
