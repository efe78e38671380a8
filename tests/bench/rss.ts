/**
 * Bench `rss`: resident memory of a running `nfqlb lb` with one queue.
 *
 * Ours: `ip netns exec NS scripts/nfqlb lb --tshm=bench --queue=7
 * --ft_shm=bench-ft` in a private network namespace (its NFQUEUE 7 is its
 * own), on a Meridio-sized table (M=9973, N=100, 10 rows active) in a temp
 * NFQLB_SHM_DIR. Once it prints its `queue_length=` line the queue is bound;
 * VmRSS of the process is read then and again after 1 s without traffic
 * (the worker has started and mapped the table by then). Then SIGTERM, which
 * must end it with status 0.
 * Baseline: `deno run` of tests/bench/sleep.ts with the wrapper's flags, read
 * 1 s after it printed its line. RssAnon (heap, stacks) is reported beside
 * VmRSS, which also counts the pages of the deno binary that were touched.
 *
 * Needs root (network namespaces, NFQUEUE); otherwise the section is skipped.
 */
import { TargetShm } from "../../core/target_shm.ts";
import type { SectionResult } from "./lookup.ts";
import { goal, type Row, summarize } from "./report.ts";
import { NFQLB } from "../harness/paths.ts";

/** Rounds; each runs the lb and the baseline once. */
const ROUNDS = 3;
/** How long to wait for the start-up line. */
const START_TIMEOUT_MS = 10_000;
/** Idle time before the second reading. */
const IDLE_MS = 1000;
const M = 9973, N = 100, TARGETS = 10;
/** NFQUEUE number the lb binds (in its own namespace). */
const QUEUE = 7;

/** Memory figures of one process, in kB as /proc/PID/status gives them. */
interface MemKb {
  vmRss: number;
  rssAnon: number;
  vmHwm: number;
  threads: number;
}

function readMem(pid: number): MemKb {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status);
    if (!m) throw new Error(`/proc/${pid}/status has no ${name}`);
    return Number(m[1]);
  };
  return {
    vmRss: field("VmRSS"),
    rssAnon: field("RssAnon"),
    vmHwm: field("VmHWM"),
    threads: field("Threads"),
  };
}

function cmdline(pid: number): string[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter((s) => s !== "");
  } catch {
    return [];
  }
}

/** Direct children of pid, by scanning /proc (field 4 of /proc/P/stat is the parent). */
function children(pid: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/**
 * The process of pid's tree (pid first) whose command line satisfies `is`.
 * `ip netns exec` and the wrapper both exec, so normally that is pid itself.
 */
function findProcess(pid: number, is: (argv: string[]) => boolean): number | undefined {
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    if (is(cmdline(p))) return p;
    queue.push(...children(p));
  }
  return undefined;
}

/** A started process whose output is collected, with a wait for a line. */
interface Started {
  child: Deno.ChildProcess;
  /** Resolves true when stdout matched, false after the timeout or at EOF. */
  ready: Promise<boolean>;
  /** Everything read so far. */
  out: () => string;
  err: () => string;
  /** Resolves when both pipes reached EOF. */
  drained: Promise<void>;
}

function start(cmd: string, args: string[], env: Record<string, string>, line: RegExp): Started {
  const child = new Deno.Command(cmd, { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  let out = "", err = "";
  let resolveReady: (ok: boolean) => void = () => {};
  const ready = new Promise<boolean>((r) => (resolveReady = r));
  const timer = setTimeout(() => resolveReady(false), START_TIMEOUT_MS);
  ready.then(() => clearTimeout(timer));
  const read = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    for await (const t of s.pipeThrough(new TextDecoderStream())) add(t);
  };
  const drained = Promise.all([
    read(child.stdout, (t) => {
      out += t;
      if (line.test(out)) resolveReady(true);
    }),
    read(child.stderr, (t) => (err += t)),
  ]).then(() => resolveReady(false)); // EOF without the line (a later call is a no-op)
  return { child, ready, out: () => out, err: () => err, drained };
}

/** Sends SIGTERM and waits up to 5 s for the exit (then SIGKILL). Returns the exit code, or -1 when killed. */
async function terminate(s: Started): Promise<number> {
  try {
    s.child.kill("SIGTERM");
  } catch { /* already gone */ }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const killed = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), 5000)));
  const r = await Promise.race([s.child.status, killed]);
  clearTimeout(timer);
  if (r === "timeout") {
    try {
      s.child.kill("SIGKILL");
    } catch { /* gone */ }
    await s.child.status;
    await s.drained;
    return -1;
  }
  await s.drained;
  return r.code;
}

