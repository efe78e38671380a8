/**
 * Flow definitions of `flowlb` from text, read as upstream reads them: the
 * one parser of CIDRs, port lists, protocol lists and byte-match statements,
 * and the validation of a whole request (zod schemas with upstream's exact error
 * texts), which gives a {@link FlowDefinition}. The types are in ./types.ts;
 * the way back to text is ./render.ts.
 */
import { z } from "zod";
import { parseIPv4, parseIPv6 } from "../inet.ts";
import { isPortProtocol, PORT_PROTOCOLS, PROTOCOLS } from "../ip_protocols.ts";
import {
  type Cidr,
  type FlowDefinition,
  type FlowKind,
  type FlowRequest,
  type MatchStatement,
  MAX_CIDRS,
  MAX_MATCH,
  MAX_NAME,
  MAX_TARGET,
  NAME_RE,
  NO_LB,
  ONLY_SCTP,
  type PortRange,
  PORTS_WITHOUT_PROTOCOLS,
  type Protocol,
} from "./types.ts";

/** A value shown in an error: as is when printable ASCII, else JSON-escaped, so the message stays one line. */
export function showValue(v: string): string {
  return /^[\x20-\x7e]*$/.test(v) ? v : JSON.stringify(v).slice(1, -1);
}

// ---------------------------------------------------------------------------
// Field parsers (pure; undefined = invalid)

function tokens(s: string, sep: RegExp): string[] {
  return s.split(sep).filter((t) => t !== "");
}

/**
 * Parses a protocol list (`UDP tcp,Tcp`): tokens split on commas and spaces,
 * any case, repeats allowed. Returns them in upstream's tcp, udp, sctp order;
 * null when empty (any protocol); undefined when a token is not tcp, udp or sctp.
 */
export function parseProtocols(s: string): Protocol[] | null | undefined {
  const toks = tokens(s, /[, ]/);
  if (toks.length === 0) return null;
  const set = new Set<Protocol>();
  for (const t of toks) {
    const p = t.toLowerCase();
    if (!isPortProtocol(p)) return undefined;
    set.add(p);
  }
  return PORT_PROTOCOLS.filter((p) => set.has(p));
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

/**
 * Parses a port list (`22-30, 1025`): tokens split on commas and spaces, each
 * `N` or `N-M`, 1 ≤ N ≤ M ≤ 65535, plain decimal. Returns the merged, sorted
 * ranges ([] for an empty list: no port); undefined when invalid.
 */
export function parsePorts(s: string): PortRange[] | undefined {
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

/**
 * Parses a CIDR list: tokens split on commas and spaces, each {@link parseCidr},
 * at most MAX_CIDRS. Returns null when empty (any address); undefined when invalid.
 */
export function parseCidrs(s: string): Cidr[] | null | undefined {
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

/**
 * Parses one byte-match statement as upstream does: the POSIX ERE
 * `^(sctp|tcp|udp)\[[0-9]+ *: *[124]\]( *& *0x[0-9a-f]+)? *= *([0-9]+|0x[0-9a-f]+)$`,
 * at most MAX_MATCH characters, numbers as strtol(…, 0) (`010` is 8) but
 * strictly (`08` and values over 32 bits are errors), offset + nbytes within
 * the L4 header. Returns the statement, or the error text after `Match [stmt] `.
 */
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
  return { proto: PROTOCOLS[proto], offset, nbytes, mask, value };
}

/**
 * Parses a list of byte-match statements: split on commas, leading spaces
 * trimmed. Returns null when empty (no statement), or the error text
 * `Match [<stmt>] <err>` of the first bad statement.
 */
export function parseMatches(s: string): MatchStatement[] | null | string {
  const stmts = s.split(",").map((t) => t.replace(/^ +/, "")).filter((t) => t !== "");
  if (stmts.length === 0) return null;
  const out: MatchStatement[] = [];
  for (const stmt of stmts) {
    const r = parseMatchStatement(stmt);
    if (typeof r === "string") return `Match [${showValue(stmt)}] ${r}`;
    out.push(r);
  }
  return out;
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
  const r = parseMatches(s);
  if (typeof r === "string") {
    ctx.addIssue({ code: "custom", message: r });
    return z.NEVER;
  }
  return r;
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
