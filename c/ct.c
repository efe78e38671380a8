/*
 * ct.c - an optional connection table in front of the Maglev hash
 * (the Maglev paper's connection tracking, Katran's LRU, VPP's flowtable): flow key -> fwmark/row, with
 * per-protocol lifetimes, recycling of the entry closest to expiry, a flood
 * guard (max new flows per second) and an opaque per-flow context.
 *
 * The table lives in caller-provided memory (a shm file), so every queue
 * worker thread of an lb and the CLI process reach the same table and it
 * survives an lb restart. No allocation, no global state (see the lock note
 * below for the one per-thread cache). Time is passed in (CLOCK_MONOTONIC in
 * the dataplane; nfqlb_ct_admin_clock_ns gives the CLI the same clock).
 *
 * This file: locks, keys, entries and the per-packet path (lookup, insert,
 * their batches and prefetches, the flood guard, sweep, what the schedulers
 * read). The control plane (size, format, check, list, get, set, delete,
 * stats) is ct_admin.c; the layout is in ct_internal.h.
 */
#define _GNU_SOURCE
#include "ct_internal.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------
 * Locks. A lock word holds the owner's kernel thread id. A waiter spins; every
 * SPIN_BEFORE_CHECK spins it asks the kernel whether that thread still exists
 * (kill(tid, 0)); if it does not (the process crashed with the lock held), the
 * waiter takes the lock over with a CAS, so a crash never leaves a bucket
 * locked forever. A live owner is never robbed, however slow. The tid is
 * cached per thread (_Thread_local): the only per-thread datum, immutable for
 * the thread's life. All users of one table must share a PID namespace.
 * ------------------------------------------------------------------------- */

static _Thread_local uint32_t self_tid_cache;

