/**
 * The BGP side of `nfqlb run` (docs/tier.md): decides which VIPs are
 * announced, tells BIRD, and watches the sessions.
 *
 * A service's VIPs are announced only while the agent says the service can
 * serve them (the first round of health checks is done, the dataplane is
 * bound to its queues, at least one target is healthy: {@link ServiceProbe},
 * asked every {@link EVAL_MS} and at once on {@link BgpSpeaker.poke}), and
 * not after {@link BgpSpeaker.withdrawAll} (SIGTERM). The announced set is
 * BIRD's configuration (bird_conf.ts): a change rewrites it and reloads BIRD
 * (`birdc configure`); a VIP counts as announced once BIRD took the
 * configuration that has it. Supervised, bird is the agent's child
 * (bird.ts); external, a system BIRD includes our file. Sessions are read
 * from `birdc show protocols` every {@link SESSION_POLL_MS}. Every change is
 * one log line; the record file (`bgp-<name>.json`) tells `nfqlb status`;
 * {@link BgpSpeaker.metrics} renders `nfqlb_bgp_session_up{peer}` and
 * `nfqlb_vip_announced{vip}`.
 */
import type { BgpConfig, HostConfig, Vip } from "../config/types.ts";
import { errorText, NfqlbError } from "../../core/errors.ts";
import { ensureOwnDir, ownDir } from "../../core/shm_dir.ts";
import { alive } from "../dataplane_process.ts";
import { escapeLabel as esc, familyHeader } from "../../dataplane/metric_families.ts";
import { birdConfig, peerProtocol } from "./bird_conf.ts";
import {
  BIRD,
  BIRDC,
  birdc,
  birdConfigure,
  birdPaths,
  BirdProcess,
  firstIpv4,
  killStaleBird,
  parseProtocols,
  writeAtomic,
} from "./bird.ts";

/** How often the services are asked whether they can be announced. */
export const EVAL_MS = 200;
/** How often the sessions are read from BIRD. */
export const SESSION_POLL_MS = 1000;

/** Whether a service can be announced now, and why not. */
export interface ServiceProbe {
  /** The service. */
  service: string;
  /** Its VIPs. */
  vips: readonly Vip[];
  /** Announce its VIPs. */
  ok: boolean;
  /** Why not (when !ok); "serving" otherwise. */
  reason: string;
}

/** Where the speaker's events go (the agent's log). */
export interface BgpLog {
  notice(msg: string, fields?: Record<string, string | number | boolean>): void;
  warning(msg: string, fields?: Record<string, string | number | boolean>): void;
  error(msg: string, fields?: Record<string, string | number | boolean>): void;
  info(msg: string, fields?: Record<string, string | number | boolean>): void;
}

/** One VIP's announcement, as the record and the metrics say it. */
export interface VipState {
  /** CIDR text. */
  vip: string;
  /** Its service. */
  service: string;
  /** Announced now (BIRD has it). */
  announced: boolean;
  /** Why withdrawn (or "serving"). */
  reason: string;
  /** Since when (ms since the epoch). */
  since: number;
}

/** One BGP session, as the record and the metrics say it. */
export interface SessionState {
  /** The peer's address. */
  peer: string;
  /** BIRD's protocol name. */
  protocol: string;
  /** Established. */
  up: boolean;
  /** BIRD's state and info (`Established`, `Active Socket: Connection refused`), or why it is unknown. */
  info: string;
}

/** What `nfqlb status` reads: `bgp-<name>.json` in our own directory. */
export interface BgpRecord {
  version: 1;
  /** The agent. */
  pid: number;
  /** When written. */
  time: number;
  /** supervised or external. */
  bird: string;
  /** The router id in use. */
  routerId: string;
  /** The supervised bird's pid, or null. */
  birdPid: number | null;
  /** The sessions. */
  sessions: SessionState[];
  /** The VIPs. */
  vips: VipState[];
}

/** The record file of config `name`. */
export function bgpRecordPath(name: string): string {
  return `${ownDir()}/bgp-${name}.json`;
}

