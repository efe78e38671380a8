/**
 * The nfqlb driver: the CLI under test run here ({@link nfqlb}) or in a
 * topology's lb netns ({@link NfqlbDriver}, a topology's `nfqlb`: table
 * commands, `lb` / `flowlb` started and stopped, long-running clients), and
 * what the tests read back from it: the table's answer for a flow
 * ({@link tableTarget}, {@link maglevTargets}), connection-table rows,
 * `show` and `stats --ft_shm` output.
 */
import assert from "node:assert/strict";
import type { CtListItem } from "../../cli/commands/conntrack_impl.ts";
import { type Family, TCP_PORT, UDP_PORT, VIP } from "./addresses.ts";
import type { Flow } from "./agent/types.ts";
import { inNetns } from "./netns.ts";
import { NFQLB, ROOT } from "./paths.ts";
import { type Proc, run, type RunResult, w, waitUntil } from "./process.ts";
import type { Topology } from "./topology.ts";
import type { Proto } from "./traffic.ts";
import { exists } from "../helpers/fs.ts";

/** Runs `scripts/nfqlb args...` here (this namespace) with extra environment; never throws on a non-zero exit. */
export async function nfqlb(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return await run([NFQLB, ...args], { env, allowFail: true, timeoutMs: 120_000 });
}

/**
 * nfqlb in the lb netns of one {@link Topology}, with its shm directory and
 * flow address: CLI commands, and the `lb` or `flowlb` process (at most one
 * at a time; stopped by pid at teardown like every process of the topology).
 */
export class NfqlbDriver {
  readonly #topo: Topology;
  #proc: Proc | undefined;

  constructor(topo: Topology) {
    this.#topo = topo;
  }

  /** Environment for nfqlb commands of this topology. */
  get env(): Record<string, string> {
    return { NFQLB_SHM_DIR: this.#topo.shmDir, NFQLB_FLOW_ADDRESS: this.#topo.flowAddress };
  }

  /** Runs `nfqlb args...` in the lb netns (bounded); throws on failure unless allowFail. */
  async run(args: string[], o: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return await this.#topo.exec(this.#topo.ns.lb, [NFQLB, ...args], {
      env: this.env,
      allowFail: o.allowFail,
      timeoutMs: o.timeoutMs ?? 60_000,
    });
  }

  /** Starts `nfqlb args...` in the lb netns as a long-running process (a trace client, `stats --watch`). */
  spawn(label: string, args: string[]): Proc {
    return this.#topo.spawn(this.#topo.ns.lb, label, [NFQLB, ...args], this.env);
  }

  /** `init --shm` (M, N) and `activate` the given fwmarks (default: all targets). */
  async initTargets(fwmarks = this.#topo.fwmarks, M = 997, N = 32): Promise<void> {
    const shm = this.#topo.shm;
    await this.run(["init", `--shm=${shm}`, `--M=${M}`, `--N=${N}`]);
    if (fwmarks.length) await this.run(["activate", `--shm=${shm}`, ...fwmarks.map(String)]);
  }

  /** `activate` fwmarks. */
  async activate(...fwmarks: number[]): Promise<void> {
    await this.run(["activate", `--shm=${this.#topo.shm}`, ...fwmarks.map(String)]);
  }

  /** `deactivate` fwmarks. */
  async deactivate(...fwmarks: number[]): Promise<void> {
    await this.run(["deactivate", `--shm=${this.#topo.shm}`, ...fwmarks.map(String)]);
  }

  /** The queue argument for the topology's steering: "2" or "0:1". */
  get queueSpec(): string {
    const s = this.#topo.steering;
    if (s.mode !== "nfqueue") throw new Error(`no queue in steering mode ${s.mode}`);
    return "queue" in s ? String(s.queue) : `${s.balance[0]}:${s.balance[1]}`;
  }

  /** Queue numbers the lb must bind. */
  get queues(): number[] {
    const s = this.#topo.steering;
    if (s.mode !== "nfqueue") return [];
    if ("queue" in s) return [s.queue];
    return Array.from({ length: s.balance[1] - s.balance[0] + 1 }, (_, i) => s.balance[0] + i);
  }

  /** The running lb or flowlb, if any. */
  get proc(): Proc | undefined {
    return this.#proc;
  }

  /**
   * Starts `nfqlb lb --tshm --queue --ft_shm --trace_address` in the lb netns
   * and waits (bounded) until every queue shows in the netns'
   * nfnetlink_queue. Throws with the lb's output if it exits or times out.
   */
  async startLb(extra: string[] = [], timeoutMs = 60_000): Promise<Proc> {
    return await this.#start(`lb --tshm=${this.#topo.shm}`, extra, timeoutMs);
  }

  /**
   * Starts `nfqlb flowlb --queue --ft_shm --trace_address` (flows at the
   * topology's flowAddress, saved in its shmDir) in the lb netns, like
   * {@link startLb}; {@link stopLb} stops it.
   */
  async startFlowLb(extra: string[] = [], timeoutMs = 60_000): Promise<Proc> {
    return await this.#start("flowlb", extra, timeoutMs);
  }

  /** `cmd`: "lb --tshm=X" or "flowlb". */
  async #start(cmd: string, extra: string[], timeoutMs: number): Promise<Proc> {
    const t = this.#topo;
    t.check();
    if (this.#proc && !this.#proc.status) throw new Error("lb already running");
    const args = [
      ...w(`${NFQLB} ${cmd} --queue=${this.queueSpec}`),
      ...w(`--ft_shm=${t.ftShm} --trace_address=unix:${t.traceName}`),
      ...extra,
    ];
    t.log(inNetns(t.ns.lb, args).join(" "));
    const p = t.spawn(t.ns.lb, `nfqlb ${cmd.split(" ")[0]}`, args, this.env);
    this.#proc = p;
    const want = this.queues;
    const ok = await waitUntil(
      async () => {
        if (p.status) return true;
        const q = await t.queueStats();
        return want.every((n) => q.has(n));
      },
      timeoutMs,
      200,
    );
    if (p.status) throw new Error(`lb exited at start:\n${p.describe()}`);
    if (!ok) {
      await this.stopLb();
      throw new Error(`lb did not bind queue(s) ${want.join(",")} within ${timeoutMs} ms:\n${p.describe()}`);
    }
    return p;
  }

  /** Stops the lb with `sig` (default SIGTERM; SIGKILL after `graceMs`); returns its exit status and output. */
  async stopLb(
    graceMs = 10_000,
    sig: Deno.Signal = "SIGTERM",
  ): Promise<{ status: Deno.CommandStatus; stdout: string; stderr: string } | undefined> {
    const p = this.#proc;
    if (!p) return undefined;
    const status = await p.stop(graceMs, sig);
    this.#topo.forget(p);
    this.#proc = undefined;
    return { status, stdout: p.stdout, stderr: p.stderr };
  }
}

