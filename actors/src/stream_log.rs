//! The log of one generation: its answer and its reasoning, where their
//! frames were cut, how it ended, and who is listening.
//!
//! Why a shared log rather than messages carrying tokens: the log is what
//! makes the protocol's promises cheap to keep.
//! - `seq` is global to the stream (one for `delta`, one for `reasoning`),
//!   so a client that reconnects can `resume` after the last `seq` it saw,
//!   on any connection: frame boundaries are recorded here, once, by
//!   whichever reader cut them (a connection's writer, or the publisher
//!   that copies the stream to Redis for other instances).
//! - A slow reader gets coalesced frames for free: its writer cuts one frame
//!   from everything that arrived since its last write, and the only memory
//!   a slow reader costs is the text, which is kept anyway (it is stored at
//!   the end and replayed on resume).
//! - Exactly one `done` per attached reader: a reader gets `done` when it
//!   has every frame and the log has ended, then forgets the stream.
//! - On an instance that follows a stream run elsewhere, a *mirror* log is
//!   fed the published frames as they were cut ([`StreamLog::apply`]), so
//!   its readers get the same frames with the same `seq`.
//!
//! Lock order: a log's lock may be held while taking a listener's lock
//! ([`Listener::mark_dirty`]), never the other way round.

use std::sync::{Mutex, MutexGuard, Weak};

use skald_protocol::{
    encode_text, ConversationId, MessageId, ServerFrame, StreamId, TextKind, UserId,
};

use crate::ports::model::ToolCallDelta;
pub use crate::ports::store::AnswerEnd;
use crate::ports::store::ToolCall;

/// Identity of a stream: who owns it and where its answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIds {
    pub stream_id: StreamId,
    pub user: UserId,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
}

/// Who is told when a log has news: a connection's outbox, the publisher.
pub trait Listener: Send + Sync {
    fn mark_dirty(&self, stream_id: &StreamId);
}

pub struct StreamLog {
    pub ids: StreamIds,
    inner: Mutex<LogInner>,
}

/// One text of the stream and its frames.
#[derive(Default)]
struct Track {
    text: String,
    /// End offset in `text` of each frame cut so far; frame `seq` covers
    /// `text[frame_ends[seq-1]..frame_ends[seq]]`.
    frame_ends: Vec<usize>,
}

impl Track {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn covered(&self) -> usize {
        self.frame_ends.last().copied().unwrap_or(0)
    }

    fn all_cut(&self) -> bool {
        self.covered() == self.text.len()
    }

    /// The recorded frames from `next` on, then one new frame of what no
    /// frame covers yet (only for a reader that has every recorded frame).
    fn read_from(
        &mut self,
        kind: TextKind,
        stream_id: &str,
        next: u64,
        out: &mut Vec<String>,
    ) -> u64 {
        let mut seq = next;
        while let Some(&end) = self.frame_ends.get(seq as usize) {
            let start = if seq == 0 {
                0
            } else {
                self.frame_ends[seq as usize - 1]
            };
            out.push(encode_text(kind, stream_id, seq, &self.text[start..end]));
            seq += 1;
        }
        let covered = self.covered();
        if covered < self.text.len() && seq as usize == self.frame_ends.len() {
            self.frame_ends.push(self.text.len());
            out.push(encode_text(kind, stream_id, seq, &self.text[covered..]));
            seq += 1;
        }
        seq
    }

    /// A frame cut elsewhere, in order: applied only if it is the next one.
    fn apply(&mut self, seq: u64, text: &str) -> bool {
        if seq as usize != self.frame_ends.len() || !self.all_cut() {
            return false;
        }
        self.text.push_str(text);
        self.frame_ends.push(self.text.len());
        true
    }
}

#[derive(Default)]
struct LogInner {
    answer: Track,
    reasoning: Track,
    /// Tool-call pieces as the model streamed them (the OpenAI-compatible
    /// API passes them on; WebSocket clients have no frame for them).
    tool_calls: Vec<ToolCallDelta>,
    /// Non-empty tokens received, reasoning included (the completion token
    /// estimate when the provider reports no usage).
    tokens: u64,
    end: Option<AnswerEnd>,
    listeners: Vec<Weak<dyn Listener>>,
}

/// Where a reader is in a stream: the next `seq` of each track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub answer: u64,
    pub reasoning: u64,
}

impl Cursor {
    /// The cursor of a `resume` after these seqs (`-1`: from the start).
    pub fn after(answer_seq: i64, reasoning_seq: i64) -> Cursor {
        Cursor {
            answer: (answer_seq + 1).max(0) as u64,
            reasoning: (reasoning_seq + 1).max(0) as u64,
        }
    }
}

