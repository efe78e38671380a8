/**
 * Flow definitions of `flowlb` (upstream §6.1–6.4, §6.6): parsing and
 * validation (zod schemas with upstream's exact error texts), the canonical
 * form, the JSON that `flow-list` prints, and the ordered flow table with its
 * set/delete semantics (priority order, UDP-encapsulation companions, target
 * references). No I/O here: targets are reached through {@link FlowTableHooks}.
 */
import { z } from "zod";
import { formatIPv6, parseIPv4, parseIPv6 } from "../inet.ts";

/** Re-exported: flows print addresses with it (its home is ./inet.ts). */
export { formatIPv6 };
import { TargetShm } from "../target_shm.ts";

/** An L4 protocol a flow can select. */
export type Protocol = "tcp" | "udp" | "sctp";

/** IP protocol numbers of {@link Protocol}. */
export const PROTOCOL_NUMBERS: Readonly<Record<Protocol, 6 | 17 | 132>> = { tcp: 6, udp: 17, sctp: 132 };

/** Protocols in upstream's fixed listing order. */
const PROTOCOL_ORDER: readonly Protocol[] = ["tcp", "udp", "sctp"];

/** A CIDR: 16 address bytes (IPv4 mapped, host bits cleared) and the prefix length 0..128. */
export interface Cidr {
  /** 16 bytes, network order; IPv4 as ::ffff:a.b.c.d. */
  readonly addr: Uint8Array;
  /** Prefix length counted on the 128-bit address (IPv4 /24 → 120). */
  readonly prefix: number;
}

/** An inclusive port range [low, high], 1 ≤ low ≤ high ≤ 65535. */
export type PortRange = readonly [number, number];

/** A byte-match statement (§6.4): `(header[offset..offset+nbytes] & mask) == value` (mask 0 = none). */
export interface MatchStatement {
  /** IP protocol number of the header it reads: 6 tcp, 17 udp, 132 sctp. */
  readonly proto: 6 | 17 | 132;
  /** Byte offset in the L4 header. */
  readonly offset: number;
  /** Bytes read, big-endian. */
  readonly nbytes: 1 | 2 | 4;
  /** u32 mask, 0 for none. */
  readonly mask: number;
  /** u32 value compared with. */
  readonly value: number;
}

/**
 * A flow definition as it travels in the remote protocol (§6.5): every field
 * is the text after `key:`; an absent field is undefined.
 */
export interface FlowRequest {
  /** Flow name. */
  name?: string;
  /** Target shm name (flows only). */
  target?: string;
  /** Priority, a decimal int32 (default 0). */
  priority?: string;
  /** Comma/space separated tcp, udp, sctp. */
  protocols?: string;
  /** Comma/space separated destination CIDRs. */
  dsts?: string;
  /** Comma/space separated source CIDRs. */
  srcs?: string;
  /** Comma/space separated destination ports and ranges. */
  dports?: string;
  /** Comma/space separated source ports and ranges. */
  sports?: string;
  /** Comma separated byte-match statements. */
  match?: string;
  /** UDP encapsulation port for SCTP (flows only; 0 = none). */
  udpencap?: string;
}

/** A validated flow definition (no state). */
export interface FlowDefinition {
  /** Flow name. */
  readonly name: string;
  /** Target shm name; null for trace flows and `#` companions. */
  readonly target: string | null;
  /** Priority, int32; higher is matched first. */
  readonly priority: number;
  /** Selected protocols in tcp, udp, sctp order; null = any. */
  readonly protocols: readonly Protocol[] | null;
  /** Destination CIDRs; null = any. */
  readonly dsts: readonly Cidr[] | null;
  /** Source CIDRs; null = any. */
  readonly srcs: readonly Cidr[] | null;
  /** Destination ports, merged and sorted; null = any, [] = none (never matches). */
  readonly dports: readonly PortRange[] | null;
  /** Source ports, merged and sorted; null = any, [] = none (never matches). */
  readonly sports: readonly PortRange[] | null;
  /** Byte-match statements (all must hold); null = none. */
  readonly match: readonly MatchStatement[] | null;
  /** UDP encapsulation port of an SCTP flow, 0 = none. */
  readonly udpencap: number;
}

