/**
 * The health checks of `nfqlb run` (docs/health.md): checks every target
 * that has a `health` section on its schedule (scheduler.ts), keeps each
 * one's up/down with rise/fall (state.ts), and puts what that means into
 * the target tables through the same path as apply, activate and
 * deactivate (applyTargets: one TargetShm.update commit per change):
 * a down target is removed or drained, unless the panic guard keeps the
 * service's targets in. Every transition is one log line; the record file
 * (record.ts) tells `nfqlb status`; {@link HealthMonitor.metrics} renders
 * the Prometheus families.
 */
import type { HostConfig, ServiceConfig } from "../config/types.ts";
import { errorText } from "../../core/errors.ts";
import { applyTargets, describeTargetChange, homeRows, type WantedTarget } from "../target_sync.ts";
import { checkIdentity, checkTargets, startCheck } from "./check.ts";
import { type HealthRecord, removeHealthRecord, type TargetRecord, writeHealthRecord } from "./record.ts";
import { Scheduler } from "./scheduler.ts";
import { Poller } from "./sock.ts";
import { closeIdleSockets } from "./tcp.ts";
import { type Effect, serviceView, TargetHealth, type Transition } from "./state.ts";
import type { CheckResult, CheckTarget } from "./types.ts";

/** Where the monitor's events go (the agent's log). */
export interface HealthLog {
  notice(msg: string, fields?: Record<string, string | number | boolean>): void;
  warning(msg: string, fields?: Record<string, string | number | boolean>): void;
  info(msg: string, fields?: Record<string, string | number | boolean>): void;
}

/** Upper bounds (s) of the check latency histogram. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

interface Tracked {
  target: CheckTarget & { intervalMs: number };
  identity: string;
  state: TargetHealth;
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

/** The health checks of one config; see the module comment. */
export class HealthMonitor {
  #cfg: HostConfig;
  readonly #log: HealthLog;
  readonly #poller = new Poller();
  readonly #scheduler: Scheduler<CheckTarget & { intervalMs: number }>;
  #tracked = new Map<string, Tracked>();
  #panic = new Set<string>();
  /** Per service: the latency histogram (bucket counts, sum, count). */
  #latency = new Map<string, { buckets: number[]; sum: number; count: number }>();
  #recordDirty = false;
  /** Checks ran since the record was written (counts and last check only: written with the 2 s reassert). */
  #countsDirty = false;
  #recordTimer: ReturnType<typeof setTimeout> | undefined;
  #reassertTimer: ReturnType<typeof setInterval> | undefined;
  #started = false;
  #firstRound = false;
  #stopped = false;

