//! The streamed answer: OpenAI `chat.completion.chunk` events over SSE.
//!
//! This is where pacing and the mid-stream faults happen, so it is written as
//! an explicit step machine that the HTTP server polls as a response body:
//! every wait also watches the server's shutdown flag (nothing outlives the
//! server), and a [`DisconnectGuard`] records a client disconnect whenever the
//! body is dropped before it finished or failed on purpose.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::faults::Fault;
use super::plan::Plan;
use super::request::error_body;
use super::Shared;

impl Plan {
    /// One `chat.completion.chunk` with a single choice.
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        event(&chunk)
    }

    /// The trailing usage chunk (`choices: []`).
    fn usage_chunk(&self) -> Bytes {
        event(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": self.usage(),
        }))
    }
}

fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The error object of the in-stream error faults.
fn stream_error(after: u32) -> Value {
    let message = format!("mock upstream: injected error after {after} tokens");
    error_body(&message, "server_error")
}

/// The error a body ends with to make hyper abort the connection.
#[derive(Debug)]
pub(super) struct Aborted(pub(super) &'static str);

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mock upstream aborted the response: {}", self.0)
    }
}

impl std::error::Error for Aborted {}

/// Counts a client disconnect when dropped while still armed.
pub(super) struct DisconnectGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl DisconnectGuard {
    pub(super) fn new(shared: Arc<Shared>) -> DisconnectGuard {
        DisconnectGuard {
            shared,
            armed: true,
        }
    }

    /// The response finished, or ended on purpose: dropping is no disconnect.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!("mock upstream: client went away mid-response");
            self.shared
                .counters
                .client_disconnects
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Waits for `future` unless the server shuts down first; false on shutdown.
pub(super) async fn unless_shutdown(
    shutdown: &mut watch::Receiver<bool>,
    future: impl std::future::Future<Output = ()>,
) -> bool {
    tokio::select! {
        () = future => true,
        _ = shutdown.wait_for(|stopped| *stopped) => false,
    }
}

#[derive(Clone, Copy)]
enum Step {
    Start,
    /// Part `index` of the plan (or, past the last, the finish chunk).
    Part(u32),
    Usage,
    Done,
    /// The `[DONE]` that follows a `data:` error.
    ErrorDone,
    End,
}

struct StreamState {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    plan: Plan,
    guard: DisconnectGuard,
    step: Step,
    /// When the first part was due; later parts are paced from it.
    started: Instant,
}

type Item = Result<Bytes, Aborted>;

/// The SSE response body for `plan`.
pub(super) fn body(shared: Arc<Shared>, plan: Plan, guard: DisconnectGuard) -> Body {
    let state = StreamState {
        shutdown: shared.shutdown.subscribe(),
        shared,
        plan,
        guard,
        step: Step::Start,
        started: Instant::now(),
    };
    Body::from_stream(futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    }))
}

impl StreamState {
    async fn next(&mut self) -> Option<Item> {
        loop {
            match self.step {
                Step::Start => {
                    if let Fault::SlowFirst(ms) = self.plan.behaviour.fault {
                        let delay = tokio::time::sleep(Duration::from_millis(ms));
                        if !unless_shutdown(&mut self.shutdown, delay).await {
                            return self.abort("shutting down");
                        }
                    }
                    let (role, next) = self.plan.role_delta();
                    self.step = Step::Part(next);
                    self.started = Instant::now();
                    return Some(Ok(self.plan.chunk(role, None)));
                }
                Step::Part(index) => return self.part(index).await,
                Step::Usage => {
                    self.step = Step::Done;
                    if self.plan.sends_usage() {
                        return Some(Ok(self.plan.usage_chunk()));
                    }
                }
                Step::Done => {
                    self.step = Step::End;
                    self.guard.disarm();
                    self.shared
                        .counters
                        .completed
                        .fetch_add(1, Ordering::SeqCst);
                    return Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                }
                Step::ErrorDone => {
                    self.step = Step::End;
                    return Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                }
                Step::End => return None,
            }
        }
    }

    /// Part `index`, the finish chunk once all are sent, or a fault.
    async fn part(&mut self, index: u32) -> Option<Item> {
        let plan = &self.plan;
        match plan.behaviour.fault {
            Fault::DropAfter(n) if index == plan.fault_part(n) => {
                // Let hyper flush what was sent before the abort.
                let flush = tokio::time::sleep(Duration::from_millis(20));
                unless_shutdown(&mut self.shutdown, flush).await;
                return self.abort("injected drop");
            }
            Fault::HangAfter(n) if index == plan.fault_part(n) => {
                // Silent until the client leaves (this body is then dropped
                // with the guard armed) or the server shuts down.
                unless_shutdown(&mut self.shutdown, std::future::pending()).await;
                return self.abort("shutting down");
            }
            Fault::ErrorAfter(n) if index == plan.fault_part(n) => {
                return self.error(n, false);
            }
            Fault::ErrorEventAfter(n) if index == plan.fault_part(n) => {
                return self.error(n, true);
            }
            _ => {}
        }
        if index >= plan.parts() {
            self.step = Step::Usage;
            let finish = plan.finish_reason;
            return Some(Ok(plan.chunk(json!({}), Some(finish))));
        }
        if let Some(offset) = plan.due(index, self.shared.config.tokens_per_second) {
            // A part already due goes out now: tokio's timer would hold
            // even a zero-length sleep until its next millisecond tick, and
            // measurements (the first token's stamp is when the request
            // arrived) would carry that.
            let due_at = self.started + offset;
            if due_at > Instant::now() {
                let due = tokio::time::sleep_until(due_at);
                if !unless_shutdown(&mut self.shutdown, due).await {
                    return self.abort("shutting down");
                }
            }
        }
        self.step = Step::Part(index + 1);
        let counters = &self.shared.counters;
        if self.plan.is_reasoning(index) {
            counters
                .reasoning_tokens_sent
                .fetch_add(1, Ordering::SeqCst);
        } else if index >= self.plan.lead() {
            counters.tokens_sent.fetch_add(1, Ordering::SeqCst);
        }
        Some(Ok(self.plan.chunk(self.plan.delta(index), None)))
    }

    /// The in-stream error after `after` answer tokens: a `data:` line with
    /// an `error` (then `[DONE]`, as vLLM does), or an `event: error` (then
    /// the end of the body). Either way the body ends cleanly, on purpose.
    fn error(&mut self, after: u32, event: bool) -> Option<Item> {
        self.guard.disarm();
        let data = stream_error(after);
        if event {
            self.step = Step::End;
            return Some(Ok(Bytes::from(format!("event: error\ndata: {data}\n\n"))));
        }
        self.step = Step::ErrorDone;
        Some(Ok(self::event(&data)))
    }

    /// Ends the body with an error so hyper closes the connection abruptly.
    fn abort(&mut self, why: &'static str) -> Option<Item> {
        self.step = Step::End;
        self.guard.disarm();
        Some(Err(Aborted(why)))
    }
}
