#include "nfqlb.h"

/*
 * djb2 is one long dependency chain (h = 33h + b). Eight steps at once give
 * the same value: h' = 33^8 h + 33^7 b0 + ... + 33 b6 + b7 (mod 2^32), and
 * the byte terms are independent, so the chain is one multiply-add per 8
 * bytes: about twice as fast on the 40-byte key.
 */
uint32_t nfqlb_hash_djb2(const uint8_t* p, uint32_t len)
{
	uint32_t h = 5381, i = 0;
	for (; i + 8 <= len; i += 8) {
		uint32_t t = p[i] * 3963737313u + p[i + 1] * 1291467969u + p[i + 2] * 39135393u +
			     p[i + 3] * 1185921u + p[i + 4] * 35937u + p[i + 5] * 1089u + p[i + 6] * 33u + p[i + 7];
		h = h * 1954312449u + t;
	}
	for (; i < len; i++)
		h = h * 33u + p[i];
	return h;
}

uint32_t nfqlb_hash_key(const uint8_t* key, uint32_t len, uint32_t hash_mode)
{
	if (key == NULL || len < NFQLB_KEY_LEN)
		return 0;
	uint32_t proto = (uint32_t)key[34] | ((uint32_t)key[35] << 8);
	if (proto == 132 && hash_mode == 1)
		return nfqlb_hash_djb2(key + 36, 4); /* upstream's legacy SCTP mode: ports only */
	return nfqlb_hash_djb2(key, NFQLB_KEY_LEN);
}

uint32_t nfqlb_hash_addresses(const uint8_t* key, uint32_t len)
{
	if (key == NULL || len < 32)
		return 0;
	return nfqlb_hash_djb2(key, 32);
}
