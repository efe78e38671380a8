/**
 * End-to-end test of connection tables in `nfqlb flowlb` on the real kernel
 * (docs/conntrack.md "In flowlb"), set up like a Meridio frontend
 * (`--queue=0:1` behind `--queue-balance 0:1`), with two streams over the
 * same three targets:
 *
 * ```
 *  stream A: <shm>   + <shm>-ct   flow a: udp, dport 5000, dsts VIPs
 *  stream B: <p>-streamB (no -ct) flow b: udp, dport 6000, dsts VIPs
 * ```
 *
 * UDP flows of both streams are recorded; then a fourth target joins both
 * tables, so Maglev moves some flows of each (computed from the real tables
 * with TargetShm.lookupKey, in a child process, so the expectations are exact
 * sets). Every flow of stream A keeps its target, those of stream B go exactly
 * where Maglev now says, new flows of A are Maglev's, and `ct-list` shows A's
 * flows with their targets. Counts and sets only, no timing.
 *
 * Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import { type Family, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { addrPort, ctList, maglevTargets } from "../harness/nfqlb.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey, tally } from "../harness/traffic.ts";
import { mapFlows } from "./checks.ts";

const notRoot = skipUnlessRoot();
const FAMILIES: Family[] = [4, 6];
const B_PORT = 6000;
/** Flows per family and stream. */
const K = 40;
/** Lifetimes long enough that nothing expires during the test however slow the machine. */
const CT_INIT = ["--conntrack=8192", "--ct_ttl=600000,600000,600000"];
const DSTS = `--dsts=${VIP[4]}/32,${VIP[6]}/128`;

/** Flows whose observed target differs from the expected one, for messages ("" = no answer). */
function diff(flows: Flow[], got: string[], want: string[]): string[] {
  return flows.flatMap((f, i) =>
    got[i] === want[i] ? [] : [`${flowKey(f)} want ${want[i] || "none"} got ${got[i] || "none"}`]
  );
}

Deno.test({
  name:
    "e2e flowlb conntrack: UDP flows of the stream with a table keep their targets when Maglev moves them",
  ignore: notRoot,
  async fn() {
    await using t = await Topology.create({
      steering: { mode: "nfqueue", balance: [0, 1] },
      targets: 4,
      extraUdpPorts: [B_PORT],
    });
    const [f1, f2, f3, f4] = t.fwmarks.map(String);
    const shmA = t.shm, shmB = `${t.prefix}-streamB`;
    await t.nfqlb.run(["init", `--shm=${shmA}`, "--M=997", "--N=32", ...CT_INIT]);
    await t.nfqlb.run(["activate", `--shm=${shmA}`, f1, f2, f3]);
    await t.nfqlb.run(["init", `--shm=${shmB}`, "--M=997", "--N=32"]);
    await t.nfqlb.run(["activate", `--shm=${shmB}`, f1, f2, f3]);
    await t.nfqlb.startFlowLb(["--promiscuous_ping", "--qlength=1024"]);
    for (
      const [name, shm, port] of [["a", shmA, UDP_PORT], ["b", shmB, B_PORT]] as const
    ) {
      const r = await t.nfqlb.run([
        "flow-set",
        `--name=${name}`,
        `--target=${shm}`,
        "--protocols=udp",
        DSTS,
        `--dports=${port}`,
      ]);
      assert.equal(r.stdout, "OK\n", `flow-set ${name}`);
    }

    const flows = (fam: Family, port: number, sportBase: number) =>
      t.flows(fam, K, sportBase).map((f) => ({ ...f, dst: VIP[fam], dport: port }));
    const a = Object.fromEntries(FAMILIES.map((fam) => [fam, flows(fam, UDP_PORT, 21000)])) as Record<
      Family,
      Flow[]
    >;
    const b = Object.fromEntries(FAMILIES.map((fam) => [fam, flows(fam, B_PORT, 21000)])) as Record<
      Family,
      Flow[]
    >;
    const origA = {} as Record<Family, string[]>, origB = {} as Record<Family, string[]>;
    for (const fam of FAMILIES) {
      origA[fam] = await mapFlows(t, fam, "udp", a[fam]);
      origB[fam] = await mapFlows(t, fam, "udp", b[fam]);
      assert.deepEqual(
        diff(a[fam], origA[fam], await maglevTargets(t, "udp", a[fam], shmA)),
        [],
        `ipv${fam} a`,
      );
      assert.deepEqual(
        diff(b[fam], origB[fam], await maglevTargets(t, "udp", b[fam], shmB)),
        [],
        `ipv${fam} b`,
      );
      assert.deepEqual(Object.keys(tally(origA[fam])).sort(), ["t1", "t2", "t3"], `ipv${fam} a`);
    }

    // t4 joins both tables: Maglev moves some flows of each stream (fixed flows: deterministic)
    await t.nfqlb.run(["activate", `--shm=${shmA}`, f4]);
    await t.nfqlb.run(["activate", `--shm=${shmB}`, f4]);
    for (const fam of FAMILIES) {
      const nowA = await maglevTargets(t, "udp", a[fam], shmA);
      const nowB = await maglevTargets(t, "udp", b[fam], shmB);
      const movedA = a[fam].filter((_, i) => nowA[i] !== origA[fam][i]).length;
      const movedB = b[fam].filter((_, i) => nowB[i] !== origB[fam][i]).length;
      assert.ok(movedA > 0 && movedB > 0, `ipv${fam}: Maglev must move some flows (${movedA}, ${movedB})`);
      // stream A (table): every flow stays; stream B (none): exactly Maglev's new answer
      const afterA = await mapFlows(t, fam, "udp", a[fam]);
      assert.deepEqual(diff(a[fam], afterA, origA[fam]), [], `ipv${fam} a after activate (${movedA} moved)`);
      const afterB = await mapFlows(t, fam, "udp", b[fam]);
      assert.deepEqual(diff(b[fam], afterB, nowB), [], `ipv${fam} b after activate (${movedB} moved)`);
      // new flows of A are Maglev's (its table's scheduler), t4 included
      const fresh = flows(fam, UDP_PORT, 23000);
      const got = await mapFlows(t, fam, "udp", fresh);
      assert.deepEqual(diff(fresh, got, await maglevTargets(t, "udp", fresh, shmA)), [], `ipv${fam} new a`);
      assert.ok(got.includes("t4"), `ipv${fam} new flows: ${JSON.stringify(tally(got))}`);
    }

    // the table holds stream A's flows with their original targets, and nothing of stream B
    const listed = await ctList(t, [], shmA);
    const recorded = new Map(
      listed.map((c) => [`${c.proto} ${addrPort(c.src, c.sport)} ${addrPort(c.dst, c.dport)}`, c]),
    );
    for (const fam of FAMILIES) {
      a[fam].forEach((f, i) => {
        const c = recorded.get(`udp ${addrPort(f.src, f.sport)} ${addrPort(f.dst!, f.dport!)}`);
        assert.ok(c, `ct-list has no entry for ${flowKey(f)}`);
        assert.equal(c.fwmark, t.fwmarks[t.targetNames.indexOf(origA[fam][i])], `ct-list ${flowKey(f)}`);
      });
    }
    assert.deepEqual(listed.filter((c) => c.dport === B_PORT), [], "stream B's flows are not in A's table");
    assert.equal(
      listed.filter((c) => c.dport === UDP_PORT).length,
      4 * K,
      "ct-list: a + new a, both families",
    );
  },
});
