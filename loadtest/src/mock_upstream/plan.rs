//! One answer, decided before its first byte: the parts it streams, when each
//! is due, its usage and its finish reason.
//!
//! Every mode (words, stamps, echo, tool call; thinking in three forms) comes
//! down to one numbered list of parts, each one chunk's `delta`: first the
//! lead (thinking tokens, then a tool call's opening chunk), then the answer
//! tokens. The streamed answer walks that list with its pacing and faults, and
//! the non-streaming answer folds the same list into one message, so both
//! always say the same thing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::answer;
use super::faults::{AnswerKind, Behaviour, Fault, ReasoningForm};
use super::request::ChatRequest;
use super::MockConfig;

/// Where the answer's parts come from.
enum Script {
    /// Deterministic words from the seed.
    Words,
    /// `@<µs> ` stamps, made when sent.
    Stamped,
    /// The last user message's tokens.
    Echo(Vec<String>),
    /// One function call: its opening chunk leads, the fragments are the answer.
    ToolCall {
        id: String,
        name: String,
        fragments: Vec<String>,
    },
    /// `think-split`: the whole content, pre-cut; the lead is every piece
    /// before the first one holding answer text.
    Split(Vec<String>),
}

/// Everything that decides one answer.
pub(super) struct Plan {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub behaviour: Behaviour,
    pub prompt_tokens: u32,
    pub include_usage: bool,
    pub finish_reason: &'static str,
    seed: u64,
    /// Thinking tokens (for the usage).
    reasoning_tokens: u32,
    /// Answer tokens (for the usage).
    answer_tokens: u32,
    /// Parts before the answer.
    lead: u32,
    /// Parts of the answer (after the request's limit).
    answer_parts: u32,
    script: Script,
}

