/**
 * The C library's naming rule (c/nfqlb.h, "Organisation"): an exported
 * function nfqlb_<object>_<verb> is defined in <object>.c, the longest C
 * file name its name starts with, and declared in that file's section of
 * c/nfqlb.h, in the order the file defines it.
 */
import assert from "node:assert/strict";
import { ROOT } from "../harness/paths.ts";

const C = `${ROOT}/c`;

/** The C files' base names, and the nfqlb_ functions each defines (in order), hidden ones included. */
function definitions(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const e of [...Deno.readDirSync(C)].filter((e) => e.isFile && e.name.endsWith(".c"))) {
    const text = Deno.readTextFileSync(`${C}/${e.name}`);
    // a definition: at the start of a line, not static, the name, its parameters, then the body
    const defs = [...text.matchAll(/^(?!static\b)[a-z][^;{}()]*?\b(nfqlb_\w+)\(([^;{}]*?)\)\s*\{/gm)];
    out.set(e.name.slice(0, -2), defs.map((m) => m[1]));
  }
  return out;
}

/** The file a function belongs in: the longest file base name it starts with (after nfqlb_). */
function fileOf(fn: string, files: string[]): string | undefined {
  return files.filter((f) => fn.startsWith(`nfqlb_${f}_`)).sort((a, b) => b.length - a.length)[0];
}

/** c/nfqlb.h: the functions declared in each section, in order. */
function sections(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur: string[] | undefined;
  const lines = Deno.readTextFileSync(`${C}/nfqlb.h`).split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].startsWith("/* -----")) {
      const m = /^ \* (\w+)\.c\b/.exec(lines[i + 1]);
      assert.ok(m, `section banner at c/nfqlb.h:${i + 1} names no file`);
      assert.ok(!out.has(m[1]), `two sections for ${m[1]}.c`);
      out.set(m[1], cur = []);
      continue;
    }
    const d = /^[a-z][^(]*?\b(nfqlb_\w+)\(/.exec(lines[i]);
    if (d && cur) cur.push(d[1]);
  }
  return out;
}

Deno.test("c/: every function nfqlb_<object>_* is defined in <object>.c", () => {
  const defs = definitions();
  const files = [...defs.keys()];
  const wrong: string[] = [];
  for (const [file, fns] of defs) {
    for (const fn of fns) {
      const want = fileOf(fn, files);
      if (want !== file) wrong.push(`${fn} in ${file}.c (want ${want ?? "no file of that prefix"}.c)`);
    }
  }
  assert.deepEqual(wrong, []);
});

Deno.test("c/nfqlb.h: one section per C file, declaring its exported functions in file order", () => {
  const defs = definitions();
  const secs = sections();
  const hidden = new Set(
    [...Deno.readDirSync(C)].filter((e) => e.name.endsWith("_internal.h"))
      .flatMap((e) =>
        [...Deno.readTextFileSync(`${C}/${e.name}`).matchAll(/\b(nfqlb_\w+)\(/g)].map((m) => m[1])
      ),
  );
  for (const file of secs.keys()) {
    assert.ok(defs.has(file), `c/nfqlb.h has a section for ${file}.c, which does not exist`);
  }
  for (const [file, fns] of defs) {
    const exported = fns.filter((f) => !hidden.has(f));
    if (exported.length === 0) continue;
    assert.deepEqual(secs.get(file), exported, `section ${file}.c of c/nfqlb.h`);
  }
});
