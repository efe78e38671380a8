/**
 * nfqlb_maglev_params / nfqlb_maglev_populate against an independent TS
 * model of upstream's algorithm (tests/helpers/models.ts), the lookup
 * tables upstream publishes and prints, and Maglev's properties.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { modelParams, modelPermutation, modelPopulate, mulberry32 } from "../helpers/models.ts";

function cParams(M: number, N: number): Uint32Array<ArrayBuffer> {
  const out = new Uint32Array(2 * N);
  assert.equal(lib().nfqlb_maglev_params(M, N, out), 0);
  return out;
}

/** The C lookup table for the rows whose active[i] >= 0. */
function cPopulate(M: number, params: Uint32Array<ArrayBuffer>, active: Int32Array<ArrayBuffer>): Int32Array {
  const N = params.length / 2;
  const lookup = new Int32Array(M);
  assert.equal(lib().nfqlb_maglev_populate(M, N, params, active, lookup), 0);
  return lookup;
}

function activeRows(N: number, rows: number[]): Int32Array<ArrayBuffer> {
  const a = new Int32Array(N).fill(-1);
  for (const r of rows) a[r] = 100 + r;
  return a;
}

/** First index where two tables differ, or -1. */
function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return -2;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function counts(lookup: Int32Array, N: number): number[] {
  const c = new Array(N).fill(0);
  for (const r of lookup) if (r >= 0) c[r]++;
  return c;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

// ---------------------------------------------------------------------------
// Parameters and permutations

Deno.test("nfqlb_maglev_params() equals the model and the published M=997 rows", () => {
  for (const [M, N] of [[3, 3], [19, 5], [997, 32], [65537, 100], [993997, 50]]) {
    const c = cParams(M, N);
    const m = modelParams(M, N);
    for (let i = 0; i < N; i++) {
      assert.equal(c[2 * i], m[i].offset, `M=${M} row ${i} offset`);
      assert.equal(c[2 * i + 1], m[i].skip, `M=${M} row ${i} skip`);
      assert.ok(m[i].offset < M && m[i].skip >= 1 && m[i].skip < M);
    }
  }
  const p = cParams(997, 4);
  assert.deepEqual(Array.from(p), [537, 215, 36, 8, 707, 104, 539, 37]);
  const m = modelParams(997, 2);
  assert.deepEqual([0, 1, 2, 3].map((j) => modelPermutation(997, m[0], j)), [537, 752, 967, 185]);
  assert.equal(modelPermutation(997, m[1], 0), 36);
});

Deno.test("nfqlb_maglev_params() rejects M < 3", () => {
  const out = new Uint32Array(2);
  assert.equal(lib().nfqlb_maglev_params(2, 1, out), -1);
  assert.equal(lib().nfqlb_maglev_params(0, 1, out), -1);
});

Deno.test("model permutations for M=19, N=5 equal upstream's printed rows", () => {
  const want = [
    "2 0 17 15 13 11 9 7 5 3 1 18 16 14 12 10 8 6 4",
    "3 11 0 8 16 5 13 2 10 18 7 15 4 12 1 9 17 6 14",
    "10 18 7 15 4 12 1 9 17 6 14 3 11 0 8 16 5 13 2",
    "10 4 17 11 5 18 12 6 0 13 7 1 14 8 2 15 9 3 16",
    "2 4 6 8 10 12 14 16 18 1 3 5 7 9 11 13 15 17 0",
  ];
  const m = modelParams(19, 5);
  assert.deepEqual(m.map((p) => range(19).map((j) => modelPermutation(19, p, j)).join(" ")), want);
});

// ---------------------------------------------------------------------------
// Upstream's published lookup tables: C and model

const PUBLISHED: { M: number; N: number; rows: number[]; lookup: string; full?: boolean }[] = [
  { M: 19, N: 5, rows: [0, 1, 2, 3, 4], lookup: "0 1 0 1 3 3 4 2 4 2 2 1 4 0 3 0 1 3 2", full: true },
  { M: 7, N: 3, rows: [0, 1, 2], lookup: "0 0 1 2 1 2 0", full: true },
  { M: 7, N: 3, rows: [0, 2], lookup: "2 0 0 2 0 2 0", full: true },
  { M: 13, N: 4, rows: [2], lookup: "2 2 2 2 2 2 2 2 2 2 2 2 2", full: true },
  { M: 13, N: 4, rows: [0, 1, 2], lookup: "0 2 2 0 2 0 1 0 2 0 1 1 1", full: true },
  { M: 13, N: 4, rows: [0, 1], lookup: "0 1 1 0 1 0 1 0 0 0 0 1 1", full: true },
  { M: 397, N: 10, rows: [0, 1, 2], lookup: "2 1 1 1 1 0 0 1 1 0 1 0 1 1 2 0 1 0 2 1 0 0 0 2 0" },
  { M: 997, N: 32, rows: [0], lookup: "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0" },
  { M: 997, N: 32, rows: [0, 1, 2], lookup: "2 0 0 2 2 1 0 1 0 0 1 2 2 1 2 1 1 0 2 0 2 0 2 1 2" },
  { M: 997, N: 32, rows: [0, 2], lookup: "2 0 0 2 2 0 0 2 0 0 2 2 2 0 2 0 2 0 2 0 2 0 2 0 2" },
  { M: 997, N: 100, rows: [0, 1, 2, 3], lookup: "2 0 0 2 2 1 0 1 0 0 1 2 3 1 2 1 3 0 2 0 3 0 2 3 2" },
  { M: 887, N: 20, rows: [0, 1, 2, 3], lookup: "0 0 2 2 0 2 2 2 0 3 1 3 3 1 1 2 3 2 2 1 0 0 1 1 3" },
];

Deno.test("C and model give upstream's published lookup tables", () => {
  for (const t of PUBLISHED) {
    const active = activeRows(t.N, t.rows);
    const c = cPopulate(t.M, cParams(t.M, t.N), active);
    const m = modelPopulate(t.M, modelParams(t.M, t.N), active);
    const want = t.lookup.split(" ").map(Number);
    const label = `M=${t.M} N=${t.N} rows ${t.rows}`;
    assert.deepEqual(Array.from(c.subarray(0, want.length)), want, `C ${label}`);
    assert.deepEqual(Array.from(m.subarray(0, want.length)), want, `model ${label}`);
    if (t.full) assert.equal(want.length, t.M);
  }
});

Deno.test("no active row gives an all -1 table; one active row owns every slot", () => {
  for (const M of [3, 997, 65537]) {
    const N = 4;
    const p = cParams(M, N);
    assert.ok(cPopulate(M, p, activeRows(N, [])).every((v) => v === -1));
    assert.ok(cPopulate(M, p, activeRows(N, [3])).every((v) => v === 3));
  }
});

Deno.test("nfqlb_maglev_populate() rejects bad arguments", () => {
  const p = cParams(7, 2);
  const lookup = new Int32Array(7);
  assert.equal(lib().nfqlb_maglev_populate(2, 2, p, activeRows(2, [0]), lookup), -1);
  assert.equal(lib().nfqlb_maglev_populate(7, 0, p, activeRows(2, [0]), lookup), -1);
});

// ---------------------------------------------------------------------------
// Model vs C over many configurations

Deno.test("C lookup equals the model for many (M, N, active set) combinations", () => {
  const rnd = mulberry32(20240328);
  // [M, N values]: small M get many N, big M few (the model is plain TS)
  const configs: [number, number[]][] = [
    [3, [1, 2, 3]],
    [7, [1, 2, 3, 5, 7]],
    [19, [1, 2, 5, 11, 19]],
    [97, [1, 3, 10, 50, 97]],
    [997, [1, 2, 32, 100, 500, 997]],
    [9973, [1, 10, 100, 1000]],
    [65521, [2, 10, 100, 1000]],
    [65537, [1, 2, 10, 100, 1000]],
    [131071, [2, 5, 50, 200]],
    [993997, [2, 7]],
  ];
  let cases = 0;
  const failures: string[] = [];
  for (const [M, Ns] of configs) {
    for (const N of Ns) {
      const cp = cParams(M, N);
      const mp = modelParams(M, N);
      // active sets: all rows, the last row only, a random half, random sparse ones
      const sets: number[][] = [range(N), [N - 1]];
      const tries = M >= 131071 ? 1 : M >= 9973 ? 2 : 4;
      for (let t = 0; t < tries; t++) {
        const density = [0.5, 0.1, 0.9, 0.3][t];
        const rows = range(N).filter(() => rnd() < density);
        if (rows.length > 0) sets.push(rows);
      }
      for (const rows of sets) {
        const active = activeRows(N, rows);
        const c = cPopulate(M, cp, active);
        const m = modelPopulate(M, mp, active);
        const d = firstDiff(c, m);
        cases++;
        if (d !== -1) {
          failures.push(`M=${M} N=${N} active=${rows.length} rows: slot ${d} C ${c[d]} model ${m[d]}`);
        }
      }
    }
  }
  assert.deepEqual(failures, []);
  assert.ok(cases >= 100, `${cases} cases`);
});

Deno.test("the walk past the flat array (upstream reads out of bounds) matches the model", () => {
  // With M > 65536 a row's wrapped sequence repeats slots, so the walks of the
  // last rows can run past N*M (upstream reads past its array there); the model
  // then continues with the row's exact permutation. Check C where that happens.
  let exercised = 0;
  for (const [M, N] of [[65537, 1], [65537, 2], [131071, 1], [131071, 3], [993997, 1], [993997, 2]]) {
    const stats = { pastEnd: 0 };
    const active = activeRows(N, range(N));
    const c = cPopulate(M, cParams(M, N), active);
    const m = modelPopulate(M, modelParams(M, N), active, stats);
    assert.equal(firstDiff(c, m), -1, `M=${M} N=${N}`);
    assert.ok(c.every((v) => v >= 0 && v < N));
    if (stats.pastEnd > 0) exercised++;
  }
  assert.ok(exercised > 0, "at least one configuration walks past N*M");
});

// ---------------------------------------------------------------------------
// Properties

Deno.test("every slot is filled with an active row whenever at least one row is active", () => {
  const rnd = mulberry32(7);
  for (const [M, N] of [[7, 3], [997, 32], [9973, 100], [65537, 100], [131071, 20]]) {
    const p = cParams(M, N);
    for (let t = 0; t < 5; t++) {
      const rows = range(N).filter(() => rnd() < 0.4);
      if (rows.length === 0) rows.push(Math.floor(rnd() * N));
      const active = activeRows(N, rows);
      const c = cPopulate(M, p, active);
      for (let s = 0; s < M; s++) {
        if (c[s] < 0 || active[c[s]] < 0) assert.fail(`M=${M} N=${N}: slot ${s} = ${c[s]}`);
      }
    }
  }
});

Deno.test("when M > 100·n every active row's share is within 1 % of 1/n", () => {
  for (
    const [M, N] of [[997, 9], [9973, 32], [9973, 99], [65537, 100], [65537, 655], [131071, 1000], [
      993997,
      20,
    ]]
  ) {
    const n = N; // all rows active
    assert.ok(M > 100 * n, `config M=${M} n=${n}`);
    const c = counts(cPopulate(M, cParams(M, N), activeRows(N, range(N))), N);
    const ideal = M / n;
    for (let r = 0; r < N; r++) {
      const rel = Math.abs(c[r] - ideal) / ideal;
      assert.ok(rel <= 0.01, `M=${M} n=${n} row ${r}: ${c[r]} slots, ideal ${ideal.toFixed(1)}`);
      // Maglev fills round-robin: counts differ by at most one
      assert.ok(Math.abs(c[r] - ideal) < 1, `M=${M} n=${n} row ${r}: ${c[r]} vs ${ideal}`);
    }
  }
});

/** Fraction of slots whose row differs between two tables. */
function moved(a: Int32Array, b: Int32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) d++;
  return d / a.length;
}

