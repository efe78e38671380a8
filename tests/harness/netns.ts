/**
 * Network namespaces for the lab: creating them with the lab's sysctls,
 * veth pairs, `ip -batch` configuration, reading kernel state inside one
 * (NFQUEUE bindings, iptables / rules / routes snapshots), and deleting them
 * together with whatever still runs inside. The functions that configure a
 * namespace take the {@link Runner} to run their commands with (a lab's
 * process group, or plain `run`), so a lab's commands are never run past it.
 *
 * Lab names carry the creating process's pid (`nfqe-<pid>-…`), so
 * {@link sweepStale} can remove what an earlier, killed run left behind.
 */
import { pidAlive, run, type Runner } from "./process.ts";

/** True when running as root (needed for namespaces). */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

let skipNoted = false;

/** Prints (once) why root-only tests are skipped; returns whether to ignore them. */
export function skipUnlessRoot(): boolean {
  const root = isRoot();
  if (!root && !skipNoted) {
    skipNoted = true;
    console.log("e2e: skipped, needs root (network namespaces, veth, iptables); run as root to include them");
  }
  return !root;
}

/** `ip netns exec ns args...`. */
export function inNetns(ns: string, args: string[]): string[] {
  return ["ip", "netns", "exec", ns, ...args];
}

/** Sysctls of every lab namespace: no reverse-path filter, no DAD, no router advertisements. */
export const LAB_SYSCTLS = [
  "net.ipv4.conf.all.rp_filter=0",
  "net.ipv4.conf.default.rp_filter=0",
  "net.ipv6.conf.all.accept_dad=0",
  "net.ipv6.conf.default.accept_dad=0",
  "net.ipv6.conf.all.accept_ra=0",
  "net.ipv6.conf.default.accept_ra=0",
];

/** `sysctl -qw kv...` in `ns`. */
export async function sysctl(ns: string, kv: string[], runner: Runner): Promise<void> {
  await runner(inNetns(ns, ["sysctl", "-qw", ...kv]));
}

/** Creates namespace `ns` and sets {@link LAB_SYSCTLS} in it. */
export async function addNamespace(ns: string, runner: Runner): Promise<void> {
  await runner(["ip", "netns", "add", ns]);
  await sysctl(ns, LAB_SYSCTLS, runner);
}

/** A veth pair created directly inside the namespaces: `a` in `aNs`, its peer `b` in `bNs`. */
export async function addVeth(
  a: string,
  aNs: string,
  b: string,
  bNs: string,
  runner: Runner,
): Promise<void> {
  await runner(["ip", "link", "add", a, "netns", aNs, "type", "veth", "peer", "name", b, "netns", bNs]);
}

/** `ip -n ns -batch`; lines starting with "-6 " go to a second `ip -6` batch (run after the first). */
export async function ipBatch(ns: string, lines: string[], runner: Runner): Promise<void> {
  const v4 = lines.filter((l) => !l.startsWith("-6 "));
  const v6 = lines.filter((l) => l.startsWith("-6 ")).map((l) => l.slice(3));
  if (v4.length) await runner(["ip", "-n", ns, "-batch", "-"], { stdin: v4.join("\n") + "\n" });
  if (v6.length) await runner(["ip", "-n", ns, "-6", "-batch", "-"], { stdin: v6.join("\n") + "\n" });
}

/**
 * Removes what earlier runs of this suite left behind when they were killed
 * before their cleanup: namespaces named `nfqe-<pid>-*` and directories
 * `/dev/shm/nfqe-<pid>-*` (and /tmp) whose creator process is gone.
 */
export async function sweepStale(): Promise<void> {
  const r = await run(["ip", "netns", "list"], { allowFail: true });
  for (const line of r.stdout.split("\n")) {
    const name = line.split(" ")[0];
    const m = /^nfqe-(\d+)-\d+-/.exec(name);
    if (!m || Number(m[1]) === Deno.pid || pidAlive(Number(m[1]))) continue;
    await deleteNamespace(name);
  }
  for (const dir of ["/dev/shm", Deno.env.get("TMPDIR") ?? "/tmp"]) {
    try {
      for (const e of Deno.readDirSync(dir)) {
        const m = /^nfqe-(\d+)-/.exec(e.name);
        if (!m || !e.isDirectory || Number(m[1]) === Deno.pid || pidAlive(Number(m[1]))) continue;
        Deno.removeSync(`${dir}/${e.name}`, { recursive: true });
      }
    } catch { /* not readable */ }
  }
}

