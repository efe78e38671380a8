/* Maglev permutation parameters and lookup population, bit-exact with upstream 1.2.0. */
#include "nfqlb.h"
#include <stdlib.h>

int32_t nfqlb_maglev_params(uint32_t M, uint32_t N, uint32_t* out)
{
	if (M < 3 || out == NULL)
		return -1;
	struct nfqlb_rand r;
	nfqlb_rand_seed(&r, 1);
	for (uint32_t i = 0; i < N; i++) {
		out[2 * i] = (uint32_t)nfqlb_rand_next(&r) % M;
		out[2 * i + 1] = (uint32_t)nfqlb_rand_next(&r) % (M - 1) + 1;
	}
	return 0;
}

/*
 * Upstream keeps permutation[N][M] as one flat array and walks row i with
 * next[i], which may run past M into row i+1 when a row is not a full
 * permutation (32-bit wrap of offset + j*skip for M > 65536). We generate the
 * same values on the fly: `raw` is the wrapped 32-bit value, `v` = raw % M is
 * kept incrementally; a carry out of 32 bits subtracts 2^32 mod M.
 */
struct walk {
	uint32_t row;  /* row whose sequence we are reading (i, or later rows) */
	uint32_t col;  /* j within that row */
	uint32_t raw;  /* (offset + col*skip) mod 2^32 */
	uint32_t v;    /* raw % M: the slot */
	uint32_t safe; /* past the flat array: exact permutation of the own row */
};

static void walk_start(struct walk* w, uint32_t row, const uint32_t* params)
{
	w->row = row;
	w->col = 0;
	w->raw = params[2 * row];
	w->v = params[2 * row]; /* offset < M */
	w->safe = 0;
}

static void walk_next(struct walk* w, uint32_t self, uint32_t M, uint32_t N, uint32_t K,
		      const uint32_t* params)
{
	if (w->safe) {
		uint32_t skip = params[2 * self + 1];
		w->v = w->v >= M - skip ? w->v - (M - skip) : w->v + skip;
		return;
	}
	if (++w->col == M) {
		if (w->row + 1 == N) {
			/* Upstream would read past its array here; go on with the exact permutation. */
			w->safe = 1;
			w->v = params[2 * self];
			return;
		}
		walk_start(w, w->row + 1, params);
		w->col = 0;
		return;
	}
	uint32_t skip = params[2 * w->row + 1];
	uint32_t raw = w->raw + skip;
	uint32_t v = w->v >= M - skip ? w->v - (M - skip) : w->v + skip;
	if (raw < w->raw) /* wrapped past 2^32 */
		v = v >= K ? v - K : v + (M - K);
	w->raw = raw;
	w->v = v;
}

int32_t nfqlb_maglev_populate(uint32_t M, uint32_t N, const uint32_t* params,
			      const int32_t* active, int32_t* lookup)
{
	if (M < 3 || N < 1 || params == NULL || active == NULL || lookup == NULL)
		return -1;
	for (uint32_t i = 0; i < M; i++)
		lookup[i] = -1;
	uint32_t nactive = 0;
	for (uint32_t i = 0; i < N; i++)
		if (active[i] >= 0)
			nactive++;
	if (nactive == 0)
		return 0;
	uint32_t* rows = malloc(sizeof(uint32_t) * nactive);
	struct walk* walks = malloc(sizeof(struct walk) * nactive);
	if (rows == NULL || walks == NULL) {
		free(rows);
		free(walks);
		return -2;
	}
	uint32_t a = 0;
	for (uint32_t i = 0; i < N; i++) {
		if (active[i] >= 0) {
			rows[a] = i;
			walk_start(&walks[a], i, params);
			a++;
		}
	}
	uint32_t K = (uint32_t)((1ull << 32) % M);
	uint32_t n = 0;
	for (;;) {
		for (a = 0; a < nactive; a++) {
			struct walk* w = &walks[a];
			uint32_t self = rows[a];
			while (lookup[w->v] >= 0)
				walk_next(w, self, M, N, K, params);
			lookup[w->v] = (int32_t)self;
			walk_next(w, self, M, N, K, params);
			if (++n == M) {
				free(rows);
				free(walks);
				return 0;
			}
		}
	}
}
