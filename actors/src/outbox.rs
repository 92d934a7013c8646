//! The outbound side of one connection: what the socket writer must send.
//!
//! A session never writes to its socket itself (a slow client would block
//! its mailbox, and with it `cancel`). It puts control frames (`ready`,
//! `ack`, `error`, `pong`) in a bounded queue and attaches the streams the
//! connection follows; the writer task (in `src/`, which owns the socket)
//! calls [`Outbox::drain`] whenever [`Outbox::notified`] fires, writes
//! everything it got, and flushes once. Streams are pulled, not pushed: a
//! stream marks itself dirty here and the writer cuts one delta from all
//! that arrived since, so memory per connection is bounded whatever the
//! model's speed and the client's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use skald_protocol::{CloseCode, ServerFrame, StreamId};
use tokio::sync::Notify;

use crate::stream_log::{Cursor, Listener, StreamLog};

/// Why and how the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: CloseCode,
    pub reason: String,
}

pub struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
    max_control_frames: usize,
}

#[derive(Default)]
struct OutboxInner {
    control: VecDeque<String>,
    dirty: Vec<StreamId>,
    attached: HashMap<StreamId, Attachment>,
    close: Option<Close>,
}

struct Attachment {
    log: Arc<StreamLog>,
    next: Cursor,
    dirty: bool,
}

/// One drain: frames to write, in order, and whether to close afterwards.
#[derive(Default)]
pub struct Drained {
    pub frames: Vec<String>,
    pub close: Option<Close>,
}

