/**
 * OffloadWatch (dataplane/offload.ts): which fwmarks' kernel connections
 * `--offload=auto` deletes as the tables and flows change. The flush is
 * recorded here instead of sent (a real one would touch this namespace's
 * conntrack table). Each test has a private shm directory: the watch logs what it flushes, and the log makes
 * upstream's `nfqlb-trace` in the shm directory.
 */
import assert from "node:assert/strict";
import { OffloadWatch } from "../../dataplane/offload.ts";
import { libSandbox } from "../helpers/shm.ts";

function watch(special: number[] = []) {
  const flushed: string[] = [];
  const w = new OffloadWatch("test", special, (family, fwmark) => {
    flushed.push(`${family}:${fwmark}`);
    return 0;
  });
  return { w, flushed };
}

Deno.test("OffloadWatch: a fwmark that leaves is flushed in both families, once; empty slots are ignored", () => {
  using _sb = libSandbox();
  const { w, flushed } = watch();
  w.poll([101, 102, 103, -1]);
  assert.deepEqual(flushed, [], "the first poll only records");
  w.poll([101, 102, 103, -1]);
  assert.deepEqual(flushed, []);
  w.poll([101, -1, 103, -1]); // deactivate 102
  assert.deepEqual(flushed, ["4:102", "6:102"]);
  w.poll([101, 103]);
  assert.deepEqual(flushed, ["4:102", "6:102"], "nothing more left");
  w.poll([101, 103, 104]); // activate: nothing to flush (no special fwmarks)
  assert.equal(flushed.length, 2);
});

Deno.test("OffloadWatch: the no-target fwmarks are flushed when targets or flows change, never otherwise", () => {
  using _sb = libSandbox();
  const { w, flushed } = watch([900, -1, 901]);
  w.poll([], 0);
  w.poll([], 0);
  assert.deepEqual(flushed, []);
  w.poll([101], 0); // a target comes: connections that got 900/901 are decided again
  assert.deepEqual(flushed, ["4:900", "6:900", "4:901", "6:901"]);
  flushed.length = 0;
  w.poll([101], 0);
  assert.deepEqual(flushed, []);
  w.poll([101], 1); // the flows changed (flowlb)
  assert.deepEqual(flushed, ["4:900", "6:900", "4:901", "6:901"]);
});
