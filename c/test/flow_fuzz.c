/*
 * flow_fuzz.c - the flow matcher (c/flowset.c) under AddressSanitizer/UBSan,
 * built by tests/unit/flow_sanitize_test.ts. Each round builds a random flow
 * set (valid specs over a small universe so that flows overlap, plus
 * corrupted, truncated and random specs that must be rejected), then
 * classifies random keys and mutated/truncated packets from the real
 * captures with both nfqlb_flowset_match and nfqlb_flowset_match_linear on
 * two copies of the set: results, udpencap and the counters must agree.
 * Specs, keys and packets live in heap buffers of exactly their length, so
 * any read past them is reported. Then THREADS threads match against one
 * shared set at once (build it with -fsanitize=thread too): each flow's
 * counter must be exactly THREADS times its single-threaded count.
 * Deterministic (xorshift).
 * Usage: flow_fuzz LOOKUPS SEEDFILE...   (seed files: raw IP packets, hw proto in byte 0..1)
 */
#include "../nfqlb.h"
#include "seeds.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}
static uint32_t rnd(uint32_t n) { return n ? (uint32_t)(next() % n) : 0; }

/* A spec under construction (little-endian words). */
struct spec {
	uint8_t b[4 * (NFQLB_FLOW_SPEC_WORDS + 5 * 64 + 2 * 64 + 5 * 8)];
	uint32_t len;
};

static void put(struct spec* s, uint32_t w)
{
	s->b[s->len] = (uint8_t)w;
	s->b[s->len + 1] = (uint8_t)(w >> 8);
	s->b[s->len + 2] = (uint8_t)(w >> 16);
	s->b[s->len + 3] = (uint8_t)(w >> 24);
	s->len += 4;
}

/* The universe keys and flows are drawn from. */
static void rand_addr(uint8_t a[16])
{
	memset(a, 0, 16);
	if (rnd(2)) {
		a[10] = a[11] = 0xff;
		a[12] = 10;
		a[13] = (uint8_t)rnd(3);
		a[14] = (uint8_t)rnd(4);
		a[15] = (uint8_t)rnd(8);
	} else {
		a[0] = 0x10;
		a[13] = (uint8_t)rnd(3);
		a[15] = (uint8_t)rnd(8);
	}
}

static void put_cidr(struct spec* s)
{
	uint8_t a[16];
	rand_addr(a);
	static const uint32_t v4len[] = { 104, 112, 120, 125, 126, 128, 128 };
	static const uint32_t v6len[] = { 64, 112, 120, 125, 127, 128, 128, 128 };
	uint32_t len = a[10] == 0xff ? v4len[rnd(7)] : v6len[rnd(8)];
	if (rnd(50) == 0)
		len = rnd(2) ? 0 : 96; /* everything / all IPv4 */
	for (uint32_t i = 0; i < 16; i++) {
		uint32_t bits = len > i * 8 ? len - i * 8 : 0;
		a[i] &= bits >= 8 ? 0xff : (uint8_t)(0xff00u >> bits);
	}
	memcpy(s->b + s->len, a, 16);
	s->len += 16;
	put(s, len);
}

static void put_ranges(struct spec* s, uint32_t n)
{
	uint32_t lo = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t first = lo + 1 + rnd(12);
		uint32_t last = first + (rnd(8) == 0 ? 65535 : rnd(6));
		if (last > 65535)
			last = 65535;
		if (first > 65535)
			first = last = 65535;
		put(s, first | last << 16);
		lo = last;
		if (lo >= 65535)
			break; /* no room left: fewer ranges (the caller fixes the count) */
	}
}

/* A valid spec. */
static void make_spec(struct spec* s)
{
	static const uint32_t hl[3] = { 20, 8, 12 }, pn[3] = { 6, 17, 132 };
	uint32_t flags = rnd(6) ? NFQLB_FLOW_F_TARGET : 0;
	uint32_t pm = 0, nd = 0, ns = 0, ndp = 0, nsp = 0, nm = 0;
	if (rnd(5)) {
		flags |= NFQLB_FLOW_F_PROTOCOLS;
		pm = 1 + rnd(7);
	}
	if (rnd(5)) {
		flags |= NFQLB_FLOW_F_DSTS;
		nd = rnd(8) ? 1 + rnd(3) : rnd(33);
	}
	if (rnd(4) == 0) {
		flags |= NFQLB_FLOW_F_SRCS;
		ns = rnd(3);
	}
	if (rnd(4)) {
		flags |= NFQLB_FLOW_F_DPORTS;
		ndp = rnd(5);
	}
	if (rnd(5) == 0) {
		flags |= NFQLB_FLOW_F_SPORTS;
		nsp = rnd(4);
	}
	if (rnd(4) == 0) {
		flags |= NFQLB_FLOW_F_MATCH;
		nm = rnd(4);
	}
	s->len = 0;
	put(s, NFQLB_FLOW_SPEC_MAGIC);
	put(s, flags);
	put(s, pm);
	put(s, rnd(4) == 0 ? 1 + rnd(3) : 0);
	put(s, nd);
	put(s, ns);
	uint32_t at_dp = s->len;
	put(s, ndp);
	put(s, nsp);
	put(s, nm);
	for (uint32_t i = 0; i < nd + ns; i++)
		put_cidr(s);
	uint32_t before = s->len;
	put_ranges(s, ndp);
	ndp = (s->len - before) / 4;
	before = s->len;
	put_ranges(s, nsp);
	nsp = (s->len - before) / 4;
	for (uint32_t i = 0; i < nm; i++) {
		uint32_t p = rnd(3), nb = rnd(4) ? 1 : 2;
		put(s, pn[p]);
		put(s, rnd(hl[p] - nb + 1));
		put(s, nb);
		put(s, rnd(3) ? 0 : 0xff);
		put(s, rnd(2));
	}
	/* the range loops may have stopped early: fix the counts */
	uint32_t save = s->len;
	s->len = at_dp;
	put(s, ndp);
	put(s, nsp);
	s->len = save;
}

