//! The Session actor: one per authenticated WebSocket connection.
//!
//! It takes decoded client frames from the connection's reader task, one at
//! a time (so a user's `send`s on one connection are ordered and idempotency
//! needs no locking here), and answers through the connection's
//! [`Outbox`]. It never touches the socket: the writer task does, so a slow
//! client never blocks this mailbox and `cancel` is always heard.
//!
//! The mailbox is bounded from outside: each frame comes with an
//! [`InboundPermit`] that the reader took before casting it and that is
//! released once the frame is handled, so a client that sends faster than
//! its session handles waits on TCP backpressure instead of filling memory.
//!
//! A `send` is a sequence of named steps ([`SessionState::send`]): replay a
//! known `send.id`, admit (draining, bot, text, busy), find the
//! conversation, reserve the rate and the quota (a [`Reserved`] guard gives
//! the reservation back if anything later refuses), store the exchange,
//! start the stream, `ack`. Then the stream's deltas and `done` flow from
//! its log to the outbox.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use skald_protocol::{
    ClientFrame, ClientMessageId, CloseCode, ConversationId, DecodeError, ErrorBody, ErrorCode,
    FinishReason, Limits, MessageId, ServerFrame, SessionId, StartedMessage, StreamId, Usage,
    UserId,
};

use crate::directory::Directory;
use crate::limits::quota_keeper::QuotaMsg;
use crate::outbox::Outbox;
use crate::ports::bus::UserEvent;
use crate::ports::limits::{
    LimitsError, QuotaLimits, RateDecision, RateKey, RateLimit, Reservation, ReserveDecision,
    Settle,
};
use crate::ports::model::ModelRequest;
use crate::ports::store::{
    AnswerEnd, AuditAction, AuditRecord, BeginOutcome, Exchange, NewConversation, NewExchange,
    StoreError, StoredMessage,
};
use crate::prompt;
use crate::registry::{StartStream, StreamHandle};
use crate::relay::RelayMsg;
use crate::settings::{BotSettings, EffectiveLimits};
use crate::slot::Slot;
use crate::stream::StreamMsg;
use crate::stream_log::{Cursor, StreamIds, StreamLog};
use crate::time::{now_ms, Month};

/// Who is connected, from the verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedUser {
    pub id: UserId,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    /// The only bot this user talks to, whatever `send.bot` says (a demo
    /// identity: the demo's bot and its small limits); None: any bot.
    pub bot: Option<String>,
}

impl AuthedUser {
    /// The bot of a `send` that names `asked` (or none).
    pub fn bot_for(&self, asked: Option<String>) -> String {
        match &self.bot {
            Some(pinned) => pinned.clone(),
            None => asked.unwrap_or_else(|| "default".to_owned()),
        }
    }
}

/// A place in a session's bounded inbound queue, held by a frame until it
/// is handled.
pub type InboundPermit = tokio::sync::OwnedSemaphorePermit;

pub enum SessionMsg {
    /// A decoded frame from the client.
    Frame(ClientFrame, InboundPermit),
    /// A frame that could not be decoded.
    Invalid(DecodeError, InboundPermit),
}

pub struct SessionArgs {
    pub session_id: SessionId,
    pub user: AuthedUser,
    /// The client's address, for the audit log.
    pub address: Option<std::net::IpAddr>,
    pub outbox: Arc<Outbox>,
    pub directory: Arc<Directory>,
}

pub struct Session;

pub struct SessionState {
    session_id: SessionId,
    user: AuthedUser,
    address: Option<std::net::IpAddr>,
    outbox: Arc<Outbox>,
    directory: Arc<Directory>,
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
            StoreError::NotFound(what) => refuse(ErrorCode::NotFound, format!("no such {what}")),
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                refuse(
                    ErrorCode::Unavailable,
                    "storage is unavailable, try again later",
                )
            }
        }
    }
}

/// A quota reservation that is given back when dropped, unless the `send`
/// went through ([`Reserved::keep`]): every refusal after the reservation
/// releases it, whichever step refused.
struct Reserved {
    quota: Arc<Slot<QuotaMsg>>,
    reservation: Option<Reservation>,
    /// Tokens granted (the prompt estimate included).
    granted: u64,
}

