/**
 * A full /dev/shm, under traffic: the lab's shm directory is a 4 MiB tmpfs of its own, filled to the last
 * byte while `lb` forwards. Commands that need new space fail with one line naming the reason and leave
 * nothing behind (no temporary file, the old table untouched); commands that rewrite in place still work;
 * `lb` never stops forwarding. Before the fix, `init` of a table larger than the free space died with
 * SIGBUS (exit 135) and left its temporary file.
 */
import assert from "node:assert/strict";
import { skipUnlessRoot } from "../harness/netns.ts";
import { run } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { tally } from "../harness/traffic.ts";
import { FWBASE } from "../harness/addresses.ts";

/** Writes filler files until the file system refuses; bounded by the tmpfs size. */
function fill(dir: string): number {
  let bytes = 0;
  const chunk = new Uint8Array(64 * 1024);
  for (let i = 0; i < 1000; i++) {
    const f = Deno.openSync(`${dir}/.filler-${i}`, { write: true, createNew: true });
    try {
      for (;;) bytes += f.writeSync(chunk);
    } catch (e) {
      if (!(e instanceof Error) || !/No space left|ENOSPC|os error 28/.test(String(e))) throw e;
      // the small tail: a byte at a time would take long; a new file gets what a block still holds
      if (chunk.length > 1) return bytes;
    } finally {
      f.close();
    }
  }
  return bytes;
}

Deno.test({
  name: "reliability: a full /dev/shm fails commands that need space in one line, and lb keeps forwarding",
  ignore: skipUnlessRoot(),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=1777", "tmpfs", topo.shmDir]);
    try {
      await topo.nfqlb.initTargets();
      await topo.nfqlb.startLb();
      const send = async (what: string, sportBase: number) => {
        const r = await topo.client.udp(4, topo.flows(4, 60, sportBase));
        const got = r.targets.map((t) => t[0]);
        assert.equal(got.filter((t) => t === "").length, 0, `${what}: every request answered (${r.errors})`);
        return tally(got);
      };
      const before = await send("before", 30000);
      assert.deepEqual(Object.keys(before).sort(), topo.targetNames);

      const filled = fill(topo.shmDir);
      assert.ok(filled > 0, "the tmpfs took some filler");
      const show = (await topo.nfqlb.run(["show", `--shm=${topo.shm}`])).stdout;

      // a new table: no space; one line, exit 1, no temporary file
      const big = await topo.nfqlb.run(["init", "--shm=big", "--M=65537", "--N=100"], { allowFail: true });
      assert.equal(big.code, 1, big.stderr);
      assert.match(big.stderr, /^createSharedData: big: No space left on device \(needs 0\.5 MB\)\n$/);
      // re-creating the live table by rename needs a second copy: refused, the table as it was
      const again = await topo.nfqlb.run(["init", `--shm=${topo.shm}`, "--M=997", "--N=32"], {
        allowFail: true,
      });
      assert.equal(again.code, 1, again.stderr);
      assert.match(again.stderr, /No space left on device/);
      assert.equal((await topo.nfqlb.run(["show", `--shm=${topo.shm}`])).stdout, show);
      // temporary files are built in our own directory (.nfqlb-deno/tmp.*) and never stay behind
      const own = `${topo.shmDir}/.nfqlb-deno`;
      const top = [...Deno.readDirSync(topo.shmDir)].map((e) => e.name).filter((n) =>
        !n.startsWith(".filler")
      );
      const inOwn = [...Deno.readDirSync(own)].map((e) => e.name);
      const left = [...top, ...inOwn.map((n) => `.nfqlb-deno/${n}`)];
      const temporary = [
        ...top.filter((n) => n.startsWith(".") && n !== ".nfqlb-deno"),
        ...inOwn.filter((n) => n.startsWith("tmp.") || n.startsWith(".")),
      ];
      assert.deepEqual(temporary, [], `no temporary file left: ${left}`);

      const during = await send("while full", 31000);
      assert.deepEqual(Object.keys(during).sort(), topo.targetNames);

      // activate/deactivate rewrite the table in place: they work on a full file system
      await topo.nfqlb.deactivate(FWBASE + 2);
      const drained = await send("after deactivate", 32000);
      assert.equal(drained[topo.targetNames[1]] ?? 0, 0, "no flow on the deactivated target");
      await topo.nfqlb.activate(FWBASE + 2);
      const stats = await topo.nfqlb.run(["stats", "--all", `--ft_shm=${topo.ftShm}`], { allowFail: true });
      assert.equal(stats.code, 0, stats.stderr);
      JSON.parse(stats.stdout);

      // space again: init works and lb follows it
      for (const e of [...Deno.readDirSync(topo.shmDir)]) {
        if (e.name.startsWith(".filler")) Deno.removeSync(`${topo.shmDir}/${e.name}`);
      }
      const ok = await topo.nfqlb.run(["init", "--shm=big", "--M=65537", "--N=100"], { allowFail: true });
      assert.equal(ok.code, 0, ok.stderr);
      const after = await send("after", 33000);
      assert.deepEqual(Object.keys(after).sort(), topo.targetNames);
      assert.equal(topo.nfqlb.proc?.status, undefined, "lb never stopped");
      const stop = await topo.nfqlb.stopLb(10_000, "SIGTERM");
      assert.equal(stop?.status.code, 0, `lb exits 0 on SIGTERM: ${stop?.stderr}`);
    } finally {
      await run(["umount", "-l", topo.shmDir], { allowFail: true });
    }
  },
});
