/**
 * Bench `classify`: the C per-packet decision of `nfqlb lb`
 * (nfqlb_lb_classify: packet key, djb2, Maglev lookup in the mapped target
 * table, fragment table for first fragments), called once per packet through
 * FFI.
 *
 * Setup: a real target table in a temp NFQLB_SHM_DIR under /dev/shm (M=9973,
 * N=100, 10 rows active), a fragment table (500 slots + 500 buckets, ttl 200
 * ms, no stored fragments), a classifier as `lb` creates it (hash_mode 1, no
 * SCTP encapsulation port, no-target fwmark -1), and the packets of the
 * captures in tests/testdata/pcap: telnet IPv4 and IPv6, SCTP over UDP,
 * and the first fragments of the fragmented UDP datagrams (IPv4, IPv6).
 * Time is fixed, so the first fragments' fragment-table entries never expire
 * and every repeat is a duplicate first fragment (the path taken for each
 * retransmitted first fragment).
 *
 * Ours: a JS loop calling lib().nfqlb_lb_classify (packet as "buffer").
 * Baselines: the same loop with an empty FFI call, and the same classify loop
 * in C (c/bench/c_loops.c bench_classify_loop, no FFI per packet). Variants:
 * the packet declared as "pointer" (with Deno.UnsafePointer.of taken once),
 * and the counters as "pointer" as well.
 *
 * The dataplane itself does not cross FFI per packet (nfqlb_queue_serve
 * classifies a whole batch in C), so the C loop is what `lb` pays per packet
 * for the decision; the FFI rows bound library users that classify one
 * packet at a time.
 */
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import { readPcap } from "../helpers/pcap.ts";
import { TESTDATA } from "../harness/paths.ts";
import type { BenchLib, PointerLib } from "./c_baseline.ts";
import type { SectionResult } from "./lookup.ts";
import { goal, type Row, summarize, timeMs } from "./report.ts";

/** Calls per timed repetition, and repetitions. */
const ITERS = 1_000_000, REPS = 7;
/** Meridio's table: init --M=10000 --N=100 (M becomes 9973), 10 targets active. */
const M = 9973, N = 100, TARGETS = 10;
/** The fixed time passed to classify (ns, u64 as a bigint; any value: the fragment entries never expire). */
const NOW = 1_000_000_000n;

/** Where the captures are. */
const PCAP_DIR = `${TESTDATA}/pcap/`;

/** One packet of the bench set. */
interface BenchPacket {
  /** Capture and index, for messages. */
  name: string;
  /** NFQUEUE hw_protocol (ethertype). */
  hwProto: number;
  /** The IP packet (its own ArrayBuffer). */
  data: Uint8Array<ArrayBuffer>;
  /** Deno.UnsafePointer.of(data), taken once. */
  ptr: Deno.PointerValue;
}

/** Whether an IP packet is a first fragment (offset 0, more fragments). */
function isFirstFragment(hwProto: number, p: Uint8Array): boolean {
  if (hwProto === 0x0800) return p.length >= 20 && (((p[6] << 8) | p[7]) & 0x3fff) === 0x2000;
  // IPv6 with the fragment header right after the fixed header (as in the captures)
  return p.length >= 48 && p[6] === 44 && (((p[42] << 8) | p[43]) & 0xfff9) === 0x0001;
}

function loadPackets(): BenchPacket[] {
  const out: BenchPacket[] = [];
  const add = (file: string, filter: (hw: number, p: Uint8Array) => boolean) => {
    readPcap(`${PCAP_DIR}${file}`).forEach((p, i) => {
      if (filter(p.hwProto, p.data)) {
        out.push({
          name: `${file}#${i}`,
          hwProto: p.hwProto,
          data: p.data,
          ptr: Deno.UnsafePointer.of(p.data),
        });
      }
    });
  };
  const all = () => true;
  add("telnet-ipv4.pcap", all);
  add("telnet-ipv6.pcap", all);
  add("sctp-encap-ipv4.pcap", all);
  add("udp-ipv4.pcap", isFirstFragment);
  add("udp-ipv6.pcap", isFirstFragment);
  return out;
}