  constructor(cfg: HostConfig, log: HealthLog) {
    this.#cfg = cfg;
    this.#log = log;
    this.#scheduler = new Scheduler((t, done) => this.#checkOnce(t, done), {
      afterTick: () => this.#poller.flush(),
    });
    this.update(cfg);
  }

  /** Whether any target of the config is checked. */
  get active(): boolean {
    return this.#tracked.size > 0;
  }

  /**
   * A new config (a reload): targets checked the same way as before keep
   * their health; new or changed ones start up, as configured.
   */
  update(cfg: HostConfig): void {
    this.#cfg = cfg;
    const next = new Map<string, Tracked>();
    const now = Date.now();
    for (const t of checkTargets(cfg)) {
      const identity = checkIdentity(t);
      const old = this.#tracked.get(t.key);
      // checked the same way: the same target object, so a check under way across the reload still counts
      if (old && old.identity === identity) next.set(t.key, old);
      else {
        const target = { ...t, intervalMs: t.health.intervalMs };
        next.set(t.key, { target, identity, state: new TargetHealth(t.health.rise, t.health.fall, now) });
      }
    }
    this.#tracked = next;
    this.#scheduler.set([...next.values()].map((x) => x.target));
    // readiness is the first round at start only: a reload's new targets start up, as configured, and
    // /ready does not turn 503 for them
    this.#markDirty();
  }

  /**
   * Starts checking (the first round at once); resolves when the first
   * round is done. Start it also when nothing is checked yet: a reload may
   * add checks.
   */
  async start(): Promise<void> {
    this.#started = true;
    this.#scheduler.start();
    this.#reassertTimer = setInterval(() => this.#reassert(), 2000);
    await this.#scheduler.firstRound();
    if (this.#stopped) return;
    this.#firstRound = true;
    this.#writeRecord();
    if (this.active) {
      const down = [...this.#tracked.values()].filter((x) => !x.state.up).length;
      this.#log.notice(`health: first round done: ${this.#tracked.size - down} up, ${down} down`);
    }
  }

  /** Stops checking and removes the record. */
  stop(): void {
    this.#stopped = true;
    this.#scheduler.stop();
    this.#poller.close();
    closeIdleSockets();
    if (this.#recordTimer !== undefined) clearTimeout(this.#recordTimer);
    if (this.#reassertTimer !== undefined) clearInterval(this.#reassertTimer);
    removeHealthRecord(this.#cfg.name);
  }

  /** The first round of checks is done (or nothing is checked). */
  get ready(): boolean {
    return !this.active || this.#firstRound;
  }

  #health(service: string): (fwmark: number) => TargetHealth | undefined {
    return (fw) => this.#tracked.get(`${service}/${fw}`)?.state;
  }

  /** Whether service `name` is in panic: every target that carries traffic fails its check (docs/tier.md withdraws it). */
  panic(name: string): boolean {
    const s = this.#cfg.services.find((x) => x.name === name);
    return s !== undefined && serviceView(s, this.#health(s.name)).panic;
  }

  /** The rows health wants for service `s` (what apply writes instead of the file's own list). */
  wanted(s: ServiceConfig): WantedTarget[] {
    return serviceView(s, this.#health(s.name)).wanted;
  }

  #checkOnce(t: CheckTarget, done: () => void): void {
    try {
      startCheck(t, this.#poller, (r) => {
        try {
          this.#result(t, r);
        } finally {
          done();
        }
      });
    } catch (e) {
      // startCheck does not throw; should it, the target's schedule must go on
      this.#result(t, { ok: false, error: errorText(e), ms: 0 });
      done();
    }
  }

  #result(t: CheckTarget, r: CheckResult): void {
    if (this.#stopped) return;
    const x = this.#tracked.get(t.key);
    if (!x || x.target !== t) return; // reloaded meanwhile: this result belongs to an old definition
    this.#observe(t.service, r.ms / 1000);
    const hadError = x.state.lastError;
    const tr = x.state.record(r.ok, r.error, r.ms, Date.now());
    if (tr) this.#transition(x, tr, r);
    else if (hadError !== x.state.lastError) this.#markDirty();
    else this.#countsDirty = true;
  }

  #observe(service: string, seconds: number): void {
    let h = this.#latency.get(service);
    if (!h) this.#latency.set(service, h = { buckets: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 });
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) if (seconds <= LATENCY_BUCKETS[i]) h.buckets[i]++;
    h.sum += seconds;
    h.count++;
  }

  #transition(x: Tracked, tr: Transition, r: CheckResult): void {
    const t = x.target, h = t.health;
    const s = this.#cfg.services.find((s) => s.name === t.service);
    if (!s) return;
    const view = serviceView(s, this.#health(s.name));
    const effect = view.effects.get(t.fwmark);
    const what = tr === "down"
      ? `target ${t.key} down after ${h.fall} failed check${h.fall > 1 ? "s" : ""}: ${r.error}`
      : `target ${t.key} up after ${h.rise} passed check${h.rise > 1 ? "s" : ""}`;
    const action = effectText(effect, tr);
    const fields = { service: t.service, target: t.fwmark, ms: Math.round(r.ms) };
    if (tr === "down") this.#log.warning(`${what}; ${action}`, fields);
    else this.#log.notice(`${what}; ${action}`, fields);
    const wasPanic = this.#panic.has(s.name);
    if (view.panic && !wasPanic) {
      this.#panic.add(s.name);
      this.#log.warning(
        `health: panic: every target of ${s.name} fails its check; all are kept in the table ` +
          `(traffic to a possibly alive target beats a certain black hole)`,
        { service: s.name },
      );
    } else if (!view.panic && wasPanic) {
      this.#panic.delete(s.name);
      this.#log.notice(
        `health: panic over for ${s.name}: a target passes again; down targets leave the table`,
        {
          service: s.name,
        },
      );
    }
    this.#writeRecord();
    this.#applyService(s, view.wanted);
  }

  #applyService(s: ServiceConfig, wanted: WantedTarget[]): void {
    try {
      // home rows: a target that comes back takes its own row, as on every host of a tier (docs/tier.md)
      for (const c of applyTargets(s.name, wanted, homeRows(s))) {
        this.#log.info(`health: ${describeTargetChange(s.name, c)}`);
      }
    } catch (e) {
      // the table may be missing while the dataplane restarts: the restart's apply writes our rows
      this.#log.warning(`health: cannot update ${s.name}: ${errorText(e)}`);
    }
  }

  /** Puts health's rows back when something else (an `nfqlb apply`, `activate`) changed them. */
  #reassert(): void {
    if (!this.active || this.#stopped) return;
    // status's check counts and last check: every 2 s, not per check (1000 targets would be 1000 writes a second)
    if (this.#countsDirty && this.#firstRound) this.#writeRecord();
    for (const s of this.#cfg.services) {
      if (!s.targets.some((t) => t.health)) continue;
      this.#applyService(s, this.wanted(s));
    }
  }

  #markDirty(): void {
    this.#recordDirty = true;
    if (this.#recordTimer !== undefined || !this.#started || this.#stopped) return;
    this.#recordTimer = setTimeout(() => {
      this.#recordTimer = undefined;
      if (this.#recordDirty) this.#writeRecord();
    }, 1000);
  }

  /** The record as `nfqlb status` reads it. */
  record(): HealthRecord {
    const services: HealthRecord["services"] = {};
    for (const s of this.#cfg.services) {
      const view = serviceView(s, this.#health(s.name));
      const targets: Record<string, TargetRecord> = {};
      for (const t of s.targets) {
        const x = this.#tracked.get(`${s.name}/${t.fwmark}`);
        if (!x) continue;
        const st = x.state;
        targets[String(t.fwmark)] = {
          up: st.up,
          since: st.since,
          lastError: st.lastError,
          lastCheck: st.lastCheck,
          lastMs: Math.round(st.lastMs * 10) / 10,
          effect: view.effects.get(t.fwmark) ?? "in",
          type: x.target.health.type,
          checks: st.totals.pass + st.totals.fail,
        };
      }
      if (Object.keys(targets).length > 0) services[s.name] = { panic: view.panic, targets };
    }
    return { version: 1, pid: Deno.pid, time: Date.now(), firstRound: this.#firstRound, services };
  }

  #writeRecord(): void {
    this.#recordDirty = false;
    this.#countsDirty = false;
    if (!this.active) {
      removeHealthRecord(this.#cfg.name);
      return;
    }
    try {
      writeHealthRecord(this.#cfg.name, this.record());
    } catch (e) {
      this.#log.warning(`health: cannot write the record for status: ${errorText(e)}`);
    }
  }

  /** The Prometheus text of the health metrics (empty when nothing is checked). */
  metrics(): string {
    if (!this.active) return "";
    const out: string[] = [];
    const family = (name: string, type: string, help: string) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    const lbl = (x: Tracked) => `table="${esc(x.target.service)}",target="${x.target.fwmark}"`;
    const all = [...this.#tracked.values()];
    family("nfqlb_target_up", "gauge", "1 while the target passes its health check (rise/fall applied).");
    for (const x of all) out.push(`nfqlb_target_up{${lbl(x)}} ${x.state.up ? 1 : 0}`);
    family("nfqlb_health_checks_total", "counter", "Health checks of a target, by result (pass, fail).");
    for (const x of all) {
      out.push(`nfqlb_health_checks_total{${lbl(x)},result="pass"} ${x.state.totals.pass}`);
      out.push(`nfqlb_health_checks_total{${lbl(x)},result="fail"} ${x.state.totals.fail}`);
    }
    family("nfqlb_health_check_duration_seconds", "histogram", "Latency of the health checks, per table.");
    for (const [svc, h] of this.#latency) {
      LATENCY_BUCKETS.forEach((b, i) =>
        out.push(`nfqlb_health_check_duration_seconds_bucket{table="${esc(svc)}",le="${b}"} ${h.buckets[i]}`)
      );
      out.push(`nfqlb_health_check_duration_seconds_bucket{table="${esc(svc)}",le="+Inf"} ${h.count}`);
      out.push(`nfqlb_health_check_duration_seconds_sum{table="${esc(svc)}"} ${h.sum}`);
      out.push(`nfqlb_health_check_duration_seconds_count{table="${esc(svc)}"} ${h.count}`);
    }
    family(
      "nfqlb_health_panic",
      "gauge",
      "1 while every target of the table fails and all are kept in (panic guard).",
    );
    for (const s of this.#cfg.services) {
      if (s.targets.some((t) => t.health)) {
        out.push(`nfqlb_health_panic{table="${esc(s.name)}"} ${this.#panic.has(s.name) ? 1 : 0}`);
      }
    }
    return out.join("\n") + "\n";
  }
}

/** What a transition did to the table, for its log line. */
function effectText(effect: Effect | undefined, tr: Transition): string {
  switch (effect) {
    case "removed":
      return "removed from the table";
    case "drained":
      return "drained (weight 0)";
    case "panic":
      return "kept in the table (panic guard)";
    case "operator":
      return "left as the file sets it (inactive or weight 0)";
    default:
      return tr === "up" ? "back in the table" : "in the table";
  }
}
