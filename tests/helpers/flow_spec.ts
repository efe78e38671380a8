/**
 * Flow specs for tests and benches of the C matcher, built from text the way
 * flowlb builds them: each field through the one flow parser
 * (core/flow/parse.ts), then encodeFlowSpec (core/flow/encode.ts).
 *
 * Field by field rather than parseFlowDefinition, because the matcher is
 * also tested on what a flow-set request cannot say but flowlb builds
 * itself (a `#name` companion: no target, udp with udpencap) or what only the
 * C side decides (ports on a flow without protocols).
 */
import { parseCidrs, parseMatches, parsePorts, parseProtocols } from "../../core/flow/parse.ts";
import { encodeFlowSpec } from "../../core/flow/encode.ts";
import type { FlowDefinition, FlowRequest } from "../../core/flow/types.ts";

/**
 * A flow's matching fields as flow-set takes them (the text of a {@link FlowRequest}; absent: not set), with
 * what only flowlb decides: whether the flow can win (has a target; default true, false for a `#name`
 * companion), and the udpencap port as a number (0..65535, default 0).
 */
export type FlowText = Pick<FlowRequest, "protocols" | "dsts" | "srcs" | "dports" | "sports" | "match"> & {
  target?: boolean;
  udpencap?: number;
};

function parsed<T>(what: string, text: string, v: T | undefined): T {
  if (v === undefined) throw new RangeError(`flow spec: invalid ${what} ${JSON.stringify(text)}`);
  return v;
}

/** The definition of `t`, parsed; throws a RangeError on invalid text. */
export function flowDefinition(t: FlowText): FlowDefinition {
  const match = t.match === undefined ? null : parseMatches(t.match);
  if (typeof match === "string") throw new RangeError(`flow spec: ${match}`);
  const udpencap = t.udpencap ?? 0;
  if (!Number.isInteger(udpencap) || udpencap < 0 || udpencap > 65535) {
    throw new RangeError(`flow spec: invalid udpencap ${udpencap}`);
  }
  const field = <T>(what: string, text: string | undefined, parse: (s: string) => T | undefined): T | null =>
    text === undefined ? null : parsed(what, text, parse(text));
  return {
    name: "f",
    target: t.target === false ? null : "t",
    priority: 0,
    protocols: field("protocols", t.protocols, parseProtocols),
    dsts: field("dsts", t.dsts, parseCidrs),
    srcs: field("srcs", t.srcs, parseCidrs),
    dports: field("dports", t.dports, parsePorts),
    sports: field("sports", t.sports, parsePorts),
    match,
    udpencap,
  };
}

/** The binary spec of `t` (parse, then encodeFlowSpec). */
export function flowSpec(t: FlowText): Uint8Array<ArrayBuffer> {
  return encodeFlowSpec(flowDefinition(t));
}
