/** Messages between the lb process (main thread) and its queue workers. */
import { NFQLB_TRACE_REC_LEN, NFQLB_TRACE_RING_HEADER } from "../ffi/consts.ts";

/** Bytes of one trace record and of a record ring's header. */
export const TRACE_REC_LEN = NFQLB_TRACE_REC_LEN, TRACE_RING_HEADER = NFQLB_TRACE_RING_HEADER;

/**
 * Main → worker: take the queue over and serve it. Pointers travel as their
 * addresses. The main thread has bound the queue and serves it in a thread
 * of Deno's (nfqlb_queue_serve_until) until the worker takes it over through
 * `handover` (docs/dataplane.md "Start and stop without loss"); from then on
 * the queue and the classifier are the worker's, to free when it stops.
 */
export interface WorkerStart {
  kind: "start";
  queue: number;
  /** nfqlb_queue* address: bound, served by the start-up loop until the hand-over. */
  queuePtr: bigint;
  /** nfqlb_lb* address: the queue's classifier (frag, tier, conntrack, table views set). */
  lbPtr: bigint;
  /** Int32Array over it: [0] take-over request, [1] the start-up loop has stopped, [2] the worker owns the queue. */
  handover: SharedArrayBuffer;
  /** lb: the target table's view (nfqlb_tshm_view*, core/target_view.ts) the classifier reads; 0n for flowlb. */
  viewPtr: bigint;
  /** The LB-tier table's view the classifier reads (0n: no tier). */
  tierViewPtr: bigint;
  /**
   * BigInt64Array over it: [0] the target table view to use, [1] the tier's
   * (set by the main thread when it re-opens a table), then per worker
   * index i: [2 + 2i], [3 + 2i] the views that queue's classifier uses now
   * (the worker stores them after switching; the main thread frees a view
   * no slot names).
   */
  views: SharedArrayBuffer;
  /** This worker's index (0.. queues - 1). */
  index: number;
  /** Packets per receive batch (sizes the trace ring). */
  batch: number;
  /** Trace: address of the process's trace-mask word (0n: no tracing). */
  traceMaskPtr: bigint;
  /** Trace: flowlb's trace flows (nfqlb_flows*, 0n: none). */
  traceFlowsPtr: bigint;
  /** Int32Array over it: [0] = stop flag, [1] = trace records posted and not yet formatted. */
  control: SharedArrayBuffer;
  /** BigUint64Array over it: this worker's counters, refreshed after each batch. */
  counters: SharedArrayBuffer;
}

/**
 * Worker → main. Every worker ends with one `stopped` or `error`; before
 * that, `serving` once it has taken the queue over from the start-up loop.
 */
export type WorkerReport =
  | { kind: "serving"; queue: number }
  | { kind: "stopped"; queue: number }
  | { kind: "error"; queue: number; message: string }
  | { kind: "notice"; queue: number; message: string }
  /**
   * Trace records of one batch (`count` x 96 bytes, c/nfqlb.h struct
   * nfqlb_trace_rec) and how many were lost before them (ring full or too
   * many in flight). The main thread subtracts `count` from control[1].
   */
  | { kind: "trace"; queue: number; records: ArrayBuffer; count: number; dropped: number };
