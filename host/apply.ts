/**
 * `nfqlb apply`: makes this host match a config file, by diff, in a fixed
 * order — target tables and connection tables, targets, the dataplane
 * process, kernel plumbing, flows — and says what it changed. A second run
 * changes nothing. With dryRun it only says what it would do.
 *
 * All or nothing (docs/apply.md): it first reads what is there and checks
 * what it will need (host/preflight.ts: no clash with another recorded
 * config, CAP_NET_ADMIN, the programs, room in the shm directory, free
 * queues), and records in the config's state, before its first change, what
 * the config will hold and that an apply is under way. When a step fails it
 * takes back what this run added (tables, targets, the dataplane it started,
 * kernel objects, flows) and says so in the one line of the error.
 */
import { withHostLock } from "./host_lock.ts";
import type { HostConfig, ServiceConfig } from "./config/types.ts";
import { conntrackName, ConntrackShm } from "../core/conntrack_shm.ts";
import { countersBytes, countersShmName } from "../core/counters_shm.ts";
import { errorText, NfqlbError } from "../core/errors.ts";
import { FRAG_STATS_BYTES } from "../core/frag_stats.ts";
import { TRACE_SHM, TRACE_SHM_BYTES } from "../core/trace_shm.ts";
import {
  applyPlumbing,
  PlumbingApplyError,
  plumbingCommands,
  removeObjects,
} from "./plumbing/kernel_sync.ts";
import type { PlumbingObject } from "./plumbing/spec.ts";
import { ensureOwnDir, OWN_DIR_NAME, ownExists, ownPath, shmExists, shmPath } from "../core/shm_dir.ts";
import { TargetShm } from "../core/target_shm.ts";
import { claimsOf, unionClaims } from "./claims.ts";
import {
  dataplaneArgs,
  dataplaneEnv,
  isDataplane,
  startDataplane,
  stopDataplane,
} from "./dataplane_process.ts";
import { applyFlowChange, flowSetLine, listFlows, planFlows } from "./flow_sync.ts";
import { hostNames } from "./names.ts";
import { plumbingSpecOf } from "./plumbing_spec.ts";
import { othersClaims, preflight, type ShmFile, shmLine, shmNeed } from "./preflight.ts";
import { type HostState, logPath, readState, removeState, stateClaims, writeState } from "./state.ts";
import {
  applyTargets,
  currentTargets,
  describeTargetChange,
  diffTargets,
  homeRows,
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
  /** The file as the user named it, for the refusals (default: {@link file}). */
  label?: string;
  /** The admin address `nfqlb run` serves on (`--admin`); recorded, so no other config takes it. */
  admin?: string;
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

/** What apply will do to one service's tables, read before anything changes. */
interface ServicePlan {
  s: ServiceConfig;
  /** M and N of its table now; undefined: none. */
  shape: { M: number; N: number } | undefined;
  /** Its table is there with the file's M and N. */
  sameShape: boolean;
  /** Its connection table is there. */
  ctExists: boolean;
  /** How the connection table there differs from the file's ("" when the same or absent). */
  ctDiff: string;
}

function planService(s: ServiceConfig): ServicePlan {
  const shape = tableShape(s.name);
  const ctExists = ownExists(conntrackName(s.name));
  return {
    s,
    shape,
    sameShape: shape !== undefined && shape.M === s.m && shape.N === s.n,
    ctExists,
    ctDiff: s.conntrack && ctExists ? conntrackDiff(s) : "",
  };
}

/** Whether apply makes (or replaces) the service's connection table, or deletes it. */
function ctChange(p: ServicePlan): "make" | "delete" | "none" {
  if (p.s.conntrack) return !p.ctExists || p.ctDiff ? "make" : "none";
  return p.ctExists ? "delete" : "none";
}

/** What this run added, so a failure can take it back (see {@link rollBack}). */
interface Journal {
  /** Target tables it created (none was there). */
  tables: string[];
  /** Connection tables it created (none was there). */
  cts: string[];
  /** Tables that were there, with the targets they held. */
  targets: { name: string; before: WantedTarget[] }[];
  /** The dataplane it started, and the files of it that were not there before (its fragment stats, counters). */
  started: { program: string; pid: number; files: { top: string[]; own: string[] } } | undefined;
  /** The dataplane of the config it stopped (to start the new one, or because the file does not start it). */
  stopped: { program: string; pid: number } | undefined;
  /** Kernel objects it added. */
  plumbing: PlumbingObject[];
  /** Flows it set that flowlb did not have, when the flowlb was there before it. */
  flows: string[];
  /** Flow server of those flows. */
  flowAddress: string | undefined;
}

/** Tables and targets of one service; returns the number of changes. */
function applyService(p: ServicePlan, o: ApplyOptions, j: Journal): number {
  let changes = 0;
  const { s, shape, sameShape } = p;
  if (!sameShape) {
    const why = shape ? `   (was M=${shape.M} N=${shape.N}: a new table; its targets are set below)` : "";
    o.say(`+ init --shm=${s.name} --M=${s.m} --N=${s.n}${why}`);
    if (!o.dryRun) {
      TargetShm.create(s.name, { M: s.m, N: s.n, ownFwmark: 0 });
      if (!shape) j.tables.push(s.name);
    }
    changes++;
  } else if (!o.dryRun) {
    j.targets.push({ name: s.name, before: currentTargets(s.name) });
  }
  const wanted: WantedTarget[] = o.wanted?.(s) ?? s.targets.filter((t) => t.active).map((t) => ({
    fwmark: t.fwmark,
    weight: t.weight,
  }));
  // a dry run reads the table it would change, or starts from the empty one init would make
  const done = !o.dryRun
    ? applyTargets(s.name, wanted, homeRows(s))
    : sameShape
    ? diffTargets(s.name, wanted, homeRows(s))
    : planTargets(new Int32Array(s.n).fill(-1), new Uint32Array(s.n).fill(1), wanted, homeRows(s)).changes;
  for (const c of done) {
    o.say(
      `${c.kind === "activate" ? "+" : c.kind === "deactivate" ? "-" : "~"} ${
        describeTargetChange(s.name, c)
      }`,
    );
  }
  changes += done.length;

  const ctName = conntrackName(s.name);
  const ct = ctChange(p);
  if (ct === "make") {
    o.say(
      `${p.ctExists ? "~" : "+"} ${ctInitLine(s)}${
        p.ctDiff ? `   (${p.ctDiff}: a new table, its connections are forgotten)` : ""
      }`,
    );
    if (!o.dryRun) {
      const c = s.conntrack!;
      ConntrackShm.create(ctName, {
        capacity: c.capacity,
        ctxSlots: c.contexts,
        ttlMs: c.ttlMs,
        floodPerSecond: c.floodPerSecond,
        scheduler: s.scheduler,
        replace: true,
      });
      if (!p.ctExists) j.cts.push(ctName);
    }
    changes++;
  } else if (ct === "delete") {
    o.say(`- delete ${OWN_DIR_NAME}/${ctName}   (the file has no conntrack for ${s.name})`);
    if (!o.dryRun) Deno.removeSync(ownPath(ctName));
    changes++;
  }
  return changes;
}

/** The queue range of a dataplane command line (`--queue=N` or `--queue=A:B`). */
function queuesOfArgs(args: readonly string[]): { first: number; last: number } | undefined {
  const q = args.find((a) => a.startsWith("--queue="))?.slice(8);
  if (!q) return undefined;
  const [first, last] = q.split(":").map(Number);
  return { first, last: last ?? first };
}

/**
 * The config's files in the shm directory, with their sizes and whether
 * this apply creates them (tables new or replaced; the dataplane's files
 * when it starts; the state when there is none).
 */
function shmFiles(cfg: HostConfig, plans: ServicePlan[], starts: boolean, hasState: boolean): ShmFile[] {
  const files: ShmFile[] = [];
  for (const p of plans) {
    files.push({ name: p.s.name, bytes: TargetShm.bytes(p.s.m, p.s.n), creates: !p.sameShape });
    const c = p.s.conntrack;
    if (c) {
      files.push({
        name: `${OWN_DIR_NAME}/${conntrackName(p.s.name)}`,
        bytes: ConntrackShm.bytes(c.capacity, c.contexts),
        creates: ctChange(p) === "make",
      });
    }
  }
  const d = cfg.dataplane, names = hostNames(cfg);
  if (d.start) {
    const nq = d.queues.last - d.queues.first + 1;
    files.push({ name: names.ftShm, bytes: FRAG_STATS_BYTES, creates: starts && !shmExists(names.ftShm) });
    files.push({ name: `${OWN_DIR_NAME}/${names.counters}`, bytes: countersBytes(nq), creates: starts });
    files.push({ name: TRACE_SHM, bytes: TRACE_SHM_BYTES, creates: starts && !shmExists(TRACE_SHM) });
  }
  // the state file (the dataplane's log grows with what it says; it is not counted)
  files.push({ name: `${OWN_DIR_NAME}/host-${cfg.name}.json`, bytes: 2048, creates: !hasState });
  return files;
}

/**
 * The figures `status` prints for a config: its files' sizes against the
 * room in the shm directory (as apply's `shm:` line).
 */
export function shmStatusLine(cfg: HostConfig): string {
  const plans = cfg.services.map((s) => ({
    s,
    shape: undefined,
    sameShape: true,
    ctExists: true,
    ctDiff: "",
  }));
  return shmLine(shmNeed(shmFiles(cfg, plans, false, true)));
}

/**
 * Takes back what this run added, newest first, each step on its own (one
 * failing does not stop the others). Returns the phrases of what it did.
 */
async function rollBack(j: Journal, plumbingRemoved: number): Promise<string[]> {
  const did: string[] = [];
  const attempt = async (what: string, fn: () => unknown | Promise<unknown>) => {
    try {
      await fn();
      did.push(what);
    } catch (e) {
      did.push(`${what} FAILED (${errorText(e)})`);
    }
  };
  if (j.flows.length > 0 && j.flowAddress !== undefined) {
    await attempt(`deleted flow${j.flows.length > 1 ? "s" : ""} ${j.flows.join(", ")}`, async () => {
      for (const name of j.flows) await applyFlowChange({ kind: "delete", name }, j.flowAddress);
    });
  }
  const removed = plumbingRemoved + (j.plumbing.length > 0 ? await removeObjects(j.plumbing) : 0);
  if (removed > 0) did.push(`removed ${removed} kernel object${removed > 1 ? "s" : ""}`);
  if (j.started) {
    const { program, pid, files } = j.started;
    await attempt(`stopped ${program} pid ${pid}`, () => stopDataplane(pid));
    for (const f of files.top) {
      if (shmExists(f)) await attempt(`deleted ${f}`, () => Deno.removeSync(shmPath(f)));
    }
    for (const f of files.own) {
      if (ownExists(f)) await attempt(`deleted ${OWN_DIR_NAME}/${f}`, () => Deno.removeSync(ownPath(f)));
    }
  }
  for (const t of [...j.targets].reverse()) {
    await attempt(`restored the targets of ${t.name}`, () => {
      applyTargets(t.name, t.before);
    });
  }
  for (const name of [...j.cts].reverse()) {
    await attempt(`deleted ${OWN_DIR_NAME}/${name}`, () => Deno.removeSync(ownPath(name)));
  }
  for (const name of [...j.tables].reverse()) {
    await attempt(`deleted ${name}`, () => Deno.removeSync(shmPath(name)));
  }
  // restored targets that did not change are no news
  return did;
}

/**
 * Applies `cfg`. Returns the number of changes (made, or with dryRun to be
 * made). Throws one line on the first failure: a refusal of the checks
 * (nothing was changed), or a failed step after which what this run added
 * was taken back (the line says what).
 *
 * @example
 * ```ts
 * const cfg = await loadHostConfig("host.yaml");
 * const n = await applyHost(cfg, { file: "host.yaml", say: console.log });
 * if (n === 0) console.log("nothing to change");
 * ```
 */
export async function applyHost(cfg: HostConfig, o: ApplyOptions): Promise<number> {
  // a dry run changes nothing: it never waits for another apply (host/host_lock.ts)
  if (o.dryRun) return await applyHostLocked(cfg, o);
  return await withHostLock(`apply ${cfg.name}`, () => applyHostLocked(cfg, o));
}

async function applyHostLocked(cfg: HostConfig, o: ApplyOptions): Promise<number> {
  const admin = o.admin ?? cfg.admin.address;
  const claims = claimsOf(cfg, admin);
  const names = hostNames(cfg);
  const d = cfg.dataplane;
  const args = dataplaneArgs(cfg);
  const log = logPath(cfg.name);
  const spec = plumbingSpecOf(cfg);

  // what is there (read only)
  const plans = cfg.services.map(planService);
  const ctChanged = plans.some((p) => ctChange(p) !== "none");
  const old = readState(cfg.name);
  const oldRunning = old !== undefined && old.program !== null && isDataplane(old.pid, old.program, old.args);
  const same = oldRunning && old.program === d.program && old.args.join(" ") === args.join(" ");
  // its fragment stats or counters removed under it (by hand, or by an older teardown of another config)
  const filesGone = oldRunning && (!shmExists(old.ftShm) || !ownExists(countersShmName(old.ftShm)));
  const stopOld = oldRunning && (!same || ctChanged || !d.start || filesGone);
  const startNew = d.start && (!oldRunning || stopOld);

  // what it will need, before any change
  const need = preflight({
    file: o.label ?? o.file,
    name: cfg.name,
    claims,
    commands: [...plumbingCommands(spec), ...(startNew ? ["sh"] : [])],
    files: shmFiles(cfg, plans, startNew, old !== undefined),
    bindsQueues: startNew ? d.queues : undefined,
    ownQueues: oldRunning ? queuesOfArgs(old.args) : undefined,
    dryRun: o.dryRun,
  });
  o.say(shmLine(need));

  const j: Journal = {
    tables: [],
    cts: [],
    targets: [],
    started: undefined,
    stopped: undefined,
    plumbing: [],
    flows: [],
    flowAddress: undefined,
  };
  const services = cfg.services.map((s) => s.name);
  // services the file no longer has stay recorded until their tables are deleted (last), so that a
  // failure in between leaves them to the next apply or to teardown
  const kept = new Set([names.ftShm, ...services]);
  const gone = (old?.services ?? []).filter((n) => !kept.has(n));
  let state: HostState = {
    version: 1,
    name: cfg.name,
    file: o.file,
    program: oldRunning ? old.program : null,
    args: oldRunning ? old.args : [],
    pid: oldRunning ? old.pid : null,
    log,
    services: [...services, ...gone],
    ftShm: oldRunning ? old.ftShm : names.ftShm,
    // while it runs, what the old config and the new one hold: teardown then removes either
    claims: old ? unionClaims(stateClaims(old), claims) : claims,
    applying: { pid: Deno.pid, since: new Date().toISOString(), file: o.file },
  };
  const record = (s: Partial<HostState>) => {
    state = { ...state, ...s };
    if (!o.dryRun) writeState(state);
  };
  record({});

  let changes = 0;
  let plumbingRemoved = 0;
  try {
    for (const p of plans) changes += applyService(p, o, j);

    // the dataplane: started (or restarted when its command line, a table it maps, or its files changed)
    if (stopOld) {
      const why = !d.start
        ? "the file does not start it"
        : !same
        ? "its options changed"
        : ctChanged
        ? "its connection table changed"
        : `its shm files are gone (${old.ftShm}, ${OWN_DIR_NAME}/${old.ftShm}-counters)`;
      o.say(`- stop ${old.program} ${old.args.join(" ")}   (pid ${old.pid}; ${why})`);
      if (!o.dryRun) {
        await stopDataplane(old.pid!);
        j.stopped = { program: old.program!, pid: old.pid! };
        record({ program: null, args: [], pid: null });
      }
      changes++;
    }
    let pid: number | null = oldRunning && !stopOld ? old.pid : null;
    if (startNew) {
      if (!o.dryRun) {
        ensureOwnDir(); // the log file's directory
        // the files it makes at start that are not there now are this run's (the host-wide trace shm is not)
        const files = {
          top: shmExists(names.ftShm) ? [] : [names.ftShm],
          own: ownExists(names.counters) ? [] : [names.counters],
        };
        pid = await startDataplane(d.program, args, {
          log,
          env: dataplaneEnv(cfg),
          queues: d.queues.last - d.queues.first + 1,
          onSpawn: (p) => {
            j.started = { program: d.program, pid: p, files };
            record({ program: d.program, args, pid: p, ftShm: names.ftShm });
          },
        });
      }
      o.say(`+ start ${d.program} ${args.join(" ")}${pid ? `   (pid ${pid}, log ${log})` : ""}`);
      changes++;
    }

    // kernel plumbing (after the dataplane has bound its queues, so nothing waits for it)
    const p = await applyPlumbing(spec, { dryRun: o.dryRun });
    j.plumbing = p.addedObjects;
    for (const l of p.removed) o.say(`- ${l}`);
    for (const l of p.added) o.say(`+ ${l}`);
    changes += p.added.length + p.removed.length;

    // flows, by diff with what the running flowlb has
    if (d.program === "flowlb") {
      const address = names.flowAddress!;
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
        // a flowlb this run started is stopped on a failure, and its flows with it
        if (!j.started) j.flowAddress = address;
        for (const c of planFlows(have, cfg.flows)) {
          o.say(
            c.kind === "set"
              ? `${c.replaces ? "~" : "+"} ${flowSetLine(c.request)}`
              : `- flow-delete --name=${c.name}`,
          );
          if (!o.dryRun) {
            await applyFlowChange(c, address);
            if (c.kind === "set" && !c.replaces) j.flows.push(c.name);
          }
          changes++;
        }
      }
    }
  } catch (e) {
    if (o.dryRun) throw e;
    let detail: string;
    if (e instanceof PlumbingApplyError) {
      detail = e.detail;
      plumbingRemoved = e.removedCount;
    } else detail = e instanceof NfqlbError ? e.message : errorText(e);
    const did = await rollBack(j, plumbingRemoved);
    // the record: as before this run (its dataplane as it is now), or none when there was none
    if (!old) removeState(cfg.name);
    else {
      const running = old.program !== null && isDataplane(old.pid, old.program, old.args);
      writeState({ ...old, ...(running ? {} : { program: null, args: [], pid: null }) });
    }
    const stopped = j.stopped
      ? `; the ${j.stopped.program} it replaced (pid ${j.stopped.pid}) is stopped: apply the previous file to start it again`
      : "";
    throw new NfqlbError(
      `${detail}; ${
        did.length > 0 ? `rolled back what this apply added: ${did.join(", ")}` : "it had added nothing"
      }${stopped}`,
    );
  }

  // applied; tables of services removed from the file go last, once no flow selects them and the lb has
  // moved on: they stay recorded until they are gone, so a failure here leaves them to apply or teardown
  // and so do the files of a dataplane it stopped that the new one does not use (another ft_shm, or none
  // started): an earlier version's `ftshm` and `.nfqlb-deno/ftshm-counters`, for one
  const oldFiles = stopOld && !claims.shm.includes(old.ftShm) ? [old.ftShm] : [];
  const { applying: _done, ...applied } = state;
  if (!o.dryRun && gone.length + oldFiles.length > 0) {
    writeState({
      ...applied,
      claims: {
        ...claims,
        shm: [...claims.shm, ...gone, ...oldFiles],
        own: [...claims.own, ...gone.map(conntrackName), ...oldFiles.map(countersShmName)],
      },
    });
  }
  const othersHold = new Set(
    oldFiles.length > 0
      ? othersClaims(cfg.name).flatMap((c) => [...c.shm, ...c.own.map((f) => `/${f}`)])
      : [],
  );
  for (const ft of oldFiles) {
    const why = `   (the files of the ${old!.program} it stopped)`;
    if (shmExists(ft) && !othersHold.has(ft)) {
      o.say(`- delete --shm=${ft}${why}`);
      if (!o.dryRun) Deno.removeSync(shmPath(ft));
      changes++;
    }
    const counters = countersShmName(ft);
    if (ownExists(counters) && !othersHold.has(`/${counters}`)) {
      o.say(`- delete ${OWN_DIR_NAME}/${counters}${why}`);
      if (!o.dryRun) Deno.removeSync(ownPath(counters));
      changes++;
    }
  }
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
  if (!o.dryRun) writeState({ ...applied, services, claims });
  return changes;
}
