/**
 * The connection table in shared memory (c/ct_admin.c): create, open, list,
 * set, delete, stats. The table of target table `<target shm>` is the file
 * `<target shm>-ct` ({@link conntrackName}) in our own directory
 * (`<shm dir>/.nfqlb-deno/`, core/shm_dir.ts ownPath): beside the target table
 * `tshm-x-ct` would look like a target table to tools that list the shm
 * directory (docs/shm.md "Our own files"). The layout, locking and expiry
 * live in C (layout: docs/conntrack.md); this file does the file, validation
 * and decoding. lb uses the table when it exists (c/lb.c), flowlb per flow
 * target (c/flows.c), both with its scheduler for new flows (c/ct_sched.c).
 */
import { z } from "zod";
import { lib } from "../ffi/lib.ts";
import { createByRename, mapFile, type Mapping, mappingFaults, remapFile, unmap } from "./shm_file.ts";
import { NfqlbError, strerror } from "./errors.ts";
import { ownPath } from "./shm_dir.ts";
import { formatIPv6 } from "./inet.ts";
import { IP_PROTOCOL_NAMES, IP_PROTOCOLS, protocolName } from "./ip_protocols.ts";
import { mapIPv4, parseIPv4, parseIPv6 } from "./inet.ts";
import { buildKey, KEY_LEN } from "./key.ts";
import {
  NFQLB_CT_CLEAR_CTX,
  NFQLB_CT_CLEAR_OFFLOAD,
  NFQLB_CT_CLEAR_PIN,
  NFQLB_CT_F_CTX,
  NFQLB_CT_F_OFFLOADED,
  NFQLB_CT_F_PINNED,
  NFQLB_CT_OFF_VERSION,
  NFQLB_CT_RECORD_BYTES,
  NFQLB_CT_RECORD_OFF,
  NFQLB_CT_SET_CREATE,
  NFQLB_CT_SET_CTX,
  NFQLB_CT_SET_FWMARK,
  NFQLB_CT_SET_LIFETIME,
  NFQLB_CT_SET_OFFLOAD,
  NFQLB_CT_SET_PIN,
  type NFQLB_CT_STATS_ALL,
  NFQLB_CT_VERSION,
  NFQLB_ELAYOUT,
  NFQLB_EMAGIC,
  NFQLB_ETRUNC,
  NFQLB_EVERSION,
  type NFQLB_SCHED_COUNT,
  NFQLB_SCHED_ROWS,
} from "../ffi/consts.ts";

/** Size of one listed record (c/nfqlb.h struct nfqlb_ct_record). */
export const RECORD_BYTES = NFQLB_CT_RECORD_BYTES;
import {
  CTX_MAX,
  MAX_CAPACITY,
  MAX_CTX_SLOTS,
  MAX_ENTRY_LIFETIME_MS,
  MAX_TTL_MS,
} from "./conntrack_limits.ts";
export { CTX_MAX, MAX_CAPACITY, MAX_CTX_SLOTS, MAX_ENTRY_LIFETIME_MS, MAX_TTL_MS };

/** Entry flags (NFQLB_CT_F_*). */
export const CT_F = {
  pinned: NFQLB_CT_F_PINNED,
  offloaded: NFQLB_CT_F_OFFLOADED,
  ctx: NFQLB_CT_F_CTX,
} as const;
/** nfqlb_ct_admin_set `what` bits (NFQLB_CT_SET_*). */
const SET = {
  fwmark: NFQLB_CT_SET_FWMARK,
  pin: NFQLB_CT_SET_PIN,
  unpin: NFQLB_CT_CLEAR_PIN,
  offload: NFQLB_CT_SET_OFFLOAD,
  unoffload: NFQLB_CT_CLEAR_OFFLOAD,
  lifetime: NFQLB_CT_SET_LIFETIME,
  ctx: NFQLB_CT_SET_CTX,
  clearCtx: NFQLB_CT_CLEAR_CTX,
  create: NFQLB_CT_SET_CREATE,
} as const;

