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

/* Key i of step j of a scattered walk over n keys (as bench_ct_lookup_loop). */
static inline uint32_t scattered(uint32_t j, uint32_t n) { return (uint32_t)(((uint64_t)j * 2654435761u) % n); }

#define BATCH_MAX 64u

/**
 * bench_ct_lookup_batch_loop - bench_ct_lookup_loop's walk, `batch` keys
 * (1..64) per nfqlb_ct_lookup_batch call. Returns the hits with the right
 * fwmark.
 */
uint32_t bench_ct_lookup_batch_loop(uint8_t* base, uint32_t n, uint32_t iters, uint32_t batch, uint64_t now_ns)
{
	uint8_t keys[BATCH_MAX * NFQLB_KEY_LEN];
	uint32_t idx[BATCH_MAX], bytes[BATCH_MAX], ok = 0;
	int32_t fw[BATCH_MAX], row[BATCH_MAX];
	if (n == 0 || batch == 0 || batch > BATCH_MAX)
		return 0;
	for (uint32_t i = 0; i < batch; i++)
		bytes[i] = 100;
	for (uint32_t j = 0; j < iters; j += batch) {
		uint32_t m = iters - j < batch ? iters - j : batch;
		for (uint32_t i = 0; i < m; i++) {
			idx[i] = scattered(j + i, n);
			key_of(idx[i], keys + i * NFQLB_KEY_LEN);
		}
		nfqlb_ct_lookup_batch(base, keys, m, now_ns, bytes, fw, row);
		for (uint32_t i = 0; i < m; i++)
			ok += fw[i] == (int32_t)(100 + idx[i] % 8);
	}
	return ok;
}

/**
 * bench_ct_prefetch_lookup_loop - the dataplane's pattern: batches of
 * `batch` keys; key i + dist goes through nfqlb_ct_prefetch and key
 * i + dist / 2 through nfqlb_ct_prefetch_ways before key i is looked up
 * with nfqlb_ct_lookup (dist >= batch: the whole batch is prefetched first).
 */
uint32_t bench_ct_prefetch_lookup_loop(uint8_t* base, uint32_t n, uint32_t iters, uint32_t batch, uint32_t dist,
				       uint64_t now_ns)
{
	uint8_t keys[BATCH_MAX * NFQLB_KEY_LEN];
	uint32_t idx[BATCH_MAX], ok = 0, half = dist / 2;
	int32_t row;
	if (n == 0 || batch == 0 || batch > BATCH_MAX)
		return 0;
	for (uint32_t j = 0; j < iters; j += batch) {
		uint32_t m = iters - j < batch ? iters - j : batch;
		for (uint32_t i = 0; i < m; i++) {
			idx[i] = scattered(j + i, n);
			key_of(idx[i], keys + i * NFQLB_KEY_LEN);
		}
		for (uint32_t i = 0; i < m && i < dist; i++)
			nfqlb_ct_prefetch(base, keys + i * NFQLB_KEY_LEN);
		for (uint32_t i = 0; i < m && i < half; i++)
			nfqlb_ct_prefetch_ways(base, keys + i * NFQLB_KEY_LEN);
		for (uint32_t i = 0; i < m; i++) {
			if (i + dist < m)
				nfqlb_ct_prefetch(base, keys + (i + dist) * NFQLB_KEY_LEN);
			if (i + half < m && half > 0)
				nfqlb_ct_prefetch_ways(base, keys + (i + half) * NFQLB_KEY_LEN);
			ok += nfqlb_ct_lookup(base, keys + i * NFQLB_KEY_LEN, now_ns, 100, &row) ==
			      (int32_t)(100 + idx[i] % 8);
		}
	}
	return ok;
}

/**
 * bench_ct_insert_batch_loop - bench_ct_insert_loop with `batch` keys per
 * nfqlb_ct_insert_batch call. Returns how many returned 0.
 */
