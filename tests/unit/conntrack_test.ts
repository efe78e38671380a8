/**
 * The connection table (c/ct.c through core/conntrack_shm.ts) in
 * a sandboxed shm directory, with virtual time (passed in, ms resolution):
 * lookups and counts, lifetimes per protocol, lazy expiry, recycling order,
 * the flood guard, pin/offload/lifetime/context, delete, persistence across
 * mappings, lock take-over after a crash; then the C code under ASan/UBSan
 * and a multi-thread stress under ThreadSanitizer (c/test/ct_driver.c).
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import {
  conntrackName,
  type ConntrackOptions,
  ConntrackShm,
  flowKey,
  RECORD_BYTES,
} from "../../core/conntrack_shm.ts";
import { NfqlbError } from "../../core/errors.ts";
import { libSandbox, own } from "../helpers/shm.ts";
import { buildSanitized } from "../helpers/sanitize.ts";

const MS = 1_000_000n;
const T0 = 10_000n * MS; // virtual time starts at 10 s

/** TCP key i: 10.0.(i>>8).(i&255):(1000+i) -> 10.99.0.1:80. */
function tcp(i: number): Uint8Array<ArrayBuffer> {
  return flowKey({
    src: `10.0.${i >> 8}.${i & 255}`,
    dst: "10.99.0.1",
    proto: "tcp",
    sport: 1000 + i,
    dport: 80,
  });
}
function udp(i: number): Uint8Array<ArrayBuffer> {
  return flowKey({
    src: `10.1.${i >> 8}.${i & 255}`,
    dst: "10.99.0.1",
    proto: "udp",
    sport: 2000 + i,
    dport: 53,
  });
}
function sctp(i: number): Uint8Array<ArrayBuffer> {
  return flowKey({
    src: `10.2.${i >> 8}.${i & 255}`,
    dst: "10.99.0.1",
    proto: "sctp",
    sport: 3000 + i,
    dport: 80,
  });
}

const TTL = { tcp: 1000, udp: 500, other: 200 };

/** A fresh table `name` in the sandbox, closed with `using`. */
function table(opts: Partial<ConntrackOptions> = {}, name = "t-ct"): ConntrackShm & Disposable {
  ConntrackShm.create(name, { capacity: 1024, ttlMs: TTL, ...opts, replace: true });
  const ct = ConntrackShm.open(name);
  return Object.assign(ct, { [Symbol.dispose]: () => ct.close() });
}

Deno.test("conntrack: layout sizes, record size, 4 M entries in 256 MiB", () => {
  assert.equal(lib().nfqlb_ct_admin_record_bytes(), RECORD_BYTES);
  assert.equal(ConntrackShm.bytes(0), 0);
  assert.equal(ConntrackShm.bytes(2 ** 28 + 1), 0);
  // 64-byte entries + 2 bytes of bucket descriptor per entry + header
  const b = ConntrackShm.bytes(4_000_000);
  assert.ok(b <= 256 * 2 ** 20, `4 M entries take ${b} bytes`);
  // per entry, beyond the fixed part (header, stats, the schedulers' 256 KiB of per-row counts)
  assert.ok((b - ConntrackShm.bytes(8)) / (4_000_000 - 8) < 66.01);
  assert.ok(ConntrackShm.bytes(8) < 1152 + 8 * 66 + 64 + 65536 * 4 + 64);
  assert.equal(ConntrackShm.bytes(8, 2) - ConntrackShm.bytes(8, 0), 2 * 264 + 48 /* 64-alignment */);
});

