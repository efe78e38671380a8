/**
 * The fragment-table statistics shm (`ftshm`), upstream's layout (docs/shm.md) so
 * that `nfqlb stats` reads what our lb and upstream's lb write alike.
 */
import { errorText, NfqlbError, strerror } from "./errors.ts";
import { log } from "./log.ts";
import { shmPath } from "./shm_dir.ts";
import {
  createByRename,
  fileIdentity,
  mapFile,
  mappingFaults,
  readShmBytes,
  remapFile,
  unmap,
} from "./shm_file.ts";
import {
  NFQLB_FTSTATS_BUCKETSALLOC,
  NFQLB_FTSTATS_BUCKETSMAX,
  NFQLB_FTSTATS_BUCKETSUSED,
  NFQLB_FTSTATS_COLLISIONS,
  NFQLB_FTSTATS_FRAGSALLOC,
  NFQLB_FTSTATS_FRAGSDISCARDED,
  NFQLB_FTSTATS_FRAGSMAX,
  NFQLB_FTSTATS_INSERTS,
  NFQLB_FTSTATS_LEN,
  NFQLB_FTSTATS_LOOKUPS,
  NFQLB_FTSTATS_MTU,
  NFQLB_FTSTATS_OBJGC,
  NFQLB_FTSTATS_REASSEMBLED,
  NFQLB_FTSTATS_REJECTED,
  NFQLB_FTSTATS_SIZE,
  NFQLB_FTSTATS_TTL,
} from "../ffi/consts.ts";

/** Size of the stats record. */
export const FRAG_STATS_BYTES = NFQLB_FTSTATS_LEN;

/** The counters, by upstream's printed names. */
export interface FragStats {
  /** Hash table size (`--ft_size`). */
  hsize: number;
  /** Entry lifetime after last use, ms (`--ft_ttl`). */
  ttlMillis: number;
  /** Inserts into an occupied slot. */
  collisions: number;
  /** Entries created (one per fragmented datagram). */
  inserts: number;
  /** Inserts refused because the extra-bucket pool was empty. */
  rejected: number;
  /** Fragments looked up (every fragment counts once). */
  lookups: number;
  /** Entries reclaimed after their TTL. */
  objGC: number;
  /** Copy range / largest storable fragment (`--mtu`). */
  mtu: number;
  /** Size of the extra-bucket pool (`--ft_buckets`). */
  bucketsMax: number;
  /** Extra buckets in use now. */
  bucketsAllocated: number;
  /** Most extra buckets ever in use at once. */
  bucketsUsed: number;
  /** Fragments that may be stored for re-injection (`--ft_frag`, 0 without `--tun`). */
  fragsMax: number;
  /** Fragments stored. */
  fragsAllocated: number;
  /** Stored fragments thrown away (datagram poisoned or expired). */
  fragsDiscarded: number;
  /** Datagrams completed by the reassembler. */
  reAssembled: number;
}

/** Decodes the record (c/nfqlb.h enum nfqlb_ftstat). */
export function decodeFragStats(b: Uint8Array): FragStats {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u = (o: number) => v.getUint32(o, true);
  return {
    hsize: u(NFQLB_FTSTATS_SIZE),
    ttlMillis: Number(v.getBigUint64(NFQLB_FTSTATS_TTL, true) / 1000000n),
    collisions: u(NFQLB_FTSTATS_COLLISIONS),
    inserts: u(NFQLB_FTSTATS_INSERTS),
    rejected: u(NFQLB_FTSTATS_REJECTED),
    lookups: u(NFQLB_FTSTATS_LOOKUPS),
    objGC: u(NFQLB_FTSTATS_OBJGC),
    mtu: u(NFQLB_FTSTATS_MTU),
    bucketsMax: u(NFQLB_FTSTATS_BUCKETSMAX),
    bucketsAllocated: u(NFQLB_FTSTATS_BUCKETSALLOC),
    bucketsUsed: u(NFQLB_FTSTATS_BUCKETSUSED),
    fragsMax: u(NFQLB_FTSTATS_FRAGSMAX),
    fragsAllocated: u(NFQLB_FTSTATS_FRAGSALLOC),
    fragsDiscarded: u(NFQLB_FTSTATS_FRAGSDISCARDED),
    reAssembled: u(NFQLB_FTSTATS_REASSEMBLED),
  };
}