/* Adds spec s as flow i of both sets from an exact-size heap copy. */
static int add_exact(struct nfqlb_flowset* a, struct nfqlb_flowset* b, uint32_t i, const uint8_t* p, uint32_t len)
{
	uint8_t* h = malloc(len ? len : 1);
	memcpy(h, p, len);
	int ra = nfqlb_flowset_add(a, i, h, len);
	int rb = b ? nfqlb_flowset_add(b, i, h, len) : ra;
	free(h);
	if (ra != rb) {
		fprintf(stderr, "add disagrees between two sets\n");
		abort();
	}
	return ra;
}

#define THREADS 4
#define TKEYS 64

struct worker {
	const struct nfqlb_flowset* fs;
	const uint8_t* keys; /* TKEYS keys */
	long iters;
	long sum;
};

static void* worker_run(void* arg)
{
	struct worker* w = arg;
	for (long i = 0; i < w->iters; i++) {
		uint32_t ue;
		w->sum += nfqlb_flowset_match(w->fs, w->keys + (i % TKEYS) * NFQLB_KEY_LEN, NULL, 0, 0, &ue);
	}
	return NULL;
}

/* THREADS threads on one set against one thread on a twin set: same results, counters x THREADS. */
static void threads_phase(long iters)
{
	struct spec s;
	uint32_t n = 300;
	struct nfqlb_flowset* a = nfqlb_flowset_new(n);
	struct nfqlb_flowset* b = nfqlb_flowset_new(n);
	for (uint32_t i = 0; i < n; i++) {
		make_spec(&s);
		if (nfqlb_flowset_add(a, i, s.b, s.len) || nfqlb_flowset_add(b, i, s.b, s.len))
			abort();
	}
	if (nfqlb_flowset_build(a) || nfqlb_flowset_build(b))
		abort();
	uint8_t* keys = calloc(TKEYS, NFQLB_KEY_LEN);
	for (uint32_t k = 0; k < TKEYS; k++) {
		uint8_t* kb = keys + k * NFQLB_KEY_LEN;
		rand_addr(kb);
		rand_addr(kb + 16);
		kb[34] = rnd(2) ? 6 : 17;
		kb[37] = (uint8_t)rnd(45);
		kb[39] = (uint8_t)rnd(45);
	}
	struct worker one = { b, keys, iters, 0 };
	worker_run(&one);
	struct worker w[THREADS];
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ a, keys, iters, 0 };
		if (pthread_create(&t[i], NULL, worker_run, &w[i]))
			abort();
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		if (w[i].sum != one.sum) {
			fprintf(stderr, "thread %d: results differ\n", i);
			abort();
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		if (nfqlb_flowset_matches(a, i) != THREADS * nfqlb_flowset_matches(b, i)) {
			fprintf(stderr, "flow %u: %u matches, want %u\n", i, nfqlb_flowset_matches(a, i),
				THREADS * nfqlb_flowset_matches(b, i));
			abort();
		}
	}
	free(keys);
	nfqlb_flowset_free(a);
	nfqlb_flowset_free(b);
}

