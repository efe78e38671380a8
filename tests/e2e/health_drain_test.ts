/**
 * End-to-end test of `onFail: drain` against `onFail: remove` with a
 * connection table (docs/health.md "Drain or remove"): `nfqlb run` with
 * `conntrack:` on the service, three DSR targets, long-lived TCP
 * connections from the client to the targets' line-echo servers. Target 2
 * then fails its check (its tcp checks, from the lb's address, are reset by
 * a rule on the target; client traffic is untouched) and goes down:
 *
 * - drain: its row stays with weight 0; every established connection,
 *   t2's included, is still answered by the same target; 200 new
 *   connections from 200 clients all succeed and none goes to t2;
 * - remove: its row is gone; t2's established connections move (Maglev
 *   gives them to another target, which resets them: "broken"), every
 *   other connection stays; new connections avoid t2.
 *
 * Counts, not timing. Needs root.
 */
import assert from "node:assert/strict";
import { targetAddr, TCP_PORT, VIP } from "../harness/addresses.ts";
import { openConns } from "../harness/conns.ts";
import { HostUnderTest } from "../harness/host.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { RunAgent } from "../harness/run_agent.ts";
import { tally } from "../harness/traffic.ts";

const ignore = skipUnlessRoot();
/** The servers' line-echo port (connections stay open). */
const ECHO_PORT = 5007;
const INTERVAL = 500, TIMEOUT = 300, FALL = 3;
/** fall × interval + timeout + 0.5 s slack, and as much again for a loaded host. */
const DOWN_WAIT = 2 * (FALL * INTERVAL + TIMEOUT + 500);

function config(name: string, onFail: "drain" | "remove"): string {
  return [
    "version: 1",
    `name: ${name}`,
    "services:",
    "  - name: web",
    `    vips: [${VIP[4]}]`,
    "    conntrack: { capacity: 8192, ttlMs: { tcp: 600000 } }",
    `    health: { type: tcp, port: ${TCP_PORT}, intervalMs: ${INTERVAL}, timeoutMs: ${TIMEOUT}, fall: ${FALL}, onFail: ${onFail} }`,
    "    targets:",
    ...[1, 2, 3].map((i) => `      - { fwmark: ${100 + i}, address: ${targetAddr(4, i)} }`),
    "",
  ].join("\n");
}

async function drainOrRemove(onFail: "drain" | "remove"): Promise<void> {
  const name = onFail === "drain" ? "hcd" : "hcr";
  await using host = await HostUnderTest.create({ name, topology: { echoTcpPorts: [ECHO_PORT] } });
  const topo = host.topo;
  host.write(config(name, onFail));
  await using agent = RunAgent.start(host);
  assert.ok(await agent.waitLine(/ ready: /, 60_000), agent.lines().join("\n"));

  const flows = topo.flows(4, 40, 20000);
  const conns = await openConns(topo, VIP[4], ECHO_PORT, flows);
  try {
    const orig = conns.first.targets;
    assert.ok(!orig.includes(""), `connections must open: ${JSON.stringify(conns.first)}`);
    const onT2 = orig.filter((x) => x === "t2").length;
    assert.ok(onT2 > 0, `no connection on t2: ${JSON.stringify(tally(orig))}`);

    // t2's checks (from the lb's address on its link) are reset; its clients' connections are not touched
    const from = agent.lines().length;
    await topo.exec(topo.ns.targets[1], [
      ..."iptables -w -A INPUT -p tcp --syn -s 10.213.2.254 --dport".split(" "),
      String(TCP_PORT),
      ..."-j REJECT --reject-with tcp-reset".split(" "),
    ]);
    const down = await agent.waitLine(/target web\/102 down/, DOWN_WAIT, from);
    assert.ok(down, agent.lines().slice(from).join("\n"));
    assert.match(down!, onFail === "drain" ? /; drained \(weight 0\) / : /; removed from the table /);
    const rows = await host.rows("web");
    if (onFail === "drain") assert.equal(rows.get(102)?.weight, 0, `drain: ${JSON.stringify([...rows])}`);
    else assert.equal(rows.has(102), false, `remove: ${JSON.stringify([...rows])}`);

    // established connections: drain keeps all where they are; remove moves t2's (reset by their new target)
    const r1 = await conns.round(1);
    const want = onFail === "drain" ? orig : orig.map((x) => (x === "t2" ? "" : x));
    assert.deepEqual(r1.targets, want, `after ${onFail}: ${JSON.stringify(r1.errnos)}`);

    // 200 new connections from 200 clients: all answered, none by t2
    const r = await topo.client.tcp(4, topo.flows(4, 200, 30000));
    const seen = tally(r.targets.map((t) => t[0]));
    assert.equal(seen[""], undefined, `unanswered: ${JSON.stringify(seen)} ${r.errors}`);
    assert.deepEqual(Object.keys(seen).sort(), ["t1", "t3"], JSON.stringify(seen));

    const r2 = await conns.round(2);
    assert.deepEqual(r2.targets, want, "after the new connections");
    console.log(
      `health figure: onFail ${onFail} with a connection table: of ${flows.length} established connections ` +
        `(${onT2} on t2), ${r2.targets.filter((x, i) => x === orig[i]).length} stayed on their target; ` +
        `200 new connections: ${JSON.stringify(seen)}`,
    );
  } finally {
    await conns.stop();
  }
}

Deno.test({
  name: "e2e health: onFail drain with a connection table: established connections stay, new ones avoid it",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => drainOrRemove("drain"),
});

Deno.test({
  name: "e2e health: onFail remove with a connection table: the target's established connections move",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => drainOrRemove("remove"),
});
