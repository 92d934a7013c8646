//! The Stream actor: one generation, from the upstream request to the stored
//! answer.
//!
//! The actor itself only decides; a pump task does the waiting. The pump
//! pulls tokens from the model into the stream's [`StreamLog`] (which wakes
//! the connections that follow it) and reports how it ended. The actor stays
//! free to take `Cancel` at any moment: cancelling aborts the pump, which
//! drops the token stream and with it the upstream HTTP response, so the
//! provider stops generating and billing.
//!
//! Streams are children of the [`crate::registry`], not of a session: a
//! connection that drops does not end its streams (PROTOCOL.md); they run
//! to the end, are stored, and stay resumable.
//!
//! Whatever ends a stream (finish, cancel, upstream failure, a panic here or
//! the registry stopping), it is concluded exactly once, in one order:
//! the answer is handed to the Persister and confirmed durable (in the
//! store, or in its spool while the store is down), then the log is
//! finished (every connection following it sends its `done`), then the
//! quota reservation is settled with the stream's usage. A panic reaches
//! the same path: the state's `Drop` concludes the stream as `internal` in
//! a task of its own. The one case where `done` comes without a durable
//! answer is a Persister that does not confirm within
//! [`PERSIST_ATTEMPTS`] × `store_timeout`; that `done` then says so
//! (`finish_reason: error`, code `unavailable`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use skald_protocol::{ErrorBody, ErrorCode, FinishReason, Usage};
use tokio::task::JoinHandle;

use crate::limits::quota_keeper::QuotaMsg;
use crate::persister::PersisterMsg;
use crate::ports::limits::Settle;
use crate::ports::model::{
    ModelError, ModelErrorKind, ModelEvent, ModelFinish, ModelProvider, ModelRequest, TokenStream,
};
use crate::ports::store::{AnswerEnd, FinishedAnswer};
use crate::slot::Slot;
use crate::stream_log::StreamLog;
use crate::time::{now_ms, Month};

/// Tries to have an answer confirmed durable before its `done` goes out
/// without that promise.
pub const PERSIST_ATTEMPTS: u32 = 3;

pub enum StreamMsg {
    /// Stop generating; the stream ends with `cancelled`.
    Cancel,
    /// Stop generating because the server stops; the stream ends with
    /// `error` and this error (`unavailable`).
    Abort(ErrorBody),
    /// The pump finished by itself.
    PumpEnded(PumpOutcome),
}

/// How the pump ended.
#[derive(Debug)]
pub enum PumpOutcome {
    Finished {
        reason: FinishReason,
        usage: Option<Usage>,
    },
    Failed {
        code: ErrorCode,
        message: String,
        usage: Option<Usage>,
    },
}

pub struct StreamArgs {
    pub log: Arc<StreamLog>,
    pub generation: Generation,
    pub prompt_tokens_estimate: u64,
    /// The month of the stream's quota reservation (its id is the stream id).
    pub quota_month: Month,
    pub model: Arc<dyn ModelProvider>,
    pub persister: Arc<Slot<PersisterMsg>>,
    pub quota: Arc<Slot<QuotaMsg>>,
    pub first_token_timeout: Duration,
    pub token_idle_timeout: Duration,
    pub store_timeout: Duration,
}

pub struct StreamActor;

/// What concluding a stream needs, taken out of the state once.
struct Conclusion {
    log: Arc<StreamLog>,
    persister: Arc<Slot<PersisterMsg>>,
    quota: Arc<Slot<QuotaMsg>>,
    store_timeout: Duration,
    prompt_tokens_estimate: u64,
    quota_month: Month,
}

pub struct StreamState {
    conclusion: Option<Conclusion>,
    pump: Option<JoinHandle<()>>,
}

