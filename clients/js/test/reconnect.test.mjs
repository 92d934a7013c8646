// Reconnect and resume against the real skald binary: the socket cut
// mid-stream (abruptly, or frozen half-dead), cancel across a reconnect,
// messages queued while offline, and a server restart.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";

import { NotFoundError, SkaldClient, connect } from "../dist/index.js";
import { startProxy } from "../../testing/proxy.mjs";
import { startSkald, waitFor } from "../../testing/server.mjs";

const T = { timeout: 45_000 };
const FAST_RECONNECT = { initialDelayMs: 50, maxDelayMs: 400 };

describe("reconnect and resume", () => {
  let server;
  let proxy;
  const clients = [];
  const client = (sub, options = {}) => {
    const c = new SkaldClient({ url: proxy.url, token: server.token(sub), WebSocket, reconnect: FAST_RECONNECT, ...options });
    clients.push(c);
    return c;
  };
  /** The whole answer to `text`, streamed without interruption (the simulated model is deterministic). */
  const reference = async (text) => {
    const c = await connect({ url: server.url, token: server.token(), WebSocket });
    clients.push(c);
    return (await c.send(text).done).text;
  };

  before(async () => {
    // 120 tokens at 40/s: 3 s per answer, plenty of time to cut it.
    server = await startSkald({ env: { SKALD_SIMULATED_TOKENS_PER_SECOND: "40", SKALD_SIMULATED_ANSWER_TOKENS: "120" } });
    proxy = await startProxy(server.port);
  });
  after(async () => {
    for (const c of clients) c.close();
    await proxy?.close();
    await server?.dispose();
  });

  it("resumes a stream after the socket is cut mid-stream, without gap or repeat", T, async () => {
    const c = client("cut-1");
    const states = [];
    c.on("state", (s) => states.push(s.state));
    await c.ready();
    const accepted = proxy.accepted;
    const stream = c.send("Coupe-moi au milieu");
    const deltas = [];
    let cut = false;
    for await (const text of stream) {
      deltas.push(text);
      if (!cut && stream.lastSeq >= 4) {
        cut = true;
        proxy.cut();
      }
    }
    const done = await stream.done;
    assert.ok(cut);
    assert.equal(done.finishReason, "stop");
    // One delta per seq, and the text is the uninterrupted answer: no gap, no repeat.
    assert.equal(stream.lastSeq, deltas.length - 1);
    assert.equal(done.text, deltas.join(""));
    assert.equal(done.text, await reference("Coupe-moi au milieu"));
    assert.ok(proxy.accepted >= accepted + 1, "a new connection was opened");
    assert.ok(states.includes("reconnecting") && states.at(-1) === "open", states.join(","));
  });

  it("detects a half-dead connection by its heartbeat and resumes", T, async () => {
    const c = client("frozen-1", { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 400 });
    await c.ready();
    const stream = c.send("Gèle la connexion");
    await waitFor(() => stream.lastSeq >= 2, { what: "three deltas" });
    const before = proxy.accepted;
    proxy.freeze();
    const done = await stream.done;
    assert.equal(done.finishReason, "stop");
    assert.ok(proxy.accepted > before, "the client replaced the frozen connection");
    assert.equal(done.text, await reference("Gèle la connexion"));
  });

  it("stop works on a resumed stream", T, async () => {
    const c = client("stop-after-resume");
    await c.ready();
    const stream = c.send("Arrête-toi après la reprise");
    await waitFor(() => stream.lastSeq >= 2, { what: "three deltas" });
    proxy.cut();
    const seqAtCut = stream.lastSeq;
    await waitFor(() => c.state === "open" && stream.lastSeq > seqAtCut + 1, { what: "deltas after the resume" });
    stream.cancel();
    const done = await stream.done;
    assert.equal(done.finishReason, "cancelled");
    assert.ok(done.usage.completion_tokens < 120, `stopped early: ${done.usage.completion_tokens}`);
    assert.ok((await reference("Arrête-toi après la reprise")).startsWith(done.text));
  });

  it("stop pressed while disconnected reaches the stream after the reconnect", T, async () => {
    const c = client("stop-offline", { reconnect: { initialDelayMs: 300, maxDelayMs: 300 } });
    await c.ready();
    const stream = c.send("Arrête-toi hors ligne");
    await waitFor(() => stream.lastSeq >= 1, { what: "two deltas" });
    proxy.cut();
    await waitFor(() => c.state === "reconnecting", { what: "reconnecting" });
    stream.cancel();
    const done = await stream.done;
    assert.equal(done.finishReason, "cancelled");
    assert.ok(done.usage.completion_tokens < 120);
  });

  it("a message sent into a dead connection goes out again with the same id, once", T, async () => {
    const c = client("resend-1", { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 300 });
    await c.ready();
    proxy.freeze();
    // The frame is written into the frozen socket and never reaches the server.
    const stream = c.send("Envoyé dans le vide", { id: "resend-once-1" });
    const done = await stream.done;
    assert.equal(done.finishReason, "stop");
    assert.equal(done.text, await reference("Envoyé dans le vide"));
    assert.equal((await stream.ack).id, "resend-once-1");
    const usage = await c.api.usage();
    assert.equal(usage.requests_used, 1, "one message, not two");
  });

  it("a message whose ack was lost is sent again and answered once", T, async () => {
    const c = client("resend-2", { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 300 });
    await c.ready();
    proxy.freezeReplies();
    // The server gets the message and starts the answer; the ack never comes back.
    const stream = c.send("Mon ack s'est perdu", { id: "resend-once-2" });
    const done = await stream.done;
    assert.equal(done.finishReason, "stop");
    assert.equal(done.text, await reference("Mon ack s'est perdu"));
    const usage = await c.api.usage();
    assert.equal(usage.requests_used, 1, "the server answered the resend with the first message");
  });

  it("messages sent while offline wait for the connection", T, async () => {
    const c = client("offline-1", { reconnect: { initialDelayMs: 400, maxDelayMs: 400 } });
    await c.ready();
    proxy.cut();
    await waitFor(() => c.state === "reconnecting", { what: "reconnecting" });
    const stream = c.send("Je patiente");
    assert.equal(stream.streamId, undefined);
    const done = await stream.done;
    assert.equal(done.finishReason, "stop");
    assert.equal(c.state, "open");
  });

  it("survives a server restart: reconnects, ends the lost stream, streams again", T, async () => {
    const c = client("restart-1", { reconnect: { initialDelayMs: 100, maxDelayMs: 500 } });
    await c.ready();
    const stream = c.send("Redémarre pendant que je parle");
    await waitFor(() => stream.lastSeq >= 2, { what: "three deltas" });
    await server.restart();
    // The registry of live streams does not survive the process: the stream
    // ends either normally (finished while the server drained) or with a
    // typed not_found from the resume.
    const outcome = await stream.done.then(
      (done) => ({ done }),
      (error) => ({ error }),
    );
    if (outcome.error) {
      assert.ok(outcome.error instanceof NotFoundError, `got ${outcome.error}`);
    } else {
      assert.ok(["stop", "cancelled", "error"].includes(outcome.done.finishReason));
    }
    await waitFor(() => c.state === "open", { timeoutMs: 20_000, what: "reconnected" });
    const again = await c.send("Et maintenant ?").done;
    assert.equal(again.finishReason, "stop");
    assert.equal(again.text, await reference("Et maintenant ?"));
  });
});
