/**
 * `nfqlb lb`: copy the target table (a private copy the workers refresh per
 * batch, core/target_view.ts), create the fragment table and its stats shm,
 * bind every queue (here, so errors are reported before we start), and hand
 * each queue to its own Worker. SIGINT/SIGTERM stop the workers, which
 * unbind their queues; then we exit 0. Every 100 ms the main thread follows
 * the shm files in use (dataplane/table_watch.ts): a damaged one never stops
 * the workers.
 */
import { cstring, lib } from "../ffi/lib.ts";
import { NFQLB_C_TABLE_ERRORS, NFQLB_QF_FAIL_OPEN } from "../ffi/consts.ts";
import { NfqlbError, strerror } from "../core/errors.ts";
import { createFragStatsShm } from "../core/frag_stats.ts";
import { TargetView } from "../core/target_view.ts";
import { ShmWatch, TableWatch, type WatchContext } from "./table_watch.ts";
import { conntrackName, ConntrackShm } from "../core/conntrack_shm.ts";
import { shmExists } from "../core/shm_dir.ts";
import { hasNetAdmin } from "./capabilities.ts";
import { type LbConfig, LbConfigSchema, type QueueConfig } from "../core/lb_options.ts";
import type { WorkerReport, WorkerStart } from "./worker_protocol.ts";
import { startMetrics } from "./metrics.ts";
import { log } from "../core/log.ts";
import { startTracing, type TraceService } from "./trace_server.ts";

/** Counter names (enum nfqlb_counter), re-exported for the dataplane's users. */
export { COUNTER_NAMES } from "../core/counters_shm.ts";
import { COUNTER_NAMES, countersShmName, createCountersShm, TARGET_SLOTS } from "../core/counters_shm.ts";

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
  };

/**
 * Starts the load-balancer. Prints upstream's start-up lines on stdout.
 * `trace`: the trace server whose clients get this lb's per-packet lines.
 * @throws NfqlbError for a missing table, a queue that cannot be bound, etc.
 */
export function startLb(input: LbConfig, print: (line: string) => void, trace?: TraceService): RunningLb {
  const cfg = LbConfigSchema.parse(input);
  const view = TargetView.open(cfg.tshm); // FAILED mapSharedData: <name>[: reason]
  let conntrack: ConntrackShm | undefined;
  try {
    // The connection table, opt-in: used when the operator created `<tshm>-ct` (mapped once, shared).
    conntrack = openConntrack(cfg.tshm);
    return startQueues(cfg, { kind: "lb", view, sctpEncap: cfg.sctpEncap, conntrack }, print, trace);
  } catch (e) {
    conntrack?.close();
    view.close();
    throw e;
  }
}

/** Entries the connection-table sweep visits per second (lb and flowlb). */
export const CT_SWEEP_ENTRIES = 65536;

/** The connection table of target table `tshm` if its file exists, else undefined. */
function openConntrack(tshm: string): ConntrackShm | undefined {
  const name = conntrackName(tshm);
  if (!shmExists(name)) return undefined;
  const ct = ConntrackShm.open(name); // a file that is not a valid table is an error
  log.notice(`lb: using connection table ${name}`);
  return ct;
}

/**
 * The part of lb and flowlb after their own set-up: LB tier, stats shm, tun,
 * fragment table, queues, one Worker per queue. With `trace`, the workers
 * record packets while a trace client is attached and the records go to it.
 */
