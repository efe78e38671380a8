/**
 * ffi/consts.ts, the constants shared with the C library: the committed file
 * is what scripts/gen_consts.ts makes of c/nfqlb.h, the generator notices
 * what it must, and the values (offsets, sizes, codes, limits) are the ones
 * the library uses at run time: each check has C write or judge something
 * and TypeScript read or predict it with the generated constants.
 */
import assert from "node:assert/strict";
import * as K from "../../ffi/consts.ts";
import { lib, libraryPath } from "../../ffi/lib.ts";
import { generate, parseHeader, staleness } from "../../scripts/gen_consts.ts";
import { COUNTER_NAMES } from "../../core/counters_shm.ts";
import { SCHEDULERS, STAT_NAMES } from "../../core/conntrack_shm.ts";
import { ROOT } from "../harness/paths.ts";

const HEADER = Deno.readTextFileSync(`${ROOT}/c/nfqlb.h`);

/** The members of a generated enum, by prefix and without the prefix, in value order: those below its count. */
function members(prefix: string, count: keyof typeof K): string[] {
  const n = K[count] as number;
  return Object.entries(K).filter(([k, v]) => k.startsWith(prefix) && typeof v === "number" && v < n)
    .sort((a, b) => (a[1] as number) - (b[1] as number)).map(([k]) => k.slice(prefix.length));
}