impl Actor for StreamActor {
    type Msg = StreamMsg;
    type State = StreamState;
    type Arguments = StreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StreamMsg>,
        args: StreamArgs,
    ) -> Result<StreamState, ActorProcessingErr> {
        let span = tracing::info_span!(
            "stream",
            stream_id = %args.log.ids.stream_id,
            user = %args.log.ids.user,
            conversation_id = %args.log.ids.conversation_id
        );
        let pump = tokio::spawn(tracing::Instrument::instrument(
            run_pump(
                args.model,
                args.generation,
                args.log.clone(),
                args.first_token_timeout,
                args.token_idle_timeout,
                myself,
            ),
            span,
        ));
        Ok(StreamState {
            conclusion: Some(Conclusion {
                log: args.log,
                persister: args.persister,
                quota: args.quota,
                store_timeout: args.store_timeout,
                prompt_tokens_estimate: args.prompt_tokens_estimate,
                quota_month: args.quota_month,
            }),
            pump: Some(pump),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<StreamMsg>,
        message: StreamMsg,
        state: &mut StreamState,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = match message {
            StreamMsg::Cancel => PumpOutcome::Finished {
                reason: FinishReason::Cancelled,
                usage: None,
            },
            StreamMsg::Abort(error) => PumpOutcome::Failed {
                code: error.code,
                message: error.message,
                usage: None,
            },
            StreamMsg::PumpEnded(outcome) => outcome,
        };
        // Cancelling drops the token stream, and with it the upstream
        // request: the provider stops generating (and billing).
        if let Some(pump) = state.pump.take() {
            pump.abort();
        }
        if let Some(conclusion) = state.conclusion.take() {
            let end = conclusion.end_of(outcome);
            conclusion.conclude(end).await;
        }
        myself.stop(None);
        Ok(())
    }
}

impl Conclusion {
    fn estimate(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens_estimate,
            completion_tokens: self.log.text_and_tokens().1,
            reasoning_tokens: None,
            estimated: true,
        }
    }

    fn end_of(&self, outcome: PumpOutcome) -> AnswerEnd {
        match outcome {
            PumpOutcome::Finished { reason, usage } => AnswerEnd {
                finish_reason: reason,
                usage: usage.unwrap_or_else(|| self.estimate()),
                error: None,
            },
            PumpOutcome::Failed {
                code,
                message,
                usage,
            } => AnswerEnd {
                finish_reason: FinishReason::Error,
                usage: usage.unwrap_or_else(|| self.estimate()),
                error: Some(ErrorBody { code, message }),
            },
        }
    }

    /// Stores the answer, then ends the log (a client that sees `done`
    /// finds the answer in the history), then settles the quota.
    async fn conclude(self, end: AnswerEnd) {
        let (text, _) = self.log.text_and_tokens();
        let answer = finished_answer(&self.log, text, &end);
        let end = if self.make_durable(answer).await {
            end
        } else {
            metrics::counter!("skald_answers_not_durable_total").increment(1);
            AnswerEnd {
                finish_reason: FinishReason::Error,
                error: Some(ErrorBody {
                    code: ErrorCode::Unavailable,
                    message: "the answer could not be stored".into(),
                }),
                ..end
            }
        };
        count_finish(&end);
        let tokens = end.usage.total();
        self.log.finish(end);
        self.quota.settle(Settle {
            id: self.log.ids.stream_id.clone(),
            user: self.log.ids.user.clone(),
            month: self.quota_month,
            tokens,
            count_request: true,
        });
    }

    /// Whether the Persister confirmed the answer durable (it is restarted
    /// by the root if it failed, so each attempt may reach a new one).
    async fn make_durable(&self, answer: FinishedAnswer) -> bool {
        for attempt in 1..=PERSIST_ATTEMPTS {
            match self
                .persister
                .persist(answer.clone(), self.store_timeout)
                .await
            {
                Ok(()) => return true,
                Err(e) => tracing::error!(
                    message_id = %answer.message_id,
                    attempt,
                    error = %e,
                    "the answer was not confirmed durable"
                ),
            }
        }
        false
    }
}

impl Drop for StreamState {
    /// A stream that did not conclude (its actor panicked or was killed)
    /// concludes here, as `internal`, through the same path as any other.
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        let Some(conclusion) = self.conclusion.take() else {
            return;
        };
        tracing::error!(stream_id = %conclusion.log.ids.stream_id, "stream ended without finishing; concluding it as internal");
        let end = conclusion.end_of(PumpOutcome::Failed {
            code: ErrorCode::Internal,
            message: "the stream stopped unexpectedly".into(),
            usage: None,
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(conclusion.conclude(end));
            }
            // No runtime left (the process is ending): the clients still get
            // their `done`.
            Err(_) => {
                conclusion.log.finish(end);
            }
        }
    }
}

