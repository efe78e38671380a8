/**
 * Bench section `conntrack`: the connection table (c/conntrack.c) at 1 M
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
 * Through FFI (libnfqlb.so opened with the key as a raw pointer, as
 * tests/bench/flows.ts): lookups of 65 536 of the keys, and inserts of
 * 65 536 new keys, from a JS loop. Baseline: an empty FFI call.
 * Memory: the file size for 4 M entries (4 000 000 and 4 Mi), no contexts.
 *
 * Goals (issue): lookup <= 60 ns and insert <= 150 ns in C at 1 M entries;
 * 4 M entries in <= 256 MiB.
 */
import { libraryPath } from "../../ffi/lib.ts";
import { ConntrackShm } from "../../control/conntrack_shm.ts";
import type { SectionResult } from "./lookup.ts";
import { type Goal, goal, type Row, summarize, timeMs } from "./report.ts";

const N = 1_000_000, CAP = 1_310_720, MORE = 200_000, LOOKUPS = 2_000_000, FFI_KEYS = 65_536, REPS = 5;
const NOW = 1_000_000_000_000n; // virtual time: nothing expires during the bench

const LOOP_SYMBOLS = {
  bench_ct_key: { parameters: ["u32", "buffer"], result: "void" },
  bench_ct_insert_loop: { parameters: ["pointer", "u32", "u32", "u64"], result: "u32" },
  bench_ct_lookup_loop: { parameters: ["pointer", "u32", "u32", "u64"], result: "u32" },
  bench_ct_key_loop: { parameters: ["u32", "u32"], result: "u32" },
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

function keyPointers(C: Deno.DynamicLibrary<typeof LOOP_SYMBOLS>["symbols"], first: number, n: number) {
  const flat = new Uint8Array(n * 40);
  const one = new Uint8Array(40);
  for (let i = 0; i < n; i++) {
    C.bench_ct_key(first + i, one);
    flat.set(one, i * 40);
  }
  const base = Deno.UnsafePointer.of(flat)!;
  const ptrs: Deno.PointerValue[] = [];
  for (let i = 0; i < n; i++) ptrs.push(Deno.UnsafePointer.offset(base, i * 40));
  return { flat, ptrs };
}

function measure(
  C: Deno.DynamicLibrary<typeof LOOP_SYMBOLS>["symbols"],
  P: PtrSymbols,
): SectionResult {
  const samples: Record<string, number[]> = {
    fill: [],
    more: [],
    lookup: [],
    keys: [],
    ffiLookup: [],
    ffiInsert: [],
    empty: [],
  };
  const checks: Record<string, boolean> = {};
  let fillOk = true, lookupOk = true, ffiOk = true, recycles = 0, sink = 0;
  const row = new Int32Array(1), rowPtr = Deno.UnsafePointer.of(row);
  const lookKeys = keyPointers(C, 0, FFI_KEYS);
  for (let r = 0; r <= REPS; r++) {
    const name = `bench-${r}`;
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
      const keys = timeMs(() => void (sink += C.bench_ct_key_loop(N, LOOKUPS)));
      const s = ct.stats();
      recycles = s.recycles;
      // every key still in the table hits; the misses are exactly the recycled ones
      if (hits < LOOKUPS * (1 - (s.recycles + 1) / N) - 1000) lookupOk = false;
      const ins = keyPointers(C, (1 << 25) + r * FFI_KEYS, FFI_KEYS);
      lookupLoop(P, base, lookKeys.ptrs.slice(0, 2000), rowPtr); // warm-up
      let fh = 0, fi = 0;
      const fl = timeMs(() => void (fh = lookupLoop(P, base, lookKeys.ptrs, rowPtr)));
      const fins = timeMs(() => void (fi = insertLoop(P, base, ins.ptrs)));
      if (fh < FFI_KEYS * 0.8 || fi !== FFI_KEYS) ffiOk = false; // ~10 % of the keys were recycled
      const emp = timeMs(() => void (sink += emptyLoop(P, FFI_KEYS)));
      if (r === 0) continue; // warm-up
      samples.fill.push((fill * 1e6) / N);
      samples.more.push((more * 1e6) / MORE);
      samples.lookup.push((look * 1e6) / LOOKUPS);
      samples.keys.push((keys * 1e6) / LOOKUPS);
      samples.ffiLookup.push((fl * 1e6) / FFI_KEYS);
      samples.ffiInsert.push((fins * 1e6) / FFI_KEYS);
      samples.empty.push((emp * 1e6) / FFI_KEYS);
    } finally {
      ct.close();
      Deno.removeSync(`${Deno.env.get("NFQLB_SHM_DIR")}/${name}`);
    }
  }
  if (sink === 0.5) console.log("");
  checks["conntrack: the 1 M fill inserted every key"] = fillOk;
  checks["conntrack: lookups find every key not recycled, with its fwmark"] = lookupOk;
  checks["conntrack: FFI lookups hit (but the recycled keys) and FFI inserts succeed"] = ffiOk;

  const c = `1 M entries, capacity ${CAP}`;
  const row_ = (name: string, subject: string, unit = "ns/op", ours = true): Row => ({
    section: "conntrack",
    case: c,
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
  const rows: Row[] = [
    row_("fill", "nfqlb_ct_insert, C loop, fill 0 -> 1 M"),
    row_("more", `nfqlb_ct_insert, C loop, new keys at 1 M (${recycles} recycles in the last run)`),
    row_("lookup", "nfqlb_ct_lookup, C loop, scattered hits"),
    row_("keys", "key building alone (included above)", "ns/op", false),
    row_("ffiLookup", "nfqlb_ct_lookup, pointers, FFI (64 Ki keys)"),
    row_("ffiInsert", "nfqlb_ct_insert, pointers, FFI (64 Ki new keys)"),
    row_("empty", "empty FFI call", "ns/op", false),
    mem(4_000_000, "4 000 000 entries"),
    mem(4 * 2 ** 20, "4 Mi entries"),
    mem(1 * 2 ** 20, "1 Mi entries"),
  ];
  const med = (n: string) => summarize(samples[n]).median;
  const goals: Goal[] = [
    goal("conntrack lookup in C at 1 M entries <= 60 ns", med("lookup"), 60, "ns"),
    goal("conntrack insert in C at 1 M entries <= 150 ns", Math.max(med("fill"), med("more")), 150, "ns"),
    goal("conntrack 4 M (4 000 000) entries <= 256 MiB", mib(4_000_000), 256, "MiB"),
  ];
  return { rows, goals, checks };
}

if (import.meta.main) {
  const root = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
  const r = await benchConntrack(root);
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
