/**
 * Connection tables in flowlb (c/flows.c nfqlb_flows_publish_views, c/lb.c):
 * through a flowlb classifier (nfqlb_lb_create_flows + nfqlb_lb_classify) on
 * a real capture, with two flows to two target tables, one with a connection
 * table and one without. The first keeps its flows on their stored target
 * across a target change, the second follows Maglev; a key that moves to the
 * other flow and back finds its entry again; a table's rr scheduler deals new
 * flows in rr order across workers and republications. Then the registry
 * that maps `<shm>-ct` beside its target. Virtual time.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { conntrackName, type ConntrackOptions, ConntrackShm } from "../../core/conntrack_shm.ts";
import type { Flow } from "../../core/flow/types.ts";
import { FlowTable } from "../../core/flow/table.ts";
import { buildFlowSet } from "../../dataplane/flowlb.ts";
import { TargetRegistry } from "../../dataplane/target_registry.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import { type PcapPacket, readPcap } from "../helpers/pcap.ts";
import { keyOf, MS, T0, withSport } from "../helpers/classifier.ts";
import { TESTDATA } from "../harness/paths.ts";
import { libSandbox } from "../helpers/shm.ts";

const SYN = readPcap(`${TESTDATA}/pcap/telnet-ipv4.pcap`)[0];

/** The IPv4 TCP SYN with source port `sport`: one flow per port. */
const pkt = (sport: number): PcapPacket => withSport(SYN, sport);

function setRows(name: string, change: (active: Int32Array, weights: Uint32Array) => void): void {
  TargetShm.update(name, (a, _t, w) => {
    change(a, w);
    return true;
  });
}

/** Target table `name` with rows `active`, and its connection table when `ct` is given. */
function makeTable(name: string, active: number[], ct?: Partial<ConntrackOptions>): void {
  TargetShm.create(name, { M: 997, N: 32, ownFwmark: 0 });
  setRows(name, (a) => a.set(active));
  if (ct) ConntrackShm.create(conntrackName(name), { capacity: 8192, ...ct });
}

/** TCP flows by source-port range, as a FlowTable makes them: [name, target, sports, priority?]. */
function flows(defs: [string, string, string, number?][]): readonly Flow[] {
  const t = new FlowTable("flow");
  for (const [name, target, sports, priority] of defs) {
    assert.equal(t.set({ name, target, protocols: "tcp", sports, priority: String(priority ?? 0) }), "OK");
  }
  return t.activeFlows();
}

/** A flowlb's published flow set, the registry that maps its tables, and one classifier per worker. */
class FlowLb implements Disposable {
  readonly registry = new TargetRegistry();
  readonly flows: Deno.PointerObject;
  readonly lbs: Deno.PointerObject[] = [];
  readonly counters = new BigUint64Array(COUNTER_NAMES.length);
  #names: string[] = [];

  constructor(workers: number) {
    this.flows = lib().nfqlb_flows_create(workers)!;
    for (let slot = 0; slot < workers; slot++) {
      this.lbs.push(lib().nfqlb_lb_create_flows(this.flows, slot, null, 1, -1, -1, 0)!);
    }
  }

