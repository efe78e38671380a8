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

/*
 * Upstream's loop: every active row in turn claims its next free slot.
 * rows[0..nrows) are the rows that take part, ascending.
 */
static void populate_rr(uint32_t M, uint32_t N, const uint32_t* params, const uint32_t* rows,
			struct walk* walks, uint32_t nrows, int32_t* lookup)
{
	uint32_t K = (uint32_t)((1ull << 32) % M);
	uint32_t n = 0;
	for (;;) {
		for (uint32_t a = 0; a < nrows; a++) {
			struct walk* w = &walks[a];
			uint32_t self = rows[a];
			while (lookup[w->v] >= 0)
				walk_next(w, self, M, N, K, params);
			lookup[w->v] = (int32_t)self;
			walk_next(w, self, M, N, K, params);
			if (++n == M)
				return;
		}
	}
}

/*
 * Weighted turns (Katran MaglevHashV2 style). In round r = 1, 2, ... rows are
 * visited in ascending order; each adds its weight w to a credit c and takes a
 * turn (claims its next free slot) when c >= wmax, then c -= wmax. Credits
 * start at wmax/2 (half a turn) so that after r rounds a row has taken
 * round(r*w/wmax) turns rather than floor(...): errors are +-1/2 turn instead
 * of a bias against light rows. Equivalently, row i's k-th turn (k >= 1) falls
 * in round ceil((k*wmax - c0) / w), and turns are ordered by (round, row): a
 * binary heap on that key runs the loop in O(M log n) however skewed the
 * weights are. The plain loop costs about M * wmax / mean(w) credit steps,
 * which is cheaper when weights are alike (no heap), so it is used up to
 * wmax <= 8 * mean(w); both give the same table.
 */
struct turn {
	uint64_t round;
	uint32_t a;     /* index into rows/walks */
	uint32_t taken; /* turns taken so far (k - 1 for the pending one) */
};

static int turn_less(const struct turn* x, const struct turn* y)
{
	return x->round < y->round || (x->round == y->round && x->a < y->a);
}

static void heap_down(struct turn* h, uint32_t n, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, m = i;
		if (l < n && turn_less(&h[l], &h[m]))
			m = l;
		if (l + 1 < n && turn_less(&h[l + 1], &h[m]))
			m = l + 1;
		if (m == i)
			return;
		struct turn t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

static uint64_t turn_round(uint64_t k, uint32_t w, uint32_t wmax)
{
	uint64_t c0 = wmax / 2;
	return (k * wmax - c0 + w - 1) / w; /* k >= 1: k*wmax > c0 */
}

static void populate_rounds(uint32_t M, uint32_t N, const uint32_t* params, const uint32_t* rows,
			    const uint32_t* w, uint32_t* credit, struct walk* walks, uint32_t nrows, uint32_t wmax,
			    int32_t* lookup)
{
	uint32_t K = (uint32_t)((1ull << 32) % M);
	for (uint32_t a = 0; a < nrows; a++)
		credit[a] = wmax / 2;
	uint32_t n = 0;
	for (;;) {
		for (uint32_t a = 0; a < nrows; a++) {
			credit[a] += w[a];
			if (credit[a] < wmax)
				continue;
			credit[a] -= wmax;
			struct walk* wk = &walks[a];
			uint32_t self = rows[a];
			while (lookup[wk->v] >= 0)
				walk_next(wk, self, M, N, K, params);
			lookup[wk->v] = (int32_t)self;
			walk_next(wk, self, M, N, K, params);
			if (++n == M)
				return;
		}
	}
}

static int32_t populate_weighted(uint32_t M, uint32_t N, const uint32_t* params, const uint32_t* rows,
				 const uint32_t* w, struct walk* walks, uint32_t nrows, uint32_t wmax,
				 int32_t* lookup)
{
	uint64_t wsum = 0;
	for (uint32_t a = 0; a < nrows; a++)
		wsum += w[a];
	if ((uint64_t)wmax * nrows <= 8 * wsum) { /* wmax <= 8 * mean */
		uint32_t* credit = malloc(sizeof(uint32_t) * nrows);
		if (credit == NULL)
			return -2;
		populate_rounds(M, N, params, rows, w, credit, walks, nrows, wmax, lookup);
		free(credit);
		return 0;
	}
	struct turn* h = malloc(sizeof(struct turn) * nrows);
	if (h == NULL)
		return -2;
	for (uint32_t a = 0; a < nrows; a++) {
		h[a].round = turn_round(1, w[a], wmax);
		h[a].a = a;
		h[a].taken = 0;
	}
	for (uint32_t i = nrows / 2; i-- > 0;)
		heap_down(h, nrows, i);
	uint32_t K = (uint32_t)((1ull << 32) % M);
	for (uint32_t n = 0; n < M; n++) {
		uint32_t a = h[0].a;
		struct walk* wk = &walks[a];
		uint32_t self = rows[a];
		while (lookup[wk->v] >= 0)
			walk_next(wk, self, M, N, K, params);
		lookup[wk->v] = (int32_t)self;
		walk_next(wk, self, M, N, K, params);
		h[0].taken++;
		h[0].round = turn_round((uint64_t)h[0].taken + 1, w[a], wmax);
		heap_down(h, nrows, 0);
	}
	free(h);
	return 0;
}

int32_t nfqlb_maglev_populate(uint32_t M, uint32_t N, const uint32_t* params,
			      const int32_t* active, int32_t* lookup)
{
	return nfqlb_maglev_populate_weighted(M, N, params, active, NULL, lookup);
}

int32_t nfqlb_maglev_populate_weighted(uint32_t M, uint32_t N, const uint32_t* params,
				       const int32_t* active, const uint32_t* weights, int32_t* lookup)
{
	if (M < 3 || N < 1 || params == NULL || active == NULL || lookup == NULL)
		return -1;
	uint32_t nrows = 0, wmax = 0, wmin = UINT32_MAX;
	for (uint32_t i = 0; i < N; i++) {
		uint32_t wi = weights ? weights[i] : 1;
		if (active[i] < 0)
			continue;
		if (wi > NFQLB_MAX_WEIGHT)
			return -1;
		if (wi == 0)
			continue; /* drained: keeps its row, takes no turns */
		nrows++;
		if (wi > wmax)
			wmax = wi;
		if (wi < wmin)
			wmin = wi;
	}
	for (uint32_t i = 0; i < M; i++)
		lookup[i] = -1;
	if (nrows == 0)
		return 0;
	uint32_t* rows = malloc(sizeof(uint32_t) * nrows);
	uint32_t* w = malloc(sizeof(uint32_t) * nrows);
	struct walk* walks = malloc(sizeof(struct walk) * nrows);
	int32_t rc = 0;
	if (rows == NULL || w == NULL || walks == NULL) {
		rc = -2;
		goto out;
	}
	uint32_t a = 0;
	for (uint32_t i = 0; i < N; i++) {
		uint32_t wi = weights ? weights[i] : 1;
		if (active[i] >= 0 && wi > 0) {
			rows[a] = i;
			w[a] = wi;
			walk_start(&walks[a], i, params);
			a++;
		}
	}
	/* Equal weights: every row takes a turn every round, which is upstream's loop. */
	if (wmin == wmax)
		populate_rr(M, N, params, rows, walks, nrows, lookup);
	else
		rc = populate_weighted(M, N, params, rows, w, walks, nrows, wmax, lookup);
out:
	free(rows);
	free(w);
	free(walks);
	return rc;
}
