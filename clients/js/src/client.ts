// The WebSocket client: authentication, sends, streams, cancel, and
// reconnection with resume (PROTOCOL.md v1).

import { backoffDelay, DEFAULT_RECONNECT, type ReconnectOptions } from "./backoff.js";
import {
  ConnectionError,
  InvalidRequestError,
  SkaldError,
  UnauthorizedError,
  errorFromCode,
} from "./errors.js";
import { SkaldApi, httpBaseFromWebSocketUrl } from "./http.js";
import { CloseCode, MAX_CLIENT_ID_CHARS, type ClientFrame, type ErrorCode, type Limits, type Rating, type ServerFrame } from "./protocol.js";
import { ChatStream, type StreamOwner } from "./stream.js";
import { MAX_TIMER_MS, TokenKeeper, refreshDelayMs, type TokenSource } from "./token.js";

export const CLIENT_NAME = "skald-js/0.1.0";

/* eslint-disable @typescript-eslint/no-explicit-any */
/**
 * The part of the WebSocket API the client uses: browsers' `WebSocket` and
 * the `ws` package's both fit. The handlers take `any` because their event
 * types differ between the two.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

export type WebSocketConstructor = new (url: string, ...rest: any[]) => WebSocketLike;
/* eslint-enable @typescript-eslint/no-explicit-any */

export interface ConnectOptions {
  /** The WebSocket endpoint, e.g. `wss://chat.example.com/v1/ws`. */
  url: string;
  /** A token, or a function returning one (called again when it expires or is refused). */
  token: TokenSource;
  /** A WebSocket implementation where there is no global one (Node 20: the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** `hello.client`: who is speaking (default `skald-js/<version>`). */
  clientName?: string;
  /** Reconnection with jittered backoff (default on); `false` turns it off. */
  reconnect?: ReconnectOptions | false;
  /**
   * After this long without a frame from the server, send a JSON `ping`
   * (default 20000 ms; 0 turns the heartbeat off).
   */
  heartbeatIntervalMs?: number;
  /** A connection whose heartbeat `ping` gets nothing back within this is dropped and replaced (default 10000 ms). */
  heartbeatTimeoutMs?: number;
  /** Time for a new connection to become ready before it is replaced (default 15000 ms). */
  connectTimeoutMs?: number;
  /** `fetch` for the HTTP API (default: the global one). */
  fetch?: typeof fetch;
  /** Reconnect at once when the browser comes back online (default true where there is a `window`). */
  watchOnline?: boolean;
  /** @internal Randomness for the backoff jitter (tests). */
  random?: () => number;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface StateChange {
  state: ConnectionState;
  /** Reconnection attempt number (1 for the first retry). */
  attempt?: number;
  /** Delay before that attempt, in ms. */
  delayMs?: number;
  /** Close code of the connection that was lost. */
  closeCode?: number;
  /** Why: a close reason, a token provider failure, a heartbeat timeout. */
  reason?: string;
  /** The error that closed the client, in the `closed` state. */
  error?: unknown;
}

/** `ready`: who the server says we are. */
export interface ReadyInfo {
  sessionId: string;
  user: string;
  protocol: number;
  limits: Limits;
}

export interface SendOptions {
  /** Continue this conversation (absent: a new one). */
  conversationId?: string | null;
  /** The bot to talk to (absent: `default`). */
  bot?: string;
  /** The idempotency key (1 to 64 characters; default: random). Reuse it to retry safely. */
  id?: string;
}

export interface ResumeOptions {
  /** The last `seq` already seen (default -1: replay from the start). */
  afterSeq?: number;
  /** The text already seen up to `afterSeq`, so that `done.text` is whole. */
  text?: string;
  /** The last reasoning `seq` already seen (default -1). */
  afterReasoningSeq?: number;
  /** The reasoning already seen up to `afterReasoningSeq`. */
  reasoning?: string;
  conversationId?: string;
  messageId?: string;
}

/**
 * `started`: another connection of the same user (another tab, a phone, on
 * any server instance) started a stream. `resume(streamId)` follows it.
 */
export interface StartedInfo {
  conversationId: string;
  streamId: string;
  /** The answer's message id. */
  messageId: string;
  bot: string;
  /** The user message that started it. */
  userMessage: { id: string; content: string; createdAt: string };
}

interface ClientEvents {
  state: (change: StateChange) => void;
  ready: (info: ReadyInfo) => void;
  started: (info: StartedInfo) => void;
  /** An error frame not tied to a request of this client. */
  error: (error: SkaldError) => void;
}

type Phase = "pending" | "sent" | "live" | "resuming";

interface Entry {
  stream: ChatStream;
  /** The `send` frame (absent for streams obtained with `resume`). */
  frame?: Extract<ClientFrame, { type: "send" }>;
  phase: Phase;
  /** The cancel was written on the current connection. */
  cancelSent: boolean;
  conversationId: string;
}

interface Barrier {
  ts: number;
  accepts: readonly ErrorCode[];
  settle: (error?: SkaldError) => void;
}

const OPEN = 1;
/** Close code the client uses for a connection it abandons (heartbeat, connect timeout). */
const CLIENT_ABANDON = 4000;

function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  let hex = "";
  for (const b of bytes) hex += b.toString(16).padStart(2, "0");
  return `c-${hex}`;
}

