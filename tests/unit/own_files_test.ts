/**
 * Where our own files live (docs/shm.md "Our own files"): counters,
 * connection tables, apply's state and the temporary files of
 * create-by-rename are in `<shm dir>/.nfqlb-deno/`, so that the top of the
 * shm directory holds only upstream's names and a tool that lists it (Meridio's
 * log collector: `ls /dev/shm | grep tshm-`, then `show` on each) sees only
 * target tables. `show` on a file that is not a table says what it is, and a
 * file left at an old name by an older nfqlb-deno is never read.
 */
import assert from "node:assert/strict";
import { nfqlb } from "../harness/nfqlb.ts";
import { run } from "../harness/process.ts";
import { libSandbox, listDir, own, shmFiles } from "../helpers/shm.ts";
import { countersShmName, createCountersShm } from "../../core/counters_shm.ts";
import { ensureOwnDir, OWN_DIR_NAME, ownDir } from "../../core/shm_dir.ts";
import { writeState } from "../../host/state.ts";

const isRoot = Deno.uid() === 0;

/** Upstream's default names and Meridio's table prefix: what tools that list the shm directory look for. */
const LOOKS_LIKE_TABLE = /tshm-|^ftshm|^nfqlb$|^nfqlb-trace$/;

Deno.test("our files are in .nfqlb-deno/; the shm directory lists only the tables (ls | grep tshm-)", async () => {
  using sb = libSandbox();
  const r = await nfqlb(["init", "--shm=tshm-x", "--M=97", "--N=4", "--conntrack=64"], sb.env);
  assert.equal(r.code, 0, r.stderr);
  {
    const c = createCountersShm(countersShmName("ftshm"), [0, 1], "flowlb");
    c.publish();
    c.close();
  }
  writeState({
    version: 1,
    name: "h",
    file: "h.yaml",
    program: null,
    args: [],
    pid: null,
    log: "",
    services: ["tshm-x"],
    ftShm: "ftshm",
  });
  assert.deepEqual(listDir(sb.dir), [OWN_DIR_NAME, "tshm-x"]);
  assert.deepEqual(shmFiles(sb.dir), [own("ftshm-counters"), own("host-h.json"), own("tshm-x-ct"), "tshm-x"]);
  // what the top level shows to `ls` (no dot files) is only the table; each name in it is a table
  const ls = await run(["sh", "-c", `ls "$0" | grep tshm-`, sb.dir], { allowFail: true, timeoutMs: 10_000 });
  assert.equal(ls.stdout, "tshm-x\n");
  for (const name of ls.stdout.trim().split("\n")) {
    const show = await nfqlb(["show", `--shm=${name}`], sb.env);
    assert.equal(show.code, 0, `show --shm=${name}: ${show.stderr}`);
    assert.match(show.stdout, /^Shm: tshm-x\n/);
  }
  // and no name at the top looks like an upstream default or a Meridio table, except the tables themselves
  assert.deepEqual(listDir(sb.dir).filter((n) => LOOKS_LIKE_TABLE.test(n) && n !== "tshm-x"), []);
});

Deno.test({
  name:
    "the own directory gets the shm directory's mode (1777 on /dev/shm); something else at its name is refused",
  ignore: !isRoot,
  async fn() {
    using sb = libSandbox();
    Deno.chmodSync(sb.dir, 0o1777);
    assert.equal(ensureOwnDir(), ownDir());
    assert.equal((Deno.statSync(ownDir()).mode ?? 0) & 0o7777, 0o1777);
    Deno.removeSync(ownDir());
    // a file, or a symlink to a directory, at the name is never used
    Deno.writeTextFileSync(ownDir(), "");
    let r = await nfqlb(["init", "--shm=t", "--M=7", "--N=1"], sb.env);
    assert.deepEqual([r.code, r.stderr], [1, "createSharedData: t: Not a directory\n"]);
    Deno.removeSync(ownDir());
    const elsewhere = Deno.makeTempDirSync({ dir: sb.dir, prefix: "elsewhere-" });
    Deno.symlinkSync(elsewhere, ownDir());
    r = await nfqlb(["init", "--shm=t", "--M=7", "--N=1"], sb.env);
    assert.deepEqual([r.code, r.stderr], [1, "createSharedData: t: Not a directory\n"]);
    assert.deepEqual(listDir(elsewhere), []);
    assert.equal(sb.bytes("t"), undefined);
  },
});

