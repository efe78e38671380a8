/**
 * One NFQUEUE worker: serves its queue until the stop flag is set. All
 * per-packet work happens in C (nfqlb_queue_serve: receive a batch,
 * classify, send the verdicts); this loop only crosses FFI once per batch,
 * copies the counters out, re-maps the target table when `init`
 * replaced it, and hands the batch's trace records (if any: only while a
 * trace client is attached) to the main thread.
 *
 * The queue is bound here, after everything else is ready and right before
 * the loop: until then the kernel passes the packets (--queue-bypass)
 * instead of queueing them for a reader that is not there yet. On stop the
 * queue is drained before it is unbound (nfqlb_queue_drain), so what the
 * kernel had queued is answered rather than dropped.
 */
/// <reference lib="deno.worker" />
import { lib } from "../ffi/lib.ts";
import { TargetShm } from "../core/target_shm.ts";
import { TRACE_REC_LEN, TRACE_RING_HEADER, type WorkerReport, type WorkerStart } from "./worker_protocol.ts";

// Bound at load, while the main thread still sets up (the CLI starts the workers first:
// dataplane/queue_workers.ts): the FFI trampolines serve() needs are ready when the start comes.
{
  const c = lib();
  void [
    c.nfqlb_file_map,
    c.nfqlb_file_unmap,
    c.nfqlb_tshm_check,
    c.nfqlb_lb_create,
    c.nfqlb_lb_create_flows,
    c.nfqlb_lb_set_frag,
    c.nfqlb_lb_set_trace,
    c.nfqlb_trace_ring_create,
    c.nfqlb_queue_open,
    c.nfqlb_queue_set_stats,
    c.nfqlb_queue_bind,
    c.nfqlb_queue_serve,
    c.nfqlb_queue_counters,
  ];
}

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
  const ft = m.ftPtr === 0n ? null : Deno.UnsafePointer.create(m.ftPtr);
  // lb: this worker maps the target table itself; flowlb: the flow set names the tables
  let table = m.flowsPtr === 0n ? TargetShm.open(m.tshm) : undefined;
  const lb = table
    ? c.nfqlb_lb_create(table.pointer, ft, m.hashMode, m.sctpEncap, m.notargetsFwmark)
    : c.nfqlb_lb_create_flows(
      Deno.UnsafePointer.create(m.flowsPtr),
      m.slot,
      ft,
      m.hashMode,
      m.notargetsFwmark,
      m.nolbFwmark,
      m.promiscuous ? 1 : 0,
    );
  if (lb === null) {
    table?.close();
    throw new Error("out of memory creating the classifier");
  }
  c.nfqlb_lb_set_frag(
    lb,
    m.lbshmPtr === 0n ? null : Deno.UnsafePointer.create(m.lbshmPtr),
    m.tunFd,
    m.reassembler,
  );
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
  const err = new Int32Array(1);
  const rcvbuf = new Uint32Array(2);
  const queue = c.nfqlb_queue_open(m.queue, m.mtu, m.copyRange, m.qlength, m.qflags, m.batch, err, rcvbuf);
  try {
    if (queue === null) {
      report({ kind: "bind_failed", queue: m.queue, errno: -err[0] });
      return;
    }
    c.nfqlb_queue_set_stats(
      queue,
      Deno.UnsafePointer.create(m.countersPtr),
      Deno.UnsafePointer.create(m.targetsPtr),
      m.targetSlots,
    );
    if (Atomics.load(stop, 0) !== 0) return; // stopped while starting: never bind
    // the last step before the loop: from here on the kernel queues to us
    const rc = c.nfqlb_queue_bind(queue, lb);
    if (rc !== 0) {
      report({ kind: "bind_failed", queue: m.queue, errno: -rc });
      return;
    }
    report({ kind: "bound", queue: m.queue, rcvbuf: rcvbuf[0], rcvbufWanted: rcvbuf[1] });
    while (Atomics.load(stop, 0) === 0) {
      c.nfqlb_queue_serve(queue, lb, POLL_MS);
      if (ringHead && (ringHead[0] | ringHead[2]) !== 0) drainTrace();
      c.nfqlb_queue_counters(queue, local, local.length);
      counters.set(local);
      if (table?.replaced) {
        // init made a new table: switch to it; the old one stays mapped until then
        try {
          const fresh = TargetShm.open(m.tshm);
          c.nfqlb_lb_set_tshm(lb, fresh.pointer);
          table.close();
          table = fresh;
          report({ kind: "notice", queue: m.queue, message: `re-mapped target table ${m.tshm}` });
        } catch { /* the new one is not there (yet): keep serving the old one */ }
      }
    }
  } finally {
    if (queue !== null) {
      // hand over: what the kernel queued is decided, not dropped by the unbind (no-op when not bound)
      c.nfqlb_queue_drain(queue, lb);
      if (ringHead && (ringHead[0] | ringHead[2]) !== 0) drainTrace();
      c.nfqlb_queue_counters(queue, local, local.length);
      counters.set(local);
      c.nfqlb_queue_close(queue);
    }
    c.nfqlb_lb_destroy(lb);
    c.nfqlb_trace_ring_free(ring);
    table?.close();
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