/** The layout version this build writes. */
export const CT_VERSION = NFQLB_CT_VERSION;

/**
 * Schedulers of new flows, in c/nfqlb.h enum nfqlb_sched order (the id is the
 * index; tests/unit/consts_test.ts compares the names with the enum's).
 */
export const SCHEDULERS = ["maglev", "rr", "wrr", "lc", "wlc"] as const;
/** A scheduler's name. */
export type Scheduler = (typeof SCHEDULERS)[number];
/** As many names as scheduler ids: compiles only while the counts agree. */
const _schedulers: typeof NFQLB_SCHED_COUNT = SCHEDULERS.length;
/** Rows with a per-row connection count (the next row number is "none"). */
export const COUNTED_ROWS = NFQLB_SCHED_ROWS;

/** The table's counters, in c/nfqlb.h enum nfqlb_ct_stat order. */
export const STAT_NAMES = [
  "entries",
  "inserts",
  "hits",
  "misses",
  "recycles",
  "floodSkips",
  "expirations",
  "deletes",
  "lockSteals",
  "capacity",
  "ctxSlots",
  "ctxUsed",
  "floodPerSecond",
  "ttlTcpMs",
  "ttlUdpMs",
  "ttlOtherMs",
  "bytes",
] as const;
/** One name per counter: compiles only while the counts agree. */
const _stats: typeof NFQLB_CT_STATS_ALL = STAT_NAMES.length;

/** Counters and parameters of a table (see {@link STAT_NAMES}). */
export type ConntrackStats = Record<(typeof STAT_NAMES)[number], number>;

const u32 = z.number().int().min(0).max(0xffffffff);
const ttl = z.number().int().min(0).max(MAX_TTL_MS);

/** Options of {@link ConntrackShm.create}, validated. Defaults as Katran/conntrack-like lifetimes. */
export const ConntrackOptionsSchema = z.object({
  /** Entries (rounded up to a multiple of 8). */
  capacity: z.number().int().min(1).max(MAX_CAPACITY),
  /** Context records (0: no contexts). */
  ctxSlots: z.number().int().min(0).max(MAX_CTX_SLOTS).default(0),
  /** Lifetimes after the last packet, ms. */
  ttlMs: z.object({
    tcp: ttl.default(300_000),
    udp: ttl.default(30_000),
    other: ttl.default(30_000),
  }).strict().default({ tcp: 300_000, udp: 30_000, other: 30_000 }),
  /** Max new flows per second (insert); 0 = no limit. */
  floodPerSecond: u32.default(0),
  /** Who gets a new flow: Maglev's hash (as without the table) or an LVS scheduler. */
  scheduler: z.enum(SCHEDULERS).default("maglev"),
  /** Replace an existing table of that name (its entries are lost). */
  replace: z.boolean().default(false),
}).strict();

/** Input of {@link ConntrackShm.create}. */
export type ConntrackOptions = z.input<typeof ConntrackOptionsSchema>;

const port = z.number().int().min(0).max(65535);

/** A flow given by its parts; addresses as text (IPv4 or IPv6). */
export const FlowKeySchema = z.object({
  src: z.string(),
  dst: z.string(),
  proto: z.union([z.enum(IP_PROTOCOL_NAMES), z.number().int().min(0).max(255)]),
  sport: port.default(0),
  dport: port.default(0),
  /** Bytes 32..33 of the key (ICMP echo id), host order. */
  ud: port.default(0),
}).strict();

/** Input of {@link flowKey}. */
export type FlowKeyInput = z.input<typeof FlowKeySchema>;

function address(s: string): Uint8Array {
  const v4 = parseIPv4(s);
  if (v4) return mapIPv4(v4);
  const v6 = parseIPv6(s);
  if (v6) return v6;
  throw new NfqlbError(`Invalid address [${s}]`);
}

