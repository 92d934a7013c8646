// What the server does for the widget: GET /widget.js (the committed build,
// gzip, caching), the demo page, and POST /v1/demo/token (anonymous
// short-lived tokens, renewal, the per-address rate limit), and that the
// committed build is fresh.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import WebSocket from "ws";

import { connect, jwtExpiry } from "../../js/dist/index.js";
import { startSkald } from "../../testing/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const DIST = join(here, "..", "dist");
const T = { timeout: 30_000 };

/** A raw GET (no automatic decompression), for exact bytes and headers. */
function get(url, headers = {}, method = "GET") {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

const postToken = (server, headers = {}) => fetch(`${server.http}/v1/demo/token`, { method: "POST", headers });

describe("the server's widget and demo endpoints", () => {
  let server;
  let off;

  before(async () => {
    [server, off] = await Promise.all([
      startSkald({ config: "[demo]\ntoken_ttl_secs = 120\ntokens_per_minute_per_address = 3\n" }),
      startSkald({ env: { SKALD_DEMO: "0" } }),
    ]);
  });
  after(async () => {
    await Promise.all([server?.dispose(), off?.dispose()]);
  });

  it("the committed widget build is fresh", T, async () => {
    await promisify(execFile)(process.execPath, [join(here, "..", "build.mjs"), "--check"]);
  });

  it("serves the committed widget, gzipped when asked, with caching headers", T, async () => {
    const js = readFileSync(join(DIST, "widget.js"));
    const gz = readFileSync(join(DIST, "widget.js.gz"));
    const plain = await get(`${server.http}/widget.js`);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers["content-type"], "text/javascript; charset=utf-8");
    assert.ok(plain.body.equals(js));
    assert.equal(plain.headers["content-encoding"], undefined);
    assert.match(plain.headers["cache-control"], /public, max-age=\d+/);
    assert.match(plain.headers.etag, /^"w-[0-9a-f]{16}"$/);
    assert.equal(plain.headers.vary, "Accept-Encoding");
    assert.equal(plain.headers["x-content-type-options"], "nosniff");
    assert.equal(plain.headers["access-control-allow-origin"], "*");

    const zipped = await get(`${server.http}/widget.js`, { "accept-encoding": "gzip, deflate, br" });
    assert.equal(zipped.headers["content-encoding"], "gzip");
    assert.ok(zipped.body.equals(gz));
    assert.equal(zipped.headers.etag, plain.headers.etag);

    const again = await get(`${server.http}/widget.js`, { "if-none-match": plain.headers.etag });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
    const head = await get(`${server.http}/widget.js`, {}, "HEAD");
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
  });

  it("serves the demo page with a strict content security policy", T, async () => {
    const page = await get(`${server.http}/`);
    assert.equal(page.status, 200);
    assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
    assert.match(page.headers["content-security-policy"], /script-src 'self';/);
    assert.match(page.headers["content-security-policy"], /frame-ancestors 'none'/);
    const html = page.body.toString();
    assert.match(html, /<script src="\/widget\.js" data-token-url="\/v1\/demo\/token"/);
  });

  it("demo tokens: short-lived, anonymous, accepted by the WebSocket, renewable for the same visitor", T, async () => {
    const response = await postToken(server);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("cache-control"), "no-store");
    const { token, expires_in } = await response.json();
    assert.equal(expires_in, 120);
    const exp = jwtExpiry(token);
    assert.ok(Math.abs(exp - (Date.now() / 1000 + 120)) < 10, "exp is now + token_ttl_secs");
    const client = await connect({ url: server.url, token, WebSocket });
    try {
      assert.match(client.session.user, /^demo-[0-9a-f]{24}$/);
      const renewed = await (await postToken(server, { Authorization: `Bearer ${token}` })).json();
      const again = await connect({ url: server.url, token: renewed.token, WebSocket });
      assert.equal(again.session.user, client.session.user, "a renewal keeps the visitor");
      again.close();
    } finally {
      client.close();
    }
  });

  it("demo tokens are rate-limited per address: 429, Retry-After, the protocol's error body", T, async () => {
    const other = await startSkald({ config: "[demo]\ntokens_per_minute_per_address = 2\n" });
    try {
      const subs = new Set();
      for (let i = 0; i < 2; i++) {
        const r = await postToken(other);
        assert.equal(r.status, 200);
        subs.add(JSON.parse(atob((await r.json()).token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub);
      }
      assert.equal(subs.size, 2, "each visitor gets their own anonymous user");
      const refused = await postToken(other);
      assert.equal(refused.status, 429);
      const seconds = Number(refused.headers.get("retry-after"));
      assert.ok(seconds >= 1 && seconds <= 60, `Retry-After ${seconds}`);
      const body = await refused.json();
      assert.equal(body.error.code, "rate_limited");
      assert.equal(typeof body.error.message, "string");
    } finally {
      await other.dispose();
    }
  });

  it("with SKALD_DEMO=0 there is no demo page and no demo token; the widget is still served", T, async () => {
    assert.equal((await get(`${off.http}/`)).status, 404);
    const token = await postToken(off);
    assert.ok([404, 405].includes(token.status), `status ${token.status}`);
    assert.equal((await get(`${off.http}/widget.js`)).status, 200);
  });
});
