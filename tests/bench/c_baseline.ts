/**
 * The C side of the bench that is not the library (c/bench/*.c): upstream
 * 1.2.0's Maglev code re-implemented faithfully, a plain C hash+lookup loop,
 * a faster djb2 (same values) measured as a proposal, and a plain C classify
 * loop. Built here, on demand, with `gcc -O2 -shared -fPIC` into
 * bench-results/ (never into the library build) and opened with Deno.dlopen.
 */

/** FFI declarations of the bench library. */
export const BENCH_SYMBOLS = {
  upstream_alloc: { parameters: ["u32", "u32"], result: "pointer" },
  upstream_free: { parameters: ["pointer"], result: "void" },
  upstream_init: { parameters: ["u32", "u32", "pointer"], result: "i32" },
  upstream_populate: { parameters: ["u32", "u32", "pointer", "buffer", "buffer"], result: "i32" },
  bench_c_hash_lookup: { parameters: ["buffer", "u32", "u32", "pointer"], result: "u32" },
  bench_djb2_x8: { parameters: ["buffer", "u32"], result: "u32" },
  bench_hash_lookup: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  bench_hash_lookup_x8: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  bench_classify_loop: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "buffer", "u32", "u32", "u64", "buffer"],
    result: "u32",
  },
  bench_classify_count_loop: {
    parameters: [
      "pointer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "u32",
      "u32",
      "u64",
      "buffer",
      "buffer",
      "u32",
    ],
    result: "u32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened bench library. */
export type BenchLib = Deno.DynamicLibrary<typeof BENCH_SYMBOLS>;

/**
 * The library's own hash, lookup and classify, declared with the key or
 * packet as a raw pointer instead of ffi/symbols.ts's "buffer", to measure
 * what that costs. `classify_ptr` takes the packet as a pointer;
 * `classify_ptr2` the counters too.
 */
export const POINTER_SYMBOLS = {
  nfqlb_hash_key: { parameters: ["pointer", "u32", "u32"], result: "u32" },
  nfqlb_tshm_lookup: { parameters: ["pointer", "u32"], result: "i32" },
  classify_ptr: {
    name: "nfqlb_lb_classify",
    parameters: ["pointer", "u32", "pointer", "u32", "u64", "buffer"],
    result: "i32",
  },
  classify_ptr2: {
    name: "nfqlb_lb_classify",
    parameters: ["pointer", "u32", "pointer", "u32", "u64", "pointer"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** libnfqlb.so opened a second time with {@link POINTER_SYMBOLS}. */
export type PointerLib = Deno.DynamicLibrary<typeof POINTER_SYMBOLS>;

/**
 * Compiles c/bench/*.c against c/build/libnfqlb.so (which must exist) into a
 * private `${outDir}/libnfqlb_bench-<pid>.so`, opens it and removes the file
 * (the mapping stays), so concurrent runs never share one output file.
 * @param root the repository root
 * @param outDir where the .so goes (created if missing)
 */
export async function openBenchLib(root: string, outDir: string): Promise<BenchLib> {
  Deno.mkdirSync(outDir, { recursive: true });
  const so = `${outDir}/libnfqlb_bench-${Deno.pid}.so`;
  const libDir = `${root}/c/build`;
  const args = [
    "-O2",
    "-shared",
    "-fPIC",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-o",
    so,
    `${root}/c/bench/upstream_maglev.c`,
    `${root}/c/bench/c_loops.c`,
    `-L${libDir}`,
    `-Wl,-rpath,${libDir}`,
    "-lnfqlb",
  ];
  try {
    const r = await new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).output();
    if (!r.success) {
      throw new Error(`gcc failed building the bench baselines:\n${new TextDecoder().decode(r.stderr)}`);
    }
    return Deno.dlopen(so, BENCH_SYMBOLS);
  } finally {
    try {
      Deno.removeSync(so);
    } catch { /* never written */ }
  }
}

/** Opens c/build/libnfqlb.so with {@link POINTER_SYMBOLS}. */
export function openPointerLib(root: string): PointerLib {
  return Deno.dlopen(`${root}/c/build/libnfqlb.so`, POINTER_SYMBOLS);
}
