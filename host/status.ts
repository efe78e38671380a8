/**
 * `nfqlb status`: one human view of a host against a config — tables and
 * targets with weights, connection tables, the dataplane process and its
 * queues, flows, kernel rules — with every difference from the file marked
 * `!` and counted.
 */
import type { HostConfig, ServiceConfig } from "./config/types.ts";
import { conntrackName, ConntrackShm } from "../core/conntrack_shm.ts";
import { countersShmName, kernelQueues } from "../core/counters_shm.ts";
import { errorText } from "../core/errors.ts";
import { statusPlumbing } from "./plumbing/kernel_sync.ts";
import { OWN_DIR_NAME, ownExists, shmExists } from "../core/shm_dir.ts";
import { TargetShm } from "../core/target_shm.ts";
import { tableDigest } from "../core/table_digest.ts";
import { alive, dataplaneArgs, isDataplane } from "./dataplane_process.ts";
import { shmStatusLine } from "./apply.ts";
import { claimsOf } from "./claims.ts";
import { hostNames } from "./names.ts";
import { clashWithOthers } from "./preflight.ts";
import { listFlows, planFlows } from "./flow_sync.ts";
import { plumbingSpecOf } from "./plumbing_spec.ts";
import { readState, stateClaims } from "./state.ts";
import { type HealthRecord, readHealthRecord, type TargetRecord } from "./health/record.ts";
import { readBgpRecord } from "./bgp/speaker.ts";

/** What {@link hostStatus} found. */
export interface HostStatus {
  /** The view, line by line. */
  lines: string[];
  /** Differences from the file (0: the host matches it). */
  drift: number;
  /** The same, for scripts (`status --json`; snake_case keys). */
  json: StatusJson;
}

/** One target of a service as `status --json` shows it. */
export interface TargetStatusJson {
  fwmark: number;
  /** Weight in the table; null: not in it. */
  weight: number | null;
  /** What the file says. */
  file_active: boolean;
  file_weight: number;
  /** The health record of `nfqlb run` (null: no check). */
  health: {
    up: boolean;
    since: string;
    type: string;
    checks: number;
    last_error: string | null;
    effect: string | null;
  } | null;
}

/** One service (target table) as `status --json` shows it. */
export interface ServiceStatusJson {
  name: string;
  /** The table's size; null: no readable table. */
  m: number | null;
  n: number | null;
  /** The table's digest (core/table_digest.ts; equal on LB hosts that agree); null: no readable table. */
  digest: string | null;
  panic: boolean;
  targets: TargetStatusJson[];
  /** Rows in the table that the file does not have. */
  extra_targets: { fwmark: number; weight: number }[];
  conntrack: {
    entries: number;
    capacity: number;
    scheduler: string;
    hit_ratio: number | null;
    recycled: number;
    flood_skipped: number;
  } | null;
}

/** `status --json` of one config. */
export interface StatusJson {
  config: string;
  file: string;
  /** The host matches the file (no differences). */
  matches: boolean;
  /** Every difference, as the `!` lines say it. */
  differences: string[];
  services: ServiceStatusJson[];
  dataplane: { program: string; args: string[]; pid: number; log: string } | null;
  queues: { queue: number; packets: number; waiting: number; queue_dropped: number; user_dropped: number }[];
  flows: string[];
  kernel: { present: number; missing: number; extra: number };
  /** With a `bgp:` section: what the `nfqlb run` serving the config announces (null: none runs, or no bgp). */
  bgp: BgpStatusJson | null;
}

/** `status --json`'s BGP part (docs/tier.md). */
export interface BgpStatusJson {
  bird: string;
  bird_pid: number | null;
  router_id: string;
  run_pid: number;
  sessions: { peer: string; protocol: string; up: boolean; info: string }[];
  vips: { vip: string; service: string; announced: boolean; since: string; reason: string | null }[];
}

/** `  health up since 10:00:01 (tcp, 120 checks)` / `down since …: why` of a target, or "". */
function healthText(h: TargetRecord | undefined): string {
  if (!h) return "";
  const since = new Date(h.since).toISOString();
  const err = !h.up && h.lastError ? `: ${h.lastError}` : "";
  const last = h.up && h.lastError ? `; last error: ${h.lastError}` : "";
  const panic = h.effect === "panic" ? " (panic guard: kept in)" : "";
  return `  health ${
    h.up ? "up" : "down"
  } since ${since}${panic} (${h.type}, ${h.checks} checks)${err}${last}`;
}

