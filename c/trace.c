/*
 * trace.c - per-packet trace records of lb/flowlb: the mask word, the record
 * ring, the ICMP fields of the `flows` block and the category of each record
 * (which trace bits its lines belong to). The records are filled in lb.c and
 * turned into upstream's text lines by dataplane/trace_format.ts.
 */
#include "nfqlb.h"
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(struct nfqlb_trace_rec) == NFQLB_TRACE_REC_LEN, "trace record layout");
_Static_assert(offsetof(struct nfqlb_trace_rec, target) == 24, "trace record layout");
_Static_assert(offsetof(struct nfqlb_trace_rec, key) == 48, "trace record layout");
_Static_assert(offsetof(struct nfqlb_trace_rec, inject_failed) == 92, "trace record layout");
_Static_assert(offsetof(struct nfqlb_trace_ring, rec) == NFQLB_TRACE_RING_HEADER, "trace ring layout");

uint32_t* nfqlb_trace_mask_create(void) { return calloc(1, sizeof(uint32_t)); }

void nfqlb_trace_mask_set(uint32_t* word, uint32_t mask)
{
	if (word)
		__atomic_store_n(word, mask, __ATOMIC_RELAXED);
}

void nfqlb_trace_mask_free(uint32_t* word) { free(word); }

struct nfqlb_trace_ring* nfqlb_trace_ring_create(uint32_t cap)
{
	if (cap == 0 || cap > NFQLB_TRACE_RING_MAX)
		return NULL;
	struct nfqlb_trace_ring* r = calloc(1, sizeof(*r) + (size_t)cap * sizeof(struct nfqlb_trace_rec));
	if (r)
		r->cap = cap;
	return r;
}

void nfqlb_trace_ring_free(struct nfqlb_trace_ring* r) { free(r); }

void nfqlb_trace_commit(struct nfqlb_trace_ring* r, const struct nfqlb_trace_rec* rec)
{
	if (r->count >= r->cap) {
		r->dropped++;
		return;
	}
	memcpy(&r->rec[r->count], rec, sizeof(*rec));
	r->count++;
}

static uint16_t be16(const uint8_t* p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* The 8-byte ICMP(v6) header at p (bounds checked by the caller) into rec. */
static void icmp_fields(const uint8_t* p, int v6, struct nfqlb_trace_rec* rec)
{
	rec->icmp_type = p[0];
	rec->icmp_code = p[1];
	rec->icmp_id = be16(p + 4);
	rec->icmp_seq = be16(p + 6);
	/* IPv4 frag-needed: the MTU is the second 16-bit word; ICMPv6 packet-too-big: 32 bits */
	rec->icmp_mtu = v6 ? ((uint32_t)be16(p + 4) << 16) | be16(p + 6) : be16(p + 6);
	rec->events |= NFQLB_TEV_ICMP;
}

int32_t nfqlb_trace_icmp(uint32_t hw_proto, const uint8_t* pkt, uint32_t len, struct nfqlb_trace_rec* rec)
{
	if (pkt == NULL || rec == NULL)
		return 0;
	if (hw_proto == 0x0800) {
		if (len < 20 || (pkt[0] & 0x0f) < 5 || pkt[9] != 1)
			return 0;
		if ((be16(pkt + 6) & 0x1fff) != 0)
			return 0; /* a later fragment has no ICMP header */
		uint32_t l4 = (uint32_t)(pkt[0] & 0x0f) * 4;
		if (l4 + 8 > len)
			return 0;
		icmp_fields(pkt + l4, 0, rec);
		return 1;
	}
	if (hw_proto != 0x86dd || len < 40)
		return 0;
	uint8_t nh = pkt[6];
	uint32_t p = 40;
	for (int i = 0; i < 16; i++) {
		if (nh == 44) {
			if (p + 8 > len || (be16(pkt + p + 2) & 0xfff8) != 0)
				return 0; /* truncated, or a later fragment */
			nh = pkt[p];
			p += 8;
		} else if (nh == 0 || nh == 43 || nh == 60) {
			if (p + 2 > len)
				return 0;
			uint32_t hlen = ((uint32_t)pkt[p + 1] + 1) * 8;
			nh = pkt[p];
			p += hlen;
		} else {
			break;
		}
	}
	if (nh != 58 || p > len || len - p < 8)
		return 0;
	icmp_fields(pkt + p, 1, rec);
	return 1;
}

uint32_t nfqlb_trace_categories(uint32_t ev, uint32_t proto)
{
	uint32_t c = 0;
	if (ev & (NFQLB_TEV_MALFORMED | NFQLB_TEV_NOLB | NFQLB_TEV_NOTARGET | NFQLB_TEV_LB))
		c |= NFQLB_TRACE_PACKET;
	/* flowlb prints a load-balanced SCTP packet under `sctp` too (upstream) */
	if ((ev & NFQLB_TEV_FLOWLB) && (ev & (NFQLB_TEV_NOTARGET | NFQLB_TEV_LB)) && proto == 132)
		c |= NFQLB_TRACE_SCTP;
	if (ev & (NFQLB_TEV_TIER | NFQLB_TEV_FRAG_STORED | NFQLB_TEV_FRAG_DROPPED | NFQLB_TEV_FRAG_LOCAL |
		  NFQLB_TEV_FIRST | NFQLB_TEV_FIRST_FAILED | NFQLB_TEV_INJECT))
		c |= NFQLB_TRACE_FRAG;
	if (ev & (NFQLB_TEV_UDPENCAP | NFQLB_TEV_REKEY_FAILED | NFQLB_TEV_NOLB_UDPENCAP))
		c |= NFQLB_TRACE_SCTP;
	if (ev & NFQLB_TEV_TFLOW)
		c |= NFQLB_TRACE_FLOWS;
	return c;
}
