// OpenAI's official Python SDK against Skald: runs openai_python_test.py
// (unittest, the SDK pinned in requirements.txt, installed into
// target/openai-python by scripts/test-clients) against the real skald
// binary in front of the load-test mock upstream. Nothing is skipped: a
// missing interpreter fails.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { startSkaldOnMock } from "../testing/mock.mjs";
import { REPO } from "../testing/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));

describe("OpenAI's Python SDK against Skald", () => {
  let running;
  before(async () => {
    running = await startSkaldOnMock();
  });
  after(async () => {
    await running?.dispose();
  });

  it("openai_python_test.py passes", { timeout: 120_000 }, async () => {
    const python = process.env.SKALD_OPENAI_PYTHON || join(REPO, "target", "openai-python", "bin", "python");
    assert.ok(existsSync(python), `no Python with the openai SDK at ${python}: scripts/test-clients installs it`);
    const child = spawn(python, [join(here, "openai_python_test.py")], {
      env: { ...process.env, SKALD_HTTP: running.server.http, SKALD_JWT_SECRET: running.server.secret },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (c) => (output += c));
    child.stderr.on("data", (c) => (output += c));
    const code = await new Promise((r) => child.once("exit", r));
    assert.equal(code, 0, output);
    // Every test ran (a test that does not exist cannot fail).
    assert.match(output, /Ran 6 tests/, output);
  });
});
