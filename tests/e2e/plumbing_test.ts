/**
 * End-to-end tests of the kernel plumbing (host/plumbing) on the real
 * kernel, in private network namespaces: apply / re-apply / edit / teardown
 * leave exactly the expected diff and nothing behind; a failing apply rolls
 * back; one id's teardown leaves another's alone; nft queue detection; and
 * real traffic through `nfqlb lb` with the plumbing installed by
 * applyPlumbing, in DSR mode (IPv4, IPv6) and NAT mode with port translation
 * (IPv4, IPv6). The lifecycle spec has full NAT targets too (their SNAT chain
 * and POSTROUTING jumps come and go with the rest); full NAT with traffic is
 * tests/e2e/fullnat_test.ts. Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import { NfqlbError } from "../../core/errors.ts";
import {
  applyPlumbing,
  type ApplyResult,
  detectNftQueue,
  planPlumbing,
  type PlumbingSpec,
  probeNftQueue,
  readPlumbing,
  statusPlumbing,
  teardownPlumbing,
} from "../../host/plumbing/mod.ts";
import { type Family, targetAddr, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import { stripTopologyPlumbing } from "../harness/host.ts";
import { deleteNamespace, skipUnlessRoot, snapshot, sysctl } from "../harness/netns.ts";
import { run } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { assertAllAnswered } from "./checks.ts";

const ignore = skipUnlessRoot();

let nsCount = 0;

/** A bare namespace with a veth whose far side is up, so gateways 10.99.x.y / fd99::x are on-link. */
async function bareNamespace(): Promise<{ ns: string; [Symbol.asyncDispose](): Promise<void> }> {
  // nfqe-<pid>-<n>-...: the topology's stale sweep removes it if this process dies first
  const ns = `nfqe-${Deno.pid}-${900 + ++nsCount}-plumb`;
  const dispose = () => deleteNamespace(ns);
  try {
    await run(["ip", "netns", "add", ns]);
    // no link-local addresses: they would appear (with their routes) at some moment between snapshots
    await sysctl(ns, ["net.ipv6.conf.default.addr_gen_mode=1"], run);
    const batch = [
      "link set up dev lo",
      "link add d0 type veth peer name d1",
      "link set up dev d0",
      "link set up dev d1",
      "addr add 10.99.0.254/16 dev d0",
      "-6 addr add fd99::254/64 dev d0 nodad",
    ];
    for (const l of batch) await run(["ip", "-n", ns, ...l.split(" ")]);
  } catch (e) {
    await dispose();
    throw e;
  }
  return { ns, [Symbol.asyncDispose]: dispose };
}

/** Rules and routes that are not ours, to prove we leave them alone (one ip rule even has our protocol). */
async function foreignObjects(ns: string): Promise<void> {
  const lines = [
    "iptables -w -t mangle -A PREROUTING -d 10.0.0.9/32 -m comment --comment foreign -j MARK --set-mark 5",
    "iptables -w -t nat -A POSTROUTING -m comment --comment foreign -j RETURN",
    "ip6tables -w -t mangle -A PREROUTING -d fd00::9/128 -j MARK --set-mark 5",
    "ip6tables -w -t nat -A POSTROUTING -j RETURN",
    "ip rule add fwmark 999 table 999 protocol 110",
    "ip route add default via 10.99.9.9 table 999 proto 110",
    "ip -6 rule add fwmark 999 table 999",
  ];
  for (const l of lines) await run(["ip", "netns", "exec", ns, ...l.split(" ")]);
}

