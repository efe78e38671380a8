/*
 * fragtable.c - remembers, per fragmented datagram (src, dst, fragment id),
 * the fwmark its first fragment got, so later fragments follow it.
 *
 * Sized at creation, no allocation afterwards: `size` main slots (bucket =
 * djb2(key) % size, as upstream) plus a pool of `buckets` extra entries for
 * collisions. Entries expire `ttl` after their last use and are reclaimed
 * lazily when their bucket is touched. Time is passed in by the caller.
 * One spinlock per bucket: queue workers run in parallel threads.
 *
 * Counters go straight into upstream's 72-byte ftshm record (docs/shm.md), so
 * `nfqlb stats` reads them live.
 */
#include "nfqlb.h"
#include <stdlib.h>
#include <string.h>

enum { ST_FREE = 0, ST_STORING, ST_VALID, ST_POISONED };

struct entry {
	uint8_t key[NFQLB_KEY_LEN];
	int32_t fwmark;
	uint32_t state;
	uint64_t last_ns;
	int32_t next; /* index into the extra pool, -1 = end */
};

struct nfqlb_fragtable {
	uint32_t size, nextra;
	uint64_t ttl_ns;
	uint8_t* stats; /* 72-byte ftshm record, or a private one */
	uint8_t own_stats[NFQLB_FTSTATS_LEN];
	uint32_t* locks;       /* one per bucket */
	struct entry* main;    /* size */
	struct entry* extra;   /* nextra */
	int32_t free_head;     /* free list of extra entries */
	uint32_t pool_lock;
	uint32_t extra_used;
};

/* ftshm offsets (upstream struct fragStats) */
enum {
	FS_TTL = 0, FS_SIZE = 8, FS_ACTIVE = 12, FS_COLLISIONS = 16, FS_INSERTS = 20, FS_REJECTED = 24,
	FS_LOOKUPS = 28, FS_OBJGC = 32, FS_MTU = 40, FS_BUCKETSMAX = 44, FS_BUCKETSALLOC = 48,
	FS_BUCKETSUSED = 52, FS_FRAGSMAX = 56, FS_FRAGSDISCARDED = 60, FS_FRAGSALLOC = 64, FS_REASSEMBLED = 68
};

static void stat_add(struct nfqlb_fragtable* ft, uint32_t off, int32_t v)
{
	__atomic_fetch_add((uint32_t*)(ft->stats + off), (uint32_t)v, __ATOMIC_RELAXED);
}
static void stat_set(struct nfqlb_fragtable* ft, uint32_t off, uint32_t v)
{
	__atomic_store_n((uint32_t*)(ft->stats + off), v, __ATOMIC_RELAXED);
}

