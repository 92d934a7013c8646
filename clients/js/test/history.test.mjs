// The history helpers against the real server's HTTP API (PROTOCOL.md):
// conversations, messages, delete, export, erasure. Nothing is skipped: a
// routing regression that loses these routes fails here.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";

import { InvalidRequestError, NotFoundError, UnauthorizedError, SkaldApi, connect } from "../dist/index.js";
import { startSkald } from "../../testing/server.mjs";

const T = { timeout: 30_000 };

describe("history API helpers", () => {
  let server;
  const clients = [];
  const open = async (sub) => {
    const client = await connect({ url: server.url, token: server.token(sub), WebSocket });
    clients.push(client);
    return client;
  };

  before(async () => {
    server = await startSkald({ env: { SKALD_SIMULATED_ANSWER_TOKENS: "30", SKALD_SIMULATED_TOKENS_PER_SECOND: "100" } });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.dispose();
  });

  it("conversations and messages: the stored answer is the streamed one, byte for byte", T, async () => {
    const client = await open("historian");
    const first = await client.send("Première question").done;
    const second = await client.send("Seconde question", { conversationId: first.conversationId }).done;
    const page = await client.api.conversations({ limit: 10 });
    const conversation = page.conversations.find((c) => c.id === first.conversationId);
    assert.ok(conversation, JSON.stringify(page));
    assert.equal(conversation.bot, "default");
    assert.ok(conversation.title.startsWith("Première question"));
    const { messages } = await client.api.messages(first.conversationId);
    assert.deepEqual(messages.map((m) => m.role), ["user", "assistant", "user", "assistant"]);
    assert.equal(messages[0].content, "Première question");
    assert.equal(messages[1].id, first.messageId);
    assert.equal(messages[1].content, first.text);
    assert.equal(messages[1].finish_reason, "stop");
    assert.deepEqual(messages[1].usage, first.usage);
    assert.equal(messages[3].content, second.text);
    // Page by page gives the same messages.
    const paged = [];
    for await (const m of client.api.allMessages(first.conversationId, 1)) paged.push(m.id);
    assert.deepEqual(paged, messages.map((m) => m.id));
  });

  it("a stopped answer is stored as far as it went", T, async () => {
    const client = await open("stopper");
    const stream = client.send("Arrête-toi vite");
    await stream.ack;
    stream.cancel();
    const done = await stream.done;
    assert.equal(done.finishReason, "cancelled");
    const { messages } = await client.api.messages(done.conversationId);
    const answer = messages.find((m) => m.id === done.messageId);
    assert.equal(answer.content, done.text);
    assert.equal(answer.finish_reason, "cancelled");
  });

  it("another user's conversation is 404, and a deleted one is gone", T, async () => {
    const owner = await open("owner-h");
    const stranger = await open("stranger-h");
    const done = await owner.send("À moi").done;
    const stolen = await stranger.api.messages(done.conversationId).catch((e) => e);
    assert.ok(stolen instanceof NotFoundError, `got ${stolen}`);
    assert.equal(stolen.status, 404);
    await assert.rejects(stranger.api.deleteConversation(done.conversationId), NotFoundError);
    await owner.api.deleteConversation(done.conversationId);
    await assert.rejects(owner.api.messages(done.conversationId), (e) => e instanceof NotFoundError && e.status === 404);
    const ids = [];
    for await (const c of owner.api.allConversations()) ids.push(c.id);
    assert.ok(!ids.includes(done.conversationId));
  });

  it("export holds the caller's records; after erasure it holds none", T, async () => {
    const client = await open("forgettable");
    const done = await client.send("Un secret à effacer").done;
    const before = JSON.stringify(await client.api.exportData());
    assert.ok(before.includes("Un secret à effacer"));
    assert.ok(before.includes(done.conversationId));
    await client.api.deleteMe();
    const afterErase = JSON.stringify(await client.api.exportData());
    assert.ok(!afterErase.includes("Un secret à effacer"), afterErase);
    assert.ok(!afterErase.includes(done.conversationId), afterErase);
    assert.deepEqual((await client.api.conversations()).conversations, []);
  });

  it("feedback: the owner rates an answer, the history shows it, a stranger cannot", T, async () => {
    const client = await open("rater");
    const stranger = await open("stranger-f");
    const done = await client.send("Note-moi").done;
    await client.feedback(done.messageId, -1, "trop long");
    let { messages } = await client.api.messages(done.conversationId);
    assert.deepEqual(messages.find((m) => m.id === done.messageId).feedback, { rating: -1, comment: "trop long" });
    await client.api.feedback(done.messageId, 1);
    ({ messages } = await client.api.messages(done.conversationId));
    assert.deepEqual(messages.find((m) => m.id === done.messageId).feedback, { rating: 1 });
    const stolen = await stranger.feedback(done.messageId, -1).catch((e) => e);
    assert.ok(stolen instanceof NotFoundError && stolen.status === 404, `got ${stolen}`);
    const bad = await client.feedback(done.messageId, 5).catch((e) => e);
    assert.ok(bad instanceof InvalidRequestError && bad.status === 400, `got ${bad}`);
    await client.api.withdrawFeedback(done.messageId);
    ({ messages } = await client.api.messages(done.conversationId));
    assert.equal(messages.find((m) => m.id === done.messageId).feedback, undefined);
  });

  it("the HTTP API refuses a bad token with a typed error", T, async () => {
    const api = new SkaldApi({ baseUrl: server.http, token: "not.a.token" });
    const error = await api.usage().catch((e) => e);
    assert.ok(error instanceof UnauthorizedError, `got ${error}`);
    assert.equal(error.status, 401);
  });
});
