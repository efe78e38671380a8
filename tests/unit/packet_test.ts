/**
 * Packet → key → hash → fwmark in C, against the vectors
 * recorded from upstream, with the real captures in tests/testdata/pcap
 * (see tests/testdata/README.md). Table: M=997, N=32, active 101 102 103.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { hex, readPcap } from "../helpers/pcap.ts";
import { TESTDATA } from "../harness/paths.ts";
import { shmSandbox } from "../helpers/shm.ts";
import { NFQLB_KEY_LEN } from "../../ffi/consts.ts";

const PCAP = `${TESTDATA}/pcap`;

interface KeyResult {
  rc: number;
  key: Uint8Array<ArrayBuffer>;
  fkey: Uint8Array<ArrayBuffer>;
  proto: number;
  sport: number;
  dport: number;
  hash: number;
  addrHash: number;
}

function keyOf(hwProto: number, pkt: Uint8Array<ArrayBuffer>, udpencap = 0, hashMode = 1): KeyResult {
  const c = lib();
  const key = new Uint8Array(NFQLB_KEY_LEN), fkey = new Uint8Array(NFQLB_KEY_LEN);
  const rc = c.nfqlb_packet_key(hwProto, pkt, pkt.length, udpencap, key, fkey);
  const v = new DataView(key.buffer);
  return {
    rc,
    key,
    fkey,
    proto: v.getUint16(34, true),
    sport: v.getUint16(36, false),
    dport: v.getUint16(38, false),
    hash: c.nfqlb_hash_key(key, 40, hashMode),
    addrHash: c.nfqlb_hash_addresses(key, 40),
  };
}

function withTable(fn: (t: TargetShm) => void): void {
  using sb = shmSandbox();
  const prev = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", sb.dir);
  try {
    TargetShm.create("pkt", { M: 997, N: 32, ownFwmark: 0 });
    TargetShm.update("pkt", (a) => {
      a.set([101, 102, 103]);
      return true;
    });
    const t = TargetShm.open("pkt");
    try {
      fn(t);
    } finally {
      t.close();
    }
  } finally {
    if (prev === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", prev);
  }
}

Deno.test("packet key: telnet captures give upstream's keys, hashes and fwmarks", () => {
  const v4 = readPcap(`${PCAP}/telnet-ipv4.pcap`);
  const v6 = readPcap(`${PCAP}/telnet-ipv6.pcap`);
  const cases: [Uint8Array<ArrayBuffer>, number, number[], number, number, number][] = [
    // packet, hwProto, [proto, sport, dport], hash, fwmark, addrHash
    [v4[0].data, v4[0].hwProto, [6, 36112, 23], 2550626808, 102, 2883269278],
    [v4[1].data, v4[1].hwProto, [6, 23, 36112], 1569565304, 103, 2222752926],
    [v6[0].data, v6[0].hwProto, [6, 54866, 23], 1532940745, 102, 3151193092],
    [v6[1].data, v6[1].hwProto, [6, 23, 54866], 549186441, 101, 2490676740],
  ];
  withTable((t) => {
    for (const [pkt, hw, [proto, sport, dport], hash, fw, addrHash] of cases) {
      const k = keyOf(hw, pkt);
      assert.equal(k.rc, 0);
      assert.deepEqual([k.proto, k.sport, k.dport], [proto, sport, dport]);
      assert.equal(k.hash, hash);
      assert.equal(k.addrHash, addrHash);
      assert.equal(t.lookup(k.hash), fw);
    }
  });
});

Deno.test("packet key: SCTP over UDP with and without --sctp_encap, both hash modes", () => {
  const p = readPcap(`${PCAP}/sctp-encap-ipv4.pcap`);
  withTable((t) => {
    const plain = keyOf(p[0].hwProto, p[0].data);
    assert.deepEqual([plain.rc, plain.proto, plain.sport, plain.dport], [0, 17, 9899, 9899]);
    assert.equal(plain.hash, 329563429);
    assert.equal(t.lookup(plain.hash), 102);
    const e0 = keyOf(p[0].hwProto, p[0].data, 9899);
    assert.deepEqual([e0.rc, e0.proto, e0.sport, e0.dport], [4, 132, 35857, 6000]);
    assert.equal(e0.hash, 2091524169);
    assert.equal(t.lookup(e0.hash), 102);
    assert.equal(e0.addrHash, 311452946);
    const m0 = keyOf(p[0].hwProto, p[0].data, 9899, 0);
    assert.equal(m0.hash, 538663642);
    assert.equal(t.lookup(m0.hash), 103);
    const e1 = keyOf(p[1].hwProto, p[1].data, 9899);
    assert.deepEqual([e1.rc, e1.proto, e1.sport, e1.dport], [4, 132, 6000, 35857]);
    assert.equal(e1.hash, 2087426761);
    assert.equal(t.lookup(e1.hash), 103);
    const m1 = keyOf(p[1].hwProto, p[1].data, 9899, 0);
    assert.equal(m1.hash, 2006383450);
    assert.equal(t.lookup(m1.hash), 101);
  });
});

Deno.test("packet key: IPv4 fragments: first has ports and the id, later ones only the id", () => {
  const p = readPcap(`${PCAP}/udp-ipv4.pcap`);
  assert.equal(p.length, 42);
  withTable((t) => {
    const first = keyOf(p[0].hwProto, p[0].data);
    assert.equal(first.rc, 1);
    assert.deepEqual([first.proto, first.sport, first.dport], [17, 34815, 6001]);
    assert.equal(first.hash, 1026849180);
    assert.equal(t.lookup(first.hash), 102);
    assert.equal(first.addrHash, 2883269277);
    for (let i = 1; i <= 20; i++) {
      const k = keyOf(p[i].hwProto, p[i].data);
      assert.equal(k.rc, 2, `packet ${i}`);
      assert.deepEqual([...k.fkey.subarray(32)], [...hex("5060000000000000")]);
      assert.deepEqual(k.fkey.subarray(0, 32), first.fkey.subarray(0, 32));
    }
    const reply = keyOf(p[21].hwProto, p[21].data);
    assert.equal(reply.rc, 1);
    assert.equal(reply.hash, 3408671260);
    assert.equal(t.lookup(reply.hash), 102);
  });
});

Deno.test("packet key: IPv6 first fragments hash on their real ports (deviation: upstream reads the fragment header)", () => {
  const p = readPcap(`${PCAP}/udp-ipv6.pcap`);
  const first = keyOf(p[0].hwProto, p[0].data);
  assert.equal(first.rc, 1);
  assert.deepEqual([first.proto, first.sport, first.dport], [17, 33818, 6001]);
  // the same hash as the unfragmented flow: fwmark --src=[1000::1:192.168.1.201]:33818 --dst=[1000::1:192.168.1.1]:6001 --proto=udp
  assert.equal(first.hash, 6110650);
  assert.deepEqual([...first.fkey.subarray(32)], [...hex("e0e6663a00000000")]);
  for (let i = 1; i <= 20; i++) {
    const k = keyOf(p[i].hwProto, p[i].data);
    assert.equal(k.rc, 2);
    assert.deepEqual(k.fkey, first.fkey);
  }
  assert.equal(first.addrHash, 3151193091);
});

Deno.test("packet key: synthetic ICMP and other-protocol vectors", () => {
  const fragNeeded = hex(
    "450000380001400040010000c0a802010a00000003040000000005784500002900014000400600000a0000001400000100509c4000000001",
  );
  const k = keyOf(0x0800, fragNeeded);
  assert.equal(k.rc, 8);
  assert.equal(k.hash, 784814994); // = fwmark --src=20.0.0.1:40000 --dst=10.0.0.0:80 --proto=tcp
  const echo = hex("450000240001400040010000140000010a00000008000000123400016162636465666768");
  const e = keyOf(0x0800, echo);
  assert.equal(e.rc, 16);
  assert.deepEqual([...e.key.subarray(32)], [...hex("1234010000000000")]);
  assert.equal(e.hash, 1648114631);
  const reply = echo.slice();
  reply[20] = 0;
  const r = keyOf(0x0800, reply);
  assert.deepEqual([...r.key.subarray(32)], [...hex("0000010000000000")]);
  assert.equal(r.hash, 583462081);
  const gre = hex("4500001c00014000402f0000140000010a0000000000000000000000");
  const g = keyOf(0x0800, gre);
  assert.equal(g.rc, 32);
  assert.deepEqual([...g.key.subarray(32)], [...hex("00002f0000000000")]);
  assert.equal(g.hash, 2383690159);
});

Deno.test("packet key: truncated and malformed packets are rejected without reading out of bounds", () => {
  const v4 = readPcap(`${TESTDATA}/pcap/telnet-ipv4.pcap`)[0].data;
  const v6 = readPcap(`${TESTDATA}/pcap/telnet-ipv6.pcap`)[0].data;
  // every prefix of a valid packet either parses or returns -1; the C side
  // sees only a copy of exactly `len` bytes, so a read past it would be caught by ASan runs
  for (const [pkt, hw] of [[v4, 0x0800], [v6, 0x86dd]] as const) {
    for (let len = 0; len < pkt.length; len++) {
      const cut = pkt.slice(0, len);
      const k = keyOf(hw, cut);
      const ipHeader = hw === 0x0800 ? 20 : 40;
      if (len < ipHeader + 4) assert.equal(k.rc, -1, `len ${len}`);
    }
  }
  assert.equal(keyOf(0x0806, v4).rc, -1); // not IP
  const bad = v4.slice();
  bad[0] = 0x44; // IHL 4 < 5
  assert.equal(keyOf(0x0800, bad).rc, -1);
});

Deno.test("packet key: IPv6 extension headers are walked with (len+1)*8 (deviation)", () => {
  const v6 = readPcap(`${TESTDATA}/pcap/telnet-ipv6.pcap`)[0].data;
  const base = keyOf(0x86dd, v6);
  // insert an 8-byte hop-by-hop header (hdrlen 0) between the IPv6 header and TCP
  const pkt = new Uint8Array(v6.length + 8);
  pkt.set(v6.subarray(0, 40));
  pkt[6] = 0; // next header: hop-by-hop
  pkt.set([6, 0, 1, 4, 0, 0, 0, 0], 40); // nh TCP, len 0 (8 bytes), PadN
  pkt.set(v6.subarray(40), 48);
  const dv = new DataView(pkt.buffer);
  dv.setUint16(4, dv.getUint16(4) + 8);
  const k = keyOf(0x86dd, pkt);
  assert.equal(k.rc, 0);
  assert.equal(k.hash, base.hash);
});
