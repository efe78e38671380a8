/**
 * Ours (not upstream's): the connection-table commands ct-list, ct-set,
 * ct-delete, ct-stats, and the `init` options that create the table. The
 * table of target table `<shm>` is the file `<shm>-ct` in our own directory
 * `<shm dir>/.nfqlb-deno/` (docs/conntrack.md, docs/shm.md "Our own files").
 */
import { z } from "zod";
import type { Invocation } from "../command.ts";
import { err, out } from "../io.ts";
import { INT32_MAX, INT32_MIN, parseInteger, UINT32_MAX } from "../numbers.ts";
import { NfqlbError } from "../../core/errors.ts";
import { mapIPv4, parseAddrPort, parseIPv4, parseIPv6 } from "../../core/inet.ts";
import { buildKey } from "../../core/key.ts";
import { portProtocolNumber } from "../../core/ip_protocols.ts";
import { ownExists, ownPath } from "../../core/shm_dir.ts";
import { connmarkErrorText, ENOENT, setKernelConnmark } from "../../host/plumbing/offload_rules.ts";
import { TargetShm } from "../../core/target_shm.ts";
import {
  type ConntrackEntry,
  conntrackName,
  type ConntrackOptions,
  ConntrackShm,
  type ConntrackStats,
  CTX_MAX,
  MAX_CAPACITY,
  MAX_CTX_SLOTS,
  MAX_ENTRY_LIFETIME_MS,
  MAX_TTL_MS,
  type Scheduler,
  SCHEDULERS,
} from "../../core/conntrack_shm.ts";

/** What `init --conntrack...` asks for: nothing, delete, or create with options. */
export type InitConntrack =
  | { kind: "none" }
  | { kind: "delete" }
  | { kind: "create"; options: ConntrackOptions };

const TTL = /^([0-9]+),([0-9]+),([0-9]+)$/;

/**
 * Parses `init`'s connection-table options, strictly, before anything
 * is written. `--ct_*` need `--conntrack=MAX` with MAX > 0.
 * @throws NfqlbError one line naming the bad value
 */
export function parseInitConntrack(opts: Map<string, string>, shm: string): InitConntrack {
  const max = opts.get("conntrack");
  const extra = ["ct_ttl", "ct_flood", "ct_contexts", "scheduler"].filter((o) => opts.has(o));
  const capacity = max === undefined
    ? undefined
    : parseInteger("init", "--conntrack value", max, 0, MAX_CAPACITY);
  if (!capacity && extra.length > 0) {
    throw new NfqlbError(`init: --${extra[0]} '${opts.get(extra[0])}' needs --conntrack=MAX (MAX > 0)`);
  }
  if (capacity === undefined) return { kind: "none" };
  ownPath(conntrackName(shm)); // a name too long with "-ct" errors before any output
  if (capacity === 0) return { kind: "delete" };
  const options: ConntrackOptions = { capacity, replace: true };
  const ttl = opts.get("ct_ttl");
  if (ttl !== undefined) {
    const m = TTL.exec(ttl);
    const v = m ? [m[1], m[2], m[3]].map(Number) : [];
    if (!m || v.some((n) => !Number.isSafeInteger(n) || n > MAX_TTL_MS)) {
      throw new NfqlbError(
        `init: invalid --ct_ttl value '${ttl}' (expected tcp,udp,other in ms, each an integer 0..${MAX_TTL_MS})`,
      );
    }
    options.ttlMs = { tcp: v[0], udp: v[1], other: v[2] };
  }
  const flood = opts.get("ct_flood");
  if (flood !== undefined) {
    options.floodPerSecond = parseInteger("init", "--ct_flood value", flood, 0, UINT32_MAX);
  }
  const ctx = opts.get("ct_contexts");
  if (ctx !== undefined) {
    options.ctxSlots = parseInteger("init", "--ct_contexts value", ctx, 0, MAX_CTX_SLOTS);
  }
  const scheduler = opts.get("scheduler");
  if (scheduler !== undefined) {
    if (!(SCHEDULERS as readonly string[]).includes(scheduler)) {
      throw new NfqlbError(
        `init: invalid --scheduler value '${scheduler}' (expected one of ${SCHEDULERS.join(", ")})`,
      );
    }
    options.scheduler = scheduler as Scheduler;
  }
  return { kind: "create", options };
}

