/**
 * One NFQUEUE worker: serves its queue until the stop flag is set. All
 * per-packet work happens in C (nfqlb_queue_serve: receive a batch,
 * refresh the private copies of the target tables from their files,
 * classify, send the verdicts); this loop only crosses FFI once per batch,
 * copies the counters out, switches to the table views the main thread
 * re-opened (dataplane/table_watch.ts), and hands the batch's trace records
 * (if any: only while a trace client is attached) to the main thread.
 */
/// <reference lib="deno.worker" />
import { lib } from "../ffi/lib.ts";
import { TRACE_REC_LEN, TRACE_RING_HEADER, type WorkerReport, type WorkerStart } from "./worker_protocol.ts";

/** Wait at most this long for packets before looking at the stop flag. */
const POLL_MS = 100;

/** Trace records posted to the main thread and not yet formatted, beyond which new ones are dropped. */
const MAX_TRACE_INFLIGHT = 65536;

function report(r: WorkerReport, transfer: Transferable[] = []): void {
  self.postMessage(r, transfer);
}

function serve(m: WorkerStart): void {
  const c = lib();
  const stop = new Int32Array(m.control);
  const counters = new BigUint64Array(m.counters);
  const local = new BigUint64Array(counters.length);
  const queue = Deno.UnsafePointer.create(m.queuePtr);
  const ft = m.ftPtr === 0n ? null : Deno.UnsafePointer.create(m.ftPtr);
  const views = new BigInt64Array(m.views);
  // lb: the process's view of its target table; flowlb: the flow set names the tables' views
  let view = m.viewPtr, tier = m.tierViewPtr;
  const lb = view !== 0n
    ? c.nfqlb_lb_create(
      c.nfqlb_tshm_view_table(Deno.UnsafePointer.create(view)),
      ft,
      m.hashMode,
      m.sctpEncap,
      m.notargetsFwmark,
    )
    : c.nfqlb_lb_create_flows(
      Deno.UnsafePointer.create(m.flowsPtr),
      m.slot,
      ft,
      m.hashMode,
      m.notargetsFwmark,
      m.nolbFwmark,
      m.promiscuous ? 1 : 0,
    );
  if (lb === null || queue === null) throw new Error("out of memory creating the classifier");
  if (view !== 0n) c.nfqlb_lb_set_view(lb, Deno.UnsafePointer.create(view));
  c.nfqlb_lb_set_frag(lb, null, m.tunFd, m.reassembler);
  if (tier !== 0n) c.nfqlb_lb_set_tier_view(lb, Deno.UnsafePointer.create(tier));
  if (m.ctPtr !== 0n) c.nfqlb_lb_set_conntrack(lb, Deno.UnsafePointer.create(m.ctPtr));
  // Trace: one record per packet at most, so a ring of 2 batches never fills within one serve.
  const ringCap = Math.max(64, 2 * m.batch);
  const ring = m.traceMaskPtr === 0n ? null : c.nfqlb_trace_ring_create(ringCap);
  // the ring's header: [0] count, [2] dropped (read and reset here, between batches: same thread as C)
  const ringHead = ring
    ? new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(ring, TRACE_RING_HEADER))
    : undefined;
  if (ring) {
    c.nfqlb_lb_set_trace(
      lb,
      Deno.UnsafePointer.create(m.traceMaskPtr),
      ring,
      m.traceFlowsPtr === 0n ? null : Deno.UnsafePointer.create(m.traceFlowsPtr),
    );
  }
  let traceLost = 0;
  const drainTrace = () => {
    const count = ringHead![0];
    const lost = ringHead![2];
    ringHead![0] = 0;
    ringHead![2] = 0;
    traceLost += lost;
    if (count === 0) return;
    if (Atomics.load(stop, 1) > MAX_TRACE_INFLIGHT) {
      traceLost += count; // the main thread is behind: drop, never queue without bound
      return;
    }
    const bytes = new Uint8Array(count * TRACE_REC_LEN);
    bytes.set(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ring!, bytes.length, TRACE_RING_HEADER)));
    Atomics.add(stop, 1, count);
    report({ kind: "trace", queue: m.queue, records: bytes.buffer, count, dropped: traceLost }, [
      bytes.buffer,
    ]);
    traceLost = 0;
  };
  try {
    while (Atomics.load(stop, 0) === 0) {
      c.nfqlb_queue_serve(queue, lb, POLL_MS);
      if (ringHead && (ringHead[0] | ringHead[2]) !== 0) drainTrace();
      c.nfqlb_queue_counters(queue, local, local.length);
      counters.set(local);
      // the main thread re-opened a table (init replaced it, or a damaged file was re-created)
      const want = Atomics.load(views, 0), wantTier = Atomics.load(views, 1);
      if (view !== 0n && want !== view) {
        c.nfqlb_lb_set_view(lb, Deno.UnsafePointer.create(want));
        view = want;
        Atomics.store(views, 2 + 2 * m.index, view); // the old one is free to go
      }
      if (tier !== 0n && wantTier !== tier) {
        c.nfqlb_lb_set_tier_view(lb, Deno.UnsafePointer.create(wantTier));
        tier = wantTier;
        Atomics.store(views, 3 + 2 * m.index, tier);
      }
    }
  } finally {
    c.nfqlb_queue_close(queue);
    c.nfqlb_lb_destroy(lb);
    c.nfqlb_trace_ring_free(ring);
  }
}

self.onmessage = (e: MessageEvent<WorkerStart>) => {
  const m = e.data;
  try {
    serve(m);
    report({ kind: "stopped", queue: m.queue });
  } catch (err) {
    report({ kind: "error", queue: m.queue, message: err instanceof Error ? err.message : String(err) });
  }
};
