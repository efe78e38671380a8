/**
 * The live counters of a running lb/flowlb, in shared memory: the file
 * `${ft_shm}-counters` in our own directory (`<shm dir>/.nfqlb-deno/`, not
 * beside the fragment stats: `ftshm-counters` there would look like a target
 * table `tshm-…` to tools that list the shm directory; docs/shm.md). The C queue workers count straight
 * into it (nfqlb_queue_set_stats), without locks: one writer per queue, and
 * readers sum the queues. `nfqlb stats --all/--watch` and the metrics
 * endpoint read it. Layout: docs/observability.md, "Where the counters live".
 */
import { errorText, NfqlbError, strerror } from "./errors.ts";
import { log } from "./log.ts";
import { ensureOwnDir, ownPath } from "./shm_dir.ts";
import {
  createByRename,
  fileIdentity,
  mapFile,
  mappingFaults,
  readShmBytes,
  remapFile,
  unmap,
} from "./shm_file.ts";
import { type NFQLB_C_COUNT, NFQLB_TARGET_STAT_OFF, NFQLB_TARGET_STAT_SIZEOF } from "../ffi/consts.ts";

/** "NQCT": the first four bytes of a counters file (also recognised by core/shm_kinds.ts). */
export const COUNTERS_MAGIC = 0x5443514e;
const MAGIC = COUNTERS_MAGIC;
const VERSION = 1;
const HEADER = 64;
/** Per-target slots per queue (a power of 2). */
export const TARGET_SLOTS = 256;
/** One target slot (struct nfqlb_target_stat). */
const SLOT_BYTES = NFQLB_TARGET_STAT_SIZEOF;

/** Counter names, in the order of enum nfqlb_counter (c/nfqlb.h). */
export const COUNTER_NAMES = [
  "received",
  "accepted",
  "dropped",
  "malformed",
  "notarget",
  "frag_dropped",
  "enobufs",
  "recv_errors",
  "send_errors",
  "verdict_errors",
  "batches",
  "setup_dropped",
  "frag_stored",
  "frag_injected",
  "frag_inject_failed",
  "frag_tier",
  "nolb",
  "target_overflow",
  "table_errors",
] as const;
/**
 * One name per counter: compiles only while the counts agree
 * (tests/unit/consts_test.ts compares the names with the enum's).
 */
const _counters: typeof NFQLB_C_COUNT = COUNTER_NAMES.length;

/** One counter name. */
export type CounterName = (typeof COUNTER_NAMES)[number];

/** The counters file name of an lb whose fragment stats shm is `ftShm` (in our own directory: {@link ownPath}). */
export function countersShmName(ftShm: string): string {
  return `${ftShm}-counters`;
}

/**
 * Header offset of the number of offloaded-count slots after the queue blocks (0 in a file of an lb
 * from before offload counts: readers then see none; an older reader ignores the block).
 */
const KERNEL_SLOTS_OFF = 36;

function layout(nqueues: number, ncounters: number, kernelSlots = TARGET_SLOTS) {
  const queuesOff = HEADER;
  const blocksOff = queuesOff + Math.ceil((4 * nqueues) / 8) * 8;
  const block = 8 * ncounters + SLOT_BYTES * TARGET_SLOTS;
  const kernelOff = blocksOff + block * nqueues;
  return { queuesOff, blocksOff, block, kernelOff, size: kernelOff + SLOT_BYTES * kernelSlots };
}

/** File size of the counters of an lb with `nqueues` queues (as {@link createCountersShm} writes it). */
export function countersBytes(nqueues: number): number {
  return layout(nqueues, COUNTER_NAMES.length).size;
}

