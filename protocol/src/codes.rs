//! Error codes, close codes and finish reasons: closed sets of values whose
//! spelling on the wire is fixed by PROTOCOL.md.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame (and of HTTP error bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
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
}

impl ErrorCode {
    /// Every code, in PROTOCOL.md's order (for tables, metrics and tests).
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Unauthorized,
        ErrorCode::InvalidRequest,
        ErrorCode::MessageTooLong,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
        ErrorCode::Busy,
        ErrorCode::NotFound,
        ErrorCode::UpstreamError,
        ErrorCode::UpstreamTimeout,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The wire spelling, e.g. `"rate_limited"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MessageTooLong => "message_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::Busy => "busy",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
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
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes used by Skald.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    GoingAway = 1001,
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
        [
            CloseCode::Normal,
            CloseCode::GoingAway,
            CloseCode::TooBig,
            CloseCode::Internal,
            CloseCode::ProtocolError,
            CloseCode::Unauthorized,
            CloseCode::AuthTimeout,
            CloseCode::TooManyConnections,
        ]
        .into_iter()
        .find(|c| c.as_u16() == code)
    }
}

/// Why a stream ended (`done.finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    Cancelled,
    Error,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }
}
