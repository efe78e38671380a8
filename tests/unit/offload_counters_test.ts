/**
 * The kernel's share of the per-target counts under `--offload=auto` (dataplane/offload_counters.ts) and
 * where it goes (core/counters_shm.ts): the rules the lb keeps in step with its fwmarks, counts kept when
 * a target leaves or a rule is removed behind its back, and the counters file read back with and without
 * them. iptables is a fake here (an in-memory chain); tests/e2e/offload_auto_test.ts runs the real one.
 */
import assert from "node:assert/strict";
import {
  countChain,
  OffloadCounters,
  parseCountSave,
  type Runner,
} from "../../dataplane/offload_counters.ts";
import { createCountersShm, readCounters, targetTotals } from "../../core/counters_shm.ts";
import { ownPath } from "../../core/shm_dir.ts";
import { libSandbox } from "../helpers/shm.ts";

/** A fake iptables: per family, the chain's per-fwmark counts, the jump, and every call. */
function fakeIptables() {
  const chain = countChain(5);
  const state = {
    4: { chain: false, jump: false, rules: new Map<number, [number, number]>() },
    6: { chain: false, jump: false, rules: new Map<number, [number, number]>() },
  };
  const calls: string[] = [];
  const run: Runner = (argv) => {
    const fam = argv[0] === "iptables" ? 4 : 6;
    const s = state[fam];
    const args = argv.slice(4); // after ipt -w -t mangle
    calls.push(
      `${fam} ${args.slice(0, 2).join(" ")}${args[0] === "-A" || args[0] === "-D" ? ` ${args[4]}` : ""}`,
    );
    const ok = { code: 0, stdout: "", stderr: "" };
    switch (args[0]) {
      case "-S": {
        const lines = [];
        if (s.chain) lines.push(`-N ${chain}`);
        if (s.jump) {
          lines.push(
            `-A POSTROUTING ! -p icmp -m connmark ! --mark 0x0 -m conntrack --ctdir ORIGINAL -m comment --comment nfqlb-count -c 9 9 -j ${chain}`,
          );
        }
        for (const [fw, [p, b]] of s.rules) {
          lines.push(
            `-A ${chain} -m connmark --mark 0x${
              fw.toString(16)
            } -m comment --comment "nfqlb-count ${fw}" -c ${p} ${b} -j RETURN`,
          );
        }
        return Promise.resolve({ ...ok, stdout: lines.join("\n") + "\n" });
      }
      case "-N":
        s.chain = true;
        return Promise.resolve(ok);
      case "-I":
        s.jump = true;
        return Promise.resolve(ok);
      case "-A":
        s.rules.set(Number(args[5]), [0, 0]);
        return Promise.resolve(ok);
      case "-D":
        if (args[1] === "POSTROUTING") {
          if (!s.jump) return Promise.resolve({ code: 1, stdout: "", stderr: "no such rule" });
          s.jump = false;
        } else s.rules.delete(Number(args[5]));
        return Promise.resolve(ok);
      case "-F":
        s.rules.clear();
        return Promise.resolve(ok);
      case "-X":
        s.chain = false;
        return Promise.resolve(ok);
    }
    return Promise.resolve({ code: 2, stdout: "", stderr: "unexpected" });
  };
  return { state, calls, run };
}

Deno.test("parseCountSave: the chain, the jump and the per-fwmark counts of iptables -S -v", () => {
  const text = [
    "-P POSTROUTING ACCEPT -c 0 0",
    "-N NFQLB-CNT-Q5",
    "-A POSTROUTING ! -p icmp -m connmark ! --mark 0x0 -m conntrack --ctdir ORIGINAL -m comment --comment nfqlb-count -c 3 4 -j NFQLB-CNT-Q5",
    '-A NFQLB-CNT-Q5 -m connmark --mark 0x65 -m comment --comment "nfqlb-count 101" -c 12 3400 -j RETURN',
    '-A NFQLB-CNT-Q6 -m connmark --mark 0x66 -m comment --comment "nfqlb-count 102" -c 1 1 -j RETURN',
  ].join("\n");
  const r = parseCountSave(text, "NFQLB-CNT-Q5");
  assert.equal(r.chain, true);
  assert.equal(r.jump, true);
  assert.deepEqual([...r.counts], [[101, { packets: 12n, bytes: 3400n }]], "another lb's chain is not ours");
  assert.deepEqual(parseCountSave("", "NFQLB-CNT-Q5"), { chain: false, jump: false, counts: new Map() });
});

Deno.test("OffloadCounters: rules follow the fwmarks; a target that leaves keeps its count; stop cleans up", async () => {
  using _sb = libSandbox(); // its log lines make upstream's nfqlb-trace in the shm directory
  const { state, calls, run } = fakeIptables();
  const c = new OffloadCounters("test", 5, run);
  await c.start([101, 102, -1, 0]);
  for (const fam of [4, 6] as const) {
    assert.equal(state[fam].chain, true);
    assert.equal(state[fam].jump, true);
    assert.deepEqual([...state[fam].rules.keys()].sort(), [101, 102], "no rule for empty slots");
  }
  state[4].rules.set(101, [10, 1000]);
  state[6].rules.set(101, [5, 600]);
  state[4].rules.set(102, [1, 100]);
  await c.refresh([101, 102], true);
  assert.deepEqual(c.totals(), [
    { fwmark: 101, packets: 15n, bytes: 1600n },
    { fwmark: 102, packets: 1n, bytes: 100n },
  ]);
  // 101 leaves: read once more, its rule goes, its count stays
  state[4].rules.set(101, [12, 1200]);
  await c.refresh([102], true);
  assert.ok(!state[4].rules.has(101) && !state[6].rules.has(101));
  assert.deepEqual(c.totals()[0], { fwmark: 101, packets: 17n, bytes: 1800n });
  // someone flushes the IPv4 chain: the lost rule's last count is kept, the rule comes back at 0
  state[4].rules.clear();
  await c.refresh([102], true);
  assert.deepEqual(state[4].rules.get(102), [0, 0]);
  assert.deepEqual(c.totals()[1], { fwmark: 102, packets: 1n, bytes: 100n });
  state[4].rules.set(102, [2, 200]);
  // not due yet (read at most once a second) unless forced
  const n = calls.length;
  await c.refresh([102]);
  assert.equal(calls.length, n, "no call before the period");
  await c.stop();
  assert.deepEqual(c.totals()[1], { fwmark: 102, packets: 3n, bytes: 300n }, "stop reads a last time");
  for (const fam of [4, 6] as const) {
    assert.deepEqual(state[fam], { chain: false, jump: false, rules: new Map() });
  }
});

