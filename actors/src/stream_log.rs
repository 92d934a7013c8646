//! The log of one generation: its text, where its `delta` frames were cut,
//! how it ended, and who is listening.
//!
//! Why a shared log rather than messages carrying tokens: the log is what
//! makes the protocol's promises cheap to keep.
//! - `seq` is global to the stream, so a client that reconnects can `resume`
//!   after the last `seq` it saw, on any connection: frame boundaries are
//!   recorded here, once, by whichever connection cut them.
//! - A slow reader gets coalesced deltas for free: its writer cuts one frame
//!   from everything that arrived since its last write, and the only memory
//!   a slow reader costs is the answer text, which is kept anyway (it is
//!   stored at the end and replayed on resume).
//! - Exactly one `done` per attached connection: a writer emits `done` when
//!   it finds the log ended, then forgets the stream.
//!
//! Lock order: a log's lock may be held while taking an outbox's lock
//! ([`crate::outbox::Outbox::mark_dirty`]), never the other way round.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use skald_protocol::{encode_delta, ConversationId, MessageId, ServerFrame, StreamId, UserId};

pub use crate::ports::store::AnswerEnd;

use crate::outbox::Outbox;

/// Identity of a stream: who owns it and where its answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIds {
    pub stream_id: StreamId,
    pub user: UserId,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
}

pub struct StreamLog {
    pub ids: StreamIds,
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    text: String,
    /// End offset in `text` of each frame cut so far; frame `seq` covers
    /// `text[frame_ends[seq-1]..frame_ends[seq]]`.
    frame_ends: Vec<usize>,
    /// Non-empty tokens received (the completion token estimate when the
    /// provider reports no usage).
    tokens: u64,
    end: Option<AnswerEnd>,
    subscribers: Vec<Weak<Outbox>>,
}

/// What a writer takes from a log in one read.
pub struct LogRead {
    /// Encoded `delta` frames, then possibly a `done` frame.
    pub frames: Vec<String>,
    /// The next `seq` this connection expects.
    pub next_seq: u64,
    /// The `done` frame was among `frames`: the connection is finished with
    /// this stream.
    pub done: bool,
}

