/**
 * The zod schema of the host config file, version 1 (docs/config.md): the
 * shape, the types, the ranges and the defaults of every key. It holds only
 * what JSON Schema can say, so `z.toJSONSchema()` publishes it as is
 * (docs/nfqlb-config.schema.json); the rules between keys (unique fwmarks,
 * address families, flows, …) are in rules.ts.
 *
 * Every schema carries its own one-line "expected …" text, because the
 * loader prints `<path>: <expected>, got <value>` and zod's generic texts
 * name neither the range nor the key. Ranges that other modules already
 * define (target weights, connection-table limits, lb options) are read from
 * their schemas and constants, so the two never disagree.
 */
import { z } from "zod";
import { FlowLbConfigSchema, LbConfigSchema, QueueConfigSchema } from "../../core/lb_options.ts";
import { ConntrackOptionsSchema, MAX_CAPACITY, MAX_CTX_SLOTS, MAX_TTL_MS } from "../../core/conntrack_shm.ts";
import { MAX_WEIGHT } from "../../core/target_shm.ts";
import { MAX_M } from "../../core/prime.ts";
import { PORT_PROTOCOLS } from "../../core/ip_protocols.ts";
import { DEFAULT_CONFIG_NAME } from "../names.ts";

/** Largest fwmark a target can have: positive int32 (0 is "no mark", negatives mean "none" in the table). */
export const MAX_FWMARK = 2147483647;
/** Largest Linux routing table id. */
export const MAX_TABLE = 4294967295;
/** Service (target shm) names: one safe path component, short enough for `<name>-ct` and log lines. */
/** A config name (apply's id: kernel rule tags, state file). */
export const CONFIG_NAME_RE = /^(?!\.{1,2}$)[A-Za-z0-9._+-]{1,32}$/;
/** A service (target shm) name. */
export const SERVICE_NAME_RE = /^(?!\.{1,2}$)[A-Za-z0-9._+-]{1,64}$/;

