/*
 * ct_internal.h - the connection table's layout, and the operations of ct.c
 * that ct_admin.c uses. Private to those two files: not part of nfqlb.h, and
 * the ct_* functions are hidden (not exported by libnfqlb.so).
 *
 * layout: docs/conntrack.md#layout-version-2-little-endian (the structs below
 * follow it field by field)
 *
 * A bucket b owns entries 8b..8b+7 (set-associative: a key lives only in its
 * bucket) and counts into stats shard b % 16, so threads rarely share a
 * counter line. The per-row counts are +1 when an entry gets a row, -1 when
 * it loses it (deleted, expired and reclaimed, recycled, moved); expired
 * entries count until reclaimed (nfqlb_ct_sweep). A slot is in use when its
 * tag (8 bits of the hash, never 0) is non-zero; a lookup compares the 8 tags
 * of its bucket (one cache line holds 4 descriptors) and reads only the
 * entries whose tag matches.
 */
#ifndef NFQLB_CT_INTERNAL_H
#define NFQLB_CT_INTERNAL_H

#include "nfqlb.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the connection table assumes a little-endian machine (the shm layout is little-endian)"
#endif

#define WAYS 8u
#define HEADER 128u
#define SHARDS 16u
#define SHARD_BYTES 64u
#define BUCKETS_OFF (HEADER + SHARDS * SHARD_BYTES) /* 1152 */
#define SCHED_BYTES 64u
#define ROW_SLOTS 65536u
#define CTX_REC 264u
#define SHARDED 8u /* counters per shard: NFQLB_CT_STAT_ENTRIES..DELETES */
#define FLAGS_BYTE 35 /* key byte 35 (proto high byte, always 0) holds the flags */
#define ROW_NONE 0xffffu
#define LIFETIME_SECONDS 0x8000u
#define SPIN_BEFORE_CHECK (1u << 16) /* spins before asking whether the owner is alive */

/* Internal flag (never reported): the slot holds a context record. */
#define F_HAS_CTX 0x80u

struct ct_header {
	uint32_t magic;        /* 0 */
	uint16_t version;      /* 4 */
	uint16_t header_size;  /* 6  offset of the buckets (1152) */
	uint64_t file_size;    /* 8 */
	uint32_t capacity;     /* 16 slots (nbuckets * 8) */
	uint32_t nbuckets;     /* 20 */
	uint32_t ctx_slots;    /* 24 */
	uint32_t flood_per_s;  /* 28 0 = no flood guard */
	uint32_t ttl_ms[3];    /* 32 tcp, udp, other */
	uint32_t ways;         /* 44 */
	uint64_t seed;         /* 48 hash seed */
	uint64_t flood;        /* 56 second << 32 | new flows in that second */
	uint32_t ctx_lock;     /* 64 */
	uint32_t ctx_used;     /* 68 */
	uint64_t entries_off;  /* 72 */
	uint64_t ctx_off;      /* 80 */
	uint64_t lock_steals;  /* 88 */
	uint32_t scheduler;    /* 96 enum nfqlb_sched (ct_sched.c) */
	uint32_t reserved0;    /* 100 */
	uint64_t sched_off;    /* 104 the scheduler line; the row counts follow */
	uint32_t reserved[4];  /* 112..127 */
};
_Static_assert(sizeof(struct ct_header) == HEADER, "header is 128 bytes");
_Static_assert(offsetof(struct ct_header, version) == NFQLB_CT_OFF_VERSION, "header layout");

struct ct_bucket {
	uint32_t lock; /* 0 free, else the owner's kernel tid */
	uint8_t tag[WAYS];
	uint32_t pad;
};
_Static_assert(sizeof(struct ct_bucket) == 16, "bucket descriptor is 16 bytes");

/* The core entry: one cache line. */
struct ct_entry {
	uint8_t key[NFQLB_KEY_LEN]; /* 0  byte 35 = flags (NFQLB_CT_F_* | F_HAS_CTX) */
	int32_t fwmark;             /* 40 */
	uint16_t row;               /* 44 ROW_NONE = none */
	uint16_t lifetime;          /* 46 0 = by protocol; else ms, or seconds with bit 15 */
	uint32_t last;              /* 48 last seen, ms (CLOCK_MONOTONIC / 1e6, mod 2^32) */
	uint32_t created;           /* 52 ms, the same clock */
	uint64_t counts;            /* 56 packets << 40 | bytes, each saturating */
};
_Static_assert(sizeof(struct ct_entry) == NFQLB_CT_ENTRY_BYTES, "entry is 64 bytes");

struct ct_ctx {
	uint32_t owner; /* 0 free, CTX_TOMB deleted, else entry index + 1 */
	uint32_t len;
	uint8_t data[NFQLB_CT_CTX_MAX];
};
_Static_assert(sizeof(struct ct_ctx) == CTX_REC, "ctx record is 264 bytes");
#define CTX_TOMB 0xffffffffu

