/*
 * queue.c - NFQUEUE I/O on libmnl + libnetfilter_queue, batched.
 *
 *   recvmmsg (block for the first, take up to `batch`) ─► classify each in C
 *        ─► one sendto carrying all the verdict messages
 *
 * Upstream does one recv and one sendto per packet and exits on any socket
 * error; here a batch costs two syscalls, and every error is counted and
 * survived (ENOBUFS overruns included).
 *
 * With a connection table (lb), the packets of a batch are first collected,
 * then decided in order while the table memory of packet i + 8 (key, bucket
 * descriptor, home way) and of i + 4 (the other ways) is prefetched, so a
 * decision's table lookup mostly hits the cache instead of paying one or two
 * DRAM latencies (docs/conntrack.md "Performance").
 */
#define _GNU_SOURCE
#include "nfqlb.h"
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif

/* One received packet, between collecting and deciding. */
struct pkt_ref {
	const uint8_t* payload; /* NULL: none (dropped) */
	uint32_t plen, orig, id; /* id in network order, as received */
	uint16_t hw_proto;
};

/* Packets ahead of the decision whose table lines are requested (stage 1), and half that for the other
 * ways (stage 2): far enough for a DRAM latency (~150 ns) to pass over ~8 decisions, near enough not to
 * exceed the misses a core keeps in flight (docs/conntrack.md "Performance"). */
#define PREFETCH_DIST 8u
#define KEY_RING 16u /* > PREFETCH_DIST - PREFETCH_DIST / 2: a key lives from stage 1 to stage 2 */

struct nfqlb_queue {
	struct mnl_socket* nl;
	int fd;
	uint32_t portid;
	uint32_t queue_num;
	uint32_t batch;
	uint32_t bufsize;
	uint8_t* rx;
	struct mmsghdr* msgs;
	struct iovec* iov;
	uint8_t* tx;
	uint32_t txcap;
	uint32_t seq;
	uint32_t timeout_ms; /* SO_RCVTIMEO now set on the socket */
	uint32_t copy_range, qlength, flags; /* the configuration nfqlb_queue_bind sends */
	uint32_t bound;      /* the kernel's queue is ours: close unbinds it */
	struct pkt_ref* pk;  /* the batch's packets, collected before deciding (batch entries) */
	uint64_t* counters;  /* own[] or a slice of the lb's counters shm */
	struct nfqlb_target_stat* tstats; /* per-fwmark packets/bytes, open addressing; NULL: off */
	uint32_t ntstats;    /* power of 2 */
	uint64_t own[NFQLB_C_COUNT];
};

void nfqlb_queue_set_stats(struct nfqlb_queue* q, uint64_t* counters, struct nfqlb_target_stat* tstats,
			   uint32_t ntstats)
{
	if (counters) {
		memcpy(counters, q->counters, sizeof(q->own));
		q->counters = counters;
	}
	q->tstats = (ntstats & (ntstats - 1)) == 0 ? tstats : NULL;
	q->ntstats = q->tstats ? ntstats : 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void decide_all(struct nfqlb_queue* q, struct nfqlb_lb* lb, uint32_t cnt, uint64_t now, uint32_t* txlen);
static void flush(struct nfqlb_queue* q, uint32_t len);

/* Bounds of waiting for a config ACK: overall time, and messages read meanwhile (a full queue's backlog, and
 * packets that keep coming while the kernel works through it, fit many times). */
#define CONFIG_WAIT_MS 2000
#define CONFIG_MAX_MSGS (1u << 20)

/*
 * Packets that come while we wait for a config ACK. With a classifier they are decided as in serve (the ACK
 * comes after every packet the kernel queued before it applied the config). A packet without payload was
 * queued in the microseconds between the kernel creating our queue and applying its copy mode: NF_REPEAT
 * runs the hook again and queues it anew, now with its headers. Without a classifier: dropped, counted.
 */
static void setup_packet(struct nfqlb_queue* q, struct nfqlb_lb* lb, struct nlmsghdr* h)
{
	struct nlattr* attr[NFQA_MAX + 1] = { 0 };
	if (nfq_nlmsg_parse(h, attr) < 0 || !attr[NFQA_PACKET_HDR]) {
		q->counters[NFQLB_C_RECV_ERRORS]++;
		return;
	}
	struct nfqnl_msg_packet_hdr* ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
	if (lb && attr[NFQA_PAYLOAD]) {
		struct pkt_ref* p = &q->pk[0];
		p->payload = mnl_attr_get_payload(attr[NFQA_PAYLOAD]);
		p->plen = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
		p->orig = attr[NFQA_CAP_LEN] ? ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN])) : p->plen;
		p->id = ph->packet_id;
		p->hw_proto = ntohs(ph->hw_protocol);
		q->counters[NFQLB_C_RECEIVED]++;
		uint32_t txlen = 0;
		nfqlb_lb_enter(lb);
		decide_all(q, lb, 1, now_ns(), &txlen);
		nfqlb_lb_leave(lb);
		flush(q, txlen);
		return;
	}
	char vb[256];
	struct nlmsghdr* v = nfq_nlmsg_put(vb, NFQNL_MSG_VERDICT, q->queue_num);
	nfq_nlmsg_verdict_put(v, (int)ntohl(ph->packet_id), lb ? NF_REPEAT : NF_DROP);
	mnl_socket_sendto(q->nl, v, v->nlmsg_len);
	if (!lb)
		q->counters[NFQLB_C_SETUP_DROPPED]++;
}

