/**
 * `nfqlb teardown`: removes what apply set up for a config — the dataplane
 * process it started, every kernel object tagged with the config's name, the
 * tables of its services (and their connection tables), the dataplane's own
 * shm files, and its state — and nothing else. apply's flowlb saves no flows
 * (it runs without --flow_store: the config file holds them), so there are
 * none to remove.
 */
import type { HostConfig } from "./config/types.ts";
import { conntrackName } from "../core/conntrack_shm.ts";
import { errorText, NfqlbError } from "../core/errors.ts";
import { teardownPlumbing } from "./plumbing/kernel_sync.ts";
import { OWN_DIR_NAME, ownPath, shmPath } from "../core/shm_dir.ts";
import { countersShmName } from "../core/counters_shm.ts";
import { ftShmOf, isDataplane, stopDataplane } from "./dataplane_process.ts";
import { readState, removeState } from "./state.ts";

function removeFile(path: string): boolean {
  try {
    Deno.removeSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw new NfqlbError(`${path}: ${errorText(e)}`);
  }
}

/**
 * Tears down config `cfg`; `say` gets one line per removed thing. Returns
 * how many things were removed (0: nothing of it was there).
 *
 * @example
 * ```ts
 * const n = await teardownHost(await loadHostConfig("host.yaml"), console.log);
 * ```
 */
export async function teardownHost(cfg: HostConfig, say: (line: string) => void): Promise<number> {
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
  // shm files (upstream's names, in the shm directory) and our own files (in its .nfqlb-deno/)
  const shms = new Set<string>(), own = new Set<string>();
  // the file's services, and those apply recorded: services removed from the file since, whose tables a
  // failed apply left
  for (const name of [...cfg.services.map((s) => s.name), ...st?.services ?? []]) {
    shms.add(name);
    own.add(conntrackName(name));
  }
  // the dataplane's own files, when apply ran it for this config
  if (st && st.program !== null) {
    const ft = st.ftShm ?? ftShmOf(cfg);
    shms.add(ft);
    own.add(countersShmName(ft));
  }
  for (const f of shms) {
    if (removeFile(shmPath(f))) {
      say(`- delete --shm=${f}`);
      n++;
    }
  }
  for (const f of own) {
    if (removeFile(ownPath(f))) {
      say(`- delete ${OWN_DIR_NAME}/${f}`);
      n++;
    }
  }
  removeState(cfg.name);
  return n;
}
