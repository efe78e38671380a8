/**
 * The C flow matcher (c/flowset.c, one flow in c/flow.c) through FFI, with specs built as flowlb
 * builds them (text through core/flow/parse.ts, then core/flow/encode.ts;
 * tests/helpers/flow_spec.ts): upstream's flow-test and match-test vectors
 * (its own unit tests), upstream's priority and companion-flow (udpencap) semantics,
 * promiscuous ping, empty port sets, the spec's byte layout and validation,
 * the parser's text forms, and a randomized property test: the indexed
 * lookup equals the linear walk (flow, udpencap and match counters) for
 * random flow sets and keys.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { buildKey, KEY_LEN } from "../../core/key.ts";
import { mapIPv4, parseIPv4, parseIPv6 } from "../../core/inet.ts";
import { NFQLB_FLOW_SPEC_MAGIC as FLOW_SPEC_MAGIC } from "../../ffi/consts.ts";
import { PORT_PROTOCOLS } from "../../core/ip_protocols.ts";
import {
  parseCidr,
  parseCidrs,
  parseMatchStatement,
  parsePorts,
  parseProtocols,
} from "../../core/flow/parse.ts";
import { flowSpec, type FlowText } from "../helpers/flow_spec.ts";
import { readPcap } from "../helpers/pcap.ts";
import { TESTDATA } from "../harness/paths.ts";
import { xorshift32 } from "../helpers/models.ts";
import {
  NFQLB_FLOWIX_DPORT,
  NFQLB_FLOWIX_DST,
  NFQLB_FLOWIX_JOINT,
  NFQLB_FLOWIX_SPORT,
  NFQLB_FLOWIX_SRC,
} from "../../ffi/consts.ts";

type Buf = Uint8Array<ArrayBuffer>;
/** Index dimensions (NFQLB_FLOWIX_*). */
const DIM = {
  dport: NFQLB_FLOWIX_DPORT,
  sport: NFQLB_FLOWIX_SPORT,
  dst: NFQLB_FLOWIX_DST,
  src: NFQLB_FLOWIX_SRC,
  joint: NFQLB_FLOWIX_JOINT,
};
const EMPTY: Buf = new Uint8Array(0);

/** A built flow set; free with `using`. */
class FlowSet implements Disposable {
  readonly ptr: Deno.PointerValue;
  readonly n: number;
  #ue = new Uint32Array(1);

  constructor(specs: (FlowText | Uint8Array)[]) {
    const L = lib();
    this.n = specs.length;
    this.ptr = L.nfqlb_flowset_new(specs.length);
    assert.ok(this.ptr);
    specs.forEach((s, i) => {
      const b = (s instanceof Uint8Array ? s : flowSpec(s)) as Buf;
      assert.equal(L.nfqlb_flowset_add(this.ptr, i, b, b.length), 0, `flow ${i}`);
    });
    assert.equal(L.nfqlb_flowset_build(this.ptr), 0);
  }

