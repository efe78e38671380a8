/*
 * ctnl.c - set the mark of an existing kernel conntrack entry, or delete
 * the entries of one mark (lb --offload=auto), over
 * NETLINK_NETFILTER (libmnl), for `ct-set --offload` (docs/conntrack.md,
 * "Offload"). A control-plane call: one socket per call, nothing shared.
 *
 * The message is IPCTNL_MSG_CT_NEW without NLM_F_CREATE, so the kernel only
 * updates an entry it already has and answers ENOENT otherwise; an
 * NFQUEUE verdict cannot carry the connmark here (no
 * CONFIG_NETFILTER_NETLINK_GLUE_CT), hence the separate request.
 */
#include "nfqlb.h"
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

/* How long to wait for the kernel's answer: it answers at once, so only a
 * broken socket could make us wait; bounded all the same. */
#define CTNL_TIMEOUT_MS 2000

static int key_is_v4(const uint8_t* a)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	return memcmp(a, mapped, sizeof(mapped)) == 0;
}

/* Builds the request into buf (cap bytes). 0, or -errno for a bad key. */
static int build_request(uint8_t* buf, size_t cap, const uint8_t* key, uint32_t mark, uint32_t seq)
{
	const uint8_t* src = key;
	const uint8_t* dst = key + 16;
	uint32_t proto = (uint32_t)key[34] | ((uint32_t)key[35] << 8);
	int v4 = key_is_v4(src);
	if (v4 != key_is_v4(dst))
		return -EINVAL; /* one IPv4 and one IPv6 address: no such tuple */
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return -EPROTONOSUPPORT;
	/* nlmsghdr + nfgenmsg + at most ~100 bytes of attributes */
	if (cap < 256)
		return -EINVAL;
	memset(buf, 0, 256);
	struct nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK; /* no NLM_F_CREATE: update only */
	nlh->nlmsg_seq = seq;
	struct nfgenmsg* nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
	nfg->nfgen_family = v4 ? AF_INET : AF_INET6;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = 0;

	struct nlattr* tuple = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
	struct nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
	if (v4) {
		uint32_t s, d;
		memcpy(&s, src + 12, 4);
		memcpy(&d, dst + 12, 4);
		mnl_attr_put_u32(nlh, CTA_IP_V4_SRC, s); /* already network order */
		mnl_attr_put_u32(nlh, CTA_IP_V4_DST, d);
	} else {
		mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, src);
		mnl_attr_put(nlh, CTA_IP_V6_DST, 16, dst);
	}
	mnl_attr_nest_end(nlh, ip);
	struct nlattr* pr = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
	mnl_attr_put_u8(nlh, CTA_PROTO_NUM, (uint8_t)proto);
	uint16_t sport, dport;
	memcpy(&sport, key + 36, 2); /* the key keeps ports in network order, as the kernel wants them */
	memcpy(&dport, key + 38, 2);
	mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, sport);
	mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, dport);
	mnl_attr_nest_end(nlh, pr);
	mnl_attr_nest_end(nlh, tuple);
	mnl_attr_put_u32(nlh, CTA_MARK, htonl(mark));
	return nlh->nlmsg_len <= cap ? 0 : -EINVAL;
}

/* Sends the request in buf (cap bytes, reused for the answer) on a fresh
 * NETLINK_NETFILTER socket and waits for the kernel's ACK. 0 or -errno. */
static int transact(uint8_t* buf, size_t cap, uint32_t seq)
{
	struct nlmsghdr* nlh = (struct nlmsghdr*)buf;
	struct mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!nl)
		return errno ? -errno : -EIO;
	int rc = 0;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		rc = errno ? -errno : -EIO;
		goto out;
	}
	struct timeval tv = {.tv_sec = CTNL_TIMEOUT_MS / 1000, .tv_usec = (CTNL_TIMEOUT_MS % 1000) * 1000};
	if (setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		rc = errno ? -errno : -EIO;
		goto out;
	}
	uint32_t portid = mnl_socket_get_portid(nl);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
		rc = errno ? -errno : -EIO;
		goto out;
	}
	/* One request, one answer; a few reads at most (bounded) in case of a
	 * stray message, each bounded by SO_RCVTIMEO. */
	rc = -ETIMEDOUT;
	for (int i = 0; i < 4; i++) {
		ssize_t n = mnl_socket_recvfrom(nl, buf, cap);
		if (n < 0) {
			rc = (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
			break;
		}
		errno = 0;
		int r = mnl_cb_run(buf, (size_t)n, seq, portid, NULL, NULL);
		if (r == MNL_CB_STOP) {
			rc = 0;
			break;
		}
		if (r == MNL_CB_ERROR) {
			/* ESRCH/EPROTO: a message not ours (other seq/portid); read on */
			if (errno == ESRCH || errno == EPROTO)
				continue;
			rc = errno ? -errno : -EIO;
			break;
		}
	}
out:
	mnl_socket_close(nl);
	return rc;
}

int32_t nfqlb_ctnl_set_mark(const uint8_t* key, uint32_t len, uint32_t mark)
{
	if (!key || len < NFQLB_KEY_LEN)
		return -EINVAL;
	/* MNL_SOCKET_BUFFER_SIZE can be a page; an ACK or error fits in far less */
	uint8_t buf[8192] __attribute__((aligned(8)));
	uint32_t seq = (uint32_t)time(NULL);
	int rc = build_request(buf, sizeof(buf), key, mark, seq);
	if (rc < 0)
		return rc;
	return transact(buf, sizeof(buf), seq);
}

int32_t nfqlb_ctnl_flush_mark(uint32_t family, uint32_t mark)
{
	if (family != 4 && family != 6)
		return -EINVAL;
	if (mark == 0)
		return -EINVAL; /* 0 is every connection nobody marked: never ours to drop */
	uint8_t buf[8192] __attribute__((aligned(8)));
	memset(buf, 0, 256);
	uint32_t seq = (uint32_t)time(NULL);
	/* IPCTNL_MSG_CT_DELETE without a tuple is a flush; CTA_MARK + CTA_MARK_MASK
	 * filter it to the entries with exactly this mark (the kernel walks its
	 * table once, in this namespace and family only). */
	struct nlmsghdr* nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = seq;
	struct nfgenmsg* nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
	nfg->nfgen_family = family == 4 ? AF_INET : AF_INET6;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = 0;
	mnl_attr_put_u32(nlh, CTA_MARK, htonl(mark));
	mnl_attr_put_u32(nlh, CTA_MARK_MASK, htonl(0xffffffffu));
	return transact(buf, sizeof(buf), seq);
}
