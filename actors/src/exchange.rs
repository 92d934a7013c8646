//! Beginning an exchange: the steps from a user's question to a running
//! stream, the same for every edge (a WebSocket `send`, an
//! OpenAI-compatible `POST /v1/chat/completions`).
//!
//! Why one module: the limits, the quota reservation, the durable write
//! before the answer starts and the announcement to the user's other
//! connections are the server's promises; written once here, no edge can
//! skip one. The steps, in order ([`begin`]): admit (draining, bot, text,
//! how many streams the caller runs), find the conversation, reserve the
//! rate and the quota (a [`Reserved`] guard gives the reservation back if
//! anything later refuses), store the exchange, start the stream, tell the
//! user's other connections. What an edge does with the stream (an `ack`
//! and frames, or Server-Sent Events) is the edge's.

use std::net::IpAddr;
use std::sync::Arc;

use skald_protocol::{
    ClientMessageId, ConversationId, ErrorCode, MessageId, ServerFrame, SessionId, StartedMessage,
    StreamId,
};

use crate::directory::Directory;
use crate::limits::quota_keeper::QuotaMsg;
use crate::ports::bus::UserEvent;
use crate::ports::limits::{
    LimitsError, QuotaLimits, RateDecision, RateKey, RateLimit, Reservation, ReserveDecision,
    Settle,
};
use crate::ports::model::{ModelRequest, PromptMessage, Role, Sampling, Tools};
use crate::ports::store::{
    AuditAction, AuditRecord, BeginOutcome, Exchange, NewConversation, NewExchange, StoreError,
    StoredMessage,
};
use crate::prompt;
use crate::registry::StartStream;
use crate::relay::RelayMsg;
use crate::session::AuthedUser;
use crate::settings::{BotSettings, EffectiveLimits};
use crate::slot::Slot;
use crate::stream::{Generation, Prestarted};
use crate::stream_log::{StreamIds, StreamLog};
use crate::time::{now_ms, Month};

/// Who asks: the user, where from, and what the asking connection already
/// runs.
pub struct Caller<'a> {
    pub user: &'a AuthedUser,
    /// The client's address, for the audit log.
    pub address: Option<IpAddr>,
    /// The connection (or request) the exchange is announced from: the
    /// user's other connections are told, this one is not.
    pub origin: &'a SessionId,
    /// The browser origin of that connection or request (its `Origin`
    /// header), for bots that limit theirs; None: not a browser.
    pub site: Option<&'a str>,
    /// Streams this caller runs that may still be live (finished ones are
    /// ignored): bounded by `sessions.max_streams_per_session`, and one
    /// answer at a time per conversation.
    pub running: &'a [Arc<StreamLog>],
}

/// What is asked.
pub struct Ask {
    /// The idempotency key (`send.id`; a fresh one for an API call).
    pub client_id: ClientMessageId,
    /// An existing conversation of the user, or `None` for a new one.
    pub conversation_id: Option<ConversationId>,
    /// The bot asked for (`None`: the default; a pinned user's bot wins).
    pub bot: Option<String>,
    /// The new message: stored, and last in the prompt. The user's text,
    /// or (the OpenAI-compatible API) a tool's result.
    pub text: String,
    /// Set when `text` is a tool's result: the call it answers (the
    /// message is then stored and prompted with the `tool` role).
    pub tool_call_id: Option<String>,
    /// Earlier turns the caller gives itself (the OpenAI-compatible API's
    /// `messages` before the last), between the stored history and `text`.
    /// Their characters count against the bot's `max_history_chars`.
    pub given: Vec<PromptMessage>,
    /// The caller's own generation parameters, within the bot's bounds.
    pub params: Params,
}

/// Generation parameters a caller may choose; `None`: the bot's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Within 0..=2 (checked by the edge that reads it).
    pub temperature: Option<f64>,
    /// Capped by the bot's `max_tokens`.
    pub max_tokens: Option<u32>,
    pub sampling: Sampling,
    pub tools: Option<Tools>,
    /// OpenAI's `response_format`.
    pub response_format: Option<serde_json::Value>,
}

