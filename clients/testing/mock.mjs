// Test support: the load-test harness's mock upstream (loadtest/), the real
// binary, on a free loopback port. What a model name asks of it (a streamed
// tool call, reasoning, faults) is in loadtest/src/mock_upstream/faults.rs:
// `mock-tool-call`, `mock-error-500`, `mock-hang`, ...

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

import { REPO, freePort, startSkald, waitFor } from "./server.mjs";

/** The harness binary: $SKALD_LOADTEST_BIN, else the workspace's debug build. */
export function loadtestBinary() {
  const bin = process.env.SKALD_LOADTEST_BIN || join(REPO, "target", "debug", "skald-loadtest");
  if (!existsSync(bin)) {
    throw new Error(`no skald-loadtest binary at ${bin}: run \`cargo build -p skald-loadtest\` (scripts/test-clients does)`);
  }
  return bin;
}

/**
 * Starts the mock upstream: `tokensPerSecond` per stream (0: as fast as it
 * can), `answerTokens` per answer. Returns its OpenAI base URL and `stop()`.
 */
export async function startMock({ tokensPerSecond = 0, answerTokens = 8 } = {}) {
  const port = await freePort();
  const child = spawn(
    loadtestBinary(),
    ["mock-upstream", "--listen", `127.0.0.1:${port}`, "--tokens-per-second", String(tokensPerSecond), "--answer-tokens", String(answerTokens)],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  let logs = "";
  child.stderr.on("data", (chunk) => {
    logs = (logs + chunk.toString()).slice(-10_000);
  });
  const exited = new Promise((r) => child.once("exit", r));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`the mock upstream exited:\n${logs}`);
      try {
        return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
      } catch {
        return false;
      }
    },
    { timeoutMs: 15_000, everyMs: 50, what: "the mock upstream's /healthz" },
  );
  return {
    url: `http://127.0.0.1:${port}/v1`,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGINT");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Skald in front of the mock upstream, as the SDK compatibility tests use
 * it: bot `default` asks for a streamed tool call, `chat` gets ordinary
 * answers (40 tokens, 40 a second), `broken` a 500, `hanging` no answer
 * (a 1 s first-token timeout), `spent` allows one request a month; three
 * messages a minute per user. `dispose()` stops both.
 */
export async function startSkaldOnMock() {
  const mock = await startMock({ tokensPerSecond: 40, answerTokens: 40 });
  const server = await startSkald({
    config: [
      "[model]",
      `upstream_url = "${mock.url}"`,
      'upstream_model = "mock-tool-call"',
      "[sessions]",
      "first_token_timeout_ms = 1000",
      "[limits]",
      "messages_per_minute = 3",
      "[bots.chat]",
      'model = "gpt-test"',
      "[bots.broken]",
      'model = "mock-error-500"',
      "[bots.hanging]",
      'model = "mock-hang"',
      "[bots.spent]",
      "monthly_requests = 1",
      "",
    ].join("\n"),
  });
  return {
    mock,
    server,
    async dispose() {
      await server.dispose();
      await mock.stop();
    },
  };
}
