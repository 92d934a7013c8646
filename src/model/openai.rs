//! The model port for any OpenAI-compatible chat-completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp, …), through async-openai.
//!
//! This module exists so that the actors can stream a real model without
//! knowing HTTP: [`OpenAiProvider`] turns a [`ModelRequest`] into one
//! streaming `POST {base_url}/chat/completions` and the SSE chunks into
//! [`ModelEvent`]s. The choices it makes, and why:
//!
//! - **One request, never retried.** async-openai 0.43 wraps its HTTP client
//!   in a retry layer (`OpenAIRetryLayer`, 3 retries on 429, 5xx and connect
//!   errors, honouring `Retry-After` without a cap) that `with_http_client`
//!   cannot turn off. A retried generation can bill twice and can hold
//!   `start` for minutes, so the client gets a plain `ReqwestService`
//!   (`with_http_service`, async-openai's `middleware` feature) instead: every
//!   failure goes straight back to the caller, which owns retries and time
//!   limits. reqwest's own default policy still applies; it only re-sends
//!   on HTTP/2 protocol refusals (`REFUSED_STREAM`), where the server
//!   guarantees it did not process the request.
//! - **Only a connect timeout.** The reqwest client has `connect_timeout`
//!   and no overall or read timeout: answers can stream for minutes, and the
//!   caller applies its first-token and between-token timeouts around
//!   [`ModelProvider::start`] and each `next()`.
//! - **`start` resolves on the response headers.** `create_stream` returns
//!   once the upstream answered with a success status, so a 4xx/5xx or a
//!   refused connection is an `Err` from `start`, never a stream.
//! - **Cancel closes the connection.** async-openai reads the response body
//!   in a task that exits as soon as the receiving side is dropped; dropping
//!   the [`TokenStream`] therefore drops the HTTP response and closes the
//!   upstream connection, which is how a cancel stops the provider (and its
//!   bill). Dropping the `start` future does the same for a request still
//!   waiting for headers.
//! - **Token limit: `max_completion_tokens` by default.** OpenAI refuses a
//!   request that sets both `max_tokens` and `max_completion_tokens`, and its
//!   reasoning and GPT-5 models refuse `max_tokens`; vLLM and current
//!   llama.cpp accept `max_completion_tokens`. Ollama (and llama.cpp before
//!   early 2026) ignore it and only know `max_tokens`, so
//!   [`OpenAiProvider::with_max_tokens_field`] switches to that for them. The
//!   caller also stops a stream that runs past its limit.
//! - **End user: `safety_identifier`.** async-openai 0.43 marks `user` as
//!   deprecated in favour of `safety_identifier` (OpenAI's field for abuse
//!   detection); other servers ignore unknown fields. It carries a keyed
//!   hash of the user's `sub` (HMAC-SHA256, base64url, through
//!   jsonwebtoken's HS256 signer), stable per user and key, that the
//!   provider cannot reverse. An empty user is not sent.
//! - **Usage:** `stream_options.include_usage` is always set; every chunk
//!   carrying `usage` becomes a [`ModelEvent::Usage`] (the last one wins).
//! - **Chunks are read into a lean type of our own** (async-openai's
//!   bring-your-own-types `create_stream_byot`), not async-openai's full
//!   chunk: it reads the fields servers add that OpenAI's schema lacks
//!   (`reasoning_content` from DeepSeek, vLLM and llama.cpp; `reasoning`
//!   from OpenRouter and Ollama), and nothing of what Skald does not use
//!   (logprobs, audio, obfuscation padding), so a token costs less to parse.
//! - **`<think>…</think>` at the start of the content** (models whose
//!   server has no reasoning parser) is split out as reasoning
//!   ([`super::think`]), wherever the chunks cut the tags.
//! - **An error inside a 200 stream** (`data: {"error": …}`, vLLM's way,
//!   or an `event: error`) ends the answer with one upstream error; its
//!   body is logged, not passed to the client.
//! - **Tool calls** are passed on piece by piece as the server streamed
//!   them ([`ModelEvent::ToolCall`]); the caller's tools, `tool_choice` and
//!   `response_format` are sent as the caller gave them.
//! - **Finish reasons:** `stop` is [`ModelFinish::Stop`], `length` is
//!   [`ModelFinish::Length`], `tool_calls` (and the older `function_call`)
//!   [`ModelFinish::ToolCalls`]; `content_filter` and anything else end the
//!   answer as `Stop` and are logged.
//! - **Broken streams are not invented into answers.** An error item (a body
//!   cut mid-chunk, an unreadable chunk) becomes one `Err` and ends the
//!   stream; a stream that simply ends without a finish reason ends without
//!   a [`ModelEvent::Finish`], which the caller reports as an upstream
//!   error. A transport error *after* the finish reason is only logged: the
//!   answer is complete, and failing it would throw it away.
//! - **No secrets in messages.** Errors are rewritten into short messages
//!   without URLs, and any occurrence of the API key is masked; what the
//!   provider wrote in an error body is logged, never passed to clients
//!   (they get the status). Each error says whether another upstream may
//!   answer instead (`ModelError::failover`: connections, timeouts, 5xx,
//!   429), for [`super::upstreams`]. Without an
//!   API key the provider sends an empty bearer token: it never falls back to
//!   async-openai's `OPENAI_API_KEY`/`OPENAI_ORG_ID`/`OPENAI_PROJECT_ID`
//!   environment variables, which must not leak to a third-party endpoint.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Secret;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestToolMessage, ChatCompletionRequestToolMessageContent,
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    FunctionCall, StopConfiguration,
};
use async_openai::types::stream::StreamResponse;
use futures::StreamExt;
use serde::Deserialize;
use skald_actors::ports::model::{
    ModelError, ModelErrorKind, ModelEvent, ModelFinish, ModelProvider, ModelRequest,
    PromptMessage, Role, TokenStream, ToolCallDelta, Tools,
};
use skald_protocol::Usage;

