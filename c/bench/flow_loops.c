/*
 * flow_loops.c - the flows bench's C baseline (tests/bench/flows.ts builds
 * it into bench-results/, never into the library): nfqlb_flowset_match or
 * nfqlb_flowset_match_linear over a set of keys in a plain C loop, no FFI
 * per packet (what the dataplane pays per packet inside nfqlb_queue_serve).
 */
#include "../nfqlb.h"

/*
 * iters lookups, key k = keys + 40 * (i % nkeys), all with the same packet
 * (pkt/len) and promiscuous flag. linear != 0: the linear walk. Returns the
 * sum of the results (u32 wrap) so the caller can check it.
 */
uint32_t bench_flow_match_loop(const struct nfqlb_flowset* fs, const uint8_t* keys, uint32_t nkeys,
			       const uint8_t* pkt, uint32_t len, uint32_t iters, uint32_t linear)
{
	uint32_t sum = 0, ue = 0;
	if (nkeys == 0)
		return 0;
	for (uint32_t i = 0, k = 0; i < iters; i++) {
		const uint8_t* key = keys + (size_t)k * NFQLB_KEY_LEN;
		int32_t r = linear ? nfqlb_flowset_match_linear(fs, key, pkt, len, 0, &ue)
				   : nfqlb_flowset_match(fs, key, pkt, len, 0, &ue);
		sum += (uint32_t)r + ue;
		if (++k == nkeys)
			k = 0;
	}
	return sum;
}
