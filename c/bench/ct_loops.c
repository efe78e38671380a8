/*
 * ct_loops.c - the conntrack bench's C loops (tests/bench/conntrack.ts builds
 * it into bench-results/, never into the library): nfqlb_ct_insert and
 * nfqlb_ct_lookup in plain C loops, no FFI per operation (what the dataplane
 * will pay per packet inside nfqlb_queue_serve).
 *
 * Key i (bench_ct_key): TCP ::ffff:10.(i>>16).(i>>8).i port 1024+(i&0x7fff)
 * -> ::ffff:10.99.0.1:80, built on the fly (a few ns, no key array to miss).
 */
#include "../nfqlb.h"
#include <string.h>

static inline void key_of(uint32_t i, uint8_t* k)
{
	memset(k, 0, NFQLB_KEY_LEN);
	k[10] = k[11] = 0xff;
	k[12] = 10, k[13] = (uint8_t)(i >> 16), k[14] = (uint8_t)(i >> 8), k[15] = (uint8_t)i;
	k[26] = k[27] = 0xff;
	k[28] = 10, k[29] = 99, k[30] = 0, k[31] = 1;
	k[34] = 6;
	uint32_t sport = 1024 + ((i >> 24) & 0x7f) * 256 + (i & 0xff);
	k[36] = (uint8_t)(sport >> 8), k[37] = (uint8_t)sport;
	k[39] = 80;
}

/** bench_ct_key - key i into out[40] (so the FFI side uses the same keys). */
void bench_ct_key(uint32_t i, uint8_t* out) { key_of(i, out); }

/**
 * bench_ct_insert_loop - insert keys first..first+n-1 (fwmark 100 + i % 8,
 * row i % 8) at now_ns. Returns how many returned 0.
 */
uint32_t bench_ct_insert_loop(uint8_t* base, uint32_t first, uint32_t n, uint64_t now_ns)
{
	uint8_t k[NFQLB_KEY_LEN];
	uint32_t ok = 0;
	for (uint32_t j = 0; j < n; j++) {
		uint32_t i = first + j;
		key_of(i, k);
		ok += nfqlb_ct_insert(base, k, (int32_t)(100 + i % 8), (int32_t)(i % 8), now_ns) == 0;
	}
	return ok;
}

/**
 * bench_ct_lookup_loop - iters lookups of keys 0..n-1 in a scattered order
 * (i = j * 2654435761 mod n): every lookup a different part of the table.
 * Returns the number of hits whose fwmark is 100 + i % 8.
 */
uint32_t bench_ct_lookup_loop(uint8_t* base, uint32_t n, uint32_t iters, uint64_t now_ns)
{
	uint8_t k[NFQLB_KEY_LEN];
	uint32_t ok = 0;
	int32_t row;
	if (n == 0)
		return 0;
	for (uint32_t j = 0; j < iters; j++) {
		uint32_t i = (uint32_t)(((uint64_t)j * 2654435761u) % n);
		key_of(i, k);
		ok += nfqlb_ct_lookup(base, k, now_ns, 100, &row) == (int32_t)(100 + i % 8);
	}
	return ok;
}

/** bench_ct_key_loop - the key building alone, for subtraction (returns a checksum). */
uint32_t bench_ct_key_loop(uint32_t n, uint32_t iters)
{
	uint8_t k[NFQLB_KEY_LEN];
	uint32_t sum = 0;
	if (n == 0)
		return 0;
	for (uint32_t j = 0; j < iters; j++) {
		uint32_t i = (uint32_t)(((uint64_t)j * 2654435761u) % n);
		key_of(i, k);
		__asm__ volatile("" : : "r"(k) : "memory");
		sum += k[15];
	}
	return sum;
}