use super::think::{Piece, ThinkSplitter};

/// What [`ModelProvider::name`] returns.
pub const PROVIDER_NAME: &str = "openai";

/// Error messages are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 400;

/// TCP keepalive on upstream connections, so that a peer that vanished
/// without a FIN is eventually noticed by the kernel.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// How to reach an OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct OpenAiSettings {
    /// The API base, including the version path: `https://api.openai.com/v1`,
    /// `http://localhost:8000/v1` (vLLM), `http://localhost:11434/v1` (Ollama).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; `None` (or empty) for keyless servers.
    pub api_key: Option<String>,
    /// The model used when a request names none.
    pub default_model: String,
    /// Limit for establishing the TCP (and TLS) connection. There is no other
    /// time limit here: the caller times the answer.
    pub connect_timeout: Duration,
    /// Key of the `safety_identifier` hash.
    pub user_hash_key: Secret,
}

impl fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &loggable_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("default_model", &self.default_model)
            .field("connect_timeout", &self.connect_timeout)
            .field("user_hash_key", &"[redacted]")
            .finish()
    }
}

/// Which request field carries [`ModelRequest::max_tokens`] (exactly one is
/// sent: OpenAI refuses both at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_completion_tokens`: OpenAI (required by its reasoning models),
    /// vLLM, llama.cpp since early 2026.
    #[default]
    MaxCompletionTokens,
    /// The deprecated `max_tokens`: Ollama, older llama.cpp and other servers
    /// that ignore `max_completion_tokens`.
    MaxTokens,
}

/// Why an [`OpenAiProvider`] could not be built (a configuration mistake).
#[derive(Debug, thiserror::Error)]
pub enum OpenAiSetupError {
    #[error("invalid OpenAI base URL: {0}")]
    InvalidBaseUrl(String),
    #[error("the OpenAI API key cannot be sent in an HTTP header (it contains control or non-ASCII characters)")]
    InvalidApiKey,
    #[error("the default model name is empty")]
    EmptyDefaultModel,
    #[error("the connect timeout must be longer than zero")]
    ZeroConnectTimeout,
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
}

