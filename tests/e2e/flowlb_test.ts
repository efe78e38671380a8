/**
 * End-to-end tests of `nfqlb flowlb` on the real kernel, set up like a
 * Meridio frontend: `flowlb --promiscuous_ping --queue=0:1` behind iptables
 * `--queue-balance 0:1`, one target table (shm) per stream, flows that pick
 * the stream by protocol and destination port on one IPv4 and one IPv6 VIP,
 * and a `--nolb_fwmark` for what no flow matches:
 *
 * ```
 *  stream A: t1 t2 (101 102)   flow a: prio 10, tcp+udp, dports 5000-5003, dsts VIPs
 *  stream B: t3 t4 (103 104)   flow b: prio 20, udp,     dport 6000 (later 6001), dsts VIPs
 *  no flow:  fwmark 99 -> table 99 -> veth nolb0; counted (and dropped) in the lb's FORWARD
 * ```
 *
 * Every target serves UDP 5000, 6000, 6001, 7000 and TCP 5003, 6000, and
 * counts in its INPUT chain what arrives per port (and echo requests), so
 * traffic that a flow should not let through would be answered and counted
 * if the lb delivered it. Checks assert on what arrived where, never on
 * timing. (The reference harness's functional checks with `LB_CMD=flowlb`:
 * func_checks_test.ts.)
 *
 * Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import type { ListedFlow } from "../../core/flow/render.ts";
import { type Family, FWBASE, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow, StreamFlowResult, StreamResult } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { w, waitUntil } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey, type Proto, tally } from "../harness/traffic.ts";

const notRoot = skipUnlessRoot();
const FAMILIES: Family[] = [4, 6];

/** Ports: flow a (UDP_PORT, TCP_PORT), flow b (B_OLD, then B_NEW), and ones no flow matches. */
const B_OLD = 6000, B_NEW = 6001, NOFLOW_UDP = 7000, NOFLOW_TCP = 6000;
const NOLB = 99;
const STREAM_A = ["t1", "t2"], STREAM_B = ["t3", "t4"];
const DSTS = `--dsts=${VIP[4]}/32,${VIP[6]}/128`;
/** Counted ports per target (iptables comment e2e-<proto>-<port>). */
const COUNTED: [Proto, number][] = [
  ["udp", UDP_PORT],
  ["udp", B_OLD],
  ["udp", B_NEW],
  ["udp", NOFLOW_UDP],
  ["tcp", NOFLOW_TCP],
];

/** A flow with its destination (VIP of its family) and port. */
function at(fam: Family, port: number, flows: Flow[]): Flow[] {
  return flows.map((f) => ({ ...f, dst: VIP[fam], dport: port }));
}

/** Everything a flowlb test needs around a Topology. */
class Frontend {
  readonly topo: Topology;
  readonly shmA: string;
  readonly shmB: string;

  constructor(topo: Topology) {
    this.topo = topo;
    this.shmA = `${topo.prefix}-streamA`;
    this.shmB = `${topo.prefix}-streamB`;
  }

