/*
 * flowset.c - the flow matcher of `flowlb`: upstream flowLookup, with an
 * index so that a packet costs about the same with 1000 flows as with one
 * (upstream walks every flow per packet). One flow (its spec and its match)
 * is flow.c's.
 *
 * Semantics (upstream 1.2.0, see nfqlb.h): flows are tried in priority
 * order; a flow matches when its dsts, srcs, then (unless a promiscuous
 * ping) protocols, dports, sports and byte-match statements all hold; the
 * first matching flow with a target wins; every matching flow on the way is
 * counted; udpencap is reported as upstream's out parameter is left.
 *
 * Index. Bit i of a bitset is flow i. For each dimension the build computes,
 * for every elementary region of its space, the exact set of flows that
 * satisfy that criterion for a key in the region:
 *   - protocol class (tcp, udp, sctp, other; "all" for a promiscuous ping):
 *     flows without protocols, or whose protocols hold the key's;
 *   - dport and sport: the 0..65535 space is cut at every range boundary of
 *     every flow that constrains the port; each interval's set is the flows
 *     whose ranges cover it plus the flows that do not constrain the port
 *     (a flow with an empty port set is in none). A two-level table (256
 *     blocks of 256 ports; a block inside one interval is stored as that
 *     interval's set) maps a port to its set in two loads;
 *   - dst and src: one hash entry per distinct CIDR (prefix length, network);
 *     its set is the flows having that CIDR or a shorter one containing it,
 *     plus the flows without addresses. Lookup probes the dimension's
 *     distinct prefix lengths longest first; the first hit is the longest
 *     matching CIDR, whose set already holds every shorter matching one
 *     (CIDRs that both hold an address are nested). No hit: the flows
 *     without addresses;
 *   - joint dport x dst (when both exist): the dst table built once per
 *     distinct dport set g, over the flows of g only, so one port lookup and
 *     one address probe give the flows matching dport and dst together.
 *     This keeps sets whose flows differ by VIP for some and by port for
 *     others (Meridio) from ANDing two large sets into a small one.
 * A dimension no flow constrains is left out; every distinct set is stored
 * once (shared by all dimensions). Lookup ANDs the key's sets (class, joint
 * or dport and dst, sport, src) and visits the resulting flows in priority
 * order; as the sets are exact, a visit only tests what no set covers
 * (byte-match, and criteria of dimensions left out). Each bitset starts with
 * a summary (bit j: word j non-zero), ANDed first, so a lookup touches the
 * S summary words and then only words where every set has flows: O(1) words
 * when the sets are small, O(n/64) at most.
 *
 * Memory and worst cases. A bitset is S + W words (W = ceil(n/64), S =
 * ceil(W/64)); memory is about (distinct sets) x n/8 bytes, so it grows
 * with n^2 in the worst case and is bounded: the new sets of one dimension
 * may take FLOWIX_DIM_BYTES (16 MiB), the whole index FLOWIX_TOTAL_BYTES
 * (64 MiB), a dimension is skipped above FLOWIX_MAX_RANGES port ranges or
 * FLOWIX_MAX_CIDRS address entries (joint: summed over its dport sets). A
 * dimension that does not fit is left out (dport, dst, joint, src, sport
 * are built in this order) and lookups stay exact, only slower: the flows
 * in the remaining sets are visited and tested, down to the linear walk
 * over the key's protocol class with every dimension out. Per dimension:
 * port intervals <= min(2R + 1, 65536) for R ranges, a 1 KiB top table and
 * at most 256 blocks of 1 KiB; address entries <= 32 per flow (joint: per
 * flow and dport set it belongs to), 24 bytes each at load <= 1/2; a probe
 * per distinct prefix length (<= 129). Measured (tests/bench/flows.ts and
 * by hand): 1000 flows with 2 VIPs and a port each, 0.3-0.5 MiB;
 * 1000 flows x 64 port ranges, 3.2 MiB (no joint); 1000 flows x 32 CIDRs of
 * mixed lengths, 3.5 MiB; 10000 flows with a VIP and port each, 15 MiB.
 * Build time O(R log R + sets x (S + W)) per dimension, 15-150 ms for those.
 */
#include "flow_internal.h"
#include <stdlib.h>
#include <string.h>

#define FLOWIX_DIM_BYTES ((size_t)16 << 20)   /* sets of one dimension */
#define FLOWIX_TOTAL_BYTES ((size_t)64 << 20) /* the whole index */
#define FLOWIX_MAX_RANGES (1u << 20)
#define FLOWIX_MAX_CIDRS (1u << 18)

/* ------------------------------------------------------------------------
 * Flows
 * --------------------------------------------------------------------- */


