/*
 * ft.c - remembers, per fragmented datagram (src, dst, fragment id),
 * the fwmark its first fragment got, so later fragments follow it.
 *
 * Sized at creation, no allocation afterwards: `size` main slots (bucket =
 * djb2(key) % size, as upstream) plus a pool of `buckets` extra entries for
 * collisions; a pool of `frags` buffers of `mtu` bytes for fragments that
 * arrive before their first fragment (re-injected through the tun device once
 * it arrives); a pool of `reassembler` hole descriptors (RFC 815) that lets a
 * complete datagram free its entry early. Entries expire `ttl` after their
 * last use and are reclaimed lazily when their bucket is touched. Time is
 * passed in by the caller. One spinlock per bucket: queue workers run in
 * parallel threads; the pools have a lock each.
 *
 * Counters go straight into upstream's 72-byte ftshm record (docs/shm.md), so
 * `nfqlb stats` reads them live.
 */
#define _GNU_SOURCE
#include "nfqlb.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ST_FREE = 0, ST_STORING, ST_VALID, ST_POISONED };
#define HOLES_NONE -1      /* reassembly not started */
#define HOLES_ABANDONED -2 /* a fragment came before the first, or no descriptor was free */
#define HOLE_INF 0xffffffffu

struct entry {
	uint8_t key[NFQLB_KEY_LEN];
	int32_t fwmark;
	uint32_t state;
	uint64_t last_ns;
	int32_t next;   /* index into the extra pool, -1 = end */
	int32_t stored; /* stored fragments, most recent first; -1 = none */
	int32_t holes;  /* hole descriptor list, or HOLES_* */
};

struct hole {
	uint32_t first, last;
	int32_t next;
};

struct pool {
	int32_t head; /* free list */
	uint32_t lock;
	uint32_t used;
};