  /** Stream tables, nolb route and counters, per-port counters in the targets, flowlb. */
  async setup(): Promise<void> {
    const t = this.topo;
    const lb = t.ns.lb;
    await t.nfqlb.run(["init", `--shm=${this.shmA}`]);
    await t.nfqlb.run(["activate", `--shm=${this.shmA}`, `${FWBASE + 1}`, `${FWBASE + 2}`]);
    await t.nfqlb.run(["init", `--shm=${this.shmB}`]);
    await t.nfqlb.run(["activate", `--shm=${this.shmB}`, `${FWBASE + 3}`, `${FWBASE + 4}`]);
    // nolb: a route to a veth that leads nowhere, counted and dropped on the way
    await t.exec(lb, w("ip link add nolb0 type veth peer name nolb1"));
    await t.exec(lb, w("ip link set nolb1 up"));
    await t.exec(lb, w("ip link set nolb0 up"));
    for (const v of ["-4", "-6"]) {
      await t.exec(lb, w(`ip ${v} rule add fwmark ${NOLB} table ${NOLB}`));
      await t.exec(lb, w(`ip ${v} route add default dev nolb0 table ${NOLB}`));
    }
    for (const ipt of ["iptables", "ip6tables"]) {
      await t.exec(
        lb,
        w(`${ipt} -w -A FORWARD -m mark --mark ${NOLB} -m comment --comment e2e-nolb -j DROP`),
      );
    }
    await Promise.all(t.ns.targets.map(async (ns) => {
      for (
        const [ipt, icmp] of [["iptables", "-p icmp --icmp-type"], [
          "ip6tables",
          "-p ipv6-icmp --icmpv6-type",
        ]]
      ) {
        for (const [proto, port] of COUNTED) {
          await t.exec(
            ns,
            w(`${ipt} -w -A INPUT -p ${proto} --dport ${port} -m comment --comment e2e-${proto}-${port}`),
          );
        }
        await t.exec(ns, w(`${ipt} -w -A INPUT ${icmp} echo-request -m comment --comment e2e-ping`));
      }
    }));
    await this.startFlowLb();
  }

  async startFlowLb(): Promise<void> {
    // opt-in persistence (ours), so that the restart step below finds its flows again
    await this.topo.nfqlb.startFlowLb([
      "--promiscuous_ping",
      `--nolb_fwmark=${NOLB}`,
      "--qlength=1024",
      `--flow_store=${this.topo.workDir}/flows.json`,
    ]);
  }

  /** Sum of the packet counters of rules commented `comment` in `chain` of `ns`, both families. */
  async count(ns: string, chain: string, comment: string): Promise<number> {
    let n = 0;
    for (const ipt of ["iptables", "ip6tables"]) {
      const r = await this.topo.exec(ns, [ipt, "-w", "-nvxL", chain]);
      for (const line of r.stdout.split("\n")) {
        if (line.includes(`/* ${comment} */`)) n += Number(line.trim().split(/\s+/)[0]);
      }
    }
    return n;
  }

  /** Packets given the nolb fwmark (counted in the lb's FORWARD chain). */
  async nolb(): Promise<number> {
    return await this.count(this.topo.ns.lb, "FORWARD", "e2e-nolb");
  }