/* Send one config message with an ACK request and wait for the ACK, handling the packets that come
 * meanwhile (setup_packet). 0 or -errno. */
static int32_t config_acked(struct nfqlb_queue* q, struct nlmsghdr* nlh, struct nfqlb_lb* lb)
{
	nlh->nlmsg_flags |= NLM_F_ACK;
	nlh->nlmsg_seq = ++q->seq;
	if (mnl_socket_sendto(q->nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	uint64_t deadline = now_ns() + (uint64_t)CONFIG_WAIT_MS * 1000000u;
	for (uint32_t msgs = 0; msgs < CONFIG_MAX_MSGS;) {
		uint64_t now = now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd pfd = { q->fd, POLLIN, 0 };
		if (poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1) <= 0)
			return -ETIMEDOUT;
		/* the receive buffer holds a whole packet message (copy range + headers) */
		ssize_t n = recv(q->fd, q->rx, q->bufsize, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN)
				continue;
			return -errno;
		}
		int len = (int)n;
		for (struct nlmsghdr* h = (struct nlmsghdr*)q->rx; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
			msgs++;
			if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq == q->seq) {
				const struct nlmsgerr* e = mnl_nlmsg_get_payload(h);
				return e->error; /* 0 = ACK */
			}
			if (h->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
				setup_packet(q, lb, h);
		}
	}
	return -ETIMEDOUT;
}

void nfqlb_queue_close(struct nfqlb_queue* q)
{
	if (!q)
		return;
	if (q->nl) {
		if (q->bound) {
			char buf[256];
			struct nlmsghdr* nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->queue_num);
			nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_UNBIND);
			mnl_socket_sendto(q->nl, nlh, nlh->nlmsg_len);
		}
		mnl_socket_close(q->nl);
	}
	free(q->rx);
	free(q->msgs);
	free(q->iov);
	free(q->tx);
	free(q->pk);
	free(q);
}