/**
 * Disruption when one target is added to or removed from n active targets
 * (table with n + 1 rows; the base set is rows 0..n-1). Returns the worst
 * fraction of moved slots over the tried rows, in units of 1/n.
 */
function disruption(M: number, n: number, samples: number): { removeWorst: number; add: number } {
  const N = n + 1;
  const p = cParams(M, N);
  const base = cPopulate(M, p, activeRows(N, range(n)));
  const add = moved(base, cPopulate(M, p, activeRows(N, range(N)))) * n;
  let removeWorst = 0;
  const step = Math.max(1, Math.floor(n / samples));
  for (let k = 0; k < n; k += step) {
    const rows = range(n).filter((r) => r !== k);
    removeWorst = Math.max(removeWorst, moved(base, cPopulate(M, p, activeRows(N, rows))) * n);
  }
  return { removeWorst, add };
}

Deno.test("adding or removing one of n targets moves at most 1.2/n of the slots (n = 5, 10)", () => {
  for (const M of [9973, 65537]) {
    for (const n of [5, 10]) {
      const d = disruption(M, n, n);
      const line = `M=${M} n=${n}: remove ${d.removeWorst.toFixed(3)}/n, add ${d.add.toFixed(3)}/n`;
      // Removing a target must move at least its own share (~1/n); adding one, ~1/(n+1).
      assert.ok(d.removeWorst >= 0.98, line);
      assert.ok(d.add >= 0.98 * n / (n + 1), line);
      assert.ok(d.removeWorst <= 1.2 && d.add <= 1.2, line);
    }
  }
});

