/**
 * The C library's exported functions as Deno FFI declarations (see c/nfqlb.h).
 * Hot-path functions use only u32/i32/pointer/buffer so V8 fast calls apply.
 */
export const SYMBOLS = {
  nfqlb_rand_size: { parameters: [], result: "u32" },
  nfqlb_rand_seed: { parameters: ["buffer", "u32"], result: "void" },
  nfqlb_rand_next: { parameters: ["buffer"], result: "i32" },
  nfqlb_prime_below: { parameters: ["u32"], result: "u32" },
  nfqlb_maglev_params: { parameters: ["u32", "u32", "buffer"], result: "i32" },
  nfqlb_maglev_populate: { parameters: ["u32", "u32", "buffer", "buffer", "buffer"], result: "i32" },
  nfqlb_djb2: { parameters: ["buffer", "u32"], result: "u32" },
  nfqlb_hash_key: { parameters: ["buffer", "u32", "u32"], result: "u32" },
  nfqlb_hash_addresses: { parameters: ["buffer", "u32"], result: "u32" },
  nfqlb_tshm_bytes: { parameters: ["u32", "u32", "buffer"], result: "i32" },
  nfqlb_tshm_format: { parameters: ["pointer", "u64", "u32", "u32", "i32"], result: "i32" },
  nfqlb_tshm_check: { parameters: ["pointer", "u64"], result: "i32" },
  nfqlb_tshm_commit: { parameters: ["pointer", "buffer"], result: "i32" },
  nfqlb_tshm_read: { parameters: ["pointer", "buffer", "u32", "buffer"], result: "u32" },
  nfqlb_tshm_lookup: { parameters: ["pointer", "u32"], result: "i32" },
  // the key as a pointer: a caller keeps its key buffer and that buffer's pointer (buffer params cost ~15 ns)
  nfqlb_tshm_lookup_key: { parameters: ["pointer", "pointer", "u32", "u32"], result: "i32" },
  nfqlb_tshm_lookup_row: { parameters: ["pointer", "u32", "buffer"], result: "i32" },
  nfqlb_tshm_count_empty: { parameters: ["pointer"], result: "u32" },
  nfqlb_file_map: { parameters: ["buffer", "i32", "buffer", "buffer"], result: "pointer" },
  nfqlb_file_unmap: { parameters: ["pointer", "u64"], result: "i32" },
  // dataplane (c/packet.c, c/fragtable.c, c/lb.c, c/nfqueue.c)
  nfqlb_packet_key: { parameters: ["u32", "buffer", "u32", "u32", "buffer", "buffer"], result: "i32" },
  nfqlb_packet_fraginfo: { parameters: ["u32", "buffer", "u32", "buffer"], result: "i32" },
  nfqlb_ft_create: { parameters: ["u32", "u32", "u32", "u32", "u32", "u32", "pointer"], result: "pointer" },
  nfqlb_ft_destroy: { parameters: ["pointer"], result: "void" },
  nfqlb_ft_first: { parameters: ["pointer", "buffer", "i32", "u64", "buffer", "buffer"], result: "i32" },
  nfqlb_ft_next: {
    parameters: ["pointer", "buffer", "u64", "buffer", "u32", "buffer", "buffer"],
    result: "i32",
  },
  nfqlb_ft_inject: { parameters: ["pointer", "i32", "i32", "buffer"], result: "u32" },
  nfqlb_tun_open: { parameters: ["buffer"], result: "i32" },
  nfqlb_fd_close: { parameters: ["i32"], result: "i32" },
  nfqlb_tshm_own_fwmark: { parameters: ["pointer"], result: "i32" },
  nfqlb_lb_create: { parameters: ["pointer", "pointer", "u32", "u32", "i32"], result: "pointer" },
  nfqlb_lb_set_tshm: { parameters: ["pointer", "pointer"], result: "void" },
  nfqlb_lb_create_flows: {
    parameters: ["pointer", "u32", "pointer", "u32", "i32", "i32", "u32"],
    result: "pointer",
  },
  nfqlb_flows_create: { parameters: ["u32"], result: "pointer" },
  nfqlb_flows_destroy: { parameters: ["pointer"], result: "void" },
  nfqlb_flows_publish: { parameters: ["pointer", "pointer", "buffer", "u32"], result: "u32" },
  nfqlb_flows_reclaim: { parameters: ["pointer"], result: "u32" },
  nfqlb_flows_matches: { parameters: ["pointer", "u32"], result: "u32" },
  nfqlb_lb_set_frag: { parameters: ["pointer", "pointer", "i32", "u32"], result: "void" },
  nfqlb_lb_decide: {
    parameters: ["pointer", "u32", "buffer", "u32", "u32", "u64", "buffer"],
    result: "i32",
  },
  nfqlb_lb_destroy: { parameters: ["pointer"], result: "void" },
  nfqlb_lb_classify: { parameters: ["pointer", "u32", "buffer", "u32", "u64", "buffer"], result: "i32" },
  nfqlb_queue_open: {
    parameters: ["u32", "u32", "u32", "u32", "u32", "u32", "buffer", "buffer"],
    result: "pointer",
  },
  nfqlb_queue_close: { parameters: ["pointer"], result: "void" },
  nfqlb_queue_fd: { parameters: ["pointer"], result: "i32" },
  nfqlb_queue_serve: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  nfqlb_queue_set_stats: { parameters: ["pointer", "pointer", "pointer", "u32"], result: "void" },
  nfqlb_queue_counters: { parameters: ["pointer", "buffer", "u32"], result: "void" },
  // flow matcher (c/flow.c); specs from control/flow_spec.ts encodeFlowSpec
  nfqlb_flowset_new: { parameters: ["u32"], result: "pointer" },
  nfqlb_flowset_add: { parameters: ["pointer", "u32", "buffer", "u32"], result: "i32" },
  nfqlb_flowset_build: { parameters: ["pointer"], result: "i32" },
  nfqlb_flowset_match: { parameters: ["pointer", "buffer", "buffer", "u32", "u32", "buffer"], result: "i32" },
  nfqlb_flowset_match_linear: {
    parameters: ["pointer", "buffer", "buffer", "u32", "u32", "buffer"],
    result: "i32",
  },
  nfqlb_flowset_matches: { parameters: ["pointer", "u32"], result: "u32" },
  nfqlb_flowset_set_matches: { parameters: ["pointer", "u32", "u32"], result: "void" },
  nfqlb_flowset_index_dims: { parameters: ["pointer"], result: "u32" },
  nfqlb_flowset_index_bytes: { parameters: ["pointer"], result: "u64" },
  nfqlb_flowset_free: { parameters: ["pointer"], result: "void" },
  // trace (c/trace.c; records formatted by dataplane/trace_format.ts)
  nfqlb_lb_set_trace: { parameters: ["pointer", "pointer", "pointer", "pointer"], result: "void" },
  nfqlb_trace_mask_create: { parameters: [], result: "pointer" },
  nfqlb_trace_mask_set: { parameters: ["pointer", "u32"], result: "void" },
  nfqlb_trace_mask_free: { parameters: ["pointer"], result: "void" },
  nfqlb_trace_ring_create: { parameters: ["u32"], result: "pointer" },
  nfqlb_trace_ring_free: { parameters: ["pointer"], result: "void" },
  nfqlb_trace_icmp: { parameters: ["u32", "buffer", "u32", "buffer"], result: "i32" },
  nfqlb_trace_categories: { parameters: ["u32", "u32"], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The symbol table type of the opened library. */
export type NfqlbSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
