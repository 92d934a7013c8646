// Builds the widget into one file, dist/widget.js (and dist/widget.js.gz),
// which the server embeds and serves at GET /widget.js. Both are committed:
// `node build.mjs --check` fails when they differ from a fresh build.

import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist", "widget.js");

export async function bundle() {
  const result = await build({
    entryPoints: [join(here, "src", "index.ts")],
    bundle: true,
    write: false,
    format: "iife",
    target: "es2022",
    minify: true,
    legalComments: "none",
    charset: "utf8",
    alias: { "@skald/client": join(here, "..", "js", "src", "index.ts") },
    banner: { js: "/* Skald chat widget 0.1.0 | Apache-2.0 */" },
    logLevel: "warning",
  });
  const js = result.outputFiles[0].text;
  // mtime 0 and a fixed OS byte: the same input gives the same bytes.
  const gz = gzipSync(Buffer.from(js), { level: 9 });
  return { js, gz };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { js, gz } = await bundle();
  if (process.argv.includes("--check")) {
    let stale = false;
    try {
      stale = readFileSync(out, "utf8") !== js || !readFileSync(`${out}.gz`).equals(gz);
    } catch {
      stale = true;
    }
    if (stale) {
      console.error("clients/widget/dist is stale: run `npm run build` in clients/");
      process.exit(1);
    }
  } else {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, js);
    writeFileSync(`${out}.gz`, gz);
  }
  console.log(`widget.js: ${js.length} bytes, ${gz.length} bytes gzipped`);
}
