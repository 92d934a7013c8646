//! Skald wire protocol, version 1: the one definition of every frame, error
//! code, close code, id and HTTP body in `PROTOCOL.md`.
//!
//! The server, the load-test harness and (through generated types) the
//! TypeScript client all speak through these types, so the JSON they produce
//! is pinned by tests here. The crate depends on nothing of Skald's: it is the
//! bottom of the dependency graph.
//!
//! Rules that the serde attributes encode:
//! - frames are JSON objects tagged by a string field `type`;
//! - unknown fields are ignored (the server may add optional fields);
//! - an unknown `type` is rejected ([`DecodeError::UnknownType`]);
//! - optional server fields are omitted rather than sent as `null`, except
//!   `ack.conversation_id`-style ids, which are always present.

mod client;
mod codes;
pub mod http;
mod ids;
mod server;
#[cfg(test)]
mod typescript;

pub use client::{ClientFrame, DecodeError, MAX_CLIENT_ID_CHARS};
pub use codes::{CloseCode, ErrorCode, FinishReason};
pub use ids::{ClientMessageId, ConversationId, MessageId, SessionId, StreamId, UserId};
pub use server::{
    encode_delta, encode_reasoning, encode_text, ErrorBody, HttpError, Limits, ServerFrame,
    StartedMessage, TextKind, Usage,
};

/// The protocol version carried in `ready.protocol`.
pub const PROTOCOL_VERSION: u32 = 1;
