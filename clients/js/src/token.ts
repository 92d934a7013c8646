// Tokens: a fixed string or an async provider, with the provider's answer
// kept until shortly before its `exp` (read from the JWT payload, never
// verified here: the server verifies).

/** A token, or a function that fetches a fresh one (called again when it expires or is refused). */
export type TokenSource = string | (() => string | Promise<string>);

/** Seconds before `exp` at which a cached token counts as expired. */
const EXPIRY_MARGIN_SECS = 30;

/** The `exp` claim of a JWT, in seconds, or undefined when unreadable. */
export function jwtExpiry(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const payload: unknown = JSON.parse(atob(padded));
    const exp = (payload as { exp?: unknown } | null)?.exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** Longest wait of one timer (setTimeout fires at once beyond 2^31-1 ms). */
export const MAX_TIMER_MS = 24 * 3600 * 1000;

/**
 * When an open session should get a fresh token (PROTOCOL.md: a session
 * lives as long as its token): 30 s before `exp`, or halfway there for a
 * token with less than a minute to live; at least a second from now.
 * Undefined when the token has no readable `exp`.
 */
export function refreshDelayMs(token: string, nowMs: number): number | undefined {
  const exp = jwtExpiry(token);
  if (exp === undefined) return undefined;
  const left = exp * 1000 - nowMs;
  return Math.max(1000, left - Math.min(EXPIRY_MARGIN_SECS * 1000, left / 2));
}

/** Hands out a usable token, calling the provider only when needed. */
export class TokenKeeper {
  private cached: string | undefined;
  private pending: Promise<string> | undefined;

  constructor(
    private readonly source: TokenSource,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** Whether a fresh token can be had (a function source) after a refusal. */
  get refreshable(): boolean {
    return typeof this.source === "function";
  }

  /** A token that is not known to be expired. */
  async get(): Promise<string> {
    if (typeof this.source === "string") return this.source;
    if (this.cached !== undefined && !this.expiresSoon(this.cached)) return this.cached;
    if (!this.pending) {
      const source = this.source;
      this.pending = (async () => {
        try {
          const token = await source();
          if (typeof token !== "string" || token.length === 0) {
            throw new TypeError("the token provider returned no token");
          }
          this.cached = token;
          return token;
        } finally {
          this.pending = undefined;
        }
      })();
    }
    return this.pending;
  }

  /** Forgets the cached token (the server refused it). */
  invalidate(): void {
    this.cached = undefined;
  }

  private expiresSoon(token: string): boolean {
    const exp = jwtExpiry(token);
    return exp !== undefined && exp - EXPIRY_MARGIN_SECS <= this.now() / 1000;
  }
}
