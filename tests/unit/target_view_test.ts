/**
 * The dataplane's defences against damaged shm files, without a network:
 * the private copy of a target table (c/tshm_view.c, core/target_view.ts)
 * keeps the last good table through a truncation, a zero fill, random bytes
 * over the header and an upstream table written over the name, counts one
 * incident each, and follows a good file again; the SIGBUS guard
 * (c/file.c) turns a truncated mapping into zero pages and maps the file
 * again at the same address; the connection table (c/ct.c) checks its header
 * per call, so a damaged one only misses. Reliability tests under traffic:
 * tests/reliability/table_damage_test.ts.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { NFQLB_C_TABLE_ERRORS, NFQLB_EMAGIC, NFQLB_ETRUNC, NFQLB_EUPSTREAM } from "../../ffi/consts.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { TargetView, VIEW_OK, VIEW_REPLACED } from "../../core/target_view.ts";
import { conntrackName, ConntrackShm, flowKey } from "../../core/conntrack_shm.ts";
import { mapFile, mappingFaults, remapFile, unmap } from "../../core/shm_file.ts";
import { COUNTER_NAMES } from "../../core/counters_shm.ts";
import { damageFile } from "../helpers/damage.ts";
import { libSandbox, own } from "../helpers/shm.ts";

/** fwmark of 200 hashes: what a classifier would send them to. */
function marks(table: Deno.PointerObject): number[] {
  return Array.from({ length: 200 }, (_, i) => lib().nfqlb_tshm_lookup(table, (i * 2654435761) >>> 0));
}

function table(name: string, active: number[]): void {
  TargetShm.create(name, { M: 997, N: 32, ownFwmark: 0 });
  TargetShm.update(name, (a) => {
    a.set(active);
    return true;
  });
}

Deno.test("target view: the copy follows commits, keeps the last good table through each damage, counts each once", () => {
  using sb = libSandbox();
  table("t", [101, 102, 103]);
  const v = TargetView.open("t");
  try {
    const counters = new BigUint64Array(COUNTER_NAMES.length);
    const cptr = Deno.UnsafePointer.of(counters);
    const refresh = () => lib().nfqlb_tshm_view_refresh(v.pointer, cptr);
    // a bad file is read again at most once a millisecond (tshm_view.c): wait that long first
    const later = () => (Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3), refresh());
    const good = marks(v.table);
    assert.deepEqual(new Set(good), new Set([101, 102, 103]));
    // a commit is in the copy after the next refresh; an unchanged file costs one pread
    TargetShm.update("t", (a) => ((a[3] = 104), true));
    assert.equal(refresh(), VIEW_OK);
    const four = marks(v.table);
    assert.ok(four.includes(104));
    const copies = v.info().copies;
    for (let i = 0; i < 100; i++) assert.equal(refresh(), VIEW_OK);
    assert.equal(v.info().copies, copies, "no copy while nothing changed");

    const cases: [string, Parameters<typeof damageFile>[1], number][] = [
      ["truncated to 0", "truncate", NFQLB_ETRUNC],
      ["zero-filled", "zero", NFQLB_EMAGIC],
      ["random header", "random-header", NFQLB_EMAGIC],
      ["upstream table written over it", "upstream", NFQLB_EUPSTREAM],
    ];
    let incidents = 0;
    table("g", [101, 102, 103, 104]);
    const goodBytes = Deno.readFileSync(sb.path("g"));
    for (const [what, how, err] of cases) {
      // a good file again (written in place: the same inode), then the damage
      Deno.writeFileSync(sb.path("t"), goodBytes);
      assert.equal(later(), VIEW_OK, `${what}: good again`);
      assert.deepEqual(marks(v.table), four);
      damageFile(sb.path("t"), how);
      for (let i = 0; i < 3; i++) assert.equal(refresh(), err, what);
      incidents++;
      assert.equal(v.info().incidents, incidents, `${what}: one incident`);
      assert.equal(counters[NFQLB_C_TABLE_ERRORS], BigInt(incidents), `${what}: counted once`);
      assert.deepEqual(marks(v.table), four, `${what}: the last good table`);
    }
  } finally {
    v.close();
  }
});

Deno.test("target view: init's rename is seen as replaced; a file of another M is a new copy to open", () => {
  using _sb = libSandbox();
  table("t", [101]);
  const v = TargetView.open("t");
  try {
    TargetShm.create("t", { M: 997, N: 32, ownFwmark: 0 });
    assert.equal(v.refresh(), VIEW_REPLACED);
    assert.deepEqual(new Set(marks(v.table)), new Set([101]), "the old table until re-opened");
    assert.equal(v.info().incidents, 0, "not an error");
    const fresh = TargetView.open("t");
    assert.notEqual(fresh.info().ino, v.info().ino);
    assert.deepEqual(new Set(marks(fresh.table)), new Set([-1]));
    fresh.close();
  } finally {
    v.close();
  }
});

