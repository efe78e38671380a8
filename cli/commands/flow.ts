/**
 * flow-set, flow-delete, flow-list, flow-list-names and their trace-flow
 * variants: clients of a running flowlb, as upstream's flow commands, over
 * upstream's flow request protocol (core/flow/wire.ts).
 */
import type { Command } from "../command.ts";
import type { OptionSpec } from "../getopt.ts";
import { err, out } from "../io.ts";
import { NfqlbError } from "../../core/errors.ts";
import { BadFlowAddress, flowExchange, FlowNoReply } from "../../core/flow/client.ts";
import { decodeReply } from "../../core/flow/wire.ts";
import { type FlowKind, type FlowRequest, MAX_TARGET } from "../../core/flow/types.ts";

/** The flow-definition options shared by flow-set and trace-flow-set. */
export const FLOW_MATCH_OPTIONS: OptionSpec[] = [
  { name: "protocols", help: "Protocols. tcp, udp, sctp" },
  { name: "dsts", help: "Destination CIDRs" },
  { name: "srcs", help: "Source CIDRs" },
  { name: "dports", help: "Destination port ranges" },
  { name: "sports", help: "Source port ranges" },
  { name: "match", help: "Bit-match statements" },
];

/** Upstream's MAX_ARG_LEN for list values (its target limit is MAX_TARGET). */
const MAX_ARG_LEN = 1000;

const byteLength = (s: string) => new TextEncoder().encode(s).length;

/**
 * Sends one request to the flowlb at NFQLB_FLOW_ADDRESS (default
 * `unix:nfqlb`) and returns everything it answers until it closes.
 * Returns a number (the exit status) when the address does not parse, or
 * when flowlb gives no reply: then one line on stderr and `noReplyExit`.
 */
async function exchange(
  fields: FlowRequest & { action: string },
  noReplyExit: number,
): Promise<Uint8Array | number> {
  try {
    return await flowExchange(fields);
  } catch (e) {
    if (e instanceof FlowNoReply) {
      err(e.message + "\n");
      return noReplyExit;
    }
    if (!(e instanceof BadFlowAddress)) throw e;
    // upstream's text has no newline
    err(e.message);
    return 1;
  }
}

/**
 * No reply to a set or delete: 255, upstream's status for a reply that is
 * not OK (its client prints nothing then; ours says why on stderr).
 */
const SET_NO_REPLY = 255;
/**
 * No reply to a list: 1, as every other failure to reach flowlb
 * (`Connect failed.`). Upstream exits 0 with empty output, which reads as
 * "no flows".
 */
const LIST_NO_REPLY = 1;

/** set/delete: print the C-string reply and a newline; 0 when it starts with OK, else 255. */
function printReply(reply: Uint8Array | number): number {
  if (typeof reply === "number") return reply;
  const text = decodeReply(reply);
  out(text + "\n");
  return text.startsWith("OK") ? 0 : 255;
}

/** lists: copy the reply to stdout as is; 0. */
function printList(reply: Uint8Array | number): number {
  if (typeof reply === "number") return reply;
  let data = reply;
  while (data.length > 0) data = data.subarray(Deno.stdout.writeSync(data));
  return 0;
}

/** A value the line protocol cannot carry: no flow can be named so. */
const unsendable = (v: string) => /[\n\0]/.test(v);

/**
 * flow-set / trace-flow-set: upstream's client checks (exit 1, in its order),
 * then ours: the server's own validation, whose error is printed as the
 * server would answer it (stdout, exit 255), then the request.
 */