struct nfqlb_fragtable {
	uint32_t size, nextra;
	uint64_t ttl_ns;
	uint8_t* stats; /* 72-byte ftshm record, or own_stats */
	uint8_t own_stats[NFQLB_FTSTATS_LEN];
	uint32_t* locks;     /* one per bucket */
	struct entry* main;  /* size */
	struct entry* extra; /* nextra */
	struct pool epool;
	/* stored fragments */
	uint32_t nfrags, mtu;
	uint8_t* fragmem;
	uint32_t* fraglen;
	int32_t* fragnext;
	struct pool fpool;
	/* reassembler */
	uint32_t nholes;
	struct hole* holes;
	struct pool hpool;
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

/* Free lists over index-linked arrays: `next` gives the link of item i. */
static int32_t pool_take(struct pool* p, int32_t* next)
{
	lock(&p->lock);
	int32_t i = p->head;
	if (i >= 0) {
		p->head = next[i];
		p->used++;
	}
	unlock(&p->lock);
	return i;
}
static void pool_give(struct pool* p, int32_t* next, int32_t i)
{
	lock(&p->lock);
	next[i] = p->head;
	p->head = i;
	p->used--;
	unlock(&p->lock);
}

/* Link fields live inside the structs; give the pools an int32 view of them. */
#define ENEXT(ft, i) (&(ft)->extra[i].next)
#define HNEXT(ft, i) (&(ft)->holes[i].next)

static int32_t extra_take(struct nfqlb_fragtable* ft)
{
	lock(&ft->epool.lock);
	int32_t i = ft->epool.head;
	if (i >= 0) {
		ft->epool.head = ft->extra[i].next;
		ft->epool.used++;
		stat_set(ft, NFQLB_FTSTATS_BUCKETSALLOC, ft->epool.used);
		if (ft->epool.used > __atomic_load_n((uint32_t*)(ft->stats + NFQLB_FTSTATS_BUCKETSUSED), __ATOMIC_RELAXED))
			stat_set(ft, NFQLB_FTSTATS_BUCKETSUSED, ft->epool.used);
	}
	unlock(&ft->epool.lock);
	return i;
}
static void extra_give(struct nfqlb_fragtable* ft, int32_t i)
{
	lock(&ft->epool.lock);
	ft->extra[i].state = ST_FREE;
	ft->extra[i].next = ft->epool.head;
	ft->epool.head = i;
	ft->epool.used--;
	stat_set(ft, NFQLB_FTSTATS_BUCKETSALLOC, ft->epool.used);
	unlock(&ft->epool.lock);
}
static int32_t hole_take(struct nfqlb_fragtable* ft)
{
	lock(&ft->hpool.lock);
	int32_t i = ft->hpool.head;
	if (i >= 0) {
		ft->hpool.head = *HNEXT(ft, i);
		ft->hpool.used++;
	}
	unlock(&ft->hpool.lock);
	return i;
}
static void holes_free(struct nfqlb_fragtable* ft, int32_t h)
{
	while (h >= 0) {
		int32_t n = ft->holes[h].next;
		lock(&ft->hpool.lock);
		ft->holes[h].next = ft->hpool.head;
		ft->hpool.head = h;
		ft->hpool.used--;
		unlock(&ft->hpool.lock);
		h = n;
	}
}

/* Free a chain of stored fragments; returns how many there were. */
static uint32_t frags_free(struct nfqlb_fragtable* ft, int32_t f)
{
	uint32_t n = 0;
	while (f >= 0) {
		int32_t next = ft->fragnext[f];
		pool_give(&ft->fpool, ft->fragnext, f);
		f = next;
		n++;
	}
	return n;
}

struct nfqlb_fragtable* nfqlb_ft_create(uint32_t size, uint32_t buckets, uint32_t ttl_ms, uint32_t mtu,
					uint32_t frags, uint32_t reassembler, uint8_t* stats)
{
	if (size == 0 || mtu == 0)
		return NULL;
	struct nfqlb_fragtable* ft = calloc(1, sizeof(*ft));
	if (!ft)
		return NULL;
	ft->size = size;
	ft->nextra = buckets;
	ft->ttl_ns = (uint64_t)ttl_ms * 1000000ull;
	ft->stats = stats ? stats : ft->own_stats;
	ft->nfrags = frags;
	ft->mtu = mtu;
	ft->nholes = reassembler;
	ft->locks = calloc(size, sizeof(uint32_t));
	ft->main = calloc(size, sizeof(struct entry));
	ft->extra = calloc(buckets ? buckets : 1, sizeof(struct entry));
	ft->fragmem = malloc((size_t)(frags ? frags : 1) * mtu);
	ft->fraglen = calloc(frags ? frags : 1, sizeof(uint32_t));
	ft->fragnext = calloc(frags ? frags : 1, sizeof(int32_t));
	ft->holes = calloc(reassembler ? reassembler : 1, sizeof(struct hole));
	if (!ft->locks || !ft->main || !ft->extra || !ft->fragmem || !ft->fraglen || !ft->fragnext || !ft->holes) {
		nfqlb_ft_destroy(ft);
		return NULL;
	}
	for (uint32_t i = 0; i < size; i++)
		ft->main[i].next = -1; /* empty chains (calloc's 0 would point at extra[0]) */
	for (uint32_t i = 0; i < buckets; i++)
		ft->extra[i].next = i + 1 < buckets ? (int32_t)(i + 1) : -1;
	ft->epool.head = buckets ? 0 : -1;
	for (uint32_t i = 0; i < frags; i++)
		ft->fragnext[i] = i + 1 < frags ? (int32_t)(i + 1) : -1;
	ft->fpool.head = frags ? 0 : -1;
	for (uint32_t i = 0; i < reassembler; i++)
		ft->holes[i].next = i + 1 < reassembler ? (int32_t)(i + 1) : -1;
	ft->hpool.head = reassembler ? 0 : -1;
	memset(ft->stats, 0, NFQLB_FTSTATS_LEN);
	uint64_t ttl = ft->ttl_ns;
	memcpy(ft->stats + NFQLB_FTSTATS_TTL, &ttl, 8);
	stat_set(ft, NFQLB_FTSTATS_SIZE, size);
	stat_set(ft, NFQLB_FTSTATS_MTU, mtu);
	stat_set(ft, NFQLB_FTSTATS_BUCKETSMAX, buckets);
	stat_set(ft, NFQLB_FTSTATS_FRAGSMAX, frags);
	return ft;
}

void nfqlb_ft_destroy(struct nfqlb_fragtable* ft)
{
	if (!ft)
		return;
	free(ft->locks);
	free(ft->main);
	free(ft->extra);
	free(ft->fragmem);
	free(ft->fraglen);
	free(ft->fragnext);
	free(ft->holes);
	free(ft);
}

static int expired(const struct nfqlb_fragtable* ft, const struct entry* e, uint64_t now)
{
	return now > e->last_ns && now - e->last_ns > ft->ttl_ns;
}

/* Release what an entry holds (stored fragments, holes); the caller frees the slot. */
static void entry_clear(struct nfqlb_fragtable* ft, struct entry* e)
{
	uint32_t n = frags_free(ft, e->stored);
	if (n)
		stat_add(ft, NFQLB_FTSTATS_FRAGSDISCARDED, (int32_t)n);
	e->stored = -1;
	if (e->holes >= 0)
		holes_free(ft, e->holes);
	e->holes = HOLES_NONE;
	stat_add(ft, NFQLB_FTSTATS_ACTIVE, -1);
}

/* Remove entry e from the bucket whose main slot is head (bucket lock held). */
static void entry_remove(struct nfqlb_fragtable* ft, struct entry* head, struct entry* e)
{
	entry_clear(ft, e);
	if (e == head) {
		head->state = ST_FREE;
		return;
	}
	for (int32_t* link = &head->next; *link >= 0; link = &ft->extra[*link].next) {
		if (&ft->extra[*link] == e) {
			int32_t i = *link;
			*link = e->next;
			extra_give(ft, i);
			return;
		}
	}
}

/* Drop expired entries of a bucket (lock held). */
static void gc_bucket(struct nfqlb_fragtable* ft, struct entry* head, uint64_t now)
{
	if (head->state != ST_FREE && expired(ft, head, now)) {
		entry_clear(ft, head);
		head->state = ST_FREE;
		stat_add(ft, NFQLB_FTSTATS_OBJGC, 1);
	}
	int32_t* link = &head->next;
	while (*link >= 0) {
		struct entry* e = &ft->extra[*link];
		if (expired(ft, e, now)) {
			int32_t i = *link;
			*link = e->next;
			entry_clear(ft, e);
			stat_add(ft, NFQLB_FTSTATS_OBJGC, 1);
			extra_give(ft, i);
		} else {
			link = &e->next;
		}
	}
}

/*
 * Find the entry for key in its bucket, or create it. Returns NULL when the
 * pool is exhausted (counted as rejected). Bucket lock held by the caller.
 */
static struct entry* find_or_create(struct nfqlb_fragtable* ft, struct entry* head, const uint8_t* key,
				    uint64_t now, int* created)
{
	*created = 0;
	stat_add(ft, NFQLB_FTSTATS_LOOKUPS, 1);
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
			stat_add(ft, NFQLB_FTSTATS_COLLISIONS, 1);
	} else {
		int32_t i = extra_take(ft);
		if (i < 0) {
			stat_add(ft, NFQLB_FTSTATS_REJECTED, 1);
			return NULL;
		}
		stat_add(ft, NFQLB_FTSTATS_COLLISIONS, 1);
		e = &ft->extra[i];
		e->next = head->next;
		head->next = i;
	}
	memcpy(e->key, key, NFQLB_KEY_LEN);
	e->state = ST_FREE;
	e->fwmark = -1;
	e->last_ns = now;
	e->stored = -1;
	e->holes = HOLES_NONE;
	stat_add(ft, NFQLB_FTSTATS_INSERTS, 1);
	stat_add(ft, NFQLB_FTSTATS_ACTIVE, 1);
	*created = 1;
	return e;
}

