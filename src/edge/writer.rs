//! The socket writer task of one connection.
//!
//! It waits for the outbox to have something (or for the ping timer),
//! drains everything queued, writes it with `feed` and flushes once: one
//! syscall for a whole batch when a client falls behind, which MEASURED.md
//! found 3-5x faster than a write per frame. It also sends the WebSocket
//! pings that keep proxies from cutting quiet connections, and closes a
//! connection that has been silent for `idle_timeout` or that does not take
//! our writes for that long.

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

pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    ping_interval: Duration,
    idle_timeout: Duration,
    last_seen: Arc<LastSeen>,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = outbox.notified() => {}
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
