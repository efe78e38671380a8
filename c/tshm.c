/* The target (Maglev) shared-memory table: layout, validation, double-buffered commit, lookup. */
#include "tshm_internal.h"
#include <string.h>

static uint64_t params_off(void) { return NFQLB_TSHM_HEADER; }
static uint64_t buffer_off(uint32_t M, uint32_t N, uint32_t b) { return tshm_buffer_off(M, N, b); }

int32_t nfqlb_tshm_bytes(uint32_t M, uint32_t N, uint64_t* out)
{
	if (M < 3 || N < 1 || N > M)
		return -1;
	uint64_t size = buffer_off(M, N, 2);
	if (size > NFQLB_TSHM_MAX_BYTES)
		return -1;
	if (out)
		*out = size;
	return 0;
}

static int32_t* buf_active(uint8_t* base, const struct tshm_header* h, uint32_t b)
{
	return (int32_t*)(base + buffer_off(h->M, h->N, b));
}
static uint32_t* buf_weight(uint8_t* base, const struct tshm_header* h, uint32_t b)
{
	return (uint32_t*)(buf_active(base, h, b) + h->N);
}
static int32_t* buf_lookup(uint8_t* base, const struct tshm_header* h, uint32_t b)
{
	return buf_active(base, h, b) + 2 * h->N;
}

int32_t nfqlb_tshm_format(uint8_t* base, uint64_t size, uint32_t M, uint32_t N, int32_t own_fwmark)
{
	uint64_t need;
	if (base == NULL || nfqlb_tshm_bytes(M, N, &need) != 0 || size < need)
		return -1;
	memset(base, 0, NFQLB_TSHM_HEADER);
	struct tshm_header* h = (struct tshm_header*)base;
	h->version = NFQLB_TSHM_VERSION;
	h->header_size = NFQLB_TSHM_HEADER;
	h->file_size = need;
	h->M = M;
	h->N = N;
	h->own_fwmark = own_fwmark;
	if (nfqlb_maglev_params(M, N, (uint32_t*)(base + params_off())) != 0)
		return -1;
	for (uint32_t b = 0; b < 2; b++) {
		memset(buf_active(base, h, b), 0xff, 4ull * N);
		uint32_t* w = buf_weight(base, h, b);
		for (uint32_t i = 0; i < N; i++)
			w[i] = 1;
		memset(buf_lookup(base, h, b), 0xff, 4ull * M);
	}
	/* The magic goes last: a file is an nfqlb table only once it is complete. */
	__atomic_store_n(&h->magic, NFQLB_TSHM_MAGIC, __ATOMIC_RELEASE);
	return 0;
}

int32_t nfqlb_tshm_check(const uint8_t* base, uint64_t size)
{
	if (base == NULL || size < 4)
		return NFQLB_EMAGIC;
	const struct tshm_header* h = (const struct tshm_header*)base;
	if (size < 16) /* too short for any table: ours if it starts like one */
		return h->magic == NFQLB_TSHM_MAGIC ? NFQLB_ETRUNC : NFQLB_EMAGIC;
	if (h->magic != NFQLB_TSHM_MAGIC) {
		/* upstream: int own; unsigned M, N, len; file size 4 + len */
		uint32_t M, N, len;
		memcpy(&M, base + 4, 4);
		memcpy(&N, base + 8, 4);
		memcpy(&len, base + 12, 4);
		uint64_t ulen = 12ull + 4ull * (3ull + (uint64_t)M * N) + 4ull * ((uint64_t)M + N);
		if (M >= 3 && N >= 1 && len == ulen && size == 4ull + ulen)
			return NFQLB_EUPSTREAM;
		return NFQLB_EMAGIC;
	}
	if (size < NFQLB_TSHM_HEADER)
		return NFQLB_ETRUNC;
	if (h->version != NFQLB_TSHM_VERSION || h->header_size != NFQLB_TSHM_HEADER)
		return NFQLB_EVERSION;
	uint64_t need;
	if (nfqlb_tshm_bytes(h->M, h->N, &need) != 0 || h->file_size != need)
		return NFQLB_ELAYOUT;
	if (size < need)
		return NFQLB_ETRUNC;
	return 0;
}

