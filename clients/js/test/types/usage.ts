// Compile-time checks of the public API (tsc --noEmit, in `npm run typecheck`):
// what a user writes must type-check, in Node with `ws` and in browsers.

import WebSocket from "ws";

import {
  ChatStream,
  RateLimitedError,
  SkaldError,
  connect,
  isSkaldError,
  type DoneInfo,
  type ErrorCode,
  type ServerFrame,
} from "../../src/index.js";

export async function node(token: () => Promise<string>): Promise<DoneInfo> {
  const client = await connect({ url: "ws://127.0.0.1:8080/v1/ws", token, WebSocket });
  const stream: ChatStream = client.send("Bonjour", { conversationId: null, bot: "default" });
  let text = "";
  for await (const delta of stream) text += delta;
  try {
    return await stream.done;
  } catch (error) {
    if (error instanceof RateLimitedError) console.log(error.retryAfterMs);
    if (isSkaldError(error, "quota_exceeded")) console.log(error.code satisfies ErrorCode);
    throw error;
  } finally {
    client.close();
  }
}

export async function browser(): Promise<void> {
  const client = await connect({ url: "wss://chat.example/v1/ws", token: "t", WebSocket: globalThis.WebSocket });
  client.on("state", (change) => console.log(change.state, change.delayMs));
  const page = await client.api.conversations({ limit: 10 });
  for (const c of page.conversations) console.log(c.title);
  void SkaldError;
}

// The generated frame types narrow on `type`.
export function seq(frame: ServerFrame): number | undefined {
  return frame.type === "delta" ? frame.seq : undefined;
}
