/*
 * trace_fuzz.c - the traced classifier (c/lb.c + c/trace.c) under
 * AddressSanitizer/UBSan, built by tests/unit/trace_sanitize_test.ts.
 * Mutated and truncated packets (seeds from the real captures and crafted
 * ICMP errors/echoes) go through pairs of classifiers fed the same sequence:
 * one never traced, one traced with every bit (lb, and flowlb with SCTP-over-
 * UDP flows and trace flows). Each pair has its own fragment table, so the
 * verdicts must be identical: tracing never changes a decision. The rings
 * are drained every few packets and their records checked for consistency.
 * Each packet lives in a heap buffer of exactly its length, so any read past
 * it is reported. Deterministic (xorshift).
 * Usage: trace_fuzz ITERATIONS SEEDFILE...   (seed files: raw IP packets, hw proto in byte 0..1)
 */
#include "../nfqlb.h"
#include "seeds.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static uint64_t rng = 0x7c1d2b9e3f4a5d61ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* A flow spec of header words only (plus one dports range). */
static struct nfqlb_flowset* flowset(uint32_t n, const uint32_t (*w)[10])
{
	struct nfqlb_flowset* fs = nfqlb_flowset_new(n);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t spec[40];
		uint32_t words = w[i][6] ? 10 : 9;
		for (uint32_t k = 0; k < words; k++)
			for (uint32_t b = 0; b < 4; b++)
				spec[4 * k + b] = (uint8_t)(w[i][k] >> (8 * b));
		if (nfqlb_flowset_add(fs, i, spec, 4 * words) != 0) {
			fprintf(stderr, "flow %u: bad spec\n", i);
			exit(2);
		}
	}
	if (nfqlb_flowset_build(fs) != 0)
		exit(2);
	return fs;
}

#define M NFQLB_FLOW_SPEC_MAGIC
#define T NFQLB_FLOW_F_TARGET
#define P NFQLB_FLOW_F_PROTOCOLS
#define D NFQLB_FLOW_F_DPORTS

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
	uint64_t size;
	uint8_t* tshm = fuzz_target_table(&size);

	/* flowlb: #sctp companion (udp dport 9899, no target), sctp over 9899, catch-all */
	static const uint32_t main_flows[3][10] = {
		{ M, P | D, 2, 9899, 0, 0, 1, 0, 0, 9899u | 9899u << 16 },
		{ M, P | T, 4, 9899, 0, 0, 0, 0, 0, 0 },
		{ M, T, 0, 0, 0, 0, 0, 0, 0, 0 },
	};
	/* trace flows: tcp only, then everything */
	static const uint32_t trace_flows[2][10] = {
		{ M, P | T, 1, 0, 0, 0, 0, 0, 0, 0 },
		{ M, T, 0, 0, 0, 0, 0, 0, 0, 0 },
	};
	struct nfqlb_flows* flows = nfqlb_flows_create(2);
	struct nfqlb_flows* tflows = nfqlb_flows_create(2);
	uint64_t addrs[3] = { 0, (uint64_t)(uintptr_t)tshm, (uint64_t)(uintptr_t)tshm };
	uint64_t ids[2] = { 7, 8 };
	nfqlb_flows_publish(flows, flowset(3, main_flows), addrs, 3);
	nfqlb_flows_publish(tflows, flowset(2, trace_flows), ids, 2);

	struct nfqlb_fragtable* ft[4];
	for (int i = 0; i < 4; i++)
		ft[i] = nfqlb_ft_create(7, 3, 1, 1500, 5, 8, NULL);
	struct nfqlb_lb* lb[4] = {
		nfqlb_lb_create(tshm, ft[0], 1, 9899, -1),
		nfqlb_lb_create(tshm, ft[1], 1, 9899, -1),
		nfqlb_lb_create_flows(flows, 0, ft[2], 1, 66, 55, 0),
		nfqlb_lb_create_flows(flows, 1, ft[3], 1, 66, 55, 0),
	};
	nfqlb_lb_set_frag(lb[0], tshm, -1, 8);
	nfqlb_lb_set_frag(lb[1], tshm, -1, 8);
	uint32_t* mask = nfqlb_trace_mask_create();
	nfqlb_trace_mask_set(mask, 0x7f);
	struct nfqlb_trace_ring* ring[2] = { nfqlb_trace_ring_create(16), nfqlb_trace_ring_create(16) };
	nfqlb_lb_set_trace(lb[1], mask, ring[0], NULL);
	nfqlb_lb_set_trace(lb[3], mask, ring[1], tflows);

	uint64_t counters[4][NFQLB_C_COUNT] = { { 0 } };
	long records = 0, tflow = 0, icmp = 0, differ = 0, bad = 0;
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
		uint32_t h = (next() % 7 == 0) ? (uint32_t)(next() & 0xffff) : hw[s];
		uint64_t now = (uint64_t)it * 1000;
		for (int k = 0; k < 4; k += 2) {
			nfqlb_lb_enter(lb[k]);
			nfqlb_lb_enter(lb[k + 1]);
			int32_t a = nfqlb_lb_classify(lb[k], h, p, (uint32_t)len, now, counters[k]);
			int32_t b = nfqlb_lb_classify(lb[k + 1], h, p, (uint32_t)len, now, counters[k + 1]);
			if (a != b)
				differ++;
			nfqlb_lb_leave(lb[k]);
			nfqlb_lb_leave(lb[k + 1]);
		}
		free(p);
		if (it % 8 == 7) {
			for (int r = 0; r < 2; r++) {
				for (uint32_t i = 0; i < ring[r]->count; i++) {
					const struct nfqlb_trace_rec* rec = &ring[r]->rec[i];
					records++;
					if (rec->events & NFQLB_TEV_TFLOW) {
						tflow++;
						if (rec->tflow != 7 && rec->tflow != 8)
							bad++;
					}
					if (rec->events & NFQLB_TEV_ICMP)
						icmp++;
					if ((rec->events & NFQLB_TEV_LB) && rec->verdict < 0)
						bad++;
					if ((rec->events & NFQLB_TEV_FLOWLB) != (r == 1 ? NFQLB_TEV_FLOWLB : 0u))
						bad++;
				}
				ring[r]->count = 0;
				ring[r]->dropped = 0;
			}
			nfqlb_flows_reclaim(tflows);
		}
	}
	printf("iterations=%ld records=%ld tflow=%ld icmp=%ld differ=%ld bad=%ld\n", iters, records, tflow, icmp,
	       differ, bad);
	for (int i = 0; i < 4; i++) {
		nfqlb_lb_destroy(lb[i]);
		nfqlb_ft_destroy(ft[i]);
	}
	nfqlb_flows_destroy(flows);
	nfqlb_flows_destroy(tflows);
	nfqlb_trace_ring_free(ring[0]);
	nfqlb_trace_ring_free(ring[1]);
	nfqlb_trace_mask_free(mask);
	seeds_free(&sd);
	munmap(tshm, size);
	return differ || bad ? 1 : 0;
}
