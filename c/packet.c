/*
 * packet.c - build upstream's 40-byte hash key from an IPv4/IPv6 packet.
 *
 * Same key as upstream nfqlb 1.2.0 for every packet upstream parses correctly,
 * so both pick the same target. Deliberate fixes (docs/compatibility.md):
 *   - IPv6 extension headers advance by (len+1)*8 (upstream: len*8, len 0 = error);
 *   - IPv6 first fragments are hashed on their real L4 header after the
 *     fragment header (upstream reads the fragment header as ports);
 *   - bounds are exact (a header may end at the end of the packet) and the
 *     ICMP header is checked before it is read.
 */
#include "nfqlb.h"
#include <string.h>

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_SCTP_ 132
#define IPPROTO_ICMPV6_ 58

static uint16_t be16(const uint8_t* p) { return (uint16_t)((p[0] << 8) | p[1]); }

static void put_v4(uint8_t* dst16, const uint8_t* v4)
{
	memset(dst16, 0, 10);
	dst16[10] = 0xff;
	dst16[11] = 0xff;
	memcpy(dst16 + 12, v4, 4);
}

static void set_proto(uint8_t* key, uint32_t proto)
{
	key[34] = (uint8_t)proto;
	key[35] = (uint8_t)(proto >> 8);
}

static int port_proto(uint32_t p) { return p == IPPROTO_TCP_ || p == IPPROTO_UDP_ || p == IPPROTO_SCTP_; }

/*
 * Ports at l4 (raw network order) into the key; with udpencap, a UDP packet
 * whose port `encap_port_at` (2 = dport, 0 = sport) equals udpencap is
 * SCTP-over-UDP: take the SCTP ports 8 bytes further. Returns the rc bits to
 * add (0 or UDPENCAP) or -1 when the packet is too short.
 */
static int32_t put_ports(uint8_t* key, const uint8_t* l4, const uint8_t* end, uint32_t* proto,
			 uint32_t udpencap, int encap_port_at)
{
	if (l4 + 4 > end)
		return -1;
	int32_t bits = 0;
	if (udpencap != 0 && *proto == IPPROTO_UDP_ && be16(l4 + encap_port_at) == udpencap) {
		l4 += 8;
		if (l4 + 4 > end)
			return -1;
		*proto = IPPROTO_SCTP_;
		bits = NFQLB_PKT_UDPENCAP;
	}
	memcpy(key + 36, l4, 4);
	set_proto(key, *proto);
	return bits;
}

/* Walk IPv6 extension headers from `nh` at p; returns the L4 offset or -1. */
static int32_t v6_walk(const uint8_t* pkt, uint32_t p, uint32_t end, uint8_t* nh_io)
{
	uint8_t nh = *nh_io;
	for (int i = 0; i < 16 && (nh == 0 || nh == 43 || nh == 60); i++) {
		if (p + 2 > end)
			return -1;
		uint32_t hlen = ((uint32_t)pkt[p + 1] + 1) * 8;
		nh = pkt[p];
		p += hlen;
		if (p > end)
			return -1;
	}
	if (nh == 0 || nh == 43 || nh == 60)
		return -1; /* absurd chain */
	*nh_io = nh;
	return (int32_t)p;
}

/* Inner packet of an ICMP error: hash it flipped, as the client→VIP packet. */
static int32_t inner_v4(const uint8_t* p, const uint8_t* end, uint32_t udpencap, uint8_t* key)
{
	if (p + 20 > end || (p[0] >> 4) != 4)
		return -1;
	uint32_t ihl = (uint32_t)(p[0] & 0xf) * 4;
	if (ihl < 20 || p + ihl > end)
		return -1;
	put_v4(key, p + 16);      /* key.src = inner dst */
	put_v4(key + 16, p + 12); /* key.dst = inner src */
	uint32_t proto = p[9];
	set_proto(key, proto);
	if (!port_proto(proto))
		return NFQLB_PKT_ICMP_INNER | NFQLB_PKT_ADDRONLY;
	uint8_t ports[4];
	const uint8_t* l4 = p + ihl;
	int32_t bits = put_ports(key, l4, end, &proto, udpencap, 0);
	if (bits < 0)
		return -1;
	memcpy(ports, key + 36, 4);
	key[36] = ports[2]; /* swap: key.sport = inner dport */
	key[37] = ports[3];
	key[38] = ports[0];
	key[39] = ports[1];
	return NFQLB_PKT_ICMP_INNER | bits;
}

