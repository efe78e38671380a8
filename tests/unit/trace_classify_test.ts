/**
 * Trace records from the C classifier (c/lb.c + c/trace.c) through FFI,
 * formatted by dataplane/trace_format.ts: the exact trace lines of
 * upstream for lb and flowlb, the `flows` block with its ICMP lines (the inner
 * packet of ICMP errors), per-bit selection, and nothing at all with mask 0.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import type { Flow } from "../../core/flow/types.ts";
import { FlowTable } from "../../core/flow/table.ts";
import { PROTOCOLS } from "../../core/ip_protocols.ts";
import { buildFlowSet } from "../../dataplane/flowlb.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import {
  decodeRecord,
  formatRecords,
  TEV,
  TRACE,
  TRACE_REC_LEN,
  TRACE_RING_HEADER,
  type TraceLine,
  type TraceNames,
} from "../../dataplane/trace_format.ts";
import {
  icmp6PacketTooBig,
  icmpFragNeeded,
  ipv4Header,
  ipv6Packet,
  l4Head,
  udpFragments,
} from "../harness/packets.ts";

const L = lib();
const NOW = 1_000_000_000n;

/** A temp shm dir with table `t` (M=97, N=4, fwmarks 101..103 active) for the duration of fn. */
function withTable<T>(fn: (table: TargetShm) => T, active = [101, 102, 103]): T {
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-trace-test-" });
  const before = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", dir);
  try {
    TargetShm.create("t", { M: 97, N: 4, ownFwmark: 0 });
    TargetShm.update("t", (a) => {
      active.forEach((fw, i) => (a[i] = fw));
      return true;
    });
    const table = TargetShm.open("t");
    try {
      return fn(table);
    } finally {
      table.close();
    }
  } finally {
    if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
}

/** IPv4 UDP/TCP packet with `payload` bytes after the 8-byte L4 head. */
function v4(
  proto: "udp" | "tcp",
  src: string,
  sport: number,
  dst: string,
  dport: number,
  payload = 32,
): Uint8Array {
  const l4len = proto === "tcp" ? 20 : 8;
  const p = new Uint8Array(20 + l4len + payload);
  p.set(ipv4Header({ src, dst, proto: PROTOCOLS[proto], totalLength: p.length }), 0);
  p.set(l4Head(proto, sport, dport, 8 + payload), 20);
  if (proto === "tcp") p[32] = 0x50;
  return p;
}

/** IPv4 ICMP echo request. */
function ping4(src: string, dst: string, id: number, seq: number): Uint8Array {
  const p = new Uint8Array(20 + 8 + 56);
  p.set(ipv4Header({ src, dst, proto: 1, totalLength: p.length }), 0);
  p[20] = 8;
  new DataView(p.buffer).setUint16(24, id);
  new DataView(p.buffer).setUint16(26, seq);
  return p;
}

/** A classifier with tracing; classify() returns the verdict, lines() the formatted records so far. */
class Traced {
  readonly lb: Deno.PointerObject;
  readonly word: Deno.PointerObject;
  readonly ring: Deno.PointerObject;
  readonly head: Uint32Array;
  readonly counters = new BigUint64Array(COUNTER_NAMES.length);
  names: TraceNames = { target: () => "t", traceFlow: (id) => `flow${id}` };

  constructor(lb: Deno.PointerObject, tflows: Deno.PointerObject | null = null, cap = 64) {
    this.lb = lb;
    this.word = L.nfqlb_trace_mask_create()!;
    this.ring = L.nfqlb_trace_ring_create(cap)!;
    this.head = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(this.ring, TRACE_RING_HEADER));
    L.nfqlb_lb_set_trace(lb, this.word, this.ring, tflows);
  }

  #mask = 0;

  /** The mask of the (one) client: what the classifier records and lines() keeps. */
  set mask(m: number) {
    this.#mask = m;
    L.nfqlb_trace_mask_set(this.word, m);
  }

  classify(pkt: Uint8Array, hw = 0x0800): number {
    return L.nfqlb_lb_classify(this.lb, hw, pkt as Uint8Array<ArrayBuffer>, pkt.length, NOW, this.counters);
  }

  /** The records so far (the ring is emptied). */
  take(): { bytes: Uint8Array; count: number; dropped: number } {
    const count = this.head[0], dropped = this.head[2];
    const bytes = new Uint8Array(count * TRACE_REC_LEN);
    bytes.set(
      new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(this.ring, bytes.length, TRACE_RING_HEADER)),
    );
    this.head[0] = 0;
    this.head[2] = 0;
    return { bytes, count, dropped };
  }

  /** The lines of the records so far for a client with `mask` (default: the one set). */
  lines(mask = this.#mask): string[] {
    const { bytes, count } = this.take();
    return formatRecords(bytes, count, this.names).filter((l: TraceLine) => l.bits & mask).map((l) => l.text);
  }

  free(): void {
    L.nfqlb_lb_set_trace(this.lb, null, null, null);
    L.nfqlb_trace_ring_free(this.ring);
    L.nfqlb_trace_mask_free(this.word);
    L.nfqlb_lb_destroy(this.lb);
  }
}

