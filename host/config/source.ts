/**
 * Reads the text of a config file (YAML or JSON) into plain data, and maps a
 * path in that data back to where it is in the text, so that every error can
 * name its line. JSON is parsed by JSON.parse (so a .json file is strict
 * JSON) and located with the YAML parser, which reads JSON as YAML flow
 * collections with the same offsets; YAML's duplicate-key check catches the
 * keys that JSON.parse silently overwrites.
 */
import {
  CST,
  isMap,
  isPair,
  isScalar,
  isSeq,
  Lexer,
  LineCounter,
  type Node,
  type Pair,
  parseDocument,
  visit,
  type YAMLMap,
} from "yaml";

/**
 * Deepest nesting of lists and mappings a config may have. The format's own
 * is 4 (`services[0].targets[0].weight`); 32 leaves room and keeps every
 * recursive walk (the YAML composer, toJS, zod) far from the stack's end.
 */
export const MAX_CONFIG_DEPTH = 32;

/**
 * Alias resolutions allowed while building the data (npm:yaml's
 * maxAliasCount: aliases times the aliases inside what they name), so
 * that a "billion laughs" file is refused instead of expanded.
 */
export const MAX_ALIAS_COUNT = 100;

/**
 * Most values (scalars, aliases, flow lists and mappings) a config may
 * have: counted by the lexer before the document is built, because building
 * it costs about 1 KB and 3 µs per value (a 1 MiB list of numbers: 5 s, 640
 * MB). A config of 1 000 targets has about 5 000; 50 000 parse in about 1 s.
 */
export const MAX_CONFIG_VALUES = 50_000;

/** A path in the data: keys and list indexes. */
export type DataPath = readonly (string | number)[];

/** Where a path is: 1-based line and the offset (for ordering errors by position). */
export interface Place {
  /** 1-based line. */
  line: number;
  /** Offset of the node in the text. */
  offset: number;
}

/** A parsed file: its data and where each path is. */
export interface Source {
  /** The data (null for an empty document). */
  data: unknown;
  /**
   * Where `path` is: the key itself when `key` is true (unknown keys), else
   * its value; a missing path gives its deepest existing ancestor.
   */
  locate(path: DataPath, key?: boolean): Place;
}

/** A syntax error: 1-based line and column and a one-line message. */
export class SyntaxProblem extends Error {
  /**
   * @param line 1-based line, 0 when unknown
   * @param col 1-based column
   * @param message one line
   */
  constructor(readonly line: number, readonly col: number, message: string) {
    super(message);
  }
}

/** The first node nested deeper than {@link MAX_CONFIG_DEPTH}, as a problem; undefined when none (iterative). */
function tooDeep(root: unknown, lines: LineCounter): SyntaxProblem | undefined {
  const stack: [unknown, number][] = [[root, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (!isMap(node) && !isSeq(node)) continue;
    if (depth >= MAX_CONFIG_DEPTH) {
      const pos = lines.linePos(node.range?.[0] ?? 0);
      return new SyntaxProblem(pos.line, pos.col, `nested deeper than ${MAX_CONFIG_DEPTH} levels`);
    }
    for (const item of node.items) {
      if (isPair(item)) stack.push([item.key, depth + 1], [item.value, depth + 1]);
      else stack.push([item, depth + 1]);
    }
  }
  return undefined;
}

/** Whether parsed JSON nests deeper than {@link MAX_CONFIG_DEPTH} (iterative). */
function dataTooDeep(root: unknown): boolean {
  const stack: [unknown, number][] = [[root, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (depth >= MAX_CONFIG_DEPTH) return true;
    for (const x of Object.values(v)) stack.push([x, depth + 1]);
  }
  return false;
}

/** Whether the text is JSON: by file name, or by a leading `{`. */
export function isJson(text: string, file: string): boolean {
  return file.toLowerCase().endsWith(".json") || text.trimStart().startsWith("{");
}

/** yaml's messages end with ` at line L, column C:` and a picture of the line; keep the first part. */
function firstLine(msg: string): string {
  return msg.replace(/ at line \d+, column \d+:[\s\S]*$/, "").split("\n")[0];
}

/** Lexer token types that start a value: a scalar, an alias, a flow list or mapping. */
const VALUE_TOKENS = new Set([
  "scalar",
  "single-quoted-scalar",
  "double-quoted-scalar",
  "alias",
  "flow-seq-start",
  "flow-map-start",
]);

/**
 * Whether the text has more than {@link MAX_CONFIG_VALUES} values, counted
 * with npm:yaml's lexer (JSON too: it is YAML). The lexer costs a tenth of
 * composing the document, and stops at the bound.
 */
function tooManyValues(text: string): boolean {
  let n = 0;
  for (const token of new Lexer().lex(text)) {
    if (VALUE_TOKENS.has(CST.tokenType(token) ?? "") && ++n > MAX_CONFIG_VALUES) return true;
  }
  return false;
}

/**
 * The first key that repeats one before it in the same mapping, as a
 * problem (a Set per mapping: npm:yaml's own check compares each key with
 * every one before it, so 90 000 keys took 107 s).
 */
function duplicateKey(root: unknown, lines: LineCounter, syntax: string): SyntaxProblem | undefined {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isSeq(node)) stack.push(...node.items);
    if (!isMap(node)) continue;
    const seen = new Set<string>();
    for (const pair of node.items) {
      if (isScalar(pair.key)) {
        const k = String(pair.key.value);
        if (seen.has(k)) {
          const pos = lines.linePos(pair.key.range?.[0] ?? 0);
          return new SyntaxProblem(pos.line, pos.col, `${syntax}: Map keys must be unique`);
        }
        seen.add(k);
      } else stack.push(pair.key);
      stack.push(pair.value);
    }
  }
  return undefined;
}