static uint32_t self_tid(void)
{
	uint32_t t = self_tid_cache;
	if (t == 0)
		self_tid_cache = t = (uint32_t)gettid();
	return t;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void stat_add(const struct ct_geo* g, uint32_t b, uint32_t which, int64_t v)
{
	__atomic_fetch_add(&shard(g, b)[which], (uint64_t)v, __ATOMIC_RELAXED);
}

static void row_inc(const struct ct_geo* g, uint16_t r)
{
	if (r != ROW_NONE)
		__atomic_fetch_add(&row_counts(g)[r], 1u, __ATOMIC_RELAXED);
}
/* Never below 0: a count that drifted (a crash between tag and count) must not wrap to 4 G. */
static void row_dec(const struct ct_geo* g, uint16_t r)
{
	if (r == ROW_NONE)
		return;
	uint32_t* c = &row_counts(g)[r];
	uint32_t v = __atomic_load_n(c, __ATOMIC_RELAXED);
	while (v > 0 && !__atomic_compare_exchange_n(c, &v, v - 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static void lock_slow(const struct ct_geo* g, uint32_t* l, uint32_t me)
{
	uint32_t spins = 0;
	for (;;) {
		uint32_t v = __atomic_load_n(l, __ATOMIC_RELAXED);
		if (v == 0) {
			if (__atomic_compare_exchange_n(l, &v, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
				return;
			continue;
		}
		if (++spins >= SPIN_BEFORE_CHECK || v == me) {
			spins = 0;
			/* v == me: never re-entered, so a dead thread had our (reused) tid */
			if (v == me || (kill((pid_t)v, 0) != 0 && errno == ESRCH)) {
				if (__atomic_compare_exchange_n(l, &v, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
					__atomic_fetch_add(&H(g->base)->lock_steals, 1, __ATOMIC_RELAXED);
					return;
				}
			}
		}
		cpu_relax();
	}
}

static inline void lock(const struct ct_geo* g, uint32_t* l)
{
	uint32_t me = self_tid(), z = 0;
	if (__builtin_expect(__atomic_compare_exchange_n(l, &z, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED), 1))
		return;
	lock_slow(g, l, me);
}

/* ---------------------------------------------------------------------------
 * Keys: compared and hashed as 5 little-endian u64 words; byte 35 (the high
 * byte of the little-endian proto, 0 for every IP protocol) is masked out,
 * because the stored copy keeps the flags there.
 * ------------------------------------------------------------------------- */

#define W4_MASK 0xffffffff00ffffffull

static inline void load_key(const uint8_t* key, struct kw* k)
{
	memcpy(k->w, key, NFQLB_KEY_LEN);
}

static inline int key_eq(const struct ct_entry* e, const struct kw* k)
{
	uint64_t w[5];
	memcpy(w, e->key, NFQLB_KEY_LEN);
	return ((w[0] ^ k->w[0]) | (w[1] ^ k->w[1]) | (w[2] ^ k->w[2]) | (w[3] ^ k->w[3]) |
		((w[4] ^ k->w[4]) & W4_MASK)) == 0;
}

static inline uint64_t mix(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0xff51afd7ed558ccdull;
	return h ^ (h >> 32);
}

static inline uint64_t key_hash(uint64_t seed, const struct kw* k)
{
	uint64_t h = seed ^ 0x9e3779b97f4a7c15ull;
	h = mix(h, k->w[0]);
	h = mix(h, k->w[1]);
	h = mix(h, k->w[2]);
	h = mix(h, k->w[3]);
	h = mix(h, k->w[4] & W4_MASK);
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 32);
}

static inline uint32_t bucket_of(uint64_t h, uint32_t nbuckets)
{
	return (uint32_t)(((h & 0xffffffffull) * nbuckets) >> 32);
}
static inline uint8_t tag_of(uint64_t h) { return (uint8_t)((h >> 56) | 1u); }

/* ---------------------------------------------------------------------------
 * Entries.
 * ------------------------------------------------------------------------- */

static uint32_t lifetime_ms(const struct ct_header* h, const struct ct_entry* e)
{
	if (e->lifetime)
		return (e->lifetime & LIFETIME_SECONDS) ? (e->lifetime & 0x7fffu) * 1000u : e->lifetime;
	switch (e->key[34]) {
	case 6:
		return h->ttl_ms[0];
	case 17:
		return h->ttl_ms[1];
	default:
		return h->ttl_ms[2];
	}
}

/* ms until the entry expires (negative: expired); pinned entries: INT64_MAX. */
static int64_t remaining(const struct ct_header* h, const struct ct_entry* e, uint32_t now)
{
	if (e->key[FLAGS_BYTE] & NFQLB_CT_F_PINNED)
		return INT64_MAX;
	int32_t idle = (int32_t)(now - e->last); /* < 0: another thread's clock was a bit ahead */
	if (idle < 0)
		idle = 0;
	return (int64_t)lifetime_ms(h, e) - idle;
}

static inline int expired(const struct ct_header* h, const struct ct_entry* e, uint32_t now)
{
	return remaining(h, e, now) < 0; /* idle strictly greater than the lifetime */
}

/* ctx area: open addressing on the entry index, linear probing, tombstones. ctx lock held. */
static int64_t ctx_find(const struct ct_geo* g, uint32_t idx)
{
	uint32_t n = g->ctx_slots;
	if (n == 0)
		return -1;
	uint32_t i = (uint32_t)(((uint64_t)(idx * 2654435761u) * n) >> 32);
	for (uint32_t k = 0; k < n; k++, i = i + 1 == n ? 0 : i + 1) {
		uint32_t o = ctxrec(g, i)->owner;
		if (o == idx + 1)
			return i;
		if (o == 0)
			return -1;
	}
	return -1;
}
/* Drop the context of slot idx (bucket lock held). */
static void ctx_free(const struct ct_geo* g, uint32_t idx)
{
	struct ct_header* h = H(g->base);
	lock(g, &h->ctx_lock);
	int64_t c = ctx_find(g, idx);
	if (c >= 0) {
		ctxrec(g, (uint32_t)c)->owner = CTX_TOMB;
		ctxrec(g, (uint32_t)c)->len = 0;
		h->ctx_used--;
		if (h->ctx_used == 0) /* empty: clear the tombstones so probes stay short */
			for (uint32_t i = 0; i < g->ctx_slots; i++)
				ctxrec(g, i)->owner = 0;
	}
	unlock(&h->ctx_lock);
}

/* Free slot w of bucket b (bucket lock held); `stat` is the counter to bump. */
static void slot_free(const struct ct_geo* g, uint32_t b, uint32_t w, uint32_t stat)
{
	struct ct_bucket* bk = bucket(g, b);
	struct ct_entry* e = entry(g, b * WAYS + w);
	/* first: a crash from here on leaves a free slot; atomic: the batches' stage 2 reads tags unlocked */
	__atomic_store_n(&bk->tag[w], 0, __ATOMIC_RELAXED);
	if (e->key[FLAGS_BYTE] & F_HAS_CTX)
		ctx_free(g, b * WAYS + w);
	e->key[FLAGS_BYTE] = 0;
	row_dec(g, e->row);
	stat_add(g, b, NFQLB_CT_STAT_ENTRIES, -1);
	if (stat < SHARDED)
		stat_add(g, b, stat, 1);
}

/* Find key in bucket b (lock held): slot index 0..7, or -1. Reclaims it if expired. */
static int find(const struct ct_geo* g, uint32_t b, uint8_t tag, const struct kw* k, uint32_t now, int reclaim)
{
	struct ct_bucket* bk = bucket(g, b);
	for (uint32_t w = 0; w < WAYS; w++) {
		if (bk->tag[w] != tag)
			continue;
		struct ct_entry* e = entry(g, b * WAYS + w);
		if (!key_eq(e, k))
			continue;
		if (reclaim && expired(H(g->base), e, now)) {
			slot_free(g, b, w, NFQLB_CT_STAT_EXPIRATIONS);
			return -1;
		}
		return (int)w;
	}
	return -1;
}

static inline void count(struct ct_entry* e, uint32_t bytes)
{
	uint64_t c = e->counts;
	uint64_t p = c >> PKT_SHIFT, by = c & BYTES_MASK;
	if (p < PKT_MAX)
		p++;
	by = by + bytes > BYTES_MASK ? BYTES_MASK : by + bytes;
	e->counts = p << PKT_SHIFT | by;
}

/* ---------------------------------------------------------------------------
 * Hot path.
 * ------------------------------------------------------------------------- */

static inline void probe_of(const struct ct_geo* g, const uint8_t* key, struct probe* p)
{
	load_key(key, &p->k);
	uint64_t hv = key_hash(__atomic_load_n(&H(g->base)->seed, __ATOMIC_RELAXED), &p->k);
	p->b = bucket_of(hv, g->nbuckets);
	p->tag = tag_of(hv);
}

/*
 * Stage 1 of a batch (and nfqlb_ct_prefetch): ask for the bucket descriptor (written: its lock) and the
 * key's home way, where most entries are (make_room prefers it). always_inline: gcc 12 takes a function
 * whose only effect is a prefetch for const and deletes its calls.
 */
#define PF_INLINE static inline __attribute__((always_inline))
PF_INLINE void prefetch_home(const struct ct_geo* g, const struct probe* p)
{
	__builtin_prefetch(bucket(g, p->b), 1);
	__builtin_prefetch(entry(g, p->b * WAYS + p->tag % WAYS), 1);
}

/*
 * Stage 2: the descriptor has (most likely) arrived; ask for the other ways
 * whose tag matches. With `full` (an insert follows a miss), also for
 * every way of a full bucket when no tag matches: make_room reads them all
 * to find the expired or the oldest. The tags are read without the lock,
 * atomically (writers store them atomically), only to choose what to
 * prefetch: stage 3 reads them again under the lock.
 */
PF_INLINE void prefetch_ways(const struct ct_geo* g, const struct probe* p, int full)
{
	struct ct_bucket* bk = bucket(g, p->b);
	uint32_t home = p->tag % WAYS, used = 0, match = 0;
	for (uint32_t w = 0; w < WAYS; w++) {
		uint8_t t = __atomic_load_n(&bk->tag[w], __ATOMIC_RELAXED);
		used += t != 0;
		if (t == p->tag) {
			match++;
			if (w != home)
				__builtin_prefetch(entry(g, p->b * WAYS + w), 1);
		}
	}
	if (full && used == WAYS && match == 0)
		for (uint32_t w = 0; w < WAYS; w++)
			if (w != home)
				__builtin_prefetch(entry(g, p->b * WAYS + w), 1);
}

/* The lookup proper (stats apart): fwmark or -1, *row. */
static inline int32_t lookup_at(const struct ct_geo* g, const struct probe* p, uint32_t now, uint32_t bytes, int32_t* row)
{
	struct ct_bucket* bk = bucket(g, p->b);
	int32_t fw = -1, r = -1;
	lock(g, &bk->lock);
	int w = find(g, p->b, p->tag, &p->k, now, 1);
	if (w >= 0) {
		struct ct_entry* e = entry(g, p->b * WAYS + (uint32_t)w);
		e->last = now;
		count(e, bytes);
		fw = e->fwmark;
		r = row_load(e->row);
	}
	unlock(&bk->lock);
	*row = r;
	return fw;
}

int32_t nfqlb_ct_lookup(uint8_t* base, const uint8_t* key, uint64_t now_ns, uint32_t bytes, int32_t* row)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0 || !key_ok(key)) {
		if (row)
			*row = -1;
		return -1;
	}
	const struct ct_geo* g = &G;
	struct probe p;
	probe_of(g, key, &p);
	int32_t r;
	/* fetch the home way's entry while the bucket line comes: one miss instead of two */
	prefetch_home(g, &p);
	int32_t fw = lookup_at(g, &p, ms_of(now_ns), bytes, &r);
	stat_add(g, p.b, fw >= 0 ? NFQLB_CT_STAT_HITS : NFQLB_CT_STAT_MISSES, 1);
	if (row)
		*row = r;
	return fw;
}

void nfqlb_ct_prefetch(uint8_t* base, const uint8_t* key)
{
	if (base == NULL || !key_ok(key))
		return;
	/* prefetches only: an address from a damaged header is harmless, so the check is saved */
	struct ct_geo G;
	ct_geo_unchecked(base, &G);
	const struct ct_geo* g = &G;
	struct probe p;
	probe_of(g, key, &p);
	prefetch_home(g, &p);
}

void nfqlb_ct_prefetch_ways(uint8_t* base, const uint8_t* key)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return;
	const struct ct_geo* g = &G;
	if (!key_ok(key))
		return;
	struct probe p;
	probe_of(g, key, &p);
	prefetch_ways(g, &p, 1);
}

/*
 * The batch pipeline. A core keeps only so many misses in flight (and drops
 * software prefetches beyond that), so prefetching a whole batch at once
 * loses most of it. Instead the stages run as a rolling window: key i is
 * hashed and its descriptor and home way requested (stage 1) while key
 * i - DIST2 has its other matching ways requested (stage 2, its descriptor
 * has had time to arrive) and key i - DIST is resolved under its lock
 * (stage 3). PIPE bounds the stack arrays (2.8 KiB, in L1).
 */
#ifndef CT_DIST
#define CT_DIST 16u
#endif
#ifndef CT_DIST2
#define CT_DIST2 8u
#endif
#define PIPE 64u
_Static_assert(CT_DIST2 <= CT_DIST && CT_DIST < PIPE, "pipeline distances");

/* Stage 1 for key i of keys[]: bad keys get b = UINT32_MAX and are skipped by the later stages. */
PF_INLINE void stage1(const struct ct_geo* g, const uint8_t* keys, uint32_t i, struct probe* p)
{
	const uint8_t* key = keys + (size_t)i * NFQLB_KEY_LEN;
	if (!key_ok(key)) {
		p->b = UINT32_MAX;
		return;
	}
	probe_of(g, key, p);
	prefetch_home(g, p);
}

uint32_t nfqlb_ct_lookup_batch(uint8_t* base, const uint8_t* keys, uint32_t n, uint64_t now_ns,
			       const uint32_t* bytes, int32_t* fw_out, int32_t* row_out)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return 0;
	const struct ct_geo* g = &G;
	struct probe p[PIPE];
	uint32_t now = ms_of(now_ns), hits = 0, misses = 0, last_b = 0;
	if (keys == NULL || fw_out == NULL || row_out == NULL)
		return 0;
	for (uint32_t i = 0; i < n + CT_DIST; i++) {
		if (i < n)
			stage1(g, keys, i, &p[i % PIPE]);
		if (i >= CT_DIST2 && i - CT_DIST2 < n && p[(i - CT_DIST2) % PIPE].b != UINT32_MAX)
			prefetch_ways(g, &p[(i - CT_DIST2) % PIPE], 0);
		if (i < CT_DIST)
			continue;
		/* stage 3, in key order: a key seen twice in a batch finds what the first one left */
		uint32_t j = i - CT_DIST;
		const struct probe* q = &p[j % PIPE];
		if (q->b == UINT32_MAX) {
			fw_out[j] = row_out[j] = -1;
			continue;
		}
		fw_out[j] = lookup_at(g, q, now, bytes ? bytes[j] : 0, &row_out[j]);
		hits += fw_out[j] >= 0;
		misses += fw_out[j] < 0; /* a refused key is no miss, as in nfqlb_ct_lookup */
		last_b = q->b;
	}
	/* one stats shard per batch: two atomics instead of one per key (only the sums are read) */
	if (hits)
		stat_add(g, last_b, NFQLB_CT_STAT_HITS, hits);
	if (misses)
		stat_add(g, last_b, NFQLB_CT_STAT_MISSES, misses);
	return hits;
}

/* The flood guard: 1 when this new flow is over the limit of its second. */
static int flood(const struct ct_geo* g, uint64_t now_ns)
{
	struct ct_header* h = H(g->base);
	uint32_t limit = h->flood_per_s;
	if (limit == 0)
		return 0;
	uint64_t sec = (now_ns / 1000000000ull) & 0xffffffffull;
	uint64_t v = __atomic_load_n(&h->flood, __ATOMIC_RELAXED);
	for (;;) {
		uint64_t n = (v >> 32) == sec ? (v & 0xffffffffull) : 0;
		if (n >= limit)
			return 1;
		uint64_t nv = sec << 32 | (n + 1);
		if (__atomic_compare_exchange_n(&h->flood, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			return 0;
	}
}

/*
 * A free slot in bucket b for a new entry (lock held): a free way, else after
 * reclaiming expired entries, else the entry closest to expiry (pinned ones
 * never). -1 when every way is pinned.
 */
static int make_room(const struct ct_geo* g, uint32_t b, uint8_t tag, uint32_t now)
{
	struct ct_header* h = H(g->base);
	struct ct_bucket* bk = bucket(g, b);
	uint32_t home = tag % WAYS;
	int free_w = -1, victim = -1;
	int64_t best = INT64_MAX;
	if (bk->tag[home] == 0)
		return (int)home;
	for (uint32_t w = 0; w < WAYS; w++)
		if (bk->tag[w] == 0)
			return (int)w; /* a free way: no need to read the entries */
	for (uint32_t w = 0; w < WAYS; w++) {
		if (bk->tag[w] != 0) {
			struct ct_entry* e = entry(g, b * WAYS + w);
			int64_t rem = remaining(h, e, now);
			if (rem >= 0) {
				if (rem < best) {
					best = rem;
					victim = (int)w;
				}
				continue;
			}
			slot_free(g, b, w, NFQLB_CT_STAT_EXPIRATIONS);
		}
		if (free_w < 0 || w == home) /* the home way, which lookups prefetch, if free */
			free_w = (int)w;
	}
	if (free_w >= 0)
		return free_w;
	if (victim < 0 || best == INT64_MAX)
		return -1;
	slot_free(g, b, (uint32_t)victim, NFQLB_CT_STAT_RECYCLES);
	return victim;
}

/* Give entry e (bucket lock held) a new fwmark and row, moving its row count. */
static void move(const struct ct_geo* g, struct ct_entry* e, int32_t fwmark, int32_t row)
{
	uint16_t r = row_store(row);
	e->fwmark = fwmark;
	if (r != e->row) {
		row_dec(g, e->row);
		e->row = r;
		row_inc(g, r);
	}
}

static void fill(const struct ct_geo* g, uint32_t b, uint32_t w, uint8_t tag, const uint8_t* key, int32_t fwmark, int32_t row,
		 uint32_t now, uint8_t flags)
{
	struct ct_entry* e = entry(g, b * WAYS + w);
	memcpy(e->key, key, NFQLB_KEY_LEN);
	e->key[FLAGS_BYTE] = flags;
	e->fwmark = fwmark;
	e->row = row_store(row);
	e->lifetime = 0;
	e->last = e->created = now;
	e->counts = 0;
	__atomic_store_n(&bucket(g, b)->tag[w], tag, __ATOMIC_RELEASE); /* last: the entry is complete */
	row_inc(g, e->row);
	stat_add(g, b, NFQLB_CT_STAT_ENTRIES, 1);
	stat_add(g, b, NFQLB_CT_STAT_INSERTS, 1);
}

/* The insert proper, the key hashed (p). */
static int32_t insert_at(const struct ct_geo* g, const uint8_t* key, const struct probe* p, int32_t fwmark, int32_t row,
			 uint64_t now_ns, int check_flood)
{
	uint32_t b = p->b, now = ms_of(now_ns);
	struct ct_bucket* bk = bucket(g, b);
	int32_t rc = 0;
	lock(g, &bk->lock);
	int w = find(g, b, p->tag, &p->k, now, 1);
	if (w >= 0) {
		/* known flow: a new decision replaces the old one unless pinned */
		struct ct_entry* e = entry(g, b * WAYS + (uint32_t)w);
		if (!(e->key[FLAGS_BYTE] & NFQLB_CT_F_PINNED))
			move(g, e, fwmark, row);
		e->last = now;
	} else if (check_flood && flood(g, now_ns)) {
		rc = 1;
		stat_add(g, b, NFQLB_CT_STAT_FLOOD_SKIPS, 1);
	} else if ((w = make_room(g, b, p->tag, now)) < 0) {
		rc = -1;
	} else {
		fill(g, b, (uint32_t)w, p->tag, key, fwmark, row, now, 0);
	}
	unlock(&bk->lock);
	return rc;
}

static int32_t insert(const struct ct_geo* g, const uint8_t* key, int32_t fwmark, int32_t row, uint64_t now_ns,
		      int check_flood)
{
	if (!key_ok(key))
		return -1;
	struct probe p;
	probe_of(g, key, &p);
	prefetch_home(g, &p);
	return insert_at(g, key, &p, fwmark, row, now_ns, check_flood);
}

uint32_t nfqlb_ct_insert_batch(uint8_t* base, const uint8_t* keys, uint32_t n, const int32_t* fwmarks,
			       const int32_t* rows, uint64_t now_ns, int32_t* rc_out)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return 0;
	const struct ct_geo* g = &G;
	struct probe p[PIPE];
	uint32_t inserted = 0;
	if (keys == NULL || fwmarks == NULL || rows == NULL)
		return 0;
	for (uint32_t i = 0; i < n + CT_DIST; i++) {
		if (i < n)
			stage1(g, keys, i, &p[i % PIPE]);
		if (i >= CT_DIST2 && i - CT_DIST2 < n && p[(i - CT_DIST2) % PIPE].b != UINT32_MAX)
			prefetch_ways(g, &p[(i - CT_DIST2) % PIPE], 1);
		if (i < CT_DIST)
			continue;
		uint32_t j = i - CT_DIST;
		const struct probe* q = &p[j % PIPE];
		int32_t rc = q->b == UINT32_MAX ? -1
						: insert_at(g, keys + (size_t)j * NFQLB_KEY_LEN, q, fwmarks[j], rows[j],
							    now_ns, 1);
		inserted += rc == 0;
		if (rc_out)
			rc_out[j] = rc;
	}
	return inserted;
}

int32_t nfqlb_ct_insert(uint8_t* base, const uint8_t* key, int32_t fwmark, int32_t row, uint64_t now_ns)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return -1;
	const struct ct_geo* g = &G;
	return insert(g, key, fwmark, row, now_ns, 1);
}

int32_t nfqlb_ct_insert_admitted(uint8_t* base, const uint8_t* key, int32_t fwmark, int32_t row, uint64_t now_ns)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return -1;
	const struct ct_geo* g = &G;
	return insert(g, key, fwmark, row, now_ns, 0);
}

int32_t nfqlb_ct_flood_take(uint8_t* base, uint64_t now_ns)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return 0;
	const struct ct_geo* g = &G;
	if (!flood(g, now_ns))
		return 0;
	stat_add(g, 0, NFQLB_CT_STAT_FLOOD_SKIPS, 1);
	return 1;
}

