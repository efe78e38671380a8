/**
 * `nfqlb lb`: copy the target table (a private copy the classifiers refresh
 * per batch, core/target_view.ts), create the fragment table and its stats
 * shm, and bind each queue as the last step before serving it (so the kernel
 * never queues packets nobody reads; a bind error still ends lb with one line
 * and status 1); each queue's Worker then takes it over. SIGINT/SIGTERM stop
 * the workers, which drain and unbind their queues; then we exit 0. Every
 * 100 ms the main thread follows the shm files in use
 * (dataplane/table_watch.ts): a damaged one never stops the dataplane.
 */
import { cstring, lib } from "../ffi/lib.ts";
import { NFQLB_C_TABLE_ERRORS, NFQLB_QF_FAIL_OPEN } from "../ffi/consts.ts";
import { NfqlbError, strerror } from "../core/errors.ts";
import { createFragStatsShm, type FragStatsShm } from "../core/frag_stats.ts";
import { TargetView } from "../core/target_view.ts";
import { ShmWatch, TableWatch, type WatchContext } from "./table_watch.ts";
import type { ConntrackShm } from "../core/conntrack_shm.ts";
import { conntrackName } from "../core/conntrack_limits.ts";
import { ownExists } from "../core/shm_dir.ts";
import { hasNetAdmin } from "./capabilities.ts";
import type { LbConfig, QueueConfig } from "../core/lb_options.ts";
import type { WorkerReport, WorkerStart } from "./worker_protocol.ts";
import { startMetrics } from "./metrics.ts";
import { log } from "../core/log.ts";
import { startTracing, type TraceService } from "./trace_server.ts";
import { OFFLOAD_TRACE_NOTE, OffloadWatch } from "./offload.ts";
import { OffloadCounters } from "./offload_counters.ts";

/** Counter names (enum nfqlb_counter), re-exported for the dataplane's users. */
export { COUNTER_NAMES } from "../core/counters_shm.ts";
import {
  COUNTER_NAMES,
  type CountersShm,
  countersShmName,
  createCountersShm,
  TARGET_SLOTS,
} from "../core/counters_shm.ts";

/** Bytes copied to user space per packet when no fragment is stored: every header we parse fits. */
export const HEADER_COPY = 512;

/** A running lb, for tests and embedding: stop() ends it. */
export interface RunningLb {
  /** Per-queue counters by name, read live. */
  counters(): Map<number, Record<(typeof COUNTER_NAMES)[number], bigint>>;
  /** Stops the workers (they unbind their queues) and frees everything. */
  stop(): Promise<void>;
  /** Resolves when the lb has stopped (by stop() or a worker failure): 0 or 1. */
  done: Promise<number>;
  /** Counts one damaged-shm incident in table_errors (the first queue's). */
  countTableError(): void;
}

/** How the workers classify: one target table (lb) or a shared flow set (flowlb). */
export type Classifier =
  | {
    kind: "lb";
    /** The target table's view (closed with the lb, or when a re-opened one replaces it). */
    view: TargetView;
    sctpEncap: number;
    /** The connection table (`<tshm>-ct`) when it exists; closed with the lb. */
    conntrack?: ConntrackShm;
  }
  | {
    kind: "flowlb";
    flows: Deno.PointerObject;
    nolbFwmark: number;
    promiscuous: boolean;
    /** The trace flows (nfqlb_flows*: "table" of flow i = its id), matched only while `flows` is traced. */
    traceFlows?: Deno.PointerObject;
    /** The fwmarks of every target table in use (offload auto: who left, docs/offload.md). */
    fwmarks?: () => Iterable<number>;
    /** Changes whenever the flows change (offload auto: connections given the nolb fwmark are decided again). */
    epoch?: () => number;
  };

/**
 * Starts the load-balancer. Prints upstream's start-up lines on stdout.
 * `cfg` is taken as it is: the CLI (cli/commands/lb.ts) has checked every
 * value against LbConfigSchema's bounds, so zod is not loaded before the
 * queues are bound. `trace`: the trace server whose clients get this lb's
 * per-packet lines.
 * @throws NfqlbError for a missing table, a queue that cannot be bound, etc.
 */
