/** Messages between the lb process (main thread) and its queue workers. */
import { NFQLB_TRACE_REC_LEN, NFQLB_TRACE_RING_HEADER } from "../ffi/consts.ts";

/** Bytes of one trace record and of a record ring's header. */
export const TRACE_REC_LEN = NFQLB_TRACE_REC_LEN, TRACE_RING_HEADER = NFQLB_TRACE_RING_HEADER;

/**
 * Main → worker: start serving. Pointers travel as their addresses. The
 * worker opens and binds its queue itself, as the last step before its
 * receive loop (docs/dataplane.md "Life cycle").
 */
export interface WorkerStart {
  kind: "start";
  queue: number;
  /** nfqlb_queue_open's arguments: MTU, bytes copied per packet, queue length, NFQLB_QF_* flags. */
  mtu: number;
  copyRange: number;
  qlength: number;
  qflags: number;
  /** This queue's counters (NFQLB_C_COUNT u64) and per-target slots in the counters shm: addresses. */
  countersPtr: bigint;
  targetsPtr: bigint;
  /** Number of per-target slots (a power of 2). */
  targetSlots: number;
  /** nfqlb_fragtable* address (0n when none). */
  ftPtr: bigint;
  tshm: string;
  hashMode: number;
  sctpEncap: number;
  notargetsFwmark: number;
  /** Mapped LB-tier table address (0n: no tier). */
  lbshmPtr: bigint;
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

/**
 * Worker → main. Every worker ends with one `stopped` or `error`; before
 * that, `bound` (its queue is bound, SO_RCVBUF read back and requested) or
 * `bind_failed` (-errno of the socket or the bind).
 */
export type WorkerReport =
  | { kind: "bound"; queue: number; rcvbuf: number; rcvbufWanted: number }
  | { kind: "bind_failed"; queue: number; errno: number }
  | { kind: "stopped"; queue: number }
  | { kind: "error"; queue: number; message: string }
  | { kind: "notice"; queue: number; message: string }
  /**
   * Trace records of one batch (`count` x 96 bytes, c/nfqlb.h struct
   * nfqlb_trace_rec) and how many were lost before them (ring full or too
   * many in flight). The main thread subtracts `count` from control[1].
   */
  | { kind: "trace"; queue: number; records: ArrayBuffer; count: number; dropped: number };