impl Outbox {
    pub fn new(max_control_frames: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::new(OutboxInner::default()),
            notify: Notify::new(),
            max_control_frames,
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutboxInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when there is something to drain (or a close). Permits are
    /// stored, so a wake-up between two waits is never lost.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Queues a control frame. A client that sends requests without reading
    /// the answers fills the queue; then the connection is closed with 4400
    /// instead of growing memory.
    pub fn push(&self, frame: &ServerFrame) {
        metrics::counter!("skald_frames_sent_total", "type" => frame.kind()).increment(1);
        let encoded = frame.encode();
        let mut inner = self.lock();
        if inner.close.is_some() {
            return;
        }
        if inner.control.len() >= self.max_control_frames {
            inner.close = Some(Close {
                code: CloseCode::ProtocolError,
                reason: "too many unread frames".into(),
            });
        } else {
            inner.control.push_back(encoded);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Queues `frame` (typically the `ack`) and attaches `log` so that its
    /// frames from `next` on follow the frame. Attaching a stream that
    /// is already attached only queues the frame.
    pub fn push_and_attach(
        self: &Arc<Self>,
        frame: Option<&ServerFrame>,
        log: Arc<StreamLog>,
        next: Cursor,
    ) {
        if let Some(frame) = frame {
            self.push(frame);
        }
        {
            let mut inner = self.lock();
            if inner.close.is_some() || inner.attached.contains_key(&log.ids.stream_id) {
                return;
            }
            inner.attached.insert(
                log.ids.stream_id.clone(),
                Attachment {
                    log: log.clone(),
                    next,
                    dirty: false,
                },
            );
        }
        let listener: std::sync::Weak<dyn Listener> = Arc::downgrade(self) as _;
        log.subscribe(listener);
        self.mark_dirty(&log.ids.stream_id);
    }

    /// Whether this connection follows the stream.
    pub fn is_attached(&self, stream_id: &str) -> bool {
        self.lock().attached.contains_key(stream_id)
    }

    /// Asks the writer to close the connection after what is queued. The
    /// first close wins.
    pub fn close(&self, code: CloseCode, reason: impl Into<String>) {
        let mut inner = self.lock();
        if inner.close.is_none() {
            inner.close = Some(Close {
                code,
                reason: reason.into(),
            });
        }
        drop(inner);
        self.notify.notify_one();
    }

    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Takes everything there is to write: control frames first, then for
    /// each stream with news, its deltas and possibly its `done`.
    pub fn drain(&self) -> Drained {
        let mut out = Drained::default();
        let work: Vec<(StreamId, Arc<StreamLog>, Cursor)> = {
            let mut inner = self.lock();
            out.frames.extend(inner.control.drain(..));
            let dirty = std::mem::take(&mut inner.dirty);
            dirty
                .into_iter()
                .filter_map(|id| {
                    let a = inner.attached.get_mut(&id)?;
                    a.dirty = false;
                    Some((id, a.log.clone(), a.next))
                })
                .collect()
        };
        // Logs are read without holding this outbox's lock (lock order:
        // log, then outbox). Only this drain moves `next`, and drains do
        // not overlap (one writer per connection).
        let mut progress = Vec::with_capacity(work.len());
        for (id, log, next) in work {
            let read = log.read_from(next);
            out.frames.extend(read.frames);
            progress.push((id, read.next, read.done));
        }
        let mut inner = self.lock();
        for (id, next, done) in progress {
            if done {
                inner.attached.remove(&id);
            } else if let Some(a) = inner.attached.get_mut(&id) {
                a.next = next;
            }
        }
        out.close = inner.close.clone();
        out
    }
}

impl Listener for Outbox {
    /// Called by a stream's log when it has news for this connection.
    fn mark_dirty(&self, stream_id: &StreamId) {
        let mut inner = self.lock();
        let Some(attachment) = inner.attached.get_mut(stream_id) else {
            return;
        };
        if attachment.dirty {
            return;
        }
        attachment.dirty = true;
        inner.dirty.push(stream_id.clone());
        drop(inner);
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_log::{AnswerEnd, StreamIds};
    use serde_json::Value;
    use skald_protocol::{ErrorCode, FinishReason, Usage};

    fn log(id: &str) -> Arc<StreamLog> {
        Arc::new(StreamLog::new(StreamIds {
            stream_id: StreamId::from(id),
            user: "u".into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
        }))
    }

    fn types(frames: &[String]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: Value = serde_json::from_str(f).unwrap();
                v["type"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn ack_precedes_deltas_and_done_detaches() {
        let outbox = Outbox::new(8);
        let stream = log("s1");
        stream.push_token("early ");
        let ack = ServerFrame::error(ErrorCode::Busy, "stand-in for an ack");
        outbox.push_and_attach(Some(&ack), stream.clone(), Cursor::default());
        stream.push_token("late");
        stream.finish(AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            error: None,
        });
        let drained = outbox.drain();
        assert_eq!(types(&drained.frames), ["error", "delta", "done"]);
        assert!(!outbox.is_attached("s1"));
        stream.push_token("after end");
        assert!(outbox.drain().frames.is_empty());
    }

    #[test]
    fn control_queue_is_bounded_and_overflow_closes() {
        let outbox = Outbox::new(2);
        for ts in 0..5 {
            outbox.push(&ServerFrame::Pong { ts });
        }
        let drained = outbox.drain();
        assert_eq!(drained.frames.len(), 2);
        assert_eq!(drained.close.unwrap().code, CloseCode::ProtocolError);
    }

    #[test]
    fn a_dropped_outbox_stops_being_notified() {
        let stream = log("s2");
        let outbox = Outbox::new(8);
        outbox.push_and_attach(None, stream.clone(), Cursor::default());
        drop(outbox);
        // The log prunes the dead subscriber instead of failing.
        stream.push_token("x");
        assert_eq!(stream.text_and_tokens().1, 1);
    }

    #[tokio::test]
    async fn a_token_wakes_the_writer() {
        let outbox = Outbox::new(8);
        let stream = log("s3");
        outbox.push_and_attach(None, stream.clone(), Cursor::default());
        outbox.drain();
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                loop {
                    outbox.notified().await;
                    let frames = outbox.drain().frames;
                    if !frames.is_empty() {
                        return frames;
                    }
                }
            })
        };
        stream.push_token("wake");
        let frames = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("writer woken")
            .unwrap();
        assert_eq!(types(&frames), ["delta"]);
    }
}
