// The chat widget: a launcher and a panel in a shadow root, speaking to
// Skald through @skald/client.
//
// - Answers render as they stream, at most once per animation frame (a
//   fast model never renders more often than the screen refreshes), as
//   text through a safe markdown subset: never HTML.
// - Stop cancels the answer (also after a reconnect or a reload).
// - A reload keeps the conversation, and resumes an answer that was being
//   written (by stream id and last seq) or re-sends a message that had no
//   ack yet (same send id: never a duplicate).
// - Another tab or device of the same user that starts an answer: a tab
//   showing that conversation (or none yet) follows it live; one showing
//   another conversation marks the launcher and says so.
// - The widget only holds short-lived tokens from the site's token URL.

import {
  SkaldClient,
  httpError,
  jwtExpiry,
  type ChatStream,
  type StartedInfo,
  type StateChange,
  type StoredMessage,
} from "@skald/client";

import { fill, strings, type Strings } from "./i18n.js";
import { renderMarkdown, type RenderCache } from "./render.js";
import { Store, type Saved, type SavedMessage } from "./storage.js";
import { CSS } from "./styles.js";

export interface WidgetOptions {
  /** The WebSocket endpoint, e.g. `wss://chat.example.com/v1/ws`. */
  url: string;
  /** URL that answers POST with `{"token","expires_in"}` (the site's backend, or the demo endpoint). */
  tokenUrl?: string;
  /** Or a function that returns a short-lived token. */
  getToken?: () => string | Promise<string>;
  bot?: string;
  /** `fr` or `en` (default: the page's language). */
  lang?: string;
  /** `light`, `dark` or `auto` (the system's). */
  theme?: string;
  title?: string;
  /** `right` (default) or `left`. */
  position?: string;
  /** Open the panel at once. */
  open?: boolean;
  /** Where the widget's host element goes (default: `document.body`). */
  container?: HTMLElement;
}

export interface WidgetHandle {
  open(): void;
  close(): void;
  newConversation(): void;
  destroy(): void;
  /** The host element (its shadow root is open, for tests and integrators). */
  readonly element: HTMLElement;
}

interface View {
  data: SavedMessage;
  el: HTMLElement;
  bubble: HTMLElement;
  note: HTMLElement;
  /** Assistant only: "thinking…" until the first frame. */
  waiting?: HTMLElement;
  /** Assistant only: the reasoning, collapsible, above the answer. */
  thinking?: HTMLDetailsElement;
  thoughts?: HTMLElement;
  /** Whether the reasoning was collapsed when the answer began (once). */
  collapsed?: boolean;
  /** Assistant only: thumbs up / down under a finished answer, and the comment form of a thumbs down. */
  rating?: { row: HTMLElement; up: HTMLButtonElement; down: HTMLButtonElement; form: HTMLFormElement; comment: HTMLTextAreaElement };
  cache: RenderCache;
  dirty: boolean;
}

type Attrs = Record<string, string | boolean>;

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, children: Array<Node | string> = []): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false) continue;
    node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function icon(path: string, cls?: string): SVGSVGElement {
  const svg = document.createElementNS(SVG_NS, "svg");
  if (cls) svg.setAttribute("class", cls);
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "22");
  svg.setAttribute("height", "22");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("fill", "currentColor");
  const p = document.createElementNS(SVG_NS, "path");
  p.setAttribute("d", path);
  svg.append(p);
  return svg;
}
const CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z";
const CLOSE = "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12 19 17.6 17.6 19 12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z";
const SEND = "M3 20.5 21 12 3 3.5v6.6L15 12 3 13.9z";
const STOP = "M7 7h10v10H7z";
const NEW = "M12 5V2L7 6l5 4V7a6 6 0 1 1-6 6H4a8 8 0 1 0 8-8z";
const THUMB_UP = "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.5-1.1L13.2 1 6.6 7.6C6.2 8 6 8.5 6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z";
const THUMB_DOWN = "M16 3H7c-.8 0-1.5.5-1.8 1.2l-3 7.1c-.1.2-.2.5-.2.7v2a2 2 0 0 0 2 2h6.3l-1 4.6v.3c0 .4.2.8.5 1.1l1.1 1 6.6-6.6c.4-.4.5-.9.5-1.4V5a2 2 0 0 0-2-2zm4 0v12h4V3h-4z";

