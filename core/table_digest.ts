/**
 * The digest of a target table: a short hash of what decides the fwmark of
 * every packet, i.e. the lookup size M, the row count N, and which fwmark
 * sits in which row with which weight (Maglev's permutation of a row depends
 * on its index, so the same targets in other rows make another table). The
 * lookup entries themselves follow from these, the generation counter and
 * the own fwmark (fragment tier only) do not decide a target, so they are
 * left out. Two LB hosts whose tables have the same digest send every flow
 * to the same target, which is what lets a router move flows between them
 * (docs/tier.md); `nfqlb show --digest`, `nfqlb status` and run's
 * `nfqlb_table_info{table,digest}` show it.
 */
import { TargetShm } from "./target_shm.ts";

/** What the digest covers (a {@link TargetShm} snapshot and its size). */
export interface DigestInput {
  /** Lookup table size. */
  M: number;
  /** Rows. */
  N: number;
  /** fwmark per row, negative for a free row. */
  active: ArrayLike<number>;
  /** Weight per row (free rows' weights are ignored). */
  weights: ArrayLike<number>;
}

/** Hex digits of a table digest (64 bits of sha256: short enough to read, far from colliding in a tier). */
export const TABLE_DIGEST_HEX = 16;

/** The canonical text the digest hashes: one line for the size, one per used row `index fwmark weight`. */
export function digestText(t: DigestInput): string {
  let s = `nfqlb-table 1\nM=${t.M} N=${t.N}\n`;
  for (let i = 0; i < t.active.length; i++) {
    if (t.active[i] >= 0) s += `${i} ${t.active[i]} ${t.weights[i]}\n`;
  }
  return s;
}

/**
 * The digest of a table: the first 16 hex digits of the sha256 of
 * {@link digestText}.
 *
 * @example
 * ```ts
 * await tableDigest({ M: 997, N: 32, active: [101, 102, -1], weights: [1, 1, 1] }); // "…16 hex digits"
 * ```
 */
export async function tableDigest(t: DigestInput): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(digestText(t))));
  return Array.from(h.subarray(0, TABLE_DIGEST_HEX / 2), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The digest of the target table `name` in the shm directory (throws NfqlbError as TargetShm.open). */
export async function readTableDigest(name: string): Promise<string> {
  const t = TargetShm.open(name);
  try {
    const { active, weights } = t.snapshot(0);
    return await tableDigest({ M: t.M, N: t.N, active, weights });
  } finally {
    t.close();
  }
}
