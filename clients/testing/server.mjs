// Test support: runs the real `skald` binary on a free loopback port, mints
// tokens with its HS256 secret, and stops it cleanly.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "..", "..");

/** The binary under test: $SKALD_BIN, else the workspace's debug build. */
export function skaldBinary() {
  const bin = process.env.SKALD_BIN || join(REPO, "target", "debug", "skald");
  if (!existsSync(bin)) {
    throw new Error(`no skald binary at ${bin}: run \`cargo build -p skald\` (scripts/test-clients does)`);
  }
  return bin;
}

/** A free TCP port on 127.0.0.1 (bind 0, read, close). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

const b64url = (text) => Buffer.from(text).toString("base64url");

/** An HS256 JWT, signed like the server's own tokens. */
export function mintToken(secret, claims) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify(claims));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it returns a truthy value, at most `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 10_000, everyMs = 25, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * Starts `skald` with a fresh data directory. `env` adds or overrides
 * SKALD_* variables; `config` (TOML text) becomes SKALD_CONFIG.
 */
export async function startSkald({ env = {}, config } = {}) {
  const bin = skaldBinary();
  const dataDir = await mkdtemp(join(tmpdir(), "skald-client-test-"));
  const secret = randomBytes(32).toString("base64url");
  const port = await freePort();
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SKALD_")));
  const fullEnv = {
    ...baseEnv,
    SKALD_LISTEN: `127.0.0.1:${port}`,
    SKALD_DATA_DIR: dataDir,
    SKALD_JWT_SECRET: secret,
    SKALD_SIMULATED_TOKENS_PER_SECOND: "50",
    SKALD_SIMULATED_ANSWER_TOKENS: "40",
    SKALD_LOG: "warn",
    ...env,
  };
  if (config) {
    const path = join(dataDir, "skald.toml");
    await writeFile(path, config);
    fullEnv.SKALD_CONFIG = path;
  }

  let child;
  let logs = "";
  let exited;
  const launch = async () => {
    logs = "";
    child = spawn(bin, [], { env: fullEnv, stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk) => {
      logs = (logs + chunk.toString()).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
    let gone = false;
    exited.then(() => {
      gone = true;
    });
    await waitFor(
      async () => {
        if (gone) throw new Error(`skald exited before it was ready:\n${logs}`);
        try {
          const response = await fetch(`http://127.0.0.1:${port}/healthz`);
          return response.ok;
        } catch {
          return false;
        }
      },
      { timeoutMs: 30_000, everyMs: 50, what: "skald /healthz" },
    );
  };
  await launch();

  const server = {
    port,
    secret,
    dataDir,
    url: `ws://127.0.0.1:${port}/v1/ws`,
    http: `http://127.0.0.1:${port}`,
    get logs() {
      return logs;
    },
    get pid() {
      return child.pid;
    },
    /** A valid token for `sub` (default ttl 10 minutes). */
    token(sub = `u-${randomBytes(6).toString("hex")}`, { ttlSecs = 600, claims = {} } = {}) {
      const now = Math.floor(Date.now() / 1000);
      return mintToken(secret, { sub, iat: now, exp: now + ttlSecs, ...claims });
    },
    /** SIGTERM, then wait for the exit (SIGKILL after 10 s). */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
    /** Stops and starts again on the same port and data directory. */
    async restart() {
      await server.stop();
      await launch();
    },
    /** Stops and removes the data directory. */
    async dispose() {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}
