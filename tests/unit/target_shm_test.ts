/**
 * core/target_shm.ts and the shm commands: round trips, the header
 * layout (c/nfqlb.h), the `replaced` flag, and every error as one exact line.
 */
import assert from "node:assert/strict";
import { TargetShm } from "../../core/target_shm.ts";
import { NfqlbError } from "../../core/errors.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox, shmFiles } from "../helpers/shm.ts";
import { upstreamTable } from "../helpers/damage.ts";

/** File size of a table: 64-byte header, N params, two buffers of N active + N weights + M lookup. */
function tableBytes(M: number, N: number): number {
  return 64 + 8 * N + 2 * 4 * (2 * N + M);
}

function activate(name: string, fws: number[]): void {
  TargetShm.update(name, (active) => {
    let changed = false;
    for (const fw of fws) {
      const free = active.findIndex((v) => v < 0);
      if (free >= 0 && !active.includes(fw)) {
        active[free] = fw;
        changed = true;
      }
    }
    return changed;
  });
}

function assertThrowsLine(fn: () => unknown, line: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof NfqlbError, `NfqlbError, got ${e}`);
    assert.equal(e.message, line);
    assert.equal(e.exitCode, 1);
    return true;
  });
}

Deno.test("TargetShm.create/open: fields, an empty table, then activate and lookup", () => {
  using sb = libSandbox();
  TargetShm.create("t", { M: 997, N: 32, ownFwmark: 203 });
  assert.deepEqual(shmFiles(sb.dir), ["t"]);
  const t = TargetShm.open("t");
  try {
    assert.deepEqual([t.name, t.M, t.N, t.ownFwmark, t.replaced], ["t", 997, 32, 203, false]);
    const empty = t.snapshot(997);
    assert.equal(empty.lookup.length, 997);
    assert.ok(empty.lookup.every((v) => v === -1));
    assert.ok(empty.active.every((v) => v === -1));
    assert.equal(empty.active.length, 32);
    assert.equal(empty.generation, 0);
    assert.equal(t.countEmpty(), 997);
    assert.equal(t.lookup(12345), -1);
    assert.deepEqual(t.lookupRow(12345), { row: -1, fwmark: -1 });

    activate("t", [101, 102, 103]);
    const s = t.snapshot(25); // the open mapping sees the commit
    assert.deepEqual(Array.from(s.lookup).join(" "), "2 0 0 2 2 1 0 1 0 0 1 2 2 1 2 1 1 0 2 0 2 0 2 1 2");
    assert.deepEqual(Array.from(s.active.subarray(0, 4)), [101, 102, 103, -1]);
    assert.equal(s.generation, 1);
    assert.equal(t.countEmpty(), 0);
    // upstream's fwmark vector: hash 3489125464 → lookup index 336 → row 2 → fwmark 103
    assert.deepEqual(t.lookupRow(3489125464), { row: 2, fwmark: 103 });
    assert.equal(t.lookup(3489125464), 103);
    assert.equal(t.lookup(4250357572), 102);
    // hash % M picks the slot: hash and hash + M agree
    for (let h = 0; h < 2000; h += 7) assert.equal(t.lookup(h), t.lookup(h + 997));
    assert.equal(t.snapshot(5000).lookup.length, 997, "snapshot clamps to M");
  } finally {
    t.close();
  }
  assert.throws(() => t.pointer, /closed/);
});

Deno.test("update(): no commit when the change function reports no change", () => {
  using _sb = libSandbox();
  TargetShm.create("t", { M: 13, N: 4, ownFwmark: 0 });
  activate("t", [7]);
  TargetShm.update("t", (active) => {
    assert.deepEqual(Array.from(active), [7, -1, -1, -1]);
    active[1] = 99; // changed but reported unchanged: must not be published
    return false;
  });
  const t = TargetShm.open("t");
  try {
    const s = t.snapshot(13);
    assert.equal(s.generation, 1);
    assert.deepEqual(Array.from(s.active), [7, -1, -1, -1]);
  } finally {
    t.close();
  }
});

