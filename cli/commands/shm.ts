/** init, delete, show, stats, primebelow: the shared-memory commands. */
import type { Command } from "../command.ts";
import { out } from "../io.ts";
import { INT32_MAX, INT32_MIN, parseInteger, UINT32_MAX } from "../numbers.ts";
import { errorText, NfqlbError, strerror } from "../../core/errors.ts";
import { primeBelow } from "../../core/prime.ts";
import { OWN_DIR_NAME, ownExists, shmExists, shmPath } from "../../core/shm_dir.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { formatFragStats, readFragStats } from "../../core/frag_stats.ts";
import { INIT_CT_OPTIONS } from "./conntrack.ts";
import { jsonText } from "../json.ts";

/**
 * `init`: create or reset a target table. Ours (docs/conntrack.md):
 * `--conntrack=MAX` also creates (replaces) `<shm>-ct`, `--conntrack=0`
 * deletes it, without it an existing `<shm>-ct` is left alone.
 */
export const init: Command = {
  name: "init",
  header: "init [options]\n  Initiate shared mem structures",
  options: [
    { name: "ownfw", help: "Own FW mark. Only used in the LB-tier!" },
    { name: "shm", help: "Target shared memory" },
    { name: "N", help: "Maglev max targets" },
    { name: "M", help: "Maglev lookup table size" },
    ...INIT_CT_OPTIONS,
  ],
  async run({ opts }) {
    const name = opts.get("shm") ?? "nfqlb";
    const ownFwmark = parseInteger("init", "--ownfw value", opts.get("ownfw") ?? "0", INT32_MIN, INT32_MAX);
    const m = parseInteger("init", "--M value", opts.get("M") ?? "997", 0, UINT32_MAX);
    const n = parseInteger("init", "--N value", opts.get("N") ?? "32", 1, UINT32_MAX);
    // the connection-table code loads only when its options are given
    const ctCode = INIT_CT_OPTIONS.some((o) => opts.has(o.name))
      ? await import("./conntrack_impl.ts")
      : undefined;
    const ct = ctCode?.parseInitConntrack(opts, name);
    shmPath(name); // name errors before any output
    const p = m < 3 ? 3 : primeBelow(m);
    if (p !== m) out(`M adjusted; ${m} -> ${p}\n`);
    if (n > p) throw new NfqlbError("N can't be larger than M");
    TargetShm.create(name, { M: p, N: n, ownFwmark });
    if (ctCode && ct) ctCode.applyInitConntrack(name, ct);
    return 0;
  },
};

/** `delete`: unlink a shm (any of ours); a missing one is fine. */
export const del: Command = {
  name: "delete",
  header: "delete [options]\n  Delete shared mem structures",
  options: [{ name: "shm", help: "Target shared memory", required: true }],
  run({ opts }) {
    const name = opts.get("shm")!;
    const path = shmPath(name);
    try {
      // unlink(2), as shm_unlink: never a directory (ours, .nfqlb-deno, holds other processes' files)
      if (Deno.lstatSync(path).isDirectory) throw new NfqlbError(strerror(21));
      Deno.removeSync(path);
    } catch (e) {
      if (e instanceof NfqlbError) throw e;
      if (!(e instanceof Deno.errors.NotFound)) throw new NfqlbError(`${errorText(e)}`);
    }
    return 0;
  },
};

/**
 * `show`: the header, the first 25 lookup entries and the active targets.
 * Ours (docs/tier.md): `--digest` adds a line `  Digest: <hex>`,
 * the table's digest (core/table_digest.ts), which LB hosts of a tier
 * compare.
 */
export const show: Command = {
  name: "show",
  header: "show [options]\n  Show shared mem structures",
  options: [
    { name: "shm", help: "Shared memory" },
    // ours (docs/cli.md "JSON output"): printed after upstream's help text
    { name: "json", help: "The table as JSON (snake_case keys)", flag: true, ours: true },
    { name: "digest", help: "Also print the table's digest (docs/tier.md)", flag: true, ours: true },
  ],
  async run({ opts }) {
    const name = opts.get("shm") ?? "nfqlb";
    const t = TargetShm.open(name);
    try {
      const snap = t.snapshot(25);
      if (opts.has("json")) {
        const targets: { fwmark: number; row: number; weight: number }[] = [];
        snap.active.forEach((fw, row) => {
          if (fw >= 0) targets.push({ fwmark: fw, row, weight: snap.weights[row] });
        });
        out(
          jsonText({
            table: name,
            own_fwmark: t.ownFwmark,
            m: t.M,
            n: t.N,
            lookup: [...snap.lookup],
            targets,
          }),
        );
        return 0;
      }
      let text = `Shm: ${name}\n  Fw: own=${t.ownFwmark}\n  Maglev: M=${t.M}, N=${t.N}\n   Lookup:`;
      for (const v of snap.lookup) text += ` ${v}`;
      text += "...\n   Active:";
      // ours: a row whose weight is not 1 gets `w<weight>` (so all-1 tables print as upstream)
      snap.active.forEach((fw, i) => {
        if (fw >= 0) text += ` ${fw}(${i})${snap.weights[i] === 1 ? "" : `w${snap.weights[i]}`}`;
      });
      if (opts.has("digest")) {
        const { tableDigest } = await import("../../core/table_digest.ts");
        // the same snapshot: the digest is of the rows printed above
        text += `\n  Digest: ${await tableDigest({
          M: t.M,
          N: t.N,
          active: snap.active,
          weights: snap.weights,
        })}`;
      }
      out(text + "\n");
    } finally {
      t.close();
    }
    return 0;
  },
};

