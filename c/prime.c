#include "nfqlb.h"

static int is_prime(uint32_t n)
{
	if (n < 2)
		return 0;
	if (n % 2 == 0)
		return n == 2;
	for (uint32_t p = 3; p * p <= n; p += 2)
		if (n % p == 0)
			return 0;
	return 1;
}

uint32_t nfqlb_prime_below(uint32_t n)
{
	if (n >= 994009u)
		n = 994009u; /* 997^2: upstream's trial-division table ends at 997 */
	if (n < 2)
		return 0;
	if (n < 4)
		return n;
	if (n % 2 == 0)
		n--;
	while (!is_prime(n))
		n -= 2;
	return n;
}
