/**
 * Flow definitions as text, as upstream prints them: the canonical forms of
 * CIDRs, port ranges and byte-match statements, the JSON object `flow-list`
 * prints for a flow, and the canonical request of a definition (what is saved and
 * what `nfqlb apply` compares).
 */
import { formatIPv6 } from "../inet.ts";
import { protocolName } from "../ip_protocols.ts";
import type { Cidr, FlowDefinition, FlowRequest, MatchStatement, PortRange } from "./types.ts";

/** Canonical text of a statement, as upstream lists it: `tcp[2:2]=0x1389`, `tcp[0:4]&0xffff=0x1389`. */
export function formatMatch(m: MatchStatement): string {
  const mask = m.mask !== 0 ? `&0x${(m.mask >>> 0).toString(16)}` : "";
  return `${protocolName(m.proto)}[${m.offset}:${m.nbytes}]${mask}=0x${(m.value >>> 0).toString(16)}`;
}

/** `addr/prefix` as upstream lists a CIDR, e.g. `::ffff:10.0.0.0/128`. */
export function formatCidr(c: Cidr): string {
  return `${formatIPv6(c.addr)}/${c.prefix}`;
}

/** `N` or `N-M`. */
export function formatPortRange(r: PortRange): string {
  return r[0] === r[1] ? `${r[0]}` : `${r[0]}-${r[1]}`;
}

/** The canonical request of a definition: parsing it gives the same definition. */
export function canonicalRequest(d: FlowDefinition): FlowRequest {
  const req: FlowRequest = { name: d.name };
  if (d.target !== null) req.target = d.target;
  if (d.priority !== 0) req.priority = String(d.priority);
  if (d.protocols) req.protocols = d.protocols.join(",");
  // ports need a protocols field, even an empty one (any protocol: Meridio's `--protocols= --dports=8443`)
  else if (d.dports || d.sports) req.protocols = "";
  if (d.dsts) req.dsts = d.dsts.map(formatCidr).join(",");
  if (d.srcs) req.srcs = d.srcs.map(formatCidr).join(",");
  if (d.dports) req.dports = d.dports.map(formatPortRange).join(",");
  if (d.sports) req.sports = d.sports.map(formatPortRange).join(",");
  if (d.match) req.match = d.match.map(formatMatch).join(",");
  if (d.udpencap !== 0) req.udpencap = String(d.udpencap);
  return req;
}

// ---------------------------------------------------------------------------
// JSON (upstream's flow-list output)

function jsonList(key: string, items: readonly string[]): string {
  return `,\n  "${key}": [\n${items.map((i) => `    "${i}"`).join(",\n")}\n  ]`;
}

/** One flow as {@link renderFlow} prints it, parsed (`flow-list` JSON). */
export interface ListedFlow {
  /** Flow name. */
  name: string;
  /** Unsigned (upstream's %u): a negative priority shows as 2^32 + p. */
  priority: number;
  /** Protocols, in tcp, udp, sctp order. */
  protocols?: string[];
  /** Destination CIDRs, `::ffff:10.0.0.0/120` for IPv4. */
  dests?: string[];
  /** Destination ports and ranges, merged and sorted. */
  dports?: string[];
  /** Source CIDRs. */
  srcs?: string[];
  /** Source ports and ranges. */
  sports?: string[];
  /** Byte-match statements, canonical (`tcp[2:2]=0x50`). */
  match?: string[];
  /** UDP encapsulation port, when not 0. */
  udpencap?: number;
  /** Packets matched since the flow was (re)defined. */
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