/**
 * The error of our own options when the lb/flowlb they read has never run: the config it belongs to (`apply`
 * names its fragment stats `ftshm.<config>`; otherwise the `--ft_shm` name stands for it) and the missing file.
 */
export function noDataplane(ftShm: string, table: string): NfqlbError {
  const config = /^ftshm\.(.+)$/.exec(ftShm)?.[1] ?? ftShm;
  return new NfqlbError(
    `nfqlb: no lb/flowlb is running for config ${config} (its table ${table} does not exist)`,
  );
}

/** `stats`: the fragment-table counters, as valid JSON. */
export const stats: Command = {
  name: "stats",
  header: "stats [options]\n  Show frag table stats",
  options: [
    { name: "ft_shm", help: "Frag table; shared memory stats" },
    // ours (docs/observability.md)
    { name: "all", help: "Every counter of the lb, as JSON", flag: true, ours: true },
    {
      name: "watch",
      help: "A live table, every N seconds (default 1)",
      optional: true,
      arg: "N",
      ours: true,
    },
    {
      name: "tshm",
      help:
        "--watch: target tables for weights and expected shares, comma-separated (default: the lb's --tshm)",
      arg: "TABLES",
      ours: true,
    },
  ],
  async run({ opts, args }) {
    const ft = opts.get("ft_shm") ?? "ftshm";
    if (!opts.has("all") && !opts.has("watch")) {
      out(formatFragStats(readFragStats(ft)));
      return 0;
    }
    // ours: the value first (nothing read before a bad --watch is refused), then a missing dataplane
    // said as what it is, not as upstream's `FAILED mapSharedData` of a table the user never named
    const w = opts.get("watch");
    // `--watch 5` leaves 5 a positional (an optional value needs `=`): refused, not a silent 1 s
    if (w === "" && args.length > 0) {
      throw new NfqlbError(
        `stats: invalid --watch value '${args[0]}' (write --watch=N, N an integer 1..3600)`,
      );
    }
    const seconds = w === undefined || w === "" ? 1 : parseInteger("stats", "--watch value", w, 1, 3600);
    const { countersShmName, readCounters } = await import("../../core/counters_shm.ts");
    const name = countersShmName(ft);
    if (!ownExists(name)) throw noDataplane(ft, `${OWN_DIR_NAME}/${name}`);
    if (!shmExists(ft)) throw noDataplane(ft, ft);
    const frag = readFragStats(ft);
    const view = await import("./stats_view.ts");
    if (opts.has("all")) {
      out(view.allStatsJson(frag, readCounters(name), view.kernelQueues()));
      return 0;
    }
    const tshm = opts.get("tshm");
    const tables = tshm !== undefined
      ? tshm.split(",").filter((x) => x !== "")
      : lbTables(readCounters(name).pid);
    // redrawn in place on a terminal; in a pipe or a file, plain screens one after another (no escape codes)
    const tty = Deno.stdout.isTerminal();
    let prev: ReturnType<typeof readCounters> | undefined;
    let stop = false;
    const onSig = () => (stop = true);
    Deno.addSignalListener("SIGINT", onSig);
    Deno.addSignalListener("SIGTERM", onSig);
    try {
      while (!stop) {
        const cur = readCounters(name);
        const screen = view.watchScreen(cur, prev, seconds, readFragStats(ft), view.targetShares(tables));
        out(tty ? "\x1b[H\x1b[2J" + screen : `--- ${new Date().toISOString()}\n${screen}\n`);
        prev = cur;
        for (let i = 0; i < seconds * 10 && !stop; i++) await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      Deno.removeSignalListener("SIGINT", onSig);
      Deno.removeSignalListener("SIGTERM", onSig);
    }
    return 0;
  },
};

/**
 * The target table of a running lb (`--tshm`, default `nfqlb`), from its command line; none for a flowlb
 * (its tables are its flows' targets: `stats --watch --tshm=a,b`) or a process that is gone.
 */
function lbTables(pid: number): string[] {
  let argv: string[];
  try {
    argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
  } catch {
    return [];
  }
  const at = argv.findIndex((a) => a === "lb");
  if (at < 0) return [];
  for (let i = at + 1; i < argv.length; i++) {
    const m = /^--?tshm(?:=(.*))?$/.exec(argv[i]);
    if (m) return [m[1] ?? argv[i + 1] ?? "nfqlb"];
  }
  return ["nfqlb"];
}

/** `primebelow <n>`. */
export const primebelow: Command = {
  name: "primebelow",
  header: "primebelow <n>\n  Give a prime below the passed number",
  options: [],
  run({ args }) {
    if (args.length === 0) return 0;
    const v = args[0];
    if (!/^\+?[0-9]+$/.test(v)) {
      throw new NfqlbError(`primebelow: invalid number '${v}' (expected an integer >= 0)`);
    }
    const n = v.replace(/^\+/, "").replace(/^0+(?=.)/, "").length > 7 ? 994009 : Number(v);
    const p = primeBelow(n);
    if (p === 0) throw new NfqlbError(`There is no prime below ${n}`);
    out(`${p}\n`);
    return 0;
  },
};