/// What a reader takes from a log in one read.
pub struct LogRead {
    /// Encoded `reasoning` and `delta` frames, then possibly a `done` frame.
    pub frames: Vec<String>,
    /// Where this reader is now.
    pub next: Cursor,
    /// The `done` frame was among `frames`: the reader is finished with
    /// this stream.
    pub done: bool,
}

/// Where a reader that cuts no frames is (the OpenAI-compatible API, which
/// has no `seq` to resume from): byte offsets into each text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOffsets {
    pub answer: usize,
    pub reasoning: usize,
    /// Tool-call pieces read.
    pub tool_calls: usize,
}

/// What such a reader takes in one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextRead {
    pub reasoning: String,
    pub answer: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub next: TextOffsets,
    /// How the stream ended, once this read took the last of its text.
    pub end: Option<AnswerEnd>,
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

    /// Appends a token of the answer and tells every listener. Returns the
    /// number of tokens so far. Tokens after the end are ignored.
    pub fn push_token(&self, token: &str) -> u64 {
        self.push(TextKind::Answer, token)
    }

    /// Appends a token of the model's reasoning (see [`Self::push_token`]).
    pub fn push_reasoning(&self, token: &str) -> u64 {
        self.push(TextKind::Reasoning, token)
    }

    /// Appends a piece of a tool call (see [`Self::push_token`]).
    pub fn push_tool_call(&self, delta: ToolCallDelta) -> u64 {
        let mut inner = self.lock();
        if inner.end.is_some() || delta.is_empty() {
            return inner.tokens;
        }
        inner.tool_calls.push(delta);
        inner.tokens += 1;
        inner.notify(&self.ids.stream_id);
        inner.tokens
    }

    fn push(&self, kind: TextKind, token: &str) -> u64 {
        let mut inner = self.lock();
        if inner.end.is_some() || token.is_empty() {
            return inner.tokens;
        }
        inner.track(kind).push(token);
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

    /// A frame published by the instance that runs this stream, applied to
    /// this mirror of it. Frames apply in `seq` order; one that is not the
    /// next of its track (a replay overlapping what arrived live) is
    /// ignored. Returns whether it applied.
    pub fn apply(&self, frame: &ServerFrame) -> bool {
        let mut inner = self.lock();
        if inner.end.is_some() {
            return false;
        }
        let applied = match frame {
            ServerFrame::Delta { seq, text, .. } => inner.answer.apply(*seq, text),
            ServerFrame::Reasoning { seq, text, .. } => inner.reasoning.apply(*seq, text),
            ServerFrame::Done {
                finish_reason,
                usage,
                error,
                ..
            } => {
                inner.end = Some(AnswerEnd {
                    finish_reason: *finish_reason,
                    usage: *usage,
                    error: error.clone(),
                });
                true
            }
            _ => false,
        };
        if applied {
            inner.tokens += u64::from(!matches!(frame, ServerFrame::Done { .. }));
            inner.notify(&self.ids.stream_id);
        }
        applied
    }

    pub fn is_finished(&self) -> bool {
        self.lock().end.is_some()
    }

    pub fn end(&self) -> Option<AnswerEnd> {
        self.lock().end.clone()
    }

    /// The answer so far and the number of tokens in it (reasoning tokens
    /// included).
    pub fn text_and_tokens(&self) -> (String, u64) {
        let inner = self.lock();
        (inner.answer.text.clone(), inner.tokens)
    }

    /// The reasoning so far.
    pub fn reasoning(&self) -> String {
        self.lock().reasoning.text.clone()
    }

    /// The tool calls so far, each assembled from its pieces (in the order
    /// the calls began): the id and name from the pieces that carry them,
    /// the arguments concatenated.
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        let inner = self.lock();
        let mut calls: Vec<(u32, ToolCall)> = Vec::new();
        for delta in &inner.tool_calls {
            let at = match calls.iter().position(|(index, _)| *index == delta.index) {
                Some(at) => at,
                None => {
                    calls.push((
                        delta.index,
                        ToolCall {
                            id: String::new(),
                            kind: Default::default(),
                            function: skald_protocol::http::FunctionCall {
                                name: String::new(),
                                arguments: String::new(),
                            },
                        },
                    ));
                    calls.len() - 1
                }
            };
            let call = &mut calls[at].1;
            if let Some(id) = delta.id.as_deref().filter(|_| call.id.is_empty()) {
                call.id = id.to_owned();
            }
            if let Some(name) = &delta.name {
                call.function.name.push_str(name);
            }
            call.function.arguments.push_str(&delta.arguments);
        }
        calls.into_iter().map(|(_, call)| call).collect()
    }

    /// The answer so far while it is not finished, and (with `longer_than`)
    /// only if it grew past that many bytes: what a checkpoint writes.
    pub fn unfinished_text(&self, longer_than: Option<usize>) -> Option<String> {
        let inner = self.lock();
        let grown = longer_than.is_none_or(|known| inner.answer.text.len() > known);
        (inner.end.is_none() && grown).then(|| inner.answer.text.clone())
    }

    /// Frames cut so far (the next new frame of each track gets this `seq`).
    pub fn frames_cut(&self) -> Cursor {
        let inner = self.lock();
        Cursor {
            answer: inner.answer.frame_ends.len() as u64,
            reasoning: inner.reasoning.frame_ends.len() as u64,
        }
    }

    /// Registers a listener to be told about new text and the end.
    pub fn subscribe(&self, listener: Weak<dyn Listener>) {
        let mut inner = self.lock();
        inner.listeners.retain(|l| l.strong_count() > 0);
        if !inner.listeners.iter().any(|l| Weak::ptr_eq(l, &listener)) {
            inner.listeners.push(listener);
        }
    }

    /// Reads what a reader at `next` has not seen: for each track, recorded
    /// frames first (a resume), then one new frame cut from the text no
    /// frame covers yet; then `done` once every byte was sent and the
    /// stream ended.
    pub fn read_from(&self, next: Cursor) -> LogRead {
        let mut inner = self.lock();
        let mut frames = Vec::new();
        let id = self.ids.stream_id.as_str();
        let reasoning =
            inner
                .reasoning
                .read_from(TextKind::Reasoning, id, next.reasoning, &mut frames);
        let answer = inner
            .answer
            .read_from(TextKind::Answer, id, next.answer, &mut frames);
        let next = Cursor { answer, reasoning };
        let caught_up = inner.answer.all_cut()
            && inner.reasoning.all_cut()
            && answer as usize == inner.answer.frame_ends.len()
            && reasoning as usize == inner.reasoning.frame_ends.len();
        let done = match &inner.end {
            Some(end) if caught_up => {
                frames.push(self.done_frame(end).encode());
                true
            }
            _ => false,
        };
        let texts = frames.len() - usize::from(done);
        if texts > 0 {
            metrics::counter!("skald_frames_sent_total", "type" => "delta").increment(texts as u64);
        }
        if done {
            metrics::counter!("skald_frames_sent_total", "type" => "done").increment(1);
        }
        LogRead { frames, next, done }
    }

    /// The text a reader at `from` has not seen, without cutting frames
    /// (the frames of `delta` readers are not changed by it); the end once
    /// it has every byte.
    pub fn read_text(&self, from: TextOffsets) -> TextRead {
        let inner = self.lock();
        let tail = |text: &str, at: usize| text.get(at..).unwrap_or_default().to_owned();
        TextRead {
            reasoning: tail(&inner.reasoning.text, from.reasoning),
            answer: tail(&inner.answer.text, from.answer),
            tool_calls: inner
                .tool_calls
                .get(from.tool_calls..)
                .unwrap_or_default()
                .to_vec(),
            next: TextOffsets {
                answer: inner.answer.text.len(),
                reasoning: inner.reasoning.text.len(),
                tool_calls: inner.tool_calls.len(),
            },
            end: inner.end.clone(),
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
    fn track(&mut self, kind: TextKind) -> &mut Track {
        match kind {
            TextKind::Answer => &mut self.answer,
            TextKind::Reasoning => &mut self.reasoning,
        }
    }

    fn notify(&mut self, stream_id: &StreamId) {
        self.listeners.retain(|l| match l.upgrade() {
            Some(listener) => {
                listener.mark_dirty(stream_id);
                true
            }
            None => false,
        });
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

    fn at(answer: u64) -> Cursor {
        Cursor {
            answer,
            reasoning: 0,
        }
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
        let read = log.read_from(at(0));
        let frames = parse(&read.frames);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["seq"], 0);
        assert_eq!(frames[0]["text"], "ab");
        assert_eq!(read.next.answer, 1);
        log.push_token("c");
        let read = log.read_from(at(1));
        assert_eq!(parse(&read.frames)[0]["text"], "c");
        assert_eq!(read.next.answer, 2);
        assert!(!read.done);
    }

    #[test]
    fn a_text_reader_takes_what_is_new_cuts_no_frames_and_sees_the_end_last() {
        let log = log();
        log.push_reasoning("think");
        log.push_token("a");
        let first = log.read_text(TextOffsets::default());
        assert_eq!(
            (first.reasoning.as_str(), first.answer.as_str()),
            ("think", "a")
        );
        assert_eq!(first.end, None);
        log.push_token("bc");
        log.finish(AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            error: None,
        });
        let second = log.read_text(first.next);
        assert_eq!(
            (second.reasoning.as_str(), second.answer.as_str()),
            ("", "bc")
        );
        assert_eq!(
            second.end.map(|e| e.finish_reason),
            Some(FinishReason::Stop)
        );
        // A `delta` reader still gets the whole answer as its first frame.
        assert_eq!(parse(&log.read_from(at(0)).frames)[1]["text"], "abc");
    }

    #[test]
    fn tool_call_pieces_are_read_as_they_came_and_assembled_per_call() {
        let log = log();
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| ToolCallDelta {
            index,
            id: id.map(Into::into),
            name: name.map(Into::into),
            arguments: arguments.into(),
        };
        log.push_tool_call(piece(0, Some("call_a"), Some("weather"), ""));
        log.push_tool_call(piece(0, None, None, "{\"city\":"));
        let first = log.read_text(TextOffsets::default());
        assert_eq!(first.tool_calls.len(), 2);
        log.push_tool_call(piece(1, Some("call_b"), Some("time"), "{}"));
        log.push_tool_call(piece(0, None, None, "\"Paris\"}"));
        // Nothing empty is kept, and nothing after the end.
        log.push_tool_call(piece(0, None, None, ""));
        let second = log.read_text(first.next);
        assert_eq!(
            second.tool_calls,
            [
                piece(1, Some("call_b"), Some("time"), "{}"),
                piece(0, None, None, "\"Paris\"}")
            ]
        );
        let calls = log.tool_calls();
        let calls: Vec<_> = calls
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.function.name.as_str(),
                    c.function.arguments.as_str(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                ("call_a", "weather", "{\"city\":\"Paris\"}"),
                ("call_b", "time", "{}")
            ]
        );
        assert_eq!(log.text_and_tokens().1, 4);
    }

    #[test]
    fn resume_replays_recorded_frames_with_their_boundaries() {
        let log = log();
        log.push_token("ab");
        log.read_from(at(0));
        log.push_token("cd");
        log.read_from(at(1));
        log.push_token("ef");
        // A second connection resumes after seq 0: gets seq 1 as it was cut,
        // then a new frame for the rest.
        let read = log.read_from(at(1));
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
                estimated: false,
            },
            error: None
        }));
        assert!(!log.finish(AnswerEnd {
            finish_reason: FinishReason::Error,
            usage: Usage::default(),
            error: None
        }));
        log.push_token("ignored");
        let read = log.read_from(at(0));
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
        let read = log.read_from(at(1));
        let frames = parse(&read.frames);
        let seqs: Vec<_> = frames
            .iter()
            .filter(|f| f["type"] == "delta")
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert!(read.done);
    }

    #[test]
    fn reasoning_has_its_own_seq_and_comes_first() {
        let log = log();
        log.push_reasoning("Let me ");
        log.push_reasoning("think.");
        log.push_token("Answer");
        let read = log.read_from(Cursor::default());
        let frames = parse(&read.frames);
        assert_eq!(frames[0]["type"], "reasoning");
        assert_eq!(frames[0]["seq"], 0);
        assert_eq!(frames[0]["text"], "Let me think.");
        assert_eq!(frames[1]["type"], "delta");
        assert_eq!(frames[1]["seq"], 0);
        assert_eq!(
            read.next,
            Cursor {
                answer: 1,
                reasoning: 1
            }
        );
        log.push_reasoning(" More.");
        let read = log.read_from(read.next);
        let frames = parse(&read.frames);
        assert_eq!(
            (frames[0]["type"].clone(), frames[0]["seq"].clone()),
            ("reasoning".into(), 1.into())
        );
        assert_eq!(log.reasoning(), "Let me think. More.");
        assert_eq!(log.text_and_tokens(), ("Answer".to_string(), 4));
        // A resume after reasoning seq 0 and no delta gets the rest.
        let read = log.read_from(Cursor::after(-1, 0));
        let kinds: Vec<_> = parse(&read.frames)
            .iter()
            .map(|f| {
                (
                    f["type"].as_str().unwrap().to_owned(),
                    f["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [("reasoning".to_owned(), 1), ("delta".to_owned(), 0)]
        );
    }

    #[test]
    fn a_mirror_replays_the_published_frames_as_cut() {
        let origin = log();
        let mirror = log();
        origin.push_reasoning("hm");
        origin.push_token("ab");
        let first = origin.read_from(Cursor::default());
        origin.push_token("cd");
        origin.finish(AnswerEnd {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            error: None,
        });
        let second = origin.read_from(first.next);
        assert!(second.done);
        let published: Vec<ServerFrame> = first
            .frames
            .iter()
            .chain(&second.frames)
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        // Delivered twice (a replay overlapping the live feed): once applied.
        for frame in published.iter().chain(&published[..2]) {
            mirror.apply(frame);
        }
        assert_eq!(
            mirror.read_from(Cursor::default()).frames,
            origin.read_from(Cursor::default()).frames
        );
        // A gap is not applied: the mirror never skips a seq.
        let gap = log();
        assert!(!gap.apply(&published[2]), "delta seq 1 before seq 0");
    }
}