async function sh(cmd: string, args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" }).output();
  if (!r.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** kB → MB (10^6 bytes). */
const mb = (kb: number) => (kb * 1024) / 1e6;

/** What the RSS bench returns: a section, or the reason it was skipped. */
export interface RssResult extends SectionResult {
  /** Set when the section did not run. */
  skipped?: string;
}

/**
 * Runs the RSS bench (root only; otherwise returns `skipped`).
 * @param root repository root
 * @param deno path of the deno binary (for the baseline)
 */
export async function benchRss(root: string, deno: string): Promise<RssResult> {
  if (Deno.uid() !== 0) {
    return { rows: [], goals: [], checks: {}, skipped: "needs root for a network namespace" };
  }
  const ns = `nfqlb-bench-${Deno.pid}`;
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-bench-" });
  const env = { NFQLB_SHM_DIR: dir };
  const before = Deno.env.get("NFQLB_SHM_DIR");
  let nsMade = false;
  try {
    Deno.env.set("NFQLB_SHM_DIR", dir);
    try {
      TargetShm.create("bench", { M, N, ownFwmark: 0 });
      TargetShm.update("bench", (active) => {
        for (let i = 0; i < TARGETS; i++) active[i] = 101 + i;
        return true;
      });
    } finally {
      if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
      else Deno.env.set("NFQLB_SHM_DIR", before);
    }
    try {
      await sh("ip", ["netns", "add", ns]);
    } catch (e) {
      return { rows: [], goals: [], checks: {}, skipped: `ip netns add failed: ${(e as Error).message}` };
    }
    nsMade = true;
    return await measure(root, deno, ns, env);
  } finally {
    if (nsMade) {
      try {
        await sh("ip", ["netns", "del", ns]);
      } catch (e) {
        console.error(`rss: ${(e as Error).message}`);
      }
    }
    Deno.removeSync(dir, { recursive: true });
  }
}

async function measure(
  root: string,
  deno: string,
  ns: string,
  env: Record<string, string>,
): Promise<RssResult> {
  const lbArgs = ["lb", "--tshm=bench", `--queue=${QUEUE}`, "--ft_shm=bench-ft"];
  const denoFlags = ["run", "--quiet", "--no-prompt", "--allow-all", "--config", `${root}/deno.json`];
  const isLb = (argv: string[]) => lbArgs.every((a) => argv.includes(a)) && !argv.includes("netns");
  const s = {
    atLine: [] as number[],
    idle: [] as number[],
    idleAnon: [] as number[],
    hwm: [] as number[],
    base: [] as number[],
    baseAnon: [] as number[],
  };
  let started = true, found = true, exit0 = true, threads = 0;
  for (let round = 0; round < ROUNDS; round++) {
    // ours
    const lb = start("ip", ["netns", "exec", ns, NFQLB, ...lbArgs], env, /queue_length=/);
    try {
      if (!(await lb.ready)) {
        started = false;
        console.error(
          `rss: lb did not print queue_length= within ${START_TIMEOUT_MS} ms:\n${lb.out()}${lb.err()}`,
        );
        break;
      }
      const pid = findProcess(lb.child.pid, isLb);
      if (pid === undefined) {
        found = false;
        console.error(`rss: no lb process under pid ${lb.child.pid}`);
        break;
      }
      s.atLine.push(readMem(pid).vmRss);
      await sleep(IDLE_MS);
      const m = readMem(pid);
      s.idle.push(m.vmRss), s.idleAnon.push(m.rssAnon), s.hwm.push(m.vmHwm);
      threads = m.threads;
    } finally {
      const code = await terminate(lb);
      if (code !== 0) {
        exit0 = false;
        console.error(`rss: lb exited with ${code} after SIGTERM:\n${lb.err()}`);
      }
    }
    // baseline
    const base = start(deno, [...denoFlags, `${root}/tests/bench/sleep.ts`], env, /ready/);
    try {
      if (await base.ready) {
        await sleep(IDLE_MS);
        const m = readMem(base.child.pid);
        s.base.push(m.vmRss), s.baseAnon.push(m.rssAnon);
      }
    } finally {
      await terminate(base);
    }
  }
  const checks = {
    [`rss: lb bound queue ${QUEUE} (queue_length= line within ${START_TIMEOUT_MS / 1000} s)`]: started,
    "rss: the lb process found (cmdline verified)": found,
    "rss: lb exits 0 on SIGTERM": exit0,
  };
  if (!s.idle.length || !s.base.length) {
    return { rows: [], goals: [], checks: { ...checks, "rss: measured": false } };
  }
  const toMb = (v: number[]) => v.map(mb);
  const ours = summarize(toMb(s.idle)), oursAnon = summarize(toMb(s.idleAnon));
  const label = `lb --queue=${QUEUE}, M=${M}, ${threads} threads`;
  const row = (subject: string, v: number[], isOurs: boolean, vs?: number): Row => {
    const st = summarize(toMb(v));
    return {
      section: "rss",
      case: label,
      subject,
      unit: "MB",
      stats: st,
      ours: isOurs,
      ratio: vs === undefined ? undefined : vs / st.median,
    };
  };
  return {
    rows: [
      row(`VmRSS ${IDLE_MS / 1000} s after start, idle`, s.idle, true),
      row("VmRSS at the queue_length= line", s.atLine, true),
      row("VmHWM (peak) at that point", s.hwm, true),
      row(`baseline: deno run sleep.ts, VmRSS after ${IDLE_MS / 1000} s`, s.base, false, ours.median),
      row("RssAnon of lb (heap, stacks) after 1 s", s.idleAnon, true),
      row("RssAnon of deno run sleep.ts", s.baseAnon, false, oursAnon.median),
    ],
    goals: [goal("RSS of lb with one queue", ours.median, 80, "MB")],
    checks,
  };
}
