/**
 * Bench (b): hash + lookup per key through FFI, the per-packet work of the
 * dataplane once a key is built.
 *
 * Ours: a JS loop that, for each prebuilt 40-byte key, calls
 * lib().nfqlb_hash_key and then lib().nfqlb_tshm_lookup on a real target shm
 * (in a temp directory under /dev/shm, with some targets active).
 * Baselines: the same loop with one empty FFI call (nfqlb_prime_below(0)),
 * and djb2 over the key in plain JS. For context: the library API
 * (hashKey + TargetShm.lookup), the same work as a loop inside C, and two
 * variants that need no new algorithm: the key passed as a raw pointer
 * instead of a "buffer", hash and lookup folded into one call
 * (c/bench/c_loops.c), and that with a djb2 that takes 8 bytes per step
 * (same values).
 */
import { lib } from "../../ffi/lib.ts";
import { buildKey, hashKey, KEY_LEN } from "../../core/key.ts";
import { TargetShm } from "../../core/target_shm.ts";
import type { BenchLib, PointerLib } from "./c_baseline.ts";
import { type Goal, goal, type Row, summarize, timeMs } from "./report.ts";

/** Keys per set (a power of two) and calls per timed repetition. */
const NKEYS = 4096, ITERS = 1_000_000, REPS = 7;
/** Meridio's table: init --M=10000 --N=100 (M becomes 9973), 10 targets active. */
const M = 9973, N = 100, TARGETS = 10;

interface Keys {
  /** One Uint8Array (own ArrayBuffer) per key. */
  keys: Uint8Array<ArrayBuffer>[];
  /** The raw address of each key's bytes. */
  ptrs: Deno.PointerValue[];
  /** All keys back to back, for the C loop. */
  flat: Uint8Array<ArrayBuffer>;
}

function makeKeys(): Keys {
  const flat = new Uint8Array(NKEYS * KEY_LEN);
  const keys: Uint8Array<ArrayBuffer>[] = [];
  let seed = 12345;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16;
  const v4 = (c: number, d: number) =>
    new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, c, d]);
  for (let k = 0; k < NKEYS; k++) {
    const key = buildKey(
      v4(rnd() & 0xff, rnd() & 0xff),
      v4(0, 1),
      k & 1 ? 17 : 6,
      1024 + (rnd() & 0x7fff),
      80,
    );
    flat.set(key, k * KEY_LEN);
    keys.push(new Uint8Array(key));
  }
  return { keys, ptrs: keys.map((k) => Deno.UnsafePointer.of(k)), flat };
}

/** djb2 in JS, as upstream: h = h*33 + byte, 32-bit. */
export function djb2(b: Uint8Array): number {
  let h = 5381;
  for (let i = 0; i < b.length; i++) h = (Math.imul(h, 33) + b[i]) >>> 0;
  return h;
}

/** What a bench section returns. */
export interface SectionResult {
  /** Table rows. */
  rows: Row[];
  /** Goals with PASS/MISS. */
  goals: Goal[];
  /** Correctness checks (name → ok). */
  checks: Record<string, boolean>;
}

/**
 * Runs the lookup bench. The temp shm directory is set through
 * NFQLB_SHM_DIR for the duration and removed afterwards.
 */