/**
 * A connection to Skald that keeps itself alive: it reconnects with
 * jittered backoff, resumes the streams that were live, re-sends messages
 * that were not acknowledged (same `send.id`: never a duplicate), and
 * refreshes its token through the provider when the server refuses it,
 * and, with a provider, before its `exp` on the open session (a session
 * lives as long as its token).
 */
export class SkaldClient {
  readonly url: string;
  private readonly options: ConnectOptions;
  private readonly tokens: TokenKeeper;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly reconnectOptions: Required<ReconnectOptions> | false;
  private readonly random: () => number;

  private ws: WebSocketLike | undefined;
  private generation = 0;
  private currentState: ConnectionState = "connecting";
  private readyInfo: ReadyInfo | undefined;
  private everReady = false;
  private attempt = 0;
  private refusedInARow = 0;
  private lastAuthError: string | undefined;
  private closedError: Error | undefined;

  private readonly entries = new Map<string, Entry>();
  private readonly byStreamId = new Map<string, Entry>();
  private barriers: Barrier[] = [];
  private readonly pings = new Map<number, { sentAt: number; resolve: (ms: number) => void; reject: (e: unknown) => void }>();
  private nextTs = Date.now();
  private lastFrameAt = 0;

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** The token the current socket's session lives on. */
  private socketToken: string | undefined;
  private readonly listeners: { [K in keyof ClientEvents]: Set<ClientEvents[K]> } = {
    state: new Set(),
    ready: new Set(),
    started: new Set(),
    error: new Set(),
  };
  private readyWaiters: Array<{ resolve: (info: ReadyInfo) => void; reject: (e: unknown) => void }> = [];
  private apiClient: SkaldApi | undefined;
  private readonly onOnline = (): void => this.reconnectNow();
  private readonly watchingOnline: boolean;
  private readonly owner: StreamOwner = { cancelStream: (stream) => this.cancelStream(stream) };

