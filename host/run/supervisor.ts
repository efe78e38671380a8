/**
 * Keeping the dataplane of `nfqlb run` alive: noticing at once that the
 * lb/flowlb exited, and deciding when to start it again. A first crash is
 * restarted at once; crashes that follow each other (the dataplane lived
 * less than {@link STABLE_MS}) wait longer each time, doubling up to
 * {@link MAX_BACKOFF_MS}, so a dataplane that cannot start does not spin a
 * CPU and fill the log, and one that crashed once is back within the second.
 *
 * A dataplane that this process started is its child: its exit is known the
 * moment it happens (exitOf). One it adopted (left running by an earlier
 * `run --keep` or `apply`) is not, and is polled every {@link POLL_MS}.
 */
import { exitOf, isDataplane } from "../dataplane_process.ts";

/** A dataplane that lived this long before it exited crashed "once": restarted at once. */
export const STABLE_MS = 10_000;
/** The longest wait between restarts of a dataplane that keeps crashing. */
export const MAX_BACKOFF_MS = 10_000;
/** The first wait of a second crash in a row; doubled for each further one. */
export const FIRST_BACKOFF_MS = 250;
/** How often an adopted dataplane (not our child) is checked. */
export const POLL_MS = 100;

/**
 * The wait before restart number `streak` of a run of crashes (1: the first
 * crash after a stable run): 0, then 250 ms, 500 ms, 1 s, ... up to 10 s.
 *
 * @example
 * ```ts
 * [1, 2, 3, 4, 8].map(backoffMs); // [0, 250, 500, 1000, 10000]
 * ```
 */
export function backoffMs(streak: number): number {
  if (streak <= 1) return 0;
  return Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** Math.min(streak - 2, 30));
}

/** How a watched dataplane ended. */
export interface DataplaneExit {
  /** Its pid. */
  pid: number;
  /** How long it was watched, ms. */
  livedMs: number;
  /** "exit code 1", "signal SIGKILL", or "gone" for an adopted process (no status to read). */
  how: string;
}

/**
 * Watches one dataplane process until it exits or {@link cancel} is called.
 * `onExit` is called once, unless cancelled first.
 */
export class DataplaneWatch {
  /** The pid watched. */
  readonly pid: number;
  readonly #since = Date.now();
  #cancelled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param pid the dataplane's pid
   * @param program, args its command line (an adopted pid reused by another program counts as exited)
   * @param onExit called once when it exits
   */
  constructor(
    pid: number,
    program: string,
    args: readonly string[],
    onExit: (e: DataplaneExit) => void,
  ) {
    this.pid = pid;
    const done = (how: string) => {
      if (this.#cancelled) return;
      this.cancel();
      onExit({ pid, livedMs: Date.now() - this.#since, how });
    };
    const exit = exitOf(pid);
    if (exit) {
      exit.then((s) => done(s.signal ? `signal ${s.signal}` : `exit code ${s.code}`));
    } else {
      const poll = () => {
        if (this.#cancelled) return;
        if (!isDataplane(pid, program, args)) done("gone");
        else this.#timer = setTimeout(poll, POLL_MS);
      };
      poll();
    }
  }

  /** Stops watching (no onExit after this). */
  cancel(): void {
    this.#cancelled = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
