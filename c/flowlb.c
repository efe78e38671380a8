/*
 * flowlb.c - the flow set of a running `flowlb`, shared by its queue workers.
 *
 * The control plane (the flow server, in TypeScript) builds a new immutable
 * flow set with its target tables and publishes it with one atomic pointer
 * store: a packet is classified against the old set or the new one, never a
 * mix. Old sets are retired, not freed: each worker announces the generation
 * it is using (or that it is idle, blocked in recvmmsg), and a retired set is
 * freed only when every worker has moved past it (nfqlb_flows_reclaim).
 */
#include "nfqlb.h"
#include <stdlib.h>
#include <string.h>

#define IDLE UINT64_MAX

struct conf {
	struct nfqlb_flowset* fs;
	const uint8_t** tshm; /* per flow: mapped target table, or NULL (companion flows) */
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
	free(c->tshm);
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

uint32_t nfqlb_flows_publish(struct nfqlb_flows* f, struct nfqlb_flowset* fs, const uint64_t* tshm, uint32_t n)
{
	struct conf* c = calloc(1, sizeof(*c));
	if (!c)
		return 0;
	c->tshm = calloc(n ? n : 1, sizeof(uint8_t*));
	if (!c->tshm) {
		free(c);
		return 0;
	}
	for (uint32_t i = 0; i < n; i++)
		c->tshm[i] = (const uint8_t*)(uintptr_t)tshm[i];
	c->fs = fs;
	c->n = n;
	c->gen = f->gen + 1;
	struct conf* old = __atomic_exchange_n(&f->current, c, __ATOMIC_SEQ_CST);
	__atomic_store_n(&f->gen, c->gen, __ATOMIC_RELEASE);
	if (old) {
		old->next_retired = f->retired;
		f->retired = old;
	}
	return (uint32_t)c->gen;
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

const uint8_t* nfqlb_flows_pick(struct nfqlb_flows* f, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
				uint32_t promiscuous, uint8_t* key, uint8_t* fkey, int32_t* rc)
{
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
	return c->tshm[i];
}