int main(int argc, char** argv)
{
	if (argc < 3)
		return 2;
	long lookups = atol(argv[1]);
	struct seeds sd;
	if (seeds_load(&sd, argc, argv, 2) != 0)
		return 2;
	int nseeds = sd.n;
	uint8_t** seeds = sd.data;
	size_t* lens = sd.len;
	uint32_t* hw = sd.hw;
	long done = 0, matched = 0, rejected = 0, rounds = 0;
	struct spec s;
	while (done < lookups) {
		rounds++;
		uint32_t n = rnd(10) == 0 ? rnd(2000) : rnd(300);
		struct nfqlb_flowset* a = nfqlb_flowset_new(n);
		struct nfqlb_flowset* b = nfqlb_flowset_new(n);
		if (!a || !b)
			abort();
		for (uint32_t i = 0; i < n; i++) {
			make_spec(&s);
			if (rnd(8) == 0) {
				/* corrupt: flip a byte, truncate, extend, or garbage; usually rejected */
				uint8_t bad[sizeof(s.b) + 8];
				uint32_t len = s.len;
				memcpy(bad, s.b, len);
				switch (rnd(4)) {
				case 0:
					bad[rnd(len)] ^= (uint8_t)(1 + rnd(255));
					break;
				case 1:
					len = rnd(len);
					break;
				case 2:
					bad[len] = (uint8_t)rnd(256);
					bad[len + 1] = bad[len + 2] = bad[len + 3] = 0;
					len += 4;
					break;
				default:
					for (uint32_t k = 0; k < len; k++)
						bad[k] = (uint8_t)rnd(256);
				}
				if (add_exact(a, b, i, bad, len) == 0)
					continue; /* a corruption that is still a valid spec */
				rejected++;
				if (nfqlb_flowset_build(a) != -1)
					abort(); /* slot i is undefined */
			}
			if (add_exact(a, b, i, s.b, s.len) != 0) {
				fprintf(stderr, "a valid spec was rejected (flow %u)\n", i);
				abort();
			}
		}
		if (n > 0 && add_exact(a, NULL, rnd(n), s.b, s.len) != -1)
			abort(); /* slot taken */
		if (nfqlb_flowset_build(a) != 0 || nfqlb_flowset_build(b) != 0)
			abort();
		(void)nfqlb_flowset_index_dims(a);
		(void)nfqlb_flowset_index_bytes(a);
		long per = 200 + rnd(2000);
		for (long k = 0; k < per && done < lookups; k++, done++) {
			uint8_t kb[NFQLB_KEY_LEN], fk[NFQLB_KEY_LEN];
			uint8_t* pkt = NULL;
			uint32_t len = 0;
			memset(kb, 0, sizeof(kb));
			int from_packet = rnd(2);
			if (from_packet) {
				int sd = (int)rnd((uint32_t)nseeds);
				len = (uint32_t)lens[sd];
				if (rnd(2))
					len = rnd(len + 1);
				pkt = malloc(len ? len : 1);
				memcpy(pkt, seeds[sd], len);
				uint32_t flips = rnd(4);
				for (uint32_t f = 0; f < flips && len; f++)
					pkt[rnd(len < 80 ? len : 80)] ^= (uint8_t)(1 + rnd(255));
				if (nfqlb_packet_key(hw[sd], pkt, len, rnd(2) ? 9899 : 0, kb, fk) < 0)
					from_packet = 0;
			}
			if (!from_packet) {
				rand_addr(kb);
				rand_addr(kb + 16);
				static const uint32_t protos[] = { 6, 6, 17, 17, 132, 1, 58, 47 };
				uint32_t p = protos[rnd(8)];
				kb[34] = (uint8_t)p;
				kb[35] = (uint8_t)(p >> 8);
				kb[37] = (uint8_t)rnd(45);
				kb[39] = (uint8_t)rnd(45);
				kb[32] = (uint8_t)rnd(256);
			}
			uint8_t* key = malloc(NFQLB_KEY_LEN);
			memcpy(key, kb, NFQLB_KEY_LEN);
			uint32_t promisc = rnd(3) == 0;
			uint32_t ua = 7, ub = 7;
			int32_t ra = nfqlb_flowset_match(a, key, pkt, len, promisc, &ua);
			int32_t rb = nfqlb_flowset_match_linear(b, key, pkt, len, promisc, &ub);
			if (ra != rb || ua != ub) {
				fprintf(stderr, "mismatch: round %ld, %u flows: indexed %d/%u, linear %d/%u\n", rounds, n, ra,
					ua, rb, ub);
				abort();
			}
			if (ra >= 0)
				matched++;
			if (rnd(50) == 0) {
				/* NULL udpencap, NULL packet */
				(void)nfqlb_flowset_match(a, key, NULL, 0, promisc, NULL);
				(void)nfqlb_flowset_match_linear(b, key, NULL, 0, promisc, NULL);
			}
			free(key);
			free(pkt);
		}
		for (uint32_t i = 0; i < n; i++) {
			if (nfqlb_flowset_matches(a, i) != nfqlb_flowset_matches(b, i)) {
				fprintf(stderr, "counters differ: round %ld flow %u\n", rounds, i);
				abort();
			}
		}
		if (nfqlb_flowset_matches(a, n) != 0 || nfqlb_flowset_match(NULL, s.b, NULL, 0, 0, NULL) != -1)
			abort();
		nfqlb_flowset_set_matches(a, n, 1);
		nfqlb_flowset_free(a);
		nfqlb_flowset_free(b);
	}
	nfqlb_flowset_free(NULL);
	seeds_free(&sd);
	threads_phase(lookups / 10 + 1);
	printf("threads=%d ", THREADS);
	printf("lookups=%ld matched=%ld rounds=%ld rejected=%ld\n", done, matched, rounds, rejected);
	return 0;
}
