/**
 * One NFQUEUE worker: serves its queue until the stop flag is set. All
 * per-packet work happens in C (nfqlb_queue_serve: receive a batch,
 * classify, send the verdicts); this loop only crosses FFI once per batch,
 * copies the counters out, and re-maps the target table when `init`
 * replaced it.
 */
/// <reference lib="deno.worker" />
import { lib } from "../ffi/lib.ts";
import { TargetShm } from "../control/target_shm.ts";
import type { WorkerReport, WorkerStart } from "./worker_protocol.ts";

/** Wait at most this long for packets before looking at the stop flag. */
const POLL_MS = 100;

function report(r: WorkerReport): void {
  self.postMessage(r);
}

function serve(m: WorkerStart): void {
  const c = lib();
  const stop = new Int32Array(m.control);
  const counters = new BigUint64Array(m.counters);
  const local = new BigUint64Array(counters.length);
  const queue = Deno.UnsafePointer.create(m.queuePtr);
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
  if (lb === null || queue === null) throw new Error("out of memory creating the classifier");
  c.nfqlb_lb_set_frag(
    lb,
    m.lbshmPtr === 0n ? null : Deno.UnsafePointer.create(m.lbshmPtr),
    m.tunFd,
    m.reassembler,
  );
  try {
    while (Atomics.load(stop, 0) === 0) {
      c.nfqlb_queue_serve(queue, lb, POLL_MS);
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
    c.nfqlb_queue_close(queue);
    c.nfqlb_lb_destroy(lb);
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