  /** Publishes `list` as flowlb does: each flow with its table's view and its connection table's address. */
  publish(list: readonly Flow[]): void {
    const names = list.flatMap((f) => f.target === null ? [] : [f.target]);
    for (const n of names) assert.ok(this.registry.acquire(n), n);
    for (const n of this.#names) this.registry.release(n);
    this.#names = names;
    const views = new BigUint64Array(list.map((f) => this.registry.viewAddress(f.target)));
    const ct = new BigUint64Array(list.map((f) => this.registry.conntrackAddress(f.target)));
    assert.ok(lib().nfqlb_flows_publish_views(this.flows, buildFlowSet(list), views, ct, list.length) > 0);
  }

  /** One packet as a batch of one: the tables' copies refreshed first, as nfqlb_queue_serve does. */
  classify(p: PcapPacket, now = T0, worker = 0): number {
    lib().nfqlb_lb_refresh(this.lbs[worker], null);
    return lib().nfqlb_lb_classify(this.lbs[worker], p.hwProto, p.data, p.data.length, now, this.counters);
  }

  [Symbol.dispose](): void {
    for (const lb of this.lbs) lib().nfqlb_lb_destroy(lb);
    lib().nfqlb_flows_destroy(this.flows);
    this.registry.closeAll();
  }
}

/** Maglev's answer for table `name` (a plain lb classifier without a connection table). */
class Maglev implements Disposable {
  readonly #table: TargetShm;
  readonly #lb: Deno.PointerObject;
  readonly #counters = new BigUint64Array(COUNTER_NAMES.length);
  constructor(name: string) {
    this.#table = TargetShm.open(name);
    this.#lb = lib().nfqlb_lb_create(this.#table.pointer, null, 1, 0, -1)!;
  }
  classify(p: PcapPacket): number {
    return lib().nfqlb_lb_classify(this.#lb, p.hwProto, p.data, p.data.length, T0, this.#counters);
  }
  [Symbol.dispose](): void {
    lib().nfqlb_lb_destroy(this.#lb);
    this.#table.close();
  }
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const A_PORTS = range(20000, 300), B_PORTS = range(21000, 300);

Deno.test("flowlb conntrack: the target with a table keeps its flows across a change, the other follows Maglev", () => {
  using _sb = libSandbox();
  makeTable("ta", range(101, 10), {});
  makeTable("tb", range(201, 10));
  using lb = new FlowLb(1);
  lb.publish(flows([["a", "ta", "20000-20999"], ["b", "tb", "21000-21999"]]));
  using magA = new Maglev("ta");
  using magB = new Maglev("tb");
  const ct = lb.registry.conntracks().get("ta")!;
  assert.ok(ct);
  assert.deepEqual([...lb.registry.conntracks().keys()], ["ta"]);
  assert.equal(lb.registry.conntrackAddress("tb"), 0n);

  // first packets: Maglev everywhere; only ta's flows are stored, in ta's table
  const first = new Map<number, number>();
  for (const p of [...A_PORTS, ...B_PORTS]) first.set(p, lb.classify(pkt(p)));
  for (const p of A_PORTS) assert.equal(first.get(p), magA.classify(pkt(p)));
  for (const p of B_PORTS) assert.equal(first.get(p), magB.classify(pkt(p)));
  for (const p of A_PORTS) assert.equal(ct.get(keyOf(pkt(p)), T0)?.fwmark, first.get(p));
  for (const p of B_PORTS) assert.equal(ct.get(keyOf(pkt(p)), T0), undefined);
  let s = ct.stats();
  assert.deepEqual([s.entries, s.inserts, s.misses, s.hits], [300, 300, 300, 0]);

  // ten more targets in each table: Maglev moves some flows of both
  setRows("ta", (a) => a.set(range(111, 10), 10));
  setRows("tb", (a) => a.set(range(211, 10), 10));
  const movedA = A_PORTS.filter((p) => magA.classify(pkt(p)) !== first.get(p));
  const movedB = B_PORTS.filter((p) => magB.classify(pkt(p)) !== first.get(p));
  assert.ok(movedA.length > 30 && movedB.length > 30, `moved ${movedA.length} / ${movedB.length}`);
  for (const p of A_PORTS) assert.equal(lb.classify(pkt(p), T0 + MS), first.get(p), `ta ${p}`);
  for (const p of B_PORTS) assert.equal(lb.classify(pkt(p), T0 + MS), magB.classify(pkt(p)), `tb ${p}`);
  s = ct.stats();
  assert.deepEqual([s.entries, s.hits], [300, 300]);

  // a target leaves ta: only its flows move, to Maglev's answer, and are stored again
  const gone = first.get(A_PORTS[0])!;
  setRows("ta", (a) => (a[a.indexOf(gone)] = -1));
  for (const p of A_PORTS) {
    const fw = lb.classify(pkt(p), T0 + 2n * MS);
    assert.equal(fw, first.get(p) === gone ? magA.classify(pkt(p)) : first.get(p), `ta ${p}`);
    assert.equal(ct.get(keyOf(pkt(p)), T0 + 2n * MS)?.fwmark, fw);
  }
  assert.equal(lb.counters[COUNTER_NAMES.indexOf("malformed")], 0n);
  assert.equal(lb.counters[COUNTER_NAMES.indexOf("notarget")], 0n);
});

Deno.test("flowlb conntrack: a key that matches another flow uses that flow's table; back again, its entry holds", () => {
  using _sb = libSandbox();
  makeTable("ta", range(101, 10), {});
  makeTable("tb", range(201, 10));
  using lb = new FlowLb(1);
  using magA = new Maglev("ta");
  using magB = new Maglev("tb");
  const both = flows([["a", "ta", "20000-20999"], ["b", "tb", "21000-21999"]]);
  lb.publish(both);
  const first = new Map(A_PORTS.map((p) => [p, lb.classify(pkt(p))]));
  setRows("ta", (a) => a.set(range(111, 10), 10));
  const moved = A_PORTS.filter((p) => magA.classify(pkt(p)) !== first.get(p));
  assert.ok(moved.length > 30, `moved ${moved.length}`);

  // flow b now takes 20000-20999 first: those keys go to tb, by Maglev (tb has no table)
  lb.publish(flows([["a", "ta", "20000-20999"], ["b", "tb", "20000-21999", 10]]));
  for (const p of A_PORTS) assert.equal(lb.classify(pkt(p), T0 + MS), magB.classify(pkt(p)), `tb ${p}`);
  // back to ta: ta's entries are still there, so no flow moved even where Maglev would
  lb.publish(both);
  for (const p of A_PORTS) assert.equal(lb.classify(pkt(p), T0 + 2n * MS), first.get(p), `ta ${p}`);
  const ct = lb.registry.conntracks().get("ta")!;
  assert.deepEqual([ct.stats().entries, ct.stats().hits], [300, 300]);
});

Deno.test("flowlb conntrack: rr deals new flows in row order across workers and republications", () => {
  using _sb = libSandbox();
  makeTable("ta", [101, 102, 103, -1, 105], { scheduler: "rr" });
  makeTable("tb", range(201, 4));
  setRows("ta", (_a, w) => (w[1] = 0)); // draining: no new flow
  using lb = new FlowLb(2);
  using magB = new Maglev("tb");
  lb.publish(flows([["a", "ta", "20000-20999"], ["b", "tb", "21000-21999"]]));
  // two workers, unevenly interleaved, with tb's Maglev flows in between
  const who = [0, 1, 1, 0, 0, 0, 1, 0, 1];
  const got = who.map((w, i) => {
    const b = pkt(21000 + i);
    assert.equal(lb.classify(b, T0, 1 - w), magB.classify(b));
    return lb.classify(pkt(20000 + i), T0, w);
  });
  assert.deepEqual(got, [101, 103, 105, 101, 103, 105, 101, 103, 105]);
  // established flows are hits on either worker and take no turn
  for (let i = 0; i < 9; i++) assert.equal(lb.classify(pkt(20000 + i), T0 + MS, i % 2), got[i]);
  // a republication (new scheduler caches) continues the table's sequence; a table change is seen
  lb.publish(flows([["a2", "ta", "20000-20999"], ["b", "tb", "21000-21999"]]));
  setRows("ta", (a) => (a[3] = 104));
  const next = [0, 1, 0, 1].map((w, i) => lb.classify(pkt(20100 + i), T0 + 2n * MS, w));
  assert.deepEqual(next, [103, 104, 105, 101]); // position 9 of rows 0, 2, 3, 4
  const ct = lb.registry.conntracks().get("ta")!;
  assert.deepEqual([...ct.rowCounts(5)], [4, 0, 4, 1, 4]);
  assert.equal(ct.stats().inserts, 13);
});

Deno.test("TargetRegistry: maps <shm>-ct beside its table; a bad one is not used; unmapped after release", () => {
  using _sb = libSandbox();
  makeTable("ta", [101], {});
  makeTable("tb", [201]);
  makeTable("tc", [301]);
  Deno.writeFileSync(`${_sb.dir}/${conntrackName("tc")}`, new Uint8Array(4096)); // not a table
  const reg = new TargetRegistry();
  try {
    for (const n of ["ta", "tb", "tc"]) assert.ok(reg.acquire(n));
    assert.ok(!reg.acquire("none"));
    assert.notEqual(reg.conntrackAddress("ta"), 0n);
    assert.equal(reg.conntrackAddress("tb"), 0n);
    assert.equal(reg.conntrackAddress("tc"), 0n);
    assert.equal(reg.conntrackAddress(null), 0n);
    assert.deepEqual([...reg.conntracks().keys()], ["ta"]);
    // shared by name: one mapping for two references
    const addr = reg.conntrackAddress("ta");
    assert.ok(reg.acquire("ta"));
    assert.equal(reg.conntrackAddress("ta"), addr);
    reg.release("ta");
    assert.equal(reg.conntrackAddress("ta"), addr);
    assert.ok(!reg.pending);
    reg.release("ta");
    assert.equal(reg.conntrackAddress("ta"), 0n);
    assert.ok(reg.pending);
    reg.sweep();
    assert.ok(!reg.pending);
    assert.equal(reg.conntracks().size, 0);
  } finally {
    reg.closeAll();
  }
});