/// A refusal: the exchange did not begin, and nothing of it was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
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

/// How [`begin`] ended when it did not refuse.
pub enum Begun {
    /// A new exchange, its answer under way.
    Started(Started),
    /// The idempotency key was claimed first by another connection of the
    /// user: that exchange, to be replayed.
    Existing(Exchange),
}

/// A new exchange whose stream runs.
pub struct Started {
    pub log: Arc<StreamLog>,
    pub bot_name: String,
}

/// Begins an exchange, or says why not.
pub async fn begin(d: &Directory, caller: Caller<'_>, ask: Ask) -> Result<Begun, Refusal> {
    let services = d.services.clone();
    let admitted = admit(d, &caller, ask)?;
    let target = target(&services, &caller, &admitted).await?;
    let bot = admitted.bot.clone();
    let bot = &*bot;
    let input = PromptMessage {
        tool_call_id: admitted.tool_call_id.clone(),
        ..PromptMessage::new(
            match admitted.tool_call_id {
                Some(_) => Role::Tool,
                None => Role::User,
            },
            admitted.text.clone(),
        )
    };
    let messages = prompt::build(bot, &target.history, &admitted.given, input);
    let prompt_tokens_estimate = prompt::estimate_tokens(&messages);
    let stream_id = StreamId::generate();
    let reserved = reserve(d, caller.user, bot, &stream_id, prompt_tokens_estimate).await?;
    let max_tokens = admitted
        .params
        .max_tokens
        .map_or(bot.max_tokens, |asked| asked.min(bot.max_tokens));
    let max_tokens = (reserved.granted - prompt_tokens_estimate).min(u64::from(max_tokens)) as u32;
    let request = ModelRequest {
        model: bot.model.clone(),
        messages,
        temperature: admitted.params.temperature.unwrap_or(bot.temperature),
        max_tokens,
        max_answer_bytes: bot.max_answer_bytes,
        max_reasoning_chars: bot.max_reasoning_chars,
        upstreams: bot.upstreams.clone(),
        user: caller.user.id.clone(),
        sampling: admitted.params.sampling,
        tools: admitted.params.tools,
        response_format: admitted.params.response_format,
    };
    // The upstream request begins now, while the exchange is made durable
    // below: the commit is off the time to the first token, and the `ack`
    // still waits for it. Dropped if the exchange is not made (it aborts).
    let prestarted = Prestarted::spawn(services.model.clone(), request);
    let user_message = StartedMessage {
        id: MessageId::generate(),
        content: admitted.text,
        created_at: String::new(),
    };
    let exchange = NewExchange {
        user: caller.user.id.clone(),
        client_id: admitted.client_id,
        conversation_id: target.conversation_id.clone(),
        bot: admitted.bot_name.clone(),
        new_conversation: target.new_conversation,
        user_message_id: user_message.id.clone(),
        text: user_message.content.clone(),
        tool_call_id: admitted.tool_call_id,
        assistant_message_id: MessageId::generate(),
        stream_id: stream_id.clone(),
        at_ms: now_ms(),
    };
    let message_id = exchange.assistant_message_id.clone();
    let at_ms = exchange.at_ms;
    if let Some(existing) = store_exchange(d, &caller, exchange).await? {
        // Another connection of this user won the race for this id;
        // `reserved` drops here and gives the reservation back.
        return Ok(Begun::Existing(existing));
    }
    let log = Arc::new(StreamLog::new(StreamIds {
        stream_id: stream_id.clone(),
        user: caller.user.id.clone(),
        conversation_id: target.conversation_id.clone(),
        message_id: message_id.clone(),
    }));
    start_stream(d, log.clone(), prestarted, prompt_tokens_estimate, reserved).await?;
    // The user's other connections, here and on every instance.
    tell_others(
        d,
        &caller,
        ServerFrame::Started {
            conversation_id: target.conversation_id,
            stream_id,
            message_id,
            bot: admitted.bot_name.clone(),
            user_message: StartedMessage {
                created_at: crate::time::rfc3339(at_ms),
                ..user_message
            },
        },
    );
    Ok(Begun::Started(Started {
        log,
        bot_name: admitted.bot_name,
    }))
}