/*
 * KNOWN, REPORTED: for larger n the 1.2/n bound does NOT hold. This is a
 * property of Maglev's population itself (the C table equals the independent
 * model of upstream's algorithm, so upstream moves exactly as many slots).
 * Measured worst case over all removed rows (remove) and adding row n (add):
 *   M=9973  n=50:  remove 1.675/n, add 1.589/n    n=100: remove 2.878/n, add 2.507/n
 *   M=65537 n=50:  remove 1.256/n, add 1.191/n    n=100: remove 1.619/n, add 1.570/n
 * The bounds below pin those numbers (+5 %) so a change in the algorithm shows.
 */
Deno.test("for n = 50, 100 Maglev moves more than 1.2/n (measured, pinned; see comment)", () => {
  const pinned: [number, number, number, number][] = [
    // M, n, max remove, max add (in units of 1/n)
    [9973, 50, 1.76, 1.67],
    [9973, 100, 3.03, 2.64],
    [65537, 50, 1.32, 1.26],
    [65537, 100, 1.70, 1.65],
  ];
  for (const [M, n, maxRemove, maxAdd] of pinned) {
    const d = disruption(M, n, n);
    const line = `M=${M} n=${n}: remove ${d.removeWorst.toFixed(3)}/n, add ${d.add.toFixed(3)}/n`;
    assert.ok(d.removeWorst >= 0.98 && d.removeWorst <= maxRemove, line);
    assert.ok(d.add >= 0.98 * n / (n + 1) && d.add <= maxAdd, line);
  }
});

