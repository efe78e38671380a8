/**
 * Traffic through the lab: flows and what the tests count of them.
 */
import type { Flow } from "./agent/types.ts";

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