/** Reads stats shm `name`; errors as upstream (`FAILED mapSharedData: <name>`). */
export function readFragStats(name: string): FragStats {
  const bytes = readShmBytes(name);
  if (bytes.length < FRAG_STATS_BYTES) {
    throw new NfqlbError(`FAILED mapSharedData: ${name}: not a frag-table stats shm (${bytes.length} bytes)`);
  }
  return decodeFragStats(bytes);
}

/**
 * Upstream's layout of the printout, made valid JSON (upstream misses the
 * comma after fragsDiscarded; docs/compatibility.md).
 */
export function formatFragStats(s: FragStats): string {
  const keys = Object.keys(s) as (keyof FragStats)[];
  const lines = keys.map((k, i) => `  ${`"${k}":`.padEnd(20)}${s[k]}${i < keys.length - 1 ? "," : ""}`);
  return `{\n${lines.join("\n")}\n}\n`;
}

/** The stats shm of a running lb (see {@link createFragStatsShm}). */
export interface FragStatsShm {
  /** The mapped record, for the C fragment table. */
  ptr: Deno.PointerObject;
  /**
   * What is wrong with the file now (truncated, removed, replaced, resized),
   * or undefined. Another stats record under the name (a second lb given the
   * same --ft_shm writes its own) is left to its writer, said once.
   */
  damage(): string | undefined;
  /** Writes the file again with the record as mapped now and maps it at the same address. */
  repair(): void;
  /** Unmaps it (the file stays for `nfqlb stats`). */
  close(): void;
}

/**
 * Creates (truncating) stats shm `name` with a zeroed record and maps it
 * read-write for a running lb; the fragment table keeps its counters there.
 * Upstream's layout has no header: damage() can tell only a truncated,
 * removed, replaced or resized file, not garbage in its counters.
 */
export function createFragStatsShm(name: string): FragStatsShm {
  const path = shmPath(name);
  try {
    Deno.writeFileSync(path, new Uint8Array(FRAG_STATS_BYTES), { mode: 0o600 });
  } catch (e) {
    throw new NfqlbError(`createSharedData: ${name}: ${errorText(e)}`);
  }
  const m = mapFile(path, true);
  if (typeof m === "number") throw new NfqlbError(`createSharedData: ${name}: ${strerror(m)}`);
  let ino = fileIdentity(path)?.ino ?? 0;
  let yielded = false;
  return {
    ptr: m.ptr,
    damage() {
      if (yielded) return undefined;
      if (mappingFaults(m) > 0) return "truncated";
      const id = fileIdentity(path);
      if (!id) return "removed";
      if (id.ino !== ino) {
        if (id.size !== FRAG_STATS_BYTES) return "replaced by another file";
        yielded = true;
        log.warning(
          `fragment stats shm ${name}: another stats record has the name now (the same --ft_shm?); left to it`,
        );
        return undefined;
      }
      if (id.size !== FRAG_STATS_BYTES) return `resized to ${id.size} bytes`;
      return undefined;
    },
    repair() {
      const now = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(m.ptr, FRAG_STATS_BYTES)).slice();
      createByRename(path, name, "ftshm", BigInt(FRAG_STATS_BYTES), `createSharedData: ${name}`, (n) => {
        new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(n.ptr, FRAG_STATS_BYTES)).set(now);
      });
      const e = remapFile(m, path, true);
      if (e !== 0) throw new NfqlbError(`createSharedData: ${name}: ${strerror(e)}`);
      ino = fileIdentity(path)?.ino ?? 0;
    },
    close: () => unmap(m),
  };
}
