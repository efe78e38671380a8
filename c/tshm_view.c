/*
 * tshm_view.c - the dataplane's private copy of a target table file.
 *
 * A running lb must survive whatever happens to the file it balances with:
 * truncated (a load from a page past the end of a shared mapping is a
 * SIGBUS), zeroed (M = 0: a division by zero), garbage (offsets out of the
 * mapping), or rewritten in place by upstream's `init` in its own layout. So
 * the dataplane never maps the file. It keeps a copy, in the same layout
 * (header, params, two buffers), which every reader in tshm.c reads as it
 * would read the file, and refreshes that copy between batches with pread:
 *
 *   - pread of the 64-byte header (one syscall). When the fields that name
 *     the current content (M, N, own fwmark, current, its seq, replaced) are
 *     the ones of the last copy, nothing changed: done.
 *   - otherwise the header is validated (nfqlb_tshm_check, with the file
 *     size from fstat), the current buffer is read into the copy's spare
 *     buffer, the header is read again, and the copy is published only when
 *     the file's seqlock shows that buffer was not rewritten meanwhile. The
 *     copy's own seqlock (tshm.c's protocol) lets other threads read it while
 *     one refreshes it.
 *
 * The first check costs a syscall per batch (~0.45 us on our VM: a tenth of
 * the LB's CPU per packet at one packet per batch). So the header's first
 * page is also mapped read-only, registered with the SIGBUS guard (file.c),
 * and the per-batch check compares those fields in it: a few loads. Only
 * when they differ (a commit, a damage) does the view read the file with
 * pread as above. A truncation makes that page fault once; the guard turns it
 * into zeros (a header that differs: pread from then on), and the page is
 * mapped again when the file is valid once more.
 *
 * pread never faults: a short file is a short read. A bad file leaves the
 * last good copy in place (the dataplane keeps forwarding with it) and puts
 * the view in an error state, counted once per incident (good -> bad) in
 * NFQLB_C_TABLE_ERRORS of the counters the caller passes. `init`'s replaced
 * flag, or another M or N, put it in NFQLB_TVIEW_REPLACED: the owner opens
 * the name again and swaps views (dataplane/table_watch.ts). Views shared by
 * several threads are refreshed by one at a time (a try-lock: a thread that
 * finds it taken reads the copy as it is).
 */
#define _GNU_SOURCE
#include "tshm_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct nfqlb_tshm_view {
	int fd;              /* the file as opened: follows its inode, never the name */
	uint32_t busy;       /* refresh in progress (try-lock) */
	int32_t state;       /* NFQLB_TVIEW_OK, NFQLB_TVIEW_REPLACED or an NFQLB_E* error */
	int32_t last_error;  /* the error of the latest incident (0: none yet) */
	uint32_t incidents;  /* good -> bad transitions */
	uint32_t copies;     /* good copies taken, the first included */
	uint64_t dev, ino;   /* of the file */
	uint8_t last[NFQLB_TSHM_HEADER]; /* the file's header when the copy was taken */
	const struct tshm_header* page; /* the file's first page, mapped and guarded; NULL: pread only */
	uint64_t next_look_ns; /* not good: the file is read again from then on (CLOCK_MONOTONIC) */
	uint64_t size;       /* of the copy */
	uint8_t* image;      /* the copy: a table in our layout */
};

static struct tshm_header* H(uint8_t* image) { return (struct tshm_header*)image; }

/* Bytes of the header mapping (one page). */
#define PAGE 4096u

/* While the file is bad (or replaced), it is read again at most this often: a pread and an fstat per batch
 * would cost more than the batch. */
#define BAD_LOOK_NS 1000000ull

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The fields that name the current content of a file (or say it changed shape, or was replaced). */
static int same_content(const uint8_t* a, const uint8_t* b)
{
	const struct tshm_header* x = (const struct tshm_header*)a;
	const struct tshm_header* y = (const struct tshm_header*)b;
	uint32_t cur = x->current & 1;
	return memcmp(a, b, offsetof(struct tshm_header, current)) == 0 && x->current == y->current &&
	       x->seq[cur] == y->seq[cur] && x->replaced == y->replaced;
}

