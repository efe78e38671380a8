/**
 * The connection table in the lb classifier (nfqlb_lb_set_conntrack), through
 * nfqlb_lb_classify on the real captures (tests/testdata/pcap): a flow
 * keeps its fwmark while its target stays in the table (active or draining),
 * moves when its target is gone, and a draining target gets no new flow.
 * Without a table, classification is Maglev's, as before. Virtual time.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { conntrackName, ConntrackShm } from "../../core/conntrack_shm.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import { readPcap } from "../helpers/pcap.ts";
import { Classifier, keyOf, MS, T0, withSport } from "../helpers/classifier.ts";
import { TESTDATA } from "../harness/paths.ts";
import { libSandbox } from "../helpers/shm.ts";
import { NFQLB_FTSTATS_LEN } from "../../ffi/consts.ts";

const PCAP = `${TESTDATA}/pcap`;
const TABLE = "ctlb";

function setRows(change: (active: Int32Array, weights: Uint32Array) => void): void {
  TargetShm.update(TABLE, (a, _t, w) => {
    change(a, w);
    return true;
  });
}

Deno.test("conntrack in lb: a flow keeps its fwmark until its target is gone; draining keeps old flows only", () => {
  using _sb = libSandbox();
  TargetShm.create(TABLE, { M: 997, N: 32, ownFwmark: 0 });
  setRows((a) => a.set([101, 102, 103, 104, 105, 106, 107, 108, 109, 110]));
  ConntrackShm.create(conntrackName(TABLE), { capacity: 4096 });
  const table = TargetShm.open(TABLE);
  const ct = ConntrackShm.open(conntrackName(TABLE));
  try {
    using plain = new Classifier(table);
    using withCt = new Classifier(table, ct);
    const syn = readPcap(`${PCAP}/telnet-ipv4.pcap`)[0];
    const key = keyOf(syn);

    // first packet: Maglev decides (as without the table) and the flow is stored with its row
    const F = withCt.classify(syn);
    assert.equal(F, plain.classify(syn));
    assert.ok(F >= 101 && F <= 110);
    const rowF = F - 101;
    let e = ct.get(key, T0)!;
    assert.equal(e.fwmark, F);
    assert.equal(e.row, rowF);
    let s = ct.stats();
    assert.equal(s.misses, 1);
    assert.equal(s.inserts, 1);
    assert.equal(s.hits, 0);

    // add targets until Maglev moves the flow: the table keeps it on F
    let added = 0;
    for (let row = 10; row < 32 && plain.classify(syn) === F; row++, added++) {
      setRows((a) => (a[row] = 200 + row));
    }
    assert.ok(plain.classify(syn) !== F, "adding targets never moved the flow");
    assert.equal(withCt.classify(syn, T0 + MS), F);
    s = ct.stats();
    assert.equal(s.hits, 1);
    assert.equal(s.inserts, 1);

    // F's target gone: the flow moves to Maglev's choice, which is stored
    setRows((a) => (a[rowF] = -1));
    const G = plain.classify(syn);
    assert.ok(G >= 0 && G !== F);
    assert.equal(withCt.classify(syn, T0 + 2n * MS), G);
    e = ct.get(key, T0 + 2n * MS)!;
    assert.equal(e.fwmark, G);
    const rowG = e.row;
    assert.equal(table.snapshot(0).active[rowG], G);
    assert.equal(withCt.classify(syn, T0 + 3n * MS), G); // and holds
    s = ct.stats();
    assert.equal(s.hits, 3); // the table's lookup found the stale entry too (then replaced it)
    assert.equal(s.inserts, 1); // replacing a live entry is no new entry

    // G drains (weight 0): the existing flow stays on G; no new flow gets G
    setRows((_a, w) => (w[rowG] = 0));
    assert.ok(plain.classify(syn) !== G);
    assert.equal(withCt.classify(syn, T0 + 4n * MS), G);
    for (let sport = 20000; sport < 20300; sport++) {
      const p = withSport(syn, sport);
      const fw = withCt.classify(p, T0 + 5n * MS);
      assert.notEqual(fw, G);
      assert.equal(fw, plain.classify(p));
      assert.equal(ct.get(keyOf(p), T0 + 5n * MS)?.fwmark, fw);
    }
    // drained to 0 and removed: the flow finally moves
    setRows((a) => (a[rowG] = -1));
    const H = withCt.classify(syn, T0 + 6n * MS);
    assert.equal(H, plain.classify(syn));
    assert.notEqual(H, G);
    assert.ok(added > 0);
    assert.equal(withCt.counters[COUNTER_NAMES.indexOf("malformed")], 0n);
  } finally {
    ct.close();
    table.close();
  }
});

Deno.test("conntrack in lb: an entry without a row (operator's) is used as is", () => {
  using _sb = libSandbox();
  TargetShm.create(TABLE, { M: 997, N: 8, ownFwmark: 0 });
  setRows((a) => a.set([101, 102, 103]));
  ConntrackShm.create(conntrackName(TABLE), { capacity: 64 });
  const table = TargetShm.open(TABLE);
  const ct = ConntrackShm.open(conntrackName(TABLE));
  try {
    using withCt = new Classifier(table, ct);
    const syn = readPcap(`${PCAP}/telnet-ipv6.pcap`)[0];
    ct.set(keyOf(syn), { fwmark: 777, row: -1, pinned: true, create: true }, T0);
    assert.equal(withCt.classify(syn), 777);
    assert.equal(ct.stats().hits, 1);
  } finally {
    ct.close();
    table.close();
  }
});

Deno.test("conntrack in lb: without a table, every packet is Maglev's (nfqlb_tshm_lookup of its hash)", () => {
  using _sb = libSandbox();
  TargetShm.create(TABLE, { M: 997, N: 32, ownFwmark: 0 });
  setRows((a) => a.set([101, 102, 103]));
  const table = TargetShm.open(TABLE);
  try {
    using plain = new Classifier(table);
    const c = lib();
    for (const file of ["telnet-ipv4.pcap", "telnet-ipv6.pcap"]) {
      for (const p of readPcap(`${PCAP}/${file}`)) {
        const fw = c.nfqlb_tshm_lookup(table.pointer, c.nfqlb_hash_key(keyOf(p), 40, 1));
        assert.equal(plain.classify(p), fw);
      }
    }
  } finally {
    table.close();
  }
});

Deno.test("conntrack in lb: fragments of one datagram go where the table sends the first", () => {
  using _sb = libSandbox();
  TargetShm.create(TABLE, { M: 997, N: 32, ownFwmark: 0 });
  setRows((a) => a.set([101, 102, 103, 104, 105]));
  ConntrackShm.create(conntrackName(TABLE), { capacity: 64 });
  const table = TargetShm.open(TABLE);
  const ct = ConntrackShm.open(conntrackName(TABLE));
  const stats = new Uint8Array(NFQLB_FTSTATS_LEN);
  const ft = lib().nfqlb_ft_create(109, 100, 200, 1500, 0, 0, Deno.UnsafePointer.of(stats))!;
  try {
    const frags = readPcap(`${PCAP}/udp-ipv4.pcap`).slice(0, 21);
    const first = frags[0];
    const key = keyOf(first);
    // the operator pins the flow elsewhere: the first fragment and then the others follow it
    ct.set(key, { fwmark: 555, row: -1, create: true }, T0);
    using withCt = new Classifier(table, ct, ft);
    for (const p of frags) assert.equal(withCt.classify(p), 555);
    assert.equal(ct.stats().hits, 1); // only the first fragment has the ports
  } finally {
    lib().nfqlb_ft_destroy(ft);
    ct.close();
    table.close();
  }
});
