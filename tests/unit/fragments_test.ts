/**
 * The fragment table through the real classifier (nfqlb_lb_classify), driven
 * by the captures udp-ipv4.pcap / udp-ipv6.pcap (two 30000-byte datagrams of
 * 21 fragments each) in file order, reversed, shuffled with fixed seeds and
 * with duplicates. Re-injection goes to one end of a socketpair instead of a
 * tun device; the test feeds what comes out back to the classifier, as the
 * kernel would queue it again. Time is virtual (passed in).
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { decodeFragStats, type FragStats } from "../../core/frag_stats.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import { type PcapPacket, readPcap } from "../helpers/pcap.ts";
import { TESTDATA } from "../harness/paths.ts";
import { libSandbox } from "../helpers/shm.ts";
import { NFQLB_FTSTATS_LEN, NFQLB_KEY_LEN } from "../../ffi/consts.ts";

const libc = Deno.dlopen("libc.so.6", {
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
});
const AF_UNIX = 1, SOCK_DGRAM = 2, MSG_DONTWAIT = 0x40;
const MS = 1_000_000n;

interface Options {
  frags?: number;
  reassembler?: number;
  size?: number;
  buckets?: number;
}

/** A classifier with a fragment table whose re-injections land in a socketpair. */
class Rig implements Disposable {
  readonly stats = new Uint8Array(NFQLB_FTSTATS_LEN);
  readonly counters = new BigUint64Array(COUNTER_NAMES.length);
  readonly ft: Deno.PointerObject;
  readonly lb: Deno.PointerObject;
  readonly fds = new Int32Array(2);
  readonly table: TargetShm;
  #buf = new Uint8Array(70000);

  constructor(table: TargetShm, o: Options = {}) {
    const c = lib();
    this.table = table;
    assert.equal(libc.symbols.socketpair(AF_UNIX, SOCK_DGRAM, 0, this.fds), 0);
    this.ft = c.nfqlb_ft_create(
      o.size ?? 109,
      o.buckets ?? 100,
      200,
      1500,
      o.frags ?? 1000,
      o.reassembler ?? 0,
      Deno.UnsafePointer.of(this.stats),
    )!;
    this.lb = c.nfqlb_lb_create(table.pointer, this.ft, 1, 0, -1)!;
    c.nfqlb_lb_set_frag(this.lb, null, this.fds[0], o.reassembler ?? 0);
  }

  classify(p: { hwProto: number; data: Uint8Array<ArrayBuffer> }, now: bigint): number {
    return lib().nfqlb_lb_classify(this.lb, p.hwProto, p.data, p.data.length, now, this.counters);
  }

