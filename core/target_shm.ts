/**
 * The target (Maglev) table in shared memory: create (init), open, read,
 * change the active set (activate/deactivate), look up. The layout and the
 * double-buffered, seqlock-protected commit live in C (c/tshm.c); this file
 * does the files, locking and errors. See docs/shm.md.
 */
import { lib } from "../ffi/lib.ts";
import {
  NFQLB_ELAYOUT,
  NFQLB_EMAGIC,
  NFQLB_ETRUNC,
  NFQLB_EUPSTREAM,
  NFQLB_EVERSION,
  NFQLB_KEY_LEN,
  NFQLB_MAX_WEIGHT,
  NFQLB_TSHM_HEADER,
  NFQLB_TSHM_MAX_BYTES,
  NFQLB_TSHM_OFF_M,
  NFQLB_TSHM_OFF_N,
  NFQLB_TSHM_OFF_OWN_FWMARK,
  NFQLB_TSHM_OFF_REPLACED,
  NFQLB_TSHM_OFF_VERSION,
  NFQLB_TSHM_VERSION,
} from "../ffi/consts.ts";
import { createByRename, mapFile, type Mapping, unmap } from "./shm_file.ts";
import { errorText, NfqlbError, strerror } from "./errors.ts";
import { shmPath } from "./shm_dir.ts";
import { describeNonTable } from "./shm_kinds.ts";

/** errno of nfqlb_file_map for a path that is not a regular file. */
const EINVAL = 22;

/** The layout version this build writes. */
export const TSHM_VERSION = NFQLB_TSHM_VERSION;
/** The largest row weight. */
export const MAX_WEIGHT = NFQLB_MAX_WEIGHT;
/** The `replaced` word of the header, as an index into its u32s. */
const REPLACED_WORD = NFQLB_TSHM_OFF_REPLACED / 4;

/** The version field of a mapped file with our magic. */
function fileVersion(m: Mapping): number {
  return new Deno.UnsafePointerView(m.ptr).getUint16(NFQLB_TSHM_OFF_VERSION);
}

/** A consistent copy of the current table. */
export interface TargetSnapshot {
  /** The first entries of the lookup table (row index or -1). */
  lookup: Int32Array;
  /** fwmark per row, -1 for a free row. */
  active: Int32Array;
  /** Weight per row (0..65535; 0 = drained: active but no slots). Free rows hold 1. */
  weights: Uint32Array;
  /** Number of commits since init. */
  generation: number;
}

/**
 * The reason text of an nfqlb_tshm_check result (NFQLB_E*) for table `name`;
 * `version`: the file's version field, for a version error.
 */
export function checkText(rc: number, name: string, version = 0): string {
  switch (rc) {
    case NFQLB_ETRUNC:
      return "truncated file";
    case NFQLB_EMAGIC:
      return "not an nfqlb target table (bad magic)";
    case NFQLB_EVERSION:
      // an older layout of ours (v1 had no weights): init replaces it
      return version >= 1 && version < TSHM_VERSION
        ? `unsupported table version ${version} (older nfqlb-deno); re-create it with: nfqlb init --shm=${name}`
        : "unsupported table version";
    case NFQLB_ELAYOUT:
      return "corrupt table header";
    case NFQLB_EUPSTREAM:
      return `an upstream nfqlb 1.x table; re-create it with: nfqlb init --shm=${name}`;
    default:
      return `invalid table (${rc})`;
  }
}

/** Options for {@link TargetShm.create}. */
export interface CreateOptions {
  /** Lookup table size; must already be prime (see primeBelow). */
  M: number;
  /** Max number of targets (rows). */
  N: number;
  /** Own fwmark, used when the table serves as an LB-tier table. */
  ownFwmark: number;
}

/**
 * An open target table.
 *
 * @example
 * ```ts
 * TargetShm.create("demo", { M: 997, N: 32, ownFwmark: 0 });
 * TargetShm.update("demo", (active) => { active[0] = 101; return true; });
 * const t = TargetShm.open("demo");
 * t.lookup(12345); // 101
 * t.close();
 * ```
 */
export class TargetShm {
  /** shm name. */
  readonly name: string;
  /** Lookup table size (prime). */
  readonly M: number;
  /** Number of rows. */
  readonly N: number;
  /** Own fwmark (LB tier). */
  readonly ownFwmark: number;
  #map: Mapping | undefined;
  #header: Uint32Array;
  /** Scratch key for lookupKey, with its pointer taken once (no allocation per lookup). */
  #key = new Uint8Array(NFQLB_KEY_LEN);
  #keyPtr = Deno.UnsafePointer.of(this.#key);

  private constructor(name: string, map: Mapping) {
    this.name = name;
    this.#map = map;
    const view = new Deno.UnsafePointerView(map.ptr);
    this.M = view.getUint32(NFQLB_TSHM_OFF_M);
    this.N = view.getUint32(NFQLB_TSHM_OFF_N);
    this.ownFwmark = view.getInt32(NFQLB_TSHM_OFF_OWN_FWMARK);
    this.#header = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(map.ptr, NFQLB_TSHM_HEADER));
  }