Deno.test("header bytes follow c/nfqlb.h: magic, version, sizes, M, N, own, buffers, params", () => {
  using sb = libSandbox();
  TargetShm.create("h", { M: 997, N: 32, ownFwmark: -5 });
  const b = sb.bytes("h")!;
  const v = new DataView(b.buffer);
  assert.equal(b.length, tableBytes(997, 32));
  assert.equal(new TextDecoder().decode(b.subarray(0, 4)), "NQLB");
  assert.equal(v.getUint32(0, true), 0x424c514e);
  assert.equal(v.getUint16(4, true), 2, "version");
  assert.equal(v.getUint16(6, true), 64, "header size");
  assert.equal(v.getBigUint64(8, true), BigInt(b.length), "file size field");
  assert.equal(v.getUint32(16, true), 997);
  assert.equal(v.getUint32(20, true), 32);
  assert.equal(v.getInt32(24, true), -5);
  assert.ok(v.getUint32(28, true) <= 1, "current buffer");
  assert.equal(v.getUint32(32, true) % 2, 0, "seq[0] even");
  assert.equal(v.getUint32(36, true) % 2, 0, "seq[1] even");
  assert.equal(v.getUint32(40, true), 0, "replaced");
  assert.equal(v.getUint32(44, true), 0, "generation");
  // params: rows 0..3 (offset, skip) as upstream M=997
  const params = Array.from({ length: 8 }, (_, i) => v.getUint32(64 + 4 * i, true));
  assert.deepEqual(params, [537, 215, 36, 8, 707, 104, 539, 37]);
  // both buffers: active all -1, weight all 1, lookup all -1
  for (let buf = 0; buf < 2; buf++) {
    const start = 64 + 8 * 32 + buf * 4 * (2 * 32 + 997);
    for (let i = 0; i < 2 * 32 + 997; i++) {
      assert.equal(v.getInt32(start + 4 * i, true), i >= 32 && i < 64 ? 1 : -1, `buffer ${buf} word ${i}`);
    }
  }
  assert.equal((Deno.statSync(sb.path("h")).mode ?? 0) & 0o777, 0o600);

  // a commit flips `current`, bumps generation, leaves seqs even
  const before = v.getUint32(28, true);
  TargetShm.update("h", (a) => {
    a[0] = 1;
    return true;
  });
  const b2 = sb.bytes("h")!;
  const v2 = new DataView(b2.buffer);
  assert.equal(v2.getUint32(28, true), before ^ 1);
  assert.equal(v2.getUint32(44, true), 1);
  assert.equal(v2.getUint32(32, true) % 2, 0);
  assert.equal(v2.getUint32(36, true) % 2, 0);
});

Deno.test("nfqlb init/activate/show round trip through the CLI", async () => {
  using sb = libSandbox();
  const init = await nfqlb(["init", "--shm=rt", "--ownfw=203", "--M=400", "--N=10"], sb.env);
  assert.deepEqual([init.code, init.stdout, init.stderr], [0, "M adjusted; 400 -> 397\n", ""]);
  const act = await nfqlb(["activate", "--shm=rt", "201", "202", "203"], sb.env);
  assert.deepEqual([act.code, act.stdout, act.stderr], [0, "", ""]);
  const show = await nfqlb(["show", "--shm=rt"], sb.env);
  assert.equal(show.code, 0);
  assert.equal(
    show.stdout,
    "Shm: rt\n  Fw: own=203\n  Maglev: M=397, N=10\n" +
      "   Lookup: 2 1 1 1 1 0 0 1 1 0 1 0 1 1 2 0 1 0 2 1 0 0 0 2 0...\n" +
      "   Active: 201(0) 202(1) 203(2)\n",
  );
  // the library sees what the CLI wrote
  const t = TargetShm.open("rt");
  try {
    assert.deepEqual([t.M, t.N, t.ownFwmark], [397, 10, 203]);
    assert.deepEqual(Array.from(t.snapshot(0).active.subarray(0, 3)), [201, 202, 203]);
  } finally {
    t.close();
  }
  // M < 25: show prints the whole table
  await nfqlb(["init", "--shm=small", "--M=7", "--N=3"], sb.env);
  await nfqlb(["activate", "--shm=small", "10", "20", "30"], sb.env);
  const small = await nfqlb(["show", "--shm=small"], sb.env);
  assert.match(small.stdout, /^ {3}Lookup: 0 0 1 2 1 2 0\.\.\.$/m);
  assert.match(small.stdout, /^ {3}Active: 10\(0\) 20\(1\) 30\(2\)$/m);
});

