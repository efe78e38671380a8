/**
 * What the request/reply servers of lb and flowlb (the flow server, the
 * metrics endpoint) share so that no client can starve the others:
 *
 * - At most `maxConnections` connections are served at once. Further clients
 *   are not refused: they wait in the kernel's listen backlog (1024 on Linux
 *   for Deno's listeners) and are accepted, in order, as slots free up.
 * - Each connection has a deadline: `requestMs` from accept to a complete
 *   request, then `replyMs` to write the reply. A client that is too slow is
 *   disconnected, so it holds a slot for at most requestMs + replyMs.
 * - Accept errors (EMFILE, ENFILE, ...) pause the loop briefly instead of
 *   ending the server.
 * - {@link ProblemLog}: bad and slow clients are logged as one full line,
 *   then one summary line per window, however many there are.
 */
import { errorText } from "../core/errors.ts";

/** Limits of a {@link serveBounded} server. */
export interface ConnectionLimits {
  /** Connections served at once; later clients wait in the listen backlog. */
  maxConnections: number;
  /** From accept to a complete request, in ms. */
  requestMs: number;
  /** From a complete request to the reply written, in ms. */
  replyMs: number;
}

/**
 * A connection's deadline: when it passes, the connection is closed, so
 * that a pending read or write fails; {@link expired} then tells a timeout
 * from other failures.
 */
export class Deadline {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #expired = false;
  readonly #conn: Deno.Conn;

  /**
   * Starts the clock.
   * @param conn closed when the deadline passes
   * @param ms time allowed
   */
  constructor(conn: Deno.Conn, ms: number) {
    this.#conn = conn;
    this.restart(ms);
  }

  /** Whether the deadline passed (and closed the connection). */
  get expired(): boolean {
    return this.#expired;
  }

  /** Allows `ms` from now instead (no effect once expired). */
  restart(ms: number): void {
    if (this.#expired) return;
    this.clear();
    this.#timer = setTimeout(() => {
      this.#expired = true;
      this.#timer = undefined;
      try {
        this.#conn.close();
      } catch { /* already closed */ }
    }, ms);
  }

  /** Stops the clock. */
  clear(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/** A running {@link serveBounded} server. */
export interface BoundedServer {
  /** Connections being served now. */
  readonly active: number;
  /** Stops accepting, closes open connections, resolves when every handler has returned. */
  close(): Promise<void>;
}

/**
 * Serves `listener`: each accepted connection is passed to `handle` with its
 * deadline (running from accept with `requestMs`); the connection is closed
 * when `handle` returns or throws. At most `limits.maxConnections` handlers
 * run at once.
 *
 * @param onAcceptError called for an accept error that does not end the
 *   server (the loop retries after 100 ms); errors from a closed listener end it quietly
 *
 * @example
 * ```ts
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const server = serveBounded(listener, { maxConnections: 16, requestMs: 2000, replyMs: 10000 },
 *   async (conn, deadline) => {
 *     await conn.read(new Uint8Array(64));
 *     deadline.restart(10000);
 *     await conn.write(new TextEncoder().encode("hi\n"));
 *   }, (e) => console.error(`accept: ${e}`));
 * await server.close();
 * ```
 */
export function serveBounded(
  listener: Deno.Listener,
  limits: ConnectionLimits,
  handle: (conn: Deno.Conn, deadline: Deadline) => Promise<void>,
  onAcceptError: (e: unknown) => void,
): BoundedServer {
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let closing = false;
  // resolves the accept loop's wait (a slot freed, a pause ended, or close())
  let wake: (() => void) | undefined;
  const wait = (ms?: number) =>
    new Promise<void>((resolve) => {
      const t = ms === undefined ? undefined : setTimeout(() => {
        wake = undefined;
        resolve();
      }, ms);
      wake = () => {
        if (t !== undefined) clearTimeout(t);
        wake = undefined;
        resolve();
      };
    });

  const run = async (conn: Deno.Conn) => {
    const deadline = new Deadline(conn, limits.requestMs);
    try {
      await handle(conn, deadline);
    } catch {
      /* the handler reports what matters; a failure ends only this connection */
    } finally {
      deadline.clear();
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed by the deadline or close() */ }
      wake?.();
    }
  };

  const loop = (async () => {
    while (!closing) {
      // a full house: leave the next clients in the backlog until a slot frees
      if (conns.size >= limits.maxConnections) {
        await wait();
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (closing || e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) break;
        onAcceptError(e);
        await wait(100);
        continue;
      }
      if (closing) {
        conn.close();
        break;
      }
      conns.add(conn);
      const task = run(conn);
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })();

  return {
    get active() {
      return conns.size;
    },
    async close() {
      if (closing) return;
      closing = true;
      try {
        listener.close();
      } catch { /* already closed */ }
      wake?.();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await loop;
      await Promise.allSettled([...tasks]);
    },
  };
}

/**
 * A log for problems caused by clients (malformed requests, timeouts,
 * resets), so that a flood of them costs a few lines: the first problem is
 * logged in full; the others within `windowMs` are counted by kind and
 * logged as one summary line at the end of the window, e.g.
 * `flow server: 63 more bad or slow clients in 10 s: timed out 41, invalid param 22`.
 * A window with no further problem ends quietly, and the next problem is
 * again logged in full.
 */
export class ProblemLog {
  readonly #log: (line: string) => void;
  readonly #prefix: string;
  readonly #windowMs: number;
  #counts = new Map<string, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #total = 0;

  /**
   * @param log where lines go
   * @param prefix the server's name at the start of a summary line
   * @param windowMs one summary line per this many ms at most; 0 logs every problem in full
   */
  constructor(log: (line: string) => void, prefix: string, windowMs = 10_000) {
    this.#log = log;
    this.#prefix = prefix;
    this.#windowMs = windowMs;
  }

  /** Problems reported so far (logged or counted). */
  get total(): number {
    return this.#total;
  }

  /**
   * One problem.
   * @param kind short name used in the summary ("timed out")
   * @param line the full line, logged when no window is open
   */
  report(kind: string, line: string): void {
    this.#total++;
    if (this.#windowMs <= 0) return this.#log(line);
    if (this.#timer === undefined) {
      this.#log(line);
      this.#startWindow();
      return;
    }
    this.#counts.set(kind, (this.#counts.get(kind) ?? 0) + 1);
  }

  /** Logs the pending summary (if any) and stops the window timer. */
  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#flush();
  }

  #startWindow(): void {
    const timer = setTimeout(() => {
      this.#timer = undefined;
      // a window with problems opens the next one, so a steady flood is one line per window
      if (this.#flush()) this.#startWindow();
    }, this.#windowMs);
    // a pending summary must not keep a process alive
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #flush(): boolean {
    if (this.#counts.size === 0) return false;
    let n = 0;
    const parts: string[] = [];
    for (const [k, c] of this.#counts) {
      n += c;
      parts.push(`${k} ${c}`);
    }
    this.#counts.clear();
    const s = Math.round(this.#windowMs / 100) / 10;
    this.#log(`${this.#prefix}: ${n} more bad or slow clients in ${s} s: ${parts.join(", ")}`);
    return true;
  }
}

/** A failure as a short kind for {@link ProblemLog} (`reset`, `broken pipe`, or the error's text). */
export function failureKind(e: unknown): string {
  if (e instanceof Deno.errors.ConnectionReset) return "reset";
  if (e instanceof Deno.errors.BrokenPipe) return "broken pipe";
  return errorText(e);
}