/** "addr:port" as the CLI takes it ("[addr]:port" for IPv6). */
export function addrPort(addr: string, port: number): string {
  return addr.includes(":") ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/**
 * The control plane's answer for a flow: `nfqlb fwmark --shm` on the
 * topology's target table → target name ("" when the table has no target).
 */
export async function tableTarget(t: Topology, fam: Family, proto: Proto, flow: Flow): Promise<string> {
  const port = proto === "udp" ? UDP_PORT : TCP_PORT;
  const r = await t.nfqlb.run([
    "fwmark",
    `--shm=${t.shm}`,
    `--proto=${proto}`,
    `--src=${addrPort(flow.src, flow.sport)}`,
    `--dst=${addrPort(VIP[fam], port)}`,
  ]);
  const fw = (JSON.parse(r.stdout) as { fwmark: number }).fwmark;
  const i = t.fwmarks.indexOf(fw);
  return i < 0 ? "" : t.targetNames[i];
}

const MAGLEV_SCRIPT = `
import { buildKey, parseAddrPort, PROTOCOLS, TargetShm } from ${JSON.stringify(`${ROOT}/mod.ts`)};
const c = JSON.parse(Deno.args[0]);
const t = TargetShm.open(c.shm);
try {
  const out = c.pairs.map(([s, d]) => {
    const a = parseAddrPort(s), b = parseAddrPort(d);
    return t.lookupKey(buildKey(a.addr, b.addr, PROTOCOLS[c.proto], a.port, b.port), 1);
  });
  console.log(JSON.stringify(out));
} finally {
  t.close();
}
`;

/**
 * Maglev's target (name, "" for none) for each flow (with dst and dport) in
 * target table `shm` (default the topology's) as it is now: what `nfqlb
 * fwmark --shm` answers, for all flows in one process (a CLI run per flow
 * would take seconds).
 */
export async function maglevTargets(
  t: Topology,
  proto: Proto | "sctp",
  flows: Flow[],
  shm = t.shm,
): Promise<string[]> {
  const script = `${t.workDir}/maglev.ts`;
  if (!exists(script)) Deno.writeTextFileSync(script, MAGLEV_SCRIPT);
  const pairs = flows.map((f) => {
    assert.ok(f.dst !== undefined && f.dport !== undefined, "maglevTargets needs flows with dst and dport");
    return [addrPort(f.src, f.sport), addrPort(f.dst, f.dport)];
  });
  const r = await t.sh([
    Deno.execPath(),
    ..."run -A --quiet --no-prompt --no-lock --config".split(" "),
    `${ROOT}/deno.json`,
    script,
    JSON.stringify({ shm, proto, pairs }),
  ], { env: t.nfqlb.env, timeoutMs: 60_000 });
  return (JSON.parse(r.stdout) as number[]).map((fw) => {
    const i = t.fwmarks.indexOf(fw);
    return i < 0 ? "" : t.targetNames[i];
  });
}

/** `ct-list` of the connection table of `shm` (default the topology's), with `filters`. */
export async function ctList(t: Topology, filters: string[] = [], shm = t.shm): Promise<CtListItem[]> {
  const r = await t.nfqlb.run(["ct-list", `--shm=${shm}`, ...filters]);
  return JSON.parse(r.stdout) as CtListItem[];
}

/**
 * Counters of `nfqlb stats --ft_shm` (upstream's output is not valid JSON:
 * a comma is missing after fragsDiscarded), as name → value.
 */
export function parseFragStats(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/"(\w+)":\s*(\d+)/g)) out[m[1]] = Number(m[2]);
  return out;
}

/** One row of a target table as `nfqlb show` prints it. */
export interface ShownTarget {
  row: number;
  weight: number;
}

/** Parses the `Active:` line of `nfqlb show`: fwmark → row and weight (no `w` suffix: weight 1). */
export function parseShowActive(text: string): Map<number, ShownTarget> {
  const line = text.split("\n").find((l) => l.trim().startsWith("Active:"));
  const out = new Map<number, ShownTarget>();
  if (!line) return out;
  for (const tok of line.trim().slice("Active:".length).trim().split(/\s+/).filter((x) => x !== "")) {
    const m = /^(-?\d+)\((\d+)\)(?:w(\d+))?$/.exec(tok);
    assert.ok(m, `show: unexpected token ${tok} in ${line}`);
    out.set(Number(m[1]), { row: Number(m[2]), weight: m[3] === undefined ? 1 : Number(m[3]) });
  }
  return out;
}