/* A set of bitsets of stride words each: S summary words, then W words. */
struct bitpool {
	uint64_t* data;
	uint32_t nsets, cap;
	uint32_t* ht; /* dedup: set id + 1, 0 = empty */
	uint32_t htmask;
	size_t bytes; /* after pool_seal */
	size_t limit; /* budget for the sets */
};

#define PD_UNIFORM 0x80000000u

struct portdim {
	uint32_t active;
	uint32_t top[256]; /* PD_UNIFORM | set id, or block number */
	uint32_t* blocks;  /* 256 set ids per block */
	uint32_t nblocks;
	uint32_t nids; /* the set ids it uses are < nids */
};

#define PFX_EMPTY 0xffffffffu

struct pfxent {
	uint64_t a[2];
	uint32_t tag; /* prefix length | node << 8; PFX_EMPTY: free slot */
	uint32_t set;
};

struct pfxdim {
	uint32_t active;
	uint32_t nnodes; /* address tables: one over all flows, or one per dport set (joint) */
	uint32_t* none;  /* per node: the set of addresses in none of its CIDRs */
	uint32_t nlens;
	uint32_t lens[129]; /* distinct prefix lengths of all nodes, longest first */
	uint64_t lmask[129][2]; /* mask per prefix length */
	struct pfxent* ht;
	uint32_t htmask;
};

struct flowindex {
	uint32_t W, S, stride;
	struct bitpool pool; /* the sets of every dimension, each stored once */
	size_t left;         /* index budget not used yet (during the build) */
	uint64_t* cls; /* 5 bitsets */
	struct portdim dport, sport;
	struct pfxdim dst, src;
	struct pfxdim joint; /* dst per dport set: node g holds the flows of dport set g */
};

struct nfqlb_flowset {
	uint32_t n;
	uint32_t built;
	struct flow* flows;
	uint32_t* counts; /* written with relaxed atomics, also through a const set */
	struct flowindex* ix;
};

struct nfqlb_flowset* nfqlb_flowset_new(uint32_t nflows)
{
	if (nflows > NFQLB_FLOWSET_MAX)
		return NULL;
	struct nfqlb_flowset* fs = calloc(1, sizeof(*fs));
	if (!fs)
		return NULL;
	fs->n = nflows;
	fs->flows = calloc(nflows ? nflows : 1, sizeof(struct flow));
	fs->counts = calloc(nflows ? nflows : 1, sizeof(uint32_t));
	if (!fs->flows || !fs->counts) {
		free(fs->flows);
		free(fs->counts);
		free(fs);
		return NULL;
	}
	return fs;
}

int32_t nfqlb_flowset_add(struct nfqlb_flowset* fs, uint32_t i, const uint8_t* spec, uint32_t speclen)
{
	if (!fs || fs->built || i >= fs->n || fs->flows[i].defined || !spec)
		return -1;
	struct flow f;
	if (nfqlb_flow_parse(&f, spec, speclen))
		return -1;
	fs->flows[i] = f;
	return 0;
}

/* ------------------------------------------------------------------------
 * Walking the flows
 * --------------------------------------------------------------------- */

/* Visit flow i: count it when it matches. Returns 1 when it wins. */
static inline int visit(const struct nfqlb_flowset* fs, uint32_t i, const struct kview* k, struct l4view* l4,
			const uint8_t* pkt, uint32_t len, int ping, uint32_t need, uint32_t* ue)
{
	const struct flow* f = &fs->flows[i];
	int r = nfqlb_flow_match(f, k, l4, pkt, len, ping, need);
	if (r == 0)
		return 0;
	__atomic_fetch_add(&fs->counts[i], 1, __ATOMIC_RELAXED);
	if (r == 2)
		*ue = f->udpencap;
	return (f->flags & NFQLB_FLOW_F_TARGET) != 0;
}

int32_t nfqlb_flowset_match_linear(const struct nfqlb_flowset* fs, const uint8_t* key, const uint8_t* pkt,
				   uint32_t len, uint32_t promiscuous, uint32_t* udpencap)
{
	uint32_t ue = 0;
	int32_t rc = -1;
	if (fs && fs->built && key) {
		struct kview k;
		nfqlb_flow_key(&k, key);
		struct l4view l4 = { 0 };
		if (!pkt)
			len = 0;
		int ping = promiscuous && (k.proto == 1 || k.proto == 58);
		for (uint32_t i = 0; i < fs->n; i++) {
			if (visit(fs, i, &k, &l4, pkt, len, ping, FLOW_F_ALL, &ue)) {
				rc = (int32_t)i;
				break;
			}
		}
	}
	if (udpencap)
		*udpencap = ue;
	return rc;
}

/* ------------------------------------------------------------------------
 * Bitsets
 * --------------------------------------------------------------------- */

