//! The OpenAI-compatible API (PROTOCOL.md): `POST /v1/chat/completions`,
//! plain and streamed (Server-Sent Events), and `GET /v1/models`.
//!
//! Why here and this thin: an application written against OpenAI's SDKs
//! points its base URL at Skald and gets Skald's auth, bots, limits, quotas
//! and stored history unchanged. So a completion is an exchange like a
//! WebSocket `send` ([`skald_actors::exchange`]: the same admission,
//! limits, durable write and stream actor); this module only reads OpenAI's
//! request body (async-openai's own types, so every shape the SDKs send is
//! read as OpenAI defines it) and writes OpenAI's answers from the
//! stream's log. A caller that goes away cancels its stream (the drop of
//! [`Running`]), which stores what was made as `cancelled` and bills it.
//!
//! Each call holds one of the user's connection slots while it runs
//! (`limits.max_connections_per_user`, shared with WebSocket connections
//! and across instances), so the calls a user can have in flight are
//! bounded like its connections.

use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestAssistantMessageContentPart,
    ChatCompletionRequestDeveloperMessageContent, ChatCompletionRequestDeveloperMessageContentPart,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestSystemMessageContentPart, ChatCompletionRequestToolMessageContent,
    ChatCompletionRequestToolMessageContentPart, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, CreateChatCompletionRequest, StopConfiguration,
};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use skald_actors::exchange::{Ask, Begun, Caller as ExchangeCaller, Params, Refusal};
use skald_actors::hub::{HeldSlot, Hub};
use skald_actors::ports::model::{PromptMessage, Role, Sampling, ToolCallDelta, Tools};
use skald_actors::ports::store::ToolCall;
use skald_actors::session::AuthedUser;
use skald_actors::stream_log::{AnswerEnd, Listener, StreamLog, TextOffsets, TextRead};
use skald_protocol::{
    ClientMessageId, ConversationId, ErrorCode, FinishReason, SessionId, StreamId,
};
use tokio::sync::Notify;

use super::access::Caller;
use super::client_ip::ClientIp;
use super::error::{with_retry_after, ApiError};
use super::pending::PendingSlot;
use super::AppState;

/// The header that names (request) and returns (response) the conversation.
pub const CONVERSATION_HEADER: &str = "x-skald-conversation";
/// Longest conversation id accepted in that header.
const MAX_CONVERSATION_ID: usize = 128;
/// Stop sequences OpenAI accepts, and the longest one taken here.
const MAX_STOP: usize = 4;
const MAX_STOP_CHARS: usize = 256;
/// Most tools one request may offer (OpenAI's own bound).
const MAX_TOOLS: usize = 128;
/// Longest silence of a streamed completion before a keep-alive comment.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .layer(axum::middleware::from_fn_with_state(
            state,
            super::access::limit_address::<OpenAiError>,
        ))
}

/// An [`ApiError`] in OpenAI's shape: `{"error":{"message","type","code"}}`,
/// with the status of its code (`message_too_long` is a 400 here, as
/// OpenAI's own context-length error is), so the SDKs raise their usual
/// exceptions.
pub struct OpenAiError(ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> OpenAiError {
        OpenAiError(e)
    }
}

impl From<Refusal> for OpenAiError {
    fn from(r: Refusal) -> OpenAiError {
        let mut e = ApiError::new(r.code, r.message);
        e.retry_after_ms = r.retry_after_ms;
        OpenAiError(e)
    }
}

fn invalid(message: impl Into<String>) -> OpenAiError {
    OpenAiError(ApiError::new(ErrorCode::InvalidRequest, message))
}

/// OpenAI's error `type` for one of Skald's codes.
fn openai_type(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unauthorized => "authentication_error",
        ErrorCode::Forbidden => "permission_error",
        ErrorCode::InvalidRequest | ErrorCode::MessageTooLong | ErrorCode::NotFound => {
            "invalid_request_error"
        }
        ErrorCode::RateLimited | ErrorCode::Busy => "rate_limit_error",
        ErrorCode::QuotaExceeded => "insufficient_quota",
        ErrorCode::UpstreamError
        | ErrorCode::UpstreamTimeout
        | ErrorCode::Unavailable
        | ErrorCode::Internal => "server_error",
    }
}

