//! The Session actor: one per authenticated WebSocket connection.
//!
//! It takes decoded client frames from the connection's reader task, one at
//! a time (so a user's `send`s on one connection are ordered and idempotency
//! needs no locking here), and answers through the connection's
//! [`Outbox`]. It never touches the socket: the writer task does, so a slow
//! client never blocks this mailbox and `cancel` is always heard.
//!
//! The flow of a `send` (DESIGN.md): validate, check idempotency, store the
//! user message, start a Stream through the registry, `ack`, then the
//! stream's deltas and `done` flow from its log to the outbox.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use skald_protocol::{
    ClientFrame, CloseCode, ErrorBody, ErrorCode, FinishReason, Limits, ServerFrame, Usage,
};

use crate::hub::Hub;
use crate::outbox::Outbox;
use crate::ports::limits::{LimitsError, QuotaLimits, RateDecision, Reservation, ReserveDecision};
use crate::ports::model::ModelRequest;
use crate::ports::store::{
    AuditAction, AuditRecord, BeginOutcome, Exchange, NewConversation, NewExchange, StoreError,
};
use crate::registry::{StartStream, StreamHandle};
use crate::stream::StreamMsg;
use crate::stream_log::{StreamIds, StreamLog};
use crate::time::{month_of, now_ms};
use crate::{new_id, prompt};

/// Who is connected, from the verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedUser {
    pub id: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
}

pub enum SessionMsg {
    /// A decoded frame from the client.
    Frame(ClientFrame),
    /// A frame that could not be decoded; the text says why.
    Invalid(String),
}

pub struct SessionArgs {
    pub session_id: String,
    pub user: AuthedUser,
    /// The client's address, for the audit log.
    pub address: Option<std::net::IpAddr>,
    pub outbox: Arc<Outbox>,
    pub hub: Arc<Hub>,
}

pub struct Session;

pub struct SessionState {
    session_id: String,
    user: AuthedUser,
    address: Option<std::net::IpAddr>,
    outbox: Arc<Outbox>,
    hub: Arc<Hub>,
    /// Streams this connection started that may still be live.
    started: Vec<Arc<StreamLog>>,
    invalid_in_a_row: u32,
}

/// A refusal, answered with an `error` frame carrying the `send.id`.
struct Refusal {
    code: ErrorCode,
    message: String,
    retry_after_ms: Option<u64>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        retry_after_ms: None,
    }
}

