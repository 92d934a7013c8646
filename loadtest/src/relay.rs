//! `baseline-relay`: the floor Skald is measured against.
//!
//! A bare tokio-tungstenite server: no actors, no authentication, no limits,
//! no storage. It speaks just enough of protocol v1 for `run` to drive it
//! unchanged (`ready` on connect, `send` → `ack`, `delta`…, `done`; `hello`
//! and the `Authorization` header are accepted whatever they hold) and relays
//! each answer from the OpenAI-compatible upstream (the mock) as it streams.
//! Its socket writer has the shape MEASURED.md found fastest: drain every
//! queued frame with `feed`, then one `flush`. The upstream's SSE is framed
//! by `eventsource-stream` (the parser async-openai uses too) and read by
//! [`openai_sse`](crate::openai_sse); an error inside the 200 stream
//! (`event: error` or a chunk with `error`) ends the answer with `done` and
//! an error, like an early end.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eventsource_stream::Eventsource;
use futures::{SinkExt, StreamExt};
use skald_protocol::{
    encode_delta, ClientFrame, ErrorBody, ErrorCode, FinishReason, Limits, ServerFrame, Usage,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::openai_sse::{classify, StreamEvent};

/// Where the relay gets its answers.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// OpenAI base URL, e.g. `http://127.0.0.1:9090/v1`.
    pub upstream_url: String,
    /// Model asked for (`mock-stamped` to measure added latency).
    pub model: String,
}

struct Shared {
    config: RelayConfig,
    http: http_client::Client,
    connections: AtomicU64,
}

/// Serves the relay on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        config,
        http: http_client::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()?,
        connections: AtomicU64::new(0),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    tokio::spawn(connection(shared.clone(), tcp));
                }
                Err(error) => {
                    // Out of descriptors, usually: wait a little, go on.
                    tracing::warn!(%error, "relay: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Starts the relay on `listener` in the background; aborting the handle stops it.
pub fn spawn(listener: TcpListener, config: RelayConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = serve(listener, config, std::future::pending()).await;
    })
}

fn server_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10))
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(server_ws_config())).await
    else {
        return;
    };
    let number = shared.connections.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::text(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let ready = ServerFrame::Ready {
        session_id: format!("relay-{number}").into(),
        user: "anyone".into(),
        protocol: skald_protocol::PROTOCOL_VERSION,
        limits: Limits {
            max_message_chars: 4000,
            messages_per_minute: u32::MAX,
            tokens_remaining: u64::MAX,
        },
    };
    let _ = tx.send(ready.encode());
    let mut sends = 0u64;
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        match ClientFrame::decode(text.as_str()) {
            Ok(ClientFrame::Send { id, text, .. }) => {
                sends += 1;
                let stream_id = format!("r{number}-{sends}");
                let ack = ServerFrame::Ack {
                    id,
                    conversation_id: format!("c{number}").into(),
                    message_id: format!("{stream_id}-m").into(),
                    stream_id: stream_id.clone().into(),
                };
                let _ = tx.send(ack.encode());
                tokio::spawn(relay_answer(shared.clone(), text, stream_id, tx.clone()));
            }
            Ok(ClientFrame::Ping { ts }) => {
                let _ = tx.send(ServerFrame::Pong { ts }.encode());
            }
            _ => {}
        }
    }
    drop(tx);
    // The writer ends once the running answers have sent their `done`.
    let _ = writer.await;
}

/// Streams one answer from upstream as `delta`s, then `done`.
async fn relay_answer(
    shared: Arc<Shared>,
    text: String,
    stream_id: String,
    tx: mpsc::UnboundedSender<String>,
) {
    let body = serde_json::json!({
        "model": shared.config.model,
        "stream": true,
        "messages": [{ "role": "user", "content": text }],
    });
    let url = format!(
        "{}/chat/completions",
        shared.config.upstream_url.trim_end_matches('/')
    );
    let response = shared
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    let mut seq = 0u64;
    let outcome = match response {
        Ok(response) if response.status().is_success() => {
            let mut events = response.bytes_stream().eventsource();
            let mut outcome = Err("upstream stream ended early".to_owned());
            while let Some(Ok(event)) = events.next().await {
                match classify(&event) {
                    StreamEvent::Chunk { content, .. } if !content.is_empty() => {
                        if tx.send(encode_delta(&stream_id, seq, &content)).is_err() {
                            return; // the client left
                        }
                        seq += 1;
                    }
                    StreamEvent::Done => {
                        outcome = Ok(());
                        break;
                    }
                    StreamEvent::Error(message) => {
                        outcome = Err(format!("upstream error: {message}"));
                        break;
                    }
                    StreamEvent::Chunk { .. } | StreamEvent::Other => {}
                }
            }
            outcome
        }
        Ok(response) => Err(format!("upstream answered {}", response.status())),
        Err(error) => Err(format!("upstream request failed: {error}")),
    };
    let done = ServerFrame::Done {
        stream_id: stream_id.clone().into(),
        message_id: format!("{stream_id}-m").into(),
        finish_reason: if outcome.is_ok() {
            FinishReason::Stop
        } else {
            FinishReason::Error
        },
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: seq,
            reasoning_tokens: None,
            estimated: false,
        },
        error: outcome.err().map(|message| ErrorBody {
            code: ErrorCode::UpstreamError,
            message,
        }),
    };
    let _ = tx.send(done.encode());
}