static void set_summary(uint64_t* set, uint32_t S, uint32_t W)
{
	memset(set, 0, S * sizeof(uint64_t));
	for (uint32_t w = 0; w < W; w++) {
		if (set[S + w])
			set[w / 64] |= 1ull << (w % 64);
	}
}

static uint64_t set_hash(const uint64_t* bits, uint32_t W)
{
	uint64_t h = 0x84222325cbf29ce4ull;
	for (uint32_t w = 0; w < W; w++) {
		h ^= bits[w];
		h *= 0x100000001b3ull;
		h ^= h >> 31;
	}
	return h;
}

static void pool_free(struct bitpool* p)
{
	free(p->data);
	free(p->ht);
	memset(p, 0, sizeof(*p));
}

/* (Re)builds the dedup table with room for at least one more set. 0 or -1. */
static int pool_rehash(struct bitpool* p, uint32_t S, uint32_t W)
{
	uint32_t stride = S + W, hcap = 64;
	while (hcap < 2 * ((size_t)p->nsets + 1))
		hcap *= 2;
	uint32_t* ht = calloc(hcap, sizeof(uint32_t));
	if (!ht)
		return -1;
	for (uint32_t id = 0; id < p->nsets; id++) {
		uint32_t j = (uint32_t)set_hash(p->data + (size_t)id * stride + S, W) & (hcap - 1);
		while (ht[j])
			j = (j + 1) & (hcap - 1);
		ht[j] = id + 1;
	}
	free(p->ht);
	p->ht = ht;
	p->htmask = hcap - 1;
	return 0;
}

/*
 * Adds a set (stride words, summary included) or finds its twin. Returns
 * the set id, or -1 when the pool would exceed p->limit bytes or out of
 * memory.
 */
static int64_t pool_add(struct bitpool* p, const uint64_t* set, uint32_t S, uint32_t W)
{
	uint32_t stride = S + W;
	if (!p->ht && pool_rehash(p, S, W))
		return -1;
	uint64_t h = set_hash(set + S, W);
	for (uint32_t j = (uint32_t)h & p->htmask;; j = (j + 1) & p->htmask) {
		uint32_t id = p->ht[j];
		if (id == 0)
			break;
		if (memcmp(p->data + (size_t)(id - 1) * stride + S, set + S, W * sizeof(uint64_t)) == 0)
			return id - 1;
	}
	if ((size_t)(p->nsets + 1) * stride * sizeof(uint64_t) > p->limit)
		return -1;
	if (p->nsets == p->cap) {
		size_t cap = p->cap ? (size_t)p->cap * 2 : 16;
		if (cap * stride * sizeof(uint64_t) > p->limit)
			cap = p->limit / (stride * sizeof(uint64_t));
		uint64_t* d = realloc(p->data, cap * stride * sizeof(uint64_t));
		if (!d)
			return -1;
		p->data = d;
		p->cap = (uint32_t)cap;
	}
	if (((size_t)p->nsets + 1) * 2 > (size_t)p->htmask + 1 && pool_rehash(p, S, W))
		return -1;
	uint32_t id = p->nsets++;
	memcpy(p->data + (size_t)id * stride, set, stride * sizeof(uint64_t));
	uint32_t j = (uint32_t)h & p->htmask;
	while (p->ht[j])
		j = (j + 1) & p->htmask;
	p->ht[j] = id + 1;
	return id;
}

/* Forgets the sets from id nsets on (a dimension that failed); the dedup table is rebuilt on the next add. */
static void pool_truncate(struct bitpool* p, uint32_t nsets)
{
	if (nsets >= p->nsets)
		return;
	p->nsets = nsets;
	free(p->ht);
	p->ht = NULL;
	p->htmask = 0;
}

/* After the build: drop the dedup table and the spare capacity. */
static void pool_seal(struct bitpool* p, uint32_t stride)
{
	free(p->ht);
	p->ht = NULL;
	p->htmask = 0;
	if (p->nsets && p->nsets < p->cap) {
		uint64_t* d = realloc(p->data, (size_t)p->nsets * stride * sizeof(uint64_t));
		if (d)
			p->data = d;
		p->cap = p->nsets;
	}
	p->bytes = (size_t)p->cap * stride * sizeof(uint64_t);
}

/* ------------------------------------------------------------------------
 * Port dimension
 * --------------------------------------------------------------------- */

static size_t portdim_bytes(const struct portdim* pd)
{
	return (size_t)pd->nblocks * 256 * sizeof(uint32_t);
}

struct pev {
	uint32_t pos;   /* port where the event happens (<= 65535) */
	uint32_t start; /* 0 = a range ended before pos, 1 = a range starts at pos */
	uint32_t flow;
};