fn count_finish(end: &AnswerEnd) {
    metrics::counter!("skald_streams_finished_total", "finish_reason" => end.finish_reason.as_str())
        .increment(1);
    metrics::counter!("skald_tokens_total").increment(end.usage.completion_tokens);
    if let Some(error) = &end.error {
        metrics::counter!("skald_upstream_errors_total", "code" => error.code.as_str())
            .increment(1);
    }
}

/// The stored form of a stream's answer.
pub fn finished_answer(log: &StreamLog, content: String, end: &AnswerEnd) -> FinishedAnswer {
    FinishedAnswer {
        user: log.ids.user.clone(),
        conversation_id: log.ids.conversation_id.clone(),
        message_id: log.ids.message_id.clone(),
        content,
        reasoning: log.reasoning(),
        tool_calls: log.tool_calls(),
        end: AnswerEnd {
            finish_reason: end.finish_reason,
            usage: end.usage,
            error: end.error.clone(),
        },
        at_ms: now_ms(),
    }
}

async fn run_pump(
    model: Arc<dyn ModelProvider>,
    generation: Generation,
    log: Arc<StreamLog>,
    first_token_timeout: Duration,
    token_idle_timeout: Duration,
    myself: ActorRef<StreamMsg>,
) {
    let outcome = pump(
        model,
        generation,
        &log,
        first_token_timeout,
        token_idle_timeout,
    )
    .await;
    // The actor may be gone (cancelled meanwhile): nothing to tell then.
    let _ = myself.cast(StreamMsg::PumpEnded(outcome));
}

/// An upstream request that began before its stream: started while the
/// exchange is made durable, so that the time to the first token does not
/// include that commit (the `ack` still waits for it). Dropped unused (the
/// commit failed, or another connection won the idempotency key), it
/// aborts the request, which closes its connection: the provider stops.
pub struct Prestarted {
    task: JoinHandle<Result<TokenStream, ModelError>>,
    /// The request's bounds (the request itself went to the task).
    bounds: Bounds,
}

impl Prestarted {
    pub fn spawn(model: Arc<dyn ModelProvider>, request: ModelRequest) -> Prestarted {
        let bounds = Bounds::of(&request);
        Prestarted {
            task: tokio::spawn(async move { model.start(request).await }),
            bounds,
        }
    }

    async fn tokens(mut self) -> Result<TokenStream, ModelError> {
        match (&mut self.task).await {
            Ok(started) => started,
            Err(e) => Err(ModelError::upstream(format!(
                "the upstream request stopped: {e}"
            ))),
        }
    }
}

impl Drop for Prestarted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a stream gets its tokens: it makes the upstream request, or takes
/// the one that began before it.
pub enum Generation {
    Request(Box<ModelRequest>),
    Prestarted(Prestarted),
}

/// What the pump holds an answer to, from the bot's settings.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    max_tokens: u32,
    max_answer_bytes: u32,
    max_reasoning_chars: u32,
}

impl Bounds {
    fn of(request: &ModelRequest) -> Bounds {
        Bounds {
            max_tokens: request.max_tokens,
            max_answer_bytes: request.max_answer_bytes,
            max_reasoning_chars: request.max_reasoning_chars,
        }
    }
}