export async function startLb(
  cfg: LbConfig,
  print: (line: string) => void,
  trace?: TraceService,
): Promise<RunningLb> {
  const view = TargetView.open(cfg.tshm); // FAILED mapSharedData: <name>[: reason]
  let conntrack: ConntrackShm | undefined;
  try {
    // The connection table, opt-in: used when the operator created `<tshm>-ct` (mapped once, shared).
    conntrack = await openConntrack(cfg.tshm);
    return await startQueues(cfg, { kind: "lb", view, sctpEncap: cfg.sctpEncap, conntrack }, print, trace);
  } catch (e) {
    conntrack?.close();
    view.close();
    throw e;
  }
}

/** Entries the connection-table sweep visits per second (lb and flowlb). */
export const CT_SWEEP_ENTRIES = 65536;

/**
 * The connection table of target table `tshm` if its file exists, else
 * undefined. Its code (and zod, which it uses) is loaded only then.
 */
async function openConntrack(tshm: string): Promise<ConntrackShm | undefined> {
  const name = conntrackName(tshm);
  if (!ownExists(name)) return undefined;
  const { ConntrackShm } = await import("../core/conntrack_shm.ts");
  const ct = ConntrackShm.open(name); // a file that is not a valid table is an error
  log.notice(`lb: using connection table ${name}`);
  return ct;
}

/**
 * The part of lb and flowlb after their own set-up: LB tier, stats shm, tun,
 * fragment table, counters; then each queue is bound as the last step before
 * a receive loop (in a thread of Deno's), and one Worker per queue takes its
 * queue over once it has started (docs/dataplane.md "Start and stop without
 * loss"). Resolves once every queue is bound; throws the bind error (after
 * the queues bound before were drained and unbound) when one cannot be
 * bound. With `trace`, the workers record packets while a trace client is
 * attached and the records go to it.
 */