static inline struct ct_header* H(uint8_t* base) { return (struct ct_header*)base; }
_Static_assert(SHARDED * 8 == SHARD_BYTES, "a shard holds the sharded counters");
_Static_assert(SHARDED == NFQLB_CT_STAT_LOCK_STEALS, "sharded counters come first");

#define PKT_SHIFT 40
#define BYTES_MASK ((1ull << PKT_SHIFT) - 1)
#define PKT_MAX ((1ull << (64 - PKT_SHIFT)) - 1)

#define NFQLB_HIDDEN __attribute__((visibility("hidden")))

static inline uint64_t ct_align64(uint64_t v) { return (v + 63u) & ~63ull; }

/* Where everything is, from (capacity, ctx_slots): docs/conntrack.md "Layout". */
struct ct_layout {
	uint32_t nbuckets;
	uint64_t entries_off, ctx_off, sched_off, size;
};

static inline int ct_layout_of(uint32_t capacity, uint32_t ctx_slots, struct ct_layout* L)
{
	if (capacity == 0 || capacity > NFQLB_CT_MAX_CAPACITY || ctx_slots > NFQLB_CT_MAX_CTX)
		return -1;
	L->nbuckets = (capacity + WAYS - 1) / WAYS;
	L->entries_off = ct_align64(BUCKETS_OFF + 16ull * L->nbuckets);
	L->ctx_off = L->entries_off + (uint64_t)L->nbuckets * WAYS * sizeof(struct ct_entry);
	L->sched_off = ct_align64(L->ctx_off + (uint64_t)ctx_slots * CTX_REC);
	L->size = L->sched_off + SCHED_BYTES + ROW_SLOTS * 4u;
	return 0;
}

/*
 * The geometry of a table, read once per call from its header and checked
 * against the layout (ct_geo): every address a call computes comes from
 * here, never from the header again. A header zeroed or overwritten while a
 * dataplane uses the table (or read half-written) then fails the check, and
 * the call does nothing (a lookup misses), instead of sending an access out
 * of the file. A truncated file is the SIGBUS guard's (file.c).
 */
struct ct_geo {
	uint8_t* base;
	uint32_t nbuckets, capacity, ctx_slots;
	uint64_t entries_off, ctx_off, sched_off;
};

/* g from base's header: 0, or -1 when the header is not a consistent table (then g is unusable). */
static inline int ct_geo(uint8_t* base, struct ct_geo* g)
{
	if (base == NULL)
		return -1;
	const struct ct_header* h = (const struct ct_header*)base;
	/* magic, version and header size are the first 8 bytes: one compare (little-endian, ct_internal.h) */
	const uint64_t first = (uint64_t)NFQLB_CT_MAGIC | (uint64_t)NFQLB_CT_VERSION << 32 | (uint64_t)BUCKETS_OFF << 48;
	uint32_t capacity = __atomic_load_n(&h->capacity, __ATOMIC_RELAXED);
	uint32_t nbuckets = __atomic_load_n(&h->nbuckets, __ATOMIC_RELAXED);
	uint32_t ctx_slots = __atomic_load_n(&h->ctx_slots, __ATOMIC_RELAXED);
	if (__atomic_load_n((const uint64_t*)base, __ATOMIC_ACQUIRE) != first || h->ways != WAYS || nbuckets == 0 ||
	    nbuckets > (NFQLB_CT_MAX_CAPACITY + WAYS - 1) / WAYS || capacity != nbuckets * WAYS ||
	    ctx_slots > NFQLB_CT_MAX_CTX)
		return -1;
	/* the layout of ct_layout_of, from nbuckets (capacity is a multiple of WAYS here) */
	uint64_t entries_off = ct_align64(BUCKETS_OFF + 16ull * nbuckets);
	uint64_t ctx_off = entries_off + (uint64_t)nbuckets * WAYS * sizeof(struct ct_entry);
	uint64_t sched_off = ct_align64(ctx_off + (uint64_t)ctx_slots * CTX_REC);
	if (h->entries_off != entries_off || h->ctx_off != ctx_off || h->sched_off != sched_off ||
	    h->file_size != sched_off + SCHED_BYTES + ROW_SLOTS * 4u)
		return -1;
	g->base = base;
	g->nbuckets = nbuckets;
	g->capacity = capacity;
	g->ctx_slots = ctx_slots;
	g->entries_off = entries_off;
	g->ctx_off = ctx_off;
	g->sched_off = sched_off;
	return 0;
}

/*
 * g from base's header unchecked: only for computing addresses to prefetch,
 * which never fault whatever they are (nfqlb_ct_prefetch). Never for a load.
 */