static int32_t inner_v6(const uint8_t* base, uint32_t off, uint32_t end, uint32_t udpencap, uint8_t* key)
{
	const uint8_t* p = base + off;
	if (off + 40 > end || (p[0] >> 4) != 6)
		return -1;
	memcpy(key, p + 24, 16);
	memcpy(key + 16, p + 8, 16);
	uint8_t nh = p[6];
	int32_t l4 = v6_walk(base, off + 40, end, &nh);
	if (l4 < 0)
		return -1;
	uint32_t proto = nh;
	set_proto(key, proto);
	if (!port_proto(proto))
		return NFQLB_PKT_ICMP_INNER | NFQLB_PKT_ADDRONLY;
	int32_t bits = put_ports(key, base + l4, base + end, &proto, udpencap, 0);
	if (bits < 0)
		return -1;
	uint8_t ports[4];
	memcpy(ports, key + 36, 4);
	key[36] = ports[2];
	key[37] = ports[3];
	key[38] = ports[0];
	key[39] = ports[1];
	return NFQLB_PKT_ICMP_INNER | bits;
}

static int32_t key_v4(const uint8_t* pkt, uint32_t len, uint32_t udpencap, uint8_t* key, uint8_t* fkey)
{
	if (len < 20 || (pkt[0] >> 4) != 4)
		return -1;
	uint32_t ihl = (uint32_t)(pkt[0] & 0xf) * 4;
	uint32_t tot = be16(pkt + 2);
	uint32_t end = tot < len ? tot : len; /* captured copy may be shorter than tot_len */
	if (ihl < 20 || ihl > end)
		return -1;
	const uint8_t* e = pkt + end;
	int32_t rc = 0;
	uint16_t frag = be16(pkt + 6);
	if (frag & 0x3fff) {
		put_v4(fkey, pkt + 12);
		put_v4(fkey + 16, pkt + 16);
		memset(fkey + 32, 0, 8);
		memcpy(fkey + 32, pkt + 4, 2); /* IP id, raw */
		if (frag & 0x1fff)
			return NFQLB_PKT_FRAG;
		rc = NFQLB_PKT_FIRST_FRAG;
	}
	const uint8_t* l4 = pkt + ihl;
	uint32_t proto = pkt[9];
	if (proto == IPPROTO_ICMP_) {
		if (l4 + 8 > e)
			return -1;
		uint8_t type = l4[0];
		if (type == 3 || type == 4 || type == 5 || type == 11) {
			if (rc & NFQLB_PKT_FIRST_FRAG)
				return -1;
			return inner_v4(l4 + 8, e, udpencap, key);
		}
		put_v4(key, pkt + 12);
		put_v4(key + 16, pkt + 16);
		if (type == 8)
			memcpy(key + 32, l4 + 4, 2); /* echo id, raw */
		set_proto(key, IPPROTO_ICMP_);
		return rc | NFQLB_PKT_ICMP;
	}
	put_v4(key, pkt + 12);
	put_v4(key + 16, pkt + 16);
	set_proto(key, proto);
	if (!port_proto(proto))
		return rc | NFQLB_PKT_ADDRONLY;
	int32_t bits = put_ports(key, l4, e, &proto, udpencap, 2);
	return bits < 0 ? -1 : rc | bits;
}