fn error_body(code: ErrorCode, message: &str) -> Value {
    json!({"error": {"message": message, "type": openai_type(code), "code": code.as_str(), "param": null}})
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = match e.code {
            ErrorCode::MessageTooLong => StatusCode::BAD_REQUEST,
            _ => e.status(),
        };
        let body = Json(error_body(e.code, &e.message));
        with_retry_after((status, body).into_response(), e.retry_after_ms)
    }
}

/// `GET /v1/models`: the bots the caller may use.
async fn models(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
) -> Result<Json<Value>, OpenAiError> {
    let Caller(user) = caller?;
    let site = super::access::site(&headers);
    // In name order (a BTreeMap).
    let bots = app.hub.services.catalog.bots();
    let names: Vec<&String> = bots
        .iter()
        .filter(|(name, _)| user.bot.as_ref().is_none_or(|pinned| pinned == *name))
        .filter(|(_, bot)| bot.settings.admits_origin(site.as_deref()))
        .map(|(name, _)| name)
        .collect();
    let data: Vec<Value> = names
        .into_iter()
        // Bots come from the configuration: no creation time to give.
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "skald"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// What a completion asks, read from OpenAI's body.
pub struct Completion {
    pub ask: Ask,
    pub stream: bool,
    pub include_usage: bool,
}

/// Reads a request body: OpenAI's JSON, then what Skald takes of it.
/// Public for the `openai_request` fuzz target.
pub fn parse_request(
    body: &[u8],
    conversation_id: Option<ConversationId>,
) -> Result<Completion, OpenAiError> {
    let request: CreateChatCompletionRequest = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "the request body is not a chat completion request: {e}"
        ))
    })?;
    read_request(request, conversation_id)
}

/// `POST /v1/chat/completions`.
async fn completions(
    State(app): State<AppState>,
    caller: Result<Caller, ApiError>,
    ClientIp(address): ClientIp,
    pending: Option<Extension<PendingSlot>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let Caller(user) = caller?;
    // Too large (axum's 2 MB bound), or not arrived within the body-read
    // timeout: said in OpenAI's shape, not as the framework's plain text.
    let body = body.map_err(|e| {
        invalid(format!(
            "the request body could not be read: {}",
            e.body_text()
        ))
    })?;
    let completion = parse_request(&body, conversation_of(&headers)?)?;
    let origin = SessionId::generate();
    // One of the user's connection slots while the call runs.
    let holder = origin.to_string();
    if !app
        .hub
        .acquire_connection(&user.id, &holder)
        .await
        .map_err(ApiError::from)?
    {
        return Err(OpenAiError(ApiError::new(
            ErrorCode::Busy,
            "too many connections and completions in flight for this user",
        )));
    }
    let slot = app.hub.hold_connection(&user.id, &holder);
    // An authenticated call in flight is no longer a pending connection
    // (which the pending caps would close to make room): it holds one of
    // its user's connection slots instead, as a WebSocket session does.
    if let Some(Extension(pending)) = pending {
        drop(pending.take());
    }
    let site = super::access::site(&headers);
    let caller = ExchangeCaller {
        user: &user,
        address: Some(address),
        origin: &origin,
        site: site.as_deref(),
        running: &[],
    };
    let started = match app.hub.begin_exchange(caller, completion.ask).await? {
        Begun::Started(started) => started,
        // The key is new to this call: no other claim can exist.
        Begun::Existing(_) => {
            return Err(OpenAiError(ApiError::new(
                ErrorCode::Internal,
                "the exchange was claimed twice",
            )))
        }
    };
    let model = started.bot_name;
    let running = Running::new(app.hub.clone(), user, started.log, slot);
    let conversation = HeaderValue::from_str(running.log.ids.conversation_id.as_str())
        .map_err(|_| invalid("the conversation id is not a header value"))?;
    // The bot that answers (a demo identity's is pinned, whatever it named).
    let chunk = Chunk::new(&running.log.ids.stream_id, model);
    let mut response = if completion.stream {
        let events = sse(running, chunk, completion.include_usage);
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(events),
        )
            .into_response()
    } else {
        whole(running, chunk).await?
    };
    response.headers_mut().insert(
        header::HeaderName::from_static(CONVERSATION_HEADER),
        conversation,
    );
    Ok(response)
}

