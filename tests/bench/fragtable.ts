/**
 * Bench section `fragtable`: the fragment table through FFI, per operation.
 * `insert`: a first fragment records its fwmark (nfqlb_ft_first) for a new
 * datagram; `lookup`: a later fragment finds it (nfqlb_ft_next). 16384
 * datagrams per round in a table sized for them (no rejects), keys built in
 * advance. Baseline: an empty FFI call in the same run.
 */
import { lib } from "../../ffi/lib.ts";
import { type Row, summarize, timeMs } from "./report.ts";
import type { SectionResult } from "./lookup.ts";
import { NFQLB_KEY_LEN } from "../../ffi/consts.ts";

const N = 16384;
const REPS = 7;

function keys(): Uint8Array<ArrayBuffer>[] {
  const out: Uint8Array<ArrayBuffer>[] = [];
  for (let i = 0; i < N; i++) {
    const k = new Uint8Array(NFQLB_KEY_LEN);
    k[10] = k[11] = 0xff;
    k.set([10, 0, (i >> 8) & 0xff, i & 0xff], 12); // src 10.0.x.y
    k[26] = k[27] = 0xff;
    k.set([10, 99, 0, 1], 28); // dst
    k[32] = (i * 7919) & 0xff; // IP id
    k[33] = ((i * 7919) >> 8) & 0xff;
    out.push(k);
  }
  return out;
}

/** Runs the section. */
export function benchFragtable(): SectionResult {
  const c = lib();
  const ks = keys();
  const inject = new Int32Array(1), fw = new Int32Array(1);
  const samples: Record<string, number[]> = { insert: [], lookup: [], empty: [] };
  let ok = true, sink = 0;
  for (let r = 0; r <= REPS; r++) {
    const ft = c.nfqlb_ft_create(N * 2, N, 200, 1500, 0, 0, null);
    if (ft === null) throw new Error("nfqlb_ft_create failed");
    const now = BigInt(r + 1) * 1000n;
    const ins = timeMs(() => {
      for (let i = 0; i < N; i++) sink += c.nfqlb_ft_first(ft, ks[i], 101 + (i % 3), now, null, inject);
    });
    const look = timeMs(() => {
      for (let i = 0; i < N; i++) {
        if (c.nfqlb_ft_next(ft, ks[i], now, null, 0, null, fw) !== 0 || fw[0] !== 101 + (i % 3)) ok = false;
      }
    });
    const empty = timeMs(() => {
      for (let i = 0; i < N; i++) sink += c.nfqlb_prime_below(0);
    });
    c.nfqlb_ft_destroy(ft);
    if (r === 0) continue; // warm-up
    samples.insert.push((ins * 1e6) / N);
    samples.lookup.push((look * 1e6) / N);
    samples.empty.push((empty * 1e6) / N);
  }
  if (sink === 0.5) console.log("");
  const row = (subject: string, name: string, ours: boolean): Row => {
    const s = summarize(samples[name]);
    return {
      section: "fragtable",
      case: `${N} datagrams`,
      subject,
      unit: "ns/op",
      stats: s,
      ours,
      ratio: ours ? undefined : summarize(samples.insert).median / s.median,
    };
  };
  return {
    rows: [
      row("nfqlb_ft_first (insert a datagram)", "insert", true),
      row("nfqlb_ft_next (a later fragment finds it)", "lookup", true),
      row("empty FFI call", "empty", false),
    ],
    goals: [], // the issue sets no bar; the figures go to docs/performance.md
    checks: { "fragtable: every later fragment found its first fragment's fwmark": ok },
  };
}
