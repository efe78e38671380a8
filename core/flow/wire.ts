/**
 * The remote-command protocol between the flow clients (`flow-set`, …) and
 * `flowlb`, as upstream's: one request per stream connection, lines
 * `key:value\n` ended by a line starting with `eoc:`; the reply is a C string
 * with its terminating NUL (set, delete, errors) or raw JSON (lists); then the
 * server closes.
 */
import type { FlowRequest } from "./types.ts";

/** Default flow server address (upstream's DEFAULT_FLOW_ADDRESS). */
export const DEFAULT_FLOW_ADDRESS = "unix:nfqlb";

/** The flow server address: NFQLB_FLOW_ADDRESS, else `unix:nfqlb`. */
export function flowAddress(): string {
  return Deno.env.get("NFQLB_FLOW_ADDRESS") ?? DEFAULT_FLOW_ADDRESS;
}

/** Longest request line in bytes, newline excluded (upstream reads lines into a 1024-byte buffer). */
export const MAX_LINE = 1023;

/**
 * Most bytes a request may have, up to and including its `eoc:` line (ours;
 * upstream has no bound). The longest request a client can send is the 11
 * keys at {@link MAX_LINE} bytes each, 11 269 bytes; more means duplicate or
 * unknown keys, which only a broken or hostile client sends.
 */
export const MAX_REQUEST = 16384;

/** The actions a server knows. */
export const ACTIONS = [
  "set",
  "delete",
  "list",
  "list-names",
  "trace-set",
  "trace-delete",
  "trace-list",
  "trace-list-names",
] as const;

/** A request as the server read it. */
export interface FlowCommand extends FlowRequest {
  /** The action (first occurrence wins; undefined when not sent). */
  action?: string;
  /** Keys that were not recognised (ignored, as upstream; reported as warnings). */
  unknown: string[];
}

/** Keys whose last occurrence wins (upstream atoi()s them on the fly); for all others the first wins. */
const LAST_WINS = new Set(["priority", "udpencap"]);
const KEYS = new Set([
  "action",
  "name",
  "target",
  "priority",
  "protocols",
  "dports",
  "sports",
  "dsts",
  "srcs",
  "match",
  "udpencap",
]);

/** Request fields in the order upstream's clients send them. */
export const SEND_ORDER = [
  "action",
  "name",
  "target",
  "priority",
  "protocols",
  "dsts",
  "srcs",
  "dports",
  "sports",
  "match",
  "udpencap",
] as const;

/**
 * Encodes a request as upstream's clients write it: action, name, target,
 * priority, protocols, dsts, srcs, dports, sports, match, udpencap (those
 * given), then `eoc:`.
 * @throws Error when a value holds a newline or NUL (it would split the line)
 */
export function encodeRequest(fields: FlowRequest & { action: string }): Uint8Array {
  let text = "";
  for (const key of SEND_ORDER) {
    const v = fields[key];
    if (v === undefined) continue;
    if (/[\n\0]/.test(v)) throw new Error(`${key} contains a newline or NUL`);
    text += `${key}:${v}\n`;
  }
  return new TextEncoder().encode(text + "eoc:\n");
}

/** The bytes of a C-string reply: the text and its NUL. */
export function encodeReply(text: string): Uint8Array {
  return new TextEncoder().encode(text + "\0");
}

/** The text of a C-string reply: up to the first NUL (all of it when there is none). */
export function decodeReply(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return new TextDecoder().decode(nul >= 0 ? bytes.subarray(0, nul) : bytes);
}

/** What {@link RequestReader.push} and {@link RequestReader.end} report. */
export type ReadOutcome =
  /** Need more bytes. */
  | { kind: "more" }
  /** A complete request (bytes after `eoc:` are ignored). */
  | { kind: "done"; command: FlowCommand }
  /**
   * A broken request: `warning` is for the log; `reply`, when set, is sent
   * (as a C string) before closing, else the connection closes with no reply.
   * `problem` names the kind, for a server's summary of bad clients.
   */
  | { kind: "error"; problem: RequestProblem; warning: string; reply?: string };

/** What was wrong with a broken request. */
export type RequestProblem = "invalid param" | "unexpected eof" | "line too long" | "request too long";

