//! What a request asks the mock to do, chosen by its `model` field.
//!
//! Skald's failure handling (upstream drops, hangs, errors, slow first tokens)
//! and its normalisation of what upstreams send (three forms of reasoning,
//! tool calls, errors inside a 200 stream) can only be tested if the upstream
//! behaves that way on demand; encoding the behaviour in the model name lets
//! each test request pick its own through an unmodified OpenAI client.
//!
//! A name is `mock-` and one or more parts joined by `+`, at most one part of
//! each kind (answer, reasoning, pace, fault), e.g.
//! `mock-reasoning-content+error-after-3`. A name that does not start with
//! `mock-`, has an unknown or malformed part, or two parts of the same kind is
//! an ordinary model name: normal behaviour.
//!
//! | part | kind | what the mock does |
//! | --- | --- | --- |
//! | `stamped` | answer | each token is `@<µs since the Unix epoch when the mock sent it> ` (the measurement mode) |
//! | `echo` | answer | the answer is the last user message verbatim, one token per word with the whitespace after it (leading whitespace is a token of its own) |
//! | `tool-call` | answer | one `delta.tool_calls` call streamed as OpenAI does (first chunk: index, id, `type: function`, the name of the request's first tool or `lookup`, empty arguments; then argument fragments), `finish_reason: tool_calls`; the arguments are `{"query":"<last user message>"}`, each fragment one completion token |
//! | `reasoning-content[-N]` | reasoning | N thinking tokens (default 8) in `delta.reasoning_content` before the answer (DeepSeek, llama.cpp) |
//! | `reasoning[-N]` | reasoning | the same in `delta.reasoning` (vLLM, Ollama's `/v1`, OpenRouter) |
//! | `think[-N]` | reasoning | `<think>` + the thinking + `</think>` at the start of `content`, the tags in the first and last thinking chunk |
//! | `think-split[-N]` | reasoning | the same text, but the whole content is cut at fixed, arbitrary character positions, always inside `<think>` (`<th`) and inside `</think>` (`</thi`), so tags straddle chunks and a chunk can hold the end of the thinking and the start of the answer |
//! | `slow-think-X-T` | pace | the thinking tokens come every X ms (X >= 1) for T ms before the first answer token: ceil(T/X) tokens (at least one) at 0, X, 2X, ...; the answer at T, then at the normal pace; in `reasoning_content` unless a reasoning part names the form (its N is then ignored) |
//! | `drop-after-N` | fault | N answer tokens, then the connection is aborted (no finish, no `[DONE]`) |
//! | `hang` | fault | no response headers, ever |
//! | `hang-after-N` | fault | N answer tokens, then silence with the connection open |
//! | `slow-first-MS` | fault | MS ms before the first chunk |
//! | `error-500` | fault | HTTP 500 with an OpenAI error body (`type: server_error`) |
//! | `error-503` | fault | HTTP 503 with an OpenAI error body (`type: server_error`) |
//! | `error-429[-S]` | fault | HTTP 429, `Retry-After: S` (default 1), an OpenAI error body (`type: requests`, `code: rate_limit_exceeded`) |
//! | `error-after-N` | fault | N answer tokens, then `data: {"error":{"message","type":"server_error",...}}` and `data: [DONE]` (as vLLM does), no finish chunk, no usage |
//! | `error-event-after-N` | fault | N answer tokens, then `event: error` with the same error object as data, and the body ends (no `[DONE]`) |
//! | `no-usage` | fault | a normal stream that ends with `[DONE]` but never sends the usage chunk, even when `stream_options.include_usage` asked for it |
//!
//! Counting: the fault's N counts answer tokens (content words, echo tokens,
//! tool-call fragments; with `think-split`, the chunks from the first one that
//! holds answer text), never thinking tokens, so a reasoning part combines
//! with every fault. The request's `max_tokens` / `max_completion_tokens`
//! cuts the answer only (`finish_reason: length`), not the thinking. With a
//! reasoning part, the usage's `completion_tokens` includes the thinking
//! tokens and `completion_tokens_details.reasoning_tokens` gives them (the
//! `<think>` tags are not counted).
//!
//! Not combinable (such a name is normal): `think-split` with `stamped` or
//! `tool-call` (the split text must be known before the first chunk and be
//! content). Non-streaming requests get the same answer as one
//! `chat.completion` (reasoning in `message.reasoning_content` or
//! `message.reasoning`, `<think>` inside `content`, `message.tool_calls`); there
//! `error-after-N` and `error-event-after-N` answer HTTP 500 and `no-usage`
//! leaves out `usage`.

