/**
 * The one key style of our own JSON outputs (docs/cli.md "JSON output"): every key of every object, at any
 * depth, in snake_case. Objects that are maps keyed by data (ct-stats' `connections`, keyed by fwmark) are
 * named in `dataKeys` and their keys are not checked (their values are).
 */
import assert from "node:assert/strict";

const SNAKE = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;

/** The keys of `v` (recursively) that are not snake_case, as `path.key`. */
export function nonSnakeKeys(v: unknown, dataKeys: ReadonlySet<string> = new Set(), path = "$"): string[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => nonSnakeKeys(x, dataKeys, `${path}[${i}]`));
  if (v === null || typeof v !== "object") return [];
  const out: string[] = [];
  for (const [k, x] of Object.entries(v)) {
    if (!SNAKE.test(k)) out.push(`${path}.${k}`);
    if (dataKeys.has(k) && x !== null && typeof x === "object" && !Array.isArray(x)) {
      for (const [dk, dx] of Object.entries(x)) {
        out.push(...nonSnakeKeys(dx, dataKeys, `${path}.${k}[${dk}]`));
      }
    } else out.push(...nonSnakeKeys(x, dataKeys, `${path}.${k}`));
  }
  return out;
}

/** Parses `text` as one JSON document and asserts every key is snake_case; returns the document. */
export function snakeJson<T = Record<string, unknown>>(
  text: string,
  what: string,
  dataKeys: ReadonlySet<string> = new Set(),
): T {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${what}: not one JSON document (${e}):\n${text}`);
  }
  assert.deepEqual(nonSnakeKeys(doc, dataKeys), [], `${what}: keys not in snake_case`);
  return doc as T;
}
