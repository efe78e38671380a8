/**
 * Builds the flow matcher (c/flowset.c, with c/packet.c for real keys) and the
 * driver c/test/flow_fuzz.c with AddressSanitizer + UBSan, and runs 150 000
 * lookups on random flow sets (valid, corrupted and random specs) with keys
 * and mutated / truncated packets from the real captures. The driver aborts
 * on any out-of-bounds access or undefined behaviour, and when the indexed
 * lookup and the linear walk disagree (flow, udpencap or counters). Then the
 * same driver built with ThreadSanitizer: four threads match on one set at
 * once, without locks; counters must add up exactly.
 */
import assert from "node:assert/strict";
import { buildSanitized, captureSeeds, writeSeeds } from "../helpers/sanitize.ts";

const SOURCES = ["flowset.c", "flow.c", "packet.c"];

async function fuzz(bin: string, lookups: number, seeds: string[]): Promise<RegExpExecArray> {
  const run = await new Deno.Command(bin, {
    args: [String(lookups), ...seeds],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const out = new TextDecoder().decode(run.stdout), err = new TextDecoder().decode(run.stderr);
  assert.equal(run.code, 0, err.slice(0, 4000));
  assert.equal(err, "", "no sanitizer reports");
  const m = /threads=4 lookups=(\d+) matched=(\d+) rounds=(\d+) rejected=(\d+)/.exec(out);
  assert.ok(m, out);
  assert.equal(Number(m[1]), lookups);
  assert.ok(Number(m[2]) > lookups / 10, `lookups must often find a flow: ${out}`);
  assert.ok(Number(m[4]) > lookups / 1000, `corrupted specs must be rejected: ${out}`);
  return m;
}

Deno.test("C flow matcher is clean under ASan/UBSan and index == linear on 150k fuzzed lookups", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-flowfuzz-" });
  try {
    const m = await fuzz(
      await buildSanitized(dir, "flow_fuzz", SOURCES),
      150000,
      writeSeeds(dir, captureSeeds([0, 1, 2, 5])),
    );
    assert.ok(Number(m[3]) > 50, `many flow sets: ${m[0]}`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("C flow matcher: concurrent lookups on one set are race-free (ThreadSanitizer)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-flowtsan-" });
  try {
    await fuzz(
      await buildSanitized(dir, "flow_fuzz", SOURCES, "thread"),
      30000,
      writeSeeds(dir, captureSeeds([0, 1, 2, 5])),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
