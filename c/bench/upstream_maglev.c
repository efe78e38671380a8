/*
 * upstream_maglev.c - a faithful re-implementation of upstream nfqlb 1.2.0's
 * Maglev table code (src/lib/maglevdyn.c), for benchmarking only. It is NOT
 * part of libnfqlb.so; scripts/bench.ts compiles it on its own:
 *
 *   gcc -O2 -shared -fPIC -o bench-results/libupstream_maglev.so c/bench/upstream_maglev.c
 *
 * What upstream does, and what we copy:
 *   - init draws (offset, skip) per row from glibc rand() without srand(),
 *     i.e. seed 1, and stores the full permutation[N][M] array of unsigned
 *     values (offset + j*skip) % M, computed in unsigned 32-bit arithmetic,
 *     in the shared memory (upstream_init below; we call srand(1) so every
 *     call starts like a fresh process);
 *   - activate/deactivate re-populate: lookup[] = -1, then the round-robin
 *     loop over active rows reading permutation[i][next[i]] (upstream_populate).
 * Upstream's permutation rows are consecutive in one flat array, so
 * row[next[i]] with next[i] >= M reads the next row. We index the flat array
 * the same way; where upstream would read past the end of the array (and
 * crash or read garbage) we stop and return -3 instead.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of permutation[N][M]; 0 when it does not fit in size_t. */
uint64_t upstream_perm_bytes(uint32_t M, uint32_t N)
{
	return (uint64_t)M * N * sizeof(uint32_t);
}

/* Allocates and pre-faults permutation[N][M] (so timings exclude page faults). */
uint32_t* upstream_alloc(uint32_t M, uint32_t N)
{
	uint64_t bytes = upstream_perm_bytes(M, N);
	uint32_t* p = malloc(bytes);
	if (p != NULL)
		memset(p, 0, bytes);
	return p;
}

void upstream_free(uint32_t* p) { free(p); }

/* magDataDyn_init's loop: rand() draws and the permutation fill. Returns 0, or -1 if M < 3. */
int32_t upstream_init(uint32_t M, uint32_t N, uint32_t* perm)
{
	if (M < 3 || perm == NULL)
		return -1;
	srand(1); /* upstream never seeds: a fresh process starts at seed 1 */
	for (uint32_t i = 0; i < N; i++) {
		unsigned offset = rand() % M;
		unsigned skip = rand() % (M - 1) + 1;
		unsigned* row = perm + (uint64_t)i * M;
		for (unsigned j = 0; j < M; j++)
			row[j] = (offset + j * skip) % M;
	}
	return 0;
}

/*
 * magDataDyn_populate. Returns 0, or -3 where upstream would read past its
 * permutation array (its result is undefined there).
 */
int32_t upstream_populate(uint32_t M, uint32_t N, const uint32_t* perm, const int32_t* active, int32_t* lookup)
{
	for (uint32_t i = 0; i < M; i++)
		lookup[i] = -1;
	unsigned nActive = 0;
	for (uint32_t i = 0; i < N; i++)
		if (active[i] >= 0)
			nActive++;
	if (nActive == 0)
		return 0;
	unsigned* next = calloc(N, sizeof(unsigned)); /* upstream: a VLA on the stack */
	if (next == NULL)
		return -2;
	uint64_t end = (uint64_t)M * N;
	unsigned n = 0, c;
	for (;;) {
		for (uint32_t i = 0; i < N; i++) {
			if (active[i] < 0)
				continue;
			uint64_t row = (uint64_t)i * M;
			if (row + next[i] >= end)
				goto past_end;
			c = perm[row + next[i]];
			while (lookup[c] >= 0) {
				next[i]++;
				if (row + next[i] >= end)
					goto past_end;
				c = perm[row + next[i]];
			}
			lookup[c] = (int32_t)i;
			next[i]++;
			if (++n == M) {
				free(next);
				return 0;
			}
		}
	}
past_end:
	free(next);
	return -3;
}