  constructor(options: ConnectOptions) {
    this.options = options;
    this.url = options.url;
    this.tokens = new TokenKeeper(options.token);
    this.WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.reconnectOptions = options.reconnect === false ? false : { ...DEFAULT_RECONNECT, ...options.reconnect };
    this.random = options.random ?? Math.random;
    const target = globalThis as { addEventListener?: (t: string, f: () => void) => void; window?: unknown };
    this.watchingOnline = (options.watchOnline ?? target.window !== undefined) && typeof target.addEventListener === "function";
    if (this.watchingOnline) target.addEventListener?.("online", this.onOnline);
    if (!this.WS) {
      // Reported asynchronously, like every other connection failure.
      queueMicrotask(() =>
        this.fail(
          new ConnectionError(
            "no_websocket",
            "no WebSocket implementation: pass { WebSocket } (for example from the `ws` package) on Node 20",
          ),
        ),
      );
      return;
    }
    void this.openSocket();
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** What the last `ready` said (user, limits), once connected. */
  get session(): ReadyInfo | undefined {
    return this.readyInfo;
  }

  /** Rates one of this user's answers (`1` good, `-1` bad), with an optional comment: `api.feedback`. */
  feedback(messageId: string, rating: Rating, comment?: string): Promise<void> {
    return this.api.feedback(messageId, rating, comment);
  }

  /** The HTTP API (history, feedback, usage, export, erasure) of the same server, with the same token. */
  get api(): SkaldApi {
    this.apiClient ??= new SkaldApi({
      baseUrl: httpBaseFromWebSocketUrl(this.url),
      token: this.tokens,
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
    });
    return this.apiClient;
  }

  /** Resolves with `ready` once connected (at once if connected now). */
  ready(): Promise<ReadyInfo> {
    if (this.currentState === "open" && this.readyInfo) return Promise.resolve(this.readyInfo);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Subscribes to an event; returns the function that unsubscribes. */
  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  /**
   * Sends a message and returns its answer's stream. While disconnected the
   * message waits and goes out on the next connection.
   */
  send(text: string, options: SendOptions = {}): ChatStream {
    const id = options.id ?? randomId();
    const length = [...id].length;
    if (length === 0 || length > MAX_CLIENT_ID_CHARS) {
      throw new TypeError(`send id must be 1 to ${MAX_CLIENT_ID_CHARS} characters`);
    }
    const existing = this.entries.get(id);
    if (existing) return existing.stream;
    const stream = new ChatStream(this.owner, id);
    if (this.closedError) {
      stream._fail(this.closedError as ConnectionError);
      return stream;
    }
    if (typeof text !== "string" || text.trim().length === 0) {
      stream._fail(new InvalidRequestError("invalid_request", "send.text must not be empty", { requestId: id }));
      return stream;
    }
    const frame: Extract<ClientFrame, { type: "send" }> = {
      type: "send",
      id,
      conversation_id: options.conversationId ?? null,
      text,
    };
    if (options.bot !== undefined) frame.bot = options.bot;
    const entry: Entry = { stream, frame, phase: "pending", cancelSent: false, conversationId: options.conversationId ?? "" };
    this.entries.set(id, entry);
    if (this.currentState === "open" && this.write(frame)) entry.phase = "sent";
    return stream;
  }

  /**
   * Follows a stream started earlier (by this page before a reload, or by
   * another client of the same user), from `afterSeq` on.
   */
  resume(streamId: string, options: ResumeOptions = {}): ChatStream {
    const known = this.byStreamId.get(streamId);
    if (known) return known.stream;
    const afterSeq = options.afterSeq ?? -1;
    const afterReasoningSeq = options.afterReasoningSeq ?? -1;
    const stream = new ChatStream(this.owner, "", {
      afterSeq,
      text: afterSeq >= 0 ? (options.text ?? "") : "",
      afterReasoningSeq,
      reasoning: afterReasoningSeq >= 0 ? (options.reasoning ?? "") : "",
    });
    if (this.closedError) {
      stream._fail(this.closedError as ConnectionError);
      return stream;
    }
    stream._acked({ id: "", streamId, conversationId: options.conversationId ?? "", messageId: options.messageId ?? "" });
    const entry: Entry = { stream, phase: "live", cancelSent: false, conversationId: options.conversationId ?? "" };
    const key = `resume:${streamId}`;
    this.entries.set(key, entry);
    this.byStreamId.set(streamId, entry);
    if (this.currentState === "open") this.resumeEntry(entry);
    return stream;
  }

  /** Measures the round trip with a JSON `ping`. */
  ping(): Promise<number> {
    if (this.currentState !== "open") {
      return Promise.reject(new ConnectionError("lost", "not connected"));
    }
    const ts = this.nextTs++;
    return new Promise((resolve, reject) => {
      this.pings.set(ts, { sentAt: Date.now(), resolve, reject });
      this.write({ type: "ping", ts });
    });
  }

  /** Skips the backoff wait and reconnects now (e.g. when the network is back). */
  reconnectNow(): void {
    if (this.currentState !== "reconnecting" || this.reconnectTimer === undefined) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    void this.openSocket();
  }

  /**
   * Closes the connection for good. Streams still running go on on the
   * server (and can be resumed by another client); here they end with a
   * `ConnectionError`.
   */
  close(): void {
    if (this.closedError) return;
    const ws = this.ws;
    this.fail(new ConnectionError("closed", "the client was closed"));
    try {
      ws?.close(CloseCode.Normal, "client closed");
    } catch {
      // Already closing.
    }
  }

  private cancelStream(stream: ChatStream): void {
    for (const entry of this.entries.values()) {
      if (entry.stream === stream) {
        this.sendCancel(entry);
        return;
      }
    }
  }

  // ---- connection lifecycle -------------------------------------------

  private async openSocket(): Promise<void> {
    const generation = ++this.generation;
    if (this.everReady || this.attempt > 0) this.setState({ state: "reconnecting", attempt: this.attempt });
    let token: string;
    try {
      token = await this.tokens.get();
    } catch (error) {
      if (generation !== this.generation || this.closedError) return;
      this.scheduleReconnect({ reason: `token provider failed: ${describe(error)}`, error });
      return;
    }
    if (generation !== this.generation || this.closedError) return;
    this.socketToken = token;
    let ws: WebSocketLike;
    try {
      ws = new (this.WS as WebSocketConstructor)(this.url);
    } catch (error) {
      // A malformed URL: no retry will fix it.
      this.fail(new ConnectionError("gave_up", `cannot open ${this.url}: ${describe(error)}`));
      return;
    }
    this.ws = ws;
    this.connectTimer = setTimeout(() => {
      if (generation === this.generation) this.abandon("no ready in time");
    }, this.options.connectTimeoutMs ?? 15_000);
    ws.onopen = () => {
      if (generation !== this.generation) return;
      this.write({ type: "hello", token, client: this.options.clientName ?? CLIENT_NAME });
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (generation !== this.generation) return;
      this.lastFrameAt = Date.now();
      // Text frames only: the server never sends binary ones.
      if (typeof event.data === "string") this.handle(event.data);
    };
    ws.onclose = (event: { code: number; reason: string }) => {
      if (generation !== this.generation) return;
      this.lost(event.code, String(event.reason ?? ""));
    };
    ws.onerror = () => {
      // `close` follows with the details.
    };
  }

  /** Drops the current connection without waiting for its close handshake. */
  private abandon(reason: string): void {
    const ws = this.ws;
    this.generation++;
    try {
      ws?.close(CLIENT_ABANDON, reason);
    } catch {
      // Ignore: it is being replaced.
    }
    this.lost(CLIENT_ABANDON, reason);
  }

  private lost(code: number, reason: string): void {
    this.generation++;
    this.ws = undefined;
    this.clearConnectionTimers();
    this.barriers = [];
    for (const ping of this.pings.values()) ping.reject(new ConnectionError("lost", "the connection was lost"));
    this.pings.clear();
    for (const entry of this.entries.values()) {
      entry.cancelSent = false;
      if (entry.phase === "resuming") entry.phase = "live";
    }
    if (this.closedError) return;
    if (code === CloseCode.Unauthorized) {
      this.tokens.invalidate();
      this.refusedInARow++;
      if (!this.tokens.refreshable || this.refusedInARow >= 2) {
        const message = this.lastAuthError ?? "the server refused the token";
        this.fail(new UnauthorizedError("unauthorized", message));
        return;
      }
    }
    this.scheduleReconnect({ closeCode: code, reason });
  }

  private scheduleReconnect(info: { closeCode?: number; reason?: string; error?: unknown }): void {
    if (this.closedError) return;
    const options = this.reconnectOptions;
    if (options === false || this.attempt >= options.maxAttempts) {
      const why = info.reason || (info.closeCode !== undefined ? `closed with ${info.closeCode}` : "connection failed");
      this.fail(new ConnectionError("gave_up", `connection lost (${why})`, info.closeCode));
      return;
    }
    let delayMs = backoffDelay(this.attempt, options, this.random);
    // A fresh token after a refusal is worth trying at once.
    if (info.closeCode === CloseCode.Unauthorized && this.refusedInARow === 1) delayMs = 0;
    // Too many connections: the others must close first.
    if (info.closeCode === CloseCode.TooManyConnections) delayMs = Math.max(delayMs, 2_000);
    this.attempt++;
    this.setState({
      state: "reconnecting",
      attempt: this.attempt,
      delayMs,
      ...(info.closeCode !== undefined ? { closeCode: info.closeCode } : {}),
      ...(info.reason ? { reason: info.reason } : {}),
      ...(info.error !== undefined ? { error: info.error } : {}),
    });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.openSocket();
    }, delayMs);
  }

