/*
 * flows.c - the flow set of a running `flowlb`, shared by its queue workers.
 *
 * The control plane (the flow server, in TypeScript) builds a new immutable
 * flow set with its target tables and publishes it with one atomic pointer
 * store: a packet is classified against the old set or the new one, never a
 * mix. Old sets are retired, not freed: each worker announces the generation
 * it is using (or that it is idle, blocked in recvmmsg), and a retired set is
 * freed only when every worker has moved past it (nfqlb_flows_reclaim).
 *
 * A flow's target may have a connection table (`<shm>-ct`). Its address is
 * published with the target's, and so is each worker's scheduler cache for
 * that table (struct nfqlb_ct_sched: one per worker, as they are rebuilt on
 * the packet path without locks). The caches are allocated here, shared by
 * the flows of one table, and freed with the set, never per packet.
 */
#include "nfqlb.h"
#include <stdlib.h>
#include <string.h>

#define IDLE UINT64_MAX

struct conf {
	struct nfqlb_flowset* fs;
	const uint8_t** tshm; /* per flow: target table (a view's copy, or mapped), or NULL (companion flows) */
	struct nfqlb_tshm_view** views;       /* the distinct views of the tables (refreshed per batch) */
	uint32_t nviews;
	uint8_t** ct;         /* per flow: its target's connection table, or NULL */
	struct nfqlb_ct_sched*** sched;       /* per flow: its table's caches (one per slot), or NULL */
	struct nfqlb_ct_sched** scheds;       /* the caches: nslots per distinct table */
	uint32_t nscheds;
	uint32_t n;
	uint64_t gen;
	struct conf* next_retired;
};

struct nfqlb_flows {
	struct conf* current;
	uint64_t gen;
	struct conf* retired;
	uint32_t nslots;
	uint64_t slots[]; /* per worker: generation in use, or IDLE */
};

struct nfqlb_flows* nfqlb_flows_create(uint32_t nworkers)
{
	struct nfqlb_flows* f = calloc(1, sizeof(*f) + sizeof(uint64_t) * (nworkers ? nworkers : 1));
	if (!f)
		return NULL;
	f->nslots = nworkers;
	for (uint32_t i = 0; i < nworkers; i++)
		f->slots[i] = IDLE;
	return f;
}

static void conf_free(struct conf* c)
{
	if (!c)
		return;
	nfqlb_flowset_free(c->fs);
	for (uint32_t i = 0; i < c->nscheds; i++)
		nfqlb_ct_sched_destroy(c->scheds[i]);
	free(c->scheds);
	free((void*)c->sched);
	free(c->ct);
	free(c->tshm);
	free(c->views);
	free(c);
}

void nfqlb_flows_destroy(struct nfqlb_flows* f)
{
	if (!f)
		return;
	conf_free(f->current);
	while (f->retired) {
		struct conf* c = f->retired;
		f->retired = c->next_retired;
		conf_free(c);
	}
	free(f);
}

/*
 * The per-slot scheduler caches of every distinct connection table of the
 * set: flows naming one table share them (found with a pointer hash, so a
 * large set costs O(n)). 0, or -1: no memory.
 */
static int conf_scheds(struct conf* c, uint32_t nslots)
{
	uint32_t n = c->n, cap = 2;
	while (cap < 2 * n)
		cap *= 2;
	uint8_t** keys = calloc(cap, sizeof(*keys));
	uint32_t* first = calloc(cap, sizeof(*first));
	c->sched = calloc(n ? n : 1, sizeof(*c->sched));
	int rc = -1;
	if (!keys || !first || !c->sched)
		goto out;
	uint32_t distinct = 0;
	for (uint32_t i = 0; i < n; i++)
		if (c->ct[i] != NULL)
			distinct++;
	if (distinct == 0 || nslots == 0) {
		rc = 0;
		goto out;
	}
	c->scheds = calloc((size_t)distinct * nslots, sizeof(*c->scheds));
	if (!c->scheds)
		goto out;
	for (uint32_t i = 0; i < n; i++) {
		if (c->ct[i] == NULL)
			continue;
		uintptr_t h = (uintptr_t)c->ct[i] >> 6;
		uint32_t b = (uint32_t)(h * 0x9e3779b97f4a7c15ull >> 32) & (cap - 1);
		while (keys[b] != NULL && keys[b] != c->ct[i])
			b = (b + 1) & (cap - 1);
		if (keys[b] == NULL) {
			keys[b] = c->ct[i];
			first[b] = c->nscheds;
			uint32_t rows = 0;
			nfqlb_tshm_stamp(c->tshm[i], &rows);
			/* sized now; a NULL cache (no memory) leaves that worker with Maglev for new flows */
			for (uint32_t s = 0; s < nslots; s++)
				c->scheds[c->nscheds + s] = nfqlb_ct_sched_create(rows);
			c->nscheds += nslots;
		}
		c->sched[i] = c->scheds + first[b];
	}
	rc = 0;
out:
	free(keys);
	free(first);
	return rc;
}

