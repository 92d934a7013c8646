// Reconnection delays: exponential, capped, with jitter so that thousands
// of clients cut by the same server restart do not come back in lockstep.

export interface ReconnectOptions {
  /** First delay before reconnecting, in ms (default 250). */
  initialDelayMs?: number;
  /** Longest delay, in ms (default 15000). */
  maxDelayMs?: number;
  /** Attempts in a row before giving up (default: never give up). */
  maxAttempts?: number;
}

export const DEFAULT_RECONNECT: Required<ReconnectOptions> = {
  initialDelayMs: 250,
  maxDelayMs: 15_000,
  maxAttempts: Number.POSITIVE_INFINITY,
};

/**
 * The delay before attempt `attempt` (0 for the first retry): half of the
 * capped exponential step, plus a random part up to the other half
 * ("equal jitter"), so a delay never collapses to zero.
 */
export function backoffDelay(
  attempt: number,
  options: Required<ReconnectOptions>,
  random: () => number = Math.random,
): number {
  const step = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(step / 2 + random() * (step / 2));
}