Deno.test("conntrack: insert, lookup, hits/misses, packets and bytes", () => {
  using _sb = libSandbox();
  using ct = table();
  const k = tcp(1);
  assert.equal(ct.lookup(k, 100, T0), -1);
  assert.equal(ct.insert(k, 101, 3, T0), 0);
  assert.deepEqual(ct.lookupRow(k, 100, T0 + 5n * MS), { fwmark: 101, row: 3 });
  assert.equal(ct.lookup(k, 60, T0 + 7n * MS), 101);
  assert.equal(ct.lookup(udp(1), 60, T0), -1);
  const s = ct.stats();
  assert.equal(s.entries, 1);
  assert.equal(s.inserts, 1);
  assert.equal(s.hits, 2);
  assert.equal(s.misses, 2);
  const e = ct.get(k, T0 + 10n * MS)!;
  assert.equal(e.src, "10.0.0.1");
  assert.equal(e.dst, "10.99.0.1");
  assert.equal(e.protoName, "tcp");
  assert.equal(e.sport, 1001);
  assert.equal(e.dport, 80);
  assert.equal(e.fwmark, 101);
  assert.equal(e.row, 3);
  assert.equal(e.packets, 2);
  assert.equal(e.bytes, 160);
  assert.equal(e.ageMs, 10);
  assert.equal(e.idleMs, 3);
  assert.equal(e.lifetimeMs, 1000);
  assert.equal(e.pinned, false);
  assert.equal(e.context, undefined);
  // a second insert of a live key replaces the decision, it is not a new entry
  assert.equal(ct.insert(k, 102, 4, T0 + 20n * MS), 0);
  assert.equal(ct.lookup(k, 0, T0 + 20n * MS), 102);
  assert.equal(ct.stats().inserts, 1);
  // keys with byte 35 set are refused (it holds the flags)
  const bad = new Uint8Array(k);
  bad[35] = 1;
  assert.equal(ct.insert(bad, 1, 1, T0), -1);
  assert.equal(ct.lookup(bad, 0, T0), -1);
});

Deno.test("conntrack: lifetime per protocol, strictly greater, lazy expiry counted", () => {
  using _sb = libSandbox();
  using ct = table();
  for (const [mk, ttl] of [[tcp, TTL.tcp], [udp, TTL.udp], [sctp, TTL.other]] as const) {
    const a = mk(10), b = mk(11);
    ct.insert(a, 7, 0, T0);
    ct.insert(b, 7, 0, T0);
    // get() does not refresh: idle == lifetime is still alive
    assert.ok(ct.get(a, T0 + BigInt(ttl) * MS), `alive at exactly ${ttl} ms`);
    assert.equal(ct.get(a, T0 + BigInt(ttl + 1) * MS), undefined, `expired at ${ttl + 1} ms`);
    // a lookup refreshes: b lives on from its last packet
    assert.equal(ct.lookup(b, 0, T0 + BigInt(ttl) * MS), 7);
    assert.equal(ct.lookup(b, 0, T0 + BigInt(2 * ttl) * MS), 7);
    assert.equal(ct.lookup(b, 0, T0 + BigInt(3 * ttl + 1) * MS), -1);
  }
  const s = ct.stats();
  assert.equal(s.expirations, 6);
  assert.equal(s.entries, 0);
  assert.deepEqual([s.ttlTcpMs, s.ttlUdpMs, s.ttlOtherMs], [1000, 500, 200]);
});

Deno.test("conntrack: expired entries are reclaimed by list and by inserts in their bucket", () => {
  using _sb = libSandbox();
  using ct = table({ capacity: 8 }); // one bucket of 8
  for (let i = 0; i < 8; i++) ct.insert(tcp(i), 100 + i, i, T0);
  assert.equal(ct.stats().entries, 8);
  assert.equal(ct.list({ now: T0 + 1000n * MS }).length, 8);
  assert.equal(ct.list({ now: T0 + 1001n * MS }).length, 0);
  assert.equal(ct.stats().expirations, 8);
  assert.equal(ct.stats().entries, 0);
  for (let i = 0; i < 8; i++) ct.insert(tcp(i), 100 + i, i, T0);
  // the next insert finds expired ways: no recycling
  assert.equal(ct.insert(tcp(50), 1, 1, T0 + 2000n * MS), 0);
  const s = ct.stats();
  assert.equal(s.recycles, 0);
  assert.equal(s.expirations, 16);
  assert.equal(s.entries, 1);
});

