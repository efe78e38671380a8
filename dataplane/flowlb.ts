/**
 * `nfqlb flowlb`: the queues of lb, but each packet first picks a flow (the
 * highest-priority matching one), and the flow names the target table.
 *
 * The flow server (dataplane/flow_server.ts) edits a FlowTable; every change is
 * compiled here into an immutable C flow set (c/flowset.c: indexed matching) and
 * published atomically to the workers (c/flows.c), so a packet sees the old
 * set or the new one, never a mix. flowlb starts with no flows, as upstream;
 * with `--flow_store=FILE` (ours, opt-in) they are saved there after every
 * change and restored from there at start (core/flow/store.ts). Target tables are mapped once
 * per name, shared by flows, and unmapped only when no published set can
 * still point at them; so is a target's connection table (`<name>-ct`), which
 * the flows of that target then use as lb does (docs/conntrack.md "In flowlb").
 */
import { lib } from "../ffi/lib.ts";
import { NfqlbError } from "../core/errors.ts";
import type { Flow, FlowRequest } from "../core/flow/types.ts";
import { FlowTable, type FlowTableHooks } from "../core/flow/table.ts";
import { encodeFlowSpec } from "../core/flow/encode.ts";
import { type FlowServer, startFlowServer } from "./flow_server.ts";
import { FlowStore } from "../core/flow/store.ts";
import { SEND_ORDER } from "../core/flow/wire.ts";
import type { FlowLbConfig } from "../core/lb_options.ts";
import { CT_SWEEP_ENTRIES, type RunningLb, startQueues, stopOnSignals } from "./lb.ts";
import { log } from "../core/log.ts";
import { startTracing, type TraceService } from "./trace_server.ts";
import { TRACE } from "./trace_format.ts";
import { startMetrics } from "./metrics.ts";
import { countersShmName } from "../core/counters_shm.ts";
import { TargetRegistry } from "./target_registry.ts";
import { OFFLOAD_TRACE_NOTE } from "./offload.ts";

/**
 * Builds the C flow set for `flows` (in match order); the caller owns the
 * result. `trace`: the flows are trace flows, each one a winner of its own
 * (they have no target; upstream's trace set matches like a flow set).
 */