/** The 40-byte key (c/nfqlb.h, hash.c: the 40-byte key) of a flow given by its parts. */
export function flowKey(input: FlowKeyInput): Uint8Array<ArrayBuffer> {
  const r = FlowKeySchema.safeParse(input);
  if (!r.success) throw new NfqlbError(`Invalid flow: ${r.error.issues.map((i) => i.message).join("; ")}`);
  const f = r.data;
  const proto = typeof f.proto === "number" ? f.proto : IP_PROTOCOLS[f.proto];
  const key = new Uint8Array(buildKey(address(f.src), address(f.dst), proto, f.sport, f.dport));
  key[32] = f.ud >> 8;
  key[33] = f.ud & 0xff;
  return key;
}

/** Changes of {@link ConntrackShm.set}, validated. */
export const ConntrackSetSchema = z.object({
  /** Pin (or move) the flow to this fwmark, with its row (-1: none). */
  fwmark: z.number().int().min(-1).max(0x7fffffff).optional(),
  row: z.number().int().min(-1).max(0x7fffffff).optional(),
  /** Pinned: never expires nor is recycled; its fwmark is kept by inserts. */
  pinned: z.boolean().optional(),
  offloaded: z.boolean().optional(),
  /** Lifetime after the last packet, ms (0: by protocol again). */
  lifetimeMs: z.number().int().min(0).max(MAX_ENTRY_LIFETIME_MS).optional(),
  /** Opaque context (a string is stored as UTF-8); null clears it. */
  context: z.union([z.string(), z.instanceof(Uint8Array), z.null()]).optional(),
  /** Create the entry when it does not exist (needs fwmark). */
  create: z.boolean().default(false),
}).strict().refine((s) => !s.create || s.fwmark !== undefined, { message: "create needs a fwmark" });

/** Input of {@link ConntrackShm.set}. */
export type ConntrackSet = z.input<typeof ConntrackSetSchema>;

/** One listed connection. */
export interface ConntrackEntry {
  /** Source address (IPv4 as a.b.c.d, else IPv6 text). */
  src: string;
  /** Destination address. */
  dst: string;
  /** IP protocol number. */
  proto: number;
  /** Protocol name when known (tcp, udp, sctp, icmp, icmpv6), else the number as text. */
  protoName: string;
  /** Source port, host order. */
  sport: number;
  /** Destination port, host order. */
  dport: number;
  /** Key bytes 32..33 (ICMP echo id), host order. */
  ud: number;
  /** The target's fwmark. */
  fwmark: number;
  /** Target row, -1 when none. */
  row: number;
  /** Since created, ms. */
  ageMs: number;
  /** Since last seen, ms. */
  idleMs: number;
  /** Effective lifetime, ms; 0 when pinned. */
  lifetimeMs: number;
  /** Packets seen (saturates at 2^24-1). */
  packets: number;
  /** Bytes seen (saturates at 2^40-1). */
  bytes: number;
  /** Set by the operator: never expires, never recycled. */
  pinned: boolean;
  /** Carried by the kernel (ct-set --offload). */
  offloaded: boolean;
  /** The context as UTF-8 text (undefined: none). */
  context?: string;
  /** The context bytes (undefined: none). */
  contextBytes?: Uint8Array;
  /** Entry index (stable while the entry lives). */
  slot: number;
  /** The raw 40-byte key. */
  key: Uint8Array;
}

function formatAddr(a: Uint8Array): string {
  const mapped = a.subarray(0, 10).every((b) => b === 0) && a[10] === 0xff && a[11] === 0xff;
  return mapped ? `${a[12]}.${a[13]}.${a[14]}.${a[15]}` : formatIPv6(a);
}