/*
 * RFC 815: fill [first, last] (more = more fragments follow). Returns 1 when
 * the datagram is complete, 0 when holes remain, -1 when out of descriptors.
 */
static int holes_fill(struct nfqlb_fragtable* ft, struct entry* e, uint32_t first, uint32_t last, int more)
{
	int32_t* link = &e->holes;
	while (*link >= 0) {
		int32_t h = *link;
		struct hole* hp = &ft->holes[h];
		if (first > hp->last || last < hp->first) {
			link = &hp->next;
			continue;
		}
		uint32_t hfirst = hp->first, hlast = hp->last;
		*link = hp->next; /* delete this hole; insert up to two new ones in its place */
		int32_t after = *link;
		struct hole add[2];
		int nadd = 0;
		if (first > hfirst)
			add[nadd++] = (struct hole){ hfirst, first - 1, -1 };
		if (last < hlast && more)
			add[nadd++] = (struct hole){ last + 1, hlast, -1 };
		/* reuse the deleted descriptor for the first new hole */
		int32_t slots[2] = { h, -1 };
		if (nadd == 2 && (slots[1] = hole_take(ft)) < 0) {
			*link = h; /* put it back; reassembly gives up (the TTL still applies) */
			hp->next = after;
			return -1;
		}
		if (nadd == 0) {
			lock(&ft->hpool.lock);
			ft->holes[h].next = ft->hpool.head;
			ft->hpool.head = h;
			ft->hpool.used--;
			unlock(&ft->hpool.lock);
			continue;
		}
		for (int i = nadd - 1; i >= 0; i--) {
			ft->holes[slots[i]] = add[i];
			ft->holes[slots[i]].next = after;
			after = slots[i];
		}
		*link = after;
		link = &ft->holes[slots[nadd - 1]].next;
	}
	return e->holes < 0 ? 1 : 0;
}

