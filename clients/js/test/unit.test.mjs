// Unit tests of @skald/client without a server: a scripted WebSocket plays
// the server's side of PROTOCOL.md.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  CloseCode,
  ConnectionError,
  ERROR_CODES,
  NotFoundError,
  RateLimitedError,
  SkaldApi,
  SkaldClient,
  SkaldError,
  TokenKeeper,
  UnauthorizedError,
  backoffDelay,
  errorFromCode,
  httpBaseFromWebSocketUrl,
  httpError,
  jwtExpiry,
  refreshDelayMs,
} from "../dist/index.js";

const tick = () => new Promise((r) => setTimeout(r, 0));

/** A WebSocket whose server side is the test. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedWith = code;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
  /** Test side: a frame from the server. */
  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  /** Test side: the server (or the network) closes the connection. */
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

const LIMITS = { max_message_chars: 4000, messages_per_minute: 50, tokens_remaining: 1000 };
const READY = { type: "ready", session_id: "s", user: "u", protocol: 1, limits: LIMITS };

async function openClient(options = {}) {
  FakeSocket.all = [];
  const client = new SkaldClient({
    url: "ws://skald.test/v1/ws",
    token: "tok",
    WebSocket: FakeSocket,
    reconnect: { initialDelayMs: 1, maxDelayMs: 2 },
    heartbeatIntervalMs: 0,
    ...options,
  });
  await tick();
  await tick();
  const socket = FakeSocket.all.at(-1);
  socket.receive(READY);
  await client.ready();
  return { client, socket };
}

async function nextSocket(count) {
  for (let i = 0; i < 200 && FakeSocket.all.length < count; i++) await new Promise((r) => setTimeout(r, 2));
  const socket = FakeSocket.all[count - 1];
  assert.ok(socket, "a new socket was opened");
  for (let i = 0; i < 100 && socket.readyState !== 1; i++) await tick();
  return socket;
}

describe("backoff", () => {
  const options = { initialDelayMs: 100, maxDelayMs: 1000, maxAttempts: Infinity };
  it("grows exponentially, is capped, and keeps half of each step", () => {
    assert.equal(backoffDelay(0, options, () => 0), 50);
    assert.equal(backoffDelay(0, options, () => 1), 100);
    assert.equal(backoffDelay(3, options, () => 0), 400);
    assert.equal(backoffDelay(3, options, () => 1), 800);
    assert.equal(backoffDelay(10, options, () => 1), 1000);
    assert.equal(backoffDelay(1000, options, () => 0), 500);
  });
  it("spreads clients apart (jitter)", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(4, options)));
    assert.ok(delays.size > 10, `only ${delays.size} distinct delays`);
    for (const d of delays) assert.ok(d >= 500 && d <= 1000, String(d));
  });
});

describe("tokens", () => {
  const jwt = (payload) => `e30.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.sig`;
  it("refreshes an open session's token 30 s before exp, or halfway for a short one", () => {
    const now = 1_000_000_000_000;
    assert.equal(refreshDelayMs(jwt({ exp: now / 1000 + 600 }), now), 570_000);
    assert.equal(refreshDelayMs(jwt({ exp: now / 1000 + 20 }), now), 10_000);
    assert.equal(refreshDelayMs(jwt({ exp: now / 1000 - 5 }), now), 1000);
    assert.equal(refreshDelayMs(jwt({ sub: "x" }), now), undefined);
  });
  it("reads exp without verifying", () => {
    assert.equal(jwtExpiry(jwt({ exp: 1234, sub: "é" })), 1234);
    assert.equal(jwtExpiry("not a jwt"), undefined);
    assert.equal(jwtExpiry("a.!!!.c"), undefined);
    assert.equal(jwtExpiry(jwt({ sub: "x" })), undefined);
  });
  it("keeps a provider's token until it nearly expires, one call at a time", async () => {
    let now = 1_000_000_000_000;
    let calls = 0;
    const keeper = new TokenKeeper(async () => {
      calls++;
      return jwt({ exp: now / 1000 + 60 });
    }, () => now);
    const [a, b] = await Promise.all([keeper.get(), keeper.get()]);
    assert.equal(a, b);
    assert.equal(calls, 1);
    await keeper.get();
    assert.equal(calls, 1);
    now += 31_000; // within 30 s of exp
    await keeper.get();
    assert.equal(calls, 2);
    keeper.invalidate();
    await keeper.get();
    assert.equal(calls, 3);
    assert.ok(keeper.refreshable);
    assert.ok(!new TokenKeeper("fixed").refreshable);
  });
  it("a provider that returns nothing is an error", async () => {
    await assert.rejects(new TokenKeeper(async () => "").get(), TypeError);
  });
});