/// A [`ModelProvider`] for an OpenAI-compatible chat-completions endpoint.
pub struct OpenAiProvider {
    client: async_openai::Client<OpenAIConfig>,
    base_url: String,
    default_model: String,
    max_tokens_field: MaxTokensField,
    redactor: Redactor,
    user_hash_key: jsonwebtoken::EncodingKey,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("base_url", &loggable_url(&self.base_url))
            .field("default_model", &self.default_model)
            .field("max_tokens_field", &self.max_tokens_field)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// Checks the settings and builds the HTTP client. Makes no request.
    pub fn new(settings: OpenAiSettings) -> Result<OpenAiProvider, OpenAiSetupError> {
        let base_url = api_base(&settings.base_url)?;
        if settings.default_model.trim().is_empty() {
            return Err(OpenAiSetupError::EmptyDefaultModel);
        }
        if settings.connect_timeout.is_zero() {
            return Err(OpenAiSetupError::ZeroConnectTimeout);
        }
        let api_key = settings.api_key.unwrap_or_default();
        // async-openai builds this header with `parse().unwrap()` on every
        // request: refuse a key that would make it panic.
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {api_key}")).is_err() {
            return Err(OpenAiSetupError::InvalidApiKey);
        }
        let redactor = Redactor::new(&api_key);

        // Every field is set explicitly: `OpenAIConfig::new()` reads
        // OPENAI_API_KEY, OPENAI_ORG_ID, OPENAI_PROJECT_ID and
        // OPENAI_BASE_URL from the environment.
        let config = OpenAIConfig::new()
            .with_api_base(base_url.clone())
            .with_api_key(api_key)
            .with_org_id("")
            .with_project_id("");
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_keepalive(TCP_KEEPALIVE)
            .build()
            .map_err(|error| OpenAiSetupError::HttpClient(error_chain(&error)))?;
        let client = async_openai::Client::with_config(config)
            // Builds the requests (and would execute them through the
            // retrying executor)...
            .with_http_client(http.clone())
            // ...which this replaces by a plain, non-retrying one, that
            // notes the `Retry-After` of a refusal.
            .with_http_service(ReadRetryAfter(ReqwestService::new(http)));

        Ok(OpenAiProvider {
            client,
            base_url,
            default_model: settings.default_model,
            max_tokens_field: MaxTokensField::default(),
            redactor,
            user_hash_key: jsonwebtoken::EncodingKey::from_secret(
                settings.user_hash_key.expose().as_bytes(),
            ),
        })
    }

    /// The keyed hash of `user` sent as `safety_identifier` (none for an
    /// empty user).
    fn safety_identifier(&self, user: &skald_protocol::UserId) -> Option<String> {
        if user.is_empty() {
            return None;
        }
        jsonwebtoken::crypto::sign(
            user.as_bytes(),
            &self.user_hash_key,
            jsonwebtoken::Algorithm::HS256,
        )
        .ok()
    }

    /// Chooses the request field for the token limit (see [`MaxTokensField`]).
    pub fn with_max_tokens_field(mut self, field: MaxTokensField) -> OpenAiProvider {
        self.max_tokens_field = field;
        self
    }

    /// The model used when a request names none.
    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// The chat-completions request for `request`.
    fn chat_request(
        &self,
        request: ModelRequest,
    ) -> Result<CreateChatCompletionRequest, ModelError> {
        let unreadable = |what: &str, e: serde_json::Error| {
            ModelError::refused(format!("the {what} could not be sent: {e}"))
        };
        let response_format = request
            .response_format
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| unreadable("response_format", e))?;
        let (tools, tool_choice, parallel_tool_calls) = match request.tools {
            None => (None, None, None),
            Some(Tools {
                definitions,
                choice,
                parallel,
            }) => (
                Some(serde_json::from_value(definitions).map_err(|e| unreadable("tools", e))?),
                choice
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| unreadable("tool_choice", e))?,
                parallel,
            ),
        };
        let mut body = CreateChatCompletionRequest {
            model: request
                .model
                .filter(|model| !model.trim().is_empty())
                .unwrap_or_else(|| self.default_model.clone()),
            messages: request.messages.into_iter().map(chat_message).collect(),
            temperature: Some(request.temperature as f32),
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            }),
            safety_identifier: self.safety_identifier(&request.user),
            top_p: request.sampling.top_p.map(|v| v as f32),
            frequency_penalty: request.sampling.frequency_penalty.map(|v| v as f32),
            presence_penalty: request.sampling.presence_penalty.map(|v| v as f32),
            stop: (!request.sampling.stop.is_empty())
                .then_some(StopConfiguration::StringArray(request.sampling.stop)),
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
            ..CreateChatCompletionRequest::default()
        };
        // Deprecated by OpenAI, still honoured by it and by vLLM and
        // llama.cpp: passed when the caller set it.
        #[allow(deprecated)]
        {
            body.seed = request.sampling.seed;
        }
        match self.max_tokens_field {
            MaxTokensField::MaxCompletionTokens => {
                body.max_completion_tokens = Some(request.max_tokens);
            }
            MaxTokensField::MaxTokens => {
                #[allow(deprecated)]
                {
                    body.max_tokens = Some(request.max_tokens);
                }
            }
        }
        Ok(body)
    }
}

