/**
 * `nfqlb run -f FILE`: a load-balancer host that keeps itself running
 * (docs/run.md). It applies the file as `apply` does (host/apply.ts), then
 * stays in the foreground:
 *
 * - the dataplane (lb/flowlb) is its child; when it exits it is started
 *   again by applying the file again, at once the first time and with a
 *   growing wait when it keeps crashing (supervisor.ts);
 * - SIGHUP and a change of the file (reload.ts) apply the new file by diff;
 *   a file with an error is refused as a whole and the old config keeps
 *   serving; a file whose apply fails is rolled back to the old config;
 * - SIGTERM / SIGINT remove what it added (as `teardown`) and exit 0; with
 *   `--keep` the host is left serving, and a later `run` or `apply` adopts
 *   the running dataplane;
 * - an admin HTTP server (admin_server.ts) answers /metrics, /healthz and
 *   /ready; systemd hears READY=1, RELOADING=1, STOPPING=1, STATUS= and
 *   WATCHDOG=1 (sd_notify.ts); every event is one log line (agent_log.ts).
 *
 * Everything that changes the host (the first apply, reloads, restarts, the
 * teardown) runs one at a time, in arrival order, so they never interleave.
 */
import { resolve } from "node:path";
import type { HostConfig, ServiceConfig } from "../config/types.ts";
import { ConfigError, parseHostConfig } from "../config/load.ts";
import { kernelQueues } from "../../core/counters_shm.ts";
import { errorText, NfqlbError } from "../../core/errors.ts";
import { applyHost } from "../apply.ts";
import { exitOf, isDataplane } from "../dataplane_process.ts";
import { type HostState, logPath, readState } from "../state.ts";
import { type HostStatus, hostStatus } from "../status.ts";
import { teardownHost } from "../teardown.ts";
import { HealthMonitor } from "../health/monitor.ts";
import { BgpSpeaker, type ServiceProbe } from "../bgp/speaker.ts";
import { TargetView } from "../../core/target_view.ts";
import type { AgentLog } from "./agent_log.ts";
import { type AdminServer, startAdmin } from "./admin_server.ts";
import { dataplaneMetrics, renderAgentMetrics, tableDigests } from "./metrics.ts";
import { LogTail } from "./log_tail.ts";
import { ConfigWatcher, type FileContent, readConfig } from "./reload.ts";
import { monotonicUsec, SdNotify } from "./sd_notify.ts";
import { backoffMs, type DataplaneExit, DataplaneWatch, STABLE_MS } from "./supervisor.ts";

/** Options of {@link runHost}. */
export interface RunOptions {
  /** The config file, as given. */
  file: string;
  /** `--admin`: wins over the file's `admin.address`. */
  admin?: string;
  /** `--keep`: leave the host serving on SIGTERM/SIGINT. */
  keep: boolean;
  /** Where events go. */
  log: AgentLog;
  /** systemd's notify socket (default: from NOTIFY_SOCKET). */
  notify?: SdNotify;
}

/** How long a /ready answer about the whole host is reused (it runs iptables-save and friends). */
const STATUS_CACHE_MS = 1000;

const ms = (t0: number) => Math.round(performance.now() - t0);

/** A failure as one line: ours (NfqlbError, ConfigError) as they say it, a system error as errorText names it. */
function why(e: unknown): string {
  if (e instanceof NfqlbError) return e.message;
  if (e instanceof Error && !(e instanceof Deno.errors.NotFound) && !(e as { code?: string }).code) {
    return e.message;
  }
  return errorText(e);
}

/** The running dataplane of a config, from the state apply recorded; undefined when none runs. */
function running(cfg: HostConfig): (HostState & { pid: number; program: "lb" | "flowlb" }) | undefined {
  const st = readState(cfg.name);
  if (!st || st.program === null || st.pid === null || !isDataplane(st.pid, st.program, st.args)) {
    return undefined;
  }
  return st as HostState & { pid: number; program: "lb" | "flowlb" };
}

