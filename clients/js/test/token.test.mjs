// A session lives as long as its token (PROTOCOL.md), against the real
// skald binary with no leeway: a client with a token provider sends a
// fresh token before `exp` and keeps its session; one with a fixed token
// is ended with 4401 and fails with UnauthorizedError.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";

import { SkaldClient, UnauthorizedError } from "../dist/index.js";
import { sleep, startSkald } from "../../testing/server.mjs";

const T = { timeout: 45_000 };

describe("sessions bounded by their token", () => {
  let server;
  const clients = [];
  before(async () => {
    server = await startSkald({ config: "[auth]\nleeway_secs = 0\n" });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.dispose();
  });

  it("keeps the session open past the first token's exp through the provider", T, async () => {
    let calls = 0;
    const c = new SkaldClient({
      url: server.url,
      WebSocket,
      token: () => {
        calls++;
        return server.token("lives-on", { ttlSecs: 3 });
      },
    });
    clients.push(c);
    const states = [];
    c.on("state", (s) => states.push(s.state));
    await c.ready();
    const session = c.session.sessionId;
    // Three token lifetimes.
    await sleep(7_000);
    assert.ok(calls >= 3, `the provider was asked ${calls} times`);
    assert.deepEqual(states, ["open"], "never reconnected");
    assert.equal(c.session.sessionId, session);
    const done = await c.send("Toujours là ?").done;
    assert.equal(done.finishReason, "stop");
  });

  it("ends a session on a fixed token at its exp with UnauthorizedError", T, async () => {
    const c = new SkaldClient({ url: server.url, WebSocket, token: server.token("lapses", { ttlSecs: 2 }) });
    clients.push(c);
    await c.ready();
    const failed = await Promise.race([
      new Promise((resolve) => c.on("state", (s) => s.state === "closed" && resolve(s))),
      sleep(15_000).then(() => undefined),
    ]);
    assert.ok(failed, "the session outlived its token");
    assert.ok(failed.error instanceof UnauthorizedError, String(failed.error));
  });
});
