// Test support: a minimal OpenAI-compatible upstream for what the built-in
// simulated model and the load-test mock cannot say. Model `echo` streams
// back the last user message (so a test controls the model's output, e.g.
// markup); `error-500` fails. Streams as `chat.completion.chunk` SSE, like
// the load-test mock.

import http from "node:http";

export async function startUpstream({ chunkChars = 4, chunkDelayMs = 15 } = {}) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
      res.writeHead(404).end();
      return;
    }
    let body = "";
    for await (const chunk of req) body += chunk;
    const request = JSON.parse(body);
    requests.push(request);
    if (request.model === "error-500") {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "injected failure", type: "server_error" } }));
      return;
    }
    const last = [...request.messages].reverse().find((m) => m.role === "user");
    const text = typeof last?.content === "string" ? last.content : "";
    const base = { id: "chatcmpl-test", object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model: request.model, system_fingerprint: null };
    const send = (data) => res.write(`data: ${JSON.stringify(data)}\n\n`);
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    send({ ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] });
    let sent = 0;
    for (let i = 0; i < text.length; i += chunkChars) {
      if (res.destroyed) return;
      send({ ...base, choices: [{ index: 0, delta: { content: text.slice(i, i + chunkChars) }, logprobs: null, finish_reason: null }] });
      sent++;
      await new Promise((r) => setTimeout(r, chunkDelayMs));
    }
    send({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }] });
    send({ ...base, choices: [], usage: { prompt_tokens: 5, completion_tokens: sent, total_tokens: 5 + sent } });
    res.end("data: [DONE]\n\n");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(resolve);
    }),
  };
}
