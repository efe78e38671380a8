/**
 * Our Maglev population (c/maglev.c, no permutation array) against the bench
 * baseline c/bench/upstream_maglev.c (upstream 1.2.0's permutation[N][M]
 * array and populate loop, with glibc rand()). Where upstream's walk stays
 * inside its array the tables must be identical; where it would read past
 * the array (M > 65536, e.g. M=131071 with only the last row active) ours
 * must still give a full table of active rows.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { openBenchLib } from "./c_baseline.ts";
import { ROOT } from "../harness/paths.ts";

/** (M, N) pairs: small published cases, Maglev's 65537, and wrapping sizes. */
const CASES: [number, number][] = [[7, 3], [19, 5], [997, 32], [9973, 100], [65537, 32], [131071, 32], [
  262139,
  32,
]];

function subsets(N: number): Int32Array[] {
  const sets: Int32Array[] = [];
  const all = new Int32Array(N).map((_, i) => 100 + i);
  sets.push(all);
  for (const row of [0, N - 1]) sets.push(new Int32Array(N).fill(-1).map((_, i) => (i === row ? 7 : -1)));
  let seed = N * 7919;
  for (let k = 0; k < 4; k++) {
    sets.push(new Int32Array(N).map((_, i) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 16) % 3 === 0 ? -1 : 100 + i;
    }));
  }
  return sets;
}

Deno.test("maglev: populate equals upstream 1.2.0's, and fills the table where upstream overruns", async () => {
  const bench = await openBenchLib(ROOT, `${ROOT}/bench-results`);
  const L = lib();
  let overruns = 0;
  try {
    for (const [M, N] of CASES) {
      const perm = bench.symbols.upstream_alloc(M, N);
      assert.ok(perm !== null);
      try {
        assert.equal(bench.symbols.upstream_init(M, N, perm), 0);
        const params = new Uint32Array(2 * N);
        assert.equal(L.nfqlb_maglev_params(M, N, params), 0);
        for (const active of subsets(N)) {
          const theirs = new Int32Array(M), ours = new Int32Array(M);
          const rc = bench.symbols.upstream_populate(M, N, perm, active, theirs);
          assert.equal(L.nfqlb_maglev_populate(M, N, params, active, ours), 0);
          if (!active.some((fw) => fw >= 0)) continue;
          if (rc === 0) {
            assert.deepEqual(ours, theirs, `M=${M} N=${N}`);
          } else {
            assert.equal(rc, -3, `M=${M} N=${N}: upstream rc`);
            overruns++;
            assert.ok(ours.every((row) => row >= 0 && active[row] >= 0), `M=${M} N=${N}: full table`);
          }
        }
      } finally {
        bench.symbols.upstream_free(perm);
      }
    }
  } finally {
    bench.close();
  }
  // M=131071 with only row 31 of 32 active is a known overrun of upstream's array
  assert.ok(overruns > 0, "expected at least one case where upstream reads past its array");
});
