//! Error codes, close codes and finish reasons: closed sets of values whose
//! spelling on the wire is fixed by PROTOCOL.md. Their string tables come
//! from `strum` (one `snake_case` rule shared with serde), not from
//! hand-written `match`es that could drift from the serde names.

use serde::{Deserialize, Serialize};
use strum::{EnumString, FromRepr, IntoStaticStr, VariantArray};

/// The `code` of an `error` frame (and of HTTP error bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    InvalidRequest,
    MessageTooLong,
    RateLimited,
    QuotaExceeded,
    Busy,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    Unavailable,
    Internal,
    /// HTTP only: an admin route called without the `admin` role.
    Forbidden,
}

impl ErrorCode {
    /// Every code, in PROTOCOL.md's order (for tables, metrics and tests).
    pub const ALL: &'static [ErrorCode] = ErrorCode::VARIANTS;

    /// The wire spelling, e.g. `"rate_limited"`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status that PROTOCOL.md pairs with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::InvalidRequest => 400,
            ErrorCode::MessageTooLong => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::QuotaExceeded => 402,
            ErrorCode::Busy => 429,
            ErrorCode::NotFound => 404,
            ErrorCode::UpstreamError => 502,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::Forbidden => 403,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes used by Skald: PROTOCOL.md's, and the RFC 6455
/// codes for what a client's framing got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromRepr, VariantArray)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    GoingAway = 1001,
    /// RFC 6455: the client broke the WebSocket framing (unmasked frame,
    /// reserved bits or opcode, bad continuation, bad control frame).
    ProtocolViolation = 1002,
    /// RFC 6455: a text frame that is not UTF-8.
    InvalidPayload = 1007,
    TooBig = 1009,
    Internal = 1011,
    ProtocolError = 4400,
    Unauthorized = 4401,
    AuthTimeout = 4408,
    TooManyConnections = 4429,
}

impl CloseCode {
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn from_u16(code: u16) -> Option<CloseCode> {
        CloseCode::from_repr(code)
    }
}

/// Why a stream ended (`done.finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[derive(Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    Cancelled,
    Error,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
