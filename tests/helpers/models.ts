/**
 * Independent TypeScript models of upstream nfqlb's algorithms, written from
 * upstream's algorithms (Maglev permutation and population as docs/maglev.md
 * describes them, djb2), not from c/. Tests compare
 * the C library against these.
 */

/**
 * glibc random_r() TYPE_3 (degree 31, separation 3) in its textbook
 * front/rear pointer form, seeded as srandom(seed).
 */
export class GlibcRand {
  #state = new Uint32Array(31);
  #front = 3;
  #rear = 0;

  /** @param seed as for srand(); 0 behaves as 1 */
  constructor(seed = 1) {
    let word = seed === 0 ? 1 : seed | 0;
    this.#state[0] = word;
    for (let i = 1; i < 31; i++) {
      // Schrage's method for 16807 * word % 2147483647, with C's truncating division
      const hi = Math.trunc(word / 127773);
      const lo = word % 127773;
      word = 16807 * lo - 2836 * hi;
      if (word < 0) word += 2147483647;
      this.#state[i] = word;
    }
    for (let i = 0; i < 310; i++) this.next();
  }

  /** The next value in [0, 2^31). */
  next(): number {
    const s = this.#state;
    s[this.#front] = (s[this.#front] + s[this.#rear]) >>> 0;
    const out = s[this.#front] >>> 1;
    this.#front = (this.#front + 1) % 31;
    this.#rear = (this.#rear + 1) % 31;
    return out;
  }
}

/** (offset, skip) per row, drawn as upstream init does in a fresh process. */
export interface MaglevRowParams {
  offset: number;
  skip: number;
}

/** Upstream's Maglev permutation: glibc rand() seeded 1, offset = rand() % M, skip = rand() % (M-1) + 1 per row. */
export function modelParams(M: number, N: number): MaglevRowParams[] {
  const r = new GlibcRand(1);
  const rows: MaglevRowParams[] = [];
  for (let i = 0; i < N; i++) {
    const offset = r.next() % M;
    const skip = (r.next() % (M - 1)) + 1;
    rows.push({ offset, skip });
  }
  return rows;
}

const TWO32 = 4294967296;

/** permutation[i][j] as upstream stores it: (offset + j*skip) mod 2^32, then % M. */
export function modelPermutation(M: number, p: MaglevRowParams, j: number): number {
  // j*skip < 2^40 and offset < 2^20: exact in a double
  return ((p.offset + j * p.skip) % TWO32) % M;
}

/**
 * Upstream's Maglev population loop (docs/maglev.md, "Population") over the
 * flat N*M permutation array (row-major), where next[i] may run past M into the following rows. Where the flat index
 * would pass N*M, the walk continues with the exact permutation of row i,
 * (offset_i + (j mod M)*skip_i) % M without overflow, from j = 0.
 * Returns lookup[0..M-1] (row index, or -1 when no row is active);
 * `stats.pastEnd` counts the reads past N*M.
 */
export function modelPopulate(
  M: number,
  params: MaglevRowParams[],
  active: ArrayLike<number>,
  stats: { pastEnd: number } = { pastEnd: 0 },
): Int32Array {
  const N = params.length;
  const lookup = new Int32Array(M).fill(-1);
  const rows: number[] = [];
  for (let i = 0; i < N; i++) if (active[i] >= 0) rows.push(i);
  if (rows.length === 0) return lookup;
  const next = new Float64Array(N);
  const slot = (i: number): number => {
    const flat = i * M + next[i];
    if (flat < N * M) {
      const row = Math.floor(flat / M);
      return modelPermutation(M, params[row], flat - row * M);
    }
    stats.pastEnd++;
    const j = (flat - N * M) % M;
    return (params[i].offset + j * params[i].skip) % M;
  };
  let n = 0;
  for (;;) {
    for (const i of rows) {
      let c = slot(i);
      while (lookup[c] >= 0) {
        next[i]++;
        c = slot(i);
      }
      lookup[c] = i;
      next[i]++;
      n++;
      if (n === M) return lookup;
    }
  }
}

/**
 * Weighted population (docs/maglev.md "Weights"; Katran MaglevHashV2 turns):
 * the same per-row walks as {@link modelPopulate}, but in each round every
 * row with weight > 0, ascending, adds its weight to a credit (starting at
 * floor(wmax/2)) and takes a turn only when the credit reaches wmax, then
 * subtracts wmax. Rows with weight 0 take no turns; all 0 gives all -1.
 */
export function modelPopulateWeighted(
  M: number,
  params: MaglevRowParams[],
  active: ArrayLike<number>,
  weights: ArrayLike<number>,
): Int32Array {
  const N = params.length;
  const lookup = new Int32Array(M).fill(-1);
  const rows: number[] = [];
  for (let i = 0; i < N; i++) if (active[i] >= 0 && weights[i] > 0) rows.push(i);
  if (rows.length === 0) return lookup;
  const wmax = Math.max(...rows.map((i) => weights[i]));
  const credit = new Float64Array(N).fill(Math.floor(wmax / 2));
  const next = new Float64Array(N);
  const slot = (i: number): number => {
    const flat = i * M + next[i];
    if (flat < N * M) {
      const row = Math.floor(flat / M);
      return modelPermutation(M, params[row], flat - row * M);
    }
    const j = (flat - N * M) % M;
    return (params[i].offset + j * params[i].skip) % M;
  };
  let n = 0;
  for (;;) {
    for (const i of rows) {
      credit[i] += weights[i];
      if (credit[i] < wmax) continue;
      credit[i] -= wmax;
      let c = slot(i);
      while (lookup[c] >= 0) {
        next[i]++;
        c = slot(i);
      }
      lookup[c] = i;
      next[i]++;
      if (++n === M) return lookup;
    }
  }
}

/** djb2: h = 5381; h = h*33 + byte (unsigned 32-bit). */
export function djb2(bytes: ArrayLike<number>): number {
  let h = 5381;
  for (let i = 0; i < bytes.length; i++) h = (Math.imul(h, 33) + bytes[i]) >>> 0;
  return h >>> 0;
}

/** A small seeded PRNG (mulberry32) for choosing test cases reproducibly. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** xorshift32: a reproducible stream of u32s (seed 0 counts as 1). */
export function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0);
  };
}
