/** `lb` and `flowlb`: option tables as upstream 1.2.0, plus our extensions. */
import type { Command } from "../command.ts";
import type { OptionSpec } from "../getopt.ts";
import { out } from "../io.ts";
import { INT32_MAX, INT32_MIN, parseInteger, UINT32_MAX } from "../numbers.ts";
import { NfqlbError } from "../../core/errors.ts";
import type { FlowLbConfig, LbConfig, QueueConfig } from "../../core/lb_options.ts";
import { flowAddress } from "../../core/flow/wire.ts";
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
  // ours (docs/cli.md)
  {
    name: "fail_open",
    help: "Accept, unbalanced, when a queue is full (NFQA_CFG_F_FAIL_OPEN)",
    flag: true,
    ours: true,
  },
  { name: "batch", help: "Packets per receive batch, 1..1024 (default 64)", arg: "N", ours: true },
  { name: "metrics", help: "Serve Prometheus metrics at ADDR:PORT", arg: "ADDR:PORT", ours: true },
  {
    name: "offload",
    help: "auto: decide each connection once, the kernel steers the rest (needs nfqlb offload-rules)",
    arg: "MODE",
    choices: ["off", "auto"],
    ours: true,
  },
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
  // ours (docs/cli.md): opt-in persistence; without it flowlb starts empty, as upstream
  { name: "flow_store", help: "Save the flows in FILE and restore them at start", arg: "FILE", ours: true },
];

/** Used by commands whose feature has not landed yet: one plain line, exit 1. */
export function notYet(cmd: string): never {
  throw new NfqlbError(
    `${cmd}: not available yet in nfqlb-deno (the options parse; the feature lands in a later release)`,
  );
}

/** Parses `--queue=N` or `--queue=first:last` (inclusive). */
export function parseQueues(v: string): { first: number; last: number } {
  const m = /^([0-9]+)(?::([0-9]+))?$/.exec(v);
  const first = m ? Number(m[1]) : NaN, last = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || first > 65535 || last > 65535 || first > last) throw new NfqlbError(`queue invalid [${v}]`);
  return { first, last };
}

/** Options that name a shm file: an empty one fails as every shm name does (core/shm_dir.ts). */
const SHM_OPTIONS = new Set(["tshm", "lbshm", "ft_shm"]);

/** A name option's value: as given, or `def` when absent; an empty one is refused in one line. */
function name(cmd: string, opts: Map<string, string>, option: string, def: string): string;
function name(cmd: string, opts: Map<string, string>, option: string): string | undefined;
function name(cmd: string, opts: Map<string, string>, option: string, def?: string): string | undefined {
  const v = opts.get(option) ?? def;
  if (v !== "") return v;
  throw new NfqlbError(
    SHM_OPTIONS.has(option)
      ? "Invalid shm name []"
      : `${cmd}: invalid --${option} value '' (expected a name)`,
  );
}

/**
 * The options shared by lb and flowlb, as a config (strict numbers, upstream
 * defaults). Every value is checked here against the bounds of
 * QueueConfigSchema (core/lb_options.ts), so the dataplane takes the config
 * as it is, without loading zod before it binds its queues
 * (tests/unit/lb_config_test.ts keeps the two in step).
 */
