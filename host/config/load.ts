/**
 * The host config file of `nfqlb apply` / `teardown` (docs/config.md):
 * YAML or JSON, checked by a zod schema (host/config/schema.ts, published
 * as docs/nfqlb-config.schema.json) and by the rules between keys
 * (host/config/rules.ts). Loading has no side effects: a bad file is
 * refused as a whole, before anything is changed.
 *
 * Errors are one line, `<file>:<line>: <path>: <expected>, got <value>`;
 * when there are several, the first in the file is shown and the count of
 * the others is added.
 */
import type { z } from "zod";
import { errorText, NfqlbError } from "../../core/errors.ts";
import { HostConfigFileSchema } from "./schema.ts";
import { checkRules, type Issue } from "./rules.ts";
import { type DataPath, isJson, readSource, type Source, SyntaxProblem } from "./source.ts";
import type { HostConfig } from "./types.ts";

export { DEFAULT_ADMIN_ADDRESS, HostConfigFileSchema } from "./schema.ts";
export type { HostConfigFile, HostConfigParsed } from "./schema.ts";
export type {
  AdminConfig,
  ConntrackConfig,
  DataplaneConfig,
  DataplaneOptions,
  Family,
  FlowConfig,
  HostConfig,
  PortSelector,
  Scheduler,
  ServiceConfig,
  TargetConfig,
  Vip,
} from "./types.ts";

/** A config file that cannot be used; the message is one line naming the file. Exit status 1. */
export class ConfigError extends NfqlbError {
  /**
   * A config error.
   * @param message the one-line report
   */
  constructor(message: string) {
    super(message, 1);
    this.name = "ConfigError";
  }
}

/**
 * Largest config file read, in bytes (1 MiB). A host config is a few KiB
 * (about 150 bytes per target); a bigger file is refused before it is
 * parsed, so that no file can make apply, status or teardown take seconds
 * and gigabytes (a 13 MB file took 18–28 s and 1.6 GB to refuse).
 */
export const MAX_CONFIG_BYTES = 1 << 20;

const tooLarge = (file: string) =>
  new ConfigError(`${file}: too large: more than ${MAX_CONFIG_BYTES} bytes (a config file is at most 1 MiB)`);

/** `services[0].targets[1].weight`; the root is `(top level)`. */
export function formatPath(path: DataPath): string {
  let s = "";
  for (const seg of path) s += typeof seg === "number" ? `[${seg}]` : s === "" ? seg : `.${seg}`;
  return s === "" ? "(top level)" : s;
}

/** A value as an error shows it: JSON, on one line, cut at 60 characters. */
export function showGot(v: unknown): string {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function valueAt(data: unknown, path: DataPath): unknown {
  let v = data;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

/** zod's issues as ours: an unknown-keys issue becomes one issue per key, at the key. */
function fromZod(error: z.ZodError): Issue[] {
  const out: Issue[] = [];
  for (const iss of error.issues) {
    const path = iss.path.filter((p): p is string | number => typeof p !== "symbol");
    if (iss.code === "unrecognized_keys") {
      for (const k of iss.keys) {
        out.push({ path: [...path, k], expected: iss.message, got: JSON.stringify(k), key: true });
      }
    } else out.push({ path, expected: iss.message });
  }
  return out;
}

function report(file: string, src: Source, issues: Issue[]): ConfigError {
  const placed = issues.map((iss) => ({ iss, place: src.locate(iss.path, iss.key) }));
  // by position in the file; the sort is stable, so ties keep the check order
  placed.sort((a, b) => a.place.offset - b.place.offset);
  const { iss, place } = placed[0];
  const got = iss.got ?? showGot(valueAt(src.data, iss.path));
  const more = placed.length > 1 ? ` (and ${placed.length - 1} more)` : "";
  return new ConfigError(
    `${file}:${place.line}: ${formatPath(iss.path)}: ${iss.expected}, got ${got}${more}`,
  );
}

/**
 * Parses and validates a host config: JSON when `file` ends in .json or the
 * text starts with `{`, else YAML.
 *
 * @param text the file's contents
 * @param file the name used in error messages
 * @throws ConfigError with one line: `<file>:<line>: <path>: <expected>, got <value>`, or
 *   `<file>:<line>:<col>: YAML syntax: <message>` (JSON: `JSON syntax`), `YAML aliases: ...`,
 *   `nested deeper than 32 levels`, or `<file>: too large: ...` over {@link MAX_CONFIG_BYTES}
 *
 * @example
 * ```ts
 * const cfg = parseHostConfig(
 *   "version: 1\nservices:\n  - name: web\n    vips: [10.0.0.1]\n    targets: [{fwmark: 101, address: 192.168.1.1}]\n",
 *   "hosts.yaml",
 * );
 * cfg.services[0].targets[0].table; // 101
 * ```
 */
export function parseHostConfig(text: string, file: string): HostConfig {
  // UTF-8 has at least one byte per UTF-16 unit, at most three
  if (text.length > MAX_CONFIG_BYTES) throw tooLarge(file);
  if (text.length * 3 > MAX_CONFIG_BYTES && new TextEncoder().encode(text).length > MAX_CONFIG_BYTES) {
    throw tooLarge(file);
  }
  if (text.trim() === "") {
    throw new ConfigError(`${file}:1: (top level): expected a mapping with version: 1, got an empty file`);
  }
  let src: Source;
  try {
    src = readSource(text, isJson(text, file));
  } catch (e) {
    if (!(e instanceof SyntaxProblem)) throw e;
    throw new ConfigError(e.line > 0 ? `${file}:${e.line}:${e.col}: ${e.message}` : `${file}: ${e.message}`);
  }
  if (src.data === null || src.data === undefined) {
    throw new ConfigError(`${file}:1: (top level): expected a mapping with version: 1, got nothing`);
  }
  // another version is another format: its other keys cannot be judged by this one's rules
  const version = valueAt(src.data, ["version"]);
  if (typeof src.data === "object" && !Array.isArray(src.data) && version !== 1) {
    throw report(file, src, [{ path: ["version"], expected: "expected 1 (the only format version)" }]);
  }
  const parsed = HostConfigFileSchema.safeParse(src.data);
  if (!parsed.success) throw report(file, src, fromZod(parsed.error));
  const { config, issues } = checkRules(parsed.data);
  if (issues.length > 0) throw report(file, src, issues);
  return config;
}

/**
 * Reads at most MAX_CONFIG_BYTES + 1 bytes of `path` (a pipe or a device
 * is bounded too), and refuses the file when there are more.
 * @throws ConfigError `<path>: cannot read: <reason>`, `<path>: too large: ...`
 */
async function readBounded(path: string): Promise<string> {
  const buf = new Uint8Array(MAX_CONFIG_BYTES + 1);
  let n = 0;
  try {
    using f = await Deno.open(path);
    const st = await f.stat();
    if (st.isFile && st.size > MAX_CONFIG_BYTES) throw tooLarge(path);
    while (n < buf.length) {
      const got = await f.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(`${path}: cannot read: ${errorText(e)}`);
  }
  if (n > MAX_CONFIG_BYTES) throw tooLarge(path);
  return new TextDecoder().decode(buf.subarray(0, n));
}

/**
 * Reads and parses a host config file (at most {@link MAX_CONFIG_BYTES}).
 * @throws ConfigError `<path>: cannot read: <reason>`, `<path>: too large: more than 1048576 bytes
 *   (a config file is at most 1 MiB)`, or as {@link parseHostConfig}
 */
export async function loadHostConfig(path: string): Promise<HostConfig> {
  return parseHostConfig(await readBounded(path), path);
}