#[async_trait::async_trait]
impl ModelProvider for OpenAiProvider {
    async fn start(&self, request: ModelRequest) -> Result<TokenStream, ModelError> {
        let body = self.chat_request(request)?;
        let model = body.model.clone();
        let (started, retry_after) = RETRY_AFTER
            .scope(Cell::new(None), async {
                let started = self.client.chat().create_stream_byot(body).await;
                (started, RETRY_AFTER.with(Cell::get))
            })
            .await;
        match started {
            Ok(upstream) => {
                tracing::debug!(%model, "upstream accepted the chat request");
                Ok(token_stream(upstream, self.redactor.clone()))
            }
            Err(error) => {
                let mut error = self.redactor.model_error(error, Phase::Start);
                error.retry_after = retry_after;
                tracing::warn!(%model, kind = ?error.kind, error = %error.message, "upstream chat request failed");
                Err(error)
            }
        }
    }

    fn name(&self) -> &'static str {
        PROVIDER_NAME
    }
}

tokio::task_local! {
    /// The `Retry-After` of the refusal (429 or 503) the upstream answered
    /// to the request this task is sending, read by [`ReadRetryAfter`]:
    /// async-openai's errors carry the status, not the headers.
    static RETRY_AFTER: Cell<Option<Duration>>;
}

/// The HTTP service: reqwest without retries, noting a refusal's
/// `Retry-After` (seconds) for the upstreams' cool-down.
#[derive(Clone)]
struct ReadRetryAfter(ReqwestService);

impl tower::Service<HttpRequestFactory> for ReadRetryAfter {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<reqwest::Response, OpenAIError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), OpenAIError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let call = self.0.call(request);
        Box::pin(async move {
            let response = call.await?;
            let status = response.status().as_u16();
            if status == 429 || status == 503 {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Outside a `scope` (nobody asked), there is nowhere to note it.
                let _ = RETRY_AFTER.try_with(|noted| noted.set(wait));
            }
            Ok(response)
        })
    }
}

