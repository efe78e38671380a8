/**
 * The repository's own checks (scripts/check_layers.ts, scripts/check_paths.ts): each catches what it is
 * for on a made-up input, and the repository passes both.
 */
import assert from "node:assert/strict";
import { checkFile, checkTree, layerOf, specifiersOf } from "../../scripts/check_layers.ts";
import { checkPaths, checkText, missingPaths } from "../../scripts/check_paths.ts";
import { ROOT } from "../harness/paths.ts";

const BARE = new Set(["zod", "yaml"]);

Deno.test("check_layers: finds static, re-exported, side-effect and dynamic imports, not look-alikes in code", () => {
  const src = [
    'import { a } from "./a.ts";',
    "import type {",
    "  B,",
    '} from "../core/b.ts";',
    'export { c } from "./c.ts";',
    'import "./side.ts";',
    'const d = await import("../host/d.ts");',
    'const s = `x from "./not.ts"`;',
    'say(" from " + x);',
  ].join("\n");
  assert.deepEqual(specifiersOf(src), ["./a.ts", "../core/b.ts", "./c.ts", "./side.ts", "../host/d.ts"]);
});

Deno.test("check_layers: refuses an import up the layers, into tests/, out of the repo or into a private file", () => {
  const why = (file: string, spec: string) =>
    checkFile(file, `import { x } from "${spec}";`, BARE).map((v) => v.why);
  assert.deepEqual(why("core/key.ts", "../ffi/lib.ts"), []);
  assert.deepEqual(why("cli/main.ts", "../core/errors.ts"), []);
  assert.deepEqual(why("host/apply.ts", "../dataplane/lb.ts"), []);
  assert.match(why("core/key.ts", "../host/apply.ts")[0], /core is below host/);
  assert.match(why("dataplane/lb.ts", "../cli/main.ts")[0], /dataplane is below cli/);
  assert.match(why("ffi/lib.ts", "../core/errors.ts")[0], /ffi is below core/);
  assert.match(why("core/flow/parse.ts", "../../dataplane/flowlb.ts")[0], /core is below dataplane/);
  assert.match(why("host/apply.ts", "../tests/harness/paths.ts")[0], /host may not import tests/);
  assert.match(why("core/key.ts", "../../outside/x.ts")[0], /leaves the repository/);
  assert.match(why("cli/main.ts", "../core/_private.ts")[0], /private to core/);
  assert.deepEqual(why("core/key.ts", "./_private.ts"), []);
  assert.deepEqual(why("tests/unit/repo_checks_test.ts", "../../host/apply.ts"), []);
  assert.match(why("core/key.ts", "jsr:@std/assert")[0], /not a node: built-in/);
  assert.deepEqual(why("core/key.ts", "node:path"), []);
  assert.deepEqual(why("core/key.ts", "zod"), []);
  assert.equal(layerOf("mod.ts"), "mod.ts");
  assert.equal(layerOf("c/nfqlb.h"), undefined);
});

Deno.test("check_layers: the repository's imports run one way", () => {
  const { violations, matrix } = checkTree(ROOT);
  assert.deepEqual(violations, []);
  assert.ok((matrix.get("dataplane -> core") ?? 0) > 0, "the matrix counts imports");
  for (const key of matrix.keys()) {
    assert.ok(
      !/^core -> (host|dataplane|cli)|^dataplane -> (host|cli)|^host -> cli|^ffi -> (?!ffi)/.test(key),
      key,
    );
  }
});

Deno.test("check_paths: finds machine paths and the reference folder, not system paths", () => {
  const machine = ["", "work", "x"].join("/");
  const bad = checkText("a.md", `see ${machine}/y\nsee ${"../"}shared/z\n/dev/shm and /proc/net are fine\n`);
  assert.deepEqual(bad.map((h) => h.line), [1, 2]);
  assert.deepEqual(checkText("b.ts", "const p = `${root}/work/x`; // a path under a variable\n"), []);
});

Deno.test("check_paths: a file naming a moved file is caught; system and other paths are not checked", () => {
  const core = "core", c = "c";
  const have = new Set([`${c}/nfqlb.h`, "docs/examples/dsr.yaml"]);
  const text =
    `\`${core}/nosuch.ts\` and ${c}/nfqlb.h\nexamples/dsr.yaml, /dev/shm/${core}/x.json, \${ROOT}/${c}/x.h\n`;
  const hits = missingPaths(`${"docs"}/x.md`, text, (p) => have.has(p));
  assert.deepEqual(hits.map((h) => [h.line, h.text]), [[1, `${core}/nosuch.ts`]]);
});

Deno.test("check_paths: no tracked file names a path of one machine", () => {
  assert.deepEqual(checkPaths(ROOT), []);
});