Deno.test("conntrack: a full table recycles the entry closest to expiry first, counted", () => {
  using _sb = libSandbox();
  using ct = table({ capacity: 8 }); // one bucket: the whole table
  assert.equal(ct.stats().capacity, 8);
  // tcp(0..6) at 0, 10, ..., 60 ms; one udp (lifetime 500) at 70 ms
  for (let i = 0; i < 7; i++) assert.equal(ct.insert(tcp(i), 100 + i, i, T0 + BigInt(10 * i) * MS), 0);
  assert.equal(ct.insert(udp(0), 200, 0, T0 + 70n * MS), 0);
  // at 100 ms: tcp(0) has 900 ms left, udp(0) 470 ms: the udp flow goes first
  assert.equal(ct.insert(tcp(20), 120, 0, T0 + 100n * MS), 0);
  assert.equal(ct.get(udp(0), T0 + 100n * MS), undefined);
  // then the oldest TCP flow, unless it was seen again
  assert.equal(ct.lookup(tcp(0), 0, T0 + 110n * MS), 100);
  assert.equal(ct.insert(tcp(21), 121, 0, T0 + 120n * MS), 0);
  assert.ok(ct.get(tcp(0), T0 + 120n * MS), "tcp(0) was refreshed");
  assert.equal(ct.get(tcp(1), T0 + 120n * MS), undefined, "tcp(1) is now the closest to expiry");
  // a pinned entry is never recycled
  ct.set(tcp(2), { pinned: true }, T0 + 120n * MS);
  assert.equal(ct.insert(tcp(22), 122, 0, T0 + 130n * MS), 0);
  assert.ok(ct.get(tcp(2), T0 + 130n * MS));
  assert.equal(ct.get(tcp(3), T0 + 130n * MS), undefined);
  const s = ct.stats();
  assert.equal(s.recycles, 3);
  assert.equal(s.entries, 8);
  assert.equal(s.expirations, 0);
  // all 8 pinned: nothing can be inserted
  for (const e of ct.list({ now: T0 + 130n * MS })) ct.set(e.key, { pinned: true }, T0 + 130n * MS);
  assert.equal(ct.insert(tcp(23), 1, 1, T0 + 140n * MS), -1);
  assert.equal(ct.stats().recycles, 3);
});

Deno.test("conntrack: flood guard skips new flows over the limit per second, resets next second", () => {
  using _sb = libSandbox();
  using ct = table({ floodPerSecond: 5 });
  const sec = 1_000_000_000n * 100n; // second 100
  for (let i = 0; i < 5; i++) assert.equal(ct.insert(tcp(i), 101, 0, sec + BigInt(i) * 100n * MS), 0);
  assert.equal(ct.insert(tcp(5), 101, 0, sec + 600n * MS), 1);
  assert.equal(ct.insert(tcp(6), 101, 0, sec + 999n * MS), 1);
  // a known flow is not a new one
  assert.equal(ct.insert(tcp(0), 102, 0, sec + 999n * MS), 0);
  assert.equal(ct.lookup(tcp(5), 0, sec + 999n * MS), -1);
  let s = ct.stats();
  assert.equal(s.floodSkips, 2);
  assert.equal(s.inserts, 5);
  assert.equal(s.floodPerSecond, 5);
  // the next second starts afresh
  for (let i = 5; i < 10; i++) assert.equal(ct.insert(tcp(i), 101, 0, sec + 1000n * MS), 0);
  assert.equal(ct.insert(tcp(10), 101, 0, sec + 1500n * MS), 1);
  s = ct.stats();
  assert.equal(s.floodSkips, 3);
  assert.equal(s.inserts, 10);
  // operator entries (set with create) bypass the guard
  ct.set(tcp(11), { fwmark: 5, row: 0, create: true }, sec + 1600n * MS);
  assert.equal(ct.lookup(tcp(11), 0, sec + 1600n * MS), 5);
});

