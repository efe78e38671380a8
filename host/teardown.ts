/**
 * `nfqlb teardown`: removes what apply set up for a config — the dataplane
 * process it started, every kernel object tagged with the config's name, the
 * tables of its services, the dataplane's own shm files and saved flows, and
 * its state — and nothing else.
 */
import type { HostConfig } from "./config/types.ts";
import { conntrackName } from "../core/conntrack_shm.ts";
import { errorText, NfqlbError } from "../core/errors.ts";
import { flowStorePath } from "../core/flow/store.ts";
import { flowAddress } from "../core/flow/wire.ts";
import { teardownPlumbing } from "./plumbing/kernel_sync.ts";
import { shmPath } from "../core/shm_dir.ts";
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
  const files = new Set<string>();
  for (const s of cfg.services) files.add(s.name).add(conntrackName(s.name));
  // and those apply recorded: services removed from the file since, whose tables a failed apply left
  for (const name of st?.services ?? []) files.add(name).add(conntrackName(name));
  // the dataplane's own files, when apply ran it for this config
  if (st && st.program !== null) {
    const ft = st.ftShm ?? ftShmOf(cfg);
    files.add(ft).add(`${ft}-counters`);
  }
  for (const f of files) {
    if (removeFile(shmPath(f))) {
      say(`- delete --shm=${f}`);
      n++;
    }
  }
  if (cfg.dataplane.program === "flowlb") {
    // the address flowlb saved under: the file's, else the NFQLB_FLOW_ADDRESS it inherited from apply
    const store = flowStorePath(cfg.dataplane.options.flowAddress ?? flowAddress());
    if (removeFile(store)) {
      say(`- ${store}   (saved flows)`);
      n++;
    }
  }
  removeState(cfg.name);
  return n;
}
