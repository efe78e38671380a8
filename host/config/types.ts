/**
 * The host config after validation (docs/config.md): every default applied,
 * addresses parsed and written canonically, flows checked by the flow
 * validator. This is what `nfqlb apply` works from.
 */
import type { FlowDefinition, FlowRequest } from "../../core/flow/types.ts";
import type { PortProtocol } from "../../core/ip_protocols.ts";

/** An address family. */
export type Family = "ipv4" | "ipv6";

/** A VIP: what the queue rules match on. */
export interface Vip {
  /** Canonical CIDR text (`10.0.0.1/32`, `fd00::/64`); host bits are zero. */
  readonly cidr: string;
  /** ipv4 (iptables) or ipv6 (ip6tables). */
  readonly family: Family;
}

/** A protocol (and port range) whose packets to the VIPs are queued. */
export interface PortSelector {
  /** L4 protocol. */
  readonly protocol: PortProtocol;
  /** Inclusive port range; null: every port of the protocol. */
  readonly ports: { readonly first: number; readonly last: number } | null;
}

/** The connection table `<service>-ct` (init --conntrack and --ct_*). */
export interface ConntrackConfig {
  /** Entries. */
  readonly capacity: number;
  /** Lifetimes after the last packet, ms. */
  readonly ttlMs: { readonly tcp: number; readonly udp: number; readonly other: number };
  /** New connections per second at most; 0 = no limit. */
  readonly floodPerSecond: number;
  /** Context records (ConntrackShm.create's ctxSlots). */
  readonly contexts: number;
}

/** How a target's packets get there: routed unchanged, DNAT, or DNAT plus SNAT. */
export type TargetMode = "dsr" | "nat" | "fullnat";

/** Source addresses per family (a fullnat target's SNAT); null: none for that family. */
export interface SnatAddresses {
  /** IPv4 source address. */
  readonly ipv4: string | null;
  /** IPv6 source address. */
  readonly ipv6: string | null;
}

/** A health check type (docs/health.md). */
export type HealthType = "tcp" | "http" | "udp" | "icmp" | "exec";

/** A target's health check after the merge of service and target keys, every default applied. */
export interface HealthConfig {
  /** What is checked. */
  readonly type: HealthType;
  /** Port checked (tcp, http, udp): the NAT target's port, else health.port, else the service's first port; null for icmp, exec. */
  readonly port: number | null;
  /** Time between two checks, ms. */
  readonly intervalMs: number;
  /** A check that has not passed by then failed, ms (≤ intervalMs). */
  readonly timeoutMs: number;
  /** Passes in a row that bring a down target back. */
  readonly rise: number;
  /** Failures in a row that take an up target out. */
  readonly fall: number;
  /** remove: out of the table; drain: weight 0. */
  readonly onFail: "remove" | "drain";
  /** http: path. */
  readonly path: string;
  /** http: statuses that pass. */
  readonly expect: readonly number[];
  /** http: substring the body must contain; null: any. */
  readonly body: string | null;
  /** udp: the datagram. */
  readonly payload: string;
  /** exec: program and arguments; empty for other types. */
  readonly command: readonly string[];
}

/** One target: a fwmark in the service's table, and where that fwmark goes. */
export interface TargetConfig {
  /** fwmark, 1..2^31-1, unique across all services. */
  readonly fwmark: number;
  /** IPv4 address (DSR next hop or (full) NAT destination); present when the service has IPv4 VIPs. */
  readonly ipv4: string | null;
  /** IPv6 address; present when the service has IPv6 VIPs. */
  readonly ipv6: string | null;
  /** nat, fullnat: destination port after translation; null keeps the port (always null for dsr). */
  readonly port: number | null;
  /** Maglev weight 0..65535 (0 = drain). */
  readonly weight: number;
  /** dsr, nat or fullnat. */
  readonly mode: TargetMode;
  /** DSR: the routing table for `ip rule fwmark F table T` (default: the fwmark); null otherwise. */
  readonly table: number | null;
  /**
   * fullnat: the source address of each VIP family (the target's own snat,
   * else the service's), canonical; null for dsr and nat.
   */
  readonly snat: SnatAddresses | null;
  /** false: not put in the table (kept in the file only). */
  readonly active: boolean;
  /** Its health check (`nfqlb run`); null: none. */
  readonly health: HealthConfig | null;
}

/** A scheduler: maglev (stateless), or a per-connection one that needs a connection table. */
export type Scheduler = "maglev" | "rr" | "wrr" | "lc" | "wlc";

/** One service: a target table and what is queued to it. */
export interface ServiceConfig {
  /** Target shm name. */
  readonly name: string;
  /** Maglev table size: the file's m lowered to a prime, as init does. */
  readonly m: number;
  /** m as the file gives it (apply may print `M adjusted; m -> p` as init does). */
  readonly requestedM: number;
  /** Max targets, ≤ m. */
  readonly n: number;
  /** How new connections pick a target. */
  readonly scheduler: Scheduler;
  /** The connection table; null: none. */
  readonly conntrack: ConntrackConfig | null;
  /** VIPs, in file order, no duplicates. */
  readonly vips: readonly Vip[];
  /** What is queued; null: all traffic to the VIPs. */
  readonly ports: readonly PortSelector[] | null;
  /** Targets in file order. */
  readonly targets: readonly TargetConfig[];
}

