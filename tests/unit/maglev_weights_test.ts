/**
 * Weights in Maglev (docs/maglev.md "Weights"): nfqlb_maglev_populate_weighted
 * against the upstream model (all weights 1) and a plain TS model of the
 * Katran-style turns (tests/helpers/models.ts); shares, drained rows,
 * disruption; the shm (v2 layout) and the CLI (`activate --weight`, `show`).
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { modelParams, modelPopulate, modelPopulateWeighted, mulberry32 } from "../helpers/models.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { NfqlbError } from "../../core/errors.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox } from "../helpers/shm.ts";

function cParams(M: number, N: number): Uint32Array<ArrayBuffer> {
  const out = new Uint32Array(2 * N);
  assert.equal(lib().nfqlb_maglev_params(M, N, out), 0);
  return out;
}

function cWeighted(
  M: number,
  params: Uint32Array<ArrayBuffer>,
  active: Int32Array<ArrayBuffer>,
  weights: Uint32Array<ArrayBuffer> | null,
): Int32Array<ArrayBuffer> {
  const lookup = new Int32Array(M);
  assert.equal(
    lib().nfqlb_maglev_populate_weighted(M, params.length / 2, params, active, weights, lookup),
    0,
  );
  return lookup;
}

function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : -2;
}

function counts(lookup: Int32Array, N: number): number[] {
  const c = new Array(N).fill(0);
  for (const r of lookup) if (r >= 0) c[r]++;
  return c;
}

function randomActive(rnd: () => number, N: number, p: number): Int32Array<ArrayBuffer> {
  const a = new Int32Array(N);
  for (let i = 0; i < N; i++) a[i] = rnd() < p ? 1000 + i : -1;
  return a;
}

function randomWeights(rnd: () => number, N: number, lo: number, hi: number): Uint32Array<ArrayBuffer> {
  return new Uint32Array(N).map(() => lo + Math.floor(rnd() * (hi - lo + 1)));
}

/** Largest |slots - M*w/W| / (M*w/W) over rows with w > 0, and the largest absolute error in slots. */
function shareError(lookup: Int32Array, active: Int32Array, w: Uint32Array): { rel: number; abs: number } {
  const M = lookup.length, N = active.length;
  const c = counts(lookup, N);
  let W = 0;
  for (let i = 0; i < N; i++) if (active[i] >= 0) W += w[i];
  let rel = 0, abs = 0;
  for (let i = 0; i < N; i++) {
    if (active[i] < 0 || w[i] === 0) continue;
    const ideal = (M * w[i]) / W;
    rel = Math.max(rel, Math.abs(c[i] - ideal) / ideal);
    abs = Math.max(abs, Math.abs(c[i] - ideal));
  }
  return { rel, abs };
}

// ---------------------------------------------------------------------------
// All weights equal: upstream's table

Deno.test("weights all 1 (or NULL, or all equal) give upstream's table for many (M, N, active set)", () => {
  const rnd = mulberry32(1701);
  const configs: [number, number[]][] = [
    [3, [1, 2, 3]],
    [7, [1, 3, 7]],
    [13, [4, 13]],
    [97, [1, 5, 40, 97]],
    [997, [1, 10, 32, 100]],
    [9973, [3, 100]],
    [65537, [1, 50, 1000]],
    [131071, [32]],
  ];
  let cases = 0;
  for (const [M, Ns] of configs) {
    for (const N of Ns) {
      const params = cParams(M, N);
      const mp = modelParams(M, N);
      for (let rep = 0; rep < (M > 10000 ? 2 : 5); rep++) {
        const active = rep === 0 ? new Int32Array(N).fill(7) : randomActive(rnd, N, rnd());
        const want = modelPopulate(M, mp, active);
        const same = 1 + Math.floor(rnd() * 65535);
        for (const w of [null, new Uint32Array(N).fill(1), new Uint32Array(N).fill(same)]) {
          const label = `M=${M} N=${N} rep ${rep} weights ${w === null ? "NULL" : w[0]}`;
          assert.equal(firstDiff(cWeighted(M, params, active, w), want), -1, label);
          cases++;
        }
        // inactive rows' weights do not matter
        const w = new Uint32Array(N).fill(1);
        for (let i = 0; i < N; i++) if (active[i] < 0) w[i] = Math.floor(rnd() * 65536);
        assert.equal(firstDiff(cWeighted(M, params, active, w), want), -1, `M=${M} N=${N} inactive weights`);
      }
    }
  }
  assert.ok(cases > 100);
});

