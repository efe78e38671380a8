/*
 * ct_admin.c - the control plane of the connection table (ct.c): size,
 * format and check a table; list, get, set and delete entries; the counters,
 * the per-row counts, the scheduler id and the clock. Used by the CLI
 * (core/conntrack_shm.ts) while the dataplane uses the table: the same
 * bucket locks as ct.c's per-packet path.
 */
#define _GNU_SOURCE
#include "ct_internal.h"
#include <string.h>
#include <sys/random.h>
#include <time.h>

_Static_assert(sizeof(struct nfqlb_ct_record) == NFQLB_CT_RECORD_BYTES, "record size");

/* ---------------------------------------------------------------------------
 * Size, format, check.
 * ------------------------------------------------------------------------- */

uint64_t nfqlb_ct_admin_bytes(uint32_t capacity, uint32_t ctx_slots)
{
	struct ct_layout L;
	return ct_layout_of(capacity, ctx_slots, &L) == 0 ? L.size : 0;
}

int32_t nfqlb_ct_admin_format(uint8_t* base, uint64_t size, uint32_t capacity, uint32_t ctx_slots,
			      const uint32_t* ttl_ms, uint32_t flood_per_s)
{
	struct ct_layout L;
	if (base == NULL || ttl_ms == NULL || ct_layout_of(capacity, ctx_slots, &L) != 0 || size < L.size)
		return -1;
	for (int i = 0; i < 3; i++)
		if (ttl_ms[i] > NFQLB_CT_MAX_TTL_MS)
			return -1;
	memset(base, 0, BUCKETS_OFF + 16ull * L.nbuckets);
	/* entries need no init (tag 0 = free); the ctx owners must be 0 */
	memset(base + L.ctx_off, 0, (size_t)ctx_slots * CTX_REC);
	memset(base + L.sched_off, 0, SCHED_BYTES + ROW_SLOTS * 4u);
	struct ct_header* h = H(base);
	h->version = NFQLB_CT_VERSION;
	h->header_size = BUCKETS_OFF;
	h->file_size = L.size;
	h->capacity = L.nbuckets * WAYS;
	h->nbuckets = L.nbuckets;
	h->ctx_slots = ctx_slots;
	h->flood_per_s = flood_per_s;
	memcpy(h->ttl_ms, ttl_ms, sizeof(h->ttl_ms));
	h->ways = WAYS;
	uint64_t seed = 0;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
		seed = (uint64_t)(uintptr_t)base ^ 0x5851f42d4c957f2dull;
	h->seed = seed;
	h->entries_off = L.entries_off;
	h->ctx_off = L.ctx_off;
	h->sched_off = L.sched_off;
	__atomic_store_n(&h->magic, NFQLB_CT_MAGIC, __ATOMIC_RELEASE); /* last: complete */
	return 0;
}

int32_t nfqlb_ct_admin_check(const uint8_t* base, uint64_t size)
{
	if (base == NULL || size < 4)
		return NFQLB_EMAGIC;
	const struct ct_header* h = (const struct ct_header*)base;
	if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != NFQLB_CT_MAGIC)
		return NFQLB_EMAGIC;
	if (size < BUCKETS_OFF)
		return NFQLB_ETRUNC;
	if (h->version != NFQLB_CT_VERSION)
		return NFQLB_EVERSION;
	struct ct_layout L;
	if (h->header_size != BUCKETS_OFF || h->ways != WAYS || h->capacity % WAYS != 0 ||
	    ct_layout_of(h->capacity, h->ctx_slots, &L) != 0 || L.nbuckets != h->nbuckets || L.size != h->file_size ||
	    L.entries_off != h->entries_off || L.ctx_off != h->ctx_off || L.sched_off != h->sched_off ||
	    h->ttl_ms[0] > NFQLB_CT_MAX_TTL_MS ||
	    h->ttl_ms[1] > NFQLB_CT_MAX_TTL_MS || h->ttl_ms[2] > NFQLB_CT_MAX_TTL_MS ||
	    h->scheduler >= NFQLB_SCHED_COUNT)
		return NFQLB_ELAYOUT;
	if (size < h->file_size)
		return NFQLB_ETRUNC;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Entries and counters.
 * ------------------------------------------------------------------------- */