/**
 * Runs the classify bench. The temp shm directory is set through
 * NFQLB_SHM_DIR for the duration and removed afterwards.
 */
export function benchClassify(bench: BenchLib, ptrLib: PointerLib): SectionResult {
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-bench-" });
  const before = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", dir);
  const L = lib();
  try {
    TargetShm.create("bench", { M, N, ownFwmark: 0 });
    TargetShm.update("bench", (active) => {
      for (let i = 0; i < TARGETS; i++) active[i] = 101 + i;
      return true;
    });
    const table = TargetShm.open("bench");
    const ft = L.nfqlb_ft_create(500, 500, 200, 1500, 0, 0, null);
    const lb = ft === null ? null : L.nfqlb_lb_create(table.pointer, ft, 1, 0, -1);
    try {
      if (ft === null || lb === null) {
        throw new Error("classify bench: cannot create the fragment table or lb");
      }
      return measure(bench, ptrLib, lb);
    } finally {
      if (lb !== null) L.nfqlb_lb_destroy(lb);
      if (ft !== null) L.nfqlb_ft_destroy(ft);
      table.close();
    }
  } finally {
    if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
}

function measure(bench: BenchLib, ptrLib: PointerLib, lb: Deno.PointerObject): SectionResult {
  const L = lib(), B = bench.symbols, P = ptrLib.symbols;
  const pkts = loadPackets();
  const n = pkts.length;
  const data = pkts.map((p) => p.data), ptrs = pkts.map((p) => p.ptr);
  const hw = pkts.map((p) => p.hwProto), lens = pkts.map((p) => p.data.length);
  const counters = new BigUint64Array(COUNTER_NAMES.length);
  const cptr = Deno.UnsafePointer.of(counters);
  // the packets back to back, for the C loop
  const offsets = new Uint32Array(n), lens32 = new Uint32Array(lens), hw32 = new Uint32Array(hw);
  let total = 0;
  pkts.forEach((p, i) => {
    offsets[i] = total;
    total += p.data.length;
  });
  const flat = new Uint8Array(total);
  pkts.forEach((p, i) => flat.set(p.data, offsets[i]));

  // each packet once: the marks every loop must reproduce
  const marks = pkts.map((p) => L.nfqlb_lb_classify(lb, p.hwProto, p.data, p.data.length, NOW, counters));
  const unmarked = pkts.flatMap((p, i) => (marks[i] < 101 ? [`${p.name}: ${marks[i]}`] : []));
  const perRound = marks.reduce((a, b) => (a + b) >>> 0, 0);
  const rest = marks.slice(0, ITERS % n).reduce((a, b) => (a + b) >>> 0, 0);
  const expectedSum = (Math.imul(Math.floor(ITERS / n), perRound) + rest) >>> 0;

  const tstats = new Uint8Array(24 * 256);
  let sink = 0;
  const loops: Record<string, () => number> = {
    buffer: () => {
      let acc = 0;
      for (let i = 0, k = 0; i < ITERS; i++) {
        acc = (acc + L.nfqlb_lb_classify(lb, hw[k], data[k], lens[k], NOW, counters)) >>> 0;
        if (++k === n) k = 0;
      }
      return acc;
    },
    empty: () => {
      let acc = 0;
      for (let i = 0, k = 0; i < ITERS; i++) {
        acc = (acc + L.nfqlb_prime_below(k)) >>> 0;
        if (++k === n) k = 0;
      }
      return acc;
    },
    c: () => B.bench_classify_loop(lb, flat, offsets, lens32, hw32, n, ITERS, NOW, counters),
    // what nfqlb_queue_serve adds per packet: queue counters and per-target packets/bytes
    count: () =>
      B.bench_classify_count_loop(lb, flat, offsets, lens32, hw32, n, ITERS, NOW, counters, tstats, 256),
    ptr: () => {
      let acc = 0;
      for (let i = 0, k = 0; i < ITERS; i++) {
        acc = (acc + P.classify_ptr(lb, hw[k], ptrs[k], lens[k], NOW, counters)) >>> 0;
        if (++k === n) k = 0;
      }
      return acc;
    },
    ptr2: () => {
      let acc = 0;
      for (let i = 0, k = 0; i < ITERS; i++) {
        acc = (acc + P.classify_ptr2(lb, hw[k], ptrs[k], lens[k], NOW, cptr)) >>> 0;
        if (++k === n) k = 0;
      }
      return acc;
    },
  };
  const samples: Record<string, number[]> = {};
  const sums: Record<string, number[]> = {};
  for (const name of Object.keys(loops)) {
    samples[name] = [];
    sums[name] = [loops[name]()]; // warm-up: JIT and fast-call paths
  }
  for (let r = 0; r < REPS; r++) {
    // interleaved so that all loops see the same stretch of machine noise
    for (const [name, fn] of Object.entries(loops)) {
      let s = 0;
      samples[name].push(timeMs(() => (s = fn())) * 1e6 / ITERS);
      sums[name].push(s);
    }
  }
  for (const s of Object.values(sums)) sink += s[0];
  const sameMarks = ["buffer", "c", "count", "ptr", "ptr2"].every((k) =>
    sums[k].every((s) => s === expectedSum)
  );
  const bad = ["malformed", "notarget", "frag_dropped"].map((c) => [
    c,
    counters[COUNTER_NAMES.indexOf(c as (typeof COUNTER_NAMES)[number])],
  ]).filter(([, v]) => v !== 0n);
  if (unmarked.length) console.error(`classify: packets without a target fwmark: ${unmarked.join(", ")}`);
  if (bad.length) {
    console.error(`classify: unexpected counters: ${bad.map(([c, v]) => `${c}=${v}`).join(" ")}`);
  }

  const ours = summarize(samples.buffer);
  const label = `${n} pkts, M=${M}, ${TARGETS} active`;
  const row = (subject: string, name: string, isOurs: boolean): Row => {
    const s = summarize(samples[name]);
    return {
      section: "classify",
      case: label,
      subject,
      unit: "ns/pkt",
      stats: s,
      ours: isOurs,
      ratio: isOurs ? undefined : ours.median / s.median,
    };
  };
  const rows = [
    row("nfqlb_lb_classify through FFI (pkt as buffer)", "buffer", true),
    row("empty FFI call (nfqlb_prime_below)", "empty", false),
    row("the same classify loop in C, no FFI per packet", "c", false),
    row("the C loop with the counters lb keeps per packet", "count", false),
    row("variant: pkt as pointer (UnsafePointer.of once)", "ptr", false),
    row("variant: pkt and counters as pointers", "ptr2", false),
  ];
  if (sink === 0.5) console.log(""); // keeps the loops' results alive
  return {
    rows,
    goals: [
      goal("C classify per packet through FFI", ours.median, 100, "ns/pkt"),
      // The issue's bar is 3 % of the per-packet time. The LB's per-packet time is
      // the LB process's CPU per packet in the netns harness (docs/performance.md:
      // 4.0-5.9 us at 40 kpps); 3 % of 4 us is 120 ns. Measured here in pairs
      // (C loop with counting minus without), so the machine's noise cancels.
      goal(
        "counters' cost per packet (C loop with the lb's counting minus without; bar: 3 % of the LB's 4 us/pkt)",
        summarize(samples.count.map((v, i) => v - samples.c[i])).median,
        120,
        "ns/pkt",
      ),
    ],
    checks: {
      [`classify: all ${n} packets get a target fwmark >= 101 (first fragments included)`]:
        unmarked.length ===
          0,
      "classify: FFI, pointer and C loops give the same fwmarks": sameMarks,
      "classify: no malformed, no-target or dropped fragment counted": bad.length === 0,
    },
  };
}
