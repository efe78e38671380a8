/*
 * flow_internal.h - one flow of a flow set as flow.c parses and matches it
 * and flowset.c indexes and walks it. Private to the library: not part of
 * nfqlb.h, and the functions are hidden (not exported by libnfqlb.so).
 */
#ifndef NFQLB_FLOW_INTERNAL_H
#define NFQLB_FLOW_INTERNAL_H

#include "nfqlb.h"

#define NFQLB_HIDDEN __attribute__((visibility("hidden")))

/* Every flag a spec may have. */
#define FLOW_F_ALL                                                                                             \
	(NFQLB_FLOW_F_PROTOCOLS | NFQLB_FLOW_F_DSTS | NFQLB_FLOW_F_SRCS | NFQLB_FLOW_F_DPORTS |                \
	 NFQLB_FLOW_F_SPORTS | NFQLB_FLOW_F_MATCH | NFQLB_FLOW_F_TARGET)

struct cidr {
	uint64_t a[2]; /* network, in the key's byte order (memcpy'd) */
	uint64_t m[2]; /* mask, same representation */
	uint32_t len;
};

struct range {
	uint16_t first, last;
};

struct stmt {
	uint8_t proto;
	uint8_t nbytes;
	uint16_t offset;
	uint32_t mask;
	uint32_t value;
};

struct flow {
	uint32_t flags;
	uint32_t protomask;
	uint32_t udpencap;
	uint32_t ndsts, nsrcs, ndports, nsports, nmatch;
	struct cidr* dsts;
	struct cidr* srcs;
	struct range* dports;
	struct range* sports;
	struct stmt* match;
	uint32_t defined;
};

/* Protocol classes of a key (struct kview.cls), and every flow for a promiscuous ping (the index's sets). */
#define CLS_TCP 0
#define CLS_UDP 1
#define CLS_SCTP 2
#define CLS_OTHER 3
#define CLS_ALL 4

/* A key as the matcher reads it (nfqlb_flow_key). */
struct kview {
	uint64_t src[2], dst[2];
	uint32_t proto, pbit, cls, sport, dport;
};

/* The packet's L4 header for byte-match, found once per lookup. */
struct l4view {
	uint32_t state; /* 0 not yet, 1 found, 2 none */
	uint32_t off, proto;
};

/* nfqlb_flow_parse - parse and validate a spec of speclen bytes into *out (defined = 1): 0, or -1 (bad spec,
 * no memory; *out untouched). */
NFQLB_HIDDEN int32_t nfqlb_flow_parse(struct flow* out, const uint8_t* spec, uint32_t speclen);

/* nfqlb_flow_clear - free a flow's arrays and zero it. */
NFQLB_HIDDEN void nfqlb_flow_clear(struct flow* f);

/* nfqlb_flow_mask - the mask of a prefix length 0..128, in the key's byte order. */
NFQLB_HIDDEN void nfqlb_flow_mask(uint32_t len, uint64_t m[2]);

/* nfqlb_flow_key - load a 40-byte key (nfqlb_packet_key) for matching. */
NFQLB_HIDDEN void nfqlb_flow_key(struct kview* k, const uint8_t* key);

/* nfqlb_flow_match - upstream flowMatch of one flow (see flow.c); l4 caches the packet's L4 header across
 * the flows of one lookup (zero it first). */
NFQLB_HIDDEN int nfqlb_flow_match(const struct flow* f, const struct kview* k, struct l4view* l4, const uint8_t* pkt,
				  uint32_t len, int ping, uint32_t need);

#endif