export async function startQueues(
  cfg: QueueConfig,
  classifier: Classifier,
  print: (line: string) => void,
  trace?: TraceService,
): Promise<RunningLb> {
  const c = lib();
  // A truncated file we map (stats, counters, connection table) must not kill us: c/file.c.
  c.nfqlb_file_guard();
  // The LB-tier table: a view for the life of the lb (shared by the workers), as the target table's.
  const tier = cfg.lbshm ? TargetView.open(cfg.lbshm) : undefined;
  const release: (() => void)[] = [() => tier?.close()];
  let stats: FragStatsShm;
  try {
    stats = createFragStatsShm(cfg.ftShm);
  } catch (e) {
    tier?.close();
    throw e;
  }
  let tunFd = -1;
  const ct = classifier.kind === "lb" ? classifier.conntrack : undefined;
  release.push(() => ct?.close(), () => stats.close());
  if (ct) {
    // Expired entries nobody touches would keep counting for lc/wlc: reclaim a slice every second
    // (a full pass over 1 M entries in ~16 s; each call locks one bucket at a time).
    const sweeper = setInterval(() => ct.sweep(CT_SWEEP_ENTRIES), 1000);
    release.push(() => clearInterval(sweeper)); // released before ct.close (last in, first out)
  }
  const cleanup = () => {
    while (release.length) release.pop()!();
  };
  try {
    if (cfg.tun) tunFd = openTun(cfg.tun, cfg.mtu);
  } catch (e) {
    cleanup();
    throw e;
  }
  if (tunFd >= 0) release.push(() => c.nfqlb_tun_close(tunFd));
  // Without a tun device nothing could be re-injected, so nothing is stored (as upstream).
  const frags = tunFd >= 0 ? cfg.ftFrag : 0;
  const ft = c.nfqlb_ft_create(
    cfg.ftSize,
    cfg.ftBuckets,
    cfg.ftTtl,
    cfg.mtu,
    frags,
    cfg.reassembler,
    stats.ptr,
  );
  if (ft === null) {
    cleanup();
    throw new NfqlbError("Failed to create the fragment table (out of memory)");
  }
  release.push(() => c.nfqlb_ft_destroy(ft));
  print(
    `FragTable; size=${cfg.ftSize}, buckets=${cfg.ftBuckets}, frag=${frags}, mtu=${cfg.mtu}, ttl=${cfg.ftTtl}`,
  );
  // Hashing needs the headers only (an ICMP error's quoted packet included);
  // whole packets are needed only to store or reassemble fragments.
  const copyRange = tunFd >= 0 || cfg.reassembler > 0 ? cfg.mtu : Math.min(cfg.mtu, HEADER_COPY);
  const nums = Array.from({ length: cfg.queues.last - cfg.queues.first + 1 }, (_, i) => cfg.queues.first + i);
  // Live counters in shm: the C side counts there directly (stats --all, metrics). Published under
  // its name only once every queue is bound: an lb that cannot bind never replaces a running lb's file.
  let shmCounters: CountersShm;
  try {
    shmCounters = createCountersShm(countersShmName(cfg.ftShm), nums, classifier.kind);
  } catch (e) {
    cleanup();
    throw e;
  }
  release.push(() => shmCounters.close());

  // Each queue: its classifier, its socket, then the bind, and at once a receive loop in a thread of
  // Deno's (nfqlb_queue_serve_until) until the queue's Worker has started and takes it over.
  const started: Started[] = [];
  for (const [i, num] of nums.entries()) {
    let s: Started;
    try {
      s = bindQueue(cfg, classifier, num, i, { ft, tier, ct, tunFd, copyRange, counters: shmCounters });
    } catch (e) {
      await Promise.all(started.map(abandon));
      cleanup();
      throw e;
    }
    started.push(s);
    print(`queue_length=${cfg.qlength}, mtu=${cfg.mtu}, SO_RCVBUF=${s.rcvbuf[0]} (${s.rcvbuf[1]})`);
  }
  shmCounters.publish();

  // [0] stop flag, [1] trace records posted by the workers and not yet formatted
  const control = new SharedArrayBuffer(8);
  const stopFlag = new Int32Array(control);
  const running0 = () => Atomics.load(stopFlag, 0) === 0;
  // Damaged shm files: counted in table_errors (the workers count their tables' own), logged once.
  const who = classifier.kind;
  const ctx: WatchContext = {
    who,
    countError: () => {
      if (running0()) c.nfqlb_queue_count(started[0].queue, NFQLB_C_TABLE_ERRORS, 1n);
    },
  };
  // The views in use, by slot: [0] target table, [1] tier; per queue i, [2 + 2i] and [3 + 2i] (what its
  // classifier uses: its start-up loop's, then its worker's)
  const views = new SharedArrayBuffer(8 * (2 + 2 * started.length));
  const viewSlots = new BigInt64Array(views);
  const address = (v: TargetView | undefined) => v ? Deno.UnsafePointer.value(v.pointer) as bigint : 0n;
  const watches: { slot: number; watch: TableWatch }[] = [];
  if (classifier.kind === "lb") {
    watches.push({ slot: 0, watch: new TableWatch(classifier.view, "target table", ctx) });
  }
  if (tier) watches.push({ slot: 1, watch: new TableWatch(tier, "LB-tier table", ctx) });
  for (const w of watches) viewSlots[w.slot] = address(w.watch.view);
  for (const [i, s] of started.entries()) {
    viewSlots[2 + 2 * i] = s.viewPtr;
    viewSlots[3 + 2 * i] = s.tierViewPtr;
  }
  /** Views replaced by re-opened ones, freed once no worker uses them. */
  let retired: { slot: number; view: TargetView }[] = [];
  const shmWatches = [
    new ShmWatch(
      `counters shm ${countersShmName(cfg.ftShm)}`,
      ctx,
      () => shmCounters.damage(),
      () => (shmCounters.repair(), undefined),
      "writing it again",
    ),
    new ShmWatch(
      `fragment stats shm ${cfg.ftShm}`,
      ctx,
      () => stats.damage(),
      () => (stats.repair(), undefined),
      "writing it again",
    ),
  ];
  if (ct) {
    shmWatches.push(
      new ShmWatch(
        `connection table ${ct.name}`,
        ctx,
        () => ct.damage(),
        () => ct.reattach(),
        "deciding by Maglev alone until it is valid again",
      ),
    );
  }
  // offload auto: a target that leaves the table(s) takes its kernel connections along (./offload.ts)
  // the fwmarks of "no target" and "no flow" are kept in the kernel as any verdict; they are dropped when
  // the targets or flows change, so those connections are decided again (./offload.ts)
  const offload = cfg.offload === "auto"
    ? new OffloadWatch(who, [cfg.notargetsFwmark, classifier.kind === "flowlb" ? classifier.nolbFwmark : -1])
    : undefined;
  const epoch = () => classifier.kind === "flowlb" ? classifier.epoch?.() ?? 0 : 0;
  const fwmarksInUse = (): number[] =>
    classifier.kind === "lb"
      ? [...watches[0].watch.view.snapshot(0).active]
      : [...(classifier.fwmarks?.() ?? [])];
  // offload auto: the kernel's share of the per-target counts (./offload_counters.ts), read once a second
  const offloadCount = cfg.offload === "auto" ? new OffloadCounters(who, cfg.queues.first) : undefined;
  const countedMarks = () => [
    ...fwmarksInUse(),
    cfg.notargetsFwmark,
    classifier.kind === "flowlb" ? classifier.nolbFwmark : -1,
  ];
  let countsClosed = false, slotsWarned = false;
  const countOffloaded = (p: Promise<void>) =>
    void p.then(() => {
      if (countsClosed) return; // the lb stops: the mapping may be gone
      const left = shmCounters.setOffloaded(offloadCount!.totals());
      if (left > 0 && !slotsWarned) {
        slotsWarned = true;
        log.warning(`${who}: offload counters: ${left} fwmarks beyond the counters file's slots, not shown`);
      }
    });
  if (offload) {
    offload.poll(fwmarksInUse(), epoch());
    log.notice(`${who}: offload auto: each connection is decided once here, the kernel steers the rest`);
  }
  if (offloadCount) countOffloaded(offloadCount.start(countedMarks()));
  const housekeeping = setInterval(() => {
    if (!running0()) return;
    for (const w of watches) {
      const old = w.watch.view;
      const fresh = w.watch.poll();
      if (fresh) {
        retired.push({ slot: w.slot, view: old });
        Atomics.store(viewSlots, w.slot, address(fresh));
      }
    }
    retired = retired.filter((r) => {
      const a = address(r.view);
      for (let i = 0; i < started.length; i++) {
        if (Atomics.load(viewSlots, 2 + 2 * i + r.slot) === a) return true;
      }
      r.view.close();
      return false;
    });
    for (const w of shmWatches) w.poll();
    if (offload) offload.poll(fwmarksInUse(), epoch());
    if (offloadCount) countOffloaded(offloadCount.refresh(countedMarks()));
  }, 100);
  release.push(() => {
    clearInterval(housekeeping);
    for (const w of watches) w.watch.view.close();
    for (const r of retired) r.view.close();
  });
  const counterBufs = new Map<number, BigUint64Array>();
  let running = started.length;
  let failed = false;
  let resolveDone: (code: number) => void = () => {};
  const done = new Promise<number>((r) => (resolveDone = r));
  const workers: Worker[] = [];
  const finish = () => {
    for (const w of workers) w.terminate();
    // offload auto: a last read of the kernel counts into the counters file, then its rules go
    const last = offloadCount
      ? offloadCount.stop().then(() => void shmCounters.setOffloaded(offloadCount.totals()))
      : Promise.resolve();
    void last.finally(() => {
      countsClosed = true;
      cleanup();
      resolveDone(failed ? 1 : 0);
    });
  };
  // A worker that ends: if it never took its queue over, the queue is still ours to stop and close.
  const ended = async (s: Started) => {
    if (Atomics.load(s.handover, HANDOVER_OWNED) === 0) await abandon(s);
    if (--running === 0) finish();
  };
  // Each Worker's constructor blocks this thread while its isolate boots (13-40 ms); the queues are served
  // meanwhile by their start-up loops.
  for (const [index, s] of started.entries()) {
    const counters = new SharedArrayBuffer(8 * COUNTER_NAMES.length);
    counterBufs.set(s.num, new BigUint64Array(counters));
    const w = new Worker(new URL("./queue_worker.ts", import.meta.url), { type: "module" });
    w.onmessage = (e: MessageEvent<WorkerReport>) => {
      const r = e.data;
      if (r.kind === "trace") {
        Atomics.sub(stopFlag, 1, r.count);
        trace?.records(new Uint8Array(r.records), r.count, r.dropped);
        return;
      }
      if (r.kind === "notice") {
        log.notice(`lb: queue ${r.queue}: ${r.message}`);
        return;
      }
      if (r.kind === "serving") return; // the worker has taken the queue over
      if (r.kind === "error") {
        log.error(`lb: queue ${r.queue}: ${r.message}`);
        failed = true;
        Atomics.store(stopFlag, 0, 1);
      }
      void ended(s);
    };
    w.onerror = (e) => {
      e.preventDefault();
      log.error(`lb: queue ${s.num}: worker failed: ${e.message}`);
      failed = true;
      Atomics.store(stopFlag, 0, 1);
      void ended(s);
    };
    const start: WorkerStart = {
      kind: "start",
      queue: s.num,
      queuePtr: Deno.UnsafePointer.value(s.queue) as bigint,
      lbPtr: Deno.UnsafePointer.value(s.lb) as bigint,
      handover: s.handover.buffer as SharedArrayBuffer,
      viewPtr: s.viewPtr,
      tierViewPtr: s.tierViewPtr,
      views,
      index,
      batch: cfg.batch,
      traceMaskPtr: trace ? Deno.UnsafePointer.value(trace.maskWord) as bigint : 0n,
      traceFlowsPtr: classifier.kind === "flowlb" && classifier.traceFlows
        ? Deno.UnsafePointer.value(classifier.traceFlows) as bigint
        : 0n,
      control,
      counters,
    };
    w.postMessage(start);
    workers.push(w);
  }
  return {
    counters() {
      const out = new Map<number, Record<(typeof COUNTER_NAMES)[number], bigint>>();
      for (const [q, buf] of counterBufs) {
        out.set(
          q,
          Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, buf[i]])) as Record<
            (typeof COUNTER_NAMES)[number],
            bigint
          >,
        );
      }
      return out;
    },
    stop() {
      Atomics.store(stopFlag, 0, 1);
      return done.then(() => {});
    },
    done,
    countTableError: ctx.countError,
  };
}

