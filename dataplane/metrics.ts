/**
 * Prometheus text exposition of a running lb/flowlb at
 * `http://ADDR:PORT/metrics` (`--metrics=ADDR:PORT`), bound to that address
 * only. Everything is read at scrape time: the counters shm the C workers
 * write, the kernel's queue counters, the target tables, the flows. The
 * server is a small bounded HTTP/1.1 one (see {@link startMetrics}) rather
 * than Deno.serve, which takes any method and waits forever for a slow
 * client's request.
 */
import { errorText, NfqlbError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import {
  type ConnectionLimits,
  type Deadline,
  failureKind,
  ProblemLog,
  serveBounded,
} from "./bounded_server.ts";
import {
  type CounterName,
  counterTotals,
  kernelQueues,
  readCounters,
  targetTotals,
} from "../core/counters_shm.ts";
import { readFragStats } from "../core/frag_stats.ts";
import { parseMetricsAddress } from "../core/address.ts";
import { readTargets } from "../core/target_view.ts";
import { conntrackName } from "../core/conntrack_limits.ts";
import type { ConntrackStats } from "../core/conntrack_shm.ts";
import { ownExists } from "../core/shm_dir.ts";
import { lib } from "../ffi/lib.ts";
import { NFQLB_DENO_VERSION, VERSION } from "../core/version.ts";
import { escapeLabel, familyHeader } from "./metric_families.ts";

/** What a scrape needs besides the counters shm. */
export interface MetricsSource {
  /** counters shm name. */
  counters: string;
  /** fragment stats shm name. */
  ftShm: string;
  /** The target table names in use (a connection table `<name>-ct` is read when it exists). */
  tables(): string[];
  /** flowlb: matches per flow name. */
  flows?(): { flow: string; matches: number }[];
}

/** Drop reasons of packets (`nfqlb_dropped_packets_total{reason}`). */
const DROP_REASONS: [CounterName, string][] = [
  ["malformed", "malformed"],
  ["notarget", "no_target"],
  ["nolb", "no_flow"],
  ["frag_dropped", "fragment"],
  ["setup_dropped", "startup"],
];

/**
 * Socket errors (`nfqlb_queue_errors_total{error}`): events, not packets, so not among the drop reasons
 * (an overrun's packets are the kernel's user_dropped count).
 */
const QUEUE_ERRORS: [CounterName, string][] = [
  ["enobufs", "socket_overrun"],
  ["recv_errors", "receive_error"],
  ["send_errors", "send_error"],
  ["verdict_errors", "verdict_error"],
];

/** The process start time in seconds since the epoch (this process: the one that answers the scrape). */
const START_SECONDS = Math.round(performance.timeOrigin) / 1000;

/**
 * The `process` families (metric_families.ts): `nfqlb_build_info` and `process_start_time_seconds` of this
 * process. `nfqlb run` writes its own and leaves the dataplane's out (one endpoint, one process).
 */
export function renderProcessMetrics(): string {
  const out = [...familyHeader("nfqlb_build_info")];
  out.push(
    `nfqlb_build_info{version="${escapeLabel(NFQLB_DENO_VERSION)}",compatible_with="${VERSION}",deno="${
      escapeLabel(Deno.version.deno)
    }"} 1`,
  );
  out.push(...familyHeader("process_start_time_seconds"), `process_start_time_seconds ${START_SECONDS}`);
  return out.join("\n") + "\n";
}

/** The connection-table figures of the tables that have one. Its code loads only when one exists. */
async function conntrackStats(tables: string[]): Promise<{ table: string; s: ConntrackStats }[]> {
  const have = tables.filter((t) => ownExists(conntrackName(t)));
  if (have.length === 0) return [];
  const { ConntrackShm } = await import("../core/conntrack_shm.ts");
  // a table truncated while it is mapped here must not kill the scraper (`nfqlb run` renders this too): the
  // SIGBUS guard of c/file.c (lb/flowlb install it at start; installing it again is a no-op)
  lib().nfqlb_file_guard();
  const out: { table: string; s: ConntrackStats }[] = [];
  for (const table of have) {
    try {
      const ct = ConntrackShm.open(conntrackName(table));
      try {
        out.push({ table, s: ct.stats() });
      } finally {
        ct.close();
      }
    } catch { /* damaged or being replaced: counted in nfqlb_table_errors_total by the dataplane */ }
  }
  return out;
}

/**
 * The exposition text for one scrape. `process: false` leaves out the `process` families (for `nfqlb run`,
 * which writes its own).
 */
export async function renderMetrics(src: MetricsSource, opts: { process?: boolean } = {}): Promise<string> {
  const out: string[] = [];
  const family = (name: string) => out.push(...familyHeader(name));
  const c = readCounters(src.counters);
  if (opts.process ?? true) out.push(renderProcessMetrics().trimEnd());
  family("nfqlb_queue_received_packets_total");
  for (const q of c.queues) {
    out.push(`nfqlb_queue_received_packets_total{queue="${q.queue}"} ${q.counters.received}`);
  }
  family("nfqlb_queue_verdict_packets_total");
  for (const q of c.queues) {
    for (const k of ["accepted", "dropped"] as const) {
      out.push(`nfqlb_queue_verdict_packets_total{queue="${q.queue}",verdict="${k}"} ${q.counters[k]}`);
    }
  }
  family("nfqlb_target_packets_total");
  for (const q of c.queues) {
    for (const t of q.targets) {
      out.push(`nfqlb_target_packets_total{queue="${q.queue}",target="${t.fwmark}"} ${t.packets}`);
    }
  }
  family("nfqlb_target_bytes_total");
  for (const q of c.queues) {
    for (const t of q.targets) {
      out.push(`nfqlb_target_bytes_total{queue="${q.queue}",target="${t.fwmark}"} ${t.bytes}`);
    }
  }
  // the kernel's share under --offload=auto (dataplane/offload_counters.ts): packets that never reached a
  // queue, so families of their own (no queue label, and no packet counted twice); no sample without offload
  family("nfqlb_target_offloaded_packets_total");
  for (const t of c.offloaded) {
    out.push(`nfqlb_target_offloaded_packets_total{target="${t.fwmark}"} ${t.packets}`);
  }
  family("nfqlb_target_offloaded_bytes_total");
  for (const t of c.offloaded) {
    out.push(`nfqlb_target_offloaded_bytes_total{target="${t.fwmark}"} ${t.bytes}`);
  }
  const tot = counterTotals(c);
  family("nfqlb_dropped_packets_total");
  for (const [k, reason] of DROP_REASONS) {
    out.push(`nfqlb_dropped_packets_total{reason="${reason}"} ${tot[k]}`);
  }
  family("nfqlb_queue_errors_total");
  for (const [k, error] of QUEUE_ERRORS) out.push(`nfqlb_queue_errors_total{error="${error}"} ${tot[k]}`);
  family("nfqlb_table_errors_total");
  out.push(`nfqlb_table_errors_total ${tot.table_errors}`);
  family("nfqlb_fragments_total");
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
  const tables = [...new Set(src.tables())];
  const targets = tables.map((table) => ({ table, targets: readTargets(table) ?? [] }));
  family("nfqlb_targets_active");
  for (const t of targets) {
    out.push(`nfqlb_targets_active{table="${escapeLabel(t.table)}"} ${t.targets.length}`);
  }
  family("nfqlb_target_weight");
  for (const t of targets) {
    for (const x of t.targets) {
      out.push(`nfqlb_target_weight{table="${escapeLabel(t.table)}",target="${x.fwmark}"} ${x.weight}`);
    }
  }
  const cts = await conntrackStats(tables);
  if (cts.length > 0) {
    const ctFamilies: [string, (s: ConntrackStats) => number][] = [
      ["nfqlb_conntrack_entries", (s) => s.entries],
      ["nfqlb_conntrack_capacity", (s) => s.capacity],
      ["nfqlb_conntrack_inserts_total", (s) => s.inserts],
      ["nfqlb_conntrack_recycled_total", (s) => s.recycles],
    ];
    for (const [name, get] of ctFamilies) {
      family(name);
      for (const x of cts) out.push(`${name}{table="${escapeLabel(x.table)}"} ${get(x.s)}`);
    }
  }
  if (src.flows) {
    family("nfqlb_flow_matched_packets_total");
    for (const f of src.flows()) {
      out.push(`nfqlb_flow_matched_packets_total{flow="${escapeLabel(f.flow)}"} ${f.matches}`);
    }
  }
  const kernel = kernelQueues().filter((k) => c.queues.some((q) => q.queue === k.queue));
  family("nfqlb_kernel_queue_dropped_packets_total");
  for (const k of kernel) {
    out.push(`nfqlb_kernel_queue_dropped_packets_total{queue="${k.queue}"} ${k.queueDropped}`);
  }
  family("nfqlb_kernel_queue_user_dropped_packets_total");
  for (const k of kernel) {
    out.push(`nfqlb_kernel_queue_user_dropped_packets_total{queue="${k.queue}"} ${k.userDropped}`);
  }
  family("nfqlb_kernel_queue_waiting_packets");
  for (const k of kernel) out.push(`nfqlb_kernel_queue_waiting_packets{queue="${k.queue}"} ${k.waiting}`);
  family("nfqlb_targets_seen");
  out.push(`nfqlb_targets_seen ${targetTotals(c).length}`);
  return out.join("\n") + "\n";
}

/** The Content-Type of an exposition (text format 0.0.4). */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Longest request head (request line and headers) read, in bytes. */
export const METRICS_MAX_HEAD = 8192;
/**
 * Limits of the metrics endpoint. A scraper sends its request at once and
 * reads the reply at once; 10 s is Prometheus' default scrape timeout.
 */
export const METRICS_LIMITS: ConnectionLimits = { maxConnections: 64, requestMs: 3000, replyMs: 10_000 };

const STATUS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
};