/** A flow in a {@link FlowTable}. Immutable: every change makes a new object. */
export interface Flow extends FlowDefinition {
  /**
   * Unique per definition: a redefinition gets a new id, so a dataplane that
   * keys its counters by id starts the redefined flow's matches_count at 0
   * (§6.2).
   */
  readonly id: number;
  /**
   * False for a restored flow whose target could not be acquired: it is
   * listed, but not handed to the dataplane until the target appears.
   */
  readonly active: boolean;
  /** For a `#<name>` companion: the name of its SCTP flow; else null. */
  readonly companionOf: string | null;
}

// ---------------------------------------------------------------------------
// Limits and texts

/** Longest flow name we accept (upstream: < 1024, not enforced by its client). */
export const MAX_NAME = 1000;
/** Longest target name (upstream client check). */
export const MAX_TARGET = 255;
/** Most CIDRs in dsts or srcs. */
export const MAX_CIDRS = 32;
/** Longest byte-match statement. */
const MAX_MATCH = 64;

/** Characters allowed in flow names (ours; `#` is reserved for companions). */
export const NAME_RE = /^[A-Za-z0-9._+-]+$/;

/** The reply for a target that cannot be mapped (upstream's text). */
export const NO_LB = "FAIL: Couldn't create load-balancer";
/** The reply for a redefinition to a target that cannot be mapped. */
export const NO_NEW_LB = "FAIL: Couldn't create new load-balancer";
/** The reply for a redefinition that changes udpencap. */
export const ALTER_UDPENCAP = "FAIL: Alter udpencap not allowed";
/** The reply for udpencap on anything but exactly `sctp` (upstream's typo kept). */
export const ONLY_SCTP = "FAIL: only sctp for updencap";
/** The reply when ports are given without protocols (upstream's client-side text). */
export const PORTS_WITHOUT_PROTOCOLS = "ports specified without protocols";

/** A value shown in an error: as is when printable ASCII, else JSON-escaped, so the message stays one line. */
export function showValue(v: string): string {
  return /^[\x20-\x7e]*$/.test(v) ? v : JSON.stringify(v).slice(1, -1);
}

// ---------------------------------------------------------------------------
// Field parsers (pure; undefined = invalid)

function tokens(s: string, sep: RegExp): string[] {
  return s.split(sep).filter((t) => t !== "");
}

function parseProtocols(s: string): Protocol[] | null | undefined {
  const toks = tokens(s, /[, ]/);
  if (toks.length === 0) return null;
  const set = new Set<Protocol>();
  for (const t of toks) {
    const p = t.toLowerCase();
    if (p !== "tcp" && p !== "udp" && p !== "sctp") return undefined;
    set.add(p);
  }
  return PROTOCOL_ORDER.filter((p) => set.has(p));
}

/** Merges ranges: sorted by low end, overlapping or adjacent ranges joined (upstream's rangeset). */
export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && last[1] + 1 >= lo) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

function parsePorts(s: string): PortRange[] | undefined {
  const ranges: PortRange[] = [];
  for (const t of tokens(s, /[, ]/)) {
    const m = /^([0-9]{1,5})(?:-([0-9]{1,5}))?$/.exec(t);
    if (!m) return undefined;
    const lo = Number(m[1]), hi = Number(m[2] ?? m[1]);
    if (lo < 1 || hi > 65535 || lo > hi) return undefined;
    ranges.push([lo, hi]);
  }
  return mergeRanges(ranges);
}

/** inet_pton rejects octets with a leading zero; so do we (parseIPv4 alone accepts them). */
function dottedQuadOk(s: string): boolean {
  const v4 = s.slice(s.lastIndexOf(":") + 1);
  return !v4.includes(".") || v4.split(".").every((o) => o.length === 1 || o[0] !== "0");
}