/** The longest a start-up loop serves a queue before its Worker takes it over (a Worker that never comes). */
const START_SERVE_MAX_MS = 30_000;

/**
 * The hand-over words the main thread uses (Int32Array over a
 * SharedArrayBuffer: [0] take-over request, [1] the start-up loop has
 * stopped, [2] the worker owns the queue; see WorkerStart.handover).
 */
const HANDOVER_REQUEST = 0, HANDOVER_OWNED = 2;

/** A bound queue, served by its start-up loop until its Worker takes it over. */
interface Started {
  num: number;
  queue: Deno.PointerObject;
  /** Its classifier (handed to the worker with the queue). */
  lb: Deno.PointerObject;
  /** The addresses of the views its classifier reads (target table: 0n for flowlb; tier: 0n for none). */
  viewPtr: bigint;
  tierViewPtr: bigint;
  /** SO_RCVBUF read back and requested. */
  rcvbuf: Uint32Array;
  /** [request, exited, owned by the worker, unused]. */
  handover: Int32Array;
  /** The start-up loop (a non-blocking FFI call): resolves when it has stopped. */
  serving: Promise<number>;
}

/**
 * Creates queue `num`'s classifier and socket, binds the queue and starts
 * serving it in a thread of Deno's. Throws (having freed what it made) a bind
 * error as one line.
 */