static int32_t key_v6(const uint8_t* pkt, uint32_t len, uint32_t udpencap, uint8_t* key, uint8_t* fkey)
{
	if (len < 40 || (pkt[0] >> 4) != 6)
		return -1;
	uint32_t plen = be16(pkt + 4);
	uint32_t end = (plen != 0 && 40 + plen < len) ? 40 + plen : len;
	int32_t rc = 0;
	uint8_t nh = pkt[6];
	int32_t p = v6_walk(pkt, 40, end, &nh);
	if (p < 0)
		return -1;
	if (nh == 44) {
		if ((uint32_t)p + 8 > end)
			return -1;
		memcpy(fkey, pkt + 8, 32);
		memset(fkey + 32, 0, 8);
		memcpy(fkey + 32, pkt + p + 4, 4); /* identification, raw */
		if (be16(pkt + p + 2) & 0xfff8)
			return NFQLB_PKT_FRAG;
		rc = NFQLB_PKT_FIRST_FRAG;
		nh = pkt[p];
		p = v6_walk(pkt, (uint32_t)p + 8, end, &nh);
		if (p < 0)
			return -1;
	}
	memcpy(key, pkt + 8, 32);
	const uint8_t* e = pkt + end;
	const uint8_t* l4 = pkt + p;
	uint32_t proto = nh;
	if (proto == IPPROTO_ICMPV6_) {
		if (l4 + 8 > e)
			return -1;
		uint8_t type = l4[0];
		if (type == 1 || type == 2) {
			if (rc & NFQLB_PKT_FIRST_FRAG)
				return -1;
			return inner_v6(pkt, (uint32_t)p + 8, end, udpencap, key);
		}
		if (type == 128)
			memcpy(key + 32, l4 + 4, 2);
		set_proto(key, IPPROTO_ICMPV6_);
		return rc | NFQLB_PKT_ICMP;
	}
	set_proto(key, proto);
	if (!port_proto(proto))
		return rc | NFQLB_PKT_ADDRONLY;
	int32_t bits = put_ports(key, l4, e, &proto, udpencap, 2);
	return bits < 0 ? -1 : rc | bits;
}

int32_t nfqlb_packet_key(uint32_t hw_proto, const uint8_t* pkt, uint32_t len, uint32_t udpencap,
			 uint8_t* key, uint8_t* fkey)
{
	if (pkt == NULL || key == NULL || fkey == NULL)
		return -1;
	memset(key, 0, NFQLB_KEY_LEN);
	if (hw_proto == 0x0800)
		return key_v4(pkt, len, udpencap, key, fkey);
	if (hw_proto == 0x86dd)
		return key_v6(pkt, len, udpencap, key, fkey);
	return -1;
}

int32_t nfqlb_packet_fraginfo(uint32_t hw_proto, const uint8_t* pkt, uint32_t len, uint32_t* out)
{
	if (pkt == NULL || out == NULL)
		return -1;
	if (hw_proto == 0x0800) {
		if (len < 20 || (pkt[0] >> 4) != 4)
			return -1;
		uint32_t ihl = (uint32_t)(pkt[0] & 0xf) * 4, tot = be16(pkt + 2);
		uint16_t frag = be16(pkt + 6);
		if (ihl < 20 || tot < ihl || !(frag & 0x3fff))
			return -1;
		out[0] = (uint32_t)(frag & 0x1fff) * 8;
		out[1] = tot - ihl;
		out[2] = (frag & 0x2000) ? 1 : 0;
		return 0;
	}
	if (hw_proto == 0x86dd) {
		if (len < 40 || (pkt[0] >> 4) != 6)
			return -1;
		uint32_t plen = be16(pkt + 4);
		uint32_t end = 40 + plen < len ? 40 + plen : len;
		uint8_t nh = pkt[6];
		int32_t p = v6_walk(pkt, 40, end, &nh);
		if (p < 0 || nh != 44 || (uint32_t)p + 8 > end || (uint32_t)p + 8 > 40 + plen)
			return -1;
		uint16_t fo = be16(pkt + p + 2);
		out[0] = fo & 0xfff8;
		out[1] = 40 + plen - ((uint32_t)p + 8);
		out[2] = fo & 1;
		return 0;
	}
	return -1;
}