static int pev_cmp(const void* a, const void* b)
{
	const struct pev* x = a;
	const struct pev* y = b;
	if (x->pos != y->pos)
		return x->pos < y->pos ? -1 : 1;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->flow < y->flow ? -1 : (x->flow > y->flow);
}

static void portdim_free(struct portdim* pd)
{
	free(pd->blocks);
	memset(pd, 0, sizeof(*pd));
}

/* Builds the dport (sport = 0) or sport (sport = 1) dimension; leaves it inactive when it cannot. */
static void portdim_build(struct portdim* pd, const struct nfqlb_flowset* fs, struct flowindex* ix, int sport)
{
	uint32_t flag = sport ? NFQLB_FLOW_F_SPORTS : NFQLB_FLOW_F_DPORTS;
	uint32_t S = ix->S, W = ix->W, stride = ix->stride;
	uint64_t nr = 0;
	int constrained = 0;
	for (uint32_t i = 0; i < fs->n; i++) {
		const struct flow* f = &fs->flows[i];
		if (f->flags & flag) {
			constrained = 1;
			nr += sport ? f->nsports : f->ndports;
		}
	}
	memset(pd, 0, sizeof(*pd));
	if (!constrained || nr > FLOWIX_MAX_RANGES)
		return;
	struct bitpool* pool = &ix->pool;
	const uint32_t mark = pool->nsets;
	const size_t used = (size_t)mark * stride * sizeof(uint64_t);
	pool->limit = used + (ix->left < FLOWIX_DIM_BYTES ? ix->left : FLOWIX_DIM_BYTES);
	struct pev* ev = malloc(sizeof(struct pev) * (size_t)(2 * nr + 1));
	uint64_t* cur = calloc(stride, sizeof(uint64_t));
	uint32_t* map = malloc(sizeof(uint32_t) * 65536);
	if (!ev || !cur || !map)
		goto fail;
	size_t ne = 0;
	for (uint32_t i = 0; i < fs->n; i++) {
		const struct flow* f = &fs->flows[i];
		if (!(f->flags & flag)) {
			cur[S + i / 64] |= 1ull << (i % 64);
			continue;
		}
		const struct range* r = sport ? f->sports : f->dports;
		uint32_t n = sport ? f->nsports : f->ndports;
		for (uint32_t j = 0; j < n; j++) {
			ev[ne++] = (struct pev){ r[j].first, 1, i };
			if (r[j].last < 65535)
				ev[ne++] = (struct pev){ (uint32_t)r[j].last + 1, 0, i };
		}
	}
	qsort(ev, ne, sizeof(*ev), pev_cmp);
	/* sweep: ends before starts at the same port, so adjacent ranges of one flow stay covered */
	uint32_t start = 0;
	size_t e = 0;
	for (;;) {
		uint32_t next = e < ne ? ev[e].pos : 65536;
		if (next > start) {
			set_summary(cur, S, W);
			int64_t id = pool_add(pool, cur, S, W);
			if (id < 0)
				goto fail;
			for (uint32_t p = start; p < next; p++)
				map[p] = (uint32_t)id;
			if ((uint32_t)id >= pd->nids)
				pd->nids = (uint32_t)id + 1;
			start = next;
		}
		if (e >= ne)
			break;
		for (; e < ne && ev[e].pos == next; e++) {
			uint32_t i = ev[e].flow;
			if (ev[e].start)
				cur[S + i / 64] |= 1ull << (i % 64);
			else
				cur[S + i / 64] &= ~(1ull << (i % 64));
		}
	}
	/* two-level table */
	uint32_t nb = 0;
	for (uint32_t b = 0; b < 256; b++) {
		const uint32_t* m = map + b * 256;
		uint32_t k = 1;
		while (k < 256 && m[k] == m[0])
			k++;
		if (k == 256)
			pd->top[b] = PD_UNIFORM | m[0];
		else
			pd->top[b] = nb++;
	}
	if (nb) {
		pd->blocks = malloc(sizeof(uint32_t) * 256 * nb);
		if (!pd->blocks)
			goto fail;
		for (uint32_t b = 0; b < 256; b++) {
			if (!(pd->top[b] & PD_UNIFORM))
				memcpy(pd->blocks + (size_t)pd->top[b] * 256, map + b * 256, 256 * sizeof(uint32_t));
		}
	}
	pd->nblocks = nb;
	size_t bytes = ((size_t)pool->nsets - mark) * stride * sizeof(uint64_t) + portdim_bytes(pd);
	if (bytes > ix->left)
		goto fail;
	ix->left -= bytes;
	pd->active = 1;
	free(ev);
	free(cur);
	free(map);
	return;
fail:
	free(ev);
	free(cur);
	free(map);
	pool_truncate(pool, mark);
	portdim_free(pd);
}

