/** Limits of the connection table (c/ct_admin.c), without its code: for the CLI's help texts. */

/** Max bytes of context per entry. */
export const CTX_MAX = 256;
/** Max entries of one table. */
export const MAX_CAPACITY = 2 ** 28;
/** Max context records of one table. */
export const MAX_CTX_SLOTS = 2 ** 24;
/** Max lifetime (ms) of a protocol; per-entry lifetimes stop at 32767 s (pin for longer). */
export const MAX_TTL_MS = 0x7fffffff;
/** Max per-entry lifetime (ms) that nfqlb_ct_admin_set accepts. */
export const MAX_ENTRY_LIFETIME_MS = 32767 * 1000;