fn limits_unavailable(e: LimitsError) -> Refusal {
    tracing::warn!(error = %e, "limits unavailable");
    refuse(
        ErrorCode::Unavailable,
        "limits are unavailable, try again later",
    )
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::NotFound(m) => refuse(ErrorCode::NotFound, m),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "store unavailable");
                refuse(
                    ErrorCode::Unavailable,
                    "storage is unavailable, try again later",
                )
            }
        }
    }
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        Ok(SessionState {
            session_id: args.session_id,
            user: args.user,
            address: args.address,
            outbox: args.outbox,
            hub: args.hub,
            started: Vec::new(),
            invalid_in_a_row: 0,
        })
    }

    /// `ready` is sent from here, in the session's own task: `pre_start`
    /// runs inside the supervisor's `spawn_linked`, and a usage lookup there
    /// (a Redis round trip) would make every connection wait for the ones
    /// before it. Frames the client sends meanwhile wait in the mailbox, so
    /// `ready` still comes first.
    async fn post_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let bot = state.hub.services.default_bot();
        let limits = state.hub.services.limits.for_user(&state.user.id, &bot);
        // What is left this month; if the limits backend cannot say, the
        // month's allowance (the quota is still enforced at each send).
        let tokens_remaining = match state.hub.usage(&state.user.id).await {
            Ok((_, usage)) => limits
                .monthly_tokens
                .saturating_sub(usage.tokens_used + usage.tokens_reserved),
            Err(_) => limits.monthly_tokens,
        };
        state.outbox.push(&ServerFrame::Ready {
            session_id: state.session_id.clone(),
            user: state.user.id.clone(),
            protocol: skald_protocol::PROTOCOL_VERSION,
            limits: Limits {
                max_message_chars: bot.max_message_chars,
                messages_per_minute: limits.messages_per_minute,
                tokens_remaining,
            },
        });
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Invalid(why) => state.invalid(why, None),
            SessionMsg::Frame(frame) => {
                state.invalid_in_a_row = 0;
                match frame {
                    // Authentication happened before this actor existed; a
                    // later `hello` (e.g. with a refreshed token) is accepted
                    // and changes nothing.
                    ClientFrame::Hello { .. } => {}
                    ClientFrame::Ping { ts } => state.outbox.push(&ServerFrame::Pong { ts }),
                    ClientFrame::Send {
                        id,
                        conversation_id,
                        bot,
                        text,
                    } => {
                        // Boxed, here and below: ractor keeps this handler's
                        // future inside every actor's processing loop, so an
                        // inline `send` (the largest future of the crate) would
                        // cost each idle session its size. Boxed, it costs a
                        // `send` one allocation.
                        let sending = Box::pin(state.send(&id, conversation_id, bot, text));
                        if let Err(r) = sending.await {
                            metrics::counter!("skald_refusals_total", "code" => r.code.as_str())
                                .increment(1);
                            state.outbox.push(&ServerFrame::Error {
                                code: r.code,
                                message: r.message,
                                id: Some(id),
                                retry_after_ms: r.retry_after_ms,
                            });
                        }
                    }
                    ClientFrame::Cancel { stream_id } => Box::pin(state.cancel(stream_id)).await,
                    ClientFrame::Resume {
                        stream_id,
                        after_seq,
                    } => Box::pin(state.resume(stream_id, after_seq)).await,
                }
            }
        }
        Ok(())
    }
}

impl SessionState {
    fn invalid(&mut self, why: String, id: Option<String>) {
        self.invalid_in_a_row += 1;
        self.outbox.push(&ServerFrame::Error {
            code: ErrorCode::InvalidRequest,
            message: why,
            id,
            retry_after_ms: None,
        });
        if self.invalid_in_a_row >= self.hub.services.sessions.max_invalid_frames {
            self.outbox
                .close(CloseCode::ProtocolError, "too many invalid frames in a row");
        }
    }

