/**
 * Builds the flow matcher (c/flow.c, with c/packet.c for real keys) and the
 * driver c/test/flow_fuzz.c with AddressSanitizer + UBSan, and runs 150 000
 * lookups on random flow sets (valid, corrupted and random specs) with keys
 * and mutated / truncated packets from the real captures. The driver aborts
 * on any out-of-bounds access or undefined behaviour, and when the indexed
 * lookup and the linear walk disagree (flow, udpencap or counters). Then the
 * same driver built with ThreadSanitizer: four threads match on one set at
 * once, without locks; counters must add up exactly.
 */
import assert from "node:assert/strict";
import { readPcap } from "../helpers/pcap.ts";
import { ROOT, SHARED } from "../helpers/run.ts";

async function build(dir: string, name: string, sanitize: string): Promise<string> {
  const bin = `${dir}/${name}`;
  const cc = await new Deno.Command("gcc", {
    args: [
      "-std=c11",
      "-O1",
      "-g",
      "-Wall",
      "-Wextra",
      "-Werror",
      "-D_DEFAULT_SOURCE",
      "-pthread",
      `-fsanitize=${sanitize}`,
      "-fno-sanitize-recover=all",
      "-o",
      bin,
      `${ROOT}/c/test/flow_fuzz.c`,
      `${ROOT}/c/flow.c`,
      `${ROOT}/c/packet.c`,
    ],
    stderr: "piped",
  }).output();
  assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
  return bin;
}

function seedFiles(dir: string): string[] {
  const seeds: string[] = [];
  for (const f of ["telnet-ipv4", "telnet-ipv6", "sctp-encap-ipv4", "udp-ipv4", "udp-ipv6"]) {
    const pkts = readPcap(`${SHARED}/testdata/pcap/${f}.pcap`);
    for (const i of [0, 1, 2, 5]) {
      const p = pkts[Math.min(i, pkts.length - 1)];
      const b = new Uint8Array(p.data.length + 2);
      b[0] = p.hwProto >> 8;
      b[1] = p.hwProto & 0xff;
      b.set(p.data, 2);
      const file = `${dir}/${f}-${i}.bin`;
      Deno.writeFileSync(file, b);
      seeds.push(file);
    }
  }
  return seeds;
}

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
    const m = await fuzz(await build(dir, "flow_fuzz", "address,undefined"), 150000, seedFiles(dir));
    assert.ok(Number(m[3]) > 50, `many flow sets: ${m[0]}`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("C flow matcher: concurrent lookups on one set are race-free (ThreadSanitizer)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-flowtsan-" });
  try {
    await fuzz(await build(dir, "flow_fuzz_tsan", "thread"), 30000, seedFiles(dir));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
