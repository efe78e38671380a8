/*
 * packet_fuzz.c - feeds mutated and truncated packets to nfqlb_packet_key and
 * nfqlb_lb_classify under AddressSanitizer/UBSan (built by
 * tests/unit/c_sanitize_test.ts). Each packet is copied into a heap buffer of
 * exactly its length, so any read past it is reported. Deterministic (xorshift).
 * Usage: packet_fuzz ITERATIONS SEEDFILE...   (seed files: raw IP packets, hw proto in byte 0..1)
 */
#include "../nfqlb.h"
#include "seeds.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char** argv)
{
	if (argc < 3)
		return 2;
	long iters = atol(argv[1]);
	struct seeds sd;
	if (seeds_load(&sd, argc, argv, 2) != 0)
		return 2;
	int nseeds = sd.n;
	uint8_t** seeds = sd.data;
	size_t* lens = sd.len;
	uint32_t* hw = sd.hw;
	/* a real target table for the classifier */
	uint64_t size;
	uint8_t* tshm = fuzz_target_table(&size);
	struct nfqlb_fragtable* ft = nfqlb_ft_create(7, 3, 1, 1500, 5, 8, NULL);
	struct nfqlb_lb* lb = nfqlb_lb_create(tshm, ft, 1, 9899, -1);
	nfqlb_lb_set_frag(lb, tshm, -1, 8); /* tier on the same table: exercises both paths */
	uint64_t counters[NFQLB_C_COUNT] = { 0 };
	long parsed = 0;
	for (long it = 0; it < iters; it++) {
		int s = (int)(next() % (uint64_t)nseeds);
		size_t len = lens[s];
		if (next() % 3 == 0)
			len = next() % (len + 1);
		uint8_t* p = malloc(len ? len : 1);
		memcpy(p, seeds[s], len);
		int flips = (int)(next() % 6);
		for (int f = 0; f < flips && len > 0; f++)
			p[next() % len] = (uint8_t)next();
		uint8_t key[40], fkey[40];
		uint32_t h = (next() % 5 == 0) ? (uint32_t)(next() & 0xffff) : hw[s];
		if (nfqlb_packet_key(h, p, (uint32_t)len, (uint32_t)(next() % 2 ? 9899 : 0), key, fkey) >= 0)
			parsed++;
		nfqlb_lb_classify(lb, h, p, (uint32_t)len, (uint64_t)it * 1000, counters);
		free(p);
	}
	printf("iterations=%ld parsed=%ld malformed=%llu\n", iters, parsed,
	       (unsigned long long)counters[NFQLB_C_MALFORMED]);
	nfqlb_lb_destroy(lb);
	nfqlb_ft_destroy(ft);
	seeds_free(&sd);
	munmap(tshm, size);
	return 0;
}
