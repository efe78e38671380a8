/** flow-set, flow-delete, flow-list, flow-list-names (clients of a running flowlb). */
import type { Command } from "../command.ts";
import type { OptionSpec } from "../getopt.ts";
import { notYet } from "./lb.ts";

/** The flow-definition options shared by flow-set and trace-flow-set. */
export const FLOW_MATCH_OPTIONS: OptionSpec[] = [
  { name: "protocols", help: "Protocols. tcp, udp, sctp" },
  { name: "dsts", help: "Destination CIDRs" },
  { name: "srcs", help: "Source CIDRs" },
  { name: "dports", help: "Destination port ranges" },
  { name: "sports", help: "Source port ranges" },
  { name: "match", help: "Bit-match statements" },
];

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
  run: () => notYet("flow-set"),
};

/** `flow-delete`. */
export const flowDelete: Command = {
  name: "flow-delete",
  header: "flow-delete\n  Delete a flow",
  options: [{ name: "name", help: "Name of the flow", required: true }],
  run: () => notYet("flow-delete"),
};

/** `flow-list`. */
export const flowList: Command = {
  name: "flow-list",
  header: "flow-list\n  List flows",
  options: [{ name: "name", help: "Name of a flow" }],
  run: () => notYet("flow-list"),
};

/** `flow-list-names`. */
export const flowListNames: Command = {
  name: "flow-list-names",
  header: "flow-list-names\n  List flow names",
  options: [],
  run: () => notYet("flow-list-names"),
};

/** `trace-flow-set`. */
export const traceFlowSet: Command = {
  name: "trace-flow-set",
  header: `trace-flow-set ${SET_HEADER}`,
  options: [{ name: "name", help: "Name of the flow", required: true }, ...FLOW_MATCH_OPTIONS],
  run: () => notYet("trace-flow-set"),
};

/** `trace-flow-delete`. */
export const traceFlowDelete: Command = {
  name: "trace-flow-delete",
  header: "trace-flow-delete\n  Delete a flow",
  options: [{ name: "name", help: "Name of the flow", required: true }],
  run: () => notYet("trace-flow-delete"),
};

/** `trace-flow-list`. */
export const traceFlowList: Command = {
  name: "trace-flow-list",
  header: "trace-flow-list\n  List flows",
  options: [{ name: "name", help: "Name of a flow" }],
  run: () => notYet("trace-flow-list"),
};

/** `trace-flow-list-names` (upstream registers it but drops it from its table). */
export const traceFlowListNames: Command = {
  name: "trace-flow-list-names",
  header: "trace-flow-list-names\n  List flow names",
  options: [],
  run: () => notYet("trace-flow-list-names"),
};
