//! Frames sent by the server, and the HTTP error body.
//!
//! `delta` and `reasoning` are the hot path: the server encodes one per token
//! or batch of tokens, so [`encode_delta`] and [`encode_reasoning`] write
//! straight to a `String` from borrowed parts.

use serde::{Deserialize, Serialize};

use crate::codes::{ErrorCode, FinishReason};
use crate::ids::{ClientMessageId, ConversationId, MessageId, SessionId, StreamId, UserId};

/// A frame from server to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Ready {
        session_id: SessionId,
        user: UserId,
        protocol: u32,
        limits: Limits,
    },
    Ack {
        id: ClientMessageId,
        conversation_id: ConversationId,
        message_id: MessageId,
        stream_id: StreamId,
    },
    /// What a reasoning model writes before (or between) its answer; its own
    /// gap-free `seq`, never part of `delta` text.
    Reasoning {
        stream_id: StreamId,
        seq: u64,
        text: String,
    },
    Delta {
        stream_id: StreamId,
        seq: u64,
        text: String,
    },
    Done {
        stream_id: StreamId,
        message_id: MessageId,
        finish_reason: FinishReason,
        usage: Usage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// The `send.id` of a refused `send`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<ClientMessageId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// The stream a refused `cancel` or `resume` named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_id: Option<StreamId>,
    },
    /// Another connection of the same user started a stream.
    Started {
        conversation_id: ConversationId,
        stream_id: StreamId,
        message_id: MessageId,
        bot: String,
        user_message: StartedMessage,
    },
    Pong {
        ts: i64,
    },
}

/// `started.user_message`: the message that started the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct StartedMessage {
    pub id: MessageId,
    pub content: String,
    /// RFC 3339.
    pub created_at: String,
}

impl ServerFrame {
    /// An `error` frame without a `send.id`, stream or retry hint.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerFrame {
        ServerFrame::Error {
            code,
            message: message.into(),
            id: None,
            retry_after_ms: None,
            stream_id: None,
        }
    }

    /// An `error` frame answering a `cancel` or `resume` of `stream_id`.
    pub fn stream_error(
        code: ErrorCode,
        message: impl Into<String>,
        stream_id: StreamId,
    ) -> ServerFrame {
        ServerFrame::Error {
            code,
            message: message.into(),
            id: None,
            retry_after_ms: None,
            stream_id: Some(stream_id),
        }
    }

    /// The frame as JSON text.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: all keys are strings and no
        // value has a fallible `Serialize`.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }

    /// The wire `type` of this frame.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Ready { .. } => "ready",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Reasoning { .. } => "reasoning",
            ServerFrame::Delta { .. } => "delta",
            ServerFrame::Done { .. } => "done",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Started { .. } => "started",
            ServerFrame::Pong { .. } => "pong",
        }
    }
}

/// The two kinds of text a stream carries, each with its own `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextKind {
    /// The answer: `delta` frames.
    Answer,
    /// The model's thinking: `reasoning` frames.
    Reasoning,
}

impl TextKind {
    /// The frame `type` this text travels in.
    pub fn frame_type(self) -> &'static str {
        match self {
            TextKind::Answer => "delta",
            TextKind::Reasoning => "reasoning",
        }
    }
}

/// Encodes a `delta` or `reasoning` frame from borrowed parts: the hot path,
/// one call per frame, without building an owned [`ServerFrame`] first.
/// Produces exactly what the owned frame's `encode` produces (pinned by a
/// test).
pub fn encode_text(kind: TextKind, stream_id: &str, seq: u64, text: &str) -> String {
    #[derive(Serialize)]
    struct TextRef<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        stream_id: &'a str,
        seq: u64,
        text: &'a str,
    }
    let frame = TextRef {
        kind: kind.frame_type(),
        stream_id,
        seq,
        text,
    };
    serde_json::to_string(&frame).unwrap_or_else(|_| String::from("{\"type\":\"delta\"}"))
}

