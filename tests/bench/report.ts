/**
 * Bench bookkeeping: samples → summary, rows and goals, the printed table.
 * Every number is compared with a baseline measured in the same run, because
 * the 2-core machine is noisy: only ratios within one run are meaningful.
 */

/** Median, min and max of a sample set. */
export interface Summary {
  /** Median of the samples. */
  median: number;
  /** Smallest sample. */
  min: number;
  /** Largest sample. */
  max: number;
  /** The raw samples, in measurement order. */
  samples: number[];
}

/** One measured subject (ours or a baseline). */
export interface Row {
  /** Section: "maglev", "lookup", "cli", "classify" or "rss". */
  section: string;
  /** The case, e.g. "M=65537 N=1000". */
  case: string;
  /** What was timed. */
  subject: string;
  /** "ms", "ns/key", "ns/pkt" or "MB". */
  unit: string;
  /** The timings. */
  stats: Summary;
  /** Whether this row is ours (the others are baselines or context). */
  ours: boolean;
  /** Our median divided by this baseline's median (only on baseline rows). */
  ratio?: number;
}

/** A goal from the project brief and whether this run met it. */
export interface Goal {
  /** e.g. "populate M=65537 N=1000 <= 20 ms". */
  text: string;
  /** Our median. */
  value: number;
  /** The limit (inclusive). */
  limit: number;
  /** The unit of value and limit. */
  unit: string;
  /** value <= limit. */
  pass: boolean;
}

/** Summarises samples (at least one). */
export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median, min: s[0], max: s[s.length - 1], samples };
}

/** Milliseconds taken by fn. */
export function timeMs(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

/** A goal record. */
export function goal(text: string, value: number, limit: number, unit: string): Goal {
  return { text, value, limit, unit, pass: value <= limit };
}

function fmt(v: number): string {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function table(header: string[], body: string[][]): string {
  const width = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i >= 3 ? c.padStart(width[i]) : c.padEnd(width[i]))).join("  ");
  return [line(header), width.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/**
 * The printed report: one line per row (median (min..max)), the ratio of
 * ours to each baseline, then the goals with PASS/MISS.
 */
export function formatReport(rows: Row[], goals: Goal[]): string {
  const body = rows.map((r) => [
    r.section,
    r.case,
    (r.ours ? "* " : "  ") + r.subject,
    fmt(r.stats.median),
    `${fmt(r.stats.min)}..${fmt(r.stats.max)}`,
    r.unit,
    r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}x`,
  ]);
  const out = [
    table(["section", "case", "subject (* = ours)", "median", "min..max", "unit", "ours/this"], body),
    "",
    "goals:",
    ...goals.map((g) =>
      `  ${g.pass ? "PASS" : "MISS"}  ${g.text}: ${fmt(g.value)} ${g.unit} (limit ${g.limit} ${g.unit})`
    ),
  ];
  return out.join("\n");
}