Deno.test("trace lb: nothing with mask 0, `Load-balance packet. fw=` per packet with packet", () => {
  withTable((table) => {
    const t = new Traced(L.nfqlb_lb_create(table.pointer, null, 1, 0, -1)!);
    try {
      const pkts = Array.from({ length: 20 }, (_, i) => v4("udp", "10.0.0.1", 20000 + i, "10.0.0.100", 5000));
      const plain = pkts.map((p) => t.classify(p));
      assert.equal(t.head[0], 0, "mask 0: no record");
      t.mask = TRACE.frag | TRACE.flows; // nothing of an lb's unfragmented packets
      pkts.forEach((p) => t.classify(p));
      assert.equal(t.head[0], 0, "frag|flows: no record for plain lb packets");
      t.mask = TRACE.packet;
      const traced = pkts.map((p) => t.classify(p));
      assert.deepEqual(traced, plain, "tracing does not change a verdict");
      assert.deepEqual(t.lines(), plain.map((fw) => `Load-balance packet. fw=${fw}`));
      // a packet without a key, and one with no target (ours: upstream is silent)
      assert.equal(t.classify(new Uint8Array(10)), -1);
      assert.deepEqual(t.lines(), ["getHashKey rc=-1. proto=2048, len=10"]);
    } finally {
      t.free();
    }
  });
  withTable((table) => {
    const t = new Traced(L.nfqlb_lb_create(table.pointer, null, 1, 0, 77)!);
    try {
      t.mask = TRACE.packet;
      assert.equal(t.classify(v4("udp", "10.0.0.1", 1, "10.0.0.100", 5000)), 77);
      assert.deepEqual(t.lines(), ["No targets. fw=77"]);
    } finally {
      t.free();
    }
  }, []);
});

Deno.test("trace lb: fragments (frag), the ring drops and counts when full", () => {
  withTable((table) => {
    const ft = L.nfqlb_ft_create(50, 50, 200, 1500, 0, 0, null)!;
    const t = new Traced(L.nfqlb_lb_create(table.pointer, ft, 1, 0, -1)!, null, 4);
    try {
      t.mask = TRACE.frag | TRACE.packet;
      const frags = udpFragments({
        src: "10.0.0.1",
        dst: "10.0.0.100",
        sport: 3000,
        dport: 5000,
        payload: new Uint8Array(3000),
        id: 77,
      });
      assert.equal(frags.length, 3);
      const fw = t.classify(frags[0]);
      assert.ok(fw >= 101);
      assert.equal(t.classify(frags[1]), fw);
      assert.deepEqual(t.lines(), [
        "First fragment",
        `Load-balance packet. fw=${fw}`,
        `Handle non-first frag locally fwmark=${fw}`,
      ]);
      // a later fragment of an unknown datagram, with nowhere to store it: lost
      assert.equal(
        t.classify(
          udpFragments({
            ...{ src: "10.0.0.2", dst: "10.0.0.100" },
            sport: 1,
            dport: 2,
            payload: new Uint8Array(3000),
            id: 9,
          })[2],
        ),
        -1,
      );
      assert.deepEqual(t.lines(TRACE.frag), ["Fragment dropped"]);
      // only the bits asked for: packet alone has no fragment lines
      t.mask = TRACE.packet;
      const fw2 = t.classify(
        udpFragments({
          src: "10.0.0.3",
          dst: "10.0.0.100",
          sport: 1,
          dport: 2,
          payload: new Uint8Array(3000),
          id: 10,
        })[0],
      );
      assert.deepEqual(t.lines(TRACE.packet), [`Load-balance packet. fw=${fw2}`]);
      // ring of 4: the fifth record is dropped and counted
      for (let i = 0; i < 6; i++) t.classify(v4("udp", "10.0.0.9", 100 + i, "10.0.0.100", 5000));
      const r = t.take();
      assert.deepEqual([r.count, r.dropped], [4, 2]);
    } finally {
      t.free();
      L.nfqlb_ft_destroy(ft);
    }
  });
});

