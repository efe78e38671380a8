/*
 * netload.c - the traffic tool of `deno task bench:net` (tests/bench/net.ts),
 * built by it with gcc into its scratch directory. Run inside the lab's
 * namespaces; every mode is bounded by its SECONDS argument and prints one
 * JSON line.
 *
 *   netload udp DST PORT SECONDS PPS SOCKETS   64-byte UDP datagrams from SOCKETS
 *                                              sockets (one source port each,
 *                                              so flows spread over the targets),
 *                                              round robin, sendmmsg batches;
 *                                              PPS 0 = as fast as it can
 *   netload crr DST PORT SECONDS THREADS       TCP connect, read 1 byte, close
 *                                              with RST, again; counts conns
 *   netload serve ADDR PORT SECONDS THREADS    TCP: accept, write 1 byte, close;
 *                                              UDP: read and drop (a sink), same port
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_storage dst;
static socklen_t dstlen;
static double seconds;
static volatile int stop;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int parse_addr(const char* a, int port, struct sockaddr_storage* ss, socklen_t* len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in* s4 = (struct sockaddr_in*)ss;
	struct sockaddr_in6* s6 = (struct sockaddr_in6*)ss;
	if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
		return 0;
	}
	return -1;
}

#define MAXSOCK 256
#define BATCH 32

static int udp_mode(double pps, int nsock)
{
	if (nsock < 1 || nsock > MAXSOCK)
		return 2;
	int fds[MAXSOCK];
	for (int i = 0; i < nsock; i++) {
		fds[i] = socket(dst.ss_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		if (fds[i] < 0 || connect(fds[i], (struct sockaddr*)&dst, dstlen) < 0) {
			perror("udp socket");
			return 1;
		}
	}
	char payload[64];
	memset(payload, 'x', sizeof(payload));
	struct mmsghdr msgs[BATCH];
	struct iovec iov = {.iov_base = payload, .iov_len = sizeof(payload)};
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	uint64_t sent = 0, failed = 0;
	double t0 = now(), end = t0 + seconds;
	int k = 0;
	for (;;) {
		double t = now();
		if (t >= end)
			break;
		int n = BATCH;
		if (pps > 0) {
			/* paced: send what is due by now, at most one batch, else sleep a little */
			double due = (t - t0) * pps - (double)(sent + failed);
			if (due < 1) {
				usleep(100);
				continue;
			}
			if (due < n)
				n = (int)due;
		}
		int r = sendmmsg(fds[k], msgs, n, 0);
		if (r > 0)
			sent += r;
		if (r < n)
			failed += n - (r > 0 ? r : 0);
		k = (k + 1) % nsock;
	}
	printf("{\"sent\": %llu, \"failed\": %llu, \"seconds\": %.3f}\n", (unsigned long long)sent,
	       (unsigned long long)failed, now() - t0);
	return 0;
}

struct crr_stat {
	uint64_t conns, errors;
};

static void* crr_thread(void* arg)
{
	struct crr_stat* st = arg;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	char b;
	while (!stop) {
		int fd = socket(dst.ss_family, SOCK_STREAM, 0);
		if (fd < 0) {
			st->errors++;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		struct timeval tv = {.tv_sec = 1};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, (struct sockaddr*)&dst, dstlen) == 0 && recv(fd, &b, 1, 0) == 1)
			st->conns++;
		else
			st->errors++;
		close(fd);
	}
	return NULL;
}

static int crr_mode(int threads)
{
	if (threads < 1 || threads > 64)
		return 2;
	pthread_t th[64];
	struct crr_stat st[64];
	memset(st, 0, sizeof(st));
	double t0 = now();
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, crr_thread, &st[i]);
	usleep((useconds_t)(seconds * 1e6));
	stop = 1;
	uint64_t c = 0, e = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		c += st[i].conns;
		e += st[i].errors;
	}
	printf("{\"conns\": %llu, \"errors\": %llu, \"seconds\": %.3f}\n", (unsigned long long)c,
	       (unsigned long long)e, now() - t0);
	return 0;
}

static int lfd;

static void* accept_thread(void* arg)
{
	(void)arg;
	while (!stop) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			continue; /* SO_RCVTIMEO on the listener: look at stop again */
		(void)!write(c, "x", 1);
		close(c);
	}
	return NULL;
}

static void* sink_thread(void* arg)
{
	int fd = *(int*)arg;
	char buf[2048];
	while (!stop)
		(void)!recv(fd, buf, sizeof(buf), 0);
	return NULL;
}

static int serve_mode(int threads)
{
	if (threads < 1 || threads > 64)
		return 2;
	int one = 1;
	struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
	lfd = socket(dst.ss_family, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int ufd = socket(dst.ss_family, SOCK_DGRAM, 0);
	int big = 4 << 20;
	setsockopt(ufd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	setsockopt(ufd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(lfd, (struct sockaddr*)&dst, dstlen) < 0 || listen(lfd, 4096) < 0 ||
	    bind(ufd, (struct sockaddr*)&dst, dstlen) < 0) {
		perror("serve");
		return 1;
	}
	printf("{\"listening\": true}\n");
	fflush(stdout);
	pthread_t th[65];
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, accept_thread, NULL);
	pthread_create(&th[threads], NULL, sink_thread, &ufd);
	usleep((useconds_t)(seconds * 1e6));
	stop = 1;
	for (int i = 0; i <= threads; i++)
		pthread_join(th[i], NULL);
	return 0;
}

int main(int argc, char** argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: netload udp|crr|serve ADDR PORT SECONDS N [SOCKETS]\n");
		return 2;
	}
	seconds = atof(argv[4]);
	if (!(seconds > 0 && seconds <= 3600) || parse_addr(argv[2], atoi(argv[3]), &dst, &dstlen) < 0) {
		fprintf(stderr, "netload: bad address or seconds\n");
		return 2;
	}
	if (strcmp(argv[1], "udp") == 0 && argc >= 7)
		return udp_mode(atof(argv[5]), atoi(argv[6]));
	if (strcmp(argv[1], "crr") == 0)
		return crr_mode(atoi(argv[5]));
	if (strcmp(argv[1], "serve") == 0)
		return serve_mode(atoi(argv[5]));
	fprintf(stderr, "netload: unknown mode %s\n", argv[1]);
	return 2;
}
