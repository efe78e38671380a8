/*
 * lb.c - the per-packet decision of `nfqlb lb` (as upstream's lb): key, hash,
 * Maglev lookup in the mapped target table, fragment bookkeeping (LB tier,
 * stored fragments and their re-injection, reassembler), and the trace
 * records of each decision (trace.c) when a trace client wants them.
 */
#include "nfqlb.h"
#include <stdlib.h>
#include <string.h>

struct nfqlb_lb {
	const uint8_t* tshm; /* target table: a view's copy (lb) or a mapping (library users) */
	const uint8_t* lbshm; /* LB-tier table, or NULL */
	struct nfqlb_tshm_view* view;      /* the view tshm is the copy of (refreshed per batch), or NULL */
	struct nfqlb_tshm_view* tier_view; /* the same for lbshm */
	struct nfqlb_fragtable* ft;
	int32_t tun_fd;
	uint32_t reassembler;
	uint32_t hash_mode;
	uint32_t sctp_encap;
	int32_t notargets_fwmark;
	uint8_t* ct; /* connection table (ct.c), or NULL; lb only (flowlb: the picked flow's) */
	struct nfqlb_ct_sched* sched; /* with ct: the schedulers' cache (ct_sched.c); NULL: Maglev only */
	/* flowlb */
	struct nfqlb_flows* flows;
	uint32_t slot;
	int32_t nolb_fwmark;
	uint32_t promiscuous;
	/* trace (trace.c) */
	const uint32_t* tmask; /* the process's trace mask; never NULL */
	struct nfqlb_trace_ring* tring;
	struct nfqlb_flows* tflows; /* flowlb: the trace flows, or NULL */
	uint32_t tentered;          /* announced in tflows (left with the main flows) */
};

/* The mask of a classifier nobody traces. */
static const uint32_t no_trace = 0;

struct nfqlb_lb* nfqlb_lb_create(const uint8_t* tshm, struct nfqlb_fragtable* ft, uint32_t hash_mode,
				 uint32_t sctp_encap, int32_t notargets_fwmark)
{
	if (tshm == NULL)
		return NULL;
	struct nfqlb_lb* lb = calloc(1, sizeof(*lb));
	if (!lb)
		return NULL;
	lb->tshm = tshm;
	lb->tmask = &no_trace;
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
	lb->tmask = &no_trace;
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
	if (lb->tentered) {
		nfqlb_flows_leave(lb->tflows, lb->slot);
		lb->tentered = 0;
	}
}

void nfqlb_lb_set_trace(struct nfqlb_lb* lb, const uint32_t* mask, struct nfqlb_trace_ring* ring,
			struct nfqlb_flows* tflows)
{
	if (lb->tentered) {
		nfqlb_flows_leave(lb->tflows, lb->slot);
		lb->tentered = 0;
	}
	lb->tring = ring;
	lb->tflows = lb->flows ? tflows : NULL;
	lb->tmask = (mask && ring) ? mask : &no_trace;
}

void nfqlb_lb_set_frag(struct nfqlb_lb* lb, const uint8_t* lbshm, int32_t tun_fd, uint32_t reassembler)
{
	lb->lbshm = lbshm;
	lb->tun_fd = tun_fd;
	lb->reassembler = reassembler;
}

void nfqlb_lb_set_conntrack(struct nfqlb_lb* lb, uint8_t* ct)
{
	if (lb->flows)
		return; /* flowlb: each flow's target brings its own table */
	lb->ct = ct;
	if (ct && !lb->sched && lb->tshm) {
		uint32_t n = 0;
		nfqlb_tshm_stamp(lb->tshm, &n);
		/* sized now, so the packet path allocates only if a larger table replaces this one */
		lb->sched = nfqlb_ct_sched_create(n); /* NULL (no memory): Maglev decides */
	}
}

void nfqlb_lb_set_tshm(struct nfqlb_lb* lb, const uint8_t* tshm)
{
	__atomic_store_n(&lb->tshm, tshm, __ATOMIC_RELEASE);
	nfqlb_ct_sched_reset(lb->sched);
}

