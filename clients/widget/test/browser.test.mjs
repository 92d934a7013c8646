// The widget in a real browser (Debian's Chromium through playwright-core)
// against the real skald binary: the demo page, and a site on another
// origin that embeds it with one tag.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";

import { SkaldApi, connect } from "../../js/dist/index.js";
import { launchBrowser, startSite } from "../../testing/browser.mjs";
import { renderedText } from "../../testing/markdown.mjs";
import { startProxy } from "../../testing/proxy.mjs";
import { REPO, startSkald, waitFor } from "../../testing/server.mjs";
import { startUpstream } from "../../testing/upstream.mjs";
import { startMock } from "../../testing/mock.mjs";

const T = { timeout: 60_000 };
const SHOTS = join(REPO, "target", "widget-screenshots");
const XSS = "<img src=x onerror=alert(1)>";

/** The whole answer of the simulated model to `text` (it depends on the text only). */
async function answerTo(server, text) {
  const client = await connect({ url: server.url, token: server.token(), WebSocket });
  try {
    return (await client.send(text).done).text;
  } finally {
    client.close();
  }
}

/** That answer as the widget shows it (its markdown rendered). */
async function reference(server, text) {
  return renderedText(await answerTo(server, text));
}

const sel = {
  launcher: "[data-skald-launcher]",
  input: "[data-skald-input]",
  send: "[data-skald-send]",
  stop: "[data-skald-stop]",
  assistant: "[data-skald-message][data-role=assistant]",
  user: "[data-skald-message][data-role=user]",
};

/** Every message as the page shows it. */
function messages(page) {
  return page.evaluate(() => {
    const root = document.querySelector("[data-skald-widget]").shadowRoot;
    return [...root.querySelectorAll("[data-skald-message]")].map((m) => ({
      role: m.dataset.role,
      state: m.dataset.state,
      finish: m.dataset.finish ?? null,
      text: m.querySelector(".b").textContent,
      note: m.querySelector(".nt").hidden ? "" : m.querySelector(".nt").textContent,
    }));
  });
}

