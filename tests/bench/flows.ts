/**
 * Bench `flows`: classifying a packet against a flow set (c/flowset.c,
 * nfqlb_flowset_match) when the matching flow is the last of 1, 10, 100 and
 * 1000 flows. Upstream walks every flow per packet (its throughput drops
 * ~10 % at ~250 flows); ours goes through the index, so the goal is that
 * 1000 flows cost at most 1.5× one flow.
 *
 * Flow sets ("mixed"): the matching flow (last) is tcp,udp to 10.0.0.1/32 +
 * 1000::1/128 port 80; the flows above it differ from it by dport only
 * (same VIP, port 5000+i), by dst only (VIP 20.0.x.y/32 + 2000::i/128, port
 * 80) or by both, in turn. For 1000 flows also the two pure cases: all
 * differ by dport only, and all by dst only. 64 keys (TCP from different
 * sources to 10.0.0.1:80, each matching the last flow) with a real 40-byte
 * TCP SYN as packet data.
 *
 * Ours: a JS loop calling nfqlb_flowset_match with key, packet and udpencap
 * out as raw pointers (libnfqlb.so opened a second time with pointer
 * parameters, as tests/bench/c_baseline.ts openPointerLib does).
 * Baselines: the linear walk (nfqlb_flowset_match_linear, upstream's
 * algorithm) through the same FFI path, an empty FFI call, and for context
 * both in a plain C loop (c/bench/flow_loops.c, built here into
 * bench-results/), which is what the dataplane pays per packet.
 */
import { lib, libraryPath } from "../../ffi/lib.ts";
import { buildKey, KEY_LEN } from "../../core/key.ts";
import { mapIPv4 } from "../../core/inet.ts";
import { flowSpec, type FlowText } from "../helpers/flow_spec.ts";
import type { SectionResult } from "./lookup.ts";
import { type Goal, goal, type Row, summarize, timeMs } from "./report.ts";
import { ROOT } from "../harness/paths.ts";
import { NFQLB_FLOWIX_DPORT, NFQLB_FLOWIX_DST, NFQLB_FLOWIX_JOINT } from "../../ffi/consts.ts";

/** Repetitions (interleaved), keys per set, calls per timed repetition of an indexed loop. */
const REPS = 7, NKEYS = 64, ITERS = 500_000;
const SIZES = [1, 10, 100, 1000];

