// @skald/client: the TypeScript streaming client of Skald (PROTOCOL.md v1).
// No runtime dependencies; browsers and Node 20+ (pass `WebSocket` from the
// `ws` package where there is no global one).

export { SkaldClient, connect, CLIENT_NAME } from "./client.js";
export type {
  ConnectOptions,
  ConnectionState,
  ReadyInfo,
  ResumeOptions,
  SendOptions,
  StartedInfo,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { ChatStream } from "./stream.js";
export type { AckInfo, DoneInfo } from "./stream.js";
export {
  BusyError,
  ConnectionError,
  ForbiddenError,
  InternalError,
  InvalidRequestError,
  MessageTooLongError,
  NotFoundError,
  QuotaExceededError,
  RateLimitedError,
  SkaldError,
  UnauthorizedError,
  UnavailableError,
  UpstreamError,
  UpstreamTimeoutError,
  errorFromCode,
  isSkaldError,
} from "./errors.js";
export type { ConnectionErrorReason, FailedStreamInfo, SkaldErrorDetails } from "./errors.js";
export { SkaldApi, httpBaseFromWebSocketUrl, httpError } from "./http.js";
export type { ApiOptions } from "./http.js";
export { backoffDelay } from "./backoff.js";
export type { ReconnectOptions } from "./backoff.js";
export { TokenKeeper, jwtExpiry, refreshDelayMs } from "./token.js";
export type { TokenSource } from "./token.js";
export * from "./protocol.js";