/* The set id of a port. */
static inline uint32_t portdim_id(const struct portdim* pd, uint32_t port)
{
	uint32_t t = pd->top[port >> 8];
	return (t & PD_UNIFORM) ? (t & ~PD_UNIFORM) : pd->blocks[(size_t)t * 256 + (port & 0xff)];
}

/* ------------------------------------------------------------------------
 * Address dimension
 * --------------------------------------------------------------------- */

/* tag = len | node << 8; the node is mixed in last, so hashing overlaps the port lookup that finds it. */
static inline uint32_t pfx_hash(uint64_t a0, uint64_t a1, uint32_t tag)
{
	uint64_t h = a0 * 0x9e3779b97f4a7c15ull ^ a1 * 0xc2b2ae3d27d4eb4full ^ (tag & 0xff) * 0x165667b19e3779f9ull;
	h ^= h >> 32;
	h ^= (uint64_t)(tag >> 8) * 0x27d4eb2f165667c5ull;
	h *= 0xd6e8feb86659fd93ull;
	return (uint32_t)(h >> 32);
}

/* Slot of (a, tag), or of the free slot where it would go. */
static uint32_t pfx_slot(const struct pfxent* ht, uint32_t mask, uint64_t a0, uint64_t a1, uint32_t tag)
{
	uint32_t j = pfx_hash(a0, a1, tag) & mask;
	while (ht[j].tag != PFX_EMPTY && !(ht[j].tag == tag && ht[j].a[0] == a0 && ht[j].a[1] == a1))
		j = (j + 1) & mask;
	return j;
}

static void pfxdim_free(struct pfxdim* pd)
{
	free(pd->ht);
	free(pd->none);
	memset(pd, 0, sizeof(*pd));
}

static size_t pfxdim_bytes(const struct pfxdim* pd)
{
	if (!pd->ht)
		return 0;
	return sizeof(struct pfxent) * (pd->htmask + 1) + sizeof(uint32_t) * pd->nnodes;
}

static inline int bit_test(const uint64_t* bits, uint32_t i) { return (int)((bits[i / 64] >> (i % 64)) & 1); }

/* Next flow of node F (NULL: every flow) at or after i, or n. */
static uint32_t node_next(const uint64_t* F, uint32_t i, uint32_t n)
{
	if (!F)
		return i;
	while (i < n) {
		uint64_t x = F[i / 64] >> (i % 64);
		if (x)
			return i + (uint32_t)__builtin_ctzll(x);
		i = (i / 64 + 1) * 64;
	}
	return n;
}

/*
 * Builds the dst (src = 0) or src (src = 1) dimension as one node over all
 * flows; or, with jp, the joint dport x dst dimension: node g holds the
 * flows of dport set g, so its sets are exact for both. Leaves the
 * dimension inactive when it cannot (over budget, no memory).
 */
