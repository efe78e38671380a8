/**
 * The log of `lb` and `flowlb`, as upstream's: levels as upstream (warning
 * 4, notice 5, info 6, debug 7; ours: error 3), the level read from the
 * `nfqlb-trace` shm on every call (so `nfqlb loglevel N` takes effect at
 * once), lines to stderr, and a copy to the trace clients whose mask has the
 * `log` bit (0x01). Nothing is ever logged per packet: per-packet events are
 * trace lines (dataplane/trace_format.ts) and counters.
 *
 * @example
 * ```ts
 * log.warning("flowlb: restore: flow x: ..."); // stderr at level >= 4
 * log.debug("Trace: accept");                  // only at level >= 7
 * ```
 */
import { DEFAULT_LOG_LEVEL, logLevel, traceMask } from "./trace_shm.ts";

/** Log levels: a line is written when the configured level is at least its level. */
export const LOG_LEVEL = { error: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;

/** A level name. */
export type LogLevelName = keyof typeof LOG_LEVEL;

/**
 * The `nfqlb-trace` shm ({int32 level; uint32 mask}) for lb and flowlb.
 * Read and written through the file on each access, never mapped: a
 * truncated or replaced file must not fault the process, and a missing or
 * short one is created again with level 5 and mask 0 (as upstream creates
 * it). Log lines and trace sessions are rare: a few syscalls each.
 */
export class TraceShmView {
  private constructor() {}

  /**
   * Creates the trace shm when it is missing or short.
   * @throws NfqlbError `createSharedData: nfqlb-trace: <reason>`
   */
  static open(): TraceShmView {
    logLevel(); // creates it, level 5, when missing or short
    return new TraceShmView();
  }

  /** The log level (upstream: default 5; 5 too when the file cannot be read or made). */
  get level(): number {
    try {
      return logLevel();
    } catch {
      return DEFAULT_LOG_LEVEL;
    }
  }

  /** The trace mask as `nfqlb trace` left it (0 when the file cannot be read or made). */
  get mask(): number {
    try {
      return traceMask();
    } catch {
      return 0;
    }
  }

  set mask(m: number) {
    try {
      traceMask(m);
    } catch { /* nothing to keep it in: the clients' own masks still hold */ }
  }

  /** Nothing to release (kept for the callers' life cycle). */
  close(): void {}
}

/** Where log lines go and where the level comes from. */
export interface LogTarget {
  /** The current level (read on every call). */
  level(): number;
  /** Writes one line (without its newline) to the log (default: stderr). */
  write?(line: string): void;
  /** Copies one line to the trace clients that selected `log` (called for every written line). */
  trace?(line: string): void;
}

const enc = new TextEncoder();

function stderrLine(line: string): void {
  let data = enc.encode(line + "\n");
  try {
    while (data.length > 0) data = data.subarray(Deno.stderr.writeSync(data));
  } catch { /* stderr gone: nowhere to report it */ }
}

/** A leveled logger; see the module comment. */
export class Log {
  #target: LogTarget;

  constructor(target: LogTarget) {
    this.#target = target;
  }

  /** Replaces where lines go (lb/flowlb: the mapped shm and their trace server). */
  configure(target: LogTarget): void {
    this.#target = target;
  }

  /** Whether a line of `level` is written now. */
  enabled(level: LogLevelName): boolean {
    return this.#level() >= LOG_LEVEL[level];
  }

  #level(): number {
    try {
      return this.#target.level();
    } catch {
      return 5;
    }
  }

  /** Writes `msg` when the level is at least `level`. */
  log(level: LogLevelName, msg: string): void {
    if (!this.enabled(level)) return;
    (this.#target.write ?? stderrLine)(msg);
    this.#target.trace?.(msg);
  }

  /** Level 3 (ours: failures that end something). */
  error(msg: string): void {
    this.log("error", msg);
  }
  /** Level 4. */
  warning(msg: string): void {
    this.log("warning", msg);
  }
  /** Level 5. */
  notice(msg: string): void {
    this.log("notice", msg);
  }
  /** Level 6. */
  info(msg: string): void {
    this.log("info", msg);
  }
  /** Level 7. */
  debug(msg: string): void {
    this.log("debug", msg);
  }
}

/** The default target: the level read from the shm file on each call (created as upstream does), stderr. */
export const DEFAULT_LOG_TARGET: LogTarget = { level: () => logLevel() };

/** The process's logger; lb/flowlb point it at their mapped shm and trace server (dataplane/trace_server.ts). */
export const log = new Log(DEFAULT_LOG_TARGET);
