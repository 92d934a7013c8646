//! What one SSE event of an OpenAI chat-completions stream means to a client.
//!
//! The baseline relay and the `openai` load generator both read such streams;
//! this is their one reading of an event (framing itself is
//! `eventsource-stream`'s), so the two cannot disagree on what counts as a
//! token, the end, or an error inside the 200 stream.

use eventsource_stream::Event;
use serde_json::Value;

/// One event of a `chat.completion.chunk` stream.
#[derive(Debug, PartialEq)]
pub enum StreamEvent {
    /// A chunk: `choices[0].delta.content` ("" when absent), whether the
    /// delta carried thinking (`reasoning_content` or `reasoning`), and the
    /// usage's `completion_tokens` when the chunk has a usage.
    Chunk {
        content: String,
        reasoning: bool,
        completion_tokens: Option<u64>,
    },
    /// `data: [DONE]`.
    Done,
    /// An error inside the 200 stream: `event: error`, or a chunk with an
    /// `error` object (the two forms upstreams use).
    Error(String),
    /// Anything else (not JSON: comments, keep-alives).
    Other,
}

/// Reads one SSE event.
pub fn classify(event: &Event) -> StreamEvent {
    let data = event.data.trim();
    if data == "[DONE]" {
        return StreamEvent::Done;
    }
    let chunk: Option<Value> = serde_json::from_str(data).ok();
    if event.event == "error" {
        let message = chunk
            .as_ref()
            .and_then(error_message)
            .unwrap_or_else(|| data.to_owned());
        return StreamEvent::Error(message);
    }
    let Some(chunk) = chunk else {
        return StreamEvent::Other;
    };
    if let Some(message) = error_message(&chunk) {
        return StreamEvent::Error(message);
    }
    let delta = &chunk["choices"][0]["delta"];
    let thinking = |field: &str| delta[field].as_str().is_some_and(|text| !text.is_empty());
    StreamEvent::Chunk {
        content: delta["content"].as_str().unwrap_or("").to_owned(),
        reasoning: thinking("reasoning_content") || thinking("reasoning"),
        completion_tokens: chunk["usage"]["completion_tokens"].as_u64(),
    }
}

/// `error.message` (or the whole `error`) of an OpenAI error object.
pub fn error_message(value: &Value) -> Option<String> {
    let error = value.get("error")?;
    Some(
        error["message"]
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: &str) -> Event {
        Event {
            event: kind.to_owned(),
            data: data.to_owned(),
            ..Event::default()
        }
    }

    fn chunk(content: &str, reasoning: bool, completion_tokens: Option<u64>) -> StreamEvent {
        StreamEvent::Chunk {
            content: content.to_owned(),
            reasoning,
            completion_tokens,
        }
    }

    #[test]
    fn classifies_chunks_done_and_errors() {
        let data = r#"{"choices":[{"index":0,"delta":{"content":"lorem "}}]}"#;
        assert_eq!(
            classify(&event("message", data)),
            chunk("lorem ", false, None)
        );
        let role = r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(classify(&event("message", role)), chunk("", false, None));
        for field in ["reasoning_content", "reasoning"] {
            let data = format!(r#"{{"choices":[{{"delta":{{"{field}":"hm"}}}}]}}"#);
            assert_eq!(classify(&event("message", &data)), chunk("", true, None));
        }
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}"#;
        assert_eq!(
            classify(&event("message", usage)),
            chunk("", false, Some(9))
        );
        assert_eq!(classify(&event("message", "[DONE]")), StreamEvent::Done);
        assert_eq!(
            classify(&event("message", "keep-alive")),
            StreamEvent::Other
        );
        let error = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        for kind in ["message", "error"] {
            assert_eq!(
                classify(&event(kind, error)),
                StreamEvent::Error("overloaded".into())
            );
        }
        assert_eq!(
            classify(&event("error", "not json")),
            StreamEvent::Error("not json".into())
        );
    }
}
