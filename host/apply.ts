/**
 * `nfqlb apply`: makes this host match a config file, by diff, in a fixed
 * order — target tables and connection tables, targets, the dataplane
 * process, kernel plumbing, flows — and says what it changed. A second run
 * changes nothing. With dryRun it only says what it would do.
 */
import type { HostConfig, ServiceConfig } from "./config/types.ts";
import { conntrackName, ConntrackShm } from "../core/conntrack_shm.ts";
import { NfqlbError } from "../core/errors.ts";
import { applyPlumbing } from "./plumbing/kernel_sync.ts";
import { ensureOwnDir, OWN_DIR_NAME, ownExists, ownPath, shmExists, shmPath } from "../core/shm_dir.ts";
import { TargetShm } from "../core/target_shm.ts";
import {
  dataplaneArgs,
  dataplaneEnv,
  ftShmOf,
  isDataplane,
  startDataplane,
  stopDataplane,
} from "./dataplane_process.ts";
import { applyFlowChange, flowSetLine, listFlows, planFlows } from "./flow_sync.ts";
import { plumbingSpecOf } from "./plumbing_spec.ts";
import { type HostState, logPath, readState, writeState } from "./state.ts";
import {
  applyTargets,
  describeTargetChange,
  diffTargets,
  planTargets,
  type WantedTarget,
} from "./target_sync.ts";

/** Options of {@link applyHost}. */
export interface ApplyOptions {
  /** Only say what would change. */
  dryRun?: boolean;
  /** Receives one line per change (`+ …` added, `- …` removed, `~ …` changed). */
  say: (line: string) => void;
  /** The config file's path, recorded for `status`. */
  file: string;
  /**
   * The rows of a service's table, when something else than the file decides
   * them: `nfqlb run`'s health checks (host/health) take down targets out.
   * Default: the file's active targets with their weights.
   */
  wanted?: (s: ServiceConfig) => WantedTarget[];
}

/** M and N of an existing target table, or undefined when there is none. */
function tableShape(name: string): { M: number; N: number } | undefined {
  if (!shmExists(name)) return undefined;
  const t = TargetShm.open(name);
  try {
    return { M: t.M, N: t.N };
  } finally {
    t.close();
  }
}

/** Why an existing connection table differs from the service's, or "" when it is the same. */
function conntrackDiff(s: ServiceConfig): string {
  const c = s.conntrack;
  if (!c) return "";
  const ct = ConntrackShm.open(conntrackName(s.name));
  try {
    const st = ct.stats();
    const diffs: string[] = [];
    const cap = Math.ceil(c.capacity / 8) * 8;
    if (st.capacity !== cap) diffs.push(`capacity ${st.capacity} -> ${cap}`);
    if (st.ctxSlots !== c.contexts) diffs.push(`contexts ${st.ctxSlots} -> ${c.contexts}`);
    if (st.floodPerSecond !== c.floodPerSecond) {
      diffs.push(`flood ${st.floodPerSecond} -> ${c.floodPerSecond}`);
    }
    const ttl = [st.ttlTcpMs, st.ttlUdpMs, st.ttlOtherMs].join(",");
    const want = [c.ttlMs.tcp, c.ttlMs.udp, c.ttlMs.other].join(",");
    if (ttl !== want) diffs.push(`ttl ${ttl} -> ${want}`);
    if (ct.scheduler !== s.scheduler) diffs.push(`scheduler ${ct.scheduler} -> ${s.scheduler}`);
    return diffs.join(", ");
  } finally {
    ct.close();
  }
}

/** The init command line of a connection table (for the output). */
function ctInitLine(s: ServiceConfig): string {
  const c = s.conntrack!;
  let l =
    `init --shm=${s.name} --conntrack=${c.capacity} --ct_ttl=${c.ttlMs.tcp},${c.ttlMs.udp},${c.ttlMs.other}`;
  if (c.floodPerSecond) l += ` --ct_flood=${c.floodPerSecond}`;
  if (c.contexts) l += ` --ct_contexts=${c.contexts}`;
  if (s.scheduler !== "maglev") l += ` --scheduler=${s.scheduler}`;
  return l;
}

/** Tables and targets of one service; returns the number of changes and whether its connection table changed. */
function applyService(s: ServiceConfig, o: ApplyOptions): { changes: number; ctChanged: boolean } {
  let changes = 0, ctChanged = false;
  const shape = tableShape(s.name);
  const sameShape = shape !== undefined && shape.M === s.m && shape.N === s.n;
  if (!sameShape) {
    const why = shape ? `   (was M=${shape.M} N=${shape.N}: a new table; its targets are set below)` : "";
    o.say(`+ init --shm=${s.name} --M=${s.m} --N=${s.n}${why}`);
    if (!o.dryRun) TargetShm.create(s.name, { M: s.m, N: s.n, ownFwmark: 0 });
    changes++;
  }
  const wanted: WantedTarget[] = o.wanted?.(s) ?? s.targets.filter((t) => t.active).map((t) => ({
    fwmark: t.fwmark,
    weight: t.weight,
  }));
  // a dry run reads the table it would change, or starts from the empty one init would make
  const done = !o.dryRun
    ? applyTargets(s.name, wanted)
    : sameShape
    ? diffTargets(s.name, wanted)
    : planTargets(new Int32Array(s.n).fill(-1), new Uint32Array(s.n).fill(1), wanted).changes;
  for (const c of done) {
    o.say(
      `${c.kind === "activate" ? "+" : c.kind === "deactivate" ? "-" : "~"} ${
        describeTargetChange(s.name, c)
      }`,
    );
  }
  changes += done.length;

  const ctName = conntrackName(s.name);
  const ctExists = ownExists(ctName);
  if (s.conntrack) {
    const diff = ctExists ? conntrackDiff(s) : "";
    if (!ctExists || diff) {
      o.say(
        `${ctExists ? "~" : "+"} ${ctInitLine(s)}${
          diff ? `   (${diff}: a new table, its connections are forgotten)` : ""
        }`,
      );
      if (!o.dryRun) {
        const c = s.conntrack;
        ConntrackShm.create(ctName, {
          capacity: c.capacity,
          ctxSlots: c.contexts,
          ttlMs: c.ttlMs,
          floodPerSecond: c.floodPerSecond,
          scheduler: s.scheduler,
          replace: true,
        });
      }
      changes++;
      ctChanged = true;
    }
  } else if (ctExists) {
    o.say(`- delete ${OWN_DIR_NAME}/${ctName}   (the file has no conntrack for ${s.name})`);
    if (!o.dryRun) Deno.removeSync(ownPath(ctName));
    changes++;
    ctChanged = true;
  }
  return { changes, ctChanged };
}

