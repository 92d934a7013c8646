// The HTTP API of PROTOCOL.md: history (conversations, messages, delete),
// feedback on answers, usage, export and erasure, with the same JWT as the
// WebSocket.
//
// The bodies are the generated types of protocol.ts (from the Rust crate
// skald-protocol): nothing here repeats them.

import { ConnectionError, SkaldError, errorFromCode } from "./errors.js";
import type {
  Conversation,
  ConversationPage,
  Export,
  Feedback,
  HttpError,
  MessagePage,
  Rating,
  StoredMessage,
  UsageReport,
} from "./protocol.js";
import { TokenKeeper, type TokenSource } from "./token.js";

export interface ApiOptions {
  /** The server's HTTP base, e.g. `https://chat.example.com` (paths start with `/v1/`). */
  baseUrl: string;
  /** A token, or a function returning one (called again when the server refuses it). */
  token: TokenSource | TokenKeeper;
  /** `fetch` (default: the global one). */
  fetch?: typeof fetch;
}

/** `ws(s)://host/prefix/v1/ws` → `http(s)://host/prefix`. */
export function httpBaseFromWebSocketUrl(url: string): string {
  const u = new URL(url);
  u.protocol = u.protocol === "wss:" ? "https:" : u.protocol === "ws:" ? "http:" : u.protocol;
  const path = u.pathname.replace(/\/v1\/ws\/?$/, "").replace(/\/$/, "");
  return `${u.protocol}//${u.host}${path}`;
}

/** Client of the HTTP API. Errors are the same typed errors as on the WebSocket, with `status`. */
export class SkaldApi {
  private readonly base: string;
  private readonly tokens: TokenKeeper;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ApiOptions) {
    this.base = options.baseUrl.replace(/\/$/, "");
    this.tokens = options.token instanceof TokenKeeper ? options.token : new TokenKeeper(options.token);
    const f = options.fetch ?? (globalThis as { fetch?: typeof fetch }).fetch;
    if (!f) throw new TypeError("no fetch implementation: pass { fetch }");
    // Called as a plain function: a browser's fetch called as a method of
    // another object throws "Illegal invocation".
    this.fetchImpl = (input, init) => f(input, init);
  }

  /** One page of the caller's conversations, newest first. */
  conversations(options: { limit?: number; before?: string | null } = {}): Promise<ConversationPage> {
    return this.json("GET", "/v1/conversations", { limit: options.limit, before: options.before });
  }

  /** Every conversation of the caller, newest first, page by page. */
  async *allConversations(pageSize = 50): AsyncGenerator<Conversation> {
    let before: string | null = null;
    for (;;) {
      const page: ConversationPage = await this.conversations({ limit: pageSize, before });
      yield* page.conversations;
      if (!page.next) return;
      before = page.next;
    }
  }

  /** One page of a conversation's messages, oldest first. */
  messages(conversationId: string, options: { limit?: number; after?: string | null } = {}): Promise<MessagePage> {
    return this.json("GET", `/v1/conversations/${encodeURIComponent(conversationId)}/messages`, {
      limit: options.limit,
      after: options.after,
    });
  }

  /** Every message of a conversation, oldest first, page by page. */
  async *allMessages(conversationId: string, pageSize = 100): AsyncGenerator<StoredMessage> {
    let after: string | null = null;
    for (;;) {
      const page: MessagePage = await this.messages(conversationId, { limit: pageSize, after });
      yield* page.messages;
      if (!page.next) return;
      after = page.next;
    }
  }

  /** Deletes a conversation and its messages. */
  async deleteConversation(conversationId: string): Promise<void> {
    await this.request("DELETE", `/v1/conversations/${encodeURIComponent(conversationId)}`);
  }

  /**
   * Rates one of the caller's answers (`1` good, `-1` bad), with an
   * optional comment (up to `MAX_FEEDBACK_COMMENT_CHARS` characters);
   * replaces any earlier rating. Another user's message is `NotFoundError`.
   */
  async feedback(messageId: string, rating: Rating, comment?: string): Promise<void> {
    const body: Feedback = comment === undefined || comment === "" ? { rating } : { rating, comment };
    await this.request("PUT", feedbackPath(messageId), undefined, body);
  }

  /** Withdraws the caller's rating of an answer. */
  async withdrawFeedback(messageId: string): Promise<void> {
    await this.request("DELETE", feedbackPath(messageId));
  }

  /** This month's usage against the caller's limits. */
  usage(): Promise<UsageReport> {
    return this.json("GET", "/v1/usage");
  }

  /** Every record the server holds about the caller (GDPR export). */
  exportData(): Promise<Export> {
    return this.json("GET", "/v1/export");
  }

  /** Erases every record about the caller (GDPR erasure). */
  async deleteMe(): Promise<void> {
    await this.request("DELETE", "/v1/me");
  }

  private async json<T>(method: string, path: string, query?: Record<string, string | number | null | undefined>): Promise<T> {
    const response = await this.request(method, path, query);
    return (await response.json()) as T;
  }

  private async request(
    method: string,
    path: string,
    query?: Record<string, string | number | null | undefined>,
    body?: unknown,
  ): Promise<Response> {
    const url = new URL(this.base + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    for (let attempt = 0; ; attempt++) {
      const token = await this.tokens.get();
      let response: Response;
      try {
        const headers: Record<string, string> = { Authorization: `Bearer ${token}`, Accept: "application/json" };
        if (body !== undefined) headers["Content-Type"] = "application/json";
        response = await this.fetchImpl(url.toString(), {
          method,
          headers,
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        });
      } catch (error) {
        throw new ConnectionError("network", `${method} ${path}: ${error instanceof Error ? error.message : String(error)}`);
      }
      if (response.ok) return response;
      if (response.status === 401 && attempt === 0 && this.tokens.refreshable) {
        this.tokens.invalidate();
        continue;
      }
      throw await httpError(response);
    }
  }
}

function feedbackPath(messageId: string): string {
  return `/v1/messages/${encodeURIComponent(messageId)}/feedback`;
}

/** The typed error of a non-2xx answer (`{"error":{"code","message"}}`). */
export async function httpError(response: Response): Promise<SkaldError> {
  let code = "internal";
  let message = `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as Partial<HttpError>;
    if (body.error && typeof body.error.code === "string") {
      code = body.error.code;
      message = body.error.message ?? message;
    }
  } catch {
    code = response.status === 404 ? "not_found" : response.status === 401 ? "unauthorized" : "internal";
  }
  const retryAfter = response.headers.get("retry-after");
  const seconds = retryAfter === null ? NaN : Number(retryAfter);
  return errorFromCode(code, message, {
    status: response.status,
    ...(Number.isFinite(seconds) ? { retryAfterMs: seconds * 1000 } : {}),
  });
}