uint32_t bench_ct_insert_batch_loop(uint8_t* base, uint32_t first, uint32_t n, uint32_t batch, uint64_t now_ns)
{
	uint8_t keys[BATCH_MAX * NFQLB_KEY_LEN];
	int32_t fw[BATCH_MAX], row[BATCH_MAX];
	uint32_t ok = 0;
	if (batch == 0 || batch > BATCH_MAX)
		return 0;
	for (uint32_t j = 0; j < n; j += batch) {
		uint32_t m = n - j < batch ? n - j : batch;
		for (uint32_t i = 0; i < m; i++) {
			uint32_t k = first + j + i;
			key_of(k, keys + i * NFQLB_KEY_LEN);
			fw[i] = (int32_t)(100 + k % 8);
			row[i] = (int32_t)(k % 8);
		}
		ok += nfqlb_ct_insert_batch(base, keys, m, fw, row, now_ns, NULL);
	}
	return ok;
}

/*
 * Packet of flow i for the decide loop: IPv4 TCP (40 bytes, no options)
 * 10.(i>>16).(i>>8).i:sport -> 10.99.0.1:80, sport as key_of's.
 */
#define PKT_LEN 40u
static void packet_of(uint32_t i, uint8_t* p)
{
	memset(p, 0, PKT_LEN);
	p[0] = 0x45, p[3] = PKT_LEN, p[8] = 64, p[9] = 6;
	p[12] = 10, p[13] = (uint8_t)(i >> 16), p[14] = (uint8_t)(i >> 8), p[15] = (uint8_t)i;
	p[16] = 10, p[17] = 99, p[18] = 0, p[19] = 1;
	uint32_t sport = 1024 + ((i >> 24) & 0x7f) * 256 + (i & 0xff);
	p[20] = (uint8_t)(sport >> 8), p[21] = (uint8_t)sport, p[23] = 80;
	p[32] = 0x50; /* data offset 5 */
	p[33] = 0x10; /* ACK */
}

/**
 * bench_ct_decide_loop - lb's per-packet decision (nfqlb_lb_decide, as
 * nfqlb_queue_serve calls it) over `iters` packets of flows 0..n-1 in the
 * scattered order, `batch` packets at a time (1..64). With dist > 0, as
 * nfqlb_queue_serve: packet i + dist goes through nfqlb_lb_prefetch and
 * i + dist / 2 through nfqlb_lb_prefetch_ways before packet i is decided
 * (dist >= batch: the whole batch first). Returns the sum of the fwmarks
 * (< 0 counted as 0), so runs with and without prefetching can be compared.
 */
uint64_t bench_ct_decide_loop(struct nfqlb_lb* lb, uint32_t n, uint32_t iters, uint32_t batch, uint32_t dist,
			      uint64_t now_ns, uint64_t* counters)
{
	uint8_t pkts[BATCH_MAX * PKT_LEN], keys[BATCH_MAX * NFQLB_KEY_LEN], has[BATCH_MAX];
	uint64_t sum = 0;
	uint32_t half = dist / 2;
	if (n == 0 || batch == 0 || batch > BATCH_MAX)
		return 0;
	for (uint32_t j = 0; j < iters; j += batch) {
		uint32_t m = iters - j < batch ? iters - j : batch;
		for (uint32_t i = 0; i < m; i++)
			packet_of(scattered(j + i, n), pkts + i * PKT_LEN);
		for (uint32_t i = 0; i < m && i < dist; i++)
			has[i] = (uint8_t)nfqlb_lb_prefetch(lb, 0x0800, pkts + i * PKT_LEN, PKT_LEN, keys + i * NFQLB_KEY_LEN);
		for (uint32_t i = 0; i < m && i < half; i++)
			if (has[i])
				nfqlb_lb_prefetch_ways(lb, keys + i * NFQLB_KEY_LEN);
		for (uint32_t i = 0; i < m; i++) {
			uint32_t a = i + dist, b = i + half;
			if (dist && a < m)
				has[a] = (uint8_t)nfqlb_lb_prefetch(lb, 0x0800, pkts + a * PKT_LEN, PKT_LEN,
								    keys + a * NFQLB_KEY_LEN);
			if (half && b < m && has[b])
				nfqlb_lb_prefetch_ways(lb, keys + b * NFQLB_KEY_LEN);
			int32_t fw = nfqlb_lb_decide(lb, 0x0800, pkts + i * PKT_LEN, PKT_LEN, PKT_LEN, now_ns, counters);
			sum += fw > 0 ? (uint64_t)fw : 0;
		}
	}
	return sum;
}
