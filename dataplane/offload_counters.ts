/**
 * Per-target counts of what the kernel steers under `--offload=auto` (docs/offload.md "Counters"):
 * packets of a decided connection skip the queue, so the lb's own counters never see them. The lb
 * keeps, per family in its network namespace, one iptables counting rule per target fwmark in a
 * chain of its own, `NFQLB-CNT-Q<first queue>` in table mangle, jumped to from the top of
 * POSTROUTING:
 *
 * ```
 * -I POSTROUTING 1 ! -p icmp -m connmark ! --mark 0 -m conntrack --ctdir ORIGINAL -m comment --comment nfqlb-count -j NFQLB-CNT-Q5
 * -A NFQLB-CNT-Q5 -m connmark --mark FW -m comment --comment "nfqlb-count FW" -j RETURN    (one per fwmark)
 * ```
 *
 * Why there: a packet reaches POSTROUTING with a connmark only when its connection was decided
 * before it arrived, which is exactly when the restore rules let it skip the queue (a queued
 * packet's connection has connmark 0 until the save rule, which comes after this jump in
 * POSTROUTING). `--ctdir ORIGINAL` leaves out NAT replies (they pass the lb but were never queued
 * either), `! -p icmp` the ICMP packets, which are always queued. Counting at POSTROUTING counts
 * what left towards a target, as the lb's counters count what it accepted. The rules live in a chain
 * the lb owns, so the printed rules (`nfqlb offload-rules`), `apply`, `status` and `teardown` are
 * unchanged; a packet walks at most one rule per fwmark (in the kernel, no syscall); nothing here
 * runs per packet or per connection in user space.
 *
 * The lb reads the counters once a second (`iptables -S -v`, one process per family), adds a rule
 * for each new fwmark and removes the rule of a fwmark that left its tables after reading it for
 * the last time, so a deactivated target's count is kept. Counts are cumulative from the lb's start
 * (the chain is zeroed then, as the lb's counters file starts at 0) and go into the counters shm
 * (CountersShm.setOffloaded), where `stats` and `/metrics` read them. A rule or chain removed by
 * someone else is put back at the next read; its packets since the read before are lost (a removed chain or jump is logged).
 */
import { errorText } from "../core/errors.ts";
import { log } from "../core/log.ts";
import type { TargetCount } from "../core/counters_shm.ts";

/** The comment of every rule of ours (the per-fwmark ones add their fwmark). */
export const COUNT_COMMENT = "nfqlb-count";

/** How often the lb reads the kernel counters (ms): `stats` lags the kernel by at most this. */
export const OFFLOAD_COUNT_MS = 1000;

/** Longest one iptables call may take before it is abandoned (ms). */
const CALL_MS = 5000;

/** The counting chain of an lb whose first queue is `queue` (one lb per queue, so one owner). */
export function countChain(queue: number): string {
  return `NFQLB-CNT-Q${queue}`;
}

/** Runs an argv, bounded; exit code and stdout. */
export type Runner = (argv: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

/** The default runner: the program in this network namespace, killed after {@link CALL_MS}. */
const runArgv: Runner = async (argv) => {
  try {
    const r = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(CALL_MS),
    }).output();
    const dec = new TextDecoder();
    return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
  } catch (e) {
    return { code: -1, stdout: "", stderr: errorText(e) };
  }
};

/** The jump from POSTROUTING (its spec after the chain name). */
function jumpSpec(family: 4 | 6, chain: string): string[] {
  return [
    "!",
    "-p",
    family === 4 ? "icmp" : "ipv6-icmp",
    "-m",
    "connmark",
    "!",
    "--mark",
    "0",
    "-m",
    "conntrack",
    "--ctdir",
    "ORIGINAL",
    "-m",
    "comment",
    "--comment",
    COUNT_COMMENT,
    "-j",
    chain,
  ];
}

/** The counting rule of one fwmark (its spec after the chain name). */
function markSpec(fwmark: number): string[] {
  return [
    "-m",
    "connmark",
    "--mark",
    String(fwmark),
    "-m",
    "comment",
    "--comment",
    `${COUNT_COMMENT} ${fwmark}`,
    "-j",
    "RETURN",
  ];
}

