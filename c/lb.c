/*
 * lb.c - the per-packet decision of `nfqlb lb` (upstream §5.4): key, hash,
 * Maglev lookup in the mapped target table, fragment bookkeeping (LB tier,
 * stored fragments and their re-injection, reassembler).
 */
#include "nfqlb.h"
#include <stdlib.h>

struct nfqlb_lb {
	const uint8_t* tshm; /* mapped target table, swapped when init replaces it */
	const uint8_t* lbshm; /* LB-tier table, or NULL */
	struct nfqlb_fragtable* ft;
	int32_t tun_fd;
	uint32_t reassembler;
	uint32_t hash_mode;
	uint32_t sctp_encap;
	int32_t notargets_fwmark;
	/* flowlb */
	struct nfqlb_flows* flows;
	uint32_t slot;
	int32_t nolb_fwmark;
	uint32_t promiscuous;
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
	lb->tun_fd = -1;
	lb->hash_mode = hash_mode;
	lb->sctp_encap = sctp_encap;
	lb->notargets_fwmark = notargets_fwmark;
	return lb;
}

struct nfqlb_lb* nfqlb_lb_create_flows(struct nfqlb_flows* flows, uint32_t slot, struct nfqlb_fragtable* ft,
				       uint32_t hash_mode, int32_t notargets_fwmark, int32_t nolb_fwmark,
				       uint32_t promiscuous)
{
	if (flows == NULL)
		return NULL;
	struct nfqlb_lb* lb = calloc(1, sizeof(*lb));
	if (!lb)
		return NULL;
	lb->flows = flows;
	lb->slot = slot;
	lb->ft = ft;
	lb->tun_fd = -1;
	lb->hash_mode = hash_mode;
	lb->notargets_fwmark = notargets_fwmark;
	lb->nolb_fwmark = nolb_fwmark;
	lb->promiscuous = promiscuous;
	return lb;
}

void nfqlb_lb_enter(struct nfqlb_lb* lb)
{
	if (lb->flows)
		nfqlb_flows_enter(lb->flows, lb->slot);
}

void nfqlb_lb_leave(struct nfqlb_lb* lb)
{
	if (lb->flows)
		nfqlb_flows_leave(lb->flows, lb->slot);
}

void nfqlb_lb_set_frag(struct nfqlb_lb* lb, const uint8_t* lbshm, int32_t tun_fd, uint32_t reassembler)
{
	lb->lbshm = lbshm;
	lb->tun_fd = tun_fd;
	lb->reassembler = reassembler;
}

void nfqlb_lb_set_tshm(struct nfqlb_lb* lb, const uint8_t* tshm)
{
	__atomic_store_n(&lb->tshm, tshm, __ATOMIC_RELEASE);
}

void nfqlb_lb_destroy(struct nfqlb_lb* lb) { free(lb); }

int32_t nfqlb_lb_decide(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
			uint32_t orig_len, uint64_t now_ns, uint64_t* counters)
{
	uint8_t key[NFQLB_KEY_LEN], fkey[NFQLB_KEY_LEN];
	/* flowlb parses SCTP-over-UDP per flow (its udpencap), lb with --sctp_encap */
	int32_t rc = nfqlb_packet_key(hw_proto, pkt, len, lb->flows ? 0 : lb->sctp_encap, key, fkey);
	if (rc < 0) {
		counters[NFQLB_C_MALFORMED]++;
		return -1;
	}
	uint32_t info[3];
	const uint32_t* infop = NULL;
	if (rc & (NFQLB_PKT_FIRST_FRAG | NFQLB_PKT_FRAG)) {
		if (lb->lbshm) {
			/* LB tier: fragments belong to the LB their addresses hash to */
			int32_t fw = nfqlb_tshm_lookup(lb->lbshm, nfqlb_hash_addresses(fkey, NFQLB_KEY_LEN));
			if (fw >= 0 && fw != nfqlb_tshm_own_fwmark(lb->lbshm)) {
				counters[NFQLB_C_FRAG_TIER]++;
				return fw;
			}
		}
		if (lb->reassembler && nfqlb_packet_fraginfo(hw_proto, pkt, len, info) == 0)
			infop = info;
	}
	if ((rc & NFQLB_PKT_FRAG) && lb->ft) {
		int32_t fw;
		/* a truncated copy cannot be re-injected: never store it */
		int32_t r = nfqlb_ft_next(lb->ft, fkey, now_ns, orig_len > len ? NULL : pkt, len, infop, &fw);
		if (r == 0)
			return fw;
		counters[r == 1 ? NFQLB_C_FRAG_STORED : NFQLB_C_FRAG_DROPPED]++;
		return -1;
	}
	const uint8_t* tshm;
	if (lb->flows) {
		tshm = nfqlb_flows_pick(lb->flows, hw_proto, pkt, len, lb->promiscuous, key, fkey, &rc);
		if (tshm == NULL) {
			counters[rc < 0 ? NFQLB_C_MALFORMED : NFQLB_C_NOLB]++;
			return rc < 0 ? -1 : lb->nolb_fwmark;
		}
	} else {
		tshm = __atomic_load_n(&lb->tshm, __ATOMIC_ACQUIRE);
	}
	/* (an optional per-LB connection table is consulted here, before Maglev) */
	uint32_t h = nfqlb_hash_key(key, NFQLB_KEY_LEN, lb->hash_mode);
	int32_t fw = nfqlb_tshm_lookup(tshm, h);
	if (fw < 0) {
		counters[NFQLB_C_NOTARGET]++;
		return lb->notargets_fwmark;
	}
	if ((rc & NFQLB_PKT_FIRST_FRAG) && lb->ft) {
		int32_t inject;
		if (nfqlb_ft_first(lb->ft, fkey, fw, now_ns, infop, &inject) != 0) {
			counters[NFQLB_C_FRAG_DROPPED]++;
			return -1;
		}
		if (inject >= 0) {
			uint32_t failed;
			counters[NFQLB_C_FRAG_INJECTED] += nfqlb_ft_inject(lb->ft, inject, lb->tun_fd, &failed);
			counters[NFQLB_C_FRAG_INJECT_FAILED] += failed;
		}
	}
	return fw;
}

int32_t nfqlb_lb_classify(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
			  uint64_t now_ns, uint64_t* counters)
{
	return nfqlb_lb_decide(lb, hw_proto, pkt, len, len, now_ns, counters);
}
