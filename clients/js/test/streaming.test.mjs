// @skald/client against the real skald binary: streaming, conversations,
// cancel, resume by another client, ping, usage.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";

import { ChatStream, ConnectionError, SkaldClient, connect } from "../dist/index.js";
import { startSkald, waitFor } from "../../testing/server.mjs";

const T = { timeout: 30_000 };

describe("streaming against skald", () => {
  let server;
  const clients = [];
  const open = async (options = {}) => {
    const client = await connect({ url: server.url, token: server.token(options.sub), WebSocket, ...options });
    clients.push(client);
    return client;
  };

  before(async () => {
    // 40 tokens at 50/s: a stream lasts about 0.8 s, long enough to see it grow.
    server = await startSkald({ env: { SKALD_SIMULATED_TOKENS_PER_SECOND: "50", SKALD_SIMULATED_ANSWER_TOKENS: "40" } });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.dispose();
  });

  it("streams an answer as deltas, then done with usage", T, async () => {
    const client = await open({ sub: "alice" });
    assert.equal(client.state, "open");
    assert.equal(client.session.user, "alice");
    assert.equal(client.session.protocol, 1);
    assert.ok(client.session.limits.max_message_chars > 0);

    const stream = client.send("Bonjour");
    assert.ok(stream instanceof ChatStream);
    const deltas = [];
    for await (const text of stream) deltas.push(text);
    const done = await stream.done;
    const ack = await stream.ack;

    assert.ok(deltas.length >= 2, `several deltas expected, got ${deltas.length}`);
    assert.equal(done.finishReason, "stop");
    assert.equal(done.text, deltas.join(""));
    assert.equal(stream.text, done.text);
    assert.equal(done.text.trim().split(/\s+/).length, 40);
    assert.equal(done.usage.completion_tokens, 40);
    assert.ok(done.usage.prompt_tokens > 0);
    assert.equal(done.streamId, ack.streamId);
    assert.equal(done.messageId, ack.messageId);
    assert.equal(done.conversationId, ack.conversationId);
    assert.equal(stream.lastSeq, deltas.length - 1);
    assert.ok(stream.finished);
  });

  it("continues a conversation and answers deterministically", T, async () => {
    const client = await open();
    const first = client.send("Quelle heure est-il ?");
    const a = await first.done;
    const second = client.send("Et demain ?", { conversationId: a.conversationId, bot: "default" });
    const b = await second.done;
    assert.equal(b.conversationId, a.conversationId);
    assert.notEqual(b.messageId, a.messageId);
    // The simulated model's answer depends on the last user message only.
    const again = await client.send("Quelle heure est-il ?").done;
    assert.equal(again.text, a.text);
    assert.notEqual(again.conversationId, a.conversationId);
  });

  it("the same send id never makes a second message", T, async () => {
    const client = await open();
    const first = client.send("idempotent", { id: "same-id-1" });
    assert.equal(client.send("ignored", { id: "same-id-1" }), first, "same stream object while in flight");
    const done = await first.done;
    // After it finished, the server answers a reused id with the first ack and done.
    const replay = client.send("something else", { id: "same-id-1" });
    const replayed = await replay.done;
    assert.equal(replayed.messageId, done.messageId);
    assert.equal(replayed.streamId, done.streamId);
  });

  it("cancel stops the answer mid-stream", T, async () => {
    const client = await open();
    const stream = client.send("Raconte une longue histoire", { bot: "default" });
    let seen = 0;
    await assert.doesNotReject(async () => {
      for await (const _ of stream) {
        if (++seen === 3) stream.cancel();
      }
    });
    const done = await stream.done;
    assert.equal(done.finishReason, "cancelled");
    assert.ok(stream.cancelling);
    assert.ok(done.usage.completion_tokens >= 3);
    assert.ok(done.usage.completion_tokens < 40, `cancelled early: ${done.usage.completion_tokens} tokens`);
  });

  it("cancel before the ack is sent when the ack arrives", T, async () => {
    const client = await open();
    const stream = client.send("Annule-moi tout de suite");
    stream.cancel();
    const done = await stream.done;
    assert.equal(done.finishReason, "cancelled");
    assert.ok(done.usage.completion_tokens < 40);
  });

  it("another client of the same user resumes a stream and can stop it", T, async () => {
    const a = await open({ sub: "carol" });
    const b = await open({ sub: "carol" });
    const original = a.send("Suis-moi");
    const { streamId } = await original.ack;
    await waitFor(() => original.lastSeq >= 1, { what: "two deltas" });
    const follower = b.resume(streamId);
    const seen = [];
    for await (const text of follower) {
      seen.push(text);
      if (seen.length === 1) await waitFor(() => original.lastSeq >= 3, { what: "more deltas" });
      if (seen.length === 2) follower.cancel();
    }
    const [fromA, fromB] = await Promise.all([original.done, follower.done]);
    assert.equal(fromA.finishReason, "cancelled");
    assert.equal(fromB.finishReason, "cancelled");
    // Replayed from the start: the follower saw every delta the owner saw.
    assert.equal(fromB.text, fromA.text);
    assert.equal(fromB.messageId, fromA.messageId);
  });

  it("the user's other connections hear `started` and can follow the stream; other users hear nothing", T, async () => {
    const [sender, tab, stranger] = await Promise.all([open({ sub: "carol" }), open({ sub: "carol" }), open({ sub: "dave" })]);
    const heard = { tab: [], stranger: [], sender: [] };
    tab.on("started", (s) => heard.tab.push(s));
    stranger.on("started", (s) => heard.stranger.push(s));
    sender.on("started", (s) => heard.sender.push(s));
    const stream = sender.send("Depuis mon téléphone");
    const ack = await stream.ack;
    await waitFor(() => heard.tab.length === 1, { what: "started on the other connection" });
    const started = heard.tab[0];
    assert.equal(started.streamId, ack.streamId);
    assert.equal(started.conversationId, ack.conversationId);
    assert.equal(started.messageId, ack.messageId);
    assert.equal(started.bot, "default");
    assert.equal(started.userMessage.content, "Depuis mon téléphone");
    assert.ok(!Number.isNaN(Date.parse(started.userMessage.createdAt)), started.userMessage.createdAt);
    // Following it from the start gives the whole answer.
    const followed = await tab.resume(started.streamId, { conversationId: started.conversationId }).done;
    const done = await stream.done;
    assert.equal(followed.text, done.text);
    assert.equal(followed.messageId, done.messageId);
    // A started for them would have come with the tab's, long before the
    // answer ended; a ping round trip each flushes what was in flight.
    await Promise.all([stranger.ping(), sender.ping()]);
    assert.deepEqual(heard.stranger, [], "another user hears nothing");
    assert.deepEqual(heard.sender, [], "the sender gets its ack, not started");
  });

  it("resuming another user's stream is not_found", T, async () => {
    const owner = await open({ sub: "dave" });
    const stranger = await open({ sub: "eve" });
    const stream = owner.send("secret");
    const { streamId } = await stream.ack;
    const stolen = stranger.resume(streamId);
    await assert.rejects(stolen.done, (e) => e.name === "NotFoundError" && e.code === "not_found");
    await stream.done;
  });

  it("ping measures the round trip", T, async () => {
    const client = await open();
    const ms = await client.ping();
    assert.equal(typeof ms, "number");
    assert.ok(ms >= 0);
  });

  it("usage counts what was streamed", T, async () => {
    const client = await open({ sub: "frank" });
    await client.send("Compte-moi").done;
    // Settles are batched after the `done`: the counters follow within a moment.
    let usage = await client.api.usage();
    for (let i = 0; i < 100 && usage.requests_used < 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      usage = await client.api.usage();
    }
    assert.match(usage.month, /^\d{4}-\d{2}$/);
    assert.equal(usage.requests_used, 1);
    assert.ok(usage.tokens_used >= 40, `tokens_used ${usage.tokens_used}`);
    assert.ok(usage.tokens_limit > 0);
  });

  it("close ends the client: its streams and later sends fail with ConnectionError", T, async () => {
    const client = new SkaldClient({ url: server.url, token: server.token(), WebSocket });
    await client.ready();
    const stream = client.send("bientôt fermé");
    await stream.ack;
    const states = [];
    client.on("state", (s) => states.push(s.state));
    client.close();
    await assert.rejects(stream.done, (e) => e instanceof ConnectionError && e.reason === "closed");
    await assert.rejects(client.send("après").done, ConnectionError);
    assert.deepEqual(states, ["closed"]);
    assert.equal(client.state, "closed");
  });

  it("without a WebSocket implementation on Node 20, connect says so", T, async (t) => {
    if (globalThis.WebSocket) {
      t.skip("this Node has a global WebSocket");
      return;
    }
    await assert.rejects(
      connect({ url: server.url, token: server.token() }),
      (e) => e instanceof ConnectionError && e.reason === "no_websocket",
    );
  });
});