Deno.test("OffloadCounters: the jump or chain removed behind the lb's back is put back", async () => {
  using _sb = libSandbox(); // its log lines make upstream's nfqlb-trace in the shm directory
  const { state, run } = fakeIptables();
  const c = new OffloadCounters("test", 5, run);
  await c.start([101]);
  state[6].rules.set(101, [4, 400]);
  await c.refresh([101], true);
  state[6].jump = false;
  state[6].chain = false;
  state[6].rules.clear();
  await c.refresh([101], true);
  assert.equal(state[6].jump && state[6].chain && state[6].rules.has(101), true);
  assert.deepEqual(c.totals(), [{ fwmark: 101, packets: 4n, bytes: 400n }]);
});

Deno.test("counters shm: offloaded counts are read back, summed per target on request; a file without them", () => {
  using _sb = libSandbox();
  const shm = createCountersShm("oc-counters", [2], "lb");
  shm.publish();
  try {
    assert.deepEqual(readCounters("oc-counters").offloaded, []);
    assert.equal(
      shm.setOffloaded([{ fwmark: 102, packets: 5n, bytes: 50n }, { fwmark: 101, packets: 1n, bytes: 9n }]),
      0,
    );
    const s = readCounters("oc-counters");
    assert.deepEqual(s.offloaded.map((x) => x.fwmark), [101, 102]);
    assert.deepEqual(targetTotals(s), [], "the queues' own counts: nothing accepted");
    assert.deepEqual(targetTotals(s, { offloaded: true }).map((x) => x.packets), [1n, 5n]);
    shm.setOffloaded([{ fwmark: 101, packets: 2n, bytes: 9n }]);
    assert.deepEqual(readCounters("oc-counters").offloaded, [{ fwmark: 101, packets: 2n, bytes: 9n }]);
    // a file written before offload counts (header word 36 = 0, no block after the queues): none
    const path = ownPath("oc-counters");
    const bytes = Deno.readFileSync(path);
    new DataView(bytes.buffer).setUint32(36, 0, true);
    Deno.writeFileSync(path, bytes.subarray(0, bytes.length - 24 * 256));
    assert.deepEqual(readCounters("oc-counters").offloaded, []);
  } finally {
    shm.close();
  }
});

Deno.test("stats --all and --watch: per target the sum, split into queued and offloaded", async () => {
  using _sb = libSandbox(); // its log lines make upstream's nfqlb-trace in the shm directory
  const { allStatsJson, watchScreen } = await import("../../cli/commands/stats_view.ts");
  const { COUNTER_NAMES } = await import("../../core/counters_shm.ts");
  const zero = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0n])) as Record<
    (typeof COUNTER_NAMES)[number],
    bigint
  >;
  const snap = {
    pid: 1,
    running: true,
    kind: "lb" as const,
    started: new Date(0),
    queues: [{ queue: 2, counters: zero, targets: [{ fwmark: 101, packets: 3n, bytes: 300n }] }],
    offloaded: [{ fwmark: 101, packets: 7n, bytes: 700n }, { fwmark: 102, packets: 1n, bytes: 50n }],
  };
  const frag = JSON.parse(
    '{"hsize":0,"ttlMillis":0,"collisions":0,"inserts":0,"rejected":0,"lookups":0,"objGC":0}',
  );
  const doc = JSON.parse(allStatsJson(frag, snap, [])) as {
    targets: unknown[];
    queues: { targets: unknown[] }[];
  };
  assert.deepEqual(doc.targets, [
    {
      fwmark: 101,
      packets: 10,
      bytes: 1000,
      queued_packets: 3,
      queued_bytes: 300,
      offloaded_packets: 7,
      offloaded_bytes: 700,
    },
    {
      fwmark: 102,
      packets: 1,
      bytes: 50,
      queued_packets: 0,
      queued_bytes: 0,
      offloaded_packets: 1,
      offloaded_bytes: 50,
    },
  ]);
  assert.deepEqual(
    doc.queues[0].targets,
    [{ fwmark: 101, packets: 3, bytes: 300 }],
    "per queue: what it accepted",
  );
  const screen = watchScreen(snap, undefined, 1, frag);
  assert.match(screen, / {2}bytes {3}offloaded {2}share/);
  assert.match(screen, /^ +101 +- +- +10 +- +1000 +7 +90\.9 %/m);
  // without offload: the columns as before
  assert.doesNotMatch(watchScreen({ ...snap, offloaded: [] }, undefined, 1, frag), /offloaded/);
});