/** What `iptables -t mangle -S -v` shows of ours: chain present, jump present, counts per fwmark. */
export function parseCountSave(text: string, chain: string): {
  chain: boolean;
  jump: boolean;
  counts: Map<number, { packets: bigint; bytes: bigint }>;
} {
  const counts = new Map<number, { packets: bigint; bytes: bigint }>();
  let hasChain = false, jump = false;
  for (const line of text.split("\n")) {
    if (line === `-N ${chain}`) hasChain = true;
    else if (line.startsWith("-A POSTROUTING ") && line.endsWith(` -j ${chain}`)) jump = true;
    else if (line.startsWith(`-A ${chain} `)) {
      const m = new RegExp(`--comment "${COUNT_COMMENT} ([0-9]+)" -c ([0-9]+) ([0-9]+) `).exec(line);
      if (m) counts.set(Number(m[1]), { packets: BigInt(m[2]), bytes: BigInt(m[3]) });
    }
  }
  return { chain: hasChain, jump, counts };
}

/** The kernel's share of the per-target counts of one lb (see the module comment). */
export class OffloadCounters {
  #who: string;
  #chain: string;
  #run: Runner;
  /** Per family and fwmark: the rule's counts at the last read. */
  #last = new Map<4 | 6, Map<number, { packets: bigint; bytes: bigint }>>([[4, new Map()], [6, new Map()]]);
  /** Per fwmark: counts of rules no longer there (target left, rule removed by someone). */
  #gone = new Map<number, { packets: bigint; bytes: bigint }>();
  #busy = false;
  #lastRun = 0;
  #warned = new Set<string>();
  /** Families whose chain and jump are in place. */
  #ready = new Set<4 | 6>();

  /** `who`: the program in log lines; `queue`: the lb's first queue (names the chain). */
  constructor(who: string, queue: number, run: Runner = runArgv) {
    this.#who = who;
    this.#chain = countChain(queue);
    this.#run = run;
  }

  /** The chain's name. */
  get chain(): string {
    return this.#chain;
  }

  /** Cumulative counts per fwmark (every fwmark counted since start, those gone included), by fwmark. */
  totals(): TargetCount[] {
    const m = new Map<number, TargetCount>();
    const add = (fw: number, c: { packets: bigint; bytes: bigint }) => {
      const e = m.get(fw) ?? { fwmark: fw, packets: 0n, bytes: 0n };
      e.packets += c.packets;
      e.bytes += c.bytes;
      m.set(fw, e);
    };
    for (const [fw, c] of this.#gone) add(fw, c);
    for (const last of this.#last.values()) for (const [fw, c] of last) add(fw, c);
    return [...m.values()].sort((a, b) => a.fwmark - b.fwmark);
  }

  #ipt(family: 4 | 6, ...args: string[]): string[] {
    return [family === 4 ? "iptables" : "ip6tables", "-w", "-t", "mangle", ...args];
  }

  #warn(key: string, line: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    log.warning(`${this.#who}: offload counters: ${line}`);
  }

