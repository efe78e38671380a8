/**
 * Flow specs for the C flow matcher (c/flow.c, `nfqlb_flowset_add`): a parsed flow definition (./parse.ts) is
 * encoded into the binary spec whose layout docs/flows.md ("The flow spec") describes; the constants come from
 * c/nfqlb.h through ffi/consts.ts.
 *
 * A criterion that is not set (null) matches everything: its flag is clear.
 * An empty `dports`/`sports` list is an empty port set that never matches.
 * There is no text here: the definition comes from the one parser
 * (./parse.ts), which has already checked every limit, merged the port
 * ranges and cleared the host bits; the C side checks the spec again.
 */
import type { FlowDefinition, Protocol } from "./types.ts";
import {
  NFQLB_FLOW_F_DPORTS,
  NFQLB_FLOW_F_DSTS,
  NFQLB_FLOW_F_MATCH,
  NFQLB_FLOW_F_PROTOCOLS,
  NFQLB_FLOW_F_SPORTS,
  NFQLB_FLOW_F_SRCS,
  NFQLB_FLOW_F_TARGET,
  NFQLB_FLOW_SPEC_MAGIC,
  NFQLB_FLOW_SPEC_WORDS,
} from "../../ffi/consts.ts";

/** Bits of w2 (the spec's own protocol bits, not IP protocol numbers). */
const PROTO_BITS: Readonly<Record<Protocol, number>> = { tcp: 1, udp: 2, sctp: 4 };

/**
 * Encodes a flow definition into the binary spec of `nfqlb_flowset_add`
 * (layout in the module comment and c/nfqlb.h).
 * @param d the definition, as parseFlowDefinition gives it (or a table's flow)
 * @param wins whether the flow can win a match (NFQLB_FLOW_F_TARGET): by default
 *   when it has a target, so not for a `#name` companion; trace flows have no
 *   target but are each a winner of their own, so flowlb passes true for them
 *
 * @example
 * ```ts
 * const r = parseFlowDefinition({ name: "web", target: "nfqlb", protocols: "tcp", dports: "80" }, "flow");
 * const spec = r.ok ? encodeFlowSpec(r.definition) : undefined; // 9 header words + 1 port range
 * ```
 */
export function encodeFlowSpec(
  d: FlowDefinition,
  wins: boolean = d.target !== null,
): Uint8Array<ArrayBuffer> {
  let flags = wins ? NFQLB_FLOW_F_TARGET : 0;
  let protomask = 0;
  // empty lists are "not set", as upstream's empty values (the parser gives null for them)
  if (d.protocols && d.protocols.length > 0) {
    flags |= NFQLB_FLOW_F_PROTOCOLS;
    for (const p of d.protocols) protomask |= PROTO_BITS[p];
  }
  const dsts = d.dsts ?? [], srcs = d.srcs ?? [];
  if (dsts.length > 0) flags |= NFQLB_FLOW_F_DSTS;
  if (srcs.length > 0) flags |= NFQLB_FLOW_F_SRCS;
  const dports = d.dports ?? [], sports = d.sports ?? [];
  if (d.dports) flags |= NFQLB_FLOW_F_DPORTS;
  if (d.sports) flags |= NFQLB_FLOW_F_SPORTS;
  const match = d.match ?? [];
  if (match.length > 0) flags |= NFQLB_FLOW_F_MATCH;
  const words = NFQLB_FLOW_SPEC_WORDS + 5 * (dsts.length + srcs.length) + dports.length + sports.length +
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
      NFQLB_FLOW_SPEC_MAGIC,
      flags,
      protomask,
      d.udpencap,
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
    put(m.proto);
    put(m.offset);
    put(m.nbytes);
    put(m.mask);
    put(m.value);
  }
  return out;
}