describe("errors", () => {
  it("every protocol code has its own class", () => {
    const names = new Set();
    for (const code of ERROR_CODES) {
      const e = errorFromCode(code, "m", { retryAfterMs: 5, requestId: "c-1" });
      assert.ok(e instanceof SkaldError);
      assert.ok(e instanceof Error);
      assert.equal(e.code, code);
      assert.equal(e.message, "m");
      assert.equal(e.retryAfterMs, 5);
      assert.equal(e.requestId, "c-1");
      assert.notEqual(e.name, "SkaldError", code);
      names.add(e.name);
    }
    assert.equal(names.size, ERROR_CODES.length);
    assert.ok(errorFromCode("rate_limited", "x") instanceof RateLimitedError);
    const future = errorFromCode("teapot", "x");
    assert.equal(future.constructor, SkaldError);
    assert.equal(future.code, "teapot");
  });
  it("HTTP errors become typed errors with status and Retry-After", async () => {
    const response = new Response(JSON.stringify({ error: { code: "rate_limited", message: "slow" } }), {
      status: 429,
      headers: { "retry-after": "3" },
    });
    const e = await httpError(response);
    assert.ok(e instanceof RateLimitedError);
    assert.equal(e.status, 429);
    assert.equal(e.retryAfterMs, 3000);
    const bare = await httpError(new Response("nope", { status: 404 }));
    assert.ok(bare instanceof NotFoundError);
  });
  it("close codes come from the Rust crate", () => {
    assert.equal(CloseCode.Unauthorized, 4401);
    assert.equal(CloseCode.GoingAway, 1001);
  });
});

describe("http api", () => {
  it("derives the HTTP base from the WebSocket URL", () => {
    assert.equal(httpBaseFromWebSocketUrl("wss://chat.example.com/v1/ws"), "https://chat.example.com");
    assert.equal(httpBaseFromWebSocketUrl("ws://127.0.0.1:8080/v1/ws"), "http://127.0.0.1:8080");
    assert.equal(httpBaseFromWebSocketUrl("wss://example.com/skald/v1/ws"), "https://example.com/skald");
  });
  it("sends the bearer token, pages, and refreshes a refused token once", async () => {
    const seen = [];
    let tokenCalls = 0;
    const fetch = async (url, init) => {
      seen.push({ url, auth: init.headers.Authorization, method: init.method });
      if (init.headers.Authorization === "Bearer t1") {
        return new Response(JSON.stringify({ error: { code: "unauthorized", message: "expired" } }), { status: 401 });
      }
      const u = new URL(url);
      const before = u.searchParams.get("before");
      const page = before ? { conversations: [{ id: "c2" }], next: null } : { conversations: [{ id: "c1" }], next: "k1" };
      return new Response(JSON.stringify(page), { status: 200 });
    };
    const api = new SkaldApi({ baseUrl: "https://h.test/", token: async () => `t${++tokenCalls}`, fetch });
    const ids = [];
    for await (const c of api.allConversations(1)) ids.push(c.id);
    assert.deepEqual(ids, ["c1", "c2"]);
    assert.equal(tokenCalls, 2);
    assert.equal(seen[0].auth, "Bearer t1");
    assert.equal(seen[1].auth, "Bearer t2");
    assert.equal(seen[1].url, "https://h.test/v1/conversations?limit=1");
    assert.equal(seen[2].url, "https://h.test/v1/conversations?limit=1&before=k1");
  });
  it("escapes ids in paths", async () => {
    let url;
    const api = new SkaldApi({ baseUrl: "https://h.test", token: "t", fetch: async (u) => ((url = u), new Response(null, { status: 204 })) });
    await api.deleteConversation("a/b?c");
    assert.equal(url, "https://h.test/v1/conversations/a%2Fb%3Fc");
  });
  it("calls fetch as a plain function, as a browser's fetch demands, and sends feedback as JSON", async () => {
    let call;
    // A browser's fetch throws "Illegal invocation" when called as a method of another object.
    const fetch = function (url, init) {
      if (this !== undefined && this !== globalThis) throw new TypeError("Illegal invocation");
      call = { url, init };
      return Promise.resolve(new Response(null, { status: 204 }));
    };
    const api = new SkaldApi({ baseUrl: "https://h.test", token: "t", fetch });
    await api.feedback("m/1", -1, "trop long");
    assert.equal(call.url, "https://h.test/v1/messages/m%2F1/feedback");
    assert.equal(call.init.method, "PUT");
    assert.equal(call.init.headers["Content-Type"], "application/json");
    assert.deepEqual(JSON.parse(call.init.body), { rating: -1, comment: "trop long" });
    await api.withdrawFeedback("m/1");
    assert.equal(call.init.method, "DELETE");
    assert.equal(call.init.body, undefined);
  });
  it("a network failure is a ConnectionError", async () => {
    const api = new SkaldApi({ baseUrl: "https://h.test", token: "t", fetch: async () => { throw new TypeError("fetch failed"); } });
    await assert.rejects(api.usage(), (e) => e instanceof ConnectionError && e.reason === "network");
  });
});