/// Thinking tokens of a reasoning part without an explicit count.
pub const DEFAULT_REASONING_TOKENS: u32 = 8;

/// Everything a model name asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Behaviour {
    pub answer: AnswerKind,
    pub reasoning: Option<Reasoning>,
    pub fault: Fault,
}

/// What the answer is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum AnswerKind {
    /// Deterministic words (the default).
    #[default]
    Words,
    /// `stamped`: the measurement mode.
    Stamped,
    /// `echo`: the last user message.
    Echo,
    /// `tool-call`: one streamed function call.
    ToolCall,
    /// `big-delta-N`: one delta of N bytes (`é`, two bytes each, then `x`
    /// if N is odd), for the server's bound on answer bytes.
    BigDelta(u32),
}

/// Thinking before the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reasoning {
    pub form: ReasoningForm,
    /// Thinking tokens.
    pub tokens: u32,
    /// `slow-think-X-T`: the thinking's own pace.
    pub slow: Option<SlowThink>,
}

/// Where an upstream puts its thinking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReasoningForm {
    /// `delta.reasoning_content`.
    ReasoningContent,
    /// `delta.reasoning`.
    Reasoning,
    /// `<think>…</think>` at the start of `content`, tags in whole chunks.
    Think,
    /// The same, cut at arbitrary character positions.
    ThinkSplit,
}

impl ReasoningForm {
    /// The delta field the thinking goes in, for the forms that have one.
    pub(super) fn field(self) -> Option<&'static str> {
        match self {
            ReasoningForm::ReasoningContent => Some("reasoning_content"),
            ReasoningForm::Reasoning => Some("reasoning"),
            ReasoningForm::Think | ReasoningForm::ThinkSplit => None,
        }
    }
}

/// Thinking tokens every `interval_ms` for `total_ms` before the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlowThink {
    pub interval_ms: u64,
    pub total_ms: u64,
}

impl SlowThink {
    /// ceil(total / interval), at least one.
    fn tokens(self) -> u32 {
        let tokens = self.total_ms.div_ceil(self.interval_ms).max(1);
        u32::try_from(tokens).unwrap_or(u32::MAX)
    }
}

/// What a request asks the mock to do wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Fault {
    /// Normal behaviour.
    #[default]
    None,
    /// `drop-after-N`: send N answer tokens, then abort the connection.
    DropAfter(u32),
    /// `hang`: never send response headers.
    Hang,
    /// `hang-after-N`: send N answer tokens, then go silent with the connection open.
    HangAfter(u32),
    /// `error-500`: HTTP 500 with an OpenAI-style error body.
    Error500,
    /// `error-503`: HTTP 503 with an OpenAI-style error body.
    Error503,
    /// `error-429[-S]`: HTTP 429 with `Retry-After: S`.
    RateLimited { retry_after_s: u64 },
    /// `slow-first-MS`: wait MS milliseconds before the first chunk.
    SlowFirst(u64),
    /// `error-after-N`: N answer tokens, then a `data:` line with an `error`, then `[DONE]`.
    ErrorAfter(u32),
    /// `error-event-after-N`: N answer tokens, then an `event: error`, then the end.
    ErrorEventAfter(u32),
    /// `no-usage`: no usage chunk, whatever `include_usage` says.
    NoUsage,
}

/// One `+`-separated part of a model name.
enum Part {
    Answer(AnswerKind),
    Reasoning(ReasoningForm, u32),
    Pace(SlowThink),
    Fault(Fault),
}