/* Feed a fragment to the entry's reassembler; 1 = complete (remove the entry). */
static int reassemble(struct nfqlb_fragtable* ft, struct entry* e, const uint32_t* info, int first_frag)
{
	if (ft->nholes == 0 || info == NULL || e->holes == HOLES_ABANDONED)
		return 0;
	if (e->holes == HOLES_NONE) {
		if (!first_frag) /* reassembly starts with the first fragment only */
			return 0;
		int32_t h = hole_take(ft);
		if (h < 0) {
			e->holes = HOLES_ABANDONED;
			return 0;
		}
		ft->holes[h] = (struct hole){ 0, HOLE_INF, -1 };
		e->holes = h;
	}
	if (info[1] == 0)
		return 0;
	int r = holes_fill(ft, e, info[0], info[0] + info[1] - 1, (int)info[2]);
	if (r < 0) {
		holes_free(ft, e->holes);
		e->holes = HOLES_ABANDONED;
		return 0;
	}
	return r;
}

int32_t nfqlb_ft_first(struct nfqlb_fragtable* ft, const uint8_t* key, int32_t fwmark, uint64_t now,
		       const uint32_t* info, int32_t* inject)
{
	*inject = -1;
	uint32_t b = nfqlb_hash_djb2(key, NFQLB_KEY_LEN) % ft->size;
	lock(&ft->locks[b]);
	int created;
	struct entry* head = &ft->main[b];
	struct entry* e = find_or_create(ft, head, key, now, &created);
	int32_t rc = -1;
	if (e) {
		e->last_ns = now;
		if (created || e->state == ST_STORING) {
			if (e->state == ST_STORING)
				e->holes = HOLES_ABANDONED; /* as upstream: only in-order datagrams are reassembled */
			e->state = ST_VALID;
			e->fwmark = fwmark;
			*inject = e->stored; /* the caller re-injects and frees them */
			e->stored = -1;
			rc = 0;
			if (reassemble(ft, e, info, 1) == 1) {
				stat_add(ft, NFQLB_FTSTATS_REASSEMBLED, 1);
				entry_remove(ft, head, e);
			}
		} else if (e->state == ST_VALID && e->fwmark == fwmark) {
			rc = 0; /* a duplicate first fragment: same verdict (upstream drops it) */
		} else {
			/* A first fragment for a datagram we already decided (another fwmark) or
			 * lost: the sender reused the fragment id within the TTL, which Linux does
			 * (seen within 5 ms). The new datagram wins; upstream drops it. */
			uint32_t n = frags_free(ft, e->stored);
			if (n)
				stat_add(ft, NFQLB_FTSTATS_FRAGSDISCARDED, (int32_t)n);
			e->stored = -1;
			if (e->holes >= 0)
				holes_free(ft, e->holes);
			e->holes = HOLES_NONE;
			e->state = ST_VALID;
			e->fwmark = fwmark;
			rc = 0;
			if (reassemble(ft, e, info, 1) == 1) {
				stat_add(ft, NFQLB_FTSTATS_REASSEMBLED, 1);
				entry_remove(ft, head, e);
			}
		}
	}
	unlock(&ft->locks[b]);
	return rc;
}