/* The distinct views of views[0..n) (0: none), found with a pointer hash as conf_scheds. 0, or -1: no memory. */
static int conf_views(struct conf* c, const uint64_t* views, uint32_t n)
{
	uint32_t cap = 2;
	while (cap < 2 * n)
		cap *= 2;
	uint64_t* keys = calloc(cap, sizeof(*keys));
	c->views = calloc(n ? n : 1, sizeof(*c->views));
	if (!keys || !c->views) {
		free(keys);
		return -1;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (views[i] == 0)
			continue;
		uint32_t b = (uint32_t)((views[i] >> 6) * 0x9e3779b97f4a7c15ull >> 32) & (cap - 1);
		while (keys[b] != 0 && keys[b] != views[i])
			b = (b + 1) & (cap - 1);
		if (keys[b] == 0) {
			keys[b] = views[i];
			c->views[c->nviews++] = (struct nfqlb_tshm_view*)(uintptr_t)views[i];
		}
	}
	free(keys);
	return 0;
}

/* publish_ct and publish_views: tshm[i] the tables, or (tshm NULL) views[i] their views. */
static uint32_t publish(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* tshm, const uint64_t* views,
			const uint64_t* ct, uint32_t n)
{
	struct conf* c = calloc(1, sizeof(*c));
	if (!c)
		return 0;
	c->n = n;
	c->tshm = calloc(n ? n : 1, sizeof(uint8_t*));
	c->ct = calloc(n ? n : 1, sizeof(uint8_t*));
	if (!c->tshm || !c->ct || (views && conf_views(c, views, n) != 0)) {
		conf_free(c);
		return 0;
	}
	for (uint32_t i = 0; i < n; i++) {
		c->tshm[i] = views ? nfqlb_tshm_view_table((const struct nfqlb_tshm_view*)(uintptr_t)views[i])
				   : (const uint8_t*)(uintptr_t)tshm[i];
		/* a table only for a flow with a target table: companions and trace ids have none */
		c->ct[i] = (ct && c->tshm[i]) ? (uint8_t*)(uintptr_t)ct[i] : NULL;
	}
	if (conf_scheds(c, f->nslots) != 0) {
		conf_free(c); /* fs is not ours yet */
		return 0;
	}
	c->fs = fs;
	c->gen = f->gen + 1;
	struct conf* old = __atomic_exchange_n(&f->current, c, __ATOMIC_SEQ_CST);
	__atomic_store_n(&f->gen, c->gen, __ATOMIC_RELEASE);
	if (old) {
		old->next_retired = f->retired;
		f->retired = old;
	}
	return (uint32_t)c->gen;
}

uint32_t nfqlb_flows_publish_ct(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* tshm,
				const uint64_t* ct, uint32_t n)
{
	return publish(f, fs, tshm, NULL, ct, n);
}

uint32_t nfqlb_flows_publish(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* tshm, uint32_t n)
{
	return nfqlb_flows_publish_ct(f, fs, tshm, NULL, n);
}

uint32_t nfqlb_flows_publish_views(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* views,
				   const uint64_t* ct, uint32_t n)
{
	if (views == NULL)
		return 0;
	return publish(f, fs, NULL, views, ct, n);
}

