#define _GNU_SOURCE
#include "nfqlb.h"
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void* nfqlb_file_map(const char* path, int32_t writable, uint64_t* size, int32_t* err)
{
	*size = 0;
	*err = 0;
	int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
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
		close(fd);
		*err = EINVAL;
		return NULL;
	}
	*size = (uint64_t)st.st_size;
	if (st.st_size == 0) { /* nothing to map; the caller reports a truncated file */
		close(fd);
		return NULL;
	}
	void* p = mmap(NULL, (size_t)st.st_size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED) {
		*err = e;
		return NULL;
	}
	return p;
}

int32_t nfqlb_file_unmap(void* addr, uint64_t size)
{
	if (addr == NULL)
		return 0;
	return munmap(addr, (size_t)size) == 0 ? 0 : -errno;
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
