/**
 * What `nfqlb apply` checks before it changes anything (docs/apply.md
 * "All or nothing"): that no other config recorded on the host holds what
 * this one needs, that it may change the network (CAP_NET_ADMIN), that the
 * programs it runs exist, that the shm directory takes the files it creates,
 * and that no other process holds its queues. Each failure is one line that
 * ends in `nothing was changed`.
 */
import { NfqlbError } from "../core/errors.ts";
import { kernelQueues } from "../core/counters_shm.ts";
import { ownDir, type ShmSpace, shmSpace } from "../core/shm_dir.ts";
import { type ClaimingConfig, type Claims, findClash } from "./claims.ts";
import { listStates, readState, stateClaims } from "./state.ts";

/** How every refusal of the checks ends. */
export const NOTHING_CHANGED = "nothing was changed";

/** One file a config keeps in the shm directory. */
export interface ShmFile {
  /** As the output names it (`web`, `.nfqlb-deno/web-ct`). */
  name: string;
  /** Its size. */
  bytes: number;
  /** Whether this apply creates it (new, replaced, or rewritten by a dataplane that starts). */
  creates: boolean;
}

/** Bytes as people read them: `8.8 kB`, `8.1 MB`, `1.2 GB` (powers of 1000, as `init`'s `needs N MB`). */
export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e5) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e3).toFixed(1)} kB`;
}

/** A file's room on the file system: whole blocks (tmpfs allocates pages). */
function onDisk(bytes: number, blockSize: number): number {
  return Math.ceil(bytes / blockSize) * blockSize;
}

/** What a config's files take in the shm directory. */
export interface ShmNeed {
  /** All of the config's files. */
  total: number;
  /** The files this apply creates. */
  creates: number;
  /** The file system's room. */
  space: ShmSpace;
}

/** Sums a config's files against the room in the shm directory. */
export function shmNeed(files: readonly ShmFile[]): ShmNeed {
  const space = shmSpace();
  let total = 0, creates = 0;
  for (const f of files) {
    const b = onDisk(f.bytes, space.blockSize);
    total += b;
    if (f.creates) creates += b;
  }
  return { total, creates, space };
}

/** The line apply and status print: `shm: 26.6 kB needed in /dev/shm (25.2 GB free)`. */
export function shmLine(n: ShmNeed): string {
  return `shm: ${formatBytes(n.total)} needed in ${n.space.dir} (${formatBytes(n.space.free)} free)`;
}

/**
 * The other recorded configs whose claims meet `claims`, as the one line of
 * {@link findClash}; undefined when none does.
 */
export function clashWithOthers(name: string, claims: Claims): string | undefined {
  return findClash({ name, file: "", claims }, recordedOthers(name));
}

/** The configs recorded on this host other than `name`, with their claims. */
export function recordedOthers(name: string): ClaimingConfig[] {
  return listStates().filter((n) => n !== name).flatMap((n) => {
    const st = readState(n);
    return st ? [{ name: st.name, file: st.file, claims: stateClaims(st) }] : [];
  });
}

/** The claims of the configs recorded on this host other than `name`. */
export function othersClaims(name: string): Claims[] {
  return recordedOthers(name).map((c) => c.claims);
}

/** Whether this process has CAP_NET_ADMIN in its effective set; undefined when /proc does not say. */
export function hasCapNetAdmin(): boolean | undefined {
  try {
    const m = /^CapEff:\s*([0-9a-fA-F]+)$/m.exec(Deno.readTextFileSync("/proc/self/status"));
    if (!m) return undefined;
    return ((BigInt(`0x${m[1]}`) >> 12n) & 1n) === 1n; // CAP_NET_ADMIN is capability 12
  } catch {
    return undefined;
  }
}

/** Whether `cmd` is an executable file in a directory of PATH. */
export function onPath(cmd: string): boolean {
  if (cmd.includes("/")) return executable(cmd);
  const dirs = (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").filter((d) => d);
  return dirs.some((d) => executable(`${d}/${cmd}`));
}

function executable(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0o755) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Whether the shm directory takes new files: creates and removes a hidden
 * probe file in it (in `.nfqlb-deno/` when that exists), since a read-only
 * mount answers access(2) as writable for root. Returns the reason when not.
 */
function unwritable(dir: string): string | undefined {
  let where = ownDir();
  try {
    if (!Deno.statSync(where).isDirectory) where = dir;
  } catch {
    where = dir;
  }
  const probe = `${where}/.nfqlb-probe-${Deno.pid}`;
  try {
    Deno.openSync(probe, { write: true, createNew: true, mode: 0o600 }).close();
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (e instanceof Deno.errors.NotFound) return "No such file or directory";
    if (e instanceof Deno.errors.PermissionDenied) return "Permission denied";
    if (code === "EROFS") return "Read-only file system";
    if (code === "ENOSPC") return "No space left on device";
    return e instanceof Error ? e.message : String(e);
  }
  try {
    Deno.removeSync(probe);
  } catch { /* gone */ }
  return undefined;
}

/** What {@link preflight} checks. */
export interface PreflightInput {
  /** The config file (the refusals start with it). */
  file: string;
  /** The config's name and claims (against the other recorded configs). */
  name: string;
  claims: Claims;
  /** The programs apply will run (plumbing, `sh` to start the dataplane). */
  commands: string[];
  /** The config's files in the shm directory. */
  files: ShmFile[];
  /** The queues a dataplane that this apply starts binds; undefined: it starts none. */
  bindsQueues?: { first: number; last: number };
  /** Queues our own running dataplane holds (it is stopped first, or it keeps them). */
  ownQueues?: { first: number; last: number };
  /** A dry run: no probe file. */
  dryRun?: boolean;
}

/**
 * Runs every check; throws the first failure as one NfqlbError line
 * `<file>: <what>; nothing was changed`. Returns the shm figures for the
 * `shm:` line.
 */
export function preflight(p: PreflightInput): ShmNeed {
  const refuse = (what: string): never => {
    throw new NfqlbError(`${p.file}: ${what}; ${NOTHING_CHANGED}`);
  };
  const clash = clashWithOthers(p.name, p.claims);
  if (clash) refuse(clash);
  if (hasCapNetAdmin() === false) {
    refuse(
      "apply needs CAP_NET_ADMIN (iptables rules, ip rules and routes, NFQUEUE), which this process lacks: run it as root or give it the capability",
    );
  }
  const missing = p.commands.filter((c) => !onPath(c));
  if (missing.length > 0) {
    refuse(
      `command${missing.length > 1 ? "s" : ""} not found in PATH: ${missing.join(", ")} (apply runs ${
        missing.length > 1 ? "them" : "it"
      })`,
    );
  }
  let need: ShmNeed;
  try {
    need = shmNeed(p.files);
  } catch (e) {
    return refuse(e instanceof Error ? e.message : String(e));
  }
  const dir = need.space.dir;
  if (need.creates > 0 && !p.dryRun) {
    const why = unwritable(dir);
    if (why) refuse(`${dir}: ${why} (apply keeps its tables there)`);
  }
  if (need.creates > need.space.free) {
    refuse(
      `${dir}: No space left on device (needs ${formatBytes(need.creates)}, ${
        formatBytes(need.space.free)
      } free; docs/apply.md "Sizing the shm directory")`,
    );
  }
  if (p.bindsQueues) {
    const own = p.ownQueues;
    const held = kernelQueues().filter((k) =>
      k.queue >= p.bindsQueues!.first && k.queue <= p.bindsQueues!.last &&
      !(own && k.queue >= own.first && k.queue <= own.last)
    );
    if (held.length > 0) {
      const k = held[0];
      refuse(
        `queue ${k.queue} is bound by another process (portid ${k.portid} in /proc/net/netfilter/nfnetlink_queue)${
          held.length > 1 ? ` (and ${held.length - 1} more of its queues)` : ""
        }`,
      );
    }
  }
  return need;
}