/** Parses one `addr/len` as upstream: IPv4 is mapped and its length gets +96; host bits are cleared. */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf("/");
  if (slash < 0) return undefined;
  const host = s.slice(0, slash), len = s.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(len) || !dottedQuadOk(host)) return undefined;
  let prefix = Number(len);
  let addr: Uint8Array | undefined;
  if (!host.includes(":")) {
    const v4 = parseIPv4(host);
    if (v4) {
      addr = new Uint8Array(16);
      addr[10] = addr[11] = 0xff;
      addr.set(v4, 12);
    }
    prefix += 96;
  } else {
    addr = parseIPv6(host);
  }
  if (!addr || prefix > 128) return undefined;
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefix - 8 * i));
    addr[i] &= (0xff00 >> bits) & 0xff;
  }
  return { addr, prefix };
}

function parseCidrs(s: string): Cidr[] | null | undefined {
  const toks = tokens(s, /[, ]/);
  if (toks.length === 0) return null;
  if (toks.length > MAX_CIDRS) return undefined;
  const out: Cidr[] = [];
  for (const t of toks) {
    const c = parseCidr(t);
    if (!c) return undefined;
    out.push(c);
  }
  return out;
}

const MATCH_RE = /^(sctp|tcp|udp)\[([0-9]+) *: *([124])\](?: *& *(0x[0-9a-f]+))? *= *([0-9]+|0x[0-9a-f]+)$/;
const HEADER_LEN: Readonly<Record<Protocol, number>> = { sctp: 12, tcp: 20, udp: 8 };

/** strtol(s, 0) for the digit strings the regexp lets through, strictly: `08` is an error, not 0. */
function matchNumber(s: string): number | undefined {
  let n: number;
  if (s.startsWith("0x")) n = parseInt(s.slice(2), 16);
  else if (s.length > 1 && s[0] === "0") {
    if (!/^[0-7]+$/.test(s)) return undefined;
    n = parseInt(s, 8);
  } else n = parseInt(s, 10);
  return n;
}

/** Parses one statement; returns the statement or the error text after `Match [stmt] `. */
export function parseMatchStatement(s: string): MatchStatement | string {
  if (s.length > MAX_MATCH) return "String too long";
  const m = MATCH_RE.exec(s);
  if (!m) return "Doesn't match regexp";
  const proto = m[1] as Protocol;
  const offset = matchNumber(m[2]), nbytes = Number(m[3]) as 1 | 2 | 4;
  const mask = m[4] === undefined ? 0 : matchNumber(m[4]);
  const value = matchNumber(m[5]);
  if (offset === undefined || mask === undefined || value === undefined) return "Invalid number";
  if (offset + nbytes > HEADER_LEN[proto]) return "Out of bounds";
  if (mask > 0xffffffff || value > 0xffffffff) return "Invalid number";
  return { proto: PROTOCOL_NUMBERS[proto], offset, nbytes, mask, value };
}

/** Canonical text of a statement, as upstream lists it: `tcp[2:2]=0x1389`, `tcp[0:4]&0xffff=0x1389`. */
export function formatMatch(m: MatchStatement): string {
  const proto = m.proto === 6 ? "tcp" : m.proto === 17 ? "udp" : "sctp";
  const mask = m.mask !== 0 ? `&0x${(m.mask >>> 0).toString(16)}` : "";
  return `${proto}[${m.offset}:${m.nbytes}]${mask}=0x${(m.value >>> 0).toString(16)}`;
}

/** `addr/prefix` as upstream lists a CIDR, e.g. `::ffff:10.0.0.0/128`. */
export function formatCidr(c: Cidr): string {
  return `${formatIPv6(c.addr)}/${c.prefix}`;
}

/** `N` or `N-M`. */
export function formatPortRange(r: PortRange): string {
  return r[0] === r[1] ? `${r[0]}` : `${r[0]}-${r[1]}`;
}

// ---------------------------------------------------------------------------
// zod schemas, one per field, each with upstream's text

function listField<T>(message: string, parse: (s: string) => T | undefined) {
  return z.string().transform((s, ctx): T => {
    const v = parse(s);
    if (v === undefined) {
      ctx.addIssue({ code: "custom", message });
      return z.NEVER;
    }
    return v;
  });
}

