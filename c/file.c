/*
 * file.c - shm files mapped with mmap, and the guard that keeps a truncated
 * one from killing the process.
 *
 * A load or store to a page of a MAP_SHARED mapping that lies past the end
 * of its file (someone truncated it) raises SIGBUS, which kills the process.
 * The files a dataplane writes while it runs (its counters, the fragment
 * stats, a connection table) cannot be private copies, so instead every
 * mapping made here is registered, and the guard (nfqlb_file_guard, installed
 * by lb/flowlb) handles a SIGBUS whose address lies in a registered mapping:
 * it maps anonymous zero pages over the whole mapping (MAP_FIXED) and returns,
 * and the faulting access runs again on them. The mapping is no longer the
 * file from then on; its fault count says so (nfqlb_file_faults), and the
 * owner maps the file again at the same address (nfqlb_file_remap) once it
 * has repaired or re-created it. Pointers into the mapping stay valid
 * throughout, so no thread has to be told. Any other SIGBUS goes to the
 * handler that was there before (or the default action: the process dies as
 * it would have).
 *
 * The registry is the one piece of global state of the library: a signal
 * handler can reach nothing else. It is a fixed array, read by the handler
 * with atomic loads only; registering takes a mutex (never in the handler).
 */
#define _GNU_SOURCE
#include "nfqlb.h"
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Mappings the guard knows; more are mapped unguarded (a flowlb maps one per connection table, at most). */
#define GUARD_SLOTS 1024

static struct guarded {
	uintptr_t start;
	uint64_t len; /* 0: free slot */
	uint32_t faults;
} guarded[GUARD_SLOTS];
static pthread_mutex_t guard_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous;
static int installed;

static void guard_add(void* addr, uint64_t len)
{
	pthread_mutex_lock(&guard_mutex);
	for (uint32_t i = 0; i < GUARD_SLOTS; i++) {
		if (__atomic_load_n(&guarded[i].len, __ATOMIC_RELAXED) == 0) {
			__atomic_store_n(&guarded[i].faults, 0u, __ATOMIC_RELAXED);
			__atomic_store_n(&guarded[i].start, (uintptr_t)addr, __ATOMIC_RELAXED);
			__atomic_store_n(&guarded[i].len, len, __ATOMIC_RELEASE);
			break;
		}
	}
	pthread_mutex_unlock(&guard_mutex);
}

static struct guarded* guard_find(uintptr_t a)
{
	for (uint32_t i = 0; i < GUARD_SLOTS; i++) {
		uint64_t len = __atomic_load_n(&guarded[i].len, __ATOMIC_ACQUIRE);
		uintptr_t start = __atomic_load_n(&guarded[i].start, __ATOMIC_RELAXED);
		if (len != 0 && a >= start && a - start < len)
			return &guarded[i];
	}
	return NULL;
}

static void guard_remove(void* addr)
{
	pthread_mutex_lock(&guard_mutex);
	for (uint32_t i = 0; i < GUARD_SLOTS; i++)
		if (__atomic_load_n(&guarded[i].len, __ATOMIC_RELAXED) != 0 && guarded[i].start == (uintptr_t)addr)
			__atomic_store_n(&guarded[i].len, 0ull, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&guard_mutex);
}

static void on_sigbus(int sig, siginfo_t* si, void* ctx)
{
	int saved = errno;
	struct guarded* g = guard_find((uintptr_t)si->si_addr);
	if (g != NULL) {
		uintptr_t start = __atomic_load_n(&g->start, __ATOMIC_RELAXED);
		uint64_t len = __atomic_load_n(&g->len, __ATOMIC_RELAXED);
		/* mmap is a plain system call: safe here (as libwayland's wl_shm does the same) */
		void* p = mmap((void*)start, len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p != MAP_FAILED) {
			__atomic_fetch_add(&g->faults, 1u, __ATOMIC_RELAXED);
			errno = saved;
			return; /* the access runs again, on zero pages */
		}
	}
	errno = saved;
	if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
		previous.sa_sigaction(sig, si, ctx);
	} else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
		previous.sa_handler(sig);
	} else {
		/* no handler before us: the default action, as if we were not there (the access faults again) */
		struct sigaction dfl;
		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigaction(SIGBUS, &dfl, NULL);
	}
}

