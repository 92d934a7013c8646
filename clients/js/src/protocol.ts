// Skald wire protocol v1 (PROTOCOL.md): generated from the Rust crate
// skald-protocol by ts-rs. Do not edit: change the Rust types, then run
// `SKALD_BLESS=1 cargo test -p skald-protocol typescript`.

/**
 * A user: the `sub` of their token.
 */
export type UserId = string;

/**
 * A conversation of one user.
 */
export type ConversationId = string;

/**
 * A stored message (the user's, or the assistant's answer).
 */
export type MessageId = string;

/**
 * One generation: the unit of `delta` frames, `cancel` and `resume`.
 */
export type StreamId = string;

/**
 * One authenticated connection.
 */
export type SessionId = string;

/**
 * A client's `send.id`: its idempotency key within the user.
 */
export type ClientMessageId = string;

/**
 * A frame from client to server.
 */
export type ClientFrame = { "type": "hello", token?: string | null, client?: string | null, } | { "type": "send", id: ClientMessageId, conversation_id?: ConversationId | null, bot?: string | null, text: string, } | { "type": "cancel", stream_id: StreamId, } | { "type": "resume", stream_id: StreamId, after_seq: number, 
/**
 * The last `reasoning` seq seen; absent means -1 (replay all).
 */
after_reasoning_seq?: number, } | { "type": "ping", ts: number, };

/**
 * A frame from server to client.
 */
export type ServerFrame = { "type": "ready", session_id: SessionId, user: UserId, protocol: number, limits: Limits, } | { "type": "ack", id: ClientMessageId, conversation_id: ConversationId, message_id: MessageId, stream_id: StreamId, } | { "type": "reasoning", stream_id: StreamId, seq: number, text: string, } | { "type": "delta", stream_id: StreamId, seq: number, text: string, } | { "type": "done", stream_id: StreamId, message_id: MessageId, finish_reason: FinishReason, usage: Usage, error?: ErrorBody | null, } | { "type": "error", code: ErrorCode, message: string, 
/**
 * The `send.id` of a refused `send`.
 */
id?: ClientMessageId | null, retry_after_ms?: number | null, 
/**
 * The stream a refused `cancel` or `resume` named.
 */
stream_id?: StreamId | null, } | { "type": "started", conversation_id: ConversationId, stream_id: StreamId, message_id: MessageId, bot: string, user_message: StartedMessage, } | { "type": "pong", ts: number, };

/**
 * `started.user_message`: the message that started the stream.
 */
export type StartedMessage = { id: MessageId, content: string, 
/**
 * RFC 3339.
 */
created_at: string, };

/**
 * `ready.limits`: what this user may do, as known when the session starts.
 */
export type Limits = { max_message_chars: number, messages_per_minute: number, tokens_remaining: number, };

/**
 * Token counts of one generation.
 */
export type Usage = { prompt_tokens: number, completion_tokens: number, 
/**
 * Tokens of the model's thinking, when the upstream reports them
 * (counted within `completion_tokens`).
 */
reasoning_tokens?: number, 
/**
 * Counted by Skald (about four characters a token) because the
 * upstream reported no usage; absent when the counts are the
 * upstream's own.
 */
estimated?: boolean, };

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
export type ErrorCode = "unauthorized" | "invalid_request" | "message_too_long" | "rate_limited" | "quota_exceeded" | "busy" | "not_found" | "upstream_error" | "upstream_timeout" | "unavailable" | "internal" | "forbidden";

/**
 * Why a stream ended (`done.finish_reason`).
 */
export type FinishReason = "stop" | "length" | "cancelled" | "error";

/**
 * Who wrote a stored message.
 */
export type MessageRole = "user" | "assistant" | "tool";

/**
 * What the audit log records (the seed's list).
 */
export type AuditAction = "conversation_created" | "conversation_deleted" | "exported" | "erased" | "auth_failed" | "bot_changed" | "bot_deleted" | "user_limits_changed" | "user_limits_deleted";

/**
 * A conversation of the caller (`GET /v1/conversations`).
 */
export type Conversation = { id: ConversationId, bot: string, title: string, 
/**
 * RFC 3339.
 */
created_at: string, 
/**
 * RFC 3339.
 */
updated_at: string, };

/**
 * A stored message (`GET /v1/conversations/{id}/messages`).
 */
export type StoredMessage = { id: MessageId, conversation_id: ConversationId, role: MessageRole, content: string, 
/**
 * RFC 3339.
 */
created_at: string, 
/**
 * Null for user messages and answers still being generated.
 */
finish_reason: FinishReason | null, usage: Usage | null, 
/**
 * What a reasoning model thought before its answer; absent when none.
 */
reasoning?: string, 
/**
 * The tools an answer called (the OpenAI-compatible API); absent when
 * none.
 */
tool_calls?: Array<ToolCall>, 
/**
 * On a `tool` message: the call it answers.
 */
tool_call_id?: string, 
/**
 * What the user said of an answer; absent when nothing.
 */
feedback?: Feedback, };

/**
 * One tool call of an answer, in OpenAI's shape: `{"id","type":"function",
 * "function":{"name","arguments"}}`; `arguments` is the model's text (JSON
 * when the model wrote valid JSON), kept as it came.
 */