/** Schema of a flow name: `No name`, `Name too long`, or our character rule. */
const FlowNameSchema = z.string({ error: "No name" })
  .max(MAX_NAME, "Name too long")
  .regex(NAME_RE, {
    error: (iss) => `Invalid name [${showValue(String(iss.input))}] (allowed: A-Z a-z 0-9 . _ + -)`,
  });

/** Schema of a target shm name; anything that can never name a shm gets upstream's mapping-failure reply. */
const TargetSchema = z.string({ error: NO_LB }).refine(
  (t) => t.length >= 1 && t.length <= MAX_TARGET && t !== "." && t !== ".." && !/[/\0\n]/.test(t),
  NO_LB,
);

const int32Field = (what: string, min: number, max: number) =>
  z.string().transform((s, ctx): number => {
    const n = /^[+-]?[0-9]{1,10}$/.test(s) ? Number(s) : NaN;
    if (!(n >= min && n <= max)) {
      ctx.addIssue({ code: "custom", message: `Invalid ${what} [${showValue(s)}]` });
      return z.NEVER;
    }
    return n;
  });

/** Schema of `priority`: a decimal int32 (ours; upstream atoi()s it). */
const PrioritySchema = int32Field("priority", -2147483648, 2147483647);
/** Schema of `udpencap`: 0..65535 (ours; upstream atoi()s it). */
const UdpencapSchema = int32Field("udpencap", 0, 65535);
/** Schema of `protocols`. */
const ProtocolsSchema = listField("Invalid protocols", parseProtocols);
/** Schema of `dports`. */
const DportsSchema = listField("Invalid dports", parsePorts);
/** Schema of `sports` (ours says sports; upstream says dports). */
const SportsSchema = listField("Invalid sports", parsePorts);
/** Schema of `dsts`. */
const DstsSchema = listField("Invalid dsts", parseCidrs);
/** Schema of `srcs`. */
const SrcsSchema = listField("Invalid srcs", parseCidrs);

/** Schema of `match`: statements split on commas, leading spaces trimmed; `Match [<stmt>] <err>`. */
const MatchSchema = z.string().transform((s, ctx): MatchStatement[] | null => {
  const stmts = s.split(",").map((t) => t.replace(/^ +/, "")).filter((t) => t !== "");
  if (stmts.length === 0) return null;
  const out: MatchStatement[] = [];
  for (const stmt of stmts) {
    const r = parseMatchStatement(stmt);
    if (typeof r === "string") {
      ctx.addIssue({ code: "custom", message: `Match [${showValue(stmt)}] ${r}` });
      return z.NEVER;
    }
    out.push(r);
  }
  return out;
});

/** Schema of the raw request fields (all optional strings). */
const FlowRequestSchema = z.object({
  name: z.string().optional(),
  target: z.string().optional(),
  priority: z.string().optional(),
  protocols: z.string().optional(),
  dsts: z.string().optional(),
  srcs: z.string().optional(),
  dports: z.string().optional(),
  sports: z.string().optional(),
  match: z.string().optional(),
  udpencap: z.string().optional(),
});

/** Which flow set a definition is for: flows (with target and udpencap) or trace flows. */
export type FlowKind = "flow" | "trace";

class FieldError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
  }
}

function field<T>(schema: z.ZodType<T, string>, name: string, value: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new FieldError(name, r.error.issues[0].message);
  return r.data;
}