void nfqlb_lb_set_view(struct nfqlb_lb* lb, struct nfqlb_tshm_view* view)
{
	if (view == NULL || lb->flows)
		return;
	lb->view = view;
	nfqlb_lb_set_tshm(lb, nfqlb_tshm_view_table(view));
}

void nfqlb_lb_set_tier_view(struct nfqlb_lb* lb, struct nfqlb_tshm_view* view)
{
	lb->tier_view = view;
	lb->lbshm = view ? nfqlb_tshm_view_table(view) : NULL;
}

void nfqlb_lb_refresh(struct nfqlb_lb* lb, uint64_t* counters)
{
	if (lb->view)
		nfqlb_tshm_view_refresh(lb->view, counters);
	if (lb->tier_view)
		nfqlb_tshm_view_refresh(lb->tier_view, counters);
	if (lb->flows)
		nfqlb_flows_refresh(lb->flows, counters);
}

void nfqlb_lb_destroy(struct nfqlb_lb* lb)
{
	nfqlb_ct_sched_destroy(lb->sched);
	free(lb);
}

/*
 * A flow the connection table does not hold (is_new) or holds for a target
 * that left: the table's scheduler decides and the decision is stored.
 * Maglev: as without the table, and nfqlb_ct_insert's flood guard may skip
 * the insert (the next packet hashes to the same target anyway). The other
 * schedulers are not stable per packet (rr would send each packet of a flow
 * it could not store elsewhere), so a new flow first takes its flood-guard
 * token: over the limit it is hashed by Maglev and not stored.
 */
static int32_t ct_schedule(uint8_t* ct, struct nfqlb_ct_sched* cache, uint32_t hash_mode, const uint8_t* tshm,
			   const uint8_t* key, int is_new, uint64_t now_ns)
{
	int32_t row = -1, fw;
	uint32_t sched = nfqlb_ct_scheduler(ct);
	uint32_t hash = nfqlb_hash_key(key, NFQLB_KEY_LEN, hash_mode);
	if (sched == NFQLB_SCHED_MAGLEV || cache == NULL) {
		fw = nfqlb_tshm_lookup_row(tshm, hash, &row);
		if (fw >= 0)
			nfqlb_ct_insert(ct, key, fw, row, now_ns); /* the flood guard may skip it */
		return fw;
	}
	if (is_new && nfqlb_ct_flood_take(ct, now_ns))
		return nfqlb_tshm_lookup(tshm, hash);
	fw = nfqlb_ct_sched_pick(cache, ct, tshm, sched, &row);
	if (fw < 0) /* nothing eligible (or no memory for a larger table): Maglev's answer */
		fw = nfqlb_tshm_lookup_row(tshm, hash, &row);
	if (fw >= 0)
		nfqlb_ct_insert_admitted(ct, key, fw, row, now_ns);
	return fw;
}

/*
 * The decision, written once and compiled twice: with tm == 0 (a constant)
 * every `if (tm ...)` below folds away and this is the untraced path; with
 * the mask of a traced packet it also fills *tr.
 */
