/**
 * Flow specs for the C flow matcher (c/flow.c, `nfqlb_flowset_add`).
 *
 * A flow as `flowlb` keeps it (upstream §6.1) is encoded into the binary
 * spec that c/nfqlb.h documents: little-endian u32 words
 *
 *   w0 magic 0x31574c46 ("FLW1")   w1 flags (FLOW_F_*)   w2 protocols (1 tcp, 2 udp, 4 sctp)
 *   w3 udpencap   w4 ndsts   w5 nsrcs   w6 ndports   w7 nsports   w8 nmatch
 *   dsts:   ndsts × [16 address bytes (IPv4 mapped), prefix length (IPv4: +96)], host bits cleared
 *   srcs:   nsrcs × the same
 *   dports: ndports × (first | last << 16), merged and sorted
 *   sports: nsports × the same
 *   match:  nmatch × [proto (6/17/132), offset, nbytes (1/2/4), mask (0 = none), value]
 *
 * A criterion that is not set matches everything (its flag is clear). As
 * upstream: empty `protocols`/`dsts`/`srcs`/`match` lists mean "not set",
 * while an empty `dports`/`sports` (`[]` or `""`) is an empty port set that
 * never matches. The text forms accepted here are upstream's (`10.0.0.0/16`,
 * `1000::/64`, `"22-30, 1025"`, `tcp[2:2] = 23`); the encoder throws a
 * RangeError on anything invalid (the flow server reports upstream's error
 * texts itself before encoding).
 */
import { mapIPv4, parseIPv4, parseIPv6 } from "../inet.ts";

/** Magic word, spec version 1. */
export const FLOW_SPEC_MAGIC = 0x31574c46;
/** Header words of a spec. */
export const FLOW_SPEC_WORDS = 9;
/** Flags (w1). */
export const FLOW_F_PROTOCOLS = 1;
/** dsts given. */
export const FLOW_F_DSTS = 2;
/** srcs given. */
export const FLOW_F_SRCS = 4;
/** dports given. */
export const FLOW_F_DPORTS = 8;
/** sports given. */
export const FLOW_F_SPORTS = 16;
/** match statements given. */
export const FLOW_F_MATCH = 32;
/** The flow has a target; clear for upstream's `#name` udpencap companion flow. */
export const FLOW_F_TARGET = 64;
/** Upstream's limit of CIDRs per list. */
export const MAX_CIDRS = 32;

/** A protocol a flow can name. */
export type FlowProtocol = "tcp" | "udp" | "sctp";

/** A CIDR already parsed: 16 bytes as in the key (IPv4 mapped) and the prefix length (IPv4: +96). */
export interface CidrInput {
  /** 16 bytes; host bits may be set (they are cleared). */
  addr: Uint8Array;
  /** 0..128. */
  prefix: number;
}

/** A port range, host order, 1..65535: a single port or [first, last]. */
export type PortRangeInput = number | readonly [number, number];

/** A byte-match statement: read `nbytes` big-endian at `offset` of the L4 header, AND `mask` (0/absent: none), compare with `value`. */
export interface MatchInput {
  /** L4 header the statement reads. */
  proto: FlowProtocol;
  /** Byte offset; offset + nbytes <= 20 (tcp), 8 (udp), 12 (sctp). */
  offset: number;
  /** 1, 2 or 4. */
  nbytes: 1 | 2 | 4;
  /** u32; 0 or absent = no mask. */
  mask?: number;
  /** u32. */
  value: number;
}

/** One flow, as the matcher needs it (name, priority and target live with the caller). */
export interface FlowSpecInput {
  /** Whether the flow has a target (default true); false for a `#name` companion flow, which never wins. */
  target?: boolean;
  /** Protocols (case-insensitive); absent or empty: any L4 protocol. */
  protocols?: readonly string[];
  /** Destination CIDRs (text as upstream, or parsed); absent or empty: any. At most 32. */
  dsts?: readonly (string | CidrInput)[];
  /** Source CIDRs, as dsts. */
  srcs?: readonly (string | CidrInput)[];
  /** Destination ports: text ("22-30, 1025") or ranges; absent: any; empty: none. */
  dports?: string | readonly PortRangeInput[];
  /** Source ports, as dports. */
  sports?: string | readonly PortRangeInput[];
  /** Byte-match statements (text as upstream, or parsed); absent or empty: none. */
  match?: readonly (string | MatchInput)[];
  /** UDP encapsulation port for SCTP, 0..65535 (0 / absent: none). */
  udpencap?: number;
}