async function setFlow(kind: FlowKind, opts: Map<string, string>): Promise<number> {
  const v = (k: string) => opts.get(k);
  const req: FlowRequest = { name: v("name") };
  if (kind === "flow") {
    req.target = v("target");
    if (req.target !== undefined && byteLength(req.target) > MAX_TARGET) {
      throw new NfqlbError("target too long");
    }
    req.priority = v("prio");
  }
  for (const k of ["protocols", "dsts", "srcs", "dports", "sports", "match"] as const) {
    const value = v(k);
    if (value !== undefined && byteLength(value) > MAX_ARG_LEN) throw new NfqlbError(`${k} too long`);
    req[k] = value;
  }
  if (kind === "flow") {
    req.udpencap = v("udpencap");
    if (req.udpencap !== undefined && req.protocols === undefined) {
      throw new NfqlbError("udpencap specified without protocols");
    }
    if (req.udpencap !== undefined && !req.protocols!.toLowerCase().includes("sctp")) {
      throw new NfqlbError("udpencap specified without sctp");
    }
  }
  if ((req.dports !== undefined || req.sports !== undefined) && req.protocols === undefined) {
    throw new NfqlbError("ports specified without protocols");
  }
  // loaded here: zod would slow every other command's start
  const { parseFlowDefinition } = await import("../../core/flow/parse.ts");
  const parsed = parseFlowDefinition(req, kind);
  if (!parsed.ok) {
    out(parsed.error + "\n");
    return 255;
  }
  return printReply(await exchange({ action: kind === "flow" ? "set" : "trace-set", ...req }, SET_NO_REPLY));
}

/** flow-delete / trace-flow-delete. */
async function deleteFlow(action: string, name: string): Promise<number> {
  if (unsendable(name)) {
    out(`Invalid name [${JSON.stringify(name).slice(1, -1)}]\n`);
    return 255;
  }
  return printReply(await exchange({ action, name }, SET_NO_REPLY));
}

/** flow-list / trace-flow-list (a name no flow can have lists nothing, as an unknown one). */
async function listFlows(action: string, name: string | undefined): Promise<number> {
  if (name !== undefined && unsendable(name)) return 0;
  return printList(await exchange({ action, name }, LIST_NO_REPLY));
}

const SET_HEADER = "[options]\n  Set a flow. An un-defined value means match-all.\n" +
  "  Use comma separated lists for multiple items (no spaces)";

/** `flow-set`. */
export const flowSet: Command = {
  name: "flow-set",
  header: `flow-set ${SET_HEADER}`,
  options: [
    { name: "name", help: "Name of the flow", required: true },
    { name: "target", help: "Name of SHM for the load-balancer", required: true },
    { name: "prio", help: "Priority. 0 has lowest precedence (default)" },
    ...FLOW_MATCH_OPTIONS,
    { name: "udpencap", help: "UDP encapsulation port for SCTP" },
  ],
  run: ({ opts }) => setFlow("flow", opts),
};

/** `flow-delete`. */
export const flowDelete: Command = {
  name: "flow-delete",
  header: "flow-delete\n  Delete a flow",
  options: [{ name: "name", help: "Name of the flow", required: true }],
  run: ({ opts }) => deleteFlow("delete", opts.get("name")!),
};

/** `flow-list`. */
export const flowList: Command = {
  name: "flow-list",
  header: "flow-list\n  List flows",
  options: [{ name: "name", help: "Name of a flow" }],
  run: ({ opts }) => listFlows("list", opts.get("name")),
};

/** `flow-list-names`. */
export const flowListNames: Command = {
  name: "flow-list-names",
  header: "flow-list-names\n  List flow names",
  options: [],
  run: () => listFlows("list-names", undefined),
};

/** `trace-flow-set`. */
export const traceFlowSet: Command = {
  name: "trace-flow-set",
  header: `trace-flow-set ${SET_HEADER}`,
  options: [{ name: "name", help: "Name of the flow", required: true }, ...FLOW_MATCH_OPTIONS],
  run: ({ opts }) => setFlow("trace", opts),
};

/** `trace-flow-delete`. */
export const traceFlowDelete: Command = {
  name: "trace-flow-delete",
  header: "trace-flow-delete\n  Delete a flow",
  options: [{ name: "name", help: "Name of the flow", required: true }],
  run: ({ opts }) => deleteFlow("trace-delete", opts.get("name")!),
};

/** `trace-flow-list`. */
export const traceFlowList: Command = {
  name: "trace-flow-list",
  header: "trace-flow-list\n  List flows",
  options: [{ name: "name", help: "Name of a flow" }],
  run: ({ opts }) => listFlows("trace-list", opts.get("name")),
};

/** `trace-flow-list-names` (upstream registers it but drops it from its table). */
export const traceFlowListNames: Command = {
  name: "trace-flow-list-names",
  header: "trace-flow-list-names\n  List flow names",
  options: [],
  run: () => listFlows("trace-list-names", undefined),
};