/// The conversation named by `X-Skald-Conversation`, if any.
fn conversation_of(headers: &HeaderMap) -> Result<Option<ConversationId>, OpenAiError> {
    let Some(value) = headers.get(CONVERSATION_HEADER) else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= MAX_CONVERSATION_ID)
        .ok_or_else(|| invalid("X-Skald-Conversation must be a conversation id"))?;
    Ok(Some(ConversationId::from(id)))
}

/// Reads what Skald takes of OpenAI's body; what it cannot honour is
/// refused by name rather than ignored.
fn read_request(
    r: CreateChatCompletionRequest,
    conversation_id: Option<ConversationId>,
) -> Result<Completion, OpenAiError> {
    let unsupported = [
        ("audio", r.audio.is_some()),
        ("modalities", r.modalities.is_some()),
        ("prediction", r.prediction.is_some()),
        ("web_search_options", r.web_search_options.is_some()),
        ("logprobs", r.logprobs == Some(true)),
        ("top_logprobs", r.top_logprobs.is_some()),
        ("logit_bias", r.logit_bias.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(invalid(format!("{name} is not supported by this server")));
    }
    if r.n.is_some_and(|n| n != 1) {
        return Err(invalid("n must be 1: one answer per request"));
    }
    let tools = tools_of(&r)?;
    // Typed by async-openai (so checked as OpenAI defines it), passed on
    // as JSON: serialising what was just read cannot fail.
    let response_format = r
        .response_format
        .as_ref()
        .and_then(|f| serde_json::to_value(f).ok());
    let temperature = in_range("temperature", r.temperature, 0.0, 2.0)?;
    let sampling = Sampling {
        top_p: in_range("top_p", r.top_p, 0.0, 1.0)?,
        frequency_penalty: in_range("frequency_penalty", r.frequency_penalty, -2.0, 2.0)?,
        presence_penalty: in_range("presence_penalty", r.presence_penalty, -2.0, 2.0)?,
        #[allow(deprecated)]
        seed: r.seed,
        stop: stop_sequences(r.stop)?,
    };
    #[allow(deprecated)]
    let max_tokens = r.max_completion_tokens.or(r.max_tokens);
    if max_tokens == Some(0) {
        return Err(invalid("max_completion_tokens must be at least 1"));
    }
    let mut given = r
        .messages
        .into_iter()
        .map(prompt_message)
        .collect::<Result<Vec<_>, _>>()?;
    // The new message: the user's, or a tool's result (the turn after the
    // model called a tool). Earlier results of the same turn are given.
    let (text, tool_call_id) = match given.pop() {
        Some(m) if matches!(m.role, Role::User | Role::Tool) => (m.content, m.tool_call_id),
        Some(_) => {
            return Err(invalid(
                "the last message must be the user's or a tool's result",
            ))
        }
        None => return Err(invalid("messages must not be empty")),
    };
    Ok(Completion {
        ask: Ask {
            client_id: ClientMessageId::from(format!("api:{}", StreamId::generate())),
            conversation_id,
            bot: Some(r.model),
            text,
            tool_call_id,
            given,
            params: Params {
                temperature,
                max_tokens,
                sampling,
                tools,
                response_format,
            },
        },
        stream: r.stream == Some(true),
        include_usage: r
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// `tools`, `tool_choice` and `parallel_tool_calls`, as the provider's
/// adapter takes them.
fn tools_of(r: &CreateChatCompletionRequest) -> Result<Option<Tools>, OpenAiError> {
    let Some(tools) = &r.tools else {
        if r.tool_choice.is_some() || r.parallel_tool_calls.is_some() {
            return Err(invalid("tool_choice and parallel_tool_calls need tools"));
        }
        return Ok(None);
    };
    if tools.len() > MAX_TOOLS {
        return Err(invalid(format!("tools takes at most {MAX_TOOLS} tools")));
    }
    Ok(Some(Tools {
        definitions: serde_json::to_value(tools).unwrap_or_default(),
        choice: r
            .tool_choice
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok()),
        parallel: r.parallel_tool_calls,
    }))
}

fn in_range(
    name: &str,
    value: Option<f32>,
    min: f64,
    max: f64,
) -> Result<Option<f64>, OpenAiError> {
    match value.map(f64::from) {
        Some(v) if !(min..=max).contains(&v) => {
            Err(invalid(format!("{name} must be within {min} and {max}")))
        }
        v => Ok(v),
    }
}

fn stop_sequences(stop: Option<StopConfiguration>) -> Result<Vec<String>, OpenAiError> {
    let stop = match stop {
        None => Vec::new(),
        Some(StopConfiguration::String(s)) => vec![s],
        Some(StopConfiguration::StringArray(list)) => list,
    };
    if stop.len() > MAX_STOP
        || stop
            .iter()
            .any(|s| s.is_empty() || s.chars().count() > MAX_STOP_CHARS)
    {
        return Err(invalid(format!(
            "stop takes at most {MAX_STOP} non-empty sequences of at most {MAX_STOP_CHARS} characters"
        )));
    }
    Ok(stop)
}

/// One message of the caller's, text only. A system or developer message
/// would replace the bot's prompt, which the bot owns: kept only if the
/// bot allows it (`allow_client_system_prompt`, checked at admission,
/// where the bot is known).
fn prompt_message(m: ChatCompletionRequestMessage) -> Result<PromptMessage, OpenAiError> {
    Ok(match m {
        ChatCompletionRequestMessage::User(u) => {
            PromptMessage::new(Role::User, user_text(u.content)?)
        }
        ChatCompletionRequestMessage::Assistant(a) => assistant_message(a)?,
        ChatCompletionRequestMessage::System(s) => {
            PromptMessage::new(Role::System, system_text(s.content))
        }
        ChatCompletionRequestMessage::Developer(d) => {
            PromptMessage::new(Role::System, developer_text(d.content))
        }
        ChatCompletionRequestMessage::Tool(t) => PromptMessage {
            tool_call_id: Some(t.tool_call_id),
            ..PromptMessage::new(Role::Tool, tool_text(t.content))
        },
        ChatCompletionRequestMessage::Function(_) => {
            return Err(invalid(
                "function messages (deprecated by OpenAI) are not supported: send tool messages",
            ))
        }
    })
}

/// An assistant turn: its text, and the tools it called (then its text may
/// be absent).
fn assistant_message(
    a: ChatCompletionRequestAssistantMessage,
) -> Result<PromptMessage, OpenAiError> {
    let tool_calls = a
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|call| match call {
            ChatCompletionMessageToolCalls::Function(f) => Ok(ToolCall {
                id: f.id,
                kind: Default::default(),
                function: skald_protocol::http::FunctionCall {
                    name: f.function.name,
                    arguments: f.function.arguments,
                },
            }),
            ChatCompletionMessageToolCalls::Custom(_) => Err(invalid(
                "only function tool calls are supported by this server",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let content = match a.content {
        None if !tool_calls.is_empty() => String::new(),
        content => assistant_text(content)?,
    };
    Ok(PromptMessage {
        tool_calls,
        ..PromptMessage::new(Role::Assistant, content)
    })
}

fn tool_text(content: ChatCompletionRequestToolMessageContent) -> String {
    match content {
        ChatCompletionRequestToolMessageContent::Text(text) => text,
        ChatCompletionRequestToolMessageContent::Array(parts) => parts
            .into_iter()
            .map(|ChatCompletionRequestToolMessageContentPart::Text(t)| t.text)
            .collect(),
    }
}

fn system_text(content: ChatCompletionRequestSystemMessageContent) -> String {
    match content {
        ChatCompletionRequestSystemMessageContent::Text(text) => text,
        ChatCompletionRequestSystemMessageContent::Array(parts) => parts
            .into_iter()
            .map(|ChatCompletionRequestSystemMessageContentPart::Text(t)| t.text)
            .collect(),
    }
}

fn developer_text(content: ChatCompletionRequestDeveloperMessageContent) -> String {
    match content {
        ChatCompletionRequestDeveloperMessageContent::Text(text) => text,
        ChatCompletionRequestDeveloperMessageContent::Array(parts) => parts
            .into_iter()
            .map(|ChatCompletionRequestDeveloperMessageContentPart::Text(t)| t.text)
            .collect(),
    }
}

fn user_text(content: ChatCompletionRequestUserMessageContent) -> Result<String, OpenAiError> {
    match content {
        ChatCompletionRequestUserMessageContent::Text(text) => Ok(text),
        ChatCompletionRequestUserMessageContent::Array(parts) => parts
            .into_iter()
            .map(|part| match part {
                ChatCompletionRequestUserMessageContentPart::Text(t) => Ok(t.text),
                _ => Err(invalid("only text content is supported by this server")),
            })
            .collect(),
    }
}

fn assistant_text(
    content: Option<ChatCompletionRequestAssistantMessageContent>,
) -> Result<String, OpenAiError> {
    match content {
        None => Err(invalid("an assistant message needs its content")),
        Some(ChatCompletionRequestAssistantMessageContent::Text(text)) => Ok(text),
        Some(ChatCompletionRequestAssistantMessageContent::Array(parts)) => parts
            .into_iter()
            .map(|part| match part {
                ChatCompletionRequestAssistantMessageContentPart::Text(t) => Ok(t.text),
                ChatCompletionRequestAssistantMessageContentPart::Refusal(r) => Ok(r.refusal),
            })
            .collect(),
    }
}

/// Wakes the reader of a log when it has news.
struct Wake(Notify);

impl Listener for Wake {
    fn mark_dirty(&self, _stream_id: &StreamId) {
        // A permit is stored when nobody waits: no news is lost.
        self.0.notify_one();
    }
}

/// A completion's stream while its caller reads it; dropped before the
/// end (the caller went away), it cancels the stream.
struct Running {
    hub: Arc<Hub>,
    user: AuthedUser,
    log: Arc<StreamLog>,
    wake: Arc<Wake>,
    at: TextOffsets,
    /// One of the user's connection slots, renewed while the call runs and
    /// given back when it ends, however it ends.
    _slot: HeldSlot,
}

impl Running {
    fn new(hub: Arc<Hub>, user: AuthedUser, log: Arc<StreamLog>, slot: HeldSlot) -> Running {
        let wake = Arc::new(Wake(Notify::new()));
        let listener: Arc<dyn Listener> = wake.clone();
        log.subscribe(Arc::downgrade(&listener) as Weak<dyn Listener>);
        Running {
            hub,
            user,
            log,
            wake,
            at: TextOffsets::default(),
            _slot: slot,
        }
    }

    /// The next news: new text and tool-call pieces, and the end once
    /// everything was read.
    async fn next(&mut self) -> TextRead {
        loop {
            let read = self.log.read_text(self.at);
            self.at = read.next;
            if !read.reasoning.is_empty()
                || !read.answer.is_empty()
                || !read.tool_calls.is_empty()
                || read.end.is_some()
            {
                return read;
            }
            self.wake.0.notified().await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.log.is_finished() {
            return;
        }
        let (hub, stream_id, user) = (
            self.hub.clone(),
            self.log.ids.stream_id.clone(),
            self.user.id.clone(),
        );
        tokio::spawn(async move { hub.cancel_stream(&stream_id, &user).await });
    }
}

/// The fields every chunk and answer of one completion share.
#[derive(Clone, Serialize)]
struct Chunk {
    id: String,
    created: u64,
    model: String,
}

impl Chunk {
    fn new(stream_id: &StreamId, model: String) -> Chunk {
        Chunk {
            id: format!("chatcmpl-{stream_id}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model,
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> String {
        let mut body = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": choices,
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        format!("data: {body}\n\n")
    }
}

fn usage_of(end: &AnswerEnd) -> Value {
    let u = end.usage;
    let mut usage = json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    });
    if let Some(reasoning) = u.reasoning_tokens {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": reasoning});
    }
    usage
}

/// OpenAI's `finish_reason` for an answer that ended well (`tool_calls`
/// when it called tools), or the error to report for one that did not.
fn finish_of(end: &AnswerEnd, called_tools: bool) -> Result<&'static str, ApiError> {
    match end.finish_reason {
        FinishReason::Stop if called_tools => Ok("tool_calls"),
        FinishReason::Stop => Ok("stop"),
        FinishReason::Length => Ok("length"),
        FinishReason::Cancelled => Err(ApiError::new(
            ErrorCode::Unavailable,
            "the answer was cancelled",
        )),
        FinishReason::Error => Err(match &end.error {
            Some(e) => ApiError::new(e.code, e.message.clone()),
            None => ApiError::new(ErrorCode::Internal, "the answer failed"),
        }),
    }
}

/// The `choices` of a chunk carrying what one read took, or `None` when it
/// took nothing to send.
fn delta(read: &TextRead) -> Option<Value> {
    let mut delta = json!({});
    if !read.reasoning.is_empty() {
        delta["reasoning_content"] = json!(read.reasoning);
    }
    if !read.answer.is_empty() {
        delta["content"] = json!(read.answer);
    }
    if !read.tool_calls.is_empty() {
        delta["tool_calls"] = tool_call_deltas(&read.tool_calls);
    }
    let empty = delta.as_object().is_some_and(|d| d.is_empty());
    (!empty).then(|| json!([{"index": 0, "delta": delta, "finish_reason": null}]))
}

/// Tool-call pieces in OpenAI's delta shape, as the model sent them; the
/// pieces of one call that arrived together go out as one.
fn tool_call_deltas(pieces: &[ToolCallDelta]) -> Value {
    // Merged first, as pieces: a piece that goes on the call before it
    // (same index, no id or name of its own) adds its arguments to it.
    let mut merged: Vec<ToolCallDelta> = Vec::new();
    for piece in pieces {
        match merged.last_mut() {
            Some(call)
                if call.index == piece.index && piece.id.is_none() && piece.name.is_none() =>
            {
                call.arguments.push_str(&piece.arguments);
            }
            _ => merged.push(piece.clone()),
        }
    }
    let calls = merged.into_iter().map(|piece| {
        let mut call = json!({"index": piece.index, "function": {"arguments": piece.arguments}});
        if let Some(id) = piece.id {
            call["id"] = json!(id);
            call["type"] = json!("function");
        }
        if let Some(name) = piece.name {
            call["function"]["name"] = json!(name);
        }
        call
    });
    Value::Array(calls.collect())
}

/// The Server-Sent Events of a streamed completion: a first chunk with the
/// role, one chunk per read of new text, the finishing chunk, the usage
/// chunk when asked for, `[DONE]`. An answer that fails after the first
/// byte ends with an `error` event (the SDKs raise it) and no `[DONE]`.
fn sse(
    running: Running,
    chunk: Chunk,
    include_usage: bool,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let first = chunk.chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        None,
    );
    let state = Some((running, chunk, Some(first)));
    futures::stream::unfold(state, move |state| async move {
        let (mut running, chunk, pending) = state?;
        if let Some(first) = pending {
            return Some((Ok(Bytes::from(first)), Some((running, chunk, None))));
        }
        // A comment line while nothing comes (a model that thinks, a slow
        // first token): proxies in front (nginx: 60 s) keep the stream open.
        let Ok(read) = tokio::time::timeout(KEEP_ALIVE, running.next()).await else {
            let comment = Bytes::from_static(b": keep-alive\n\n");
            return Some((Ok(comment), Some((running, chunk, None))));
        };
        let mut out = String::new();
        if let Some(choices) = delta(&read) {
            out.push_str(&chunk.chunk(choices, None));
        }
        let Some(end) = read.end else {
            return Some((Ok(Bytes::from(out)), Some((running, chunk, None))));
        };
        match finish_of(&end, read.next.tool_calls > 0) {
            Ok(reason) => {
                out.push_str(&chunk.chunk(
                    json!([{"index": 0, "delta": {}, "finish_reason": reason}]),
                    None,
                ));
                if include_usage {
                    out.push_str(&chunk.chunk(json!([]), Some(usage_of(&end))));
                }
                out.push_str("data: [DONE]\n\n");
            }
            Err(e) => {
                out.push_str(&format!("data: {}\n\n", error_body(e.code, &e.message)));
            }
        }
        // The stream ended: the last bytes, then nothing.
        Some((Ok(Bytes::from(out)), None))
    })
}

/// A completion answered whole, once it ended.
async fn whole(mut running: Running, chunk: Chunk) -> Result<Response, OpenAiError> {
    let end = loop {
        if let Some(end) = running.next().await.end {
            break end;
        }
    };
    let (answer, _) = running.log.text_and_tokens();
    let (reasoning, tool_calls) = (running.log.reasoning(), running.log.tool_calls());
    let reason = finish_of(&end, !tool_calls.is_empty())?;
    // OpenAI's shape: no content (null) when the model only called tools.
    let content = (!answer.is_empty() || tool_calls.is_empty()).then_some(answer);
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls);
    }
    let body = json!({
        "id": chunk.id, "object": "chat.completion", "created": chunk.created,
        "model": chunk.model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": null}],
        "usage": usage_of(&end),
    });
    Ok(Json(body).into_response())
}