  /** Indexed lookup: [flow or -1, udpencap]. */
  match(key: Uint8Array, pkt: Uint8Array = EMPTY, promiscuous = false): [number, number] {
    const i = lib().nfqlb_flowset_match(
      this.ptr,
      key as Buf,
      pkt as Buf,
      pkt.length,
      promiscuous ? 1 : 0,
      this.#ue,
    );
    return [i, this.#ue[0]];
  }

  /** The linear reference. */
  linear(key: Uint8Array, pkt: Uint8Array = EMPTY, promiscuous = false): [number, number] {
    const i = lib().nfqlb_flowset_match_linear(
      this.ptr,
      key as Buf,
      pkt as Buf,
      pkt.length,
      promiscuous ? 1 : 0,
      this.#ue,
    );
    return [i, this.#ue[0]];
  }

  matches(i: number): number {
    return lib().nfqlb_flowset_matches(this.ptr, i);
  }

  counts(): number[] {
    return Array.from({ length: this.n }, (_, i) => this.matches(i));
  }

  get dims(): number {
    return lib().nfqlb_flowset_index_dims(this.ptr);
  }

  [Symbol.dispose](): void {
    lib().nfqlb_flowset_free(this.ptr);
  }
}

function addr(s: string): Uint8Array {
  const v4 = parseIPv4(s);
  if (v4) return mapIPv4(v4);
  const v6 = parseIPv6(s);
  assert.ok(v6, s);
  return v6;
}

function key(proto: number, dst: string, dport = 0, src = "192.168.1.1", sport = 0): Uint8Array {
  return buildKey(addr(src), addr(dst), proto, sport, dport);
}

/** Keys (udpencap as given) and packets of a capture. */
function pcapKeys(file: string, udpencap = 0): { key: Buf; pkt: Buf }[] {
  return readPcap(`${TESTDATA}/pcap/${file}.pcap`).map((p) => {
    const k = new Uint8Array(KEY_LEN), fk = new Uint8Array(KEY_LEN);
    const rc = lib().nfqlb_packet_key(p.hwProto, p.data, p.data.length, udpencap, k, fk);
    assert.ok(rc >= 0, `${file}: nfqlb_packet_key rc=${rc}`);
    return { key: k, pkt: p.data };
  });
}

function countMatches(file: string, flow: FlowText, udpencap = 0): number {
  using fs = new FlowSet([flow]);
  let n = 0;
  for (const { key, pkt } of pcapKeys(file, udpencap)) {
    const [i] = fs.match(key, pkt);
    assert.deepEqual([i], [fs.linear(key, pkt)[0]]);
    if (i === 0) n++;
  }
  return n;
}

// ---------------------------------------------------------------------------
// upstream's own unit test flow-test

Deno.test("flow-test: CIDR 10.10.10.10/16 matches ::ffff:10.10.222.4, not 10.11.0.1", () => {
  using fs = new FlowSet([{ dsts: "10.10.10.10/16" }]);
  assert.deepEqual(fs.match(key(6, "::ffff:10.10.222.4", 80)), [0, 0]);
  assert.deepEqual(fs.match(key(6, "10.10.0.0", 80)), [0, 0]);
  assert.deepEqual(fs.match(key(6, "10.11.0.1", 80)), [-1, 0]);
  assert.deepEqual(fs.match(key(6, "::a0a:de04", 80)), [-1, 0], "not mapped: no match");
});

Deno.test("flow-test: 1111:2222::5555/64 matches 1111:2222:0:0:ffff::", () => {
  using fs = new FlowSet([{ srcs: "1111:2222::5555/64" }]);
  assert.deepEqual(fs.match(key(17, "1000::1", 53, "1111:2222:0:0:ffff::", 1)), [0, 0]);
  assert.deepEqual(fs.match(key(17, "1000::1", 53, "1111:2222:0:1::", 1)), [-1, 0]);
  assert.deepEqual(fs.match(key(17, "1111:2222::", 53, "10.0.0.1", 1)), [-1, 0]);
});

Deno.test("flow-test: ports '22-30, 1025, 20000-30000, 22000-23000, 25, 27' match dport 23, sport 22000", () => {
  const ports = "22-30, 1025, 20000-30000, 22000-23000, 25, 27";
  assert.deepEqual(parsePorts(ports), [[22, 30], [1025, 1025], [20000, 30000]]);
  using d = new FlowSet([{ protocols: "tcp", dports: ports }]);
  for (
    const [p, want] of [[23, 0], [22, 0], [30, 0], [31, -1], [21, -1], [1025, 0], [1024, -1], [30001, -1]]
  ) {
    assert.equal(d.match(key(6, "10.0.0.1", p))[0], want, `dport ${p}`);
  }
  using s = new FlowSet([{ protocols: "tcp", sports: ports }]);
  assert.equal(s.match(key(6, "10.0.0.1", 80, "10.0.0.2", 22000))[0], 0);
  assert.equal(s.match(key(6, "10.0.0.1", 80, "10.0.0.2", 19999))[0], -1);
});

Deno.test("flow-test: protocols are case-insensitive sets; tipc is rejected", () => {
  using fs = new FlowSet([{ protocols: "TCP,udP ScTp,tcp" }]);
  for (const p of [6, 17, 132]) assert.equal(fs.match(key(p, "10.0.0.1", 1))[0], 0);
  for (const p of [1, 47, 58]) assert.equal(fs.match(key(p, "10.0.0.1"))[0], -1, `proto ${p}`);
  assert.equal(parseProtocols("tipc"), undefined);
  assert.throws(() => flowSpec({ protocols: "tipc" }), RangeError);
});

Deno.test("flow-test: priority order: the first matching flow wins, 100 flows", () => {
  // flow i accepts dports >= 1000 - 10 * i, so lower flows accept more
  const specs: FlowText[] = Array.from({ length: 100 }, (_, i) => ({
    protocols: "tcp",
    dports: `${1000 - 10 * i}-2000`,
  }));
  using fs = new FlowSet(specs);
  assert.equal(fs.match(key(6, "10.0.0.1", 1500))[0], 0);
  assert.equal(fs.match(key(6, "10.0.0.1", 995))[0], 1);
  assert.equal(fs.match(key(6, "10.0.0.1", 10))[0], 99);
  assert.equal(fs.match(key(6, "10.0.0.1", 5))[0], -1);
  assert.equal(fs.match(key(6, "10.0.0.1", 2001))[0], -1);
  assert.equal(fs.matches(0), 1);
  assert.equal(fs.matches(99), 1);
  assert.equal(fs.matches(50), 0, "flows below the winner are not visited");
});

Deno.test("flow-test: udpencap is reported with the match", () => {
  using fs = new FlowSet([{ protocols: "sctp", udpencap: 1234, dports: "6000" }, { protocols: "tcp" }]);
  assert.deepEqual(fs.match(key(132, "10.0.0.1", 6000)), [0, 1234]);
  assert.deepEqual(fs.match(key(6, "10.0.0.1", 6000)), [1, 0]);
  assert.deepEqual(fs.match(key(17, "10.0.0.1", 6000)), [-1, 0]);
});

// ---------------------------------------------------------------------------
// upstream's own unit test match-test: byte-match over the real captures

Deno.test("match-test: telnet-ipv4 (empty set 20, tcp[2:2] = 23 10, SYN 2)", () => {
  assert.equal(countMatches("telnet-ipv4", { protocols: "tcp" }), 20);
  assert.equal(countMatches("telnet-ipv4", { protocols: "tcp", match: "" }), 20);
  assert.equal(countMatches("telnet-ipv4", { match: "tcp[2:2] = 23" }), 10);
  assert.equal(countMatches("telnet-ipv4", { match: "tcp[12:4] & 0x00020000 = 0x00020000" }), 2);
  // statements for another protocol than the packet's are ignored
  assert.equal(countMatches("telnet-ipv4", { match: "udp[2:2] = 23" }), 20);
});

Deno.test("match-test: telnet-ipv6 (tcp[0:4] & 0xffff = 23 9, tcp[2:1]=0 + tcp[3:1]=23 9)", () => {
  assert.equal(countMatches("telnet-ipv6", { match: "tcp[0:4] & 0xffff = 23" }), 9);
  assert.equal(countMatches("telnet-ipv6", { match: "tcp[2:1] = 0, tcp[3:1] = 23" }), 9);
  assert.equal(countMatches("telnet-ipv6", { match: "tcp[2:1] = 1, tcp[3:1] = 23" }), 0);
  assert.equal(countMatches("telnet-ipv6", { match: "" }), 18);
});

Deno.test("match-test: sctp-encap (udp[2:2]=6000 0; sctp[2:2]=6000 6 with the SCTP key, 11 without)", () => {
  assert.equal(countMatches("sctp-encap-ipv4", { protocols: "udp", match: "udp[2:2]=6000" }), 0);
  assert.equal(countMatches("sctp-encap-ipv4", { protocols: "sctp", match: "sctp[2:2]=6000" }, 9899), 6);
  assert.equal(countMatches("sctp-encap-ipv4", { match: "sctp[2:2]=6000" }), 11, "no SCTP hint: ignored");
  assert.equal(countMatches("sctp-encap-ipv4", { protocols: "sctp", dports: "6000" }, 9899), 6);
});

Deno.test("byte-match needs packet data: len 0 skips the statements, as upstream", () => {
  using fs = new FlowSet([{ match: "tcp[2:2] = 9999" }]);
  const [{ key: k, pkt }] = pcapKeys("telnet-ipv4");
  assert.equal(fs.match(k, pkt)[0], -1);
  assert.equal(fs.match(k)[0], 0);
  // a packet cut inside its TCP header never matches; one that ends exactly after it may
  using any = new FlowSet([{ match: "tcp[0:1] = 0x8d" }]); // sport 36112 = 0x8d10
  const ihl = (pkt[0] & 15) * 4;
  const cut = (n: number) => {
    const c = pkt.slice(0, n);
    c[2] = n >> 8;
    c[3] = n & 0xff;
    return c;
  };
  assert.equal(any.match(k, cut(ihl + 20))[0], 0);
  assert.equal(any.match(k, cut(ihl + 19))[0], -1);
});

Deno.test("byte-match: IPv6 fragments never match; extension headers advance by (len+1)*8", () => {
  using fs = new FlowSet([{ match: "udp[2:2] = 6001" }]);
  const frag = readPcap(`${TESTDATA}/pcap/udp-ipv6.pcap`)[0].data;
  const k = key(17, "1000::1", 6001);
  assert.equal(fs.match(k, frag)[0], -1, "fragment header");
  // hand-made IPv6 + 8-byte hop-by-hop (len 0) + UDP
  const p = new Uint8Array(40 + 8 + 8 + 4);
  p[0] = 0x60;
  p[4] = 0, p[5] = 20;
  p[6] = 0; // hop-by-hop
  p[40] = 17, p[41] = 0;
  p[48 + 2] = 6001 >> 8, p[48 + 3] = 6001 & 0xff;
  assert.equal(fs.match(k, p)[0], 0);
  p[48 + 3] ^= 1;
  assert.equal(fs.match(k, p)[0], -1);
});

// ---------------------------------------------------------------------------
// companions, promiscuous ping, empty port sets, counters

Deno.test("companion flow (#name, no target): counted, never wins, reports udpencap, as upstream", () => {
  // what flowlb defines for `flow-set --name=sctp --proto=sctp --udpencap=9899 --dport=6000`
  const dsts = "10.0.0.0/32,1000::/128";
  const companion: FlowText = {
    target: false,
    protocols: "udp",
    dports: "9899",
    dsts,
    udpencap: 9899,
  };
  const real: FlowText = { protocols: "sctp", dports: "6000", dsts, udpencap: 9899 };
  using fs = new FlowSet([companion, real]);
  const pkts = pcapKeys("sctp-encap-ipv4");
  const encap = pcapKeys("sctp-encap-ipv4", 9899);
  let won = 0;
  pkts.forEach(({ key: k, pkt }, n) => {
    let [i, ue] = fs.match(k, pkt);
    assert.deepEqual([i, ue], fs.linear(k, pkt));
    const dport = (k[38] << 8) | k[39];
    const proto = k[34] | (k[35] << 8);
    if (i < 0 && ue !== 0 && proto === 17 && dport === ue) {
      // flowlb re-keys with the flow's udpencap port and looks up again
      [i] = fs.match(encap[n].key, encap[n].pkt);
    }
    if (i === 1) won++;
  });
  // 6 packets go to the VIP 10.0.0.0 on inner port 6000; the replies come from it
  assert.equal(won, 6);
  assert.equal(fs.matches(0), 6 * 2, "companion counted by the indexed and the linear walk");
  assert.equal(fs.matches(1), 6);
  // a lower catch-all UDP flow wins instead, and its udpencap (0) is what is left
  using fs2 = new FlowSet([companion, real, { protocols: "udp" }]);
  const k = key(17, "10.0.0.0", 9899, "192.168.2.221", 9899);
  assert.deepEqual(fs2.match(k), [2, 0]);
  // no winner: the companion's udpencap stays
  using fs3 = new FlowSet([companion, { protocols: "udp", dports: "53" }]);
  assert.deepEqual(fs3.match(k), [-1, 9899]);
  assert.deepEqual(fs3.match(key(17, "10.0.0.0", 53)), [1, 0]);
});

Deno.test("promiscuous ping: ICMP matches the first flow whose addresses match, udpencap not reported", () => {
  using fs = new FlowSet([
    { target: false, protocols: "udp", dports: "9899", dsts: "10.0.0.1/32", udpencap: 9899 },
    { protocols: "tcp", dports: "80", dsts: "10.0.0.1/32", srcs: "192.168.0.0/16" },
    { protocols: "tcp", dports: "80", dsts: "1000::1/128" },
  ]);
  for (
    const [proto, dst, src, want] of [
      [1, "10.0.0.1", "192.168.1.1", 1],
      [1, "10.0.0.1", "172.16.0.1", -1],
      [58, "1000::1", "2000::1", 2],
      [58, "1000::2", "2000::1", -1],
    ] as const
  ) {
    const k = key(proto, dst, 0, src);
    assert.deepEqual(fs.match(k, EMPTY, true), [want, 0], `${proto} ${dst}`);
    assert.deepEqual(fs.linear(k, EMPTY, true), [want, 0]);
    assert.deepEqual(fs.match(k), [-1, 0], "not promiscuous: tcp flows never take ICMP");
  }
  assert.equal(fs.matches(0), 4, "the companion matched the two pings to 10.0.0.1, twice each");
  // without promiscuous ping, only flows without protocols take ICMP
  using any = new FlowSet([{ dsts: "10.0.0.1/32" }]);
  assert.deepEqual(any.match(key(1, "10.0.0.1")), [0, 0]);
  // promiscuous does not apply to other protocols
  assert.deepEqual(fs.match(key(47, "10.0.0.1"), EMPTY, true), [-1, 0]);
});

Deno.test("an empty port set never matches; ports on a flow without protocols compare the key's ports", () => {
  using fs = new FlowSet([
    { protocols: "tcp", dports: "" },
    { protocols: "tcp", sports: "" },
    { dports: "80" },
    { dports: "1-65535" },
  ]);
  assert.equal(fs.match(key(6, "10.0.0.1", 80))[0], 2);
  assert.equal(fs.match(key(6, "10.0.0.1", 81))[0], 3);
  assert.equal(fs.match(key(47, "10.0.0.1"))[0], -1, "GRE: ports 0");
  assert.equal(fs.matches(0) + fs.matches(1), 0);
});

Deno.test("counters: matches / set_matches (carried over to a rebuilt set)", () => {
  using fs = new FlowSet([{ protocols: "tcp" }, { protocols: "udp" }]);
  for (let i = 0; i < 5; i++) fs.match(key(6, "10.0.0.1", 80));
  fs.linear(key(17, "10.0.0.1", 80));
  assert.deepEqual(fs.counts(), [5, 1]);
  lib().nfqlb_flowset_set_matches(fs.ptr, 1, 0xfffffffe);
  fs.match(key(17, "10.0.0.1", 80));
  fs.match(key(17, "10.0.0.1", 80));
  assert.equal(fs.matches(1), 0, "u32 wraps");
  assert.equal(fs.matches(7), 0);
});

// ---------------------------------------------------------------------------
// spec validation and the API's edges

Deno.test("bad specs are rejected; build needs every slot; add after build fails", () => {
  const L = lib();
  const fs = L.nfqlb_flowset_new(2);
  try {
    const good = flowSpec({ protocols: "tcp", dsts: "10.0.0.0/8", dports: "80", match: "tcp[2:2]=80" });
    const bad = (mutate: (v: DataView, b: Uint8Array) => void, len?: number): Buf => {
      const b = good.slice();
      mutate(new DataView(b.buffer), b);
      return len === undefined ? b : b.slice(0, len);
    };
    const cases: [string, Buf][] = [
      ["magic", bad((v) => v.setUint32(0, 0, true))],
      ["unknown flag", bad((v) => v.setUint32(4, v.getUint32(4, true) | 128, true))],
      ["protocols bits", bad((v) => v.setUint32(8, 8, true))],
      ["udpencap", bad((v) => v.setUint32(12, 65536, true))],
      ["length", bad(() => {}, good.length - 4)],
      ["host bits", bad((_v, b) => (b[36 + 13] = 1))],
      ["prefix", bad((v) => v.setUint32(36 + 16, 129, true))],
      ["range", bad((v) => v.setUint32(56, 81 | (80 << 16), true))],
      ["match offset", bad((v) => v.setUint32(60 + 4, 19, true))],
      ["match nbytes", bad((v) => v.setUint32(60 + 8, 3, true))],
      ["match proto", bad((v) => v.setUint32(60, 1, true))],
    ];
    assert.equal(new DataView(good.buffer).getUint32(0, true), FLOW_SPEC_MAGIC);
    for (const [what, b] of cases) assert.equal(L.nfqlb_flowset_add(fs, 0, b, b.length), -1, what);
    assert.equal(L.nfqlb_flowset_add(fs, 2, good, good.length), -1, "slot out of range");
    assert.equal(L.nfqlb_flowset_add(fs, 0, good, good.length), 0);
    assert.equal(L.nfqlb_flowset_add(fs, 0, good, good.length), -1, "slot already defined");
    assert.equal(
      L.nfqlb_flowset_match(fs, key(6, "10.1.1.1", 80) as Buf, EMPTY, 0, 0, null),
      -1,
      "not built",
    );
    assert.equal(L.nfqlb_flowset_build(fs), -1, "slot 1 undefined");
    assert.equal(L.nfqlb_flowset_add(fs, 1, good, good.length), 0);
    assert.equal(L.nfqlb_flowset_build(fs), 0);
    assert.equal(L.nfqlb_flowset_build(fs), 0);
    assert.equal(L.nfqlb_flowset_add(fs, 1, good, good.length), -1, "built");
    assert.equal(L.nfqlb_flowset_match(fs, key(6, "10.1.1.1", 80) as Buf, EMPTY, 0, 0, null), 0);
  } finally {
    L.nfqlb_flowset_free(fs);
  }
  assert.equal(L.nfqlb_flowset_new(0x100001), null);
  using empty = new FlowSet([]);
  assert.deepEqual(empty.match(key(6, "10.0.0.1", 80)), [-1, 0]);
});

Deno.test("encoder: the spec's bytes, word by word (c/nfqlb.h layout)", () => {
  const spec = flowSpec({
    protocols: "udp,tcp",
    dsts: "10.1.2.3/24",
    dports: "443,80,81",
    sports: "",
    match: "tcp[2:2]&0xff=0x50",
    udpencap: 9899,
  });
  const v = new DataView(spec.buffer);
  const words = Array.from({ length: spec.length / 4 }, (_, i) => v.getUint32(4 * i, true));
  // magic, flags (target|protocols|dsts|dports|sports|match), protocols (tcp|udp), udpencap, counts
  assert.deepEqual(words.slice(0, 9), [FLOW_SPEC_MAGIC, 123, 3, 9899, 1, 0, 2, 0, 1]);
  // ::ffff:10.1.2.0, host bits cleared, prefix 24 + 96
  assert.deepEqual(Array.from(spec.subarray(36, 52)), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 1, 2, 0]);
  assert.deepEqual(words.slice(13), [
    120,
    80 | (81 << 16), // merged and sorted
    443 | (443 << 16),
    6, // tcp
    2,
    2,
    0xff,
    0x50,
  ]);
  // no target (a companion) clears the target flag; unset criteria are all zero
  assert.deepEqual(Array.from(flowSpec({ target: false })), [
    ...[0x46, 0x4c, 0x57, 0x31],
    ...Array(32).fill(0),
  ]);
  // empty protocols / dsts / srcs / match lists mean "not set", as upstream's empty values
  assert.deepEqual(flowSpec({ protocols: "", dsts: "", srcs: "", match: "" }), flowSpec({}));
});

Deno.test("parser: upstream text forms and their errors (core/flow/parse.ts)", () => {
  assert.deepEqual(parseCidr("10.10.10.10/16"), { addr: addr("10.10.0.0"), prefix: 112 });
  assert.deepEqual(parseCidr("1111:2222::5555/64"), { addr: addr("1111:2222::"), prefix: 64 });
  assert.deepEqual(parseCidr("0.0.0.0/0"), { addr: addr("::ffff:0.0.0.0"), prefix: 96 });
  // 010.0.0.0/8: inet_pton (upstream's parser) refuses octets with a leading zero
  for (const s of ["10.0.0.0", "10.0.0.0/33", "1000::/129", "x/8", "10.0.0/8", "010.0.0.0/8"]) {
    assert.equal(parseCidr(s), undefined, s);
  }
  assert.equal(parseCidrs(Array(33).fill("10.0.0.0/8").join(",")), undefined, "33 CIDRs");
  assert.equal(parseCidrs(Array(32).fill("10.0.0.0/8").join(","))?.length, 32);
  assert.deepEqual(parseMatchStatement("tcp[0:4] & 0x0000ffff = 5001"), {
    proto: 6,
    offset: 0,
    nbytes: 4,
    mask: 0xffff,
    value: 5001,
  });
  const value = (s: string) => (parseMatchStatement(s) as { value: number }).value;
  assert.equal(value("sctp[4:2] = 0xa44"), 0xa44);
  assert.equal(value("udp[2:2] = 010"), 8, "leading 0: octal, as strtol");
  // ours is strict where upstream's strtol reads 0 (docs/compatibility.md, "Validation")
  assert.equal(parseMatchStatement("udp[2:2] = 08"), "Invalid number");
  for (
    const s of [
      "sctp[4:3] = 1",
      "udp[6:4] = 1",
      "sctp[10:4] = 1",
      "tcp[18:4] = 1",
      "TCP[2:2]=1",
      "tcp[2:2]=1 ",
    ]
  ) {
    assert.equal(typeof parseMatchStatement(s), "string", s);
  }
  for (const s of ["udp[6:2] = 1", "sctp[10:2] = 1", "tcp[18:2] = 1", "sctp[3:4] & 0xffffffff = 44"]) {
    assert.equal(typeof parseMatchStatement(s), "object", s);
  }
  for (const p of ["0", "70000", "30-20", "a", "1-2-3"]) {
    assert.equal(parsePorts(p), undefined, p);
  }
  assert.deepEqual(parsePorts("20-30, 10, 11, 20-30 18-20 10"), [[10, 11], [18, 30]]);
});

// ---------------------------------------------------------------------------
// the index

Deno.test("index: 1000 flows that differ by VIP and port use the dport and dst dimensions", () => {
  const specs: FlowText[] = [];
  for (let i = 0; i < 1000; i++) {
    specs.push({
      protocols: "tcp,udp",
      dsts: `20.0.${i >> 8}.${i & 0xff}/32,2000::${i.toString(16)}/128`,
      dports: `${5000 + (i % 7)}`,
    });
  }
  using fs = new FlowSet(specs);
  assert.equal(fs.dims, DIM.dport | DIM.dst | DIM.joint, "dport, dst and the joint dport x dst");
  const bytes = Number(lib().nfqlb_flowset_index_bytes(fs.ptr));
  assert.ok(bytes > 0 && bytes < 4 << 20, `index bytes ${bytes}`);
  for (const i of [0, 1, 500, 998, 999]) {
    const k = key(17, `20.0.${i >> 8}.${i & 0xff}`, 5000 + (i % 7));
    assert.deepEqual(fs.match(k), [i, 0]);
    assert.deepEqual(fs.match(key(6, `2000::${i.toString(16)}`, 5000 + (i % 7))), [i, 0]);
    assert.deepEqual(fs.match(key(6, `2000::${i.toString(16)}`, 5000 + ((i + 1) % 7))), [-1, 0]);
  }
});

Deno.test("index: a dimension over its memory budget is left out, results stay the same", () => {
  // 5000 flows with 8 wide, overlapping port ranges each: ~80k dport intervals whose sets all
  // differ, 648 bytes each: far over 16 MiB
  const r = xorshift32(7);
  const specs: FlowText[] = [];
  const portsOf: [number, number][][] = [];
  for (let i = 0; i < 5000; i++) {
    const ports = Array.from({ length: 8 }, (): [number, number] => {
      const a = 1 + (r() % 63000);
      return [a, a + 1 + (r() % 2000)];
    });
    portsOf.push(ports);
    specs.push({ protocols: "tcp", dsts: `10.${i >> 8}.${i & 0xff}.0/24`, dports: portsText(ports) });
  }
  specs.push({ protocols: "tcp" });
  using fs = new FlowSet(specs);
  assert.equal(fs.dims & DIM.dport, 0, "dport dimension dropped");
  assert.ok(fs.dims & DIM.dst);
  const bytes = Number(lib().nfqlb_flowset_index_bytes(fs.ptr));
  assert.ok(bytes < 40 << 20, `index bytes ${bytes}`);
  for (let k = 0; k < 3000; k++) {
    const i = r() % 5000;
    const p = k % 2 ? portsOf[i][r() % 8][0] + (r() % 3) : 1 + (r() % 65535);
    const kb = key(6, `10.${i >> 8}.${i & 0xff}.${r() & 0xff}`, p);
    assert.deepEqual(fs.match(kb), fs.linear(kb));
  }
});

/** Port ranges as a flow-set port list (`1-5,7-7`). */
function portsText(ranges: readonly [number, number][]): string {
  return ranges.map(([a, b]) => `${a}-${b}`).join(",");
}

interface RandomWorld {
  specs: FlowText[];
  keys: { key: Buf; pkt: Buf; promiscuous: boolean }[];
}

/** A random flow set over a small universe (so flows overlap) and keys that hit it often. */
function randomWorld(r: () => number, nflows: number, nkeys: number): RandomWorld {
  const pick = <T>(a: readonly T[]): T => a[r() % a.length];
  const v4 = () => [10, r() % 3, r() % 4, r() % 8];
  const v6 = () => [0x1000, 0, 0, 0, 0, 0, r() % 3, r() % 8];
  const cidr = (): string => {
    if (r() % 2) {
      const a = v4();
      return `${a.join(".")}/${pick([0, 8, 16, 24, 29, 30, 32])}`;
    }
    return `${v6().map((x) => x.toString(16)).join(":")}/${pick([0, 16, 96, 112, 125, 127, 128])}`;
  };
  const ports = (): [number, number][] => {
    const n = r() % 4;
    return Array.from({ length: n }, () => {
      const a = 1 + (r() % 40);
      return [a, Math.min(65535, a + pick([0, 0, 1, 5, 20, 60000]))];
    });
  };
  const stmt = (): string => {
    const proto = pick(PORT_PROTOCOLS);
    const hl = { tcp: 20, udp: 8, sctp: 12 }[proto];
    const nb = pick([1, 1, 1, 2]);
    return `${proto}[${r() % (hl - nb + 1)}:${nb}] = ${r() % 2}`;
  };
  const specs: FlowText[] = [];
  for (let i = 0; i < nflows; i++) {
    const s: FlowText = { target: r() % 6 !== 0, udpencap: r() % 4 === 0 ? 1 + (r() % 3) : 0 };
    if (r() % 3) s.protocols = PORT_PROTOCOLS.filter(() => r() % 2).join(",");
    if (r() % 2) s.dsts = Array.from({ length: 1 + (r() % 3) }, cidr).join(",");
    if (r() % 4 === 0) s.srcs = Array.from({ length: 1 + (r() % 2) }, cidr).join(",");
    if (r() % 2) s.dports = portsText(ports());
    if (r() % 5 === 0) s.sports = portsText(ports());
    if (r() % 4 === 0) s.match = Array.from({ length: 1 + (r() % 2) }, stmt).join(",");
    specs.push(s);
  }
  const keys: RandomWorld["keys"] = [];
  for (let k = 0; k < nkeys; k++) {
    const isV6 = r() % 2 === 0;
    const a = () => isV6 ? addr(v6().map((x) => x.toString(16)).join(":")) : addr(v4().join("."));
    const proto = pick([6, 6, 17, 17, 132, 1, 58, 47]);
    const kb = buildKey(a(), a(), proto, r() % 45, r() % 45) as Buf;
    kb[32] = r() & 0xff;
    let pkt: Buf = EMPTY;
    if (r() % 4) {
      // an IP packet with an L4 header of 0/1 bytes, sometimes truncated, sometimes UDP around SCTP
      const l4proto = proto === 132 && r() % 2 ? 17 : proto;
      const hl = isV6 ? 40 : 20;
      const p = new Uint8Array(hl + 8 + (r() % 30));
      for (let i = hl; i < p.length; i++) p[i] = r() % 2;
      if (isV6) {
        p[0] = 0x60;
        p[6] = l4proto;
      } else {
        p[0] = 0x45;
        p[2] = p.length >> 8, p[3] = p.length & 0xff;
        p[9] = l4proto;
      }
      pkt = p;
    }
    keys.push({ key: kb, pkt, promiscuous: r() % 3 === 0 });
  }
  return { specs, keys };
}

Deno.test("property: indexed lookup == linear walk (flow, udpencap, counters) on random flow sets", () => {
  const r = xorshift32(0x5eed);
  let total = 0, hits = 0;
  const dimsSeen = new Set<number>();
  for (let round = 0; round < 40; round++) {
    const nflows = round < 5 ? round : 1 + (r() % 300);
    const w = randomWorld(r, nflows, 1500);
    using a = new FlowSet(w.specs);
    using b = new FlowSet(w.specs);
    dimsSeen.add(a.dims);
    for (const { key: k, pkt, promiscuous } of w.keys) {
      const got = a.match(k, pkt, promiscuous), want = b.linear(k, pkt, promiscuous);
      assert.deepEqual(got, want, `round ${round}, ${nflows} flows, key ${Array.from(k).join(",")}`);
      total++;
      if (got[0] >= 0) hits++;
    }
    assert.deepEqual(a.counts(), b.counts(), `round ${round}: counters`);
  }
  assert.equal(total, 60000);
  assert.ok(hits > total / 10, `keys must hit flows often (${hits}/${total})`);
  // every dimension, and sets with and without the joint one, were exercised
  const all = DIM.dport | DIM.sport | DIM.dst | DIM.src | DIM.joint;
  assert.ok([...dimsSeen].includes(all), [...dimsSeen].join(","));
  assert.ok([...dimsSeen].some((d) => (d & DIM.joint) === 0 && d !== 0), [...dimsSeen].join(","));
});