static void pfxdim_build(struct pfxdim* pd, const struct nfqlb_flowset* fs, struct flowindex* ix, int src,
			 const struct portdim* jp)
{
	const uint32_t flag = src ? NFQLB_FLOW_F_SRCS : NFQLB_FLOW_F_DSTS;
	const uint32_t S = ix->S, W = ix->W, stride = ix->stride, n = fs->n;
	const uint32_t nnodes = jp ? jp->nids : 1;
	struct bitpool* pool = &ix->pool;
	const uint32_t mark = pool->nsets;
	memset(pd, 0, sizeof(*pd));
	int constrained = 0;
	for (uint32_t i = 0; i < n && !constrained; i++)
		constrained = (fs->flows[i].flags & flag) != 0;
	if (!constrained)
		return;
	/* entries, repeats included: every CIDR of every constrained flow of every node */
	uint64_t total = 0, maxnode = 0;
	for (uint32_t g = 0; g < nnodes; g++) {
		const uint64_t* F = jp ? pool->data + (size_t)g * stride + S : NULL;
		uint64_t t = 0;
		for (uint32_t i = node_next(F, 0, n); i < n; i = node_next(F, i + 1, n)) {
			const struct flow* f = &fs->flows[i];
			if (f->flags & flag)
				t += src ? f->nsrcs : f->ndsts;
		}
		total += t;
		maxnode = t > maxnode ? t : maxnode;
		if (total > FLOWIX_MAX_CIDRS)
			return;
	}
	/* the direct sets of the largest node must fit the budget (the final sets are checked by the pool) */
	if (maxnode * W * sizeof(uint64_t) > FLOWIX_DIM_BYTES)
		return;
	uint32_t cap = 16;
	while (cap < 2 * total)
		cap *= 2;
	size_t fixed = sizeof(struct pfxent) * cap + sizeof(uint32_t) * nnodes; /* table and none sets */
	if (fixed >= ix->left)
		return;
	pool->limit = (size_t)mark * stride * sizeof(uint64_t) +
		      (ix->left - fixed < FLOWIX_DIM_BYTES ? ix->left - fixed : FLOWIX_DIM_BYTES);
	uint32_t* didx = malloc(sizeof(uint32_t) * cap);                    /* slot -> direct set in its node */
	uint32_t* slots = malloc(sizeof(uint32_t) * (size_t)(maxnode + 1)); /* node's entries */
	uint64_t* direct = malloc(sizeof(uint64_t) * (size_t)(maxnode + 1) * W);
	uint64_t* cur = malloc(sizeof(uint64_t) * stride);
	uint64_t* wild = malloc(sizeof(uint64_t) * stride);
	pd->ht = malloc(sizeof(struct pfxent) * cap);
	pd->none = calloc(nnodes, sizeof(uint32_t));
	if (!didx || !slots || !direct || !cur || !wild || !pd->ht || !pd->none)
		goto fail;
	pd->nnodes = nnodes;
	pd->htmask = cap - 1;
	for (uint32_t j = 0; j < cap; j++)
		pd->ht[j].tag = PFX_EMPTY;
	for (uint32_t len = 0; len <= 128; len++)
		nfqlb_flow_mask(len, pd->lmask[len]);
	int anylen[129] = { 0 };
	for (uint32_t g = 0; g < nnodes; g++) {
		const uint64_t* F = jp ? pool->data + (size_t)g * stride + S : NULL;
		uint32_t nd = 0;
		int have[129] = { 0 };
		memset(wild, 0, sizeof(uint64_t) * stride);
		/* pass 0: the node's distinct CIDRs; pass 1: which flows hold each (direct sets) */
		for (int pass = 0; pass < 2; pass++) {
			if (pass == 1)
				memset(direct, 0, sizeof(uint64_t) * (size_t)nd * W);
			for (uint32_t i = node_next(F, 0, n); i < n; i = node_next(F, i + 1, n)) {
				const struct flow* f = &fs->flows[i];
				if (!(f->flags & flag)) {
					wild[S + i / 64] |= 1ull << (i % 64);
					continue;
				}
				const struct cidr* c = src ? f->srcs : f->dsts;
				uint32_t nc = src ? f->nsrcs : f->ndsts;
				for (uint32_t k = 0; k < nc; k++) {
					uint32_t tag = c[k].len | g << 8;
					uint32_t j = pfx_slot(pd->ht, pd->htmask, c[k].a[0], c[k].a[1], tag);
					if (pass == 1) {
						direct[(size_t)didx[j] * W + i / 64] |= 1ull << (i % 64);
					} else if (pd->ht[j].tag == PFX_EMPTY) {
						pd->ht[j] = (struct pfxent){ { c[k].a[0], c[k].a[1] }, tag, 0 };
						didx[j] = nd;
						slots[nd++] = j;
						have[c[k].len] = 1;
					}
				}
			}
		}
		uint32_t lens[129], nlens = 0;
		for (int len = 128; len >= 0; len--) {
			if (have[len]) {
				lens[nlens++] = (uint32_t)len;
				anylen[len] = 1;
			}
		}
		/* each CIDR's set: the node's flows holding it or a shorter CIDR around it, and its wildcards */
		for (uint32_t k = 0; k < nd; k++) {
			struct pfxent* e = &pd->ht[slots[k]];
			uint32_t elen = e->tag & 0xff;
			memcpy(cur, wild, sizeof(uint64_t) * stride);
			for (uint32_t l = 0; l < nlens; l++) {
				uint32_t len = lens[l];
				if (len > elen)
					continue;
				uint64_t a0 = e->a[0] & pd->lmask[len][0], a1 = e->a[1] & pd->lmask[len][1];
				uint32_t s = pfx_slot(pd->ht, pd->htmask, a0, a1, len | g << 8);
				if (pd->ht[s].tag == PFX_EMPTY)
					continue;
				const uint64_t* d = direct + (size_t)didx[s] * W;
				for (uint32_t w = 0; w < W; w++)
					cur[S + w] |= d[w];
			}
			set_summary(cur, S, W);
			int64_t id = pool_add(pool, cur, S, W);
			if (id < 0)
				goto fail;
			e->set = (uint32_t)id;
		}
		set_summary(wild, S, W);
		int64_t none = pool_add(pool, wild, S, W);
		if (none < 0)
			goto fail;
		pd->none[g] = (uint32_t)none;
	}
	for (int len = 128; len >= 0; len--) {
		if (anylen[len])
			pd->lens[pd->nlens++] = (uint32_t)len;
	}
	ix->left -= ((size_t)pool->nsets - mark) * stride * sizeof(uint64_t) + fixed;
	pd->active = 1;
	free(didx);
	free(slots);
	free(direct);
	free(cur);
	free(wild);
	return;
fail:
	free(didx);
	free(slots);
	free(direct);
	free(cur);
	free(wild);
	pool_truncate(pool, mark);
	pfxdim_free(pd);
}

