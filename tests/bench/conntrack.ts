/**
 * Bench section `conntrack`: the connection table (c/ct.c) at 1 M
 * entries, in a shm file (temp NFQLB_SHM_DIR under /dev/shm) of capacity
 * 1.25 Mi entries (1 M fill 76 % of it; 8-way buckets then overflow now and
 * then, so the fill recycles a little).
 *
 * C loops (c/bench/ct_loops.c, built here into bench-results/, keys built on
 * the fly, one FFI call per loop):
 *   - insert: the fill, 1 M new keys into the empty table (ns per insert);
 *   - insert at 1 M: 200 000 more new keys into the full-ish table (each
 *     may recycle the entry closest to expiry of its bucket);
 *   - lookup: 2 M lookups of the 1 M keys in a scattered order (every
 *     lookup a different bucket: cache misses, as live traffic);
 *   - key building alone, for context (included in the two above).
 *   - batched (the same run, the same table, interleaved rep by rep):
 *     nfqlb_ct_lookup_batch with 16/32/64 keys per call over the same
 *     scattered walk; nfqlb_ct_prefetch of key i + 8 (and of the whole batch
 *     of 64 first) before nfqlb_ct_lookup of key i; nfqlb_ct_insert_batch of
 *     200 000 new keys at 1 M with 16/32/64 per call; and the 0 -> 1 M fill
 *     with 64 per call (a second table);
 *   - the dataplane's decision (nfqlb_lb_decide on 40-byte IPv4 TCP packets of
 *     1 M flows, 64 per batch, a third table): without prefetching, with
 *     nfqlb_lb_prefetch of packet i + 8 (what nfqlb_queue_serve does), with
 *     the whole batch prefetched first, and the same decide without a table.
 * Speed-ups are the median of the per-rep ratios (paired in one rep).
 * Through FFI (libnfqlb.so opened with the key as a raw pointer, as
 * tests/bench/flows.ts): lookups of 65 536 of the keys, and inserts of
 * 65 536 new keys, from a JS loop. Baseline: an empty FFI call.
 * Memory: the file size for 4 M entries (4 000 000 and 4 Mi), no contexts.
 *
 * Goals (issue): lookup <= 60 ns and insert <= 150 ns in C at 1 M entries;
 * 4 M entries in <= 256 MiB.
 */
import { lib, libraryPath } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import { ConntrackShm } from "../../core/conntrack_shm.ts";
import { ownPath } from "../../core/shm_dir.ts";
import type { SectionResult } from "./lookup.ts";
import { type Goal, goal, type Row, summarize, timeMs } from "./report.ts";
import { ROOT } from "../harness/paths.ts";
import { NFQLB_KEY_LEN } from "../../ffi/consts.ts";

const N = 1_000_000, CAP = 1_310_720, MORE = 200_000, LOOKUPS = 2_000_000, FFI_KEYS = 65_536, REPS = 5;
const NOW = 1_000_000_000_000n; // virtual time: nothing expires during the bench
const BATCHES = [16, 32, 64] as const;
/** The prefetch distance of queue.c's pre-pass (PREFETCH_DIST there). */
const DIST = 8;
/** The decide part: packets per timed loop, and the target table (as the classify bench). */
const DECIDE_ITERS = 1_000_000, M = 9973, TARGETS = 10;

const LOOP_SYMBOLS = {
  bench_ct_key: { parameters: ["u32", "buffer"], result: "void" },
  bench_ct_insert_loop: { parameters: ["pointer", "u32", "u32", "u64"], result: "u32" },
  bench_ct_lookup_loop: { parameters: ["pointer", "u32", "u32", "u64"], result: "u32" },
  bench_ct_key_loop: { parameters: ["u32", "u32"], result: "u32" },
  bench_ct_lookup_batch_loop: { parameters: ["pointer", "u32", "u32", "u32", "u64"], result: "u32" },
  bench_ct_prefetch_lookup_loop: {
    parameters: ["pointer", "u32", "u32", "u32", "u32", "u64"],
    result: "u32",
  },
  bench_ct_insert_batch_loop: { parameters: ["pointer", "u32", "u32", "u32", "u64"], result: "u32" },
  bench_ct_decide_loop: {
    parameters: ["pointer", "u32", "u32", "u32", "u32", "u64", "buffer"],
    result: "u64",
  },
} as const satisfies Deno.ForeignLibraryInterface;