impl Part {
    fn parse(text: &str) -> Option<Part> {
        let fault = |fault| Some(Part::Fault(fault));
        match text {
            "stamped" => return Some(Part::Answer(AnswerKind::Stamped)),
            "echo" => return Some(Part::Answer(AnswerKind::Echo)),
            "tool-call" => return Some(Part::Answer(AnswerKind::ToolCall)),
            "hang" => return fault(Fault::Hang),
            "error-500" => return fault(Fault::Error500),
            "error-503" => return fault(Fault::Error503),
            "no-usage" => return fault(Fault::NoUsage),
            "error-429" => return fault(Fault::RateLimited { retry_after_s: 1 }),
            _ => {}
        }
        let forms = [
            ("reasoning-content", ReasoningForm::ReasoningContent),
            ("reasoning", ReasoningForm::Reasoning),
            ("think-split", ReasoningForm::ThinkSplit),
            ("think", ReasoningForm::Think),
        ];
        for (name, form) in forms {
            if text == name {
                return Some(Part::Reasoning(form, DEFAULT_REASONING_TOKENS));
            }
            if let Some(n) = number_after(text, name) {
                return Some(Part::Reasoning(form, n));
            }
        }
        let counted: [(&str, CountedFault); 4] = [
            ("drop-after", Fault::DropAfter),
            ("hang-after", Fault::HangAfter),
            ("error-after", Fault::ErrorAfter),
            ("error-event-after", Fault::ErrorEventAfter),
        ];
        for (name, make) in counted {
            if let Some(n) = number_after(text, name) {
                return fault(make(n));
            }
        }
        if let Some(bytes) = number_after(text, "big-delta") {
            return Some(Part::Answer(AnswerKind::BigDelta(bytes)));
        }
        if let Some(ms) = number_after(text, "slow-first") {
            return fault(Fault::SlowFirst(ms));
        }
        if let Some(retry_after_s) = number_after(text, "error-429") {
            return fault(Fault::RateLimited { retry_after_s });
        }
        let (interval, total) = text.strip_prefix("slow-think-")?.split_once('-')?;
        let slow = SlowThink {
            interval_ms: interval.parse().ok().filter(|&ms| ms > 0)?,
            total_ms: total.parse().ok()?,
        };
        Some(Part::Pace(slow))
    }
}

/// A fault that strikes after N answer tokens.
type CountedFault = fn(u32) -> Fault;

/// `N` of `{name}-N`.
fn number_after<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    text.strip_prefix(name)?.strip_prefix('-')?.parse().ok()
}

/// Puts `value` in an empty `slot`; `None` when it was taken.
fn fill<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

impl Behaviour {
    /// The behaviour a model name asks for; anything not understood is normal.
    pub(super) fn from_model(model: &str) -> Behaviour {
        Behaviour::parse(model).unwrap_or_default()
    }