/// Gives a frame to the user's other connections: those of this instance
/// through the board, the others' through the relay (when a stream bus is
/// configured).
fn tell_others(d: &Directory, caller: &Caller<'_>, frame: ServerFrame) {
    d.board.deliver(&caller.user.id, caller.origin, &frame);
    let _ = d.relay.cast(RelayMsg::UserEvent(Box::new(UserEvent {
        instance: None,
        user: caller.user.id.clone(),
        origin: caller.origin.clone(),
        frame,
    })));
}

/// An [`Ask`] that passed admission.
struct Admitted {
    bot_name: String,
    bot: Arc<BotSettings>,
    client_id: ClientMessageId,
    conversation_id: Option<ConversationId>,
    text: String,
    tool_call_id: Option<String>,
    given: Vec<PromptMessage>,
    params: Params,
}

/// Refuses what needs no I/O to refuse: a draining server, an unknown bot,
/// a bad text, a caller already running its streams.
fn admit(d: &Directory, caller: &Caller<'_>, ask: Ask) -> Result<Admitted, Refusal> {
    if d.is_draining() {
        return Err(refuse(
            ErrorCode::Unavailable,
            "the server is shutting down; reconnect and send again",
        ));
    }
    let services = &d.services;
    let bot_name = caller.user.bot_for(ask.bot);
    // A bot its origins do not admit is, to this caller, no bot at all.
    let Some(bot) = services
        .catalog
        .bot(&bot_name)
        .map(|bot| bot.settings)
        .filter(|bot| bot.admits_origin(caller.site))
    else {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("no bot named {bot_name:?}"),
        ));
    };
    if ask.text.trim().is_empty() {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "the message must not be empty",
        ));
    }
    let chars = ask.text.chars().count();
    if chars > bot.max_message_chars as usize {
        return Err(refuse(
            ErrorCode::MessageTooLong,
            format!(
                "the message has {chars} characters; this bot accepts at most {}",
                bot.max_message_chars
            ),
        ));
    }
    if !bot.allow_client_system_prompt && ask.given.iter().any(|m| m.role == Role::System) {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            format!("system and developer messages are not accepted by bot {bot_name:?}: its own system prompt is used"),
        ));
    }
    let given_chars: usize = ask.given.iter().map(PromptMessage::chars).sum();
    if given_chars > bot.max_history_chars {
        return Err(refuse(
            ErrorCode::MessageTooLong,
            format!(
                "the earlier messages have {given_chars} characters; this bot accepts at most {}",
                bot.max_history_chars
            ),
        ));
    }
    let running = caller.running.iter().filter(|l| !l.is_finished()).count();
    if running >= services.sessions.max_streams_per_session {
        return Err(refuse(
            ErrorCode::Busy,
            format!("this connection already runs {running} streams"),
        ));
    }
    Ok(Admitted {
        bot_name,
        bot,
        client_id: ask.client_id,
        conversation_id: ask.conversation_id,
        text: ask.text,
        tool_call_id: ask.tool_call_id,
        given: ask.given,
        params: ask.params,
    })
}

/// Where the new exchange goes.
struct Target {
    conversation_id: ConversationId,
    new_conversation: Option<NewConversation>,
    history: Vec<StoredMessage>,
}