Deno.test("a drained row (weight 0) gets no slots and gives the table of the row deactivated", () => {
  const rnd = mulberry32(4242);
  for (const [M, N] of [[7, 3], [997, 32], [9973, 100], [65537, 200]]) {
    const params = cParams(M, N);
    for (let rep = 0; rep < 4; rep++) {
      const active = new Int32Array(N).map((_, i) => 500 + i);
      const w = rep < 2 ? new Uint32Array(N).fill(1) : randomWeights(rnd, N, 1, 10);
      const k = Math.floor(rnd() * N);
      w[k] = 0;
      const drained = cWeighted(M, params, active, w);
      assert.equal(counts(drained, N)[k], 0, `M=${M} N=${N} row ${k}`);
      const off = active.slice();
      off[k] = -1;
      assert.equal(
        firstDiff(drained, cWeighted(M, params, off, w)),
        -1,
        `M=${M} N=${N} drained = deactivated`,
      );
    }
    // every active row drained: no target at all, as with no active row
    const active = new Int32Array(N).fill(1);
    assert.ok(cWeighted(M, params, active, new Uint32Array(N)).every((v) => v === -1), `M=${M} all drained`);
  }
});

// ---------------------------------------------------------------------------
// Weighted turns

Deno.test("weighted C table equals the plain Katran-turn model (both C code paths)", () => {
  const rnd = mulberry32(99);
  const configs: [number, number][] = [[7, 3], [13, 4], [97, 10], [997, 32], [997, 100], [9973, 50], [
    65537,
    20,
  ]];
  let cases = 0;
  for (const [M, N] of configs) {
    const params = cParams(M, N);
    const mp = modelParams(M, N);
    for (let rep = 0; rep < 6; rep++) {
      const active = randomActive(rnd, N, 0.3 + 0.7 * rnd());
      // rep 0..2: alike weights (round loop); rep 3..5: one heavy row (heap path)
      const w = rep < 3 ? randomWeights(rnd, N, 0, 10) : randomWeights(rnd, N, 1, 3);
      if (rep >= 3) w[Math.floor(rnd() * N)] = rep === 5 ? 65535 : 1000;
      const want = modelPopulateWeighted(M, mp, active, w);
      assert.equal(firstDiff(cWeighted(M, params, active, w), want), -1, `M=${M} N=${N} rep ${rep}`);
      cases++;
    }
  }
  // the 32-bit wrap / flat-array walk for M > 65536, weighted
  const M = 131071, N = 32;
  const active = new Int32Array(N).fill(1);
  const w = randomWeights(rnd, N, 1, 10);
  assert.equal(
    firstDiff(cWeighted(M, cParams(M, N), active, w), modelPopulateWeighted(M, modelParams(M, N), active, w)),
    -1,
  );
  assert.ok(cases >= 40);
});

