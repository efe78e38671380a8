/** `lb` and `flowlb`: option tables as upstream 1.2.0. */
import type { Command } from "../command.ts";
import type { OptionSpec } from "../getopt.ts";
import { NfqlbError } from "../../control/errors.ts";
import { HASH_MODE_HELP } from "./fwmark.ts";

const QUEUE_OPTS: OptionSpec[] = [
  { name: "hash_mode", help: HASH_MODE_HELP },
  { name: "queue", help: "NF-queues to listen to (default 2)" },
  { name: "qlength", help: "Lenght of queues (default 1024)" },
  { name: "ft_shm", help: "Frag table; shared memory stats" },
  { name: "ft_size", help: "Frag table; size" },
  { name: "ft_buckets", help: "Frag table; extra buckets" },
  { name: "ft_frag", help: "Frag table; stored frags" },
  { name: "ft_ttl", help: "Frag table; ttl milliS" },
  { name: "trace_address", help: "Trace server address" },
];

/** Option table of `lb`. */
export const LB_OPTIONS: OptionSpec[] = [
  { name: "mtu", help: "MTU. At least the mtu of the ingress device" },
  { name: "tun", help: "Tun device for re-inject fragments" },
  { name: "reassembler", help: "Reassembler size. default=0" },
  { name: "sctp_encap", help: "SCTP UDP encapsulation port. default=0" },
  { name: "tshm", help: "Target shared memory" },
  { name: "lbshm", help: "Lb shared memory" },
  { name: "notargets_fwmark", help: "Set when there are no targets" },
  ...QUEUE_OPTS,
];

/** Option table of `flowlb`. */
export const FLOWLB_OPTIONS: OptionSpec[] = [
  { name: "lbshm", help: "Lb shared memory" },
  { name: "mtu", help: "MTU. At least the mtu of the ingress device" },
  { name: "tun", help: "Tun device for re-inject fragments" },
  { name: "reassembler", help: "Reassembler size. default=0" },
  { name: "promiscuous_ping", help: "Accept ping on any flow with an address match", flag: true },
  { name: "notargets_fwmark", help: "Set when there are no targets" },
  { name: "nolb_fwmark", help: "Set when there is no matching LB" },
  ...QUEUE_OPTS,
];

/** Used by commands whose feature has not landed yet: one plain line, exit 1. */
export function notYet(cmd: string): never {
  throw new NfqlbError(`${cmd}: not available yet in nfqlb-deno (the options parse; the feature lands in a later release)`);
}

/** `lb`. */
export const lb: Command = {
  name: "lb",
  header: "lb [options]\n  Load-balance",
  options: LB_OPTIONS,
  run: () => notYet("lb"),
};

/** `flowlb`. */
export const flowlb: Command = {
  name: "flowlb",
  header: "flowlb [options]\n  Load-balance with flows",
  options: FLOWLB_OPTIONS,
  run: () => notYet("flowlb"),
};