const SPEC: PlumbingSpec = {
  id: "e2e-web",
  queue: "0:1",
  bypass: true,
  hooks: ["prerouting", "output"],
  offload: true,
  vips: [
    { address: "10.0.0.1", ports: [{ protocol: "udp", port: 5000 }, { protocol: "tcp", port: 80 }] },
    { address: "fd00::1/128" },
  ],
  targets: [
    { fwmark: 101, address: "10.99.1.1", mode: "dsr", table: 101 },
    { fwmark: 102, address: "10.99.1.2", mode: "dsr", table: 102 },
    { fwmark: 103, address: "10.99.1.3", port: 8080, mode: "nat", table: 103 },
    { fwmark: 105, address: "10.99.1.5", mode: "fullnat", table: 105, snat: "10.99.0.254" },
    { fwmark: 101, address: "fd99::1", mode: "dsr", table: 101 },
    { fwmark: 103, address: "fd99::3", port: 8080, mode: "nat", table: 103 },
    { fwmark: 105, address: "fd99::5", port: 8080, mode: "fullnat", table: 105, snat: "fd99::254" },
  ],
};

Deno.test({
  name: "e2e plumbing: nft queue detection says no on this kernel (iptables NFQUEUE is used)",
  ignore,
  async fn() {
    const p = await probeNftQueue();
    assert.equal(p.queue, false, p.reason);
    assert.equal(await detectNftQueue(), false);
    assert.match(p.reason, /nft/);
  },
});

