//! The model port: anything that turns a prompt into a stream of tokens.
//!
//! Cancelling a generation is dropping its [`TokenStream`]: an adapter must
//! tie the upstream request's lifetime to the stream, so that dropping it
//! closes the upstream connection and the provider stops generating (and
//! billing).

use futures::stream::BoxStream;
use serde_json::Value;
use skald_protocol::http::ToolCall;
use skald_protocol::Usage;

/// The role of one prompt message. User text only ever goes in `User`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result (the OpenAI-compatible API), with its call's id.
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: Role,
    pub content: String,
    /// The tools an assistant turn called (empty for plain text).
    pub tool_calls: Vec<ToolCall>,
    /// The call a `Tool` message answers.
    pub tool_call_id: Option<String>,
}

impl PromptMessage {
    /// A plain text message.
    pub fn new(role: Role, content: impl Into<String>) -> PromptMessage {
        PromptMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// Characters the model reads of it: the text and the tool calls'
    /// names and arguments.
    pub fn chars(&self) -> usize {
        self.content.chars().count()
            + self
                .tool_calls
                .iter()
                .map(|c| c.function.name.chars().count() + c.function.arguments.chars().count())
                .sum::<usize>()
    }
}

/// Tools a caller offers the model (the OpenAI-compatible API), in
/// OpenAI's JSON: the adapter of a provider reads them into its own types.
/// The edge that took them checked their shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    /// `tools`: an array of tool definitions.
    pub definitions: Value,
    /// `tool_choice`, when set.
    pub choice: Option<Value>,
    /// `parallel_tool_calls`, when set.
    pub parallel: Option<bool>,
}

/// One piece of a tool call as the provider streamed it: the first piece
/// of a call has its `id` and `name`, the following ones more `arguments`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCallDelta {
    /// Which call of the answer (OpenAI's `index`).
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

impl ToolCallDelta {
    /// Bytes this piece adds to the answer (counted in `max_answer_bytes`).
    pub fn len(&self) -> usize {
        self.id.as_ref().map_or(0, String::len)
            + self.name.as_ref().map_or(0, String::len)
            + self.arguments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One generation request, fully resolved from the bot's settings.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// The upstream model name; `None` means the provider's default.
    pub model: Option<String>,
    pub messages: Vec<PromptMessage>,
    pub temperature: f64,
    pub max_tokens: u32,
    /// The bot's `max_answer_bytes`: the caller cuts the answer there.
    pub max_answer_bytes: u32,
    /// The bot's `max_reasoning_chars`: the caller drops thinking past it.
    pub max_reasoning_chars: u32,
    /// The end user, passed upstream for abuse tracking (OpenAI's `user`).
    pub user: skald_protocol::UserId,
    /// Sampling parameters a caller chose (the OpenAI-compatible API);
    /// unset ones are the provider's defaults.
    pub sampling: Sampling,
    /// Tools the caller offers the model, if any.
    pub tools: Option<Tools>,
    /// OpenAI's `response_format` (JSON mode, a JSON schema), if the caller
    /// set it.
    pub response_format: Option<Value>,
    /// The bot's upstreams, tried in this order before the first token
    /// (empty: the default upstream). Ignored by single providers.
    pub upstreams: Vec<String>,
}

/// Sampling parameters passed upstream as the caller gave them (already
/// checked against OpenAI's ranges by the edge that read them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub top_p: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub seed: Option<i64>,
    /// Up to four stop sequences.
    pub stop: Vec<String>,
}

/// What a token stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// A piece of the answer, in order. May be empty (ignored).
    Token(String),
    /// A piece of the model's reasoning, before (or between) the answer.
    /// May be empty (ignored).
    Reasoning(String),
    /// A piece of a tool call, in order.
    ToolCall(ToolCallDelta),
    /// The provider's own token counts (usually the last event).
    Usage(Usage),
    /// The provider says the answer is complete, and why.
    Finish(ModelFinish),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFinish {
    /// The model ended its answer.
    Stop,
    /// The answer was cut at `max_tokens`.
    Length,
    /// The model ended its turn by calling tools.
    ToolCalls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The provider failed: refused the request, broke the stream, sent garbage.
    Upstream,
    /// The provider did not answer in time.
    Timeout,
}

/// A failed generation, as the client will see it (`upstream_error` or
/// `upstream_timeout`). The message must not leak secrets such as API keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub kind: ModelErrorKind,
    pub message: String,
    /// Whether another upstream may answer instead (a failure of this one:
    /// its connection, its time, a 5xx, a 429), rather than a refusal of
    /// the request itself (another 4xx), which any upstream would repeat.
    pub failover: bool,
    /// How long the upstream asked to be left alone (`Retry-After` of a
    /// 429 or 503), when it said.
    pub retry_after: Option<std::time::Duration>,
}

impl ModelError {
    pub fn upstream(message: impl Into<String>) -> ModelError {
        ModelError {
            kind: ModelErrorKind::Upstream,
            message: message.into(),
            failover: true,
            retry_after: None,
        }
    }

    pub fn timeout(message: impl Into<String>) -> ModelError {
        ModelError {
            kind: ModelErrorKind::Timeout,
            message: message.into(),
            failover: true,
            retry_after: None,
        }
    }

    /// The request itself was refused: no other upstream is tried.
    pub fn refused(message: impl Into<String>) -> ModelError {
        ModelError {
            failover: false,
            ..ModelError::upstream(message)
        }
    }
}

/// The tokens of one generation. Ends after `Finish` (and possibly `Usage`),
/// or after an `Err`. Dropping it cancels the generation upstream.
pub type TokenStream = BoxStream<'static, Result<ModelEvent, ModelError>>;

/// A model provider: the simulated model, or any OpenAI-compatible endpoint.
#[async_trait::async_trait]
pub trait ModelProvider: Send + Sync + 'static {
    /// Starts a generation. Resolves once the upstream accepted the request
    /// (for HTTP providers: response headers received); tokens come from the
    /// returned stream. Time limits are the caller's: it wraps this call and
    /// each `next()` in its own timeouts.
    async fn start(&self, request: ModelRequest) -> Result<TokenStream, ModelError>;

    /// A short name for logs and metrics (`"simulated"`, `"openai"`).
    fn name(&self) -> &'static str;

    /// The state of each named upstream behind this provider (`"ok"`,
    /// `"cooling_down"`), for `/readyz`; none for a single provider.
    fn upstream_status(&self) -> Vec<(String, &'static str)> {
        Vec::new()
    }
}
