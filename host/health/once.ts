/**
 * `nfqlb health -f FILE`: every check of a config once, at the same time,
 * as a table (for operators and CI). It runs where the config is applied
 * (the same network namespace: a DSR check is routed by the host's fwmark
 * rules). Rise/fall do not apply: one check is one answer.
 */
import type { HostConfig } from "../config/types.ts";
import { checkTargets, runCheck } from "./check.ts";
import { Poller } from "./sock.ts";
import { closeIdleSockets } from "./tcp.ts";
import { probeText } from "./types.ts";

/** One row of the table. */
export interface OnceRow {
  /** Service. */
  service: string;
  /** fwmark. */
  fwmark: number;
  /** Check type. */
  type: string;
  /** Where it went (every family). */
  where: string;
  /** Passed. */
  ok: boolean;
  /** Latency, ms. */
  ms: number;
  /** Why it failed. */
  error: string | null;
}

/** Runs every check once; the rows in file order. */
export async function checkOnce(cfg: HostConfig): Promise<OnceRow[]> {
  const poller = new Poller();
  try {
    const targets = checkTargets(cfg);
    const results = await Promise.all(targets.map((t) => runCheck(t, poller)));
    return targets.map((t, i) => ({
      service: t.service,
      fwmark: t.fwmark,
      type: t.health.type,
      where: t.probes.map(probeText).join(", "),
      ok: results[i].ok,
      ms: Math.round(results[i].ms * 10) / 10,
      error: results[i].error,
    }));
  } finally {
    poller.close();
    closeIdleSockets();
  }
}

/** The rows as an aligned text table (header first). */
export function onceTable(rows: readonly OnceRow[]): string[] {
  const cells = [
    ["SERVICE", "TARGET", "TYPE", "CHECKED", "RESULT", "MS", "ERROR"],
    ...rows.map((r) => [
      r.service,
      String(r.fwmark),
      r.type,
      r.where,
      r.ok ? "up" : "down",
      r.ms.toFixed(1),
      r.error ?? "",
    ]),
  ];
  const widths = cells[0].map((_, c) => Math.max(...cells.map((row) => row[c].length)));
  return cells.map((row) =>
    row.map((v, c) => (c === row.length - 1 ? v : v.padEnd(widths[c]))).join("  ").trimEnd()
  );
}
