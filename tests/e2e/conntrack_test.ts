/**
 * End-to-end tests of the connection table (`<tshm>-ct`) in `nfqlb lb` on the
 * real kernel (docs/conntrack.md "In lb"): long-lived TCP connections survive
 * adding and removing targets with the table on, while with it off exactly the
 * connections whose Maglev target changed break; a drained target (weight 0)
 * keeps its connections and gets no new one; `ct-set --pin` moves a UDP flow
 * and `ct-delete` gives it back to Maglev; an lb restart keeps the table.
 *
 * "Moved" is observed, not timed: in DSR a segment of an established TCP
 * connection that reaches another target is answered with a RST (no socket
 * there), so the client's connection breaks. Which flows Maglev moves is
 * computed from the real target table (the library, in a child process), so
 * every expectation is an exact set.
 *
 * Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import type { CtListItem } from "../../cli/commands/conntrack_impl.ts";
import { type Family, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { openConns } from "../harness/conns.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { addrPort, ctList, maglevTargets, tableTarget } from "../harness/nfqlb.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey, tally } from "../harness/traffic.ts";
import { checkSticky, mapFlows } from "./checks.ts";

const notRoot = skipUnlessRoot();
const QUEUE = 2;
/** The servers' line-echo TCP port (connections stay open). */
const ECHO_PORT = 5007;
/** Long-lived connections per family in the target-change tests. */
const K = 40;
/** Lifetimes long enough that nothing expires during a test however slow the machine. */
const CT_INIT = ["--conntrack=8192", "--ct_ttl=600000,600000,600000"];
const FAMILIES: Family[] = [4, 6];

/** A topology with `targets` targets, echo servers, and no table yet. */
async function ctTopology(targets: number): Promise<Topology> {
  return await Topology.create({
    steering: { mode: "nfqueue", queue: QUEUE },
    targets,
    echoTcpPorts: [ECHO_PORT],
  });
}

/** `init` (with `<shm>-ct` when `conntrack`), `activate` fwmarks, start the lb. */
async function startWithTable(t: Topology, fwmarks: number[], conntrack: boolean): Promise<void> {
  await t.nfqlb.run(["init", `--shm=${t.shm}`, "--M=997", "--N=32", ...(conntrack ? CT_INIT : [])]);
  await t.nfqlb.activate(...fwmarks);
  await t.nfqlb.startLb();
}

/** `n` flows of `fam` to the echo port of the VIP. */
function echoFlows(t: Topology, fam: Family, n: number, sportBase: number): Flow[] {
  return t.flows(fam, n, sportBase).map((f) => ({ ...f, dst: VIP[fam], dport: ECHO_PORT }));
}

function diff(flows: Flow[], got: string[], want: string[], errnos?: number[]): string[] {
  return flows.flatMap((f, i) =>
    got[i] === want[i]
      ? []
      : [`${flowKey(f)} want ${want[i] || "broken"} got ${got[i] || `broken(${errnos?.[i] ?? "?"})`}`]
  );
}

/** Indexes where `a` and `b` differ. */
function changed(a: string[], b: string[]): number[] {
  return a.flatMap((x, i) => (x !== b[i] ? [i] : []));
}

/** `ct-stats` as JSON. */
async function ctStats(t: Topology): Promise<Record<string, number>> {
  const r = await t.nfqlb.run(["ct-stats", `--shm=${t.shm}`]);
  return JSON.parse(r.stdout) as Record<string, number>;
}

/**
 * K long-lived connections per family on targets 1-4 of 6; then targets 5 and
 * 6 join (round 1) and target 2 leaves (round 2). Returns nothing; asserts
 * per round the exact set of connections that still work and their targets.
 */
