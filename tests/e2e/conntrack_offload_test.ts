/**
 * End-to-end test of connection offload (docs/conntrack.md, "Offload"): the
 * rules of control/offload_rules.ts ahead of the NFQUEUE rule in the lb
 * netns, `nfqlb lb` with a connection table, and `ct-set --offload` setting
 * the kernel connmark of a UDP flow over ctnetlink. Offloaded, the flow's
 * datagrams still reach its target but no longer enter the queue (the
 * kernel's id_sequence of the queue stands still); `--no-offload` queues
 * them again. Counts only, no timing. Needs root (skipped otherwise).
 */
import assert from "node:assert/strict";
import type { Flow } from "./agent.ts";
import { ctList, skipUnlessRoot } from "./checks.ts";
import { type Family, FWBASE, Topology, UDP_PORT, VIP } from "./topology.ts";
import { OFFLOAD_COMMENT, offloadRules } from "../../control/offload_rules.ts";

const notRoot = skipUnlessRoot();
const QUEUE = 4;

/** The packets handed to our queue so far (kernel counter of the lb netns). */
async function queued(topo: Topology): Promise<number> {
  const q = (await topo.queueStats()).get(QUEUE);
  assert.ok(q, `queue ${QUEUE} not bound in the lb netns`);
  return q.seq;
}

/** `n` UDP request/replies of one flow; asserts every one was answered, by one target; returns it. */
async function udpTarget(topo: Topology, fam: Family, flow: Flow, n: number): Promise<string> {
  const r = await topo.udp(fam, [flow], n);
  const names = new Set(r.targets[0]);
  assert.equal(names.size, 1, `ipv${fam} ${flow.src}:${flow.sport}: answered by ${[...names]}`);
  const [name] = names;
  assert.notEqual(name, "", `ipv${fam} ${flow.src}:${flow.sport}: not answered (${r.errors})`);
  return name;
}