/// Validates `base_url` and returns it without a trailing slash
/// (async-openai appends `/chat/completions`).
fn api_base(base_url: &str) -> Result<String, OpenAiSetupError> {
    let invalid = |why: String| Err(OpenAiSetupError::InvalidBaseUrl(why));
    let url = match reqwest::Url::parse(base_url.trim()) {
        Ok(url) => url,
        Err(error) => return invalid(error.to_string()),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return invalid(format!(
            "the scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return invalid("it must not have a query or a fragment".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `url` without a password, for logs.
fn loggable_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot carry a password at all.
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn chat_message(message: PromptMessage) -> ChatCompletionRequestMessage {
    match message.role {
        Role::System => ChatCompletionRequestSystemMessage::from(message.content).into(),
        Role::User => ChatCompletionRequestUserMessage::from(message.content).into(),
        Role::Assistant if message.tool_calls.is_empty() => {
            ChatCompletionRequestAssistantMessage::from(message.content).into()
        }
        Role::Assistant => ChatCompletionRequestAssistantMessage {
            content: (!message.content.is_empty()).then_some(
                ChatCompletionRequestAssistantMessageContent::Text(message.content),
            ),
            tool_calls: Some(
                message
                    .tool_calls
                    .into_iter()
                    .map(|call| {
                        ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                            id: call.id,
                            function: FunctionCall {
                                name: call.function.name,
                                arguments: call.function.arguments,
                            },
                        })
                    })
                    .collect(),
            ),
            ..ChatCompletionRequestAssistantMessage::default()
        }
        .into(),
        Role::Tool => ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(message.content),
            tool_call_id: message.tool_call_id.unwrap_or_default(),
        }
        .into(),
    }
}

/// One streamed chunk, reduced to what Skald reads of it. Every field may
/// be absent or null; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    /// A failure reported inside a 200 stream (`data: {"error": …}`, or an
    /// `event: error` whose data is the same).
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// DeepSeek, vLLM, llama.cpp, LM Studio.
    #[serde(default)]
    reasoning_content: Option<String>,
    /// OpenRouter, Ollama, vLLM's newer name.
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallChunk>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallChunk {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionChunk>,
}

#[derive(Debug, Deserialize)]
struct FunctionChunk {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

type ChunkStream = StreamResponse<Chunk>;

/// The upstream stream, translated.
struct Translation {
    /// `None` once the stream ended or failed: dropping it closes the
    /// connection right away.
    upstream: Option<ChunkStream>,
    /// Events of the last chunk not yet handed out.
    pending: VecDeque<ModelEvent>,
    finished: bool,
    redactor: Redactor,
    /// A leading `<think>` block of the content, split out as reasoning.
    think: ThinkSplitter,
    /// The splitter's output for one delta (reused).
    split: Vec<Piece>,
}

fn token_stream(upstream: ChunkStream, redactor: Redactor) -> TokenStream {
    let state = Translation {
        upstream: Some(upstream),
        pending: VecDeque::new(),
        finished: false,
        redactor,
        think: ThinkSplitter::new(),
        split: Vec::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            let next = state.upstream.as_mut()?.next().await;
            match next {
                Some(Ok(chunk)) => {
                    if let Err(error) = state.translate(chunk) {
                        state.upstream = None;
                        return Some((Err(error), state));
                    }
                }
                Some(Err(error)) => {
                    state.upstream = None;
                    let error = state.redactor.model_error(error, Phase::Stream);
                    if state.finished {
                        tracing::warn!(error = %error.message, "upstream stream broke after the answer finished; keeping the answer");
                        return None;
                    }
                    tracing::warn!(kind = ?error.kind, error = %error.message, "upstream stream broke");
                    return Some((Err(error), state));
                }
                None => {
                    state.upstream = None;
                    if !state.finished {
                        tracing::warn!("upstream stream ended without a finish reason");
                        // What the splitter held back is said before the end.
                        state.flush_think();
                    }
                }
            }
        }
    })
    .boxed()
}

impl Translation {
    /// Queues the events of one chunk: its reasoning, text and tool-call
    /// pieces, its finish reason, its usage.
    fn translate(&mut self, chunk: Chunk) -> Result<(), ModelError> {
        if let Some(error) = chunk.error {
            // vLLM and others report a failure inside a 200 stream. The
            // body is logged, not echoed to the client.
            let body = self.redactor.clean(&error.to_string());
            tracing::warn!(error = %body, "upstream reported an error mid-answer");
            return Err(ModelError::upstream("the model failed while answering"));
        }
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index != 0 {
                tracing::debug!(
                    index = choice.index,
                    "ignoring an extra choice from upstream"
                );
                continue;
            }
            if let Some(delta) = choice.delta {
                self.queue(delta);
            }
            if let Some(reason) = choice.finish_reason {
                if self.finished {
                    tracing::debug!(?reason, "ignoring a second finish reason from upstream");
                } else {
                    self.flush_think();
                    self.finished = true;
                    self.pending
                        .push_back(ModelEvent::Finish(model_finish(&reason)));
                }
            }
        }
        if let Some(usage) = chunk.usage {
            self.pending.push_back(ModelEvent::Usage(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                reasoning_tokens: usage
                    .completion_tokens_details
                    .and_then(|d| d.reasoning_tokens),
                estimated: false,
            }));
        }
        Ok(())
    }

    /// Queues what the `<think>` splitter holds back (the content ended).
    fn flush_think(&mut self) {
        self.think.finish(&mut self.split);
        self.queue_split();
    }

    /// Queues the splitter's pieces as reasoning and answer tokens.
    fn queue_split(&mut self) {
        for piece in self.split.drain(..) {
            self.pending.push_back(match piece {
                Piece::Reasoning(text) => ModelEvent::Reasoning(text),
                Piece::Answer(text) => ModelEvent::Token(text),
            });
        }
    }

    /// The events of one delta, in the order a reader expects them:
    /// reasoning, then text, then tool-call pieces.
    fn queue(&mut self, delta: Delta) {
        let reasoning = delta.reasoning_content.or(delta.reasoning);
        let text = delta.content;
        let calls = delta.tool_calls.unwrap_or_default();
        let nothing = reasoning.as_ref().is_none_or(String::is_empty)
            && text.as_ref().is_none_or(String::is_empty)
            && calls.is_empty();
        if nothing {
            return;
        }
        if self.finished {
            tracing::warn!("ignoring upstream output after the finish reason");
            return;
        }
        if let Some(reasoning) = reasoning.filter(|r| !r.is_empty()) {
            self.pending.push_back(ModelEvent::Reasoning(reasoning));
        }
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            self.think.push(&text, &mut self.split);
            self.queue_split();
        }
        for call in calls {
            let (name, arguments) = call
                .function
                .map_or((None, None), |f| (f.name, f.arguments));
            self.pending.push_back(ModelEvent::ToolCall(ToolCallDelta {
                index: call.index,
                id: call.id.filter(|id| !id.is_empty()),
                name: name.filter(|n| !n.is_empty()),
                arguments: arguments.unwrap_or_default(),
            }));
        }
    }
}

