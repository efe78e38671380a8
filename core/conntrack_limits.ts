/**
 * Limits and file name of the connection table (c/nfqlb.h), without its code:
 * for the CLI's help texts, and for lb, which loads the table's code (and
 * zod) only when the file exists.
 */
import {
  NFQLB_CT_CTX_MAX,
  NFQLB_CT_MAX_CAPACITY,
  NFQLB_CT_MAX_CTX,
  NFQLB_CT_MAX_LIFETIME_MS,
  NFQLB_CT_MAX_TTL_MS,
} from "../ffi/consts.ts";

/** Max bytes of context per entry. */
export const CTX_MAX = NFQLB_CT_CTX_MAX;
/** Max entries of one table. */
export const MAX_CAPACITY = NFQLB_CT_MAX_CAPACITY;
/** Max context records of one table. */
export const MAX_CTX_SLOTS = NFQLB_CT_MAX_CTX;
/** Max lifetime (ms) of a protocol; per-entry lifetimes stop at 32767 s (pin for longer). */
export const MAX_TTL_MS = NFQLB_CT_MAX_TTL_MS;
/** Max per-entry lifetime (ms) that nfqlb_ct_admin_set accepts. */
export const MAX_ENTRY_LIFETIME_MS = NFQLB_CT_MAX_LIFETIME_MS;

/** The connection table of target table `target`: `<target>-ct`. */
export function conntrackName(target: string): string {
  return `${target}-ct`;
}
