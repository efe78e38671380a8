/*
 * target_stats.c - packets and bytes accepted per fwmark, by one queue: an
 * open-addressing table of struct nfqlb_target_stat in the lb's counters shm
 * (core/counters_shm.ts reads it). One writer (the queue's worker,
 * queue.c); readers in other processes see each slot's fwmark before its
 * counts (release).
 */
#include "nfqlb.h"

void nfqlb_target_stats_add(struct nfqlb_target_stat* tstats, uint32_t ntstats, int32_t mark, uint32_t bytes,
			    uint64_t* counters)
{
	uint32_t mask = ntstats - 1, h = ((uint32_t)mark * 2654435761u) & mask;
	for (uint32_t i = 0; i < ntstats; i++) {
		struct nfqlb_target_stat* t = &tstats[(h + i) & mask];
		if (t->used && t->fwmark == mark) {
			t->packets++;
			t->bytes += bytes;
			return;
		}
		if (!t->used) {
			t->fwmark = mark;
			t->packets = 1;
			t->bytes = bytes;
			__atomic_store_n(&t->used, 1u, __ATOMIC_RELEASE);
			return;
		}
	}
	counters[NFQLB_C_TARGET_OVERFLOW]++;
}