/* A context record for entry idx, or -1 (ctx lock held; open addressing as ct.c's ctx_find). */
static int64_t ctx_alloc(const struct ct_geo* g, uint32_t idx)
{
	struct ct_header* h = H(g->base);
	uint32_t n = g->ctx_slots;
	if (n == 0 || h->ctx_used >= n)
		return -1;
	uint32_t i = (uint32_t)(((uint64_t)(idx * 2654435761u) * n) >> 32);
	for (uint32_t k = 0; k < n; k++, i = i + 1 == n ? 0 : i + 1) {
		uint32_t o = ctxrec(g, i)->owner;
		if (o == 0 || o == CTX_TOMB) {
			ctxrec(g, i)->owner = idx + 1;
			h->ctx_used++;
			return i;
		}
	}
	return -1;
}

int32_t nfqlb_ct_admin_delete(uint8_t* base, const uint8_t* key)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return -1;
	const struct ct_geo* g = &G;
	if (!key_ok(key))
		return -1;
	struct probe p;
	ct_probe(g, key, &p);
	uint32_t b = p.b;
	struct ct_bucket* bk = bucket(g, b);
	ct_lock(g, &bk->lock);
	int w = ct_find(g, b, p.tag, &p.k, 0, 0);
	if (w >= 0)
		ct_slot_free(g, b, (uint32_t)w, NFQLB_CT_STAT_DELETES);
	unlock(&bk->lock);
	return w >= 0 ? 0 : -1;
}

/* The longest lifetime of one entry: in seconds, 15 bits. */
_Static_assert((NFQLB_CT_MAX_LIFETIME_MS + 999u) / 1000u < LIFETIME_SECONDS &&
		       (NFQLB_CT_MAX_LIFETIME_MS + 1u + 999u) / 1000u >= LIFETIME_SECONDS,
	       "NFQLB_CT_MAX_LIFETIME_MS is what encode_lifetime takes");

static int32_t encode_lifetime(uint32_t ms, uint16_t* out)
{
	if (ms == 0)
		*out = 0;
	else if (ms < LIFETIME_SECONDS)
		*out = (uint16_t)ms;
	else if ((ms + 999u) / 1000u < LIFETIME_SECONDS)
		*out = (uint16_t)(LIFETIME_SECONDS | ((ms + 999u) / 1000u));
	else
		return -1;
	return 0;
}

int32_t nfqlb_ct_admin_set(uint8_t* base, const uint8_t* key, uint32_t what, int32_t fwmark, int32_t row,
		     uint32_t lifetime_ms, const uint8_t* ctx, uint32_t ctx_len, uint64_t now_ns)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return -1;
	const struct ct_geo* g = &G;
	struct ct_header* h = H(g->base);
	uint16_t lt = 0;
	if (!key_ok(key) || ((what & NFQLB_CT_SET_LIFETIME) && encode_lifetime(lifetime_ms, &lt) != 0) ||
	    ((what & NFQLB_CT_SET_CTX) && (ctx_len > NFQLB_CT_CTX_MAX || (ctx == NULL && ctx_len > 0))))
		return -1;
	struct probe p;
	ct_probe(g, key, &p);
	uint32_t b = p.b, now = ms_of(now_ns);
	uint8_t tag = p.tag;
	struct ct_bucket* bk = bucket(g, b);
	int32_t rc = 0;
	ct_lock(g, &bk->lock);
	int w = ct_find(g, b, tag, &p.k, now, 1);
	if (w < 0) {
		if (!(what & NFQLB_CT_SET_CREATE)) {
			rc = -1;
			goto out;
		}
		if ((w = ct_make_room(g, b, tag, now)) < 0) {
			rc = -2;
			goto out;
		}
		ct_fill(g, b, (uint32_t)w, tag, key, fwmark, row, now);
	}
	uint32_t idx = b * WAYS + (uint32_t)w;
	struct ct_entry* e = entry(g, idx);
	uint8_t f = e->key[FLAGS_BYTE];
	if (what & NFQLB_CT_SET_CTX) {
		ct_lock(g, &h->ctx_lock);
		int64_t c = (f & F_HAS_CTX) ? ct_ctx_find(g, idx) : -1;
		if (c < 0)
			c = ctx_alloc(g, idx);
		if (c >= 0) {
			struct ct_ctx* r = ctxrec(g, (uint32_t)c);
			if (ctx_len)
				memcpy(r->data, ctx, ctx_len);
			r->len = ctx_len;
			f |= F_HAS_CTX;
		}
		unlock(&h->ctx_lock);
		if (c < 0) {
			rc = -2; /* no context slot free: nothing else is changed */
			goto out;
		}
	}
	if ((what & NFQLB_CT_CLEAR_CTX) && (f & F_HAS_CTX)) {
		ct_ctx_free(g, idx);
		f &= (uint8_t)~F_HAS_CTX;
	}
	if (what & NFQLB_CT_SET_FWMARK)
		ct_move(g, e, fwmark, row);
	if (what & NFQLB_CT_SET_LIFETIME)
		e->lifetime = lt;
	if (what & NFQLB_CT_SET_PIN)
		f |= NFQLB_CT_F_PINNED;
	if (what & NFQLB_CT_CLEAR_PIN)
		f &= (uint8_t)~NFQLB_CT_F_PINNED;
	if (what & NFQLB_CT_SET_OFFLOAD)
		f |= NFQLB_CT_F_OFFLOADED;
	if (what & NFQLB_CT_CLEAR_OFFLOAD)
		f &= (uint8_t)~NFQLB_CT_F_OFFLOADED;
	if (what & (NFQLB_CT_CLEAR_PIN | NFQLB_CT_SET_LIFETIME))
		e->last = now; /* the new lifetime counts from now */
	e->key[FLAGS_BYTE] = f;