/** The writer side, held by the lb process. */
export interface CountersShm {
  /** Address of queue i's u64 counters. */
  counters(i: number): Deno.PointerObject;
  /** Address of queue i's target slots. */
  targets(i: number): Deno.PointerObject;
  /**
   * Writes the packets and bytes the kernel steered per fwmark (`--offload=auto`,
   * dataplane/offload_counters.ts): cumulative since this lb started; fwmarks beyond the
   * {@link TARGET_SLOTS} slots are left out (returns how many were).
   */
  setOffloaded(counts: readonly TargetCount[]): number;
  /**
   * Puts the file in place under its name (a rename over the file of an
   * earlier lb). Until then it lives beside it under a hidden name, so an lb
   * that fails to start (its queue bound by a running lb) never replaces the
   * counters that lb is writing.
   */
  publish(): void;
  /**
   * What is wrong with the published file now, or undefined (also before
   * publish()): truncated (the SIGBUS guard replaced the mapping), removed,
   * replaced, resized, or its header overwritten. A damaged file is never a
   * danger to the writers (the mapping stays valid memory); it only misleads
   * its readers. A file that another running lb has written under the name
   * (two lbs given one --ft_shm) is not damage: this lb leaves the name to
   * it, says so once, and counts on in its mapping alone.
   */
  damage(): string | undefined;
  /**
   * Writes the published file again (header and the counts the mapping
   * holds now, beside it and renamed over) and maps it at the same address,
   * so the C workers go on counting into it. Throws NfqlbError when it cannot.
   */
  repair(): void;
  /** Unmaps (a published file stays, so a stopped lb's counters can still be read; an unpublished one goes). */
  close(): void;
}

/** The header of a counters shm: what readCounters checks. */
function headerBytes(queues: number[], kind: "lb" | "flowlb", started: number): Uint8Array<ArrayBuffer> {
  const l = layout(queues.length, COUNTER_NAMES.length);
  const bytes = new Uint8Array(l.blocksOff);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, MAGIC, true);
  v.setUint16(4, VERSION, true);
  v.setUint16(6, HEADER, true);
  v.setUint32(8, queues.length, true);
  v.setUint32(12, COUNTER_NAMES.length, true);
  v.setUint32(16, TARGET_SLOTS, true);
  v.setUint32(20, Deno.pid, true);
  v.setBigUint64(24, BigInt(started), true);
  v.setUint32(32, kind === "lb" ? 0 : 1, true);
  v.setUint32(KERNEL_SLOTS_OFF, TARGET_SLOTS, true);
  queues.forEach((q, i) => v.setUint32(l.queuesOff + 4 * i, q, true));
  return bytes;
}

/** Whether process `pid` runs. */
function pidAlive(pid: number): boolean {
  try {
    return Deno.statSync(`/proc/${pid}`).isDirectory;
  } catch {
    return false;
  }
}

/** The pid in the header of counters shm `name`, or undefined when it is not one. */
function ownerPid(name: string): number | undefined {
  try {
    const s = readCounters(name);
    return s.pid;
  } catch {
    return undefined;
  }
}