/** Flow objects as a FlowTable makes them (every target accepted). */
function flows(kind: "flow" | "trace", defs: Record<string, string>[]): readonly Flow[] {
  const t = new FlowTable(kind);
  for (const d of defs) assert.equal(t.set(d), "OK", JSON.stringify(d));
  return t.activeFlows();
}

/** A flowlb classifier over `main` flows (all to table t) with trace flows `tr` (ids = index + 1). */
function flowlb(
  table: TargetShm,
  main: readonly Flow[],
  tr: readonly Flow[],
  nolb = -1,
  notargets = -1,
): { t: Traced; tf: Deno.PointerObject; done: () => void } {
  const f = L.nfqlb_flows_create(1)!, tf = L.nfqlb_flows_create(1)!;
  const addrs = new BigUint64Array(Math.max(1, main.length));
  main.forEach((
    x,
    i,
  ) => (addrs[i] = x.target === null ? 0n : Deno.UnsafePointer.value(table.pointer) as bigint));
  assert.ok(L.nfqlb_flows_publish(f, buildFlowSet(main), addrs, main.length) > 0);
  const ids = new BigUint64Array(Math.max(1, tr.length));
  tr.forEach((_, i) => (ids[i] = BigInt(i + 1)));
  assert.ok(L.nfqlb_flows_publish(tf, buildFlowSet(tr, true), ids, tr.length) > 0);
  const lb = L.nfqlb_lb_create_flows(f, 0, null, 1, notargets, nolb, 0)!;
  const t = new Traced(lb, tf);
  t.names = { target: () => "vip-a", traceFlow: (id) => tr[id - 1].name };
  return {
    t,
    tf,
    done: () => {
      t.free();
      L.nfqlb_flows_destroy(f);
      L.nfqlb_flows_destroy(tf);
    },
  };
}

