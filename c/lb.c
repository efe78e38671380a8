/*
 * lb.c - the per-packet decision of `nfqlb lb` (upstream §5.4): key, hash,
 * Maglev lookup in the mapped target table, fragment bookkeeping.
 */
#include "nfqlb.h"
#include <stdlib.h>

struct nfqlb_lb {
	const uint8_t* tshm; /* mapped target table, swapped when init replaces it */
	struct nfqlb_fragtable* ft;
	uint32_t hash_mode;
	uint32_t sctp_encap;
	int32_t notargets_fwmark;
};

struct nfqlb_lb* nfqlb_lb_create(const uint8_t* tshm, struct nfqlb_fragtable* ft, uint32_t hash_mode,
				 uint32_t sctp_encap, int32_t notargets_fwmark)
{
	if (tshm == NULL)
		return NULL;
	struct nfqlb_lb* lb = calloc(1, sizeof(*lb));
	if (!lb)
		return NULL;
	lb->tshm = tshm;
	lb->ft = ft;
	lb->hash_mode = hash_mode;
	lb->sctp_encap = sctp_encap;
	lb->notargets_fwmark = notargets_fwmark;
	return lb;
}

void nfqlb_lb_set_tshm(struct nfqlb_lb* lb, const uint8_t* tshm)
{
	__atomic_store_n(&lb->tshm, tshm, __ATOMIC_RELEASE);
}

void nfqlb_lb_destroy(struct nfqlb_lb* lb) { free(lb); }

int32_t nfqlb_lb_classify(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
			  uint64_t now_ns, uint64_t* counters)
{
	uint8_t key[NFQLB_KEY_LEN], fkey[NFQLB_KEY_LEN];
	int32_t rc = nfqlb_packet_key(hw_proto, pkt, len, lb->sctp_encap, key, fkey);
	if (rc < 0) {
		counters[NFQLB_C_MALFORMED]++;
		return -1;
	}
	if ((rc & NFQLB_PKT_FRAG) && lb->ft) {
		/* (LB-tier forwarding of fragments goes here, before the local table) */
		int32_t fw;
		if (nfqlb_ft_next(lb->ft, fkey, now_ns, &fw) == 0)
			return fw;
		counters[NFQLB_C_FRAG_DROPPED]++;
		return -1;
	}
	/* (an optional per-LB connection table is consulted here, before Maglev) */
	uint32_t h = nfqlb_hash_key(key, NFQLB_KEY_LEN, lb->hash_mode);
	int32_t fw = nfqlb_tshm_lookup(__atomic_load_n(&lb->tshm, __ATOMIC_ACQUIRE), h);
	if (fw < 0) {
		counters[NFQLB_C_NOTARGET]++;
		return lb->notargets_fwmark;
	}
	if ((rc & NFQLB_PKT_FIRST_FRAG) && lb->ft && nfqlb_ft_first(lb->ft, fkey, fw, now_ns) != 0) {
		counters[NFQLB_C_FRAG_DROPPED]++;
		return -1;
	}
	return fw;
}
