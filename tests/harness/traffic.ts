/**
 * Traffic through the lab: running the traffic agent (agent/main.ts) in a
 * namespace ({@link agentArgs}, {@link runAgent}), the client side of a
 * topology ({@link Client}, a topology's `client`: UDP/TCP probes, pings,
 * ICMP errors, SCTP INITs and UDP streams to the VIP), and counting what
 * came back ({@link tally}, {@link flowKey}).
 */
import { type Family, TCP_PORT, UDP_PORT, VIP } from "./addresses.ts";
import type {
  AgentCommand,
  BlastCommand,
  BlastResult,
  Flow,
  IcmpCommand,
  PingCommand,
  PingResult,
  ProbeResult,
  SctpCommand,
  SentResult,
  StreamCommand,
  StreamResult,
} from "./agent/types.ts";
import { inNetns } from "./netns.ts";
import type { QuotedFlow } from "./packets.ts";
import { type Runner, w, waitUntil } from "./process.ts";
import type { Topology } from "./topology.ts";
import { exists } from "../helpers/fs.ts";

const AGENT = new URL("./agent/main.ts", import.meta.url).pathname;

/** argv that runs the traffic agent with command `c` under the current Deno. */
export function agentArgs(c: AgentCommand): string[] {
  return [Deno.execPath(), ...w("run -A --quiet --no-prompt --no-config"), AGENT, JSON.stringify(c)];
}