Deno.test("conntrack: pin, offload, lifetime and context; list decodes them", () => {
  using _sb = libSandbox();
  using ct = table({ ctxSlots: 2 });
  const a = tcp(1),
    b = udp(2),
    c = flowKey({ src: "1000::1", dst: "2001:db8::7", proto: "sctp", sport: 5, dport: 6 });
  ct.insert(a, 101, 1, T0);
  ct.insert(b, 102, 2, T0);
  ct.insert(c, 103, 3, T0);
  // pin a to another target: inserts no longer move it, it never expires
  ct.set(a, { fwmark: 200, row: 7, pinned: true }, T0);
  assert.equal(ct.insert(a, 101, 1, T0 + 1n * MS), 0);
  assert.deepEqual(ct.lookupRow(a, 0, T0 + 1n * MS), { fwmark: 200, row: 7 });
  assert.equal(ct.get(a, T0 + 86_400_000n * MS)?.pinned, true);
  // offload + context
  ct.set(b, { offloaded: true, context: "vip=a;note=ü" }, T0);
  ct.set(c, { context: new Uint8Array([1, 2, 3]) }, T0);
  assert.throws(() => ct.set(a, { context: "x" }, T0), /no room/); // 2 context records only
  assert.throws(() => ct.set(a, { context: "x".repeat(257) }, T0), /limit is 256/);
  assert.throws(() => ct.set(tcp(99), { pinned: true }, T0), /no such connection/);
  assert.throws(() => ct.set(a, { row: 1 }, T0), /needs its fwmark/);
  assert.throws(() => ct.set(a, { lifetimeMs: -1 }, T0), NfqlbError);
  const list = ct.list({ now: T0 + 2n * MS });
  assert.equal(list.length, 3);
  const byFw = new Map(list.map((e) => [e.fwmark, e]));
  const ea = byFw.get(200)!, eb = byFw.get(102)!, ec = byFw.get(103)!;
  assert.equal(ea.pinned, true);
  assert.equal(ea.lifetimeMs, 0);
  assert.equal(ea.row, 7);
  assert.equal(eb.offloaded, true);
  assert.equal(eb.context, "vip=a;note=ü");
  assert.equal(eb.src, "10.1.0.2");
  assert.equal(eb.protoName, "udp");
  assert.deepEqual([...ec.contextBytes!], [1, 2, 3]);
  assert.equal(ec.src, "1000::1");
  assert.equal(ec.dst, "2001:db8::7");
  assert.equal(ec.proto, 132);
  assert.equal(ec.sport, 5);
  assert.equal(ct.stats().ctxUsed, 2);
  // clear a context: its record is free for another entry
  ct.set(c, { context: null }, T0);
  assert.equal(ct.get(c, T0)?.context, undefined);
  ct.set(a, { context: "now it fits" }, T0);
  assert.equal(ct.get(a, T0)?.context, "now it fits");
  // an expired entry frees its context
  assert.equal(ct.get(b, T0 + 501n * MS), undefined);
  assert.equal(ct.stats().ctxUsed, 1);
  // unpin: the protocol lifetime applies again, from now
  ct.set(a, { pinned: false }, T0 + 10_000n * MS);
  assert.ok(ct.get(a, T0 + 11_000n * MS));
  assert.equal(ct.get(a, T0 + 11_001n * MS), undefined);
  assert.equal(ct.stats().ctxUsed, 0);
  // per-entry lifetime: exact below 32768 ms, else whole seconds (rounded up)
  ct.insert(c, 103, 3, T0);
  ct.set(c, { lifetimeMs: 50 }, T0);
  assert.equal(ct.get(c, T0 + 50n * MS)?.lifetimeMs, 50);
  assert.equal(ct.get(c, T0 + 51n * MS), undefined);
  ct.insert(c, 103, 3, T0);
  ct.set(c, { lifetimeMs: 40_500 }, T0);
  assert.equal(ct.get(c, T0)?.lifetimeMs, 41_000);
  ct.set(c, { lifetimeMs: 0 }, T0);
  assert.equal(ct.get(c, T0)?.lifetimeMs, TTL.other);
  assert.throws(() => ct.set(c, { lifetimeMs: 32_768_000 }, T0), NfqlbError);
});

Deno.test("conntrack: delete, count by row", () => {
  using _sb = libSandbox();
  using ct = table();
  for (let i = 0; i < 30; i++) ct.insert(tcp(i), 100 + (i % 3), i % 3, T0);
  ct.insert(udp(0), 5, -1, T0);
  assert.deepEqual([...ct.countByRow(3, T0)], [10, 10, 10]);
  assert.equal(lib().nfqlb_ct_admin_count_by_row(ct.pointer, new Uint32Array(1), 1, T0), 31);
  assert.equal(ct.delete(tcp(0)), true);
  assert.equal(ct.delete(tcp(0)), false);
  assert.equal(ct.lookup(tcp(0), 0, T0), -1);
  assert.deepEqual([...ct.countByRow(3, T0)], [9, 10, 10]);
  // the udp flows expire first
  assert.deepEqual([...ct.countByRow(3, T0 + 600n * MS)], [9, 10, 10]);
  assert.equal(lib().nfqlb_ct_admin_count_by_row(ct.pointer, new Uint32Array(1), 1, T0 + 600n * MS), 29);
  const s = ct.stats();
  assert.equal(s.deletes, 1);
  assert.equal(s.entries, 30);
});