struct nfqlb_queue* nfqlb_queue_open(uint32_t queue_num, uint32_t mtu, uint32_t copy_range, uint32_t qlength,
				     uint32_t flags, uint32_t batch, int32_t* err, uint32_t* rcvbuf)
{
	*err = 0;
	if (batch == 0 || batch > 1024)
		batch = 64;
	struct nfqlb_queue* q = calloc(1, sizeof(*q));
	if (!q) {
		*err = -ENOMEM;
		return NULL;
	}
	q->queue_num = queue_num;
	q->counters = q->own;
	q->batch = batch;
	if (copy_range == 0 || copy_range > mtu)
		copy_range = mtu;
	q->copy_range = copy_range;
	q->qlength = qlength;
	q->flags = flags;
	q->bufsize = (copy_range + 2048 + 63) & ~63u;
	q->txcap = batch * 64;
	q->rx = malloc((size_t)q->bufsize * batch);
	q->msgs = calloc(batch, sizeof(struct mmsghdr));
	q->iov = calloc(batch, sizeof(struct iovec));
	q->tx = malloc(q->txcap);
	q->pk = calloc(batch, sizeof(struct pkt_ref));
	q->nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!q->rx || !q->msgs || !q->iov || !q->tx || !q->pk || !q->nl) {
		*err = q->nl ? -ENOMEM : -errno;
		nfqlb_queue_close(q);
		return NULL;
	}
	if (mnl_socket_bind(q->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		*err = -errno;
		nfqlb_queue_close(q);
		return NULL;
	}
	q->fd = mnl_socket_get_fd(q->nl);
	q->portid = mnl_socket_get_portid(q->nl);
	for (uint32_t i = 0; i < batch; i++) {
		q->iov[i].iov_base = q->rx + (size_t)i * q->bufsize;
		q->iov[i].iov_len = q->bufsize;
		q->msgs[i].msg_hdr.msg_iov = &q->iov[i];
		q->msgs[i].msg_hdr.msg_iovlen = 1;
	}
	int one = 1;
	setsockopt(q->fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one));
	/* Receive buffer sized as upstream: qlength*mtu/2, forced past rmem_max with CAP_NET_ADMIN. */
	int cur = 0;
	socklen_t sl = sizeof(cur);
	if (getsockopt(q->fd, SOL_SOCKET, SO_RCVBUF, &cur, &sl) != 0) {
		*err = -errno;
		nfqlb_queue_close(q);
		return NULL;
	}
	uint32_t want = (uint32_t)(((uint64_t)qlength * mtu / 2) & ~0xfffull);
	if (want > (uint32_t)cur) {
		int w = (int)want;
		if (setsockopt(q->fd, SOL_SOCKET, SO_RCVBUFFORCE, &w, sizeof(w)) != 0)
			setsockopt(q->fd, SOL_SOCKET, SO_RCVBUF, &w, sizeof(w));
	}
	sl = sizeof(cur);
	getsockopt(q->fd, SOL_SOCKET, SO_RCVBUF, &cur, &sl);
	rcvbuf[0] = (uint32_t)cur;
	rcvbuf[1] = want;
	return q;
}

int32_t nfqlb_queue_bind(struct nfqlb_queue* q, struct nfqlb_lb* lb)
{
	if (q->bound)
		return -EALREADY;
	/* One message: the kernel creates the queue and applies copy mode, length and flags while handling it,
	 * so hardly a packet is queued before the copy mode is set (setup_packet handles one that is). */
	char buf[512];
	struct nlmsghdr* nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->queue_num);
	nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
	nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, (int)q->copy_range);
	nfq_nlmsg_cfg_put_qmaxlen(nlh, q->qlength);
	uint32_t f = NFQA_CFG_F_GSO | ((q->flags & NFQLB_QF_FAIL_OPEN) ? NFQA_CFG_F_FAIL_OPEN : 0);
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(f));
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(f));
	int32_t rc = config_acked(q, nlh, lb);
	if (rc == 0) {
		q->bound = 1;
		return 0;
	}
	/* EPERM: bound by someone else (never ours: no UNBIND); anything else may have bound it */
	if (rc != -EPERM) {
		nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->queue_num);
		nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_UNBIND);
		mnl_socket_sendto(q->nl, nlh, nlh->nlmsg_len);
	}
	return rc;
}

int32_t nfqlb_queue_drain(struct nfqlb_queue* q, struct nfqlb_lb* lb)
{
	if (!q->bound)
		return 0;
	uint64_t before = q->counters[NFQLB_C_RECEIVED];
	/* Fail-open first, then length 0: in the other order a packet could find the queue full without
	 * fail-open and be dropped. From the second ACK on the kernel queues nothing more; every packet it
	 * queued before is in our socket ahead of that ACK, and config_acked decides it. */
	char buf[256];
	struct nlmsghdr* nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->queue_num);
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_FAIL_OPEN));
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_FAIL_OPEN));
	int32_t rc = config_acked(q, nlh, lb);
	if (rc == 0) {
		nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, q->queue_num);
		nfq_nlmsg_cfg_put_qmaxlen(nlh, 0);
		rc = config_acked(q, nlh, lb);
	}
	return rc < 0 ? rc : (int32_t)(q->counters[NFQLB_C_RECEIVED] - before);
}

