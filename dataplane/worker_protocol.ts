/** Messages between the lb process (main thread) and its queue workers. */

/** Main → worker: start serving. Pointers travel as their addresses. */
export interface WorkerStart {
  kind: "start";
  queue: number;
  /** nfqlb_queue* address. */
  queuePtr: bigint;
  /** nfqlb_fragtable* address (0n when none). */
  ftPtr: bigint;
  tshm: string;
  hashMode: number;
  sctpEncap: number;
  notargetsFwmark: number;
  /** Mapped LB-tier table address (0n: no tier). */
  lbshmPtr: bigint;
  /** tun device fd for re-injecting stored fragments (-1: none). */
  tunFd: number;
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
  /** Int32Array over it: [0] = stop flag. */
  control: SharedArrayBuffer;
  /** BigUint64Array over it: this worker's counters, refreshed after each batch. */
  counters: SharedArrayBuffer;
}

/** Worker → main. */
export type WorkerReport =
  | { kind: "stopped"; queue: number }
  | { kind: "error"; queue: number; message: string }
  | { kind: "notice"; queue: number; message: string };
