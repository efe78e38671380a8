/** activate, deactivate, version. */
import type { Command, Invocation } from "../command.ts";
import { out } from "../io.ts";
import { INT32_MAX, INT32_MIN, parseInteger } from "../numbers.ts";
import { NfqlbError } from "../../core/errors.ts";
import { MAX_WEIGHT, TargetShm } from "../../core/target_shm.ts";
import { buildLine, VERSION } from "../../core/version.ts";

function parseIndex(cmd: string, inv: Invocation): number | undefined {
  const v = inv.opts.get("index");
  if (v === undefined) return undefined;
  // the upper bound (N) is checked once the table is open: "Lookup index too large"
  return parseInteger(cmd, "--index value", v, 0, Number.MAX_SAFE_INTEGER);
}

function parseFwmarks(cmd: string, args: string[]): number[] {
  return args.map((a) => parseInteger(cmd, "fwmark", a, INT32_MIN, INT32_MAX));
}

/** `--weight` (ours, docs/maglev.md "Weights"): undefined when not given. */
function parseWeight(cmd: string, inv: Invocation): number | undefined {
  const v = inv.opts.get("weight");
  if (v === undefined) return undefined;
  return parseInteger(cmd, "--weight value", v, 0, MAX_WEIGHT);
}

/**
 * `activate`: add fwmarks to free rows, or put one at `--index`. With our
 * `--weight=W` (0..65535) the rows get weight W (0 drains: no new flows),
 * including fwmarks that are already active; without it new rows get 1 and
 * active ones keep theirs.
 */
export const activate: Command = {
  name: "activate",
  header: "activate [--shm=] <fwmarks...>\nactivate [--shm=] --index=# <fwmark>\n  Activate targets.",
  options: [
    { name: "shm", help: "Shared memory" },
    { name: "index", help: "Index in the active table (<= N)" },
    // ours: printed after upstream's help text
    {
      name: "weight",
      help: `Weight of the targets, 0..${MAX_WEIGHT} (default 1; 0 = drain)`,
      arg: "W",
      ours: true,
    },
  ],
  run(inv) {
    const name = inv.opts.get("shm") ?? "nfqlb";
    const index = parseIndex("activate", inv);
    const weight = parseWeight("activate", inv);
    const fws = parseFwmarks("activate", inv.args);
    TargetShm.update(name, (active, t, weights) => {
      if (index !== undefined) {
        if (fws.length === 0) return false;
        if (index >= t.N) throw new NfqlbError("Lookup index too large");
        const w = weight ?? (active[index] === fws[0] ? weights[index] : 1);
        if (active[index] === fws[0] && weights[index] === w) return false;
        active[index] = fws[0];
        weights[index] = w;
        return true;
      }
      let changed = false;
      for (const fw of fws) {
        const row = active.indexOf(fw);
        if (row >= 0) {
          // already active: only --weight changes it
          if (weight !== undefined && weights[row] !== weight) {
            weights[row] = weight;
            changed = true;
          }
          continue;
        }
        const free = active.findIndex((v) => v < 0);
        if (free < 0) continue; // table full: ignored, as upstream
        active[free] = fw;
        weights[free] = weight ?? 1;
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
    // a freed row's weight goes back to 1, the default for its next fwmark
    TargetShm.update(name, (active, t, weights) => {
      if (index !== undefined) {
        if (index >= t.N) throw new NfqlbError("Lookup index too large");
        if (active[index] < 0) return false;
        active[index] = -1;
        weights[index] = 1;
        return true;
      }
      let changed = false;
      for (const fw of fws) {
        const i = active.indexOf(fw);
        if (i >= 0) {
          active[i] = -1;
          weights[i] = 1;
          changed = true;
        }
      }
      return changed;
    });
    return 0;
  },
};

/** `version`: upstream's `1.2.0`, for scripts that parse it; ours `--build` says which build this is. */
export const version: Command = {
  name: "version",
  header: "version\n  Print the version",
  options: [
    {
      name: "build",
      help: "Print nfqlb-deno's version, the nfqlb it is compatible with, Deno's and the C library's",
      flag: true,
      ours: true,
    },
  ],
  run({ opts }) {
    out(`${opts.has("build") ? buildLine() : VERSION}\n`);
    return 0;
  },
};
