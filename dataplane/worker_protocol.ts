/** Messages between the lb process (main thread) and its queue workers. */
import { NFQLB_TRACE_REC_LEN, NFQLB_TRACE_RING_HEADER } from "../ffi/consts.ts";

/** Bytes of one trace record and of a record ring's header. */
export const TRACE_REC_LEN = NFQLB_TRACE_REC_LEN, TRACE_RING_HEADER = NFQLB_TRACE_RING_HEADER;

/** Main → worker: start serving. Pointers travel as their addresses. */
export interface WorkerStart {
  kind: "start";
  queue: number;
  /** nfqlb_queue* address. */
  queuePtr: bigint;
  /** nfqlb_fragtable* address (0n when none). */
  ftPtr: bigint;
  /** lb: the target table's view (nfqlb_tshm_view*, core/target_view.ts) address; 0n for flowlb. */
  viewPtr: bigint;
  hashMode: number;
  sctpEncap: number;
  notargetsFwmark: number;
  /** The LB-tier table's view address (0n: no tier). */
  tierViewPtr: bigint;
  /**
   * BigInt64Array over it: [0] the target table view to use, [1] the tier's
   * (set by the main thread when it re-opens a table), then per worker
   * index i: [2 + 2i], [3 + 2i] the views that worker uses now (it stores
   * them after switching; the main thread frees a view no slot names).
   */
  views: SharedArrayBuffer;
  /** This worker's index (0.. queues - 1). */
  index: number;
  /** lb: the mapped connection table (nfqlb_ct, `<tshm>-ct`) address; 0n: none. */
  ctPtr: bigint;
  /** tun device fd for re-injecting stored fragments (-1: none). */
  tunFd: number;
  /** Packets per receive batch (sizes the trace ring). */
  batch: number;
  /** Hole descriptors of the reassembler (0: off). */
  reassembler: number;
  /** flowlb: the shared flow set (nfqlb_flows*) address; 0n for lb. */
  flowsPtr: bigint;
  /** flowlb: this worker's slot in the flow set. */
  slot: number;
  /** flowlb: fwmark when no flow matches (< 0 drops). */
  nolbFwmark: number;
  /** flowlb: --promiscuous_ping. */
  promiscuous: boolean;
  /** Trace: address of the process's trace-mask word (0n: no tracing). */
  traceMaskPtr: bigint;
  /** Trace: flowlb's trace flows (nfqlb_flows*, 0n: none). */
  traceFlowsPtr: bigint;
  /** Int32Array over it: [0] = stop flag, [1] = trace records posted and not yet formatted. */
  control: SharedArrayBuffer;
  /** BigUint64Array over it: this worker's counters, refreshed after each batch. */
  counters: SharedArrayBuffer;
}

/** Worker → main. */
export type WorkerReport =
  | { kind: "stopped"; queue: number }
  | { kind: "error"; queue: number; message: string }
  | { kind: "notice"; queue: number; message: string }
  /**
   * Trace records of one batch (`count` x 96 bytes, c/nfqlb.h struct
   * nfqlb_trace_rec) and how many were lost before them (ring full or too
   * many in flight). The main thread subtracts `count` from control[1].
   */
  | { kind: "trace"; queue: number; records: ArrayBuffer; count: number; dropped: number };