/** Records the last assistant message at every DOM change, and counts animation frames. */
function record(page) {
  return page.evaluate(() => {
    const root = document.querySelector("[data-skald-widget]").shadowRoot;
    const log = root.querySelector("[role=log]");
    window.__seen = [];
    window.__frames = 0;
    window.__renders = 0;
    const frame = () => {
      window.__frames++;
      window.__raf = requestAnimationFrame(frame);
    };
    window.__raf = requestAnimationFrame(frame);
    new MutationObserver((records) => {
      const all = root.querySelectorAll("[data-skald-message][data-role=assistant]");
      const last = all[all.length - 1];
      if (!last) return;
      if (records.some((r) => last.contains(r.target) && r.target !== last.parentNode)) window.__renders++;
      window.__seen.push({ state: last.dataset.state, text: last.querySelector(".b").textContent });
    }).observe(log, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

/** Resolves when the page's widget has its `ready` (register before `goto`). */
function readyFrame(page) {
  return new Promise((resolve) =>
    page.on("websocket", (ws) =>
      ws.on("framereceived", (f) => {
        if (typeof f.payload === "string" && f.payload.includes('"type":"ready"')) resolve();
      }),
    ),
  );
}

async function ask(page, text) {
  await page.locator(sel.input).fill(text);
  await page.locator(sel.send).click();
}

/** Waits until the last assistant message is no longer streaming, and returns it. */
async function lastAnswerDone(page, timeout = 20_000) {
  await page.waitForFunction(
    () => {
      const root = document.querySelector("[data-skald-widget]")?.shadowRoot;
      const all = root ? root.querySelectorAll("[data-skald-message][data-role=assistant]") : [];
      return all.length > 0 && all[all.length - 1].dataset.state !== "streaming";
    },
    null,
    { timeout, polling: 50 },
  );
  return (await messages(page)).filter((m) => m.role === "assistant").at(-1);
}


describe("the widget in Chromium", () => {
  let browser;
  const open = (options = {}) => browser.newPage(options);
  let demo;
  let embed;
  let upstream;
  let proxy;

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    upstream = await startUpstream({ chunkChars: 3, chunkDelayMs: 20 });
    [demo, embed, browser] = await Promise.all([
      // 80 tokens at 25/s: an answer takes about 3 s, long enough to watch it grow, stop it, reload during it.
      startSkald({
        env: { SKALD_SIMULATED_TOKENS_PER_SECOND: "25", SKALD_SIMULATED_ANSWER_TOKENS: "80" },
        config: "[demo]\ntokens_per_minute_per_address = 200\n[limits]\naddress_requests_per_minute = 10000\n",
      }),
      // Answers echo the question (through an OpenAI-compatible upstream), so a test decides what the model says.
      startSkald({
        env: { SKALD_UPSTREAM_URL: upstream.url },
        config: [
          "[limits]",
          "address_requests_per_minute = 10000",
          '[limits.users."hasty"]',
          "messages_per_minute = 1",
          '[limits.users."broke"]',
          "monthly_requests = 1",
          "[bots.shop]",
          'system_prompt = "You sell shoes."',
          "",
        ].join("\n"),
      }),
      launchBrowser(),
    ]);
    proxy = await startProxy(embed.port);
  });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    await Promise.all([demo?.dispose(), embed?.dispose()]);
    await upstream?.close();
  });

  it("demo page: an answer grows through several states to done, and stop cancels", T, async () => {
    const page = await open();
    await page.goto(demo.http + "/");
    assert.match(await page.title(), /Skald/);
    const launcher = page.locator(sel.launcher);
    assert.equal(await launcher.getAttribute("aria-expanded"), "false");
    await launcher.click();
    assert.equal(await launcher.getAttribute("aria-expanded"), "true");
    await record(page);
    await ask(page, "Bonjour Skald");

    const answer = await lastAnswerDone(page);
    const expected = await reference(demo, "Bonjour Skald");
    assert.equal(answer.text, expected);
    assert.equal(answer.finish, "stop");
    // The demo answer shows what the widget renders: a list, inline code, a code block.
    const shape = await page.evaluate(() => {
      const root = document.querySelector("[data-skald-widget]").shadowRoot;
      const all = root.querySelectorAll("[data-skald-message][data-role=assistant] .b");
      const last = all[all.length - 1];
      return { items: last.querySelectorAll("ul > li").length, code: last.querySelectorAll(":not(pre) > code").length, blocks: last.querySelectorAll("pre > code").length };
    });
    assert.deepEqual(shape, { items: 3, code: 2, blocks: 1 }, JSON.stringify(shape));
    const seen = await page.evaluate(() => window.__seen);
    // While the answer is plain text, each state extends the previous one
    // (once markdown starts, an open `code` span shows its backtick until it
    // closes: the rendered text is no longer a prefix).
    const growing = [...new Set(seen.filter((s) => s.state === "streaming" && s.text).map((s) => s.text))];
    const plain = growing.filter((t) => expected.startsWith(t));
    assert.ok(plain.length >= 3, `intermediate plain states: ${plain.length} of ${growing.length}`);
    for (let i = 1; i < plain.length; i++) assert.ok(plain[i].startsWith(plain[i - 1]), "each state extends the previous one");
    assert.ok(growing[0].length < expected.length / 2, "the first state shows the start of the answer only");
    const user = (await messages(page)).find((m) => m.role === "user");
    assert.deepEqual([user.text, user.state], ["Bonjour Skald", "done"]);
    // Screen readers hear the finished answer once, from the live region.
    await waitFor(() => page.evaluate(() => document.querySelector("[data-skald-widget]").shadowRoot.querySelector("[role=status][aria-live=polite][aria-atomic]").textContent), { what: "announcement" });
    const announced = await page.evaluate(() => document.querySelector("[data-skald-widget]").shadowRoot.querySelector("[role=status][aria-live=polite][aria-atomic]").textContent);
    assert.ok(announced.includes(expected.trim().slice(0, 40)), announced);
    await page.screenshot({ path: join(SHOTS, "widget-demo.png") });

    // Stop mid-stream.
    await ask(page, "Raconte-moi une histoire");
    const stop = page.locator(sel.stop);
    await stop.waitFor({ state: "visible" });
    assert.equal(await page.locator(sel.send).isVisible(), false, "stop replaces send while streaming");
    await waitFor(async () => (await messages(page)).at(-1).text.split(" ").length > 4, { what: "a few words" });
    await stop.click();
    const stopped = await lastAnswerDone(page);
    assert.equal(stopped.finish, "cancelled");
    assert.match(stopped.note, /Stopped/);
    const full = await reference(demo, "Raconte-moi une histoire");
    assert.ok(full.startsWith(stopped.text) && stopped.text.length < full.length, "a prefix of the full answer");
    await page.locator(sel.send).waitFor({ state: "visible" });
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  it("reload keeps the conversation, and an answer being written goes on", T, async () => {
    const page = await open();
    await page.goto(demo.http + "/");
    await page.locator(sel.launcher).click();
    await ask(page, "Première question");
    const first = await lastAnswerDone(page);
    await ask(page, "Deuxième question");
    await waitFor(async () => (await messages(page)).at(-1).text.split(" ").length > 3, { what: "a partial answer" });

    await page.reload();
    // The panel is open again, the conversation is there, and the answer resumes where it was.
    await page.locator(sel.input).waitFor({ state: "visible" });
    const restored = await messages(page);
    assert.deepEqual(restored.slice(0, 3).map((m) => [m.role, m.text]), [
      ["user", "Première question"],
      ["assistant", first.text],
      ["user", "Deuxième question"],
    ]);
    const second = await lastAnswerDone(page);
    assert.equal(second.text, await reference(demo, "Deuxième question"));
    assert.equal(second.finish, "stop");

    // The next message continues the same conversation, after another reload.
    await page.reload();
    await page.locator(sel.input).waitFor({ state: "visible" });
    assert.equal((await messages(page)).length, 4);
    await ask(page, "Troisième question");
    const third = await lastAnswerDone(page);
    assert.equal(third.text, await reference(demo, "Troisième question"));
    const shown = await messages(page);
    assert.equal(shown.length, 6);
    // The server holds the same conversation: one conversation, six messages, same texts.
    const { token, conversationId } = await page.evaluate(() => {
      const key = Object.keys(sessionStorage).find((k) => k.startsWith("skald-widget:"));
      const saved = JSON.parse(sessionStorage.getItem(key));
      return { token: saved.token.value, conversationId: saved.conversationId };
    });
    const stored = await new SkaldApi({ baseUrl: demo.http, token }).messages(conversationId);
    const storedShown = await Promise.all(
      stored.messages.map(async (m) => [m.role, m.role === "assistant" ? await renderedText(m.content) : m.content]),
    );
    assert.deepEqual(storedShown, shown.map((m) => [m.role, m.text]));
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  it("model output is text: markup in an answer runs nothing", T, async () => {
    const site = await startSite(embed, { attrs: { "data-open": "true" } });
    const page = await open();
    let dialogs = 0;
    page.on("dialog", (dialog) => {
      dialogs++;
      void dialog.dismiss();
    });
    try {
      await page.goto(site.url + "?uid=xss-visitor");
      const question = `Voici ${XSS} et [un lien](javascript:alert(2)) et **gras**`;
      await ask(page, question);
      const answer = await lastAnswerDone(page);
      // The echo model answers with the question: the markup comes back from the model.
      assert.equal(upstream.requests.at(-1).messages.at(-1).content, question);
      assert.ok(answer.text.includes(XSS), answer.text);
      assert.ok(answer.text.includes("[un lien](javascript:alert(2))"), "an unsafe link stays text");
      const inShadow = await page.evaluate(() => {
        const root = document.querySelector("[data-skald-widget]").shadowRoot;
        return {
          imgs: root.querySelectorAll("img").length + document.querySelectorAll("img").length,
          links: root.querySelectorAll(".b a").length,
          strong: root.querySelector("[data-role=assistant] .b strong")?.textContent ?? null,
        };
      });
      assert.deepEqual(inShadow, { imgs: 0, links: 0, strong: "gras" });
      const user = (await messages(page)).find((m) => m.role === "user");
      assert.equal(user.text, question, "the user's bubble shows the markup as typed");
      await page.waitForTimeout(300); // a broken image's onerror would have fired by now
      assert.equal(dialogs, 0, "no alert ran");
      assert.deepEqual(page.problems, []);
    } finally {
      await page.close();
      await site.close();
    }
  });

  it("two tabs of one user: a tab with no conversation follows the other's answer live, one with its own marks it", T, async () => {
    const site = await startSite(embed, { attrs: { "data-open": "true" } });
    const tabs = await Promise.all([open(), open(), open()]);
    const [sender, follower, busy] = tabs;
    try {
      // A tab with no conversation follows any: the busy one starts its own
      // before the others open.
      for (const tab of [busy, sender, follower]) {
        const ready = readyFrame(tab);
        await tab.goto(site.url + "?uid=two-tabs");
        await ready;
        if (tab === busy) {
          await ask(busy, "Ma propre conversation");
          await lastAnswerDone(busy);
        }
      }
      await ask(sender, "Vu depuis un autre onglet");
      const sent = await lastAnswerDone(sender);
      const followed = await lastAnswerDone(follower);
      assert.equal(sent.text, "Vu depuis un autre onglet");
      assert.deepEqual(followed, sent);
      assert.deepEqual(await messages(follower), await messages(sender), "the same conversation, live");
      // The tab showing another conversation keeps it, and says where to look.
      await busy.locator(`${sel.launcher}[data-activity]`).waitFor({ state: "attached" });
      assert.match(await busy.locator("[role=alert]").textContent(), /another conversation|autre conversation/);
      assert.deepEqual((await messages(busy)).map((m) => m.text), ["Ma propre conversation", "Ma propre conversation"]);
      for (const tab of tabs) assert.deepEqual(tab.problems, []);
    } finally {
      await Promise.all(tabs.map((tab) => tab.close()));
      await site.close();
    }
  });

  it("renders at most once per animation frame, however fast the deltas come", T, async () => {
    const fast = await startSkald({ env: { SKALD_SIMULATED_TOKENS_PER_SECOND: "2000", SKALD_SIMULATED_ANSWER_TOKENS: "480" } });
    const site = await startSite(fast, { attrs: { "data-open": "true" } });
    const page = await open();
    try {
      let deltas = 0;
      page.on("websocket", (ws) => ws.on("framereceived", (f) => {
        if (typeof f.payload === "string" && f.payload.includes('"type":"delta"')) deltas++;
      }));
      await page.goto(site.url + "?uid=fast-reader");
      await page.locator(sel.input).waitFor({ state: "visible" });
      await record(page);
      await ask(page, "Vite !");
      const answer = await lastAnswerDone(page);
      assert.equal(answer.text, await reference(fast, "Vite !"), "the whole answer, rendered");
      const { frames, renders } = await page.evaluate(() => ({ frames: window.__frames, renders: window.__renders }));
      assert.ok(renders <= frames + 1, `renders ${renders} > animation frames ${frames}`);
      assert.ok(deltas > renders, `deltas ${deltas} should outnumber renders ${renders}`);
    } finally {
      await page.close();
      await site.close();
      await fast.dispose();
    }
  });

  it("a reasoning model: thinking… then its thoughts, collapsed once the answer starts (FR)", T, async () => {
    // 12 thoughts then 12 words at 20 a second, the <think> tags cut across chunks.
    const mock = await startMock({ tokensPerSecond: 20, answerTokens: 12 });
    const thinker = await startSkald({
      config: ["[model]", `upstream_url = "${mock.url}"`, 'upstream_model = "mock-think-split-12"', ""].join("\n"),
    });
    const site = await startSite(thinker, { attrs: { "data-open": "true", "data-lang": "fr" } });
    const page = await open();
    try {
      await page.goto(site.url + "?uid=penseur");
      await page.locator(sel.input).waitFor({ state: "visible" });
      // Every state the last answer goes through, as the DOM shows it.
      await page.evaluate(() => {
        const root = document.querySelector("[data-skald-widget]").shadowRoot;
        window.__states = [];
        new MutationObserver(() => {
          const all = root.querySelectorAll("[data-skald-message][data-role=assistant]");
          const last = all[all.length - 1];
          if (!last) return;
          const details = last.querySelector("[data-skald-reasoning]");
          window.__states.push({
            waiting: !last.querySelector("[data-skald-thinking]").hidden,
            shown: !details.hidden,
            open: details.open,
            summary: details.querySelector("summary").textContent,
            thoughts: details.querySelector(".tt").textContent.length,
            text: last.querySelector(".b").textContent.length,
          });
        }).observe(root, { subtree: true, childList: true, characterData: true, attributes: true });
      });
      await ask(page, "Pourquoi le ciel est-il bleu ?");
      await page.waitForFunction(() => window.__states.some((s) => s.shown && s.text === 0), null, { timeout: 10_000, polling: 20 });
      await page.screenshot({ path: join(SHOTS, "thinking.png") });
      const answer = await lastAnswerDone(page);
      await page.screenshot({ path: join(SHOTS, "thought-then-answered.png") });
      const states = await page.evaluate(() => window.__states);
      assert.ok(states.some((s) => s.waiting && !s.shown && s.text === 0), "« Réflexion… » before the first frame");
      assert.ok(
        states.some((s) => s.shown && s.open && s.text === 0 && s.summary === "Réflexion…" && s.thoughts > 0),
        "the thoughts grow in an open section while the model thinks",
      );
      const last = states.at(-1);
      assert.deepEqual([last.waiting, last.shown, last.open, last.summary], [false, true, false, "Raisonnement"]);
      assert.ok(states.filter((s) => s.text > 0).every((s) => !s.waiting), "no indicator once the answer comes");
      // What it shows is what the server stored: thoughts as text, the answer apart.
      const headers = { authorization: `Bearer ${thinker.token("penseur")}` };
      const { conversations } = await (await fetch(`${thinker.http}/v1/conversations`, { headers })).json();
      const { messages: stored } = await (
        await fetch(`${thinker.http}/v1/conversations/${conversations[0].id}/messages`, { headers })
      ).json();
      const shown = await page.evaluate(() => {
        const root = document.querySelector("[data-skald-widget]").shadowRoot;
        const all = root.querySelectorAll("[data-skald-message][data-role=assistant]");
        return all[all.length - 1].querySelector(".tt").textContent;
      });
      assert.equal(shown, stored[1].reasoning);
      assert.equal(answer.text, await renderedText(stored[1].content));
      assert.ok(!answer.text.includes("think"), answer.text);
    } finally {
      await page.close();
      await site.close();
      await thinker.dispose();
      await mock.stop();
    }
  });

  it("thumbs up / down under a finished answer, by keyboard, with a comment on thumbs down (FR), stored on the server", T, async () => {
    const site = await startSite(embed, { attrs: { "data-open": "true", "data-lang": "fr" } });
    const page = await open();
    const stored = async () => {
      const headers = { authorization: `Bearer ${embed.token("juge")}` };
      const { conversations } = await (await fetch(`${embed.http}/v1/conversations`, { headers })).json();
      const { messages } = await (await fetch(`${embed.http}/v1/conversations/${conversations[0].id}/messages`, { headers })).json();
      return messages.find((m) => m.role === "assistant").feedback ?? null;
    };
    const pressed = () =>
      page.evaluate(() => {
        const root = document.querySelector("[data-skald-widget]").shadowRoot;
        const last = [...root.querySelectorAll("[data-skald-message][data-role=assistant]")].at(-1);
        return [...last.querySelectorAll("[data-skald-rate]")].map((b) => [b.getAttribute("aria-label"), b.getAttribute("aria-pressed")]);
      });
    try {
      await page.goto(site.url + "?uid=juge");
      await page.locator(sel.input).waitFor({ state: "visible" });
      await ask(page, "Réponds en écho");
      // Hidden while the answer streams, shown once it is done.
      await lastAnswerDone(page);
      const row = page.locator(`${sel.assistant} [data-skald-feedback]`).last();
      await row.waitFor({ state: "visible" });
      assert.equal(await row.getAttribute("aria-label"), "Évaluer cette réponse");
      assert.deepEqual(await pressed(), [["Bonne réponse", "false"], ["Mauvaise réponse", "false"]]);
      // Thumbs down from the keyboard: sent at once, then the comment field takes the focus.
      await page.locator(`${sel.assistant} [data-skald-rate="-1"]`).last().focus();
      await page.keyboard.press("Enter");
      await page.locator("[data-skald-comment]").last().waitFor({ state: "visible" });
      const focused = await page.evaluate(() => document.querySelector("[data-skald-widget]").shadowRoot.activeElement?.hasAttribute("data-skald-comment"));
      assert.equal(focused, true, "the comment field has the focus");
      assert.deepEqual(await stored(), { rating: -1 });
      assert.equal((await pressed())[1][1], "true");
      await page.keyboard.type("La réponse répète ma question.");
      await page.keyboard.press("Tab");
      await page.keyboard.press("Enter");
      await page.locator("[data-skald-comment]").last().waitFor({ state: "hidden" });
      assert.deepEqual(await stored(), { rating: -1, comment: "La réponse répète ma question." });
      await waitFor(() => page.evaluate(() => document.querySelector("[data-skald-widget]").shadowRoot.querySelector("[role=status][aria-live=polite][aria-atomic]").textContent === "Merci pour votre avis."), { what: "thanks announced" });
      await page.screenshot({ path: join(SHOTS, "feedback.png") });
      // Thumbs up replaces it; pressing it again withdraws it.
      await page.locator(`${sel.assistant} [data-skald-rate="1"]`).last().click();
      await waitFor(async () => (await stored())?.rating === 1, { what: "thumbs up stored" });
      // The buttons change once the server said yes (its answer may come
      // after the stored rating is readable).
      const shows = async (up, down) => {
        const want = [["Bonne réponse", up], ["Mauvaise réponse", down]];
        await waitFor(async () => JSON.stringify(await pressed()) === JSON.stringify(want), { what: `pressed ${up}/${down}` });
      };
      await shows("true", "false");
      await page.locator(`${sel.assistant} [data-skald-rate="1"]`).last().click();
      await waitFor(async () => (await stored()) === null, { what: "rating withdrawn" });
      await shows("false", "false");
      // A rating survives a reload (and comes from the server's history).
      await page.locator(`${sel.assistant} [data-skald-rate="1"]`).last().click();
      await waitFor(async () => (await stored())?.rating === 1, { what: "thumbs up stored again" });
      await page.reload();
      await page.locator(`${sel.assistant} [data-skald-feedback]`).last().waitFor({ state: "visible" });
      assert.equal((await pressed())[0][1], "true");
      assert.deepEqual(page.problems, []);
    } finally {
      await page.close();
      await site.close();
    }
  });

  it("data-bot: the widget talks to the bot its tag names", T, async () => {
    const site = await startSite(embed, { attrs: { "data-open": "true", "data-bot": "shop" } });
    const page = await open();
    try {
      await page.goto(site.url + "?uid=shopper");
      await page.locator(sel.input).waitFor({ state: "visible" });
      await ask(page, "Do you have red shoes?");
      assert.equal((await lastAnswerDone(page)).finish, "stop");
      const headers = { authorization: `Bearer ${embed.token("shopper")}` };
      const { conversations } = await (await fetch(`${embed.http}/v1/conversations`, { headers })).json();
      assert.deepEqual(conversations.map((c) => c.bot), ["shop"]);
      assert.deepEqual(page.problems, []);
    } finally {
      await page.close();
      await site.close();
    }
  });

  it("errors are kind: the rate limit shows its wait, the quota says so", T, async () => {
    const site = await startSite(embed, { attrs: { "data-open": "true" } });
    const page = await open();
    try {
      await page.goto(site.url + "?uid=hasty");
      await ask(page, "un");
      await lastAnswerDone(page);
      await ask(page, "deux");
      const alert = page.locator("[role=alert]");
      await alert.waitFor({ state: "visible" });
      assert.match(await alert.textContent(), /You can send again in \d+ s\./);
      assert.equal(await page.locator(sel.send).isDisabled(), true);
      const refused = await waitFor(async () => {
        const last = (await messages(page)).at(-1);
        return last.state === "error" && last;
      }, { what: "the refused message marked" });
      assert.deepEqual([refused.role, refused.state, refused.note], ["user", "error", "Not sent"]);
      assert.equal(await page.locator(sel.input).inputValue(), "deux", "the message is back in the box");

      // Another user in a tab of their own (a tab keeps its user's token).
      const other = await open();
      try {
        await other.goto(site.url + "?uid=broke");
        await ask(other, "un");
        await lastAnswerDone(other);
        await ask(other, "deux");
        const quota = other.locator("[role=alert]");
        await quota.waitFor({ state: "visible" });
        assert.match(await quota.textContent(), /usage limit for this month/);
        assert.deepEqual(other.problems, []);
      } finally {
        await other.close();
      }
      assert.deepEqual(page.problems, []);
    } finally {
      await page.close();
      await site.close();
    }
  });

  it("a lost connection says it is retrying, then the answer goes on", T, async () => {
    const site = await startSite(embed, { attrs: { "data-open": "true" }, wsUrl: proxy.url });
    const page = await open();
    try {
      await page.goto(site.url + "?uid=traveller");
      await ask(page, "Une réponse assez longue pour être coupée en plein milieu, puis reprise sans perte.");
      await waitFor(async () => (await messages(page)).at(-1).text.length > 5, { what: "a partial answer" });
      proxy.refuse(true);
      proxy.cut();
      const banner = page.locator(".bn");
      await banner.waitFor({ state: "visible" });
      assert.match(await banner.textContent(), /Connection lost\. Reconnecting/);
      proxy.refuse(false);
      const answer = await lastAnswerDone(page, 40_000);
      assert.equal(answer.text, "Une réponse assez longue pour être coupée en plein milieu, puis reprise sans perte.");
      await banner.waitFor({ state: "hidden" });
    } finally {
      proxy.refuse(false);
      await page.close();
      await site.close();
    }
  });

  it("keyboard, ARIA, French, themes, and styles that leak neither way", T, async () => {
    const site = await startSite(embed, {
      attrs: { "data-lang": "fr", "data-theme": "dark", "data-title": "Aide" },
      head: "<style>:root{--skald-accent:rgb(0, 128, 0)} button{background:rgb(255, 0, 0)!important;font-size:40px!important} body{font-family:serif;color:rgb(0,0,255)}</style>",
    });
    const page = await open();
    try {
      await page.goto(site.url + "?uid=clavier");
      const launcher = page.locator(sel.launcher);
      assert.equal(await launcher.getAttribute("aria-label"), "Ouvrir la discussion");
      await launcher.focus();
      await page.keyboard.press("Enter");
      await page.locator(sel.input).waitFor({ state: "visible" });
      const focused = () => page.evaluate(() => document.querySelector("[data-skald-widget]").shadowRoot.activeElement?.getAttribute("data-skald-input") !== undefined && document.querySelector("[data-skald-widget]").shadowRoot.activeElement?.tagName);
      assert.equal(await focused(), "TEXTAREA", "opening puts the focus in the message box");
      assert.equal(await page.locator(sel.input).getAttribute("placeholder"), "Écrivez un message…");
      assert.equal(await page.locator("[role=dialog] h2").textContent(), "Aide");
      await page.keyboard.type("ligne un");
      await page.keyboard.press("Shift+Enter");
      await page.keyboard.type("ligne deux");
      await page.keyboard.press("Enter");
      const answer = await lastAnswerDone(page);
      assert.equal(answer.text, "ligne un\nligne deux".replace("\n", ""), "two lines render as a line break");
      assert.equal((await messages(page)).find((m) => m.role === "user").text, "ligne un\nligne deux");
      assert.equal(await page.locator("[role=log]").getAttribute("aria-live"), "off");
      await page.keyboard.press("Escape");
      assert.equal(await page.locator("[role=dialog]").isHidden(), true);
      assert.equal(await launcher.getAttribute("aria-expanded"), "false");
      const active = await page.evaluate(() => document.querySelector("[data-skald-widget]").shadowRoot.activeElement?.hasAttribute("data-skald-launcher"));
      assert.equal(active, true, "closing gives the focus back to the launcher");

      const style = await page.evaluate(() => {
        const root = document.querySelector("[data-skald-widget]").shadowRoot;
        const css = (el) => getComputedStyle(el);
        return {
          launcherBg: css(root.querySelector("[data-skald-launcher]")).backgroundColor,
          launcherFont: css(root.querySelector("[data-skald-launcher]")).fontSize,
          panelBg: css(root.querySelector(".p")).backgroundColor,
          panelColor: css(root.querySelector(".p")).color,
          pageButtonRadius: css(document.getElementById("page-button")).borderRadius,
          pageButtonBg: css(document.getElementById("page-button")).backgroundColor,
        };
      });
      assert.equal(style.launcherBg, "rgb(0, 128, 0)", "--skald-accent themes it");
      assert.notEqual(style.launcherFont, "40px", "page styles do not leak in");
      assert.equal(style.panelBg, "rgb(22, 24, 29)", "data-theme=dark");
      assert.notEqual(style.panelColor, "rgb(0, 0, 255)", "inherited page colour does not leak in");
      assert.equal(style.pageButtonRadius, "0px", "widget styles do not leak out");
      assert.equal(style.pageButtonBg, "rgb(255, 0, 0)");
      assert.deepEqual(page.problems, []);
    } finally {
      await page.close();
      await site.close();
    }
  });

  it("works on a page with a strict Content-Security-Policy (no inline styles or scripts)", T, async () => {
    const ws = embed.url.replace(/\/v1\/ws$/, "");
    const csp = `default-src 'none'; script-src ${embed.http}; connect-src 'self' ${embed.http} ${ws}; style-src 'self'; img-src 'self' data:`;
    const site = await startSite(embed, { head: `<meta http-equiv="Content-Security-Policy" content="${csp}">` });
    const page = await open();
    const violations = [];
    page.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
    });
    try {
      await page.goto(site.url + "?uid=strict");
      await page.locator(sel.launcher).click();
      const bg = await page.locator(sel.launcher).evaluate((el) => getComputedStyle(el).backgroundColor);
      assert.equal(bg, "rgb(79, 70, 229)", "the widget's styles apply");
      await ask(page, "Sous une politique stricte");
      const answer = await lastAnswerDone(page);
      assert.equal(answer.text, "Sous une politique stricte");
      assert.deepEqual(violations, []);
    } finally {
      await page.close();
      await site.close();
    }
  });

  it("fills a phone-sized screen", T, async () => {
    const site = await startSite(embed);
    const page = await open({ viewport: { width: 375, height: 667 } });
    try {
      await page.goto(site.url + "?uid=phone");
      await page.locator(sel.launcher).click();
      await ask(page, "Sur mon téléphone, **en gras** et `du code`.");
      await lastAnswerDone(page);
      const box = await page.locator("[role=dialog]").boundingBox();
      assert.deepEqual([box.x, box.y, box.width, box.height], [0, 0, 375, 667]);
      assert.equal(await page.locator(sel.launcher).isVisible(), false, "the panel's close button replaces the launcher");
      assert.equal(await page.locator(sel.input).evaluate((el) => getComputedStyle(el).fontSize), "16px", "no zoom on focus (iOS)");
      await page.screenshot({ path: join(SHOTS, "widget-phone.png") });
      assert.deepEqual(page.problems, []);
    } finally {
      await page.close();
      await site.close();
    }
  });
});