/** One HTTP/1.1 response that closes the connection. */
function response(
  status: number,
  body: string,
  opts: { head?: boolean; type?: string; allow?: string } = {},
) {
  const bytes = new TextEncoder().encode(body);
  const lines = [
    `HTTP/1.1 ${status} ${STATUS[status]}`,
    `content-type: ${opts.type ?? "text/plain; charset=utf-8"}`,
    `content-length: ${bytes.length}`,
    "connection: close",
  ];
  if (opts.allow) lines.push(`allow: ${opts.allow}`);
  const head = new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n");
  if (opts.head) return head;
  const out = new Uint8Array(head.length + bytes.length);
  out.set(head);
  out.set(bytes, head.length);
  return out;
}

/** The end of the request head (after its blank line) in `buf[0, n)`, or -1. */
function headEnd(buf: Uint8Array, n: number): number {
  for (let i = 0; i + 1 < n; i++) {
    if (buf[i] !== 0x0a) continue;
    if (buf[i + 1] === 0x0a) return i + 2;
    if (buf[i + 1] === 0x0d && i + 2 < n && buf[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}

/**
 * Serves `GET /metrics` (and HEAD) until close(), one request per
 * connection. Bounded (bounded_server.ts): 64 connections at once, later
 * ones wait in the listen backlog; 3 s from accept to the whole request
 * head, at most 8 KiB (431 beyond), and 10 s to write the reply. A request
 * body is never read. Other methods: 405; other paths: 404; a request line
 * that does not parse: 400.
 * @throws NfqlbError `Invalid metrics address [...]`, `Metrics server on <address>: <reason>`
 */
export function startMetrics(address: string, src: MetricsSource): { close(): Promise<void> } {
  const { hostname, port } = parseMetricsAddress(address);
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ hostname, port, transport: "tcp" });
  } catch (e) {
    throw new NfqlbError(`Metrics server on ${address}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const problems = new ProblemLog((line) => log.warning(line), "metrics");

  const answer = async (buf: Uint8Array, end: number): Promise<Uint8Array> => {
    const line = new TextDecoder().decode(buf.subarray(0, end)).split(/\r?\n/)[0];
    const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(line);
    if (!m) {
      problems.report("bad request", `metrics: bad request line [${line.slice(0, 64)}]`);
      return response(400, "bad request\n");
    }
    const [, method, target] = m;
    if (method !== "GET" && method !== "HEAD") return response(405, "only GET\n", { allow: "GET, HEAD" });
    const head = method === "HEAD";
    if (target.split("?")[0] !== "/metrics") return response(404, "not found\n", { head });
    try {
      return response(200, await renderMetrics(src), { head, type: METRICS_CONTENT_TYPE });
    } catch (e) {
      return response(500, `${e instanceof Error ? e.message : String(e)}\n`, { head });
    }
  };

  const serve = async (conn: Deno.Conn, deadline: Deadline) => {
    const buf = new Uint8Array(METRICS_MAX_HEAD);
    let n = 0, end = -1;
    try {
      while (end < 0 && n < buf.length) {
        const got = await conn.read(buf.subarray(n));
        if (got === null) return; // closed before a whole request: nothing to answer
        n += got;
        end = headEnd(buf, n);
      }
    } catch (e) {
      if (deadline.expired) {
        problems.report(
          "timed out",
          `metrics: client sent no complete request within ${
            METRICS_LIMITS.requestMs / 1000
          } s, disconnected`,
        );
      } else problems.report(failureKind(e), `metrics: ${errorText(e)}`);
      return;
    }
    deadline.restart(METRICS_LIMITS.replyMs);
    let reply: Uint8Array;
    if (end < 0) {
      problems.report("head too long", `metrics: request head over ${METRICS_MAX_HEAD} bytes`);
      reply = response(431, "request head too long\n");
    } else reply = await answer(buf, end);
    try {
      while (reply.length > 0) reply = reply.subarray(await conn.write(reply));
    } catch (e) {
      problems.report(deadline.expired ? "slow reader" : failureKind(e), `metrics: reply: ${errorText(e)}`);
    }
  };

  const server = serveBounded(
    listener,
    METRICS_LIMITS,
    serve,
    (e) => problems.report("accept failed", `metrics: accept: ${errorText(e)}`),
  );
  return {
    async close() {
      await server.close();
      problems.close();
    },
  };
}