static inline __attribute__((always_inline)) int32_t decide(struct nfqlb_lb* lb, const uint32_t tm,
							  struct nfqlb_trace_rec* tr, uint32_t hw_proto,
							  const uint8_t* pkt, uint32_t len, uint32_t orig_len,
							  uint64_t now_ns, uint64_t* counters)
{
	uint8_t key[NFQLB_KEY_LEN], fkey[NFQLB_KEY_LEN];
	/* flowlb parses SCTP-over-UDP per flow (its udpencap), lb with --sctp_encap */
	int32_t rc = nfqlb_packet_key(hw_proto, pkt, len, lb->flows ? 0 : lb->sctp_encap, key, fkey);
	if (tm)
		tr->rc = rc;
	if (rc < 0) {
		counters[NFQLB_C_MALFORMED]++;
		if (tm)
			tr->events |= NFQLB_TEV_MALFORMED;
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
				if (tm) {
					tr->events |= NFQLB_TEV_TIER;
					tr->fw = fw;
				}
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
		if (r == 0) {
			if (tm) {
				tr->events |= NFQLB_TEV_FRAG_LOCAL;
				tr->fw = fw;
			}
			return fw;
		}
		counters[r == 1 ? NFQLB_C_FRAG_STORED : NFQLB_C_FRAG_DROPPED]++;
		if (tm)
			tr->events |= r == 1 ? NFQLB_TEV_FRAG_STORED : NFQLB_TEV_FRAG_DROPPED;
		return -1;
	}
	if (tm)
		memcpy(tr->key, key, NFQLB_KEY_LEN);
	const uint8_t* tshm;
	uint8_t* ct = lb->ct;
	struct nfqlb_ct_sched* sched = lb->sched;
	if (lb->flows) {
		/* the flow's target brings its connection table and this worker's scheduler cache */
		tshm = nfqlb_flows_pick_ct(lb->flows, lb->slot, hw_proto, pkt, len, lb->promiscuous, key, fkey, &rc,
					   &ct, &sched);
		if (tm) {
			/* pick re-keyed with a flow's udpencap port (as upstream's flowlb) */
			if (rc < 0 || (rc & NFQLB_PKT_UDPENCAP)) {
				tr->events |= NFQLB_TEV_UDPENCAP;
				tr->udpencap = (uint16_t)((tr->key[38] << 8) | tr->key[39]);
				if (rc < 0)
					tr->events |= NFQLB_TEV_REKEY_FAILED;
				else if (tshm == NULL)
					tr->events |= NFQLB_TEV_NOLB_UDPENCAP;
			}
			tr->target = (uint64_t)(uintptr_t)tshm;
			if ((tm & NFQLB_TRACE_FLOWS) && lb->tflows) {
				/* trace flows: matched on the first key, promiscuous ping always on */
				if (!lb->tentered) {
					nfqlb_flows_enter(lb->tflows, lb->slot);
					lb->tentered = 1;
				}
				uint8_t k2[NFQLB_KEY_LEN], f2[NFQLB_KEY_LEN];
				int32_t rc2 = tr->rc;
				memcpy(k2, tr->key, NFQLB_KEY_LEN);
				memcpy(f2, fkey, NFQLB_KEY_LEN);
				const uint8_t* id = nfqlb_flows_pick(lb->tflows, hw_proto, pkt, len, 1, k2, f2, &rc2);
				if (id != NULL) {
					tr->events |= NFQLB_TEV_TFLOW;
					tr->tflow = (uint32_t)(uintptr_t)id;
					nfqlb_trace_icmp(hw_proto, pkt, len, tr);
				}
			}
		}
		if (tshm == NULL) {
			counters[rc < 0 ? NFQLB_C_MALFORMED : NFQLB_C_NOLB]++;
			if (tm && rc >= 0)
				tr->events |= NFQLB_TEV_NOLB;
			return rc < 0 ? -1 : lb->nolb_fwmark;
		}
	} else {
		tshm = __atomic_load_n(&lb->tshm, __ATOMIC_ACQUIRE);
	}
	if (tm)
		tr->proto = (uint16_t)(key[34] | (key[35] << 8));
	int32_t fw;
	if (ct) {
		/*
		 * The connection table, before Maglev: an entry holds while its target is in the table.
		 * flowlb: the key is the packet's and the table the picked target's, so an entry is
		 * used only when the flow (whichever matches now) sends the packet to that table again.
		 */
		int32_t row = -1;
		fw = nfqlb_ct_lookup(ct, key, now_ns, orig_len, &row);
		if (fw < 0 || (row >= 0 && nfqlb_tshm_row_fwmark(tshm, row) != fw))
			fw = ct_schedule(ct, sched, lb->hash_mode, tshm, key, fw < 0, now_ns);
	} else {
		fw = nfqlb_tshm_lookup(tshm, nfqlb_hash_key(key, NFQLB_KEY_LEN, lb->hash_mode));
	}
	if (tm)
		tr->fw = fw;
	if (fw < 0) {
		counters[NFQLB_C_NOTARGET]++;
		if (tm)
			tr->events |= NFQLB_TEV_NOTARGET;
		return lb->notargets_fwmark;
	}
	if ((rc & NFQLB_PKT_FIRST_FRAG) && lb->ft) {
		int32_t inject;
		if (tm)
			tr->events |= NFQLB_TEV_FIRST;
		if (nfqlb_ft_first(lb->ft, fkey, fw, now_ns, infop, &inject) != 0) {
			counters[NFQLB_C_FRAG_DROPPED]++;
			if (tm)
				tr->events |= NFQLB_TEV_FIRST_FAILED;
			return -1;
		}
		if (inject >= 0) {
			uint32_t failed;
			uint32_t ok = nfqlb_ft_inject(lb->ft, inject, lb->tun_fd, &failed);
			counters[NFQLB_C_FRAG_INJECTED] += ok;
			counters[NFQLB_C_FRAG_INJECT_FAILED] += failed;
			if (tm) {
				tr->events |= NFQLB_TEV_INJECT;
				tr->inject_ok = ok;
				tr->inject_failed = failed;
			}
		}
	}
	if (tm)
		tr->events |= NFQLB_TEV_LB;
	return fw;
}