const PROTO_BITS: Record<FlowProtocol, number> = { tcp: 1, udp: 2, sctp: 4 };
const PROTO_NUM: Record<FlowProtocol, number> = { tcp: 6, udp: 17, sctp: 132 };
const HDR_LEN: Record<FlowProtocol, number> = { tcp: 20, udp: 8, sctp: 12 };

function fail(what: string, v: unknown): never {
  throw new RangeError(`flow spec: invalid ${what} ${JSON.stringify(v)}`);
}

/**
 * Parses a CIDR as upstream: `a.b.c.d/len` (IPv4, mapped, len + 96) or
 * `ipv6/len`; the prefix is required. Host bits are cleared.
 */
export function parseCidr(s: string): CidrInput {
  const slash = s.indexOf("/");
  if (slash < 0) fail("CIDR", s);
  const host = s.slice(0, slash), len = s.slice(slash + 1);
  if (!/^[0-9]{1,3}$/.test(len)) fail("CIDR", s);
  let prefix = Number(len);
  let addr: Uint8Array | undefined;
  if (!host.includes(":")) {
    const v4 = parseIPv4(host);
    addr = v4 && mapIPv4(v4);
    prefix += 96;
  } else {
    addr = parseIPv6(host);
  }
  if (!addr || prefix > 128) fail("CIDR", s);
  return { addr: clearHostBits(addr, prefix), prefix };
}

function clearHostBits(addr: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefix - 8 * i));
    out[i] = addr[i] & ((0xff00 >> bits) & 0xff);
  }
  return out;
}

/**
 * Parses a port list as upstream: tokens split on commas and spaces, each
 * `N` or `N-M` with 1 <= N <= M <= 65535. Returns merged, sorted ranges.
 */
export function parsePortRanges(s: string): [number, number][] {
  const out: [number, number][] = [];
  for (const tok of s.split(/[, ]+/)) {
    if (tok === "") continue;
    const m = /^([0-9]{1,5})(?:-([0-9]{1,5}))?$/.exec(tok);
    if (!m) fail("port range", tok);
    out.push([Number(m[1]), Number(m[2] ?? m[1])]);
  }
  return mergeRanges(out);
}

/** Sorts and merges overlapping or adjacent ranges; checks 1 <= first <= last <= 65535. */
export function mergeRanges(ranges: readonly PortRangeInput[]): [number, number][] {
  const rs = ranges.map((r): [number, number] => (typeof r === "number" ? [r, r] : [r[0], r[1]]));
  for (const [a, b] of rs) {
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 1 || b > 65535 || a > b) {
      fail("port range", [a, b]);
    }
  }
  rs.sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const r of rs) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

const MATCH_RE = /^(sctp|tcp|udp)\[([0-9]+) *: *([124])\]( *& *(0x[0-9a-f]+))? *= *([0-9]+|0x[0-9a-f]+)$/;

/** strtol(s, 0) as upstream: 0x hex, leading 0 octal (stops at the first non-octal digit), else decimal; then to u32. */
function strtol0(s: string): number {
  let v: bigint;
  if (/^0x/i.test(s)) v = BigInt(s);
  else if (s.startsWith("0")) {
    const oct = /^0([0-7]*)/.exec(s)![1];
    v = oct === "" ? 0n : BigInt("0o" + oct);
  } else v = BigInt(s);
  if (v > 0x7fffffffffffffffn) v = 0x7fffffffffffffffn; // strtol saturates (LONG_MAX)
  return Number(v & 0xffffffffn);
}

/**
 * Parses a byte-match statement as upstream (§6.4): the POSIX ERE
 * `^(sctp|tcp|udp)\[[0-9]+ *: *[124]\]( *& *0x[0-9a-f]+)? *= *([0-9]+|0x[0-9a-f]+)$`,
 * at most 64 characters, numbers as strtol(…, 0), offset + nbytes within the
 * L4 header.
 */