function definition(r: z.infer<typeof FlowRequestSchema>, kind: FlowKind): FlowDefinition {
  const name = FlowNameSchema.safeParse(r.name);
  if (!name.success) throw new FieldError("name", name.error.issues[0].message);
  // upstream's client refuses this before connecting; we check it in the server too
  if ((r.dports !== undefined || r.sports !== undefined) && r.protocols === undefined) {
    throw new FieldError("dports", PORTS_WITHOUT_PROTOCOLS);
  }
  let target: string | null = null;
  if (kind === "flow") {
    const t = TargetSchema.safeParse(r.target);
    if (!t.success) throw new FieldError("target", t.error.issues[0].message);
    target = t.data;
  }
  const priority = r.priority === undefined ? 0 : field(PrioritySchema, "priority", r.priority);
  const udpencap = kind === "trace" || r.udpencap === undefined
    ? 0
    : field(UdpencapSchema, "udpencap", r.udpencap);
  if (udpencap !== 0) {
    const toks = tokens(r.protocols ?? "", /[, ]/);
    if (toks.length !== 1 || toks[0].toLowerCase() !== "sctp") throw new FieldError("protocols", ONLY_SCTP);
    // upstream defines the udp companion first, so its address errors come first
    if (r.dsts !== undefined) field(DstsSchema, "dsts", r.dsts);
    if (r.srcs !== undefined) field(SrcsSchema, "srcs", r.srcs);
  }
  return {
    name: name.data,
    target,
    priority,
    protocols: r.protocols === undefined ? null : field(ProtocolsSchema, "protocols", r.protocols),
    dports: r.dports === undefined ? null : field(DportsSchema, "dports", r.dports),
    sports: r.sports === undefined ? null : field(SportsSchema, "sports", r.sports),
    dsts: r.dsts === undefined ? null : field(DstsSchema, "dsts", r.dsts),
    srcs: r.srcs === undefined ? null : field(SrcsSchema, "srcs", r.srcs),
    match: r.match === undefined ? null : field(MatchSchema, "match", r.match),
    udpencap,
  };
}

/**
 * Schema of a whole definition: the fields checked in upstream's order (name,
 * target, udpencap/sctp, protocols, dports, sports, dsts, srcs, match), the
 * first failure reported with upstream's text.
 */
function flowDefinitionSchema(kind: FlowKind): z.ZodType<FlowDefinition, FlowRequest> {
  return FlowRequestSchema.transform((r, ctx): FlowDefinition => {
    try {
      return definition(r, kind);
    } catch (e) {
      if (!(e instanceof FieldError)) throw e;
      ctx.addIssue({ code: "custom", path: [e.field], message: e.message });
      return z.NEVER;
    }
  });
}

const SCHEMAS: Record<FlowKind, z.ZodType<FlowDefinition, FlowRequest>> = {
  flow: flowDefinitionSchema("flow"),
  trace: flowDefinitionSchema("trace"),
};

/** Outcome of {@link parseFlowDefinition}. */
export type ParsedFlow =
  | { ok: true; definition: FlowDefinition }
  | { ok: false; error: string; field: string };

/**
 * Validates a request. The error is the exact one-line reply text
 * (`Invalid dports`, `Match [tcp[19:2]=1] Out of bounds`, …).
 *
 * @example
 * ```ts
 * const r = parseFlowDefinition({ name: "a", target: "nfqlb", protocols: "tcp", dports: "80" }, "flow");
 * if (r.ok) r.definition.dports; // [[80, 80]]
 * ```
 */
export function parseFlowDefinition(req: FlowRequest, kind: FlowKind): ParsedFlow {
  const r = SCHEMAS[kind].safeParse(req);
  if (r.success) return { ok: true, definition: r.data };
  const issue = r.error.issues[0];
  return { ok: false, error: issue.message, field: String(issue.path[0] ?? "") };
}

/** The canonical request of a definition: parsing it gives the same definition. */
export function canonicalRequest(d: FlowDefinition): FlowRequest {
  const req: FlowRequest = { name: d.name };
  if (d.target !== null) req.target = d.target;
  if (d.priority !== 0) req.priority = String(d.priority);
  if (d.protocols) req.protocols = d.protocols.join(",");
  if (d.dsts) req.dsts = d.dsts.map(formatCidr).join(",");
  if (d.srcs) req.srcs = d.srcs.map(formatCidr).join(",");
  if (d.dports) req.dports = d.dports.map(formatPortRange).join(",");
  if (d.sports) req.sports = d.sports.map(formatPortRange).join(",");
  if (d.match) req.match = d.match.map(formatMatch).join(",");
  if (d.udpencap !== 0) req.udpencap = String(d.udpencap);
  return req;
}

// ---------------------------------------------------------------------------
// JSON (§6.6)