const PTR_SYMBOLS = {
  lookup: {
    name: "nfqlb_ct_lookup",
    parameters: ["pointer", "pointer", "u64", "u32", "pointer"],
    result: "i32",
  },
  insert: { name: "nfqlb_ct_insert", parameters: ["pointer", "pointer", "i32", "i32", "u64"], result: "i32" },
  empty: { name: "nfqlb_prime_below", parameters: ["u32"], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

type PtrSymbols = Deno.DynamicLibrary<typeof PTR_SYMBOLS>["symbols"];

async function openLoops(root: string, outDir: string): Promise<Deno.DynamicLibrary<typeof LOOP_SYMBOLS>> {
  Deno.mkdirSync(outDir, { recursive: true });
  const so = `${outDir}/libnfqlb_ctbench-${Deno.pid}.so`;
  const libDir = `${root}/c/build`;
  const args = ["-O2", "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-o", so];
  args.push(`${root}/c/bench/ct_loops.c`, `-L${libDir}`, `-Wl,-rpath,${libDir}`, "-lnfqlb");
  try {
    const r = await new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).output();
    if (!r.success) throw new Error(`gcc failed building ct_loops.c:\n${new TextDecoder().decode(r.stderr)}`);
    return Deno.dlopen(so, LOOP_SYMBOLS);
  } finally {
    try {
      Deno.removeSync(so);
    } catch { /* never written */ }
  }
}

/** One function per FFI loop, so each call site stays monomorphic (see flows.ts). */
function lookupLoop(
  P: PtrSymbols,
  base: Deno.PointerValue,
  kptr: Deno.PointerValue[],
  row: Deno.PointerValue,
) {
  let hits = 0;
  for (let i = 0; i < kptr.length; i++) hits += P.lookup(base, kptr[i], NOW, 100, row) >= 0 ? 1 : 0;
  return hits;
}
function insertLoop(P: PtrSymbols, base: Deno.PointerValue, kptr: Deno.PointerValue[]) {
  let ok = 0;
  for (let i = 0; i < kptr.length; i++) ok += P.insert(base, kptr[i], 100, 0, NOW) === 0 ? 1 : 0;
  return ok;
}
function emptyLoop(P: PtrSymbols, n: number) {
  let acc = 0;
  for (let i = 0; i < n; i++) acc += P.empty(0);
  return acc;
}

/**
 * Runs the conntrack bench.
 * @param root the repository root (for c/bench/ct_loops.c and c/build)
 * @param outDir where the C loop library is built (default root/bench-results)
 */
export async function benchConntrack(root: string, outDir = `${root}/bench-results`): Promise<SectionResult> {
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-bench-ct-" });
  const before = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", dir);
  const loops = await openLoops(root, outDir);
  const ptr = Deno.dlopen(libraryPath(), PTR_SYMBOLS);
  try {
    return measure(loops.symbols, ptr.symbols);
  } finally {
    loops.close();
    ptr.close();
    if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
}

function keyPointers(C: LoopSymbols, first: number, n: number) {
  const flat = new Uint8Array(n * NFQLB_KEY_LEN);
  const one = new Uint8Array(NFQLB_KEY_LEN);
  for (let i = 0; i < n; i++) {
    C.bench_ct_key(first + i, one);
    flat.set(one, i * NFQLB_KEY_LEN);
  }
  const base = Deno.UnsafePointer.of(flat)!;
  const ptrs: Deno.PointerValue[] = [];
  for (let i = 0; i < n; i++) ptrs.push(Deno.UnsafePointer.offset(base, i * 40));
  return { flat, ptrs };
}

type LoopSymbols = Deno.DynamicLibrary<typeof LOOP_SYMBOLS>["symbols"];

/** ns per operation of one timed call. */
function nsPer(ms: number, n: number): number {
  return (ms * 1e6) / n;
}

/** Median over reps of a / b (paired: both measured in the same rep). */
function pairedRatio(a: number[], b: number[]): number {
  return summarize(a.map((v, i) => b[i] / v)).median;
}

/**
 * The dataplane's decision at 1 M flows: a target table (M=9973, 10 targets),
 * one lb classifier with the connection table and one without, IPv4 TCP
 * packets of flows 0..N-1 in the scattered order, 64 per batch. Pushes ns per
 * packet into samples (decide, decidePf, decideAll, decideNoCt); returns
 * whether every variant gave the same fwmarks and the table's hit ratio in
 * the timed loops.
 */
function measureDecide(
  C: LoopSymbols,
  ctName: string,
  samples: Record<string, number[]>,
  keep: boolean,
): { same: boolean; hitRatio: number } {
  const L = lib();
  TargetShm.create(`${ctName}-t`, { M, N: 100, ownFwmark: 0 });
  TargetShm.update(`${ctName}-t`, (active) => {
    for (let i = 0; i < TARGETS; i++) active[i] = 101 + i;
    return true;
  });
  const table = TargetShm.open(`${ctName}-t`);
  ConntrackShm.create(ctName, { capacity: CAP, floodPerSecond: 0, replace: true });
  const ct = ConntrackShm.open(ctName);
  const withCt = L.nfqlb_lb_create(table.pointer, null, 1, 0, -1);
  const noCt = L.nfqlb_lb_create(table.pointer, null, 1, 0, -1);
  const counters = new BigUint64Array(COUNTER_NAMES.length);
  try {
    if (withCt === null || noCt === null) {
      throw new Error("conntrack bench: cannot create the lb classifiers");
    }
    L.nfqlb_lb_set_conntrack(withCt, ct.pointer);
    C.bench_ct_decide_loop(withCt, N, N, 64, 0, NOW, counters); // every flow enters the table
    const before = ct.stats();
    const sums: bigint[] = [];
    const run = (lb: Deno.PointerValue, dist: number) =>
      timeMs(() => void sums.push(C.bench_ct_decide_loop(lb, N, DECIDE_ITERS, 64, dist, NOW, counters)));
    const plain = run(withCt, 0), pf = run(withCt, DIST), all = run(withCt, 64), none = run(noCt, 0);
    const after = ct.stats();
    if (keep) {
      samples.decide.push(nsPer(plain, DECIDE_ITERS));
      samples.decidePf.push(nsPer(pf, DECIDE_ITERS));
      samples.decideAll.push(nsPer(all, DECIDE_ITERS));
      samples.decideNoCt.push(nsPer(none, DECIDE_ITERS));
    }
    const hits = after.hits - before.hits, misses = after.misses - before.misses;
    return { same: sums.every((v) => v === sums[0]) && sums[0] > 0n, hitRatio: hits / (hits + misses) };
  } finally {
    if (withCt !== null) L.nfqlb_lb_destroy(withCt);
    if (noCt !== null) L.nfqlb_lb_destroy(noCt);
    ct.close();
    table.close();
    const dir = Deno.env.get("NFQLB_SHM_DIR");
    Deno.removeSync(ownPath(ctName));
    Deno.removeSync(`${dir}/${ctName}-t`);
  }
}

function measure(C: LoopSymbols, P: PtrSymbols): SectionResult {
  const names = [
    "fill",
    "fillBatch",
    "more",
    ...BATCHES.map((b) => `more${b}`),
    "lookup",
    ...BATCHES.map((b) => `lookup${b}`),
    "lookupPf",
    "lookupPfAll",
    "keys",
    "ffiLookup",
    "ffiInsert",
    "empty",
    "decide",
    "decidePf",
    "decideAll",
    "decideNoCt",
  ];
  const samples: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const checks: Record<string, boolean> = {};
  let fillOk = true, lookupOk = true, batchOk = true, ffiOk = true, decideOk = true, recycles = 0, sink = 0;
  let hitRatio = 0;
  const row = new Int32Array(1), rowPtr = Deno.UnsafePointer.of(row);
  const lookKeys = keyPointers(C, 0, FFI_KEYS);
  for (let r = 0; r <= REPS; r++) {
    const name = `bench-${r}`;
    const keep = r > 0; // rep 0 is the warm-up
    ConntrackShm.create(name, { capacity: CAP, floodPerSecond: 0, replace: true });
    const ct = ConntrackShm.open(name);
    try {
      const base = ct.pointer;
      let filled = 0;
      const fill = timeMs(() => void (filled = C.bench_ct_insert_loop(base, 0, N, NOW)));
      if (filled !== N) fillOk = false;
      const more = timeMs(() => void (sink += C.bench_ct_insert_loop(base, 1 << 24, MORE, NOW)));
      // the extra keys recycled some of the first million: look those up where they still are
      let hits = 0;
      const look = timeMs(() => void (hits = C.bench_ct_lookup_loop(base, N, LOOKUPS, NOW)));
      // the batched walks must find exactly what the single one found (nothing changed in between)
      const batched: Record<string, number> = {};
      for (const b of BATCHES) {
        let h = 0;
        batched[`lookup${b}`] = timeMs(() =>
          void (h = C.bench_ct_lookup_batch_loop(base, N, LOOKUPS, b, NOW))
        );
        if (h !== hits) batchOk = false;
      }
      for (const [k, dist] of [["lookupPf", DIST], ["lookupPfAll", 64]] as const) {
        let h = 0;
        batched[k] = timeMs(() =>
          void (h = C.bench_ct_prefetch_lookup_loop(base, N, LOOKUPS, 64, dist, NOW))
        );
        if (h !== hits) batchOk = false;
      }
      const keys = timeMs(() => void (sink += C.bench_ct_key_loop(N, LOOKUPS)));
      const s = ct.stats();
      recycles = s.recycles;
      // every key still in the table hits; the misses are exactly the recycled ones
      if (hits < LOOKUPS * (1 - (s.recycles + 1) / N) - 1000) lookupOk = false;
      // new keys at 1 M, batched: each size its own range of new keys, after the single-key ones
      BATCHES.forEach((b, i) => {
        let ok = 0;
        batched[`more${b}`] = timeMs(() =>
          void (ok = C.bench_ct_insert_batch_loop(base, (1 << 24) + (i + 1) * MORE, MORE, b, NOW))
        );
        if (ok !== MORE) batchOk = false;
      });
      const ins = keyPointers(C, (1 << 25) + r * FFI_KEYS, FFI_KEYS);
      lookupLoop(P, base, lookKeys.ptrs.slice(0, 2000), rowPtr); // warm-up
      let fh = 0, fi = 0;
      const fl = timeMs(() => void (fh = lookupLoop(P, base, lookKeys.ptrs, rowPtr)));
      const fins = timeMs(() => void (fi = insertLoop(P, base, ins.ptrs)));
      if (fh < FFI_KEYS * 0.8 || fi !== FFI_KEYS) ffiOk = false; // ~10 % of the keys were recycled
      const emp = timeMs(() => void (sink += emptyLoop(P, FFI_KEYS)));
      if (keep) {
        samples.fill.push(nsPer(fill, N));
        samples.more.push(nsPer(more, MORE));
        samples.lookup.push(nsPer(look, LOOKUPS));
        samples.keys.push(nsPer(keys, LOOKUPS));
        samples.ffiLookup.push(nsPer(fl, FFI_KEYS));
        samples.ffiInsert.push(nsPer(fins, FFI_KEYS));
        samples.empty.push(nsPer(emp, FFI_KEYS));
        for (const [k, ms] of Object.entries(batched)) {
          samples[k].push(nsPer(ms, k.startsWith("more") ? MORE : LOOKUPS));
        }
      }
    } finally {
      ct.close();
      Deno.removeSync(ownPath(name)); // tables live in our own directory (core/shm_dir.ts)
    }
    // the fill with 64 keys per call, into a fresh table (one table at a time in /dev/shm)
    ConntrackShm.create(name, { capacity: CAP, floodPerSecond: 0, replace: true });
    const ct2 = ConntrackShm.open(name);
    try {
      let filled = 0;
      const fb = timeMs(() => void (filled = C.bench_ct_insert_batch_loop(ct2.pointer, 0, N, 64, NOW)));
      if (filled !== N) batchOk = false;
      if (keep) samples.fillBatch.push(nsPer(fb, N));
    } finally {
      ct2.close();
      Deno.removeSync(ownPath(name)); // tables live in our own directory (core/shm_dir.ts)
    }
    const d = measureDecide(C, `${name}-dp`, samples, keep);
    if (!d.same) decideOk = false;
    hitRatio = d.hitRatio;
  }
  if (sink === 0.5) console.log("");
  checks["conntrack: the 1 M fill inserted every key"] = fillOk;
  checks["conntrack: lookups find every key not recycled, with its fwmark"] = lookupOk;
  checks["conntrack: batched lookups find what single lookups find; batched inserts all succeed"] = batchOk;
  checks["conntrack: FFI lookups hit (but the recycled keys) and FFI inserts succeed"] = ffiOk;
  checks["conntrack: decide gives the same fwmarks with and without prefetching (and without a table)"] =
    decideOk;

  const c = `1 M entries, capacity ${CAP}`;
  const x = (name: string, base: string) => `${pairedRatio(samples[name], samples[base]).toFixed(2)}x`;
  const row_ = (name: string, subject: string, unit = "ns/op", ours = true, cs = c): Row => ({
    section: "conntrack",
    case: cs,
    subject,
    unit,
    stats: summarize(samples[name]),
    ours,
  });
  const mib = (n: number) => ConntrackShm.bytes(n, 0) / 2 ** 20;
  const mem = (n: number, label: string): Row => ({
    section: "conntrack",
    case: label,
    subject: `file size, no contexts (${(ConntrackShm.bytes(n, 0) / n).toFixed(2)} B/entry)`,
    unit: "MiB",
    stats: summarize([mib(n)]),
    ours: true,
  });
  const dp = `decide, 1 M flows, batch 64 (hits ${(hitRatio * 100).toFixed(1)} %)`;
  const rows: Row[] = [
    row_("fill", "nfqlb_ct_insert, C loop, fill 0 -> 1 M"),
    row_("fillBatch", `nfqlb_ct_insert_batch 64/call, fill 0 -> 1 M (${x("fillBatch", "fill")} faster)`),
    row_("more", `nfqlb_ct_insert, C loop, new keys at 1 M (${recycles} recycles in the last run)`),
    ...BATCHES.map((b) =>
      row_(`more${b}`, `nfqlb_ct_insert_batch ${b}/call, new keys at 1 M (${x(`more${b}`, "more")} faster)`)
    ),
    row_("lookup", "nfqlb_ct_lookup, C loop, scattered hits"),
    ...BATCHES.map((b) =>
      row_(
        `lookup${b}`,
        `nfqlb_ct_lookup_batch ${b}/call, the same walk (${x(`lookup${b}`, "lookup")} faster)`,
      )
    ),
    row_("lookupPf", `nfqlb_ct_prefetch key i+${DIST}, then lookup i (${x("lookupPf", "lookup")} faster)`),
    row_("lookupPfAll", `nfqlb_ct_prefetch all 64, then 64 lookups (${x("lookupPfAll", "lookup")} faster)`),
    row_("keys", "key building alone (included above)", "ns/op", false),
    row_("ffiLookup", "nfqlb_ct_lookup, pointers, FFI (64 Ki keys)"),
    row_("ffiInsert", "nfqlb_ct_insert, pointers, FFI (64 Ki new keys)"),
    row_("empty", "empty FFI call", "ns/op", false),
    row_("decide", "nfqlb_lb_decide with the table, no prefetch", "ns/pkt", true, dp),
    row_(
      "decidePf",
      `the same, nfqlb_lb_prefetch pkt i+${DIST} first (as lb) (${x("decidePf", "decide")} faster)`,
      "ns/pkt",
      true,
      dp,
    ),
    row_(
      "decideAll",
      `the same, all 64 prefetched first (${x("decideAll", "decide")} faster)`,
      "ns/pkt",
      true,
      dp,
    ),
    row_("decideNoCt", "nfqlb_lb_decide without a table (Maglev only)", "ns/pkt", false, dp),
    mem(4_000_000, "4 000 000 entries"),
    mem(4 * 2 ** 20, "4 Mi entries"),
    mem(1 * 2 ** 20, "1 Mi entries"),
  ];
  const med = (n: string) => summarize(samples[n]).median;
  const bestLookup = Math.min(...BATCHES.map((b) => med(`lookup${b}`)));
  const bestInsert = Math.min(...BATCHES.map((b) => med(`more${b}`)));
  const goals: Goal[] = [
    goal("conntrack lookup in C at 1 M entries <= 60 ns (single key)", med("lookup"), 60, "ns"),
    goal(
      "conntrack insert in C at 1 M entries <= 150 ns (single key)",
      Math.max(med("fill"), med("more")),
      150,
      "ns",
    ),
    goal("conntrack lookup in C at 1 M entries <= 60 ns (best batch)", bestLookup, 60, "ns"),
    goal(
      "conntrack insert in C at 1 M entries <= 150 ns (batch; max of fill 64/call and best at 1 M)",
      Math.max(med("fillBatch"), bestInsert),
      150,
      "ns",
    ),
    goal("conntrack 4 M (4 000 000) entries <= 256 MiB", mib(4_000_000), 256, "MiB"),
  ];
  return { rows, goals, checks };
}

if (import.meta.main) {
  const r = await benchConntrack(ROOT);
  for (const row of r.rows) {
    console.log(
      `${row.subject.padEnd(70)} ${row.stats.median.toFixed(1).padStart(8)} ${row.unit}  ${row.case}`,
    );
  }
  for (const g of r.goals) {
    console.log(`${g.pass ? "PASS" : "MISS"} ${g.text}: ${g.value.toFixed(1)} ${g.unit}`);
  }
  for (const [k, v] of Object.entries(r.checks)) console.log(`${v ? "ok  " : "FAIL"} ${k}`);
}