/** libnfqlb.so with the key, packet and udpencap as raw pointers. */
const FLOW_POINTER_SYMBOLS = {
  match: {
    name: "nfqlb_flowset_match",
    parameters: ["pointer", "pointer", "pointer", "u32", "u32", "pointer"],
    result: "i32",
  },
  linear: {
    name: "nfqlb_flowset_match_linear",
    parameters: ["pointer", "pointer", "pointer", "u32", "u32", "pointer"],
    result: "i32",
  },
  empty: { name: "nfqlb_prime_below", parameters: ["u32"], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

type PtrSymbols = Deno.DynamicLibrary<typeof FLOW_POINTER_SYMBOLS>["symbols"];

const LOOP_SYMBOLS = {
  bench_flow_match_loop: {
    parameters: ["pointer", "buffer", "u32", "buffer", "u32", "u32", "u32"],
    result: "u32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

type Kind = "mixed" | "dport" | "dst";

function v4(a: number, b: number, c: number, d: number): Uint8Array {
  return mapIPv4(new Uint8Array([a, b, c, d]));
}

/** n flows, the last one matching the bench keys. */
function flowSpecs(n: number, kind: Kind): FlowText[] {
  const specs: FlowText[] = [];
  for (let i = 0; i < n - 1; i++) {
    const mode = kind === "dport" ? 0 : kind === "dst" ? 1 : i % 3;
    const otherDst = `20.0.${i >> 8}.${i & 0xff}/32,2000::${i.toString(16)}/128`;
    specs.push({
      protocols: "tcp,udp",
      dsts: mode === 0 ? "10.0.0.1/32,1000::1/128" : otherDst,
      dports: `${mode === 1 ? 80 : 5000 + i}`,
    });
  }
  specs.push({ protocols: "tcp,udp", dsts: "10.0.0.1/32,1000::1/128", dports: "80" });
  return specs;
}

function buildSet(specs: FlowText[]): Deno.PointerValue {
  const L = lib();
  const fs = L.nfqlb_flowset_new(specs.length);
  specs.forEach((s, i) => {
    const b = flowSpec(s);
    if (L.nfqlb_flowset_add(fs, i, b, b.length) !== 0) throw new Error(`flow ${i} rejected`);
  });
  if (L.nfqlb_flowset_build(fs) !== 0) throw new Error("build failed");
  return fs;
}

/** A 40-byte IPv4 TCP SYN to 10.0.0.1:80 (only its presence matters: no flow has match statements). */
function synPacket(): Uint8Array<ArrayBuffer> {
  const p = new Uint8Array(40);
  p.set([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 168, 0, 1, 10, 0, 0, 1]);
  p.set([0x75, 0x30, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff], 20);
  return p;
}

async function openLoops(root: string, outDir: string): Promise<Deno.DynamicLibrary<typeof LOOP_SYMBOLS>> {
  Deno.mkdirSync(outDir, { recursive: true });
  const so = `${outDir}/libnfqlb_flowbench-${Deno.pid}.so`;
  const libDir = `${root}/c/build`;
  const args = ["-O2", "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-o", so];
  args.push(`${root}/c/bench/flow_loops.c`, `-L${libDir}`, `-Wl,-rpath,${libDir}`, "-lnfqlb");
  try {
    const r = await new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).output();
    if (!r.success) {
      throw new Error(`gcc failed building flow_loops.c:\n${new TextDecoder().decode(r.stderr)}`);
    }
    return Deno.dlopen(so, LOOP_SYMBOLS);
  } finally {
    try {
      Deno.removeSync(so);
    } catch { /* never written */ }
  }
}

/**
 * The timed FFI loops: one function per lookup, shared by every case, so the
 * JIT compiles each once, the same way for all sizes (separate closures per
 * case were seen to compile differently, ±50 %), and each call site stays
 * monomorphic (a callee passed as a parameter loses V8's fast FFI path).
 * Return the sum of the results.
 */
function matchLoop(
  P: PtrSymbols,
  fs: Deno.PointerValue,
  kptr: Deno.PointerValue[],
  pkt: Deno.PointerValue,
  plen: number,
  ue: Deno.PointerValue,
  iters: number,
): number {
  let acc = 0;
  const mask = kptr.length - 1;
  for (let i = 0; i < iters; i++) acc += P.match(fs, kptr[i & mask], pkt, plen, 0, ue);
  return acc;
}

function linearLoop(
  P: PtrSymbols,
  fs: Deno.PointerValue,
  kptr: Deno.PointerValue[],
  pkt: Deno.PointerValue,
  plen: number,
  ue: Deno.PointerValue,
  iters: number,
): number {
  let acc = 0;
  const mask = kptr.length - 1;
  for (let i = 0; i < iters; i++) acc += P.linear(fs, kptr[i & mask], pkt, plen, 0, ue);
  return acc;
}

interface Case {
  label: string;
  n: number;
  fs: Deno.PointerValue;
}

/**
 * Runs the flows bench.
 * @param root the repository root (for c/bench/flow_loops.c and c/build)
 * @param outDir where the C loop library is built (default root/bench-results)
 */
export async function benchFlows(root: string, outDir = `${root}/bench-results`): Promise<SectionResult> {
  const ptrLib = Deno.dlopen(libraryPath(), FLOW_POINTER_SYMBOLS);
  const loops = await openLoops(root, outDir);
  const cases: Case[] = [];
  try {
    for (const n of SIZES) cases.push({ label: `${n} flows, mixed`, n, fs: buildSet(flowSpecs(n, "mixed")) });
    cases.push({ label: "1000 flows, dport differs", n: 1000, fs: buildSet(flowSpecs(1000, "dport")) });
    cases.push({ label: "1000 flows, dst differs", n: 1000, fs: buildSet(flowSpecs(1000, "dst")) });
    return measure(ptrLib, loops, cases);
  } finally {
    for (const c of cases) lib().nfqlb_flowset_free(c.fs);
    loops.close();
    ptrLib.close();
  }
}

function measure(
  ptrLib: Deno.DynamicLibrary<typeof FLOW_POINTER_SYMBOLS>,
  loopLib: Deno.DynamicLibrary<typeof LOOP_SYMBOLS>,
  cases: Case[],
): SectionResult {
  const P = ptrLib.symbols, C = loopLib.symbols;
  const flat = new Uint8Array(NKEYS * KEY_LEN);
  const keys: Uint8Array<ArrayBuffer>[] = [];
  for (let k = 0; k < NKEYS; k++) {
    const key = new Uint8Array(buildKey(v4(192, 168, k, 1), v4(10, 0, 0, 1), 6, 30000 + k, 80));
    keys.push(key);
    flat.set(key, k * KEY_LEN);
  }
  const kptr = keys.map((k) => Deno.UnsafePointer.of(k));
  const pkt = synPacket(), pptr = Deno.UnsafePointer.of(pkt), plen = pkt.length;
  const ue = new Uint32Array(1), uptr = Deno.UnsafePointer.of(ue);
  let sink = 0;

  interface Loop {
    name: string;
    iters: number;
    fn: (iters: number) => void;
  }
  const list: Loop[] = [];
  const linearIters = (n: number) => (n <= 10 ? ITERS : Math.max(2000, Math.floor(ITERS * 4 / n)));
  for (const c of cases) {
    const fs = c.fs;
    list.push({
      name: `ix:${c.label}`,
      iters: ITERS,
      fn: (iters) => void (sink += matchLoop(P, fs, kptr, pptr, plen, uptr, iters)),
    });
    if (!c.label.includes("mixed")) continue;
    list.push({
      name: `lin:${c.label}`,
      iters: linearIters(c.n),
      fn: (iters) => void (sink += linearLoop(P, fs, kptr, pptr, plen, uptr, iters)),
    });
    if (c.n === 1 || c.n === 1000) {
      list.push({
        name: `cix:${c.label}`,
        iters: ITERS * 4,
        fn: (iters) => void (sink += C.bench_flow_match_loop(fs, flat, NKEYS, pkt, plen, iters, 0)),
      });
      list.push({
        name: `clin:${c.label}`,
        iters: linearIters(c.n) * 4,
        fn: (iters) => void (sink += C.bench_flow_match_loop(fs, flat, NKEYS, pkt, plen, iters, 1)),
      });
    }
  }
  list.push({
    name: "empty",
    iters: ITERS,
    fn: (iters) => {
      let acc = 0;
      for (let i = 0; i < iters; i++) acc += P.empty(0);
      sink += acc;
    },
  });

  // correctness first: every key matches the last flow, indexed == linear, the C loop agrees
  const checks: Record<string, boolean> = {};
  let allLast = true, same = true, loopOk = true;
  for (const c of cases) {
    for (const k of kptr) {
      const a = P.match(c.fs, k, pptr, plen, 0, uptr), b = P.linear(c.fs, k, pptr, plen, 0, uptr);
      if (a !== c.n - 1) allLast = false;
      if (a !== b) same = false;
    }
    if (C.bench_flow_match_loop(c.fs, flat, NKEYS, pkt, plen, 1000, 0) !== ((1000 * (c.n - 1)) >>> 0)) {
      loopOk = false;
    }
  }
  checks["flows: every key matches the last flow"] = allLast;
  checks["flows: indexed lookup equals the linear walk"] = same;
  checks["flows: the C loop gives the same flows"] = loopOk;
  const dims = cases.map((c) => lib().nfqlb_flowset_index_dims(c.fs));
  const joint = NFQLB_FLOWIX_DPORT | NFQLB_FLOWIX_DST | NFQLB_FLOWIX_JOINT;
  checks["flows: the 1000-flow sets are indexed by dport x dst"] = dims.slice(3).every((d) =>
    (d & joint) === joint
  );

  const samples: Record<string, number[]> = {};
  for (const l of list) {
    samples[l.name] = [];
    l.fn(Math.min(l.iters, 20_000)); // warm-up: JIT and fast-call paths
  }
  for (let r = 0; r < REPS; r++) {
    // interleaved so that all loops see the same stretch of machine noise
    for (const l of list) samples[l.name].push(timeMs(() => l.fn(l.iters)) * 1e6 / l.iters);
  }
  if (sink === 0.5) console.log(""); // keeps the loops' results alive

  /** Median over the repetitions of a/b within each repetition (paired: the same stretch of machine noise). */
  const ratio = (a: string, b: string) => summarize(samples[a].map((x, r) => x / samples[b][r])).median;
  const rows: Row[] = [];
  for (const c of cases) {
    const kib = Number(lib().nfqlb_flowset_index_bytes(c.fs)) / 1024;
    const label = `${c.label} (index ${kib.toFixed(0)} KiB)`;
    const ours = samples[`ix:${c.label}`];
    rows.push({
      section: "flows",
      case: label,
      subject: "nfqlb_flowset_match, pointers, FFI",
      unit: "ns/pkt",
      stats: summarize(ours),
      ours: true,
    });
    const base = (name: string, subject: string, isOurs = false) => {
      if (!samples[name]) return;
      const s = summarize(samples[name]);
      rows.push({
        section: "flows",
        case: label,
        subject,
        unit: "ns/pkt",
        stats: s,
        ours: isOurs,
        ratio: isOurs ? undefined : summarize(ours).median / s.median,
      });
    };
    base(`lin:${c.label}`, "linear walk (upstream's algorithm), FFI");
    base(`cix:${c.label}`, "context: nfqlb_flowset_match in a C loop", true);
    base(`clin:${c.label}`, "context: linear walk in a C loop");
  }
  rows.push({
    section: "flows",
    case: "-",
    subject: "empty FFI call (nfqlb_prime_below(0))",
    unit: "ns/call",
    stats: summarize(samples.empty),
    ours: false,
  });
  const one = "1 flows, mixed", thousand = "1000 flows, mixed";
  const goals: Goal[] = [
    goal("flows: 1000 flows (match last) / 1 flow, FFI", ratio(`ix:${thousand}`, `ix:${one}`), 1.5, "x"),
    goal("flows: the same in a C loop", ratio(`cix:${thousand}`, `cix:${one}`), 1.5, "x"),
    goal(
      "flows: 1000 flows, dport differs / 1 flow, FFI",
      ratio("ix:1000 flows, dport differs", `ix:${one}`),
      1.5,
      "x",
    ),
    goal(
      "flows: 1000 flows, dst differs / 1 flow, FFI",
      ratio("ix:1000 flows, dst differs", `ix:${one}`),
      1.5,
      "x",
    ),
  ];
  return { rows, goals, checks };
}

if (import.meta.main) {
  const { formatReport } = await import("./report.ts");
  const r = await benchFlows(ROOT);
  console.log(formatReport(r.rows, r.goals));
  for (const [k, v] of Object.entries(r.checks)) console.log(`  ${v ? "ok  " : "FAIL"}  ${k}`);
}
