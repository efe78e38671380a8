/**
 * Every Prometheus metric family nfqlb-deno exports, in one list: the exporters write their `# HELP` and
 * `# TYPE` lines from it (dataplane/metrics.ts, host/run/metrics.ts), docs/observability.md lists the same
 * names, and the tests check that every query of the Grafana dashboard (deploy/grafana/nfqlb.json) names one
 * of them. Conventions (docs/observability.md "Prometheus"): units in the names (`_packets_total`,
 * `_bytes_total`, `_seconds`), counters end in `_total`, label `table` is a target table (service) name,
 * `target` a fwmark, and no family counts a packet twice (packets received and their verdicts are two
 * families).
 */

/** Where a family comes from. */
export type MetricSource = "dataplane" | "process" | "agent" | "health";

/** One metric family. */
export interface MetricFamily {
  /** Family name (for a histogram: without `_bucket`, `_sum`, `_count`). */
  name: string;
  type: "counter" | "gauge" | "histogram";
  /** The `# HELP` text. */
  help: string;
  /** Its label names (a histogram's `le` not included). */
  labels: readonly string[];
  /**
   * Who exports it: `dataplane` (lb/flowlb `--metrics`, and `nfqlb run` for its dataplane), `process` (every
   * endpoint, about the process that answers), `agent` and `health` (`nfqlb run` only).
   */
  source: MetricSource;
}

/** The families, in the order an endpoint writes them. */
export const METRIC_FAMILIES: readonly MetricFamily[] = [
  {
    name: "nfqlb_build_info",
    type: "gauge",
    help: "Always 1: the nfqlb-deno version, the upstream nfqlb version it is compatible with, and Deno's.",
    labels: ["version", "compatible_with", "deno"],
    source: "process",
  },
  {
    name: "process_start_time_seconds",
    type: "gauge",
    help: "Start time of the process since the Unix epoch in seconds.",
    labels: [],
    source: "process",
  },
  {
    name: "nfqlb_queue_received_packets_total",
    type: "counter",
    help: "Packets received from each NFQUEUE queue.",
    labels: ["queue"],
    source: "dataplane",
  },
  {
    name: "nfqlb_queue_verdict_packets_total",
    type: "counter",
    help: "Packets given a verdict, per queue: accepted (with a fwmark or without) or dropped.",
    labels: ["queue", "verdict"],
    source: "dataplane",
  },
  {
    name: "nfqlb_target_packets_total",
    type: "counter",
    help: "Packets accepted per queue and target (fwmark).",
    labels: ["queue", "target"],
    source: "dataplane",
  },
  {
    name: "nfqlb_target_bytes_total",
    type: "counter",
    help: "IP bytes accepted per queue and target (fwmark).",
    labels: ["queue", "target"],
    source: "dataplane",
  },
  {
    name: "nfqlb_target_offloaded_packets_total",
    type: "counter",
    help:
      "Packets the kernel steered to each target (fwmark) without queueing them (--offload=auto); add nfqlb_target_packets_total for all.",
    labels: ["target"],
    source: "dataplane",
  },
  {
    name: "nfqlb_target_offloaded_bytes_total",
    type: "counter",
    help: "IP bytes the kernel steered to each target (fwmark) without queueing them (--offload=auto).",
    labels: ["target"],
    source: "dataplane",
  },
  {
    name: "nfqlb_dropped_packets_total",
    type: "counter",
    help: "Packets dropped or not balanced, by reason.",
    labels: ["reason"],
    source: "dataplane",
  },
  {
    name: "nfqlb_queue_errors_total",
    type: "counter",
    help:
      "Errors on the queue sockets, by kind (socket_overrun: the kernel dropped packets, see nfqlb_kernel_queue_user_dropped_packets_total).",
    labels: ["error"],
    source: "dataplane",
  },
  {
    name: "nfqlb_table_errors_total",
    type: "counter",
    help:
      "Damaged shm files met (target tables, counters, fragment stats, connection tables), once per incident.",
    labels: [],
    source: "dataplane",
  },
  {
    name: "nfqlb_fragments_total",
    type: "counter",
    help: "Fragment handling events.",
    labels: ["event"],
    source: "dataplane",
  },
  {
    name: "nfqlb_targets_active",
    type: "gauge",
    help: "Active targets per target table.",
    labels: ["table"],
    source: "dataplane",
  },
  {
    name: "nfqlb_target_weight",
    type: "gauge",
    help: "Maglev weight of each active target (fwmark) of a target table (0: draining).",
    labels: ["table", "target"],
    source: "dataplane",
  },
  {
    name: "nfqlb_conntrack_entries",
    type: "gauge",
    help: "Connections in the connection table of a target table.",
    labels: ["table"],
    source: "dataplane",
  },
  {
    name: "nfqlb_conntrack_capacity",
    type: "gauge",
    help: "Entries the connection table of a target table can hold.",
    labels: ["table"],
    source: "dataplane",
  },
  {
    name: "nfqlb_conntrack_inserts_total",
    type: "counter",
    help: "Connections inserted into the connection table of a target table.",
    labels: ["table"],
    source: "dataplane",
  },
  {
    name: "nfqlb_conntrack_recycled_total",
    type: "counter",
    help: "Entries recycled (the one closest to expiry) to make room in a full connection table.",
    labels: ["table"],
    source: "dataplane",
  },
  {
    name: "nfqlb_flow_matched_packets_total",
    type: "counter",
    help: "Packets that matched each flow (flowlb).",
    labels: ["flow"],
    source: "dataplane",
  },
  {
    name: "nfqlb_kernel_queue_dropped_packets_total",
    type: "counter",
    help: "Packets the kernel dropped because the queue was full.",
    labels: ["queue"],
    source: "dataplane",
  },
  {
    name: "nfqlb_kernel_queue_user_dropped_packets_total",
    type: "counter",
    help: "Packets the kernel dropped because the netlink socket was full.",
    labels: ["queue"],
    source: "dataplane",
  },
  {
    name: "nfqlb_kernel_queue_waiting_packets",
    type: "gauge",
    help: "Packets waiting in the kernel for a verdict.",
    labels: ["queue"],
    source: "dataplane",
  },
  {
    name: "nfqlb_targets_seen",
    type: "gauge",
    help: "Targets (fwmarks) that got packets since start.",
    labels: [],
    source: "dataplane",
  },
  {
    name: "nfqlb_agent_reloads_total",
    type: "counter",
    help: "Config reloads of nfqlb run, by result (error: refused).",
    labels: ["result"],
    source: "agent",
  },
  {
    name: "nfqlb_dataplane_restarts_total",
    type: "counter",
    help: "Restarts of the dataplane after it exited on its own.",
    labels: [],
    source: "agent",
  },
  {
    name: "nfqlb_dataplane_up",
    type: "gauge",
    help: "1 while the dataplane process runs.",
    labels: [],
    source: "agent",
  },
  {
    name: "nfqlb_config_info",
    type: "gauge",
    help: "The config being served: its name and the sha256 of the file.",
    labels: ["name", "digest"],
    source: "agent",
  },
  {
    name: "nfqlb_table_info",
    type: "gauge",
    help:
      "1, per target table: the digest of what decides a fwmark (M, N, rows, weights); LB hosts of a tier agree when it is equal.",
    labels: ["table", "digest"],
    source: "agent",
  },
  {
    name: "nfqlb_bgp_session_up",
    type: "gauge",
    help: "1 while the BGP session to the peer is established (nfqlb run with a bgp: section).",
    labels: ["peer"],
    source: "agent",
  },
  {
    name: "nfqlb_vip_announced",
    type: "gauge",
    help: "1 while the VIP is announced by BGP (BIRD has the route), 0 while withdrawn.",
    labels: ["vip"],
    source: "agent",
  },
  {
    name: "nfqlb_target_up",
    type: "gauge",
    help: "1 while the target passes its health check (rise/fall applied).",
    labels: ["table", "target"],
    source: "health",
  },
  {
    name: "nfqlb_health_checks_total",
    type: "counter",
    help: "Health checks of a target, by result (pass, fail).",
    labels: ["table", "target", "result"],
    source: "health",
  },
  {
    name: "nfqlb_health_check_duration_seconds",
    type: "histogram",
    help: "Latency of the health checks, per table.",
    labels: ["table"],
    source: "health",
  },
  {
    name: "nfqlb_health_panic",
    type: "gauge",
    help: "1 while every target of the table fails and all are kept in (panic guard).",
    labels: ["table"],
    source: "health",
  },
];