/// [`encode_text`] for a `delta`.
pub fn encode_delta(stream_id: &str, seq: u64, text: &str) -> String {
    encode_text(TextKind::Answer, stream_id, seq, text)
}

/// [`encode_text`] for a `reasoning` frame.
pub fn encode_reasoning(stream_id: &str, seq: u64, text: &str) -> String {
    encode_text(TextKind::Reasoning, stream_id, seq, text)
}

/// `ready.limits`: what this user may do, as known when the session starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Limits {
    pub max_message_chars: u32,
    pub messages_per_minute: u32,
    pub tokens_remaining: u64,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Tokens of the model's thinking, when the upstream reports them
    /// (counted within `completion_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub reasoning_tokens: Option<u64>,
    /// Counted by Skald (about four characters a token) because the
    /// upstream reported no usage; absent when the counts are the
    /// upstream's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(test, ts(optional, as = "Option<bool>"))]
    pub estimated: bool,
}

impl Usage {
    /// Prompt and completion tokens, as quotas count them.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// `{"code":…,"message":…}`, as in `done.error` and HTTP error bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// The body of every HTTP error: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct HttpError {
    pub error: ErrorBody,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn as_json(frame: &ServerFrame) -> Value {
        serde_json::from_str(&frame.encode()).unwrap()
    }

