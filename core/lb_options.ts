/** The validated configuration of `nfqlb lb` (zod schema; the CLI builds it from options). */
import { z } from "zod";

const u32 = z.number().int().min(0).max(4294967295);
const i32 = z.number().int().min(-2147483648).max(2147483647);

/** Schema of {@link QueueConfig}: what lb and flowlb share. */
export const QueueConfigSchema = z.object({
  /** LB-tier shm (`--lbshm`), fragments only; not used yet. */
  lbshm: z.string().min(1).optional(),
  /** Copy range and max stored fragment size. */
  mtu: z.number().int().min(576).max(65535),
  /** Tun device for re-injecting stored fragments; not used yet. */
  tun: z.string().min(1).optional(),
  reassembler: u32,
  /** fwmark when the table has no target; < 0 drops. */
  notargetsFwmark: i32,
  hashMode: z.number().int().min(0).max(65535),
  /** Inclusive queue range; one worker per queue. */
  queues: z.object({ first: z.number().int().min(0).max(65535), last: z.number().int().min(0).max(65535) })
    .refine((q) => q.first <= q.last, "first queue after last"),
  qlength: z.number().int().min(1).max(1048576),
  ftShm: z.string().min(1),
  ftSize: z.number().int().min(1).max(16777216),
  ftBuckets: z.number().int().min(0).max(16777216),
  ftFrag: z.number().int().min(0).max(1048576),
  ftTtl: u32,
  traceAddress: z.string(),
  /** NFQA_CFG_F_FAIL_OPEN: accept (unbalanced) rather than drop when a queue is full. */
  failOpen: z.boolean(),
  /** Packets per receive batch. */
  batch: z.number().int().min(1).max(1024),
  /** Serve Prometheus metrics at ADDR:PORT (`--metrics`). */
  metrics: z.string().min(1).optional(),
  /**
   * `--offload`: `auto` when the kernel keeps each connection's verdict
   * (docs/offload.md); the lb then deletes the kernel connections of a
   * target that leaves its table. `off`: every packet is queued.
   */
  offload: z.enum(["off", "auto"]),
});

/** Settings shared by lb and flowlb. */
export type QueueConfig = z.infer<typeof QueueConfigSchema>;

/** Schema of {@link LbConfig}. */
export const LbConfigSchema = QueueConfigSchema.extend({
  /** Target shm name (`--tshm`). */
  tshm: z.string().min(1),
  /** UDP port of SCTP-over-UDP, 0 = off. */
  sctpEncap: z.number().int().min(0).max(65535),
});

/** Configuration of one `lb` process. */
export type LbConfig = z.infer<typeof LbConfigSchema>;

/** Schema of {@link FlowLbConfig}. */
export const FlowLbConfigSchema = QueueConfigSchema.extend({
  /** fwmark when no flow matches; < 0 drops. */
  nolbFwmark: i32,
  /** Answer ping to any VIP of a flow (ICMP matches on addresses alone). */
  promiscuous: z.boolean(),
  /** The flow server's address (`unix:nfqlb` or NFQLB_FLOW_ADDRESS). */
  flowAddress: z.string().min(1),
  /** `--flow_store=FILE`: save the flows there and restore them at start; absent: start empty, as upstream. */
  flowStore: z.string().min(1).optional(),
});

/** Configuration of one `flowlb` process. */
export type FlowLbConfig = z.infer<typeof FlowLbConfigSchema>;