#ifndef NFQLB_NO_TRACE
/* A traced packet: the decision with its record, kept when a client wants one of its lines. */
static __attribute__((noinline)) int32_t decide_traced(struct nfqlb_lb* lb, uint32_t tm, uint32_t hw_proto,
							const uint8_t* pkt, uint32_t len, uint32_t orig_len,
							uint64_t now_ns, uint64_t* counters)
{
	struct nfqlb_trace_rec tr;
	memset(&tr, 0, sizeof(tr));
	int32_t verdict = decide(lb, tm, &tr, hw_proto, pkt, len, orig_len, now_ns, counters);
	if (lb->flows)
		tr.events |= NFQLB_TEV_FLOWLB;
	if ((nfqlb_trace_categories(tr.events, tr.proto) & tm) == 0)
		return verdict;
	tr.verdict = verdict;
	tr.len = orig_len;
	tr.hw_proto = (uint16_t)hw_proto;
	nfqlb_trace_commit(lb->tring, &tr);
	return verdict;
}
#endif

int32_t nfqlb_lb_decide(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
			uint32_t orig_len, uint64_t now_ns, uint64_t* counters)
{
#ifndef NFQLB_NO_TRACE
	uint32_t tm = __atomic_load_n(lb->tmask, __ATOMIC_RELAXED);
	if (__builtin_expect(tm != 0, 0))
		return decide_traced(lb, tm, hw_proto, pkt, len, orig_len, now_ns, counters);
#endif
	return decide(lb, 0, NULL, hw_proto, pkt, len, orig_len, now_ns, counters);
}

int32_t nfqlb_lb_classify(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len,
			  uint64_t now_ns, uint64_t* counters)
{
	return nfqlb_lb_decide(lb, hw_proto, pkt, len, len, now_ns, counters);
}

/* Additions for the connection table's prefetch pipeline (queue.c's pre-pass). */

int32_t nfqlb_lb_prefetches(const struct nfqlb_lb* lb) { return lb->ct != NULL && lb->flows == NULL; }

int32_t nfqlb_lb_prefetch(struct nfqlb_lb* lb, uint32_t hw_proto, const uint8_t* pkt, uint32_t len, uint8_t* key)
{
	uint8_t fkey[NFQLB_KEY_LEN];
	if (lb->ct == NULL || lb->flows != NULL)
		return 0; /* flowlb: the table depends on the flow, known only after the pick */
	int32_t rc = nfqlb_packet_key(hw_proto, pkt, len, lb->sctp_encap, key, fkey);
	if (rc < 0 || (rc & NFQLB_PKT_FRAG)) /* a non-first fragment never reaches the table */
		return 0;
	nfqlb_ct_prefetch(lb->ct, key);
	return 1;
}

void nfqlb_lb_prefetch_ways(struct nfqlb_lb* lb, const uint8_t* key)
{
	if (lb->ct != NULL)
		nfqlb_ct_prefetch_ways(lb->ct, key);
}