out:
	unlock(&bk->lock);
	return rc;
}

static void to_record(const struct ct_geo* g, uint32_t idx, const struct ct_entry* e, uint32_t now, struct nfqlb_ct_record* r)
{
	struct ct_header* h = H(g->base);
	memset(r, 0, sizeof(*r));
	memcpy(r->key, e->key, NFQLB_KEY_LEN);
	r->key[FLAGS_BYTE] = 0;
	uint8_t f = e->key[FLAGS_BYTE];
	r->fwmark = e->fwmark;
	r->row = row_load(e->row);
	r->flags = f & (NFQLB_CT_F_PINNED | NFQLB_CT_F_OFFLOADED);
	r->lifetime_ms = (f & NFQLB_CT_F_PINNED) ? 0 : ct_lifetime_ms(h, e);
	int32_t age = (int32_t)(now - e->created), idle = (int32_t)(now - e->last);
	r->age_ms = age < 0 ? 0 : (uint32_t)age;
	r->idle_ms = idle < 0 ? 0 : (uint32_t)idle;
	r->packets = e->counts >> PKT_SHIFT;
	r->bytes = e->counts & BYTES_MASK;
	r->slot = idx;
	if (f & F_HAS_CTX) {
		ct_lock(g, &h->ctx_lock);
		int64_t c = ct_ctx_find(g, idx);
		if (c >= 0) {
			const struct ct_ctx* x = ctxrec(g, (uint32_t)c);
			r->ctx_len = x->len;
			r->flags |= NFQLB_CT_F_CTX;
			memcpy(r->ctx, x->data, x->len);
		}
		unlock(&h->ctx_lock);
	}
}

uint32_t nfqlb_ct_admin_list(uint8_t* base, uint32_t* cursor, uint64_t now_ns, struct nfqlb_ct_record* out,
			     uint32_t max)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return 0;
	const struct ct_geo* g = &G;
	struct ct_header* h = H(g->base);
	uint32_t n = 0, now = ms_of(now_ns), cap = g->capacity;
	uint32_t i = *cursor;
	while (n < max && i < cap) {
		uint32_t b = i / WAYS;
		struct ct_bucket* bk = bucket(g, b);
		ct_lock(g, &bk->lock);
		/* a bucket at a time, so the records of one bucket are one snapshot */
		for (uint32_t w = i % WAYS; w < WAYS && n < max; w++, i++) {
			if (bk->tag[w] == 0)
				continue;
			struct ct_entry* e = entry(g, b * WAYS + w);
			if (ct_expired(h, e, now)) {
				ct_slot_free(g, b, w, NFQLB_CT_STAT_EXPIRATIONS);
				continue;
			}
			to_record(g, b * WAYS + w, e, now, &out[n++]);
		}
		unlock(&bk->lock);
	}
	*cursor = i;
	return n;
}

int32_t nfqlb_ct_admin_next(uint8_t* base, uint32_t* cursor, uint64_t now_ns, struct nfqlb_ct_record* out)
{
	return nfqlb_ct_admin_list(base, cursor, now_ns, out, 1) == 1 ? 1 : 0;
}