function jsonList(key: string, items: readonly string[]): string {
  return `,\n  "${key}": [\n${items.map((i) => `    "${i}"`).join(",\n")}\n  ]`;
}

/** One flow as {@link renderFlow} prints it, parsed (`flow-list` JSON). */
export interface ListedFlow {
  name: string;
  /** Unsigned (upstream's %u): a negative priority shows as 2^32 + p. */
  priority: number;
  protocols?: string[];
  dests?: string[];
  dports?: string[];
  srcs?: string[];
  sports?: string[];
  match?: string[];
  udpencap?: number;
  matches_count: number;
  /** Absent for trace flows. */
  user_ref?: string;
}

/**
 * One flow as upstream prints it (no trailing newline). Names and targets are
 * JSON-escaped (upstream prints them raw).
 * @param count its matches_count
 * @param userRef include `user_ref` (flows: yes, trace flows: no)
 */
export function renderFlow(f: FlowDefinition, count: number, userRef: boolean): string {
  let s = `{\n  "name": ${JSON.stringify(f.name)},\n  "priority": ${f.priority >>> 0}`;
  if (f.protocols) s += `,\n  "protocols": [ ${f.protocols.map((p) => `"${p}"`).join(", ")} ]`;
  if (f.dsts) s += jsonList("dests", f.dsts.map(formatCidr));
  if (f.dports) s += jsonList("dports", f.dports.map(formatPortRange));
  if (f.srcs) s += jsonList("srcs", f.srcs.map(formatCidr));
  if (f.sports) s += jsonList("sports", f.sports.map(formatPortRange));
  if (f.match) s += jsonList("match", f.match.map(formatMatch));
  if (f.udpencap > 0) s += `,\n  "udpencap": ${f.udpencap}`;
  s += `,\n  "matches_count": ${count >>> 0}`;
  if (userRef) s += `,\n  "user_ref": ${JSON.stringify(f.target ?? "NULL")}`;
  return s + "\n}";
}

// ---------------------------------------------------------------------------
// The table

/**
 * What a {@link FlowTable} needs from its owner (flowlb's dataplane). All
 * optional: a table without hooks accepts every target.
 */
export interface FlowTableHooks {
  /** Takes a reference on target shm `target`; false → `FAIL: Couldn't create load-balancer`. */
  acquire?(target: string): boolean;
  /** Drops a reference taken by acquire. */
  release?(target: string): void;
  /**
   * The flows to match, in match order (active flows only, companions
   * included), after every change. Called synchronously.
   */
  changed?(flows: readonly Flow[]): void;
  /** The current matches_count of a flow (by name; `flow.id` tells definitions apart). */
  counts?(name: string, flow: Flow): number;
}

let nextId = 1;

function makeFlow(d: FlowDefinition, active: boolean, companionOf: string | null = null): Flow {
  return { ...d, id: nextId++, active, companionOf };
}

/** The `#<name>` udp flow that catches the UDP-encapsulated packets of SCTP flow `d` (§6.3). */
function companionDefinition(d: FlowDefinition): FlowDefinition {
  return {
    name: `#${d.name}`,
    target: null,
    priority: d.priority,
    protocols: ["udp"],
    dsts: d.dsts,
    srcs: d.srcs,
    dports: [[d.udpencap, d.udpencap]],
    sports: null,
    match: null,
    udpencap: d.udpencap,
  };
}

/** Replaces the flow of the same name in its slot, or appends; then a stable sort, highest priority first. */
function upsert(flows: Flow[], f: Flow): Flow[] {
  const out = [...flows];
  const i = out.findIndex((x) => x.name === f.name);
  if (i >= 0) out[i] = f;
  else out.push(f);
  return out.sort((a, b) => b.priority - a.priority);
}

