// Test support: Debian's Chromium driven by playwright-core (never a
// downloaded browser), with a fresh profile per launch; and a "site" that
// embeds the widget with one tag and mints tokens from its own backend.

import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.SKALD_CHROMIUM || "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A browser context with its own fresh profile; `close()` removes it. */
export async function launchBrowser({ viewport = { width: 1280, height: 800 } } = {}) {
  const profile = await mkdtemp(join(tmpdir(), "skald-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport,
  });
  return {
    context,
    async newPage(options = {}) {
      const page = await context.newPage();
      if (options.viewport) await page.setViewportSize(options.viewport);
      const problems = [];
      page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
      page.on("console", (message) => {
        if (message.type() !== "error") return;
        const url = message.location()?.url ?? "";
        if (options.allowFailedRequests?.test(url)) return;
        problems.push(`console: ${message.text()} (${url})`);
      });
      page.problems = problems;
      return page;
    },
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A site on its own origin that embeds the widget from `server` in one tag,
 * and whose backend (`POST /token`) mints short-lived tokens for the
 * visitor named by its `uid` cookie (`?uid=` on the page sets it).
 * `attrs` are the script tag's extra attributes; `head` goes in <head>.
 */
export async function startSite(server, { attrs = {}, head = "", body = "", wsUrl } = {}) {
  let tokens = 0;
  const site = http.createServer((req, res) => {
    const url = new URL(req.url, "http://site.test");
    const cookie = /(?:^|;\s*)uid=([\w-]+)/.exec(req.headers.cookie ?? "")?.[1];
    if (req.method === "POST" && url.pathname === "/token") {
      tokens++;
      const token = server.token(cookie ?? "anonymous", { ttlSecs: 600 });
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify({ token, expires_in: 600 }));
      return;
    }
    if (req.method === "GET" && url.pathname === "/") {
      const uid = url.searchParams.get("uid");
      const all = { "data-token-url": "/token", ...(wsUrl ? { "data-skald-url": wsUrl } : {}), ...attrs };
      const tag = Object.entries(all)
        .map(([k, v]) => (v === true ? k : `${k}="${String(v).replace(/"/g, "&quot;")}"`))
        .join(" ");
      res.writeHead(200, {
        "content-type": "text/html; charset=utf-8",
        ...(uid ? { "set-cookie": `uid=${uid}; Path=/; SameSite=Lax` } : {}),
      });
      res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>A site</title>
<link rel="icon" href="data:,">${head}</head>
<body><h1>A site that embeds Skald</h1><button id="page-button">A page button</button>${body}
<script src="${server.http}/widget.js" ${tag} defer></script></body></html>`);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
  const { port } = site.address();
  return {
    url: `http://127.0.0.1:${port}/`,
    get tokens() {
      return tokens;
    },
    close: () => new Promise((resolve) => {
      site.closeAllConnections?.();
      site.close(resolve);
    }),
  };
}