Deno.test("shares follow the weights: within 1 slot, so within 1 % once a row's share is >= 110 slots", () => {
  const rnd = mulberry32(31337);
  const lines: string[] = [];
  // M > 100 N throughout
  for (
    const [M, N] of [[997, 9], [9973, 10], [9973, 50], [9973, 99], [65537, 10], [65537, 100], [65537, 600]]
  ) {
    const params = cParams(M, N);
    let rel = 0, abs = 0;
    for (let rep = 0; rep < 5; rep++) {
      const active = new Int32Array(N).fill(1);
      const w = randomWeights(rnd, N, 1, 10);
      const e = shareError(cWeighted(M, params, active, w), active, w);
      rel = Math.max(rel, e.rel);
      abs = Math.max(abs, e.abs);
      const total = w.reduce((a, b) => a + b, 0);
      const minShare = (M * Math.min(...w)) / total;
      // the bound: about one slot; relative to the row's ideal share
      assert.ok(e.abs <= 1.5, `M=${M} N=${N}: ${e.abs} slots off`);
      if (minShare >= 110) assert.ok(e.rel <= 0.01, `M=${M} N=${N}: ${(e.rel * 100).toFixed(3)} %`);
    }
    lines.push(`M=${M} N=${N}: worst ${(rel * 100).toFixed(3)} % (${abs.toFixed(2)} slots)`);
  }
  // the configurations where every row's share is large are within 1 %
  for (const [M, N] of [[9973, 10], [65537, 10], [65537, 100]]) {
    const params = cParams(M, N);
    for (let rep = 0; rep < 5; rep++) {
      const active = new Int32Array(N).fill(1);
      const w = randomWeights(rnd, N, 1, 10);
      assert.ok(shareError(cWeighted(M, params, active, w), active, w).rel <= 0.01, `M=${M} N=${N}`);
    }
  }
  if (Deno.env.get("NFQLB_VERBOSE")) console.log(lines.join("\n"));
});

Deno.test("changing one weight moves few slots (a small multiple of the share that changes hands)", () => {
  const rnd = mulberry32(2718);
  for (const [M, N] of [[9973, 20], [65537, 10], [65537, 100]]) {
    const params = cParams(M, N);
    const active = new Int32Array(N).fill(1);
    for (let rep = 0; rep < 4; rep++) {
      const w = randomWeights(rnd, N, 1, 10);
      const k = Math.floor(rnd() * N);
      const before = cWeighted(M, params, active, w);
      const w2 = w.slice();
      w2[k]++;
      const after = cWeighted(M, params, active, w2);
      let moved = 0;
      for (let i = 0; i < M; i++) if (before[i] !== after[i]) moved++;
      const W = w.reduce((a, b) => a + b, 0);
      const ideal = (M * w2[k]) / (W + 1) - (M * w[k]) / W;
      assert.ok(
        moved >= ideal - 2 && moved <= 5 * ideal,
        `M=${M} N=${N} row ${k}: moved ${moved}, ideal ${ideal}`,
      );
      // a small fraction of the table in any case
      assert.ok(moved < M * 0.03, `M=${M} N=${N}: moved ${moved}`);
    }
  }
});

Deno.test("weighted population is fast: M=65537 N=1000 in a few ms; skewed weights too", () => {
  const M = 65537, N = 1000;
  const params = cParams(M, N);
  const active = new Int32Array(N).fill(1);
  const rnd = mulberry32(5);
  const skew = new Uint32Array(N).fill(1);
  skew[3] = 65535;
  for (const w of [randomWeights(rnd, N, 1, 10), skew]) {
    const lookup = new Int32Array(M);
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      assert.equal(lib().nfqlb_maglev_populate_weighted(M, N, params, active, w, lookup), 0);
      best = Math.min(best, performance.now() - t0);
    }
    assert.ok(best < 50, `${best} ms`); // ~5 ms on the dev box; loose for loaded CI
    if (w !== skew) assert.ok(shareError(lookup, active, w).abs <= 1.5);
  }
  // skewed: the heavy row gets its share within 0.1 % and each light row about 1 slot (ideal 0.985)
  const lookup = cWeighted(M, params, active, skew);
  const c = counts(lookup, N);
  const W = 65535 + (N - 1);
  assert.ok(Math.abs(c[3] - (M * 65535) / W) / ((M * 65535) / W) < 0.001, `${c[3]}`);
  assert.ok(c.every((n, i) => i === 3 || n <= 2), "light rows");
});