/** Creates the counters shm of an lb with these queues, unpublished (see {@link CountersShm.publish}). */
export function createCountersShm(name: string, queues: number[], kind: "lb" | "flowlb"): CountersShm {
  const path = ownPath(name);
  // in our own directory, as createByRename builds its files (bounded: NAME_MAX)
  const tmp = `${path.slice(0, path.lastIndexOf("/"))}/tmp.${name.slice(0, 48)}.counters-${Deno.pid}`;
  const l = layout(queues.length, COUNTER_NAMES.length);
  const started = Date.now();
  const header = headerBytes(queues, kind, started);
  const bytes = new Uint8Array(l.size);
  bytes.set(header);
  let published = false;
  const discard = () => {
    if (published) return;
    try {
      Deno.removeSync(tmp);
    } catch { /* never created */ }
  };
  try {
    ensureOwnDir();
    Deno.writeFileSync(tmp, bytes, { mode: 0o600 });
  } catch (e) {
    discard();
    throw new NfqlbError(`createSharedData: ${name}: ${errorText(e)}`);
  }
  const m = mapFile(tmp, true);
  if (typeof m === "number") {
    discard();
    throw new NfqlbError(`createSharedData: ${name}: ${strerror(m)}`);
  }
  let ino = 0;
  let yielded = false;
  const mapped = () => new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(m.ptr, Number(m.size)));
  const at = (off: number) => Deno.UnsafePointer.offset(m.ptr, off) as Deno.PointerObject;
  return {
    counters: (i) => at(l.blocksOff + l.block * i),
    targets: (i) => at(l.blocksOff + l.block * i + 8 * COUNTER_NAMES.length),
    setOffloaded(counts) {
      // one writer (the lb's main thread); a reader copies the file and may see a slot mid-update,
      // off by the last refresh at most: the fwmark and counts go in before `used`
      const v = new DataView(mapped().buffer, l.kernelOff, SLOT_BYTES * TARGET_SLOTS);
      const n = Math.min(counts.length, TARGET_SLOTS);
      for (let i = 0; i < n; i++) {
        const o = SLOT_BYTES * i, c = counts[i];
        v.setInt32(o + NFQLB_TARGET_STAT_OFF.fwmark, c.fwmark, true);
        v.setBigUint64(o + NFQLB_TARGET_STAT_OFF.packets, c.packets, true);
        v.setBigUint64(o + NFQLB_TARGET_STAT_OFF.bytes, c.bytes, true);
        v.setUint32(o + NFQLB_TARGET_STAT_OFF.used, 1, true);
      }
      for (let i = n; i < TARGET_SLOTS; i++) {
        v.setUint32(SLOT_BYTES * i + NFQLB_TARGET_STAT_OFF.used, 0, true);
      }
      return counts.length - n;
    },
    publish: () => {
      if (published) return;
      try {
        Deno.renameSync(tmp, path);
        published = true;
      } catch (e) {
        throw new NfqlbError(`createSharedData: ${name}: ${errorText(e)}`);
      }
      ino = fileIdentity(path)?.ino ?? 0; // the rename keeps the inode: ours until someone replaces it
    },
    damage() {
      if (yielded || !published) return undefined;
      if (mappingFaults(m) > 0) return "truncated";
      const id = fileIdentity(path);
      if (!id) return "removed";
      if (id.ino !== ino) {
        const pid = ownerPid(name);
        if (pid !== undefined && pid !== Deno.pid && pidAlive(pid)) {
          yielded = true;
          log.warning(
            `${kind}: counters shm ${name}: now written by pid ${pid} (the same --ft_shm?); left to it`,
          );
          return undefined;
        }
        return "replaced by another file";
      }
      if (id.size !== l.size) return `resized to ${id.size} bytes`;
      const now = mapped().subarray(0, header.length);
      if (now.some((b, i) => b !== header[i])) return "header overwritten";
      return undefined;
    },
    repair() {
      if (!published) return;
      createByRename(path, name, "counters", BigInt(l.size), `createSharedData: ${name}`, (n) => {
        const out = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(n.ptr, l.size));
        out.set(mapped());
        out.set(header);
      });
      const e = remapFile(m, path, true);
      if (e !== 0) throw new NfqlbError(`createSharedData: ${name}: ${strerror(e)}`);
      ino = fileIdentity(path)?.ino ?? 0;
    },
    close: () => {
      unmap(m);
      discard();
    },
  };
}

/** Packets and bytes accepted with one fwmark. */
export interface TargetCount {
  fwmark: number;
  packets: bigint;
  bytes: bigint;
}

/** One queue's counters. */
export interface QueueCounters {
  queue: number;
  counters: Record<CounterName, bigint>;
  targets: TargetCount[];
}

/** A snapshot of an lb's counters. */
export interface CountersSnapshot {
  /**
   * Packets and bytes the kernel steered per fwmark without queueing them (`--offload=auto`,
   * docs/offload.md "Counters"); empty without offload. Not in any queue's counts.
   */
  offloaded: TargetCount[];
  pid: number;
  /** Whether that process still runs. */
  running: boolean;
  kind: "lb" | "flowlb";
  started: Date;
  queues: QueueCounters[];
}

