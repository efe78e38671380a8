/**
 * Bench `trace`: what tracing costs the per-packet decision when no trace
 * client is attached (the issue's bar: at most 3 % of the per-packet time),
 * and what it costs when packets are traced.
 *
 * The library is built twice here, from the same sources with the same
 * flags (gcc -O2, -Wl,-Bsymbolic, each with c/bench/c_loops.c for the C
 * classify loop): once with -DNFQLB_NO_TRACE (lb.c without any trace code:
 * the baseline) and once as shipped. Both run nfqlb_lb_classify over the
 * classify bench's packets (captures: telnet IPv4/IPv6, SCTP over UDP, first
 * fragments) in a plain C loop, so the numbers are the dataplane's own
 * per-packet cost, without FFI. Variants of the shipped build:
 *
 *   - idle, no trace set up (the mask pointer is the static zero);
 *   - idle, as `lb` runs it with no client: nfqlb_lb_set_trace with a mask
 *     word of 0 and a ring (the goal row);
 *   - traced: mask `packet`, one record per packet (the ring of 65536
 *     records fills after the first 65536 packets of a repetition; later
 *     records are built, then dropped and counted, as in the dataplane when
 *     its main thread is behind).
 *
 * Many short repetitions, interleaved in rotating order, so every variant
 * sees the same machine noise. The goal compares idle with the baseline per
 * repetition (they ran next to each other) and takes the median of those
 * ratios; the rows show each variant's median.
 */
import { TargetShm } from "../../core/target_shm.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import { readPcap } from "../helpers/pcap.ts";
import { ROOT, TESTDATA } from "../harness/paths.ts";
import type { SectionResult } from "./lookup.ts";
import { goal, type Row, summarize, timeMs } from "./report.ts";
import { NFQLB_TRACE_PACKET, NFQLB_TRACE_RING_HEADER, NFQLB_TRACE_RING_MAX } from "../../ffi/consts.ts";

/** Short repetitions, many of them, interleaved in rotating order: the machine is noisy. */
const ITERS = 200_000, REPS = 41;
const M = 9973, N = 100, TARGETS = 10;
const NOW = 1_000_000_000n;
const PCAP_DIR = `${TESTDATA}/pcap/`;

const COMMON = {
  nfqlb_lb_create: { parameters: ["pointer", "pointer", "u32", "u32", "i32"], result: "pointer" },
  nfqlb_lb_destroy: { parameters: ["pointer"], result: "void" },
  nfqlb_ft_create: { parameters: ["u32", "u32", "u32", "u32", "u32", "u32", "pointer"], result: "pointer" },
  nfqlb_ft_destroy: { parameters: ["pointer"], result: "void" },
  bench_classify_loop: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "buffer", "u32", "u32", "u64", "buffer"],
    result: "u32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