int32_t nfqlb_ct_admin_get(uint8_t* base, const uint8_t* key, uint64_t now_ns, struct nfqlb_ct_record* out)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return -1;
	const struct ct_geo* g = &G;
	if (!key_ok(key))
		return -1;
	struct probe p;
	ct_probe(g, key, &p);
	uint32_t b = p.b, now = ms_of(now_ns);
	struct ct_bucket* bk = bucket(g, b);
	ct_lock(g, &bk->lock);
	int w = ct_find(g, b, p.tag, &p.k, now, 1);
	if (w >= 0)
		to_record(g, b * WAYS + (uint32_t)w, entry(g, b * WAYS + (uint32_t)w), now, out);
	unlock(&bk->lock);
	return w >= 0 ? 0 : -1;
}

void nfqlb_ct_admin_stats(uint8_t* base, uint64_t* out, uint32_t n)
{
	const struct ct_geo G = { .base = base }; /* the shards alone: at fixed offsets */
	const struct ct_geo* g = &G;
	struct ct_header* h = H(g->base);
	uint64_t s[NFQLB_CT_STATS_ALL] = { 0 };
	for (uint32_t i = 0; i < SHARDS; i++) {
		const uint64_t* sh = shard(g, i);
		for (uint32_t j = 0; j < SHARDED; j++)
			s[j] += __atomic_load_n(&sh[j], __ATOMIC_RELAXED);
	}
	s[NFQLB_CT_STAT_LOCK_STEALS] = __atomic_load_n(&h->lock_steals, __ATOMIC_RELAXED);
	s[NFQLB_CT_STAT_CAPACITY] = h->capacity;
	s[NFQLB_CT_STAT_CTX_SLOTS] = h->ctx_slots;
	s[NFQLB_CT_STAT_CTX_USED] = __atomic_load_n(&h->ctx_used, __ATOMIC_RELAXED);
	s[NFQLB_CT_STAT_FLOOD_PER_S] = h->flood_per_s;
	s[NFQLB_CT_STAT_TTL_TCP] = h->ttl_ms[0];
	s[NFQLB_CT_STAT_TTL_UDP] = h->ttl_ms[1];
	s[NFQLB_CT_STAT_TTL_OTHER] = h->ttl_ms[2];
	s[NFQLB_CT_STAT_BYTES] = h->file_size;
	for (uint32_t j = 0; j < n && j < NFQLB_CT_STATS_ALL; j++)
		out[j] = s[j];
}

uint32_t nfqlb_ct_admin_count_by_row(uint8_t* base, uint32_t* counts, uint32_t n, uint64_t now_ns)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return 0;
	const struct ct_geo* g = &G;
	struct ct_header* h = H(g->base);
	uint32_t now = ms_of(now_ns), total = 0;
	if (counts && n)
		memset(counts, 0, (size_t)n * sizeof(uint32_t));
	for (uint32_t b = 0; b < g->nbuckets; b++) {
		struct ct_bucket* bk = bucket(g, b);
		ct_lock(g, &bk->lock);
		for (uint32_t w = 0; w < WAYS; w++) {
			if (bk->tag[w] == 0)
				continue;
			struct ct_entry* e = entry(g, b * WAYS + w);
			if (ct_expired(h, e, now))
				continue;
			int32_t r = row_load(e->row);
			if (r >= 0 && (uint32_t)r < n)
				counts[r]++;
			total++;
		}
		unlock(&bk->lock);
	}
	return total;
}

void nfqlb_ct_admin_row_counts(uint8_t* base, uint32_t* counts, uint32_t n)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0) {
		if (counts && n)
			memset(counts, 0, (size_t)n * sizeof(uint32_t));
		return;
	}
	const struct ct_geo* g = &G;
	const uint32_t* c = row_counts(g);
	for (uint32_t r = 0; r < n && r < ROW_NONE; r++)
		counts[r] = __atomic_load_n(&c[r], __ATOMIC_RELAXED);
	for (uint32_t r = ROW_NONE; r < n; r++)
		counts[r] = 0;
}

int32_t nfqlb_ct_admin_set_scheduler(uint8_t* base, uint32_t scheduler)
{
	if (scheduler >= NFQLB_SCHED_COUNT)
		return -1;
	__atomic_store_n(&H(base)->scheduler, scheduler, __ATOMIC_RELAXED);
	return 0;
}

uint64_t nfqlb_ct_admin_clock_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint32_t nfqlb_ct_admin_record_bytes(void) { return (uint32_t)sizeof(struct nfqlb_ct_record); }