int32_t nfqlb_ft_next(struct nfqlb_fragtable* ft, const uint8_t* key, uint64_t now, const uint8_t* pkt,
		      uint32_t len, const uint32_t* info, int32_t* fwmark)
{
	uint32_t b = nfqlb_hash_djb2(key, NFQLB_KEY_LEN) % ft->size;
	lock(&ft->locks[b]);
	int created;
	struct entry* head = &ft->main[b];
	struct entry* e = find_or_create(ft, head, key, now, &created);
	int32_t rc = -1;
	if (e) {
		e->last_ns = now;
		if (created)
			e->state = ST_STORING;
		if (e->state == ST_VALID) {
			*fwmark = e->fwmark;
			rc = 0;
			if (reassemble(ft, e, info, 0) == 1) {
				stat_add(ft, NFQLB_FTSTATS_REASSEMBLED, 1);
				entry_remove(ft, head, e);
			}
		} else if (e->state == ST_STORING) {
			/* before its first fragment: keep a copy, drop the original */
			int32_t f = (pkt != NULL && len <= ft->mtu) ? pool_take(&ft->fpool, ft->fragnext) : -1;
			if (f < 0) {
				/* cannot keep it: the datagram is lost, free what it holds */
				uint32_t n = frags_free(ft, e->stored);
				if (n)
					stat_add(ft, NFQLB_FTSTATS_FRAGSDISCARDED, (int32_t)n);
				e->stored = -1;
				e->state = ST_POISONED;
			} else {
				memcpy(ft->fragmem + (size_t)f * ft->mtu, pkt, len);
				ft->fraglen[f] = len;
				ft->fragnext[f] = e->stored;
				e->stored = f;
				stat_add(ft, NFQLB_FTSTATS_FRAGSALLOC, 1);
				rc = 1;
			}
		}
	}
	unlock(&ft->locks[b]);
	return rc;
}

uint32_t nfqlb_ft_inject(struct nfqlb_fragtable* ft, int32_t chain, int32_t tun_fd, uint32_t* failed)
{
	uint32_t n = 0;
	*failed = 0;
	while (chain >= 0) {
		int32_t next = ft->fragnext[chain];
		if (tun_fd < 0 ||
		    write(tun_fd, ft->fragmem + (size_t)chain * ft->mtu, ft->fraglen[chain]) != (ssize_t)ft->fraglen[chain])
			(*failed)++;
		else
			n++;
		pool_give(&ft->fpool, ft->fragnext, chain);
		chain = next;
	}
	return n;
}
