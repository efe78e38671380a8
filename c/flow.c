/*
 * flow.c - one flow of a flowlb flow set (flowset.c holds the set and its
 * index): the binary spec parsed and validated (its format: nfqlb.h, the
 * flowset.c section), and the single-flow match, upstream flowMatch and
 * match.c: dsts, srcs, then (unless a promiscuous ping) protocols, dports,
 * sports and byte-match statements.
 *
 * Deliberate differences from upstream's match.c, as c/packet.c's: exact
 * bounds (a header may end at the end of the packet; upstream needs one more
 * byte), IPv6 extension headers advance by (len+1)*8, the IPv4 header must
 * have IHL >= 5 and the packet ends at min(len, tot_len) (IPv6: payload
 * length), and the IP version comes from the packet's first nibble (flowlb
 * calls this only for packets nfqlb_packet_key parsed, whose version agrees
 * with the NFQUEUE hw_protocol).
 */
#include "flow_internal.h"
#include <stdlib.h>
#include <string.h>

static uint32_t rd32(const uint8_t* p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint16_t be16(const uint8_t* p) { return (uint16_t)((p[0] << 8) | p[1]); }

void nfqlb_flow_mask(uint32_t len, uint64_t m[2])
{
	uint8_t b[16];
	for (uint32_t i = 0; i < 16; i++) {
		uint32_t bits = len > i * 8 ? len - i * 8 : 0;
		b[i] = bits >= 8 ? 0xff : (uint8_t)(0xff00u >> bits);
	}
	memcpy(m, b, 16);
}

void nfqlb_flow_clear(struct flow* f)
{
	free(f->dsts);
	free(f->srcs);
	free(f->dports);
	free(f->sports);
	free(f->match);
	memset(f, 0, sizeof(*f));
}

static int parse_cidrs(const uint8_t* p, uint32_t n, struct cidr** out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	struct cidr* c = calloc(n, sizeof(*c));
	if (!c)
		return -1;
	for (uint32_t i = 0; i < n; i++, p += 20) {
		uint32_t len = rd32(p + 16);
		if (len > 128)
			goto bad;
		memcpy(c[i].a, p, 16);
		nfqlb_flow_mask(len, c[i].m);
		if ((c[i].a[0] & ~c[i].m[0]) || (c[i].a[1] & ~c[i].m[1]))
			goto bad; /* host bits set */
		c[i].len = len;
	}
	*out = c;
	return 0;
bad:
	free(c);
	return -1;
}

static int parse_ranges(const uint8_t* p, uint32_t n, struct range** out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	struct range* r = calloc(n, sizeof(*r));
	if (!r)
		return -1;
	for (uint32_t i = 0; i < n; i++, p += 4) {
		uint32_t w = rd32(p);
		uint32_t first = w & 0xffff, last = w >> 16;
		if (first > last || (i > 0 && first <= r[i - 1].last)) {
			free(r);
			return -1;
		}
		r[i].first = (uint16_t)first;
		r[i].last = (uint16_t)last;
	}
	*out = r;
	return 0;
}

static uint32_t l4_hdrlen(uint32_t proto)
{
	switch (proto) {
	case 6:
		return 20;
	case 17:
		return 8;
	case 132:
		return 12;
	default:
		return 0;
	}
}

static int parse_match(const uint8_t* p, uint32_t n, struct stmt** out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	struct stmt* s = calloc(n, sizeof(*s));
	if (!s)
		return -1;
	for (uint32_t i = 0; i < n; i++, p += 20) {
		uint32_t proto = rd32(p), off = rd32(p + 4), nb = rd32(p + 8);
		uint32_t hl = l4_hdrlen(proto);
		if (hl == 0 || (nb != 1 && nb != 2 && nb != 4) || off > hl || off + nb > hl) {
			free(s);
			return -1;
		}
		s[i].proto = (uint8_t)proto;
		s[i].offset = (uint16_t)off;
		s[i].nbytes = (uint8_t)nb;
		s[i].mask = rd32(p + 12);
		s[i].value = rd32(p + 16);
	}
	*out = s;
	return 0;
}

int32_t nfqlb_flow_parse(struct flow* out, const uint8_t* spec, uint32_t speclen)
{
	if (speclen < NFQLB_FLOW_SPEC_WORDS * 4)
		return -1;
	uint32_t h[NFQLB_FLOW_SPEC_WORDS];
	for (uint32_t k = 0; k < NFQLB_FLOW_SPEC_WORDS; k++)
		h[k] = rd32(spec + 4 * k);
	uint32_t flags = h[1], pm = h[2], ue = h[3];
	uint32_t nd = h[4], ns = h[5], ndp = h[6], nsp = h[7], nm = h[8];
	if (h[0] != NFQLB_FLOW_SPEC_MAGIC || (flags & ~FLOW_F_ALL) || ue > 65535)
		return -1;
	if ((flags & NFQLB_FLOW_F_PROTOCOLS) ? (pm == 0 || (pm & ~7u)) : pm != 0)
		return -1;
	if (nd > NFQLB_FLOW_MAX_CIDRS || ns > NFQLB_FLOW_MAX_CIDRS || ndp > NFQLB_FLOW_MAX_RANGES ||
	    nsp > NFQLB_FLOW_MAX_RANGES || nm > NFQLB_FLOW_MAX_MATCH)
		return -1;
	if ((!(flags & NFQLB_FLOW_F_DSTS) && nd) || (!(flags & NFQLB_FLOW_F_SRCS) && ns) ||
	    (!(flags & NFQLB_FLOW_F_DPORTS) && ndp) || (!(flags & NFQLB_FLOW_F_SPORTS) && nsp) ||
	    (!(flags & NFQLB_FLOW_F_MATCH) && nm))
		return -1;
	uint64_t words = (uint64_t)NFQLB_FLOW_SPEC_WORDS + 5ull * (nd + ns) + ndp + nsp + 5ull * nm;
	if (words * 4 != speclen)
		return -1;
	struct flow f = { 0 };
	f.flags = flags;
	f.protomask = pm;
	f.udpencap = ue;
	f.ndsts = nd;
	f.nsrcs = ns;
	f.ndports = ndp;
	f.nsports = nsp;
	f.nmatch = nm;
	const uint8_t* p = spec + 4 * NFQLB_FLOW_SPEC_WORDS;
	if (parse_cidrs(p, nd, &f.dsts))
		goto bad;
	p += 20 * nd;
	if (parse_cidrs(p, ns, &f.srcs))
		goto bad;
	p += 20 * ns;
	if (parse_ranges(p, ndp, &f.dports))
		goto bad;
	p += 4 * ndp;
	if (parse_ranges(p, nsp, &f.sports))
		goto bad;
	p += 4 * nsp;
	if (parse_match(p, nm, &f.match))
		goto bad;
	f.defined = 1;
	*out = f;
	return 0;
bad:
	nfqlb_flow_clear(&f);
	return -1;
}

/* ------------------------------------------------------------------------
 * Matching one flow
 * --------------------------------------------------------------------- */

void nfqlb_flow_key(struct kview* k, const uint8_t* key)
{
	memcpy(k->src, key, 16);
	memcpy(k->dst, key + 16, 16);
	k->proto = (uint32_t)key[34] | ((uint32_t)key[35] << 8);
	k->sport = be16(key + 36);
	k->dport = be16(key + 38);
	switch (k->proto) {
	case 6:
		k->pbit = 1, k->cls = CLS_TCP;
		break;
	case 17:
		k->pbit = 2, k->cls = CLS_UDP;
		break;
	case 132:
		k->pbit = 4, k->cls = CLS_SCTP;
		break;
	default:
		k->pbit = 0, k->cls = CLS_OTHER;
	}
}

static void l4_find(struct l4view* l4, const uint8_t* pkt, uint32_t len, uint32_t kproto)
{
	l4->state = 2;
	uint32_t off, end, proto;
	uint32_t v = pkt[0] >> 4;
	if (v == 4) {
		if (len < 20)
			return;
		uint32_t ihl = (uint32_t)(pkt[0] & 0xf) * 4, tot = be16(pkt + 2);
		end = tot < len ? tot : len;
		if (ihl < 20 || ihl > end)
			return;
		off = ihl;
		proto = pkt[9];
	} else if (v == 6) {
		if (len < 40)
			return;
		uint32_t plen = be16(pkt + 4);
		end = (plen != 0 && 40 + plen < len) ? 40 + plen : len;
		uint32_t nh = pkt[6];
		off = 40;
		for (int i = 0; i < 16 && (nh == 0 || nh == 43 || nh == 60); i++) {
			if (off + 2 > end)
				return;
			uint32_t hlen = ((uint32_t)pkt[off + 1] + 1) * 8;
			nh = pkt[off];
			off += hlen;
			if (off > end)
				return;
		}
		if (nh == 0 || nh == 43 || nh == 60 || nh == 44)
			return; /* absurd chain, or a fragment: upstream never matches those */
		proto = nh;
	} else {
		return;
	}
	if (off + l4_hdrlen(proto) > end)
		return;
	if (proto == 17 && kproto == 132) {
		/* SCTP over UDP: the statements see the SCTP header */
		off += 8;
		proto = 132;
		if (off + 12 > end)
			return;
	}
	l4->off = off;
	l4->proto = proto;
	l4->state = 1;
}

static int bytes_match(const struct flow* f, struct l4view* l4, const uint8_t* pkt, uint32_t len,
		       uint32_t kproto)
{
	if (l4->state == 0)
		l4_find(l4, pkt, len, kproto);
	if (l4->state != 1)
		return 0;
	const uint8_t* h = pkt + l4->off; /* l4_find checked off + hdrlen(proto) <= end <= len */
	for (uint32_t i = 0; i < f->nmatch; i++) {
		const struct stmt* s = &f->match[i];
		if (s->proto != l4->proto)
			continue;
		const uint8_t* p = h + s->offset; /* offset + nbytes <= hdrlen(proto), checked in add */
		uint32_t x;
		if (s->nbytes == 1)
			x = p[0];
		else if (s->nbytes == 2)
			x = be16(p);
		else
			x = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
		if (s->mask != 0)
			x &= s->mask;
		if (x != s->value)
			return 0;
	}
	return 1;
}

static int cidr_any(const struct cidr* c, uint32_t n, const uint64_t a[2])
{
	for (uint32_t i = 0; i < n; i++) {
		if ((a[0] & c[i].m[0]) == c[i].a[0] && (a[1] & c[i].m[1]) == c[i].a[1])
			return 1;
	}
	return 0;
}

static int port_in(const struct range* r, uint32_t n, uint32_t port)
{
	uint32_t lo = 0, hi = n; /* first range with first > port */
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (r[mid].first <= port)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && port <= r[lo - 1].last;
}

/*
 * 0: no match; 1: matched as a promiscuous ping; 2: matched on all criteria.
 * need: the criteria (NFQLB_FLOW_F_*) to test; the index passes only those
 * its sets do not already guarantee. Byte-match is always tested.
 */
int nfqlb_flow_match(const struct flow* f, const struct kview* k, struct l4view* l4, const uint8_t* pkt, uint32_t len,
		     int ping, uint32_t need)
{
	uint32_t fl = f->flags & need;
	if ((fl & NFQLB_FLOW_F_DSTS) && !cidr_any(f->dsts, f->ndsts, k->dst))
		return 0;
	if ((fl & NFQLB_FLOW_F_SRCS) && !cidr_any(f->srcs, f->nsrcs, k->src))
		return 0;
	if (ping)
		return 1;
	if ((fl & NFQLB_FLOW_F_PROTOCOLS) && !(f->protomask & k->pbit))
		return 0;
	if ((fl & NFQLB_FLOW_F_DPORTS) && !port_in(f->dports, f->ndports, k->dport))
		return 0;
	if ((fl & NFQLB_FLOW_F_SPORTS) && !port_in(f->sports, f->nsports, k->sport))
		return 0;
	if (f->nmatch > 0 && len > 0 && !bytes_match(f, l4, pkt, len, k->proto))
		return 0;
	return 2;
}