/** Runs a one-shot agent command in `ns` with `runner` (bounded) and returns its JSON result. */
export async function runAgent<T>(
  runner: Runner,
  ns: string,
  c: AgentCommand,
  timeoutMs = 120_000,
): Promise<T> {
  const r = await runner(inNetns(ns, agentArgs(c)), { timeoutMs, allowFail: true });
  if (r.code !== 0) throw new Error(`agent ${c.cmd} in ${ns} failed (${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

/** The client namespace of a {@link Topology} sending to the VIP through the agent. */
export class Client {
  readonly #topo: Topology;

  constructor(topo: Topology) {
    this.#topo = topo;
  }

  /** `repeat` UDP request/replies per flow to the VIP; [flow][rep] → target name ("" = no reply). */
  async udp(fam: Family, flows: Flow[], repeat = 1, waitMs = 1000, size?: number): Promise<ProbeResult> {
    return await this.#topo.agent<ProbeResult>(this.#topo.ns.cli, {
      cmd: "udp",
      dst: VIP[fam],
      port: UDP_PORT,
      flows,
      repeat,
      waitMs,
      size,
    });
  }

  /** `repeat` TCP connections per flow to the VIP; [flow][rep] → target name ("" = failed). */
  async tcp(fam: Family, flows: Flow[], repeat = 1, waitMs = 2000): Promise<ProbeResult> {
    return await this.#topo.agent<ProbeResult>(this.#topo.ns.cli, {
      cmd: "tcp",
      dst: VIP[fam],
      port: TCP_PORT,
      flows,
      repeat,
      waitMs,
    });
  }

  /** `count` ICMP(v6) echo requests from each of `srcs` to the VIP of its family; echo replies per source. */
  async ping(srcs: string[], count = 3, waitMs = 1000): Promise<PingResult> {
    const pings = srcs.map((src) => ({ src, dst: VIP[src.includes(":") ? 6 : 4] }));
    const c: PingCommand = { cmd: "ping", pings, count, waitMs };
    return await this.#topo.agent<PingResult>(this.#topo.ns.cli, c);
  }

  /** Sends one ICMP error per quoted flow from the client (`from`) to the VIP. */
  async icmp(from: string, flows: QuotedFlow[]): Promise<SentResult> {
    const c: IcmpCommand = { cmd: "icmp", from, flows };
    return await this.#topo.agent<SentResult>(this.#topo.ns.cli, c);
  }

  /** Sends SCTP INIT packets from `from` to the VIP of its family. */
  async sctp(from: string, ports: { sport: number; dport: number }[], repeat = 1): Promise<SentResult> {
    const fam: Family = from.includes(":") ? 6 : 4;
    const c: SctpCommand = { cmd: "sctp", from, dst: VIP[fam], ports, repeat };
    return await this.#topo.agent<SentResult>(this.#topo.ns.cli, c);
  }

  /**
   * Starts a UDP probe stream (see the agent's `stream`); waits until its
   * first round went out. Call `stop()` on the result to end it and get the counts.
   */
  async startStream(
    fam: Family,
    flows: Flow[],
    o: { pps?: number; waitMs?: number; maxMs?: number; maxProbes?: number; port?: number } = {},
  ): Promise<{ stop: () => Promise<StreamResult> }> {
    const tag = crypto.randomUUID().slice(0, 8);
    const c: StreamCommand = {
      cmd: "stream",
      dst: VIP[fam],
      port: o.port ?? UDP_PORT,
      flows,
      waitMs: o.waitMs ?? 2000,
      pps: o.pps ?? 500,
      startedFile: `${this.#topo.workDir}/stream-${tag}.started`,
      stopFile: `${this.#topo.workDir}/stream-${tag}.stop`,
      maxMs: o.maxMs ?? 120_000,
      maxProbes: o.maxProbes ?? 200_000,
    };
    const p = this.#topo.spawnAgent(this.#topo.ns.cli, `stream ${tag}`, c);
    const ok = await waitUntil(() => !!p.status || exists(c.startedFile), 60_000);
    if (!ok || p.status) {
      await p.stop();
      this.#topo.forget(p);
      throw new Error(`stream did not start:\n${p.describe()}`);
    }
    return {
      stop: async () => {
        Deno.writeTextFileSync(c.stopFile, "stop\n");
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), c.waitMs + 30_000));
        const first = await Promise.race([p.done, late]);
        clearTimeout(timer);
        if (first === "late") await p.stop();
        this.#topo.forget(p);
        if (p.status?.code !== 0) throw new Error(`stream failed:\n${p.describe()}`);
        return JSON.parse(p.stdout) as StreamResult;
      },
    };
  }

  /**
   * Starts a `blast` from the client to the VIP of `fam` (see the agent):
   * `pps` datagrams per second round-robin over `flows` for at most
   * `durationMs`; waits until the first went out.
   */
  async startBlast(
    fam: Family,
    flows: Flow[],
    o: { pps: number; durationMs: number; waitMs?: number; bucketMs?: number; port?: number },
  ): Promise<Blast> {
    const tag = crypto.randomUUID().slice(0, 8);
    const c: BlastCommand = {
      cmd: "blast",
      dst: VIP[fam],
      port: o.port ?? UDP_PORT,
      flows,
      pps: o.pps,
      durationMs: o.durationMs,
      waitMs: o.waitMs ?? 1000,
      bucketMs: o.bucketMs,
      startedFile: `${this.#topo.workDir}/blast-${tag}.started`,
      stopFile: `${this.#topo.workDir}/blast-${tag}.stop`,
    };
    const p = this.#topo.spawnAgent(this.#topo.ns.cli, `blast ${tag}`, c);
    const ok = await waitUntil(() => !!p.status || exists(c.startedFile!), 60_000, 20);
    if (!ok || p.status) {
      await p.stop();
      this.#topo.forget(p);
      throw new Error(`blast did not start:\n${p.describe()}`);
    }
    let result: Promise<BlastResult> | undefined;
    return {
      stop: () => Deno.writeTextFileSync(c.stopFile!, "stop\n"),
      result: () =>
        result ??= (async () => {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const late = new Promise<"late">((r) =>
            timer = setTimeout(() => r("late"), o.durationMs + c.waitMs + 30_000)
          );
          const first = await Promise.race([p.done, late]);
          clearTimeout(timer);
          if (first === "late") await p.stop();
          this.#topo.forget(p);
          if (p.status?.code !== 0) throw new Error(`blast failed:\n${p.describe()}`);
          return JSON.parse(p.stdout) as BlastResult;
        })(),
    };
  }
}

/**
 * A running `blast` (see the agent): UDP at a fixed rate whatever is answered.
 * `result()` waits (bounded) until it has sent for its duration (or `stop()`
 * was called) and received for `waitMs`, and returns its counts.
 */
export interface Blast {
  stop(): void;
  result(): Promise<BlastResult>;
}

/** Sums a blast's per-bucket counts over buckets whose time [t0 + k·bucketMs) lies in [from, to) (Date.now() ms). */
export function blastSum(r: BlastResult, counts: number[], from = -Infinity, to = Infinity): number {
  let n = 0;
  counts.forEach((v, k) => {
    const t = r.t0 + k * r.bucketMs;
    if (t >= from && t < to) n += v;
  });
  return n;
}

/** Probe protocol. */
export type Proto = "udp" | "tcp";

/** "src:sport" of a flow. */
export function flowKey(f: Flow): string {
  return `${f.src}:${f.sport}`;
}

/** Counts how often each name occurs. */
export function tally(names: string[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const n of names) t[n] = (t[n] ?? 0) + 1;
  return t;
}