impl Reserved {
    /// The `send` was accepted: the stream settles the reservation.
    fn keep(mut self) -> Reservation {
        self.reservation.take().expect("a reservation is kept once")
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            self.quota.settle(Settle::release(&reservation));
        }
    }
}

/// A `send` that passed admission.
struct Admitted<'b> {
    bot_name: String,
    bot: &'b BotSettings,
    text: String,
}

/// Where the new exchange goes.
struct Target {
    conversation_id: ConversationId,
    new_conversation: Option<NewConversation>,
    history: Vec<StoredMessage>,
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
            directory: args.directory,
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
        let services = &state.directory.services;
        let bot = services
            .bots
            .get(&state.user.bot_for(None))
            .cloned()
            .unwrap_or_else(|| services.default_bot());
        let limits = services.limits.for_user(&state.user.id, &bot);
        // What is left this month; if the limits backend cannot say, the
        // month's allowance (the quota is still enforced at each send).
        let now_ms = state.directory.now_ms();
        let tokens_remaining = match state
            .directory
            .quota_keeper
            .usage(&state.user.id, Month::of(now_ms), now_ms)
            .await
        {
            Ok(usage) => limits
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
        // From now on (after `ready`), this connection hears of the user's
        // other connections' streams.
        state
            .directory
            .board
            .join(&state.user.id, &state.session_id, &state.outbox);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        state
            .directory
            .board
            .leave(&state.user.id, &state.session_id);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // The permit is released when this handler returns: the next frame
        // may then be read.
        match message {
            SessionMsg::Invalid(error, _permit) => state.invalid(&error),
            SessionMsg::Frame(frame, _permit) => {
                state.invalid_in_a_row = 0;
                match frame {
                    // The connection's reader handles every `hello` (the
                    // first one authenticates, later ones refresh the
                    // session's token) and casts none here.
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
                                stream_id: None,
                            });
                        }
                    }
                    ClientFrame::Cancel { stream_id } => Box::pin(state.cancel(stream_id)).await,
                    ClientFrame::Resume {
                        stream_id,
                        after_seq,
                        after_reasoning_seq,
                    } => {
                        let from = Cursor::after(after_seq, after_reasoning_seq.unwrap_or(-1));
                        Box::pin(state.resume(stream_id, from)).await
                    }
                }
            }
        }
        Ok(())
    }
}

impl SessionState {
    fn services(&self) -> &crate::Services {
        &self.directory.services
    }

    /// Answers a frame that could not be decoded, naming the `send.id` or
    /// `stream_id` it carried; too many in a row close the connection.
    fn invalid(&mut self, error: &DecodeError) {
        self.invalid_in_a_row += 1;
        self.outbox.push(&ServerFrame::Error {
            code: ErrorCode::InvalidRequest,
            message: error.to_string(),
            id: error.send_id().cloned(),
            retry_after_ms: None,
            stream_id: error.stream_id().cloned(),
        });
        self.close_if_too_many_invalid();
    }

    /// A `resume` or `cancel` that makes no sense for the named stream.
    fn invalid_for_stream(&mut self, message: String, stream_id: StreamId) {
        self.invalid_in_a_row += 1;
        self.outbox.push(&ServerFrame::stream_error(
            ErrorCode::InvalidRequest,
            message,
            stream_id,
        ));
        self.close_if_too_many_invalid();
    }

    fn close_if_too_many_invalid(&self) {
        if self.invalid_in_a_row >= self.services().sessions.max_invalid_frames {
            self.outbox
                .close(CloseCode::ProtocolError, "too many invalid frames in a row");
        }
    }

