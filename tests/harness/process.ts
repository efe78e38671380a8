/**
 * Running commands for the lab: {@link run} (a command to completion, bounded
 * in time), {@link Proc} (a long-running child whose output is collected),
 * {@link ProcGroup} (the commands and processes of one lab, all stopped by pid
 * when it closes), {@link waitUntil} (bounded polling) and pid checks.
 */

/** Output of a finished command. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link run}. */
export interface RunOptions {
  env?: Record<string, string>;
  /** Kill the command after this long (default 30 s). */
  timeoutMs?: number;
  /** Return failures instead of throwing. */
  allowFail?: boolean;
  stdin?: string;
  /** Kills the command when aborted. */
  signal?: AbortSignal;
}

/** Runs a command: `args[0]` with `args[1..]`. */
export type Runner = (args: string[], o?: RunOptions) => Promise<RunResult>;

/** Splits a command line at spaces (no quoting; for fixed command texts). */
export function w(text: string): string[] {
  return text.split(" ").filter((x) => x !== "");
}

/** Runs a command to completion, bounded in time; throws on a non-zero exit unless `allowFail`. */
export async function run(args: string[], o: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  const cmd = new Deno.Command(args[0], {
    args: args.slice(1),
    env: o.env,
    stdin: o.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  let why = "";
  const kill = (reason: string) => {
    why ||= reason;
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  };
  const timer = setTimeout(() => kill(`killed after ${timeoutMs} ms`), timeoutMs);
  const onAbort = () => kill("killed: topology torn down");
  o.signal?.addEventListener("abort", onAbort);
  if (o.signal?.aborted) onAbort();
  try {
    if (o.stdin !== undefined && child.stdin) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(o.stdin));
      await w.close();
    }
    const out = await child.output();
    const dec = new TextDecoder();
    const r = { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    if (why) r.stderr += `\n(${why})`;
    if (r.code !== 0 && !o.allowFail) {
      throw new Error(
        `command failed (${r.code}): ${args.join(" ")}\n${r.stderr.trim()}\n${r.stdout.trim()}`,
      );
    }
    return r;
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener("abort", onAbort);
  }
}

/** Polls `cond` every `intervalMs` until it is true; false after `timeoutMs` (bounded in count too). */
export async function waitUntil(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  const maxTries = Math.ceil(timeoutMs / intervalMs) + 1;
  for (let i = 0; i < maxTries; i++) {
    if (await cond()) return true;
    if (Date.now() >= end) break;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return false;
}

/** Keeps the last `max` characters of a growing text. */
function tail(s: string, max = 256 * 1024): string {
  return s.length > max ? s.slice(s.length - max) : s;
}

/** A long-running child process whose output is collected in the background. */
export class Proc {
  /** What it is, for messages. */
  readonly label: string;
  /** The child process. */
  readonly child: Deno.ChildProcess;
  #stdout = "";
  #stderr = "";
  #status: Deno.CommandStatus | undefined;
  #done: Promise<Deno.CommandStatus>;

  constructor(label: string, args: string[], env?: Record<string, string>) {
    this.label = label;
    const child = new Deno.Command(args[0], {
      args: args.slice(1),
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    const drain = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
      const dec = new TextDecoder();
      try {
        for await (const chunk of s) add(dec.decode(chunk, { stream: true }));
      } catch { /* closed */ }
    };
    const outDone = drain(child.stdout, (t) => this.#stdout = tail(this.#stdout + t));
    const errDone = drain(child.stderr, (t) => this.#stderr = tail(this.#stderr + t));
    this.#done = (async () => {
      const st = await child.status;
      await Promise.all([outDone, errDone]);
      this.#status = st;
      return st;
    })();
  }

  /** Process id. */
  get pid(): number {
    return this.child.pid;
  }
  /** Collected stdout so far. */
  get stdout(): string {
    return this.#stdout;
  }
  /** Collected stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }
  /** Exit status once it has exited. */
  get status(): Deno.CommandStatus | undefined {
    return this.#status;
  }
  /** Resolves when the process has exited and its output is collected. */
  get done(): Promise<Deno.CommandStatus> {
    return this.#done;
  }

  /** Sends a signal if it still runs. */
  signal(sig: Deno.Signal): void {
    if (this.#status) return;
    try {
      this.child.kill(sig);
    } catch { /* exited meanwhile */ }
  }

  /** `sig` (default SIGTERM), then SIGKILL after `graceMs`; resolves with the exit status. */
  async stop(graceMs = 5000, sig: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    if (this.#status) return this.#status;
    this.signal(sig);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), graceMs));
    const first = await Promise.race([this.#done, late]);
    clearTimeout(timer);
    if (first === "late") this.signal("SIGKILL");
    return await this.#done;
  }

  /** Output for messages. */
  describe(): string {
    const st = this.#status ? `exited code=${this.#status.code} signal=${this.#status.signal}` : "running";
    return `${this.label} (pid ${this.pid}, ${st})\n--- stdout\n${this.#stdout.slice(-4000)}\n--- stderr\n${
      this.#stderr.slice(-4000)
    }`;
  }
}

/**
 * The commands and long-running processes of one lab. {@link close} kills the
 * commands still running, stops every process (by pid: SIGTERM, then SIGKILL)
 * and refuses new ones from then on; it never throws.
 */
export class ProcGroup {
  /** For messages: "<what> is torn down". */
  readonly name: string;
  #procs = new Set<Proc>();
  #inflight = new Set<Promise<unknown>>();
  #abort = new AbortController();
  #closed = false;

  constructor(name: string) {
    this.name = name;
  }

  /** Whether {@link close} has started. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Throws once {@link close} has started. */
  check(): void {
    if (this.#closed) throw new Error(`${this.name} is torn down`);
  }

  /** {@link run} that is killed when the group closes; refused after that. */
  async run(args: string[], o: RunOptions = {}): Promise<RunResult> {
    this.check();
    const p = run(args, { ...o, signal: this.#abort.signal });
    this.#inflight.add(p);
    try {
      return await p;
    } finally {
      this.#inflight.delete(p);
    }
  }

  /** Starts a {@link Proc} that is stopped when the group closes. */
  spawn(label: string, args: string[], env?: Record<string, string>): Proc {
    this.check();
    const p = new Proc(label, args, env);
    this.#procs.add(p);
    return p;
  }

  /** Stops tracking a process (the caller has stopped it). */
  forget(p: Proc): void {
    this.#procs.delete(p);
  }

  /** Kills running commands, then stops every process (SIGKILL after `graceMs`). Idempotent; never throws. */
  async close(graceMs = 5000): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    await Promise.allSettled([...this.#inflight]);
    await Promise.all([...this.#procs].map((p) => p.stop(graceMs).catch(() => {})));
    this.#procs.clear();
  }
}

/** Whether a process with this pid exists (zombies included). */
export function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Whether `pid` runs (exists and is not a zombie left for a parent that does not reap it). */
export function pidRunning(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** SIGKILLs `pid`; a process that is already gone is fine. */
export function killPid(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
}
