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
//! the registry stopping), its log is finished exactly once: the state's
//! `Drop` finishes it with `internal` if nothing else did. That is what
//! makes "every `ack` is followed by exactly one `done`" hold.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use skald_protocol::{ErrorBody, ErrorCode, FinishReason, Usage};
use tokio::task::JoinHandle;

use crate::hub::Slots;
use crate::ports::model::{ModelErrorKind, ModelEvent, ModelFinish, ModelProvider, ModelRequest};
use crate::ports::store::FinishedAnswer;
use crate::stream_log::{StreamEnd, StreamLog};
use crate::time::now_ms;

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
    pub request: ModelRequest,
    pub prompt_tokens_estimate: u64,
    pub model: Arc<dyn ModelProvider>,
    pub(crate) slots: Arc<Slots>,
    pub first_token_timeout: Duration,
    pub token_idle_timeout: Duration,
    pub store_timeout: Duration,
}

pub struct StreamActor;

pub struct StreamState {
    log: Arc<StreamLog>,
    slots: Arc<Slots>,
    store_timeout: Duration,
    prompt_tokens_estimate: u64,
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
                args.request,
                args.log.clone(),
                args.first_token_timeout,
                args.token_idle_timeout,
                myself,
            ),
            span,
        ));
        Ok(StreamState {
            log: args.log,
            slots: args.slots,
            store_timeout: args.store_timeout,
            prompt_tokens_estimate: args.prompt_tokens_estimate,
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
            StreamMsg::Cancel => {
                if let Some(pump) = state.pump.take() {
                    pump.abort();
                }
                PumpOutcome::Finished {
                    reason: FinishReason::Cancelled,
                    usage: None,
                }
            }
            StreamMsg::Abort(error) => {
                if let Some(pump) = state.pump.take() {
                    pump.abort();
                }
                PumpOutcome::Failed {
                    code: error.code,
                    message: error.message,
                    usage: None,
                }
            }
            StreamMsg::PumpEnded(outcome) => outcome,
        };
        if !state.log.is_finished() {
            state.pump = None;
            state.finish(outcome).await;
        }
        myself.stop(None);
        Ok(())
    }
}

impl StreamState {
    /// Stores the answer, then ends the log (so a client that sees `done`
    /// finds the answer in the history).
    async fn finish(&self, outcome: PumpOutcome) {
        let (text, tokens) = self.log.text_and_tokens();
        let estimate = Usage {
            prompt_tokens: self.prompt_tokens_estimate,
            completion_tokens: tokens,
        };
        let end = match outcome {
            PumpOutcome::Finished { reason, usage } => StreamEnd {
                finish_reason: reason,
                usage: usage.unwrap_or(estimate),
                error: None,
            },
            PumpOutcome::Failed {
                code,
                message,
                usage,
            } => StreamEnd {
                finish_reason: FinishReason::Error,
                usage: usage.unwrap_or(estimate),
                error: Some(ErrorBody { code, message }),
            },
        };
        count_finish(&end);
        self.slots
            .persist(finished_answer(&self.log, text, &end), self.store_timeout)
            .await;
        self.log.finish(end);
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        let (_, tokens) = self.log.text_and_tokens();
        let ended = self.log.finish(StreamEnd {
            finish_reason: FinishReason::Error,
            usage: Usage {
                prompt_tokens: self.prompt_tokens_estimate,
                completion_tokens: tokens,
            },
            error: Some(ErrorBody {
                code: ErrorCode::Internal,
                message: "the stream stopped unexpectedly".into(),
            }),
        });
        if ended {
            metrics::counter!("skald_streams_finished_total", "finish_reason" => "error")
                .increment(1);
            tracing::error!(stream_id = %self.log.ids.stream_id, "stream ended without finishing; sent done with internal error");
        }
    }
}

fn count_finish(end: &StreamEnd) {
    metrics::counter!("skald_streams_finished_total", "finish_reason" => end.finish_reason.as_str())
        .increment(1);
    metrics::counter!("skald_tokens_total").increment(end.usage.completion_tokens);
    if let Some(error) = &end.error {
        metrics::counter!("skald_upstream_errors_total", "code" => error.code.as_str())
            .increment(1);
    }
}

/// The stored form of a stream's answer.
pub fn finished_answer(log: &StreamLog, content: String, end: &StreamEnd) -> FinishedAnswer {
    FinishedAnswer {
        user: log.ids.user.clone(),
        conversation_id: log.ids.conversation_id.clone(),
        message_id: log.ids.message_id.clone(),
        content,
        finish_reason: end.finish_reason,
        usage: end.usage,
        at_ms: now_ms(),
    }
}

async fn run_pump(
    model: Arc<dyn ModelProvider>,
    request: ModelRequest,
    log: Arc<StreamLog>,
    first_token_timeout: Duration,
    token_idle_timeout: Duration,
    myself: ActorRef<StreamMsg>,
) {
    let outcome = pump(
        model,
        request,
        &log,
        first_token_timeout,
        token_idle_timeout,
    )
    .await;
    // The actor may be gone (cancelled meanwhile): nothing to tell then.
    let _ = myself.cast(StreamMsg::PumpEnded(outcome));
}

/// Pulls the model's tokens into the log, within the time limits and the
/// bot's `max_tokens`.
pub async fn pump(
    model: Arc<dyn ModelProvider>,
    request: ModelRequest,
    log: &StreamLog,
    first_token_timeout: Duration,
    token_idle_timeout: Duration,
) -> PumpOutcome {
    let max_tokens = u64::from(request.max_tokens);
    let deadline = tokio::time::Instant::now() + first_token_timeout;
    let failed = |code, message: String, usage| PumpOutcome::Failed {
        code,
        message,
        usage,
    };
    let started = std::time::Instant::now();
    let mut tokens = match tokio::time::timeout_at(deadline, model.start(request)).await {
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
    let mut received = 0u64;
    loop {
        let next = if received == 0 {
            tokio::time::timeout_at(deadline, tokens.next()).await
        } else {
            tokio::time::timeout(token_idle_timeout, tokens.next()).await
        };
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
                    Some(ModelFinish::Stop) => PumpOutcome::Finished {
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
                }
            }
            Ok(Some(Err(e))) => return failed(code_of(e.kind), e.message, usage),
            Ok(Some(Ok(ModelEvent::Token(token)))) => {
                if token.is_empty() {
                    continue;
                }
                if received >= max_tokens {
                    // The provider ignored max_tokens: stop it here.
                    return PumpOutcome::Finished {
                        reason: FinishReason::Length,
                        usage,
                    };
                }
                received = log.push_token(&token);
                if received == 1 {
                    metrics::histogram!("skald_time_to_first_token_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
            }
            Ok(Some(Ok(ModelEvent::Usage(u)))) => usage = Some(u),
            Ok(Some(Ok(ModelEvent::Finish(f)))) => finish = Some(f),
        }
    }
}

fn code_of(kind: ModelErrorKind) -> ErrorCode {
    match kind {
        ModelErrorKind::Upstream => ErrorCode::UpstreamError,
        ModelErrorKind::Timeout => ErrorCode::UpstreamTimeout,
    }
}
