/**
 * Checks that imports run one way through the layers,
 * `cli/ → host/ → dataplane/ → core/ → ffi/ (→ c/)`, and that no file reaches into another folder's private
 * file (a file whose name starts with `_`). A layer may import its own files and any layer below it;
 * `mod.ts` (the library API) stands above `cli/`. `tests/` and `scripts/` are outside the layers: they may
 * import anything, and no layer may import them. Bare specifiers must be `node:` built-ins or names mapped in
 * deno.json (JSR is unreachable; `npm:` pins live in deno.json, once).
 *
 * Prints every offending import as `file: import "spec" (why)` and exits 1; prints a summary and exits 0 when
 * clean. Run by `deno task check` and by the test command.
 *
 * @module
 */
import { dirname, join, normalize, relative } from "node:path";

/** The layers from the top down; a file may import files of its own layer or of any layer after it. */
export const LAYERS = ["mod.ts", "cli", "host", "dataplane", "core", "ffi"] as const;

/** Folders outside the layers (they may import anything; nothing in a layer may import them). */
const OUTSIDE = new Set(["tests", "scripts"]);

/** One import that breaks the rules. */
export interface LayerViolation {
  /** The importing file, relative to the root. */
  file: string;
  /** The specifier as written. */
  spec: string;
  /** Why it is refused. */
  why: string;
}

/** The layer (or outside folder) a root-relative path belongs to; undefined for other paths. */
export function layerOf(path: string): string | undefined {
  if (path === "mod.ts") return "mod.ts";
  const top = path.split("/")[0];
  if ((LAYERS as readonly string[]).includes(top) || OUTSIDE.has(top)) return top;
  return undefined;
}

// static imports and re-exports (`import … from "…"`, `export … from "…"`, `import "…"`) at the start of a
// statement, and dynamic import() calls with a string literal; `new URL(…, import.meta.url)` names a file to run or
// read (a Worker, a subprocess), not an import, so it is not checked
const STATIC_RE =
  /^[ \t]*(?:import|export)\b[^;'"`]*?\bfrom\s*["']([^"']+)["']|^[ \t]*import\s*["']([^"']+)["']/gm;
const DYNAMIC_RE = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

/** The import specifiers of one source text. */
export function specifiersOf(source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(STATIC_RE)) out.push(m[1] ?? m[2]);
  for (const m of source.matchAll(DYNAMIC_RE)) out.push(m[1]);
  return out;
}

/**
 * Checks the imports of one file.
 *
 * @param file root-relative path of the importing file
 * @param source its text
 * @param bareAllowed bare specifiers mapped in deno.json
 */
export function checkFile(file: string, source: string, bareAllowed: ReadonlySet<string>): LayerViolation[] {
  const from = layerOf(file);
  const out: LayerViolation[] = [];
  for (const spec of specifiersOf(source)) {
    if (!spec.startsWith(".")) {
      if (spec.startsWith("node:") || bareAllowed.has(spec)) continue;
      out.push({ file, spec, why: "not a node: built-in nor a name mapped in deno.json" });
      continue;
    }
    const target = normalize(join(dirname(file), spec)).replace(/\/$/, "");
    if (target.startsWith("..")) {
      out.push({ file, spec, why: "leaves the repository" });
      continue;
    }
    const to = layerOf(target);
    const base = target.split("/").pop() ?? "";
    if (base.startsWith("_") && dirname(target) !== dirname(file)) {
      out.push({ file, spec, why: `${target} is private to ${dirname(target)}/` });
    }
    if (from === undefined || OUTSIDE.has(from) || to === undefined) continue;
    if (OUTSIDE.has(to)) {
      out.push({ file, spec, why: `${from} may not import ${to}/` });
      continue;
    }
    const a = LAYERS.indexOf(from as typeof LAYERS[number]);
    const b = LAYERS.indexOf(to as typeof LAYERS[number]);
    if (b < a) out.push({ file, spec, why: `${from} is below ${to} (${LAYERS.join(" → ")})` });
  }
  return out;
}

/** Every .ts file under `root` in the layers and outside folders (skipping tool and build folders). */
export function sourceFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(join(root, dir))) {
      const rel = dir === "" ? e.name : `${dir}/${e.name}`;
      if (e.isDirectory) {
        if (dir === "" && layerOf(`${e.name}/x`) === undefined) continue;
        if (e.name === "node_modules" || e.name === "testdata") continue;
        walk(rel);
      } else if (e.isFile && e.name.endsWith(".ts") && layerOf(rel) !== undefined) {
        files.push(rel);
      }
    }
  };
  walk("");
  return files.sort();
}

/** The bare names mapped in `<root>/deno.json`'s imports. */
export function mappedImports(root: string): Set<string> {
  const cfg = JSON.parse(Deno.readTextFileSync(join(root, "deno.json"))) as {
    imports?: Record<string, string>;
  };
  return new Set(Object.keys(cfg.imports ?? {}));
}

/** Checks every file under `root`; returns the violations and the count of imports per pair of layers. */
export function checkTree(root: string): { violations: LayerViolation[]; matrix: Map<string, number> } {
  const bare = mappedImports(root);
  const violations: LayerViolation[] = [];
  const matrix = new Map<string, number>();
  for (const file of sourceFiles(root)) {
    const source = Deno.readTextFileSync(join(root, file));
    violations.push(...checkFile(file, source, bare));
    for (const spec of specifiersOf(source)) {
      if (!spec.startsWith(".")) continue;
      const to = layerOf(normalize(join(dirname(file), spec)));
      if (to === undefined) continue;
      const key = `${layerOf(file)} -> ${to}`;
      matrix.set(key, (matrix.get(key) ?? 0) + 1);
    }
  }
  return { violations, matrix };
}

if (import.meta.main) {
  const root = relative(Deno.cwd(), new URL("..", import.meta.url).pathname) || ".";
  const { violations, matrix } = checkTree(root);
  if (Deno.args.includes("--matrix")) {
    for (const [k, n] of [...matrix].sort()) console.log(`${String(n).padStart(4)}  ${k}`);
  }
  for (const v of violations) console.error(`${v.file}: import "${v.spec}" (${v.why})`);
  if (violations.length > 0) {
    console.error(`check_layers: ${violations.length} import(s) against ${LAYERS.join(" → ")}`);
    Deno.exit(1);
  }
  console.log(
    `check_layers: ok (${LAYERS.join(" → ")}; ${[...matrix.values()].reduce((a, b) => a + b, 0)} imports)`,
  );
}