    async fn send(
        &mut self,
        id: &ClientMessageId,
        conversation_id: Option<ConversationId>,
        bot_name: Option<String>,
        text: String,
    ) -> Result<(), Refusal> {
        let services = self.directory.services.clone();
        // A `send.id` seen before answers with the first ack, whatever the rest says.
        if let Some(existing) = services.store.exchange(&self.user.id, id).await? {
            return self.replay(id, existing).await;
        }
        let admitted = self.admit(&services, bot_name, text)?;
        let target = self.target(&services, conversation_id, &admitted).await?;
        let messages = prompt::build(admitted.bot, &target.history, &admitted.text);
        let prompt_tokens_estimate = prompt::estimate_tokens(&messages);
        let stream_id = StreamId::generate();
        let reserved = self
            .reserve(&services, admitted.bot, &stream_id, prompt_tokens_estimate)
            .await?;
        let max_tokens = (reserved.granted - prompt_tokens_estimate)
            .min(u64::from(admitted.bot.max_tokens)) as u32;
        let user_message = StartedMessage {
            id: MessageId::generate(),
            content: admitted.text,
            created_at: String::new(),
        };
        let exchange = NewExchange {
            user: self.user.id.clone(),
            client_id: id.clone(),
            conversation_id: target.conversation_id.clone(),
            new_conversation: target.new_conversation,
            user_message_id: user_message.id.clone(),
            text: user_message.content.clone(),
            assistant_message_id: MessageId::generate(),
            stream_id: stream_id.clone(),
            at_ms: now_ms(),
        };
        let message_id = exchange.assistant_message_id.clone();
        let at_ms = exchange.at_ms;
        if let Some(existing) = self.store_exchange(&services, exchange).await? {
            // Another connection of this user won the race for this id;
            // `reserved` drops here and gives the reservation back.
            return self.replay(id, existing).await;
        }
        let log = Arc::new(StreamLog::new(StreamIds {
            stream_id: stream_id.clone(),
            user: self.user.id.clone(),
            conversation_id: target.conversation_id.clone(),
            message_id: message_id.clone(),
        }));
        let request = ModelRequest {
            model: admitted.bot.model.clone(),
            messages,
            temperature: admitted.bot.temperature,
            max_tokens,
            max_answer_bytes: admitted.bot.max_answer_bytes,
            user: self.user.id.clone(),
        };
        self.start_stream(log.clone(), request, prompt_tokens_estimate, reserved)
            .await?;
        tracing::debug!(session_id = %self.session_id, %stream_id, "stream started");
        self.started.push(log.clone());
        let ack = ServerFrame::Ack {
            id: id.clone(),
            conversation_id: target.conversation_id.clone(),
            message_id: message_id.clone(),
            stream_id: stream_id.clone(),
        };
        self.outbox
            .push_and_attach(Some(&ack), log, Cursor::default());
        // The user's other connections, here and on every instance.
        self.tell_others(ServerFrame::Started {
            conversation_id: target.conversation_id,
            stream_id,
            message_id,
            bot: admitted.bot_name,
            user_message: StartedMessage {
                created_at: crate::time::rfc3339(at_ms),
                ..user_message
            },
        });
        Ok(())
    }

    /// Gives a frame to this user's other connections: those of this
    /// instance through the board, the others' through the relay (when a
    /// stream bus is configured).
    fn tell_others(&self, frame: ServerFrame) {
        let d = &self.directory;
        d.board.deliver(&self.user.id, &self.session_id, &frame);
        let _ = d.relay.cast(RelayMsg::UserEvent(Box::new(UserEvent {
            instance: None,
            user: self.user.id.clone(),
            origin: self.session_id.clone(),
            frame,
        })));
    }

