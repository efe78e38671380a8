/**
 * The batched connection-table calls (nfqlb_ct_lookup_batch,
 * nfqlb_ct_insert_batch, nfqlb_ct_prefetch, nfqlb_ct_prefetch_ways) against
 * the single-key ones, through FFI, with virtual time: two byte-identical
 * tables (one file copied, so the same hash seed and placement) get the same
 * random workload, one key at a time on one and in batches on the other;
 * every result, every counter and the final listing must be equal. The
 * workload has hits, misses, expired entries, recycling in full buckets,
 * the flood guard, keys repeated within a batch, refused keys (byte 35 set)
 * and batches longer than the pipeline's 64 slots.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { ConntrackShm, flowKey } from "../../core/conntrack_shm.ts";
import { PORT_PROTOCOLS } from "../../core/ip_protocols.ts";
import { libSandbox, own } from "../helpers/shm.ts";
import { xorshift32 } from "../helpers/models.ts";

const MS = 1_000_000n;
const TTL = { tcp: 1000, udp: 500, other: 200 };

/** Key i of the pool: protocol by i % 3 (so three lifetimes), address and port by i. */
function key(i: number): Uint8Array<ArrayBuffer> {
  return flowKey({
    src: `10.${i % 3}.${(i >> 8) & 255}.${i & 255}`,
    dst: "10.99.0.1",
    proto: PORT_PROTOCOLS[i % 3],
    sport: 1000 + i,
    dport: 80,
  });
}

/** Two identical tables a (single calls) and b (batches), closed with `using`. */
function twin(capacity: number, floodPerSecond: number) {
  const sb = libSandbox();
  ConntrackShm.create("a", { capacity, ttlMs: TTL, floodPerSecond, replace: true });
  Deno.copyFileSync(sb.path(own("a")), sb.path(own("b")));
  const a = ConntrackShm.open("a"), b = ConntrackShm.open("b");
  return {
    a,
    b,
    [Symbol.dispose]() {
      a.close();
      b.close();
      sb[Symbol.dispose]();
    },
  };
}