export function buildFlowSet(flows: readonly Flow[], trace = false): Deno.PointerObject {
  const c = lib();
  const fs = c.nfqlb_flowset_new(flows.length);
  if (fs === null) throw new NfqlbError(`flowlb: out of memory building ${flows.length} flows`);
  flows.forEach((f, i) => {
    const spec = encodeFlowSpec(f, trace || f.target !== null);
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

/**
 * A flow set published to the workers (c/flows.c), with matches_count
 * carried over by flow id. `value(f)` is what the C set gets for flow f: its
 * target table's view (flows: the set returns the view's copy, and the
 * workers refresh the views per batch) or its id (trace flows, returned as
 * is); `ct(f)` the address of its target's connection table (0n: none).
 */
class Published {
  #ptr: Deno.PointerObject;
  #trace: boolean;
  #value: (f: Flow) => bigint;
  #ct: ((f: Flow) => bigint) | undefined;
  list: readonly Flow[] = [];

  constructor(ptr: Deno.PointerObject, trace: boolean, value: (f: Flow) => bigint, ct?: (f: Flow) => bigint) {
    this.#ptr = ptr;
    this.#trace = trace;
    this.#value = value;
    this.#ct = ct;
  }

  count(f: Flow): number {
    const i = this.list.findIndex((p) => p.id === f.id);
    return i < 0 ? 0 : lib().nfqlb_flows_matches(this.#ptr, i);
  }

  publish(list: readonly Flow[]): void {
    const c = lib();
    const counts = new Map(this.list.map((p, i) => [p.id, c.nfqlb_flows_matches(this.#ptr, i)]));
    const fs = buildFlowSet(list, this.#trace);
    list.forEach((f, i) => c.nfqlb_flowset_set_matches(fs, i, counts.get(f.id) ?? 0));
    const values = new BigUint64Array(Math.max(1, list.length));
    list.forEach((f, i) => (values[i] = this.#value(f)));
    const cts = new BigUint64Array(Math.max(1, list.length));
    if (this.#ct) list.forEach((f, i) => (cts[i] = this.#ct!(f)));
    const gen = this.#trace
      ? c.nfqlb_flows_publish_ct(this.#ptr, fs, values, cts, list.length)
      : c.nfqlb_flows_publish_views(this.#ptr, fs, values, cts, list.length);
    if (gen === 0) {
      c.nfqlb_flowset_free(fs);
      throw new NfqlbError("flowlb: out of memory publishing the flows");
    }
    this.list = list;
  }
}

/**
 * A FlowTable whose requests and replies are traced under `flow-conf`
 * (upstream: `FlowCmd [<line>]` per request line, `writeReply [<reply>]`,
 * `readCmd; Unrecognized command [<key>]`). The request lines are rebuilt
 * from the parsed request, in upstream's client order.
 */
class TracedFlowTable extends FlowTable {
  #trace: TraceService;

  constructor(kind: "flow" | "trace", hooks: FlowTableHooks, trace: TraceService) {
    super(kind, hooks);
    this.#trace = trace;
  }

  #request(action: string, req: FlowRequest & { unknown?: string[] }): void {
    if (!(this.#trace.mask & TRACE.flowConf)) return;
    const lines = [`FlowCmd [action:${this.kind === "trace" ? "trace-" : ""}${action}]`];
    // the fields in the order the client sent them (the action line is above)
    for (const k of SEND_ORDER) {
      if (k !== "action" && req[k] !== undefined) lines.push(`FlowCmd [${k}:${req[k]}]`);
    }
    lines.push("FlowCmd [eoc:]");
    for (const k of req.unknown ?? []) lines.push(`readCmd; Unrecognized command [${k}]`);
    this.#trace.emit(lines.map((text) => ({ bits: TRACE.flowConf, text })));
  }

  #reply(text: string): string {
    this.#trace.line(TRACE.flowConf, `writeReply [${text}]`);
    return text;
  }

  override set(req: FlowRequest): string {
    this.#request("set", req);
    return this.#reply(super.set(req));
  }

  override delete(name: string | undefined): string {
    this.#request("delete", { name });
    return this.#reply(super.delete(name));
  }

  override list(name?: string): string {
    this.#request("list", { name });
    return super.list(name);
  }

  override listNames(): string {
    this.#request("list-names", {});
    return super.listNames();
  }
}

/**
 * Runs flowlb until SIGINT/SIGTERM; returns the exit status. `cfg` is taken
 * as it is (checked by the CLI, as lb's: startLb).
 */
export async function runFlowLb(cfg: FlowLbConfig, print: (line: string) => void): Promise<number> {
  const signals = stopOnSignals();
  // as upstream: the trace shm and server first (a bind failure ends flowlb)
  const trace = startTracing(
    cfg.traceAddress,
    undefined,
    cfg.offload === "auto" ? OFFLOAD_TRACE_NOTE : undefined,
  );
  const c = lib();
  const nqueues = cfg.queues.last - cfg.queues.first + 1;
  const flows = c.nfqlb_flows_create(nqueues);
  const traceFlows = c.nfqlb_flows_create(nqueues);
  const targets = new TargetRegistry();
  const cleanup = async () => {
    await trace.close();
    if (flows !== null) c.nfqlb_flows_destroy(flows);
    if (traceFlows !== null) c.nfqlb_flows_destroy(traceFlows);
    targets.closeAll();
  };
  if (flows === null || traceFlows === null) {
    await cleanup();
    throw new NfqlbError("flowlb: out of memory");
  }
  // Target references, traced under `target` (upstream's LoadBalancer find/create/delete).
  const refs = new Map<string, number>();
  const acquire = (name: string): boolean => {
    const n = refs.get(name) ?? 0;
    if (n > 0) {
      targets.acquire(name);
      refs.set(name, n + 1);
      trace.line(TRACE.target, `Found LB; ${name} (${n + 1})`);
      return true;
    }
    trace.line(TRACE.target, `Creating LB; ${name}`);
    if (!targets.acquire(name)) {
      trace.line(TRACE.target, `Map shm failed; ${name}`);
      return false;
    }
    refs.set(name, 1);
    return true;
  };
  const release = (name: string): void => {
    const n = (refs.get(name) ?? 0) - 1;
    targets.release(name);
    if (n > 0) {
      refs.set(name, n);
    } else {
      refs.delete(name);
      trace.line(TRACE.target, `Delete load-balancer; ${name}`);
    }
  };
  // Names in trace lines: the target tables by address and the trace flows by id, as
  // published now and just before (a record may name what a batch in flight still used).
  let targetNames = new Map<bigint, string>(), oldTargetNames = new Map<bigint, string>();
  let traceNames = new Map<number, string>(), oldTraceNames = new Map<number, string>();
  trace.names = {
    target: (a) => targetNames.get(a) ?? oldTargetNames.get(a) ?? "?",
    traceFlow: (id) => traceNames.get(id) ?? oldTraceNames.get(id) ?? "?",
  };
  const main = new Published(
    flows,
    false,
    (f) => targets.viewAddress(f.target),
    (f) => targets.conntrackAddress(f.target),
  );
  const traced = new Published(traceFlows, true, (f) => BigInt(f.id));
  // offload auto: a new flow set may give connections that got the nolb fwmark a flow now
  let flowEpoch = 0;
  const publish = (list: readonly Flow[]) => {
    flowEpoch++;
    main.publish(list);
    oldTargetNames = targetNames;
    targetNames = new Map(
      list.flatMap((f) => f.target === null ? [] : [[targets.address(f.target), f.target]]),
    );
  };
  const publishTrace = (list: readonly Flow[]) => {
    traced.publish(list);
    oldTraceNames = traceNames;
    traceNames = new Map(list.map((f) => [f.id, f.name]));
  };
  const table = new TracedFlowTable("flow", {
    acquire,
    release,
    changed: publish,
    counts: (_name, f) => main.count(f),
  }, trace);
  // Trace flows select packets for `trace --selection=flows` (matched only while it runs).
  const traceTable = new TracedFlowTable("trace", {
    changed: publishTrace,
    counts: (_name, f) => traced.count(f),
  }, trace);

  let server: FlowServer | undefined;
  let running: RunningLb;
  try {
    const store = cfg.flowStore === undefined ? undefined : new FlowStore(cfg.flowStore);
    if (store) {
      const loaded = store.load();
      for (const p of loaded.problems) log.warning(`flowlb: ${p}`);
      for (const p of table.restore(loaded.flows)) log.warning(`flowlb: restore: ${p}`);
      log.notice(`flowlb: ${table.definitions().length} flows loaded from ${store.path}`);
    }
    publish(table.activeFlows());
    publishTrace([]);
    server = startFlowServer(cfg.flowAddress, table, traceTable, { store, log: (line) => log.warning(line) });
    running = await startQueues(
      cfg,
      {
        kind: "flowlb",
        flows,
        nolbFwmark: cfg.nolbFwmark,
        promiscuous: cfg.promiscuous,
        traceFlows,
        fwmarks: () => targets.fwmarks(),
        epoch: () => flowEpoch,
      },
      print,
      trace,
    );
    targets.context = { who: "flowlb", countError: running.countTableError };
  } catch (e) {
    await server?.close();
    await cleanup();
    throw e;
  }
  // Housekeeping: free retired flow sets, free copies none can reach, follow
  // the target tables' files (init replacing one, damage: ./table_watch.ts),
  // pick up targets of flows restored inactive, and
  // (every second, as lb) reclaim expired connection-table entries, which
  // would otherwise keep counting for the lc/wlc schedulers.
  let ticks = 0;
  const timer = setInterval(() => {
    if (++ticks % 10 === 0) { for (const ct of targets.conntracks().values()) ct.sweep(CT_SWEEP_ENTRIES); }
    if (targets.refresh()) publish(main.list);
    const woken = table.retryInactive();
    if (woken.length) log.notice(`flowlb: target found, flows active: ${woken.join(", ")}`);
    c.nfqlb_flows_reclaim(traceFlows);
    if (c.nfqlb_flows_reclaim(flows) === 0 && targets.pending) targets.sweep();
  }, 100);
  const metrics = cfg.metrics
    ? startMetrics(cfg.metrics, {
      counters: countersShmName(cfg.ftShm),
      ftShm: cfg.ftShm,
      tables: () => [...new Set(table.flows().flatMap((f) => f.target === null ? [] : [f.target]))],
      flows: () =>
        table.flows().filter((f) => f.companionOf === null).map((f) => ({
          flow: f.name,
          matches: main.count(f),
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
    await cleanup();
  }
}
