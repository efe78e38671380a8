/* tun.c - the tun device through which stored fragments are re-injected. */
#define _GNU_SOURCE
#include "nfqlb.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int32_t nfqlb_tun_open(const char* name)
{
	if (name == NULL || strlen(name) >= IFNAMSIZ || name[0] == 0)
		return -EINVAL;
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int32_t nfqlb_tun_close(int32_t fd) { return close(fd) == 0 ? 0 : -errno; }