/** The agent; see the module comment. */
class HostAgent {
  readonly #o: RunOptions;
  readonly #log: AgentLog;
  readonly #notify: SdNotify | undefined;
  /** The path recorded in the state (absolute, symlinks kept: a ConfigMap's link stays valid, its target not). */
  readonly #abs: string;
  /** The config being served (the last accepted) and the digest of its file. */
  #cfg: HostConfig | undefined;
  #digest = "";
  /** The digest (or read error) of the file as last seen, accepted or not: an unchanged file is no reload. */
  #seen = "";
  #reloads = { ok: 0, error: 0 };
  #restarts = 0;
  /** Crashes in a row (reset when the dataplane lived STABLE_MS). */
  #streak = 0;
  #watch: DataplaneWatch | undefined;
  #restartTimer: ReturnType<typeof setTimeout> | undefined;
  #restartDue: number | undefined;
  #admin: AdminServer | undefined;
  #watcher: ConfigWatcher | undefined;
  #tail: LogTail | undefined;
  #stopping = false;
  #queue: Promise<unknown> = Promise.resolve();
  #done: Promise<number>;
  #finish: (code: number) => void = () => {};
  #status: { cfg: HostConfig; at: number; value: Promise<HostStatus> } | undefined;
  #signals: [Deno.Signal, () => void][] = [];
  /** The health checks (docs/health.md); they decide the rows of checked targets. */
  #health: HealthMonitor | undefined;
  /** The BGP announcements (docs/tier.md), when the file has a bgp section. */
  #bgp: BgpSpeaker | undefined;

  constructor(o: RunOptions) {
    this.#o = o;
    this.#log = o.log;
    this.#notify = o.notify;
    this.#abs = resolve(o.file);
    this.#done = new Promise((r) => this.#finish = r);
  }