    #[test]
    fn pins_the_json_of_every_frame() {
        let ready = ServerFrame::Ready {
            session_id: "s1".into(),
            user: "u-42".into(),
            protocol: 1,
            limits: Limits {
                max_message_chars: 4000,
                messages_per_minute: 50,
                tokens_remaining: 99000,
            },
        };
        assert_eq!(
            as_json(&ready),
            json!({"type":"ready","session_id":"s1","user":"u-42","protocol":1,
                   "limits":{"max_message_chars":4000,"messages_per_minute":50,"tokens_remaining":99000}})
        );
        let ack = ServerFrame::Ack {
            id: "c-1".into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
            stream_id: "st".into(),
        };
        assert_eq!(
            as_json(&ack),
            json!({"type":"ack","id":"c-1","conversation_id":"c","message_id":"m","stream_id":"st"})
        );
        let delta = ServerFrame::Delta {
            stream_id: "st".into(),
            seq: 0,
            text: "Bon".into(),
        };
        assert_eq!(
            delta.encode(),
            r#"{"type":"delta","stream_id":"st","seq":0,"text":"Bon"}"#
        );
        let done = ServerFrame::Done {
            stream_id: "st".into(),
            message_id: "m".into(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 30,
                reasoning_tokens: None,
                estimated: false,
            },
            error: None,
        };
        assert_eq!(
            as_json(&done),
            json!({"type":"done","stream_id":"st","message_id":"m","finish_reason":"stop",
                   "usage":{"prompt_tokens":12,"completion_tokens":30}})
        );
        let failed = ServerFrame::Done {
            stream_id: "st".into(),
            message_id: "m".into(),
            finish_reason: FinishReason::Error,
            usage: Usage::default(),
            error: Some(ErrorBody {
                code: ErrorCode::UpstreamError,
                message: "boom".into(),
            }),
        };
        assert_eq!(
            as_json(&failed)["error"],
            json!({"code":"upstream_error","message":"boom"})
        );
        let error = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            id: Some("c-1".into()),
            retry_after_ms: Some(1200),
            stream_id: None,
        };
        assert_eq!(
            as_json(&error),
            json!({"type":"error","code":"rate_limited","message":"slow down","id":"c-1","retry_after_ms":1200})
        );
        assert_eq!(
            as_json(&ServerFrame::error(ErrorCode::Busy, "x")),
            json!({"type":"error","code":"busy","message":"x"})
        );
        assert_eq!(
            as_json(&ServerFrame::stream_error(
                ErrorCode::NotFound,
                "no",
                "st".into()
            )),
            json!({"type":"error","code":"not_found","message":"no","stream_id":"st"})
        );
        let reasoning = ServerFrame::Reasoning {
            stream_id: "st".into(),
            seq: 0,
            text: "The user greets me".into(),
        };
        assert_eq!(
            reasoning.encode(),
            r#"{"type":"reasoning","stream_id":"st","seq":0,"text":"The user greets me"}"#
        );
        let started = ServerFrame::Started {
            conversation_id: "c".into(),
            stream_id: "st".into(),
            message_id: "m".into(),
            bot: "default".into(),
            user_message: StartedMessage {
                id: "u".into(),
                content: "Bonjour".into(),
                created_at: "2026-12-02T10:00:00Z".into(),
            },
        };
        assert_eq!(
            as_json(&started),
            json!({"type":"started","conversation_id":"c","stream_id":"st","message_id":"m","bot":"default",
                   "user_message":{"id":"u","content":"Bonjour","created_at":"2026-12-02T10:00:00Z"}})
        );
        let with_reasoning = Usage {
            prompt_tokens: 1,
            completion_tokens: 9,
            reasoning_tokens: Some(4),
            estimated: false,
        };
        assert_eq!(
            serde_json::to_value(with_reasoning).unwrap(),
            json!({"prompt_tokens":1,"completion_tokens":9,"reasoning_tokens":4})
        );
        assert_eq!(
            ServerFrame::Pong { ts: 1732500000000 }.encode(),
            r#"{"type":"pong","ts":1732500000000}"#
        );
    }

    #[test]
    fn borrowed_text_encoding_matches_the_owned_frame() {
        for text in ["", "Bon", "quote \" and \\ and \n and é 🙂"] {
            let owned = ServerFrame::Delta {
                stream_id: "st-1".into(),
                seq: 41,
                text: text.into(),
            };
            assert_eq!(encode_delta("st-1", 41, text), owned.encode());
            let owned = ServerFrame::Reasoning {
                stream_id: "st-1".into(),
                seq: 41,
                text: text.into(),
            };
            assert_eq!(encode_reasoning("st-1", 41, text), owned.encode());
        }
    }

    #[test]
    fn every_code_spells_as_protocol_md() {
        let spelled: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            spelled,
            [
                "unauthorized",
                "invalid_request",
                "message_too_long",
                "rate_limited",
                "quota_exceeded",
                "busy",
                "not_found",
                "upstream_error",
                "upstream_timeout",
                "unavailable",
                "internal",
                "forbidden"
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
        for reason in <FinishReason as strum::VariantArray>::VARIANTS {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
            assert_eq!(reason.as_str().parse::<FinishReason>(), Ok(*reason));
        }
        assert!("STOP".parse::<FinishReason>().is_err());
    }

    #[test]
    fn close_codes_round_trip() {
        for (code, n) in [
            (crate::CloseCode::Normal, 1000),
            (crate::CloseCode::GoingAway, 1001),
            (crate::CloseCode::ProtocolViolation, 1002),
            (crate::CloseCode::InvalidPayload, 1007),
            (crate::CloseCode::TooBig, 1009),
            (crate::CloseCode::Internal, 1011),
            (crate::CloseCode::ProtocolError, 4400),
            (crate::CloseCode::Unauthorized, 4401),
            (crate::CloseCode::AuthTimeout, 4408),
            (crate::CloseCode::TooManyConnections, 4429),
        ] {
            assert_eq!(code.as_u16(), n);
            assert_eq!(crate::CloseCode::from_u16(n), Some(code));
        }
        assert_eq!(crate::CloseCode::from_u16(1003), None);
    }

    #[test]
    fn server_frames_decode_with_unknown_fields() {
        let frame: ServerFrame =
            serde_json::from_str(r#"{"type":"pong","ts":5,"server_time":7}"#).unwrap();
        assert_eq!(frame, ServerFrame::Pong { ts: 5 });
        let http: HttpError =
            serde_json::from_str(r#"{"error":{"code":"not_found","message":"no"}}"#).unwrap();
        assert_eq!(http.error.code, ErrorCode::NotFound);
    }
}