export function parseMatchStatement(s: string): MatchInput {
  if (s.length > 64) fail("match statement", s);
  const m = MATCH_RE.exec(s);
  if (!m) fail("match statement", s);
  const proto = m[1] as FlowProtocol;
  const offset = strtol0(m[2]);
  const nbytes = Number(m[3]) as 1 | 2 | 4;
  if (offset + nbytes > HDR_LEN[proto]) fail("match statement", s);
  return { proto, offset, nbytes, mask: m[5] === undefined ? 0 : strtol0(m[5]), value: strtol0(m[6]) };
}

function toCidr(c: string | CidrInput): CidrInput {
  if (typeof c === "string") return parseCidr(c);
  if (c.addr.length !== 16 || !Number.isInteger(c.prefix) || c.prefix < 0 || c.prefix > 128) fail("CIDR", c);
  return { addr: clearHostBits(c.addr, c.prefix), prefix: c.prefix };
}

function toMatch(m: string | MatchInput): MatchInput {
  if (typeof m === "string") return parseMatchStatement(m);
  const hl = HDR_LEN[m.proto];
  if (
    hl === undefined || ![1, 2, 4].includes(m.nbytes) || !Number.isInteger(m.offset) || m.offset < 0 ||
    m.offset + m.nbytes > hl
  ) {
    fail("match statement", m);
  }
  return m;
}

/**
 * Encodes a flow into the binary spec of `nfqlb_flowset_add` (layout in the
 * module comment and c/nfqlb.h).
 * @throws RangeError on an invalid field
 */
export function encodeFlowSpec(spec: FlowSpecInput): Uint8Array<ArrayBuffer> {
  let flags = spec.target === false ? 0 : FLOW_F_TARGET;
  let protomask = 0;
  if (spec.protocols && spec.protocols.length > 0) {
    flags |= FLOW_F_PROTOCOLS;
    for (const p of spec.protocols) {
      const bit = PROTO_BITS[p.toLowerCase() as FlowProtocol];
      if (!bit) fail("protocol", p);
      protomask |= bit;
    }
  }
  const udpencap = spec.udpencap ?? 0;
  if (!Number.isInteger(udpencap) || udpencap < 0 || udpencap > 65535) fail("udpencap", udpencap);
  const cidrs = (list: readonly (string | CidrInput)[] | undefined, flag: number): CidrInput[] => {
    if (!list || list.length === 0) return [];
    if (list.length > MAX_CIDRS) fail("CIDR count", list.length);
    flags |= flag;
    return list.map(toCidr);
  };
  const ports = (p: string | readonly PortRangeInput[] | undefined, flag: number): [number, number][] => {
    if (p === undefined) return [];
    flags |= flag;
    return typeof p === "string" ? parsePortRanges(p) : mergeRanges(p);
  };
  const dsts = cidrs(spec.dsts, FLOW_F_DSTS), srcs = cidrs(spec.srcs, FLOW_F_SRCS);
  const dports = ports(spec.dports, FLOW_F_DPORTS), sports = ports(spec.sports, FLOW_F_SPORTS);
  let match: MatchInput[] = [];
  if (spec.match && spec.match.length > 0) {
    flags |= FLOW_F_MATCH;
    match = spec.match.map(toMatch);
  }
  const words = FLOW_SPEC_WORDS + 5 * (dsts.length + srcs.length) + dports.length + sports.length +
    5 * match.length;
  const out = new Uint8Array(words * 4);
  const v = new DataView(out.buffer);
  let o = 0;
  const put = (x: number) => {
    v.setUint32(o, x >>> 0, true);
    o += 4;
  };
  for (
    const x of [
      FLOW_SPEC_MAGIC,
      flags,
      protomask,
      udpencap,
      dsts.length,
      srcs.length,
      dports.length,
      sports.length,
      match.length,
    ]
  ) put(x);
  for (const c of [...dsts, ...srcs]) {
    out.set(c.addr, o);
    o += 16;
    put(c.prefix);
  }
  for (const [a, b] of [...dports, ...sports]) put(a | (b << 16));
  for (const m of match) {
    put(PROTO_NUM[m.proto]);
    put(m.offset);
    put(m.nbytes);
    put(m.mask ?? 0);
    put(m.value);
  }
  return out;
}