export function benchLookup(bench: BenchLib, ptrLib: PointerLib): SectionResult {
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-bench-" });
  const before = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", dir);
  try {
    TargetShm.create("bench", { M, N, ownFwmark: 0 });
    TargetShm.update("bench", (active) => {
      for (let i = 0; i < TARGETS; i++) active[i] = 101 + i;
      return true;
    });
    const t = TargetShm.open("bench");
    try {
      return measure(bench, ptrLib, t);
    } finally {
      t.close();
    }
  } finally {
    if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
}

function measure(bench: BenchLib, ptrLib: PointerLib, t: TargetShm): SectionResult {
  const L = lib(), B = bench.symbols, P = ptrLib.symbols;
  const base = t.pointer;
  const { keys, ptrs, flat } = makeKeys();
  const mask = NKEYS - 1;
  let sink = 0;
  const loops: Record<string, () => void> = {
    key: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) acc += L.nfqlb_tshm_lookup_key(base, ptrs[i & mask], KEY_LEN, 1);
      sink += acc;
    },
    ffi: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) {
        const h = L.nfqlb_hash_key(keys[i & mask], KEY_LEN, 1);
        acc += L.nfqlb_tshm_lookup(base, h);
      }
      sink += acc;
    },
    empty: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) acc += L.nfqlb_prime_below(0);
      sink += acc;
    },
    js: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) acc += djb2(keys[i & mask]);
      sink += acc;
    },
    api: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) acc += t.lookup(hashKey(keys[i & mask], 1));
      sink += acc;
    },
    c: () => {
      sink += B.bench_c_hash_lookup(flat, NKEYS, ITERS, base);
    },
    ptr: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) {
        const h = P.nfqlb_hash_key(ptrs[i & mask], KEY_LEN, 1);
        acc += P.nfqlb_tshm_lookup(base, h);
      }
      sink += acc;
    },
    one: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) acc += B.bench_hash_lookup(base, ptrs[i & mask], KEY_LEN);
      sink += acc;
    },
    x8: () => {
      let acc = 0;
      for (let i = 0; i < ITERS; i++) acc += B.bench_hash_lookup_x8(base, ptrs[i & mask], KEY_LEN);
      sink += acc;
    },
  };
  const samples: Record<string, number[]> = {};
  for (const name of Object.keys(loops)) {
    samples[name] = [];
    loops[name](); // warm-up: JIT and fast-call paths
  }
  for (let r = 0; r < REPS; r++) {
    // interleaved so that all loops see the same stretch of machine noise
    for (const [name, fn] of Object.entries(loops)) samples[name].push(timeMs(fn) * 1e6 / ITERS);
  }
  // sanity: the C hashes equal JS djb2, every key finds a target, the variants agree
  let hashOk = true, allFound = true, variantsOk = true;
  keys.forEach((k, i) => {
    const h = djb2(k), fw = L.nfqlb_tshm_lookup(base, h);
    if (L.nfqlb_hash_key(k, KEY_LEN, 1) !== h) hashOk = false;
    if (L.nfqlb_tshm_lookup_key(base, ptrs[i], KEY_LEN, 1) !== fw) variantsOk = false;
    if (fw < 101) allFound = false;
    if (
      P.nfqlb_hash_key(ptrs[i], KEY_LEN, 1) !== h || B.bench_hash_lookup(base, ptrs[i], KEY_LEN) !== fw ||
      B.bench_hash_lookup_x8(base, ptrs[i], KEY_LEN) !== fw
    ) {
      variantsOk = false;
    }
    if (B.bench_djb2_x8(k, 37) !== djb2(k.subarray(0, 37))) variantsOk = false;
  });
  const ours = summarize(samples.key);
  const label = `M=${M}, ${TARGETS} active, ${NKEYS} keys`;
  const row = (subject: string, name: string, isOurs: boolean): Row => {
    const s = summarize(samples[name]);
    return {
      section: "lookup",
      case: label,
      subject,
      unit: "ns/key",
      stats: s,
      ours: isOurs,
      ratio: isOurs ? undefined : ours.median / s.median,
    };
  };
  const rows = [
    row("nfqlb_tshm_lookup_key (hash + lookup, 1 FFI call)", "key", true),
    row("nfqlb_hash_key + nfqlb_tshm_lookup (2 FFI calls)", "ffi", false),
    row("empty FFI call (nfqlb_prime_below(0))", "empty", false),
    row("djb2 in plain JS", "js", false),
    row("library API: hashKey() + TargetShm.lookup()", "api", true),
    row("context: the same in a C loop, no FFI per key", "c", false),
    row("variant: same 2 calls, key as pointer not buffer", "ptr", false),
    row("variant: hash + lookup in 1 call, key as pointer", "one", false),
    row("variant: the same with an 8-way djb2 (same values)", "x8", false),
  ];
  if (sink === 0.5) console.log(""); // keeps the loops' results alive
  return {
    rows,
    goals: [goal("hash + lookup through FFI", ours.median, 50, "ns/key")],
    checks: {
      "lookup: FFI djb2 equals JS djb2": hashOk,
      "lookup: every key finds an active target": allFound,
      "lookup: the variants give the same hashes and fwmarks": variantsOk,
    },
  };
}