    async fn send(
        &mut self,
        id: &str,
        conversation_id: Option<String>,
        bot_name: Option<String>,
        text: String,
    ) -> Result<(), Refusal> {
        let services = self.hub.services.clone();
        let user = self.user.id.clone();
        // A `send.id` seen before answers with the first ack, whatever the rest says.
        if let Some(existing) = services.store.exchange(&user, id).await? {
            return self.replay(id, existing).await;
        }
        if self.hub.is_draining() {
            return Err(refuse(
                ErrorCode::Unavailable,
                "the server is shutting down; reconnect and send again",
            ));
        }
        let bot_name = bot_name.unwrap_or_else(|| "default".to_owned());
        let Some(bot) = services.bots.get(&bot_name) else {
            return Err(refuse(
                ErrorCode::NotFound,
                format!("no bot named {bot_name:?}"),
            ));
        };
        if text.trim().is_empty() {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "send.text must not be empty",
            ));
        }
        let chars = text.chars().count();
        if chars > bot.max_message_chars as usize {
            return Err(refuse(
                ErrorCode::MessageTooLong,
                format!(
                    "send.text has {chars} characters; this bot accepts at most {}",
                    bot.max_message_chars
                ),
            ));
        }
        self.started.retain(|log| !log.is_finished());
        if self.started.len() >= services.sessions.max_streams_per_session {
            return Err(refuse(
                ErrorCode::Busy,
                format!(
                    "this connection already runs {} streams",
                    self.started.len()
                ),
            ));
        }
        let (conversation_id, new_conversation, history) = match conversation_id {
            Some(cid) => {
                if services.store.conversation(&user, &cid).await?.is_none() {
                    return Err(refuse(ErrorCode::NotFound, "no such conversation"));
                }
                if self.started.iter().any(|l| l.ids.conversation_id == cid) {
                    return Err(refuse(
                        ErrorCode::Busy,
                        "this conversation already has an answer in progress",
                    ));
                }
                let history = services
                    .store
                    .recent_messages(&cid, bot.history_messages * 2)
                    .await?;
                (cid, None, history)
            }
            None => (
                new_id(),
                Some(NewConversation {
                    bot: bot_name.clone(),
                    title: text.chars().take(80).collect(),
                }),
                Vec::new(),
            ),
        };
        let messages = prompt::build(bot, &history, &text);
        let prompt_tokens_estimate = prompt::estimate_tokens(&messages);

        // Reserve the request and the most tokens the stream may use; the
        // stream's max tokens shrink to what the month has left.
        let limits = services.limits.for_user(&user, bot);
        let stream_id = new_id();
        let month = month_of(self.hub.now_ms());
        let reservation = Reservation {
            id: stream_id.clone(),
            user: user.clone(),
            month: month.clone(),
            tokens: prompt_tokens_estimate + u64::from(bot.max_tokens),
            min_tokens: prompt_tokens_estimate + 1,
        };
        let quota = QuotaLimits {
            monthly_tokens: limits.monthly_tokens,
            monthly_requests: limits.monthly_requests,
        };
        // The rate check and the reservation are independent decisions, so
        // they run together: one limits round trip on an accepted `send`'s
        // path instead of two. A refused rate gives the reservation back.
        let rate_key = format!("user:{user}");
        let (rate, reserved) = tokio::join!(
            self.hub.check_rate(&rate_key, limits.messages_per_minute),
            self.hub.reserve(reservation, quota)
        );
        let release = |hub: &Hub| hub.settle(&user, &month, &stream_id, 0, false);
        let rate_refusal = match rate {
            Ok(RateDecision::Allowed) => None,
            Ok(RateDecision::Limited { retry_after_ms }) => Some(Refusal {
                code: ErrorCode::RateLimited,
                message: format!(
                    "more than {} messages a minute; retry in {retry_after_ms} ms",
                    limits.messages_per_minute
                ),
                retry_after_ms: Some(retry_after_ms),
            }),
            Err(e) => Some(limits_unavailable(e)),
        };
        if let Some(refusal) = rate_refusal {
            if matches!(reserved, Ok(ReserveDecision::Granted { .. })) {
                release(&self.hub);
            }
            return Err(refusal);
        }
        let granted = match reserved.map_err(limits_unavailable)? {
            ReserveDecision::Granted { tokens } => tokens,
            ReserveDecision::TokensExhausted => {
                return Err(refuse(
                    ErrorCode::QuotaExceeded,
                    "the monthly token quota is used up",
                ))
            }
            ReserveDecision::RequestsExhausted => {
                return Err(refuse(
                    ErrorCode::QuotaExceeded,
                    "the monthly request quota is used up",
                ))
            }
        };
        let max_tokens = (granted - prompt_tokens_estimate).min(u64::from(bot.max_tokens)) as u32;
        // From here on, a refusal must give the reservation back.
        let exchange = NewExchange {
            user: user.clone(),
            client_id: id.to_owned(),
            conversation_id: conversation_id.clone(),
            new_conversation,
            user_message_id: new_id(),
            text,
            assistant_message_id: new_id(),
            stream_id: stream_id.clone(),
            at_ms: now_ms(),
        };
        let message_id = exchange.assistant_message_id.clone();
        let is_new_conversation = exchange.new_conversation.is_some();
        let started = std::time::Instant::now();
        let begun = services.store.begin_exchange(exchange).await;
        metrics::histogram!("skald_store_write_duration_seconds", "op" => "begin_exchange")
            .record(started.elapsed().as_secs_f64());
        if begun.is_err() {
            metrics::counter!("skald_store_errors_total").increment(1);
        }
        match begun {
            Ok(BeginOutcome::Created) => {}
            Ok(BeginOutcome::Existing(existing)) => {
                // Another connection of this user won the race for this id.
                release(&self.hub);
                return self.replay(id, existing).await;
            }
            Err(e) => {
                release(&self.hub);
                return Err(e.into());
            }
        }
        if is_new_conversation {
            self.hub.audit(AuditRecord::now(
                AuditAction::ConversationCreated,
                Some(&user),
                self.address,
                conversation_id.clone(),
            ));
        }
        let log = Arc::new(StreamLog::new(StreamIds {
            stream_id: Arc::from(stream_id.as_str()),
            user: user.clone(),
            conversation_id: conversation_id.clone(),
            message_id: message_id.clone(),
        }));
        let start = StartStream {
            log: log.clone(),
            prompt_tokens_estimate,
            quota_month: month.clone(),
            request: ModelRequest {
                model: bot.model.clone(),
                messages,
                temperature: bot.temperature,
                max_tokens,
                user: user.clone(),
            },
        };
        if let Err(e) = self.hub.start_stream(start).await {
            tracing::error!(error = %e, "could not start a stream");
            release(&self.hub);
            return Err(refuse(ErrorCode::Internal, "could not start the answer"));
        }
        tracing::debug!(session_id = %self.session_id, %stream_id, "stream started");
        self.started.push(log.clone());
        let ack = ServerFrame::Ack {
            id: id.to_owned(),
            conversation_id,
            message_id,
            stream_id,
        };
        self.outbox.push_and_attach(Some(&ack), log, 0);
        Ok(())
    }

    /// Answers a `send` whose id was used before: its ack again, then the
    /// stream from the start if this connection does not follow it yet, or
    /// its `done` if it finished.
    async fn replay(&mut self, id: &str, existing: Exchange) -> Result<(), Refusal> {
        let ack = ServerFrame::Ack {
            id: id.to_owned(),
            conversation_id: existing.conversation_id.clone(),
            message_id: existing.assistant_message_id.clone(),
            stream_id: existing.stream_id.clone(),
        };
        if let Some(handle) = self.lookup(&existing.stream_id).await {
            self.outbox.push_and_attach(Some(&ack), handle.log, 0);
            return Ok(());
        }
        self.outbox.push(&ack);
        let (finish_reason, usage, error) = match existing.finished {
            Some((reason, usage)) => (reason, usage, None),
            // Stored as started but never finished and no longer running:
            // the server that ran it went away.
            None => (
                FinishReason::Error,
                Usage::default(),
                Some(ErrorBody {
                    code: ErrorCode::Internal,
                    message: "the answer was interrupted".into(),
                }),
            ),
        };
        self.outbox.push(&ServerFrame::Done {
            stream_id: existing.stream_id,
            message_id: existing.assistant_message_id,
            finish_reason,
            usage,
            error,
        });
        Ok(())
    }

    async fn lookup(&self, stream_id: &str) -> Option<StreamHandle> {
        self.hub.lookup_stream(stream_id, &self.user.id).await
    }

    async fn cancel(&mut self, stream_id: String) {
        match self.lookup(&stream_id).await {
            Some(handle) => {
                if let Some(actor) = handle.actor {
                    let _ = actor.cast(StreamMsg::Cancel);
                }
                // Already ended: its `done` was or will be sent; nothing to do.
            }
            None => self
                .outbox
                .push(&ServerFrame::error(ErrorCode::NotFound, "no such stream")),
        }
    }

    async fn resume(&mut self, stream_id: String, after_seq: i64) {
        let Some(handle) = self.lookup(&stream_id).await else {
            self.outbox.push(&ServerFrame::error(
                ErrorCode::NotFound,
                "no such stream, or it can no longer be resumed",
            ));
            return;
        };
        let next_seq = (after_seq + 1) as u64;
        if next_seq > handle.log.frames_cut() {
            self.invalid(
                format!("resume.after_seq {after_seq} is beyond the stream's last seq"),
                None,
            );
            return;
        }
        if self.outbox.is_attached(&stream_id) {
            self.invalid("this connection already follows that stream".into(), None);
            return;
        }
        self.outbox.push_and_attach(None, handle.log, next_seq);
    }
}