function bindQueue(
  cfg: QueueConfig,
  classifier: Classifier,
  num: number,
  slot: number,
  o: {
    ft: Deno.PointerObject;
    tier?: TargetView;
    ct?: ConntrackShm;
    tunFd: number;
    copyRange: number;
    counters: CountersShm;
  },
): Started {
  const c = lib();
  // lb: the classifier reads the table's private copy (never the mapped file, from the first packet on,
  // start-up loop included); flowlb: the flow set names the tables' views
  const view = classifier.kind === "lb" ? classifier.view : undefined;
  const lb = classifier.kind === "lb"
    ? c.nfqlb_lb_create(classifier.view.table, o.ft, cfg.hashMode, classifier.sctpEncap, cfg.notargetsFwmark)
    : c.nfqlb_lb_create_flows(
      classifier.flows,
      slot,
      o.ft,
      cfg.hashMode,
      cfg.notargetsFwmark,
      classifier.nolbFwmark,
      classifier.promiscuous ? 1 : 0,
    );
  if (lb === null) {
    throw new NfqlbError(`lb: queue ${num}: out of memory creating the classifier`);
  }
  if (view) c.nfqlb_lb_set_view(lb, view.pointer);
  c.nfqlb_lb_set_frag(lb, null, o.tunFd, cfg.reassembler);
  if (o.tier) c.nfqlb_lb_set_tier_view(lb, o.tier.pointer);
  if (o.ct) c.nfqlb_lb_set_conntrack(lb, o.ct.pointer);
  const err = new Int32Array(1);
  const rcvbuf = new Uint32Array(2);
  const flags = cfg.failOpen ? NFQLB_QF_FAIL_OPEN : 0;
  const queue = c.nfqlb_queue_open(num, cfg.mtu, o.copyRange, cfg.qlength, flags, cfg.batch, err, rcvbuf);
  const rc = queue === null ? err[0] : (c.nfqlb_queue_set_stats(
    queue,
    o.counters.counters(slot),
    o.counters.targets(slot),
    TARGET_SLOTS,
  ),
    c.nfqlb_queue_bind(queue, lb));
  if (queue === null || rc !== 0) {
    if (queue !== null) c.nfqlb_queue_close(queue);
    c.nfqlb_lb_destroy(lb);
    throw bindFailure(num, -rc);
  }
  // the receive loop starts at once: from the bind on, the kernel queues this queue's packets to us
  const handover = new Int32Array(new SharedArrayBuffer(16));
  const serving = c.nfqlb_queue_serve_until(queue, lb, Deno.UnsafePointer.of(handover), START_SERVE_MAX_MS);
  const address = (v?: TargetView) => v ? Deno.UnsafePointer.value(v.pointer) as bigint : 0n;
  return { num, queue, lb, viewPtr: address(view), tierViewPtr: address(o.tier), rcvbuf, handover, serving };
}

