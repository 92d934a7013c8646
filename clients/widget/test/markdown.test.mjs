// The widget's markdown subset, without a browser: the parser must never
// turn model output into markup it did not choose.

import assert from "node:assert/strict";
import { before, describe, it } from "node:test";

import { markdown } from "../../testing/markdown.mjs";

let md;

before(async () => {
  md = await markdown();
});

describe("markdown subset", () => {
  it("keeps HTML as text", () => {
    const xss = "<img src=x onerror=alert(1)>";
    assert.deepEqual(md.parseBlocks(xss), [{ k: "p", src: xss, c: [xss] }]);
    assert.deepEqual(md.parseInline("<script>alert(1)</script>"), ["<script>alert(1)</script>"]);
  });

  it("links only to http(s) and mailto", () => {
    assert.deepEqual(md.parseInline("[a](https://example.com/x?y=1)"), [{ t: "a", href: "https://example.com/x?y=1", c: ["a"] }]);
    assert.deepEqual(md.parseInline("[a](mailto:a@b.c)"), [{ t: "a", href: "mailto:a@b.c", c: ["a"] }]);
    for (const bad of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<b>", "vbscript:x", "//evil.example", "/relative"]) {
      assert.deepEqual(md.parseInline(`[a](${bad})`), [`[a](${bad})`], bad);
      assert.equal(md.safeHref(bad), undefined, bad);
    }
    assert.deepEqual(md.parseInline("see https://example.com/a."), ["see ", { t: "a", href: "https://example.com/a", c: ["https://example.com/a"] }, "."]);
  });

  it("inline styles, and markers that do not close stay literal", () => {
    assert.deepEqual(md.parseInline("**gras** et *it* et `x<y`"), [
      { t: "strong", c: ["gras"] },
      " et ",
      { t: "em", c: ["it"] },
      " et ",
      { t: "code", v: "x<y" },
    ]);
    assert.deepEqual(md.parseInline("un **début"), ["un **début"]);
    assert.deepEqual(md.parseInline("snake_case_name"), ["snake_case_name"]);
    assert.deepEqual(md.parseInline("2 * 3 * 4"), ["2 * 3 * 4"]);
    assert.deepEqual(md.parseInline("a\\*b\\*"), ["a*b*"]);
    assert.deepEqual(md.parseInline("l1\nl2"), ["l1", { t: "br" }, "l2"]);
  });

  it("blocks: headings, lists, quotes, code, rules", () => {
    const text = "# Titre\n\nUn paragraphe\nsur deux lignes.\n\n- un\n- deux\n  suite\n\n3. trois\n4. quatre\n\n> cité\n\n```js\nlet a = '<b>';\n```\n\n---";
    const blocks = md.parseBlocks(text);
    assert.deepEqual(blocks.map((b) => b.k), ["h", "p", "ul", "ol", "quote", "code", "hr"]);
    assert.equal(blocks[0].level, 1);
    assert.deepEqual(blocks[2].items, [["un"], ["deux", { t: "br" }, "suite"]]);
    assert.equal(blocks[3].start, 3);
    assert.equal(blocks[5].lang, "js");
    assert.equal(blocks[5].v, "let a = '<b>';");
  });

  it("a code fence still streaming holds everything after it", () => {
    const blocks = md.parseBlocks("Voici :\n```\nligne 1\n**pas du gras**");
    assert.deepEqual(blocks.map((b) => b.k), ["p", "code"]);
    assert.equal(blocks[1].v, "ligne 1\n**pas du gras**");
  });

  it("blocks keep their source, so a growing answer re-renders its last block only", () => {
    const a = md.parseBlocks("Premier.\n\nSecond en cours");
    const b = md.parseBlocks("Premier.\n\nSecond en cours d'écriture");
    assert.equal(a[0].src, b[0].src);
    assert.notEqual(a[1].src, b[1].src);
  });
});