/**
 * Incremental request parser. Upstream's rules: `eoc:` at the start of a
 * line ends the request; a line without `:` closes the connection with no
 * reply; EOF before `eoc:` likewise; unknown keys are ignored. Ours: a line
 * longer than {@link MAX_LINE} bytes gets the reply `FAIL: line too long`
 * (upstream splits it, which usually ends as a line without `:`), and a
 * request longer than {@link MAX_REQUEST} bytes `FAIL: request too long`; so
 * a reader holds at most MAX_LINE pending bytes and reads at most MAX_REQUEST.
 */
export class RequestReader {
  #pending: Uint8Array[] = [];
  #pendingLen = 0;
  /** Bytes of the lines already parsed, newlines included. */
  #consumed = 0;
  #cmd: FlowCommand = { unknown: [] };
  #finished: ReadOutcome | undefined;
  #dec = new TextDecoder();

  /** Feeds received bytes. After "done" or "error" further input is ignored. */
  push(chunk: Uint8Array): ReadOutcome {
    if (this.#finished) return this.#finished;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (this.#pendingLen + end - start > MAX_LINE) {
        return this.#finish({
          kind: "error",
          problem: "line too long",
          warning: "readFlowCmd; line too long",
          reply: "FAIL: line too long",
        });
      }
      // this line would end (or, unfinished, already lies) beyond the request bound
      if (this.#consumed + this.#pendingLen + end - start + (nl < 0 ? 0 : 1) > MAX_REQUEST) {
        return this.#finish({
          kind: "error",
          problem: "request too long",
          warning: "readFlowCmd; request too long",
          reply: "FAIL: request too long",
        });
      }
      if (nl < 0) {
        if (end > start) {
          this.#pending.push(chunk.slice(start, end));
          this.#pendingLen += end - start;
        }
        return { kind: "more" };
      }
      const parts = [...this.#pending, chunk.subarray(start, end)];
      this.#consumed += this.#pendingLen + end - start + 1;
      this.#pending = [];
      this.#pendingLen = 0;
      const r = this.#line(this.#dec.decode(concat(parts)));
      if (r) return this.#finish(r);
      start = nl + 1;
    }
  }

  /** The peer closed its side: a request without `eoc:` is an error with no reply. */
  end(): ReadOutcome {
    if (this.#finished) return this.#finished;
    return this.#finish({ kind: "error", problem: "unexpected eof", warning: "readFlowCmd; unexpected eof" });
  }

  #finish(r: ReadOutcome): ReadOutcome {
    this.#finished = r;
    return r;
  }

  #line(line: string): ReadOutcome | undefined {
    if (line.startsWith("eoc:")) return { kind: "done", command: this.#cmd };
    const colon = line.indexOf(":");
    if (colon < 0) {
      return {
        kind: "error",
        problem: "invalid param",
        warning: `readFlowCmd; invalid param [${visible(line)}]`,
      };
    }
    const key = line.slice(0, colon), value = line.slice(colon + 1);
    if (!KEYS.has(key)) {
      if (this.#cmd.unknown.length < 16) this.#cmd.unknown.push(key);
      return undefined;
    }
    const k = key as Exclude<keyof FlowCommand, "unknown">;
    if (LAST_WINS.has(key) || this.#cmd[k] === undefined) this.#cmd[k] = value;
    return undefined;
  }
}

/** The bytes of `parts` in one buffer (the only part itself when there is one). */
export function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function visible(s: string): string {
  const t = s.length > 64 ? s.slice(0, 64) + "..." : s;
  return /^[\x20-\x7e]*$/.test(t) ? t : JSON.stringify(t).slice(1, -1);
}

/**
 * Parses a whole request held in memory (for tests and tools).
 * @returns the outcome as if the bytes arrived and the peer then closed
 */
export function parseRequest(bytes: Uint8Array): Exclude<ReadOutcome, { kind: "more" }> {
  const r = new RequestReader();
  const o = r.push(bytes);
  const end = o.kind === "more" ? r.end() : o;
  if (end.kind === "more") throw new Error("unreachable");
  return end;
}
