/**
 * The log of `nfqlb run`: one line per event on stderr, with the time, the
 * level and the message. `text` is for people (`<time> <level> <message>
 * key=value...`), `json` for log shippers (one object per line). When
 * stderr is the journal (JOURNAL_STREAM names it, as systemd sets it for a
 * service's output), every line starts with the syslog priority `<N>` so
 * journald files it at that level (sd-daemon(3)'s SD_ERR... prefixes).
 */

/** Levels, with their syslog priorities (what journald gets). */
export const LEVELS = { error: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;

/** A level name. */
export type Level = keyof typeof LEVELS;

/** Output formats of {@link AgentLog}. */
export const LOG_FORMATS = ["text", "json"] as const;

/** An output format. */
export type LogFormat = (typeof LOG_FORMATS)[number];

/** Extra fields of an event (a pid, a duration, a count); shown as key=value in text. */
export type Fields = Record<string, string | number | boolean>;

/** Options of {@link AgentLog}. */
export interface AgentLogOptions {
  /** text (default) or json. */
  format?: LogFormat;
  /** Prefix lines with `<N>` (default: {@link stderrIsJournal}). */
  journal?: boolean;
  /** Where a finished line goes (default: stderr). */
  write?: (line: string) => void;
  /** The clock (tests). */
  now?: () => Date;
}

/**
 * Whether stderr is the journal: JOURNAL_STREAM is `<dev>:<inode>` of the
 * stream systemd connected, and counts only while stderr is still that
 * stream (a child whose stderr was redirected inherits the variable too).
 */
export function stderrIsJournal(env: string | undefined = Deno.env.get("JOURNAL_STREAM")): boolean {
  const m = /^(\d+):(\d+)$/.exec(env ?? "");
  if (!m) return false;
  try {
    const st = Deno.statSync("/proc/self/fd/2");
    return st.dev === Number(m[1]) && st.ino === Number(m[2]);
  } catch {
    return false;
  }
}

const enc = new TextEncoder();

function writeStderr(line: string): void {
  const b = enc.encode(line + "\n");
  let off = 0;
  // bounded: each write makes progress or throws
  for (let i = 0; i < 64 && off < b.length; i++) off += Deno.stderr.writeSync(b.subarray(off));
}

/** One line: newlines of a message (a multi-line error) become " | ". */
function oneLine(s: string): string {
  return s.replace(/\s*\r?\n\s*/g, " | ");
}

/** A text value: bare when it has no space, quote or `=`, else JSON-quoted. */
function textValue(v: string | number | boolean): string {
  const s = String(v);
  return s !== "" && !/[\s"=]/.test(s) ? s : JSON.stringify(s);
}

/**
 * The agent's log.
 *
 * @example
 * ```ts
 * const log = new AgentLog({ format: "json" });
 * log.info("applied host.yaml: 3 changes", { ms: 412 });
 * // {"time":"2025-05-01T10:00:00.000Z","level":"info","msg":"applied host.yaml: 3 changes","ms":412}
 * ```
 */
export class AgentLog {
  readonly #format: LogFormat;
  readonly #journal: boolean;
  readonly #write: (line: string) => void;
  readonly #now: () => Date;

  /** A log with the given format and destination. */
  constructor(o: AgentLogOptions = {}) {
    this.#format = o.format ?? "text";
    this.#journal = o.journal ?? stderrIsJournal();
    this.#write = o.write ?? writeStderr;
    this.#now = o.now ?? (() => new Date());
  }

  /** The line of one event (without the newline). */
  format(level: Level, msg: string, fields: Fields = {}): string {
    const time = this.#now().toISOString();
    const prefix = this.#journal ? `<${LEVELS[level]}>` : "";
    if (this.#format === "json") {
      return prefix + JSON.stringify({ time, level, msg: oneLine(msg), ...fields });
    }
    const extra = Object.entries(fields).map(([k, v]) => ` ${k}=${textValue(v)}`).join("");
    return `${prefix}${time} ${level.padEnd(7)} ${oneLine(msg)}${oneLine(extra)}`;
  }

  /** Logs one event. Never throws (a closed stderr must not stop the agent). */
  log(level: Level, msg: string, fields?: Fields): void {
    try {
      this.#write(this.format(level, msg, fields));
    } catch { /* stderr gone: nothing else to tell */ }
  }

  /** An error: something failed (a refused reload, a dataplane that exited). */
  error(msg: string, fields?: Fields): void {
    this.log("error", msg, fields);
  }

  /** A warning: something to look at, handled. */
  warning(msg: string, fields?: Fields): void {
    this.log("warning", msg, fields);
  }

  /** A notice: a state change (ready, reloaded, stopping). */
  notice(msg: string, fields?: Fields): void {
    this.log("notice", msg, fields);
  }

  /** Information: one change apply made. */
  info(msg: string, fields?: Fields): void {
    this.log("info", msg, fields);
  }
}