Deno.test("conntrack: the table persists in its file: a new mapping sees the entries", () => {
  using sb = libSandbox();
  const name = conntrackName("vip");
  assert.equal(name, "vip-ct");
  ConntrackShm.create(name, { capacity: 100, ctxSlots: 4, ttlMs: TTL });
  {
    const ct = ConntrackShm.open(name);
    ct.insert(tcp(1), 101, 1, T0);
    ct.set(tcp(1), { context: "kept" }, T0);
    ct.close();
  }
  assert.ok(Deno.statSync(sb.path(own(name))).size >= ConntrackShm.bytes(100, 4));
  {
    const ct = ConntrackShm.open(name);
    assert.equal(ct.lookup(tcp(1), 0, T0 + 1n * MS), 101);
    assert.equal(ct.get(tcp(1), T0)?.context, "kept");
    assert.equal(ct.stats().capacity, 104);
    ct.close();
  }
  // create refuses an existing table unless asked to replace it, and never touches other files
  assert.throws(() => ConntrackShm.create(name, { capacity: 100 }), /exists/);
  ConntrackShm.create(name, { capacity: 100, replace: true });
  {
    const ct = ConntrackShm.open(name);
    assert.equal(ct.lookup(tcp(1), 0, T0), -1);
    ct.close();
  }
  Deno.writeFileSync(sb.path(own("other")), new Uint8Array(4096).fill(7));
  assert.throws(
    () => ConntrackShm.create("other", { capacity: 8, replace: true }),
    /not an nfqlb connection table/,
  );
  assert.throws(() => ConntrackShm.open("other"), /bad magic/);
  assert.throws(() => ConntrackShm.open("missing"), /No such file/);
  // truncated
  const bytes = Deno.readFileSync(sb.path(own(name)));
  Deno.writeFileSync(sb.path(own("short")), bytes.subarray(0, 4096));
  assert.throws(() => ConntrackShm.open("short"), /truncated/);
  // option validation (zod)
  assert.throws(() => ConntrackShm.create("x", { capacity: 0 }), /capacity/);
  assert.throws(() => ConntrackShm.create("x", { capacity: 8, ttlMs: { tcp: -1 } }), /ttlMs/);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => ConntrackShm.create("x", { capacity: 8, bogus: 1 } as any), NfqlbError);
  assert.throws(() => flowKey({ src: "10.0.0.300", dst: "1.2.3.4", proto: "tcp" }), /Invalid address/);
});

Deno.test("conntrack: a lock left by a dead thread is taken over", async () => {
  using _sb = libSandbox();
  using ct = table({ capacity: 64 });
  ct.insert(tcp(1), 101, 1, T0);
  // a process that has exited: its pid (= its main thread's tid) no longer exists
  const child = new Deno.Command("true").spawn();
  const dead = child.pid;
  await child.status;
  const nb = ct.stats().capacity / 8;
  const buckets = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(ct.pointer, 1152 + 16 * nb));
  for (let b = 0; b < nb; b++) buckets[(1152 + 16 * b) / 4] = dead; // every bucket "locked" by it
  assert.equal(ct.lookup(tcp(1), 0, T0), 101);
  assert.equal(ct.insert(tcp(2), 102, 2, T0), 0);
  assert.ok(ct.stats().lockSteals >= 1);
  for (let b = 0; b < nb; b++) buckets[(1152 + 16 * b) / 4] = 0;
});

async function run(bin: string, args: string[]): Promise<string> {
  const r = await new Deno.Command(bin, { args, stdout: "piped", stderr: "piped" }).output();
  const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, `${bin} ${args.join(" ")}: ${err.slice(0, 4000)}`);
  assert.match(out, /^ok /);
  return out;
}

Deno.test("conntrack: C code clean under ASan/UBSan (random operations, invariants, threads)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-ct-" });
  try {
    const bin = await buildSanitized(dir, "ct_driver", ["ct.c", "ct_admin.c"]);
    const out = await run(bin, ["check", "300000"]);
    const m = /recycles=(\d+) expirations=(\d+)/.exec(out)!;
    assert.ok(Number(m[1]) > 0 && Number(m[2]) > 0, out);
    await run(bin, ["stress", "4", "50000"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("conntrack: 4 threads + a lister at once, clean under ThreadSanitizer", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-ct-" });
  try {
    const bin = await buildSanitized(dir, "ct_driver", ["ct.c", "ct_admin.c"], "thread");
    const out = await run(bin, ["stress", "4", "100000"]);
    const m = /hits=(\d+) listed=(\d+) walks=(\d+)/.exec(out)!;
    assert.ok(Number(m[1]) > 10000 && Number(m[3]) > 0, out);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