Deno.test({
  name: "e2e plumbing: apply, re-apply, edit, status, teardown in a fresh netns: exact diffs, nothing left",
  ignore,
  async fn(t) {
    await using bare = await bareNamespace();
    const { ns } = bare;
    await foreignObjects(ns);
    const before = await snapshot(ns);
    const o = { netns: ns };
    const plan = planPlumbing(SPEC);

    await t.step("dry run adds nothing and lists every object", async () => {
      const r = await applyPlumbing(SPEC, { ...o, dryRun: true });
      assert.deepEqual(r, { added: plan.map((p) => p.line), removed: [], unchanged: 0 });
      assert.deepEqual(await snapshot(ns), before);
    });

    await t.step("apply adds every object; each one is in the kernel", async () => {
      const r = await applyPlumbing(SPEC, o);
      assert.deepEqual(r, { added: plan.map((p) => p.line), removed: [], unchanged: 0 });
      for (const p of plan.filter((x) => x.check)) {
        const c = await run(["ip", "netns", "exec", ns, ...p.check!], { allowFail: true });
        assert.equal(c.code, 0, `${p.line}: ${c.stderr}`);
      }
      const rules4 = (await run(["ip", "-n", ns, "rule", "show"])).stdout;
      const rules6 = (await run(["ip", "-n", ns, "-6", "rule", "show"])).stdout;
      assert.match(rules4, /fwmark 0x65 lookup 101 proto 110/);
      assert.match(rules4, /fwmark 0x66 lookup 102 proto 110/);
      assert.doesNotMatch(rules4, /fwmark 0x67/, "NAT targets route by the main table");
      assert.match(rules6, /fwmark 0x65 lookup 101 proto 110/);
      assert.match(
        (await run(["ip", "-n", ns, "route", "show", "table", "101"])).stdout,
        /default via 10.99.1.1/,
      );
      assert.match(
        (await run(["ip", "-n", ns, "-6", "route", "show", "table", "101"])).stdout,
        /default via fd99::1/,
      );
      const st = await statusPlumbing(SPEC, o);
      assert.deepEqual(st, { present: plan.map((p) => p.line), missing: [], extra: [] });
    });

    await t.step("re-apply changes nothing and says so", async () => {
      const snap = await snapshot(ns);
      assert.deepEqual(await applyPlumbing(SPEC, o), { added: [], removed: [], unchanged: plan.length });
      assert.deepEqual(await snapshot(ns), snap);
    });

    const edited: PlumbingSpec = {
      ...SPEC,
      vips: [
        { address: "10.0.0.1", ports: [{ protocol: "udp", port: 5001 }, { protocol: "tcp", port: 80 }] },
        SPEC.vips[1],
      ],
      targets: SPEC.targets.filter((x) => x.fwmark !== 102),
    };
    await t.step("edit (a target removed, a port changed): exactly that diff, chain order kept", async () => {
      const want = planPlumbing(edited);
      const oldKeys = new Set(plan.map((p) => p.key)), newKeys = new Set(want.map((p) => p.key));
      const dry = await applyPlumbing(edited, { ...o, dryRun: true });
      const r = await applyPlumbing(edited, o);
      assert.deepEqual(r, dry);
      assert.deepEqual(r.added, want.filter((p) => !oldKeys.has(p.key)).map((p) => p.line));
      assert.equal(r.added.length, 1);
      assert.match(r.added[0], /-p udp --dport 5001 .*NFQUEUE/);
      assert.equal(r.removed.length, 4, r.removed.join("\n"));
      assert.equal(plan.filter((p) => !newKeys.has(p.key)).length, 4);
      for (
        const re of [/-D NFQLB-e2e-web -d 10.0.0.1\/32 -p udp -m udp --dport 5000 /, /rule del fwmark 102/]
      ) {
        assert.ok(r.removed.some((l) => re.test(l)), `${re} in\n${r.removed.join("\n")}`);
      }
      assert.ok(r.removed.some((l) => l.startsWith("ip route del default via 10.99.1.2 table 102")));
      assert.ok(r.removed.some((l) => l.includes("dsr,102,102,10.99.1.2")));
      assert.equal(r.unchanged, want.length - 1);
      // the new queue rule went after the offload rules and before the tcp one
      const chain =
        (await run(["ip", "netns", "exec", ns, "iptables", "-w", "-t", "mangle", "-S", "NFQLB-e2e-web"]))
          .stdout.split("\n").filter((l) => l.startsWith("-A"));
      assert.deepEqual(chain.map((l) => /-j (\S+)/.exec(l)?.[1]), [
        "CONNMARK",
        "ACCEPT",
        "NFQUEUE",
        "NFQUEUE",
      ]);
      assert.match(chain[2], /--dport 5001/);
      assert.deepEqual(await statusPlumbing(edited, o), {
        present: want.map((p) => p.line),
        missing: [],
        extra: [],
      });
    });

    await t.step("status against the old spec: the edit's objects are missing / extra", async () => {
      const st = await statusPlumbing(SPEC, o);
      assert.equal(st.missing.length, 4);
      assert.equal(st.extra.length, 1);
      assert.equal(st.present.length, plan.length - 4);
    });

    await t.step("another id's teardown leaves ours alone", async () => {
      const other: PlumbingSpec = {
        id: "e2e-other",
        queue: "5",
        bypass: false,
        hooks: ["prerouting"],
        vips: [{ address: "10.0.0.2" }],
        targets: [{ fwmark: 201, address: "10.99.2.1", mode: "dsr", table: 201 }],
      };
      const r = await applyPlumbing(other, o);
      assert.equal(r.added.length, planPlumbing(other).length);
      const gone = await teardownPlumbing(other.id, o);
      assert.equal(gone.length, r.added.length);
      assert.equal((await statusPlumbing(edited, o)).missing.length, 0);
    });

    await t.step("teardown removes exactly ours: the namespace equals its state before apply", async () => {
      const n = (await readPlumbing(SPEC.id, o)).length;
      const gone = await teardownPlumbing(SPEC.id, o);
      assert.equal(gone.length, n);
      assert.deepEqual(await readPlumbing(SPEC.id, o), []);
      assert.deepEqual(await snapshot(ns), before);
      assert.deepEqual(await teardownPlumbing(SPEC.id, o), [], "a second teardown has nothing to do");
    });
  },
});

Deno.test({
  name: "e2e plumbing: a failing apply removes what it added and names the failing command",
  ignore,
  async fn() {
    await using bare = await bareNamespace();
    const { ns } = bare;
    await foreignObjects(ns);
    const before = await snapshot(ns);
    // 10.55.0.1 is not on-link: `ip route add default via 10.55.0.1` fails after the chains and rules exist
    const spec: PlumbingSpec = {
      ...SPEC,
      targets: [...SPEC.targets, { fwmark: 104, address: "10.55.0.1", mode: "dsr", table: 104 }],
    };
    await assert.rejects(applyPlumbing(spec, { netns: ns }), (e: unknown) => {
      assert.ok(e instanceof NfqlbError, String(e));
      assert.match(
        e.message,
        /^plumbing: ip route add default via 10.55.0.1 table 104 proto 110 \(netns .*\) failed/,
      );
      assert.match(e.message, /removed the \d+ object\(s\) this run had added$/);
      assert.ok(!e.message.includes("\n"), e.message);
      return true;
    });
    assert.deepEqual(await readPlumbing(spec.id, { netns: ns }), []);
    assert.deepEqual(await snapshot(ns), before);
  },
});

