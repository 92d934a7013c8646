// @skald/client and a reasoning model: the real skald binary in front of
// the load-test mock upstream, whose `mock-think-split-N` model thinks in
// `<think>` tags cut across chunks. The thinking comes as its own async
// stream, next to the text, and a resumed stream goes on with both.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";

import { connect } from "../dist/index.js";
import { startMock } from "../../testing/mock.mjs";
import { startSkald } from "../../testing/server.mjs";

const T = { timeout: 30_000 };

describe("reasoning through @skald/client", () => {
  let mock;
  let server;
  const clients = [];
  const open = async (sub) => {
    const client = await connect({ url: server.url, token: server.token(sub), WebSocket });
    clients.push(client);
    return client;
  };

  before(async () => {
    // 20 thoughts then 20 words, 100 tokens a second: long enough to drop
    // a connection in the middle of the thinking.
    mock = await startMock({ tokensPerSecond: 100, answerTokens: 20 });
    server = await startSkald({
      config: ["[model]", `upstream_url = "${mock.url}"`, 'upstream_model = "mock-think-split-20"', ""].join("\n"),
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.dispose();
    await mock?.stop();
  });

  it("streams the thinking as its own async stream, before the text", T, async () => {
    const client = await open("thinker");
    const stream = client.send("why is the sky blue?");
    const order = [];
    const thinking = (async () => {
      let text = "";
      for await (const thought of stream.reasoning) {
        order.push("reasoning");
        text += thought;
      }
      return text;
    })();
    let answer = "";
    for await (const text of stream) {
      order.push("text");
      answer += text;
    }
    const thought = await thinking;
    const done = await stream.done;
    assert.ok(thought.length > 0, "the model thought aloud");
    assert.ok(!thought.includes("<think>") && !answer.includes("think>"), "no tags anywhere");
    assert.equal(done.reasoning, thought);
    assert.equal(done.text, answer);
    assert.equal(stream.reasoningText, thought);
    assert.equal(done.usage.reasoning_tokens, 20);
    assert.ok(order.indexOf("text") > order.lastIndexOf("reasoning"), order.join(","));
  });

  it("a second client resumes the thinking and the text where it stands", T, async () => {
    const first = await open("resumer");
    const stream = first.send("think it over");
    // Wait for a few thoughts, then follow from another client.
    for await (const _ of stream.reasoning) {
      if (stream.lastReasoningSeq >= 1) break;
    }
    const { streamId } = await stream.ack;
    const other = await open("resumer");
    const follower = other.resume(streamId, {
      afterSeq: stream.lastSeq,
      text: stream.text,
      afterReasoningSeq: stream.lastReasoningSeq,
      reasoning: stream.reasoningText,
    });
    const [mine, theirs] = await Promise.all([stream.done, follower.done]);
    assert.equal(theirs.reasoning, mine.reasoning);
    assert.equal(theirs.text, mine.text);
  });
});
