#include "nfqlb.h"

uint32_t nfqlb_djb2(const uint8_t* p, uint32_t len)
{
	uint32_t h = 5381;
	for (uint32_t i = 0; i < len; i++)
		h = (h << 5) + h + p[i];
	return h;
}

uint32_t nfqlb_hash_key(const uint8_t* key, uint32_t len, uint32_t hash_mode)
{
	if (key == NULL || len < NFQLB_KEY_LEN)
		return 0;
	uint32_t proto = (uint32_t)key[34] | ((uint32_t)key[35] << 8);
	if (proto == 132 && hash_mode == 1)
		return nfqlb_djb2(key + 36, 4); /* upstream's legacy SCTP mode: ports only */
	return nfqlb_djb2(key, NFQLB_KEY_LEN);
}

uint32_t nfqlb_hash_addresses(const uint8_t* key, uint32_t len)
{
	if (key == NULL || len < 32)
		return 0;
	return nfqlb_djb2(key, 32);
}