    /// Refuses what needs no I/O to refuse: a draining server, an unknown
    /// bot, a bad text, a connection already running its streams.
    fn admit<'b>(
        &mut self,
        services: &'b crate::Services,
        bot_name: Option<String>,
        text: String,
    ) -> Result<Admitted<'b>, Refusal> {
        if self.directory.is_draining() {
            return Err(refuse(
                ErrorCode::Unavailable,
                "the server is shutting down; reconnect and send again",
            ));
        }
        let bot_name = self.user.bot_for(bot_name);
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
        Ok(Admitted {
            bot_name,
            bot,
            text,
        })
    }

    /// The conversation the exchange goes to (the user's, not busy) and
    /// its recent history, or a new one.
    async fn target(
        &self,
        services: &crate::Services,
        conversation_id: Option<ConversationId>,
        admitted: &Admitted<'_>,
    ) -> Result<Target, Refusal> {
        let Some(cid) = conversation_id else {
            return Ok(Target {
                conversation_id: ConversationId::generate(),
                new_conversation: Some(NewConversation {
                    bot: admitted.bot_name.clone(),
                    title: admitted.text.chars().take(80).collect(),
                }),
                history: Vec::new(),
            });
        };
        if services
            .store
            .conversation(&self.user.id, &cid)
            .await?
            .is_none()
        {
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
            .recent_messages(&cid, admitted.bot.history_messages * 2)
            .await?;
        Ok(Target {
            conversation_id: cid,
            new_conversation: None,
            history,
        })
    }

    /// The rate check and the quota reservation (the request and the most
    /// tokens the stream may use, shrunk to what the month has left). They
    /// are independent decisions, so they run together: one limits round
    /// trip on an accepted `send`'s path instead of two.
    async fn reserve(
        &self,
        services: &crate::Services,
        bot: &BotSettings,
        stream_id: &StreamId,
        prompt_tokens_estimate: u64,
    ) -> Result<Reserved, Refusal> {
        let limits: EffectiveLimits = services.limits.for_user(&self.user.id, bot);
        let now_ms = self.directory.now_ms();
        let reservation = Reservation {
            id: stream_id.clone(),
            user: self.user.id.clone(),
            month: Month::of(now_ms),
            tokens: prompt_tokens_estimate + u64::from(bot.max_tokens),
            min_tokens: prompt_tokens_estimate + 1,
        };
        let quota = QuotaLimits {
            monthly_tokens: limits.monthly_tokens,
            monthly_requests: limits.monthly_requests,
        };
        let rate = RateLimit::per_minute(limits.messages_per_minute);
        let d = &self.directory;
        let (rate, reserved) = tokio::join!(
            d.rate_limiter
                .check(RateKey::User(self.user.id.clone()), rate, now_ms),
            d.quota_keeper.reserve(reservation.clone(), quota, now_ms)
        );
        // Granted or not, from here on the guard gives it back on refusal.
        let granted = match &reserved {
            Ok(ReserveDecision::Granted { tokens }) => *tokens,
            _ => 0,
        };
        let guard = Reserved {
            quota: d.quota_keeper.clone(),
            reservation: (granted > 0).then_some(reservation),
            granted,
        };
        match rate {
            Ok(RateDecision::Allowed) => {}
            Ok(RateDecision::Limited { retry_after_ms }) => {
                return Err(Refusal {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "more than {} messages a minute; retry in {retry_after_ms} ms",
                        limits.messages_per_minute
                    ),
                    retry_after_ms: Some(retry_after_ms),
                })
            }
            Err(e) => return Err(limits_unavailable(e)),
        }
        match reserved.map_err(limits_unavailable)? {
            ReserveDecision::Granted { .. } => Ok(guard),
            ReserveDecision::TokensExhausted => Err(refuse(
                ErrorCode::QuotaExceeded,
                "the monthly token quota is used up",
            )),
            ReserveDecision::RequestsExhausted => Err(refuse(
                ErrorCode::QuotaExceeded,
                "the monthly request quota is used up",
            )),
        }
    }

    /// The one write before an `ack`: claims the idempotency key and
    /// stores the user message, durably. `Some` when another connection of
    /// this user claimed the key first.
    async fn store_exchange(
        &self,
        services: &crate::Services,
        exchange: NewExchange,
    ) -> Result<Option<Exchange>, Refusal> {
        let conversation_id = exchange.conversation_id.clone();
        let is_new_conversation = exchange.new_conversation.is_some();
        let started = std::time::Instant::now();
        let begun = services.store.begin_exchange(exchange).await;
        metrics::histogram!("skald_store_write_duration_seconds", "op" => "begin_exchange")
            .record(started.elapsed().as_secs_f64());
        match begun {
            Ok(BeginOutcome::Created) => {
                if is_new_conversation {
                    self.directory.persister.audit(AuditRecord::now(
                        AuditAction::ConversationCreated,
                        Some(&self.user.id),
                        self.address,
                        conversation_id.as_str(),
                    ));
                }
                Ok(None)
            }
            Ok(BeginOutcome::Existing(existing)) => Ok(Some(existing)),
            Err(e) => {
                metrics::counter!("skald_store_errors_total").increment(1);
                Err(e.into())
            }
        }
    }

    /// Hands the stream to the registry; from then on the stream settles
    /// the reservation.
    async fn start_stream(
        &self,
        log: Arc<StreamLog>,
        request: ModelRequest,
        prompt_tokens_estimate: u64,
        reserved: Reserved,
    ) -> Result<(), Refusal> {
        let start = StartStream {
            log,
            prompt_tokens_estimate,
            quota_month: reserved
                .reservation
                .as_ref()
                .map(|r| r.month)
                .unwrap_or_else(|| Month::of(self.directory.now_ms())),
            request,
        };
        let log = start.log.clone();
        let (quota_month, prompt_tokens_estimate) =
            (start.quota_month, start.prompt_tokens_estimate);
        match self.directory.registry.start(start).await {
            Ok(()) => {
                reserved.keep();
                // Other instances can follow it (a no-op without a bus).
                let _ = self.directory.relay.cast(RelayMsg::Publish {
                    log,
                    quota_month,
                    prompt_tokens_estimate,
                });
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "could not start a stream");
                Err(refuse(ErrorCode::Internal, "could not start the answer"))
            }
        }
    }

    /// Answers a `send` whose id was used before: its ack again, then the
    /// stream from the start if this connection does not follow it yet, or
    /// its `done` if it finished.
    async fn replay(&mut self, id: &ClientMessageId, existing: Exchange) -> Result<(), Refusal> {
        let ack = ServerFrame::Ack {
            id: id.clone(),
            conversation_id: existing.conversation_id.clone(),
            message_id: existing.assistant_message_id.clone(),
            stream_id: existing.stream_id.clone(),
        };
        if let Some(handle) = self.lookup(&existing.stream_id).await {
            self.outbox
                .push_and_attach(Some(&ack), handle.log, Cursor::default());
            return Ok(());
        }
        self.outbox.push(&ack);
        let end = existing.finished.unwrap_or_else(|| AnswerEnd {
            // Stored as started but never finished and no longer running:
            // the server that ran it went away before closing it.
            finish_reason: FinishReason::Error,
            usage: Usage::default(),
            error: Some(ErrorBody {
                code: ErrorCode::Unavailable,
                message: "the answer was interrupted".into(),
            }),
        });
        self.outbox.push(&ServerFrame::Done {
            stream_id: existing.stream_id,
            message_id: existing.assistant_message_id,
            finish_reason: end.finish_reason,
            usage: end.usage,
            error: end.error,
        });
        Ok(())
    }

    /// A stream of this user: run here, or (through the relay) elsewhere.
    async fn lookup(&self, stream_id: &StreamId) -> Option<StreamHandle> {
        let d = &self.directory;
        if let Some(handle) = d.registry.lookup(stream_id, &self.user.id).await {
            return Some(handle);
        }
        let remote = d.relay.follow(stream_id, &self.user.id).await?;
        Some(StreamHandle {
            log: remote.log,
            actor: None,
            remote: Some(remote.meta),
        })
    }

    async fn cancel(&mut self, stream_id: StreamId) {
        match self.lookup(&stream_id).await {
            Some(handle) => {
                if let Some(actor) = handle.actor {
                    let _ = actor.cast(StreamMsg::Cancel);
                } else if let Some(meta) = handle.remote.filter(|_| !handle.log.is_finished()) {
                    let _ = self.directory.relay.cast(RelayMsg::Cancel(Box::new(meta)));
                }
                // Already ended: its `done` was or will be sent; nothing to do.
            }
            None => self.outbox.push(&ServerFrame::stream_error(
                ErrorCode::NotFound,
                "no such stream",
                stream_id,
            )),
        }
    }

    async fn resume(&mut self, stream_id: StreamId, from: Cursor) {
        let Some(handle) = self.lookup(&stream_id).await else {
            self.outbox.push(&ServerFrame::stream_error(
                ErrorCode::NotFound,
                "no such stream, or it can no longer be resumed",
                stream_id,
            ));
            return;
        };
        let cut = handle.log.frames_cut();
        let ahead = from.answer > cut.answer || from.reasoning > cut.reasoning;
        // A client may have seen, from the instance that runs a stream,
        // frames that instance has not published yet: following it from
        // here, it waits for them. Only a finished stream's cut is final.
        let may_be_ahead = handle.remote.is_some() && !handle.log.is_finished();
        if ahead && !may_be_ahead {
            self.invalid_for_stream(
                "resume.after_seq (or after_reasoning_seq) is beyond the stream's last seq".into(),
                stream_id,
            );
            return;
        }
        if self.outbox.is_attached(&stream_id) {
            self.invalid_for_stream(
                "this connection already follows that stream".into(),
                stream_id,
            );
            return;
        }
        self.outbox.push_and_attach(None, handle.log, from);
    }
}