fn model_finish(reason: &str) -> ModelFinish {
    match reason {
        "stop" => ModelFinish::Stop,
        "length" => ModelFinish::Length,
        "tool_calls" | "function_call" => ModelFinish::ToolCalls,
        other => {
            tracing::warn!(
                reason = other,
                "upstream ended the answer for an unusual reason; treating it as stop"
            );
            ModelFinish::Stop
        }
    }
}

/// Turns async-openai errors into short client-safe messages: no URLs, the
/// API key masked, bounded length.
#[derive(Clone)]
struct Redactor {
    api_key: Option<Arc<str>>,
}

impl Redactor {
    fn new(api_key: &str) -> Redactor {
        Redactor {
            api_key: (!api_key.is_empty()).then(|| Arc::from(api_key)),
        }
    }

    /// The client's error: Skald's words and the status; what the
    /// provider said (its error body) is logged here, never passed on.
    fn model_error(&self, error: OpenAIError, phase: Phase) -> ModelError {
        let d = describe(error, phase);
        if let Some(detail) = &d.detail {
            tracing::warn!(error = %self.clean(detail), "the model provider said");
        }
        ModelError {
            kind: d.kind,
            message: self.clean(&d.message),
            failover: d.failover,
            retry_after: None,
        }
    }

    fn clean(&self, message: &str) -> String {
        let mut message = match &self.api_key {
            Some(key) => message.replace(&**key, "[redacted]"),
            None => message.to_owned(),
        };
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        message
    }
}

/// Where an error happened: it decides what an unreadable body means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending the request and reading the response headers.
    Start,
    /// Reading the SSE stream of a request the upstream accepted.
    Stream,
}

/// An async-openai error, described.
struct Described {
    kind: ModelErrorKind,
    /// For the client: no URL, nothing the provider wrote.
    message: String,
    /// What the provider wrote (its error body), for the log.
    detail: Option<String>,
    /// Whether another upstream may answer instead.
    failover: bool,
}

