/**
 * `nfqlb flowlb`: the queues of lb, but each packet first picks a flow (the
 * highest-priority matching one), and the flow names the target table.
 *
 * The flow server (control/flow_server.ts) edits a FlowTable; every change is
 * compiled here into an immutable C flow set (c/flow.c: indexed matching) and
 * published atomically to the workers (c/flowlb.c), so a packet sees the old
 * set or the new one, never a mix. Flows are saved after every change and
 * restored at start (upstream forgets them). Target tables are mapped once
 * per name, shared by flows, and unmapped only when no published set can
 * still point at them.
 */
import { lib } from "../ffi/lib.ts";
import { NfqlbError } from "../control/errors.ts";
import { type Flow, FlowTable } from "../control/flows.ts";
import { encodeFlowSpec, type FlowSpecInput } from "../control/flow_spec.ts";
import { startFlowServer } from "../control/flow_server.ts";
import { FlowStore, flowStorePath } from "../control/flow_store.ts";
import { type FlowLbConfig, FlowLbConfigSchema } from "./lb_config.ts";
import { activeTargets, startQueues, stopOnSignals } from "./lb.ts";
import { startMetrics } from "./metrics.ts";
import { countersShmName } from "../control/counters_shm.ts";
import { TargetRegistry } from "./target_registry.ts";

const PROTO_NAME: Record<number, "tcp" | "udp" | "sctp"> = { 6: "tcp", 17: "udp", 132: "sctp" };

/** What the C matcher needs from a flow. */
export function flowSpec(f: Flow): FlowSpecInput {
  return {
    target: f.target !== null,
    protocols: f.protocols ?? undefined,
    dsts: f.dsts?.map((c) => ({ addr: c.addr, prefix: c.prefix })),
    srcs: f.srcs?.map((c) => ({ addr: c.addr, prefix: c.prefix })),
    dports: f.dports ? f.dports.map((r) => [r[0], r[1]] as const) : undefined,
    sports: f.sports ? f.sports.map((r) => [r[0], r[1]] as const) : undefined,
    match: f.match?.map((m) => ({
      proto: PROTO_NAME[m.proto],
      offset: m.offset,
      nbytes: m.nbytes,
      mask: m.mask,
      value: m.value,
    })),
    udpencap: f.udpencap,
  };
}

/** Builds the C flow set for `flows` (in match order); the caller owns the result. */
export function buildFlowSet(flows: readonly Flow[]): Deno.PointerObject {
  const c = lib();
  const fs = c.nfqlb_flowset_new(flows.length);
  if (fs === null) throw new NfqlbError(`flowlb: out of memory building ${flows.length} flows`);
  flows.forEach((f, i) => {
    const spec = encodeFlowSpec(flowSpec(f));
    if (c.nfqlb_flowset_add(fs, i, spec, spec.length) !== 0) {
      c.nfqlb_flowset_free(fs);
      throw new NfqlbError(`flowlb: flow ${f.name} could not be compiled`);
    }
  });
  if (c.nfqlb_flowset_build(fs) !== 0) {
    c.nfqlb_flowset_free(fs);
    throw new NfqlbError("flowlb: out of memory indexing the flows");
  }
  return fs;
}

/** Runs flowlb until SIGINT/SIGTERM; returns the exit status. */
export async function runFlowLb(input: FlowLbConfig, print: (line: string) => void): Promise<number> {
  const cfg = FlowLbConfigSchema.parse(input);
  const signals = stopOnSignals();
  const c = lib();
  const nqueues = cfg.queues.last - cfg.queues.first + 1;
  const flows = c.nfqlb_flows_create(nqueues);
  if (flows === null) throw new NfqlbError("flowlb: out of memory");
  const targets = new TargetRegistry();
  // The published list: index i in the C set is published[i]; counters follow flow ids.
  let published: readonly Flow[] = [];
  const countOf = (f: Flow): number => {
    const i = published.findIndex((p) => p.id === f.id);
    return i < 0 ? 0 : c.nfqlb_flows_matches(flows, i);
  };
  const publish = (list: readonly Flow[]) => {
    const counts = new Map(published.map((p, i) => [p.id, c.nfqlb_flows_matches(flows, i)]));
    const fs = buildFlowSet(list);
    list.forEach((f, i) => c.nfqlb_flowset_set_matches(fs, i, counts.get(f.id) ?? 0));
    const addrs = new BigUint64Array(Math.max(1, list.length));
    list.forEach((f, i) => (addrs[i] = targets.address(f.target)));
    if (c.nfqlb_flows_publish(flows, fs, addrs, list.length) === 0) {
      c.nfqlb_flowset_free(fs);
      throw new NfqlbError("flowlb: out of memory publishing the flows");
    }
    published = list;
  };
  const table = new FlowTable("flow", {
    acquire: (name) => targets.acquire(name),
    release: (name) => targets.release(name),
    changed: publish,
    counts: (_name, f) => countOf(f),
  });
  // Trace flows select packets for `trace`; their dataplane side comes with tracing.
  const traceTable = new FlowTable("trace");

  const store = new FlowStore(flowStorePath(cfg.flowAddress));
  const loaded = store.load();
  if (loaded.problem) console.error(`flowlb: ${loaded.problem}`);
  for (const p of table.restore(loaded.flows)) console.error(`flowlb: restore: ${p}`);
  publish(table.activeFlows());

  const server = startFlowServer(cfg.flowAddress, table, traceTable, { store });
  let running;
  try {
    running = startQueues(cfg, {
      kind: "flowlb",
      flows,
      nolbFwmark: cfg.nolbFwmark,
      promiscuous: cfg.promiscuous,
    }, print);
  } catch (e) {
    await server.close();
    c.nfqlb_flows_destroy(flows);
    targets.closeAll();
    throw e;
  }
  // Housekeeping: free retired flow sets, unmap what none can reach, follow
  // `init` replacing a table, and pick up targets of flows restored inactive.
  const timer = setInterval(() => {
    if (targets.refresh()) publish(published);
    const woken = table.retryInactive();
    if (woken.length) console.error(`flowlb: target found, flows active: ${woken.join(", ")}`);
    if (c.nfqlb_flows_reclaim(flows) === 0 && targets.pending) targets.sweep();
  }, 100);
  const metrics = cfg.metrics
    ? startMetrics(cfg.metrics, {
      counters: countersShmName(cfg.ftShm),
      ftShm: cfg.ftShm,
      tables: () =>
        [...new Set(table.flows().flatMap((f) => f.target === null ? [] : [f.target]))]
          .map((shm) => ({ shm, active: activeTargets(shm) })),
      flows: () =>
        table.flows().filter((f) => f.companionOf === null).map((f) => ({
          flow: f.name,
          matches: countOf(f),
        })),
    })
    : undefined;
  signals.onStop(() => running.stop());
  try {
    return await running.done;
  } finally {
    await metrics?.close();
    clearInterval(timer);
    await server.close();
    c.nfqlb_flows_destroy(flows);
    targets.closeAll();
  }
}
