/**
 * Reads the text of a config file (YAML or JSON) into plain data, and maps a
 * path in that data back to where it is in the text, so that every error can
 * name its line. JSON is parsed by JSON.parse (so a .json file is strict
 * JSON) and located with the YAML parser, which reads JSON as YAML flow
 * collections with the same offsets; YAML's duplicate-key check catches the
 * keys that JSON.parse silently overwrites.
 */
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";

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

/** Whether the text is JSON: by file name, or by a leading `{`. */
export function isJson(text: string, file: string): boolean {
  return file.toLowerCase().endsWith(".json") || text.trimStart().startsWith("{");
}

/** yaml's messages end with ` at line L, column C:` and a picture of the line; keep the first part. */
function firstLine(msg: string): string {
  return msg.replace(/ at line \d+, column \d+:[\s\S]*$/, "").split("\n")[0];
}

/**
 * Parses the text.
 * @throws SyntaxProblem on a YAML or JSON syntax error (or a duplicate key)
 */
export function readSource(text: string, json: boolean): Source {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, logLevel: "silent" });
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
    // a duplicate key is valid JSON, but one of the two values would be lost silently
    const dup = doc.errors.find((e) => e.code === "DUPLICATE_KEY");
    if (dup) {
      const pos = dup.linePos?.[0];
      throw new SyntaxProblem(pos?.line ?? 0, pos?.col ?? 0, `JSON syntax: ${firstLine(dup.message)}`);
    }
  } else {
    const err = doc.errors[0];
    if (err) {
      const pos = err.linePos?.[0];
      throw new SyntaxProblem(pos?.line ?? 1, pos?.col ?? 1, `YAML syntax: ${firstLine(err.message)}`);
    }
    data = doc.toJS({ maxAliasCount: 100 });
  }
  const place = (offset: number): Place => ({ line: lineCounter.linePos(offset).line, offset });
  const docStart = (doc.contents as Node | null)?.range?.[0] ?? 0;
  return {
    data,
    // the yaml doc has the same structure as data, so a path walks both the same way
    locate(path: DataPath, key = false): Place {
      let node: unknown = doc.contents;
      let at = docStart;
      for (let i = 0; i < path.length; i++) {
        const seg = path[i];
        if (isMap(node)) {
          const pair = node.items.find((p) =>
            isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg)
          );
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