Deno.test("consts: ffi/consts.ts is up to date (gen_consts.ts --check exits 0)", async () => {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/scripts/gen_consts.ts`, "--check"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
});

Deno.test("consts: --check names the constant that differs, and catches a comment that states a wrong offset", () => {
  const good = generate(HEADER);
  assert.deepEqual(staleness(good, good), []);
  const stale = good.replace(
    /^export const NFQLB_CT_VERSION = (\d+);$/m,
    (_, v) => `export const NFQLB_CT_VERSION = ${+v + 1};`,
  );
  assert.notEqual(stale, good);
  assert.equal(staleness(stale, good).length, 1);
  assert.match(staleness(stale, good)[0], /^NFQLB_CT_VERSION: /);
  const bad = "/* ts: x */\nstruct s {\n\tuint8_t a; /* 0 */\n\tuint32_t b; /* 1 */\n};\n";
  assert.throws(() => parseHeader(bad), /s\.b is at offset 4, its comment says 1/);
});

Deno.test("consts: struct sizes are the library's", () => {
  assert.equal(K.NFQLB_CT_RECORD_SIZEOF, lib().nfqlb_ct_admin_record_bytes());
  assert.equal(K.NFQLB_CT_RECORD_BYTES, lib().nfqlb_ct_admin_record_bytes());
  // c/trace.c asserts sizeof(struct nfqlb_trace_rec) == NFQLB_TRACE_REC_LEN
  assert.equal(K.NFQLB_TRACE_REC_SIZEOF, K.NFQLB_TRACE_REC_LEN);
});

Deno.test("consts: a target table the library formats reads back at the generated offsets; its check codes", () => {
  const M = 997, N = 5, own = 7;
  const size = new BigUint64Array(1);
  assert.equal(lib().nfqlb_tshm_bytes(M, N, size), 0);
  const buf = new Uint8Array(Number(size[0]));
  const p = Deno.UnsafePointer.of(buf)!;
  assert.equal(lib().nfqlb_tshm_format(p, size[0], M, N, own), 0);
  const v = new DataView(buf.buffer);
  assert.equal(v.getUint32(0, true), K.NFQLB_TSHM_MAGIC);
  assert.equal(v.getUint16(K.NFQLB_TSHM_OFF_VERSION, true), K.NFQLB_TSHM_VERSION);
  assert.equal(v.getUint32(K.NFQLB_TSHM_OFF_M, true), M);
  assert.equal(v.getUint32(K.NFQLB_TSHM_OFF_N, true), N);
  assert.equal(v.getInt32(K.NFQLB_TSHM_OFF_OWN_FWMARK, true), own);
  assert.equal(v.getUint32(K.NFQLB_TSHM_OFF_REPLACED, true), 0);
  assert.equal(lib().nfqlb_tshm_check(p, size[0]), 0);
  assert.equal(lib().nfqlb_tshm_check(p, BigInt(K.NFQLB_TSHM_HEADER - 1)), K.NFQLB_ETRUNC);
  v.setUint16(K.NFQLB_TSHM_OFF_VERSION, K.NFQLB_TSHM_VERSION + 1, true);
  assert.equal(lib().nfqlb_tshm_check(p, size[0]), K.NFQLB_EVERSION);
  v.setUint32(0, 0, true);
  assert.equal(lib().nfqlb_tshm_check(p, size[0]), K.NFQLB_EMAGIC);
  assert.equal(lib().nfqlb_tshm_bytes(M, 1, size), 0);
  assert.ok(Number(size[0]) <= K.NFQLB_TSHM_MAX_BYTES);
});

Deno.test("consts: a connection table's version offset, record offsets, flags, limits and counters", () => {
  const C = lib();
  const size = C.nfqlb_ct_admin_bytes(8, 1);
  const buf = new Uint8Array(Number(size));
  const p = Deno.UnsafePointer.of(buf)!;
  assert.equal(C.nfqlb_ct_admin_format(p, size, 8, 1, new Uint32Array([1000, 1000, 1000]), 0), 0);
  const v = new DataView(buf.buffer);
  assert.equal(v.getUint32(0, true), K.NFQLB_CT_MAGIC);
  assert.equal(v.getUint16(K.NFQLB_CT_OFF_VERSION, true), K.NFQLB_CT_VERSION);
  assert.equal(C.nfqlb_ct_admin_check(p, size), 0);
  assert.equal(C.nfqlb_ct_admin_bytes(K.NFQLB_CT_MAX_CAPACITY + 1, 0), 0n);
  assert.equal(C.nfqlb_ct_admin_bytes(8, K.NFQLB_CT_MAX_CTX + 1), 0n);

  const key = new Uint8Array(K.NFQLB_KEY_LEN).fill(9, 0, 32);
  const ctx = new TextEncoder().encode("ctx");
  const now = 5_000_000_000n;
  const what = K.NFQLB_CT_SET_CREATE | K.NFQLB_CT_SET_FWMARK | K.NFQLB_CT_SET_PIN | K.NFQLB_CT_SET_CTX;
  assert.equal(C.nfqlb_ct_admin_set(p, key, what, 123, 4, 0, ctx, ctx.length, now), 0);
  const rec = new Uint8Array(K.NFQLB_CT_RECORD_BYTES);
  assert.equal(C.nfqlb_ct_admin_get(p, key, now, rec), 0);
  const O = K.NFQLB_CT_RECORD_OFF, r = new DataView(rec.buffer);
  assert.deepEqual(rec.slice(O.key, O.key + K.NFQLB_KEY_LEN), key);
  assert.equal(r.getInt32(O.fwmark, true), 123);
  assert.equal(r.getInt32(O.row, true), 4);
  assert.equal(r.getUint32(O.flags, true), K.NFQLB_CT_F_PINNED | K.NFQLB_CT_F_CTX);
  assert.equal(r.getUint32(O.ctx_len, true), ctx.length);
  assert.deepEqual(rec.slice(O.ctx, O.ctx + ctx.length), ctx);

  // the longest per-entry lifetime is accepted, one ms more is not
  const life = (ms: number) => C.nfqlb_ct_admin_set(p, key, K.NFQLB_CT_SET_LIFETIME, 0, 0, ms, null, 0, now);
  assert.equal(life(K.NFQLB_CT_MAX_LIFETIME_MS), 0);
  assert.equal(life(K.NFQLB_CT_MAX_LIFETIME_MS + 1), -1);
  const ctxBig = new Uint8Array(K.NFQLB_CT_CTX_MAX + 1);
  assert.equal(C.nfqlb_ct_admin_set(p, key, K.NFQLB_CT_SET_CTX, 0, 0, 0, ctxBig, ctxBig.length, now), -1);

  // NFQLB_CT_STATS_ALL values, in enum order, and nothing past them
  const stats = new BigUint64Array(K.NFQLB_CT_STATS_ALL + 1).fill(0xdeadn);
  C.nfqlb_ct_admin_stats(p, stats, stats.length);
  assert.equal(stats[K.NFQLB_CT_STATS_ALL], 0xdeadn);
  assert.equal(stats[K.NFQLB_CT_STAT_ENTRIES], 1n);
  assert.equal(stats[K.NFQLB_CT_STAT_CAPACITY], 8n);
  assert.equal(stats[K.NFQLB_CT_STAT_CTX_USED], 1n);
  assert.equal(stats[K.NFQLB_CT_STAT_BYTES], size);
  assert.equal(C.nfqlb_ct_admin_delete(p, key), 0);
  C.nfqlb_ct_admin_stats(p, stats, stats.length);
  assert.equal(stats[K.NFQLB_CT_STAT_DELETES], 1n);

  // scheduler ids: the library takes NFQLB_SCHED_COUNT of them
  assert.equal(C.nfqlb_ct_admin_set_scheduler(p, K.NFQLB_SCHED_WLC), 0);
  assert.equal(C.nfqlb_ct_scheduler(p), K.NFQLB_SCHED_WLC);
  assert.equal(C.nfqlb_ct_admin_set_scheduler(p, K.NFQLB_SCHED_COUNT), -1);
});

Deno.test("consts: a trace record the library fills reads back at the generated offsets", () => {
  // IPv4 ICMP echo request, id 0x1234, seq 5
  const pkt = new Uint8Array(28);
  pkt.set([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
  pkt.set([8, 0, 0, 0, 0x12, 0x34, 0, 5], 20);
  const rec = new Uint8Array(K.NFQLB_TRACE_REC_LEN);
  assert.equal(lib().nfqlb_trace_icmp(0x0800, pkt, pkt.length, rec), 1);
  const O = K.NFQLB_TRACE_REC_OFF, v = new DataView(rec.buffer);
  assert.equal(v.getUint32(O.events, true), K.NFQLB_TEV_ICMP);
  assert.equal(v.getUint8(O.icmp_type), 8);
  assert.equal(v.getUint8(O.icmp_code), 0);
  assert.equal(v.getUint16(O.icmp_id, true), 0x1234);
  assert.equal(v.getUint16(O.icmp_seq, true), 5);
});

Deno.test("consts: the fragment table writes its ftshm record at the generated offsets", () => {
  const stats = new Uint8Array(K.NFQLB_FTSTATS_LEN);
  const ft = lib().nfqlb_ft_create(101, 33, 250, 1400, 0, 0, Deno.UnsafePointer.of(stats))!;
  try {
    const v = new DataView(stats.buffer);
    assert.equal(v.getUint32(K.NFQLB_FTSTATS_SIZE, true), 101);
    assert.equal(v.getUint32(K.NFQLB_FTSTATS_BUCKETSMAX, true), 33);
    assert.equal(v.getUint32(K.NFQLB_FTSTATS_MTU, true), 1400);
    assert.equal(v.getBigUint64(K.NFQLB_FTSTATS_TTL, true), 250_000_000n);
  } finally {
    lib().nfqlb_ft_destroy(ft);
  }
});

Deno.test("consts: the per-target slots of the counters shm read back at the generated offsets", () => {
  const l = Deno.dlopen(libraryPath(), {
    nfqlb_target_stats_add: { parameters: ["buffer", "u32", "i32", "u32", "buffer"], result: "void" },
  });
  try {
    const slots = 4;
    const t = new Uint8Array(slots * K.NFQLB_TARGET_STAT_SIZEOF);
    const counters = new BigUint64Array(K.NFQLB_C_COUNT);
    l.symbols.nfqlb_target_stats_add(t, slots, 7, 100, counters);
    l.symbols.nfqlb_target_stats_add(t, slots, 7, 50, counters);
    const v = new DataView(t.buffer), O = K.NFQLB_TARGET_STAT_OFF;
    const used = [...Array(slots).keys()].map((i) => i * K.NFQLB_TARGET_STAT_SIZEOF)
      .filter((o) => v.getUint32(o + O.used, true) !== 0);
    assert.equal(used.length, 1);
    assert.equal(v.getInt32(used[0] + O.fwmark, true), 7);
    assert.equal(v.getBigUint64(used[0] + O.packets, true), 2n);
    assert.equal(v.getBigUint64(used[0] + O.bytes, true), 150n);
    for (let m = 8; m < 8 + slots; m++) l.symbols.nfqlb_target_stats_add(t, slots, m, 1, counters);
    assert.equal(counters[K.NFQLB_C_TARGET_OVERFLOW], 1n); // 5 marks, 4 slots
  } finally {
    l.close();
  }
});

Deno.test("consts: TypeScript's names follow the C enums", () => {
  assert.deepEqual(COUNTER_NAMES.map((n) => n.toUpperCase()), members("NFQLB_C_", "NFQLB_C_COUNT"));
  assert.deepEqual(SCHEDULERS.map((n) => n.toUpperCase()), members("NFQLB_SCHED_", "NFQLB_SCHED_COUNT"));
  assert.equal(STAT_NAMES.length, K.NFQLB_CT_STATS_ALL);
});