Deno.test("trace flowlb: the flows block selects exactly the trace flow's packets (exact lines)", () => {
  withTable((table) => {
    const main = flows("flow", [{ name: "a", target: "t", protocols: "udp,tcp", dsts: "10.0.0.0/24" }]);
    const tr = flows("trace", [{ name: "sel", srcs: "20.0.0.1/32", protocols: "udp", sports: "4000" }]);
    const { t, tf, done } = flowlb(table, main, tr, 55);
    try {
      const sel = v4("udp", "20.0.0.1", 4000, "10.0.0.1", 5000);
      const other = [
        v4("udp", "20.0.0.1", 4001, "10.0.0.1", 5000),
        v4("udp", "20.0.0.2", 4000, "10.0.0.1", 5000),
        v4("tcp", "20.0.0.1", 4000, "10.0.0.1", 5000),
      ];
      t.mask = TRACE.flows;
      const fw = t.classify(sel);
      other.forEach((p) => t.classify(p));
      assert.deepEqual(t.lines(), [
        "",
        "Match for trace-flow: sel",
        `proto=udp, len=${sel.length}, ::ffff:20.0.0.1 4000 -> ::ffff:10.0.0.1 5000`,
        `target=vip-a, fwmark=${fw}`,
      ]);
      // the same packets with packet|flows: upstream's flowlb packet lines for all, the block for one
      t.mask = TRACE.flows | TRACE.packet;
      t.classify(sel);
      const lines = t.lines();
      assert.equal(lines.filter((l) => l.startsWith("Match for trace-flow")).length, 1);
      assert.deepEqual(lines.slice(-2), [
        "Using LB; vip-a",
        `Packet; proto=17, len=${sel.length}, fwmark=${fw}`,
      ]);
      // no flow: Failed flowLookup, and in the block NO target with the nolb fwmark
      const nolb = v4("udp", "20.0.0.1", 4000, "10.9.0.1", 5000);
      assert.equal(t.classify(nolb), 55);
      assert.deepEqual(t.lines(), [
        "",
        "Match for trace-flow: sel",
        `proto=udp, len=${nolb.length}, ::ffff:20.0.0.1 4000 -> ::ffff:10.9.0.1 5000`,
        "Failed flowLookup",
        "NO target, fwmark=55",
      ]);
      // the trace flow's matches_count (trace-flow-list) counts the packets it selected while traced
      assert.equal(L.nfqlb_flows_matches(tf, 0), 3);
      t.mask = 0;
      t.classify(sel);
      assert.equal(L.nfqlb_flows_matches(tf, 0), 3, "not matched while `flows` is not traced");
    } finally {
      done();
    }
  });
});

Deno.test("trace flowlb: ICMP lines, the inner packet of ICMP errors, promiscuous ping on trace flows", () => {
  withTable((table) => {
    const main = flows("flow", [
      { name: "a", target: "t", protocols: "tcp", dsts: "10.0.0.0/24,1000::/64" },
    ]);
    const tr = flows("trace", [{ name: "client", srcs: "20.0.0.1/32,2000::1/128" }]);
    const { t, done } = flowlb(table, main, tr, 55, 66);
    try {
      t.mask = TRACE.flows;
      // frag-needed quoting VIP:80 -> client:45118: the flipped inner packet is client -> VIP
      const fn = icmpFragNeeded(
        { vip: "10.0.0.1", vipPort: 80, client: "20.0.0.1", clientPort: 45118, proto: "tcp" },
        { from: "192.168.1.1", mtu: 1400 },
      );
      const fw = t.classify(fn);
      assert.ok(fw >= 101);
      // echo request: matched by the trace flow (promiscuous ping), no flow for it in the main set
      const ping = ping4("20.0.0.1", "10.0.0.1", 58880, 3);
      assert.equal(t.classify(ping), 55);
      // ICMPv6 packet-too-big quoting VIP:80 -> client:45118
      const ptb = ipv6Packet(
        "3000::9",
        "1000::1",
        58,
        icmp6PacketTooBig(
          { vip: "1000::1", vipPort: 80, client: "2000::1", clientPort: 45118, proto: "tcp" },
          1480,
        ),
      );
      const fw6 = t.classify(ptb, 0x86dd);
      assert.ok(fw6 >= 101);
      const echo6 = new Uint8Array(16);
      echo6[0] = 128;
      new DataView(echo6.buffer).setUint16(4, 7);
      new DataView(echo6.buffer).setUint16(6, 9);
      t.classify(ipv6Packet("2000::1", "1000::1", 58, echo6), 0x86dd);
      assert.deepEqual(t.lines(), [
        "",
        "Match for trace-flow: client",
        "ICMP_DEST_UNREACH/FRAG_NEEDED: mtu=1400",
        `proto=tcp, len=${fn.length}, ::ffff:20.0.0.1 45118 -> ::ffff:10.0.0.1 80`,
        `target=vip-a, fwmark=${fw}`,
        "",
        "Match for trace-flow: client",
        "ICMP_ECHO: id=58880, seq=3",
        `proto=icmp, len=${ping.length}, ::ffff:20.0.0.1 0 -> ::ffff:10.0.0.1 0`,
        "NO target, fwmark=55",
        "",
        "Match for trace-flow: client",
        "ICMP6_PACKET_TOO_BIG: mtu=1480",
        `proto=tcp, len=${ptb.length}, 2000::1 45118 -> 1000::1 80`,
        `target=vip-a, fwmark=${fw6}`,
        "",
        "Match for trace-flow: client",
        "ICMP6_ECHO_REQUEST: id=7, seq=9",
        "proto=icmp6, len=56, 2000::1 0 -> 1000::1 0",
        "NO target, fwmark=55",
      ]);
    } finally {
      done();
    }
  });
});