/**
 * A spec sending UDP_PORT and TCP_PORT of both VIPs to the topology's targets
 * (both families) in `mode`; NAT targets get `port`.
 */
function trafficSpec(topo: Topology, id: string, mode: "dsr" | "nat", port?: number): PlumbingSpec {
  const ports = [{ protocol: "udp", port: UDP_PORT }, { protocol: "tcp", port: TCP_PORT }] as const;
  return {
    id,
    queue: "2",
    bypass: false,
    hooks: ["prerouting"],
    vips: [{ address: VIP[4], ports: [...ports] }, { address: VIP[6], ports: [...ports] }],
    targets: ([4, 6] as Family[]).flatMap((fam) =>
      topo.fwmarks.map((fw, k) => ({ fwmark: fw, address: targetAddr(fam, k + 1), port, mode, table: fw }))
    ),
  };
}

/**
 * Applies `spec` in the lb netns, runs the lb, and checks that 60 UDP and 60
 * TCP flows per family are answered by every one of `names`; then tears the
 * plumbing down and checks the netns is as before. Returns the apply result.
 */
async function carryTraffic(
  t: Deno.TestContext,
  topo: Topology,
  spec: PlumbingSpec,
  names: string[],
  sportBase: number,
): Promise<ApplyResult> {
  const netns = topo.ns.lb;
  const before = await snapshot(netns);
  const r = await applyPlumbing(spec, { netns });
  assert.equal(r.added.length, planPlumbing(spec).length);
  await topo.nfqlb.initTargets();
  await topo.nfqlb.startLb();
  for (const fam of [4, 6] as Family[]) {
    await t.step(
      `ipv${fam}: UDP and TCP flows to the VIP reach every target (${names.join(", ")})`,
      async () => {
        assertAllAnswered((await topo.client.udp(fam, topo.flows(fam, 60, sportBase))).targets, names, "udp");
        assertAllAnswered(
          (await topo.client.tcp(fam, topo.flows(fam, 60, sportBase + 1000))).targets,
          names,
          "tcp",
        );
      },
    );
  }
  await topo.nfqlb.stopLb();
  await teardownPlumbing(spec.id, { netns });
  assert.deepEqual(await snapshot(netns), before);
  return r;
}

Deno.test({
  name: "e2e plumbing: DSR installed by applyPlumbing carries UDP/TCP to every target (IPv4, IPv6)",
  ignore,
  async fn(t) {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await stripTopologyPlumbing(topo);
    // offload on: the raw rule untracking TCP SYNs (DSR only) must not hurt TCP, and goes with teardown
    const spec = { ...trafficSpec(topo, "e2e-dsr", "dsr"), offload: true };
    await carryTraffic(t, topo, spec, topo.targetNames, 20000);
  },
});

Deno.test({
  name: "e2e plumbing: NAT with port translation carries UDP/TCP to the targets' real port (IPv4, IPv6)",
  ignore,
  async fn(t) {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await stripTopologyPlumbing(topo);
    const NAT_PORT = 6000;
    // NAT targets do not own the VIP: they serve on their own address and port, under new names;
    // the client's sockets are connected to VIP:port, so only replies from the VIP count
    const names = await topo.startNatServers(NAT_PORT);
    const r = await carryTraffic(t, topo, trafficSpec(topo, "e2e-nat", "nat", NAT_PORT), names, 22000);
    assert.ok(!r.added.some((l) => l.startsWith("ip ")), "NAT adds no ip rule or route");
  },
});