function commonConfig(cmd: string, opts: Map<string, string>): QueueConfig {
  const int = (name: string, def: string, min: number, max: number) =>
    parseInteger(cmd, `--${name} value`, opts.get(name) ?? def, min, max);
  const mtu = int("mtu", "1500", 0, 65535);
  if (mtu < 576) throw new NfqlbError(`Invalid MTU; ${mtu}`);
  return {
    lbshm: name(cmd, opts, "lbshm"),
    mtu,
    tun: name(cmd, opts, "tun"),
    reassembler: int("reassembler", "0", 0, UINT32_MAX),
    notargetsFwmark: int("notargets_fwmark", "-1", INT32_MIN, INT32_MAX),
    hashMode: int("hash_mode", "1", 0, 65535),
    queues: parseQueues(opts.get("queue") ?? "2"),
    qlength: int("qlength", "1024", 1, 1048576),
    ftShm: name(cmd, opts, "ft_shm", "ftshm"),
    ftSize: int("ft_size", "500", 1, 16777216),
    ftBuckets: int("ft_buckets", "500", 0, 16777216),
    ftFrag: int("ft_frag", "100", 0, 1048576),
    ftTtl: int("ft_ttl", "200", 0, UINT32_MAX),
    traceAddress: opts.get("trace_address") ?? "unix:nfqlb-trace",
    failOpen: opts.has("fail_open"),
    batch: int("batch", "64", 1, 1024),
    metrics: name(cmd, opts, "metrics"),
    offload: parseOffload(cmd, opts.get("offload")),
  };
}

/** `--offload=off|auto` (default off); a bad value is one line. */
export function parseOffload(cmd: string, v: string | undefined): "off" | "auto" {
  if (v === undefined || v === "off") return "off";
  if (v === "auto") return "auto";
  throw new NfqlbError(`${cmd}: invalid --offload value '${v}' (expected off or auto)`);
}

/** `lb`'s config from its options (see commonConfig); throws NfqlbError with one line. */
export function lbConfig(opts: Map<string, string>): LbConfig {
  return {
    ...commonConfig("lb", opts),
    tshm: name("lb", opts, "tshm", "nfqlb"),
    sctpEncap: parseInteger("lb", "--sctp_encap value", opts.get("sctp_encap") ?? "0", 0, 65535),
  };
}

/** `flowlb`'s config from its options (see commonConfig); throws NfqlbError with one line. */
export function flowLbConfig(opts: Map<string, string>): FlowLbConfig {
  const address = flowAddress();
  if (address === "") throw new NfqlbError("flowlb: invalid flow address '' (expected an address)");
  return {
    ...commonConfig("flowlb", opts),
    nolbFwmark: parseInteger(
      "flowlb",
      "--nolb_fwmark value",
      opts.get("nolb_fwmark") ?? "-1",
      INT32_MIN,
      INT32_MAX,
    ),
    promiscuous: opts.has("promiscuous_ping"),
    flowAddress: address,
    flowStore: parseFlowStore(opts.get("flow_store")),
  };
}

/** `lb`. */
export const lb: Command = {
  name: "lb",
  header: "lb [options]\n  Load-balance",
  options: LB_OPTIONS,
  async run({ opts }) {
    const cfg = lbConfig(opts);
    // loaded on demand: the dataplane would slow every other command's start
    const { runLb } = await import("../../dataplane/lb.ts");
    return runLb(cfg, (line) => out(line + "\n"));
  },
};

/**
 * flowlb's `--flow_store=FILE`: a non-empty path whose directory exists and
 * that is not itself a directory (checked before anything starts).
 */
export function parseFlowStore(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const bad = (why: string) => new NfqlbError(`flowlb: invalid --flow_store value '${v}' (${why})`);
  if (v === "" || v.includes("\0")) throw bad("expected a file path");
  const dir = v.includes("/") ? v.slice(0, v.lastIndexOf("/")) || "/" : ".";
  let isDir = false;
  try {
    isDir = Deno.statSync(dir).isDirectory;
  } catch { /* missing: below */ }
  if (!isDir) throw bad(`no directory ${dir}`);
  try {
    if (Deno.statSync(v).isDirectory) throw bad("a directory, expected a file");
  } catch (e) {
    if (e instanceof NfqlbError) throw e;
  }
  return v;
}

/** `flowlb`. */
export const flowlb: Command = {
  name: "flowlb",
  header: "flowlb [options]\n  Load-balance with flows",
  options: FLOWLB_OPTIONS,
  async run({ opts }) {
    const cfg = flowLbConfig(opts);
    const { runFlowLb } = await import("../../dataplane/flowlb.ts");
    return runFlowLb(cfg, (line) => out(line + "\n"));
  },
};
