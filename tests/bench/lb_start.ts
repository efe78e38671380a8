/**
 * Bench `start`: how long `nfqlb lb` takes from spawn to its first verdict,
 * with traffic already flowing, against Deno's own start-up measured the same
 * way.
 *
 * On the netns lab (tests/harness Topology: client, lb, 3 targets) the VIP's
 * traffic goes to NFQUEUE 2 with --queue-bypass, and the lb netns' main
 * table routes the VIP to target 1, so while no lb runs the datagrams pass
 * unbalanced and are answered. The client sends UDP at a fixed rate
 * (`blast`). Each run spawns `ip netns exec <lb> scripts/nfqlb lb ...` and
 * reads the lb netns' /proc/net/netfilter/nfnetlink_queue (through a
 * `sleep` process in that netns) every millisecond: "bind" is the first
 * reading where queue 2 exists, "first verdict" the first where a packet of
 * it has left the queue (id_sequence − waiting − queue_dropped −
 * user_dropped > 0). The kernel's drops of the queue over the run are
 * recorded. Then SIGTERM, and the next run once the queue is gone.
 *
 * Baselines, timed from the same spawn through `ip netns exec`: `deno run`
 * of an empty script until it exits, and tests/bench/bind_floor.ts, which
 * does nothing but open the C library and the table and bind the queue
 * (the least any Deno program must do before a verdict).
 *
 * `--other=PATH` also times another checkout's `scripts/nfqlb lb` in the same
 * rounds (before/after figures on a noisy machine: only interleaved runs
 * compare).
 *
 * Resolution: 1 ms polling plus one datagram interval. Needs root.
 * Run alone: `deno run -A tests/bench/lb_start.ts [--runs=N] [--pps=N] [--other=PATH]`.
 */
import { VIP } from "../harness/addresses.ts";
import { NFQLB, ROOT } from "../harness/paths.ts";
import { type Proc, w } from "../harness/process.ts";
import { parseQueueStats } from "../harness/netns.ts";
import { Topology } from "../harness/topology.ts";
import { blastSum } from "../harness/traffic.ts";
import type { SectionResult } from "./lookup.ts";
import { goal, type Row, summarize } from "./report.ts";

const QUEUE = 2;
/** UDP port of the targets' echo servers (large receive buffers: nothing is lost at the targets). */
const ECHO_PORT = 7001;
/** Longest wait for a first verdict. */
const START_TIMEOUT_MS = 10_000;

/** One timed start. */
export interface StartSample {
  /** spawn → queue bound, ms. */
  bindMs: number;
  /** spawn → first packet out of the queue, ms. */
  firstMs: number;
  /** queue_dropped + user_dropped of the queue when the process ended. */
  kernelDrops: number;
}

