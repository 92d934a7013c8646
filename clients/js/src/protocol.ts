// Skald wire protocol v1 (PROTOCOL.md): generated from the Rust crate
// skald-protocol by ts-rs. Do not edit: change the Rust types, then run
// `SKALD_BLESS=1 cargo test -p skald-protocol typescript`.

/**
 * A frame from client to server.
 */
export type ClientFrame = { "type": "hello", token?: string | null, client?: string | null, } | { "type": "send", id: string, conversation_id?: string | null, bot?: string | null, text: string, } | { "type": "cancel", stream_id: string, } | { "type": "resume", stream_id: string, after_seq: number, } | { "type": "ping", ts: number, };

/**
 * A frame from server to client.
 */
export type ServerFrame = { "type": "ready", session_id: string, user: string, protocol: number, limits: Limits, } | { "type": "ack", id: string, conversation_id: string, message_id: string, stream_id: string, } | { "type": "delta", stream_id: string, seq: number, text: string, } | { "type": "done", stream_id: string, message_id: string, finish_reason: FinishReason, usage: Usage, error?: ErrorBody | null, } | { "type": "error", code: ErrorCode, message: string, id?: string | null, retry_after_ms?: number | null, } | { "type": "pong", ts: number, };

/**
 * `ready.limits`: what this user may do, as known when the session starts.
 */
export type Limits = { max_message_chars: number, messages_per_minute: number, tokens_remaining: number, };

/**
 * Token counts of one generation.
 */
export type Usage = { prompt_tokens: number, completion_tokens: number, };

/**
 * `{"code":…,"message":…}`, as in `done.error` and HTTP error bodies.
 */
export type ErrorBody = { code: ErrorCode, message: string, };

/**
 * The body of every HTTP error: `{"error":{"code":…,"message":…}}`.
 */
export type HttpError = { error: ErrorBody, };

/**
 * The `code` of an `error` frame (and of HTTP error bodies).
 */
export type ErrorCode = "unauthorized" | "invalid_request" | "message_too_long" | "rate_limited" | "quota_exceeded" | "busy" | "not_found" | "upstream_error" | "upstream_timeout" | "unavailable" | "internal";

/**
 * Why a stream ended (`done.finish_reason`).
 */
export type FinishReason = "stop" | "length" | "cancelled" | "error";

/** The protocol version carried in `ready.protocol`. */
export const PROTOCOL_VERSION = 1;

/** `send.id` is 1 to this many characters. */
export const MAX_CLIENT_ID_CHARS = 64;

/** Every error code, in PROTOCOL.md's order. */
export const ERROR_CODES: readonly ErrorCode[] = [
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
];

/** The HTTP status PROTOCOL.md pairs with each error code. */
export const ERROR_HTTP_STATUS: { readonly [code in ErrorCode]: number } = {
  unauthorized: 401,
  invalid_request: 400,
  message_too_long: 413,
  rate_limited: 429,
  quota_exceeded: 402,
  busy: 429,
  not_found: 404,
  upstream_error: 502,
  upstream_timeout: 504,
  unavailable: 503,
  internal: 500,
};

/** WebSocket close codes used by Skald. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  TooBig: 1009,
  Internal: 1011,
  ProtocolError: 4400,
  Unauthorized: 4401,
  AuthTimeout: 4408,
  TooManyConnections: 4429,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
