/**
 * `nfqlb run` under test: started in the lb netns of a {@link HostUnderTest}
 * as a long-running process whose log (stderr) is collected, with its admin
 * server asked from inside that namespace, and stopped by pid. Disposing it
 * (declare it after the host, so it goes first) sends SIGTERM, then SIGKILL,
 * then SIGKILLs every dataplane it was seen to run that is still alive in
 * the host's netns; the host's own dispose then tears down what is left.
 */
import type { HostUnderTest } from "./host.ts";
import { type HttpAnswer, httpGet, httpProbeArgs, HttpWatch } from "./http_probe.ts";
import { NFQLB } from "./paths.ts";
import { type Proc, run, waitUntil } from "./process.ts";

/** Options of {@link RunAgent.start}. */
export interface RunAgentOptions {
  /** The config file (default: the host's file). */
  file?: string;
  /** More arguments (`--keep`, `--log-format=json`, `--admin=...`). */
  args?: string[];
  /** More environment (NOTIFY_SOCKET, JOURNAL_STREAM). */
  env?: Record<string, string>;
  /** The admin address the test asks (default 127.0.0.1:9110, run's default). */
  admin?: string;
}

let runs = 0;

/** A running `nfqlb run`; see the module comment. */
export class RunAgent {
  /** The host it runs on. */
  readonly host: HostUnderTest;
  /** The process (its pid is the agent's: ip netns exec and scripts/nfqlb exec it). */
  readonly proc: Proc;
  /** The admin address (`ADDR:PORT`). */
  readonly admin: string;
  #dataplanes = new Set<number>();

  private constructor(host: HostUnderTest, proc: Proc, admin: string) {
    this.host = host;
    this.proc = proc;
    this.admin = admin;
  }

  /** Starts `nfqlb run -f FILE [args]` in the host's lb netns. */
  static start(host: HostUnderTest, o: RunAgentOptions = {}): RunAgent {
    const args = [NFQLB, "run", "-f", o.file ?? host.file, ...(o.args ?? [])];
    // systemd's variables of whatever runs the tests must not reach the agent: it would notify that systemd
    const quiet = { NOTIFY_SOCKET: "", WATCHDOG_USEC: "", WATCHDOG_PID: "", JOURNAL_STREAM: "" };
    const proc = host.topo.spawn(host.topo.ns.lb, `nfqlb run ${++runs}`, args, {
      ...host.env,
      ...quiet,
      ...o.env,
    });
    return new RunAgent(host, proc, o.admin ?? "127.0.0.1:9110");
  }

  /** The agent's pid. */
  get pid(): number {
    return this.proc.pid;
  }

  /** The log lines so far. */
  lines(): string[] {
    return this.proc.stderr.split("\n").filter((l) => l !== "");
  }

  /** The first log line (counting from line `from`) that matches `re`, waiting at most `timeoutMs`. */
  async waitLine(re: RegExp, timeoutMs: number, from = 0): Promise<string | undefined> {
    let hit: string | undefined;
    await waitUntil(
      () => {
        this.remember();
        hit = this.lines().slice(from).find((l) => re.test(l));
        return hit !== undefined || this.proc.status !== undefined;
      },
      timeoutMs,
      25,
    );
    return hit;
  }

  /** The time (Unix ms) of a text log line (it starts with an ISO time). */
  static timeOf(line: string): number {
    return Date.parse(line.replace(/^<\d>/, "").split(" ")[0]);
  }

  /** GET `path` of the admin server (or of another address), from inside the lb netns. */
  async get(path: string, admin = this.admin): Promise<HttpAnswer> {
    return await httpGet(run, this.host.topo.ns.lb, `http://${admin}${path}`);
  }

  /** Asks `path` every `intervalMs` until stopped, keeping each change (in the lb netns). */
  watch(path: string, intervalMs = 20, maxMs = 60_000): HttpWatch {
    const stopFile = `${this.host.topo.workDir}/watch-${crypto.randomUUID().slice(0, 8)}.stop`;
    const p = this.host.topo.spawn(
      this.host.topo.ns.lb,
      `watch ${path}`,
      httpProbeArgs(`http://${this.admin}${path}`, { intervalMs, maxMs, stopFile }),
    );
    return new HttpWatch(p, stopFile);
  }

  /** Notes the dataplane pid the state file names now (for the kill-by-pid fallback). */
  remember(): number | undefined {
    const pid = this.host.pid();
    if (pid !== undefined) this.#dataplanes.add(pid);
    return pid;
  }

  /** Forgets the dataplanes seen so far (left running on purpose, `--keep`): disposing does not kill them. */
  release(): void {
    this.#dataplanes.clear();
  }

  /** Sends `sig` and waits (bounded) for the exit; SIGKILL after `graceMs`. */
  async stop(sig: Deno.Signal = "SIGTERM", graceMs = 30_000): Promise<Deno.CommandStatus> {
    this.remember();
    const st = await this.proc.stop(graceMs, sig);
    this.host.topo.forget(this.proc);
    return st;
  }

  /** Stops the agent, then kills every dataplane it ran that still runs in the host's netns. Never throws. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      if (!this.proc.status) await this.stop("SIGTERM", 20_000);
    } catch (e) {
      console.error(`stopping nfqlb run: ${e}`);
    }
    for (const pid of this.#dataplanes) {
      if (!this.host.inLbNetns(pid)) continue;
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
}