Deno.test("nfqlb_maglev_populate_weighted() rejects bad arguments and weights > 65535", () => {
  const p = cParams(7, 2);
  const lookup = new Int32Array(7);
  const active = new Int32Array([1, 1]);
  assert.equal(lib().nfqlb_maglev_populate_weighted(2, 2, p, active, null, lookup), -1);
  assert.equal(lib().nfqlb_maglev_populate_weighted(7, 0, p, active, null, lookup), -1);
  assert.equal(
    lib().nfqlb_maglev_populate_weighted(7, 2, p, active, new Uint32Array([1, 65536]), lookup),
    -1,
  );
  assert.equal(lib().nfqlb_maglev_populate_weighted(7, 2, p, active, new Uint32Array([1, 65535]), lookup), 0);
});

// ---------------------------------------------------------------------------
// Shared memory and CLI

Deno.test("TargetShm.update passes weights through; snapshot and lookups follow them", () => {
  using sb = libSandbox();
  TargetShm.create("w", { M: 9973, N: 8, ownFwmark: 0 });
  TargetShm.update("w", (a, _t, w) => {
    assert.deepEqual(Array.from(w), [1, 1, 1, 1, 1, 1, 1, 1], "fresh rows weigh 1");
    a.set([101, 102, 103]);
    w.set([1, 3, 0]);
    return true;
  });
  const t = TargetShm.open("w");
  try {
    const s = t.snapshot(9973);
    assert.deepEqual(Array.from(s.weights.subarray(0, 4)), [1, 3, 0, 1]);
    const c = counts(s.lookup, 8);
    assert.deepEqual([c[0] + c[1], c[2]], [9973, 0]);
    assert.ok(Math.abs(c[1] / 9973 - 0.75) < 0.001, `${c}`);
    const params = cParams(9973, 8);
    const want = cWeighted(
      9973,
      params,
      new Int32Array([101, 102, 103, -1, -1, -1, -1, -1]),
      new Uint32Array([1, 3, 0, 1, 1, 1, 1, 1]),
    );
    assert.equal(firstDiff(s.lookup, want), -1);
    for (let h = 0; h < 2000; h++) assert.equal(t.lookup(h * 7919), 101 + want[(h * 7919) % 9973]);
    assert.equal(t.countEmpty(), 0);
  } finally {
    t.close();
  }
  // out of range: nothing is published
  const gen = TargetShm.open("w");
  const g0 = gen.snapshot(0).generation;
  assert.throws(
    () =>
      TargetShm.update("w", (_a, _t, w) => {
        w[1] = 70000;
        return true;
      }),
    (e: unknown) => e instanceof NfqlbError && e.message === "Invalid weight 70000 for row 1 (0..65535)",
  );
  assert.equal(gen.snapshot(0).generation, g0);
  // all drained: no target
  TargetShm.update("w", (_a, _t, w) => {
    w.fill(0);
    return true;
  });
  assert.equal(gen.countEmpty(), 9973);
  assert.equal(gen.lookup(12345), -1);
  gen.close();
  void sb;
});