Deno.test("target view: open errors are TargetShm.open's lines", () => {
  using sb = libSandbox();
  assert.throws(() => TargetView.open("none"), { message: "FAILED mapSharedData: none" });
  Deno.writeFileSync(sb.path("empty"), new Uint8Array());
  assert.throws(() => TargetView.open("empty"), { message: "FAILED mapSharedData: empty: empty file" });
  table("t", [1]);
  damageFile(sb.path("t"), "upstream");
  assert.throws(() => TargetView.open("t"), {
    message: "FAILED mapSharedData: t: an upstream nfqlb 1.x table; re-create it with: nfqlb init --shm=t",
  });
});

Deno.test("SIGBUS guard: a truncated mapping becomes zero pages, and the file is mapped again in place", () => {
  using sb = libSandbox();
  assert.equal(lib().nfqlb_file_guard(), 0);
  const path = sb.path("f");
  Deno.writeFileSync(path, new Uint8Array(8192).fill(7));
  const m = mapFile(path, true);
  assert.ok(typeof m !== "number");
  try {
    const bytes = () => new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(m.ptr, 8192));
    assert.equal(bytes()[5000], 7);
    Deno.truncateSync(path, 0);
    // without the guard this read is a SIGBUS that ends the test process
    assert.equal(bytes()[5000], 0);
    bytes()[100] = 9; // private memory now: writable, not the file
    assert.equal(mappingFaults(m), 1);
    assert.equal(Deno.statSync(path).size, 0);
    assert.equal(remapFile(m, path, true), 34, "ERANGE: shorter than the mapping");
    Deno.writeFileSync(path, new Uint8Array(8192).fill(3));
    assert.equal(remapFile(m, path, true), 0);
    assert.equal(mappingFaults(m), 0);
    assert.equal(bytes()[5000], 3, "the file again, same address");
  } finally {
    unmap(m);
  }
});

Deno.test("connection table: a damaged header makes every call miss, never an access out of the file", () => {
  using sb = libSandbox();
  const name = conntrackName("t");
  ConntrackShm.create(name, { capacity: 1024, ctxSlots: 4 });
  const ct = ConntrackShm.open(name);
  try {
    const key = flowKey({ src: "10.0.0.1", dst: "10.0.0.2", proto: "tcp", sport: 1, dport: 2 });
    assert.equal(ct.insert(key, 101, 0), 0);
    assert.equal(ct.lookup(key), 101);
    assert.equal(ct.damage(), undefined);
    for (const how of ["zero", "random-header"] as const) {
      damageFile(sb.path(own(name)), how);
      assert.match(ct.damage() ?? "", /bad magic|corrupt/);
      assert.equal(ct.lookup(key), -1);
      assert.equal(ct.insert(key, 102, 0), -1);
      assert.deepEqual(ct.list(), []);
      assert.equal(ct.sweep(1 << 20), 0);
      // the name holds a damaged file: nothing to attach to
      assert.notEqual(ct.reattach(), undefined);
    }
    // a new table of the same size under the name: attached in place
    Deno.removeSync(sb.path(own(name)));
    ConntrackShm.create(name, { capacity: 1024, ctxSlots: 4 });
    assert.equal(ct.reattach(), undefined);
    assert.equal(ct.damage(), undefined);
    assert.equal(ct.insert(key, 103, 0), 0);
    assert.equal(ct.lookup(key), 103);
  } finally {
    ct.close();
  }
});

Deno.test("init replaces a zero-filled table (nothing in it to protect); other garbage is still refused", () => {
  using sb = libSandbox();
  table("z", [101]);
  damageFile(sb.path("z"), "zero");
  TargetShm.create("z", { M: 997, N: 32, ownFwmark: 0 });
  const t = TargetShm.open("z");
  t.close();
  damageFile(sb.path("z"), "random-header");
  const before = sb.bytes("z");
  assert.throws(
    () => TargetShm.create("z", { M: 997, N: 32, ownFwmark: 0 }),
    {
      message: /^createSharedData: z: exists and is not an nfqlb target table \(bad magic\); remove it with/,
    },
  );
  assert.deepEqual(sb.bytes("z"), before, "untouched");
});
