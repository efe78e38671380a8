/**
 * Config churn under traffic: while sequence-numbered UDP probes (no retries) of IPv4 and IPv6 flows run through
 * `lb`, target t2 is deactivated and activated again and its weight changed, 100 changes in all through the
 * real CLI. Every probe of a flow whose target stays is answered, by that target: a change never drops or
 * misdirects a packet (upstream re-populates the table in place: 190–3,547 packets lost in 200 changes in the
 * probe that found it). Flows are chosen so that Maglev keeps them on t1/t3 whether t2 is in or out.
 */
import assert from "node:assert/strict";
import { type Family, FWBASE } from "../harness/addresses.ts";
import type { Flow, StreamResult } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey, tally } from "../harness/traffic.ts";
import { mapFlows } from "../e2e/checks.ts";

const FAMILIES: Family[] = [4, 6];
const T2 = FWBASE + 2;
/** Changes made while the probes run. */
const CHANGES = 100;
/** The weights t2 takes. */
const WEIGHTS = [1, 2, 3];

Deno.test({
  name: "reliability: 100 table changes under traffic lose no packet bound for a target that stays",
  ignore: skipUnlessRoot(),
  async fn() {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await topo.nfqlb.initTargets();
    await topo.nfqlb.startLb();
    // flows on t1 or t3 in every state the churn passes through (t2 out, and in with each weight): Maglev moves
    // a few flows of the others on such changes, and a weight above 1 gives t2 slots of theirs
    const candidates: Record<Family, Flow[]> = { 4: topo.flows(4, 90, 22000), 6: topo.flows(6, 90, 22000) };
    const observe = async (obs: Record<Family, string[][]>) => {
      for (const fam of FAMILIES) obs[fam].push(await mapFlows(topo, fam, "udp", candidates[fam]));
    };
    const obs: Record<Family, string[][]> = { 4: [], 6: [] };
    await observe(obs);
    await topo.nfqlb.deactivate(T2);
    await observe(obs);
    await topo.nfqlb.activate(T2);
    await observe(obs);
    for (const weight of WEIGHTS) {
      await topo.nfqlb.run(["activate", `--shm=${topo.shm}`, `--weight=${weight}`, String(T2)]);
      await observe(obs);
    }
    const chosen = {} as Record<Family, { flows: Flow[]; targets: string[] }>;
    for (const fam of FAMILIES) {
      const idx = candidates[fam].map((_, i) => i).filter((i) => {
        const o = obs[fam].map((x) => x[i]);
        return o[0] !== "t2" && o.every((x) => x === o[0]);
      }).slice(0, 16);
      chosen[fam] = { flows: idx.map((i) => candidates[fam][i]), targets: idx.map((i) => obs[fam][0][i]) };
      const c = tally(chosen[fam].targets);
      assert.ok(
        (c.t1 ?? 0) >= 2 && (c.t3 ?? 0) >= 2,
        `ipv${fam}: too few stable flows on t1/t3: ${JSON.stringify(c)}`,
      );
    }

    // sequence-numbered probes, no retries, while t2 goes out and in 15 times
    const streams = await Promise.all(
      FAMILIES.map((fam) => topo.client.startStream(fam, chosen[fam].flows, { pps: 800, waitMs: 3000 })),
    );
    let toggles = 0;
    const t0 = performance.now();
    let results: StreamResult[] = [];
    try {
      // deactivate, activate, weight change, in turn
      for (let i = 0; i < CHANGES; i++) {
        const step = i % 3;
        if (step === 0) await topo.nfqlb.deactivate(T2);
        else if (step === 1) await topo.nfqlb.activate(T2);
        else {await topo.nfqlb.run([
            "activate",
            `--shm=${topo.shm}`,
            `--weight=${WEIGHTS[i % WEIGHTS.length]}`,
            String(T2),
          ]);}
        toggles++;
      }
    } finally {
      results = await Promise.all(streams.map((s) => s.stop()));
    }
    console.log(
      `config churn: ${toggles} changes in ${Math.round(performance.now() - t0)} ms; probes: ${
        results.map((r) => r.probes).join(" + ")
      }`,
    );
    assert.equal(toggles, CHANGES);
    FAMILIES.forEach((fam, k) => {
      const r = results[k], c = chosen[fam];
      const bad = r.flows.map((f, i) => ({ f, i })).filter(({ f, i }) =>
        f.answered !== f.sent || Object.keys(f.byTarget).some((n) => n !== c.targets[i])
      );
      assert.ok(r.probes >= c.flows.length * 2, `ipv${fam}: only ${r.probes} probes went out`);
      const detail = bad.map(({ f, i }) =>
        `${flowKey(c.flows[i])} (${c.targets[i]}) sent=${f.sent} ${JSON.stringify(f.byTarget)}`
      );
      assert.equal(
        bad.length,
        0,
        `ipv${fam}: ${toggles} toggles, ${r.probes} probes: lost or misdirected probes on ${
          detail.join("; ")
        }`,
      );
    });
  },
});