  #retire(family: 4 | 6, fwmark: number): void {
    const last = this.#last.get(family)!;
    const c = last.get(fwmark);
    if (!c) return;
    const g = this.#gone.get(fwmark) ?? { packets: 0n, bytes: 0n };
    this.#gone.set(fwmark, { packets: g.packets + c.packets, bytes: g.bytes + c.bytes });
    last.delete(fwmark);
  }

  /**
   * Reads the counters and makes the rules match `fwmarks` (values ≤ 0 ignored): a rule for each, none
   * for others. At most one read runs at a time; called more often than {@link OFFLOAD_COUNT_MS}, it
   * returns at once unless `force`. Never throws: a failure is logged once per kind.
   */
  async refresh(fwmarks: Iterable<number>, force = false): Promise<void> {
    const now = Date.now();
    if (this.#busy || (!force && now - this.#lastRun < OFFLOAD_COUNT_MS)) return;
    this.#busy = true;
    this.#lastRun = now;
    const want = new Set<number>();
    for (const f of fwmarks) if (f > 0) want.add(f);
    try {
      for (const family of [4, 6] as const) await this.#refreshFamily(family, want);
    } finally {
      this.#busy = false;
    }
  }

  async #refreshFamily(family: 4 | 6, want: Set<number>): Promise<void> {
    const r = await this.#run(this.#ipt(family, "-S", "-v"));
    if (r.code !== 0) {
      this.#warn(`read${family}`, `cannot read IPv${family} mangle (${r.stderr.trim() || `exit ${r.code}`})`);
      return;
    }
    const seen = parseCountSave(r.stdout, this.#chain);
    const last = this.#last.get(family)!;
    if (this.#ready.has(family) && (!seen.chain || !seen.jump)) {
      log.warning(
        `${this.#who}: offload counters: IPv${family} chain ${this.#chain} or its jump was removed; ` +
          "put back (offloaded packets since the last read are not counted)",
      );
      this.#ready.delete(family);
    }
    if (!seen.chain && !(await this.#ok(family, ["-N", this.#chain]))) return;
    if (
      !seen.jump && !(await this.#ok(family, ["-I", "POSTROUTING", "1", ...jumpSpec(family, this.#chain)]))
    ) return;
    this.#ready.add(family);
    for (const [fw, c] of seen.counts) {
      const before = last.get(fw);
      // a count that went down: the rule was replaced (someone flushed the chain); keep what it had
      if (before && (c.packets < before.packets || c.bytes < before.bytes)) this.#retire(family, fw);
      last.set(fw, c);
    }
    // a rule that vanished keeps its last count; one for a fwmark that left goes, its count kept
    for (const fw of [...last.keys()]) if (!seen.counts.has(fw)) this.#retire(family, fw);
    for (const fw of seen.counts.keys()) {
      if (want.has(fw)) continue;
      if (await this.#ok(family, ["-D", this.#chain, ...markSpec(fw)])) this.#retire(family, fw);
    }
    for (const fw of want) {
      if (seen.counts.has(fw)) continue;
      if (await this.#ok(family, ["-A", this.#chain, ...markSpec(fw)])) {
        last.set(fw, { packets: 0n, bytes: 0n });
      }
    }
  }

  async #ok(family: 4 | 6, args: string[]): Promise<boolean> {
    const r = await this.#run(this.#ipt(family, ...args));
    if (r.code === 0) return true;
    this.#warn(`${family} ${args[0]}`, `iptables ${args.join(" ")}: ${r.stderr.trim() || `exit ${r.code}`}`);
    return false;
  }

  /**
   * Takes over the chain at start: a chain left by an earlier lb on this queue is emptied (counts
   * start at 0 with this lb, as its counters file), then the rules for `fwmarks` go in.
   */
  async start(fwmarks: Iterable<number>): Promise<void> {
    this.#busy = true;
    try {
      for (const family of [4, 6] as const) {
        // a stale chain (an lb killed without clean-up): its rules and counts are not ours
        await this.#run(this.#ipt(family, "-F", this.#chain));
      }
    } finally {
      this.#busy = false;
    }
    await this.refresh(fwmarks, true);
  }

  /** A last read (so the counters file keeps the final counts), then the jump and chain go. */
  async stop(): Promise<void> {
    for (let i = 0; i < 50 && this.#busy; i++) await new Promise((r) => setTimeout(r, 100));
    this.#busy = true;
    for (const family of [4, 6] as const) {
      const r = await this.#run(this.#ipt(family, "-S", "-v"));
      if (r.code !== 0) continue;
      const seen = parseCountSave(r.stdout, this.#chain);
      const last = this.#last.get(family)!;
      for (const [fw, c] of seen.counts) {
        const before = last.get(fw);
        if (before && (c.packets < before.packets || c.bytes < before.bytes)) this.#retire(family, fw);
        last.set(fw, c);
      }
      // bounded: one jump of ours, a few more only if someone copied it
      for (let i = 0; i < 8; i++) {
        if (
          (await this.#run(this.#ipt(family, "-D", "POSTROUTING", ...jumpSpec(family, this.#chain)))).code !==
            0
        ) {
          break;
        }
      }
      if (seen.chain) {
        await this.#run(this.#ipt(family, "-F", this.#chain));
        await this.#run(this.#ipt(family, "-X", this.#chain));
      }
    }
  }
}