  /** Per-target INPUT counter `comment`: name → packets. */
  async atTargets(comment: string): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    await Promise.all(this.topo.ns.targets.map(async (ns, i) => {
      out[`t${i + 1}`] = await this.count(ns, "INPUT", comment);
    }));
    return out;
  }

  /** `nfqlb <args>` in the lb netns (flow address and shm dir of the topology); stdout. */
  async nfqlb(...args: string[]): Promise<string> {
    return (await this.topo.nfqlb.run(args)).stdout;
  }

  async flowSet(name: string, ...args: string[]): Promise<void> {
    const out = await this.nfqlb("flow-set", `--name=${name}`, ...args);
    assert.equal(out, "OK\n", `flow-set ${name}`);
  }

  async setA(): Promise<void> {
    await this.flowSet(
      "a",
      `--target=${this.shmA}`,
      "--prio=10",
      "--protocols=tcp,udp",
      DSTS,
      "--dports=5000-5003",
    );
  }

  async setB(dports: number): Promise<void> {
    await this.flowSet(
      "b",
      `--target=${this.shmB}`,
      "--prio=20",
      "--protocols=udp",
      DSTS,
      `--dports=${dports}`,
    );
  }

  async list(): Promise<ListedFlow[]> {
    const text = await this.nfqlb("flow-list");
    try {
      return JSON.parse(text) as ListedFlow[];
    } catch (e) {
      throw new Error(`flow-list is not JSON (${e}):\n${text}`);
    }
  }

  async listOne(name: string): Promise<ListedFlow> {
    const text = await this.nfqlb("flow-list", `--name=${name}`);
    try {
      return JSON.parse(text) as ListedFlow;
    } catch (e) {
      throw new Error(`flow-list --name=${name} is not JSON (${e}):\n${text}`);
    }
  }

  async names(): Promise<string[]> {
    return JSON.parse(await this.nfqlb("flow-list-names")) as string[];
  }

  /** One request per flow (each flow carries its dst/dport); the target per flow ("" = none). */
  async probe(proto: Proto, flows: Flow[], waitMs = 2000): Promise<string[]> {
    const r = await this.topo.agent<{ targets: string[][]; errors: number[] }>(this.topo.ns.cli, {
      cmd: proto,
      dst: VIP[4],
      port: UDP_PORT,
      flows,
      waitMs,
    });
    return r.targets.map((x) => x[0]);
  }

  /**
   * `n` flows per family to `port`: every one answered, only by `want`, and
   * each of `want` gets at least a quarter. Returns the flows and targets.
   */
  async spread(
    proto: Proto,
    port: number,
    want: string[],
    n: number,
    sportBase: number,
  ): Promise<{ flows: Flow[]; targets: string[] }> {
    const flows = FAMILIES.flatMap((fam) => at(fam, port, this.topo.flows(fam, n, sportBase)));
    const targets = await this.probe(proto, flows);
    FAMILIES.forEach((fam, k) => {
      const mine = targets.slice(k * n, (k + 1) * n);
      const c = tally(mine);
      const what = `ipv${fam} ${proto} ${port}`;
      const lost = flows.slice(k * n, (k + 1) * n).filter((_, i) => mine[i] === "").map(flowKey);
      assert.equal(
        lost.length,
        0,
        `${what}: ${lost.length}/${n} unanswered, e.g. ${lost.slice(0, 5).join(" ")}`,
      );
      assert.deepEqual(Object.keys(c).sort(), [...want].sort(), `${what}: answered by ${JSON.stringify(c)}`);
      for (const name of want) {
        assert.ok(c[name] >= n / 4, `${what}: spread over ${want.join(",")}: ${JSON.stringify(c)}`);
      }
    });
    return { flows, targets };
  }

  /**
   * `n` flows per family to `port` that must get no answer: none reaches a
   * target (INPUT counter `counter`), and every packet gets the nolb mark.
   */
  async unmatched(proto: Proto, port: number, counter: string, n: number, sportBase: number): Promise<void> {
    const flows = FAMILIES.flatMap((fam) => at(fam, port, this.topo.flows(fam, n, sportBase)));
    const nolb0 = await this.nolb(), at0 = await this.atTargets(counter);
    const targets = await this.probe(proto, flows, 300);
    const answered = flows.map((f, i) => `${flowKey(f)}->${targets[i]}`).filter((_, i) => targets[i] !== "");
    assert.deepEqual(answered, [], `${proto} ${port}: answered although no flow matches`);
    const at1 = await this.atTargets(counter);
    const reached = Object.fromEntries(Object.keys(at1).map((k) => [k, at1[k] - at0[k]]));
    assert.deepEqual(
      reached,
      Object.fromEntries(this.topo.targetNames.map((k) => [k, 0])),
      `${proto} ${port}: packets reached targets`,
    );
    // UDP: one packet per flow; TCP: at least one SYN per flow
    const marked = (await this.nolb()) - nolb0;
    if (proto === "udp") assert.equal(marked, flows.length, `${proto} ${port}: packets with the nolb fwmark`);
    else {assert.ok(
        marked >= flows.length,
        `${proto} ${port}: ${marked} packets with the nolb fwmark < ${flows.length}`,
      );}
  }

  /** 3 echo requests from 8 sources per family: all answered, and they reached only `want`. */
  async ping(want: string[]): Promise<void> {
    const srcs = FAMILIES.flatMap((fam) => this.topo.clientAddrs(fam).slice(0, 8));
    const before = await this.atTargets("e2e-ping");
    const r = await this.topo.client.ping(srcs, 3, 1500);
    const bad = srcs.map((s, i) => `${s}:${r.replies[i]}`).filter((_, i) => r.replies[i] !== 3);
    assert.deepEqual(bad, [], `echo replies per source (of 3; errno ${r.errors.join(",")})`);
    const after = await this.atTargets("e2e-ping");
    const d = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
    const total = Object.values(d).reduce((a, b) => a + b, 0);
    assert.equal(total, srcs.length * 3, `echo requests at the targets: ${JSON.stringify(d)}`);
    const elsewhere = Object.keys(d).filter((k) => d[k] > 0 && !want.includes(k));
    assert.deepEqual(
      elsewhere,
      [],
      `echo requests reached ${JSON.stringify(d)}, want only ${want.join(",")}`,
    );
  }
}

