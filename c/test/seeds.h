/*
 * seeds.h - what the packet fuzz drivers share: their seed packets (files of
 * 2 bytes NFQUEUE hw protocol (big-endian) followed by the IP packet, at
 * most 64 of them; tests/helpers/sanitize.ts writes them) and the small
 * target table they classify against.
 */
#ifndef NFQLB_TEST_SEEDS_H
#define NFQLB_TEST_SEEDS_H

#include "../nfqlb.h"
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
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

/* A private target table, M=97 N=4, with 101, 102, 103 active; *size gets its size (for munmap). */
static inline uint8_t* fuzz_target_table(uint64_t* size)
{
	nfqlb_tshm_bytes(97, 4, size);
	uint8_t* tshm = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (tshm == MAP_FAILED)
		abort();
	nfqlb_tshm_format(tshm, *size, 97, 4, 0);
	int32_t active[4] = { 101, 102, 103, -1 };
	nfqlb_tshm_commit(tshm, active, NULL);
	return tshm;
}

#endif
