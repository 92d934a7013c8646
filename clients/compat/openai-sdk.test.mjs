// OpenAI's official Node SDK (`openai`), unchanged, pointed at Skald's
// OpenAI-compatible API (PROTOCOL.md): what an existing application does
// when it swaps its base URL for Skald's. Against the real skald binary;
// nothing is skipped.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI, { AuthenticationError, BadRequestError, NotFoundError, RateLimitError } from "openai";

import { startSkald } from "../testing/server.mjs";

const T = { timeout: 30_000 };

describe("OpenAI's Node SDK against Skald", () => {
  let server;
  const sdk = (sub, options = {}) =>
    new OpenAI({ baseURL: `${server.http}/v1`, apiKey: server.token(sub), maxRetries: 0, ...options });

  before(async () => {
    server = await startSkald({
      env: { SKALD_SIMULATED_ANSWER_TOKENS: "12", SKALD_SIMULATED_TOKENS_PER_SECOND: "200" },
      config: "[limits]\nmessages_per_minute = 3\n",
    });
  });
  after(async () => {
    await server?.dispose();
  });

  it("models.list gives the bots", T, async () => {
    const ids = [];
    for await (const model of sdk("lister").models.list()) ids.push(model.id);
    assert.ok(ids.includes("default"), JSON.stringify(ids));
  });

  it("a streamed completion reads as the stored answer, with its usage", T, async () => {
    const openai = sdk("streamer");
    const stream = await openai.chat.completions.create({
      model: "default",
      messages: [{ role: "user", content: "Bonjour par le SDK" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish;
    let usage;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? "";
        finish = choice.finish_reason ?? finish;
      }
    }
    assert.equal(finish, "stop");
    assert.ok(text.length > 0);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    // Stored like a WebSocket exchange: the history API gives it back.
    const headers = { authorization: `Bearer ${server.token("streamer")}` };
    const { conversations } = await (await fetch(`${server.http}/v1/conversations`, { headers })).json();
    const { messages } = await (
      await fetch(`${server.http}/v1/conversations/${conversations[0].id}/messages`, { headers })
    ).json();
    assert.deepEqual(messages.map((m) => m.content), ["Bonjour par le SDK", text]);
  });

  it("a plain completion, continued through X-Skald-Conversation", T, async () => {
    const openai = sdk("plain");
    const { data, response } = await openai.chat.completions
      .create({ model: "default", messages: [{ role: "user", content: "first" }] })
      .withResponse();
    assert.equal(data.object, "chat.completion");
    assert.equal(data.choices[0].message.role, "assistant");
    assert.equal(data.choices[0].finish_reason, "stop");
    const conversation = response.headers.get("x-skald-conversation");
    assert.ok(conversation);
    const next = await openai.chat.completions
      .create(
        { model: "default", messages: [{ role: "user", content: "second" }] },
        { headers: { "X-Skald-Conversation": conversation } },
      )
      .withResponse();
    assert.equal(next.response.headers.get("x-skald-conversation"), conversation);
  });

  it("errors are the SDK's own exceptions", T, async () => {
    const hi = [{ role: "user", content: "hi" }];
    await assert.rejects(
      sdk("x", { apiKey: "not-a-token" }).chat.completions.create({ model: "default", messages: hi }),
      AuthenticationError,
    );
    await assert.rejects(
      sdk("x").chat.completions.create({ model: "default", messages: [{ role: "system", content: "obey" }, ...hi] }),
      BadRequestError,
    );
    await assert.rejects(sdk("x").chat.completions.create({ model: "no-such-bot", messages: hi }), NotFoundError);
    const limited = sdk("limited");
    for (let i = 0; i < 3; i++) await limited.chat.completions.create({ model: "default", messages: hi });
    const error = await limited.chat.completions.create({ model: "default", messages: hi }).catch((e) => e);
    assert.ok(error instanceof RateLimitError, String(error));
    assert.ok(Number(error.headers.get("retry-after")) >= 1);
    assert.equal(error.code, "rate_limited");
  });
});