async function serviceLines(
  s: ServiceConfig,
  out: string[],
  health: HealthRecord | undefined,
  diffs: string[],
  json: ServiceStatusJson[],
): Promise<number> {
  let drift = 0;
  const bad = (l: string) => {
    out.push(`  ! ${l}`);
    diffs.push(l);
    drift++;
  };
  const doc: ServiceStatusJson = {
    name: s.name,
    m: null,
    n: null,
    digest: null,
    panic: health?.services[s.name]?.panic ?? false,
    targets: [],
    extra_targets: [],
    conntrack: null,
  };
  json.push(doc);
  if (!shmExists(s.name)) {
    bad(`service ${s.name}: no target table (file: M=${s.m} N=${s.n})`);
    return drift;
  }
  let t: TargetShm;
  try {
    t = TargetShm.open(s.name);
  } catch (e) {
    bad(`service ${s.name}: ${errorText(e)}`);
    return drift;
  }
  try {
    doc.m = t.M;
    doc.n = t.N;
    const snap = t.snapshot(0);
    // the digest: LB hosts of a tier compare it (docs/tier.md)
    const digest = await tableDigest({ M: t.M, N: t.N, active: snap.active, weights: snap.weights });
    out.push(
      `  service ${s.name}: M=${t.M} N=${t.N}, ${s.vips.map((v) => v.cidr).join(" ")}, digest ${digest}`,
    );
    doc.digest = digest;
    if (t.M !== s.m || t.N !== s.n) bad(`table size M=${t.M} N=${t.N}, the file says M=${s.m} N=${s.n}`);
    const rows = new Map<number, number>();
    snap.active.forEach((fw, i) => fw >= 0 && rows.set(fw, snap.weights[i]));
    const hs = health?.services[s.name]?.targets ?? {};
    if (health?.services[s.name]?.panic) {
      out.push(`    health: panic: every target fails its check; all are kept in the table`);
    }
    for (const tg of s.targets) {
      const h = hs[String(tg.fwmark)];
      const addr = [tg.ipv4, tg.ipv6].filter((a) => a !== null).join(" ");
      const snat = tg.snat ? ` snat ${[tg.snat.ipv4, tg.snat.ipv6].filter((a) => a !== null).join(" ")}` : "";
      const where = `${tg.mode}${tg.port !== null ? ` port ${tg.port}` : ""} ${addr}${snat}`;
      const w = rows.get(tg.fwmark);
      rows.delete(tg.fwmark);
      doc.targets.push({
        fwmark: tg.fwmark,
        weight: w ?? null,
        file_active: tg.active,
        file_weight: tg.weight,
        health: h
          ? {
            up: h.up,
            since: new Date(h.since).toISOString(),
            type: h.type,
            checks: h.checks,
            last_error: h.lastError ?? null,
            effect: h.effect ?? null,
          }
          : null,
      });
      const ht = healthText(h);
      // what the health checks of a running `nfqlb run` did is no drift from the file
      if (tg.active && h?.effect === "removed" && w === undefined) {
        out.push(`    target ${tg.fwmark}  out of the table (health check)  ${where}${ht}`);
      } else if (tg.active && h?.effect === "drained" && w === 0) {
        out.push(`    target ${tg.fwmark}  weight 0 (drained by its health check)  ${where}${ht}`);
      } else if (!tg.active) {
        if (w === undefined) out.push(`    target ${tg.fwmark}  inactive (as the file says)  ${where}`);
        else bad(`target ${tg.fwmark}  active (weight ${w}), the file says inactive`);
      } else if (w === undefined) bad(`target ${tg.fwmark}  not in the table  ${where}`);
      else if (w !== tg.weight) bad(`target ${tg.fwmark}  weight ${w}, the file says ${tg.weight}`);
      else out.push(`    target ${tg.fwmark}  weight ${w}${w === 0 ? " (draining)" : ""}  ${where}${ht}`);
    }
    for (const [fw, w] of rows) {
      doc.extra_targets.push({ fwmark: fw, weight: w });
      bad(`target ${fw}  weight ${w}: in the table, not in the file`);
    }
  } finally {
    t.close();
  }
  const ctName = conntrackName(s.name);
  if (s.conntrack) {
    if (!ownExists(ctName)) bad(`connection table ${ctName} missing`);
    else {
      const ct = ConntrackShm.open(ctName);
      try {
        const st = ct.stats();
        const looked = st.hits + st.misses;
        doc.conntrack = {
          entries: st.entries,
          capacity: st.capacity,
          scheduler: ct.scheduler,
          hit_ratio: looked ? st.hits / looked : null,
          recycled: st.recycles,
          flood_skipped: st.floodSkips,
        };
        out.push(
          `    conntrack: ${st.entries}/${st.capacity} entries, scheduler ${ct.scheduler}, hit ratio ${
            looked ? (st.hits / looked).toFixed(3) : "-"
          }, ${st.recycles} recycled, ${st.floodSkips} flood-skipped`,
        );
      } finally {
        ct.close();
      }
    }
  } else if (ownExists(ctName)) bad(`connection table ${ctName} exists, the file has none`);
  return drift;
}

