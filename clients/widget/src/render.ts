// Builds DOM from the markdown tree with createElement and text nodes only
// (never innerHTML), reusing the nodes of blocks that did not change so a
// growing answer only rebuilds its last block.

import { parseBlocks, type Block, type Inline } from "./markdown.js";

function el<K extends keyof HTMLElementTagNameMap>(tag: K, children: Node[] = []): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const child of children) node.appendChild(child);
  return node;
}

function inlines(nodes: Inline[]): Node[] {
  return nodes.map((node): Node => {
    if (typeof node === "string") return document.createTextNode(node);
    switch (node.t) {
      case "br":
        return el("br");
      case "code": {
        const code = el("code");
        code.textContent = node.v;
        return code;
      }
      case "a": {
        const a = el("a", inlines(node.c));
        a.href = node.href;
        a.target = "_blank";
        a.rel = "noopener noreferrer nofollow ugc";
        return a;
      }
      default:
        return el(node.t === "strong" ? "strong" : "em", inlines(node.c));
    }
  });
}

function block(b: Block): Node {
  switch (b.k) {
    case "p":
      return el("p", inlines(b.c));
    case "h": {
      const h = el("p", [el("strong", inlines(b.c))]);
      h.className = `h h${b.level}`;
      return h;
    }
    case "quote":
      return el("blockquote", inlines(b.c));
    case "ul":
    case "ol": {
      const list = el(b.k, b.items.map((item) => el("li", inlines(item))));
      if (b.k === "ol" && b.start !== 1) (list as HTMLOListElement).start = b.start;
      return list;
    }
    case "code": {
      const code = el("code");
      code.textContent = b.v;
      if (b.lang) code.dataset["lang"] = b.lang;
      return el("pre", [code]);
    }
    case "hr":
      return el("hr");
  }
}

/** What a container shows: the sources of its blocks, in order. */
export type RenderCache = string[];

/** Renders `text` as markdown into `container`, rebuilding only changed blocks. */
export function renderMarkdown(container: HTMLElement, text: string, cache: RenderCache): RenderCache {
  const blocks = parseBlocks(text);
  let same = 0;
  while (same < blocks.length && same < cache.length && cache[same] === (blocks[same] as Block).src) same++;
  while (container.childNodes.length > same) (container.lastChild as ChildNode).remove();
  for (let i = same; i < blocks.length; i++) container.appendChild(block(blocks[i] as Block));
  return blocks.map((b) => b.src);
}
