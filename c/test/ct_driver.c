/*
 * ct_driver.c - exercises c/ct.c and c/ct_admin.c under the sanitizers
 * (tests/unit/conntrack_test.ts builds it with ASan+UBSan and with TSan).
 *
 *   ct_driver check ITER   one thread, random operations on a small table
 *                          with contexts and moving time; checks invariants
 *   ct_driver stress THREADS ITER
 *                          THREADS workers insert/lookup/delete/set (single
 *                          keys and batches) at once
 *                          on one table while a lister walks it; every hit
 *                          must return the fwmark its key implies
 *
 * Prints "ok ..." with counters, exits 1 on a failed check.
 */
#define _GNU_SOURCE
#include "../nfqlb.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                                                                      \
	do {                                                                                                           \
		fprintf(stderr, __VA_ARGS__);                                                                          \
		fputc('\n', stderr);                                                                                   \
		exit(1);                                                                                               \
	} while (0)

static uint32_t xs(uint32_t* s)
{
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

/* Key i: TCP, UDP or SCTP between 10.0.x.y:port and 10.99.0.1:80. */
static void make_key(uint32_t i, uint8_t* k)
{
	memset(k, 0, NFQLB_KEY_LEN);
	k[10] = k[11] = 0xff;
	k[12] = 10, k[13] = 0, k[14] = (uint8_t)(i >> 8), k[15] = (uint8_t)i;
	k[26] = k[27] = 0xff;
	k[28] = 10, k[29] = 99, k[30] = 0, k[31] = 1;
	static const uint8_t protos[3] = { 6, 17, 132 };
	k[34] = protos[i % 3];
	k[36] = (uint8_t)(i >> 24), k[37] = (uint8_t)(i >> 16);
	k[39] = 80;
}
static int32_t fw_of(uint32_t i) { return 100 + (int32_t)(i % 7); }
static int32_t row_of(uint32_t i) { return (int32_t)(i % 7); }

static uint8_t* table(uint32_t cap, uint32_t ctx, uint32_t flood)
{
	uint64_t size = nfqlb_ct_admin_bytes(cap, ctx);
	uint8_t* base = aligned_alloc(64, (size_t)size);
	uint32_t ttl[3] = { 3000, 1000, 500 };
	if (!base || nfqlb_ct_admin_format(base, size, cap, ctx, ttl, flood) != 0 || nfqlb_ct_admin_check(base, size) != 0)
		FAIL("format");
	return base;
}

/* List everything; checks each record against its key; returns the count. */
static uint32_t walk(uint8_t* base, uint64_t now, uint32_t* with_ctx)
{
	struct nfqlb_ct_record rec[7];
	uint32_t cursor = 0, n, total = 0;
	*with_ctx = 0;
	while ((n = nfqlb_ct_admin_list(base, &cursor, now, rec, 7)) > 0) {
		for (uint32_t j = 0; j < n; j++) {
			uint32_t i = (uint32_t)rec[j].key[14] << 8 | rec[j].key[15] | (uint32_t)rec[j].key[36] << 24 |
				     (uint32_t)rec[j].key[37] << 16;
			if (!(rec[j].flags & NFQLB_CT_F_PINNED) && rec[j].fwmark != fw_of(i) && rec[j].fwmark != 999)
				FAIL("listed fwmark %d for key %u", rec[j].fwmark, i);
			if (rec[j].flags & NFQLB_CT_F_CTX) {
				(*with_ctx)++;
				if (rec[j].ctx_len != 4 || memcmp(rec[j].ctx, &i, 4) != 0)
					FAIL("context of key %u is wrong", i);
			}
		}
		total += n;
	}
	return total;
}

static int check(uint32_t iters)
{
	uint8_t* base = table(64, 16, 0);
	uint32_t seed = 12345, hits = 0;
	uint64_t now = 5000000000ull;
	uint8_t k[NFQLB_KEY_LEN];
	for (uint32_t it = 0; it < iters; it++) {
		uint32_t i = xs(&seed) % 200, op = xs(&seed) % 100;
		make_key(i, k);
		now += (xs(&seed) % 50) * 1000000ull;
		if (op < 40) {
			int32_t r = nfqlb_ct_insert(base, k, fw_of(i), row_of(i), now);
			if (r == 1 || r < -1)
				FAIL("insert %d", r);
			int32_t row = -2, fw = r == 0 ? nfqlb_ct_lookup(base, k, now, 100, &row) : -1;
			if (r == 0 && !(fw == fw_of(i) && row == row_of(i)) && !(fw == 999 && row == 3))
				FAIL("lookup after insert: %d/%d", fw, row);
		} else if (op < 55) {
			/* a batch of up to 80 keys (past the pipeline's 64 slots), repeats included */
			uint8_t keys[80 * NFQLB_KEY_LEN];
			uint32_t idx[80], bytes[80], n = 1 + xs(&seed) % 80;
			int32_t fw[80], row[80];
			for (uint32_t j = 0; j < n; j++) {
				idx[j] = j == 0 ? i : xs(&seed) % 200;
				make_key(idx[j], keys + j * NFQLB_KEY_LEN);
				bytes[j] = 60;
			}
			if (xs(&seed) % 4 == 0) {
				int32_t fws[80], rows[80], rc[80];
				for (uint32_t j = 0; j < n; j++)
					fws[j] = fw_of(idx[j]), rows[j] = row_of(idx[j]);
				uint32_t ok = nfqlb_ct_insert_batch(base, keys, n, fws, rows, now, rc);
				for (uint32_t j = 0; j < n; j++)
					if (rc[j] == 1 || rc[j] < -1)
						FAIL("insert batch %d", rc[j]);
				if (ok > n)
					FAIL("insert batch count");
			}
			uint32_t h = nfqlb_ct_lookup_batch(base, keys, n, now, bytes, fw, row), seen = 0;
			for (uint32_t j = 0; j < n; j++) {
				if (fw[j] < 0)
					continue;
				seen++;
				if ((fw[j] != fw_of(idx[j]) && fw[j] != 999) || (fw[j] == fw_of(idx[j]) && row[j] != row_of(idx[j])))
					FAIL("batch lookup %d for key %u", fw[j], idx[j]);
			}
			if (seen != h)
				FAIL("batch hits %u, counted %u", h, seen);
			hits += h;
		} else if (op < 75) {
			int32_t row;
			int32_t fw = nfqlb_ct_lookup(base, k, now, 60, &row);
			if (fw >= 0) {
				hits++;
				if ((fw != fw_of(i) && fw != 999) || (fw == fw_of(i) && row != row_of(i)))
					FAIL("lookup %d for key %u", fw, i);
			}
		} else if (op < 82) {
			nfqlb_ct_admin_delete(base, k);
		} else if (op < 90) {
			int32_t r = nfqlb_ct_admin_set(base, k, NFQLB_CT_SET_CTX, 0, 0, 0, (const uint8_t*)&i, 4, now);
			if (r != 0 && r != -1 && r != -2)
				FAIL("set ctx");
		} else if (op < 93) {
			nfqlb_ct_admin_set(base, k, NFQLB_CT_CLEAR_CTX | NFQLB_CT_SET_LIFETIME, 0, 0, 40000 + i, NULL, 0, now);
		} else if (op < 95) {
			nfqlb_ct_admin_set(base, k, NFQLB_CT_SET_PIN | NFQLB_CT_SET_FWMARK | NFQLB_CT_SET_CREATE, 999, 3, 0, NULL,
				     0, now);
		} else if (op < 97) {
			nfqlb_ct_admin_set(base, k, NFQLB_CT_CLEAR_PIN | NFQLB_CT_SET_FWMARK, fw_of(i), row_of(i), 0, NULL, 0,
				     now);
		} else {
			uint32_t wc, counts[7], kept[7], cur = 0;
			/* the kept per-row counts equal a scan once every expired entry is reclaimed */
			nfqlb_ct_sweep(base, &cur, UINT32_MAX, now);
			uint32_t listed = walk(base, now, &wc);
			uint64_t s[NFQLB_CT_STATS_ALL];
			nfqlb_ct_admin_stats(base, s, NFQLB_CT_STATS_ALL);
			if (s[NFQLB_CT_STAT_ENTRIES] != listed)
				FAIL("entries %llu, listed %u", (unsigned long long)s[NFQLB_CT_STAT_ENTRIES], listed);
			if (s[NFQLB_CT_STAT_CTX_USED] != wc)
				FAIL("ctx used %llu, listed with ctx %u", (unsigned long long)s[NFQLB_CT_STAT_CTX_USED], wc);
			if (nfqlb_ct_admin_count_by_row(base, counts, 7, now) != listed)
				FAIL("count_by_row");
			nfqlb_ct_admin_row_counts(base, kept, 7);
			if (memcmp(kept, counts, sizeof(counts)) != 0)
				FAIL("row counts %u %u %u %u %u %u %u, scan %u %u %u %u %u %u %u", kept[0], kept[1], kept[2],
				     kept[3], kept[4], kept[5], kept[6], counts[0], counts[1], counts[2], counts[3],
				     counts[4], counts[5], counts[6]);
		}
	}
	uint64_t s[NFQLB_CT_STATS_ALL];
	nfqlb_ct_admin_stats(base, s, NFQLB_CT_STATS_ALL);
	printf("ok check iterations=%u hits=%u inserts=%llu recycles=%llu expirations=%llu\n", iters, hits,
	       (unsigned long long)s[NFQLB_CT_STAT_INSERTS], (unsigned long long)s[NFQLB_CT_STAT_RECYCLES],
	       (unsigned long long)s[NFQLB_CT_STAT_EXPIRATIONS]);
	free(base);
	return 0;
}

struct worker {
	uint8_t* base;
	uint32_t id, iters, hits;
	uint64_t now;
};

static void* work(void* arg)
{
	struct worker* w = arg;
	uint32_t seed = 777 + w->id * 9973;
	uint8_t k[NFQLB_KEY_LEN];
	for (uint32_t it = 0; it < w->iters; it++) {
		uint32_t i = xs(&seed) % 3000, op = xs(&seed) % 100;
		uint64_t now = w->now + (uint64_t)it * 100000ull; /* 0.1 ms per op */
		make_key(i, k);
		if (op < 30) {
			int32_t r = nfqlb_ct_insert(w->base, k, fw_of(i), row_of(i), now);
			if (r < 0)
				FAIL("insert failed");
		} else if (op < 45) {
			/* a batch around key i; prefetches in between must not disturb anything */
			uint8_t keys[24 * NFQLB_KEY_LEN];
			uint32_t idx[24];
			int32_t fw[24], row[24], fws[24], rows[24];
			for (uint32_t j = 0; j < 24; j++) {
				idx[j] = (i + j * 7) % 3000;
				make_key(idx[j], keys + j * NFQLB_KEY_LEN);
				fws[j] = fw_of(idx[j]), rows[j] = row_of(idx[j]);
				nfqlb_ct_prefetch(w->base, keys + j * NFQLB_KEY_LEN);
				nfqlb_ct_prefetch_ways(w->base, keys + j * NFQLB_KEY_LEN);
			}
			if (op < 35)
				nfqlb_ct_insert_batch(w->base, keys, 24, fws, rows, now, NULL);
			w->hits += nfqlb_ct_lookup_batch(w->base, keys, 24, now, NULL, fw, row);
			for (uint32_t j = 0; j < 24; j++)
				if (fw[j] >= 0 && (fw[j] != fw_of(idx[j]) || row[j] != row_of(idx[j])))
					FAIL("thread %u: batch key %u gave %d/%d", w->id, idx[j], fw[j], row[j]);
		} else if (op < 90) {
			int32_t row;
			int32_t fw = nfqlb_ct_lookup(w->base, k, now, 64, &row);
			if (fw >= 0) {
				w->hits++;
				if (fw != fw_of(i) || row != row_of(i))
					FAIL("thread %u: key %u gave %d/%d", w->id, i, fw, row);
			}
		} else if (op < 95) {
			nfqlb_ct_admin_delete(w->base, k);
		} else if (op < 98) {
			nfqlb_ct_admin_set(w->base, k, NFQLB_CT_SET_CTX | NFQLB_CT_SET_OFFLOAD, 0, 0, 0, (const uint8_t*)&i, 4,
				     now);
		} else {
			nfqlb_ct_admin_set(w->base, k, NFQLB_CT_CLEAR_CTX, 0, 0, 0, NULL, 0, now);
		}
	}
	return NULL;
}

struct lister {
	uint8_t* base;
	int stop;
	uint32_t walks;
};

static void* list_loop(void* arg)
{
	struct lister* l = arg;
	uint32_t counts[7], wc, cur = 0;
	while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
		walk(l->base, 1000000000ull, &wc);
		nfqlb_ct_sweep(l->base, &cur, 64, 1000000000ull);
		nfqlb_ct_admin_count_by_row(l->base, counts, 7, 1000000000ull);
		l->walks++;
	}
	return NULL;
}