const TRACED = {
  ...COMMON,
  nfqlb_lb_set_trace: { parameters: ["pointer", "pointer", "pointer", "pointer"], result: "void" },
  nfqlb_trace_mask_create: { parameters: [], result: "pointer" },
  nfqlb_trace_mask_set: { parameters: ["pointer", "u32"], result: "void" },
  nfqlb_trace_mask_free: { parameters: ["pointer"], result: "void" },
  nfqlb_trace_ring_create: { parameters: ["u32"], result: "pointer" },
  nfqlb_trace_ring_free: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** Builds c/*.c + c/bench/c_loops.c into `so` with extra flags. */
async function build(root: string, so: string, flags: string[]): Promise<void> {
  const srcs = [...Deno.readDirSync(`${root}/c`)].filter((e) => e.isFile && e.name.endsWith(".c"))
    .map((e) => `${root}/c/${e.name}`).sort();
  const args = [
    "-O2",
    "-std=c11",
    "-D_DEFAULT_SOURCE",
    "-fPIC",
    "-shared",
    "-Wl,-Bsymbolic",
    ...flags,
    "-o",
    so,
    ...srcs,
    `${root}/c/bench/c_loops.c`,
    "-l:libnetfilter_queue.so.1",
    "-l:libmnl.so.0",
  ];
  const r = await new Deno.Command("gcc", { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`gcc failed building the trace bench library:\n${new TextDecoder().decode(r.stderr)}`);
  }
}

interface Packets {
  flat: Uint8Array<ArrayBuffer>;
  offsets: Uint32Array<ArrayBuffer>;
  lens: Uint32Array<ArrayBuffer>;
  hw: Uint32Array<ArrayBuffer>;
  n: number;
}

function isFirstFragment(hwProto: number, p: Uint8Array): boolean {
  if (hwProto === 0x0800) return p.length >= 20 && (((p[6] << 8) | p[7]) & 0x3fff) === 0x2000;
  return p.length >= 48 && p[6] === 44 && (((p[42] << 8) | p[43]) & 0xfff9) === 0x0001;
}

function loadPackets(): Packets {
  const pkts: { hw: number; data: Uint8Array }[] = [];
  for (const f of ["telnet-ipv4", "telnet-ipv6", "sctp-encap-ipv4"]) {
    for (const p of readPcap(`${PCAP_DIR}${f}.pcap`)) pkts.push({ hw: p.hwProto, data: p.data });
  }
  for (const f of ["udp-ipv4", "udp-ipv6"]) {
    for (const p of readPcap(`${PCAP_DIR}${f}.pcap`)) {
      if (isFirstFragment(p.hwProto, p.data)) pkts.push({ hw: p.hwProto, data: p.data });
    }
  }
  const n = pkts.length;
  const offsets = new Uint32Array(n), lens = new Uint32Array(pkts.map((p) => p.data.length));
  const hw = new Uint32Array(pkts.map((p) => p.hw));
  let total = 0;
  pkts.forEach((p, i) => {
    offsets[i] = total;
    total += p.data.length;
  });
  const flat = new Uint8Array(total);
  pkts.forEach((p, i) => flat.set(p.data, offsets[i]));
  return { flat, offsets, lens, hw, n };
}

/**
 * Runs the trace bench. `root`: the repository; `outDir`: where the two
 * private libraries are built (removed again once opened).
 */
export async function benchTrace(root: string, outDir: string): Promise<SectionResult> {
  Deno.mkdirSync(outDir, { recursive: true });
  const soBase = `${outDir}/libnfqlb_notrace-${Deno.pid}.so`,
    soTraced = `${outDir}/libnfqlb_traced-${Deno.pid}.so`;
  let base: Deno.DynamicLibrary<typeof COMMON>, traced: Deno.DynamicLibrary<typeof TRACED>;
  try {
    await build(root, soBase, ["-DNFQLB_NO_TRACE"]);
    await build(root, soTraced, []);
    base = Deno.dlopen(soBase, COMMON);
    traced = Deno.dlopen(soTraced, TRACED);
  } finally {
    for (const f of [soBase, soTraced]) {
      try {
        Deno.removeSync(f);
      } catch { /* not built */ }
    }
  }
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-bench-" });
  const before = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", dir);
  try {
    TargetShm.create("bench", { M, N, ownFwmark: 0 });
    TargetShm.update("bench", (active) => {
      for (let i = 0; i < TARGETS; i++) active[i] = 101 + i;
      return true;
    });
    const table = TargetShm.open("bench");
    try {
      return measure(base.symbols, traced.symbols, table.pointer);
    } finally {
      table.close();
    }
  } finally {
    base.close();
    traced.close();
    if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
}

type CommonSymbols = Deno.DynamicLibrary<typeof COMMON>["symbols"];
type TracedSymbols = Deno.DynamicLibrary<typeof TRACED>["symbols"];

function measure(B: CommonSymbols, T: TracedSymbols, tshm: Deno.PointerObject): SectionResult {
  const pk = loadPackets();
  const counters = new BigUint64Array(COUNTER_NAMES.length);
  const made: (() => void)[] = [];
  const lbOf = (L: CommonSymbols) => {
    const ft = L.nfqlb_ft_create(500, 500, 200, 1500, 0, 0, null)!;
    const lb = L.nfqlb_lb_create(tshm, ft, 1, 0, -1)!;
    made.push(() => {
      L.nfqlb_lb_destroy(lb);
      L.nfqlb_ft_destroy(ft);
    });
    return lb;
  };
  const word = T.nfqlb_trace_mask_create()!, wordOn = T.nfqlb_trace_mask_create()!;
  T.nfqlb_trace_mask_set(wordOn, NFQLB_TRACE_PACKET);
  const ring = T.nfqlb_trace_ring_create(NFQLB_TRACE_RING_MAX)!;
  const ringOn = T.nfqlb_trace_ring_create(NFQLB_TRACE_RING_MAX)!;
  const ringHead = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(ringOn, NFQLB_TRACE_RING_HEADER));
  const lbBase = lbOf(B), lbPlain = lbOf(T), lbIdle = lbOf(T), lbOn = lbOf(T);
  T.nfqlb_lb_set_trace(lbIdle, word, ring, null);
  T.nfqlb_lb_set_trace(lbOn, wordOn, ringOn, null);
  const loop = (L: CommonSymbols, lb: Deno.PointerObject) => () =>
    L.bench_classify_loop(lb, pk.flat, pk.offsets, pk.lens, pk.hw, pk.n, ITERS, NOW, counters);
  const loops: Record<string, () => number> = {
    base: loop(B, lbBase),
    plain: loop(T, lbPlain),
    idle: loop(T, lbIdle),
    on: () => {
      ringHead[0] = 0; // each repetition starts with an empty ring
      ringHead[2] = 0;
      return loop(T, lbOn)();
    },
  };
  try {
    const samples: Record<string, number[]> = {}, sums: Record<string, number[]> = {};
    for (const name of Object.keys(loops)) {
      samples[name] = [];
      sums[name] = [loops[name]()]; // warm-up
    }
    const names = Object.keys(loops);
    for (let r = 0; r < REPS; r++) {
      for (let k = 0; k < names.length; k++) {
        const name = names[(k + r) % names.length];
        let s = 0;
        samples[name].push(timeMs(() => (s = loops[name]())) * 1e6 / ITERS);
        sums[name].push(s);
      }
    }
    const sameMarks = Object.values(sums).every((s) => s.every((x) => x === sums.base[0]));
    const recorded = ringHead[0], dropped = ringHead[2];
    const idle = summarize(samples.idle);
    const label = `${pk.n} pkts, M=${M}, C loop`;
    const row = (subject: string, name: string, ours: boolean): Row => {
      const s = summarize(samples[name]);
      const ratio = ours ? undefined : idle.median / s.median;
      return { section: "trace", case: label, subject, unit: "ns/pkt", stats: s, ours, ratio };
    };
    // the goal: per repetition, idle and baseline ran next to each other; the median of those ratios
    const paired = summarize(samples.idle.map((x, i) => x / samples.base[i])).median;
    const overhead = (paired - 1) * 100;
    const rows: Row[] = [
      row("classify, trace idle (set up, mask 0: lb with no trace client)", "idle", true),
      row("classify built with -DNFQLB_NO_TRACE (no trace code)", "base", false),
      row("classify, trace never set up", "plain", false),
      row("classify, traced (mask packet, one record per packet)", "on", false),
    ];
    return {
      rows,
      goals: [
        goal(
          "idle trace: classify time over no trace code (median of paired ratios)",
          Math.max(0, overhead),
          3,
          "%",
        ),
      ],
      checks: {
        "trace: every variant gives the same fwmarks": sameMarks,
        "trace: mask packet records every packet (ring full, the rest counted as dropped)":
          recorded === 65536 &&
          recorded + dropped === ITERS,
      },
    };
  } finally {
    for (const f of made) f();
    T.nfqlb_trace_ring_free(ring);
    T.nfqlb_trace_ring_free(ringOn);
    T.nfqlb_trace_mask_free(word);
    T.nfqlb_trace_mask_free(wordOn);
  }
}

if (import.meta.main) {
  const r = await benchTrace(ROOT, `${ROOT}/bench-results`);
  for (const x of r.rows) {
    console.log(
      `${x.subject.padEnd(70)} ${x.stats.median.toFixed(2).padStart(7)} ns/pkt  (min ${
        x.stats.min.toFixed(2)
      }, max ${x.stats.max.toFixed(2)})${x.ratio ? `  ratio ${x.ratio.toFixed(4)}` : ""}`,
    );
  }
  for (const g of r.goals) {
    console.log(`${g.pass ? "PASS" : "MISS"}  ${g.text}: ${g.value.toFixed(2)} ${g.unit}`);
  }
  console.log(
    `(min idle ${r.rows[0].stats.min.toFixed(2)} vs min no-trace ${r.rows[1].stats.min.toFixed(2)} ns/pkt)`,
  );
  for (const [k, v] of Object.entries(r.checks)) console.log(`${v ? "ok  " : "FAIL"}  ${k}`);
}