let instances = 0;

export class ChatWidget implements WidgetHandle {
  readonly element: HTMLElement;
  private readonly o: WidgetOptions;
  private readonly t: Strings;
  private readonly store: Store;
  private saved: Saved;
  private readonly root: HTMLElement;
  private readonly launcher: HTMLButtonElement;
  private readonly panel: HTMLElement;
  private readonly log: HTMLElement;
  private readonly empty: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly alertBox: HTMLElement;
  private readonly input: HTMLTextAreaElement;
  private readonly sendButton: HTMLButtonElement;
  private readonly stopButton: HTMLButtonElement;
  private readonly counter: HTMLElement;
  private readonly announcer: HTMLElement;
  private views: View[] = [];
  private client: SkaldClient | undefined;
  private current: { stream: ChatStream; view: View } | undefined;
  private raf = 0;
  private saveTimer: ReturnType<typeof setTimeout> | undefined;
  private bannerTimer: ReturnType<typeof setTimeout> | undefined;
  private alertTimer: ReturnType<typeof setInterval> | undefined;
  private blockedUntil = 0;
  private maxChars = 4000;
  private lastToken: string | undefined;
  private synced = false;

  constructor(options: WidgetOptions) {
    this.o = options;
    const lang = options.lang || document.documentElement.lang || navigator.language;
    const { lang: code, t } = strings(lang);
    this.t = t;
    this.store = new Store(`skald-widget:${options.url}:${options.bot ?? "default"}`);
    this.saved = this.store.load();
    const id = `skald-${++instances}`;

    this.element = h("div", { "data-skald-widget": true });
    const shadow = this.element.attachShadow({ mode: "open" });
    // A constructed style sheet is not an inline style: it works on pages
    // whose Content-Security-Policy forbids 'unsafe-inline' styles.
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
    } catch {
      shadow.append(h("style", {}, [CSS]));
    }

    this.launcher = h("button", { type: "button", class: "l", "data-skald-launcher": true, "aria-expanded": "false", "aria-controls": `${id}-p`, "aria-label": t.open }, [icon(CHAT, "ic"), icon(CLOSE, "ix")]);
    const title = h("h2", { id: `${id}-t` }, [options.title || t.title]);
    const newButton = h("button", { type: "button", class: "ib", "data-skald-new": true, "aria-label": t.newChat, title: t.newChat }, [icon(NEW)]);
    const closeButton = h("button", { type: "button", class: "ib", "data-skald-close": true, "aria-label": t.close, title: t.close }, [icon(CLOSE)]);
    this.banner = h("div", { class: "bn", role: "status", hidden: true });
    this.empty = h("p", { class: "em" }, [t.empty]);
    // The log is not a live region: a streaming answer would be read out
    // token by token. Finished answers are announced once, below.
    this.log = h("div", { class: "log", role: "log", "aria-live": "off", "aria-label": t.log, tabindex: "0" }, [this.empty]);
    this.alertBox = h("div", { class: "al", role: "alert", hidden: true });
    this.input = h("textarea", { id: `${id}-i`, rows: "1", "data-skald-input": true, placeholder: t.placeholder, autocomplete: "off", enterkeyhint: "send" });
    this.sendButton = h("button", { type: "submit", class: "sb", "data-skald-send": true, "aria-label": t.send, title: t.send }, [icon(SEND)]);
    this.stopButton = h("button", { type: "button", class: "sb", "data-skald-stop": true, "aria-label": t.stop, title: t.stop, hidden: true }, [icon(STOP)]);
    this.counter = h("div", { class: "cc", "aria-live": "polite", hidden: true });
    const form = h("form", {}, [h("label", { class: "sr", for: `${id}-i` }, [t.label]), this.input, this.sendButton, this.stopButton]);
    this.announcer = h("div", { class: "sr", role: "status", "aria-live": "polite", "aria-atomic": "true" });
    this.panel = h("section", { class: "p", id: `${id}-p`, role: "dialog", "aria-labelledby": `${id}-t`, hidden: true, lang: code }, [
      h("header", { class: "hd" }, [title, newButton, closeButton]),
      this.banner,
      this.log,
      this.alertBox,
      form,
      this.counter,
      this.announcer,
    ]);
    const theme = ["light", "dark", "auto"].includes(options.theme ?? "") ? (options.theme as string) : "light";
    this.root = h("div", { class: "r", "data-theme": theme, "data-position": options.position === "left" ? "left" : "right" }, [this.launcher, this.panel]);
    shadow.append(this.root);

