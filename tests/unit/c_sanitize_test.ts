/**
 * Builds the packet parser, classifier and fragment table with
 * AddressSanitizer + UBSan and feeds them 200 000 mutated / truncated packets
 * made from the real captures. Any out-of-bounds read aborts the run.
 */
import assert from "node:assert/strict";
import { buildSanitized, captureSeeds, CLASSIFIER_SOURCES, writeSeeds } from "../helpers/sanitize.ts";

Deno.test("C packet code is clean under ASan/UBSan on 200k mutated packets", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-fuzz-" });
  try {
    const bin = await buildSanitized(dir, "packet_fuzz", CLASSIFIER_SOURCES);
    const seeds = writeSeeds(dir, captureSeeds());
    const run = await new Deno.Command(bin, { args: ["200000", ...seeds], stdout: "piped", stderr: "piped" })
      .output();
    const out = new TextDecoder().decode(run.stdout), err = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, err.slice(0, 4000));
    const m = /iterations=(\d+) parsed=(\d+)/.exec(out);
    assert.ok(m, out);
    assert.equal(Number(m[1]), 200000);
    assert.ok(Number(m[2]) > 1000, "the mutations must leave many packets parseable");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
