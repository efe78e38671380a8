/** activate, deactivate, version. */
import type { Command, Invocation } from "../command.ts";
import { out } from "../io.ts";
import { INT32_MAX, INT32_MIN, parseInteger } from "../numbers.ts";
import { NfqlbError } from "../../control/errors.ts";
import { TargetShm } from "../../control/target_shm.ts";

/** The upstream release we are a drop-in for; `version` prints it. */
export const VERSION = "1.2.0";

function parseIndex(cmd: string, inv: Invocation): number | undefined {
  const v = inv.opts.get("index");
  if (v === undefined) return undefined;
  // the upper bound (N) is checked once the table is open: "Lookup index too large"
  return parseInteger(cmd, "--index value", v, 0, Number.MAX_SAFE_INTEGER);
}

function parseFwmarks(cmd: string, args: string[]): number[] {
  return args.map((a) => parseInteger(cmd, "fwmark", a, INT32_MIN, INT32_MAX));
}

/** `activate`: add fwmarks to free rows, or put one at `--index`. */
export const activate: Command = {
  name: "activate",
  header: "activate [--shm=] <fwmarks...>\nactivate [--shm=] --index=# <fwmark>\n  Activate targets.",
  options: [
    { name: "shm", help: "Shared memory" },
    { name: "index", help: "Index in the active table (<= N)" },
  ],
  run(inv) {
    const name = inv.opts.get("shm") ?? "nfqlb";
    const index = parseIndex("activate", inv);
    const fws = parseFwmarks("activate", inv.args);
    TargetShm.update(name, (active, t) => {
      if (index !== undefined) {
        if (fws.length === 0) return false;
        if (index >= t.N) throw new NfqlbError("Lookup index too large");
        if (active[index] === fws[0]) return false;
        active[index] = fws[0];
        return true;
      }
      let changed = false;
      for (const fw of fws) {
        if (active.includes(fw)) continue;
        const free = active.findIndex((v) => v < 0);
        if (free < 0) continue; // table full: ignored, as upstream
        active[free] = fw;
        changed = true;
      }
      return changed;
    });
    return 0;
  },
};

/** `deactivate`: free the rows of the given fwmarks, or row `--index`. */
export const deactivate: Command = {
  name: "deactivate",
  header: "deactivate [--shm=] <fwmarks...>\ndeactivate [--shm=] --index=#\n  Deactivate targets",
  options: [
    { name: "shm", help: "Shared memory" },
    { name: "index", help: "Index in the active table (<= N)" },
  ],
  run(inv) {
    const name = inv.opts.get("shm") ?? "nfqlb";
    const index = parseIndex("deactivate", inv);
    const fws = index === undefined ? parseFwmarks("deactivate", inv.args) : [];
    TargetShm.update(name, (active, t) => {
      if (index !== undefined) {
        if (index >= t.N) throw new NfqlbError("Lookup index too large");
        if (active[index] < 0) return false;
        active[index] = -1;
        return true;
      }
      let changed = false;
      for (const fw of fws) {
        const i = active.indexOf(fw);
        if (i >= 0) {
          active[i] = -1;
          changed = true;
        }
      }
      return changed;
    });
    return 0;
  },
};

/** `version`. */
export const version: Command = {
  name: "version",
  header: "version\n  Print the version",
  options: [],
  run() {
    out(`${VERSION}\n`);
    return 0;
  },
};
