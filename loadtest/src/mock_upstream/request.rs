//! The parts of an OpenAI chat-completions request the mock looks at.
//!
//! The mock reads the request as loose JSON rather than a full schema so that
//! any client's request (extra fields, content as a string or as parts) is
//! accepted, while what matters to the answer (model, streaming, usage,
//! token limit, the messages) is checked and extracted in one place.

use serde_json::{json, Value};

/// What the mock needs from one chat request.
#[derive(Debug, PartialEq)]
pub(super) struct ChatRequest {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u32>,
    /// Whitespace-separated words over all message contents.
    pub prompt_tokens: u32,
    /// Text of the last message whose role is `user` ("" if none).
    pub last_user_message: String,
    /// `tools[0].function.name`, the tool the `tool-call` mode calls.
    pub tool_name: Option<String>,
}

impl ChatRequest {
    /// Extracts the request, or says why it is not a valid chat request.
    pub(super) fn from_json(body: &Value) -> Result<ChatRequest, String> {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .ok_or("`model` must be a string")?
            .to_owned();
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("`messages` must be an array")?;
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let max_tokens = body
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| body.get("max_tokens").and_then(Value::as_u64))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let prompt_tokens = messages
            .iter()
            .map(|message| content_text(message).split_whitespace().count())
            .sum::<usize>();
        let last_user_message = messages
            .iter()
            .rev()
            .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
            .map(content_text)
            .unwrap_or_default();
        let tool_name = body
            .pointer("/tools/0/function/name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            max_tokens,
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            last_user_message,
            tool_name,
        })
    }
}

/// A message's text: `content` as a string, or its text parts joined by spaces.
fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// An OpenAI-style error body.
pub(super) fn error_body(message: &str, kind: &str) -> Value {
    error_body_with_code(message, kind, None)
}

/// An OpenAI-style error body with a `code` (e.g. `rate_limit_exceeded`).
pub(super) fn error_body_with_code(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_fields() {
        let body = json!({
            "model": "m",
            "stream": true,
            "stream_options": { "include_usage": true },
            "max_tokens": 9,
            "max_completion_tokens": 5,
            "tools": [{ "type": "function", "function": { "name": "search", "parameters": {} } }],
            "messages": [
                { "role": "system", "content": "be brief" },
                { "role": "user", "content": "first question" },
                { "role": "assistant", "content": "an answer" },
                { "role": "user", "content": [{ "type": "text", "text": "second" }, { "type": "text", "text": "one" }] },
            ],
        });
        let request = ChatRequest::from_json(&body).unwrap();
        assert_eq!(
            request,
            ChatRequest {
                model: "m".into(),
                stream: true,
                include_usage: true,
                max_tokens: Some(5),
                prompt_tokens: 8,
                last_user_message: "second one".into(),
                tool_name: Some("search".into()),
            }
        );
    }

    #[test]
    fn defaults_and_rejections() {
        let request =
            ChatRequest::from_json(&json!({ "model": "m", "messages": [], "max_tokens": 3 }))
                .unwrap();
        assert!(!request.stream && !request.include_usage);
        assert_eq!(request.max_tokens, Some(3));
        assert_eq!(request.last_user_message, "");
        assert_eq!(request.tool_name, None);
        assert!(ChatRequest::from_json(&json!({ "messages": [] })).is_err());
        assert!(ChatRequest::from_json(&json!({ "model": "m" })).is_err());
        assert!(ChatRequest::from_json(&json!([1, 2])).is_err());
    }
}