/* ---------------------------------------------------------------------------
 * Upkeep (the dataplane sweeps), and what the schedulers (ct_sched.c) read.
 * ------------------------------------------------------------------------- */

uint32_t nfqlb_ct_sweep(uint8_t* base, uint32_t* cursor, uint32_t n, uint64_t now_ns)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return 0;
	const struct ct_geo* g = &G;
	struct ct_header* h = H(g->base);
	uint32_t now = ms_of(now_ns), reclaimed = 0;
	uint32_t b = *cursor < g->capacity ? *cursor / WAYS : 0;
	/* whole buckets, at least one and at most all: bounded work, the cursor always moves */
	uint32_t visit = (uint32_t)(((uint64_t)n + WAYS - 1) / WAYS);
	if (visit == 0)
		visit = 1;
	if (visit > g->nbuckets)
		visit = g->nbuckets;
	for (uint32_t k = 0; k < visit; k++) {
		struct ct_bucket* bk = bucket(g, b);
		lock(g, &bk->lock);
		for (uint32_t w = 0; w < WAYS; w++) {
			if (bk->tag[w] != 0 && expired(h, entry(g, b * WAYS + w), now)) {
				slot_free(g, b, w, NFQLB_CT_STAT_EXPIRATIONS);
				reclaimed++;
			}
		}
		unlock(&bk->lock);
		b = b + 1 == g->nbuckets ? 0 : b + 1;
	}
	*cursor = b * WAYS;
	return reclaimed;
}

