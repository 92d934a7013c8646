//! Frames sent by clients, and the one decoder that turns text into them.
//!
//! Decoding is the first thing the server does with untrusted bytes, so it
//! never panics and says precisely what was wrong: malformed JSON, an unknown
//! `type`, or a missing or mistyped field. Limits that depend on
//! configuration (text length per bot) are the server's job; limits fixed by
//! the protocol (`send.id` length, `after_seq >= -1`) are checked here. A
//! refused frame keeps what the answer needs to name it: the `id` of a
//! `send`, the `stream_id` of a `cancel` or `resume` (PROTOCOL.md: every
//! refused `send` gets its `id`).

use serde::{Deserialize, Serialize};

use crate::ids::{ClientMessageId, ConversationId, StreamId};

/// `send.id` is 1 to 64 characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// A frame from client to server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    Send {
        id: ClientMessageId,
        #[serde(default)]
        #[cfg_attr(test, ts(optional = nullable))]
        conversation_id: Option<ConversationId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bot: Option<String>,
        text: String,
    },
    Cancel {
        stream_id: StreamId,
    },
    Resume {
        stream_id: StreamId,
        after_seq: i64,
        /// The last `reasoning` seq seen; absent means -1 (replay all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        after_reasoning_seq: Option<i64>,
    },
    Ping {
        ts: i64,
    },
}

/// Why a client frame was refused. Every variant maps to `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// No string `type` field.
    #[error("frame has no string field \"type\"")]
    MissingType,
    /// A `type` this protocol version does not know.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A known `type` with a missing or wrongly typed field, or a value out
    /// of the protocol's range.
    #[error("invalid frame: {message}")]
    InvalidField {
        message: String,
        /// The frame's `id`, when it is a `send` with a usable one.
        send_id: Option<ClientMessageId>,
        /// The frame's `stream_id`, when it is a `cancel` or `resume` with
        /// a usable one.
        stream_id: Option<StreamId>,
    },
}

const KNOWN_TYPES: [&str; 5] = ["hello", "send", "cancel", "resume", "ping"];

impl ClientFrame {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<ClientFrame, DecodeError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(DecodeError::Malformed(
                "a frame must be a JSON object".into(),
            ));
        };
        let Some(kind) = object.get("type").and_then(|t| t.as_str()) else {
            return Err(DecodeError::MissingType);
        };
        if !KNOWN_TYPES.contains(&kind) {
            return Err(DecodeError::UnknownType(truncate(kind, 32)));
        }
        // What a refusal must carry, read before the frame is consumed: a
        // usable `send.id` (within the protocol's length) and `stream_id`.
        let text_field = |name: &str| object.get(name).and_then(|v| v.as_str());
        let send_id = (kind == "send")
            .then(|| text_field("id"))
            .flatten()
            .filter(|id| valid_client_id(id))
            .map(ClientMessageId::from);
        let stream_id = matches!(kind, "cancel" | "resume")
            .then(|| text_field("stream_id"))
            .flatten()
            .filter(|id| id.chars().count() <= MAX_CLIENT_ID_CHARS)
            .map(StreamId::from);
        let invalid = |message: String| DecodeError::InvalidField {
            message,
            send_id: send_id.clone(),
            stream_id: stream_id.clone(),
        };
        let frame: ClientFrame =
            serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        frame.check().map_err(invalid)?;
        Ok(frame)
    }

    /// The wire `type` of this frame.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Send { .. } => "send",
            ClientFrame::Cancel { .. } => "cancel",
            ClientFrame::Resume { .. } => "resume",
            ClientFrame::Ping { .. } => "ping",
        }
    }

    fn check(&self) -> Result<(), String> {
        match self {
            ClientFrame::Send { id, .. } if !valid_client_id(id) => Err(format!(
                "send.id must be 1 to {MAX_CLIENT_ID_CHARS} characters, got {}",
                id.chars().count()
            )),
            ClientFrame::Resume { after_seq, .. } if *after_seq < -1 => {
                Err("resume.after_seq must be -1 or more".into())
            }
            ClientFrame::Resume {
                after_reasoning_seq: Some(seq),
                ..
            } if *seq < -1 => Err("resume.after_reasoning_seq must be -1 or more".into()),
            _ => Ok(()),
        }
    }
}

impl DecodeError {
    /// The `send.id` the refusal answers, if any.
    pub fn send_id(&self) -> Option<&ClientMessageId> {
        match self {
            DecodeError::InvalidField { send_id, .. } => send_id.as_ref(),
            _ => None,
        }
    }

    /// The `stream_id` the refusal answers, if any.
    pub fn stream_id(&self) -> Option<&StreamId> {
        match self {
            DecodeError::InvalidField { stream_id, .. } => stream_id.as_ref(),
            _ => None,
        }
    }
}