export function startQueues(
  cfg: QueueConfig,
  classifier: Classifier,
  print: (line: string) => void,
  trace?: TraceService,
): RunningLb {
  const c = lib();
  // A truncated file we map (stats, counters, connection table) must not kill us: c/file.c.
  c.nfqlb_file_guard();
  // The LB-tier table: a view for the life of the lb (shared by the workers), as the target table's.
  const tier = cfg.lbshm ? TargetView.open(cfg.lbshm) : undefined;
  const release: (() => void)[] = [() => tier?.close()];
  let stats: ReturnType<typeof createFragStatsShm>;
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
  const queues: { num: number; ptr: Deno.PointerObject }[] = [];
  const closeAll = () => {
    for (const q of queues) c.nfqlb_queue_close(q.ptr);
    cleanup();
  };
  for (let num = cfg.queues.first; num <= cfg.queues.last; num++) {
    const err = new Int32Array(1);
    const rcvbuf = new Uint32Array(2);
    const ptr = c.nfqlb_queue_open(
      num,
      cfg.mtu,
      copyRange,
      cfg.qlength,
      cfg.failOpen ? NFQLB_QF_FAIL_OPEN : 0,
      cfg.batch,
      err,
      rcvbuf,
    );
    if (ptr === null) {
      closeAll();
      const errno = -err[0];
      if (errno === 1) {
        throw new NfqlbError(
          hasNetAdmin()
            ? `lb: queue ${num} is already bound by another process`
            : `lb: binding queue ${num} needs CAP_NET_ADMIN (run as root)`,
        );
      }
      throw new NfqlbError(`lb: cannot bind queue ${num}: ${strerror(errno)}`);
    }
    queues.push({ num, ptr });
    print(`queue_length=${cfg.qlength}, mtu=${cfg.mtu}, SO_RCVBUF=${rcvbuf[0]} (${rcvbuf[1]})`);
  }

  // Live counters in shm: the C side counts there directly (stats --all, metrics).
  const shmCounters = createCountersShm(
    countersShmName(cfg.ftShm),
    queues.map((q) => q.num),
    classifier.kind,
  );
  release.push(() => shmCounters.close());
  queues.forEach((q, i) =>
    c.nfqlb_queue_set_stats(q.ptr, shmCounters.counters(i), shmCounters.targets(i), TARGET_SLOTS)
  );
  // [0] stop flag, [1] trace records posted by the workers and not yet formatted
  const control = new SharedArrayBuffer(8);
  const stopFlag = new Int32Array(control);
  const running0 = () => Atomics.load(stopFlag, 0) === 0;
  // Damaged shm files: counted in table_errors (the workers count their tables' own), logged once.
  const who = classifier.kind;
  const ctx: WatchContext = {
    who,
    countError: () => {
      if (running0()) c.nfqlb_queue_count(queues[0].ptr, NFQLB_C_TABLE_ERRORS, 1n);
    },
  };
  // The views in use, by slot: [0] target table, [1] tier; per worker i, [2 + 2i] and [3 + 2i] (what it uses)
  const views = new SharedArrayBuffer(8 * (2 + 2 * queues.length));
  const viewSlots = new BigInt64Array(views);
  const address = (v: TargetView | undefined) => v ? Deno.UnsafePointer.value(v.pointer) as bigint : 0n;
  const watches: { slot: number; watch: TableWatch }[] = [];
  if (classifier.kind === "lb") {
    watches.push({ slot: 0, watch: new TableWatch(classifier.view, "target table", ctx) });
  }
  if (tier) watches.push({ slot: 1, watch: new TableWatch(tier, "LB-tier table", ctx) });
  for (const w of watches) {
    viewSlots[w.slot] = address(w.watch.view);
    for (let i = 0; i < queues.length; i++) viewSlots[2 + 2 * i + w.slot] = viewSlots[w.slot];
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
      for (let i = 0; i < queues.length; i++) {
        if (Atomics.load(viewSlots, 2 + 2 * i + r.slot) === a) return true;
      }
      r.view.close();
      return false;
    });
    for (const w of shmWatches) w.poll();
  }, 100);
  release.push(() => {
    clearInterval(housekeeping);
    for (const w of watches) w.watch.view.close();
    for (const r of retired) r.view.close();
  });
  const counterBufs = new Map<number, BigUint64Array>();
  let running = queues.length;
  let failed = false;
  let resolveDone: (code: number) => void = () => {};
  const done = new Promise<number>((r) => (resolveDone = r));
  const workers: Worker[] = [];
  const finish = () => {
    for (const w of workers) w.terminate();
    cleanup();
    resolveDone(failed ? 1 : 0);
  };
  for (const q of queues) {
    const counters = new SharedArrayBuffer(8 * COUNTER_NAMES.length);
    counterBufs.set(q.num, new BigUint64Array(counters));
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
      if (r.kind === "error") {
        log.error(`lb: queue ${r.queue}: ${r.message}`);
        failed = true;
        Atomics.store(stopFlag, 0, 1);
      }
      if (--running === 0) finish();
    };
    w.onerror = (e) => {
      e.preventDefault();
      log.error(`lb: queue ${q.num}: worker failed: ${e.message}`);
      failed = true;
      Atomics.store(stopFlag, 0, 1);
      if (--running === 0) finish();
    };
    const start: WorkerStart = {
      kind: "start",
      queue: q.num,
      queuePtr: Deno.UnsafePointer.value(q.ptr) as bigint,
      ftPtr: Deno.UnsafePointer.value(ft) as bigint,
      viewPtr: viewSlots[0],
      hashMode: cfg.hashMode,
      sctpEncap: classifier.kind === "lb" ? classifier.sctpEncap : 0,
      notargetsFwmark: cfg.notargetsFwmark,
      flowsPtr: classifier.kind === "flowlb" ? Deno.UnsafePointer.value(classifier.flows) as bigint : 0n,
      slot: q.num - cfg.queues.first,
      nolbFwmark: classifier.kind === "flowlb" ? classifier.nolbFwmark : -1,
      promiscuous: classifier.kind === "flowlb" && classifier.promiscuous,
      tierViewPtr: viewSlots[1],
      views,
      index: queues.indexOf(q),
      ctPtr: ct ? Deno.UnsafePointer.value(ct.pointer) as bigint : 0n,
      tunFd,
      batch: cfg.batch,
      reassembler: cfg.reassembler,
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
  // as upstream: the trace shm and server first (a bind failure ends lb)
  const trace = startTracing(cfg.traceAddress);
  let lb: RunningLb;
  try {
    lb = startLb(cfg, print, trace);
  } catch (e) {
    await trace.close();
    throw e;
  }
  const metrics = cfg.metrics
    ? startMetrics(cfg.metrics, {
      counters: countersShmName(cfg.ftShm),
      ftShm: cfg.ftShm,
      tables: () => [{ shm: cfg.tshm, active: activeTargets(cfg.tshm) }],
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

/** Number of active targets in table `name` (0 when it cannot be read); read, never mapped. */
export function activeTargets(name: string): number {
  try {
    const t = TargetView.open(name);
    try {
      return t.snapshot(0).active.filter((fw) => fw >= 0).length;
    } finally {
      t.close();
    }
  } catch {
    return 0;
  }
}
