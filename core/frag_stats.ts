/**
 * The fragment-table statistics shm (`ftshm`), upstream's layout (docs/shm.md) so
 * that `nfqlb stats` reads what our lb and upstream's lb write alike.
 */
import { errorText, NfqlbError, strerror } from "./errors.ts";
import { shmPath } from "./shm_dir.ts";
import { mapFile, type Mapping, readShmBytes, unmap } from "./shm_file.ts";
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

/**
 * Creates (truncating) stats shm `name` with a zeroed record and maps it
 * read-write for a running lb; the fragment table keeps its counters there.
 */
export function createFragStatsShm(name: string): Mapping {
  const path = shmPath(name);
  try {
    Deno.writeFileSync(path, new Uint8Array(FRAG_STATS_BYTES), { mode: 0o600 });
  } catch (e) {
    throw new NfqlbError(`createSharedData: ${name}: ${errorText(e)}`);
  }
  const m = mapFile(path, true);
  if (typeof m === "number") throw new NfqlbError(`createSharedData: ${name}: ${strerror(m)}`);
  return m;
}

/** Unmaps what {@link createFragStatsShm} mapped (the file stays for `nfqlb stats`). */
export function closeFragStatsShm(m: Mapping): void {
  unmap(m);
}
