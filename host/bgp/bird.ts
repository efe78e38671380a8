/**
 * BIRD 2 as `nfqlb run` drives it (docs/tier.md): where a config's BIRD
 * files live (its own state directory: several configs, or several lab
 * hosts sharing one filesystem under different names, never collide),
 * `birdc` with a bounded wait, the parse of `show protocols`, the host's
 * default router id, and {@link BirdProcess}: bird as a supervised child,
 * started again with the dataplane's back-off when it exits.
 */
import { errorText } from "../../core/errors.ts";
import { ensureOwnDir, ownDir } from "../../core/shm_dir.ts";
import { runCommand } from "../plumbing/exec.ts";
import { onPath } from "../preflight.ts";
import { backoffMs, STABLE_MS } from "../run/supervisor.ts";

/** The BIRD program and its client (overridable for a BIRD installed elsewhere). */
export const BIRD = Deno.env.get("NFQLB_BIRD") ?? "bird";
/** The BIRD client. */
export const BIRDC = Deno.env.get("NFQLB_BIRDC") ?? "birdc";
/** The longest wait for one birdc command. */
export const BIRDC_TIMEOUT_MS = 5000;

/** The files of a config's supervised BIRD. */
export interface BirdPaths {
  /** The generated configuration. */
  conf: string;
  /** Its control socket (birdc -s). */
  ctl: string;
  /** Its pid file. */
  pid: string;
}

/** A config's BIRD files, in our own directory of the shm directory, beside its other state. */
export function birdPaths(name: string): BirdPaths {
  const d = ownDir();
  return { conf: `${d}/bird-${name}.conf`, ctl: `${d}/bird-${name}.ctl`, pid: `${d}/bird-${name}.pid` };
}

/** Writes a file atomically (a reader, or BIRD's reload, sees the old or the new text). */
export function writeAtomic(path: string, text: string): void {
  if (path.startsWith(ownDir() + "/")) ensureOwnDir();
  const tmp = `${path}.${Deno.pid}.tmp`;
  Deno.writeTextFileSync(tmp, text, { mode: 0o644 });
  Deno.renameSync(tmp, path);
}

/** The result of a birdc command: its output, or why it failed. */
export type BirdcResult = { ok: true; text: string } | { ok: false; error: string };

/** Runs `birdc -s SOCKET ARGS...` (bounded in time); never throws. */
export async function birdc(socket: string, args: string[]): Promise<BirdcResult> {
  const r = await runCommand([BIRDC, "-s", socket, ...args], { timeoutMs: BIRDC_TIMEOUT_MS });
  const text = r.stdout + r.stderr;
  if (r.code !== 0) {
    const line = text.trim().split("\n").pop() ?? "";
    return { ok: false, error: r.code === 124 ? "birdc timed out" : line || `birdc exited ${r.code}` };
  }
  if (/Unable to connect|No such file|Connection refused/.test(text)) {
    return { ok: false, error: text.trim().split("\n")[0] };
  }
  return { ok: true, text };
}

/**
 * `birdc configure`: BIRD reads its configuration again; ok when it says
 * `Reconfigured` (or that it is already under way), else the error line.
 */
export async function birdConfigure(socket: string): Promise<{ ok: true } | { ok: false; error: string }> {
  const r = await birdc(socket, ["configure"]);
  if (!r.ok) return r;
  if (/Reconfigured|Reconfiguration in progress|Reconfiguration already in progress/.test(r.text)) {
    return { ok: true };
  }
  const lines = r.text.trim().split("\n").filter((l) => !/^BIRD .* ready\.$|^Reading configuration/.test(l));
  return { ok: false, error: lines.join("; ") || "no answer" };
}

/** One protocol of `show protocols`. */
export interface BirdProtocol {
  /** Its name. */
  name: string;
  /** BGP, Static, Device, BFD, … */
  proto: string;
  /** up, start, down, … */
  state: string;
  /** For BGP: Idle, Connect, Active, OpenSent, OpenConfirm, Established, Close; else "". */
  bgpState: string;
  /** The rest of the line (BGP: the state and, when not up, why). */
  info: string;
}

const BGP_STATES = ["Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close", "Down"];

/**
 * Parses `birdc show protocols`:
 *
 * ```text
 * BIRD 2.0.12 ready.
 * Name       Proto      Table      State  Since         Info
 * peer1      BGP        ---        up     10:00:01.123  Established
 * peer2      BGP        ---        start  10:00:01.123  Active        Socket: Connection refused
 * ```
 */
export function parseProtocols(text: string): BirdProtocol[] {
  const out: BirdProtocol[] = [];
  let header = false;
  for (const line of text.split("\n")) {
    if (/^Name\s+Proto\s+Table\s+State/.test(line)) {
      header = true;
      continue;
    }
    if (!header || line.trim() === "") continue;
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const [name, proto, , state] = f;
    // Since is one or two fields (time, or date and time): the info starts after it
    let rest = f.slice(5);
    if (rest.length > 0 && /^\d\d:\d\d/.test(rest[0])) rest = rest.slice(1);
    const info = rest.join(" ");
    const bgpState = proto === "BGP" ? (BGP_STATES.find((s) => rest[0] === s) ?? "") : "";
    out.push({ name, proto, state, bgpState, info });
  }
  return out;
}