  /** What the table re-injected since the last call, oldest first. */
  drain(hwProto: number): PcapPacket[] {
    const out: PcapPacket[] = [];
    for (let i = 0; i < 1000; i++) {
      const n = Number(libc.symbols.recv(this.fds[1], this.#buf, BigInt(this.#buf.length), MSG_DONTWAIT));
      if (n <= 0) break;
      out.push({ hwProto, data: this.#buf.slice(0, n) });
    }
    return out;
  }

  get fragStats(): FragStats {
    return decodeFragStats(this.stats);
  }

  [Symbol.dispose](): void {
    lib().nfqlb_lb_destroy(this.lb);
    lib().nfqlb_ft_destroy(this.ft);
    libc.symbols.close(this.fds[0]);
    libc.symbols.close(this.fds[1]);
  }
}

/** Fragment id of a packet (IPv4 id or IPv6 identification) as a string. */
function fragId(p: PcapPacket): string {
  const d = p.data;
  if (p.hwProto === 0x0800) return `${d[4]}.${d[5]}`;
  return `${d[44]}.${d[45]}.${d[46]}.${d[47]}`; // fragment header right after the IPv6 header
}

function isFirst(p: PcapPacket): boolean {
  const d = p.data;
  if (p.hwProto === 0x0800) return ((d[6] << 8 | d[7]) & 0x1fff) === 0;
  return ((d[42] << 8 | d[43]) & 0xfff8) === 0;
}

/** A table in the sandbox: M, N, the given fwmarks active; closed with `using`. */
function makeTable(M: number, N: number, active: number[]): TargetShm & Disposable {
  const name = `frag-${M}-${N}`;
  TargetShm.create(name, { M, N, ownFwmark: 0 });
  TargetShm.update(name, (a) => {
    a.set(active);
    return true;
  });
  const t = TargetShm.open(name);
  return Object.assign(t, { [Symbol.dispose]: () => t.close() });
}

/** xorshift32: fixed-seed shuffles. */
function shuffle<T>(items: T[], seed: number): T[] {
  const a = items.slice();
  let s = seed >>> 0 || 1;
  for (let i = a.length - 1; i > 0; i--) {
    s ^= s << 13, s >>>= 0, s ^= s >>> 17, s ^= s << 5, s >>>= 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/**
 * Feeds packets in the given order (plus every re-injected fragment, as the
 * kernel queues it again) and returns, per datagram, the marks its fragments
 * were accepted with and how many were accepted.
 */
function run(
  rig: Rig,
  packets: PcapPacket[],
  step = 0n,
): Map<string, { marks: Set<number>; accepted: number }> {
  const seen = new Map<string, { marks: Set<number>; accepted: number }>();
  let now = 1000n * MS;
  const feed = (p: PcapPacket) => {
    const mark = rig.classify(p, now);
    const id = fragId(p);
    const e = seen.get(id) ?? { marks: new Set<number>(), accepted: 0 };
    seen.set(id, e);
    if (mark >= 0) {
      e.marks.add(mark);
      e.accepted++;
    }
    for (const again of rig.drain(p.hwProto)) feed(again);
  };
  for (const p of packets) {
    feed(p);
    now += step;
  }
  return seen;
}

/** The fwmark each datagram's first fragment gets from the table. */
function firstMarks(rig: Rig, packets: PcapPacket[]): Map<string, number> {
  const m = new Map<string, number>();
  const key = new Uint8Array(NFQLB_KEY_LEN), fkey = new Uint8Array(NFQLB_KEY_LEN);
  for (const p of packets.filter(isFirst)) {
    lib().nfqlb_packet_key(p.hwProto, p.data, p.data.length, 0, key, fkey);
    m.set(fragId(p), rig.table.lookup(lib().nfqlb_hash_key(key, 40, 1)));
  }
  return m;
}

for (const fam of ["ipv4", "ipv6"] as const) {
  const packets = readPcap(`${TESTDATA}/pcap/udp-${fam}.pcap`);

  Deno.test(`fragments ${fam}: file order, reassembler on: every fragment follows its first; stats as upstream's run of the same file`, () => {
    using _sb = libSandbox();
    using table = makeTable(997, 32, [101, 102, 103]);
    using rig = new Rig(table, { reassembler: 200 });
    const seen = run(rig, packets);
    const want = firstMarks(rig, packets);
    assert.equal(seen.size, 2);
    for (const [id, e] of seen) {
      assert.deepEqual([...e.marks], [want.get(id)], `datagram ${id}`);
      assert.equal(e.accepted, 21);
    }
    const s = rig.fragStats;
    assert.deepEqual(s, {
      hsize: 109,
      ttlMillis: 200,
      collisions: 0,
      inserts: 2,
      rejected: 0,
      lookups: 42,
      objGC: 0,
      mtu: 1500,
      bucketsMax: 100,
      bucketsAllocated: 0,
      bucketsUsed: 0,
      fragsMax: 1000,
      fragsAllocated: 0,
      fragsDiscarded: 0,
      reAssembled: 2,
    });
  });

  Deno.test(`fragments ${fam}: reversed, shuffled (5 seeds) and duplicated orders: every fragment delivered with its first fragment's mark`, () => {
    using _sb = libSandbox();
    using table = makeTable(997, 32, [101, 102, 103]);
    const orders: [string, PcapPacket[], number][] = [
      ["reversed", packets.slice().reverse(), 21],
      ...[1, 2, 3, 4, 5].map((
        seed,
      ): [string, PcapPacket[], number] => [`shuffled ${seed}`, shuffle(packets, seed), 21]),
      // every packet twice, the copies interleaved at random
      ["duplicated", shuffle([...packets, ...packets], 42), 42],
    ];
    for (const [name, order, perDatagram] of orders) {
      using rig = new Rig(table);
      const want = firstMarks(rig, packets);
      const seen = run(rig, order);
      for (const [id, e] of seen) {
        assert.deepEqual([...e.marks], [want.get(id)], `${name}: datagram ${id}`);
        assert.equal(e.accepted, perDatagram, `${name}: datagram ${id} accepted`);
      }
      const s = rig.fragStats;
      assert.equal(s.rejected, 0, name);
      assert.equal(rig.counters[COUNTER_NAMES.indexOf("frag_inject_failed")], 0n, name);
    }
  });

  Deno.test(`fragments ${fam}: reversed order stores 20 per datagram and re-injects them (lookups 82)`, () => {
    using _sb = libSandbox();
    using table = makeTable(997, 32, [101, 102, 103]);
    using rig = new Rig(table);
    run(rig, packets.slice(0, 21).reverse().concat(packets.slice(21).reverse()));
    const s = rig.fragStats;
    assert.equal(s.fragsAllocated, 40);
    assert.equal(s.inserts, 2);
    assert.equal(s.lookups, 42 + 40); // each stored fragment comes back once
    assert.equal(rig.counters[COUNTER_NAMES.indexOf("frag_stored")], 40n);
    assert.equal(rig.counters[COUNTER_NAMES.indexOf("frag_injected")], 40n);
  });

  Deno.test(`fragments ${fam}: a full fragment store loses the datagram and frees what it held`, () => {
    using _sb = libSandbox();
    using table = makeTable(997, 32, [101, 102, 103]);
    using rig = new Rig(table, { frags: 4 });
    const seen = run(rig, packets.slice(0, 21).reverse());
    const s = rig.fragStats;
    assert.equal(s.fragsAllocated, 4);
    assert.equal(s.fragsDiscarded, 4);
    // the 16 fragments that could not be kept are lost; only the first fragment (it restarts the entry) passes
    assert.equal([...seen.values()][0].accepted, 1, "a poisoned datagram loses its fragments");
    // the store is free again: the next datagram in order goes through
    const next = run(rig, packets.slice(21));
    assert.equal([...next.values()][0].accepted, 21);
  });

  Deno.test(`fragments ${fam}: stored fragments expire after the TTL (virtual time) and are discarded`, () => {
    using _sb = libSandbox();
    using table = makeTable(997, 32, [101, 102, 103]);
    using rig = new Rig(table, { size: 1, buckets: 0 });
    // 5 non-first fragments, 100 ms apart: the entry lives on (each refreshes it)
    run(rig, packets.slice(1, 6), 100n * MS);
    assert.equal(rig.fragStats.fragsAllocated, 5);
    // 250 ms after the last one (TTL 200 ms) the other datagram's first fragment evicts it
    const late = [packets[21]];
    let now = 1000n * MS + 5n * 100n * MS + 250n * MS;
    rig.classify(late[0], now);
    now += 1n;
    const s = rig.fragStats;
    assert.equal(s.objGC, 1);
    assert.equal(s.fragsDiscarded, 5);
  });
}

Deno.test("fragments: a reused fragment id starts a new datagram (Linux reuses ids within the TTL)", () => {
  using _sb = libSandbox();
  using table = makeTable(997, 32, [101, 102, 103]);
  using rig = new Rig(table);
  const v4 = readPcap(`${TESTDATA}/pcap/udp-ipv4.pcap`);
  const first = v4[0], later = v4[1];
  const fw1 = rig.classify(first, 1n);
  assert.ok(fw1 >= 101);
  // the same id, addresses and offset, but other ports: another datagram that hashes elsewhere
  const other = first.data.slice();
  for (let p = 20000; p < 20100; p++) {
    new DataView(other.buffer).setUint16(20, p);
    const fw2 = rig.classify({ hwProto: first.hwProto, data: other }, 2n);
    assert.ok(fw2 >= 101, "the new first fragment is accepted");
    assert.equal(rig.classify(later, 3n), fw2, "its later fragments follow it");
  }
});

Deno.test("fragments: a full table rejects and counts, never crashes", () => {
  using _sb = libSandbox();
  using table = makeTable(997, 32, [101, 102, 103]);
  using rig = new Rig(table, { size: 1, buckets: 0 });
  const v4 = readPcap(`${TESTDATA}/pcap/udp-ipv4.pcap`);
  assert.ok(rig.classify(v4[0], 1n) >= 0); // first datagram takes the only slot
  assert.equal(rig.classify(v4[21], 2n), -1); // the second finds no room
  assert.equal(rig.fragStats.rejected, 1);
});