    this.launcher.addEventListener("click", () => (this.panel.hidden ? this.open() : this.close()));
    closeButton.addEventListener("click", () => this.close());
    newButton.addEventListener("click", () => this.newConversation());
    this.stopButton.addEventListener("click", () => this.stop());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener("input", () => this.onInput());
    this.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        this.close();
      }
    });

    (options.container ?? document.body).append(this.element);
    for (const message of this.saved.messages) this.addView(message);
    if (this.saved.open || options.open) this.open(false);
    this.recover();
  }

  open(focus = true): void {
    this.launcher.removeAttribute("data-activity");
    this.panel.hidden = false;
    this.root.setAttribute("data-open", "");
    this.launcher.setAttribute("aria-expanded", "true");
    this.launcher.setAttribute("aria-label", this.t.close);
    this.saved.open = true;
    this.save();
    this.ensureClient();
    this.scrollToEnd();
    if (focus) this.input.focus();
  }

  close(): void {
    if (this.panel.hidden) return;
    const hadFocus = this.element.shadowRoot?.activeElement != null;
    this.panel.hidden = true;
    this.root.removeAttribute("data-open");
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.setAttribute("aria-label", this.t.open);
    this.saved.open = false;
    this.save();
    if (hadFocus) this.launcher.focus();
  }

  /** Forgets the conversation (stopping its answer) and starts afresh. */
  newConversation(): void {
    this.current?.stream.cancel();
    this.current = undefined;
    for (const view of this.views) view.el.remove();
    this.views = [];
    this.saved = { messages: [], open: this.saved.open, ...(this.saved.token ? { token: this.saved.token } : {}) };
    this.save();
    this.empty.hidden = false;
    this.setStreaming(false);
    this.hideAlert();
    this.input.focus();
  }

  destroy(): void {
    this.client?.close();
    this.client = undefined;
    if (this.raf) cancelAnimationFrame(this.raf);
    clearTimeout(this.saveTimer);
    clearTimeout(this.bannerTimer);
    clearInterval(this.alertTimer);
    this.element.remove();
  }

  // ---- connection ---------------------------------------------------------

  private ensureClient(): SkaldClient {
    if (this.client && this.client.state !== "closed") return this.client;
    const client = new SkaldClient({ url: this.o.url, token: () => this.token(), clientName: "skald-widget/0.1.0" });
    this.client = client;
    client.on("state", (change) => this.onState(change));
    client.on("started", (started) => this.onStarted(started));
    client.on("ready", (info) => {
      this.maxChars = info.limits.max_message_chars;
      this.onInput();
      if (!this.synced) {
        this.synced = true;
        void this.syncHistory();
      }
    });
    return client;
  }

  /** A short-lived token: kept in the tab while valid, renewed through the token URL. */
  private async token(): Promise<string> {
    if (this.o.getToken) return this.o.getToken();
    const saved = this.saved.token;
    // Asked again for the token it just gave: the server refused it.
    if (saved && saved.value !== this.lastToken && saved.exp - Date.now() / 1000 > 60) {
      this.lastToken = saved.value;
      return saved.value;
    }
    const headers: Record<string, string> = { Accept: "application/json" };
    // The expiring token lets the demo endpoint keep the visitor's identity (and so the conversation).
    if (saved) headers["Authorization"] = `Bearer ${saved.value}`;
    const response = await fetch(this.o.tokenUrl as string, { method: "POST", headers, credentials: "same-origin", cache: "no-store" });
    if (!response.ok) throw await httpError(response);
    const body = (await response.json()) as { token?: unknown; expires_in?: unknown };
    if (typeof body.token !== "string") throw new TypeError("the token URL answered without a token");
    const ttl = typeof body.expires_in === "number" ? body.expires_in : 300;
    this.saved.token = { value: body.token, exp: jwtExpiry(body.token) ?? Date.now() / 1000 + ttl };
    this.lastToken = body.token;
    this.save();
    return body.token;
  }

  private onState(change: StateChange): void {
    clearTimeout(this.bannerTimer);
    const show = (text: string, delay = 0): void => {
      this.bannerTimer = setTimeout(() => {
        this.banner.textContent = text;
        this.banner.hidden = false;
      }, delay);
    };
    switch (change.state) {
      case "open":
        this.banner.hidden = true;
        break;
      case "connecting":
        show(this.t.connecting, 800);
        break;
      case "reconnecting":
        if (change.reason?.startsWith("token provider")) show(this.t.signIn);
        else if ((change.delayMs ?? 0) >= 2000) show(fill(this.t.reconnectingIn, { s: Math.ceil((change.delayMs as number) / 1000) }));
        else show(this.t.reconnecting, change.attempt && change.attempt > 1 ? 0 : 400);
        break;
      case "closed":
        this.banner.hidden = true;
        // A refused token is not worth keeping; the next send starts afresh.
        delete this.saved.token;
        this.save();
        this.showAlert(this.t.offline);
        break;
    }
  }

  // ---- sending and streaming ----------------------------------------------

  private submit(): void {
    const text = this.input.value.trim();
    if (!text || this.current || Date.now() < this.blockedUntil) return;
    if ([...text].length > this.maxChars) {
      this.showAlert(fill(this.t.tooLong, { n: this.maxChars }));
      return;
    }
    this.hideAlert();
    // A message refused just before, now sent again, replaces its "not sent" bubble.
    const last = this.views.at(-1);
    if (last && last.data.role === "user" && last.data.state === "error" && last.data.text === text) {
      last.el.remove();
      this.views.pop();
    }
    this.input.value = "";
    this.onInput();
    const client = this.ensureClient();
    this.addView({ role: "user", text, state: "done" });
    const view = this.addView({ role: "assistant", text: "", state: "streaming" });
    const stream = client.send(text, {
      conversationId: this.saved.conversationId ?? null,
      ...(this.o.bot ? { bot: this.o.bot } : {}),
    });
    view.data.sendId = stream.id;
    this.save();
    void this.follow(stream, view);
  }

  private stop(): void {
    this.current?.stream.cancel();
  }

  /**
   * Another connection of this user started an answer. Followed here when
   * this tab shows its conversation (or none yet) and writes nothing itself;
   * otherwise marked, so the user knows where to look.
   */
  private onStarted(started: StartedInfo): void {
    const showing = this.saved.conversationId;
    const ours =
      started.bot === (this.o.bot ?? "default") &&
      (showing === undefined ? this.views.length === 0 : showing === started.conversationId);
    if (!ours || this.current) {
      this.launcher.setAttribute("data-activity", "");
      if (!this.panel.hidden) this.showAlert(this.t.elsewhere, "info");
      this.announce(this.t.elsewhere);
      return;
    }
    this.saved.conversationId = started.conversationId;
    this.addView({ role: "user", text: started.userMessage.content, state: "done", messageId: started.userMessage.id });
    const view = this.addView({ role: "assistant", text: "", state: "streaming", streamId: started.streamId, messageId: started.messageId });
    this.save();
    const stream = this.ensureClient().resume(started.streamId, {
      conversationId: started.conversationId,
      messageId: started.messageId,
    });
    void this.follow(stream, view);
  }

  /** Renders a stream into its view until it ends. */
  private async follow(stream: ChatStream, view: View): Promise<void> {
    this.current = { stream, view };
    this.setStreaming(true);
    void stream.ack.then((ack) => {
      if (ack.conversationId) this.saved.conversationId = ack.conversationId;
      view.data.streamId = ack.streamId;
      if (ack.messageId) view.data.messageId = ack.messageId;
      this.save();
    }, () => {});
    // The thinking, next to the text: each piece marks the view for the
    // next frame, as the text's do.
    const thinking = (async () => {
      for await (const _ of stream.reasoning) {
        view.data.reasoning = stream.reasoningText;
        view.data.reasoningSeq = stream.lastReasoningSeq;
        this.paintSoon(view);
        this.saveSoon();
      }
    })().catch(() => {});
    try {
      for await (const _ of stream) {
        view.data.text = stream.text;
        view.data.seq = stream.lastSeq;
        this.paintSoon(view);
        this.saveSoon();
      }
      await thinking;
      const done = await stream.done;
      view.data.text = done.text;
      if (done.reasoning) view.data.reasoning = done.reasoning;
      view.data.messageId = done.messageId;
      view.data.state = "done";
      view.data.finish = done.finishReason;
      if (done.finishReason === "cancelled") view.data.note = this.t.stopped;
      if (done.finishReason === "length") view.data.note = this.t.cut;
      if (!done.text && done.usage.completion_tokens > 0) {
        // A replayed `done` without its deltas (the stream left the server's
        // registry): the stored answer has the text.
        void this.syncHistory(true);
      }
      this.announce(fill(this.t.answered, { text: done.text.slice(0, 600) }));
    } catch (error) {
      this.failed(error, stream, view);
    } finally {
      delete view.data.sendId;
      if (this.current?.stream === stream) {
        this.current = undefined;
        this.setStreaming(false);
      }
      this.paintSoon(view);
      this.save();
    }
  }

  private failed(error: unknown, stream: ChatStream, view: View): void {
    const code = (error as { code?: string }).code;
    const retry = (error as { retryAfterMs?: number }).retryAfterMs;
    const t = this.t;
    const messages: Record<string, string> = {
      quota_exceeded: t.quota,
      message_too_long: fill(t.tooLong, { n: this.maxChars }),
      busy: t.busy,
      upstream_error: t.upstream,
      upstream_timeout: t.upstream,
      unavailable: t.unavailable,
      not_found: t.notFound,
    };
    const text = (code && messages[code]) || (code ? t.generic : t.offline);
    if (stream.streamId === undefined || (error as { requestId?: string }).requestId !== undefined) {
      // Refused before it started: no answer; the message goes back to the input.
      const index = this.views.indexOf(view);
      view.el.remove();
      this.views.splice(index, 1);
      const user = this.views.at(-1);
      if (user && user.data.role === "user") {
        user.data.state = "error";
        user.data.note = t.notSent;
        this.paintSoon(user);
        if (!this.input.value) {
          this.input.value = user.data.text;
          this.onInput();
        }
      }
      if (code === "not_found") delete this.saved.conversationId;
      if (code === "rate_limited") this.rateLimited(retry ?? 1000);
      else this.showAlert(text);
      return;
    }
    view.data.state = "error";
    view.data.finish = "error";
    view.data.note = code === "not_found" ? t.interrupted : text;
    if (code === "not_found") void this.syncHistory(true);
  }

  private rateLimited(ms: number): void {
    this.blockedUntil = Date.now() + ms;
    this.sendButton.disabled = true;
    const tick = (): void => {
      const left = Math.ceil((this.blockedUntil - Date.now()) / 1000);
      if (left > 0) {
        this.alertBox.textContent = fill(this.t.rateLimited, { s: left });
        return;
      }
      clearInterval(this.alertTimer);
      this.sendButton.disabled = false;
      this.showAlert(this.t.canSend, "info");
    };
    this.showAlert("");
    tick();
    this.alertTimer = setInterval(tick, 1000);
  }

  /** After a reload: resume the answer that was being written, or re-send an unacknowledged message. */
  private recover(): void {
    const view = this.views.at(-1);
    if (!view || view.data.role !== "assistant" || view.data.state !== "streaming") return;
    const client = this.ensureClient();
    const { streamId, sendId, seq, text, reasoning, reasoningSeq } = view.data;
    if (streamId) {
      const after = { afterSeq: seq ?? -1, text, afterReasoningSeq: reasoningSeq ?? -1, reasoning: reasoning ?? "" };
      void this.follow(client.resume(streamId, { ...after, ...(this.saved.conversationId ? { conversationId: this.saved.conversationId } : {}) }), view);
      return;
    }
    const user = this.views.at(-2);
    if (sendId && user && user.data.role === "user") {
      const stream = client.send(user.data.text, {
        id: sendId,
        conversationId: this.saved.conversationId ?? null,
        ...(this.o.bot ? { bot: this.o.bot } : {}),
      });
      void this.follow(stream, view);
      return;
    }
    view.data.state = "error";
    view.data.note = this.t.interrupted;
    this.paintSoon(view);
  }

  /**
   * Replaces the transcript with the server's history of the conversation
   * (the source of truth) when it differs. Kept as is when the history API
   * cannot be reached; cleared when the conversation is gone.
   */
  private async syncHistory(force = false): Promise<void> {
    const conversationId = this.saved.conversationId;
    const client = this.client;
    if (!conversationId || !client || (this.current && !force)) return;
    const messages: StoredMessage[] = [];
    try {
      for await (const message of client.api.allMessages(conversationId, 100)) {
        messages.push(message);
        if (messages.length >= 200) break;
      }
    } catch (error) {
      const e = error as { code?: string; status?: number; message?: string };
      // A JSON `not_found` means the conversation is gone (deleted, or
      // another user); a bare 404 means this server has no history API.
      if (e.code === "not_found" && e.status === 404 && !/^HTTP /.test(e.message ?? "")) {
        if (this.saved.conversationId === conversationId && !this.current) this.newConversation();
      }
      return;
    }
    if (this.saved.conversationId !== conversationId || this.current) return;
    // Tool turns (the OpenAI-compatible API's) are not chat bubbles.
    const next: SavedMessage[] = messages.filter((m) => m.role !== "tool").map((m) => {
      const note = m.finish_reason === "cancelled" ? this.t.stopped : m.finish_reason === "length" ? this.t.cut : m.finish_reason === "error" ? this.t.interrupted : undefined;
      return {
        role: m.role === "user" ? "user" : "assistant",
        text: m.content,
        ...(m.reasoning ? { reasoning: m.reasoning } : {}),
        state: m.finish_reason === "error" ? "error" : "done",
        ...(m.finish_reason ? { finish: m.finish_reason } : {}),
        ...(note ? { note } : {}),
        ...(m.feedback ? { rating: m.feedback.rating } : {}),
        messageId: m.id,
      };
    });
    const same =
      next.length === this.views.length &&
      next.every((m, i) => m.text === this.views[i]?.data.text && m.role === this.views[i]?.data.role && m.state === this.views[i]?.data.state);
    if (same) return;
    for (const view of this.views) view.el.remove();
    this.views = [];
    for (const message of next) this.addView(message);
    this.empty.hidden = this.views.length > 0;
    this.save();
  }

  // ---- rendering ------------------------------------------------------------

  private addView(data: SavedMessage): View {
    const bubble = h("div", { class: "b" });
    const note = h("div", { class: "nt", hidden: true });
    const view: View = { data, el: bubble, bubble, note, cache: [], dirty: false };
    const parts: Node[] = [h("span", { class: "sr" }, [data.role === "user" ? this.t.you : this.t.bot])];
    if (data.role === "assistant") {
      view.waiting = h("div", { class: "ti", "data-skald-thinking": true, hidden: true }, [this.t.thinking]);
      view.thoughts = h("div", { class: "tt" });
      view.thinking = h("details", { class: "th", "data-skald-reasoning": true, hidden: true }, [
        h("summary", {}, [this.t.thinking]),
        view.thoughts,
      ]);
      view.thinking.open = true;
      parts.push(view.waiting, view.thinking);
    }
    parts.push(bubble, note);
    if (data.role === "assistant") {
      view.rating = this.ratingControls(view);
      parts.push(view.rating.row, view.rating.form);
    }
    view.el = h("div", { class: "m", "data-skald-message": true, "data-role": data.role, "data-state": data.state }, parts);
    const el = view.el;
    this.paint(view);
    this.log.append(el);
    this.views.push(view);
    this.empty.hidden = true;
    this.scrollToEnd();
    return view;
  }

  /** Marks a view for the next animation frame: one render per frame, however many deltas arrived. */
  private paintSoon(view: View): void {
    view.dirty = true;
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      const log = this.log;
      const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
      for (const v of this.views) if (v.dirty) this.paint(v);
      if (atEnd) this.scrollToEnd();
    });
  }

  private paint(view: View): void {
    view.dirty = false;
    const { data, el } = view;
    if (el.dataset["state"] !== data.state) el.dataset["state"] = data.state;
    if (data.finish && el.dataset["finish"] !== data.finish) el.dataset["finish"] = data.finish;
    if (data.state === "streaming") el.setAttribute("aria-busy", "true");
    else el.removeAttribute("aria-busy");
    if (data.role === "user") {
      if (view.bubble.textContent !== data.text) view.bubble.textContent = data.text;
    } else {
      view.cache = renderMarkdown(view.bubble, data.text, view.cache);
      this.paintThinking(view);
    }
    const note = data.note ?? "";
    if (view.note.textContent !== note) view.note.textContent = note;
    view.note.hidden = !note;
    if (view.rating) {
      const { row, up, down } = view.rating;
      row.hidden = !(data.state === "done" && data.messageId && data.finish !== "error");
      up.setAttribute("aria-pressed", String(data.rating === 1));
      down.setAttribute("aria-pressed", String(data.rating === -1));
    }
  }

  /**
   * Thumbs up / down under a finished answer (native buttons with
   * `aria-pressed`: reachable and usable with the keyboard). A thumbs down
   * is sent at once, then offers an optional comment; pressing a pressed
   * thumb withdraws the rating.
   */
  private ratingControls(view: View): NonNullable<View["rating"]> {
    const t = this.t;
    const up = h("button", { type: "button", class: "fk", "data-skald-rate": "1", "aria-label": t.good, title: t.good, "aria-pressed": "false" }, [icon(THUMB_UP)]);
    const down = h("button", { type: "button", class: "fk", "data-skald-rate": "-1", "aria-label": t.bad, title: t.bad, "aria-pressed": "false" }, [icon(THUMB_DOWN)]);
    const row = h("div", { class: "fb", role: "group", "aria-label": t.feedback, "data-skald-feedback": true, hidden: true }, [up, down]);
    const id = `${this.panel.id}-c${this.views.length}`;
    const comment = h("textarea", { id, rows: "2", maxlength: "2000", "data-skald-comment": true });
    const send = h("button", { type: "submit", class: "fs", "data-skald-comment-send": true }, [t.sendFeedback]);
    const form = h("form", { class: "fc", "data-skald-comment-form": true, hidden: true }, [h("label", { for: id }, [t.whatWasWrong]), comment, send]);
    const closeForm = () => {
      form.hidden = true;
      down.focus();
    };
    up.addEventListener("click", () => {
      form.hidden = true;
      void this.rate(view, view.data.rating === 1 ? null : 1);
    });
    down.addEventListener("click", async () => {
      if (view.data.rating === -1) {
        form.hidden = true;
        await this.rate(view, null);
        return;
      }
      if (await this.rate(view, -1)) {
        form.hidden = false;
        comment.focus();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = comment.value.trim();
      if (!text || (await this.rate(view, -1, text))) {
        comment.value = "";
        closeForm();
      }
    });
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeForm();
    });
    return { row, up, down, form, comment };
  }

  /** Sends (or with `null` withdraws) a rating of the view's answer; whether it was taken. */
  private async rate(view: View, rating: 1 | -1 | null, comment?: string): Promise<boolean> {
    const messageId = view.data.messageId;
    const client = this.client;
    if (!messageId || !client) return false;
    try {
      if (rating === null) await client.api.withdrawFeedback(messageId);
      else await client.feedback(messageId, rating, comment);
    } catch {
      this.showAlert(this.t.feedbackFailed);
      return false;
    }
    if (rating === null) delete view.data.rating;
    else view.data.rating = rating;
    this.paint(view);
    this.save();
    if (rating !== null) this.announce(this.t.thanks);
    return true;
  }

  /**
   * The "thinking…" line while nothing came yet, then the reasoning (as
   * text) in a section open while the model thinks, collapsed once when
   * its answer begins (the reader may open it again).
   */
  private paintThinking(view: View): void {
    const { data, waiting, thinking, thoughts } = view;
    if (!waiting || !thinking || !thoughts) return;
    const reasoning = data.reasoning ?? "";
    waiting.hidden = !(data.state === "streaming" && !data.text && !reasoning);
    thinking.hidden = !reasoning;
    if (!reasoning) return;
    if (thoughts.textContent !== reasoning) thoughts.textContent = reasoning;
    const answering = data.text.length > 0 || data.state !== "streaming";
    const label = answering ? this.t.thought : this.t.thinking;
    const summary = thinking.firstChild as HTMLElement;
    if (summary.textContent !== label) summary.textContent = label;
    if (answering && !view.collapsed) {
      view.collapsed = true;
      thinking.open = false;
    }
  }

  private scrollToEnd(): void {
    this.log.scrollTop = this.log.scrollHeight;
  }

  private setStreaming(on: boolean): void {
    this.stopButton.hidden = !on;
    this.sendButton.hidden = on;
    // Keep the focus in the composer when the button under it swaps.
    const active = this.element.shadowRoot?.activeElement;
    if (on && active === this.sendButton) this.stopButton.focus();
    if (!on && active === this.stopButton) this.input.focus();
  }

  private onInput(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight + 2, 140)}px`;
    const left = this.maxChars - [...this.input.value].length;
    this.counter.hidden = left > 200;
    this.counter.textContent = fill(this.t.left, { n: left });
  }

  private showAlert(text: string, kind: "error" | "info" = "error"): void {
    clearInterval(this.alertTimer);
    this.alertBox.dataset["kind"] = kind;
    this.alertBox.textContent = text;
    this.alertBox.hidden = !text && kind === "info";
  }

  private hideAlert(): void {
    clearInterval(this.alertTimer);
    this.alertBox.hidden = true;
  }

  private announce(text: string): void {
    this.announcer.textContent = "";
    // A change of content is what screen readers announce.
    setTimeout(() => (this.announcer.textContent = text), 50);
  }

  // ---- persistence ------------------------------------------------------------

  private saveSoon(): void {
    if (this.saveTimer !== undefined) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      this.save();
    }, 500);
  }

  private save(): void {
    this.saved.messages = this.views.map((v) => v.data);
    this.store.save(this.saved);
  }
}

export function mount(options: WidgetOptions): WidgetHandle {
  if (!options.url) throw new TypeError("Skald widget: a WebSocket url is required");
  if (!options.tokenUrl && !options.getToken) throw new TypeError("Skald widget: a tokenUrl or getToken is required");
  return new ChatWidget(options);
}
