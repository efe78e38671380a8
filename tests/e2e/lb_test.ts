/**
 * End-to-end tests of `nfqlb lb` on the real kernel: iptables -j NFQUEUE in
 * a load-balancer netns, our lb returning each packet with a fwmark, policy
 * routing to 3 target namespaces, DSR replies. IPv4 and IPv6, TCP and UDP,
 * ICMP errors, SCTP, multi-queue, control changes under traffic, restart.
 * (The reference harness's functional checks: func_checks_test.ts.)
 *
 * Needs root (skipped with a message otherwise). NFQLB_E2E_STEERING=hmark
 * runs the checks that need no control plane against the in-kernel HMARK
 * stand-in instead (to validate the tests themselves).
 */
import assert from "node:assert/strict";
import { type Family, FWBASE } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { tableTarget } from "../harness/nfqlb.ts";
import { type Steering, Topology } from "../harness/topology.ts";
import { flowKey, type Proto, tally } from "../harness/traffic.ts";
import { checkIcmpErrors, checkSctp, checkSpread, checkSticky, mapFlows } from "./checks.ts";

const notRoot = skipUnlessRoot();
const hmark = Deno.env.get("NFQLB_E2E_STEERING") === "hmark";
if (hmark && !notRoot) console.log("e2e lb: NFQLB_E2E_STEERING=hmark: tests that need nfqlb lb are skipped");
const FAMILIES: Family[] = [4, 6];
const T2 = FWBASE + 2;

