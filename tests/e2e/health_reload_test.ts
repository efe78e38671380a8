/**
 * End-to-end test of health state across reloads of `nfqlb run`
 * (docs/health.md "What stays the operator's"), and of /ready during the
 * first round: three DSR targets checked by tcp on the VIP.
 *
 * - /ready is 503 while the first round is under way (t3's first check is a
 *   command that takes 2 s), 200 once it is done;
 * - t1's server stops: t1 leaves the table;
 * - a reload that changes t2's check but not t1's: t1 stays down and out
 *   (no re-rise, its check count goes on), t2's state restarts (its count
 *   starts again), /ready stays 200;
 * - a reload that changes t1's check: t1's state restarts (up, as
 *   configured) and it goes down again after `fall` checks.
 *
 * Counts and log lines, not timing. Needs root.
 */
import assert from "node:assert/strict";
import { targetAddr, TCP_PORT, VIP } from "../harness/addresses.ts";
import { HostUnderTest } from "../harness/host.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { waitUntil } from "../harness/process.ts";
import { RunAgent } from "../harness/run_agent.ts";
import { parseExposition, sampleValue } from "../helpers/prom_text.ts";

const ignore = skipUnlessRoot();
const INTERVAL = 500, TIMEOUT = 300, FALL = 2;
const WAIT = 2 * (FALL * INTERVAL + TIMEOUT + 500);

function config(own: Record<number, string>): string {
  return [
    "version: 1",
    "name: hcl",
    "services:",
    "  - name: web",
    `    vips: [${VIP[4]}]`,
    `    health: { type: tcp, port: ${TCP_PORT}, intervalMs: ${INTERVAL}, timeoutMs: ${TIMEOUT}, fall: ${FALL} }`,
    "    targets:",
    ...[1, 2, 3].map((i) =>
      `      - { fwmark: ${100 + i}, address: ${targetAddr(4, i)}${own[i] ? `, health: ${own[i]}` : ""} }`
    ),
    "",
  ].join("\n");
}

Deno.test({
  name:
    "e2e health: /ready after the first round; a reload keeps the state of unchanged targets, restarts changed ones",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using host = await HostUnderTest.create({ name: "hcl" });
    const topo = host.topo;
    const slow = '{ type: exec, command: [sleep, "2"], intervalMs: 3000, timeoutMs: 2500 }';
    host.write(config({ 3: slow }));
    await using agent = RunAgent.start(host);
    assert.ok(await agent.waitLine(/health: checking /, 60_000), agent.lines().join("\n"));
    const early = await agent.get("/ready");
    assert.equal(early.status, 503, early.body);
    assert.match(early.body, /not ready: health: the first round of checks is under way/);
    assert.ok(await agent.waitLine(/ ready: /, 30_000), agent.lines().join("\n"));
    assert.equal((await agent.get("/ready")).status, 200);

    const rows = async () => [...(await host.rows("web")).keys()].sort();
    const checks = async () => {
      const m = parseExposition((await agent.get("/metrics")).body);
      const n = (fw: number) =>
        ["pass", "fail"].reduce(
          (a, result) =>
            a +
            (sampleValue(m, "nfqlb_health_checks_total", { table: "web", target: String(fw), result }) ?? 0),
          0,
        );
      return {
        101: n(101),
        102: n(102),
        up101: sampleValue(m, "nfqlb_target_up", { table: "web", target: "101" }),
      };
    };

    await topo.stopServer(1);
    assert.ok(await waitUntil(async () => !(await rows()).includes(101), WAIT, 50), agent.lines().join("\n"));
    // a few more checks of t2, so that a restart of its count shows
    await new Promise((r) => setTimeout(r, 4 * INTERVAL));
    const before = await checks();
    assert.ok(before[102] >= 6, JSON.stringify(before));

    // reload 1: t2's check changes (its timeout), t1's does not
    let from = agent.lines().length;
    host.write(config({ 2: "{ type: tcp, timeoutMs: 250 }", 3: slow }));
    assert.ok(await agent.waitLine(/ notice +reloaded /, 30_000, from), agent.lines().slice(from).join("\n"));
    const after = await checks();
    assert.ok(after[102] < before[102], `t2's state restarts: ${before[102]} -> ${after[102]} checks`);
    assert.ok(after[101] >= before[101], `t1's state is kept: ${before[101]} -> ${after[101]} checks`);
    assert.equal(after.up101, 0);
    // t1 stays out: polled over 3 intervals, never back; no "up" line
    for (let k = 0; k < 6; k++) {
      assert.ok(!(await rows()).includes(101), `t1 back in the table after the reload (poll ${k})`);
      await new Promise((r) => setTimeout(r, INTERVAL / 2));
    }
    assert.ok(
      !agent.lines().slice(from).some((l) => /target web\/101 (up|down)/.test(l)),
      agent.lines().join("\n"),
    );
    assert.equal((await agent.get("/ready")).status, 200);

    // reload 2: t1's check changes: it starts up again (as configured) and goes down after fall checks
    from = agent.lines().length;
    host.write(config({ 1: "{ type: tcp, timeoutMs: 250 }", 2: "{ type: tcp, timeoutMs: 250 }", 3: slow }));
    assert.ok(await agent.waitLine(/ notice +reloaded /, 30_000, from), agent.lines().slice(from).join("\n"));
    const down = await agent.waitLine(/target web\/101 down after 2 failed checks/, WAIT, from);
    assert.ok(down, agent.lines().slice(from).join("\n"));
    assert.ok(!(await rows()).includes(101));
    console.log(
      `health figure: reload keeps t1 down (${before[101]} -> ${after[101]} checks); changed: ${down}`,
    );
  },
});