  /** Ends the client: every stream and waiter gets `error`. */
  private fail(error: Error): void {
    if (this.closedError) return;
    this.closedError = error;
    this.generation++;
    const ws = this.ws;
    this.ws = undefined;
    if (ws && error instanceof ConnectionError && error.reason !== "closed") {
      try {
        ws.close(CloseCode.Normal, "client gave up");
      } catch {
        // Ignore.
      }
    }
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.clearConnectionTimers();
    if (this.watchingOnline) {
      (globalThis as { removeEventListener?: (t: string, f: () => void) => void }).removeEventListener?.("online", this.onOnline);
    }
    const streamError = error as SkaldError | ConnectionError;
    for (const entry of this.entries.values()) entry.stream._fail(streamError);
    this.entries.clear();
    this.byStreamId.clear();
    for (const ping of this.pings.values()) ping.reject(error);
    this.pings.clear();
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
    this.setState({ state: "closed", error });
  }

  private clearConnectionTimers(): void {
    if (this.heartbeatTimer !== undefined) clearTimeout(this.heartbeatTimer);
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    this.heartbeatTimer = undefined;
    this.connectTimer = undefined;
    this.refreshTimer = undefined;
  }

  /**
   * With a token provider, sends the open session a fresh token (`hello`)
   * before the current one expires. A provider that fails leaves the
   * session to end at `exp` (4401), and the reconnect asks it again.
   */
  private armRefresh(): void {
    const token = this.socketToken;
    if (!this.tokens.refreshable || token === undefined) return;
    const delayMs = refreshDelayMs(token, Date.now());
    if (delayMs === undefined) return;
    const generation = this.generation;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      if (delayMs > MAX_TIMER_MS) this.armRefresh();
      else void this.refreshToken(generation);
    }, Math.min(delayMs, MAX_TIMER_MS));
  }

  private async refreshToken(generation: number): Promise<void> {
    this.tokens.invalidate();
    let token: string;
    try {
      token = await this.tokens.get();
    } catch {
      // The session ends at `exp`; the reconnect asks the provider again
      // and reports its failure in the `reconnecting` state.
      return;
    }
    if (generation !== this.generation || this.closedError) return;
    if (!this.write({ type: "hello", token, client: this.options.clientName ?? CLIENT_NAME })) return;
    this.socketToken = token;
    this.armRefresh();
  }

  private setState(change: StateChange): void {
    this.currentState = change.state;
    for (const listener of this.listeners.state) safely(() => listener(change));
  }

  private write(frame: ClientFrame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---- heartbeat --------------------------------------------------------

  private armHeartbeat(delayMs?: number): void {
    const interval = this.options.heartbeatIntervalMs ?? 20_000;
    if (interval <= 0) return;
    if (this.heartbeatTimer !== undefined) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => this.heartbeat(interval), delayMs ?? interval);
  }

  private heartbeat(interval: number): void {
    this.heartbeatTimer = undefined;
    if (this.currentState !== "open") return;
    const quiet = Date.now() - this.lastFrameAt;
    if (quiet < interval) {
      this.armHeartbeat(interval - quiet);
      return;
    }
    const sentAt = Date.now();
    const generation = this.generation;
    this.write({ type: "ping", ts: this.nextTs++ });
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = undefined;
      if (generation !== this.generation) return;
      if (this.lastFrameAt < sentAt) this.abandon("no answer to the heartbeat");
      else this.armHeartbeat();
    }, this.options.heartbeatTimeoutMs ?? 10_000);
  }

  // ---- frames -----------------------------------------------------------

  private handle(text: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(text) as ServerFrame;
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    switch (frame.type) {
      case "ready":
        this.onReady(frame);
        break;
      case "ack": {
        const entry = this.entries.get(frame.id);
        if (!entry) return;
        entry.conversationId = frame.conversation_id;
        entry.phase = "live";
        this.byStreamId.set(frame.stream_id, entry);
        entry.stream._acked({
          id: frame.id,
          conversationId: frame.conversation_id,
          messageId: frame.message_id,
          streamId: frame.stream_id,
        });
        if (entry.stream.cancelling) this.sendCancel(entry);
        break;
      }
      case "delta":
        this.byStreamId.get(frame.stream_id)?.stream._delta(frame.seq, frame.text);
        break;
      case "reasoning":
        this.byStreamId.get(frame.stream_id)?.stream._reasoning(frame.seq, frame.text);
        break;
      case "done": {
        const entry = this.byStreamId.get(frame.stream_id);
        if (!entry) return;
        this.forget(entry, frame.stream_id);
        const info = {
          streamId: frame.stream_id,
          messageId: frame.message_id,
          conversationId: entry.conversationId,
          finishReason: frame.finish_reason,
          usage: frame.usage,
        };
        if (frame.finish_reason === "error") {
          const body = frame.error ?? { code: "internal" as const, message: "the answer failed" };
          entry.stream._fail(
            errorFromCode(body.code, body.message, { stream: { ...info, text: entry.stream.text } }),
          );
        } else {
          entry.stream._finish(info);
        }
        break;
      }
      case "error":
        this.onError(frame);
        break;
      case "started": {
        const info: StartedInfo = {
          conversationId: frame.conversation_id,
          streamId: frame.stream_id,
          messageId: frame.message_id,
          bot: frame.bot,
          userMessage: {
            id: frame.user_message.id,
            content: frame.user_message.content,
            createdAt: frame.user_message.created_at,
          },
        };
        for (const listener of this.listeners.started) safely(() => listener(info));
        break;
      }
      case "pong": {
        const barrier = this.barriers.findIndex((b) => b.ts === frame.ts);
        if (barrier >= 0) {
          // Every barrier before it was answered too (frames are in order).
          const done = this.barriers.splice(0, barrier + 1);
          for (const b of done) b.settle();
          return;
        }
        const ping = this.pings.get(frame.ts);
        if (ping) {
          this.pings.delete(frame.ts);
          ping.resolve(Date.now() - ping.sentAt);
        }
        break;
      }
      default:
        // A newer server may add frame types: ignore them.
        break;
    }
  }

  private onReady(frame: Extract<ServerFrame, { type: "ready" }>): void {
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.readyInfo = {
      sessionId: frame.session_id,
      user: frame.user,
      protocol: frame.protocol,
      limits: frame.limits,
    };
    this.everReady = true;
    this.attempt = 0;
    this.refusedInARow = 0;
    this.lastAuthError = undefined;
    this.setState({ state: "open" });
    this.armHeartbeat();
    this.armRefresh();
    // Whatever waited for a connection goes out now, in order.
    for (const entry of [...this.entries.values()]) {
      if (entry.phase === "pending" || entry.phase === "sent") {
        if (entry.frame && this.write(entry.frame)) entry.phase = "sent";
      } else if (entry.phase === "live") {
        this.resumeEntry(entry);
      }
    }
    const info = this.readyInfo;
    for (const listener of this.listeners.ready) safely(() => listener(info));
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const waiter of waiters) waiter.resolve(info);
  }

  private onError(frame: Extract<ServerFrame, { type: "error" }>): void {
    const details = {
      ...(frame.retry_after_ms != null ? { retryAfterMs: frame.retry_after_ms } : {}),
      ...(frame.id != null ? { requestId: frame.id } : {}),
    };
    const error = errorFromCode(frame.code, frame.message, details);
    if (frame.code === "unauthorized" && !this.everReadyOnThisSocket()) {
      // Followed by close 4401, handled there.
      this.lastAuthError = frame.message;
      return;
    }
    if (frame.id != null) {
      const entry = this.entries.get(frame.id);
      if (entry && (entry.phase === "pending" || entry.phase === "sent")) {
        this.entries.delete(frame.id);
        entry.stream._fail(error);
        return;
      }
    } else {
      const first = this.barriers[0];
      if (first && first.accepts.includes(frame.code)) {
        this.barriers.shift();
        first.settle(error);
        return;
      }
    }
    for (const listener of this.listeners.error) safely(() => listener(error));
  }

  private everReadyOnThisSocket(): boolean {
    return this.currentState === "open";
  }

  /**
   * Writes an id-less request followed by a `ping`: the server answers in
   * order, so an `error` that comes before the `pong` is this request's.
   */
  private withBarrier(frame: ClientFrame, accepts: readonly ErrorCode[], settle: (error?: SkaldError) => void): void {
    if (!this.write(frame)) return;
    const ts = this.nextTs++;
    if (!this.write({ type: "ping", ts })) return;
    this.barriers.push({ ts, accepts, settle });
  }

  private resumeEntry(entry: Entry): void {
    const streamId = entry.stream.streamId;
    if (!streamId) return;
    entry.phase = "resuming";
    const generation = this.generation;
    this.withBarrier(
      {
        type: "resume",
        stream_id: streamId,
        after_seq: entry.stream.lastSeq,
        // Absent means -1 (all of it): sent only once some was seen.
        ...(entry.stream.lastReasoningSeq >= 0 ? { after_reasoning_seq: entry.stream.lastReasoningSeq } : {}),
      },
      ["not_found", "invalid_request"],
      (error) => {
        if (generation !== this.generation) return;
        if (error) {
          this.forget(entry, streamId);
          entry.stream._fail(error);
          return;
        }
        if (entry.phase === "resuming") entry.phase = "live";
      },
    );
    if (entry.stream.cancelling) this.sendCancel(entry);
  }

  private sendCancel(entry: Entry): void {
    const streamId = entry.stream.streamId;
    if (!streamId || entry.cancelSent || entry.stream.finished || this.currentState !== "open") return;
    if (entry.phase !== "live" && entry.phase !== "resuming") return;
    entry.cancelSent = true;
    // `not_found`: the stream already ended; its `done` was or will be sent.
    this.withBarrier({ type: "cancel", stream_id: streamId }, ["not_found"], () => {});
  }

  private forget(entry: Entry, streamId: string): void {
    this.byStreamId.delete(streamId);
    for (const [key, value] of this.entries) {
      if (value === entry) {
        this.entries.delete(key);
        break;
      }
    }
  }
}

/**
 * Opens a client and waits for the server's `ready`. Rejects (and closes
 * the client) when the token is refused or reconnecting gave up; transient
 * failures are retried with backoff meanwhile.
 */
export async function connect(options: ConnectOptions): Promise<SkaldClient> {
  const client = new SkaldClient(options);
  try {
    await client.ready();
  } catch (error) {
    client.close();
    throw error;
  }
  return client;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function safely(f: () => void): void {
  try {
    f();
  } catch (error) {
    // A listener's bug must not break the connection.
    queueMicrotask(() => {
      throw error;
    });
  }
}