/**
 * The flows of a flowlb (or its trace flows), in match order: priority
 * highest first, ties in insertion order, a redefined flow keeping its slot
 * before the re-sort (§6.2). Every method answers with upstream's texts.
 * A failed set changes nothing.
 *
 * @example
 * ```ts
 * const t = new FlowTable("flow", { acquire: (name) => name === "nfqlb" });
 * t.set({ name: "f", target: "nfqlb", protocols: "tcp", dports: "80" }); // "OK"
 * t.set({ name: "g", target: "nosuch" }); // "FAIL: Couldn't create load-balancer"
 * t.listNames(); // '[\n  "f"\n]\n'
 * ```
 */
export class FlowTable {
  /** flow or trace. */
  readonly kind: FlowKind;
  #hooks: FlowTableHooks;
  #flows: Flow[] = [];
  #generation = 0;
  /** Set while restore() defines many flows: they are published once, at the end. */
  #batch = false;

  /**
   * Makes an empty table.
   * @param kind "flow" (target, priority, udpencap) or "trace" (no target; listed without user_ref)
   * @param hooks target references, publication and counters
   */
  constructor(kind: FlowKind, hooks: FlowTableHooks = {}) {
    this.kind = kind;
    this.#hooks = hooks;
  }

  /** Increases with every change (for persistence: save when it moved). */
  get generation(): number {
    return this.#generation;
  }

  /** Number of flows, companions included. */
  get size(): number {
    return this.#flows.length;
  }

  /** All flows in match order, inactive ones and companions included. */
  flows(): readonly Flow[] {
    return this.#flows;
  }

  /** The flows the dataplane matches: the active ones, in match order. */
  activeFlows(): readonly Flow[] {
    return this.#flows.filter((f) => f.active);
  }

  /** The flow called `name` (companions included). */
  get(name: string): Flow | undefined {
    return this.#flows.find((f) => f.name === name);
  }

  #commit(flows: Flow[]): void {
    this.#flows = flows;
    this.#generation++;
    if (!this.#batch) this.#hooks.changed?.(this.activeFlows());
  }

  #acquire(target: string | null): boolean {
    if (target === null || !this.#hooks.acquire) return true;
    return this.#hooks.acquire(target);
  }