/**
 * The host's first IPv4 address (global scope, in `ip addr` order): the
 * default router id. Undefined when it has none.
 */
export async function firstIpv4(): Promise<string | undefined> {
  const r = await runCommand(["ip", "-j", "-4", "addr", "show"], { timeoutMs: 5000 });
  if (r.code !== 0) return undefined;
  try {
    const links = JSON.parse(r.stdout) as { addr_info?: { local?: string; scope?: string }[] }[];
    for (const l of links) {
      for (const a of l.addr_info ?? []) if (a.scope === "global" && a.local) return a.local;
    }
  } catch { /* no JSON: none */ }
  return undefined;
}

/** Where a supervised BIRD's events go. */
export interface BirdLog {
  notice(msg: string): void;
  warning(msg: string): void;
  error(msg: string): void;
  info(msg: string): void;
}

/**
 * Kills a BIRD left running by an earlier run of the same config (the agent
 * was killed): the pid file names it, and its command line must name our
 * configuration file, so nothing else is ever signalled.
 */
export async function killStaleBird(p: BirdPaths): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number(Deno.readTextFileSync(p.pid).trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  let cmdline = "";
  try {
    cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
  } catch {
    return undefined;
  }
  if (!cmdline.split("\0").includes(p.conf)) return undefined;
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    return undefined;
  }
  for (let i = 0; i < 50; i++) { // bounded: 1 s
    try {
      Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    } catch {
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return pid;
}

/**
 * bird as a child of `nfqlb run`: `bird -f -c CONF -s CTL -P PID`, its
 * stderr (the log) in run's log, started again when it exits, at once the
 * first time and with the dataplane's back-off when it keeps exiting.
 */
export class BirdProcess {
  readonly #paths: BirdPaths;
  readonly #log: BirdLog;
  #child: Deno.ChildProcess | undefined;
  #since = 0;
  #streak = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  /** Restarts after it exited on its own. */
  restarts = 0;

  constructor(paths: BirdPaths, log: BirdLog) {
    this.#paths = paths;
    this.#log = log;
  }

  /** The pid of the running bird, or undefined. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts bird (the configuration file must exist); false when it cannot be started. */
  start(): boolean {
    if (this.#stopped) return false;
    const p = this.#paths;
    try {
      Deno.removeSync(p.ctl);
    } catch { /* none */ }
    let child: Deno.ChildProcess;
    try {
      const args = ["-f", "-c", p.conf, "-s", p.ctl, "-P", p.pid];
      // bird dies with us: a SIGKILLed `nfqlb run` must not leave it announcing VIPs that nothing checks any
      // more (util-linux's setpriv sets the parent-death signal, then execs bird: same pid)
      const setpriv = onPath("setpriv");
      child = new Deno.Command(setpriv ? "setpriv" : BIRD, {
        args: setpriv ? ["--pdeathsig", "TERM", BIRD, ...args] : args,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      this.#log.error(`bgp: cannot start ${BIRD}: ${errorText(e)}`);
      this.#schedule();
      return false;
    }
    this.#child = child;
    this.#since = Date.now();
    this.#log.info(`bgp: + start ${BIRD} -f -c ${p.conf} -s ${p.ctl} (pid ${child.pid})`);
    this.#pipe(child.stdout);
    this.#pipe(child.stderr);
    child.status.then((st) => this.#exited(child, st)).catch(() => {});
    return true;
  }

  async #pipe(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of stream) {
        buf += dec.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trimEnd();
          buf = buf.slice(nl + 1);
          // BIRD's own time stamp is dropped: the agent's log line has one
          if (line) this.#log.info(`bird: ${line.replace(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? /, "")}`);
        }
        if (buf.length > 65536) buf = ""; // bounded: a line that long is not a log line
      }
    } catch { /* closed */ }
  }

  #exited(child: Deno.ChildProcess, st: Deno.CommandStatus): void {
    if (this.#child !== child) return;
    this.#child = undefined;
    if (this.#stopped) return;
    const lived = Date.now() - this.#since;
    this.#streak = lived >= STABLE_MS ? 1 : this.#streak + 1;
    const how = st.signal ? `signal ${st.signal}` : `status ${st.code}`;
    const delay = backoffMs(this.#streak);
    this.#log.error(
      `bgp: bird (pid ${child.pid}) exited: ${how} after ${(lived / 1000).toFixed(1)} s; restarting${
        delay ? ` in ${delay} ms` : ""
      }`,
    );
    this.#schedule(delay);
  }

  #schedule(delay = backoffMs(++this.#streak)): void {
    if (this.#stopped) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.restarts++;
      this.start();
    }, delay);
  }

  /** Stops bird (SIGTERM, then SIGKILL after 2 s) and its restarts; removes its socket and pid file. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const child = this.#child;
    this.#child = undefined;
    if (child) {
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      const killer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
      }, 2000);
      try {
        await child.status;
      } finally {
        clearTimeout(killer);
      }
    }
    for (const f of [this.#paths.ctl, this.#paths.pid]) {
      try {
        Deno.removeSync(f);
      } catch { /* gone */ }
    }
  }
}