static void lock(uint32_t* l)
{
	while (__atomic_exchange_n(l, 1u, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(l, __ATOMIC_RELAXED))
			;
}
static void unlock(uint32_t* l) { __atomic_store_n(l, 0u, __ATOMIC_RELEASE); }

struct nfqlb_fragtable* nfqlb_ft_create(uint32_t size, uint32_t buckets, uint32_t ttl_ms, uint32_t mtu,
					uint32_t frags, uint8_t* stats)
{
	if (size == 0)
		return NULL;
	struct nfqlb_fragtable* ft = calloc(1, sizeof(*ft));
	if (!ft)
		return NULL;
	ft->size = size;
	ft->nextra = buckets;
	ft->ttl_ns = (uint64_t)ttl_ms * 1000000ull;
	ft->stats = stats ? stats : ft->own_stats;
	ft->locks = calloc(size, sizeof(uint32_t));
	ft->main = calloc(size, sizeof(struct entry));
	ft->extra = calloc(buckets ? buckets : 1, sizeof(struct entry));
	if (!ft->locks || !ft->main || !ft->extra) {
		nfqlb_ft_destroy(ft);
		return NULL;
	}
	for (uint32_t i = 0; i < size; i++)
		ft->main[i].next = -1; /* empty chains (calloc's 0 would point at extra[0]) */
	for (uint32_t i = 0; i < buckets; i++)
		ft->extra[i].next = i + 1 < buckets ? (int32_t)(i + 1) : -1;
	ft->free_head = buckets ? 0 : -1;
	memset(ft->stats, 0, NFQLB_FTSTATS_LEN);
	uint64_t ttl = ft->ttl_ns;
	memcpy(ft->stats + FS_TTL, &ttl, 8);
	stat_set(ft, FS_SIZE, size);
	stat_set(ft, FS_MTU, mtu);
	stat_set(ft, FS_BUCKETSMAX, buckets);
	stat_set(ft, FS_FRAGSMAX, frags);
	return ft;
}

void nfqlb_ft_destroy(struct nfqlb_fragtable* ft)
{
	if (!ft)
		return;
	free(ft->locks);
	free(ft->main);
	free(ft->extra);
	free(ft);
}

static int32_t pool_get(struct nfqlb_fragtable* ft)
{
	lock(&ft->pool_lock);
	int32_t i = ft->free_head;
	if (i >= 0) {
		ft->free_head = ft->extra[i].next;
		ft->extra_used++;
		stat_set(ft, FS_BUCKETSALLOC, ft->extra_used);
		if (ft->extra_used > __atomic_load_n((uint32_t*)(ft->stats + FS_BUCKETSUSED), __ATOMIC_RELAXED))
			stat_set(ft, FS_BUCKETSUSED, ft->extra_used);
	}
	unlock(&ft->pool_lock);
	return i;
}

static void pool_put(struct nfqlb_fragtable* ft, int32_t i)
{
	lock(&ft->pool_lock);
	ft->extra[i].state = ST_FREE;
	ft->extra[i].next = ft->free_head;
	ft->free_head = i;
	ft->extra_used--;
	stat_set(ft, FS_BUCKETSALLOC, ft->extra_used);
	unlock(&ft->pool_lock);
}

static int expired(const struct nfqlb_fragtable* ft, const struct entry* e, uint64_t now)
{
	return now > e->last_ns && now - e->last_ns > ft->ttl_ns;
}

/* Drop expired entries of a bucket (lock held). */
static void gc_bucket(struct nfqlb_fragtable* ft, struct entry* head, uint64_t now)
{
	if (head->state != ST_FREE && expired(ft, head, now)) {
		head->state = ST_FREE;
		stat_add(ft, FS_OBJGC, 1);
		stat_add(ft, FS_ACTIVE, -1);
	}
	int32_t* link = &head->next;
	while (*link >= 0) {
		struct entry* e = &ft->extra[*link];
		if (expired(ft, e, now)) {
			int32_t i = *link;
			*link = e->next;
			stat_add(ft, FS_OBJGC, 1);
			stat_add(ft, FS_ACTIVE, -1);
			pool_put(ft, i);
		} else {
			link = &e->next;
		}
	}
}

/*
 * Find the entry for key in its bucket, or create it in state `st`.
 * Returns NULL when the pool is exhausted (counted as rejected).
 * *created tells which. Bucket lock held by the caller.
 */
static struct entry* find_or_create(struct nfqlb_fragtable* ft, struct entry* head, const uint8_t* key,
				    uint64_t now, int* created)
{
	*created = 0;
	stat_add(ft, FS_LOOKUPS, 1);
	gc_bucket(ft, head, now);
	if (head->state != ST_FREE && memcmp(head->key, key, NFQLB_KEY_LEN) == 0)
		return head;
	for (int32_t i = head->next; i >= 0; i = ft->extra[i].next)
		if (memcmp(ft->extra[i].key, key, NFQLB_KEY_LEN) == 0)
			return &ft->extra[i];
	struct entry* e;
	if (head->state == ST_FREE) {
		e = head;
		if (head->next >= 0)
			stat_add(ft, FS_COLLISIONS, 1);
	} else {
		int32_t i = pool_get(ft);
		if (i < 0) {
			stat_add(ft, FS_REJECTED, 1);
			return NULL;
		}
		stat_add(ft, FS_COLLISIONS, 1);
		e = &ft->extra[i];
		e->next = head->next;
		head->next = i;
	}
	memcpy(e->key, key, NFQLB_KEY_LEN);
	e->state = ST_FREE;
	e->fwmark = -1;
	e->last_ns = now;
	stat_add(ft, FS_INSERTS, 1);
	stat_add(ft, FS_ACTIVE, 1);
	*created = 1;
	return e;
}

int32_t nfqlb_ft_first(struct nfqlb_fragtable* ft, const uint8_t* key, int32_t fwmark, uint64_t now)
{
	uint32_t b = nfqlb_djb2(key, NFQLB_KEY_LEN) % ft->size;
	lock(&ft->locks[b]);
	int created;
	struct entry* e = find_or_create(ft, &ft->main[b], key, now, &created);
	int32_t rc = -1;
	if (e) {
		e->last_ns = now;
		if (created || e->state == ST_STORING) {
			e->state = ST_VALID;
			e->fwmark = fwmark;
			rc = 0;
		} else if (e->state == ST_VALID && e->fwmark == fwmark) {
			rc = 0; /* a duplicate first fragment: same verdict (upstream drops it) */
		}
	}
	unlock(&ft->locks[b]);
	return rc;
}

int32_t nfqlb_ft_next(struct nfqlb_fragtable* ft, const uint8_t* key, uint64_t now, int32_t* fwmark)
{
	uint32_t b = nfqlb_djb2(key, NFQLB_KEY_LEN) % ft->size;
	lock(&ft->locks[b]);
	int created;
	struct entry* e = find_or_create(ft, &ft->main[b], key, now, &created);
	int32_t rc = -1;
	if (e) {
		e->last_ns = now;
		if (created) {
			/* Arrived before its first fragment. Without fragment storage
			 * (no tun yet) it is lost, and so is the datagram: poison it. */
			e->state = ST_POISONED;
		} else if (e->state == ST_VALID) {
			*fwmark = e->fwmark;
			rc = 0;
		}
	}
	unlock(&ft->locks[b]);
	return rc;
}
