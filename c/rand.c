/* glibc rand() (random_r TYPE_3: x**31 + x**3 + 1) without global state. */
#include "nfqlb.h"

uint32_t nfqlb_rand_size(void) { return (uint32_t)sizeof(struct nfqlb_rand); }

/*
 * r[i] = r[i-31] + r[i-3] over the last 34 words; glibc seeds r[0..30] with
 * the Park-Miller sequence (Schrage form), copies r[0..2] to r[31..33], and
 * throws away the first 310 outputs.
 */
void nfqlb_rand_seed(struct nfqlb_rand* s, uint32_t seed)
{
	int32_t w[34];
	w[0] = seed == 0 ? 1 : (int32_t)seed;
	for (int i = 1; i < 31; i++) {
		int32_t hi = w[i - 1] / 127773;
		int32_t lo = w[i - 1] % 127773;
		int32_t word = 16807 * lo - 2836 * hi;
		if (word < 0)
			word += 2147483647;
		w[i] = word;
	}
	for (int i = 31; i < 34; i++)
		w[i] = w[i - 31];
	for (int i = 0; i < 34; i++)
		s->r[i] = (uint32_t)w[i];
	s->k = 34;
	for (int i = 0; i < 310; i++)
		(void)nfqlb_rand_next(s);
}

int32_t nfqlb_rand_next(struct nfqlb_rand* s)
{
	uint32_t k = s->k;
	uint32_t v = s->r[(k - 31) % 34] + s->r[(k - 3) % 34];
	s->r[k % 34] = v;
	/* k stays in [34, 68): the indexes above only need k modulo 34. */
	s->k = k + 1 < 68 ? k + 1 : k + 1 - 34;
	return (int32_t)(v >> 1);
}
