/**
 * What `nfqlb apply` remembers between runs, per config name: the dataplane
 * process it started and the services it set up. A small JSON file,
 * `host-<name>.json`, beside the dataplane's log `host-<name>.log`, in our own
 * directory of the shm directory (`<shm dir>/.nfqlb-deno/`: tmpfs, like the
 * tables it describes, so gone at reboot, as they are; and out of the listing of
 * the shm directory, docs/shm.md "Our own files"). Kernel rules need no record
 * here: they carry the config's tag.
 */
import { z } from "zod";
import { errorText, NfqlbError } from "../core/errors.ts";
import { ensureOwnDir, ownDir } from "../core/shm_dir.ts";
import { type Claims, claimsOfOldState } from "./claims.ts";

const ClaimsSchema = z.object({
  queues: z.object({ first: z.number().int(), last: z.number().int() }).strict(),
  fwmarks: z.array(z.number().int()),
  tables: z.array(z.number().int()),
  shm: z.array(z.string()),
  own: z.array(z.string()),
  addresses: z.array(
    z.object({ what: z.enum(["trace", "flow", "metrics", "admin"]), address: z.string() }).strict(),
  ),
}).strict();

const StateSchema = z.object({
  version: z.literal(1),
  name: z.string(),
  file: z.string(),
  program: z.enum(["lb", "flowlb"]).nullable(),
  args: z.array(z.string()),
  pid: z.number().int().nullable(),
  log: z.string(),
  services: z.array(z.string()),
  ftShm: z.string(),
  /**
   * What the config holds on the host (host/claims.ts); while an apply runs, the old config's and the new
   * one's together. Absent in states written before it was recorded.
   */
  claims: ClaimsSchema.optional(),
  /**
   * Set while an apply changes the host (before its first change, cleared after its last): a state that
   * keeps it after its apply is gone records an interrupted apply. Absent: applied.
   */
  applying: z.object({ pid: z.number().int(), since: z.string(), file: z.string() }).strict().optional(),
}).strict();

/** The record of one applied config. */
export type HostState = z.infer<typeof StateSchema>;

/** The state file of config `name`. */
export function statePath(name: string): string {
  return `${ownDir()}/host-${name}.json`;
}

/** The dataplane's log file of config `name`. */
export function logPath(name: string): string {
  return `${ownDir()}/host-${name}.log`;
}

/** The state of config `name`, or undefined when none was recorded (or it is unreadable: then say so). */
export function readState(name: string): HostState | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(statePath(name));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new NfqlbError(`${statePath(name)}: ${errorText(e)}`);
  }
  try {
    const r = StateSchema.safeParse(JSON.parse(text));
    if (r.success) return r.data;
  } catch { /* fall through */ }
  // a damaged record must not stop apply or teardown: they re-derive what they need
  return undefined;
}

/** Writes the state of a config (atomically: a reader sees the old or the new file). */
export function writeState(s: HostState): void {
  ensureOwnDir();
  const path = statePath(s.name);
  const tmp = `${path}.${Deno.pid}`;
  Deno.writeTextFileSync(tmp, JSON.stringify(s, null, 2) + "\n", { mode: 0o600 });
  Deno.renameSync(tmp, path);
}

/** Removes the state (and log) of a config; missing files are fine. */
export function removeState(name: string): void {
  for (const p of [statePath(name), logPath(name), `${logPath(name)}.1`]) {
    try {
      Deno.removeSync(p);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw new NfqlbError(`${p}: ${errorText(e)}`);
    }
  }
}

/** The names of every config with a state file (in our own directory). */
export function listStates(): string[] {
  const names: string[] = [];
  try {
    for (const e of Deno.readDirSync(ownDir())) {
      const m = /^host-(.+)\.json$/.exec(e.name);
      if (m && e.isFile) names.push(m[1]);
    }
  } catch { /* no directory: no states */ }
  return names.sort();
}

/** The claims a state records (derived from its other fields for a state written before they were). */
export function stateClaims(st: HostState): Claims {
  return st.claims ?? claimsOfOldState(st);
}