/*
 * The set of node g for address a: probes the dimension's prefix lengths,
 * longest first (a length node g lacks just misses), else g's none set.
 */
static inline const uint64_t* pfxdim_set(const struct pfxdim* pd, const uint64_t* sets, uint32_t g, const uint64_t a[2],
					 uint32_t stride)
{
	for (uint32_t l = 0; l < pd->nlens; l++) {
		uint32_t len = pd->lens[l], tag = len | g << 8;
		uint64_t a0 = a[0] & pd->lmask[len][0], a1 = a[1] & pd->lmask[len][1];
		for (uint32_t j = pfx_hash(a0, a1, tag) & pd->htmask;; j = (j + 1) & pd->htmask) {
			const struct pfxent* e = &pd->ht[j];
			if (e->tag == PFX_EMPTY)
				break;
			if (e->tag == tag && e->a[0] == a0 && e->a[1] == a1)
				return sets + (size_t)e->set * stride;
		}
	}
	return sets + (size_t)pd->none[g] * stride;
}

/* ------------------------------------------------------------------------
 * Build, lookup, the rest of the API
 * --------------------------------------------------------------------- */

static void index_free(struct flowindex* ix)
{
	if (!ix)
		return;
	free(ix->cls);
	pool_free(&ix->pool);
	portdim_free(&ix->dport);
	portdim_free(&ix->sport);
	pfxdim_free(&ix->dst);
	pfxdim_free(&ix->src);
	pfxdim_free(&ix->joint);
	free(ix);
}

int32_t nfqlb_flowset_build(struct nfqlb_flowset* fs)
{
	if (!fs)
		return -1;
	if (fs->built)
		return 0;
	for (uint32_t i = 0; i < fs->n; i++) {
		if (!fs->flows[i].defined)
			return -1;
	}
	struct flowindex* ix = calloc(1, sizeof(*ix));
	if (!ix)
		return -1;
	ix->W = (fs->n + 63) / 64;
	if (ix->W == 0)
		ix->W = 1;
	ix->S = (ix->W + 63) / 64;
	ix->stride = ix->S + ix->W;
	uint32_t S = ix->S, W = ix->W, stride = ix->stride;
	ix->cls = calloc((size_t)5 * stride, sizeof(uint64_t));
	if (!ix->cls) {
		free(ix);
		return -1;
	}
	for (uint32_t i = 0; i < fs->n; i++) {
		const struct flow* f = &fs->flows[i];
		uint64_t bit = 1ull << (i % 64);
		size_t w = S + i / 64;
		int any = !(f->flags & NFQLB_FLOW_F_PROTOCOLS);
		if (any || (f->protomask & 1))
			ix->cls[CLS_TCP * stride + w] |= bit;
		if (any || (f->protomask & 2))
			ix->cls[CLS_UDP * stride + w] |= bit;
		if (any || (f->protomask & 4))
			ix->cls[CLS_SCTP * stride + w] |= bit;
		if (any)
			ix->cls[CLS_OTHER * stride + w] |= bit;
		ix->cls[CLS_ALL * stride + w] |= bit;
	}
	for (uint32_t c = 0; c < 5; c++)
		set_summary(ix->cls + (size_t)c * stride, S, W);
	/* the most useful dimensions first: they get the budget when there is not enough for all */
	ix->left = FLOWIX_TOTAL_BYTES;
	portdim_build(&ix->dport, fs, ix, 0);
	pfxdim_build(&ix->dst, fs, ix, 0, NULL);
	if (ix->dport.active && ix->dst.active)
		pfxdim_build(&ix->joint, fs, ix, 0, &ix->dport);
	pfxdim_build(&ix->src, fs, ix, 1, NULL);
	portdim_build(&ix->sport, fs, ix, 1);
	pool_seal(&ix->pool, stride);
	fs->ix = ix;
	fs->built = 1;
	return 0;
}

