//! Frames sent by clients, and the one decoder that turns text into them.
//!
//! Decoding is the first thing the server does with untrusted bytes, so it
//! never panics and says precisely what was wrong: malformed JSON, an unknown
//! `type`, or a missing or mistyped field. Limits that depend on
//! configuration (text length per bot) are the server's job; limits fixed by
//! the protocol (`send.id` length, `after_seq >= -1`) are checked here.

use serde::{Deserialize, Serialize};

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
        id: String,
        #[serde(default)]
        #[cfg_attr(test, ts(optional = nullable))]
        conversation_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bot: Option<String>,
        text: String,
    },
    Cancel {
        stream_id: String,
    },
    Resume {
        stream_id: String,
        after_seq: i64,
    },
    Ping {
        ts: i64,
    },
}

/// Why a client frame was refused. Every variant maps to `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    Malformed(String),
    /// No string `type` field.
    MissingType,
    /// A `type` this protocol version does not know.
    UnknownType(String),
    /// A known `type` with a missing or wrongly typed field, or a value out
    /// of the protocol's range.
    InvalidField(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(e) => write!(f, "malformed JSON: {e}"),
            DecodeError::MissingType => f.write_str("frame has no string field \"type\""),
            DecodeError::UnknownType(t) => write!(f, "unknown frame type {t:?}"),
            DecodeError::InvalidField(e) => write!(f, "invalid frame: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

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
        let frame: ClientFrame =
            serde_json::from_value(value).map_err(|e| DecodeError::InvalidField(e.to_string()))?;
        frame.check()?;
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

    fn check(&self) -> Result<(), DecodeError> {
        match self {
            ClientFrame::Send { id, .. } => {
                let n = id.chars().count();
                if n == 0 || n > MAX_CLIENT_ID_CHARS {
                    return Err(DecodeError::InvalidField(format!(
                        "send.id must be 1 to {MAX_CLIENT_ID_CHARS} characters, got {n}"
                    )));
                }
            }
            ClientFrame::Resume { after_seq, .. } if *after_seq < -1 => {
                return Err(DecodeError::InvalidField(
                    "resume.after_seq must be -1 or more".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }
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
                after_seq: 12
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
            Err(DecodeError::InvalidField(m)) if m.contains("text")
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"ping","ts":"soon"}"#),
            Err(DecodeError::InvalidField(_))
        ));
    }

    #[test]
    fn enforces_protocol_ranges() {
        let long_id = "x".repeat(MAX_CLIENT_ID_CHARS + 1);
        let frame = format!(r#"{{"type":"send","id":"{long_id}","text":"x"}}"#);
        assert!(matches!(
            ClientFrame::decode(&frame),
            Err(DecodeError::InvalidField(_))
        ));
        let max_id = "é".repeat(MAX_CLIENT_ID_CHARS);
        let frame = format!(r#"{{"type":"send","id":"{max_id}","text":"x"}}"#);
        assert!(ClientFrame::decode(&frame).is_ok());
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"send","id":"","text":"x"}"#),
            Err(DecodeError::InvalidField(_))
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"resume","stream_id":"s","after_seq":-2}"#),
            Err(DecodeError::InvalidField(_))
        ));
        assert!(ClientFrame::decode(r#"{"type":"resume","stream_id":"s","after_seq":-1}"#).is_ok());
    }

    #[test]
    fn unknown_type_in_error_is_truncated() {
        let long = "t".repeat(1000);
        let err = ClientFrame::decode(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        assert_eq!(err, DecodeError::UnknownType("t".repeat(32)));
    }
}
