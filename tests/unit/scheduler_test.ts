/**
 * Schedulers of new flows when lb keeps a connection table (c/ct_sched.c,
 * `init --scheduler`): each one's picks against its definition (rr's exact
 * cycle, wrr's interleaved sequence and shares, lc/wlc against a reference
 * model of the least loaded row with the rotating tie rule), drained and
 * inactive rows never picked, a table change picked up, two lbs on one
 * table sharing the sequence, the flood guard falling back to Maglev, the
 * per-row counts and the sweep under virtual time; then the command line.
 * Through nfqlb_lb_classify on a real capture (new flows: new source ports).
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import {
  conntrackName,
  type ConntrackOptions,
  ConntrackShm,
  type Scheduler,
  SCHEDULERS,
} from "../../core/conntrack_shm.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import { type PcapPacket, readPcap } from "../helpers/pcap.ts";
import { Classifier, keyOf, MS, T0, withSport } from "../helpers/classifier.ts";
import { TESTDATA } from "../harness/paths.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox, own } from "../helpers/shm.ts";
import { NFQLB_KEY_LEN } from "../../ffi/consts.ts";

const TABLE = "sched";
const SYN = readPcap(`${TESTDATA}/pcap/telnet-ipv4.pcap`)[0];

/** The IPv4 TCP SYN with source port `sport`: flow number sport. */
const flow = (sport: number): PcapPacket => withSport(SYN, sport);

/** Target table `name` with rows `active` (-1 free) and `weights`, and its connection table. */
function setup(
  active: number[],
  weights: number[] | undefined,
  ct: Partial<ConntrackOptions> & { scheduler: Scheduler },
  name = TABLE,
): { table: TargetShm; ct: ConntrackShm } & Disposable {
  TargetShm.create(name, { M: 997, N: 16, ownFwmark: 0 });
  setRows((a, w) => {
    a.set(active);
    if (weights) w.set(weights);
  }, name);
  ConntrackShm.create(conntrackName(name), { capacity: 4096, replace: true, ...ct });
  const table = TargetShm.open(name);
  const c = ConntrackShm.open(conntrackName(name));
  return {
    table,
    ct: c,
    [Symbol.dispose]() {
      c.close();
      table.close();
    },
  };
}

function setRows(change: (active: Int32Array, weights: Uint32Array) => void, name = TABLE): void {
  TargetShm.update(name, (a, _t, w) => {
    change(a, w);
    return true;
  });
}

/** LVS interleaved wrr, straight from its definition (ip_vs_wrr.c), as a list of indexes. */
function lvsWrr(weights: number[]): number[] {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  const g = weights.reduce(gcd), mw = Math.max(...weights), len = weights.reduce((s, w) => s + w, 0) / g;
  const out: number[] = [];
  let i = -1, cw = 0;
  while (out.length < len) {
    i = (i + 1) % weights.length;
    if (i === 0) {
      cw -= g;
      if (cw <= 0) cw = mw;
    }
    if (weights[i] >= cw) out.push(i);
  }
  return out;
}

/** lc/wlc's definition: the eligible index with the least count (per weight), first from `start` on ties. */
function leastModel(counts: number[], weights: number[] | undefined, start: number): number {
  const n = counts.length;
  let best = start;
  for (let k = 1; k < n; k++) {
    const i = (start + k) % n;
    const less = weights ? counts[i] * weights[best] < counts[best] * weights[i] : counts[i] < counts[best];
    if (less) best = i;
  }
  return best;
}

Deno.test("scheduler rr: eligible rows in row order, an exact cycle; drained and free rows skipped", () => {
  using _sb = libSandbox();
  // row 1 drains (weight 0), row 3 is free: rr cycles over rows 0, 2, 4
  using t = setup([101, 102, 103, -1, 105], [1, 0, 7, 1, 1], { scheduler: "rr" });
  using lb = new Classifier(t.table, t.ct);
  assert.equal(t.ct.scheduler, "rr");
  const got = Array.from({ length: 9 }, (_, i) => lb.classify(flow(1000 + i)));
  assert.deepEqual(got, [101, 103, 105, 101, 103, 105, 101, 103, 105]);
  // established flows stay (hits), and consume no position
  for (let i = 0; i < 9; i++) assert.equal(lb.classify(flow(1000 + i), T0 + MS), got[i]);
  assert.equal(lb.classify(flow(2000)), 101);
  const e = t.ct.get(keyOf(flow(2000)), T0)!;
  assert.deepEqual([e.fwmark, e.row], [101, 0]);
  assert.deepEqual([...t.ct.rowCounts(5)], [4, 0, 3, 0, 3]);
  const s = t.ct.stats();
  assert.equal(s.inserts, 10);
  assert.equal(s.hits, 9);
});