int32_t nfqlb_flowset_match(const struct nfqlb_flowset* fs, const uint8_t* key, const uint8_t* pkt, uint32_t len,
			    uint32_t promiscuous, uint32_t* udpencap)
{
	uint32_t ue = 0;
	int32_t rc = -1;
	if (!fs || !fs->built || !key)
		goto out;
	const struct flowindex* ix = fs->ix;
	const uint32_t S = ix->S, stride = ix->stride;
	struct kview k;
	nfqlb_flow_key(&k, key);
	struct l4view l4 = { 0 };
	if (!pkt)
		len = 0;
	int ping = promiscuous && (k.proto == 1 || k.proto == 58);
	/* five sets, ANDed; a dimension that does not apply is the all-flows set */
	const uint64_t* ones = ix->cls + (size_t)CLS_ALL * stride;
	const uint64_t* sets = ix->pool.data;
	const uint64_t *a = ones, *b = ones, *c = ones, *d = ones, *e = ones;
	uint32_t need = 0; /* what the sets do not guarantee */
	int joint = 0;
	if (!ping) {
		a = ix->cls + (size_t)k.cls * stride;
		if (ix->dport.active) {
			uint32_t g = portdim_id(&ix->dport, k.dport);
			if (ix->joint.active) {
				b = pfxdim_set(&ix->joint, sets, g, k.dst, stride); /* dport and dst at once */
				joint = 1;
			} else {
				b = sets + (size_t)g * stride;
			}
		} else {
			need |= NFQLB_FLOW_F_DPORTS;
		}
		if (ix->sport.active)
			c = sets + (size_t)portdim_id(&ix->sport, k.sport) * stride;
		else
			need |= NFQLB_FLOW_F_SPORTS;
	}
	if (!joint) {
		if (ix->dst.active)
			d = pfxdim_set(&ix->dst, sets, 0, k.dst, stride);
		else
			need |= NFQLB_FLOW_F_DSTS;
	}
	if (ix->src.active)
		e = pfxdim_set(&ix->src, sets, 0, k.src, stride);
	else
		need |= NFQLB_FLOW_F_SRCS;
	if (ix->W == 1) {
		/* up to 64 flows: one word, no summary to look at first */
		uint64_t x = a[1] & b[1] & c[1] & d[1] & e[1];
		while (x) {
			uint32_t i = (uint32_t)__builtin_ctzll(x);
			x &= x - 1;
			if (visit(fs, i, &k, &l4, pkt, len, ping, need, &ue)) {
				rc = (int32_t)i;
				goto out;
			}
		}
		goto out;
	}
	for (uint32_t s = 0; s < S; s++) {
		uint64_t m = a[s] & b[s] & c[s] & d[s] & e[s];
		while (m) {
			size_t w = (size_t)s * 64 + (size_t)__builtin_ctzll(m);
			m &= m - 1;
			size_t o = S + w;
			uint64_t x = a[o] & b[o] & c[o] & d[o] & e[o];
			while (x) {
				uint32_t i = (uint32_t)(w * 64) + (uint32_t)__builtin_ctzll(x);
				x &= x - 1;
				if (visit(fs, i, &k, &l4, pkt, len, ping, need, &ue)) {
					rc = (int32_t)i;
					goto out;
				}
			}
		}
	}
out:
	if (udpencap)
		*udpencap = ue;
	return rc;
}

uint32_t nfqlb_flowset_matches(const struct nfqlb_flowset* fs, uint32_t i)
{
	if (!fs || i >= fs->n)
		return 0;
	return __atomic_load_n(&fs->counts[i], __ATOMIC_RELAXED);
}

void nfqlb_flowset_set_matches(struct nfqlb_flowset* fs, uint32_t i, uint32_t n)
{
	if (fs && i < fs->n)
		__atomic_store_n(&fs->counts[i], n, __ATOMIC_RELAXED);
}

uint32_t nfqlb_flowset_index_dims(const struct nfqlb_flowset* fs)
{
	if (!fs || !fs->ix)
		return 0;
	const struct flowindex* ix = fs->ix;
	return (ix->dport.active ? NFQLB_FLOWIX_DPORT : 0) | (ix->sport.active ? NFQLB_FLOWIX_SPORT : 0) |
	       (ix->dst.active ? NFQLB_FLOWIX_DST : 0) | (ix->src.active ? NFQLB_FLOWIX_SRC : 0) |
	       (ix->joint.active ? NFQLB_FLOWIX_JOINT : 0);
}

uint64_t nfqlb_flowset_index_bytes(const struct nfqlb_flowset* fs)
{
	if (!fs || !fs->ix)
		return 0;
	const struct flowindex* ix = fs->ix;
	uint64_t b = sizeof(*ix) + (uint64_t)5 * ix->stride * sizeof(uint64_t) + ix->pool.bytes;
	b += portdim_bytes(&ix->dport) + portdim_bytes(&ix->sport);
	b += pfxdim_bytes(&ix->dst) + pfxdim_bytes(&ix->src) + pfxdim_bytes(&ix->joint);
	return b;
}

void nfqlb_flowset_free(struct nfqlb_flowset* fs)
{
	if (!fs)
		return;
	for (uint32_t i = 0; i < fs->n; i++)
		nfqlb_flow_clear(&fs->flows[i]);
	free(fs->flows);
	free(fs->counts);
	index_free(fs->ix);
	free(fs);
}