  /** The mapped base address, for the dataplane's C lookups. */
  get pointer(): Deno.PointerObject {
    if (!this.#map) throw new Error(`target shm ${this.name} is closed`);
    return this.#map.ptr;
  }

  /**
   * Opens shm `name`. Missing → `FAILED mapSharedData: <name>` (upstream's
   * text); other problems add the reason after a colon.
   */
  static open(name: string, opts: { writable?: boolean } = {}): TargetShm {
    const path = shmPath(name);
    const m = mapFile(path, opts.writable ?? false);
    if (typeof m === "number") {
      if (m === 2) throw new NfqlbError(`FAILED mapSharedData: ${name}`);
      // EINVAL: not a regular file (a directory: ours, .nfqlb-deno, says what it is)
      const what = m === EINVAL ? describeNonTable(name, path) : undefined;
      throw new NfqlbError(
        `FAILED mapSharedData: ${name}: ${
          what ? `not a target table: ${what}` : m === 0 ? "empty file" : strerror(m)
        }`,
      );
    }
    const rc = lib().nfqlb_tshm_check(m.ptr, m.size);
    if (rc !== 0) {
      const version = rc === NFQLB_EVERSION ? fileVersion(m) : 0;
      unmap(m);
      // a file of another kind we know (our counters, the fragment stats, ...) says what it is
      const what = rc === NFQLB_EMAGIC || rc === NFQLB_ETRUNC ? describeNonTable(name, path) : undefined;
      throw new NfqlbError(
        `FAILED mapSharedData: ${name}: ${
          what ? `not a target table: ${what}` : checkText(rc, name, version)
        }`,
      );
    }
    return new TargetShm(name, m);
  }

  /** File size of a table of M and N (0: sizes init refuses), as {@link create} makes it. */
  static bytes(M: number, N: number): number {
    const out = new BigUint64Array(1);
    return lib().nfqlb_tshm_bytes(M >>> 0, N >>> 0, out) === 0 ? Number(out[0]) : 0;
  }

  /**
   * Creates (or replaces) table `name`: an empty table with no active
   * target. The new file is built beside the old one and renamed over it,
   * so a reader never sees a half-written table; a running LB that has the
   * old one mapped sees its `replaced` flag and re-maps.
   * Refuses to overwrite a file that is not an nfqlb table (a file whose
   * header is all zeros is replaced: it holds nothing).
   */
  static create(name: string, opts: CreateOptions): void {
    const path = shmPath(name);
    const sizeOut = new BigUint64Array(1);
    if (lib().nfqlb_tshm_bytes(opts.M, opts.N, sizeOut) !== 0) {
      if (opts.N > opts.M) throw new NfqlbError("N can't be larger than M");
      if (opts.N < 1) throw new NfqlbError(`N must be at least 1; ${opts.N}`);
      const mib = Math.ceil((NFQLB_TSHM_HEADER + 8 * opts.N + 8 * (2 * opts.N + opts.M)) / 1048576);
      throw new NfqlbError(
        `Table too large; M=${opts.M}, N=${opts.N} needs ${mib} MiB, the limit is ${
          NFQLB_TSHM_MAX_BYTES / 1048576
        } MiB`,
      );
    }
    const size = sizeOut[0];
    // What is there now? Never clobber a file that is not ours or upstream's.
    let old: Mapping | undefined;
    const existing = mapFile(path, true);
    if (typeof existing !== "number") {
      const rc = lib().nfqlb_tshm_check(existing.ptr, existing.size);
      const older = rc === NFQLB_EVERSION && fileVersion(existing) >= 1 &&
        fileVersion(existing) < TSHM_VERSION;
      // a header of zeros holds nothing to protect (a zero-filled table, or a file never written)
      const zeroed = rc === NFQLB_EMAGIC &&
        new Uint8Array(
          Deno.UnsafePointerView.getArrayBuffer(
            existing.ptr,
            Math.min(NFQLB_TSHM_HEADER, Number(existing.size)),
          ),
        ).every((b) => b === 0);
      if (rc === 0) old = existing;
      else {
        unmap(existing);
        if (rc !== NFQLB_EUPSTREAM && rc !== NFQLB_ETRUNC && !older && !zeroed) {
          throw new NfqlbError(
            `createSharedData: ${name}: exists and is ${
              checkText(rc, name)
            }; remove it with: nfqlb delete --shm=${name}`,
          );
        }
      }
    } else if (existing !== 2 && existing !== 0) {
      throw new NfqlbError(`createSharedData: ${name}: ${strerror(existing)}`);
    }
    // Serialise with activate/deactivate on the old file: they commit under this lock.
    let lock: Deno.FsFile | undefined;
    if (old) {
      try {
        lock = Deno.openSync(path, { read: true, write: true });
        lock.lockSync(true);
      } catch { /* replaced or removed meanwhile: nothing to serialise with */ }
    }
    let renamed = false;
    try {
      createByRename(path, name, "init", size, `createSharedData: ${name}`, (m) => {
        if (lib().nfqlb_tshm_format(m.ptr, m.size, opts.M, opts.N, opts.ownFwmark) !== 0) {
          throw new NfqlbError(`createSharedData: ${name}: format failed`);
        }
      });
      renamed = true;
    } finally {
      if (old) {
        // Tell LBs that use the old table to open the name again (the header's `replaced`), only once
        // the new file has the name: an init that failed (e.g. no space) leaves the old table in use, and a
        // dataplane's view refuses a file marked replaced (core/target_view.ts).
        if (renamed) {
          const hdr = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(old.ptr, NFQLB_TSHM_HEADER));
          Atomics.store(hdr, REPLACED_WORD, 1);
        }
        unmap(old);
      }
      lock?.close();
    }
  }

