/**
 * Damage done to shm files by the fault-injection tests (unit and
 * reliability): what a careless operator, a script or upstream's `init` can do
 * to a file a running dataplane uses.
 */

/** An upstream 1.x table file (docs/shm.md, "Upstream files"): own, M, N, len, lookup, permutations, active; size 4 + len. */
export function upstreamTable(M: number, N: number, own: number): Uint8Array<ArrayBuffer> {
  const len = 12 + 4 * (3 + M * N) + 4 * (M + N);
  const b = new Uint8Array(4 + len);
  const v = new DataView(b.buffer);
  v.setInt32(0, own, true);
  v.setUint32(4, M, true);
  v.setUint32(8, N, true);
  v.setUint32(12, len, true);
  for (let i = 0; i < M; i++) v.setInt32(16 + 4 * i, -1, true);
  for (let i = 0; i < N; i++) v.setInt32(16 + 4 * M + 4 * M * N + 4 * i, -1, true);
  return b;
}

/** The kinds of damage, in the order the tests apply them. */
export const DAMAGES = ["truncate", "zero", "random-header", "upstream"] as const;
/** One kind of damage. */
export type Damage = (typeof DAMAGES)[number];

/** Writes `bytes` at offset 0 of `path` in place (same inode, no truncation). */
function overwrite(path: string, bytes: Uint8Array): void {
  const f = Deno.openSync(path, { write: true });
  try {
    let off = 0;
    while (off < bytes.length) off += f.writeSync(bytes.subarray(off));
  } finally {
    f.close();
  }
}

/**
 * Damages `path` in place, as `truncate -s 0`, a zero fill of the whole file
 * (`dd if=/dev/zero conv=notrunc`), 64 random bytes over the header, or an
 * upstream 1.x table (M=997, N=32) written over the name the way upstream's
 * `init` does (open with O_TRUNC, same inode).
 */
export function damageFile(path: string, how: Damage): void {
  switch (how) {
    case "truncate":
      Deno.truncateSync(path, 0);
      return;
    case "zero":
      overwrite(path, new Uint8Array(Deno.statSync(path).size));
      return;
    case "random-header": {
      const b = crypto.getRandomValues(new Uint8Array(64));
      b[0] |= 0x80; // never a valid magic by chance ("NQLB", "NQCT" and the others start with ASCII)
      overwrite(path, b);
      return;
    }
    case "upstream":
      Deno.writeFileSync(path, upstreamTable(997, 32, 0));
      return;
  }
}