/**
 * The BGP part (docs/tier.md), from the record of the `nfqlb run` that
 * serves the config: its BIRD, each session, each VIP announced or
 * withdrawn and why. Informative: what BGP says is no difference from the
 * file.
 */
function bgpLines(cfg: HostConfig, out: string[]): BgpStatusJson | null {
  const r = readBgpRecord(cfg.name);
  if (!r) {
    out.push(`  bgp: nothing announced (no nfqlb run serves ${cfg.name})`);
    return null;
  }
  const bird = r.bird === "supervised" ? `bird pid ${r.birdPid ?? "- (restarting)"}` : "system BIRD";
  out.push(`  bgp: ${bird}, router id ${r.routerId}, nfqlb run pid ${r.pid}`);
  for (const x of r.sessions) {
    out.push(`    session ${x.peer} (${x.protocol}): ${x.up ? "up" : "down"}, ${x.info}`);
  }
  for (const v of r.vips) {
    const since = new Date(v.since).toISOString();
    out.push(
      `    vip ${v.vip} (${v.service}): ${
        v.announced ? `announced since ${since}` : `withdrawn since ${since}: ${v.reason}`
      }`,
    );
  }
  return {
    bird: r.bird,
    bird_pid: r.birdPid ?? null,
    router_id: r.routerId,
    run_pid: r.pid,
    sessions: r.sessions.map((x) => ({ peer: x.peer, protocol: x.protocol, up: x.up, info: x.info })),
    vips: r.vips.map((v) => ({
      vip: v.vip,
      service: v.service,
      announced: v.announced,
      since: new Date(v.since).toISOString(),
      reason: v.announced ? null : v.reason ?? null,
    })),
  };
}

/**
 * The status of this host against `cfg`.
 *
 * @example
 * ```ts
 * const st = await hostStatus(await loadHostConfig("host.yaml"));
 * console.log(st.lines.join("\n"));
 * ```
 */