Deno.test({
  name:
    "e2e conntrack offload: offloaded flows bypass the queue and keep their target; --no-offload queues again",
  ignore: notRoot,
  async fn(t) {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: QUEUE } });
    await topo.nfqlb(["init", `--shm=${topo.shm}`, "--M=997", "--N=32", "--conntrack=4096"]);
    await topo.activate(...topo.fwmarks);
    const rules = offloadRules({ vips: [VIP[4], VIP[6]] });
    // the topology appended the NFQUEUE rules; ours are inserted ahead of them
    for (const argv of rules.add) await topo.exec(topo.ns.lb, argv);
    await topo.startLb();

    await t.step("the offload rules sit ahead of the NFQUEUE rule, both families", async () => {
      for (const ipt of ["iptables", "ip6tables"]) {
        const lines = (await topo.exec(topo.ns.lb, [ipt, "-w", "-t", "mangle", "-S", "PREROUTING"])).stdout
          .split("\n").filter((l) => l.startsWith("-A PREROUTING"));
        assert.equal(lines.length, 3, lines.join("\n"));
        assert.match(lines[0], /connmark ! --mark 0x0 .*nfqlb-offload.* -j CONNMARK --restore-mark/);
        assert.match(lines[1], /connmark ! --mark 0x0 .*nfqlb-offload.* -j ACCEPT/);
        assert.match(lines[2], /-j NFQUEUE --queue-num 4/);
      }
    });

    for (const fam of [4, 6] as Family[]) {
      const flow: Flow = { src: topo.clientAddrs(fam)[1], sport: 41000 + fam };
      const ct = ["--src=" + (fam === 4 ? `${flow.src}:${flow.sport}` : `[${flow.src}]:${flow.sport}`)];
      ct.push(fam === 4 ? `--dst=${VIP[4]}:${UDP_PORT}` : `--dst=[${VIP[6]}]:${UDP_PORT}`, "--proto=udp");
      const entry = async () => {
        const e = (await ctList(topo)).find((x) => x.src === flow.src && x.sport === flow.sport);
        assert.ok(e, `ipv${fam}: no ct-list entry for ${flow.src}:${flow.sport}`);
        return e;
      };

      await t.step(`ipv${fam}: offloaded, a UDP flow keeps its target and skips the queue`, async () => {
        const q0 = await queued(topo);
        const target = await udpTarget(topo, fam, flow, 10);
        assert.equal(await queued(topo) - q0, 10, "before offload every datagram is queued");
        const before = await entry();
        assert.equal(`t${before.fwmark - FWBASE}`, target, "the table holds the target that answered");
        assert.deepEqual(before.flags, []);

        const r = await topo.nfqlb(["ct-set", `--shm=${topo.shm}`, ...ct, "--offload"]);
        assert.equal(r.stderr, "", "the kernel knows the flow: no note");
        assert.deepEqual((await entry()).flags, ["offloaded"]);

        const q1 = await queued(topo);
        assert.equal(await udpTarget(topo, fam, flow, 20), target, "same target while offloaded");
        assert.equal(await queued(topo) - q1, 0, "no datagram of the offloaded flow was queued");
        assert.equal((await entry()).packets, before.packets, "the lb saw none of them");
      });

      await t.step(`ipv${fam}: --fwmark on an offloaded flow moves it in the kernel too`, async () => {
        const e = await entry();
        const other = topo.fwmarks.find((m) => m !== e.fwmark)!;
        await topo.nfqlb(["ct-set", `--shm=${topo.shm}`, ...ct, `--fwmark=${other}`]);
        const q1 = await queued(topo);
        assert.equal(await udpTarget(topo, fam, flow, 10), `t${other - FWBASE}`);
        assert.equal(await queued(topo) - q1, 0, "still offloaded");
        // back where Maglev put it, for the next step
        await topo.nfqlb(["ct-set", `--shm=${topo.shm}`, ...ct, `--fwmark=${e.fwmark}`]);
      });

      await t.step(`ipv${fam}: --no-offload queues the flow again, same target`, async () => {
        const target = `t${(await entry()).fwmark - FWBASE}`;
        const r = await topo.nfqlb(["ct-set", `--shm=${topo.shm}`, ...ct, "--no-offload"]);
        assert.equal(r.stderr, "");
        assert.deepEqual((await entry()).flags, []);
        const q1 = await queued(topo);
        const p1 = (await entry()).packets;
        assert.equal(await udpTarget(topo, fam, flow, 15), target);
        assert.equal(await queued(topo) - q1, 15, "every datagram is queued again");
        assert.equal((await entry()).packets - p1, 15, "and counted by the lb");
      });
    }

    await t.step(
      "ipv4, ingress only (DSR: the lb's conntrack never sees a reply): UDP still bypasses",
      async () => {
        // the topology routes the targets' replies through the lb netns; untracking them leaves conntrack
        // the ingress direction only, as on an lb that replies never pass
        const rule = ["-t", "raw", "PREROUTING", "-s", `${VIP[4]}/32`, "-j", "NOTRACK"];
        const ipt = (op: string) => ["iptables", "-w", ...rule.slice(0, 2), op, ...rule.slice(2)];
        await topo.exec(topo.ns.lb, ipt("-I"));
        try {
          const flow: Flow = { src: topo.clientAddrs(4)[2], sport: 41010 };
          const ct = [`--src=${flow.src}:${flow.sport}`, `--dst=${VIP[4]}:${UDP_PORT}`, "--proto=udp"];
          const target = await udpTarget(topo, 4, flow, 5);
          const r = await topo.nfqlb(["ct-set", `--shm=${topo.shm}`, ...ct, "--offload"]);
          assert.equal(r.stderr, "", "the kernel tracks the flow from its first datagram");
          const q1 = await queued(topo);
          assert.equal(await udpTarget(topo, 4, flow, 10), target);
          assert.equal(await queued(topo) - q1, 0);
        } finally {
          await topo.exec(topo.ns.lb, ipt("-D"));
        }
      },
    );

    await t.step(
      "--offload of a flow the kernel does not track: exit 0, a note, the entry flagged",
      async () => {
        const ct = [`--src=10.213.0.11:42000`, `--dst=${VIP[4]}:${UDP_PORT}`, "--proto=udp"];
        const r = await topo.nfqlb([
          "ct-set",
          `--shm=${topo.shm}`,
          ...ct,
          `--fwmark=${FWBASE + 1}`,
          "--offload",
        ]);
        assert.equal(r.code, 0);
        assert.equal(
          r.stderr,
          `nfqlb: no kernel conntrack entry for udp 10.213.0.11:42000 -> ${
            VIP[4]
          }:${UDP_PORT}; offload takes ` +
            "effect when ct-set --offload is repeated after the kernel tracks the connection\n",
        );
        const e = (await ctList(topo)).find((x) => x.src === "10.213.0.11" && x.sport === 42000);
        assert.deepEqual(e?.flags, ["offloaded"]);
        // --no-offload of it needs no kernel entry and says nothing
        const n = await topo.nfqlb(["ct-set", `--shm=${topo.shm}`, ...ct, "--no-offload"]);
        assert.equal(n.stderr, "");
      },
    );

    await t.step("the delete argv remove every offload rule", async () => {
      for (const argv of rules.delete) await topo.exec(topo.ns.lb, argv);
      for (const ipt of ["iptables", "ip6tables"]) {
        const s = (await topo.exec(topo.ns.lb, [ipt, "-w", "-t", "mangle", "-S"])).stdout;
        assert.ok(!s.includes(OFFLOAD_COMMENT), s);
        assert.match(s, /-j NFQUEUE/);
      }
    });
  },
});