Deno.test("re-init replaces the file: the old mapping keeps working and reports `replaced`", async () => {
  using sb = libSandbox();
  TargetShm.create("r", { M: 97, N: 4, ownFwmark: 0 });
  activate("r", [11, 12]);
  const old = TargetShm.open("r");
  try {
    const before = old.snapshot(97);
    assert.equal(old.replaced, false);
    const r = await nfqlb(["init", "--shm=r", "--M=97", "--N=4"], sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, "", ""]);
    assert.equal(old.replaced, true);
    // the old mapping still holds the old, complete table
    const after = old.snapshot(97);
    assert.deepEqual(after.lookup, before.lookup);
    assert.equal(old.countEmpty(), 0);
    // the new file is a fresh table with no targets
    const fresh = TargetShm.open("r");
    try {
      assert.equal(fresh.replaced, false);
      assert.equal(fresh.countEmpty(), 97);
      assert.ok(fresh.snapshot(0).active.every((v) => v === -1));
    } finally {
      fresh.close();
    }
    // no temporary files are left behind
    assert.deepEqual(shmFiles(sb.dir), ["r"]);
  } finally {
    old.close();
  }
});

Deno.test("a missing shm: `FAILED mapSharedData: <name>` for show, activate, deactivate, fwmark", async () => {
  using sb = libSandbox();
  assertThrowsLine(() => TargetShm.open("nosuch"), "FAILED mapSharedData: nosuch");
  assertThrowsLine(() => TargetShm.update("nosuch", () => true), "FAILED mapSharedData: nosuch");
  for (
    const args of [
      ["show", "--shm=nosuch"],
      ["activate", "--shm=nosuch", "1"],
      ["deactivate", "--shm=nosuch", "1"],
      ["fwmark", "--shm=nosuch", "--src=10.0.0.1:1", "--dst=10.0.0.2:2"],
    ]
  ) {
    const r = await nfqlb(args, sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", "FAILED mapSharedData: nosuch\n"], args.join(" "));
  }
  assert.deepEqual(shmFiles(sb.dir), [], "nothing was created");
});

Deno.test("a foreign file: show/activate refuse it, init will not clobber it", async () => {
  using sb = libSandbox();
  const foreign = new TextEncoder().encode(
    "this is somebody else's shared memory, not a Maglev table\n".repeat(4),
  );
  Deno.writeFileSync(sb.path("f"), foreign);
  const bad = "FAILED mapSharedData: f: not an nfqlb target table (bad magic)";
  assertThrowsLine(() => TargetShm.open("f"), bad);
  for (
    const args of [["show", "--shm=f"], ["activate", "--shm=f", "1"], ["deactivate", "--shm=f", "--index=0"]]
  ) {
    const r = await nfqlb(args, sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", bad + "\n"], args.join(" "));
  }
  const init = await nfqlb(["init", "--shm=f", "--M=7", "--N=2"], sb.env);
  assert.deepEqual(
    [init.code, init.stdout, init.stderr],
    [
      1,
      "",
      "createSharedData: f: exists and is not an nfqlb target table (bad magic); remove it with: nfqlb delete --shm=f\n",
    ],
  );
  assert.deepEqual(sb.bytes("f"), foreign, "file untouched");
  assert.deepEqual(shmFiles(sb.dir), ["f"], "no temporary file left");
  // delete removes it; then init works
  assert.equal((await nfqlb(["delete", "--shm=f"], sb.env)).code, 0);
  assert.equal((await nfqlb(["init", "--shm=f", "--M=7", "--N=2"], sb.env)).code, 0);
});

Deno.test("an upstream 1.x table is recognised, refused by show/activate, and replaced by init", async () => {
  using sb = libSandbox();
  Deno.writeFileSync(sb.path("up"), upstreamTable(997, 32, 0));
  assert.equal(sb.bytes("up")!.length, 131760, "upstream size for M=997, N=32");
  const msg = "FAILED mapSharedData: up: an upstream nfqlb 1.x table; re-create it with: nfqlb init --shm=up";
  assertThrowsLine(() => TargetShm.open("up"), msg);
  for (const args of [["show", "--shm=up"], ["activate", "--shm=up", "5"]]) {
    const r = await nfqlb(args, sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", msg + "\n"], args.join(" "));
  }
  const init = await nfqlb(["init", "--shm=up"], sb.env);
  assert.deepEqual([init.code, init.stdout, init.stderr], [0, "", ""]);
  assert.equal(sb.bytes("up")!.length, tableBytes(997, 32));
  const show = await nfqlb(["show", "--shm=up"], sb.env);
  assert.equal(show.code, 0);
  assert.match(show.stdout, /^ {2}Maglev: M=997, N=32$/m);
  // the same size but a wrong len field is just foreign
  const odd = upstreamTable(997, 32, 0);
  new DataView(odd.buffer).setUint32(12, 5, true);
  Deno.writeFileSync(sb.path("odd"), odd);
  assertThrowsLine(
    () => TargetShm.open("odd"),
    "FAILED mapSharedData: odd: not an nfqlb target table (bad magic)",
  );
});

Deno.test("truncated, empty, corrupt and wrong-version tables give one clear line; init repairs them", async () => {
  using sb = libSandbox();
  TargetShm.create("good", { M: 997, N: 32, ownFwmark: 0 });
  const good = sb.bytes("good")!;
  assert.ok(good.length > 1000);
  const cases: [string, Uint8Array, string][] = [
    ["trunc", good.slice(0, 1000), "truncated file"],
    ["trunc-1", good.slice(0, good.length - 1), "truncated file"],
    ["trunc40", good.slice(0, 40), "truncated file"],
    ["tiny", good.slice(0, 8), "truncated file"],
    ["empty", new Uint8Array(0), "empty file"],
  ];
  const corrupt = good.slice();
  new DataView(corrupt.buffer).setUint32(16, 101, true); // M no longer matches the size field
  cases.push(["corrupt", corrupt, "corrupt table header"]);
  const zeroN = good.slice();
  new DataView(zeroN.buffer).setUint32(20, 0, true);
  cases.push(["zeroN", zeroN, "corrupt table header"]);
  const version = good.slice();
  new DataView(version.buffer).setUint16(4, 3, true); // a newer layout (ours is 2)
  cases.push(["version", version, "unsupported table version"]);
  for (const [name, bytes, why] of cases) {
    Deno.writeFileSync(sb.path(name), bytes);
    const line = `FAILED mapSharedData: ${name}: ${why}`;
    assertThrowsLine(() => TargetShm.open(name), line);
    const show = await nfqlb(["show", `--shm=${name}`], sb.env);
    assert.deepEqual([show.code, show.stdout, show.stderr], [1, "", line + "\n"], name);
    const act = await nfqlb(["activate", `--shm=${name}`, "1"], sb.env);
    assert.deepEqual([act.code, act.stderr], [1, line + "\n"], `activate ${name}`);
  }
  // init re-creates truncated and empty files (they cannot be anybody's data)
  for (const name of ["trunc", "trunc40", "empty"]) {
    const r = await nfqlb(["init", `--shm=${name}`, "--M=7", "--N=2"], sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, "", ""], `init ${name}`);
    assert.equal(sb.bytes(name)!.length, tableBytes(7, 2));
  }
  // a table with a bad header is refused (it might be a newer layout)
  for (const [name, why] of [["corrupt", "corrupt table header"], ["version", "unsupported table version"]]) {
    const r = await nfqlb(["init", `--shm=${name}`, "--M=7", "--N=2"], sb.env);
    assert.deepEqual(
      [r.code, r.stderr],
      [1, `createSharedData: ${name}: exists and is ${why}; remove it with: nfqlb delete --shm=${name}\n`],
    );
  }
});

Deno.test("invalid shm names are rejected before anything is printed or created", async () => {
  using sb = libSandbox();
  for (const name of ["a/b", "..", ".", "", "x".repeat(256)]) {
    for (const cmd of ["init", "show", "activate"]) {
      const args = cmd === "activate" ? [cmd, `--shm=${name}`, "1"] : [cmd, `--shm=${name}`];
      const r = await nfqlb(args, sb.env);
      assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", `Invalid shm name [${name}]\n`], args.join(" "));
    }
  }
  assertThrowsLine(() => TargetShm.create("a/b", { M: 7, N: 1, ownFwmark: 0 }), "Invalid shm name [a/b]");
  assert.deepEqual(shmFiles(sb.dir), []);
  // a 255-byte name is fine
  const long = "y".repeat(255);
  assert.equal((await nfqlb(["init", `--shm=${long}`, "--M=7", "--N=1"], sb.env)).code, 0);
  assert.deepEqual(shmFiles(sb.dir), [long]);
});

Deno.test("init --M=10 --N=11: `M adjusted; 10 -> 7` on stdout, then `N can't be larger than M`", async () => {
  using sb = libSandbox();
  const r = await nfqlb(["init", "--shm=n", "--M=10", "--N=11"], sb.env);
  assert.deepEqual([r.code, r.stdout, r.stderr], [1, "M adjusted; 10 -> 7\n", "N can't be larger than M\n"]);
  const eq = await nfqlb(["init", "--shm=n", "--M=7", "--N=8"], sb.env);
  assert.deepEqual([eq.code, eq.stdout, eq.stderr], [1, "", "N can't be larger than M\n"]);
  assert.deepEqual(shmFiles(sb.dir), []);
  assertThrowsLine(() => TargetShm.create("n", { M: 7, N: 8, ownFwmark: 0 }), "N can't be larger than M");
  assertThrowsLine(() => TargetShm.create("n", { M: 7, N: 0, ownFwmark: 0 }), "N must be at least 1; 0");
  // N == M is allowed
  const ok = await nfqlb(["init", "--shm=n", "--M=7", "--N=7"], sb.env);
  assert.deepEqual([ok.code, ok.stdout, ok.stderr], [0, "", ""]);
  const m2 = await nfqlb(["init", "--shm=m2", "--M=2", "--N=1"], sb.env);
  assert.deepEqual([m2.code, m2.stdout, m2.stderr], [0, "M adjusted; 2 -> 3\n", ""]);
});

Deno.test("the largest table the CLI can make (M=N=993997) fits; a > 2 GiB table is refused", async () => {
  using sb = libSandbox();
  // Our layout stores (offset, skip) per row, not upstream's M*N permutation
  // array, so the CLI's maximum is ~24 MB and the 2 GiB limit is only reachable
  // through the library.
  const r = await nfqlb(["init", "--shm=big", "--M=993997", "--N=993997"], sb.env);
  assert.deepEqual([r.code, r.stdout, r.stderr], [0, "", ""]);
  assert.equal(sb.bytes("big")!.length, tableBytes(993997, 993997));
  const a = await nfqlb(["activate", "--shm=big", "--index=993996", "5"], sb.env);
  assert.deepEqual([a.code, a.stderr], [0, ""]);
  const t = TargetShm.open("big");
  try {
    assert.equal(t.countEmpty(), 0);
    assert.equal(t.lookup(123456789), 5);
  } finally {
    t.close();
  }
  Deno.removeSync(sb.path("big"));
  assert.throws(
    () => TargetShm.create("huge", { M: 2147483647, N: 2, ownFwmark: 0 }),
    (e: unknown) => {
      assert.ok(e instanceof NfqlbError);
      assert.match(e.message, /^Table too large; M=2147483647, N=2 needs \d+ MiB, the limit is 2048 MiB$/);
      return true;
    },
  );
  assert.deepEqual(shmFiles(sb.dir), [], "no file created");
});

const isRoot = Deno.uid() === 0;

Deno.test({
  name: "a read-only shm directory: init/activate/delete fail with one line, show still works",
  ignore: !isRoot,
  async fn() {
    using sb = libSandbox();
    const mnt = Deno.makeTempDirSync({ dir: sb.dir, prefix: "ro-" });
    const run = (args: string[]) =>
      new Deno.Command("mount", { args, stdout: "null", stderr: "piped" }).outputSync();
    const m = run(["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    if (!m.success) {
      console.log(`skipped: cannot mount tmpfs (${new TextDecoder().decode(m.stderr).trim()})`);
      return;
    }
    try {
      const env = { NFQLB_SHM_DIR: mnt };
      assert.equal((await nfqlb(["init", "--shm=t", "--M=97", "--N=4"], env)).code, 0);
      assert.equal((await nfqlb(["activate", "--shm=t", "1", "2"], env)).code, 0);
      const remount = run(["-o", "remount,ro", mnt]);
      assert.ok(remount.success, new TextDecoder().decode(remount.stderr));
      const before = Deno.readFileSync(`${mnt}/t`);
      const expect: [string[], string][] = [
        [["init", "--shm=new", "--M=7", "--N=1"], "createSharedData: new: Read-only file system"],
        [["init", "--shm=t", "--M=7", "--N=1"], "createSharedData: t: Read-only file system"],
        [["activate", "--shm=t", "3"], "FAILED mapSharedData: t: Read-only file system"],
        [["deactivate", "--shm=t", "1"], "FAILED mapSharedData: t: Read-only file system"],
        [["delete", "--shm=t"], "Read-only file system"],
      ];
      for (const [args, line] of expect) {
        const r = await nfqlb(args, env);
        assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", line + "\n"], args.join(" "));
      }
      const show = await nfqlb(["show", "--shm=t"], env);
      assert.equal(show.code, 0);
      assert.match(show.stdout, /^ {3}Active: 1\(0\) 2\(1\)$/m);
      assert.deepEqual(Deno.readFileSync(`${mnt}/t`), before);
      assert.deepEqual(shmFiles(mnt), ["t"]);
    } finally {
      const um = new Deno.Command("umount", { args: [mnt], stdout: "null", stderr: "piped" }).outputSync();
      assert.ok(um.success, `umount ${mnt}: ${new TextDecoder().decode(um.stderr)}`);
    }
  },
});
