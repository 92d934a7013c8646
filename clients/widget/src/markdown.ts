// A safe markdown subset for model output. Model output is untrusted: it is
// parsed here into a small tree of known node kinds, and the DOM builder
// (render.ts) creates those elements with text nodes only. No HTML string
// ever reaches the DOM, so `<img src=x onerror=…>` is shown as text.
//
// Blocks: paragraphs (line breaks kept), headings, bullet and numbered
// lists, block quotes, fenced code, rules. Inline: **strong**, *em*,
// `code`, [links](https://…) and bare https:// links. Links only for
// http(s) and mailto; anything else stays text. Unclosed markers (a stream
// cut mid-word) stay literal until they close.

export type Inline =
  | string
  | { t: "strong" | "em"; c: Inline[] }
  | { t: "code"; v: string }
  | { t: "a"; href: string; c: Inline[] }
  | { t: "br" };

export type Block =
  | { k: "p"; src: string; c: Inline[] }
  | { k: "h"; src: string; level: number; c: Inline[] }
  | { k: "quote"; src: string; c: Inline[] }
  | { k: "ul" | "ol"; src: string; start: number; items: Inline[][] }
  | { k: "code"; src: string; lang: string; v: string }
  | { k: "hr"; src: string };

const FENCE = /^\s{0,3}(```|~~~)\s*([\w+-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

/** Splits text into blocks; each block keeps its source so unchanged ones can be reused. */
export function parseBlocks(text: string): Block[] {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks: Block[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i] as string;
    if (line.trim() === "") {
      i++;
      continue;
    }
    const start = i;
    const fence = FENCE.exec(line);
    if (fence) {
      const body: string[] = [];
      i++;
      while (i < lines.length && !new RegExp(`^\\s{0,3}${fence[1]}\\s*$`).test(lines[i] as string)) body.push(lines[i++] as string);
      i++; // the closing fence (or past the end while it streams)
      blocks.push({ k: "code", src: lines.slice(start, i).join("\n"), lang: fence[2] ?? "", v: body.join("\n") });
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      i++;
      blocks.push({ k: "h", src: line, level: (heading[1] as string).length, c: parseInline(heading[2] as string) });
      continue;
    }
    if (RULE.test(line)) {
      i++;
      blocks.push({ k: "hr", src: line });
      continue;
    }
    if (QUOTE.test(line)) {
      const body: string[] = [];
      while (i < lines.length && QUOTE.test(lines[i] as string)) body.push((QUOTE.exec(lines[i++] as string) as RegExpExecArray)[1] as string);
      blocks.push({ k: "quote", src: lines.slice(start, i).join("\n"), c: parseInline(body.join("\n")) });
      continue;
    }
    const bullet = BULLET.test(line);
    const numbered = NUMBERED.exec(line);
    if (bullet || numbered) {
      const marker = bullet ? BULLET : NUMBERED;
      const items: string[] = [];
      while (i < lines.length) {
        const l = lines[i] as string;
        const m = marker.exec(l);
        if (m) {
          items.push((bullet ? m[1] : m[2]) as string);
        } else if (l.trim() !== "" && /^\s+/.test(l) && items.length > 0) {
          items[items.length - 1] += "\n" + l.trim();
        } else {
          break;
        }
        i++;
      }
      blocks.push({
        k: bullet ? "ul" : "ol",
        src: lines.slice(start, i).join("\n"),
        start: numbered ? Number(numbered[1]) : 1,
        items: items.map(parseInline),
      });
      continue;
    }
    const body: string[] = [];
    while (i < lines.length) {
      const l = lines[i] as string;
      if (l.trim() === "" || (i > start && startsBlock(l))) break;
      body.push(l);
      i++;
    }
    blocks.push({ k: "p", src: body.join("\n"), c: parseInline(body.join("\n")) });
  }
  return blocks;
}

function startsBlock(line: string): boolean {
  return FENCE.test(line) || HEADING.test(line) || QUOTE.test(line) || BULLET.test(line) || NUMBERED.test(line) || RULE.test(line);
}

/** A link target that is safe to follow, or undefined. */
export function safeHref(url: string): string | undefined {
  if (!/^(https?:\/\/|mailto:)/i.test(url)) return undefined;
  try {
    const parsed = new URL(url);
    return ["http:", "https:", "mailto:"].includes(parsed.protocol) ? parsed.href : undefined;
  } catch {
    return undefined;
  }
}

const BARE_URL = /^https?:\/\/[^\s<>"'`]+/i;

/** Parses inline markup; whatever does not parse stays text. */
export function parseInline(text: string): Inline[] {
  const out: Inline[] = [];
  let plain = "";
  const flush = (): void => {
    if (plain) out.push(plain);
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i] as string;
    const rest = text.slice(i);
    if (ch === "\\" && i + 1 < text.length && /[\\`*_[\]()#>!-]/.test(text[i + 1] as string)) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "\n") {
      flush();
      out.push({ t: "br" });
      i++;
      continue;
    }
    if (ch === "`") {
      const end = text.indexOf("`", i + 1);
      if (end > i + 1) {
        flush();
        out.push({ t: "code", v: text.slice(i + 1, end) });
        i = end + 1;
        continue;
      }
    }
    if ((rest.startsWith("**") || rest.startsWith("__")) && rest.length > 4) {
      const marker = rest.slice(0, 2);
      const end = text.indexOf(marker, i + 2);
      if (end > i + 2 && text[i + 2] !== " ") {
        flush();
        out.push({ t: "strong", c: parseInline(text.slice(i + 2, end)) });
        i = end + 2;
        continue;
      }
    }
    if ((ch === "*" || ch === "_") && text[i + 1] !== ch && text[i + 1] !== " " && text[i + 1] !== undefined) {
      const before = i === 0 ? " " : (text[i - 1] as string);
      const end = text.indexOf(ch, i + 1);
      const after = end < 0 ? "" : (text[end + 1] ?? " ");
      // `_` only between word boundaries, so snake_case stays text.
      const bounded = ch === "*" || (!/\w/.test(before) && !/\w/.test(after));
      if (end > i + 1 && text[end - 1] !== " " && bounded) {
        flush();
        out.push({ t: "em", c: parseInline(text.slice(i + 1, end)) });
        i = end + 1;
        continue;
      }
    }
    if (ch === "[") {
      const close = text.indexOf("](", i + 1);
      const end = close < 0 ? -1 : text.indexOf(")", close + 2);
      if (close > i && end > close) {
        const href = safeHref(text.slice(close + 2, end).trim());
        if (href) {
          flush();
          out.push({ t: "a", href, c: parseInline(text.slice(i + 1, close)) });
          i = end + 1;
          continue;
        }
      }
    }
    if ((ch === "h" || ch === "H") && (i === 0 || /[\s(]/.test(text[i - 1] as string))) {
      const m = BARE_URL.exec(rest);
      if (m) {
        const url = m[0].replace(/[.,;:!?)]+$/, "");
        const href = safeHref(url);
        if (href) {
          flush();
          out.push({ t: "a", href, c: [url] });
          i += url.length;
          continue;
        }
      }
    }
    plain += ch;
    i++;
  }
  flush();
  return out;
}