  /**
   * Changes the active set under an exclusive lock on the file: `change`
   * gets a copy of the active rows (fwmark or -1) and of their weights
   * (0..{@link MAX_WEIGHT}, 1 by default; 0 drains a row) and returns whether
   * it changed anything; if so the new table is populated and published at
   * once, rows and weights together. A weight out of range throws and
   * publishes nothing.
   */
  static update(
    name: string,
    change: (active: Int32Array, t: TargetShm, weights: Uint32Array) => boolean,
  ): void {
    const path = shmPath(name);
    for (let attempt = 0; attempt < 5; attempt++) {
      let file: Deno.FsFile;
      try {
        file = Deno.openSync(path, { read: true, write: true });
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) throw new NfqlbError(`FAILED mapSharedData: ${name}`);
        throw new NfqlbError(`FAILED mapSharedData: ${name}: ${errorText(e)}`);
      }
      try {
        file.lockSync(true);
        // init may have replaced the file while we waited for the lock
        let same = false;
        try {
          same = Deno.statSync(path).ino === file.statSync().ino;
        } catch { /* removed meanwhile */ }
        if (!same) continue;
        const t = TargetShm.open(name, { writable: true });
        try {
          const { active, weights } = t.snapshot(0);
          if (change(active, t, weights)) t.#commit(active, weights);
        } finally {
          t.close();
        }
        return;
      } finally {
        file.close();
      }
    }
    throw new NfqlbError(`FAILED mapSharedData: ${name}: replaced repeatedly while updating`);
  }

  #commit(active: Int32Array, weights: Uint32Array): void {
    const bad = weights.findIndex((w) => w > MAX_WEIGHT);
    if (bad >= 0) throw new NfqlbError(`Invalid weight ${weights[bad]} for row ${bad} (0..${MAX_WEIGHT})`);
    const rc = lib().nfqlb_tshm_commit(this.pointer, active, weights);
    if (rc !== 0) {
      throw new NfqlbError(`Populate failed for ${this.name} (${rc === -2 ? "out of memory" : rc})`);
    }
  }

  /** A consistent copy of the first `nlookup` lookup entries and all rows with their weights. */
  snapshot(nlookup = 25): TargetSnapshot {
    const n = Math.min(nlookup, this.M);
    const lookup = new Int32Array(n);
    const active = new Int32Array(this.N);
    const weights = new Uint32Array(this.N);
    const generation = lib().nfqlb_tshm_read(this.pointer, lookup, n, active, weights);
    return { lookup, active, weights, generation };
  }

  /** The fwmark for a hash, or -1 when the slot has no target. */
  lookup(hash: number): number {
    return lib().nfqlb_tshm_lookup(this.pointer, hash >>> 0);
  }

  /** The fwmark for a 40-byte key (hashed as upstream's hashKey), in one FFI call. */
  lookupKey(key: Uint8Array, hashMode = 1): number {
    if (key.length < NFQLB_KEY_LEN) return -1;
    this.#key.set(key.subarray(0, NFQLB_KEY_LEN));
    return lib().nfqlb_tshm_lookup_key(this.pointer, this.#keyPtr, NFQLB_KEY_LEN, hashMode >>> 0);
  }

  /** Row index and fwmark for a hash (both -1 when none). */
  lookupRow(hash: number): { row: number; fwmark: number } {
    const row = new Int32Array(1);
    const fwmark = lib().nfqlb_tshm_lookup_row(this.pointer, hash >>> 0, row);
    return { row: row[0], fwmark };
  }

  /** Slots of the current table that have no target. */
  countEmpty(): number {
    return lib().nfqlb_tshm_count_empty(this.pointer);
  }

  /** Whether `init` has replaced this table with a new file since it was opened. */
  get replaced(): boolean {
    return Atomics.load(this.#header, REPLACED_WORD) !== 0;
  }

  /** Unmaps the table. */
  close(): void {
    if (this.#map) unmap(this.#map);
    this.#map = undefined;
  }
}