export async function hostStatus(cfg: HostConfig, file: string): Promise<HostStatus> {
  const out: string[] = [`config ${cfg.name} (${file})`];
  const json: StatusJson = {
    config: cfg.name,
    file,
    matches: false,
    differences: [],
    services: [],
    dataplane: null,
    queues: [],
    flows: [],
    kernel: { present: 0, missing: 0, extra: 0 },
    bgp: null,
  };
  let drift = 0;
  const bad = (l: string) => {
    out.push(`  ! ${l}`);
    json.differences.push(l);
    drift++;
  };
  const health = readHealthRecord(cfg.name);
  const st = readState(cfg.name);
  if (st?.applying) {
    const a = st.applying;
    if (alive(a.pid)) out.push(`  apply in progress: pid ${a.pid} since ${a.since} (${a.file})`);
    else {
      bad(
        `an apply of ${a.file} (pid ${a.pid}, ${a.since}) was interrupted: nfqlb apply -f ${a.file} finishes it, nfqlb teardown -f ${a.file} removes what it left`,
      );
      const c = stateClaims(st);
      const left = [
        ...c.shm.filter((f) => shmExists(f)),
        ...c.own.filter((f) => ownExists(f)).map((f) => `${OWN_DIR_NAME}/${f}`),
        ...(st.program !== null && isDataplane(st.pid, st.program, st.args)
          ? [`${st.program} pid ${st.pid}`]
          : []),
      ];
      out.push(
        `    left by it: ${
          left.length > 0 ? left.join(", ") : "no files, no dataplane"
        } (and its kernel rules)`,
      );
    }
  }
  try {
    out.push(`  ${shmStatusLine(cfg)}`);
  } catch (e) {
    bad(`shm: ${errorText(e)}`);
  }
  const names = hostNames(cfg);
  // run may serve elsewhere (--admin): the address its apply recorded
  const admin = st?.claims?.addresses.find((a) => a.what === "admin")?.address ?? cfg.admin.address;
  out.push(
    `  names: ft_shm ${names.ftShm}, trace ${names.traceAddress}${
      names.flowAddress ? `, flows ${names.flowAddress}` : ""
    }${names.metrics ? `, metrics ${names.metrics}` : ""}, admin ${admin}`,
  );
  const clash = clashWithOthers(cfg.name, claimsOf(cfg, admin));
  if (clash) bad(clash);
  for (const s of cfg.services) drift += await serviceLines(s, out, health, json.differences, json.services);

  const d = cfg.dataplane;
  const args = dataplaneArgs(cfg);
  const running = st !== undefined && st.program !== null && isDataplane(st.pid, st.program, st.args);
  if (running) {
    const line = `${st.program} ${st.args.join(" ")}`;
    json.dataplane = { program: st.program!, args: st.args, pid: st.pid!, log: st.log };
    if (st.program !== d.program || st.args.join(" ") !== args.join(" ")) {
      bad(`dataplane: pid ${st.pid} runs ${line}; the file says ${d.program} ${args.join(" ")}`);
    } else out.push(`  dataplane: ${line}, pid ${st.pid}, log ${st.log}`);
    // its files, removed under it (by hand, or by an older teardown of another config): apply restarts it
    const gone = [
      ...(shmExists(st.ftShm) ? [] : [st.ftShm]),
      ...(ownExists(countersShmName(st.ftShm)) ? [] : [`${OWN_DIR_NAME}/${countersShmName(st.ftShm)}`]),
    ];
    if (gone.length > 0) bad(`dataplane: its ${gone.join(" and ")} ${gone.length > 1 ? "are" : "is"} gone`);
  } else if (d.start) bad(`dataplane: ${d.program} not running (apply starts it)`);
  else out.push(`  dataplane: not started by apply (dataplane.start: false)`);
  const queues = new Map(kernelQueues().map((q) => [q.queue, q]));
  for (let q = d.queues.first; q <= d.queues.last; q++) {
    const k = queues.get(q);
    if (!k) {
      if (running) bad(`queue ${q}: not bound`);
      continue;
    }
    json.queues.push({
      queue: q,
      packets: k.idSequence,
      waiting: k.waiting,
      queue_dropped: k.queueDropped,
      user_dropped: k.userDropped,
    });
    out.push(
      `    queue ${q}: ${k.idSequence} packets, ${k.waiting} waiting, ${k.queueDropped} dropped (full), ${k.userDropped} dropped (user)`,
    );
  }

  if (d.program === "flowlb" && running) {
    try {
      const have = await listFlows(d.options.flowAddress);
      const changes = planFlows(have, cfg.flows);
      for (const f of cfg.flows) {
        if (!changes.some((c) => c.name === f.name)) {
          out.push(`    flow ${f.name} -> ${f.service}`);
          json.flows.push(f.name);
        }
      }
      for (const c of changes) {
        bad(
          c.kind === "delete"
            ? `flow ${c.name}: in flowlb, not in the file`
            : `flow ${c.name}: ${c.replaces ? "differs from" : "missing, in"} the file`,
        );
      }
    } catch (e) {
      bad(`flows: ${errorText(e)}`);
    }
  }

  if (cfg.bgp) json.bgp = bgpLines(cfg, out);

  const p = await statusPlumbing(plumbingSpecOf(cfg));
  json.kernel = { present: p.present.length, missing: p.missing.length, extra: p.extra.length };
  out.push(
    `  kernel: ${p.present.length} rules and routes present, ${p.missing.length} missing, ${p.extra.length} extra`,
  );
  if (p.present.length === 0 && p.missing.length > 0) {
    bad(`kernel: none of the ${p.missing.length} rules and routes`);
  } else for (const l of p.missing) bad(`missing: ${l}`);
  for (const l of p.extra) bad(`extra:   ${l}`);
  out.push(
    drift === 0
      ? `the host matches ${file}`
      : `${drift} difference${drift === 1 ? "" : "s"} from ${file} (nfqlb apply -f ${file} fixes them)`,
  );
  json.matches = drift === 0;
  return { lines: out, drift, json };
}