/** The keys of a batch as one flat buffer; index -1 gives a refused key (byte 35 set). */
function flat(idx: number[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(idx.length * 40);
  idx.forEach((i, j) => {
    const k = key(i < 0 ? 7 : i);
    if (i < 0) k[35] = 1;
    out.set(k, j * 40);
  });
  return out;
}

function singleLookups(a: ConntrackShm, idx: number[], bytes: Uint32Array, now: bigint) {
  const fw = new Int32Array(idx.length), row = new Int32Array(idx.length);
  const keys = flat(idx);
  const r = new Int32Array(1);
  for (let j = 0; j < idx.length; j++) {
    fw[j] = lib().nfqlb_ct_lookup(a.pointer, keys.subarray(j * 40, j * 40 + 40), now, bytes[j], r);
    row[j] = r[0];
  }
  return { fw, row };
}

function batchLookups(b: ConntrackShm, idx: number[], bytes: Uint32Array, now: bigint) {
  const fw = new Int32Array(idx.length).fill(7), row = new Int32Array(idx.length).fill(7);
  const hits = lib().nfqlb_ct_lookup_batch(b.pointer, flat(idx), idx.length, now, bytes, fw, row);
  return { fw, row, hits };
}

function singleInserts(a: ConntrackShm, idx: number[], fws: Int32Array, rows: Int32Array, now: bigint) {
  const keys = flat(idx);
  return Int32Array.from(
    idx.map((_, j) =>
      lib().nfqlb_ct_insert(a.pointer, keys.subarray(j * 40, j * 40 + 40), fws[j], rows[j], now)
    ),
  );
}

function batchInserts(b: ConntrackShm, idx: number[], fws: Int32Array, rows: Int32Array, now: bigint) {
  const rc = new Int32Array(idx.length).fill(7);
  const ok = lib().nfqlb_ct_insert_batch(b.pointer, flat(idx), idx.length, fws, rows, now, rc);
  return { rc, ok };
}

/** The counters that must agree (capacity etc. are equal by construction). */
function counters(t: ConntrackShm) {
  const s = t.stats();
  return {
    entries: s.entries,
    inserts: s.inserts,
    recycles: s.recycles,
    floodSkips: s.floodSkips,
    expirations: s.expirations,
    hits: s.hits,
    misses: s.misses,
  };
}

/** Runs `rounds` random batches on the twins; returns totals for the caller's sanity checks. */
function workload(a: ConntrackShm, b: ConntrackShm, seed: number, rounds: number, pool: number) {
  const rnd = xorshift32(seed);
  let now = 10_000n * MS;
  const seen = { hits: 0, misses: 0, inserted: 0, skipped: 0, dupBatches: 0, refused: 0 };
  for (let r = 0; r < rounds; r++) {
    now += BigInt(rnd() % 300) * MS; // sometimes past the 200/500 ms lifetimes
    // 1..150 keys: crosses the pipeline's 64 slots and its 16-key distance
    const n = 1 + (rnd() % 150);
    const idx = Array.from({ length: n }, () => (rnd() % 50 === 0 ? -1 : rnd() % pool));
    if (new Set(idx).size < idx.length) seen.dupBatches++;
    seen.refused += idx.filter((i) => i < 0).length;
    if (rnd() % 2 === 0) {
      const bytes = Uint32Array.from(idx, () => rnd() % 1500);
      const s = singleLookups(a, idx, bytes, now);
      const t = batchLookups(b, idx, bytes, now);
      assert.deepEqual(t.fw, s.fw, `round ${r}: fwmarks`);
      assert.deepEqual(t.row, s.row, `round ${r}: rows`);
      const hits = s.fw.filter((f) => f >= 0).length;
      assert.equal(t.hits, hits, `round ${r}: hit count`);
      seen.hits += hits;
      seen.misses += n - hits;
    } else {
      const fws = Int32Array.from(idx, (i) => 100 + (Math.abs(i) % 7) + (rnd() % 2) * 10);
      const rows = Int32Array.from(idx, (i) => Math.abs(i) % 7);
      const s = singleInserts(a, idx, fws, rows, now);
      const t = batchInserts(b, idx, fws, rows, now);
      assert.deepEqual(t.rc, s, `round ${r}: insert results`);
      assert.equal(t.ok, s.filter((v) => v === 0).length, `round ${r}: insert count`);
      seen.inserted += t.ok;
      seen.skipped += s.filter((v) => v === 1).length;
    }
    assert.deepEqual(counters(b), counters(a), `round ${r}: counters`);
  }
  // the same entries in the same slots with the same packets, bytes and times
  assert.deepEqual(b.list({ now }), a.list({ now }));
  assert.deepEqual(counters(b), counters(a));
  assert.deepEqual(b.rowCounts(8), a.rowCounts(8));
  return seen;
}

Deno.test("conntrack batch: lookups and inserts equal single calls (small table: recycling, expiry, repeats)", () => {
  using t = twin(64, 0);
  const seen = workload(t.a, t.b, 12345, 400, 200);
  // the workload really went through the cases it is meant to cover
  assert.ok(seen.hits > 500 && seen.misses > 500, JSON.stringify(seen));
  assert.ok(seen.dupBatches > 100 && seen.refused > 100, JSON.stringify(seen));
  const s = t.a.stats();
  assert.ok(s.recycles > 100 && s.expirations > 100, JSON.stringify(s));
});

Deno.test("conntrack batch: equal single calls with the flood guard and a larger table", () => {
  using t = twin(4096, 300);
  const seen = workload(t.a, t.b, 987654, 300, 5000);
  assert.ok(seen.skipped > 0 && seen.inserted > 1000, JSON.stringify(seen));
  assert.ok(t.a.stats().floodSkips > 0);
});

Deno.test("conntrack batch: empty batch, repeats see the first one's refresh, prefetch changes nothing", () => {
  using t = twin(1024, 0);
  const now = 10_000n * MS;
  const L = lib();
  const none = new Int32Array(0);
  assert.equal(L.nfqlb_ct_lookup_batch(t.b.pointer, new Uint8Array(0), 0, now, null, none, none), 0);
  assert.equal(L.nfqlb_ct_insert_batch(t.b.pointer, new Uint8Array(0), 0, none, none, now, null), 0);
  assert.deepEqual(counters(t.b), counters(t.a));
  // insert the same key twice in one batch: one entry, the second decision wins (as two single inserts)
  const { rc } = batchInserts(t.b, [5, 5], Int32Array.of(105, 115), Int32Array.of(5, 6), now);
  assert.deepEqual(rc, Int32Array.of(0, 0));
  assert.equal(t.b.stats().entries, 1);
  // looked up three times in one batch: three hits, bytes NULL counts 0 bytes, 3 packets
  const fw = new Int32Array(3), row = new Int32Array(3);
  assert.equal(L.nfqlb_ct_lookup_batch(t.b.pointer, flat([5, 5, 5]), 3, now + MS, null, fw, row), 3);
  assert.deepEqual(fw, Int32Array.of(115, 115, 115));
  assert.deepEqual(row, Int32Array.of(6, 6, 6));
  const e = t.b.get(key(5), now + MS)!;
  assert.equal(e.packets, 3);
  assert.equal(e.bytes, 0);
  // the prefetch calls read but never write: the file is unchanged, bad keys ignored
  const before = Deno.readFileSync(`${Deno.env.get("NFQLB_SHM_DIR")}/${own("b")}`);
  for (const i of [5, 6, -1]) {
    const k = flat([i]);
    L.nfqlb_ct_prefetch(t.b.pointer, k);
    L.nfqlb_ct_prefetch_ways(t.b.pointer, k);
  }
  assert.deepEqual(Deno.readFileSync(`${Deno.env.get("NFQLB_SHM_DIR")}/${own("b")}`), before);
});