/** Decodes one record (struct nfqlb_ct_record). */
export function decodeRecord(rec: Uint8Array): ConntrackEntry {
  const O = NFQLB_CT_RECORD_OFF;
  const v = new DataView(rec.buffer, rec.byteOffset, RECORD_BYTES);
  const key = rec.slice(O.key, O.key + KEY_LEN);
  const proto = key[34];
  const flags = v.getUint32(O.flags, true);
  const ctxLen = v.getUint32(O.ctx_len, true);
  const e: ConntrackEntry = {
    src: formatAddr(key.subarray(0, 16)),
    dst: formatAddr(key.subarray(16, 32)),
    proto,
    protoName: protocolName(proto) ?? String(proto),
    sport: (key[36] << 8) | key[37],
    dport: (key[38] << 8) | key[39],
    ud: (key[32] << 8) | key[33],
    fwmark: v.getInt32(O.fwmark, true),
    row: v.getInt32(O.row, true),
    lifetimeMs: v.getUint32(O.lifetime_ms, true),
    ageMs: v.getUint32(O.age_ms, true),
    idleMs: v.getUint32(O.idle_ms, true),
    packets: Number(v.getBigUint64(O.packets, true)),
    bytes: Number(v.getBigUint64(O.bytes, true)),
    pinned: (flags & CT_F.pinned) !== 0,
    offloaded: (flags & CT_F.offloaded) !== 0,
    slot: v.getUint32(O.slot, true),
    key,
  };
  if (flags & CT_F.ctx) {
    e.contextBytes = rec.slice(O.ctx, O.ctx + Math.min(ctxLen, CTX_MAX));
    e.context = new TextDecoder().decode(e.contextBytes);
  }
  return e;
}

/** The version field of a mapped file with our magic. */
function fileVersion(m: Mapping): number {
  return new Deno.UnsafePointerView(m.ptr).getUint16(NFQLB_CT_OFF_VERSION);
}

function checkText(rc: number, name: string, version = 0): string {
  switch (rc) {
    case NFQLB_ETRUNC:
      return "truncated file";
    case NFQLB_EMAGIC:
      return "not an nfqlb connection table (bad magic)";
    case NFQLB_EVERSION: {
      // an older layout of ours: init --conntrack replaces it
      const target = name.endsWith("-ct") ? name.slice(0, -3) : name;
      return version >= 1 && version < CT_VERSION
        ? `unsupported connection table version ${version} (older nfqlb-deno); ` +
          `re-create it with: nfqlb init --shm=${target} --conntrack=MAX`
        : "unsupported connection table version";
    }
    case NFQLB_ELAYOUT:
      return "corrupt connection table header";
    default:
      return `invalid connection table (${rc})`;
  }
}

/** The connection table of target table `target`: `<target>-ct`, a file in our own directory (not an shm name). */
export { conntrackName } from "./conntrack_limits.ts";

/** A key as a buffer the library can read (copied when it is a view). */
function keyBuffer(key: Uint8Array): Uint8Array<ArrayBuffer> {
  if (key.length !== KEY_LEN) throw new NfqlbError(`A flow key is ${KEY_LEN} bytes, not ${key.length}`);
  return new Uint8Array(key);
}

/**
 * An open connection table.
 *
 * @example
 * ```ts
 * ConntrackShm.create("demo-ct", { capacity: 1024 });
 * const ct = ConntrackShm.open("demo-ct");
 * const key = flowKey({ src: "10.0.0.1", dst: "10.0.0.2", proto: "tcp", sport: 1234, dport: 80 });
 * ct.insert(key, 101, 0);
 * ct.lookup(key); // 101
 * ct.set(key, { pinned: true, context: "vip-a" });
 * ct.list(); // [{ src: "10.0.0.1", ..., fwmark: 101, pinned: true, context: "vip-a" }]
 * ct.close();
 * ```
 */
export class ConntrackShm {
  /** shm name. */
  readonly name: string;
  #map: Mapping | undefined;
  #row = new Int32Array(1);

  private constructor(name: string, map: Mapping) {
    this.name = name;
    this.#map = map;
  }