/**
 * Applies `cfg`. Returns the number of changes (made, or with dryRun to be
 * made). Throws one line on the first failure; what was done before stays
 * (a new run continues from there).
 *
 * @example
 * ```ts
 * const cfg = await loadHostConfig("host.yaml");
 * const n = await applyHost(cfg, { file: "host.yaml", say: console.log });
 * if (n === 0) console.log("nothing to change");
 * ```
 */
export async function applyHost(cfg: HostConfig, o: ApplyOptions): Promise<number> {
  let changes = 0, ctChanged = false;
  for (const s of cfg.services) {
    const r = applyService(s, o);
    changes += r.changes;
    ctChanged ||= r.ctChanged;
  }

  // the dataplane: started (or restarted when its command line or a table it maps changed)
  const d = cfg.dataplane;
  const args = dataplaneArgs(cfg);
  const old = readState(cfg.name);
  const log = logPath(cfg.name);
  const oldRunning = old !== undefined && old.program !== null && isDataplane(old.pid, old.program, old.args);
  const same = oldRunning && old.program === d.program && old.args.join(" ") === args.join(" ");
  let pid: number | null = oldRunning ? old.pid : null;
  let program: "lb" | "flowlb" | null = oldRunning ? old.program : null;
  let runArgs = oldRunning ? old.args : [];
  if (oldRunning && (!same || ctChanged || !d.start)) {
    const why = !d.start
      ? "the file does not start it"
      : !same
      ? "its options changed"
      : "its connection table changed";
    o.say(`- stop ${old.program} ${old.args.join(" ")}   (pid ${old.pid}; ${why})`);
    if (!o.dryRun) await stopDataplane(old.pid!);
    pid = null;
    program = null;
    runArgs = [];
    changes++;
  }
  if (d.start && pid === null) {
    if (!o.dryRun) {
      ensureOwnDir(); // the log file's directory
      pid = await startDataplane(d.program, args, {
        log,
        env: dataplaneEnv(cfg),
        queues: d.queues.last - d.queues.first + 1,
      });
    }
    program = d.program;
    runArgs = args;
    o.say(`+ start ${d.program} ${args.join(" ")}${pid ? `   (pid ${pid}, log ${log})` : ""}`);
    changes++;
  }
  const state: HostState = {
    version: 1,
    name: cfg.name,
    file: o.file,
    program,
    args: runArgs,
    pid,
    log,
    services: cfg.services.map((s) => s.name),
    ftShm: ftShmOf(cfg),
  };
  // services the file no longer has stay recorded until their tables are deleted (below), so that a
  // failure in between leaves them to the next apply or to teardown
  const kept = new Set([ftShmOf(cfg), ...cfg.services.map((s) => s.name)]);
  const gone = (old?.services ?? []).filter((n) => !kept.has(n));
  if (!o.dryRun) writeState({ ...state, services: [...state.services, ...gone] });

  // kernel plumbing (after the dataplane has bound its queues, so nothing waits for it)
  const p = await applyPlumbing(plumbingSpecOf(cfg), { dryRun: o.dryRun });
  for (const l of p.removed) o.say(`- ${l}`);
  for (const l of p.added) o.say(`+ ${l}`);
  changes += p.added.length + p.removed.length;

  // flows, by diff with what the running flowlb has
  if (d.program === "flowlb") {
    const address = d.options.flowAddress;
    if (pid === null) {
      if (cfg.flows.length > 0) {
        // only a dry run, or a file that does not start flowlb, gets here without one
        if (!o.dryRun) {
          throw new NfqlbError(`flows need a running flowlb: start it, or set dataplane.start: true`);
        }
        for (const f of cfg.flows) o.say(`+ ${flowSetLine(f.request)}`);
        changes += cfg.flows.length;
      }
    } else {
      const have = await listFlows(address);
      for (const c of planFlows(have, cfg.flows)) {
        o.say(
          c.kind === "set"
            ? `${c.replaces ? "~" : "+"} ${flowSetLine(c.request)}`
            : `- flow-delete --name=${c.name}`,
        );
        if (!o.dryRun) await applyFlowChange(c, address);
        changes++;
      }
    }
  }

  // tables of services removed from the file: last, once no flow selects them and lb has moved on
  for (const name of gone) {
    if (shmExists(name)) {
      o.say(`- delete --shm=${name}   (service ${name} is no longer in the file)`);
      if (!o.dryRun) Deno.removeSync(shmPath(name));
      changes++;
    }
    const ct = conntrackName(name);
    if (ownExists(ct)) {
      o.say(`- delete ${OWN_DIR_NAME}/${ct}   (service ${name} is no longer in the file)`);
      if (!o.dryRun) Deno.removeSync(ownPath(ct));
      changes++;
    }
  }
  if (gone.length > 0 && !o.dryRun) writeState(state);
  return changes;
}