/** A flow's answered/lost pattern in a stream, e.g. "AAALL" summarised. */
function pattern(f: StreamFlowResult): string {
  return `sent=${f.sent} answered=${f.answered} A[${f.firstAnswered}..${f.lastAnswered}] L[${f.firstLost}..${f.lastLost}] ${
    JSON.stringify(f.byTarget)
  }`;
}

/** The flow's probes were answered first, then lost (at least one of each; no answer after a loss). */
function answeredThenLost(f: StreamFlowResult): boolean {
  return f.answered >= 1 && f.firstAnswered === 0 && f.lastAnswered === f.answered - 1 &&
    f.firstLost === f.answered && f.lastLost === f.sent - 1;
}

/** The flow's probes were lost first, then answered (at least one of each; no loss after an answer). */
function lostThenAnswered(f: StreamFlowResult): boolean {
  const lost = f.sent - f.answered;
  return lost >= 1 && f.answered >= 1 && f.firstLost === 0 && f.lastLost === lost - 1 &&
    f.firstAnswered === lost && f.lastAnswered === f.sent - 1;
}

/** The definitions of flow-list, without the counters. */
function definitions(list: ListedFlow[]): Omit<ListedFlow, "matches_count">[] {
  return list.map(({ matches_count: _, ...def }) => def);
}

