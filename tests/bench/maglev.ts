/**
 * Bench (a): Maglev lookup-table population.
 *
 * Ours: one FFI call of nfqlb_maglev_populate, which generates each row's
 * permutation on the fly (no permutation array).
 * Baseline: upstream 1.2.0's code (c/bench/upstream_maglev.c): `init` fills
 * permutation[N][M] (u32, (offset + j*skip) % M), `activate` runs the
 * populate loop over that array. Upstream pays the fill at init and the
 * populate at every activate/deactivate; ours does all of it per commit, so
 * both baselines are reported: fill + populate, and populate alone.
 * The two lookup tables are compared entry by entry.
 */
import { lib } from "../../ffi/lib.ts";
import type { BenchLib } from "./c_baseline.ts";
import { type Goal, goal, type Row, summarize, timeMs } from "./report.ts";

/** One table size to measure. */
export interface MaglevCase {
  /** Lookup table size (prime). */
  M: number;
  /** Rows, all active. */
  N: number;
  /** Repetitions (the median is reported). */
  reps: number;
}

/** The cases of the brief: Meridio's size, Maglev's paper size, the largest M. */
export const MAGLEV_CASES: MaglevCase[] = [
  { M: 9973, N: 100, reps: 9 },
  { M: 65537, N: 1000, reps: 5 },
  { M: 993997, N: 100, reps: 3 },
];

/** Result of one case. */
export interface MaglevResult {
  /** Table rows for the report. */
  rows: Row[];
  /** Whether our table equals upstream's entry by entry. */
  identical: boolean;
  /** upstream_populate's return code (0, or -3 where upstream reads past its array). */
  upstreamRc: number;
}

/** Measures one case. */
export function benchMaglevCase(bench: BenchLib, c: MaglevCase): MaglevResult {
  const { M, N } = c;
  const L = lib();
  const params = new Uint32Array(2 * N);
  if (L.nfqlb_maglev_params(M, N, params) !== 0) throw new Error(`maglev_params failed for M=${M}`);
  const active = new Int32Array(N).map((_, i) => 100 + i);
  const ours = new Int32Array(M);
  const theirs = new Int32Array(M);
  const perm = bench.symbols.upstream_alloc(M, N);
  if (perm === null) throw new Error(`cannot allocate upstream's permutation array for M=${M} N=${N}`);
  const oursMs: number[] = [], fillMs: number[] = [], popMs: number[] = [];
  let upstreamRc = 0;
  try {
    // warm-up: code paths, page faults of the lookup arrays
    L.nfqlb_maglev_populate(M, N, params, active, ours);
    for (let r = 0; r < c.reps; r++) {
      // interleaved so that both see the same stretch of machine noise
      oursMs.push(timeMs(() => {
        if (L.nfqlb_maglev_populate(M, N, params, active, ours) !== 0) throw new Error("populate failed");
      }));
      fillMs.push(timeMs(() => bench.symbols.upstream_init(M, N, perm)));
      popMs.push(timeMs(() => {
        upstreamRc = bench.symbols.upstream_populate(M, N, perm, active, theirs);
      }));
    }
  } finally {
    bench.symbols.upstream_free(perm);
  }
  let identical = upstreamRc === 0;
  for (let i = 0; identical && i < M; i++) identical = ours[i] === theirs[i];
  const label = `M=${M} N=${N}`;
  const o = summarize(oursMs);
  const both = summarize(fillMs.map((f, i) => f + popMs[i]));
  const pop = summarize(popMs);
  const row = (subject: string, s: typeof o, isOurs: boolean): Row => ({
    section: "maglev",
    case: label,
    subject,
    unit: "ms",
    stats: s,
    ours: isOurs,
    ratio: isOurs ? undefined : o.median / s.median,
  });
  return {
    rows: [
      row("nfqlb_maglev_populate (FFI)", o, true),
      row("upstream permutation fill + populate", both, false),
      row("upstream populate only (activate)", pop, false),
    ],
    identical,
    upstreamRc,
  };
}

/** Runs all cases; the goal is ours <= 20 ms for M=65537 N=1000. */
export function benchMaglev(
  bench: BenchLib,
): { rows: Row[]; goals: Goal[]; checks: Record<string, boolean> } {
  const rows: Row[] = [], goals: Goal[] = [];
  const checks: Record<string, boolean> = {};
  for (const c of MAGLEV_CASES) {
    const r = benchMaglevCase(bench, c);
    rows.push(...r.rows);
    checks[`maglev M=${c.M} N=${c.N}: identical to upstream's table`] = r.identical;
    if (c.M === 65537 && c.N === 1000) {
      goals.push(goal("populate M=65537 N=1000 (all active)", r.rows[0].stats.median, 20, "ms"));
    }
  }
  return { rows, goals, checks };
}
