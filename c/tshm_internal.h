/*
 * tshm_internal.h - the target table's header and buffer offsets, shared by
 * tshm.c (the file: format, check, commit, lookups) and tshm_view.c (the
 * dataplane's private copy of a file, which has the same layout so that
 * every reader of tshm.c reads it). Private to those two files.
 *
 * layout: docs/shm.md#the-target-table-init-activate-deactivate-show-lb
 */
#ifndef NFQLB_TSHM_INTERNAL_H
#define NFQLB_TSHM_INTERNAL_H

#include "nfqlb.h"

struct tshm_header {
	uint32_t magic;
	uint16_t version;
	uint16_t header_size;
	uint64_t file_size;
	uint32_t M;
	uint32_t N;
	int32_t own_fwmark;
	uint32_t current;
	uint32_t seq[2];
	uint32_t replaced;
	uint32_t generation;
	uint32_t reserved[4];
};
_Static_assert(sizeof(struct tshm_header) == NFQLB_TSHM_HEADER, "header is 64 bytes");
_Static_assert(offsetof(struct tshm_header, version) == NFQLB_TSHM_OFF_VERSION, "header layout");
_Static_assert(offsetof(struct tshm_header, M) == NFQLB_TSHM_OFF_M, "header layout");
_Static_assert(offsetof(struct tshm_header, N) == NFQLB_TSHM_OFF_N, "header layout");
_Static_assert(offsetof(struct tshm_header, own_fwmark) == NFQLB_TSHM_OFF_OWN_FWMARK, "header layout");
_Static_assert(offsetof(struct tshm_header, replaced) == NFQLB_TSHM_OFF_REPLACED, "header layout");

/* Buffer b: { i32 active[N]; u32 weight[N]; i32 lookup[M]; }, after the header and the 8N bytes of params. */
static inline uint64_t tshm_buffer_off(uint32_t M, uint32_t N, uint32_t b)
{
	return NFQLB_TSHM_HEADER + 8ull * N + (uint64_t)b * 4ull * (2ull * N + M);
}

/* Bytes of one buffer. */
static inline uint64_t tshm_buffer_bytes(uint32_t M, uint32_t N) { return 4ull * (2ull * N + M); }

#endif
