/**
 * The health of a config's targets as `nfqlb run` last saw it, for
 * `nfqlb status` (another process): `health-<name>.json` in our own
 * directory of the shm directory, written atomically by the agent on every
 * transition, within a second of a new last error, and every 2 s while
 * checks run (their counts and last check). A record whose writer no
 * longer runs is ignored: nothing then keeps the health decisions, and the
 * file is what counts again.
 */
import { z } from "zod";
import { ensureOwnDir, ownDir } from "../../core/shm_dir.ts";
import { alive } from "../dataplane_process.ts";

const TargetRecordSchema = z.object({
  up: z.boolean(),
  since: z.number(),
  lastError: z.string().nullable(),
  lastCheck: z.number().nullable(),
  lastMs: z.number(),
  effect: z.enum(["in", "removed", "drained", "panic", "operator"]),
  type: z.string(),
  checks: z.number().int(),
});

const RecordSchema = z.object({
  version: z.literal(1),
  pid: z.number().int(),
  time: z.number(),
  firstRound: z.boolean(),
  services: z.record(
    z.string(),
    z.object({ panic: z.boolean(), targets: z.record(z.string(), TargetRecordSchema) }),
  ),
});

/** One target's health in the record. */
export type TargetRecord = z.infer<typeof TargetRecordSchema>;
/** The record of a config. */
export type HealthRecord = z.infer<typeof RecordSchema>;

/** The record file of config `name`. */
export function healthPath(name: string): string {
  return `${ownDir()}/health-${name}.json`;
}

/** Writes the record (atomically). */
export function writeHealthRecord(name: string, r: HealthRecord): void {
  ensureOwnDir();
  const path = healthPath(name);
  const tmp = `${path}.${Deno.pid}`;
  Deno.writeTextFileSync(tmp, JSON.stringify(r) + "\n", { mode: 0o600 });
  Deno.renameSync(tmp, path);
}

/** Removes the record (a missing file is fine). */
export function removeHealthRecord(name: string): void {
  try {
    Deno.removeSync(healthPath(name));
  } catch { /* gone already */ }
}

/** The record of config `name` while its writer runs; undefined otherwise (absent, damaged, stale). */
export function readHealthRecord(name: string): HealthRecord | undefined {
  try {
    const r = RecordSchema.safeParse(JSON.parse(Deno.readTextFileSync(healthPath(name))));
    if (!r.success) return undefined;
    if (r.data.pid !== Deno.pid && !alive(r.data.pid)) return undefined;
    return r.data;
  } catch {
    return undefined;
  }
}