impl Plan {
    /// The plan of request `number` to a mock configured with `config`.
    pub(super) fn new(config: &MockConfig, number: u64, request: &ChatRequest) -> Plan {
        let behaviour = Behaviour::from_model(&request.model);
        let seed = answer::seed(&request.last_user_message);
        let limit = |natural: usize| {
            let natural = u32::try_from(natural).unwrap_or(u32::MAX);
            let parts = request.max_tokens.map_or(natural, |max| max.min(natural));
            (parts, parts < natural)
        };
        let (mut script, (answer_tokens, cut)) = match behaviour.answer {
            AnswerKind::Words => (Script::Words, limit(config.answer_tokens as usize)),
            AnswerKind::Stamped => (Script::Stamped, limit(config.answer_tokens as usize)),
            AnswerKind::Echo => {
                let tokens = answer::echo_tokens(&request.last_user_message);
                let (parts, cut) = limit(tokens.len());
                let kept = tokens.iter().take(parts as usize).map(|t| (*t).to_owned());
                (Script::Echo(kept.collect()), (parts, cut))
            }
            AnswerKind::BigDelta(bytes) => {
                let mut delta = "é".repeat(bytes as usize / 2);
                if bytes % 2 == 1 {
                    delta.push('x');
                }
                (Script::Echo(vec![delta]), limit(1))
            }
            AnswerKind::ToolCall => {
                let arguments = answer::tool_call_arguments(&request.last_user_message);
                let mut fragments = answer::pieces(&arguments, &[]);
                let (parts, cut) = limit(fragments.len());
                fragments.truncate(parts as usize);
                let name = request.tool_name.clone();
                let script = Script::ToolCall {
                    id: answer::tool_call_id(seed),
                    name: name.unwrap_or_else(|| answer::DEFAULT_TOOL_NAME.to_owned()),
                    fragments,
                };
                (script, (parts, cut))
            }
        };
        let reasoning_tokens = behaviour.reasoning.map_or(0, |r| r.tokens);
        let mut lead = reasoning_tokens + u32::from(matches!(script, Script::ToolCall { .. }));
        let mut answer_parts = answer_tokens;
        if behaviour.reasoning.map(|r| r.form) == Some(ReasoningForm::ThinkSplit) {
            // The parser refuses `think-split` with stamps or tool calls, so
            // the answer's text is known here.
            let thinking = answer::reasoning_text(&request.last_user_message, reasoning_tokens);
            let answer: String = match &script {
                Script::Echo(tokens) => tokens.concat(),
                _ => (0..answer_tokens)
                    .map(|index| answer::token(seed, index))
                    .collect(),
            };
            let content = answer::think_content(&thinking, &answer);
            let pieces = answer::think_split(&content, thinking.chars().count());
            // The answer starts after `<think>`, the thinking and `</think>`.
            let answer_start = content.chars().count() - answer.chars().count();
            let mut end = 0;
            let before_answer = pieces
                .iter()
                .take_while(|piece| {
                    end += piece.chars().count();
                    end <= answer_start
                })
                .count();
            lead = u32::try_from(before_answer).unwrap_or(u32::MAX);
            answer_parts = u32::try_from(pieces.len() - before_answer).unwrap_or(u32::MAX);
            script = Script::Split(pieces);
        }
        let finish_reason = if cut {
            "length"
        } else if matches!(script, Script::ToolCall { .. }) {
            "tool_calls"
        } else {
            "stop"
        };
        Plan {
            id: format!("chatcmpl-mock-{number}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            model: request.model.clone(),
            behaviour,
            prompt_tokens: request.prompt_tokens,
            include_usage: request.include_usage,
            finish_reason,
            seed,
            reasoning_tokens,
            answer_tokens,
            lead,
            answer_parts,
            script,
        }
    }

    /// Parts before the answer (thinking, a tool call's opening chunk).
    pub(super) fn lead(&self) -> u32 {
        self.lead
    }

    /// Every part: the lead, then the answer.
    pub(super) fn parts(&self) -> u32 {
        self.lead.saturating_add(self.answer_parts)
    }

    /// The part a fault after `n` answer tokens strikes before.
    pub(super) fn fault_part(&self, n: u32) -> u32 {
        self.lead.saturating_add(n.min(self.answer_parts))
    }

    /// Whether part `index` is thinking (counted as a reasoning token sent).
    pub(super) fn is_reasoning(&self, index: u32) -> bool {
        match self.script {
            Script::Split(_) => index < self.lead,
            _ => index < self.reasoning_tokens,
        }
    }

    /// The role chunk's delta, and the first part still to send after it:
    /// with a tool call and no thinking, the call's opening chunk is the role
    /// chunk, as OpenAI sends it.
    pub(super) fn role_delta(&self) -> (Value, u32) {
        if self.lead == 1 && matches!(self.script, Script::ToolCall { .. }) {
            let mut delta = self.delta(0);
            delta["role"] = "assistant".into();
            delta["content"] = Value::Null;
            delta["refusal"] = Value::Null;
            return (delta, 1);
        }
        (json!({ "role": "assistant", "content": "" }), 0)
    }

    /// The `delta` of part `index` (< [`parts`](Plan::parts)).
    pub(super) fn delta(&self, index: u32) -> Value {
        let at =
            |list: &[String], index: u32| list.get(index as usize).cloned().unwrap_or_default();
        if let Script::Split(pieces) = &self.script {
            return json!({ "content": at(pieces, index) });
        }
        if index < self.reasoning_tokens {
            let word = answer::reasoning_token(self.seed, index);
            let form = self.behaviour.reasoning.map(|r| r.form);
            return match form.and_then(ReasoningForm::field) {
                Some(field) => {
                    let mut delta = json!({});
                    delta[field] = word.into();
                    delta
                }
                None => {
                    let open = if index == 0 { "<think>" } else { "" };
                    let last = index + 1 == self.reasoning_tokens;
                    let close = if last { "</think>" } else { "" };
                    json!({ "content": format!("{open}{word}{close}") })
                }
            };
        }
        let answer = index.saturating_sub(self.lead);
        match &self.script {
            Script::Words => json!({ "content": answer::token(self.seed, answer) }),
            Script::Stamped => json!({ "content": answer::stamped_token(super::now_micros()) }),
            Script::Echo(tokens) => json!({ "content": at(tokens, answer) }),
            Script::ToolCall { id, name, .. } if index < self.lead => json!({
                "tool_calls": [{
                    "index": 0,
                    "id": id,
                    "type": "function",
                    "function": { "name": name, "arguments": "" },
                }],
            }),
            Script::ToolCall { fragments, .. } => json!({
                "tool_calls": [{ "index": 0, "function": { "arguments": at(fragments, answer) } }],
            }),
            Script::Split(pieces) => json!({ "content": at(pieces, index) }),
        }
    }

    /// When part `index` is due, from the first part (None: not paced).
    pub(super) fn due(&self, index: u32, tokens_per_second: f64) -> Option<Duration> {
        let slow = self.behaviour.reasoning.and_then(|r| r.slow);
        let Some(slow) = slow else {
            return token_offset(tokens_per_second, index);
        };
        if index < self.lead {
            return Some(Duration::from_millis(
                slow.interval_ms.saturating_mul(u64::from(index)),
            ));
        }
        let answer = token_offset(tokens_per_second, index - self.lead).unwrap_or_default();
        Some(Duration::from_millis(slow.total_ms) + answer)
    }

    /// How long the whole answer takes (the non-streaming answer's wait).
    pub(super) fn duration(&self, tokens_per_second: f64) -> Duration {
        let first = match self.behaviour.fault {
            Fault::SlowFirst(ms) => Duration::from_millis(ms),
            _ => Duration::ZERO,
        };
        let last = self.parts().saturating_sub(1);
        first + self.due(last, tokens_per_second).unwrap_or_default()
    }

    /// The usage object; with thinking, `completion_tokens` includes it and
    /// `completion_tokens_details.reasoning_tokens` gives it.
    pub(super) fn usage(&self) -> Value {
        let completion = u64::from(self.reasoning_tokens) + u64::from(self.answer_tokens);
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": u64::from(self.prompt_tokens) + completion,
        });
        if self.behaviour.reasoning.is_some() {
            usage["completion_tokens_details"] =
                json!({ "reasoning_tokens": self.reasoning_tokens });
        }
        usage
    }

    /// The usage chunk is sent (asked for, and not left out on purpose).
    pub(super) fn sends_usage(&self) -> bool {
        self.include_usage && self.behaviour.fault != Fault::NoUsage
    }

    /// The non-streaming answer's `message`: every part's delta folded into one.
    pub(super) fn message(&self) -> Value {
        let (mut content, mut reasoning, mut arguments) =
            (String::new(), String::new(), String::new());
        let field = self
            .behaviour
            .reasoning
            .and_then(|r| r.form.field())
            .unwrap_or("reasoning_content");
        for index in 0..self.parts() {
            let delta = self.delta(index);
            let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
            content.push_str(&text(&delta["content"]));
            reasoning.push_str(&text(&delta[field]));
            arguments.push_str(&text(&delta["tool_calls"][0]["function"]["arguments"]));
        }
        let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
        if self
            .behaviour
            .reasoning
            .is_some_and(|r| r.form.field().is_some())
        {
            message[field] = reasoning.into();
        }
        if let Script::ToolCall { id, name, .. } = &self.script {
            message["content"] = Value::Null;
            message["tool_calls"] = json!([{
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": arguments },
            }]);
        }
        message
    }
}

/// Delay before token `index` when pacing at `tokens_per_second` (None: no pacing).
pub(super) fn token_offset(tokens_per_second: f64, index: u32) -> Option<Duration> {
    if !tokens_per_second.is_finite() || tokens_per_second <= 0.0 {
        return None;
    }
    let day = Duration::from_secs(86_400);
    Some(
        Duration::try_from_secs_f64(f64::from(index) / tokens_per_second)
            .unwrap_or(day)
            .min(day),
    )
}
