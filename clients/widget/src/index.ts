// The widget's entry: one script tag mounts it.
//
//   <script src="https://chat.example.com/widget.js"
//           data-token-url="/my-backend/skald-token" data-bot="default"
//           data-lang="fr" data-theme="auto" defer></script>
//
// data-skald-url defaults to the server that serves widget.js
// (`/v1/ws` next to it). `data-skald-manual` skips mounting; then call
// `SkaldWidget.mount({...})` yourself (e.g. with `getToken`).

import { mount, type WidgetHandle, type WidgetOptions } from "./widget.js";

declare global {
  interface Window {
    SkaldWidget?: { version: string; mount(options: WidgetOptions): WidgetHandle; instance?: WidgetHandle };
  }
}

function fromScript(script: HTMLScriptElement): WidgetOptions | undefined {
  const d = script.dataset;
  let url = d["skaldUrl"];
  if (!url) {
    const ws = new URL("v1/ws", script.src || location.href);
    ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
    url = ws.href;
  }
  if (!d["tokenUrl"]) {
    console.error("Skald widget: data-token-url is required (an endpoint of your site that returns a short-lived token)");
    return undefined;
  }
  const options: WidgetOptions = { url, tokenUrl: new URL(d["tokenUrl"], location.href).href };
  if (d["bot"]) options.bot = d["bot"];
  if (d["lang"]) options.lang = d["lang"];
  if (d["theme"]) options.theme = d["theme"];
  if (d["title"]) options.title = d["title"];
  if (d["position"]) options.position = d["position"];
  if (d["open"] !== undefined && d["open"] !== "false") options.open = true;
  return options;
}

const script = document.currentScript as HTMLScriptElement | null;
if (!window.SkaldWidget) {
  const api: NonNullable<Window["SkaldWidget"]> = { version: "0.1.0", mount };
  window.SkaldWidget = api;
  if (script && !script.hasAttribute("data-skald-manual")) {
    const start = (): void => {
      const options = fromScript(script);
      if (options) api.instance = mount(options);
    };
    if (document.body) start();
    else document.addEventListener("DOMContentLoaded", start, { once: true });
  }
}
