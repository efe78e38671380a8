/**
 * `nfqlb teardown`: removes what apply set up for a config — the dataplane
 * process it started, every kernel object tagged with the config's name, the
 * shm files its state records (its target and connection tables, its
 * dataplane's fragment stats and counters), and its state — and nothing
 * else. A file another recorded config also names is kept (and said so); a
 * table of the file that no state records is kept too (apply records every
 * file before it makes it). apply's flowlb saves no flows (it runs without
 * --flow_store: the config file holds them), so there are none to remove.
 */
import { withHostLock } from "./host_lock.ts";
import type { HostConfig } from "./config/types.ts";
import { errorText, NfqlbError } from "../core/errors.ts";
import { teardownPlumbing } from "./plumbing/kernel_sync.ts";
import { OWN_DIR_NAME, ownPath, shmExists, shmPath } from "../core/shm_dir.ts";
import { isDataplane, stopDataplane } from "./dataplane_process.ts";
import { listStates, readState, removeState, stateClaims } from "./state.ts";

function removeFile(path: string): boolean {
  try {
    Deno.removeSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw new NfqlbError(`${path}: ${errorText(e)}`);
  }
}

/** The other recorded configs that name each file: file → config names (`.nfqlb-deno/` files prefixed). */
function othersFiles(name: string): Map<string, string[]> {
  const by = new Map<string, string[]>();
  const add = (f: string, n: string) => by.set(f, [...by.get(f) ?? [], n]);
  for (const n of listStates()) {
    if (n === name) continue;
    const st = readState(n);
    if (!st) continue;
    const c = stateClaims(st);
    for (const f of c.shm) add(f, st.name);
    for (const f of c.own) add(`${OWN_DIR_NAME}/${f}`, st.name);
  }
  return by;
}

/**
 * Tears down config `cfg`; `say` gets one line per removed (or knowingly
 * kept) thing. Returns how many things were removed (0: nothing of it was
 * there).
 *
 * @example
 * ```ts
 * const n = await teardownHost(await loadHostConfig("host.yaml"), console.log);
 * ```
 */
export async function teardownHost(cfg: HostConfig, say: (line: string) => void): Promise<number> {
  return await withHostLock(`teardown ${cfg.name}`, () => teardownHostLocked(cfg, say));
}

async function teardownHostLocked(cfg: HostConfig, say: (line: string) => void): Promise<number> {
  let n = 0;
  const st = readState(cfg.name);
  if (st && st.program !== null && isDataplane(st.pid, st.program, st.args)) {
    await stopDataplane(st.pid!);
    say(`- stop ${st.program} ${st.args.join(" ")}   (pid ${st.pid})`);
    n++;
  }
  for (const line of await teardownPlumbing(cfg.name)) {
    say(`- ${line}`);
    n++;
  }
  // shm files (upstream's kinds, at the top of the shm directory) and our own (in .nfqlb-deno/): those its
  // state records, which are those apply made (recorded before it made them) — never one of another config
  const claims = st ? stateClaims(st) : undefined;
  const others = othersFiles(cfg.name);
  const kept = (label: string) => {
    const by = others.get(label);
    if (by) say(`  kept ${label}: config ${by.join(", ")} records it too`);
    return by !== undefined;
  };
  for (const f of claims?.shm ?? []) {
    if (!kept(f) && removeFile(shmPath(f))) {
      say(`- delete --shm=${f}`);
      n++;
    }
  }
  for (const f of claims?.own ?? []) {
    const label = `${OWN_DIR_NAME}/${f}`;
    if (!kept(label) && removeFile(ownPath(f))) {
      say(`- delete ${label}`);
      n++;
    }
  }
  if (!st) {
    // no record: its tables may be someone else's, or left by hand; say how to remove them
    for (const s of cfg.services) {
      if (shmExists(s.name) && !others.has(s.name)) {
        say(`  kept ${s.name}: no state of ${cfg.name} records it (nfqlb delete --shm=${s.name} removes it)`);
      }
    }
  }
  removeState(cfg.name);
  return n;
}