    fn parse(model: &str) -> Option<Behaviour> {
        let parts = model.strip_prefix("mock-")?;
        let (mut answer, mut form, mut pace, mut fault) = (None, None, None, None);
        for part in parts.split('+') {
            match Part::parse(part)? {
                Part::Answer(kind) => fill(&mut answer, kind)?,
                Part::Reasoning(kind, tokens) => fill(&mut form, (kind, tokens))?,
                Part::Pace(slow) => fill(&mut pace, slow)?,
                Part::Fault(kind) => fill(&mut fault, kind)?,
            }
        }
        let answer = answer.unwrap_or_default();
        let reasoning = match (form, pace) {
            (None, None) => None,
            (Some((form, tokens)), None) => Some(Reasoning {
                form,
                tokens,
                slow: None,
            }),
            (form, Some(slow)) => Some(Reasoning {
                form: form.map_or(ReasoningForm::ReasoningContent, |(form, _)| form),
                tokens: slow.tokens(),
                slow: Some(slow),
            }),
        };
        let split = reasoning.is_some_and(|r| r.form == ReasoningForm::ThinkSplit);
        if split && matches!(answer, AnswerKind::Stamped | AnswerKind::ToolCall) {
            return None;
        }
        Some(Behaviour {
            answer,
            reasoning,
            fault: fault.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(model: &str) -> Fault {
        Behaviour::from_model(model).fault
    }

    #[test]
    fn parses_every_fault() {
        assert_eq!(Behaviour::from_model("gpt-4o-mini"), Behaviour::default());
        assert_eq!(fault("mock-drop-after-3"), Fault::DropAfter(3));
        assert_eq!(fault("mock-hang"), Fault::Hang);
        assert_eq!(fault("mock-hang-after-7"), Fault::HangAfter(7));
        assert_eq!(fault("mock-error-500"), Fault::Error500);
        assert_eq!(fault("mock-error-503"), Fault::Error503);
        assert_eq!(
            fault("mock-error-429"),
            Fault::RateLimited { retry_after_s: 1 }
        );
        assert_eq!(
            fault("mock-error-429-30"),
            Fault::RateLimited { retry_after_s: 30 }
        );
        assert_eq!(fault("mock-slow-first-250"), Fault::SlowFirst(250));
        assert_eq!(fault("mock-error-after-4"), Fault::ErrorAfter(4));
        assert_eq!(fault("mock-error-event-after-0"), Fault::ErrorEventAfter(0));
        assert_eq!(fault("mock-no-usage"), Fault::NoUsage);
        assert_eq!(
            Behaviour::from_model("mock-stamped").answer,
            AnswerKind::Stamped
        );
        assert_eq!(Behaviour::from_model("mock-echo").answer, AnswerKind::Echo);
        assert_eq!(
            Behaviour::from_model("mock-big-delta-4194304").answer,
            AnswerKind::BigDelta(4_194_304)
        );
        assert_eq!(
            Behaviour::from_model("mock-tool-call").answer,
            AnswerKind::ToolCall
        );
    }

    #[test]
    fn malformed_or_unknown_names_are_normal() {
        for model in [
            "mock-drop-after-x",
            "mock-hang-after-",
            "mock-normal",
            "mock-",
            "mock-error-429-soon",
            "mock-slow-think-0-100",
            "mock-slow-think-100",
            "mock-reasoning-content-",
            "mock-echo+",
            "mock-stamped+echo",
            "mock-hang+error-500",
            "mock-think+reasoning",
            "mock-think-split+tool-call",
            "mock-think-split+stamped",
            "drop-after-3",
            "xmock-hang",
        ] {
            assert_eq!(
                Behaviour::from_model(model),
                Behaviour::default(),
                "{model}"
            );
        }
    }

    #[test]
    fn parses_reasoning_forms_and_pace() {
        let reasoning = |model: &str| Behaviour::from_model(model).reasoning.unwrap();
        let form = |model: &str| {
            let r = reasoning(model);
            (r.form, r.tokens)
        };
        assert_eq!(
            form("mock-reasoning-content"),
            (ReasoningForm::ReasoningContent, DEFAULT_REASONING_TOKENS)
        );
        assert_eq!(
            form("mock-reasoning-content-3"),
            (ReasoningForm::ReasoningContent, 3)
        );
        assert_eq!(form("mock-reasoning-12"), (ReasoningForm::Reasoning, 12));
        assert_eq!(form("mock-think-2"), (ReasoningForm::Think, 2));
        assert_eq!(
            form("mock-think-split"),
            (ReasoningForm::ThinkSplit, DEFAULT_REASONING_TOKENS)
        );
        let slow = reasoning("mock-slow-think-300-1000");
        assert_eq!(slow.form, ReasoningForm::ReasoningContent);
        assert_eq!(slow.tokens, 4, "at 0, 300, 600 and 900 ms");
        assert_eq!(
            slow.slow,
            Some(SlowThink {
                interval_ms: 300,
                total_ms: 1000
            })
        );
        let think = reasoning("mock-think-5+slow-think-100-1000");
        assert_eq!((think.form, think.tokens), (ReasoningForm::Think, 10));
        assert_eq!(reasoning("mock-slow-think-50-0").tokens, 1);
    }

    #[test]
    fn parts_combine_one_of_each_kind() {
        let behaviour = Behaviour::from_model("mock-reasoning-content+error-after-3");
        assert_eq!(behaviour.fault, Fault::ErrorAfter(3));
        assert_eq!(
            behaviour.reasoning.map(|r| r.form),
            Some(ReasoningForm::ReasoningContent)
        );
        let behaviour = Behaviour::from_model("mock-echo+think-split-2+no-usage");
        assert_eq!(
            (behaviour.answer, behaviour.fault),
            (AnswerKind::Echo, Fault::NoUsage)
        );
        assert_eq!(
            behaviour.reasoning.map(|r| (r.form, r.tokens)),
            Some((ReasoningForm::ThinkSplit, 2))
        );
        let behaviour = Behaviour::from_model("mock-tool-call+reasoning-1+drop-after-2");
        assert_eq!(
            (behaviour.answer, behaviour.fault),
            (AnswerKind::ToolCall, Fault::DropAfter(2))
        );
        assert_eq!(
            Behaviour::from_model("mock-stamped+slow-first-10").fault,
            Fault::SlowFirst(10)
        );
    }
}
