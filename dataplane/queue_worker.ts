/**
 * One NFQUEUE worker: serves its queue until the stop flag is set. All
 * per-packet work happens in C (nfqlb_queue_serve: receive a batch,
 * refresh the private copies of the target tables from their files,
 * classify, send the verdicts); this loop only crosses FFI once per batch,
 * copies the counters out, switches to the table views the main thread
 * re-opened (dataplane/table_watch.ts), and hands the batch's trace records
 * (if any: only while a trace client is attached) to the main thread.
 *
 * The queue comes bound and served: the main thread binds it as the last step
 * before a receive loop that runs in a thread of Deno's
 * (nfqlb_queue_serve_until), because a Worker takes 13-40 ms to start and
 * the kernel must not queue packets for nobody meanwhile. That loop uses the
 * same classifier, reading the same private table copies (never the mapped
 * file). The worker takes it over: asks that loop to stop, waits until it
 * has, and serves from then on. On stop it drains the queue before it
 * unbinds it (nfqlb_queue_drain), so what the kernel had queued is answered
 * rather than dropped (docs/dataplane.md "Start and stop without loss").
 */
/// <reference lib="deno.worker" />
import { lib } from "../ffi/lib.ts";
import { NFQLB_SERVE_UNTIL_POLL_MS } from "../ffi/consts.ts";
import { TRACE_REC_LEN, TRACE_RING_HEADER, type WorkerReport, type WorkerStart } from "./worker_protocol.ts";

// Bound at load, before the start message: the FFI trampolines of the take-over and the loop are then
// ready (each symbol is bound on its first use, 0.1-0.3 ms each: ffi/lib.ts).
{
  const c = lib();
  void [
    c.nfqlb_lb_set_view,
    c.nfqlb_lb_set_tier_view,
    c.nfqlb_lb_set_trace,
    c.nfqlb_trace_ring_create,
    c.nfqlb_queue_serve,
    c.nfqlb_queue_counters,
  ];
}

/** Wait at most this long for packets before looking at the stop flag. */
const POLL_MS = 100;

/** Trace records posted to the main thread and not yet formatted, beyond which new ones are dropped. */
const MAX_TRACE_INFLIGHT = 65536;

/** The hand-over words: see WorkerStart.handover. */
const REQUEST = 0, EXITED = 1, OWNED = 2;
/** Waits for the start-up loop to stop: many times its poll interval (it stops within one). */
const TAKEOVER_WAITS = 10_000;

function report(r: WorkerReport, transfer: Transferable[] = []): void {
  self.postMessage(r, transfer);
}

/**
 * Takes the queue over from the start-up loop: asks it to stop and waits
 * (bounded) until it has. From then on the queue and the classifier are ours.
 */
function takeOver(handover: Int32Array): void {
  Atomics.store(handover, REQUEST, 1);
  for (let i = 0; i < TAKEOVER_WAITS && Atomics.load(handover, EXITED) === 0; i++) {
    Atomics.wait(handover, EXITED, 0, NFQLB_SERVE_UNTIL_POLL_MS / 2); // C does not notify: a timed wait
  }
  if (Atomics.load(handover, EXITED) === 0) throw new Error("the start-up loop did not hand the queue over");
  Atomics.store(handover, OWNED, 1);
}

function serve(m: WorkerStart): void {
  const c = lib();
  const stop = new Int32Array(m.control);
  const counters = new BigUint64Array(m.counters);
  const local = new BigUint64Array(counters.length);
  const queue = Deno.UnsafePointer.create(m.queuePtr)!;
  const lb = Deno.UnsafePointer.create(m.lbPtr)!;
  const views = new BigInt64Array(m.views);
  // the views the classifier reads now (set by the main thread before the bind); flowlb: 0n, the flow set
  // names the tables' views
  let view = m.viewPtr, tier = m.tierViewPtr;
  takeOver(new Int32Array(m.handover));
  let ring: Deno.PointerObject | null = null;
  /** Posts the trace records the last batch (or the drain) left in the ring. */
  let flushTrace = () => {};
  try {
    report({ kind: "serving", queue: m.queue });
    // Trace: one record per packet at most, so a ring of 2 batches never fills within one serve.
    const ringCap = Math.max(64, 2 * m.batch);
    ring = m.traceMaskPtr === 0n ? null : c.nfqlb_trace_ring_create(ringCap);
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
      bytes.set(
        new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ring!, bytes.length, TRACE_RING_HEADER)),
      );
      Atomics.add(stop, 1, count);
      report({ kind: "trace", queue: m.queue, records: bytes.buffer, count, dropped: traceLost }, [
        bytes.buffer,
      ]);
      traceLost = 0;
    };
    flushTrace = () => {
      if (ringHead && (ringHead[0] | ringHead[2]) !== 0) drainTrace();
    };
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
    // hand over: what the kernel queued is decided, not dropped by the unbind
    c.nfqlb_queue_drain(queue, lb);
    flushTrace();
    c.nfqlb_queue_counters(queue, local, local.length);
    counters.set(local);
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