int32_t nfqlb_queue_fd(const struct nfqlb_queue* q) { return q->fd; }

void nfqlb_queue_count(struct nfqlb_queue* q, uint32_t counter, uint64_t n)
{
	if (counter < NFQLB_C_COUNT)
		__atomic_fetch_add(&q->counters[counter], n, __ATOMIC_RELAXED);
}

void nfqlb_queue_counters(const struct nfqlb_queue* q, uint64_t* out, uint32_t n)
{
	for (uint32_t i = 0; i < n && i < NFQLB_C_COUNT; i++)
		out[i] = __atomic_load_n(&q->counters[i], __ATOMIC_RELAXED);
}

static const struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };

static void flush(struct nfqlb_queue* q, uint32_t len)
{
	for (int tries = 0; len > 0 && tries < 3; tries++) {
		ssize_t n = sendto(q->fd, q->tx, len, 0, (const struct sockaddr*)&kernel, sizeof(kernel));
		if (n >= 0)
			return;
		q->counters[NFQLB_C_SEND_ERRORS]++;
		if (errno != EINTR && errno != ENOBUFS && errno != EAGAIN)
			return;
	}
}

/* Stage 1 for packet i of the batch: its key into the ring, and its table lines requested. */
static inline void prefetch1(struct nfqlb_queue* q, struct nfqlb_lb* lb, uint32_t i, uint8_t (*keys)[NFQLB_KEY_LEN],
			     uint8_t* has)
{
	const struct pkt_ref* p = &q->pk[i];
	has[i % KEY_RING] = p->payload != NULL &&
			    nfqlb_lb_prefetch(lb, p->hw_proto, p->payload, p->plen, keys[i % KEY_RING]) == 1;
}

/* Decide pk[0..cnt) in order and append their verdicts at q->tx + *txlen (flushing when full). */
static void decide_all(struct nfqlb_queue* q, struct nfqlb_lb* lb, uint32_t cnt, uint64_t now, uint32_t* txlen)
{
	uint8_t keys[KEY_RING][NFQLB_KEY_LEN], has[KEY_RING];
	/* without a table nothing is prefetched: the loop below is the plain one */
	uint32_t dist = nfqlb_lb_prefetches(lb) ? PREFETCH_DIST : 0, half = dist / 2;
	for (uint32_t i = 0; i < cnt && i < dist; i++)
		prefetch1(q, lb, i, keys, has);
	for (uint32_t i = 0; i < cnt && i < half; i++)
		if (has[i % KEY_RING])
			nfqlb_lb_prefetch_ways(lb, keys[i % KEY_RING]);
	for (uint32_t i = 0; i < cnt; i++) {
		if (dist) {
			if (i + dist < cnt)
				prefetch1(q, lb, i + dist, keys, has);
			if (i + half < cnt && has[(i + half) % KEY_RING])
				nfqlb_lb_prefetch_ways(lb, keys[(i + half) % KEY_RING]);
		}
		const struct pkt_ref* p = &q->pk[i];
		int32_t mark = p->payload ? nfqlb_lb_decide(lb, p->hw_proto, p->payload, p->plen, p->orig, now,
							    q->counters)
					  : -1;
		if (*txlen + 64 > q->txcap) {
			flush(q, *txlen);
			*txlen = 0;
		}
		struct nlmsghdr* v = nfq_nlmsg_put((char*)q->tx + *txlen, NFQNL_MSG_VERDICT, q->queue_num);
		if (mark < 0) {
			nfq_nlmsg_verdict_put(v, (int)ntohl(p->id), NF_DROP);
			q->counters[NFQLB_C_DROPPED]++;
		} else {
			nfq_nlmsg_verdict_put(v, (int)ntohl(p->id), NF_ACCEPT);
			nfq_nlmsg_verdict_put_mark(v, (uint32_t)mark);
			q->counters[NFQLB_C_ACCEPTED]++;
			if (q->tstats)
				nfqlb_target_stats_add(q->tstats, q->ntstats, mark, p->orig, q->counters);
		}
		*txlen += MNL_ALIGN(v->nlmsg_len);
	}
}

