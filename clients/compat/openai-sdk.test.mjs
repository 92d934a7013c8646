// OpenAI's official Node SDK (`openai`), unchanged, pointed at Skald's
// OpenAI-compatible API (PROTOCOL.md): what an existing application does
// when it swaps its base URL for Skald's. Against the real skald binary;
// nothing is skipped.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI, {
  APIError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  NotFoundError,
  RateLimitError,
} from "openai";

import { startSkaldOnMock } from "../testing/mock.mjs";
import { startSkald, waitFor } from "../testing/server.mjs";

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

// The same SDK against Skald in front of the load-test mock upstream, which
// streams tool calls and fails on demand (its model names).
describe("OpenAI's Node SDK against Skald in front of a real upstream", () => {
  let running;
  let server;
  const sdk = (sub) => new OpenAI({ baseURL: `${server.http}/v1`, apiKey: server.token(sub), maxRetries: 0 });
  const tools = [
    {
      type: "function",
      function: {
        name: "weather",
        description: "The weather in a city",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
    },
  ];
  const history = async (sub) => {
    const headers = { authorization: `Bearer ${server.token(sub)}` };
    const { conversations } = await (await fetch(`${server.http}/v1/conversations`, { headers })).json();
    const { messages } = await (
      await fetch(`${server.http}/v1/conversations/${conversations[0].id}/messages`, { headers })
    ).json();
    return messages;
  };

  before(async () => {
    running = await startSkaldOnMock();
    server = running.server;
  });
  after(async () => {
    await running?.dispose();
  });

  it("a tool call streams back as the SDK assembles it, and its result is answered", T, async () => {
    const openai = sdk("tooler");
    const question = "weather in Lyon?";
    const stream = openai.chat.completions.stream({
      model: "default",
      messages: [{ role: "user", content: question }],
      tools,
      tool_choice: "auto",
    });
    const called = await stream.finalChatCompletion();
    const choice = called.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    const [call] = choice.message.tool_calls;
    assert.equal(call.type, "function");
    assert.equal(call.function.name, "weather");
    assert.deepEqual(JSON.parse(call.function.arguments), { query: question });
    // Stored with the answer, as the SDK read it.
    const [, answer] = await history("tooler");
    assert.deepEqual(answer.tool_calls, [call]);

    const result = await openai.chat.completions.create({
      model: "chat",
      tools,
      messages: [
        { role: "user", content: question },
        choice.message,
        { role: "tool", tool_call_id: call.id, content: "sunny, 24 C" },
      ],
    });
    assert.equal(result.choices[0].finish_reason, "stop");
    assert.ok(result.choices[0].message.content.length > 0);
    const [tool] = await history("tooler");
    assert.deepEqual([tool.role, tool.tool_call_id, tool.content], ["tool", call.id, "sunny, 24 C"]);
  });

  it("a caller that aborts mid-stream stops the answer, stored cancelled", T, async () => {
    const openai = sdk("aborter");
    const controller = new AbortController();
    const stream = await openai.chat.completions.create(
      { model: "chat", stream: true, messages: [{ role: "user", content: "a long answer please" }] },
      { signal: controller.signal },
    );
    let text = "";
    // The SDK ends the iteration quietly once its signal aborts.
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (text.length > 0) controller.abort();
    }
    assert.ok(text.length > 0);
    const answer = await waitFor(
      async () => {
        const [, a] = await history("aborter");
        return a?.finish_reason ? a : null;
      },
      { what: "the cancelled answer stored" },
    );
    assert.equal(answer.finish_reason, "cancelled");
    assert.ok(answer.content.startsWith(text), `${answer.content} / ${text}`);
    assert.ok(answer.usage.completion_tokens < 40, "billed for what was made, not the whole answer");
  });

  it("upstream failures, timeouts and a spent quota are the SDK's own errors", T, async () => {
    const hi = [{ role: "user", content: "hi" }];
    const broken = await sdk("e").chat.completions.create({ model: "broken", messages: hi }).catch((e) => e);
    assert.ok(broken instanceof InternalServerError, String(broken));
    assert.deepEqual([broken.status, broken.code], [502, "upstream_error"]);
    const hanging = await sdk("e").chat.completions.create({ model: "hanging", messages: hi }).catch((e) => e);
    assert.ok(hanging instanceof InternalServerError, String(hanging));
    assert.deepEqual([hanging.status, hanging.code], [504, "upstream_timeout"]);
    const spender = sdk("spender");
    await spender.chat.completions.create({ model: "spent", messages: hi });
    const spent = await spender.chat.completions.create({ model: "spent", messages: hi }).catch((e) => e);
    assert.ok(spent instanceof APIError, String(spent));
    assert.deepEqual([spent.status, spent.type, spent.code], [402, "insufficient_quota", "quota_exceeded"]);
  });
});