/// The conversation the exchange goes to (the user's, not busy) and its
/// recent history, or a new one.
async fn target(
    services: &crate::Services,
    caller: &Caller<'_>,
    admitted: &Admitted,
) -> Result<Target, Refusal> {
    let Some(cid) = admitted.conversation_id.clone() else {
        return Ok(Target {
            conversation_id: ConversationId::generate(),
            new_conversation: Some(NewConversation {
                title: admitted.text.chars().take(80).collect(),
            }),
            history: Vec::new(),
        });
    };
    if services
        .store
        .conversation(&caller.user.id, &cid)
        .await?
        .is_none()
    {
        return Err(refuse(ErrorCode::NotFound, "no such conversation"));
    }
    if caller
        .running
        .iter()
        .any(|l| !l.is_finished() && l.ids.conversation_id == cid)
    {
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

/// A quota reservation that is given back when dropped, unless the exchange
/// began ([`Reserved::keep`]): every refusal after the reservation releases
/// it, whichever step refused.
struct Reserved {
    quota: Arc<Slot<QuotaMsg>>,
    reservation: Option<Reservation>,
    /// Tokens granted (the prompt estimate included).
    granted: u64,
}

impl Reserved {
    /// The exchange began: the stream settles the reservation.
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

/// The rate check and the quota reservation (the request and the most
/// tokens the stream may use, shrunk to what the month has left). They are
/// independent decisions, so they run together: one limits round trip on an
/// accepted exchange's path instead of two.
async fn reserve(
    d: &Directory,
    user: &AuthedUser,
    bot: &BotSettings,
    stream_id: &StreamId,
    prompt_tokens_estimate: u64,
) -> Result<Reserved, Refusal> {
    let limits: EffectiveLimits = d.services.catalog.limits_for(&user.id, bot);
    let now_ms = d.now_ms();
    let reservation = Reservation {
        id: stream_id.clone(),
        user: user.id.clone(),
        month: Month::of(now_ms),
        tokens: prompt_tokens_estimate + u64::from(bot.max_tokens),
        min_tokens: prompt_tokens_estimate + 1,
    };
    let quota = QuotaLimits {
        monthly_tokens: limits.monthly_tokens,
        monthly_requests: limits.monthly_requests,
    };
    let rate = RateLimit::per_minute(limits.messages_per_minute);
    let (rate, reserved) = tokio::join!(
        d.rate_limiter
            .check(RateKey::User(user.id.clone()), rate, now_ms),
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

/// The one write before the answer starts: claims the idempotency key and
/// stores the user message, durably. `Some` when another connection of this
/// user claimed the key first.
async fn store_exchange(
    d: &Directory,
    caller: &Caller<'_>,
    exchange: NewExchange,
) -> Result<Option<Exchange>, Refusal> {
    let conversation_id = exchange.conversation_id.clone();
    let is_new_conversation = exchange.new_conversation.is_some();
    let started = std::time::Instant::now();
    let begun = d.services.store.begin_exchange(exchange).await;
    metrics::histogram!("skald_store_write_duration_seconds", "op" => "begin_exchange")
        .record(started.elapsed().as_secs_f64());
    match begun {
        Ok(BeginOutcome::Created) => {
            if is_new_conversation {
                d.persister.audit(AuditRecord::now(
                    AuditAction::ConversationCreated,
                    Some(&caller.user.id),
                    caller.address,
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

/// Hands the stream to the registry; from then on the stream settles the
/// reservation.
async fn start_stream(
    d: &Directory,
    log: Arc<StreamLog>,
    prestarted: Prestarted,
    prompt_tokens_estimate: u64,
    reserved: Reserved,
) -> Result<(), Refusal> {
    let quota_month = reserved
        .reservation
        .as_ref()
        .map(|r| r.month)
        .unwrap_or_else(|| Month::of(d.now_ms()));
    let start = StartStream {
        log: log.clone(),
        prompt_tokens_estimate,
        quota_month,
        generation: Generation::Prestarted(prestarted),
    };
    match d.registry.start(start).await {
        Ok(()) => {
            reserved.keep();
            // Other instances can follow it (a no-op without a bus).
            let _ = d.relay.cast(RelayMsg::Publish {
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