/** A topology with targets 101 102 103 active and `nfqlb lb` running (or HMARK in hmark mode). */
async function lbTopology(steering: Steering = { mode: "nfqueue", queue: 2 }): Promise<Topology> {
  const topo = await Topology.create({ steering: hmark ? { mode: "hmark" } : steering });
  try {
    if (!hmark) {
      await topo.nfqlb.initTargets();
      const lb = await topo.nfqlb.startLb();
      // start-up lines (upstream format): FragTable, then one queue_length line per queue
      const lines = () => lb.stdout.split("\n");
      const want = topo.nfqlb.queues.length;
      const printed = () =>
        lines().filter((l) => /^queue_length=\d+, mtu=\d+, SO_RCVBUF=\d+ \(\d+\)$/.test(l)).length;
      for (let i = 0; i < 50 && printed() < want; i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(
        lines().some((l) => /^FragTable; size=500, buckets=500, frag=0, mtu=1500, ttl=200$/.test(l)),
        `lb start-up line FragTable missing:\n${lb.describe()}`,
      );
      assert.equal(printed(), want, `lb start-up queue_length lines:\n${lb.describe()}`);
    }
    return topo;
  } catch (e) {
    await topo.teardown();
    throw e;
  }
}

function moved(before: string[], after: string[]): number[] {
  return before.map((b, i) => (b !== after[i] ? i : -1)).filter((i) => i >= 0);
}

Deno.test({
  name: "e2e lb: IPv4/IPv6 TCP/UDP spread, 5-tuple stickiness, deactivate/activate, ICMP errors, SCTP",
  ignore: notRoot,
  async fn(t) {
    await using topo = await lbTopology();
    for (const fam of FAMILIES) {
      const maps: Partial<Record<Proto, { flows: Flow[]; targets: string[] }>> = {};
      await t.step(
        `ipv${fam}: UDP and TCP spread over 3 targets (300 flows each, >= 15 % per target)`,
        async () => {
          maps.udp = await checkSpread(topo, fam, "udp", 300, 20000);
          maps.tcp = await checkSpread(topo, fam, "tcp", 300, 21000);
        },
      );
      if (!hmark) {
        await t.step(`ipv${fam}: the dataplane follows the table (nfqlb fwmark --shm agrees)`, async () => {
          for (const proto of ["udp", "tcp"] as Proto[]) {
            const m = maps[proto];
            assert.ok(m, "needs the spread step");
            for (let i = 0; i < 6; i++) {
              assert.equal(
                m.targets[i],
                await tableTarget(topo, fam, proto, m.flows[i]),
                `${proto} ${flowKey(m.flows[i])}`,
              );
            }
          }
        });
      }
      await t.step(`ipv${fam}: one 5-tuple always lands on one target`, async () => {
        await checkSticky(topo, fam, "udp", { src: topo.clientAddrs(fam)[0], sport: 40001 }, 20);
        await checkSticky(topo, fam, "tcp", { src: topo.clientAddrs(fam)[0], sport: 40002 }, 10);
      });
      await t.step(
        `ipv${fam}: an ICMP ${fam === 4 ? "frag-needed" : "packet-too-big"} reaches the flow's target`,
        async () => {
          const cases = topo.targetNames.flatMap((name) =>
            (["udp", "tcp"] as Proto[]).map((proto) => {
              const m = maps[proto];
              assert.ok(m, "needs the spread step");
              const i = m.targets.indexOf(name);
              return { flow: m.flows[i], proto, target: name };
            })
          );
          await checkIcmpErrors(topo, fam, cases);
        },
      );
      await t.step(`ipv${fam}: SCTP (raw proto 132) spread by ports`, async () => {
        await checkSctp(topo, fam, { n: 300, portsOnly: !hmark });
      });
      if (hmark) continue;
      await t.step(`ipv${fam}: deactivate ${T2}: t2 gets nothing, other flows stay (Maglev)`, async () => {
        await topo.nfqlb.deactivate(T2);
        for (const proto of ["udp", "tcp"] as Proto[]) {
          const m = maps[proto];
          assert.ok(m, "needs the spread step");
          const after = await mapFlows(topo, fam, proto, m.flows);
          assert.equal(
            tally(after).t2 ?? 0,
            0,
            `${proto}: t2 still answers: ${JSON.stringify(tally(after))}`,
          );
          const stay = m.targets.map((x, i) => (x !== "t2" ? i : -1)).filter((i) => i >= 0);
          const mv = moved(stay.map((i) => m.targets[i]), stay.map((i) => after[i])).map((k) => stay[k]);
          // Maglev keeps all but a few table slots of the remaining targets (for M=997 and
          // 101 102 103, deactivating 102 moves 5 of 665 such slots); each flow that moved
          // must have been moved by the table itself, not by the lb.
          assert.ok(
            mv.length <= 0.02 * stay.length,
            `${proto}: ${mv.length}/${stay.length} flows not on t2 moved`,
          );
          for (const i of mv) {
            assert.equal(
              after[i],
              await tableTarget(topo, fam, proto, m.flows[i]),
              `${proto} ${flowKey(m.flows[i])} moved ${m.targets[i]} -> ${
                after[i]
              }, but the table says otherwise`,
            );
          }
        }
      });
      await t.step(`ipv${fam}: activate ${T2}: every flow returns to its original target`, async () => {
        await topo.nfqlb.activate(T2);
        for (const proto of ["udp", "tcp"] as Proto[]) {
          const m = maps[proto];
          assert.ok(m, "needs the spread step");
          const after = await mapFlows(topo, fam, proto, m.flows);
          const mv = moved(m.targets, after);
          assert.equal(
            mv.length,
            0,
            `${proto}: ${mv.length} flows not back, e.g. ${
              mv.slice(0, 5).map((i) => `${flowKey(m.flows[i])} ${m.targets[i]}->${after[i]}`).join(", ")
            }`,
          );
        }
      });
    }
    if (!hmark) {
      const lb = await topo.nfqlb.stopLb();
      assert.equal(lb?.status.code, 0, `lb exit on SIGTERM: ${lb?.stderr}`);
    }
  },
});

Deno.test({
  name:
    "e2e lb: fragmented 3000-byte UDP datagrams are spread, and a flow's fragments follow its small packets",
  ignore: notRoot,
  async fn(t) {
    await using topo = await lbTopology();
    for (const fam of FAMILIES) {
      await t.step(`ipv${fam}: 90 fragmented datagrams answered, >= 10 % per target`, async () => {
        const flows = topo.flows(fam, 90, 26000);
        const r = await topo.client.udp(fam, flows, 1, 1000, 3000);
        const names = r.targets.map((x) => x[0]);
        const c = tally(names);
        assert.equal(c[""] ?? 0, 0, `unanswered: ${JSON.stringify(c)} (errno ${r.errors.join(",")})`);
        for (const n of topo.targetNames) assert.ok((c[n] ?? 0) >= 9, `${n}: ${JSON.stringify(c)}`);
      });
      // (HMARK hashes fragments on addresses only, so this one is for nfqlb)
      await t.step({
        name: `ipv${fam}: the same flow lands on the same target, small or fragmented`,
        ignore: hmark,
        fn: async () => {
          const flows = topo.flows(fam, 20, 27000);
          const small = await mapFlows(topo, fam, "udp", flows);
          const big = (await topo.client.udp(fam, flows, 1, 1000, 3000)).targets.map((x) => x[0]);
          const bad = flows.map((f, i) => `${flowKey(f)} ${small[i]}/${big[i] || "lost"}`).filter((_, i) =>
            small[i] !== big[i]
          );
          assert.equal(bad.length, 0, `small/fragmented differ: ${bad.join(", ")}`);
        },
      });
      await t.step(`ipv${fam}: small packets still balanced afterwards`, async () => {
        await checkSpread(topo, fam, "udp", 90, 28000);
      });
    }
  },
});

Deno.test({
  name: "e2e lb: --queue=0:1 with iptables --queue-balance 0:1 uses both queues",
  ignore: notRoot || hmark,
  async fn() {
    await using topo = await lbTopology({ mode: "nfqueue", balance: [0, 1] });
    const q0 = await topo.queueStats();
    for (const fam of FAMILIES) {
      // 17 client addresses: --queue-balance hashes addresses (and protocol) only
      await checkSpread(topo, fam, "udp", 170, 20000);
      await checkSpread(topo, fam, "tcp", 170, 21000);
    }
    const q1 = await topo.queueStats();
    const pkts = [0, 1].map((q) => (q1.get(q)?.seq ?? 0) - (q0.get(q)?.seq ?? 0));
    assert.ok(pkts[0] > 0 && pkts[1] > 0, `packets per queue: q0=${pkts[0]} q1=${pkts[1]}`);
    const lb = await topo.nfqlb.stopLb();
    assert.equal(lb?.status.code, 0, `lb exit on SIGTERM: ${lb?.stderr}`);
  },
});

Deno.test({
  name: "e2e lb: a restart under traffic (SIGTERM, then SIGKILL) resumes balancing with the same targets",
  ignore: notRoot || hmark,
  async fn(t) {
    await using topo = await lbTopology();
    const base: Record<string, { fam: Family; proto: Proto; flows: Flow[]; targets: string[] }> = {};
    for (const fam of FAMILIES) {
      for (const proto of ["udp", "tcp"] as Proto[]) {
        const flows = topo.flows(fam, proto === "udp" ? 90 : 45, proto === "udp" ? 23000 : 24000);
        base[`ipv${fam} ${proto}`] = { fam, proto, flows, targets: await mapFlows(topo, fam, proto, flows) };
      }
    }
    for (const sig of ["SIGTERM", "SIGKILL"] as Deno.Signal[]) {
      await t.step(`${sig}, start again, flows return to the same targets`, async () => {
        const stream = await topo.client.startStream(4, topo.flows(4, 8, 25000), { pps: 300, waitMs: 500 });
        let status: Deno.CommandStatus | undefined;
        try {
          status = (await topo.nfqlb.stopLb(10_000, sig))?.status;
          await topo.nfqlb.startLb();
        } finally {
          await stream.stop();
        }
        if (sig === "SIGTERM") assert.equal(status?.code, 0, "lb exits 0 on SIGTERM");
        for (const [what, b] of Object.entries(base)) {
          const after = await mapFlows(topo, b.fam, b.proto, b.flows);
          const mv = moved(b.targets, after);
          assert.equal(
            mv.length,
            0,
            `${what}: ${mv.length}/${b.flows.length} flows on another target after restart`,
          );
        }
      });
    }
    const lb = await topo.nfqlb.stopLb(10_000, "SIGINT");
    assert.equal(lb?.status.code, 0, `lb exit on SIGINT: ${lb?.stderr}`);
  },
});