  #release(f: Flow | undefined): void {
    if (f && f.active && f.target !== null && f.companionOf === null) this.#hooks.release?.(f.target);
  }

  /**
   * Defines or redefines a flow; returns the reply text: `OK` or the error.
   * Checks in order: the definition (see {@link parseFlowDefinition}), then a
   * redefinition must keep its udpencap (`FAIL: Alter udpencap not allowed`),
   * then the target must be acquirable.
   */
  set(req: FlowRequest): string {
    const parsed = parseFlowDefinition(req, this.kind);
    if (!parsed.ok) return parsed.error;
    return this.#define(parsed.definition, true);
  }

  #define(d: FlowDefinition, mustAcquire: boolean): string {
    const old = this.#flows.find((f) => f.name === d.name && f.companionOf === null);
    let active = true;
    let acquired = false;
    if (old) {
      if (old.udpencap !== d.udpencap) return ALTER_UDPENCAP;
      if (d.target !== old.target || !old.active) {
        if (this.#acquire(d.target)) acquired = true;
        else if (mustAcquire) return old.active ? NO_NEW_LB : NO_LB;
        else active = false;
      }
    } else if (this.#acquire(d.target)) {
      acquired = true;
    } else if (mustAcquire) {
      return NO_LB;
    } else {
      active = false;
    }
    let flows = this.#flows;
    if (d.udpencap !== 0) flows = upsert(flows, makeFlow(companionDefinition(d), active, d.name));
    flows = upsert(flows, makeFlow(d, active));
    // the old reference goes only when a new one was taken (same target: it is kept)
    if (acquired) this.#release(old);
    this.#commit(flows);
    return "OK";
  }

  /** Deletes flow `name` (and its `#` companion); `OK` also when there is none, `FAIL: no name` without a name. */
  delete(name: string | undefined): string {
    if (name === undefined) return "FAIL: no name";
    const f = this.#flows.find((x) => x.name === name && x.companionOf === null);
    if (!f) return "OK";
    this.#release(f);
    this.#commit(this.#flows.filter((x) => x !== f && x.companionOf !== name));
    return "OK";
  }

  /** Deletes every flow (releasing their targets). */
  clear(): void {
    for (const f of this.#flows) this.#release(f);
    this.#commit([]);
  }

  #count(f: Flow): number {
    return f.active && this.#hooks.counts ? this.#hooks.counts(f.name, f) : 0;
  }

  /**
   * `flow-list`: all flows as `[` + objects joined by `,\n` + `]\n`; with a
   * name, that flow's object without a trailing newline, or "" when unknown.
   */
  list(name?: string): string {
    const userRef = this.kind === "flow";
    if (name !== undefined) {
      const f = this.get(name);
      return f ? renderFlow(f, this.#count(f), userRef) : "";
    }
    return `[${this.#flows.map((f) => renderFlow(f, this.#count(f), userRef)).join(",\n")}]\n`;
  }

  /** `flow-list-names`: `[]\n`, or `[\n  "a",\n  "b"\n]\n` in match order. */
  listNames(): string {
    if (this.#flows.length === 0) return "[]\n";
    return `[\n${this.#flows.map((f) => `  ${JSON.stringify(f.name)}`).join(",\n")}\n]\n`;
  }

  /** The definitions to persist: main flows (no companions), in match order, canonical. */
  definitions(): FlowRequest[] {
    return this.#flows.filter((f) => f.companionOf === null).map(canonicalRequest);
  }

  /**
   * Defines `reqs` in order (as saved by {@link definitions}). A flow whose
   * target cannot be acquired is kept, inactive: it is listed, but the
   * dataplane does not see it until {@link retryInactive} acquires it.
   * Returns one line per problem (invalid definitions are skipped).
   */
  restore(reqs: readonly FlowRequest[]): string[] {
    const problems: string[] = [];
    const before = this.#generation;
    this.#batch = true;
    try {
      this.#restore(reqs, problems);
    } finally {
      this.#batch = false;
    }
    if (this.#generation !== before) this.#hooks.changed?.(this.activeFlows());
    return problems;
  }

  #restore(reqs: readonly FlowRequest[], problems: string[]): void {
    for (const req of reqs) {
      const p = parseFlowDefinition(req, this.kind);
      if (!p.ok) {
        problems.push(`flow ${showValue(req.name ?? "")}: ${p.error}`);
        continue;
      }
      const r = this.#define(p.definition, false);
      if (r !== "OK") problems.push(`flow ${p.definition.name}: ${r}`);
      else if (!this.get(p.definition.name)?.active) {
        problems.push(
          `flow ${p.definition.name}: target ${p.definition.target} not found; kept inactive until it exists`,
        );
      }
    }
  }

  /** Tries to acquire the targets of inactive flows; returns the names that became active. */
  retryInactive(): string[] {
    const woken: string[] = [];
    let flows = this.#flows;
    for (const f of this.#flows) {
      if (f.active || f.companionOf !== null || !this.#acquire(f.target)) continue;
      woken.push(f.name);
      flows = flows.map((x) => x === f || x.companionOf === f.name ? { ...x, active: true } : x);
    }
    if (woken.length > 0) this.#commit(flows);
    return woken;
  }
}

/**
 * Target references checked against the shm directory: a target is
 * acquirable when TargetShm.open() succeeds. Reference counted by name; the
 * table is opened only to check it, and closed at once. For tests and tools;
 * flowlb uses its own registry that keeps the mappings.
 */
export class ShmTargets implements FlowTableHooks {
  #refs = new Map<string, number>();

  /** Checks that `target` is an nfqlb table and counts a reference. */
  acquire(target: string): boolean {
    const n = this.#refs.get(target) ?? 0;
    if (n === 0) {
      try {
        TargetShm.open(target).close();
      } catch {
        return false;
      }
    }
    this.#refs.set(target, n + 1);
    return true;
  }

  /** Drops a reference. */
  release(target: string): void {
    const n = (this.#refs.get(target) ?? 0) - 1;
    if (n > 0) this.#refs.set(target, n);
    else this.#refs.delete(target);
  }

  /** References held on `target`. */
  refs(target: string): number {
    return this.#refs.get(target) ?? 0;
  }
}
