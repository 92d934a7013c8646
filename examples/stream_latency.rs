//! A first measurement of the chat path (the load-test harness makes it
//! rigorous): N concurrent sessions each send one message to an in-process
//! server whose model is the simulated one, wrapped so that every token
//! carries the moment the model produced it. The client, in the same
//! process and on the same clock, reports:
//! - `send` to `ack`, and `send` to the first `delta`;
//! - the latency the server added to each token: receipt minus production.
//!
//! `cargo run --release --example stream_latency -- [sessions] [tokens/s] [tokens]`
//! (defaults 200, 20, 60). Figures depend on the machine and on the client
//! sharing its cores: compare runs on the same machine, not across machines.

use std::sync::Arc;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use skald::auth::{self, Claims};
use skald::config::Config;
use skald::model::simulated::SimulatedModel;
use skald::server::Server;
use skald_actors::ports::model::{
    ModelError, ModelEvent, ModelProvider, ModelRequest, TokenStream,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "example-secret-example-secret-example";

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sessions: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let rate: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20.0);
    let tokens: u32 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(60);

    let epoch = Instant::now();
    let data_dir = std::env::temp_dir().join(format!("skald-example-{}", std::process::id()));
    let mut config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    config.auth.jwt_secret = Some(skald::config::Secret::new(SECRET));
    config.sessions.max_streams_per_session = 1;
    // Every client of this example comes from 127.0.0.1.
    config.limits.address_requests_per_minute = 1_000_000;
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

    let mut clients = Vec::new();
    for i in 0..sessions {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let now = auth::now_secs();
            let token = auth::mint(
                SECRET,
                &Claims {
                    sub: format!("user-{i}"),
                    exp: now + 600,
                    iat: Some(now),
                    nbf: None,
                    aud: None,
                    iss: None,
                    tenant: None,
                    roles: vec![],
                },
            )?;
            let mut request = url.into_client_request()?;
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
            let mut samples = Samples::default();
            let _ready = ws.next().await;
            let sent = epoch.elapsed().as_micros() as u64;
            ws.send(Message::Text(
                json!({"type":"send","id":"1","text":"measure me"})
                    .to_string()
                    .into(),
            ))
            .await?;
            while let Some(message) = ws.next().await {
                let Message::Text(text) = message? else {
                    continue;
                };
                let now = epoch.elapsed().as_micros() as u64;
                let frame: Value = serde_json::from_str(&text)?;
                match frame["type"].as_str() {
                    Some("ack") => samples.ack_us.push(now - sent),
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
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok(samples)
        }));
    }
    let mut all = Samples::default();
    for client in clients {
        let s = client.await??;
        all.ack_us.extend(s.ack_us);
        all.first_delta_us.extend(s.first_delta_us);
        all.token_us.extend(s.token_us);
        all.deltas += s.deltas;
    }
    println!(
        "{sessions} sessions, simulated model at {rate} tokens/s, {tokens} tokens each; {} tokens in {} deltas",
        all.token_us.len(),
        all.deltas
    );
    report("send -> ack", &mut all.ack_us);
    report("send -> first delta", &mut all.first_delta_us);
    report("added latency per token", &mut all.token_us);
    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(data_dir);
    Ok(())
}