int32_t nfqlb_queue_serve(struct nfqlb_queue* q, struct nfqlb_lb* lb, uint32_t timeout_ms)
{
	if (timeout_ms != q->timeout_ms) {
		struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
		setsockopt(q->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		q->timeout_ms = timeout_ms;
	}
	for (uint32_t i = 0; i < q->batch; i++)
		q->msgs[i].msg_len = 0;
	/* Block (up to SO_RCVTIMEO) for the first message, then take what is
	 * queued without waiting: one syscall per wake-up, however many packets. */
	nfqlb_lb_leave(lb); /* blocked: using no flow set */
	int n = recvmmsg(q->fd, q->msgs, q->batch, MSG_WAITFORONE, NULL);
	nfqlb_lb_enter(lb);
	/* the tables as they are now (a few loads each when unchanged), also after an idle wake-up */
	nfqlb_lb_refresh(lb, q->counters);
	if (n < 0) {
		if (errno == ENOBUFS)
			q->counters[NFQLB_C_ENOBUFS]++; /* overrun: the kernel dropped; go on */
		else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			q->counters[NFQLB_C_RECV_ERRORS]++;
		return 0;
	}
	q->counters[NFQLB_C_BATCHES]++;
	uint64_t now = now_ns();
	uint32_t txlen = 0, cnt = 0;
	int32_t handled = 0;
	for (int i = 0; i < n; i++) {
		int len = (int)q->msgs[i].msg_len;
		for (struct nlmsghdr* h = (struct nlmsghdr*)q->iov[i].iov_base; mnl_nlmsg_ok(h, len);
		     h = mnl_nlmsg_next(h, &len)) {
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr* e = mnl_nlmsg_get_payload(h);
				if (e->error != 0)
					q->counters[NFQLB_C_VERDICT_ERRORS]++;
				continue;
			}
			if (h->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
				continue;
			struct nlattr* attr[NFQA_MAX + 1] = { 0 };
			if (nfq_nlmsg_parse(h, attr) < 0 || !attr[NFQA_PACKET_HDR]) {
				q->counters[NFQLB_C_RECV_ERRORS]++;
				continue;
			}
			struct nfqnl_msg_packet_hdr* ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
			struct pkt_ref* p = &q->pk[cnt];
			p->payload = NULL;
			p->plen = 0;
			if (attr[NFQA_PAYLOAD]) {
				p->payload = mnl_attr_get_payload(attr[NFQA_PAYLOAD]);
				p->plen = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
			}
			p->orig = attr[NFQA_CAP_LEN] ? ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN])) : p->plen;
			p->id = ph->packet_id;
			p->hw_proto = ntohs(ph->hw_protocol);
			q->counters[NFQLB_C_RECEIVED]++;
			/* more messages than slots (several per datagram): decide what is collected */
			if (++cnt == q->batch) {
				decide_all(q, lb, cnt, now, &txlen);
				handled += (int32_t)cnt;
				cnt = 0;
			}
		}
	}
	decide_all(q, lb, cnt, now, &txlen);
	handled += (int32_t)cnt;
	flush(q, txlen);
	return handled;
}

int32_t nfqlb_queue_serve_until(struct nfqlb_queue* q, struct nfqlb_lb* lb, int32_t* handover, uint32_t max_ms)
{
	uint64_t end = now_ns() + (uint64_t)max_ms * 1000000u;
	int32_t handled = 0;
	/* bounded: by the hand-over request, or by max_ms (seen within one receive timeout) */
	while (__atomic_load_n(&handover[0], __ATOMIC_ACQUIRE) == 0 && now_ns() < end)
		handled += nfqlb_queue_serve(q, lb, NFQLB_SERVE_UNTIL_POLL_MS);
	__atomic_store_n(&handover[1], 1, __ATOMIC_RELEASE);
	return handled;
}
