/**
 * `deno task bench`: speed of nfqlb-deno against baselines measured in the
 * same run (the machine is noisy; only ratios within one run count).
 *
 *   (a) Maglev populate (FFI) vs upstream 1.2.0's permutation fill + populate
 *   (b) hash + lookup per key through FFI vs an empty FFI call and JS djb2
 *   (c) one `scripts/nfqlb activate` process vs `deno run` of an empty script
 *       and /bin/true
 *   (d) `classify`: C classify per packet through FFI vs an empty FFI call
 *       and the same loop in C
 *   (e) `rss`: resident memory of a running `lb` with one queue vs `deno run`
 *       of a script that sleeps (root only: needs a network namespace)
 *   (g) `start`: `lb` spawn to first verdict with 20 kpps flowing, vs a Deno
 *       program that only binds and `deno run` of an empty script (root only:
 *       the netns lab; tests/bench/lb_start.ts)
 *   (h) `health`: CPU of the health checks at 1000 targets × 1 s, goal ≤ 5 %
 *       of one core (root only: a network namespace; tests/bench/health.ts)
 *
 * Prints a table and the goals (PASS/MISS), and writes everything to
 * bench-results/bench-<ISO timestamp>.json. Exit status: 0, or 1 when a
 * correctness check failed (a missed goal is reported, not an error).
 * `--only=maglev,lookup,cli,classify,fragtable,flows,trace,conntrack,rss,start,health` runs a subset.
 */
import { openBenchLib, openPointerLib } from "../tests/bench/c_baseline.ts";
import { benchClassify } from "../tests/bench/classify.ts";
import { benchFragtable } from "../tests/bench/fragtable.ts";
import { benchFlows } from "../tests/bench/flows.ts";
import { benchTrace } from "../tests/bench/trace.ts";
import { benchConntrack } from "../tests/bench/conntrack.ts";
import { benchCli } from "../tests/bench/cli.ts";
import { benchLookup } from "../tests/bench/lookup.ts";
import { benchMaglev } from "../tests/bench/maglev.ts";
import { formatReport, type Goal, type Row } from "../tests/bench/report.ts";
import { benchRss } from "../tests/bench/rss.ts";
import { benchLbStart } from "../tests/bench/lb_start.ts";
import { benchHealthCpu } from "../tests/bench/health.ts";
import { ROOT } from "../tests/harness/paths.ts";

const OUT_DIR = `${ROOT}/bench-results`;

function machine(): Record<string, string | number> {
  let cpu = "unknown";
  try {
    cpu = /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? cpu;
  } catch { /* not Linux */ }
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    memGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
  };
}

async function main(): Promise<number> {
  const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",");
  const want = (s: string) => !only || only.includes(s);
  const make = await new Deno.Command("make", { args: ["-s", "-C", `${ROOT}/c`], stdout: "null" }).output();
  if (!make.success) {
    try {
      Deno.statSync(`${ROOT}/c/build/libnfqlb.so`);
    } catch {
      throw new Error("make -C c failed and there is no c/build/libnfqlb.so");
    }
    console.log("warning: make -C c failed; measuring the existing c/build/libnfqlb.so");
  }
  const started = new Date();
  const t0 = performance.now();
  const bench = await openBenchLib(ROOT, OUT_DIR);
  const ptrLib = openPointerLib(ROOT);
  const rows: Row[] = [], goals: Goal[] = [];
  const checks: Record<string, boolean> = {};
  let cliMode: string | undefined;
  const notes: string[] = [];
  try {
    if (want("maglev")) {
      const r = benchMaglev(bench);
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("lookup")) {
      const r = benchLookup(bench, ptrLib);
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("cli")) {
      const r = await benchCli(ROOT, Deno.execPath());
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
      cliMode = r.mode;
    }
    if (want("classify")) {
      const r = benchClassify(bench, ptrLib);
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("fragtable")) {
      const r = benchFragtable();
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("flows")) {
      const r = await benchFlows(ROOT);
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("trace")) {
      const r = await benchTrace(ROOT, OUT_DIR);
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("conntrack")) {
      const r = await benchConntrack(ROOT);
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("rss")) {
      const r = await benchRss(ROOT, Deno.execPath());
      if (r.skipped) notes.push(`rss: skipped (${r.skipped})`);
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("start")) {
      const r = await benchLbStart({ runs: 10 });
      if (r.skipped) notes.push(`start: skipped (${r.skipped})`);
      notes.push(...(r.notes ?? []).map((n) => `start: ${n}`));
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
    if (want("health")) {
      const r = await benchHealthCpu({ runs: 2, seconds: 10 });
      if (r.skipped) notes.push(`health: skipped (${r.skipped})`);
      notes.push(...(r.notes ?? []).map((n) => `health: ${n}`));
      rows.push(...r.rows), goals.push(...r.goals), Object.assign(checks, r.checks);
    }
  } finally {
    ptrLib.close();
    bench.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  const m = machine();
  console.log(
    `nfqlb-deno bench, ${started.toISOString()}; ${m.cpu}, ${m.cores} cores, kernel ${m.kernel}, deno ${m.deno}`,
  );
  if (cliMode) console.log(`cli runs: ${cliMode}`);
  for (const n of notes) console.log(n);
  console.log("");
  console.log(formatReport(rows, goals));
  console.log("");
  console.log("checks:");
  for (const [k, v] of Object.entries(checks)) console.log(`  ${v ? "ok  " : "FAIL"}  ${k}`);
  Deno.mkdirSync(OUT_DIR, { recursive: true });
  const file = `${OUT_DIR}/bench-${started.toISOString().replace(/:/g, "-").replace(/\.\d+Z$/, "Z")}.json`;
  const report = { date: started.toISOString(), seconds, machine: m, cliMode, notes, rows, goals, checks };
  Deno.writeTextFileSync(file, JSON.stringify(report, null, 2) + "\n");
  console.log(`\n${seconds.toFixed(1)} s; wrote ${file.slice(ROOT.length + 1)}`);
  return Object.values(checks).every(Boolean) ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
