/**
 * Prometheus text exposition of a running lb/flowlb at
 * `http://ADDR:PORT/metrics` (`--metrics=ADDR:PORT`), bound to that address
 * only. Everything is read at scrape time: the counters shm the C workers
 * write, the kernel's queue counters, the target tables, the flows.
 */
import { NfqlbError } from "../core/errors.ts";
import {
  type CounterName,
  counterTotals,
  kernelQueues,
  readCounters,
  targetTotals,
} from "../core/counters_shm.ts";
import { readFragStats } from "../core/frag_stats.ts";
import { parseMetricsAddress } from "../core/address.ts";

/** What a scrape needs besides the counters shm. */
export interface MetricsSource {
  /** counters shm name. */
  counters: string;
  /** fragment stats shm name. */
  ftShm: string;
  /** Active targets per target table name. */
  tables(): { shm: string; active: number }[];
  /** flowlb: matches per flow name. */
  flows?(): { flow: string; matches: number }[];
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

const DROP_REASONS: [CounterName, string][] = [
  ["malformed", "malformed"],
  ["notarget", "no_target"],
  ["nolb", "no_flow"],
  ["frag_dropped", "fragment"],
  ["enobufs", "socket_overrun"],
  ["recv_errors", "receive_error"],
  ["send_errors", "send_error"],
  ["verdict_errors", "verdict_error"],
  ["setup_dropped", "startup"],
];

/** The exposition text for one scrape. */
export function renderMetrics(src: MetricsSource): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) =>
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const c = readCounters(src.counters);
  family("nfqlb_queue_packets_total", "counter", "Packets per queue by what happened to them.");
  for (const q of c.queues) {
    for (const k of ["received", "accepted", "dropped"] as const) {
      out.push(`nfqlb_queue_packets_total{queue="${q.queue}",verdict="${k}"} ${q.counters[k]}`);
    }
  }
  family("nfqlb_packets_total", "counter", "Packets accepted per queue and target (fwmark).");
  for (const q of c.queues) {
    for (const t of q.targets) {
      out.push(`nfqlb_packets_total{queue="${q.queue}",target="${t.fwmark}"} ${t.packets}`);
    }
  }
  family("nfqlb_bytes_total", "counter", "IP bytes accepted per queue and target (fwmark).");
  for (const q of c.queues) {
    for (const t of q.targets) {
      out.push(`nfqlb_bytes_total{queue="${q.queue}",target="${t.fwmark}"} ${t.bytes}`);
    }
  }
  family("nfqlb_drops_total", "counter", "Packets dropped (or not balanced) by reason.");
  const tot = counterTotals(c);
  for (const [k, reason] of DROP_REASONS) out.push(`nfqlb_drops_total{reason="${reason}"} ${tot[k]}`);
  family(
    "nfqlb_table_errors_total",
    "counter",
    "Damaged shm files met (target tables, counters, fragment stats, connection tables), once per incident.",
  );
  out.push(`nfqlb_table_errors_total ${tot.table_errors}`);
  family("nfqlb_fragments_total", "counter", "Fragment handling events.");
  const frag = readFragStats(src.ftShm);
  for (
    const [event, v] of [
      ["stored", tot.frag_stored],
      ["injected", tot.frag_injected],
      ["inject_failed", tot.frag_inject_failed],
      ["forwarded_to_tier", tot.frag_tier],
      ["expired", BigInt(frag.objGC)],
      ["rejected", BigInt(frag.rejected)],
    ] as const
  ) out.push(`nfqlb_fragments_total{event="${event}"} ${v}`);
  family("nfqlb_targets_active", "gauge", "Active targets per target table.");
  for (const t of src.tables()) out.push(`nfqlb_targets_active{shm="${esc(t.shm)}"} ${t.active}`);
  if (src.flows) {
    family("nfqlb_flow_matches_total", "counter", "Packets that matched each flow.");
    for (const f of src.flows()) out.push(`nfqlb_flow_matches_total{flow="${esc(f.flow)}"} ${f.matches}`);
  }
  const kernel = kernelQueues().filter((k) => c.queues.some((q) => q.queue === k.queue));
  family("nfqlb_kernel_queue_dropped_total", "counter", "Packets the kernel dropped: queue full.");
  for (const k of kernel) out.push(`nfqlb_kernel_queue_dropped_total{queue="${k.queue}"} ${k.queueDropped}`);
  family(
    "nfqlb_kernel_queue_user_dropped_total",
    "counter",
    "Packets the kernel dropped: netlink socket full.",
  );
  for (const k of kernel) {
    out.push(`nfqlb_kernel_queue_user_dropped_total{queue="${k.queue}"} ${k.userDropped}`);
  }
  family("nfqlb_kernel_queue_waiting", "gauge", "Packets waiting for a verdict.");
  for (const k of kernel) out.push(`nfqlb_kernel_queue_waiting{queue="${k.queue}"} ${k.waiting}`);
  family("nfqlb_targets_seen", "gauge", "Targets (fwmarks) that got packets since start.");
  out.push(`nfqlb_targets_seen ${targetTotals(c).length}`);
  return out.join("\n") + "\n";
}

/** Serves /metrics until close(). */
export function startMetrics(address: string, src: MetricsSource): { close(): Promise<void> } {
  const { hostname, port } = parseMetricsAddress(address);
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({ hostname, port, onListen: () => {} }, (req) => {
      if (new URL(req.url).pathname !== "/metrics") return new Response("not found\n", { status: 404 });
      try {
        return new Response(renderMetrics(src), { headers: { "content-type": "text/plain; version=0.0.4" } });
      } catch (e) {
        return new Response(`${e instanceof Error ? e.message : String(e)}\n`, { status: 500 });
      }
    });
  } catch (e) {
    throw new NfqlbError(`Metrics server on ${address}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return { close: () => server.shutdown() };
}