Deno.test("scheduler wrr: LVS's interleaved sequence; counts per cycle = weights (gcd reduced)", () => {
  using _sb = libSandbox();
  const weights = [40, 30, 20]; // gcd 10: the cycle is 4, 3, 2 long
  using t = setup([101, 102, 103, 104], [...weights, 0], { scheduler: "wrr" });
  using lb = new Classifier(t.table, t.ct);
  const sched = lib().nfqlb_ct_sched_create(16)!;
  try {
    const seq = new Int32Array(64);
    const len = lib().nfqlb_ct_sched_wrr(sched, t.table.pointer, seq, seq.length);
    assert.equal(len, 9);
    assert.deepEqual([...seq.subarray(0, len)], lvsWrr(weights));
    assert.deepEqual([...seq.subarray(0, len)], [0, 0, 1, 0, 1, 2, 0, 1, 2]);
  } finally {
    lib().nfqlb_ct_sched_destroy(sched);
  }
  const got = Array.from({ length: 27 }, (_, i) => lb.classify(flow(3000 + i)));
  const cycle = lvsWrr(weights).map((i) => 101 + i);
  assert.deepEqual(got, [...cycle, ...cycle, ...cycle]);
  assert.deepEqual([...t.ct.rowCounts(4)], [12, 9, 6, 0]);
});

Deno.test("scheduler wrr: uneven weights match the definition; a huge cycle is capped and keeps every row", () => {
  using _sb = libSandbox();
  using t = setup([101, 102, 103, 104, 105], [5, 1, 3, 2, 7], { scheduler: "wrr" });
  const sched = lib().nfqlb_ct_sched_create(16)!;
  try {
    const seq = new Int32Array(1 << 17);
    const len = lib().nfqlb_ct_sched_wrr(sched, t.table.pointer, seq, seq.length);
    assert.deepEqual([...seq.subarray(0, len)], lvsWrr([5, 1, 3, 2, 7]));
    // weights up to 65535: 65535 + 65534 + 1 > 65536 per cycle, scaled to fit, every row still in it
    setRows((_a, w) => w.set([65535, 65534, 1, 1, 1]));
    const big = lib().nfqlb_ct_sched_wrr(sched, t.table.pointer, seq, seq.length);
    assert.ok(big <= 65536 && big > 60000, String(big));
    const counts = [0, 0, 0, 0, 0];
    for (const r of seq.subarray(0, big)) counts[r]++;
    assert.ok(counts.every((c) => c >= 1), String(counts));
    assert.ok(Math.abs(counts[0] / counts[1] - 65535 / 65534) < 0.01, String(counts));
  } finally {
    lib().nfqlb_ct_sched_destroy(sched);
  }
});

for (const sched of ["lc", "wlc"] as const) {
  Deno.test(`scheduler ${sched}: the least loaded row (the table's counts), ties rotate; expiry and sweep`, () => {
    using _sb = libSandbox();
    const weights = sched === "wlc" ? [3, 1, 2] : undefined;
    // row 3 drains, row 4 free
    using t = setup([101, 102, 103, 104], [...(weights ?? [1, 1, 1]), 0], {
      scheduler: sched,
      ttlMs: { tcp: 1000, udp: 1000, other: 1000 },
    });
    using lb = new Classifier(t.table, t.ct);
    // row 0 starts with 5 flows (made by the operator at T0, row 0)
    for (let i = 0; i < 5; i++) {
      t.ct.set(new Uint8Array(NFQLB_KEY_LEN).fill(i + 1, 0, 16), { fwmark: 101, row: 0, create: true }, T0);
    }
    assert.deepEqual([...t.ct.rowCounts(4)], [5, 0, 0, 0]);
    let position = 0;
    const check = (sport: number, now: bigint) => {
      const counts = [...t.ct.rowCounts(3)];
      const want = leastModel(counts, weights, position++ % 3);
      assert.equal(lb.classify(flow(sport), now), 101 + want, `flow ${sport}, counts ${counts}`);
    };
    for (let i = 0; i < 30; i++) check(4000 + i, T0 + 500n * MS);
    const c = [...t.ct.rowCounts(4)];
    assert.equal(c[3], 0);
    assert.equal(c[0] + c[1] + c[2], 35);
    if (sched === "lc") assert.ok(Math.max(...c.slice(0, 3)) - Math.min(...c.slice(0, 3)) <= 1, String(c));
    else assert.ok(Math.abs(c[0] / 3 - c[1]) <= 1 && Math.abs(c[2] / 2 - c[1]) <= 1, String(c));
    // the operator's 5 flows expire (idle > 1000 ms at T0 + 1001 ms) but count until reclaimed
    const later = T0 + 1001n * MS;
    assert.deepEqual([...t.ct.rowCounts(4)], c);
    assert.equal(t.ct.sweep(4096, later), 5);
    const after = [...t.ct.rowCounts(4)];
    assert.equal(after[0], c[0] - 5);
    // so row 0 is now the least loaded and the next picks follow the new counts
    for (let i = 0; i < 10; i++) check(5000 + i, later);
    assert.equal(t.ct.stats().expirations, 5);
  });
}