static int stress(uint32_t threads, uint32_t iters)
{
	uint8_t* base = table(1024, 256, 0);
	pthread_t t[64], lt;
	struct worker w[64];
	struct lister l = { base, 0, 0 };
	if (threads > 64)
		threads = 64;
	pthread_create(&lt, NULL, list_loop, &l);
	for (uint32_t i = 0; i < threads; i++) {
		w[i] = (struct worker){ base, i, iters, 0, 1000000000ull };
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	uint32_t hits = 0;
	for (uint32_t i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		hits += w[i].hits;
	}
	__atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
	pthread_join(lt, NULL);
	uint32_t wc;
	uint64_t now = 1000000000ull; /* nothing expired yet at the workers' start time */
	uint32_t listed = walk(base, now, &wc);
	uint64_t s[NFQLB_CT_STATS_ALL];
	nfqlb_ct_admin_stats(base, s, NFQLB_CT_STATS_ALL);
	if (s[NFQLB_CT_STAT_ENTRIES] != listed)
		FAIL("entries %llu, listed %u", (unsigned long long)s[NFQLB_CT_STAT_ENTRIES], listed);
	if (s[NFQLB_CT_STAT_CTX_USED] != wc)
		FAIL("ctx used %llu, with ctx %u", (unsigned long long)s[NFQLB_CT_STAT_CTX_USED], wc);
	printf("ok stress threads=%u iterations=%u hits=%u listed=%u walks=%u recycles=%llu\n", threads, iters, hits,
	       listed, l.walks, (unsigned long long)s[NFQLB_CT_STAT_RECYCLES]);
	free(base);
	return 0;
}

int main(int argc, char** argv)
{
	if (argc >= 3 && strcmp(argv[1], "check") == 0)
		return check((uint32_t)strtoul(argv[2], NULL, 10));
	if (argc >= 4 && strcmp(argv[1], "stress") == 0)
		return stress((uint32_t)strtoul(argv[2], NULL, 10), (uint32_t)strtoul(argv[3], NULL, 10));
	fprintf(stderr, "usage: ct_driver check ITER | stress THREADS ITER\n");
	return 2;
}