int32_t nfqlb_tshm_commit(uint8_t* base, const int32_t* active, const uint32_t* weights)
{
	struct tshm_header* h = (struct tshm_header*)base;
	uint32_t cur = __atomic_load_n(&h->current, __ATOMIC_ACQUIRE) & 1;
	uint32_t spare = cur ^ 1;
	/* seqlock write side on the spare buffer; readers of the current one are untouched */
	uint32_t s = __atomic_load_n(&h->seq[spare], __ATOMIC_RELAXED) | 1;
	__atomic_store_n(&h->seq[spare], s, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	int32_t* act = buf_active(base, h, spare);
	uint32_t* wt = buf_weight(base, h, spare);
	memcpy(act, active, 4ull * h->N);
	if (weights)
		memcpy(wt, weights, 4ull * h->N);
	else
		for (uint32_t i = 0; i < h->N; i++)
			wt[i] = 1;
	int32_t rc = nfqlb_maglev_populate_weighted(h->M, h->N, (const uint32_t*)(base + params_off()), act, wt,
						   buf_lookup(base, h, spare));
	if (rc != 0)
		return rc; /* spare stays odd: never current, so never read */
	__atomic_store_n(&h->seq[spare], s + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&h->generation, h->generation + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&h->current, spare, __ATOMIC_RELEASE);
	return 0;
}

/* Seqlock read side: run `body` on the current buffer until it was stable throughout. */
#define TSHM_READ(base, h, b, body)                                                   \
	for (;;) {                                                                    \
		uint32_t b = __atomic_load_n(&(h)->current, __ATOMIC_ACQUIRE) & 1;    \
		uint32_t s1_ = __atomic_load_n(&(h)->seq[b], __ATOMIC_ACQUIRE);       \
		if (s1_ & 1)                                                          \
			continue;                                                     \
		body;                                                                 \
		__atomic_thread_fence(__ATOMIC_ACQUIRE);                              \
		if (__atomic_load_n(&(h)->seq[b], __ATOMIC_RELAXED) == s1_)           \
			break;                                                        \
	}

uint32_t nfqlb_tshm_read(const uint8_t* base, int32_t* lookup, uint32_t nlookup, int32_t* active,
			 uint32_t* weights)
{
	const struct tshm_header* h = (const struct tshm_header*)base;
	uint32_t n = nlookup < h->M ? nlookup : h->M;
	uint32_t gen = 0;
	TSHM_READ(base, h, b, {
		const int32_t* act = (const int32_t*)(base + buffer_off(h->M, h->N, b));
		gen = __atomic_load_n(&h->generation, __ATOMIC_RELAXED);
		if (active)
			memcpy(active, act, 4ull * h->N);
		if (weights)
			memcpy(weights, act + h->N, 4ull * h->N);
		if (lookup)
			memcpy(lookup, act + 2 * h->N, 4ull * n);
	});
	return gen;
}

int32_t nfqlb_tshm_lookup_row(const uint8_t* base, uint32_t hash, int32_t* row)
{
	const struct tshm_header* h = (const struct tshm_header*)base;
	int32_t r = -1, fw = -1;
	TSHM_READ(base, h, b, {
		const int32_t* act = (const int32_t*)(base + buffer_off(h->M, h->N, b));
		r = act[2 * h->N + hash % h->M];
		fw = (r >= 0 && (uint32_t)r < h->N) ? act[r] : -1;
	});
	if (row)
		*row = r;
	return fw < 0 ? -1 : fw;
}

int32_t nfqlb_tshm_row_fwmark(const uint8_t* base, int32_t row)
{
	const struct tshm_header* h = (const struct tshm_header*)base;
	if (row < 0 || (uint32_t)row >= h->N)
		return -1;
	int32_t fw = -1;
	TSHM_READ(base, h, b, {
		const int32_t* act = (const int32_t*)(base + buffer_off(h->M, h->N, b));
		fw = act[row];
	});
	return fw < 0 ? -1 : fw;
}

int32_t nfqlb_tshm_lookup(const uint8_t* base, uint32_t hash)
{
	return nfqlb_tshm_lookup_row(base, hash, NULL);
}

int32_t nfqlb_tshm_lookup_key(const uint8_t* base, const uint8_t* key, uint32_t len, uint32_t hash_mode)
{
	if (len < NFQLB_KEY_LEN)
		return -1;
	return nfqlb_tshm_lookup_row(base, nfqlb_hash_key(key, len, hash_mode), NULL);
}

uint32_t nfqlb_tshm_count_empty(const uint8_t* base)
{
	const struct tshm_header* h = (const struct tshm_header*)base;
	uint32_t empty = 0;
	TSHM_READ(base, h, b, {
		const int32_t* act = (const int32_t*)(base + buffer_off(h->M, h->N, b));
		const int32_t* lk = act + 2 * h->N;
		empty = 0;
		for (uint32_t i = 0; i < h->M; i++) {
			int32_t r = lk[i];
			if (r < 0 || (uint32_t)r >= h->N || act[r] < 0)
				empty++;
		}
	});
	return empty;
}

int32_t nfqlb_tshm_own_fwmark(const uint8_t* base)
{
	return ((const struct tshm_header*)base)->own_fwmark;
}

uint32_t nfqlb_tshm_stamp(const uint8_t* base, uint32_t* n)
{
	const struct tshm_header* h = (const struct tshm_header*)base;
	if (n)
		*n = h->N;
	uint32_t b = __atomic_load_n(&h->current, __ATOMIC_ACQUIRE) & 1;
	/* each commit to a buffer adds 2 to its seq: (seq, buffer) names one content */
	return (__atomic_load_n(&h->seq[b], __ATOMIC_ACQUIRE) << 1) | b;
}
