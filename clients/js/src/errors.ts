// Typed errors: one class per error code of PROTOCOL.md, plus the client's
// own ConnectionError. The mapping below is typed by the generated
// `ErrorCode` union, so a code added on the Rust side fails this file's
// type check until it gets its class.

import type { ErrorCode, FinishReason, Usage } from "./protocol.js";

/** What is known of a stream that ended in an error. */
export interface FailedStreamInfo {
  streamId: string;
  messageId: string;
  conversationId: string;
  finishReason: FinishReason;
  usage: Usage;
  /** The text received before the failure. */
  text: string;
}

export interface SkaldErrorDetails {
  /** `retry_after_ms` of the error frame, or `Retry-After` of an HTTP answer. */
  retryAfterMs?: number;
  /** The `send.id` the error answers. */
  requestId?: string;
  /** HTTP status, for errors of the HTTP API. */
  status?: number;
  /** Set when a started stream failed (`done` with `finish_reason: "error"`). */
  stream?: FailedStreamInfo;
}

/** An error the server reported with one of PROTOCOL.md's codes. */
export class SkaldError extends Error {
  readonly code: ErrorCode;
  readonly retryAfterMs: number | undefined;
  readonly requestId: string | undefined;
  readonly status: number | undefined;
  readonly stream: FailedStreamInfo | undefined;

  constructor(code: ErrorCode, message: string, details: SkaldErrorDetails = {}) {
    super(message);
    this.name = "SkaldError";
    this.code = code;
    this.retryAfterMs = details.retryAfterMs;
    this.requestId = details.requestId;
    this.status = details.status;
    this.stream = details.stream;
  }
}

export class UnauthorizedError extends SkaldError {
  override name = "UnauthorizedError";
}
export class InvalidRequestError extends SkaldError {
  override name = "InvalidRequestError";
}
export class MessageTooLongError extends SkaldError {
  override name = "MessageTooLongError";
}
/** Over a rate limit: `retryAfterMs` says when to try again. */
export class RateLimitedError extends SkaldError {
  override name = "RateLimitedError";
}
export class QuotaExceededError extends SkaldError {
  override name = "QuotaExceededError";
}
export class BusyError extends SkaldError {
  override name = "BusyError";
}
export class NotFoundError extends SkaldError {
  override name = "NotFoundError";
}
export class UpstreamError extends SkaldError {
  override name = "UpstreamError";
}
export class UpstreamTimeoutError extends SkaldError {
  override name = "UpstreamTimeoutError";
}
export class UnavailableError extends SkaldError {
  override name = "UnavailableError";
}
export class InternalError extends SkaldError {
  override name = "InternalError";
}
/** An admin route called without the `admin` role (HTTP 403). */
export class ForbiddenError extends SkaldError {
  override name = "ForbiddenError";
}

type SkaldErrorClass = new (code: ErrorCode, message: string, details?: SkaldErrorDetails) => SkaldError;

const CLASSES: { readonly [code in ErrorCode]: SkaldErrorClass } = {
  unauthorized: UnauthorizedError,
  invalid_request: InvalidRequestError,
  message_too_long: MessageTooLongError,
  rate_limited: RateLimitedError,
  quota_exceeded: QuotaExceededError,
  busy: BusyError,
  not_found: NotFoundError,
  upstream_error: UpstreamError,
  upstream_timeout: UpstreamTimeoutError,
  unavailable: UnavailableError,
  internal: InternalError,
  forbidden: ForbiddenError,
};

/**
 * The typed error for a code. An unknown code (a newer server) gives a
 * plain `SkaldError` carrying it.
 */
export function errorFromCode(code: string, message: string, details: SkaldErrorDetails = {}): SkaldError {
  const known = Object.prototype.hasOwnProperty.call(CLASSES, code);
  const Class = known ? CLASSES[code as ErrorCode] : SkaldError;
  return new Class(code as ErrorCode, message, details);
}

/**
 * Why a connection error happened: `closed` by the caller, `gave_up`
 * reconnecting, `lost` (a single connection dropped: pings in flight),
 * `network` (an HTTP request did not get an answer), `no_websocket` (no
 * implementation available).
 */
export type ConnectionErrorReason = "closed" | "gave_up" | "lost" | "network" | "no_websocket";

/** A transport failure (not a server error code). */
export class ConnectionError extends Error {
  override name = "ConnectionError";
  readonly reason: ConnectionErrorReason;
  /** The WebSocket close code that ended it, if any. */
  readonly closeCode: number | undefined;

  constructor(reason: ConnectionErrorReason, message: string, closeCode?: number) {
    super(message);
    this.reason = reason;
    this.closeCode = closeCode;
  }
}

/** True when `error` is a `SkaldError`, optionally of the given code. */
export function isSkaldError(error: unknown, code?: ErrorCode): error is SkaldError {
  return error instanceof SkaldError && (code === undefined || error.code === code);
}
