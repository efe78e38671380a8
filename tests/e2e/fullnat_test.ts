/**
 * End-to-end test of full NAT (`mode: fullnat`, docs/config.md "Modes") as
 * an operator runs it, with `nfqlb apply / status / teardown -f FILE` in the
 * lb netns of a topology whose targets have no route back to the client
 * network: their only routes are those of their own link, on which the LB's
 * target-side address lies. The targets serve on their own address and port
 * 6000 (no VIP). With `mode: nat` (DNAT only) they get the client's source
 * and cannot answer; with `mode: fullnat` the same flows are answered, IPv4
 * and IPv6, UDP and TCP, spread over every target, and iptables counters in
 * the targets show that every packet they got came from the LB's SNAT
 * address, none from a client; so do a client's on the LB itself (hook
 * output). Teardown leaves the lb netns as it was before the first apply
 * (iptables, ip rules, routes of both families). Needs root.
 */
import assert from "node:assert/strict";
import { type Family, targetAddr, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import { HostUnderTest } from "../harness/host.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { pidRunning } from "../harness/process.ts";
import type { ProbeResult } from "../harness/agent/types.ts";
import type { Topology } from "../harness/topology.ts";
import { assertAllAnswered } from "./checks.ts";

const ignore = skipUnlessRoot();

/** The port the targets serve on; the VIP's ports are DNATed to it. */
const NAT_PORT = 6000;
const NAME = "e2e-fullnat";

/** The LB's address on target i's link (1-based): where that target's replies go. */
function lbSide(fam: Family, i: number): string {
  return fam === 4 ? `10.213.${i}.254` : `fd13:${i}::254`;
}

/**
 * The config: one service on both VIPs (UDP_PORT, TCP_PORT), three targets
 * DNATed to their port NAT_PORT. fullnat: target 1 takes the service's snat
 * (the LB's address on its link), targets 2 and 3 name their own (the LB's
 * address on theirs).
 */
function config(mode: "nat" | "fullnat"): string {
  const full = mode === "fullnat";
  const target = (i: number) => {
    const own = full && i > 1 ? `, snat: { ipv4: ${lbSide(4, i)}, ipv6: "${lbSide(6, i)}" }` : "";
    return `      - { fwmark: ${100 + i}, address: [${targetAddr(4, i)}, "${
      targetAddr(6, i)
    }"], port: ${NAT_PORT}, mode: ${mode}${own} }`;
  };
  return [
    "version: 1",
    `name: ${NAME}`,
    "services:",
    "  - name: web",
    `    vips: [${VIP[4]}, "${VIP[6]}"]`,
    `    ports: [{ protocol: udp, port: ${UDP_PORT} }, { protocol: tcp, port: ${TCP_PORT} }]`,
    ...(full ? [`    snat: { ipv4: ${lbSide(4, 1)}, ipv6: "${lbSide(6, 1)}" }`] : []),
    "    targets:",
    ...[1, 2, 3].map(target),
    // output: clients on the LB itself too
    "dataplane: { hooks: [prerouting, output] }",
    "",
  ].join("\n");
}

/** Removes the targets' default routes: what remains is their own link (with the LB's address on it). */
async function cutRoutesToClients(topo: Topology): Promise<void> {
  for (const ns of topo.ns.targets) {
    await topo.exec(ns, ["ip", "route", "del", "default"]);
    await topo.exec(ns, ["ip", "-6", "route", "del", "default"]);
  }
}

/**
 * Counting rules in every target's INPUT (no verdict): packets to NAT_PORT
 * from the LB's address on the target's link (`e2e-fn-snat`) and from any
 * other source (`e2e-fn-other`), per family and protocol.
 */
async function addSourceCounters(topo: Topology): Promise<void> {
  for (const [k, ns] of topo.ns.targets.entries()) {
    for (const fam of [4, 6] as Family[]) {
      const ipt = fam === 4 ? "iptables" : "ip6tables";
      for (const proto of ["udp", "tcp"]) {
        for (const [neg, tag] of [[[], "e2e-fn-snat"], [["!"], "e2e-fn-other"]] as const) {
          await topo.exec(ns, [
            ...[ipt, "-w", "-A", "INPUT", "-p", proto, "--dport", String(NAT_PORT)],
            ...[...neg, "-s", lbSide(fam, k + 1), "-m", "comment", "--comment", tag],
          ]);
        }
      }
    }
  }
}

/** Packets counted per target (t1..): snat = from the LB's link address, other = from anywhere else. */
async function sourceCounts(topo: Topology): Promise<{ snat: number; other: number }[]> {
  return await Promise.all(topo.ns.targets.map(async (ns) => {
    const n = { snat: 0, other: 0 };
    for (const ipt of ["iptables", "ip6tables"]) {
      for (const line of (await topo.exec(ns, [ipt, "-w", "-nvxL", "INPUT"])).stdout.split("\n")) {
        const packets = Number(line.trim().split(/\s+/)[0]);
        if (line.includes("/* e2e-fn-snat */")) n.snat += packets;
        if (line.includes("/* e2e-fn-other */")) n.other += packets;
      }
    }
    return n;
  }));
}

/** The change lines of apply's output (without its last, summary line). */
function changeLines(lines: string[]): string[] {
  return lines.slice(0, -1);
}

Deno.test({
  name:
    "e2e fullnat: targets without a route to the clients answer UDP/TCP to the VIP (IPv4, IPv6) from behind SNAT",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: NAME });
    const { topo } = h;
    const names = await topo.startNatServers(NAT_PORT);
    await cutRoutesToClients(topo);
    await addSourceCounters(topo);
    // a local client's first route lookup needs a route to the VIP (a real LB has its default route);
    // the lb's mark and the DNAT then re-route the packets to a target
    await topo.exec(topo.ns.lb, ["ip", "route", "add", `${VIP[4]}/32`, "via", topo.clientAddrs(4)[0]]);
    await topo.exec(topo.ns.lb, ["ip", "-6", "route", "add", `${VIP[6]}/128`, "via", topo.clientAddrs(6)[0]]);
    const before = await h.snapshot();

    await t.step("the targets have no route to the client network, only their link to the LB", async () => {
      for (const ns of topo.ns.targets) {
        for (const [f, client] of [["-4", topo.clientAddrs(4)[0]], ["-6", topo.clientAddrs(6)[0]]]) {
          const r = await topo.exec(ns, ["ip", f, "route", "get", client], { allowFail: true });
          assert.notEqual(r.code, 0, `${ns} routes to ${client}: ${r.stdout}`);
          assert.match(r.stderr, /unreachable/i);
        }
      }
    });

    await t.step("nat (DNAT only): the targets get the client's source and cannot answer", async () => {
      h.write(config("nat"));
      await h.applyOk();
      const c0 = await sourceCounts(topo);
      for (const fam of [4, 6] as Family[]) {
        const r = await topo.client.udp(fam, topo.flows(fam, 6, 24000), 1, 300);
        assert.deepEqual(r.targets.map((x) => x[0]), Array(6).fill(""), `ipv${fam}: no reply`);
      }
      const c1 = await sourceCounts(topo);
      const other = c1.reduce((a, c, k) => a + c.other - c0[k].other, 0);
      const snat = c1.reduce((a, c, k) => a + c.snat - c0[k].snat, 0);
      assert.ok(other >= 12, `the 12 requests reached the targets from the clients (${other})`);
      assert.equal(snat, 0);
    });

    const pid = h.pid();
    await t.step(
      "fullnat: apply adds exactly the SNAT chain, its rules and jumps (dry run first)",
      async () => {
        h.write(config("fullnat"));
        const snap = await h.snapshot();
        const dryOut = await h.applyOk("--dry-run");
        const dry = changeLines(dryOut);
        assert.equal(dryOut.at(-1), `dry run: ${dry.length} changes, none made`);
        assert.deepEqual(await h.snapshot(), snap, "a dry run changes nothing");
        const lines = changeLines(await h.applyOk());
        assert.deepEqual(lines, dry, "apply does what the dry run said");
        assert.ok(
          lines.every((l) => l.startsWith("+ ")),
          `only additions (the DNAT rules stay):\n${lines.join("\n")}`,
        );
        for (const [fam, ipt] of [[4, "iptables"], [6, "ip6tables"]] as const) {
          const mine = lines.filter((l) => l.startsWith(`+ ${ipt} `));
          assert.equal(mine.length, 5, mine.join("\n"));
          assert.ok(mine.includes(`+ ${ipt} -w -t nat -N NFQLB-${NAME}-SN`), mine.join("\n"));
          for (const [k, fw] of topo.fwmarks.entries()) {
            assert.equal(
              mine.filter((l) =>
                l.includes(`-A NFQLB-${NAME}-SN -m mark --mark ${fw} `) &&
                l.endsWith(`-j SNAT --to-source ${lbSide(fam, k + 1)}`)
              ).length,
              1,
              `SNAT of ${fw}: ${mine.join("\n")}`,
            );
          }
          assert.equal(
            mine.filter((l) =>
              l.includes(`-A POSTROUTING -m conntrack --ctstate DNAT --ctorigdst ${VIP[fam]} `) &&
              l.endsWith(`-j NFQLB-${NAME}-SN`)
            ).length,
            1,
            mine.join("\n"),
          );
        }
        assert.equal(h.pid(), pid, "the lb keeps running (its options did not change)");
      },
    );

    for (const fam of [4, 6] as Family[]) {
      await t.step(
        `ipv${fam}: UDP and TCP to the VIP reach every target, which sees only the LB's source`,
        async () => {
          const c0 = await sourceCounts(topo);
          // the client's sockets are connected to VIP:port: only replies un-NATed back to the VIP count
          assertAllAnswered((await topo.client.udp(fam, topo.flows(fam, 60, 25000))).targets, names, "udp");
          assertAllAnswered((await topo.client.tcp(fam, topo.flows(fam, 60, 26000))).targets, names, "tcp");
          const c1 = await sourceCounts(topo);
          c1.forEach((c, k) => {
            assert.ok(c.snat > c0[k].snat, `${names[k]} got packets from ${lbSide(fam, k + 1)}`);
            assert.equal(c.other, c0[k].other, `${names[k]} got no packet from another source`);
          });
        },
      );
    }

    await t.step(
      "a client on the LB itself (hook output) gets its UDP answered by every target",
      async () => {
        for (const fam of [4, 6] as Family[]) {
          const src = fam === 4 ? "10.213.0.254" : "fd13::254";
          const flows = Array.from({ length: 30 }, (_, i) => ({ src, sport: 27000 + i }));
          const c0 = await sourceCounts(topo);
          const r = await topo.agent<ProbeResult>(topo.ns.lb, {
            cmd: "udp",
            dst: VIP[fam],
            port: UDP_PORT,
            flows,
          });
          assertAllAnswered(r.targets, names, `local udp ipv${fam}`);
          const c1 = await sourceCounts(topo);
          c1.forEach((c, k) => {
            assert.ok(c.snat > c0[k].snat, `${names[k]} got packets from ${lbSide(fam, k + 1)}`);
            assert.equal(c.other, c0[k].other, `${names[k]}: only the SNAT source`);
          });
        }
      },
    );

    await t.step("a second apply changes nothing", async () => {
      const snap = await h.snapshot();
      assert.deepEqual(await h.applyOk(), [`nothing to change: the host matches ${h.file}`]);
      assert.deepEqual(await h.snapshot(), snap);
    });

    await t.step("status -f: the host matches, with each target's source addresses", async () => {
      const r = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      for (const [k, fw] of topo.fwmarks.entries()) {
        const i = k + 1;
        assert.ok(
          r.stdout.includes(
            `target ${fw}  weight 1  fullnat port ${NAT_PORT} ${targetAddr(4, i)} ${targetAddr(6, i)} snat ${
              lbSide(4, i)
            } ${lbSide(6, i)}`,
          ),
          r.stdout,
        );
      }
      assert.match(r.stdout, /the host matches/);
    });

    await t.step("teardown: the lb netns is as before the first apply, the lb is gone", async () => {
      const r = await h.nfqlb(["teardown", "-f", h.file]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.ok(r.stdout.split("\n").some((l) => l.includes(`NFQLB-${NAME}-SN`)), r.stdout);
      assert.deepEqual(await h.snapshot(), before);
      assert.ok(pid === undefined || !pidRunning(pid), "the lb stopped");
    });
  },
});
