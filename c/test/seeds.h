/*
 * seeds.h - the seed packets of the fuzz drivers: files of 2 bytes NFQUEUE
 * hw protocol (big-endian) followed by the IP packet, at most 64 of them
 * (tests/helpers/sanitize.ts writes them).
 */
#ifndef NFQLB_TEST_SEEDS_H
#define NFQLB_TEST_SEEDS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEEDS_MAX 64

struct seeds {
	int n;
	uint8_t* data[SEEDS_MAX];
	size_t len[SEEDS_MAX];
	uint32_t hw[SEEDS_MAX];
};

/* Loads argv[first..argc-1]; 0, or 2 (the drivers' usage exit code) on an unreadable or short file. */
static inline int seeds_load(struct seeds* s, int argc, char** argv, int first)
{
	s->n = 0;
	for (int i = first; i < argc && s->n < SEEDS_MAX; i++) {
		FILE* f = fopen(argv[i], "rb");
		if (!f)
			return 2;
		static uint8_t buf[70000];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		if (n < 3)
			return 2;
		s->hw[s->n] = (uint32_t)(buf[0] << 8 | buf[1]);
		s->len[s->n] = n - 2;
		s->data[s->n] = malloc(n - 2);
		if (!s->data[s->n])
			return 2;
		memcpy(s->data[s->n], buf + 2, n - 2);
		s->n++;
	}
	return s->n > 0 ? 0 : 2;
}

static inline void seeds_free(struct seeds* s)
{
	for (int i = 0; i < s->n; i++)
		free(s->data[i]);
	s->n = 0;
}

#endif