  /** apply's options: the rows of the tables are health's (down targets stay out across reloads and restarts). */
  #applyOptions() {
    const health = this.#health;
    return {
      file: this.#abs,
      label: this.#o.file,
      admin: this.#o.admin,
      say: (l: string) => this.#log.info(l),
      wanted: health ? (s: ServiceConfig) => health.wanted(s) : undefined,
    };
  }

  /** Logs the failure of work nobody awaits (a bug: every expected failure is handled where it happens). */
  #later(p: Promise<unknown>, what: string): void {
    p.catch((e) => this.#log.error(`${what}: ${why(e)}`));
  }

  /** Runs `fn` after everything queued before it. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  #sd(message: string): void {
    if (this.#notify && !this.#notify.send(message)) {
      this.#log.warning(
        `NOTIFY_SOCKET ${this.#notify.socket}: send failed (errno ${this.#notify.lastErrno})`,
      );
    }
  }

  /** The STATUS= text of the config being served. */
  #statusLine(): string {
    const cfg = this.#cfg!;
    const dp = running(cfg);
    const where = dp
      ? `${dp.program} pid ${dp.pid}`
      : cfg.dataplane.start
      ? `${cfg.dataplane.program} down`
      : "";
    return `serving ${this.#o.file} (${cfg.name}, ${cfg.services.length} service${
      cfg.services.length === 1 ? "" : "s"
    }${where ? `, ${where}` : ""})`;
  }

  /** The whole run: returns the exit status. */
  async run(): Promise<number> {
    const log = this.#log, file = this.#o.file;
    log.notice(`nfqlb run -f ${file}`, { pid: Deno.pid, keep: this.#o.keep });
    this.#listen("SIGTERM", () => this.#stop("SIGTERM"));
    this.#listen("SIGINT", () => this.#stop("SIGINT"));
    this.#listen("SIGHUP", () => this.#later(this.#reload("SIGHUP"), "reload"));

    const first = await this.#serial(() => this.#start());
    if (first !== 0) {
      if (this.#stopping) return await this.#done;
      this.#tail?.close();
      await this.#admin?.close();
      this.#unlisten();
      return first;
    }
    if (this.#stopping) return await this.#done;
    this.#watcher = new ConfigWatcher(file, () => this.#later(this.#reload("file"), "reload"), {
      warn: (m) => log.warning(m),
    });
    this.#watcher.start();
    const dog = this.#notify?.startWatchdog() ?? 0;
    if (dog > 0) log.info(`systemd watchdog: WATCHDOG=1 every ${dog} ms`);
    return await this.#done;
  }

  /** Reads, checks and applies the file the first time; 0, or the exit status of the failure. */
  async #start(): Promise<number> {
    const log = this.#log, file = this.#o.file;
    let content: FileContent, cfg: HostConfig;
    try {
      content = await this.#read();
      cfg = parseHostConfig(content.text, file);
    } catch (e) {
      log.error(why(e));
      return e instanceof NfqlbError ? e.exitCode : 1;
    }
    const address = this.#o.admin ?? cfg.admin.address;
    try {
      this.#admin = startAdmin(address, {
        metrics: () => this.#metrics(),
        ready: () => this.#readiness(),
      });
    } catch (e) {
      log.error(why(e));
      return 1;
    }
    log.notice(`admin server on http://${address}/ (/metrics, /healthz, /ready)`);
    if (this.#stopping) return 0;
    this.#sd(`STATUS=applying ${file}`);
    // the dataplane's lines from here on (its start-up lines included) in our log
    this.#tail = new LogTail(
      logPath(cfg.name),
      (l) => log.info(`${(this.#cfg ?? cfg).dataplane.program}: ${l}`),
    );
    this.#tail.start();
    const t0 = performance.now();
    this.#health = new HealthMonitor(cfg, log);
    if (cfg.bgp) {
      // before apply: BIRD peers while the host is set up, and announces nothing until the probe says so
      this.#bgp = new BgpSpeaker(cfg, log, () => this.#bgpProbe());
      try {
        await this.#bgp.start();
      } catch (e) {
        log.error(why(e));
        await this.#bgp.stop();
        this.#bgp = undefined;
        return e instanceof NfqlbError ? e.exitCode : 1;
      }
    }
    try {
      const n = await applyHost(cfg, this.#applyOptions());
      log.notice(
        n === 0
          ? `nothing to change: the host matches ${file}`
          : `applied ${file}: ${n} change${n === 1 ? "" : "s"}`,
        { ms: ms(t0) },
      );
    } catch (e) {
      log.error(why(e));
      await this.#bgp?.stop();
      return e instanceof NfqlbError ? e.exitCode : 1;
    }
    this.#cfg = cfg;
    this.#digest = this.#seen = content.digest;
    const dp = running(cfg);
    if (dp && !exitOf(dp.pid)) {
      log.notice(`adopted ${dp.program} pid ${dp.pid}, started by an earlier run or apply`);
    }
    this.#watchDataplane();
    if (this.#stopping) return 0;
    const health = this.#health;
    if (health.active) {
      // the first round runs at once; until it is done /ready says so (systemd's READY=1 waits for it too)
      log.notice(`health: checking ${this.#checkedText(cfg)}`);
      await health.start();
      if (this.#stopping) return 0;
    } else health.start(); // nothing to check yet (resolves at once); a reload may add checks
    this.#sd(`READY=1\nSTATUS=${this.#statusLine()}`);
    log.notice(`ready: ${this.#statusLine()}`, { digest: content.digest });
    return 0;
  }

  /** `3 targets of web (tcp every 1000 ms)`-like text of what is checked. */
  #checkedText(cfg: HostConfig): string {
    return cfg.services.filter((s) => s.targets.some((t) => t.health)).map((s) => {
      const checked = s.targets.filter((t) => t.health);
      const kinds = [...new Set(checked.map((t) => `${t.health!.type} every ${t.health!.intervalMs} ms`))];
      return `${checked.length} target${checked.length === 1 ? "" : "s"} of ${s.name} (${kinds.join(", ")})`;
    }).join(", ");
  }

  #listen(sig: Deno.Signal, fn: () => void): void {
    Deno.addSignalListener(sig, fn);
    this.#signals.push([sig, fn]);
  }

  #unlisten(): void {
    for (const [sig, fn] of this.#signals) Deno.removeSignalListener(sig, fn);
    this.#signals = [];
  }

  /** The file's content; throws ConfigError `<file>: cannot read: <reason>` as apply's loader does. */
  async #read(): Promise<FileContent> {
    try {
      return await readConfig(this.#o.file);
    } catch (e) {
      throw new ConfigError(`${this.#o.file}: cannot read: ${errorText(e)}`); // as apply's loader says it
    }
  }

  /** Watches the dataplane the state records (after every apply: it may be a new one). */
  #watchDataplane(): void {
    this.#watch?.cancel();
    this.#watch = undefined;
    this.#status = undefined;
    const cfg = this.#cfg;
    if (!cfg || this.#stopping) return;
    const st = readState(cfg.name);
    if (!st || st.pid === null || st.program === null) return;
    this.#watch = new DataplaneWatch(st.pid, st.program, st.args, (e) => this.#onExit(st.program!, e));
  }

  /** The dataplane exited on its own: restart it, at once or after the back-off. */
  #onExit(program: string, e: DataplaneExit): void {
    this.#watch = undefined;
    this.#status = undefined;
    if (this.#stopping) return;
    this.#streak = e.livedMs >= STABLE_MS ? 1 : this.#streak + 1;
    const delay = backoffMs(this.#streak);
    this.#log.error(
      `${program} (pid ${e.pid}) exited: ${e.how} after ${(e.livedMs / 1000).toFixed(1)} s; restarting${
        delay ? ` in ${delay} ms (${this.#streak} crashes in a row)` : ""
      }`,
    );
    this.#sd(`STATUS=${program} exited (${e.how}); restarting`);
    this.#bgp?.poke(); // withdraw now, not at the next evaluation
    this.#scheduleRestart(delay);
  }

  #scheduleRestart(delay: number): void {
    if (this.#restartTimer !== undefined) clearTimeout(this.#restartTimer);
    this.#restartDue = Date.now() + delay;
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.#later(this.#serial(() => this.#restart()), "restart");
    }, delay);
  }

  /** Starts the dataplane again: applies the config being served (which starts what is missing). */
  async #restart(): Promise<void> {
    this.#restartDue = undefined;
    const cfg = this.#cfg;
    if (this.#stopping || !cfg) return;
    if (running(cfg)) { // a reload meanwhile started it
      this.#watchDataplane();
      return;
    }
    this.#restarts++;
    const t0 = performance.now();
    try {
      await applyHost(cfg, this.#applyOptions());
      const dp = running(cfg);
      if (!dp) throw new NfqlbError(`${cfg.dataplane.program} is not running after apply`);
      this.#log.notice(`restarted ${dp.program}: pid ${dp.pid}, bound to its queues`, {
        ms: ms(t0),
        restarts: this.#restarts,
      });
      this.#watchDataplane();
      this.#sd(`STATUS=${this.#statusLine()}`);
    } catch (e) {
      this.#sd(`STATUS=restart failed: ${why(e)}`);
      if (running(cfg)) { // it started, something after it failed: watch it, the next reload retries the rest
        this.#log.error(`restart ${this.#restarts}: ${why(e)}`);
        this.#watchDataplane();
        return;
      }
      this.#streak++;
      const delay = backoffMs(this.#streak);
      this.#log.error(`restart ${this.#restarts} failed: ${why(e)}; next try in ${delay} ms`);
      this.#scheduleRestart(delay);
    }
  }

  /** SIGHUP or a change of the file: apply the new file, or refuse it and keep the old one. */
  #reload(trigger: "SIGHUP" | "file"): Promise<void> {
    return this.#serial(async () => {
      const old = this.#cfg;
      if (this.#stopping || !old) return;
      const log = this.#log, file = this.#o.file;
      let content: FileContent | undefined, readError: unknown;
      try {
        content = await this.#read();
      } catch (e) {
        readError = e;
      }
      const seen = content?.digest ?? `unreadable: ${why(readError)}`;
      if (trigger === "file" && seen === this.#seen) return;
      this.#seen = seen;
      const t0 = performance.now();
      this.#sd(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}\nSTATUS=reloading ${file}`);
      log.notice(`reloading ${file} (${trigger === "file" ? "the file changed" : "SIGHUP"})`);
      let cfg: HostConfig, admin: AdminServer | undefined;
      try {
        if (!content) throw readError;
        cfg = parseHostConfig(content.text, file);
        if (cfg.name !== old.name) {
          throw new ConfigError(
            `${file}: name: ${cfg.name} is not ${old.name}, the config this nfqlb run serves (stop it, then run the new file)`,
          );
        }
        if ((cfg.bgp === null) !== (old.bgp === null) || (cfg.bgp && cfg.bgp.bird !== old.bgp?.bird)) {
          throw new ConfigError(
            `${file}: bgp: a reload cannot add or remove the bgp section or change bgp.bird (restart nfqlb run)`,
          );
        }
        const address = this.#o.admin ?? cfg.admin.address;
        if (address !== this.#admin?.address) {
          admin = startAdmin(address, { metrics: () => this.#metrics(), ready: () => this.#readiness() });
        }
      } catch (e) {
        this.#reloads.error++;
        log.error(`refused: ${why(e)}; still serving the previous config`, { digest: this.#digest });
        this.#sd(`READY=1\nSTATUS=${this.#statusLine()}; refused the new file: ${why(e)}`);
        return;
      }
      this.#watch?.cancel(); // apply may stop the dataplane on purpose: not a crash
      this.#watch = undefined;
      // health state of targets checked as before is kept; apply writes the rows health wants
      this.#health?.update(cfg);
      try {
        const n = await applyHost(cfg, this.#applyOptions());
        this.#cfg = cfg;
        this.#digest = content.digest;
        this.#reloads.ok++;
        this.#bgp?.update(cfg);
        if (admin) {
          const before = this.#admin;
          this.#admin = admin;
          await before?.close();
          log.notice(`admin server moved to http://${admin.address}/`);
        }
        log.notice(
          n === 0
            ? `reloaded ${file}: nothing to change`
            : `reloaded ${file}: ${n} change${n === 1 ? "" : "s"}`,
          { ms: ms(t0), digest: content.digest },
        );
      } catch (e) {
        this.#reloads.error++;
        await admin?.close();
        log.error(`refused: ${why(e)}; restoring the previous config`);
        this.#health?.update(old);
        try {
          const n = await applyHost(old, this.#applyOptions());
          log.notice(`restored the previous config: ${n} change${n === 1 ? "" : "s"}`, { ms: ms(t0) });
        } catch (e2) {
          log.error(`restoring the previous config failed: ${why(e2)}`);
        }
      }
      this.#watchDataplane();
      this.#sd(`READY=1\nSTATUS=${this.#statusLine()}`);
    });
  }

  /** SIGTERM / SIGINT: teardown (or keep), then exit. */
  #stop(sig: string): void {
    if (this.#stopping) {
      this.#log.warning(`${sig}: already stopping`);
      return;
    }
    this.#stopping = true;
    const keep = this.#o.keep;
    this.#log.notice(`${sig}: stopping${keep ? " (--keep: the host keeps serving)" : ""}`);
    this.#sd("STOPPING=1");
    this.#watcher?.close();
    this.#notify?.stopWatchdog();
    if (this.#restartTimer !== undefined) clearTimeout(this.#restartTimer);
    this.#watch?.cancel();
    this.#health?.stop();
    // first thing: withdraw the VIPs, then keep forwarding drainSeconds from the withdrawal
    const bgp = this.#bgp;
    const drained = bgp ? this.#drain(bgp) : Promise.resolve();
    const stopped = this.#serial(async () => {
      await drained;
      let code = 0;
      const cfg = this.#cfg;
      this.#tail?.close();
      if (cfg && keep) {
        const dp = running(cfg);
        this.#log.notice(
          `kept: ${dp ? `${dp.program} pid ${dp.pid}` : "the host"} keeps serving ${this.#o.file}; ` +
            `nfqlb run or apply adopts it, nfqlb teardown removes it`,
        );
      } else if (cfg) {
        try {
          const n = await teardownHost(cfg, (l) => this.#log.info(l));
          this.#log.notice(`removed ${n} things of ${cfg.name}`);
        } catch (e) {
          this.#log.error(`teardown: ${why(e)}`);
          code = 1;
        }
      }
      await bgp?.stop();
      await this.#admin?.close();
      this.#unlisten();
      this.#finish(code);
    });
    stopped.catch((e) => {
      this.#log.error(`stopping: ${why(e)}`);
      this.#finish(1);
    });
  }

  /** SIGTERM with BGP: withdraw every VIP, then wait drainSeconds (the dataplane keeps forwarding). */
  async #drain(bgp: BgpSpeaker): Promise<void> {
    const ms = await bgp.withdrawAll("stopping (SIGTERM)");
    const seconds = this.#cfg?.bgp?.drainSeconds ?? 0;
    this.#log.notice(`bgp: withdrew every VIP in ${ms} ms; draining ${seconds} s before stopping`);
    if (seconds > 0) await new Promise((r) => setTimeout(r, seconds * 1000));
  }

  /**
   * Whether each service can be announced now (docs/tier.md): after the
   * first round of health checks, while the dataplane runs and is bound to
   * every one of its queues, and while the service has a target that
   * carries traffic (weight > 0) and is not in panic.
   */
  #bgpProbe(): ServiceProbe[] {
    const cfg = this.#cfg;
    if (!cfg) return [];
    const all = (reason: string) =>
      cfg.services.map((s) => ({ service: s.name, vips: s.vips, ok: false, reason }));
    if (this.#stopping) return all("stopping");
    if (this.#health && !this.#health.ready) return all("the first round of health checks is under way");
    const d = cfg.dataplane;
    const dp = running(cfg);
    if (d.start && !dp) return all(`${d.program} is not running`);
    const bound = new Set(kernelQueues().map((q) => q.queue));
    for (let q = d.queues.first; q <= d.queues.last; q++) {
      if (!bound.has(q)) return all(`queue ${q} is not bound`);
    }
    return cfg.services.map((s) => {
      const no = (reason: string) => ({ service: s.name, vips: s.vips, ok: false, reason });
      if (this.#health?.panic(s.name)) return no("panic: every target fails its health check");
      let carrying = 0;
      try {
        const t = TargetView.open(s.name);
        try {
          const snap = t.snapshot(0);
          snap.active.forEach((fw, i) => fw >= 0 && snap.weights[i] > 0 && carrying++);
        } finally {
          t.close();
        }
      } catch (e) {
        return no(`table: ${why(e)}`);
      }
      if (carrying === 0) return no("no healthy target in the table");
      return { service: s.name, vips: s.vips, ok: true, reason: "serving" };
    });
  }

  /** /metrics: the agent's own, then the dataplane's. */
  async #metrics(): Promise<string> {
    const cfg = this.#cfg;
    const own = renderAgentMetrics({
      reloads: this.#reloads,
      restarts: this.#restarts,
      config: cfg ? { name: cfg.name, digest: this.#digest } : undefined,
      dataplaneUp: cfg !== undefined && running(cfg) !== undefined,
      tables: cfg ? await tableDigests(cfg) : undefined,
    });
    return own + (this.#health?.metrics() ?? "") + (this.#bgp?.metrics() ?? "") +
      (cfg ? await dataplaneMetrics(cfg) : "");
  }

  /** /ready: the dataplane runs and has bound its queues, and the host matches the config being served. */
  async #readiness(): Promise<{ ok: boolean; text: string }> {
    const cfg = this.#cfg, file = this.#o.file;
    if (this.#stopping) return { ok: false, text: "not ready: stopping" };
    if (!cfg) return { ok: false, text: `not ready: applying ${file}` };
    if (this.#health && !this.#health.ready) {
      return { ok: false, text: "not ready: health: the first round of checks is under way" };
    }
    const d = cfg.dataplane;
    const dp = running(cfg);
    if (d.start) {
      if (!dp) {
        const due = this.#restartDue;
        return {
          ok: false,
          text: `not ready: ${d.program} is not running (${
            due !== undefined ? `restart in ${Math.max(0, due - Date.now())} ms` : "restarting"
          }; ${this.#restarts} restarts so far)`,
        };
      }
      const bound = new Set(kernelQueues().map((q) => q.queue));
      const missing: number[] = [];
      for (let q = d.queues.first; q <= d.queues.last; q++) if (!bound.has(q)) missing.push(q);
      if (missing.length > 0) {
        return {
          ok: false,
          text: `not ready: ${dp.program} pid ${dp.pid} has not bound queue${missing.length > 1 ? "s" : ""} ${
            missing.join(", ")
          }`,
        };
      }
    }
    const now = Date.now();
    if (!this.#status || this.#status.cfg !== cfg || now - this.#status.at > STATUS_CACHE_MS) {
      this.#status = { cfg, at: now, value: hostStatus(cfg, file) };
    }
    let st: HostStatus;
    try {
      st = await this.#status.value;
    } catch (e) {
      this.#status = undefined;
      return { ok: false, text: `not ready: status: ${why(e)}` };
    }
    if (st.drift > 0) {
      const diffs = st.lines.filter((l) => l.trimStart().startsWith("!")).map((l) => l.trim());
      return { ok: false, text: [`not ready: the host differs from ${file}:`, ...diffs].join("\n") };
    }
    return {
      ok: true,
      text: `ready: the host matches ${file} (${cfg.name})${
        dp ? `; ${dp.program} pid ${dp.pid} bound to queue ${d.queue}` : ""
      }`,
    };
  }
}

/**
 * Runs `nfqlb run` until SIGTERM/SIGINT; returns the exit status (0 after a
 * clean teardown or --keep; the failure's status when the first apply fails).
 *
 * @example
 * ```ts
 * const code = await runHost({ file: "host.yaml", keep: false, log: new AgentLog() });
 * ```
 */
export async function runHost(o: RunOptions): Promise<number> {
  let notify = o.notify;
  if (notify === undefined) {
    try {
      notify = SdNotify.fromEnv();
    } catch (e) {
      o.log.warning(why(e));
    }
  }
  return await new HostAgent({ ...o, notify }).run();
}