Deno.test("schedulers never pick free or drained rows; a table change brings the new eligible set", () => {
  using _sb = libSandbox();
  for (const sched of SCHEDULERS) {
    using t = setup([101, -1, 103, 104, 105], [1, 1, 0, 2, 1], { scheduler: sched });
    using lb = new Classifier(t.table, t.ct);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(lb.classify(flow(6000 + i)));
    assert.deepEqual([...seen].sort(), [101, 104, 105], sched);
    // 103 is back (weight 1), 104 leaves: new flows see that at once; 104's flows move on their next packet
    setRows((a, w) => {
      w[2] = 1;
      a[3] = -1;
    });
    const seen2 = new Set<number>();
    for (let i = 0; i < 200; i++) seen2.add(lb.classify(flow(7000 + i)));
    assert.deepEqual([...seen2].sort(), [101, 103, 105], sched);
    for (let i = 0; i < 200; i++) assert.notEqual(lb.classify(flow(6000 + i), T0 + MS), 104);
    assert.equal(t.ct.rowCounts(5)[3], 0, sched);
    assert.equal(lb.counters[COUNTER_NAMES.indexOf("notarget")], 0n);
  }
});

Deno.test("scheduler rr: two lbs (queue workers) on one table follow one sequence together", () => {
  using _sb = libSandbox();
  using t = setup([101, 102, 103, 104], undefined, { scheduler: "rr" });
  using a = new Classifier(t.table, t.ct);
  using b = new Classifier(t.table, t.ct);
  const got: number[] = [];
  // an uneven interleaving: a, b, b, a, a, a, b, ...
  const who = [a, b, b, a, a, a, b, a, b, b, b, a];
  who.forEach((lb, i) => got.push(lb.classify(flow(8000 + i))));
  assert.deepEqual(got, [101, 102, 103, 104, 101, 102, 103, 104, 101, 102, 103, 104]);
  // wrr likewise: both rebuild the same sequence and share the position
  using w = setup([101, 102], [2, 1], { scheduler: "wrr" }, "sched2");
  using c = new Classifier(w.table, w.ct);
  using d = new Classifier(w.table, w.ct);
  const got2 = [c, d, d, c, d, c].map((lb, i) => lb.classify(flow(9000 + i)));
  assert.deepEqual(got2, [101, 101, 102, 101, 101, 102]);
});

Deno.test("schedulers and the flood guard: a new flow over the limit is Maglev's and not stored", () => {
  using _sb = libSandbox();
  using t = setup([101, 102, 103, 104, 105, 106], undefined, { scheduler: "rr", floodPerSecond: 3 });
  using lb = new Classifier(t.table, t.ct);
  using plain = new Classifier(t.table);
  assert.deepEqual([0, 1, 2].map((i) => lb.classify(flow(100 + i))), [101, 102, 103]);
  // over the limit in this second: each packet of such a flow hashes to one target (stable), nothing stored
  for (let i = 3; i < 40; i++) {
    const p = flow(100 + i);
    assert.equal(lb.classify(p), plain.classify(p));
    assert.equal(lb.classify(p), plain.classify(p));
  }
  let s = t.ct.stats();
  assert.equal(s.entries, 3);
  assert.equal(s.floodSkips, 74);
  // established flows are not new flows; the next second admits new ones again, continuing the cycle
  assert.equal(lb.classify(flow(101)), 102);
  assert.equal(lb.classify(flow(500), T0 + 1000n * MS), 104);
  s = t.ct.stats();
  assert.equal(s.entries, 4);
  assert.equal(s.floodSkips, 74);
});

Deno.test("scheduler maglev (default): decisions are the hash's, the position never moves", () => {
  using _sb = libSandbox();
  using t = setup([101, 102, 103], undefined, { scheduler: "maglev" });
  using lb = new Classifier(t.table, t.ct);
  using plain = new Classifier(t.table);
  for (let i = 0; i < 50; i++) assert.equal(lb.classify(flow(100 + i)), plain.classify(flow(100 + i)));
  assert.equal(lib().nfqlb_ct_position_next(t.ct.pointer), 0n);
  const counts = t.ct.rowCounts(3);
  assert.equal(counts[0] + counts[1] + counts[2], 50);
  assert.deepEqual([...counts], [...t.ct.countByRow(3, T0)]);
});