/** Reads the counters file `name` (in our own directory); errors as upstream's `FAILED mapSharedData: <name>`. */
export function readCounters(name: string): CountersSnapshot {
  const bytes = readShmBytes(name, ownPath(name));
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < HEADER || v.getUint32(0, true) !== MAGIC || v.getUint16(4, true) !== VERSION) {
    throw new NfqlbError(`FAILED mapSharedData: ${name}: not an nfqlb counters shm`);
  }
  const nq = v.getUint32(8, true), nc = v.getUint32(12, true), slots = v.getUint32(16, true);
  if (nc !== COUNTER_NAMES.length || slots !== TARGET_SLOTS) {
    throw new NfqlbError(`FAILED mapSharedData: ${name}: written by another nfqlb version`);
  }
  const kslots = v.getUint32(KERNEL_SLOTS_OFF, true);
  if (kslots !== 0 && kslots !== TARGET_SLOTS) {
    throw new NfqlbError(`FAILED mapSharedData: ${name}: written by another nfqlb version`);
  }
  const l = layout(nq, nc, kslots);
  if (bytes.length < l.size) throw new NfqlbError(`FAILED mapSharedData: ${name}: truncated file`);
  const pid = v.getUint32(20, true);
  const running = pidAlive(pid);
  const queues: QueueCounters[] = [];
  for (let i = 0; i < nq; i++) {
    const base = l.blocksOff + l.block * i;
    const counters = Object.fromEntries(
      COUNTER_NAMES.map((n, k) => [n, v.getBigUint64(base + 8 * k, true)]),
    ) as Record<CounterName, bigint>;
    const targets: TargetCount[] = [];
    for (let s = 0; s < slots; s++) {
      const o = base + 8 * nc + SLOT_BYTES * s;
      if (v.getUint32(o + NFQLB_TARGET_STAT_OFF.used, true) === 0) continue;
      targets.push({
        fwmark: v.getInt32(o + NFQLB_TARGET_STAT_OFF.fwmark, true),
        packets: v.getBigUint64(o + NFQLB_TARGET_STAT_OFF.packets, true),
        bytes: v.getBigUint64(o + NFQLB_TARGET_STAT_OFF.bytes, true),
      });
    }
    targets.sort((a, b) => a.fwmark - b.fwmark);
    queues.push({ queue: v.getUint32(l.queuesOff + 4 * i, true), counters, targets });
  }
  const offloaded: TargetCount[] = [];
  for (let s = 0; s < kslots; s++) {
    const o = l.kernelOff + SLOT_BYTES * s;
    if (v.getUint32(o + NFQLB_TARGET_STAT_OFF.used, true) === 0) continue;
    offloaded.push({
      fwmark: v.getInt32(o + NFQLB_TARGET_STAT_OFF.fwmark, true),
      packets: v.getBigUint64(o + NFQLB_TARGET_STAT_OFF.packets, true),
      bytes: v.getBigUint64(o + NFQLB_TARGET_STAT_OFF.bytes, true),
    });
  }
  offloaded.sort((a, b) => a.fwmark - b.fwmark);
  return {
    offloaded,
    pid,
    running,
    kind: v.getUint32(32, true) === 0 ? "lb" : "flowlb",
    started: new Date(Number(v.getBigUint64(24, true))),
    queues,
  };
}

/**
 * Per-target totals over all queues, by fwmark: what reached user space, and with `offloaded` also what
 * the kernel steered (`stats`: the sum per target, docs/offload.md "Counters").
 */
export function targetTotals(s: CountersSnapshot, opts: { offloaded?: boolean } = {}): TargetCount[] {
  const m = new Map<number, TargetCount>();
  const lists = s.queues.map((q) => q.targets);
  if (opts.offloaded) lists.push(s.offloaded);
  for (const targets of lists) {
    for (const t of targets) {
      const e = m.get(t.fwmark) ?? { fwmark: t.fwmark, packets: 0n, bytes: 0n };
      e.packets += t.packets;
      e.bytes += t.bytes;
      m.set(t.fwmark, e);
    }
  }
  return [...m.values()].sort((a, b) => a.fwmark - b.fwmark);
}

/** Counter totals over all queues. */
export function counterTotals(s: CountersSnapshot): Record<CounterName, bigint> {
  const out = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0n])) as Record<CounterName, bigint>;
  for (const q of s.queues) for (const n of COUNTER_NAMES) out[n] += q.counters[n];
  return out;
}

/** The kernel's view of NFQUEUE queues (this network namespace): /proc/net/netfilter/nfnetlink_queue. */
export interface KernelQueue {
  queue: number;
  portid: number;
  waiting: number;
  copyMode: number;
  copyRange: number;
  queueDropped: number;
  userDropped: number;
  idSequence: number;
}

/** Parses /proc/net/netfilter/nfnetlink_queue (empty when unreadable). */
export function kernelQueues(): KernelQueue[] {
  let text = "";
  try {
    text = Deno.readTextFileSync("/proc/net/netfilter/nfnetlink_queue");
  } catch {
    return [];
  }
  return text.trim().split("\n").filter((l) => l.trim()).map((line) => {
    const f = line.trim().split(/\s+/).map(Number);
    return {
      queue: f[0],
      portid: f[1],
      waiting: f[2],
      copyMode: f[3],
      copyRange: f[4],
      queueDropped: f[5],
      userDropped: f[6],
      idSequence: f[7],
    };
  });
}