uint32_t nfqlb_flows_reclaim(struct nfqlb_flows* f)
{
	uint64_t oldest = __atomic_load_n(&f->gen, __ATOMIC_ACQUIRE);
	for (uint32_t i = 0; i < f->nslots; i++) {
		uint64_t s = __atomic_load_n(&f->slots[i], __ATOMIC_SEQ_CST);
		if (s != IDLE && s < oldest)
			oldest = s;
	}
	/* a retired set of generation g is in use only by workers that announced <= g */
	uint32_t left = 0;
	struct conf** link = &f->retired;
	while (*link) {
		struct conf* c = *link;
		if (c->gen < oldest) {
			*link = c->next_retired;
			conf_free(c);
		} else {
			link = &c->next_retired;
			left++;
		}
	}
	return left;
}

uint32_t nfqlb_flows_matches(const struct nfqlb_flows* f, uint32_t i)
{
	const struct conf* c = __atomic_load_n(&f->current, __ATOMIC_ACQUIRE);
	return (c && i < c->n) ? nfqlb_flowset_matches(c->fs, i) : 0;
}

void nfqlb_flows_enter(struct nfqlb_flows* f, uint32_t slot)
{
	if (slot < f->nslots)
		__atomic_store_n(&f->slots[slot], __atomic_load_n(&f->gen, __ATOMIC_ACQUIRE), __ATOMIC_SEQ_CST);
}

void nfqlb_flows_leave(struct nfqlb_flows* f, uint32_t slot)
{
	if (slot < f->nslots)
		__atomic_store_n(&f->slots[slot], IDLE, __ATOMIC_RELEASE);
}

const uint8_t* nfqlb_flows_pick_ct(struct nfqlb_flows* f, uint32_t slot, uint32_t hw_proto, const uint8_t* pkt,
				   uint32_t len, uint32_t promiscuous, uint8_t* key, uint8_t* fkey, int32_t* rc,
				   uint8_t** ct, struct nfqlb_ct_sched** sched)
{
	*ct = NULL;
	*sched = NULL;
	/* seq_cst pairs with nfqlb_flows_enter's store and publish/reclaim: a set we can
	 * still load here has not been freed */
	const struct conf* c = __atomic_load_n(&f->current, __ATOMIC_SEQ_CST);
	if (!c)
		return NULL;
	uint32_t udpencap = 0;
	int32_t i = nfqlb_flowset_match(c->fs, key, pkt, len, promiscuous, &udpencap);
	uint32_t proto = (uint32_t)key[34] | ((uint32_t)key[35] << 8);
	uint32_t dport = ((uint32_t)key[38] << 8) | key[39];
	if (udpencap != 0 && proto == 17 && dport == udpencap) {
		/* SCTP over UDP on the flow's port: re-key on the inner SCTP header, match again */
		*rc = nfqlb_packet_key(hw_proto, pkt, len, udpencap, key, fkey);
		if (*rc < 0)
			return NULL;
		i = nfqlb_flowset_match(c->fs, key, pkt, len, promiscuous, &udpencap);
	}
	if (i < 0 || (uint32_t)i >= c->n)
		return NULL;
	*ct = c->ct[i];
	if (c->sched[i] != NULL && slot < f->nslots)
		*sched = c->sched[i][slot];
	return c->tshm[i];
}

const uint8_t* nfqlb_flows_pick(struct nfqlb_flows* f, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
				uint32_t promiscuous, uint8_t* key, uint8_t* fkey, int32_t* rc)
{
	uint8_t* ct;
	struct nfqlb_ct_sched* sched;
	return nfqlb_flows_pick_ct(f, UINT32_MAX, hw_proto, pkt, len, promiscuous, key, fkey, rc, &ct, &sched);
}

void nfqlb_flows_refresh(struct nfqlb_flows* f, uint64_t* counters)
{
	/* the caller has entered: the set it loads here is not freed under it, nor are its views */
	const struct conf* c = __atomic_load_n(&f->current, __ATOMIC_SEQ_CST);
	if (!c)
		return;
	for (uint32_t i = 0; i < c->nviews; i++)
		nfqlb_tshm_view_refresh(c->views[i], counters);
}