async function targetChanges(conntrack: boolean): Promise<void> {
  await using t = await ctTopology(6);
  const [f1, f2, f3, f4, f5, f6] = t.fwmarks;
  await startWithTable(t, [f1, f2, f3, f4], conntrack);
  const flows = FAMILIES.flatMap((fam) => echoFlows(t, fam, K, 20000));
  const conns = await openConns(t, VIP[4], ECHO_PORT, flows);
  try {
    const orig = conns.first.targets;
    assert.deepEqual(
      diff(flows, orig, await maglevTargets(t, "tcp", flows), conns.first.errnos),
      [],
      "connections must open on Maglev's targets",
    );
    assert.deepEqual(Object.keys(tally(orig)).sort(), ["t1", "t2", "t3", "t4"], JSON.stringify(tally(orig)));

    await t.nfqlb.activate(f5, f6);
    const m1 = await maglevTargets(t, "tcp", flows);
    const moved1 = changed(orig, m1);
    // the flows are fixed, so this is deterministic; it makes the table-on case meaningful
    for (const fam of FAMILIES) {
      assert.ok(
        moved1.some((i) => flows[i].dst === VIP[fam]),
        `ipv${fam}: activating ${f5} ${f6} must move some of the ${K} flows in Maglev`,
      );
    }
    const r1 = await conns.round(1);
    const want1 = conntrack ? orig : orig.map((x, i) => (moved1.includes(i) ? "" : x));
    assert.deepEqual(
      diff(flows, r1.targets, want1, r1.errnos),
      [],
      `after activate ${f5} ${f6} (table ${
        conntrack ? "on" : "off"
      }; Maglev moved ${moved1.length}/${flows.length})`,
    );

    await t.nfqlb.deactivate(f2);
    const m2 = await maglevTargets(t, "tcp", flows);
    // table on: only t2's connections go (to Maglev's choice, which has no socket for them);
    // off: every flow whose Maglev target differs from its connection's now or before
    const gone = conntrack
      ? orig.flatMap((x, i) => (x === "t2" ? [i] : []))
      : [...new Set([...moved1, ...changed(orig, m2)])];
    assert.ok(orig.includes("t2"), "some connections must be on t2");
    const r2 = await conns.round(2);
    const want2 = orig.map((x, i) => (gone.includes(i) ? "" : x));
    assert.deepEqual(
      diff(flows, r2.targets, want2, r2.errnos),
      [],
      `after deactivate ${f2} (table ${conntrack ? "on" : "off"})`,
    );
    assert.ok(want2.some((x) => x !== ""), "some connections must survive");
    if (conntrack) {
      const st = await ctStats(t);
      assert.ok(st.entries >= flows.length, `ct-stats: ${JSON.stringify(st)}`);
      assert.ok(st.hits >= 2 * flows.length, `ct-stats: ${JSON.stringify(st)}`);
    }
  } finally {
    await conns.stop();
  }
}

Deno.test({
  name:
    "e2e conntrack: table on: long-lived TCP (IPv4+IPv6) survives targets joining; leaving breaks only its own",
  ignore: notRoot,
  fn: () => targetChanges(true),
});

Deno.test({
  name: "e2e conntrack: table off: exactly the TCP connections whose Maglev target changed break",
  ignore: notRoot,
  fn: () => targetChanges(false),
});

Deno.test({
  name: "e2e conntrack: a drained target (weight 0) keeps its connections and gets no new one",
  ignore: notRoot,
  async fn() {
    await using t = await ctTopology(4);
    await startWithTable(t, t.fwmarks, true);
    const fw2 = t.fwmarks[1];
    const flows = FAMILIES.flatMap((fam) => echoFlows(t, fam, 24, 20000));
    const conns = await openConns(t, VIP[4], ECHO_PORT, flows);
    try {
      const orig = conns.first.targets;
      assert.deepEqual(diff(flows, orig, await maglevTargets(t, "tcp", flows), conns.first.errnos), []);
      const onT2 = flows.filter((_, i) => orig[i] === "t2");
      assert.ok(onT2.length > 0, `no connection on t2: ${JSON.stringify(tally(orig))}`);
      const fresh = Object.fromEntries(FAMILIES.map((fam) => [fam, t.flows(fam, 60, 30000)])) as Record<
        Family,
        Flow[]
      >;
      const freshTo = (fam: Family) => fresh[fam].map((f) => ({ ...f, dst: VIP[fam], dport: TCP_PORT }));
      for (const fam of FAMILIES) {
        // before the drain, Maglev would give t2 some of the new connections
        assert.ok((await maglevTargets(t, "tcp", freshTo(fam))).includes("t2"), `ipv${fam}`);
      }

      await t.nfqlb.run(["activate", `--shm=${t.shm}`, "--weight=0", String(fw2)]);
      const r1 = await conns.round(1);
      assert.deepEqual(diff(flows, r1.targets, orig, r1.errnos), [], `after draining ${fw2}`);

      for (const fam of FAMILIES) {
        const names = await mapFlows(t, fam, "tcp", fresh[fam]);
        assert.equal(tally(names).t2 ?? 0, 0, `ipv${fam} new connections: ${JSON.stringify(tally(names))}`);
        assert.deepEqual(names, await maglevTargets(t, "tcp", freshTo(fam)), `ipv${fam} new connections`);
      }
      const r2 = await conns.round(2);
      assert.deepEqual(diff(flows, r2.targets, orig, r2.errnos), [], "after new connections");

      // the table still holds exactly t2's long-lived connections for fwmark 102
      const listed = (await ctList(t, [`--target=${fw2}`, `--port=${ECHO_PORT}`]))
        .filter((c) => c.proto === "tcp").map((c) => `${c.src}:${c.sport}`).sort();
      assert.deepEqual(listed, onT2.map(flowKey).sort(), `ct-list --target=${fw2}`);
    } finally {
      await conns.stop();
    }
  },
});