uint32_t nfqlb_ct_row_count(const uint8_t* base, uint32_t row)
{
	struct ct_geo G;
	if (ct_geo((uint8_t*)base, &G) != 0)
		return 0;
	return row < ROW_NONE ? __atomic_load_n(&row_counts(&G)[row], __ATOMIC_RELAXED) : 0;
}

uint64_t nfqlb_ct_position_next(uint8_t* base)
{
	struct ct_geo G;
	if (ct_geo(base, &G) != 0)
		return 0;
	return __atomic_fetch_add((uint64_t*)(G.base + G.sched_off), 1ull, __ATOMIC_RELAXED);
}

uint32_t nfqlb_ct_scheduler(const uint8_t* base)
{
	struct ct_geo G;
	if (ct_geo((uint8_t*)base, &G) != 0)
		return NFQLB_SCHED_MAGLEV;
	return __atomic_load_n(&((const struct ct_header*)base)->scheduler, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------
 * What ct_admin.c uses (ct_internal.h): the static functions above, called
 * through these so the per-packet path keeps its own inlined copies.
 * ------------------------------------------------------------------------- */

void ct_probe(const struct ct_geo* g, const uint8_t* key, struct probe* p) { probe_of(g, key, p); }
void ct_lock(const struct ct_geo* g, uint32_t* l) { lock(g, l); }
int ct_find(const struct ct_geo* g, uint32_t b, uint8_t tag, const struct kw* k, uint32_t now, int reclaim)
{
	return find(g, b, tag, k, now, reclaim);
}
void ct_slot_free(const struct ct_geo* g, uint32_t b, uint32_t w, uint32_t stat) { slot_free(g, b, w, stat); }
int ct_make_room(const struct ct_geo* g, uint32_t b, uint8_t tag, uint32_t now) { return make_room(g, b, tag, now); }
void ct_fill(const struct ct_geo* g, uint32_t b, uint32_t w, uint8_t tag, const uint8_t* key, int32_t fwmark, int32_t row,
	     uint32_t now)
{
	fill(g, b, w, tag, key, fwmark, row, now, 0);
}
void ct_move(const struct ct_geo* g, struct ct_entry* e, int32_t fwmark, int32_t row) { move(g, e, fwmark, row); }
int64_t ct_ctx_find(const struct ct_geo* g, uint32_t idx) { return ctx_find(g, idx); }
void ct_ctx_free(const struct ct_geo* g, uint32_t idx) { ctx_free(g, idx); }
uint32_t ct_lifetime_ms(const struct ct_header* h, const struct ct_entry* e) { return lifetime_ms(h, e); }
int ct_expired(const struct ct_header* h, const struct ct_entry* e, uint32_t now) { return expired(h, e, now); }