fn describe(error: OpenAIError, phase: Phase) -> Described {
    let ours = |kind, message: String| Described {
        kind,
        message,
        detail: None,
        failover: true,
    };
    match error {
        OpenAIError::Reqwest(error) => {
            let kind = if error.is_timeout() {
                ModelErrorKind::Timeout
            } else {
                ModelErrorKind::Upstream
            };
            let what = if error.is_connect() {
                "could not connect to the model provider"
            } else if error.is_timeout() {
                "the model provider timed out"
            } else if error.is_body() || error.is_decode() {
                "the connection to the model provider broke"
            } else {
                "the request to the model provider failed"
            };
            ours(
                kind,
                format!("{what}: {}", error_chain(&error.without_url())),
            )
        }
        OpenAIError::ApiError(response) => {
            let status = response.status_code.as_u16();
            let detail =
                error_message_in(&response.api_error.message).unwrap_or(response.api_error.message);
            Described {
                kind: ModelErrorKind::Upstream,
                message: format!("the model provider answered HTTP {status}"),
                detail: Some(detail.trim().to_owned()),
                failover: status == 429 || status >= 500,
            }
        }
        OpenAIError::JSONDeserialize(error, content) => {
            let detail = error_message_in(&content).unwrap_or_else(|| content.trim().to_owned());
            let (message, failover) = match phase {
                // Before the stream, async-openai only parses the body of a
                // refusal (a 4xx; 5xx bodies come as `ApiError`), and it
                // drops the status.
                Phase::Start if detail.is_empty() => (
                    "the model provider refused the request without saying why \
                     (check its base URL and API key)"
                        .to_owned(),
                    false,
                ),
                Phase::Start => ("the model provider refused the request".to_owned(), false),
                Phase::Stream if error_message_in(&content).is_some() => {
                    ("the model provider reported an error".to_owned(), true)
                }
                Phase::Stream => (
                    format!("the model provider sent an unreadable chunk ({error})"),
                    true,
                ),
            };
            Described {
                kind: ModelErrorKind::Upstream,
                message,
                detail: (!detail.is_empty()).then_some(detail),
                failover,
            }
        }
        OpenAIError::StreamError(error) => ours(
            ModelErrorKind::Upstream,
            format!("the model provider's stream broke: {error}"),
        ),
        other => ours(
            ModelErrorKind::Upstream,
            format!("the request to the model provider failed: {other}"),
        ),
    }
}

/// The message of a JSON error body, if `text` is one: OpenAI's
/// `{"error":{"message":…}}`, Ollama's `{"error":"…"}`, FastAPI's
/// `{"detail":"…"}`.
fn error_message_in(text: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(text).ok()?;
    let message = match body.get("error") {
        Some(error) => error.get("message").unwrap_or(error),
        None => body.get("detail")?,
    };
    message.as_str().map(str::to_owned)
}

/// An error and its sources, `outer: inner: innermost` (repeats skipped).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        assert_eq!(
            api_base("http://127.0.0.1:8000/v1/").ok().as_deref(),
            Some("http://127.0.0.1:8000/v1")
        );
        assert_eq!(
            api_base(" https://api.openai.com/v1 ").ok().as_deref(),
            Some("https://api.openai.com/v1")
        );
        assert!(api_base("not a url").is_err());
        assert!(api_base("ftp://example.com/v1").is_err());
        assert!(api_base("http://example.com/v1?key=x").is_err());
    }

    #[test]
    fn passwords_in_urls_are_not_logged() {
        let logged = loggable_url("https://user:hunter2@example.com/v1");
        assert!(!logged.contains("hunter2"), "{logged}");
        assert!(logged.contains("example.com/v1"), "{logged}");
        assert_eq!(loggable_url("http://h/v1"), "http://h/v1");
    }

    #[test]
    fn the_redactor_masks_the_key_and_bounds_the_length() {
        let redactor = Redactor::new("sk-abc123456");
        assert_eq!(
            redactor.clean("bad key sk-abc123456 given"),
            "bad key [redacted] given"
        );
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let cleaned = redactor.clean(&long);
        assert_eq!(cleaned.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cleaned.ends_with('…'));
        assert_eq!(Redactor::new("").clean("as is"), "as is");
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(
            error_message_in(r#"{"error":{"message":"boom","type":"server_error"}}"#).as_deref(),
            Some("boom")
        );
        assert_eq!(
            error_message_in(r#"{"error":"flat"}"#).as_deref(),
            Some("flat")
        );
        assert_eq!(
            error_message_in(r#"{"detail":"Not Found"}"#).as_deref(),
            Some("Not Found")
        );
        assert_eq!(error_message_in("<html>bad gateway</html>"), None);
        assert_eq!(error_message_in(r#"{"id":"chatcmpl-1"}"#), None);
    }

    #[test]
    fn finish_reasons_map_to_stop_length_or_tool_calls() {
        assert_eq!(model_finish("stop"), ModelFinish::Stop);
        assert_eq!(model_finish("length"), ModelFinish::Length);
        assert_eq!(model_finish("content_filter"), ModelFinish::Stop);
        assert_eq!(model_finish("tool_calls"), ModelFinish::ToolCalls);
        assert_eq!(model_finish("function_call"), ModelFinish::ToolCalls);
        assert_eq!(model_finish("eos"), ModelFinish::Stop);
    }
}