/** One flow of flowlb. */
export interface FlowConfig {
  /** Flow name. */
  readonly name: string;
  /** The service (target shm) it selects. */
  readonly service: string;
  /** The flow-set request, canonical (target = service), as FlowTable.set and the flow server take it. */
  readonly request: FlowRequest;
  /** The validated definition. */
  readonly definition: FlowDefinition;
}

/** The lb/flowlb options the file sets; an absent one keeps the command's default (docs/cli.md). */
export interface DataplaneOptions {
  /** --mtu. */
  readonly mtu?: number;
  /** --qlength. */
  readonly qlength?: number;
  /** --tun. */
  readonly tun?: string;
  /** --lbshm. */
  readonly lbshm?: string;
  /** --reassembler. */
  readonly reassembler?: number;
  /** --notargets_fwmark. */
  readonly notargetsFwmark?: number;
  /** --hash_mode. */
  readonly hashMode?: number;
  /** --ft_shm. */
  readonly ftShm?: string;
  /** --ft_size. */
  readonly ftSize?: number;
  /** --ft_buckets. */
  readonly ftBuckets?: number;
  /** --ft_frag. */
  readonly ftFrag?: number;
  /** --ft_ttl. */
  readonly ftTtl?: number;
  /** --trace_address. */
  readonly traceAddress?: string;
  /** --fail_open. */
  readonly failOpen?: boolean;
  /** --batch. */
  readonly batch?: number;
  /** --metrics. */
  readonly metrics?: string;
  /** lb only: --sctp_encap. */
  readonly sctpEncap?: number;
  /** flowlb only: --nolb_fwmark. */
  readonly nolbFwmark?: number;
  /** flowlb only: --promiscuous_ping. */
  readonly promiscuous?: boolean;
  /** flowlb only: the flow server address (NFQLB_FLOW_ADDRESS). */
  readonly flowAddress?: string;
}

/** The dataplane: which program, its queues and rules. */
export interface DataplaneConfig {
  /** lb (no flows, one service) or flowlb (flows). */
  readonly program: "lb" | "flowlb";
  /** The queue as lb's `--queue` takes it: `N` or `first:last`. */
  readonly queue: string;
  /** The same, parsed. */
  readonly queues: { readonly first: number; readonly last: number };
  /** NFQUEUE --queue-bypass. */
  readonly bypass: boolean;
  /** Hooks of the queue rules, no duplicates. */
  readonly hooks: readonly ("prerouting" | "output")[];
  /** lb/flowlb options the file sets. */
  readonly options: DataplaneOptions;
  /**
   * true: install the connmark-restore rules for offloaded connections
   * (ct-set --offload); "auto": those, the save rule, and lb --offload=auto.
   */
  readonly offload: boolean | "auto";
  /** Whether apply starts the program when it is not running. */
  readonly start: boolean;
}

/** `nfqlb run`'s admin HTTP server (apply records it, so that no two configs on a host share it). */
export interface AdminConfig {
  /** `ADDR:PORT` or `[ADDR]:PORT` of /metrics, /healthz, /ready (`--admin` wins); derived from the name when the file has none (host/names.ts). */
  readonly address: string;
}

/** BFD timers of a BGP session. */
export interface BfdConfig {
  /** Transmit and receive interval, ms. */
  readonly intervalMs: number;
  /** Missed packets that take the session down. */
  readonly multiplier: number;
}

/** A BGP peer (a router). */
export interface BgpPeerConfig {
  /** Its address, canonical. */
  readonly address: string;
  /** ipv4: the session carries the IPv4 VIPs; ipv6: the IPv6 ones. */
  readonly family: Family;
  /** Its AS. */
  readonly as: number;
  /** BFD timers; null: no BFD. */
  readonly bfd: BfdConfig | null;
  /** Hold time, s (0: none). */
  readonly holdSeconds: number;
  /** Its BGP port. */
  readonly port: number;
}

/** The bgp section (docs/tier.md): `nfqlb run` announces the VIPs through BIRD. */
export interface BgpConfig {
  /** This host's AS. */
  readonly localAs: number;
  /** Router id; null: the host's first IPv4 address, found when run starts. */
  readonly routerId: string | null;
  /** The routers. */
  readonly peers: readonly BgpPeerConfig[];
  /** On SIGTERM: forward this long after the withdrawal, s. */
  readonly drainSeconds: number;
  /** Communities of the VIP routes, `A:B` or `A:B:C`. */
  readonly communities: readonly string[];
  /** supervised: bird is run's child; external: a system BIRD, through an include file. */
  readonly bird: "supervised" | "external";
  /** BGP graceful restart. */
  readonly gracefulRestart: boolean;
  /** Connect retry and error wait time, s. */
  readonly connectRetrySeconds: number;
  /** external: the include file run writes. */
  readonly include: string;
  /** external: the system BIRD's control socket. */
  readonly socket: string;
}

/** A validated host config (version 1). */
export interface HostConfig {
  /** Format version. */
  readonly version: 1;
  /** The config's identity on the host (kernel rule tags, state file); default nfqlb. */
  readonly name: string;
  /** Services in file order. */
  readonly services: readonly ServiceConfig[];
  /** Flows in file order; empty for lb. */
  readonly flows: readonly FlowConfig[];
  /** The dataplane. */
  readonly dataplane: DataplaneConfig;
  /** `nfqlb run`'s admin server. */
  readonly admin: AdminConfig;
  /** BGP announcement of the VIPs by `nfqlb run`; null: none. */
  readonly bgp: BgpConfig | null;
}