export type ToolCall = { id: string, type: ToolKind, function: FunctionCall, };

/**
 * The kind of a tool call: OpenAI defines only `function`.
 */
export type ToolKind = "function";

/**
 * The function a tool call names, and its arguments as the model wrote them.
 */
export type FunctionCall = { name: string, arguments: string, };

/**
 * One record of the audit log as operators read it
 * (`GET /v1/admin/audit`).
 */
export type AuditEvent = { id: string, 
/**
 * RFC 3339.
 */
at: string, 
/**
 * Whose record it is; null for failed authentications.
 */
user: UserId | null, 
/**
 * The operator who made the change; null when the user acted.
 */
actor: UserId | null, action: AuditAction, 
/**
 * What it was about: a conversation id, `bot:<name>`, `limits`, or a
 * short reason; never message text.
 */
resource: string, 
/**
 * The client address in full for 30 days, then anonymised (IPv4 /24,
 * IPv6 /48).
 */
address: string | null, };

/**
 * `GET /v1/admin/audit`: newest first.
 */
export type AuditPage = { events: Array<AuditEvent>, next: string | null, };

/**
 * A user's rating of an answer: `1` (good) or `-1` (bad) on the wire.
 */
export type Rating = 1 | -1;

/**
 * A user's feedback on an answer: the body of
 * `PUT /v1/messages/{id}/feedback`, and what the history shows.
 */
export type Feedback = { rating: Rating, 
/**
 * Up to [`MAX_FEEDBACK_COMMENT_CHARS`] characters.
 */
comment?: string, };

/**
 * One feedback as operators list it (`GET /v1/admin/feedback`).
 */
export type FeedbackEntry = { message_id: MessageId, conversation_id: ConversationId, bot: string, rating: Rating, comment: string | null, 
/**
 * RFC 3339: when it was given.
 */
at: string, };

/**
 * `GET /v1/admin/feedback`: newest answers first.
 */
export type FeedbackPage = { feedback: Array<FeedbackEntry>, next: string | null, };

/**
 * `GET /v1/conversations`: newest first.
 */
export type ConversationPage = { conversations: Array<Conversation>, 
/**
 * Pass as `before` for the next page; null on the last one.
 */
next: string | null, };

/**
 * `GET /v1/conversations/{id}/messages`: oldest first.
 */
export type MessagePage = { messages: Array<StoredMessage>, 
/**
 * Pass as `after` for the next page; null on the last one.
 */
next: string | null, };

/**
 * `GET /v1/usage`: this month's counters (UTC).
 */
export type UsageReport = { 
/**
 * `YYYY-MM`.
 */
month: string, tokens_used: number, tokens_limit: number, requests_used: number, requests_limit: number, };

/**
 * What one user spent on one bot in one month, for operators
 * (`GET /v1/admin/usage`): the answers begun and the tokens (prompt and
 * completion) of those that ended.
 */
export type UsageEntry = { user: UserId, bot: string, 
/**
 * `YYYY-MM`.
 */
month: string, tokens: number, requests: number, };

/**
 * `GET /v1/admin/usage`: by user, then bot.
 */
export type UsagePage = { usage: Array<UsageEntry>, next: string | null, };

/**
 * An idempotency key in the export: a `send.id` and what it created.
 */
export type ExportedKey = { send_id: ClientMessageId, conversation_id: ConversationId, message_id: MessageId, stream_id: StreamId, };

/**
 * An audit record about the caller.
 */
export type AuditView = { id: string, 
/**
 * RFC 3339.
 */
at: string, action: AuditAction, 
/**
 * The full client address for 30 days, then null.
 */
address: string | null, 
/**
 * The address with its last bits cleared (IPv4 /24, IPv6 /48).
 */
address_anonymised: string | null, detail: string, 
/**
 * The operator who made the change, when not the caller.
 */
actor?: UserId, };

/**
 * The usage counters kept for the caller (they survive erasure: counters
 * without content).
 */
export type ExportedUsage = { month: string, tokens_used: number, requests_used: number, };

/**
 * `GET /v1/export`: every record the server holds about the caller.
 */
export type Export = { user: UserId, 
/**
 * RFC 3339.
 */
exported_at: string, conversations: Array<Conversation>, messages: Array<StoredMessage>, idempotency_keys: Array<ExportedKey>, audit: Array<AuditView>, 
/**
 * Null when the limits backend could not say.
 */
usage: ExportedUsage | null, };

/**
 * `POST /v1/demo/token`: an anonymous, short-lived token for the demo.
 */
export type DemoToken = { token: string, expires_in: number, };

/** The protocol version carried in `ready.protocol`. */
export const PROTOCOL_VERSION = 1;

/** `send.id` is 1 to this many characters. */
export const MAX_CLIENT_ID_CHARS = 64;

/** A feedback comment is at most this many characters. */
export const MAX_FEEDBACK_COMMENT_CHARS = 2000;

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
  "forbidden",
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
  forbidden: 403,
};

/** WebSocket close codes used by Skald. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolViolation: 1002,
  InvalidPayload: 1007,
  TooBig: 1009,
  Internal: 1011,
  ProtocolError: 4400,
  Unauthorized: 4401,
  AuthTimeout: 4408,
  TooManyConnections: 4429,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
