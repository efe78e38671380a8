/** `nfqlb stats --all` (JSON) and `--watch` (a live terminal table): what an lb/flowlb counts. */
import {
  COUNTER_NAMES,
  type CountersSnapshot,
  counterTotals,
  type KernelQueue,
  kernelQueues,
  targetTotals,
} from "../../core/counters_shm.ts";
import type { FragStats } from "../../core/frag_stats.ts";
import { jsonText, snakeKeys } from "../json.ts";
import { TargetView } from "../../core/target_view.ts";

/**
 * Everything as one JSON document (bigints as numbers: counters stay far below 2^53), keys in snake_case
 * (the kernel's queue view and the fragment counters too: `queue_dropped`, `obj_gc`). `targets`: per
 * fwmark, `packets`/`bytes` = what the lb accepted (`queued_*`, also per queue) + what the kernel steered
 * under `--offload=auto` (`offloaded_*`, docs/offload.md "Counters").
 */
export function allStatsJson(frag: FragStats, c: CountersSnapshot, kernel: KernelQueue[]): string {
  const num = (b: bigint) => Number(b);
  const totals = counterTotals(c);
  const queued = targetTotals(c);
  const doc = {
    lb: { kind: c.kind, pid: c.pid, running: c.running, started: c.started.toISOString() },
    totals: Object.fromEntries(COUNTER_NAMES.map((n) => [n, num(totals[n])])),
    targets: targetTotals(c, { offloaded: true }).map((t) => {
      const q = queued.find((x) => x.fwmark === t.fwmark), o = c.offloaded.find((x) => x.fwmark === t.fwmark);
      return {
        fwmark: t.fwmark,
        packets: num(t.packets),
        bytes: num(t.bytes),
        queued_packets: num(q?.packets ?? 0n),
        queued_bytes: num(q?.bytes ?? 0n),
        offloaded_packets: num(o?.packets ?? 0n),
        offloaded_bytes: num(o?.bytes ?? 0n),
      };
    }),
    queues: c.queues.map((q) => ({
      queue: q.queue,
      counters: Object.fromEntries(COUNTER_NAMES.map((n) => [n, num(q.counters[n])])),
      targets: q.targets.map((t) => ({ fwmark: t.fwmark, packets: num(t.packets), bytes: num(t.bytes) })),
      kernel: snakeKeys(kernel.find((k) => k.queue === q.queue) ?? null),
    })),
    fragments: snakeKeys(frag),
  };
  return jsonText(doc);
}

function rate(now: bigint, before: bigint | undefined, seconds: number): string {
  if (before === undefined || seconds <= 0) return "-";
  const r = Number(now - before) / seconds;
  return r >= 1000 ? `${(r / 1000).toFixed(1)}k` : r.toFixed(0);
}

/** A target's place in its table: its weight and the share of the lookup table it owns. */
export interface TargetShare {
  table: string;
  weight: number;
  /** Lookup entries that name it / M: the share of new flows Maglev gives it. */
  expected: number;
}

/**
 * The weight and expected share of every active target of `tables`, by fwmark, read through private copies
 * (core/target_view.ts); a table that cannot be read is left out.
 */
export function targetShares(tables: readonly string[]): Map<number, TargetShare> {
  const out = new Map<number, TargetShare>();
  for (const table of tables) {
    let v: TargetView;
    try {
      v = TargetView.open(table);
    } catch {
      continue;
    }
    try {
      const s = v.snapshot(Number.MAX_SAFE_INTEGER);
      const perRow = new Map<number, number>();
      for (const row of s.lookup) if (row >= 0) perRow.set(row, (perRow.get(row) ?? 0) + 1);
      s.active.forEach((fw, row) => {
        if (fw >= 0) {
          out.set(fw, { table, weight: s.weights[row], expected: (perRow.get(row) ?? 0) / s.lookup.length });
        }
      });
    } finally {
      v.close();
    }
  }
  return out;
}

/**
 * One screen of `stats --watch`: per target (weight and expected share from its table, packets, rate,
 * bytes, share; with `--offload=auto` the packets the kernel steered are in these and in the `offloaded`
 * column) and per queue, totals and rates since the previous screen.
 */
export function watchScreen(
  c: CountersSnapshot,
  prev: CountersSnapshot | undefined,
  seconds: number,
  frag: FragStats,
  shares: ReadonlyMap<number, TargetShare> = new Map(),
): string {
  const lines: string[] = [];
  const t = counterTotals(c), pt = prev ? counterTotals(prev) : undefined;
  lines.push(
    `nfqlb ${c.kind} pid ${c.pid} ${c.running ? "running" : "STOPPED"} since ${c.started.toISOString()}` +
      `   (every ${seconds} s, Ctrl-C to quit)`,
  );
  lines.push("");
  const targets = targetTotals(c, { offloaded: true });
  const prevTargets = prev ? targetTotals(prev, { offloaded: true }) : [];
  const offload = c.offloaded.length > 0;
  // the table's targets that got nothing yet are rows too: a target at 0 % is what to see
  for (const fw of shares.keys()) {
    if (!targets.some((x) => x.fwmark === fw)) targets.push({ fwmark: fw, packets: 0n, bytes: 0n });
  }
  targets.sort((a, b) => a.fwmark - b.fwmark);
  const total = targets.reduce((s, x) => s + x.packets, 0n);
  lines.push(
    `target fwmark  weight  expected      packets      pkt/s        bytes${
      offload ? "   offloaded" : ""
    }  share`,
  );
  for (const x of targets) {
    const before = prevTargets.find((p) => p.fwmark === x.fwmark);
    const share = total > 0n ? Number(x.packets * 1000n / total) / 10 : 0;
    const bar = "█".repeat(Math.round(share / 2.5));
    const sh = shares.get(x.fwmark);
    const expected = sh ? `${(sh.expected * 100).toFixed(1)} %` : "-";
    lines.push(
      `${String(x.fwmark).padStart(13)} ${String(sh?.weight ?? "-").padStart(7)} ${expected.padStart(9)} ${
        String(x.packets).padStart(12)
      } ${rate(x.packets, before?.packets, seconds).padStart(10)} ${String(x.bytes).padStart(12)}${
        offload
          ? ` ${String(c.offloaded.find((o) => o.fwmark === x.fwmark)?.packets ?? 0n).padStart(11)}`
          : ""
      } ${share.toFixed(1).padStart(5)} % ${bar}`.trimEnd(),
    );
  }
  if (targets.length === 0) lines.push("  (no target and no packet accepted yet)");
  lines.push("");
  lines.push("queue   received      pkt/s   accepted    dropped  malformed   notarget       nolb    enobufs");
  for (const q of c.queues) {
    const pq = prev?.queues.find((p) => p.queue === q.queue);
    const k = q.counters;
    lines.push(
      `${String(q.queue).padStart(5)} ${String(k.received).padStart(10)} ${
        rate(k.received, pq?.counters.received, seconds).padStart(10)
      } ${
        [k.accepted, k.dropped, k.malformed, k.notarget, k.nolb, k.enobufs].map((v) => String(v).padStart(10))
          .join(" ")
      }`,
    );
  }
  lines.push("");
  lines.push(
    `drops/s ${
      rate(t.dropped, pt?.dropped, seconds)
    }   fragments: stored ${t.frag_stored}, injected ${t.frag_injected}, ` +
      `to tier ${t.frag_tier}, dropped ${t.frag_dropped}; table inserts ${frag.inserts}, rejected ${frag.rejected}, expired ${frag.objGC}`,
  );
  return lines.join("\n") + "\n";
}

/** Re-exported for the stats command. */
export { kernelQueues };