static inline void ct_geo_unchecked(uint8_t* base, struct ct_geo* g)
{
	const struct ct_header* h = (const struct ct_header*)base;
	g->base = base;
	g->nbuckets = __atomic_load_n(&h->nbuckets, __ATOMIC_RELAXED);
	g->capacity = 0;
	g->ctx_slots = 0;
	g->entries_off = __atomic_load_n(&h->entries_off, __ATOMIC_RELAXED);
	g->ctx_off = 0;
	g->sched_off = 0;
}

static inline uint64_t* shard(const struct ct_geo* g, uint32_t b)
{
	return (uint64_t*)(g->base + HEADER + (b % SHARDS) * SHARD_BYTES);
}

/* Live entries per row (rows < ROW_NONE); relaxed atomics: threads and processes share them. */
static inline uint32_t* row_counts(const struct ct_geo* g) { return (uint32_t*)(g->base + g->sched_off + SCHED_BYTES); }

/* Bucket b < g->nbuckets, entry i < g->capacity, context record i < g->ctx_slots. */
static inline struct ct_bucket* bucket(const struct ct_geo* g, uint32_t b)
{
	return (struct ct_bucket*)(g->base + BUCKETS_OFF) + b;
}
static inline struct ct_entry* entry(const struct ct_geo* g, uint32_t i)
{
	return (struct ct_entry*)(g->base + g->entries_off) + i;
}
static inline struct ct_ctx* ctxrec(const struct ct_geo* g, uint32_t i)
{
	return (struct ct_ctx*)(g->base + g->ctx_off) + i;
}

static inline uint32_t ms_of(uint64_t now_ns) { return (uint32_t)(now_ns / 1000000u); }

static inline uint16_t row_store(int32_t row) { return row < 0 || row >= (int32_t)ROW_NONE ? ROW_NONE : (uint16_t)row; }
static inline int32_t row_load(uint16_t r) { return r == ROW_NONE ? -1 : (int32_t)r; }

static inline int key_ok(const uint8_t* key) { return key != NULL && key[FLAGS_BYTE] == 0; }

static inline void unlock(uint32_t* l) { __atomic_store_n(l, 0u, __ATOMIC_RELEASE); }

/* A key as compared and hashed: 5 little-endian u64 words (ct.c). */
struct kw {
	uint64_t w[5];
};

/*
 * Where a key lives: its hash, bucket and tag. The batch functions compute
 * these for a whole batch first (stage 1), so the memory of every key is
 * requested before any of it is needed.
 */
struct probe {
	struct kw k;
	uint32_t b; /* UINT32_MAX: a bad key (byte 35 != 0), skipped */
	uint8_t tag;
};

/* probe_of: hash key[40] (key_ok) into *p. Every ct_* below takes a checked geometry (ct_geo). */
NFQLB_HIDDEN void ct_probe(const struct ct_geo* g, const uint8_t* key, struct probe* p);
/* Take a bucket lock (or the ctx lock); a lock held by a dead thread is taken over. Release: unlock. */
NFQLB_HIDDEN void ct_lock(const struct ct_geo* g, uint32_t* l);
/* The way 0..7 of key k in bucket b (lock held), or -1; with reclaim, an expired match is freed (-1). */
NFQLB_HIDDEN int ct_find(const struct ct_geo* g, uint32_t b, uint8_t tag, const struct kw* k, uint32_t now, int reclaim);
/* Free way w of bucket b (lock held), counting `stat` (NFQLB_CT_STAT_*). */
NFQLB_HIDDEN void ct_slot_free(const struct ct_geo* g, uint32_t b, uint32_t w, uint32_t stat);
/* A free way of bucket b for a new entry (lock held), reclaiming or recycling as insert does; -1: all pinned. */
NFQLB_HIDDEN int ct_make_room(const struct ct_geo* g, uint32_t b, uint8_t tag, uint32_t now);
/* Write a new entry into way w of bucket b (lock held), no flags. */
NFQLB_HIDDEN void ct_fill(const struct ct_geo* g, uint32_t b, uint32_t w, uint8_t tag, const uint8_t* key, int32_t fwmark,
			  int32_t row, uint32_t now);
/* Give entry e (bucket lock held) a new fwmark and row, moving its row count. */
NFQLB_HIDDEN void ct_move(const struct ct_geo* g, struct ct_entry* e, int32_t fwmark, int32_t row);
/* The context record of entry idx, or -1 (ctx lock held). */
NFQLB_HIDDEN int64_t ct_ctx_find(const struct ct_geo* g, uint32_t idx);
/* Drop the context of entry idx (bucket lock held; takes the ctx lock). */
NFQLB_HIDDEN void ct_ctx_free(const struct ct_geo* g, uint32_t idx);
/* The entry's effective lifetime, ms. */
NFQLB_HIDDEN uint32_t ct_lifetime_ms(const struct ct_header* h, const struct ct_entry* e);
/* 1 when the entry's idle time is over its lifetime (pinned: never). */
NFQLB_HIDDEN int ct_expired(const struct ct_header* h, const struct ct_entry* e, uint32_t now);

#endif