/// Pulls the model's tokens into the log, within the time limits and the
/// bot's `max_tokens` and `max_answer_bytes`.
pub async fn pump(
    model: Arc<dyn ModelProvider>,
    generation: Generation,
    log: &StreamLog,
    first_token_timeout: Duration,
    token_idle_timeout: Duration,
) -> PumpOutcome {
    let bounds = match &generation {
        Generation::Request(request) => Bounds::of(request),
        Generation::Prestarted(prestarted) => prestarted.bounds,
    };
    let max_tokens = u64::from(bounds.max_tokens);
    let mut bytes_left = bounds.max_answer_bytes as usize;
    let mut reasoning_left = bounds.max_reasoning_chars as usize;
    let deadline = tokio::time::Instant::now() + first_token_timeout;
    let failed = |code, message: String, usage| PumpOutcome::Failed {
        code,
        message,
        usage,
    };
    let started = std::time::Instant::now();
    let starting = async move {
        match generation {
            Generation::Request(request) => model.start(*request).await,
            Generation::Prestarted(prestarted) => prestarted.tokens().await,
        }
    };
    let mut tokens = match tokio::time::timeout_at(deadline, starting).await {
        Err(_) => {
            return failed(
                ErrorCode::UpstreamTimeout,
                "the model did not answer in time".into(),
                None,
            )
        }
        Ok(Err(e)) => return failed(code_of(e.kind), e.message, None),
        Ok(Ok(tokens)) => {
            metrics::histogram!("skald_upstream_request_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            tokens
        }
    };
    let mut usage = None;
    let mut finish = None;
    // Tokens of both kinds: the first, of either, is the model's sign of
    // life (a reasoning model thinks before it answers).
    let mut received = 0u64;
    let mut answer_tokens = 0u64;
    loop {
        let next = if received == 0 {
            tokio::time::timeout_at(deadline, tokens.next()).await
        } else {
            tokio::time::timeout(token_idle_timeout, tokens.next()).await
        };
        let silent = received == 0;
        match next {
            Err(_) => {
                return failed(
                    ErrorCode::UpstreamTimeout,
                    "the model stopped sending tokens".into(),
                    usage,
                )
            }
            Ok(None) => {
                return match finish {
                    // A turn that ends in tool calls ended well: the calls
                    // are in the log, and the OpenAI-compatible API names
                    // the reason from them.
                    Some(ModelFinish::Stop | ModelFinish::ToolCalls) => PumpOutcome::Finished {
                        reason: FinishReason::Stop,
                        usage,
                    },
                    Some(ModelFinish::Length) => PumpOutcome::Finished {
                        reason: FinishReason::Length,
                        usage,
                    },
                    None => failed(
                        ErrorCode::UpstreamError,
                        "the model's stream ended before the answer was complete".into(),
                        usage,
                    ),
                };
            }
            Ok(Some(Err(e))) => return failed(code_of(e.kind), e.message, usage),
            Ok(Some(Ok(ModelEvent::Token(token)))) => {
                if token.is_empty() {
                    continue;
                }
                if answer_tokens >= max_tokens {
                    // The provider ignored max_tokens: stop it here.
                    return PumpOutcome::Finished {
                        reason: FinishReason::Length,
                        usage,
                    };
                }
                if token.len() > bytes_left {
                    // One delta too many bytes: keep what fits, end here.
                    let fits = &token[..floor_char_boundary(&token, bytes_left)];
                    if !fits.is_empty() {
                        log.push_token(fits);
                    }
                    return PumpOutcome::Finished {
                        reason: FinishReason::Length,
                        usage,
                    };
                }
                bytes_left -= token.len();
                answer_tokens += 1;
                received = log.push_token(&token);
            }
            Ok(Some(Ok(ModelEvent::Reasoning(token)))) => {
                if token.is_empty() {
                    continue;
                }
                let chars = token.chars().count();
                if chars > reasoning_left {
                    // Thinking past the bound: a sign of life, not kept.
                    if reasoning_left > 0 {
                        tracing::debug!(stream_id = %log.ids.stream_id, "thinking past max_reasoning_chars is dropped");
                        metrics::counter!("skald_reasoning_dropped_total").increment(1);
                    }
                    reasoning_left = 0;
                    received = received.max(1);
                    continue;
                }
                reasoning_left -= chars;
                received = log.push_reasoning(&token);
            }
            Ok(Some(Ok(ModelEvent::ToolCall(delta)))) => {
                if delta.is_empty() {
                    continue;
                }
                if delta.len() > bytes_left {
                    // A cut call is no call: end before it.
                    return PumpOutcome::Finished {
                        reason: FinishReason::Length,
                        usage,
                    };
                }
                bytes_left -= delta.len();
                received = log.push_tool_call(delta);
            }
            Ok(Some(Ok(ModelEvent::Usage(u)))) => usage = Some(u),
            Ok(Some(Ok(ModelEvent::Finish(f)))) => finish = Some(f),
        }
        if silent && received > 0 {
            metrics::histogram!("skald_time_to_first_token_seconds")
                .record(started.elapsed().as_secs_f64());
        }
    }
}

/// The largest index at most `at` that is a character boundary of `text`
/// (std's `str::floor_char_boundary` needs Rust 1.91; the MSRV is 1.88).
fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

fn code_of(kind: ModelErrorKind) -> ErrorCode {
    match kind {
        ModelErrorKind::Upstream => ErrorCode::UpstreamError,
        ModelErrorKind::Timeout => ErrorCode::UpstreamTimeout,
    }
}