/**
 * Old names (before issue 20) and what replaced them, for docs/observability.md "Renamed" and the tests
 * that check no endpoint writes an old name any more.
 */
export const RENAMED_METRICS: Readonly<Record<string, string>> = {
  'nfqlb_queue_packets_total{verdict="received"}': "nfqlb_queue_received_packets_total",
  'nfqlb_queue_packets_total{verdict="accepted"|"dropped"}': "nfqlb_queue_verdict_packets_total",
  "nfqlb_packets_total": "nfqlb_target_packets_total",
  "nfqlb_bytes_total": "nfqlb_target_bytes_total",
  'nfqlb_drops_total{reason="malformed"|"no_target"|"no_flow"|"fragment"|"startup"}':
    "nfqlb_dropped_packets_total",
  'nfqlb_drops_total{reason="socket_overrun"|"receive_error"|"send_error"|"verdict_error"}':
    "nfqlb_queue_errors_total{error}",
  'nfqlb_targets_active{shm="…"}': 'nfqlb_targets_active{table="…"}',
  "nfqlb_flow_matches_total": "nfqlb_flow_matched_packets_total",
  "nfqlb_kernel_queue_dropped_total": "nfqlb_kernel_queue_dropped_packets_total",
  "nfqlb_kernel_queue_user_dropped_total": "nfqlb_kernel_queue_user_dropped_packets_total",
  "nfqlb_kernel_queue_waiting": "nfqlb_kernel_queue_waiting_packets",
};

/** The family `name`, or an Error: an exporter may write only registered families. */
export function metricFamily(name: string): MetricFamily {
  const f = METRIC_FAMILIES.find((x) => x.name === name);
  if (!f) throw new Error(`metric family ${name} is not in METRIC_FAMILIES (dataplane/metric_families.ts)`);
  return f;
}

/** The `# HELP` and `# TYPE` lines of registered family `name`. */
export function familyHeader(name: string): string[] {
  const f = metricFamily(name);
  return [`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`];
}

/** A label value escaped for the text format. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