/** Carries out {@link parseInitConntrack}'s result for target table `shm` (after it was created). */
export function applyInitConntrack(shm: string, what: InitConntrack): void {
  const name = conntrackName(shm);
  if (what.kind === "create") ConntrackShm.create(name, what.options);
  if (what.kind === "delete") {
    try {
      Deno.removeSync(ownPath(name));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
}

/** Opens `<shm>-ct` (in our own directory); a missing file is upstream's `FAILED mapSharedData: <name>`. */
function openCt(shm: string): ConntrackShm {
  const name = conntrackName(shm);
  if (!ownExists(name)) throw new NfqlbError(`FAILED mapSharedData: ${name}`);
  try {
    return ConntrackShm.open(name);
  } catch (e) {
    if (!(e instanceof NfqlbError)) throw e;
    const why = e.message.replace(/^conntrack [^:]*: /, "");
    throw new NfqlbError(`FAILED mapSharedData: ${name}: ${why}`);
  }
}

/** An address without port (IPv4 or IPv6, brackets optional), as 16 bytes, or undefined. */
function parseAddress(s: string): Uint8Array | undefined {
  const v4 = parseIPv4(s);
  if (v4) return mapIPv4(v4);
  return parseIPv6(s.startsWith("[") && s.endsWith("]") ? s.slice(1, -1) : s);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** One ct-list object (the JSON field names are part of the interface: docs/conntrack.md). */
export interface CtListItem {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  proto: string;
  fwmark: number;
  row: number;
  age_ms: number;
  idle_ms: number;
  lifetime_ms: number;
  packets: number;
  bytes: number;
  flags: string[];
  context: string | null;
}

/** The ct-list object of an entry. */
export function ctListItem(e: ConntrackEntry): CtListItem {
  const flags: string[] = [];
  if (e.pinned) flags.push("pinned");
  if (e.offloaded) flags.push("offloaded");
  return {
    src: e.src,
    sport: e.sport,
    dst: e.dst,
    dport: e.dport,
    proto: e.protoName,
    fwmark: e.fwmark,
    row: e.row,
    age_ms: e.ageMs,
    idle_ms: e.idleMs,
    lifetime_ms: e.lifetimeMs,
    packets: e.packets,
    bytes: e.bytes,
    flags,
    context: e.context ?? null,
  };
}

/** `ct-list`: the live connections as a JSON array, optionally filtered. */
export function ctListRun({ opts }: Invocation): number {
  const shm = opts.get("shm") ?? "nfqlb";
  const t = opts.get("target");
  const target = t === undefined
    ? undefined
    : parseInteger("ct-list", "--target value", t, INT32_MIN, INT32_MAX);
  const a = opts.get("address");
  const address = a === undefined ? undefined : parseAddress(a);
  if (a !== undefined && !address) throw new NfqlbError(`ct-list: invalid --address value '${a}'`);
  const p = opts.get("port");
  const port = p === undefined ? undefined : parseInteger("ct-list", "--port value", p, 0, 65535);
  const ct = openCt(shm);
  let entries: ConntrackEntry[];
  try {
    entries = ct.list();
  } finally {
    ct.close();
  }
  const items = entries.filter((e) =>
    (target === undefined || e.fwmark === target) &&
    (address === undefined || sameBytes(e.key.subarray(0, 16), address) ||
      sameBytes(e.key.subarray(16, 32), address)) &&
    (port === undefined || e.sport === port || e.dport === port)
  ).map(ctListItem);
  if (opts.has("json")) out(JSON.stringify(items, null, 2) + "\n");
  else if (items.length === 0) out("[]\n");
  else out(`[\n${items.map((i) => "  " + JSON.stringify(i)).join(",\n")}\n]\n`);
  return 0;
}

/** The flow of --src, --dst, --proto as a 40-byte key. */
function keyOf(cmd: string, inv: Invocation): Uint8Array<ArrayBuffer> {
  const parse = (s: string) => {
    try {
      return parseAddrPort(s);
    } catch (e) {
      throw new NfqlbError(`${cmd}: ${(e as Error).message}`);
    }
  };
  const src = parse(inv.opts.get("src")!);
  const dst = parse(inv.opts.get("dst")!);
  const protoText = inv.opts.get("proto")!;
  const proto = portProtocolNumber(protoText);
  if (proto === undefined) throw new NfqlbError(`${cmd}: Failed to parse protocol [${protoText}]`);
  return new Uint8Array(buildKey(src.addr, dst.addr, proto, src.port, dst.port));
}

/** The changes ct-set was asked for, validated (the flags are exclusive in pairs). */
const CtSetFlags = z.object({
  pin: z.boolean(),
  unpin: z.boolean(),
  offload: z.boolean(),
  "no-offload": z.boolean(),
}).refine((f) => !(f.pin && f.unpin), { message: "ct-set: --pin and --unpin exclude each other" })
  .refine((f) => !(f.offload && f["no-offload"]), {
    message: "ct-set: --offload and --no-offload exclude each other",
  });

/** The row of fwmark in target table `shm`, or -1 (no table, not active). */
function rowOf(shm: string, fwmark: number): number {
  let t: TargetShm;
  try {
    t = TargetShm.open(shm);
  } catch {
    return -1;
  }
  try {
    return t.snapshot(0).active.indexOf(fwmark);
  } finally {
    t.close();
  }
}

/**
 * `ct-set`: change a connection (created when missing if --fwmark is given):
 * fwmark (its row is looked up in the target table), lifetime, context,
 * pinned, offloaded. Offloading also sets the kernel connmark of the
 * connection (docs/conntrack.md, "Offload").
 */
export function ctSetRun(inv: Invocation): number {
  const { opts } = inv;
  const shm = opts.get("shm")!;
  const key = keyOf("ct-set", inv);
  const fw = opts.get("fwmark");
  const fwmark = fw === undefined ? undefined : parseInteger("ct-set", "--fwmark value", fw, 0, INT32_MAX);
  const lt = opts.get("lifetime");
  const lifetimeMs = lt === undefined
    ? undefined
    : parseInteger("ct-set", "--lifetime value", lt, 0, MAX_ENTRY_LIFETIME_MS);
  const context = opts.get("context");
  const ctxBytes = context === undefined ? 0 : new TextEncoder().encode(context).length;
  if (ctxBytes > CTX_MAX) {
    throw new NfqlbError(`ct-set: invalid --context value of ${ctxBytes} bytes (at most ${CTX_MAX})`);
  }
  const f = CtSetFlags.safeParse({
    pin: opts.has("pin"),
    unpin: opts.has("unpin"),
    offload: opts.has("offload"),
    "no-offload": opts.has("no-offload"),
  });
  if (!f.success) throw new NfqlbError(f.error.issues[0].message);
  const flags = f.data;
  const pinned = flags.pin ? true : flags.unpin ? false : undefined;
  const offloaded = flags.offload ? true : flags["no-offload"] ? false : undefined;
  if (
    fwmark === undefined && lifetimeMs === undefined && context === undefined && pinned === undefined &&
    offloaded === undefined
  ) {
    throw new NfqlbError(
      "ct-set: nothing to set (--fwmark, --lifetime, --context, --pin, --unpin, --offload, --no-offload)",
    );
  }
  const ct = openCt(shm);
  let note: string | undefined;
  try {
    const before = ct.get(key);
    if (!before && fwmark === undefined) throw new NfqlbError("ct-set: no such connection");
    const kernel = kernelChange(inv, before, fwmark, offloaded);
    if (kernel) note = applyKernelMark(key, kernel);
    try {
      ct.set(key, {
        fwmark,
        row: fwmark === undefined ? undefined : rowOf(shm, fwmark),
        lifetimeMs,
        context: context === undefined ? undefined : context === "" ? null : context,
        pinned,
        offloaded,
        create: fwmark !== undefined,
      });
    } catch (e) {
      // the table refused: put the kernel back as the table still has it (best effort)
      if (kernel && note === undefined) setKernelConnmark(key, kernel.oldMark);
      throw e;
    }
  } catch (e) {
    if (e instanceof NfqlbError) throw new NfqlbError(e.message.replace(/^conntrack set: /, "ct-set: "));
    throw e;
  } finally {
    ct.close();
  }
  if (note) err(note + "\n");
  return 0;
}

/** The flow of ct-set's options as text for messages: `tcp 10.0.0.1:1234 -> 10.0.0.2:80`. */
function flowText({ opts }: Invocation): string {
  return `${opts.get("proto")!.toLowerCase()} ${opts.get("src")} -> ${opts.get("dst")}`;
}

/** A connmark change ct-set must make in the kernel (docs/conntrack.md, "Offload"). */
interface KernelChange {
  flow: string;
  /** The connmark to set: the fwmark while offloaded, else 0. */
  mark: number;
  /** The connmark the table implies now, for a roll-back. */
  oldMark: number;
}

/**
 * The kernel's connmark follows the table: set to the fwmark by --offload
 * (and by --fwmark on an offloaded entry, so the kernel does not keep the old
 * target), back to 0 by --no-offload. Undefined: the kernel is not touched.
 */
function kernelChange(
  inv: Invocation,
  before: ConntrackEntry | undefined,
  fwmark: number | undefined,
  offloaded: boolean | undefined,
): KernelChange | undefined {
  const finalOffloaded = offloaded ?? before?.offloaded ?? false;
  if (offloaded === undefined && !(fwmark !== undefined && finalOffloaded)) return undefined;
  const finalFwmark = fwmark ?? before!.fwmark;
  const flow = flowText(inv);
  if (finalOffloaded && finalFwmark <= 0) {
    throw new NfqlbError(
      `ct-set: cannot offload ${flow}: its fwmark ${finalFwmark} is no connmark (must be > 0)`,
    );
  }
  return { flow, mark: finalOffloaded ? finalFwmark : 0, oldMark: before?.offloaded ? before.fwmark : 0 };
}

const TCP_LOOSE_NOTE = "nfqlb: net.netfilter.nf_conntrack_tcp_loose is 0 in this network namespace: " +
  "offload of TCP under DSR needs it at 1 (the kernel must pick up connections whose SYN it did not track)";

/**
 * Whether this namespace's conntrack refuses mid-stream TCP pickup. Under
 * DSR a connection is only tracked from its first ACK on (the offload rules
 * untrack its SYN), so then it is never tracked and never offloaded.
 */
function tcpLooseOff(): boolean {
  try {
    return Deno.readTextFileSync("/proc/sys/net/netfilter/nf_conntrack_tcp_loose").trim() === "0";
  } catch {
    // no conntrack module, or no permission to read: nothing certain to say
    return false;
  }
}

/**
 * Sets the kernel connmark; returns the note to print when the kernel has no
 * such connection (the table is changed all the same), throws on other errors.
 */
function applyKernelMark(key: Uint8Array, k: KernelChange): string | undefined {
  const rc = setKernelConnmark(key, k.mark);
  if (rc === 0) return undefined;
  if (rc === ENOENT) {
    // nothing to undo when un-offloading: nothing bypasses the queue for it
    if (k.mark === 0) return undefined;
    const note =
      `nfqlb: no kernel conntrack entry for ${k.flow}; offload takes effect when ct-set --offload ` +
      "is repeated after the kernel tracks the connection";
    return k.flow.startsWith("tcp ") && tcpLooseOff() ? `${note}\n${TCP_LOOSE_NOTE}` : note;
  }
  throw new NfqlbError(
    `ct-set: cannot set the kernel connmark of ${k.flow} to ${k.mark}: ${connmarkErrorText(rc)}`,
  );
}

/** `ct-delete`: remove a connection; a missing one is fine (as `delete`). */
export function ctDeleteRun(inv: Invocation): number {
  const key = keyOf("ct-delete", inv);
  const ct = openCt(inv.opts.get("shm")!);
  try {
    ct.delete(key);
  } finally {
    ct.close();
  }
  return 0;
}

/**
 * ct-stats' `connections`: the table's entry count per row that has any,
 * keyed by the row's fwmark in the target table's current buffer, or
 * `row:<r>` for a row whose target is gone (its entries await expiry).
 */
export function connectionsByTarget(
  counts: Uint32Array,
  active: Int32Array | undefined,
): Record<string, number> {
  const out: Record<string, number> = {};
  counts.forEach((n, row) => {
    if (n === 0) return;
    const fw = active?.[row];
    const k = fw !== undefined && fw >= 0 ? String(fw) : `row:${row}`;
    out[k] = (out[k] ?? 0) + n;
  });
  return out;
}

/** The active row fwmarks of target table `shm`, or undefined when it cannot be read. */
function activeRows(shm: string): Int32Array | undefined {
  let t: TargetShm;
  try {
    t = TargetShm.open(shm);
  } catch {
    return undefined;
  }
  try {
    return t.snapshot(0).active;
  } finally {
    t.close();
  }
}

/** The ct-stats JSON object (snake_case, as ct-list). */
export function ctStatsJson(
  s: ConntrackStats,
  sched?: { scheduler: Scheduler; connections: Record<string, number> },
): Record<string, unknown> {
  const lookups = s.hits + s.misses;
  return {
    entries: s.entries,
    capacity: s.capacity,
    inserts: s.inserts,
    recycles: s.recycles,
    flood_skips: s.floodSkips,
    expirations: s.expirations,
    deletes: s.deletes,
    hits: s.hits,
    misses: s.misses,
    hit_ratio: lookups === 0 ? 0 : Math.round((s.hits / lookups) * 1e6) / 1e6,
    lock_steals: s.lockSteals,
    ctx_slots: s.ctxSlots,
    ctx_used: s.ctxUsed,
    flood_per_second: s.floodPerSecond,
    ttl_ms: { tcp: s.ttlTcpMs, udp: s.ttlUdpMs, other: s.ttlOtherMs },
    bytes: s.bytes,
    ...(sched ? { scheduler: sched.scheduler, connections: sched.connections } : {}),
  };
}

/** `ct-stats`: counters and parameters of `<shm>-ct` as JSON. */
export function ctStatsRun({ opts }: Invocation): number {
  const shm = opts.get("shm") ?? "nfqlb";
  const ct = openCt(shm);
  try {
    const counts = ct.rowCounts();
    const active = counts.some((n) => n > 0) ? activeRows(shm) : undefined;
    const sched = { scheduler: ct.scheduler, connections: connectionsByTarget(counts, active) };
    out(JSON.stringify(ctStatsJson(ct.stats(), sched), null, 2) + "\n");
  } finally {
    ct.close();
  }
  return 0;
}