Deno.test("trace flowlb: SCTP over UDP (sctp) and the udpencap line of the flows block", () => {
  withTable((table) => {
    const t0 = new FlowTable("flow");
    assert.equal(
      t0.set({ name: "s", target: "t", protocols: "sctp", udpencap: "9899", dsts: "10.0.0.0/24" }),
      "OK",
    );
    const tr = flows("trace", [{ name: "enc", protocols: "udp", dports: "9899" }]);
    const { t, done } = flowlb(table, t0.activeFlows(), tr);
    try {
      t.mask = TRACE.sctp | TRACE.flows;
      // UDP to 9899 carrying an SCTP common header (ports 7000 -> 6000)
      const p = v4("udp", "20.0.0.1", 5555, "10.0.0.1", 9899, 40);
      new DataView(p.buffer).setUint16(28, 7000);
      new DataView(p.buffer).setUint16(30, 6000);
      const fw = t.classify(p);
      assert.ok(fw >= 101, `verdict ${fw}`);
      assert.deepEqual(t.lines(), [
        "",
        "Match for trace-flow: enc",
        `proto=udp, len=${p.length}, ::ffff:20.0.0.1 5555 -> ::ffff:10.0.0.1 9899`,
        "udpencap=9899",
        "Udp encapsulated sctp packet on port 9899",
        `target=vip-a, fwmark=${fw}`,
        "Using LB; vip-a",
        `Packet; proto=132, len=${p.length}, fwmark=${fw}`,
      ]);
      // truncated after the UDP header: the re-key fails (dropped)
      const short = v4("udp", "20.0.0.1", 5555, "10.0.0.1", 9899, 2);
      assert.equal(t.classify(short), -1);
      const lines = t.lines(TRACE.sctp);
      assert.deepEqual(lines, [
        "Udp encapsulated sctp packet on port 9899",
        "FAILED: Re-compute key with udpencap",
      ]);
    } finally {
      done();
    }
  });
});

Deno.test("trace: record layout and categories agree between C and TypeScript", () => {
  assert.equal(L.nfqlb_trace_categories(TEV.LB, 6), TRACE.packet);
  assert.equal(L.nfqlb_trace_categories(TEV.LB | TEV.FLOWLB, 132), TRACE.packet | TRACE.sctp);
  assert.equal(L.nfqlb_trace_categories(TEV.LB, 132), TRACE.packet);
  assert.equal(L.nfqlb_trace_categories(TEV.FIRST | TEV.LB, 17), TRACE.packet | TRACE.frag);
  assert.equal(L.nfqlb_trace_categories(TEV.TFLOW, 17), TRACE.flows);
  assert.equal(
    L.nfqlb_trace_categories(TEV.UDPENCAP | TEV.NOLB_UDPENCAP | TEV.NOLB, 17),
    TRACE.sctp | TRACE.packet,
  );
  // nfqlb_trace_icmp on a truncated header: nothing
  const rec = new Uint8Array(TRACE_REC_LEN);
  const ping = ping4("1.2.3.4", "5.6.7.8", 1, 2);
  assert.equal(L.nfqlb_trace_icmp(0x0800, ping.subarray(0, 27), 27, rec), 0);
  assert.equal(L.nfqlb_trace_icmp(0x0800, ping, ping.length, rec), 1);
  const r = decodeRecord(rec, 0);
  assert.deepEqual([r.events, r.icmpType, r.icmpId, r.icmpSeq], [TEV.ICMP, 8, 1, 2]);
});