/** The record of config `name` while the `nfqlb run` that writes it lives; else undefined. */
export function readBgpRecord(name: string): BgpRecord | undefined {
  try {
    const r = JSON.parse(Deno.readTextFileSync(bgpRecordPath(name))) as BgpRecord;
    if (r.version !== 1 || typeof r.pid !== "number" || !alive(r.pid)) return undefined;
    return r;
  } catch {
    return undefined;
  }
}

/** Whether `program` can be started (its exit status does not matter: birdc has no --version). */
async function runs(program: string): Promise<boolean> {
  try {
    await new Deno.Command(program, { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

/** The BGP speaker of one config; see the module comment. */
export class BgpSpeaker {
  #cfg: HostConfig;
  #bgp: BgpConfig;
  readonly #log: BgpLog;
  readonly #probe: () => ServiceProbe[];
  #routerId = "";
  #bird: BirdProcess | undefined;
  #vips = new Map<string, VipState>();
  #sessions: SessionState[] = [];
  /** The configuration text BIRD last accepted (or, bird not running, that it will read at start). */
  #written: string | undefined;
  #withdrawReason: string | undefined;
  #evalTimer: ReturnType<typeof setInterval> | undefined;
  #sessionTimer: ReturnType<typeof setInterval> | undefined;
  #busy: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #lastError = "";
  /** start() got as far as writing BIRD's configuration: stop() has something to undo. */
  #started = false;

  constructor(cfg: HostConfig, log: BgpLog, probe: () => ServiceProbe[]) {
    if (!cfg.bgp) throw new Error("BgpSpeaker: the config has no bgp section");
    this.#cfg = cfg;
    this.#bgp = cfg.bgp;
    this.#log = log;
    this.#probe = probe;
  }

  /** The router id in use. */
  get routerId(): string {
    return this.#routerId;
  }

  /** The socket birdc talks to. */
  get socket(): string {
    return this.#bgp.bird === "supervised" ? birdPaths(this.#cfg.name).ctl : this.#bgp.socket;
  }

  /** The file BIRD reads our part from. */
  get confPath(): string {
    return this.#bgp.bird === "supervised" ? birdPaths(this.#cfg.name).conf : this.#bgp.include;
  }

  /**
   * Resolves the router id, writes the configuration with nothing announced
   * and starts bird (supervised) or reloads the system BIRD (external); then
   * evaluates every {@link EVAL_MS}.
   * @throws NfqlbError when there is no router id
   */
  async start(): Promise<void> {
    const b = this.#bgp;
    const id = b.routerId ?? await firstIpv4();
    if (!id) {
      throw new NfqlbError(
        `bgp.routerId: this host has no global IPv4 address to take as the router id; set bgp.routerId`,
      );
    }
    this.#routerId = id;
    // a missing BIRD is one clear line at start, not a restart loop
    const tool = b.bird === "supervised" ? BIRD : BIRDC;
    if (!await runs(tool)) {
      throw new NfqlbError(`bgp.bird: ${b.bird}: cannot run ${tool}; install BIRD 2 (Debian: bird2)`);
    }
    const text = this.#text({ ipv4: [], ipv6: [] });
    this.#started = true;
    if (b.bird === "supervised") {
      const paths = birdPaths(this.#cfg.name);
      const stale = await killStaleBird(paths);
      if (stale) {
        this.#log.warning(
          `bgp: killed bird pid ${stale}, left running by an earlier run of ${this.#cfg.name}`,
        );
      }
      ensureOwnDir();
      writeAtomic(paths.conf, text);
      this.#written = text;
      this.#bird = new BirdProcess(paths, this.#log);
      this.#bird.start();
    } else {
      await this.#configure(text);
    }
    this.#log.notice(
      `bgp: ${
        b.bird === "supervised" ? `bird pid ${this.#bird?.pid}` : `system BIRD (${b.socket})`
      }, router id ${id}, ${b.peers.length} peer${b.peers.length === 1 ? "" : "s"} (${
        b.peers.map((p) => `${p.address} AS ${p.as}${p.bfd ? " bfd" : ""}`).join(", ")
      }); configuration ${this.confPath}`,
    );
    this.#evalTimer = setInterval(() => this.poke(), EVAL_MS);
    this.#sessionTimer = setInterval(() => this.#pollSessions(), SESSION_POLL_MS);
    this.poke();
  }

  /** A new config (reload): its bgp section and services from now on (the router id stays). */
  update(cfg: HostConfig): void {
    if (!cfg.bgp) return;
    this.#cfg = cfg;
    this.#bgp = { ...cfg.bgp, bird: this.#bgp.bird, include: this.#bgp.include, socket: this.#bgp.socket };
    this.poke();
  }

  /** Evaluates now (coalesced with one under way). */
  poke(): void {
    if (this.#stopped) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#busy = this.#evaluate().catch((e) => this.#log.error(`bgp: ${errorText(e)}`)).finally(() => {
      this.#busy = undefined;
      if (this.#again) {
        this.#again = false;
        this.poke();
      }
    });
  }

  /**
   * Withdraws every VIP for good (SIGTERM), and resolves when BIRD has the
   * configuration without them (or failed to take it); the time it took, ms.
   */
  async withdrawAll(reason: string): Promise<number> {
    const t0 = performance.now();
    this.#withdrawReason = reason;
    // wait for an evaluation under way, then run one that withdraws
    for (let i = 0; i < 3 && this.#busy; i++) await this.#busy;
    this.poke();
    for (let i = 0; i < 3 && this.#busy; i++) await this.#busy;
    return Math.round(performance.now() - t0);
  }

  #text(announce: { ipv4: string[]; ipv6: string[] }): string {
    return birdConfig({ name: this.#cfg.name, bgp: this.#bgp, routerId: this.#routerId, announce });
  }

  async #configure(text: string): Promise<boolean> {
    try {
      writeAtomic(this.confPath, text);
    } catch (e) {
      this.#fail(`cannot write ${this.confPath}: ${errorText(e)}`);
      return false;
    }
    if (this.#bgp.bird === "supervised" && this.#bird?.pid === undefined) {
      // bird is restarting: it reads the file when it starts
      this.#written = text;
      return true;
    }
    const r = await birdConfigure(this.socket);
    if (!r.ok) {
      this.#fail(`birdc configure (${this.socket}): ${r.error}`);
      return false;
    }
    this.#lastError = "";
    this.#written = text;
    return true;
  }

  /** Logs a failure once (until it changes or clears). */
  #fail(what: string): void {
    if (what !== this.#lastError) this.#log.error(`bgp: ${what}; retrying`);
    this.#lastError = what;
  }

  async #evaluate(): Promise<void> {
    let probes = this.#probe();
    if (probes.length === 0) { // the agent has no config yet: its first apply is under way
      probes = this.#cfg.services.map((s) => ({
        service: s.name,
        vips: s.vips,
        ok: false,
        reason: "starting: applying the file",
      }));
    }
    const want = { ipv4: [] as string[], ipv6: [] as string[] };
    const next = new Map<string, { service: string; ok: boolean; reason: string }>();
    for (const p of probes) {
      for (const v of p.vips) {
        const ok = p.ok && this.#withdrawReason === undefined;
        const reason = this.#withdrawReason ?? p.reason;
        next.set(v.cidr, { service: p.service, ok, reason });
        if (ok) want[v.family].push(v.cidr);
      }
    }
    const text = this.#text(want);
    let applied = text === this.#written;
    if (!applied) applied = await this.#configure(text);
    if (this.#stopped) return;
    const now = Date.now();
    const states = new Map<string, VipState>();
    for (const [vip, n] of next) {
      const old = this.#vips.get(vip);
      // announced: what BIRD has; a failed reload keeps the old state
      const announced = applied ? n.ok : old?.announced ?? false;
      const reason = announced ? "serving" : n.ok ? "BIRD has not taken the configuration" : n.reason;
      if (!old || old.announced !== announced) {
        if (announced) this.#log.notice(`bgp: announced ${vip} (${n.service})`, { service: n.service });
        else if (old) {
          this.#log.warning(`bgp: withdrew ${vip} (${n.service}): ${reason}`, { service: n.service });
        }
      }
      states.set(vip, {
        vip,
        service: n.service,
        announced,
        reason,
        since: old && old.announced === announced ? old.since : now,
      });
    }
    for (const [vip, old] of this.#vips) {
      if (!states.has(vip) && old.announced) {
        this.#log.warning(`bgp: withdrew ${vip} (${old.service}): no longer in the file`, {
          service: old.service,
        });
      }
    }
    const changed = [...states.values()].some((s) => {
      const o = this.#vips.get(s.vip);
      return !o || o.announced !== s.announced || o.reason !== s.reason;
    }) || states.size !== this.#vips.size;
    this.#vips = states;
    if (changed) this.#writeRecord();
  }

  async #pollSessions(): Promise<void> {
    if (this.#stopped) return;
    const r = await birdc(this.socket, ["show", "protocols"]);
    if (this.#stopped) return;
    const protos = r.ok ? parseProtocols(r.text) : [];
    const sessions = this.#bgp.peers.map((p, i) => {
      const name = peerProtocol(this.#bgp, this.#cfg.name, i);
      const pr = protos.find((x) => x.name === name);
      const info = !r.ok ? `unknown: ${r.error}` : pr ? pr.info || pr.state : "not in BIRD";
      return { peer: p.address, protocol: name, up: pr?.bgpState === "Established", info };
    });
    for (const s of sessions) {
      const old = this.#sessions.find((o) => o.peer === s.peer);
      if ((old && old.up !== s.up) || (!old && s.up)) {
        if (s.up) this.#log.notice(`bgp: session to ${s.peer} established`);
        else this.#log.warning(`bgp: session to ${s.peer} down: ${s.info}`);
      }
    }
    this.#sessions = sessions;
    this.#writeRecord();
  }

  /** The record as `nfqlb status` reads it. */
  record(): BgpRecord {
    return {
      version: 1,
      pid: Deno.pid,
      time: Date.now(),
      bird: this.#bgp.bird,
      routerId: this.#routerId,
      birdPid: this.#bird?.pid ?? null,
      sessions: this.#sessions,
      vips: [...this.#vips.values()],
    };
  }

  #writeRecord(): void {
    if (this.#stopped) return;
    try {
      writeAtomic(bgpRecordPath(this.#cfg.name), JSON.stringify(this.record()) + "\n");
    } catch (e) {
      this.#fail(`cannot write the record for status: ${errorText(e)}`);
    }
  }

  /** The Prometheus text of the BGP metrics. */
  metrics(): string {
    const out = [
      ...familyHeader("nfqlb_bgp_session_up"),
      ...this.#bgp.peers.map((p) => {
        const s = this.#sessions.find((x) => x.peer === p.address);
        return `nfqlb_bgp_session_up{peer="${esc(p.address)}"} ${s?.up ? 1 : 0}`;
      }),
      ...familyHeader("nfqlb_vip_announced"),
      ...[...this.#vips.values()].map((v) =>
        `nfqlb_vip_announced{vip="${esc(v.vip)}"} ${v.announced ? 1 : 0}`
      ),
    ];
    return out.join("\n") + "\n";
  }

  /**
   * Stops: supervised, bird is stopped (its sessions close); external, our
   * include file is emptied and the system BIRD reloaded. The record goes.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    if (this.#evalTimer !== undefined) clearInterval(this.#evalTimer);
    if (this.#sessionTimer !== undefined) clearInterval(this.#sessionTimer);
    for (let i = 0; i < 3 && this.#busy; i++) await this.#busy;
    this.#stopped = true;
    if (!this.#started) return; // start failed before it changed anything
    if (this.#bgp.bird === "supervised") await this.#bird?.stop();
    else {
      try {
        writeAtomic(
          this.#bgp.include,
          `# nfqlb run for config ${this.#cfg.name} stopped: nothing announced\n`,
        );
        const r = await birdConfigure(this.#bgp.socket);
        if (!r.ok) this.#log.error(`bgp: birdc configure (${this.#bgp.socket}): ${r.error}`);
      } catch (e) {
        this.#log.error(`bgp: cannot write ${this.#bgp.include}: ${errorText(e)}`);
      }
    }
    try {
      Deno.removeSync(bgpRecordPath(this.#cfg.name));
    } catch { /* gone */ }
    if (this.#bgp.bird === "supervised") {
      try {
        Deno.removeSync(birdPaths(this.#cfg.name).conf);
      } catch { /* gone */ }
    }
  }
}
