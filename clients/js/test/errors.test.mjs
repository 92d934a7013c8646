// Typed errors from the real server: every code a client can meet on the
// chat path, with retryAfterMs where the protocol gives one.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";

import {
  BusyError,
  ConnectionError,
  InvalidRequestError,
  MessageTooLongError,
  NotFoundError,
  QuotaExceededError,
  RateLimitedError,
  SkaldClient,
  SkaldError,
  UnauthorizedError,
  UpstreamError,
  connect,
  isSkaldError,
} from "../dist/index.js";
import { mintToken, startSkald } from "../../testing/server.mjs";
import { startUpstream } from "../../testing/upstream.mjs";

const T = { timeout: 30_000 };

describe("typed errors", () => {
  let server;
  let limited;
  let upstream;
  let withUpstream;
  const clients = [];
  const open = async (srv, options = {}) => {
    const client = await connect({ url: srv.url, token: srv.token(options.sub), WebSocket, ...options });
    clients.push(client);
    return client;
  };

  before(async () => {
    upstream = await startUpstream();
    [server, limited, withUpstream] = await Promise.all([
      startSkald({ env: { SKALD_SIMULATED_ANSWER_TOKENS: "200" } }),
      startSkald({ env: { SKALD_LIMIT_MESSAGES_PER_MINUTE: "2", SKALD_QUOTA_MONTHLY_REQUESTS: "3" } }),
      startSkald({
        env: { SKALD_UPSTREAM_URL: upstream.url },
        config: '[bots.broken]\nmodel = "error-500"\n',
      }),
    ]);
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.all([server?.dispose(), limited?.dispose(), withUpstream?.dispose()]);
    await upstream?.close();
  });

  it("message_too_long", T, async () => {
    const client = await open(server);
    const stream = client.send("x".repeat(client.session.limits.max_message_chars + 1), { id: "long-1" });
    await assert.rejects(stream.ack, MessageTooLongError);
    const error = await stream.done.catch((e) => e);
    assert.ok(error instanceof SkaldError);
    assert.equal(error.code, "message_too_long");
    assert.equal(error.requestId, "long-1");
    assert.ok(isSkaldError(error, "message_too_long"));
  });

  it("not_found for an unknown conversation or bot", T, async () => {
    const client = await open(server);
    await assert.rejects(client.send("hi", { conversationId: "0193-no-such" }).done, NotFoundError);
    await assert.rejects(client.send("hi", { bot: "no-such-bot" }).done, (e) => e instanceof NotFoundError && /bot/.test(e.message));
  });

  it("not_found for another user's conversation", T, async () => {
    const mine = await open(server, { sub: "owner-1" });
    const theirs = await open(server, { sub: "intruder-1" });
    const stream = mine.send("private");
    const { conversationId } = await stream.ack;
    await assert.rejects(theirs.send("let me in", { conversationId }).done, NotFoundError);
    stream.cancel();
    await stream.done;
  });

  it("busy while the conversation already has an answer in progress", T, async () => {
    const client = await open(server);
    const first = client.send("first");
    const { conversationId } = await first.ack;
    await assert.rejects(client.send("second", { conversationId }).done, BusyError);
    first.cancel();
    assert.equal((await first.done).finishReason, "cancelled");
  });

  it("invalid_request: blank text, from the server and before sending", T, async () => {
    const client = await open(server);
    await assert.rejects(client.send("   ").done, (e) => e instanceof InvalidRequestError && e.requestId !== undefined);
    await assert.rejects(client.send("").done, InvalidRequestError);
    assert.throws(() => client.send("x", { id: "" }), TypeError);
    assert.throws(() => client.send("x", { id: "i".repeat(65) }), TypeError);
  });

  it("rate_limited carries retryAfterMs", T, async () => {
    const client = await open(limited, { sub: "hasty" });
    assert.equal(client.session.limits.messages_per_minute, 2);
    await client.send("one").done;
    await client.send("two").done;
    const error = await client.send("three").done.catch((e) => e);
    assert.ok(error instanceof RateLimitedError, `got ${error}`);
    assert.equal(error.code, "rate_limited");
    assert.ok(error.retryAfterMs > 0 && error.retryAfterMs <= 60_000, `retryAfterMs ${error.retryAfterMs}`);

    // Limits are per user: another user still has their two messages.
    const other = await open(limited, { sub: "thrifty" });
    await other.send("a").done;
    await other.send("b").done;
    await assert.rejects(other.send("c").done, RateLimitedError);
    const usage = await other.api.usage();
    assert.equal(usage.requests_used, 2);
    assert.equal(usage.requests_limit, 3);
  });

  it("quota_exceeded when the monthly requests are used up", T, async () => {
    const quota = await startSkald({ env: { SKALD_QUOTA_MONTHLY_REQUESTS: "1" } });
    try {
      const client = await open(quota);
      await client.send("the only one").done;
      const error = await client.send("one more").done.catch((e) => e);
      assert.ok(error instanceof QuotaExceededError, `got ${error}`);
      assert.equal(error.code, "quota_exceeded");
    } finally {
      await quota.dispose();
    }
  });

  it("upstream_error: the stream fails with what it knows", T, async () => {
    const client = await open(withUpstream);
    const stream = client.send("bonjour", { bot: "broken" });
    const ack = await stream.ack;
    const error = await stream.done.catch((e) => e);
    assert.ok(error instanceof UpstreamError, `got ${error}`);
    assert.equal(error.stream.streamId, ack.streamId);
    assert.equal(error.stream.finishReason, "error");
    assert.equal(error.stream.conversationId, ack.conversationId);
    await assert.rejects(async () => {
      for await (const _ of stream);
    }, UpstreamError);
    // The client is still usable.
    const ok = await client.send("echo me").done;
    assert.equal(ok.text, "echo me");
  });

  it("unauthorized: a bad token rejects connect", T, async () => {
    const forged = mintToken("not-the-server-secret-not-the-server-secret", { sub: "x", exp: Math.floor(Date.now() / 1000) + 60 });
    const error = await connect({ url: server.url, token: forged, WebSocket }).catch((e) => e);
    assert.ok(error instanceof UnauthorizedError, `got ${error}`);
    assert.match(error.message, /signature/);
  });

  it("unauthorized: a provider whose tokens keep failing gives up after a fresh try", T, async () => {
    let calls = 0;
    const expired = () => {
      calls++;
      return server.token("late", { ttlSecs: -3600 });
    };
    await assert.rejects(connect({ url: server.url, token: expired, WebSocket }), UnauthorizedError);
    assert.equal(calls, 2);
  });

  it("a token provider is asked again when its token expired", T, async () => {
    const tokens = [server.token("renewed", { ttlSecs: -3600 }), server.token("renewed")];
    let calls = 0;
    const client = await open(server, { token: async () => tokens[calls++] });
    assert.equal(calls, 2);
    assert.equal(client.session.user, "renewed");
  });

  it("a token provider is asked again when the server refuses its token", T, async () => {
    const now = Math.floor(Date.now() / 1000);
    const forged = mintToken("not-the-server-secret-not-the-server-secret", { sub: "renewed", exp: now + 600 });
    const tokens = [forged, server.token("renewed")];
    let calls = 0;
    const states = [];
    const client = new SkaldClient({ url: server.url, token: async () => tokens[calls++], WebSocket });
    clients.push(client);
    client.on("state", (s) => states.push(s));
    await client.ready();
    assert.equal(calls, 2);
    assert.equal(client.session.user, "renewed");
    const retry = states.find((s) => s.state === "reconnecting" && s.closeCode === 4401);
    assert.ok(retry, JSON.stringify(states));
    assert.equal(retry.delayMs, 0, "a fresh token is tried at once");
  });

  it("a provider that throws is retried with backoff", T, async () => {
    let calls = 0;
    const client = await open(server, {
      token: async () => {
        if (++calls < 3) throw new Error("backend down");
        return server.token("patient");
      },
      reconnect: { initialDelayMs: 20, maxDelayMs: 50 },
    });
    assert.equal(calls, 3);
    assert.equal(client.session.user, "patient");
  });

  it("gives up after maxAttempts when the server is unreachable", T, async () => {
    const error = await connect({
      url: "ws://127.0.0.1:9/v1/ws",
      token: "t",
      WebSocket,
      reconnect: { initialDelayMs: 10, maxDelayMs: 20, maxAttempts: 2 },
    }).catch((e) => e);
    assert.ok(error instanceof ConnectionError, `got ${error}`);
    assert.equal(error.reason, "gave_up");
  });
});