/** Stops a queue's start-up loop, then drains, unbinds and frees it (its Worker never took it over). */
async function abandon(s: Started): Promise<void> {
  Atomics.store(s.handover, HANDOVER_REQUEST, 1);
  await s.serving;
  const c = lib();
  c.nfqlb_queue_drain(s.queue, s.lb);
  c.nfqlb_queue_close(s.queue);
  c.nfqlb_lb_destroy(s.lb);
}

/** The one line for a queue that could not be bound (errno as the kernel or socket(2) gave it). */
function bindFailure(num: number, errno: number): NfqlbError {
  if (errno === 1) {
    return new NfqlbError(
      hasNetAdmin()
        ? `lb: queue ${num} is already bound by another process`
        : `lb: binding queue ${num} needs CAP_NET_ADMIN (run as root)`,
    );
  }
  return new NfqlbError(`lb: cannot bind queue ${num}: ${strerror(errno)}`);
}

/**
 * Attaches to tun device `name` for re-injecting stored fragments; its MTU
 * must hold the largest fragment we store.
 */
function openTun(name: string, mtu: number): number {
  const fd = lib().nfqlb_tun_open(cstring(name));
  if (fd < 0) throw new NfqlbError(`Failed to open tun device [${name}]`);
  let tunMtu = 0;
  try {
    tunMtu = Number(Deno.readTextFileSync(`/sys/class/net/${name}/mtu`).trim());
  } catch { /* unknown: checked as 0 */ }
  if (tunMtu < mtu) {
    lib().nfqlb_tun_close(fd);
    throw new NfqlbError(`Tun mtu too small; ${tunMtu} < ${mtu}`);
  }
  return fd;
}

/**
 * Catches SIGINT/SIGTERM for the whole life of the process: a signal that
 * comes while we still start stops us as soon as we run, and one that comes
 * while we shut down finds the handler still there (never the default
 * action, which would kill us before the queues are unbound).
 */
export function stopOnSignals(): { onStop(fn: () => void): void } {
  let requested = false;
  let stop: (() => void) | undefined;
  const handler = () => {
    requested = true;
    stop?.();
  };
  Deno.addSignalListener("SIGINT", handler);
  Deno.addSignalListener("SIGTERM", handler);
  return {
    onStop(fn) {
      stop = fn;
      if (requested) fn();
    },
  };
}

/** Runs lb until SIGINT/SIGTERM; returns the exit status. */
export async function runLb(cfg: LbConfig, print: (line: string) => void): Promise<number> {
  const signals = stopOnSignals();
  let trace: TraceService | undefined;
  let lb: RunningLb;
  try {
    // as upstream: the trace shm and server first (a bind failure ends lb)
    trace = startTracing(
      cfg.traceAddress,
      undefined,
      cfg.offload === "auto" ? OFFLOAD_TRACE_NOTE : undefined,
    );
    lb = await startLb(cfg, print, trace);
  } catch (e) {
    await trace?.close();
    throw e;
  }
  const metrics = cfg.metrics
    ? startMetrics(cfg.metrics, {
      counters: countersShmName(cfg.ftShm),
      ftShm: cfg.ftShm,
      tables: () => [cfg.tshm],
    })
    : undefined;
  signals.onStop(() => lb.stop());
  try {
    return await lb.done;
  } finally {
    await metrics?.close();
    await trace.close();
  }
}