describe("client protocol handling", () => {
  it("authenticates with hello first", async () => {
    const { client, socket } = await openClient();
    assert.deepEqual(socket.sent[0], { type: "hello", token: "tok", client: "skald-js/0.1.0" });
    assert.equal(client.session.user, "u");
    client.close();
    assert.equal(socket.closedWith, 1000);
  });

  it("ignores replayed deltas and unknown frame types", async () => {
    const { client, socket } = await openClient();
    const stream = client.send("hi", { id: "c-1" });
    socket.receive({ type: "ack", id: "c-1", conversation_id: "cv", message_id: "m", stream_id: "st" });
    socket.receive({ type: "delta", stream_id: "st", seq: 0, text: "a" });
    socket.receive({ type: "delta", stream_id: "st", seq: 1, text: "b" });
    socket.receive({ type: "delta", stream_id: "st", seq: 1, text: "b" });
    socket.receive({ type: "delta", stream_id: "st", seq: 0, text: "a" });
    socket.receive({ type: "typing", stream_id: "st" });
    socket.receive({ type: "delta", stream_id: "st", seq: 2, text: "c" });
    socket.receive({ type: "done", stream_id: "st", message_id: "m", finish_reason: "length", usage: { prompt_tokens: 1, completion_tokens: 3 } });
    const chunks = [];
    for await (const t of stream) chunks.push(t);
    assert.deepEqual(chunks, ["a", "b", "c"]);
    const done = await stream.done;
    assert.equal(done.text, "abc");
    assert.equal(done.finishReason, "length");
    assert.equal(done.conversationId, "cv");
    client.close();
  });

  it("a refused send rejects ack and done with its typed error", async () => {
    const { client, socket } = await openClient();
    const stream = client.send("hi", { id: "c-9" });
    socket.receive({ type: "error", code: "rate_limited", message: "wait", id: "c-9", retry_after_ms: 1200 });
    await assert.rejects(stream.ack, RateLimitedError);
    const error = await stream.done.catch((e) => e);
    assert.equal(error.retryAfterMs, 1200);
    await assert.rejects(async () => {
      for await (const _ of stream);
    }, RateLimitedError);
    client.close();
  });

  it("an id-less error before the pong belongs to the resume; one after it does not", async () => {
    const { client, socket } = await openClient();
    const errors = [];
    client.on("error", (e) => errors.push(e));
    const resumed = client.resume("gone", { afterSeq: 4, text: "hello" });
    const other = client.resume("alive", { afterSeq: -1 });
    const [resumeGone, pingGone, resumeAlive, pingAlive] = socket.sent.slice(1);
    assert.deepEqual(resumeGone, { type: "resume", stream_id: "gone", after_seq: 4 });
    assert.equal(pingGone.type, "ping");
    assert.deepEqual(resumeAlive, { type: "resume", stream_id: "alive", after_seq: -1 });
    // The server answers in order: not_found for the first, then its pong,
    // then the second's pong; later an unrelated error.
    socket.receive({ type: "error", code: "not_found", message: "no such stream" });
    socket.receive({ type: "pong", ts: pingGone.ts });
    socket.receive({ type: "pong", ts: pingAlive.ts });
    socket.receive({ type: "error", code: "invalid_request", message: "stray" });
    await assert.rejects(resumed.done, NotFoundError);
    assert.equal(other.finished, false);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, "invalid_request");
    socket.receive({ type: "delta", stream_id: "alive", seq: 0, text: "x" });
    socket.receive({ type: "done", stream_id: "alive", message_id: "m", finish_reason: "stop", usage: { prompt_tokens: 0, completion_tokens: 1 } });
    assert.equal((await other.done).text, "x");
    client.close();
  });

  it("after a drop: re-sends unacknowledged messages, resumes acknowledged ones, then cancels", async () => {
    const { client, socket } = await openClient();
    const acked = client.send("one", { id: "c-1" });
    const unacked = client.send("two", { id: "c-2" });
    socket.receive({ type: "ack", id: "c-1", conversation_id: "cv", message_id: "m1", stream_id: "s1" });
    socket.receive({ type: "delta", stream_id: "s1", seq: 0, text: "Hel" });
    socket.drop(1006);
    acked.cancel();
    assert.equal(client.state, "reconnecting");
    const second = await nextSocket(2);
    assert.deepEqual(second.sent[0].type, "hello");
    second.receive(READY);
    const types = second.sent.slice(1).map((f) => f.type);
    // In the order the messages were first sent.
    assert.deepEqual(types, ["resume", "ping", "cancel", "ping", "send"]);
    assert.deepEqual(second.sent[1], { type: "resume", stream_id: "s1", after_seq: 0 });
    assert.deepEqual(second.sent[3], { type: "cancel", stream_id: "s1" });
    assert.equal(second.sent[5].id, "c-2");
    assert.equal(second.sent[5].text, "two");
    second.receive({ type: "delta", stream_id: "s1", seq: 1, text: "lo" });
    second.receive({ type: "done", stream_id: "s1", message_id: "m1", finish_reason: "cancelled", usage: { prompt_tokens: 1, completion_tokens: 2 } });
    const done = await acked.done;
    assert.equal(done.text, "Hello");
    assert.equal(done.finishReason, "cancelled");
    assert.equal(unacked.finished, false);
    client.close();
  });

  it("cancel before the ack goes out with the ack", async () => {
    const { client, socket } = await openClient();
    const stream = client.send("x", { id: "c-1" });
    stream.cancel();
    assert.equal(socket.frames("cancel").length, 0);
    socket.receive({ type: "ack", id: "c-1", conversation_id: "cv", message_id: "m", stream_id: "s" });
    assert.deepEqual(socket.frames("cancel"), [{ type: "cancel", stream_id: "s" }]);
    stream.cancel();
    assert.equal(socket.frames("cancel").length, 1, "once");
    client.close();
  });

  it("refused token: asks the provider once more, then gives up", async () => {
    FakeSocket.all = [];
    let calls = 0;
    const client = new SkaldClient({
      url: "ws://skald.test/v1/ws",
      token: () => `t${++calls}`,
      WebSocket: FakeSocket,
      heartbeatIntervalMs: 0,
    });
    const first = await nextSocket(1);
    first.receive({ type: "error", code: "unauthorized", message: "token refused: bad signature" });
    first.drop(4401);
    const second = await nextSocket(2);
    assert.equal(second.sent[0].token, "t2");
    second.receive({ type: "error", code: "unauthorized", message: "token refused: bad signature" });
    second.drop(4401);
    const error = await client.ready().catch((e) => e);
    assert.ok(error instanceof UnauthorizedError);
    assert.match(error.message, /bad signature/);
    assert.equal(client.state, "closed");
    assert.equal(calls, 2);
  });

  it("a silent connection is replaced after the heartbeat timeout", async () => {
    const { client, socket } = await openClient({ heartbeatIntervalMs: 20, heartbeatTimeoutMs: 20 });
    const second = await nextSocket(2);
    assert.ok(socket.frames("ping").length >= 1, "pinged before giving up");
    assert.equal(socket.closedWith, 4000);
    second.receive(READY);
    await client.ready();
    client.close();
  });

  it("an answered heartbeat keeps the connection", async () => {
    const { client, socket } = await openClient({ heartbeatIntervalMs: 15, heartbeatTimeoutMs: 30 });
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 10));
      for (const ping of socket.frames("ping")) socket.receive({ type: "pong", ts: ping.ts });
      socket.sent = socket.sent.filter((f) => f.type !== "ping");
    }
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(client.state, "open");
    client.close();
  });

  it("gives up after maxAttempts and says why", async () => {
    FakeSocket.all = [];
    const client = new SkaldClient({
      url: "ws://skald.test/v1/ws",
      token: "t",
      WebSocket: FakeSocket,
      reconnect: { initialDelayMs: 1, maxDelayMs: 1, maxAttempts: 2 },
      heartbeatIntervalMs: 0,
    });
    const states = [];
    client.on("state", (s) => states.push(s));
    for (let n = 1; n <= 3; n++) (await nextSocket(n)).drop(1011, "boom");
    const error = await client.ready().catch((e) => e);
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.reason, "gave_up");
    assert.equal(error.closeCode, 1011);
    assert.deepEqual(states.filter((s) => s.delayMs !== undefined).map((s) => s.attempt), [1, 2]);
    assert.equal(states.at(-1).state, "closed");
  });
});