fn valid_client_id(id: &str) -> bool {
    (1..=MAX_CLIENT_ID_CHARS).contains(&id.chars().count())
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_example_of_the_protocol() {
        assert_eq!(
            ClientFrame::decode(r#"{"type":"hello","token":"t","client":"skald-js/0.1.0"}"#),
            Ok(ClientFrame::Hello {
                token: Some("t".into()),
                client: Some("skald-js/0.1.0".into())
            })
        );
        assert_eq!(
            ClientFrame::decode(
                r#"{"type":"send","id":"c-1","conversation_id":null,"bot":"default","text":"Bonjour"}"#
            ),
            Ok(ClientFrame::Send {
                id: "c-1".into(),
                conversation_id: None,
                bot: Some("default".into()),
                text: "Bonjour".into()
            })
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"cancel","stream_id":"s"}"#),
            Ok(ClientFrame::Cancel {
                stream_id: "s".into()
            })
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"resume","stream_id":"s","after_seq":12}"#),
            Ok(ClientFrame::Resume {
                stream_id: "s".into(),
                after_seq: 12,
                after_reasoning_seq: None,
            })
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"ping","ts":1732500000000}"#),
            Ok(ClientFrame::Ping { ts: 1732500000000 })
        );
    }

    #[test]
    fn optional_fields_may_be_absent_and_unknown_fields_are_ignored() {
        assert_eq!(
            ClientFrame::decode(r#"{"type":"hello"}"#),
            Ok(ClientFrame::Hello {
                token: None,
                client: None
            })
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"send","id":"a","text":"x","extra":{"k":1}}"#),
            Ok(ClientFrame::Send {
                id: "a".into(),
                conversation_id: None,
                bot: None,
                text: "x".into()
            })
        );
    }

    #[test]
    fn classifies_bad_frames() {
        assert!(matches!(
            ClientFrame::decode("{not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            ClientFrame::decode("[1,2]"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            ClientFrame::decode(r#"{"text":"x"}"#),
            Err(DecodeError::MissingType)
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":7}"#),
            Err(DecodeError::MissingType)
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"subscribe"}"#),
            Err(DecodeError::UnknownType("subscribe".into()))
        );
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"send","id":"a"}"#),
            Err(DecodeError::InvalidField { message, .. }) if message.contains("text")
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"ping","ts":"soon"}"#),
            Err(DecodeError::InvalidField { .. })
        ));
    }

    #[test]
    fn a_refused_frame_keeps_the_ids_its_answer_names() {
        let err = ClientFrame::decode(r#"{"type":"send","id":"x","text":null}"#).unwrap_err();
        assert_eq!(err.send_id().map(|id| id.as_str()), Some("x"));
        let err = ClientFrame::decode(r#"{"type":"send","id":"x","text":7}"#).unwrap_err();
        assert_eq!(err.send_id().map(|id| id.as_str()), Some("x"));
        // An id the protocol refuses is not echoed.
        let long = "x".repeat(MAX_CLIENT_ID_CHARS + 1);
        let err = ClientFrame::decode(&format!(r#"{{"type":"send","id":"{long}","text":"t"}}"#))
            .unwrap_err();
        assert_eq!(err.send_id(), None);
        let err = ClientFrame::decode(r#"{"type":"send","id":5,"text":"t"}"#).unwrap_err();
        assert_eq!(err.send_id(), None);
        let err = ClientFrame::decode(r#"{"type":"resume","stream_id":"s","after_seq":"x"}"#)
            .unwrap_err();
        assert_eq!(err.stream_id().map(|id| id.as_str()), Some("s"));
        assert_eq!(err.send_id(), None);
        let err = ClientFrame::decode(r#"{"type":"cancel"}"#).unwrap_err();
        assert_eq!(err.stream_id(), None);
    }

    #[test]
    fn enforces_protocol_ranges() {
        let long_id = "x".repeat(MAX_CLIENT_ID_CHARS + 1);
        let frame = format!(r#"{{"type":"send","id":"{long_id}","text":"x"}}"#);
        assert!(matches!(
            ClientFrame::decode(&frame),
            Err(DecodeError::InvalidField { .. })
        ));
        let max_id = "é".repeat(MAX_CLIENT_ID_CHARS);
        let frame = format!(r#"{{"type":"send","id":"{max_id}","text":"x"}}"#);
        assert!(ClientFrame::decode(&frame).is_ok());
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"send","id":"","text":"x"}"#),
            Err(DecodeError::InvalidField { .. })
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"resume","stream_id":"s","after_seq":-2}"#),
            Err(DecodeError::InvalidField { .. })
        ));
        assert!(ClientFrame::decode(r#"{"type":"resume","stream_id":"s","after_seq":-1}"#).is_ok());
        assert!(matches!(
            ClientFrame::decode(
                r#"{"type":"resume","stream_id":"s","after_seq":1,"after_reasoning_seq":-2}"#
            ),
            Err(DecodeError::InvalidField { .. })
        ));
    }

    #[test]
    fn unknown_type_in_error_is_truncated() {
        let long = "t".repeat(1000);
        let err = ClientFrame::decode(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        assert_eq!(err, DecodeError::UnknownType("t".repeat(32)));
    }
}
