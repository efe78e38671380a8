/** primeBelow as upstream: the largest prime <= n, n capped at 994009 (result <= 993997). */
import { lib } from "../ffi/lib.ts";

/** Largest Maglev table size: primeBelow(994009). */
export const MAX_M = 993997;

/**
 * The largest prime <= n (n >= 994009 is capped first), or 0 when n < 2.
 * @example
 * ```ts
 * primeBelow(1000); // 997
 * ```
 */
export function primeBelow(n: number): number {
  const capped = n >= 994009 ? 994009 : Math.max(0, Math.floor(n));
  return lib().nfqlb_prime_below(capped);
}