Deno.test("disruption stays under upstream maglevdyn-test's limits (24 %, 13 %, 5 %)", () => {
  // upstream targetAddRemove(M, N, A, lim): activate rows 0..A-1, add row A,
  // then remove row 0; each step must move < lim of the slots.
  for (const [M, N, A, limit] of [[109, 20, 10, 0.24], [1009, 20, 10, 0.13], [10009, 100, 50, 0.05]]) {
    const p = cParams(M, N);
    const base = cPopulate(M, p, activeRows(N, range(A)));
    const plusOne = cPopulate(M, p, activeRows(N, range(A + 1)));
    const minusFirst = cPopulate(M, p, activeRows(N, range(A + 1).slice(1)));
    assert.ok(moved(base, plusOne) < limit, `M=${M} add: ${moved(base, plusOne)}`);
    assert.ok(moved(plusOne, minusFirst) < limit, `M=${M} remove: ${moved(plusOne, minusFirst)}`);
  }
});

Deno.test("M=131071 (upstream crashes) yields a full, balanced, valid table that equals the model", () => {
  const M = 131071;
  for (const N of [1, 10, 100]) {
    const p = cParams(M, N);
    const active = activeRows(N, range(N));
    const c = cPopulate(M, p, active);
    assert.ok(c.every((v) => v >= 0 && v < N), `N=${N}: every slot holds a valid row`);
    const cnt = counts(c, N);
    assert.ok(
      Math.max(...cnt) - Math.min(...cnt) <= 1,
      `N=${N}: counts ${Math.min(...cnt)}..${Math.max(...cnt)}`,
    );
    assert.equal(firstDiff(c, modelPopulate(M, modelParams(M, N), active)), -1, `N=${N}: C equals model`);
  }
});