  /** The mapped base address, for the dataplane's C calls. */
  get pointer(): Deno.PointerObject {
    if (!this.#map) throw new Error(`connection table ${this.name} is closed`);
    return this.#map.ptr;
  }

  /** File size of a table (0: invalid sizes). */
  static bytes(capacity: number, ctxSlots = 0): number {
    return Number(lib().nfqlb_ct_admin_bytes(capacity >>> 0, ctxSlots >>> 0));
  }

  /**
   * Creates table `name` (empty) in our own directory. An existing connection
   * table is replaced only with `replace: true`; any other existing file is
   * never touched. The file is built in the same directory and renamed over it.
   */
  static create(name: string, options: ConntrackOptions): void {
    const r = ConntrackOptionsSchema.safeParse(options);
    if (!r.success) {
      throw new NfqlbError(
        `conntrack ${name}: ${
          r.error.issues.map((i) => `${i.path.join(".") || "options"}: ${i.message}`).join("; ")
        }`,
      );
    }
    const o = r.data;
    const path = ownPath(name);
    const size = lib().nfqlb_ct_admin_bytes(o.capacity, o.ctxSlots);
    if (size === 0n) throw new NfqlbError(`conntrack ${name}: invalid size`);
    const existing = mapFile(path, false);
    if (typeof existing !== "number") {
      const rc = lib().nfqlb_ct_admin_check(existing.ptr, existing.size);
      const version = existing.size >= NFQLB_CT_OFF_VERSION + 2 ? fileVersion(existing) : 0;
      unmap(existing);
      // an older table of ours may be replaced; anything else is never overwritten
      const older = rc === NFQLB_EVERSION && version >= 1 && version < CT_VERSION;
      if (rc !== 0 && !(older && o.replace)) {
        throw new NfqlbError(`conntrack ${name}: exists and is ${checkText(rc, name, version)}`);
      }
      if (!o.replace) throw new NfqlbError(`conntrack ${name}: exists`);
    } else if (existing !== 2 && existing !== 0) {
      throw new NfqlbError(`conntrack ${name}: ${strerror(existing)}`);
    }
    createByRename(path, name, "ct", size, `conntrack ${name}`, (m) => {
      const ttls = new Uint32Array([o.ttlMs.tcp, o.ttlMs.udp, o.ttlMs.other]);
      if (
        lib().nfqlb_ct_admin_format(m.ptr, m.size, o.capacity, o.ctxSlots, ttls, o.floodPerSecond) !== 0 ||
        lib().nfqlb_ct_admin_set_scheduler(m.ptr, SCHEDULERS.indexOf(o.scheduler)) !== 0
      ) {
        throw new NfqlbError(`conntrack ${name}: format failed`);
      }
    });
  }

  /** Opens table `name` in our own directory (read-write: even listing takes the bucket locks). */
  static open(name: string): ConntrackShm {
    const m = mapFile(ownPath(name), true);
    if (typeof m === "number") {
      throw new NfqlbError(`conntrack ${name}: ${m === 0 ? "empty file" : strerror(m)}`);
    }
    const rc = lib().nfqlb_ct_admin_check(m.ptr, m.size);
    if (rc !== 0) {
      const version = m.size >= 6 ? fileVersion(m) : 0;
      unmap(m);
      throw new NfqlbError(`conntrack ${name}: ${checkText(rc, name, version)}`);
    }
    return new ConntrackShm(name, m);
  }

  /** CLOCK_MONOTONIC in ns: the dataplane's clock. */
  static now(): bigint {
    return lib().nfqlb_ct_admin_clock_ns();
  }

  /** fwmark of the live entry for key (counting a packet of `bytes`), or -1. */
  lookup(key: Uint8Array, bytes = 0, now: bigint = ConntrackShm.now()): number {
    return lib().nfqlb_ct_lookup(this.pointer, keyBuffer(key), now, bytes >>> 0, this.#row);
  }

  /** lookup that also returns the row. */
  lookupRow(key: Uint8Array, bytes = 0, now: bigint = ConntrackShm.now()): { fwmark: number; row: number } {
    const fwmark = this.lookup(key, bytes, now);
    return { fwmark, row: this.#row[0] };
  }

  /** Inserts (or refreshes) an entry: 0 inserted, 1 skipped by the flood guard, -1 no room / bad key. */
  insert(key: Uint8Array, fwmark: number, row = -1, now: bigint = ConntrackShm.now()): number {
    return lib().nfqlb_ct_insert(this.pointer, keyBuffer(key), fwmark | 0, row | 0, now);
  }

  /** Removes the entry of key; false when there was none. */
  delete(key: Uint8Array): boolean {
    return lib().nfqlb_ct_admin_delete(this.pointer, keyBuffer(key)) === 0;
  }

  /**
   * Changes an entry (pin to a fwmark/row, lifetime, offload flag,
   * context). Throws NfqlbError on bad options, a missing entry (unless
   * `create`), or no room.
   */
  set(key: Uint8Array, change: ConntrackSet, now: bigint = ConntrackShm.now()): void {
    const r = ConntrackSetSchema.safeParse(change);
    if (!r.success) {
      throw new NfqlbError(`conntrack set: ${r.error.issues.map((i) => i.message).join("; ")}`);
    }
    const c = r.data;
    let what = 0;
    if (c.fwmark !== undefined || c.row !== undefined) {
      if (c.fwmark === undefined) throw new NfqlbError("conntrack set: a row needs its fwmark");
      what |= SET.fwmark;
    }
    if (c.pinned !== undefined) what |= c.pinned ? SET.pin : SET.unpin;
    if (c.offloaded !== undefined) what |= c.offloaded ? SET.offload : SET.unoffload;
    if (c.lifetimeMs !== undefined) what |= SET.lifetime;
    let ctx: Uint8Array<ArrayBuffer> = new Uint8Array(1);
    let ctxLen = 0;
    if (c.context === null) what |= SET.clearCtx;
    else if (c.context !== undefined) {
      const bytes = typeof c.context === "string" ? new TextEncoder().encode(c.context) : c.context;
      if (bytes.length > CTX_MAX) {
        throw new NfqlbError(`conntrack set: context of ${bytes.length} bytes, the limit is ${CTX_MAX}`);
      }
      if (bytes.length) ctx = new Uint8Array(bytes);
      ctxLen = bytes.length;
      what |= SET.ctx;
    }
    if (c.create) what |= SET.create;
    const rc = lib().nfqlb_ct_admin_set(
      this.pointer,
      keyBuffer(key),
      what,
      c.fwmark ?? -1,
      c.row ?? -1,
      c.lifetimeMs ?? 0,
      ctx,
      ctxLen,
      now,
    );
    if (rc === -1) throw new NfqlbError("conntrack set: no such connection");
    if (rc === -2) throw new NfqlbError("conntrack set: no room (bucket pinned full, or no free context)");
  }

  /** The live entry of key, or undefined. */
  get(key: Uint8Array, now: bigint = ConntrackShm.now()): ConntrackEntry | undefined {
    const rec = new Uint8Array(RECORD_BYTES);
    if (lib().nfqlb_ct_admin_get(this.pointer, keyBuffer(key), now, rec) !== 0) return undefined;
    return decodeRecord(rec);
  }

  /** Live entries, in table order (at most `limit`). */
  list(opts: { now?: bigint; limit?: number } = {}): ConntrackEntry[] {
    const now = opts.now ?? ConntrackShm.now();
    const limit = opts.limit ?? Infinity;
    const BATCH = 256;
    const buf = new Uint8Array(RECORD_BYTES * BATCH);
    const cursor = new Uint32Array(1);
    const out: ConntrackEntry[] = [];
    while (out.length < limit) {
      const want = Math.min(BATCH, limit - out.length);
      const n = lib().nfqlb_ct_admin_list(this.pointer, cursor, now, buf, want);
      for (let i = 0; i < n; i++) {
        out.push(decodeRecord(buf.subarray(i * RECORD_BYTES, (i + 1) * RECORD_BYTES)));
      }
      if (n < want) break;
    }
    return out;
  }

  /** Counters and parameters. */
  stats(): ConntrackStats {
    const raw = new BigUint64Array(STAT_NAMES.length);
    lib().nfqlb_ct_admin_stats(this.pointer, raw, STAT_NAMES.length);
    const out = {} as ConntrackStats;
    STAT_NAMES.forEach((n, i) => (out[n] = Number(BigInt.asIntN(64, raw[i]))));
    return out;
  }

  /** The scheduler of new flows (set when the table was created). */
  get scheduler(): Scheduler {
    return SCHEDULERS[lib().nfqlb_ct_scheduler(this.pointer)] ?? "maglev";
  }

  /**
   * Entries per row 0..n-1 as the table keeps them for lc/wlc (no scan;
   * expired entries count until reclaimed, see {@link sweep}).
   */
  rowCounts(n: number = COUNTED_ROWS): Uint32Array {
    const counts = new Uint32Array(Math.max(n, 1));
    lib().nfqlb_ct_admin_row_counts(this.pointer, counts, n >>> 0);
    return counts.subarray(0, n);
  }

  #sweepCursor = new Uint32Array(1);

  /**
   * Reclaims the expired entries among about `entries` entries (whole
   * buckets), continuing where the previous sweep of this object stopped
   * and wrapping around. Returns how many were reclaimed.
   */
  sweep(entries: number, now: bigint = ConntrackShm.now()): number {
    return lib().nfqlb_ct_sweep(this.pointer, this.#sweepCursor, entries >>> 0, now);
  }

  /** Live entries per row 0..n-1 (least-connection schedulers). */
  countByRow(n: number, now: bigint = ConntrackShm.now()): Uint32Array {
    const counts = new Uint32Array(Math.max(n, 1));
    lib().nfqlb_ct_admin_count_by_row(this.pointer, counts, n >>> 0, now);
    return counts.subarray(0, n);
  }

  /**
   * What is wrong with the table as mapped, or undefined: truncated (the
   * SIGBUS guard replaced the mapping with zero pages, c/file.c) or a header
   * that is no longer a table. Either way the C calls only miss (ct.c checks
   * the header per call), so a dataplane decides by Maglev alone meanwhile.
   */
  damage(): string | undefined {
    const m = this.#map;
    if (!m) return undefined;
    if (mappingFaults(m) > 0) return "truncated";
    const rc = lib().nfqlb_ct_admin_check(m.ptr, m.size);
    return rc === 0 ? undefined : checkText(rc, this.name, 0);
  }

  /**
   * Maps the file that has the table's name now over this mapping, at the
   * same address, when it is a valid table of the same size: a dataplane
   * uses it from the next packet on. Returns undefined when it did (or the
   * mapping is fine as it is), else why not.
   */
  reattach(): string | undefined {
    const m = this.#map;
    if (!m || this.damage() === undefined) return undefined;
    const path = ownPath(this.name);
    const other = mapFile(path, false);
    if (typeof other === "number") {
      return other === 2 ? "missing" : other === 0 ? "empty file" : strerror(other);
    }
    const rc = lib().nfqlb_ct_admin_check(other.ptr, other.size);
    const size = other.size;
    unmap(other);
    if (rc !== 0) return checkText(rc, this.name, 0);
    if (size !== m.size) {
      return `a table of another size now (${size} bytes, mapped ${m.size}): restart to use it`;
    }
    const e = remapFile(m, path, true);
    if (e !== 0) return strerror(e);
    return this.damage();
  }

  /** Unmaps the table. */
  close(): void {
    if (this.#map) unmap(this.#map);
    this.#map = undefined;
  }
}
