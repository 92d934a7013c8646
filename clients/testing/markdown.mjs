// The widget's own markdown parser (clients/widget/src/markdown.ts), built
// for Node with esbuild, and the text a rendered answer shows: what
// `textContent` reads of the elements render.ts builds from the parse tree
// (block by block, with nothing between blocks; `<br>` has no text).

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

let loaded;

/** The markdown module (parseBlocks, parseInline, safeHref). */
export async function markdown() {
  if (!loaded) {
    const result = await build({
      entryPoints: [join(here, "..", "widget", "src", "markdown.ts")],
      bundle: true,
      write: false,
      format: "esm",
      logLevel: "warning",
    });
    loaded = await import(`data:text/javascript;base64,${Buffer.from(result.outputFiles[0].text).toString("base64")}`);
  }
  return loaded;
}

function inlineText(nodes) {
  return nodes
    .map((n) => (typeof n === "string" ? n : n.t === "code" ? n.v : n.t === "br" ? "" : inlineText(n.c)))
    .join("");
}

/** The text content of `text` once the widget renders it. */
export async function renderedText(text) {
  const md = await markdown();
  return md
    .parseBlocks(text)
    .map((b) => {
      switch (b.k) {
        case "code":
          return b.v;
        case "hr":
          return "";
        case "ul":
        case "ol":
          return b.items.map(inlineText).join("");
        default:
          return inlineText(b.c);
      }
    })
    .join("");
}