/** Reads the lb netns' queue line through a process living in that netns. */
function queueLine(nsPid: number) {
  return parseQueueStats(Deno.readTextFileSync(`/proc/${nsPid}/net/netfilter/nfnetlink_queue`)).get(QUEUE);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Spawns `args` in the lb netns and times bind and first verdict of queue 2;
 * the process is then stopped with SIGTERM (or, for a baseline that exits by
 * itself, awaited), and the queue's drops are read just before it goes.
 */
async function timeStart(t: Topology, nsPid: number, label: string, args: string[]): Promise<StartSample> {
  const t0 = performance.now();
  const p: Proc = t.spawn(t.ns.lb, label, args, t.nfqlb.env);
  let bindMs = -1, firstMs = -1, kernelDrops = 0;
  try {
    for (let i = 0; i < START_TIMEOUT_MS; i++) {
      const q = queueLine(nsPid);
      const now = performance.now() - t0;
      if (q) {
        if (bindMs < 0) bindMs = now;
        if (q.seq - q.total - q.dropped - q.userDropped > 0) {
          firstMs = now;
          break;
        }
      }
      if (p.status || now > START_TIMEOUT_MS) break;
      await sleep(1);
    }
    if (firstMs < 0) throw new Error(`no verdict within ${START_TIMEOUT_MS} ms:\n${p.describe()}`);
    await sleep(200); // let it serve, so a backlog from the start shows in the drop counters
    const q = queueLine(nsPid);
    kernelDrops = q ? q.dropped + q.userDropped : 0;
  } finally {
    await p.stop(5000);
    t.forget(p);
  }
  for (let i = 0; i < 500 && queueLine(nsPid); i++) await sleep(10);
  return { bindMs, firstMs, kernelDrops };
}

/** Spawn → exit of `args` in the lb netns, ms. */
async function timeExit(t: Topology, label: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  const p = t.spawn(t.ns.lb, label, args, t.nfqlb.env);
  await p.done;
  const ms = performance.now() - t0;
  t.forget(p);
  if (p.status?.code !== 0) throw new Error(`${label} failed:\n${p.describe()}`);
  return ms;
}

/** Options of {@link benchLbStart}. */
export interface StartOptions {
  /** Timed starts of each subject (default 12). */
  runs?: number;
  /** Traffic while starting, datagrams per second (default 20000). */
  pps?: number;
  /** Extra arguments of `nfqlb lb`. */
  lbArgs?: string[];
  /** Another `scripts/nfqlb` (another checkout) to time in the same rounds. */
  other?: string;
}

/** Runs the start bench; root only (otherwise `skipped`). */
export async function benchLbStart(
  o: StartOptions = {},
): Promise<SectionResult & { skipped?: string; notes?: string[] }> {
  if (Deno.uid() !== 0) return { rows: [], goals: [], checks: {}, skipped: "needs root for the netns lab" };
  const runs = o.runs ?? 12, pps = o.pps ?? 20_000;
  await using t = await Topology.create({ steering: { mode: "nfqueue", queue: QUEUE, bypass: true } });
  await t.exec(t.ns.lb, w(`ip route add ${VIP[4]}/32 via 10.213.1.1`)); // unbalanced while no lb runs
  await t.startEchoServers(ECHO_PORT);
  await t.nfqlb.initTargets();
  const holder = t.spawn(t.ns.lb, "netns holder", w("sleep 3600"));
  await sleep(200);
  const deno = Deno.execPath();
  const lbArgs = (nfqlb: string) => [
    nfqlb,
    ...w(`lb --tshm=${t.shm} --queue=${QUEUE} --ft_shm=${t.ftShm} --trace_address=unix:${t.traceName}`),
    ...(o.lbArgs ?? []),
  ];
  const floorArgs = [
    deno,
    ...w("run --quiet --no-prompt -A --config"),
    `${ROOT}/deno.json`,
    `${ROOT}/tests/bench/bind_floor.ts`,
    t.shm,
    String(QUEUE),
  ];
  const emptyArgs = [deno, ...w("run --quiet --no-prompt -A --no-config"), `${ROOT}/tests/bench/empty.ts`];
  // traffic for all the runs (bounded by its duration)
  const blast = await t.client.startBlast(4, t.flows(4, 48), {
    pps,
    durationMs: runs * 4 * 2500 + 30_000,
    port: ECHO_PORT,
  });
  const lb: StartSample[] = [], other: StartSample[] = [], floor: StartSample[] = [], empty: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      lb.push(await timeStart(t, holder.pid, "nfqlb lb", lbArgs(NFQLB)));
      if (o.other) other.push(await timeStart(t, holder.pid, "other lb", lbArgs(o.other)));
      floor.push(await timeStart(t, holder.pid, "bind floor", floorArgs));
      empty.push(await timeExit(t, "deno empty", emptyArgs));
    }
  } finally {
    blast.stop();
  }
  const r = await blast.result();
  const sent = blastSum(r, r.sent), answered = blastSum(r, r.answered);
  const rows: Row[] = [];
  const row = (subject: string, samples: number[], ours: boolean, unit = "ms") =>
    rows.push({
      section: "start",
      case: `UDP ${pps} pps, queue-bypass`,
      subject,
      unit,
      stats: summarize(samples),
      ours,
    });
  row("lb: spawn → first verdict", lb.map((s) => s.firstMs), true);
  row("lb: spawn → queue bound", lb.map((s) => s.bindMs), true);
  row("lb: kernel queue drops per start", lb.map((s) => s.kernelDrops), true, "pkts");
  const lbMedian = summarize(lb.map((s) => s.firstMs)).median;
  const baseline = (subject: string, samples: number[]) => {
    row(subject, samples, false);
    rows[rows.length - 1].ratio = lbMedian / rows[rows.length - 1].stats.median;
  };
  if (o.other) {
    baseline(`${o.other} lb: spawn → first verdict`, other.map((s) => s.firstMs));
    row(`${o.other} lb: kernel queue drops per start`, other.map((s) => s.kernelDrops), false, "pkts");
  }
  baseline("bind_floor.ts: spawn → first verdict", floor.map((s) => s.firstMs));
  baseline("deno run empty.ts: spawn → exit", empty);
  return {
    rows,
    goals: [goal("lb spawn → first verdict <= 50 ms", lbMedian, 50, "ms")],
    // the baselines end without draining (the kernel drops what they had queued): the traffic's
    // answered share is context, not a check
    checks: { "start: no kernel queue drop while lb starts": lb.every((s) => s.kernelDrops === 0) },
    notes: [`traffic: ${answered} of ${sent} datagrams answered over all the runs`],
  };
}

if (import.meta.main) {
  const arg = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const r = await benchLbStart({
    runs: Number(arg("runs") ?? 12),
    pps: Number(arg("pps") ?? 20_000),
    lbArgs: arg("lb-args")?.split(" "),
    other: arg("other"),
  });
  if (r.skipped) console.log(`start: skipped (${r.skipped})`);
  for (const row of r.rows) {
    const s = row.stats;
    console.log(
      `${row.subject.padEnd(40)} median ${s.median.toFixed(1)} min ${s.min.toFixed(1)} max ${
        s.max.toFixed(1)
      } ${row.unit}${row.ratio ? `  (lb/this ${row.ratio.toFixed(2)})` : ""}  [${
        s.samples.map((x) => x.toFixed(0)).join(" ")
      }]`,
    );
  }
  for (const g of r.goals) console.log(`${g.pass ? "PASS" : "MISS"} ${g.text}: ${g.value.toFixed(1)}`);
  for (const [k, v] of Object.entries(r.checks)) console.log(`${v ? "ok  " : "FAIL"} ${k}`);
  for (const n of r.notes ?? []) console.log(n);
}