/**
 * Parses the text. Bounded: at most {@link MAX_CONFIG_VALUES} values,
 * {@link MAX_CONFIG_DEPTH} levels and {@link MAX_ALIAS_COUNT} alias
 * resolutions (the caller bounds the size).
 * @throws SyntaxProblem on a YAML or JSON syntax error (or a duplicate key), or a bound passed
 */
export function readSource(text: string, json: boolean): Source {
  if (tooManyValues(text)) {
    throw new SyntaxProblem(0, 0, `more than ${MAX_CONFIG_VALUES} values (a host config has a few thousand)`);
  }
  const lineCounter = new LineCounter();
  // duplicate keys are checked below, in linear time
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, logLevel: "silent", uniqueKeys: false });
  let data: unknown;
  if (json) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      const raw = e instanceof Error ? e.message : String(e);
      // V8 names the position in some messages and quotes the input in others; keep one line
      const lc = /\(line (\d+) column (\d+)\)/.exec(raw);
      const yamlPos = doc.errors[0]?.linePos?.[0];
      const msg = raw.replace(/ in JSON at position.*$/s, "").replace(/, (\.\.\.)?".*$/s, "").split("\n")[0];
      const line = lc ? Number(lc[1]) : yamlPos?.line ?? 0, col = lc ? Number(lc[2]) : yamlPos?.col ?? 0;
      throw new SyntaxProblem(line, col, `JSON syntax: ${msg}`);
    }
    if (dataTooDeep(data)) throw new SyntaxProblem(0, 0, `nested deeper than ${MAX_CONFIG_DEPTH} levels`);
    // a duplicate key is valid JSON, but one of the two values would be lost silently
    const dup = duplicateKey(doc.contents, lineCounter, "JSON syntax");
    if (dup) throw dup;
  } else {
    const err = doc.errors[0];
    if (err) {
      // the composer recurses per level: a file nested a thousand deep runs out of stack there, at no
      // useful position
      if (/Maximum call stack/.test(err.message)) {
        throw new SyntaxProblem(0, 0, `nested deeper than ${MAX_CONFIG_DEPTH} levels`);
      }
      const pos = err.linePos?.[0];
      throw new SyntaxProblem(pos?.line ?? 1, pos?.col ?? 1, `YAML syntax: ${firstLine(err.message)}`);
    }
    const problem = tooDeep(doc.contents, lineCounter) ??
      duplicateKey(doc.contents, lineCounter, "YAML syntax");
    if (problem) throw problem;
    try {
      data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (e) {
      // npm:yaml throws ReferenceError for an alias bomb (and an alias it cannot resolve)
      if (!(e instanceof ReferenceError)) throw e;
      let at: number | undefined;
      visit(doc, {
        Alias(_, node) {
          at = node.range?.[0];
          return visit.BREAK;
        },
      });
      const pos = lineCounter.linePos(at ?? 0);
      const why = /Excessive alias count/.test(e.message)
        ? `expansion too large (more than ${MAX_ALIAS_COUNT} alias resolutions)`
        : firstLine(e.message);
      throw new SyntaxProblem(pos.line, pos.col, `YAML aliases: ${why}`);
    }
    // an alias inside what it names (`&a [*a]`) makes a cycle: no config has one, and zod would not end
    if (dataTooDeep(data)) throw new SyntaxProblem(0, 0, `nested deeper than ${MAX_CONFIG_DEPTH} levels`);
  }
  const place = (offset: number): Place => ({ line: lineCounter.linePos(offset).line, offset });
  const docStart = (doc.contents as Node | null)?.range?.[0] ?? 0;
  // each mapping's keys, indexed when a path first goes through it (a report may locate thousands of paths)
  const index = new WeakMap<object, Map<string, Pair>>();
  const pairOf = (map: YAMLMap, seg: string | number): Pair | undefined => {
    let m = index.get(map);
    if (!m) {
      m = new Map();
      for (const p of map.items) {
        if (isScalar(p.key) && !m.has(String(p.key.value))) m.set(String(p.key.value), p);
      }
      index.set(map, m);
    }
    return m.get(String(seg));
  };
  return {
    data,
    // the yaml doc has the same structure as data, so a path walks both the same way
    locate(path: DataPath, key = false): Place {
      let node: unknown = doc.contents;
      let at = docStart;
      for (let i = 0; i < path.length; i++) {
        const seg = path[i];
        if (isMap(node)) {
          const pair = pairOf(node, seg);
          if (!pair) break;
          const k = pair.key as Node;
          at = k.range?.[0] ?? at;
          if (key && i === path.length - 1) break;
          node = pair.value;
          if ((node as Node | null)?.range) at = (node as Node).range![0];
        } else if (isSeq(node) && typeof seg === "number" && seg < node.items.length) {
          node = node.items[seg];
          if ((node as Node | null)?.range) at = (node as Node).range![0];
        } else break;
      }
      return place(at);
    },
  };
}
