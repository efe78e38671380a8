/**
 * `deno task bench` section `health`: the CPU cost of the health checks at
 * 1000 targets × 1 s (issue 17's goal: ≤ 5 % of one core), by running
 * tests/bench/health_cpu.ts (its own network namespace, a listener process,
 * the HealthMonitor as `nfqlb run` runs it) `runs` times. Root only.
 */
import { goal, summarize } from "./report.ts";
import type { SectionResult } from "./lookup.ts";

/** Options of {@link benchHealthCpu}. */
export interface HealthCpuOptions {
  /** Runs (default 2). */
  runs?: number;
  /** Seconds measured per run (default 10). */
  seconds?: number;
}

/** Runs the health CPU bench; root only (otherwise `skipped`). */
export async function benchHealthCpu(
  o: HealthCpuOptions = {},
): Promise<SectionResult & { skipped?: string; notes?: string[] }> {
  if (Deno.uid() !== 0) {
    return { rows: [], goals: [], checks: {}, skipped: "needs root for a network namespace" };
  }
  const runs = o.runs ?? 2, seconds = o.seconds ?? 10;
  const script = new URL("./health_cpu.ts", import.meta.url).pathname;
  const pct: number[] = [], notes: string[] = [];
  let failed = 0, ran = 0;
  for (let i = 0; i < runs; i++) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--netns", `--seconds=${seconds}`],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout((seconds + 120) * 1000),
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const m = /= ([\d.]+) % of one core; checks (\d+) passed, (\d+) failed/.exec(text);
    if (!out.success || !m) {
      notes.push(`run ${i + 1} failed: ${text.trim()} ${new TextDecoder().decode(out.stderr).trim()}`);
      continue;
    }
    ran++;
    pct.push(Number(m[1]));
    failed += Number(m[3]);
    notes.push(text.split("\n")[0].trim());
  }
  if (pct.length === 0) return { rows: [], goals: [], checks: { "health: the bench ran": false }, notes };
  const stats = summarize(pct);
  return {
    rows: [{
      section: "health",
      case: "1000 NAT targets on loopback, tcp every 1000 ms",
      subject: `CPU of the checking process (user + system), ${seconds} s per run`,
      unit: "% core",
      stats,
      ours: true,
    }],
    goals: [goal("health checks at 1000 targets × 1 s <= 5 % of one core", stats.median, 5, "% core")],
    checks: { "health: every check passed": failed === 0 && ran === runs },
    notes,
  };
}
