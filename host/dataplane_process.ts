/**
 * The dataplane process of an applied config: the lb / flowlb command line a
 * config asks for, and starting, finding and stopping that process. apply
 * starts it detached (it outlives apply), logging to the config's log file.
 */
import type { DataplaneOptions, HostConfig } from "./config/types.ts";
import { NfqlbError } from "../core/errors.ts";
import { hostNames } from "./names.ts";

/** How to run this nfqlb again: the compiled binary, scripts/nfqlb, or deno + cli/main.ts. */
export function selfCommand(): string[] {
  const argv0 = Deno.env.get("NFQLB_ARGV0");
  if (argv0 && argv0.includes("/")) return [argv0];
  const exe = Deno.execPath();
  if (!/(^|\/)deno$/.test(exe)) return [exe]; // deno compile: the binary is nfqlb
  const main = new URL("../cli/main.ts", import.meta.url).pathname;
  const config = new URL("../deno.json", import.meta.url).pathname;
  return [exe, "run", "--quiet", "--no-prompt", "--allow-all", "--config", config, main];
}

const OPTION_NAMES: Record<keyof DataplaneOptions, string | null> = {
  mtu: "mtu",
  qlength: "qlength",
  tun: "tun",
  lbshm: "lbshm",
  reassembler: "reassembler",
  notargetsFwmark: "notargets_fwmark",
  hashMode: "hash_mode",
  ftShm: "ft_shm",
  ftSize: "ft_size",
  ftBuckets: "ft_buckets",
  ftFrag: "ft_frag",
  ftTtl: "ft_ttl",
  traceAddress: "trace_address",
  failOpen: "fail_open",
  batch: "batch",
  metrics: "metrics",
  sctpEncap: "sctp_encap",
  nolbFwmark: "nolb_fwmark",
  promiscuous: "promiscuous_ping",
  flowAddress: null, // an environment variable, not an option
};

/**
 * The arguments of the dataplane command a config asks for (after the
 * program name), in a fixed order so that two runs compare equal.
 *
 * @example
 * ```ts
 * dataplaneArgs(cfg); // ["--queue=2", "--tshm=web", "--mtu=9000"]
 * ```
 */
export function dataplaneArgs(cfg: HostConfig): string[] {
  const d = cfg.dataplane;
  const args = [`--queue=${d.queue}`];
  if (d.program === "lb") args.push(`--tshm=${cfg.services[0].name}`);
  for (const [key, opt] of Object.entries(OPTION_NAMES) as [keyof DataplaneOptions, string | null][]) {
    const v = d.options[key];
    if (v === undefined || opt === null || v === false) continue;
    args.push(v === true ? `--${opt}` : `--${opt}=${v}`);
  }
  // decide each connection once: the plumbing saves the verdict's mark in the kernel connection
  if (d.offload === "auto") args.push("--offload=auto");
  return args;
}

/**
 * The environment of the dataplane process: flowlb's flow server address
 * (the file's, else derived from the config's name), never the one apply
 * itself was given, so that the config's flowlb is where its state says.
 */
export function dataplaneEnv(cfg: HostConfig): Record<string, string> {
  const a = hostNames(cfg).flowAddress;
  return a ? { NFQLB_FLOW_ADDRESS: a } : {};
}

/** The fragment-stats shm the dataplane creates (its --ft_shm: the file's, else `ftshm.<name>`). */
export function ftShmOf(cfg: HostConfig): string {
  return hostNames(cfg).ftShm;
}

/** The command line of a live process, or undefined when there is no such process. */
function cmdline(pid: number): string[] | undefined {
  try {
    const raw = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    if (raw === "") return undefined; // a zombie
    return raw.replace(/\0$/, "").split("\0");
  } catch {
    return undefined;
  }
}

/**
 * Whether `pid` is the dataplane started with `program args` (a reused pid
 * runs something else: then not).
 */
export function isDataplane(pid: number | null, program: string, args: readonly string[]): boolean {
  if (pid === null || pid <= 0) return false;
  const cl = cmdline(pid);
  if (!cl) return false;
  const at = cl.lastIndexOf(program);
  if (at < 0) return false;
  const tail = cl.slice(at + 1);
  return tail.length === args.length && tail.every((a, i) => a === args[i]);
}