Deno.test({
  name: "e2e conntrack: ct-set --pin moves a UDP flow (IPv4+IPv6), ct-list shows it, ct-delete gives it back",
  ignore: notRoot,
  async fn(tt) {
    await using t = await ctTopology(3);
    await startWithTable(t, t.fwmarks, true);
    for (const fam of FAMILIES) {
      await tt.step(`ipv${fam}`, async () => {
        const flow: Flow = { src: t.clientAddrs(fam)[1], sport: 40000 + fam };
        const a = await checkSticky(t, fam, "udp", flow, 3);
        assert.equal(a, await tableTarget(t, fam, "udp", flow), "Maglev's choice first");
        const bi = t.targetNames.findIndex((n) => n !== a);
        const b = t.targetNames[bi], fwB = t.fwmarks[bi], fwA = t.fwmarks[t.targetNames.indexOf(a)];
        const key = [
          `--src=${addrPort(flow.src, flow.sport)}`,
          `--dst=${addrPort(VIP[fam], UDP_PORT)}`,
          "--proto=udp",
        ];

        await t.nfqlb.run(["ct-set", `--shm=${t.shm}`, ...key, `--fwmark=${fwB}`, "--pin"]);
        const pinned = (await t.client.udp(fam, [flow], 5)).targets[0];
        assert.deepEqual(tally(pinned), { [b]: 5 }, `after ct-set --fwmark=${fwB} --pin`);
        const mine = (rows: CtListItem[]) =>
          rows.filter((c) => c.src === flow.src && c.sport === flow.sport && c.proto === "udp");
        const onB = mine(await ctList(t, [`--target=${fwB}`]));
        assert.deepEqual(
          onB.map((c) => ({ dst: c.dst, dport: c.dport, fwmark: c.fwmark, row: c.row, flags: c.flags })),
          [{ dst: VIP[fam], dport: UDP_PORT, fwmark: fwB, row: bi, flags: ["pinned"] }],
          `ct-list --target=${fwB}`,
        );
        assert.deepEqual(mine(await ctList(t, [`--target=${fwA}`])), [], `ct-list --target=${fwA}`);

        await t.nfqlb.run(["ct-delete", `--shm=${t.shm}`, ...key]);
        const back = (await t.client.udp(fam, [flow], 5)).targets[0];
        assert.deepEqual(tally(back), { [a]: 5 }, "after ct-delete");
        // the lb scheduled it again and stored Maglev's choice, unpinned
        assert.deepEqual(
          mine(await ctList(t, [`--address=${flow.src}`])).map((c) => ({ fwmark: c.fwmark, flags: c.flags })),
          [{ fwmark: fwA, flags: [] }],
          "ct-list after ct-delete and new packets",
        );
      });
    }
  },
});

Deno.test({
  name:
    "e2e conntrack: an lb restart keeps the table: UDP flows stay on their targets though Maglev moved them",
  ignore: notRoot,
  async fn() {
    await using t = await ctTopology(4);
    const [f1, f2, f3, f4] = t.fwmarks;
    await startWithTable(t, [f1, f2, f3], true);
    const flows = Object.fromEntries(FAMILIES.map((fam) => [fam, t.flows(fam, 40, 21000)])) as Record<
      Family,
      Flow[]
    >;
    const to = (fam: Family) => flows[fam].map((f) => ({ ...f, dst: VIP[fam], dport: UDP_PORT }));
    const orig = {} as Record<Family, string[]>;
    for (const fam of FAMILIES) orig[fam] = await mapFlows(t, fam, "udp", flows[fam]);
    const st0 = await ctStats(t);
    assert.ok(st0.entries >= 80, `ct-stats before the restart: ${JSON.stringify(st0)}`);

    const st = await t.nfqlb.stopLb(10_000, "SIGTERM");
    assert.equal(st?.status.code, 0, `lb exit on SIGTERM:\n${st?.stderr}`);
    await t.nfqlb.activate(f4);
    for (const fam of FAMILIES) {
      const mv = changed(orig[fam], await maglevTargets(t, "udp", to(fam)));
      assert.ok(mv.length > 0, `ipv${fam}: activating ${f4} must move some flows in Maglev`);
    }
    await t.nfqlb.startLb();

    for (const fam of FAMILIES) {
      const after = await mapFlows(t, fam, "udp", flows[fam]);
      assert.deepEqual(diff(flows[fam], after, orig[fam]), [], `ipv${fam} after the restart`);
    }
    const st1 = await ctStats(t);
    assert.ok(st1.hits - st0.hits >= 80, `hits ${st0.hits} -> ${st1.hits}: ${JSON.stringify(st1)}`);
    assert.equal(st1.entries, st0.entries, `entries: ${JSON.stringify(st1)}`);
    // new flows are scheduled by Maglev, t4 included
    const fresh = t.flows(4, 40, 22000);
    const names = await mapFlows(t, 4, "udp", fresh);
    assert.deepEqual(
      names,
      await maglevTargets(t, "udp", fresh.map((f) => ({ ...f, dst: VIP[4], dport: UDP_PORT }))),
    );
    assert.ok(names.includes("t4"), `new flows: ${JSON.stringify(tally(names))}`);
  },
});
