//! The socket writer task of one connection.
//!
//! It waits for the outbox to have something (or for the ping timer),
//! drains everything queued, writes it and flushes. Each stream is cut into
//! one delta per drain, so the fewer drains a busy connection makes, the
//! fewer frames and writes its tokens cost: a connection written to within
//! the last millisecond lets the ready tasks run once before it drains. It
//! also sends the WebSocket pings that keep proxies from cutting quiet
//! connections, and closes a connection that has been silent for
//! `idle_timeout` or that does not take our writes for that long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::SplitSink;
use futures::SinkExt;
use skald_actors::outbox::Outbox;
use skald_protocol::CloseCode;
use tokio::time::{timeout, Instant};

/// When the peer was last heard from, in milliseconds since `epoch`.
pub struct LastSeen {
    epoch: Instant,
    ms: AtomicU64,
}

impl LastSeen {
    pub fn new() -> LastSeen {
        LastSeen {
            epoch: Instant::now(),
            ms: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        self.ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.ms.load(Ordering::Relaxed)))
    }
}

impl Default for LastSeen {
    fn default() -> Self {
        LastSeen::new()
    }
}

/// Writes closer together than this mark a connection as busy (see `run`).
const BUSY: Duration = Duration::from_millis(1);

pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    ping_interval: Duration,
    idle_timeout: Duration,
    last_seen: Arc<LastSeen>,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    let mut last_write = Instant::now() - BUSY;
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = outbox.notified() => {
                // A connection written to less than `BUSY` ago is being fed
                // faster than any model writes for one reader: let the
                // tasks that are ready run first, so that its streams add
                // their next tokens and one delta (one write) carries them
                // all. At saturation this halves the writes; at a model's
                // pace (tokens tens of milliseconds apart) it never waits.
                if last_write.elapsed() < BUSY {
                    tokio::task::yield_now().await;
                }
            }
            _ = ticker.tick() => {
                if last_seen.silent_for() >= idle_timeout {
                    outbox.close(CloseCode::Normal, "idle timeout");
                } else if timeout(idle_timeout, sink.send(Message::Ping(Default::default()))).await.is_err() {
                    return;
                }
            }
        }
        let drained = outbox.drain();
        for frame in drained.frames {
            match timeout(idle_timeout, sink.feed(Message::Text(frame.into()))).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        if !matches!(timeout(idle_timeout, sink.flush()).await, Ok(Ok(()))) {
            return;
        }
        last_write = Instant::now();
        if let Some(close) = drained.close {
            let code = close.code.as_u16().to_string();
            metrics::counter!("skald_disconnects_total", "close_code" => code).increment(1);
            let frame = CloseFrame {
                code: close.code.as_u16(),
                reason: close.reason.into(),
            };
            let _ = timeout(idle_timeout, sink.send(Message::Close(Some(frame)))).await;
            return;
        }
    }
}