/* same_content of the mapped header (concurrent writers: each field loaded once, atomically). */
static int page_same(const struct tshm_header* m, const uint8_t* last)
{
	struct tshm_header x;
	x.magic = __atomic_load_n(&m->magic, __ATOMIC_ACQUIRE);
	x.version = __atomic_load_n(&m->version, __ATOMIC_RELAXED);
	x.header_size = __atomic_load_n(&m->header_size, __ATOMIC_RELAXED);
	x.file_size = __atomic_load_n(&m->file_size, __ATOMIC_RELAXED);
	x.M = __atomic_load_n(&m->M, __ATOMIC_RELAXED);
	x.N = __atomic_load_n(&m->N, __ATOMIC_RELAXED);
	x.own_fwmark = __atomic_load_n(&m->own_fwmark, __ATOMIC_RELAXED);
	x.current = __atomic_load_n(&m->current, __ATOMIC_ACQUIRE);
	x.seq[x.current & 1] = __atomic_load_n(&m->seq[x.current & 1], __ATOMIC_ACQUIRE);
	x.replaced = __atomic_load_n(&m->replaced, __ATOMIC_RELAXED);
	const struct tshm_header* y = (const struct tshm_header*)last;
	uint32_t cur = x.current & 1;
	return x.magic == y->magic && x.version == y->version && x.header_size == y->header_size &&
	       x.file_size == y->file_size && x.M == y->M && x.N == y->N && x.own_fwmark == y->own_fwmark &&
	       x.current == y->current && x.seq[cur] == y->seq[cur] && x.replaced == y->replaced;
}