Deno.test("show on a file that is not a target table says what it is", async (t) => {
  using sb = libSandbox();
  const env = sb.env;
  assert.equal((await nfqlb(["init", "--shm=tshm-x", "--M=97", "--N=4", "--conntrack=64"], env)).code, 0);
  {
    const c = createCountersShm(countersShmName("ftshm"), [0], "lb");
    c.publish();
    c.close();
  }
  assert.equal((await nfqlb(["loglevel"], env)).code, 0); // creates nfqlb-trace
  // files an older nfqlb-deno kept at the top of the shm directory
  Deno.copyFileSync(sb.path(own("ftshm-counters")), sb.path("ftshm-counters"));
  Deno.copyFileSync(sb.path(own("tshm-x-ct")), sb.path("tshm-x-ct"));
  Deno.writeTextFileSync(
    sb.path("nfqlb-flows-unix_nfqlb-net4026531840.json"),
    '{\n  "format": "nfqlb-deno-flows",\n  "version": 1,\n  "flows": []\n}\n',
  );
  Deno.writeTextFileSync(sb.path(".nfqlb-host-edge.json"), "{}");
  Deno.writeFileSync(sb.path("ftshm"), new Uint8Array(72));
  Deno.writeFileSync(sb.path("junk"), new Uint8Array(4096).fill(7));
  const cases: [string, string][] = [
    [
      OWN_DIR_NAME,
      "not a target table: the directory of nfqlb-deno's own files (counters, connection tables, apply's state; docs/shm.md)",
    ],
    [
      "ftshm-counters",
      "not a target table: the counters of an older nfqlb-deno's lb (now kept in .nfqlb-deno/); " +
      "remove it with: nfqlb delete --shm=ftshm-counters",
    ],
    [
      "tshm-x-ct",
      "not a target table: a connection table of an older nfqlb-deno (now kept in .nfqlb-deno/; " +
      "re-create it with: nfqlb init --shm=tshm-x --conntrack=MAX); remove it with: nfqlb delete --shm=tshm-x-ct",
    ],
    [
      "nfqlb-flows-unix_nfqlb-net4026531840.json",
      "not a target table: flows saved by an older nfqlb-deno (flowlb now saves flows only with " +
      "--flow_store=FILE); remove it with: nfqlb delete --shm=nfqlb-flows-unix_nfqlb-net4026531840.json",
    ],
    [
      ".nfqlb-host-edge.json",
      "not a target table: apply's state or log of an older nfqlb-deno (now kept in .nfqlb-deno/); " +
      "remove it with: nfqlb delete --shm=.nfqlb-host-edge.json",
    ],
    [
      "ftshm",
      "not a target table: 72 bytes, the size of upstream's fragment-table statistics " +
      "(read them with: nfqlb stats --ft_shm=ftshm)",
    ],
    ["nfqlb-trace", "not a target table: upstream's log level and trace mask (nfqlb loglevel)"],
    ["junk", "not an nfqlb target table (bad magic)"],
  ];
  for (const [name, why] of cases) {
    await t.step(name, async () => {
      const r = await nfqlb(["show", `--shm=${name}`], env);
      assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", `FAILED mapSharedData: ${name}: ${why}\n`]);
    });
  }
});

Deno.test("a file at an old name is not read: ct-*, stats --all and lb use only .nfqlb-deno/", async () => {
  using sb = libSandbox();
  const env = sb.env;
  assert.equal((await nfqlb(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64"], env)).code, 0);
  {
    const c = createCountersShm(countersShmName("ftshm"), [0], "lb");
    c.publish();
    c.close();
  }
  Deno.writeFileSync(sb.path("ftshm"), new Uint8Array(72));
  // move ours to the old names: as after an upgrade from a version that kept them there
  Deno.renameSync(sb.path(own("t-ct")), sb.path("t-ct"));
  Deno.renameSync(sb.path(own("ftshm-counters")), sb.path("ftshm-counters"));
  const ct = await nfqlb(["ct-stats", "--shm=t"], env);
  assert.deepEqual([ct.code, ct.stderr], [1, "FAILED mapSharedData: t-ct\n"]);
  const st = await nfqlb(["stats", "--all"], env);
  assert.deepEqual([st.code, st.stderr], [
    1,
    "nfqlb: no lb/flowlb is running for config ftshm (its table .nfqlb-deno/ftshm-counters does not exist)\n",
  ]);
  // init --conntrack makes a new one where it belongs; the old file stays until deleted
  assert.equal((await nfqlb(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64"], env)).code, 0);
  assert.equal((await nfqlb(["ct-stats", "--shm=t"], env)).code, 0);
  assert.equal((await nfqlb(["delete", "--shm=t-ct"], env)).code, 0);
  assert.deepEqual(shmFiles(sb.dir), [own("t-ct"), "ftshm", "ftshm-counters", "t"]);
  // delete unlinks files only, as shm_unlink: our directory stays, with what other processes keep in it
  const del = await nfqlb(["delete", `--shm=${OWN_DIR_NAME}`], env);
  assert.deepEqual([del.code, del.stderr], [1, "Is a directory\n"]);
  Deno.removeSync(sb.path(own("t-ct")));
  assert.equal((await nfqlb(["delete", `--shm=${OWN_DIR_NAME}`], env)).code, 1, "not even when empty");
  assert.ok(Deno.statSync(sb.path(OWN_DIR_NAME)).isDirectory);
});