/** Whether a process exists (any). */
export function alive(pid: number): boolean {
  return cmdline(pid) !== undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The exit of every dataplane this process started and that has not exited yet, by pid. */
const started = new Map<number, Promise<Deno.CommandStatus>>();

/**
 * Resolves when a dataplane that this process started exits (the supervisor
 * of `nfqlb run` learns of a crash at once instead of polling); undefined for
 * a process started elsewhere (an earlier apply or run) or already gone.
 */
export function exitOf(pid: number): Promise<Deno.CommandStatus> | undefined {
  return started.get(pid);
}

function logTail(log: string, lines = 5): string {
  try {
    const all = Deno.readTextFileSync(log).trimEnd().split("\n");
    return all.slice(-lines).join(" | ");
  } catch {
    return "(no log)";
  }
}

/**
 * A log over this size is moved to `<log>.1` (one generation; an older `.1` goes) when a dataplane is started
 * on it: the lb writes events, not packets, so this bounds what a host that restarts its lb for months keeps,
 * at most twice this per config. `nfqlb run` follows the new file from its start (host/run/log_tail.ts).
 */
export const LOG_ROTATE_BYTES = 4 * 1024 * 1024;

/** Moves `log` to `log.1` when it has grown over {@link LOG_ROTATE_BYTES}; any failure leaves it appending. */
export function rotateLog(log: string, limit = LOG_ROTATE_BYTES): boolean {
  try {
    if (Deno.statSync(log).size <= limit) return false;
    Deno.renameSync(log, `${log}.1`);
    return true;
  } catch {
    return false; // no log yet, or a read-only directory: appending goes on as before
  }
}

/**
 * Starts `program args` detached, appending its output to `log`, and waits
 * (at most `timeoutMs`) until it has bound all `queues` (its
 * `queue_length=` lines). Returns the pid. If it exits first, throws one line
 * with the end of its log.
 */
export async function startDataplane(
  program: "lb" | "flowlb",
  args: readonly string[],
  o: {
    log: string;
    env: Record<string, string>;
    queues: number;
    timeoutMs?: number;
    /** Called with the pid as soon as the process exists (apply records it before waiting for the queues). */
    onSpawn?: (pid: number) => void;
  },
): Promise<number> {
  rotateLog(o.log);
  let before = 0;
  try {
    before = Deno.statSync(o.log).size;
  } catch { /* new log */ }
  const child = new Deno.Command("sh", {
    // exec: the pid we get is the dataplane's; detached: its own session, so it outlives apply
    args: ["-c", 'exec "$@" >>"$NFQLB_LOG" 2>&1 </dev/null', "sh", ...selfCommand(), program, ...args],
    env: { ...o.env, NFQLB_LOG: o.log },
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  const pid = child.pid;
  const deadline = Date.now() + (o.timeoutMs ?? 30_000);
  let exited: Deno.CommandStatus | undefined;
  started.set(pid, child.status);
  child.status.then((s) => {
    exited = s;
    started.delete(pid);
  });
  o.onSpawn?.(pid);
  for (let i = 0; i < 3000 && Date.now() < deadline; i++) {
    if (exited) {
      throw new NfqlbError(`${program} exited (${exited.code}) at start: ${logTail(o.log)}`);
    }
    let bound = 0;
    try {
      const text = Deno.readTextFileSync(o.log).slice(before);
      bound = text.split("\n").filter((l) => l.startsWith("queue_length=")).length;
    } catch { /* not written yet */ }
    if (bound >= o.queues) return pid;
    await sleep(20);
  }
  try {
    Deno.kill(pid, "SIGTERM");
  } catch { /* gone */ }
  throw new NfqlbError(
    `${program} did not bind its queues within ${(o.timeoutMs ?? 30_000) / 1000} s: ${logTail(o.log)}`,
  );
}

/** Stops a dataplane: SIGTERM, then SIGKILL after `graceMs`. Returns once the process is gone (bounded). */
export async function stopDataplane(pid: number, graceMs = 10_000): Promise<void> {
  if (!alive(pid)) return;
  try {
    Deno.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  for (let i = 0; i < 2000 && Date.now() < deadline; i++) {
    if (!alive(pid)) return;
    await sleep(10);
  }
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
  for (let i = 0; i < 200 && alive(pid); i++) await sleep(10);
}