/** An integer in [min, max] whose every failure says `expected <what>`. */
function int(min: number, max: number, what = `an integer ${min}..${max}`) {
  const error = `expected ${what}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
}

/** The same integer range as an existing (possibly optional or defaulted) zod number schema. */
function intLike(schema: z.ZodType): z.ZodInt {
  let s: z.ZodType = schema;
  while (s instanceof z.ZodOptional || s instanceof z.ZodDefault) s = s.unwrap() as z.ZodType;
  if (!(s instanceof z.ZodNumber) || s.minValue === null || s.maxValue === null) {
    throw new Error("intLike: not a bounded number schema");
  }
  return int(s.minValue, s.maxValue);
}

/** A non-empty string. */
function text(what: string) {
  const error = `expected ${what}`;
  return z.string({ error }).min(1, { error });
}

/** A boolean. */
const bool = z.boolean({ error: "expected true or false" });

/** One of `values`. */
function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `expected one of ${values.join(", ")}` });
}

/** A list whose failures all say `expected <what>`. */
function list<T extends z.ZodType>(item: T, what: string, min = 0) {
  const error = `expected ${what}`;
  return z.array(item, { error }).min(min, { error });
}

/**
 * A mapping with exactly these keys: an unknown key is an error (typos are
 * caught), and says which keys there are.
 */
function mapping<S extends z.ZodRawShape>(shape: S, what: string) {
  const keys = Object.keys(shape).join(", ");
  return z.strictObject(shape, {
    error: (iss) =>
      iss.code === "unrecognized_keys" ? `expected one of the keys ${keys}` : `expected ${what}`,
  });
}

const portNumber = int(1, 65535, "a port 1..65535");
const PORT_OR_RANGE = 'a port 1..65535 or a range "first-last"';

/** ConntrackShm.create's defaults (lifetimes, flood limit), so that the file and init agree. */
const CT_DEFAULTS = ConntrackOptionsSchema.parse({ capacity: 1 });

/** Schema of a connection table (the `--conntrack` options of init). */
export const ConntrackFileSchema = mapping({
  capacity: int(1, MAX_CAPACITY).describe("Entries, 1..2^28 (init --conntrack)."),
  ttlMs: mapping({
    tcp: int(0, MAX_TTL_MS).default(CT_DEFAULTS.ttlMs.tcp),
    udp: int(0, MAX_TTL_MS).default(CT_DEFAULTS.ttlMs.udp),
    other: int(0, MAX_TTL_MS).default(CT_DEFAULTS.ttlMs.other),
  }, "a mapping of tcp, udp, other (ms)").prefault({}).describe(
    "Lifetimes after the last packet, ms (init --ct_ttl).",
  ),
  floodPerSecond: intLike(ConntrackOptionsSchema.shape.floodPerSecond).default(CT_DEFAULTS.floodPerSecond)
    .describe("New connections per second at most, 0 = no limit (init --ct_flood)."),
  contexts: int(0, MAX_CTX_SLOTS).default(0).describe("Context records, 0 = none (init --ct_contexts)."),
}, "a mapping with capacity (and ttlMs, floodPerSecond, contexts)");

/** Schema of one selected protocol/port of a service. */
export const PortSelectorSchema = mapping({
  protocol: oneOf(PORT_PROTOCOLS).describe("L4 protocol."),
  port: z.union([
    int(1, 65535, PORT_OR_RANGE),
    z.string({ error: `expected ${PORT_OR_RANGE}` }).regex(/^[0-9]{1,5}-[0-9]{1,5}$/, {
      error: `expected ${PORT_OR_RANGE}`,
    }),
  ], { error: `expected ${PORT_OR_RANGE}` }).optional().describe(
    'A port, or `"first-last"`; absent: every port of the protocol.',
  ),
}, "a mapping with protocol (and port)");

const ADDRESS = "an IP address, or a list of one IPv4 and one IPv6 address";

/** The modes of a target: how its packets get there (docs/config.md). */
export const MODES = ["dsr", "nat", "fullnat"] as const;

/**
 * Schema of a `snat` mapping: per family, the source address that fullnat
 * targets see (on a service: the default of its fullnat targets; on a
 * target: overrides the service's, per family).
 */
export const SnatFileSchema = mapping({
  ipv4: text("an IPv4 address").optional().describe("Source address of IPv4 packets to fullnat targets."),
  ipv6: text("an IPv6 address").optional().describe("Source address of IPv6 packets to fullnat targets."),
}, "a mapping of ipv4 and/or ipv6 (the source addresses)");

/** Health check types (docs/health.md). */
export const HEALTH_TYPES = ["tcp", "http", "udp", "icmp", "exec"] as const;
/** What a target found dead gets: out of the table, or weight 0. */
export const HEALTH_ON_FAIL = ["remove", "drain"] as const;
/** Health check defaults (docs/health.md); the schema leaves keys absent so a target's mapping can inherit. */
export const HEALTH_DEFAULTS = {
  intervalMs: 1000,
  timeoutMs: 500,
  rise: 2,
  fall: 3,
  onFail: "remove",
  path: "/",
  expect: [200],
  payload: "nfqlb-health\n",
} as const;
/** Bounds of the health timing keys. */
export const MAX_HEALTH_INTERVAL_MS = 3_600_000, MIN_HEALTH_INTERVAL_MS = 100;

/**
 * Schema of a health check (on a service; a target's own mapping overrides
 * it key by key). Defaults are filled in by the rules (rules.ts), after the
 * merge: `HEALTH_DEFAULTS`.
 */
export const HealthFileSchema = mapping(
  {
    type: oneOf(HEALTH_TYPES).optional().describe(
      "tcp: connect; http: GET, expected status; udp: a datagram, any reply; icmp: echo; exec: a command, exit 0. Required on the service (or the target).",
    ),
    port: portNumber.optional().describe(
      "Port checked (tcp, http, udp); default: the service's first `ports:` entry; NAT targets: their `port` wins.",
    ),
    intervalMs: int(MIN_HEALTH_INTERVAL_MS, MAX_HEALTH_INTERVAL_MS).optional().describe(
      "Time between two checks of a target, ms; default 1000.",
    ),
    timeoutMs: int(10, MAX_HEALTH_INTERVAL_MS).optional().describe(
      "A check that has not passed after this long failed, ms; \u2264 intervalMs; default 500.",
    ),
    rise: int(1, 100).optional().describe("Passes in a row that bring a down target back; default 2."),
    fall: int(1, 100).optional().describe("Failures in a row that take an up target out; default 3."),
    onFail: oneOf(HEALTH_ON_FAIL).optional().describe(
      "remove: out of the Maglev table (as deactivate); drain: weight 0 (established connections stay); default remove.",
    ),
    path: z.string({ error: "expected a path starting with /" }).regex(/^\/[\x21-\x7e]*$/, {
      error: "expected a path starting with / (no spaces)",
    }).max(1024, { error: "expected a path of at most 1024 characters" }).optional().describe(
      "http: the path GET asks; default /.",
    ),
    expect: list(
      int(100, 599, "an HTTP status 100..599"),
      "a list of HTTP statuses 100..599 (at least one)",
      1,
    )
      .optional().describe("http: the statuses that pass; default [200]."),
    body: text("a non-empty string").max(1024, { error: "expected at most 1024 characters" }).optional()
      .describe("http: a substring the answer's first 64 KiB must contain; absent: any body."),
    payload: text("a non-empty string").max(1024, { error: "expected at most 1024 characters" }).optional()
      .describe("udp: the datagram sent; default `nfqlb-health\\n`."),
    command: list(text("a non-empty string"), "a command as a list [program, args...] (at least one)", 1)
      .optional().describe(
        "exec: the program and its arguments; the target is in its environment (NFQLB_TARGET_ADDRESS, …).",
      ),
  },
  "a mapping with type (and port, intervalMs, timeoutMs, rise, fall, onFail, path, expect, body, payload, command)",
);

/** Schema of one target (one fwmark, one row of the Maglev table). */
export const TargetFileSchema = mapping({
  fwmark: int(1, MAX_FWMARK).describe("The target's fwmark, 1..2^31-1, unique across all services."),
  address: z.union([
    z.string({ error: `expected ${ADDRESS}` }),
    list(z.string({ error: `expected ${ADDRESS}` }), ADDRESS, 1).max(2, { error: `expected ${ADDRESS}` }),
  ], { error: `expected ${ADDRESS}` }).describe(
    "DSR: the next hop; NAT and full NAT: the DNAT destination. One per VIP family.",
  ),
  port: portNumber.optional().describe("nat and fullnat only: the destination port after translation."),
  weight: int(0, MAX_WEIGHT).default(1).describe("Maglev weight, 0 = drain (activate --weight)."),
  mode: oneOf(MODES).default("dsr").describe(
    "dsr: route to the target unchanged; nat: DNAT to address[:port]; fullnat: DNAT and SNAT to the snat address.",
  ),
  table: int(1, MAX_TABLE).optional().describe(
    "DSR only: the routing table of the fwmark (default: the fwmark).",
  ),
  snat: SnatFileSchema.optional().describe(
    "fullnat only: the source address per family, overriding the service's snat.",
  ),
  active: bool.default(true).describe("false: kept in the file but not in the table."),
  health: HealthFileSchema.optional().describe(
    "This target's health check: its keys override the service's `health` (docs/health.md).",
  ),
}, "a mapping with fwmark and address (and port, weight, mode, table, snat, active, health)");

/** Schedulers; all but maglev decide per connection and so need a connection table. */
export const SCHEDULERS = ["maglev", "rr", "wrr", "lc", "wlc"] as const;

/** Schema of one service: one target table (a "load-balancer"). */
export const ServiceFileSchema = mapping({
  name: z.string({ error: "expected a name of 1..64 of A-Z a-z 0-9 . _ + - (not . or ..)" }).regex(
    SERVICE_NAME_RE,
    { error: "expected a name of 1..64 of A-Z a-z 0-9 . _ + - (not . or ..)" },
  ).describe("The target shm name, unique."),
  m: int(3, MAX_M).default(997).describe("Maglev table size; lowered to a prime as init does."),
  n: int(1, MAX_M).default(32).describe("Max targets; \u2264 m (after the prime adjustment)."),
  scheduler: oneOf(SCHEDULERS).default("maglev").describe("How a new connection picks its target."),
  conntrack: ConntrackFileSchema.optional().describe("The connection table `<name>-ct`; absent: none."),
  vips: list(text("an IP address or CIDR"), "a list of IP addresses or CIDRs (at least one)", 1).describe(
    "Addresses or CIDRs whose packets are queued to the dataplane.",
  ),
  ports: list(PortSelectorSchema, "a list of {protocol, port} (at least one)", 1).optional().describe(
    "Queue only these protocols/ports to the VIPs; absent: all traffic.",
  ),
  snat: SnatFileSchema.optional().describe(
    "The source address per family of the service's fullnat targets (a target's own snat wins).",
  ),
  targets: list(TargetFileSchema, "a list of targets", 0).describe("The targets."),
  health: HealthFileSchema.optional().describe(
    "The targets' health check, done by `nfqlb run` (docs/health.md); absent: none (unless a target has one).",
  ),
}, "a mapping with name, vips and targets (and m, n, scheduler, conntrack, ports, snat, health)");

const flowText = z.string({ error: "expected a string" });
const flowPorts = list(
  // any integer: the range is the flow validator's to judge, with flow-set's text
  z.union([z.int({ error: `expected ${PORT_OR_RANGE}` }), z.string({ error: `expected ${PORT_OR_RANGE}` })], {
    error: `expected ${PORT_OR_RANGE}`,
  }),
  `a list of ${PORT_OR_RANGE}`,
);

/** Schema of one flow (flow-set); the contents are checked by the flow validator (core/flow/parse.ts). */
export const FlowFileSchema = mapping({
  name: flowText.describe("Flow name (flow-set --name)."),
  service: flowText.describe("The service whose table the flow selects (flow-set --target)."),
  priority: int(-2147483648, 2147483647).default(0).describe("Higher is matched first (flow-set --prio)."),
  protocols: list(flowText, "a list of protocols").optional().describe(
    "tcp, udp, sctp; absent or empty: any.",
  ),
  dsts: list(flowText, "a list of CIDRs").optional().describe("Destination CIDRs; absent or empty: any."),
  srcs: list(flowText, "a list of CIDRs").optional().describe("Source CIDRs; absent or empty: any."),
  dports: flowPorts.optional().describe("Destination ports/ranges; absent: any; empty: none."),
  sports: flowPorts.optional().describe("Source ports/ranges; absent: any; empty: none."),
  match: list(flowText, "a list of match statements").optional().describe(
    "Byte-match statements (`tcp[13:1] & 0x02 = 2`).",
  ),
  udpencap: int(0, 65535).default(0).describe("UDP encapsulation port of an SCTP flow, 0 = none."),
}, "a mapping with name and service (and priority, protocols, dsts, srcs, dports, sports, match, udpencap)");

const Q = LbConfigSchema.shape, FQ = FlowLbConfigSchema.shape, QQ = QueueConfigSchema.shape;

/**
 * Schema of the lb/flowlb options; absent keys keep the command's own
 * default (docs/cli.md). Ranges are core/lb_options.ts's.
 */
export const DataplaneOptionsSchema = mapping({
  mtu: intLike(QQ.mtu).optional().describe("--mtu."),
  qlength: intLike(QQ.qlength).optional().describe("--qlength."),
  tun: text("a device name").optional().describe("--tun."),
  lbshm: text("a shm name").optional().describe("--lbshm."),
  reassembler: intLike(QQ.reassembler).optional().describe("--reassembler."),
  notargetsFwmark: intLike(QQ.notargetsFwmark).optional().describe("--notargets_fwmark."),
  hashMode: intLike(QQ.hashMode).optional().describe("--hash_mode."),
  ftShm: text("a shm name").optional().describe("--ft_shm; absent: ftshm.<config name>."),
  ftSize: intLike(QQ.ftSize).optional().describe("--ft_size."),
  ftBuckets: intLike(QQ.ftBuckets).optional().describe("--ft_buckets."),
  ftFrag: intLike(QQ.ftFrag).optional().describe("--ft_frag."),
  ftTtl: intLike(QQ.ftTtl).optional().describe("--ft_ttl."),
  traceAddress: text("an address unix:NAME, tcp:IPV4:PORT or tcp:[IPV6]:PORT").optional().describe(
    "--trace_address; absent: unix:nfqlb-trace.<config name>.",
  ),
  failOpen: bool.optional().describe("--fail_open."),
  batch: intLike(QQ.batch).optional().describe("--batch."),
  metrics: text("ADDR:PORT or [ADDR]:PORT").optional().describe("--metrics."),
  sctpEncap: intLike(Q.sctpEncap).optional().describe("lb only: --sctp_encap."),
  nolbFwmark: intLike(FQ.nolbFwmark).optional().describe("flowlb only: --nolb_fwmark."),
  promiscuous: bool.optional().describe("flowlb only: --promiscuous_ping."),
  flowAddress: text("an address unix:NAME, tcp:IPV4:PORT or tcp:[IPV6]:PORT").optional().describe(
    "flowlb only: the flow server's address (NFQLB_FLOW_ADDRESS); absent: unix:nfqlb.<config name>.",
  ),
}, "a mapping of lb options");

/** Netfilter hooks the queue rules go in. */
export const HOOKS = ["prerouting", "output"] as const;
const QUEUE = 'a queue 0..65535 or a range "first:last"';

/** Schema of the dataplane section. */
export const DataplaneFileSchema = mapping({
  queue: z.union([
    int(0, 65535, QUEUE),
    z.string({ error: `expected ${QUEUE}` }).regex(/^[0-9]{1,5}(:[0-9]{1,5})?$/, {
      error: `expected ${QUEUE}`,
    }),
  ], { error: `expected ${QUEUE}` }).default("2").describe("NFQUEUE number or `first:last` (lb --queue)."),
  bypass: bool.default(true).describe("--queue-bypass: accept packets when no lb listens."),
  hooks: list(oneOf(HOOKS), "a list of prerouting, output (at least one)", 1).default(["prerouting"])
    .describe("prerouting: forwarded traffic; output: local clients."),
  options: DataplaneOptionsSchema.prefault({}).describe("lb/flowlb options."),
  start: bool.default(true).describe("apply starts lb/flowlb when it is not running."),
  offload: z.union([bool, z.literal("auto")], { error: "expected true, false or auto" }).default(false)
    .describe(
      "true: install the connmark-restore rules that let `ct-set --offload` flows skip the queue, and (DSR, prerouting) the raw rule that leaves TCP SYNs untracked so TCP connections can be offloaded (docs/conntrack.md). auto: those, the rule that saves each connection's verdict mark in the kernel, and lb/flowlb --offload=auto: each connection is decided once in user space, the kernel steers the rest (docs/offload.md).",
    ),
}, "a mapping with queue, bypass, hooks, options, start, offload");

/** Schema of the admin section: `nfqlb run`'s HTTP server (apply only records it, so two configs never share it). */
export const AdminFileSchema = mapping({
  address: text("ADDR:PORT or [ADDR]:PORT").optional().describe(
    "Where `nfqlb run` serves /metrics, /healthz and /ready; `--admin` wins. Absent: 127.0.0.1:9110 for the config named nfqlb, else 127.A.B.C:9110 derived from the name (docs/config.md).",
  ),
}, "a mapping with address");

/** How `nfqlb run` drives BIRD: its own child, or a system BIRD through an include file and birdc. */
export const BIRD_MODES = ["supervised", "external"] as const;
/** BGP defaults (docs/tier.md): every key but localAs and peers has one, so one file serves every LB host. */
export const BGP_DEFAULTS = {
  holdSeconds: 9,
  drainSeconds: 5,
  connectRetrySeconds: 2,
  bfd: { intervalMs: 100, multiplier: 5 },
  externalInclude: "/etc/bird/nfqlb-<name>.conf",
  externalSocket: "/run/bird/bird.ctl",
} as const;
const AS = int(1, 4294967295, "an AS number 1..4294967295");
const COMMUNITY = 'a community "A:B" (0..65535 each) or a large community "A:B:C" (0..4294967295 each)';

/** Schema of a peer's BFD: true (100 ms x 5), false, or the timers. */
export const BfdFileSchema = z.union([
  bool,
  mapping({
    intervalMs: int(10, 60000).default(BGP_DEFAULTS.bfd.intervalMs).describe(
      "Transmit and receive interval, ms; default 100.",
    ),
    multiplier: int(1, 255).default(BGP_DEFAULTS.bfd.multiplier).describe(
      "Missed packets that take the session down; default 5.",
    ),
  }, "a mapping of intervalMs, multiplier"),
], { error: "expected true, false or a mapping of intervalMs, multiplier" });

/** Schema of one BGP peer (the router). */
export const BgpPeerFileSchema = mapping({
  address: text("an IP address").describe(
    "The peer's address (IPv4: carries the IPv4 VIPs; IPv6: the IPv6 VIPs).",
  ),
  as: AS.describe("The peer's AS."),
  bfd: BfdFileSchema.default(false).describe(
    "BFD for this session: true (100 ms x 5), or {intervalMs, multiplier}.",
  ),
  holdSeconds: z.union([z.literal(0), int(3, 65535, "0 or an integer 3..65535")], {
    error: "expected 0 or an integer 3..65535",
  }).default(
    BGP_DEFAULTS.holdSeconds,
  ).describe("BGP hold time, s (keepalive: a third); default 9."),
  port: portNumber.default(179).describe("The peer's BGP port; default 179."),
}, "a mapping with address and as (and bfd, holdSeconds, port)");

/** Schema of the bgp section: announce the VIPs to routers through BIRD (docs/tier.md). */
export const BgpFileSchema = mapping(
  {
    localAs: AS.describe("This host's AS."),
    routerId: text("an IPv4 address").optional().describe(
      "BGP router id; default: the host's first IPv4 address (global scope).",
    ),
    peers: list(BgpPeerFileSchema, "a list of peers (at least one)", 1).describe("The routers."),
    drainSeconds: int(0, 3600).default(BGP_DEFAULTS.drainSeconds).describe(
      "On SIGTERM: withdraw the VIPs, keep forwarding this long, then stop; default 5.",
    ),
    communities: list(text(COMMUNITY), `a list of ${COMMUNITY}`).default([]).describe(
      "Communities added to the VIP routes.",
    ),
    bird: oneOf(BIRD_MODES).default("supervised").describe(
      "supervised: nfqlb run runs bird as its child; external: it writes an include file and reloads a system BIRD (birdc configure).",
    ),
    gracefulRestart: bool.default(false).describe(
      "BGP graceful restart; default off: a dead host's routes must go at once.",
    ),
    connectRetrySeconds: int(1, 65535).default(BGP_DEFAULTS.connectRetrySeconds).describe(
      "Connect retry and error wait time, s; default 2.",
    ),
    include: text("a file path").optional().describe(
      "external: the include file written; default /etc/bird/nfqlb-<name>.conf.",
    ),
    socket: text("a file path").optional().describe(
      "external: the system BIRD's control socket; default /run/bird/bird.ctl.",
    ),
  },
  "a mapping with localAs and peers (and routerId, drainSeconds, communities, bird, gracefulRestart, connectRetrySeconds, include, socket)",
);

/** Schema of the whole file. */
export const HostConfigFileSchema = mapping({
  version: z.literal(1, { error: "expected 1 (the only format version)" }).describe("Format version: 1."),
  name: z.string({ error: "expected a name of 1..32 of A-Z a-z 0-9 . _ + - (not . or ..)" }).regex(
    CONFIG_NAME_RE,
    "expected a name of 1..32 of A-Z a-z 0-9 . _ + - (not . or ..)",
  ).default(DEFAULT_CONFIG_NAME).describe(
    "The config's identity on the host: tags its kernel rules, names its state file, and the names it uses on the host derive from it (docs/config.md); default nfqlb.",
  ),
  services: list(ServiceFileSchema, "a list of services (at least one)", 1).describe(
    "Target tables, at least one.",
  ),
  flows: list(FlowFileSchema, "a list of flows").optional().describe(
    "flowlb's flows; absent: lb with one service.",
  ),
  dataplane: DataplaneFileSchema.prefault({}).describe("Queue, rules and process options."),
  admin: AdminFileSchema.prefault({}).describe("`nfqlb run`'s admin HTTP server."),
  bgp: BgpFileSchema.optional().describe(
    "`nfqlb run` announces the VIPs by BGP through BIRD while it serves them (docs/tier.md); absent: no BGP.",
  ),
}, "a mapping with version, services (and name, flows, dataplane, admin, bgp)").meta({
  title: "nfqlb host config, version 1",
  description: "The file of `nfqlb apply -f FILE` (docs/config.md).",
});

/** The file as written (optional keys may be absent). */
export type HostConfigFile = z.input<typeof HostConfigFileSchema>;
/** The file after the schema: defaults filled in, not yet checked across keys. */
export type HostConfigParsed = z.output<typeof HostConfigFileSchema>;
