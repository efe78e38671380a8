/*
 * c_loops.c - C-side helpers of the lookup bench, for benchmarking only (not
 * part of libnfqlb.so).
 *
 * bench_c_hash_lookup: the per-key work as a plain C loop calling the
 * library's own nfqlb_hash_key and nfqlb_tshm_lookup, so the difference to
 * the FFI loop in scripts/bench.ts is the cost of crossing from JS to C.
 *
 * bench_djb2_x8 / bench_hash_lookup_x8: a proposal measured next to the real
 * thing. djb2 (h = 33h + b mod 2^32) is one long dependency chain, about 3
 * cycles per byte. Eight steps at once give the same value:
 *   h' = 33^8 h + 33^7 b0 + 33^6 b1 + ... + 33 b6 + b7   (mod 2^32)
 * where the b-terms are independent, so the chain is one multiply-add per
 * 8 bytes. bench_hash_lookup and bench_hash_lookup_x8 fold hash and lookup
 * into one call, with the library's djb2 and with the 8-way one.
 *
 * bench_classify_loop: the classify bench's C baseline, nfqlb_lb_classify
 * over a set of packets in a plain C loop (what the dataplane's
 * nfqlb_queue_serve does per packet, without the socket I/O).
 */
#include "../nfqlb.h"

uint32_t bench_c_hash_lookup(const uint8_t* keys, uint32_t nkeys, uint32_t iters, const uint8_t* base)
{
	uint32_t sum = 0;
	for (uint32_t i = 0, k = 0; i < iters; i++) {
		uint32_t h = nfqlb_hash_key(keys + (uint64_t)k * NFQLB_KEY_LEN, NFQLB_KEY_LEN, 1);
		sum += (uint32_t)nfqlb_tshm_lookup(base, h);
		if (++k == nkeys)
			k = 0;
	}
	return sum;
}

uint32_t bench_djb2_x8(const uint8_t* p, uint32_t len)
{
	uint32_t h = 5381, i = 0;
	for (; i + 8 <= len; i += 8) {
		uint32_t t = p[i] * 3963737313u + p[i + 1] * 1291467969u + p[i + 2] * 39135393u +
			     p[i + 3] * 1185921u + p[i + 4] * 35937u + p[i + 5] * 1089u + p[i + 6] * 33u + p[i + 7];
		h = h * 1954312449u + t;
	}
	for (; i < len; i++)
		h = h * 33u + p[i];
	return h;
}

/* nfqlb_hash_key, then the lookup: one FFI call per key. */
int32_t bench_hash_lookup(const uint8_t* base, const uint8_t* key, uint32_t len)
{
	return nfqlb_tshm_lookup(base, nfqlb_hash_key(key, len, 1));
}

/* The same with bench_djb2_x8 (hash_mode 1 as nfqlb_hash_key). */
int32_t bench_hash_lookup_x8(const uint8_t* base, const uint8_t* key, uint32_t len)
{
	if (key == NULL || len < NFQLB_KEY_LEN)
		return -1;
	uint32_t proto = (uint32_t)key[34] | ((uint32_t)key[35] << 8);
	uint32_t h = proto == 132 ? bench_djb2_x8(key + 36, 4) : bench_djb2_x8(key, NFQLB_KEY_LEN);
	return nfqlb_tshm_lookup(base, h);
}

/*
 * nfqlb_lb_classify on packets 0..n-1 in turn (packet i is flat[offsets[i]]
 * .. + lens[i], NFQUEUE hw_protocol hwprotos[i]), `iters` calls in all, at a
 * fixed time now_ns. Returns the sum of the fwmarks (u32 wrap), so the
 * caller can check it against per-packet results.
 */
uint32_t bench_classify_loop(struct nfqlb_lb* lb, const uint8_t* flat, const uint32_t* offsets,
			     const uint32_t* lens, const uint32_t* hwprotos, uint32_t n, uint32_t iters,
			     uint64_t now_ns, uint64_t* counters)
{
	uint32_t sum = 0;
	if (n == 0)
		return 0;
	for (uint32_t i = 0, k = 0; i < iters; i++) {
		sum += (uint32_t)nfqlb_lb_classify(lb, hwprotos[k], flat + offsets[k], lens[k], now_ns, counters);
		if (++k == n)
			k = 0;
	}
	return sum;
}

/*
 * bench_classify_count_loop: bench_classify_loop plus what nfqlb_queue_serve
 * counts per packet (received, accepted/dropped, per-target packets and
 * bytes), to measure what the counters cost.
 */
uint32_t bench_classify_count_loop(struct nfqlb_lb* lb, const uint8_t* flat, const uint32_t* offsets,
				   const uint32_t* lens, const uint32_t* hwprotos, uint32_t n, uint32_t iters,
				   uint64_t now_ns, uint64_t* counters, struct nfqlb_target_stat* tstats,
				   uint32_t ntstats)
{
	uint32_t sum = 0;
	if (n == 0)
		return 0;
	for (uint32_t i = 0, k = 0; i < iters; i++) {
		counters[NFQLB_C_RECEIVED]++;
		int32_t mark = nfqlb_lb_classify(lb, hwprotos[k], flat + offsets[k], lens[k], now_ns, counters);
		if (mark < 0) {
			counters[NFQLB_C_DROPPED]++;
		} else {
			counters[NFQLB_C_ACCEPTED]++;
			nfqlb_target_stats_add(tstats, ntstats, mark, lens[k], counters);
		}
		sum += (uint32_t)mark;
		if (++k == n)
			k = 0;
	}
	return sum;
}