/** Kills what still runs inside namespace `ns` (only ever called for our own namespaces), then deletes it. */
export async function deleteNamespace(ns: string): Promise<void> {
  const pids = await run(["ip", "netns", "pids", ns], { allowFail: true, timeoutMs: 10_000 });
  for (const p of pids.stdout.split(/\s+/).filter((x) => /^\d+$/.test(x))) {
    try {
      Deno.kill(Number(p), "SIGKILL");
    } catch { /* gone */ }
  }
  await run(["ip", "netns", "del", ns], { allowFail: true, timeoutMs: 10_000 });
}

/**
 * {@link deleteNamespace} without awaiting anything, for a last-resort
 * `unload` handler (where no promise settles any more). Never throws.
 */
export function deleteNamespaceSync(ns: string): void {
  const sync = (args: string[]) => {
    try {
      return new TextDecoder().decode(new Deno.Command(args[0], { args: args.slice(1) }).outputSync().stdout);
    } catch {
      return "";
    }
  };
  for (const p of sync(["ip", "netns", "pids", ns]).split(/\s+/).filter((x) => /^\d+$/.test(x))) {
    try {
      Deno.kill(Number(p), "SIGKILL");
    } catch { /* gone */ }
  }
  sync(["ip", "netns", "del", ns]);
}

/** The inode of a network namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`), or undefined. */
export function netnsInode(path: string): number | undefined {
  try {
    return Deno.statSync(path).ino ?? undefined;
  } catch {
    return undefined;
  }
}

/** One line of /proc/net/netfilter/nfnetlink_queue. */
export interface QueueStat {
  queue: number;
  portid: number;
  total: number;
  dropped: number;
  userDropped: number;
  /** id_sequence: packets handed to this queue so far. */
  seq: number;
}

/** Parses /proc/net/netfilter/nfnetlink_queue. */
export function parseQueueStats(text: string): Map<number, QueueStat> {
  const m = new Map<number, QueueStat>();
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/).map(Number);
    if (f.length < 8 || f.some((x) => Number.isNaN(x))) continue;
    m.set(f[0], { queue: f[0], portid: f[1], total: f[2], dropped: f[5], userDropped: f[6], seq: f[7] });
  }
  return m;
}

/** The NFQUEUE queues bound in `ns` (its /proc/net/netfilter/nfnetlink_queue, parsed; empty when unreadable). */
export async function queueStats(ns: string, runner: Runner): Promise<Map<number, QueueStat>> {
  const r = await runner(inNetns(ns, ["cat", "/proc/net/netfilter/nfnetlink_queue"]), { allowFail: true });
  return parseQueueStats(r.stdout);
}

/** Built-in chain declarations: a table holding only these is empty. */
const BUILTIN_DECL = /^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) \S+$/;

/**
 * iptables-save of a family without comments and counters, and without
 * empty tables: iptables-nft keeps a table once a command touched it, and an
 * empty one holds no rule.
 */
async function saveText(ns: string, family: 4 | 6): Promise<string> {
  const text = (await run(inNetns(ns, [family === 4 ? "iptables-save" : "ip6tables-save"]))).stdout;
  const out: string[] = [];
  let block: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/ \[\d+:\d+\]$/, "");
    if (line.startsWith("#") || line === "") continue;
    block.push(line);
    if (line === "COMMIT") {
      if (block.some((l) => !l.startsWith("*") && l !== "COMMIT" && !BUILTIN_DECL.test(l))) {
        out.push(...block);
      }
      block = [];
    }
  }
  return out.join("\n");
}

/** Everything of a namespace the plumbing could touch, as text: iptables, ip rules and routes, both families. */
export async function snapshot(ns: string): Promise<Record<string, string>> {
  const ip = async (args: string[]) => (await run(["ip", "-n", ns, ...args])).stdout;
  return {
    iptables: await saveText(ns, 4),
    ip6tables: await saveText(ns, 6),
    rules4: await ip(["rule", "show"]),
    rules6: await ip(["-6", "rule", "show"]),
    routes4: await ip(["route", "show", "table", "all"]),
    routes6: await ip(["-6", "route", "show", "table", "all"]),
  };
}
