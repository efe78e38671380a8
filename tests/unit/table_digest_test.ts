/**
 * core/table_digest.ts and `nfqlb show --digest`: equal tables have equal
 * digests, in any shm directory; another weight, another row order, another
 * M changes it; plain `show` prints no digest (upstream's output).
 */
import assert from "node:assert/strict";
import { digestText, readTableDigest, TABLE_DIGEST_HEX, tableDigest } from "../../core/table_digest.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { shmSandbox } from "../helpers/shm.ts";

const base = { M: 997, N: 32, active: [101, 102, 103, -1], weights: [1, 1, 2, 1] };

Deno.test("tableDigest: what decides a fwmark, nothing else", async () => {
  const d = await tableDigest(base);
  assert.match(d, new RegExp(`^[0-9a-f]{${TABLE_DIGEST_HEX}}$`));
  assert.equal(await tableDigest({ ...base, active: [...base.active], weights: [...base.weights] }), d);
  // a free row's weight decides nothing
  assert.equal(await tableDigest({ ...base, weights: [1, 1, 2, 7] }), d);
  assert.notEqual(await tableDigest({ ...base, weights: [1, 1, 3, 1] }), d, "another weight");
  assert.notEqual(await tableDigest({ ...base, active: [102, 101, 103, -1] }), d, "other rows");
  assert.notEqual(await tableDigest({ ...base, M: 991 }), d, "another M");
  assert.notEqual(await tableDigest({ ...base, N: 16 }), d, "another N");
  assert.equal(digestText(base), "nfqlb-table 1\nM=997 N=32\n0 101 1\n1 102 1\n2 103 2\n");
});

Deno.test("nfqlb show --digest: two shm directories with equal tables agree, another weight differs", async () => {
  using a = shmSandbox();
  using b = shmSandbox();
  const setup = async (env: Record<string, string>, weight: string) => {
    for (
      const args of [["init", "--shm=web"], ["activate", "--shm=web", "101", "102"], [
        "activate",
        "--shm=web",
        `--weight=${weight}`,
        "103",
      ]]
    ) {
      const r = await nfqlb(args, env);
      assert.equal(r.code, 0, r.stderr);
    }
  };
  await setup(a.env, "2");
  await setup(b.env, "2");
  const digestOf = async (env: Record<string, string>) => {
    const r = await nfqlb(["show", "--shm=web", "--digest"], env);
    assert.equal(r.code, 0, r.stderr);
    const m = r.stdout.match(/^ {2}Digest: ([0-9a-f]+)$/m);
    assert.ok(m, r.stdout);
    return m[1];
  };
  const da = await digestOf(a.env);
  assert.equal(await digestOf(b.env), da);
  const plain = await nfqlb(["show", "--shm=web"], a.env);
  assert.ok(!plain.stdout.includes("Digest"), plain.stdout);
  assert.equal(
    plain.stdout,
    (await nfqlb(["show", "--shm=web", "--digest"], a.env)).stdout.replace(/ {2}Digest: .*\n/, ""),
  );
  const r = await nfqlb(["activate", "--shm=web", "--weight=3", "103"], b.env);
  assert.equal(r.code, 0, r.stderr);
  assert.notEqual(await digestOf(b.env), da);
  // the library reads the same digest
  Deno.env.set("NFQLB_SHM_DIR", a.dir);
  try {
    assert.equal(await readTableDigest("web"), da);
  } finally {
    Deno.env.delete("NFQLB_SHM_DIR");
  }
});
