/**
 * Self-test of the lab (tests/harness: topology, traffic agent) with the in-kernel HMARK
 * stand-in (no nfqlb process): spread, DSR replies from the VIP, 5-tuple
 * stickiness, ICMP errors and SCTP, for IPv4 and IPv6. Also checks that
 * teardown leaves nothing behind. Needs root; skipped (with a message) without.
 */
import assert from "node:assert/strict";
import type { Family } from "../harness/addresses.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { run } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { checkIcmpErrors, checkSctp, checkSpread, checkSticky } from "./checks.ts";

const ignore = skipUnlessRoot();

Deno.test({
  name: "e2e topology self-test with the HMARK stand-in: spread, DSR, stickiness, ICMP, SCTP",
  ignore,
  async fn(t) {
    await using topo = await Topology.create({ steering: { mode: "hmark" } });
    for (const fam of [4, 6] as Family[]) {
      let udp: Awaited<ReturnType<typeof checkSpread>> | undefined;
      let tcp: Awaited<ReturnType<typeof checkSpread>> | undefined;
      await t.step(`ipv${fam}: udp and tcp spread over 3 targets, replies from the VIP`, async () => {
        udp = await checkSpread(topo, fam, "udp", 300, 20000);
        tcp = await checkSpread(topo, fam, "tcp", 300, 21000);
      });
      await t.step(`ipv${fam}: one 5-tuple always lands on one target`, async () => {
        await checkSticky(topo, fam, "udp", { src: topo.clientAddrs(fam)[0], sport: 40001 }, 20);
        await checkSticky(topo, fam, "tcp", { src: topo.clientAddrs(fam)[0], sport: 40002 }, 10);
      });
      await t.step(`ipv${fam}: ICMP errors quoting a flow reach the flow's target`, async () => {
        const u = udp, c = tcp;
        assert.ok(u && c, "needs the spread step");
        // one UDP and one TCP flow of every target
        const cases = topo.targetNames.flatMap((name) =>
          ([["udp", u], ["tcp", c]] as const).map(([proto, m]) => {
            const i = m.targets.indexOf(name);
            return { flow: m.flows[i], proto, target: name };
          })
        );
        await checkIcmpErrors(topo, fam, cases);
      });
      await t.step(`ipv${fam}: raw SCTP spread by ports, same ports stick`, async () => {
        await checkSctp(topo, fam, { n: 300 });
      });
    }
  },
});

Deno.test({
  name: "e2e topology teardown removes namespaces, processes and directories",
  ignore,
  async fn() {
    const topo = await Topology.create({ steering: { mode: "none" }, targets: 2, sources: 1 });
    const names = [topo.ns.cli, topo.ns.lb, ...topo.ns.targets];
    const dirs = [topo.shmDir, topo.workDir];
    const pids = (await run(["ip", "netns", "pids", topo.ns.targets[0]])).stdout.trim().split(/\s+/);
    assert.ok(pids.length >= 1, "the target runs a server");
    await topo.teardown();
    const list = (await run(["ip", "netns", "list"])).stdout;
    for (const n of names) {
      assert.ok(!list.split("\n").some((l) => l.split(" ")[0] === n), `${n} still exists`);
    }
    for (const d of dirs) assert.throws(() => Deno.statSync(d), `${d} still exists`);
    for (const p of pids) assert.throws(() => Deno.statSync(`/proc/${p}`), `pid ${p} still runs`);
  },
});