Deno.test("CLI: activate --weight, show, re-weight, deactivate, bad values", async () => {
  using sb = libSandbox();
  const run = async (...args: string[]) => await nfqlb(args, sb.env);
  assert.equal((await run("init", "--shm=cw", "--M=997", "--N=8")).code, 0);
  assert.deepEqual(await run("activate", "--shm=cw", "101", "102"), { code: 0, stdout: "", stderr: "" });
  const head = "Shm: cw\n  Fw: own=0\n  Maglev: M=997, N=8\n   Lookup: ";
  const active = async () => (await run("show", "--shm=cw")).stdout.split("\n")[4];
  assert.equal(await active(), "   Active: 101(0) 102(1)", "all weights 1: upstream's line");
  assert.deepEqual(await run("activate", "--shm=cw", "--weight=3", "101"), {
    code: 0,
    stdout: "",
    stderr: "",
  });
  const show = await run("show", "--shm=cw");
  assert.ok(show.stdout.startsWith(head), show.stdout);
  assert.equal(show.stdout.split("\n")[4], "   Active: 101(0)w3 102(1)");
  // shares 3:1
  const t = TargetShm.open("cw");
  const c = counts(t.snapshot(997).lookup, 8);
  t.close();
  assert.ok(Math.abs(c[0] - 997 * 0.75) <= 1.5 && c[0] + c[1] === 997, `${c}`);
  // a new fwmark with --weight; --index with --weight; a plain re-activate keeps the weight
  assert.equal((await run("activate", "--shm=cw", "--weight=0", "103")).code, 0);
  assert.equal((await run("activate", "--shm=cw", "--index=5", "--weight=7", "200")).code, 0);
  assert.equal((await run("activate", "--shm=cw", "101", "200")).code, 0);
  assert.equal(await active(), "   Active: 101(0)w3 102(1) 103(2)w0 200(5)w7");
  assert.equal((await run("activate", "--shm=cw", "--index=5", "201")).code, 0, "another fwmark: weight 1");
  assert.equal(await active(), "   Active: 101(0)w3 102(1) 103(2)w0 201(5)");
  // deactivate frees the weight; the next fwmark in that row gets 1
  assert.equal((await run("deactivate", "--shm=cw", "101")).code, 0);
  assert.equal((await run("activate", "--shm=cw", "104")).code, 0);
  assert.equal(await active(), "   Active: 104(0) 102(1) 103(2)w0 201(5)");
  assert.equal((await run("activate", "--shm=cw", "--weight=1", "103")).code, 0);
  assert.equal(await active(), "   Active: 104(0) 102(1) 103(2) 201(5)");
  // bad values: one line naming the value, exit 1, no change
  for (const v of ["-1", "abc", "65536", "", "1.5"]) {
    const before = sb.bytes("cw")!;
    const r = await run("activate", "--shm=cw", `--weight=${v}`, "102");
    assert.deepEqual(
      [r.code, r.stdout, r.stderr],
      [1, "", `activate: invalid --weight value '${v}' (expected an integer 0..65535)\n`],
      v,
    );
    assert.deepEqual(sb.bytes("cw"), before, `--weight=${v} changed the shm`);
  }
  // ours: help shows it after upstream's text; no abbreviation matches it
  const help = await run("activate", "--help");
  assert.ok(help.stdout.indexOf("--weight=W") > help.stdout.indexOf("nfqlb-deno options"), help.stdout);
  const abbrev = await run("activate", "--shm=cw", "--wei=2", "102");
  assert.equal(abbrev.code, 1);
});

/** A v1 table (no weights): 64 + 8N + 8(N+M) bytes, version 1. */
function v1Table(M: number, N: number): Uint8Array {
  const size = 64 + 8 * N + 8 * (N + M);
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x424c514e, true);
  v.setUint16(4, 1, true);
  v.setUint16(6, 64, true);
  v.setBigUint64(8, BigInt(size), true);
  v.setUint32(16, M, true);
  v.setUint32(20, N, true);
  b.set(new Uint8Array(cParams(M, N).buffer), 64);
  b.fill(0xff, 64 + 8 * N);
  return b;
}

Deno.test("a v1 table (before weights) is refused with a line naming nfqlb init, and init replaces it", async () => {
  using sb = libSandbox();
  Deno.writeFileSync(sb.path("old"), v1Table(997, 32));
  const line =
    "FAILED mapSharedData: old: unsupported table version 1 (older nfqlb-deno); re-create it with: nfqlb init --shm=old";
  for (
    const args of [["show", "--shm=old"], ["activate", "--shm=old", "5"], [
      "activate",
      "--shm=old",
      "--weight=2",
      "5",
    ]]
  ) {
    const r = await nfqlb(args, sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", line + "\n"], args.join(" "));
  }
  assert.throws(() => TargetShm.open("old"), (e: unknown) => e instanceof NfqlbError && e.message === line);
  const init = await nfqlb(["init", "--shm=old", "--M=997", "--N=32"], sb.env);
  assert.deepEqual([init.code, init.stdout, init.stderr], [0, "", ""]);
  assert.equal(new DataView(sb.bytes("old")!.buffer).getUint16(4, true), 2);
  assert.equal((await nfqlb(["activate", "--shm=old", "--weight=2", "5"], sb.env)).code, 0);
  assert.equal((await nfqlb(["show", "--shm=old"], sb.env)).stdout.split("\n")[4], "   Active: 5(0)w2");
});