impl StreamLog {
    pub fn new(ids: StreamIds) -> StreamLog {
        StreamLog {
            ids,
            inner: Mutex::new(LogInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic while holding this lock leaves consistent data (every
        // mutation is a push or an assignment), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a token and tells every listening connection. Returns the
    /// number of tokens so far. Tokens after the end are ignored.
    pub fn push_token(&self, token: &str) -> u64 {
        let mut inner = self.lock();
        if inner.end.is_some() || token.is_empty() {
            return inner.tokens;
        }
        inner.text.push_str(token);
        inner.tokens += 1;
        inner.notify(&self.ids.stream_id);
        inner.tokens
    }

    /// Ends the stream, once: a second call changes nothing and returns false.
    pub fn finish(&self, end: AnswerEnd) -> bool {
        let mut inner = self.lock();
        if inner.end.is_some() {
            return false;
        }
        inner.end = Some(end);
        inner.notify(&self.ids.stream_id);
        true
    }

    pub fn is_finished(&self) -> bool {
        self.lock().end.is_some()
    }

    pub fn end(&self) -> Option<AnswerEnd> {
        self.lock().end.clone()
    }

    /// The answer so far and the number of tokens in it.
    pub fn text_and_tokens(&self) -> (String, u64) {
        let inner = self.lock();
        (inner.text.clone(), inner.tokens)
    }

    /// The answer so far while it is not finished, and (with `longer_than`)
    /// only if it grew past that many bytes: what a checkpoint writes.
    pub fn unfinished_text(&self, longer_than: Option<usize>) -> Option<String> {
        let inner = self.lock();
        let grown = longer_than.is_none_or(|known| inner.text.len() > known);
        (inner.end.is_none() && grown).then(|| inner.text.clone())
    }

    /// Number of frames cut so far (the next new frame gets this `seq`).
    pub fn frames_cut(&self) -> u64 {
        self.lock().frame_ends.len() as u64
    }

    /// Registers a connection to be told about new tokens and the end.
    pub fn subscribe(&self, outbox: &Arc<Outbox>) {
        let mut inner = self.lock();
        inner.subscribers.retain(|s| s.strong_count() > 0);
        if !inner
            .subscribers
            .iter()
            .any(|s| std::ptr::eq(s.as_ptr(), Arc::as_ptr(outbox)))
        {
            inner.subscribers.push(Arc::downgrade(outbox));
        }
    }

    /// Reads what a connection at `next_seq` has not seen: recorded frames
    /// first (a resume), then one new frame cut from the text that no frame
    /// covers yet, then `done` if the stream ended.
    pub fn read_from(&self, next_seq: u64) -> LogRead {
        let mut inner = self.lock();
        let mut frames = Vec::new();
        let mut seq = next_seq;
        while let Some(&end) = inner.frame_ends.get(seq as usize) {
            let start = frame_start(&inner.frame_ends, seq as usize);
            frames.push(encode_delta(
                self.ids.stream_id.as_str(),
                seq,
                &inner.text[start..end],
            ));
            seq += 1;
        }
        let covered = inner.frame_ends.last().copied().unwrap_or(0);
        if covered < inner.text.len() && seq as usize == inner.frame_ends.len() {
            let end = inner.text.len();
            inner.frame_ends.push(end);
            frames.push(encode_delta(
                self.ids.stream_id.as_str(),
                seq,
                &inner.text[covered..end],
            ));
            seq += 1;
        }
        // `done` only once every byte of the answer was sent as a delta.
        let all_cut = inner.frame_ends.last().copied().unwrap_or(0) == inner.text.len();
        let done = match &inner.end {
            Some(end) if all_cut && seq as usize == inner.frame_ends.len() => {
                frames.push(self.done_frame(end).encode());
                true
            }
            _ => false,
        };
        let deltas = frames.len() - usize::from(done);
        if deltas > 0 {
            metrics::counter!("skald_frames_sent_total", "type" => "delta")
                .increment(deltas as u64);
        }
        if done {
            metrics::counter!("skald_frames_sent_total", "type" => "done").increment(1);
        }
        LogRead {
            frames,
            next_seq: seq,
            done,
        }
    }

    fn done_frame(&self, end: &AnswerEnd) -> ServerFrame {
        ServerFrame::Done {
            stream_id: self.ids.stream_id.clone(),
            message_id: self.ids.message_id.clone(),
            finish_reason: end.finish_reason,
            usage: end.usage,
            error: end.error.clone(),
        }
    }
}

impl LogInner {
    fn notify(&mut self, stream_id: &StreamId) {
        self.subscribers.retain(|s| match s.upgrade() {
            Some(outbox) => {
                outbox.mark_dirty(stream_id);
                true
            }
            None => false,
        });
    }
}

fn frame_start(frame_ends: &[usize], seq: usize) -> usize {
    if seq == 0 {
        0
    } else {
        frame_ends[seq - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use skald_protocol::{FinishReason, Usage};

    fn log() -> StreamLog {
        StreamLog::new(StreamIds {
            stream_id: "s".into(),
            user: "u".into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
        })
    }

    fn parse(frames: &[String]) -> Vec<Value> {
        frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    #[test]
    fn coalesces_what_arrived_since_the_last_read() {
        let log = log();
        log.push_token("a");
        log.push_token("b");
        let read = log.read_from(0);
        let frames = parse(&read.frames);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["seq"], 0);
        assert_eq!(frames[0]["text"], "ab");
        assert_eq!(read.next_seq, 1);
        log.push_token("c");
        let read = log.read_from(1);
        assert_eq!(parse(&read.frames)[0]["text"], "c");
        assert_eq!(read.next_seq, 2);
        assert!(!read.done);
    }

    #[test]
    fn resume_replays_recorded_frames_with_their_boundaries() {
        let log = log();
        log.push_token("ab");
        log.read_from(0);
        log.push_token("cd");
        log.read_from(1);
        log.push_token("ef");
        // A second connection resumes after seq 0: gets seq 1 as it was cut,
        // then a new frame for the rest.
        let read = log.read_from(1);
        let frames = parse(&read.frames);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            (frames[0]["seq"].clone(), frames[0]["text"].clone()),
            (1.into(), "cd".into())
        );
        assert_eq!(
            (frames[1]["seq"].clone(), frames[1]["text"].clone()),
            (2.into(), "ef".into())
        );
    }

    #[test]
    fn done_comes_once_after_the_last_delta() {
        let log = log();
        log.push_token("x");
        assert!(log.finish(AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 1,
                completion_tokens: 1,
                reasoning_tokens: None,
            },
            error: None
        }));
        assert!(!log.finish(AnswerEnd {
            finish_reason: FinishReason::Error,
            usage: Usage::default(),
            error: None
        }));
        log.push_token("ignored");
        let read = log.read_from(0);
        let frames = parse(&read.frames);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0]["text"], "x");
        assert_eq!(frames[1]["type"], "done");
        assert_eq!(frames[1]["finish_reason"], "stop");
        assert!(read.done);
        assert_eq!(log.text_and_tokens(), ("x".to_string(), 1));
    }

    #[test]
    fn a_lagging_reader_never_skips_a_seq() {
        // Reader A cut frames 0..3; reader B is at seq 1 and reads after the
        // end: it must get 1, 2, then done, never a gap.
        let log = log();
        for t in ["a", "b", "c"] {
            log.push_token(t);
            log.read_from(log.frames_cut());
        }
        log.finish(AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            error: None,
        });
        let read = log.read_from(1);
        let frames = parse(&read.frames);
        let seqs: Vec<_> = frames
            .iter()
            .filter(|f| f["type"] == "delta")
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert!(read.done);
    }
}