/* Read exactly len bytes at off; 0, or NFQLB_ETRUNC (short file, read error). */
static int32_t read_at(int fd, void* buf, uint64_t len, uint64_t off)
{
	uint8_t* p = buf;
	while (len > 0) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return NFQLB_ETRUNC;
		p += r;
		len -= (uint64_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* The header read into hdr (n bytes of it) checked against the file: 0 or NFQLB_E*. */
static int32_t check_header(int fd, const uint8_t* hdr, ssize_t n)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return NFQLB_ETRUNC;
	uint64_t size = (uint64_t)st.st_size;
	if (size == 0)
		return NFQLB_ETRUNC; /* truncated to nothing (never "not a table": it was one) */
	if (n < 0)
		n = 0;
	/* whole header read: check it against the file's size; else only what was read (never past hdr) */
	if ((uint64_t)n < size && n < (ssize_t)NFQLB_TSHM_HEADER) {
		/* upstream's layout is recognised from 16 bytes and the size */
		const struct tshm_header* h = (const struct tshm_header*)hdr;
		if (n >= 16 && h->magic != NFQLB_TSHM_MAGIC)
			return nfqlb_tshm_check(hdr, size);
		return NFQLB_ETRUNC; /* the file grew between the read and fstat: next time */
	}
	return nfqlb_tshm_check(hdr, size);
}

/* Outcome of one look at the file that keeps the view as it is (a writer was busy). */
#define KEEP 2

/*
 * Look at the file again (hdr: its header, n bytes read): validate, and copy
 * the current buffer when its content is not the copy's.
 */
static int32_t examine(struct nfqlb_tshm_view* v, const uint8_t* hdr, ssize_t n)
{
	int32_t rc = check_header(v->fd, hdr, n);
	if (rc != 0)
		return rc;
	const struct tshm_header* fh = (const struct tshm_header*)hdr;
	struct tshm_header* ih = H(v->image);
	if (fh->replaced)
		return NFQLB_TVIEW_REPLACED;
	if (fh->M != ih->M || fh->N != ih->N)
		return NFQLB_TVIEW_REPLACED; /* another shape: another copy (the owner opens the name again) */
	uint32_t b = fh->current & 1, s1 = fh->seq[b];
	if (s1 & 1)
		return KEEP;
	/* the copy's seqlock write side on its spare buffer, as nfqlb_tshm_commit */
	uint32_t spare = (__atomic_load_n(&ih->current, __ATOMIC_RELAXED) & 1) ^ 1;
	uint32_t s = __atomic_load_n(&ih->seq[spare], __ATOMIC_RELAXED) | 1;
	__atomic_store_n(&ih->seq[spare], s, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	uint64_t len = tshm_buffer_bytes(fh->M, fh->N);
	if (read_at(v->fd, v->image + tshm_buffer_off(fh->M, fh->N, spare), len,
		    tshm_buffer_off(fh->M, fh->N, b)) != 0)
		return NFQLB_ETRUNC; /* the spare stays odd: never read */
	uint8_t again[NFQLB_TSHM_HEADER];
	if (read_at(v->fd, again, sizeof(again), 0) != 0)
		return NFQLB_ETRUNC;
	const struct tshm_header* fh2 = (const struct tshm_header*)again;
	if (fh2->magic != fh->magic || fh2->M != fh->M || fh2->N != fh->N || fh2->seq[b] != s1)
		return KEEP; /* buffer b was rewritten while we read it: next time */
	ih->own_fwmark = fh->own_fwmark;
	__atomic_store_n(&ih->seq[spare], s + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&ih->generation, fh->generation, __ATOMIC_RELEASE);
	__atomic_store_n(&ih->current, spare, __ATOMIC_RELEASE);
	memcpy(v->last, hdr, sizeof(v->last));
	__atomic_store_n(&v->copies, v->copies + 1, __ATOMIC_RELAXED);
	return NFQLB_TVIEW_OK;
}

static void set_state(struct nfqlb_tshm_view* v, int32_t st, uint64_t* counters)
{
	if (st == KEEP)
		return;
	int32_t prev = v->state;
	if (st < 0) {
		__atomic_store_n(&v->last_error, st, __ATOMIC_RELAXED);
		if (prev >= 0) {
			__atomic_store_n(&v->incidents, v->incidents + 1, __ATOMIC_RELEASE);
			if (counters)
				__atomic_fetch_add(&counters[NFQLB_C_TABLE_ERRORS], 1ull, __ATOMIC_RELAXED);
		}
	}
	__atomic_store_n(&v->state, st, __ATOMIC_RELEASE);
}

struct nfqlb_tshm_view* nfqlb_tshm_view_open(const char* path, int32_t* err)
{
	*err = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*err = errno;
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		*err = errno;
		close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		*err = EINVAL;
		close(fd);
		return NULL;
	}
	if (st.st_size == 0) { /* err 0: empty, as nfqlb_file_map's callers report it */
		close(fd);
		return NULL;
	}
	uint8_t hdr[NFQLB_TSHM_HEADER] = { 0 };
	ssize_t n = pread(fd, hdr, sizeof(hdr), 0);
	int32_t rc = check_header(fd, hdr, n);
	const struct tshm_header* fh = (const struct tshm_header*)hdr;
	uint64_t size = 0;
	struct nfqlb_tshm_view* v = NULL;
	uint8_t* img = NULL;
	if (rc == 0 && (nfqlb_tshm_bytes(fh->M, fh->N, &size) != 0 || (img = calloc(1, size)) == NULL ||
			nfqlb_tshm_format(img, size, fh->M, fh->N, fh->own_fwmark) != 0))
		rc = -ENOMEM;
	if (rc == 0 && (v = calloc(1, sizeof(*v))) == NULL)
		rc = -ENOMEM;
	if (rc != 0) {
		free(img);
		close(fd);
		*err = rc == -ENOMEM ? ENOMEM : rc;
		return NULL;
	}
	v->fd = fd;
	v->dev = (uint64_t)st.st_dev;
	v->ino = (uint64_t)st.st_ino;
	v->image = img;
	v->size = size;
	/* the first copy: a writer holds a buffer odd only while it populates it (ms); bounded retries */
	for (int tries = 0; tries < 2000; tries++) {
		memset(hdr, 0, sizeof(hdr));
		n = pread(fd, hdr, sizeof(hdr), 0);
		rc = examine(v, hdr, n);
		if (rc != KEEP)
			break;
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	if (rc != NFQLB_TVIEW_OK) {
		nfqlb_tshm_view_close(v);
		*err = rc == KEEP ? EAGAIN : rc == NFQLB_TVIEW_REPLACED ? ESTALE : rc;
		return NULL;
	}
	/* the cheap per-batch check; without it (no guard, no mapping) every check is a pread */
	int32_t e;
	if (nfqlb_file_guard() == 0)
		v->page = nfqlb_file_map_fd(fd, PAGE, 0, NULL, &e);
	return v;
}

int32_t nfqlb_tshm_view_refresh(struct nfqlb_tshm_view* v, uint64_t* counters)
{
	if (v == NULL)
		return NFQLB_TVIEW_OK;
	uint32_t free_ = 0;
	if (!__atomic_compare_exchange_n(&v->busy, &free_, 1u, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return __atomic_load_n(&v->state, __ATOMIC_RELAXED); /* another thread refreshes it now */
	if (v->page && v->state == NFQLB_TVIEW_OK && page_same(v->page, v->last)) {
		__atomic_store_n(&v->busy, 0u, __ATOMIC_RELEASE);
		return NFQLB_TVIEW_OK;
	}
	if (v->state != NFQLB_TVIEW_OK) {
		uint64_t t = now_ns();
		if (t < v->next_look_ns) {
			__atomic_store_n(&v->busy, 0u, __ATOMIC_RELEASE);
			return v->state;
		}
		v->next_look_ns = t + BAD_LOOK_NS;
	}
	uint8_t hdr[NFQLB_TSHM_HEADER] = { 0 };
	ssize_t n = pread(v->fd, hdr, sizeof(hdr), 0);
	if (n == (ssize_t)sizeof(hdr) && v->state == NFQLB_TVIEW_OK && same_content(hdr, v->last)) {
		__atomic_store_n(&v->busy, 0u, __ATOMIC_RELEASE);
		return NFQLB_TVIEW_OK;
	}
	set_state(v, examine(v, hdr, n), counters);
	int32_t st = v->state;
	/* good again after a truncation made the page zeros (the guard): map the file's page again */
	if (st == NFQLB_TVIEW_OK && v->page && __atomic_load_n(&v->page->magic, __ATOMIC_RELAXED) != NFQLB_TSHM_MAGIC) {
		int32_t e;
		nfqlb_file_map_fd(v->fd, PAGE, 0, (void*)v->page, &e); /* failed: pread until it works */
	}
	__atomic_store_n(&v->busy, 0u, __ATOMIC_RELEASE);
	return st;
}

const uint8_t* nfqlb_tshm_view_table(const struct nfqlb_tshm_view* v) { return v ? v->image : NULL; }

void nfqlb_tshm_view_info(const struct nfqlb_tshm_view* v, int64_t* out, uint32_t n)
{
	int64_t info[NFQLB_TVIEW_INFO_COUNT] = { 0 };
	if (v) {
		info[NFQLB_TVIEW_INFO_STATE] = __atomic_load_n(&v->state, __ATOMIC_ACQUIRE);
		info[NFQLB_TVIEW_INFO_INCIDENTS] = __atomic_load_n(&v->incidents, __ATOMIC_ACQUIRE);
		info[NFQLB_TVIEW_INFO_LAST_ERROR] = __atomic_load_n(&v->last_error, __ATOMIC_RELAXED);
		info[NFQLB_TVIEW_INFO_COPIES] = __atomic_load_n(&v->copies, __ATOMIC_RELAXED);
		info[NFQLB_TVIEW_INFO_DEV] = (int64_t)v->dev;
		info[NFQLB_TVIEW_INFO_INO] = (int64_t)v->ino;
		info[NFQLB_TVIEW_INFO_GENERATION] = __atomic_load_n(&H(v->image)->generation, __ATOMIC_RELAXED);
	}
	for (uint32_t i = 0; i < n && i < NFQLB_TVIEW_INFO_COUNT; i++)
		out[i] = info[i];
}

void nfqlb_tshm_view_close(struct nfqlb_tshm_view* v)
{
	if (!v)
		return;
	if (v->page)
		nfqlb_file_unmap((void*)v->page, PAGE);
	if (v->fd >= 0)
		close(v->fd);
	free(v->image);
	free(v);
}