Deno.test({
  name: "e2e flowlb: Meridio-like frontend: flows by protocol and port pick the stream, nolb, ping, " +
    "flow-set/flow-delete under traffic, matches_count, restart with --flow_store keeps the flows",
  ignore: notRoot,
  async fn(t) {
    await using topo = await Topology.create({
      steering: { mode: "nfqueue", balance: [0, 1] },
      targets: 4,
      extraUdpPorts: [B_OLD, B_NEW, NOFLOW_UDP],
      extraTcpPorts: [NOFLOW_TCP],
    });
    const fe = new Frontend(topo);
    await fe.setup();
    const before: Record<string, { flows: Flow[]; targets: string[] }> = {};

    await t.step("flow-set a and b: flow-list shows them in priority order, matches_count 0", async () => {
      await fe.setA();
      await fe.setB(B_OLD);
      assert.deepEqual(await fe.names(), ["b", "a"]);
      const list = await fe.list();
      assert.deepEqual(list.map((f) => [f.name, f.matches_count]), [["b", 0], ["a", 0]]);
      const a = list[1];
      assert.deepEqual(
        {
          protocols: a.protocols,
          dests: a.dests,
          dports: a.dports,
          user_ref: a.user_ref,
          priority: a.priority,
        },
        {
          protocols: ["tcp", "udp"],
          dests: [`::ffff:${VIP[4]}/128`, `${VIP[6]}/128`],
          dports: ["5000-5003"],
          user_ref: fe.shmA,
          priority: 10,
        },
      );
    });

    await t.step(
      "IPv4/IPv6: each flow's traffic lands only on its stream's targets, spread, both queues",
      async () => {
        const q0 = await topo.queueStats();
        before.a = await fe.spread("udp", UDP_PORT, STREAM_A, 100, 20000);
        before.aTcp = await fe.spread("tcp", TCP_PORT, STREAM_A, 50, 21000);
        before.b = await fe.spread("udp", B_OLD, STREAM_B, 100, 22000);
        const q1 = await topo.queueStats();
        const pkts = [0, 1].map((q) => (q1.get(q)?.seq ?? 0) - (q0.get(q)?.seq ?? 0));
        assert.ok(pkts[0] > 0 && pkts[1] > 0, `packets per queue: q0=${pkts[0]} q1=${pkts[1]}`);
      },
    );

    await t.step(
      "IPv4/IPv6: traffic no flow matches gets the nolb fwmark and reaches no target",
      async () => {
        await fe.unmatched("udp", NOFLOW_UDP, `e2e-udp-${NOFLOW_UDP}`, 10, 23000);
        await fe.unmatched("udp", B_NEW, `e2e-udp-${B_NEW}`, 4, 23100);
        // flow b is UDP only
        await fe.unmatched("tcp", NOFLOW_TCP, `e2e-tcp-${NOFLOW_TCP}`, 4, 23200);
      },
    );

    await t.step("IPv4/IPv6: ping to the VIPs is answered (promiscuous ping, first flow: b)", async () => {
      await fe.ping(STREAM_B);
    });

    let countA = 0;
    await t.step("flow-list: matches_count grew with the traffic", async () => {
      const c = Object.fromEntries((await fe.list()).map((f) => [f.name, f.matches_count]));
      // requests per flow: a 2x100 UDP + 2x50 TCP connections (>= 3 packets each); b 2x100 UDP + 48 pings
      assert.ok(c.a >= 200 + 3 * 100, `matches_count a=${c.a}`);
      assert.ok(c.b >= 200 + 48, `matches_count b=${c.b}`);
      countA = c.a;
    });

    await t.step(
      "flow-set b with a changed port under traffic: old port stops, new port starts, a loses nothing",
      async () => {
        const steady = FAMILIES.flatMap((fam) => at(fam, UDP_PORT, topo.flows(fam, 6, 24000)));
        const steadyTargets = await fe.probe("udp", steady);
        assert.ok(steadyTargets.every((x) => STREAM_A.includes(x)), `flow a on ${steadyTargets}`);
        const oldFlows = FAMILIES.flatMap((fam) =>
          at(fam, B_OLD, topo.flows(fam, 1, 24100, topo.clientAddrs(fam).slice(1)))
        );
        const newFlows = FAMILIES.flatMap((fam) =>
          at(fam, B_NEW, topo.flows(fam, 1, 24200, topo.clientAddrs(fam).slice(2)))
        );
        const streams = await Promise.all([
          topo.client.startStream(4, steady, { pps: 200, waitMs: 3000 }),
          topo.client.startStream(4, oldFlows, { pps: 50, waitMs: 1500 }),
          topo.client.startStream(4, newFlows, { pps: 50, waitMs: 1500 }),
        ]);
        let results: StreamResult[] = [];
        try {
          const new0 = await fe.atTargets(`e2e-udp-${B_NEW}`);
          await fe.setB(B_NEW);
          // from here on only old-port probes get the nolb mark (and at most one new-port probe in flight)
          const nolb0 = await fe.nolb();
          // let the new port be answered a few times and the old one be refused a few times
          const newSeen = () => fe.atTargets(`e2e-udp-${B_NEW}`).then((n) => n.t3 + n.t4 - new0.t3 - new0.t4);
          const moved = await waitUntil(
            async () => (await newSeen()) >= 4 && (await fe.nolb()) - nolb0 >= 3,
            30_000,
            200,
          );
          assert.ok(
            moved,
            `after flow-set: new port reached targets ${await newSeen()}x, nolb ${
              (await fe.nolb()) - nolb0
            }x`,
          );
        } finally {
          results = await Promise.all(streams.map((s) => s.stop()));
        }
        const [st, old, neu] = results;
        const lostSteady = st.flows.map((f, i) => ({ f, i })).filter(({ f, i }) =>
          f.answered !== f.sent || Object.keys(f.byTarget).join() !== steadyTargets[i]
        );
        assert.ok(st.probes >= steady.length * 2, `only ${st.probes} probes on flow a`);
        assert.deepEqual(
          lostSteady.map(({ f, i }) => `${flowKey(steady[i])} (${steadyTargets[i]}) ${pattern(f)}`),
          [],
          "flow a probes lost or moved during the change of flow b",
        );
        old.flows.forEach((f, i) => {
          assert.ok(answeredThenLost(f), `old port ${flowKey(oldFlows[i])}: ${pattern(f)}`);
          assert.ok(Object.keys(f.byTarget).every((x) => STREAM_B.includes(x)), `old port: ${pattern(f)}`);
        });
        neu.flows.forEach((f, i) => {
          assert.ok(lostThenAnswered(f), `new port ${flowKey(newFlows[i])}: ${pattern(f)}`);
          assert.ok(Object.keys(f.byTarget).every((x) => STREAM_B.includes(x)), `new port: ${pattern(f)}`);
        });
        // and afterwards, on fresh flows
        await fe.spread("udp", B_NEW, STREAM_B, 40, 24300);
        await fe.unmatched("udp", B_OLD, `e2e-udp-${B_OLD}`, 4, 24400);
        const def = await fe.listOne("b");
        assert.deepEqual(def.dports, [`${B_NEW}`]);
      },
    );

    await t.step("a redefined flow's matches_count restarts at 0; the others keep counting", async () => {
      const b0 = await fe.listOne("b");
      assert.ok(b0.matches_count > 0, `b matches_count before the redefinition: ${b0.matches_count}`);
      await fe.setB(B_NEW);
      const c = Object.fromEntries((await fe.list()).map((f) => [f.name, f.matches_count]));
      assert.equal(c.b, 0, "matches_count of the redefined flow b");
      assert.ok(c.a > countA, `matches_count a=${c.a}, was ${countA} before the traffic on flow a`);
    });

    await t.step(
      "flow-delete b: its traffic gets the nolb fwmark; a still works; ping goes to a",
      async () => {
        assert.equal(await fe.nfqlb("flow-delete", "--name=b"), "OK\n");
        assert.deepEqual(await fe.names(), ["a"]);
        assert.equal(await fe.nfqlb("flow-list", "--name=b"), "");
        await fe.unmatched("udp", B_NEW, `e2e-udp-${B_NEW}`, 6, 25000);
        await fe.spread("udp", UDP_PORT, STREAM_A, 40, 25100);
        await fe.ping(STREAM_A);
        await fe.setB(B_OLD);
        assert.deepEqual(await fe.names(), ["b", "a"]);
      },
    );

    await t.step(
      "restart (SIGTERM, start again, --flow_store): flows kept, traffic balanced as before without flow-set",
      async () => {
        assert.ok(before.a && before.b, "needs the spread step");
        const names0 = await fe.names();
        const defs0 = definitions(await fe.list());
        const stopped = await topo.nfqlb.stopLb();
        assert.equal(stopped?.status.code, 0, `flowlb exit on SIGTERM:\n${stopped?.stderr}`);
        await fe.startFlowLb();
        assert.deepEqual(await fe.names(), names0, "flow-list-names after the restart");
        assert.deepEqual(definitions(await fe.list()), defs0, "flow-list after the restart");
        for (const [what, b] of Object.entries({ a: before.a, b: before.b })) {
          const after = await fe.probe("udp", b.flows);
          const moved = b.flows.map((f, i) =>
            `${flowKey(f)}:${f.dport} ${b.targets[i]}->${after[i] || "lost"}`
          )
            .filter((_, i) => after[i] !== b.targets[i]);
          assert.deepEqual(moved, [], `flow ${what}: flows not on their target after the restart`);
        }
        await fe.spread("tcp", TCP_PORT, STREAM_A, 30, 26000);
        await fe.ping(STREAM_B);
        const lb = topo.nfqlb.proc;
        assert.ok(lb && !/restore/.test(lb.stderr), `flowlb restore problems:\n${lb?.stderr}`);
        const end = await topo.nfqlb.stopLb();
        assert.equal(end?.status.code, 0, `flowlb exit on SIGTERM:\n${end?.stderr}`);
      },
    );
  },
});