// ---------------------------------------------------------------------------
// command line

const FLOW = ["--src=10.0.0.1:1234", "--dst=10.0.0.2:80", "--proto=tcp"];

Deno.test("scheduler cli: init --scheduler, ct-stats reports it and the connections per target", async () => {
  using sb = libSandbox();
  const ok = async (args: string[]) => {
    const r = await nfqlb(args, sb.env);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  await ok(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64"]);
  assert.equal(JSON.parse(await ok(["ct-stats", "--shm=t"])).scheduler, "maglev");
  await ok(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64", "--scheduler=wlc"]);
  await ok(["activate", "--shm=t", "101", "102"]);
  await ok(["ct-set", "--shm=t", ...FLOW, "--fwmark=102"]);
  await ok(["ct-set", "--shm=t", "--src=10.0.0.3:1", "--dst=10.0.0.2:80", "--proto=tcp", "--fwmark=102"]);
  await ok(["ct-set", "--shm=t", "--src=10.0.0.4:1", "--dst=10.0.0.2:80", "--proto=udp", "--fwmark=101"]);
  const s = JSON.parse(await ok(["ct-stats", "--shm=t"]));
  assert.equal(s.scheduler, "wlc");
  assert.deepEqual(s.connections, { "101": 1, "102": 2 });
  // a target that left: its entries are shown by row until they go
  await ok(["deactivate", "--shm=t", "102"]);
  assert.deepEqual(JSON.parse(await ok(["ct-stats", "--shm=t"])).connections, { "101": 1, "row:1": 2 });
  const ct = ConntrackShm.open("t-ct");
  try {
    assert.equal(ct.scheduler, "wlc");
  } finally {
    ct.close();
  }
});

Deno.test("scheduler cli: bad --scheduler input exits 1 with one line; existing files unchanged", async () => {
  using sb = libSandbox();
  const r0 = await nfqlb(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64", "--scheduler=rr"], sb.env);
  assert.equal(r0.code, 0, r0.stderr);
  const before = [sb.bytes("t"), sb.bytes(own("t-ct"))];
  const cases: { args: string[]; want: RegExp }[] = [
    {
      args: ["--scheduler=bogus", "--conntrack=64"],
      want: /^init: invalid --scheduler value 'bogus' \(expected one of maglev, rr, wrr, lc, wlc\)$/,
    },
    { args: ["--scheduler=RR", "--conntrack=64"], want: /'RR'/ },
    { args: ["--scheduler=", "--conntrack=64"], want: /invalid --scheduler value ''/ },
    { args: ["--scheduler=rr"], want: /^init: --scheduler 'rr' needs --conntrack=MAX \(MAX > 0\)$/ },
    { args: ["--scheduler=lc", "--conntrack=0"], want: /--scheduler 'lc' needs --conntrack/ },
  ];
  for (const c of cases) {
    const r = await nfqlb(["init", "--shm=t", "--M=97", "--N=4", ...c.args], sb.env);
    const lines = r.stderr.split("\n");
    assert.equal(r.code, 1, c.args.join(" "));
    assert.equal(r.stdout, "");
    assert.equal(lines.length, 2, r.stderr);
    assert.match(lines[0], c.want);
    assert.deepEqual([sb.bytes("t"), sb.bytes(own("t-ct"))], before, `${c.args.join(" ")} changed a file`);
  }
});

Deno.test("scheduler cli: a version-1 table is refused naming init, and init --conntrack replaces it", async () => {
  using sb = libSandbox();
  assert.equal((await nfqlb(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64"], sb.env)).code, 0);
  const f = Deno.openSync(sb.path(own("t-ct")), { write: true });
  try {
    f.seekSync(4, Deno.SeekMode.Start);
    f.writeSync(new Uint8Array([1, 0])); // version 1
  } finally {
    f.close();
  }
  const r = await nfqlb(["ct-stats", "--shm=t"], sb.env);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    "FAILED mapSharedData: t-ct: unsupported connection table version 1 (older nfqlb-deno); " +
      "re-create it with: nfqlb init --shm=t --conntrack=MAX\n",
  );
  const r2 = await nfqlb(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64", "--scheduler=lc"], sb.env);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(JSON.parse((await nfqlb(["ct-stats", "--shm=t"], sb.env)).stdout).scheduler, "lc");
});
