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
//! A `send` replays a known `send.id`, or begins an exchange through
//! [`crate::exchange`] (the steps every edge shares: admission, limits, the
//! durable write, the stream) and answers `ack`. Then the stream's deltas
//! and `done` flow from its log to the outbox.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use skald_protocol::{
    ClientFrame, ClientMessageId, CloseCode, ConversationId, DecodeError, ErrorBody, ErrorCode,
    FinishReason, Limits, ServerFrame, SessionId, StreamId, Usage, UserId,
};

use crate::directory::Directory;
use crate::exchange::{self, Ask, Begun, Caller, Params, Refusal};
use crate::outbox::Outbox;
use crate::ports::store::{AnswerEnd, Exchange};
use crate::registry::StreamHandle;
use crate::relay::RelayMsg;
use crate::stream::StreamMsg;
use crate::stream_log::{Cursor, StreamLog};
use crate::time::Month;

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
    /// The connection's browser origin (`Origin`), for bots that limit
    /// theirs.
    pub site: Option<Box<str>>,
    pub outbox: Arc<Outbox>,
    pub directory: Arc<Directory>,
}

pub struct Session;

pub struct SessionState {
    session_id: SessionId,
    user: AuthedUser,
    address: Option<std::net::IpAddr>,
    site: Option<Box<str>>,
    outbox: Arc<Outbox>,
    directory: Arc<Directory>,
    /// Streams this connection started that may still be live.
    started: Vec<Arc<StreamLog>>,
    invalid_in_a_row: u32,
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
            site: args.site,
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
            .catalog
            .bot(&state.user.bot_for(None))
            .map_or_else(|| services.catalog.default_bot(), |bot| bot.settings);
        let limits = services.catalog.limits_for(&state.user.id, &bot);
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
        bot: Option<String>,
        text: String,
    ) -> Result<(), Refusal> {
        // A `send.id` seen before answers with the first ack, whatever the rest says.
        if let Some(existing) = self.services().store.exchange(&self.user.id, id).await? {
            return self.replay(id, existing).await;
        }
        self.started.retain(|log| !log.is_finished());
        let caller = Caller {
            user: &self.user,
            address: self.address,
            origin: &self.session_id,
            site: self.site.as_deref(),
            running: &self.started,
        };
        let ask = Ask {
            client_id: id.clone(),
            conversation_id,
            bot,
            text,
            tool_call_id: None,
            given: Vec::new(),
            params: Params::default(),
        };
        let started = match exchange::begin(&self.directory, caller, ask).await? {
            Begun::Started(started) => started,
            Begun::Existing(existing) => return self.replay(id, existing).await,
        };
        let log = started.log;
        tracing::debug!(session_id = %self.session_id, stream_id = %log.ids.stream_id, "stream started");
        self.started.push(log.clone());
        let ack = ServerFrame::Ack {
            id: id.clone(),
            conversation_id: log.ids.conversation_id.clone(),
            message_id: log.ids.message_id.clone(),
            stream_id: log.ids.stream_id.clone(),
        };
        self.outbox
            .push_and_attach(Some(&ack), log, Cursor::default());
        Ok(())
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