int32_t nfqlb_file_guard(void)
{
	pthread_mutex_lock(&guard_mutex);
	int32_t rc = 0;
	if (!installed) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_sigbus;
		sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGBUS, &sa, &previous) == 0)
			installed = 1;
		else
			rc = -errno;
	}
	pthread_mutex_unlock(&guard_mutex);
	return rc;
}

/* Opens `path` when it is a regular file: the descriptor, with its size in *size; or -errno (-EINVAL for a
 * directory, device or FIFO, which must never be mapped). */
static int open_regular(const char* path, int32_t writable, uint64_t* size)
{
	*size = 0;
	int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int32_t rc = 0;
	if (fstat(fd, &st) != 0)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = -EINVAL;
	if (rc != 0) {
		close(fd);
		return rc;
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

void* nfqlb_file_map(const char* path, int32_t writable, uint64_t* size, int32_t* err)
{
	*err = 0;
	int fd = open_regular(path, writable, size);
	if (fd < 0) {
		*err = -fd;
		return NULL;
	}
	if (*size == 0) { /* nothing to map; the caller reports a truncated file */
		close(fd);
		return NULL;
	}
	void* p = mmap(NULL, (size_t)*size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED) {
		*err = e;
		return NULL;
	}
	guard_add(p, *size);
	return p;
}

void* nfqlb_file_map_fd(int32_t fd, uint64_t len, int32_t writable, void* at, int32_t* err)
{
	*err = 0;
	struct guarded* g = NULL;
	if (at != NULL) {
		g = guard_find((uintptr_t)at);
		if (g == NULL || g->start != (uintptr_t)at || g->len != len) {
			*err = EINVAL;
			return NULL;
		}
	}
	void* p = mmap(at, (size_t)len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED | (at ? MAP_FIXED : 0), fd,
		       0);
	if (p == MAP_FAILED) {
		*err = errno;
		return NULL;
	}
	if (g)
		__atomic_store_n(&g->faults, 0u, __ATOMIC_RELAXED);
	else
		guard_add(p, len);
	return p;
}

int32_t nfqlb_file_unmap(void* addr, uint64_t size)
{
	if (addr == NULL)
		return 0;
	guard_remove(addr);
	return munmap(addr, (size_t)size) == 0 ? 0 : -errno;
}

uint32_t nfqlb_file_faults(const void* addr)
{
	struct guarded* g = guard_find((uintptr_t)addr);
	return g ? __atomic_load_n(&g->faults, __ATOMIC_RELAXED) : 0;
}

int32_t nfqlb_file_remap(void* addr, uint64_t size, const char* path, int32_t writable)
{
	struct guarded* g = guard_find((uintptr_t)addr);
	if (g == NULL || g->start != (uintptr_t)addr || g->len != size)
		return -EINVAL;
	uint64_t have = 0;
	int fd = open_regular(path, writable, &have);
	if (fd < 0)
		return fd;
	int32_t rc = 0;
	if (have < size)
		rc = -ERANGE; /* a shorter file would fault again */
	if (rc == 0) {
		void* p = mmap(addr, (size_t)size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_FIXED | MAP_SHARED, fd,
			       0);
		if (p == MAP_FAILED)
			rc = -errno;
		else
			__atomic_store_n(&g->faults, 0u, __ATOMIC_RELAXED);
	}
	close(fd);
	return rc;
}

int32_t nfqlb_file_reserve(const char* path, uint64_t size)
{
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int e = posix_fallocate(fd, 0, (off_t)size); /* returns the error, does not set errno */
	close(fd);
	return -e;
}
