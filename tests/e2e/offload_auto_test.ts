/**
 * End-to-end tests of `--offload=auto` (docs/offload.md) with real traffic in
 * namespaces: the rules `nfqlb offload-rules` prints, fed to
 * `iptables-restore --noflush` in the lb netns in place of the topology's
 * NFQUEUE rule, and `nfqlb lb --offload=auto`. Each connection lands on the
 * target Maglev gives it (as without offload), and only its first packet(s)
 * reach the queue (the kernel's per-queue id_sequence). `deactivate` moves
 * offloaded connections (the lb deletes their kernel entries by mark), a
 * drain (weight 0) keeps them. DSR (replies untracked in the lb netns) and
 * NAT (a config applied with `dataplane.offload: auto`), IPv4 and IPv6, and
 * the printed rules are the installed ones (iptables-save in a netns fed
 * the printed text against the applied host). SCTP by crafted INITs (the lab
 * kernel has no SCTP sockets; the real-association case is skipped, its
 * reason logged). Per-target counters: queued + offloaded in `stats --all`
 * equal what each target netns received. Counts and sets only, no
 * timing. Needs root (skipped otherwise).
 */
import assert from "node:assert/strict";
import { type Family, targetAddr, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow, SizesResult } from "../harness/agent/types.ts";
import { HostUnderTest } from "../harness/host.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { maglevTargets, nfqlb } from "../harness/nfqlb.ts";
import { Topology } from "../harness/topology.ts";
import { assertAllAnswered } from "./checks.ts";
import { IPPROTO_SCTP, SOCK_STREAM, Socket } from "../harness/libc.ts";
import { httpGet } from "../harness/http_probe.ts";

const ignore = skipUnlessRoot();

/** Whether this kernel opens SCTP sockets (upstream Meridio runs SCTP; this lab's kernel may lack it). */
function sctpSupport(): string {
  try {
    Socket.open("127.0.0.1", SOCK_STREAM, IPPROTO_SCTP).close();
    return "supported, but the lab agent has no SCTP endpoints: the association case is left to crafted INITs";
  } catch (e) {
    return `not supported by this kernel (${
      e instanceof Error ? e.message : e
    }: CONFIG_IP_SCTP unset or no sctp module): the association case is skipped, crafted INITs stand in`;
  }
}
const QUEUE = 5;
const METRICS_PORT = 9465;
const FAMS: Family[] = [4, 6];

/** Packets handed to queue `q` so far in the lb netns (kernel counter). */
async function queued(topo: Topology, q = QUEUE): Promise<number> {
  const s = (await topo.queueStats()).get(q);
  assert.ok(s, `queue ${q} not bound in the lb netns`);
  return s.seq;
}

/** conntrack's insert_failed count in the lb netns (/proc/net/stat/nf_conntrack, summed over CPUs). */
async function insertFailed(topo: Topology): Promise<number> {
  const lines = (await topo.exec(topo.ns.lb, ["cat", "/proc/net/stat/nf_conntrack"])).stdout.trim().split(
    "\n",
  );
  const col = lines[0].trim().split(/\s+/).indexOf("insert_failed");
  return lines.slice(1).reduce((a, l) => a + parseInt(l.trim().split(/\s+/)[col], 16), 0);
}

/** `flows` with the VIP and port as their destination (for maglevTargets). */
function toVip(fam: Family, flows: Flow[], port: number): Flow[] {
  return flows.map((f) => ({ ...f, dst: VIP[fam], dport: port }));
}

/** The printed rules of one family (`nfqlb offload-rules`), as text. */
async function printed(args: string[]): Promise<string> {
  const r = await nfqlb(["offload-rules", ...args]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  return r.stdout;
}

/**
 * The lab with its own queue rule swapped for the rules `offload-rules` prints (both families, as a script
 * would pipe them into iptables-restore) and the target table made; the caller owns it (`await using`).
 */
async function offloadLab(): Promise<Topology> {
  const topo = await Topology.create({ steering: { mode: "nfqueue", queue: QUEUE } });
  try {
    await topo.setSteering(topo.steering, "-D"); // the printed rules queue instead
    await topo.nfqlb.initTargets();
    for (const fam of FAMS) {
      const text = await printed([`--vips=${VIP[fam]}`, `--queue=${QUEUE}`]);
      await topo.exec(topo.ns.lb, [fam === 4 ? "iptables-restore" : "ip6tables-restore", "--noflush"], {
        stdin: text,
      });
    }
    return topo;
  } catch (e) {
    await topo.teardown();
    throw e;
  }
}

/** Our rule lines (`-A`, tag nfqlb:<id>) of one family's iptables-save in netns `ns`, sorted, per table. */
async function savedRules(topo: Topology, ns: string, fam: Family, id: string, skipChain?: string) {
  const save = (await topo.exec(ns, [fam === 4 ? "iptables-save" : "ip6tables-save"])).stdout;
  const out: string[] = [];
  let table = "";
  for (const l of save.split("\n")) {
    if (l.startsWith("*")) table = l;
    if (!l.startsWith("-A ") || !l.includes(`nfqlb:${id} `)) continue;
    if (skipChain && l.startsWith(`-A ${skipChain} `)) continue;
    out.push(`${table} ${l}`);
  }
  return out.sort();
}

Deno.test({
  name: "e2e offload auto: same targets, first packets queued only, deactivate moves, drain keeps, DSR",
  ignore,
  async fn(t) {
    await using topo = await offloadLab();
    await topo.nfqlb.startLb(["--offload=auto"]);

    for (const fam of FAMS) {
      await t.step(
        `ipv${fam}: UDP, 10 request/replies per flow: Maglev's target, one queued datagram`,
        async () => {
          const flows = topo.flows(fam, 40, 30000 + fam * 1000);
          const q0 = await queued(topo);
          const r = await topo.client.udp(fam, flows, 10);
          const dq = await queued(topo) - q0;
          const want = await maglevTargets(topo, "udp", toVip(fam, flows, UDP_PORT));
          assert.deepEqual(
            r.targets.map((x) => [...new Set(x)]),
            want.map((w) => [w]),
            "each flow: its target",
          );
          // the first datagram of each flow decides; the other 9 are steered by the kernel
          assert.equal(dq, flows.length, `queued ${dq} of ${flows.length * 10}`);
        },
      );

      await t.step(
        `ipv${fam}: TCP connections: Maglev's target, at most SYN and first ACK queued`,
        async () => {
          const flows = topo.flows(fam, 30, 33000 + fam * 1000);
          const q0 = await queued(topo);
          const r = await topo.client.tcp(fam, flows, 1);
          const dq = await queued(topo) - q0;
          const want = await maglevTargets(topo, "tcp", toVip(fam, flows, TCP_PORT));
          assert.deepEqual(r.targets.map((x) => x[0]), want);
          assert.ok(dq <= 2 * flows.length, `queued ${dq} for ${flows.length} connections`);
        },
      );
    }

    // SCTP: conntrack tracks it (CONFIG_NF_CT_PROTO_SCTP), so an association is saved and restored like a
    // UDP flow; crafted INITs (raw sockets) need no SCTP stack on either end
    const sctp = sctpSupport();
    console.log(`SCTP sockets: ${sctp}`);
    await t.step({
      name: "SCTP association with real SCTP sockets",
      ignore: true, // reason logged: no SCTP endpoints in the lab (and this kernel may have no SCTP at all)
      fn: () => {},
    });
    for (const fam of FAMS) {
      await t.step(
        `ipv${fam}: SCTP (crafted INITs, 8 per port pair): Maglev's target, the first INIT queued, the rest steered`,
        async () => {
          const from = topo.clientAddrs(fam)[2];
          const pairs = Array.from({ length: 8 }, (_, i) => ({ sport: 41000 + fam * 100 + i, dport: 7777 }));
          const want = await maglevTargets(
            topo,
            "sctp",
            pairs.map((p) => ({ src: from, sport: p.sport, dst: VIP[fam], dport: p.dport })),
          );
          for (const [i, p] of pairs.entries()) {
            const before = await topo.counters("sctp");
            const q0 = await queued(topo);
            const ct0 = await insertFailed(topo);
            let got: Record<string, number> = {};
            const arrived = async (n: number) => {
              const deadline = Date.now() + 5000;
              do {
                const now = await topo.counters("sctp");
                got = Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (before[k] ?? 0)]));
              } while (Object.values(got).reduce((a, b) => a + b, 0) < n && Date.now() < deadline);
            };
            // the first INIT decides (its verdict saved in its kernel connection) before the others go: a
            // packet that raced its verdict would get a conntrack entry of its own, which clashes with the
            // first's at confirmation and is dropped (no clash resolution for SCTP; docs/offload.md "Limits")
            assert.equal((await topo.client.sctp(from, [p], 1)).sent, 1);
            await arrived(1);
            assert.equal((await topo.client.sctp(from, [p], 7)).sent, 7);
            await arrived(8);
            assert.deepEqual(
              Object.entries(got).filter(([, v]) => v > 0),
              [[want[i], 8]],
              `pair ${i}: every INIT at Maglev's target (conntrack insert_failed +${
                await insertFailed(topo) - ct0
              })`,
            );
            assert.equal(await queued(topo) - q0, 1, `pair ${i}: only the first INIT reached the queue`);
          }
        },
      );
    }

    await t.step("ICMP keeps today's handling: every echo request and error is queued", async () => {
      for (const fam of FAMS) {
        const src = topo.clientAddrs(fam)[5];
        const flow: Flow = { src, sport: 39000 + fam };
        await topo.client.udp(fam, [flow], 3); // an offloaded UDP flow the error is about
        let q0 = await queued(topo);
        const p = await topo.client.ping([src], 4);
        assert.equal(p.replies[0], 4, `ipv${fam}: pings answered`);
        assert.equal(await queued(topo) - q0, 4, `ipv${fam}: every echo request queued`);
        q0 = await queued(topo);
        const quoted = {
          vip: VIP[fam],
          vipPort: UDP_PORT,
          client: src,
          clientPort: flow.sport,
          proto: "udp" as const,
        };
        assert.equal((await topo.client.icmp(src, [quoted])).sent, 1);
        assert.equal(
          await queued(topo) - q0,
          1,
          `ipv${fam}: the ICMP error about an offloaded flow is queued`,
        );
      }
    });

    await t.step(
      "fragmented datagrams (reassembled by conntrack): whole, at their flow's Maglev target",
      async () => {
        const sizes = [100, 3000, 5000, 100];
        for (const fam of FAMS) {
          const flows = topo.flows(fam, 10, 38000 + fam * 100, topo.clientAddrs(fam).slice(1));
          const r = await topo.agent<SizesResult>(topo.ns.cli, {
            cmd: "sizes",
            dst: VIP[fam],
            port: UDP_PORT,
            flows,
            sizes,
          });
          const want = await maglevTargets(topo, "udp", toVip(fam, flows, UDP_PORT));
          for (const [i, rs] of r.replies.entries()) {
            assert.deepEqual(rs.map((x) => x.len), sizes, `ipv${fam} flow ${i}: whole (errno ${r.errors})`);
            assert.deepEqual([...new Set(rs.map((x) => x.target))], [want[i]], `ipv${fam} flow ${i}`);
          }
        }
      },
    );

    await t.step("ipv4: drain (weight 0) keeps offloaded flows, deactivate moves them", async () => {
      const flows = topo.flows(4, 60, 36000);
      const first = (await topo.client.udp(4, flows, 3)).targets.map((x) => x[0]);
      assertAllAnswered(first.map((x) => [x]), topo.targetNames, "udp");
      const [fw1, fw2] = topo.fwmarks;
      // drain t2: its offloaded flows stay (kernel connmark), new flows avoid it
      await topo.nfqlb.run(["activate", `--shm=${topo.shm}`, "--weight=0", String(fw2)]);
      let q0 = await queued(topo);
      const again = (await topo.client.udp(4, flows, 3)).targets.map((x) => x[0]);
      assert.deepEqual(again, first, "drain: every offloaded flow stays where it was");
      assert.equal(await queued(topo) - q0, 0, "and none of them was queued");
      const fresh = (await topo.client.udp(4, topo.flows(4, 60, 37000), 1)).targets.map((x) => x[0]);
      assert.ok(!fresh.includes("t2"), "new flows avoid the drained target");
      // deactivate t1: its flows move (their kernel entries are deleted), the others stay
      await topo.nfqlb.deactivate(fw1);
      const deadline = Date.now() + 5000; // the lb follows the table every 100 ms
      let moved: string[] = [];
      q0 = await queued(topo);
      while (Date.now() < deadline) {
        moved = (await topo.client.udp(4, flows, 1)).targets.map((x) => x[0]);
        if (!moved.includes("t1")) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(!moved.includes("t1"), "no flow stays on the deactivated target");
      for (const [i, was] of first.entries()) {
        if (was !== "t1") assert.equal(moved[i], was, `flow ${i} on ${was} stays`);
      }
      const n1 = first.filter((x) => x === "t1").length;
      assert.ok(n1 > 0, "some flows were on t1");
      assert.ok(await queued(topo) - q0 >= n1, "the moved flows were decided again in user space");
    });

    // DSR: untracking the targets' replies leaves conntrack the client's direction only
    const dsr = (op: string) =>
      FAMS.map((fam) => [
        fam === 4 ? "iptables" : "ip6tables",
        ...`-w -t raw ${op} PREROUTING -s ${VIP[fam]} -m comment --comment e2e-dsr -j NOTRACK`.split(" "),
      ]);
    for (const argv of dsr("-I")) await topo.exec(topo.ns.lb, argv);
    try {
      for (const fam of FAMS) {
        await t.step(`ipv${fam}: DSR: UDP and TCP on Maglev's targets, few packets queued`, async () => {
          const uf = topo.flows(fam, 30, 40000 + fam * 1000);
          let q0 = await queued(topo);
          const u = await topo.client.udp(fam, uf, 10);
          assert.equal(await queued(topo) - q0, uf.length, "one queued datagram per flow");
          const uw = await maglevTargets(topo, "udp", toVip(fam, uf, UDP_PORT));
          assert.deepEqual(u.targets.map((x) => [...new Set(x)]), uw.map((w) => [w]));
          const tf = topo.flows(fam, 30, 43000 + fam * 1000);
          q0 = await queued(topo);
          const r = await topo.client.tcp(fam, tf, 1);
          const dq = await queued(topo) - q0;
          assert.deepEqual(
            r.targets.map((x) => x[0]),
            await maglevTargets(topo, "tcp", toVip(fam, tf, TCP_PORT)),
          );
          assert.ok(dq <= 2 * tf.length, `queued ${dq} for ${tf.length} connections (SYN, first ACK)`);
        });
      }
    } finally {
      for (const argv of dsr("-D")) await topo.exec(topo.ns.lb, argv);
    }
  },
});

Deno.test({
  name: "e2e offload auto: NAT from a config (dataplane.offload: auto); printed rules are the installed ones",
  ignore,
  async fn(t) {
    const NAT_PORT = 6000;
    await using h = await HostUnderTest.create({ name: "e2e-ofl" });
    const { topo } = h;
    const names = await topo.startNatServers(NAT_PORT);
    const target = (i: number) =>
      `      - { fwmark: ${100 + i}, address: [${targetAddr(4, i)}, "${
        targetAddr(6, i)
      }"], port: ${NAT_PORT}, mode: nat }`;
    h.write([
      "version: 1",
      "name: e2e-ofl",
      "dataplane: { queue: 2, offload: auto }",
      "services:",
      "  - name: web",
      `    vips: [${VIP[4]}, "${VIP[6]}"]`,
      "    targets:",
      ...[1, 2, 3].map(target),
      "",
    ].join("\n"));
    const lines = await h.applyOk();
    await t.step("apply starts lb --offload=auto and installs the save rule per family", () => {
      assert.ok(lines.some((l) => /^\+ start lb .*--offload=auto/.test(l)), lines.join("\n"));
      assert.equal(
        lines.filter((l) => /POSTROUTING .*CONNMARK --save-mark/.test(l)).length,
        2,
        lines.join("\n"),
      );
    });
    await t.step("status -f: the host matches (the save rules read back as installed)", async () => {
      const r = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout.trimEnd().split("\n").at(-1), `the host matches ${h.file}`);
    });
    for (const fam of FAMS) {
      await t.step(`ipv${fam}: NAT: UDP and TCP reach every target, few packets queued`, async () => {
        const q0 = await queued(topo, 2);
        const uf = topo.flows(fam, 60, 50000 + fam * 1000);
        assertAllAnswered((await topo.client.udp(fam, uf, 5)).targets, names, "udp");
        const q1 = await queued(topo, 2);
        assert.equal(q1 - q0, uf.length, "one queued datagram per flow");
        const tf = topo.flows(fam, 40, 53000 + fam * 1000);
        assertAllAnswered((await topo.client.tcp(fam, tf)).targets, names, "tcp");
        // NAT keeps the SYN tracked: it alone is queued
        const dq = await queued(topo, 2) - q1;
        assert.ok(dq <= tf.length, `queued ${dq} for ${tf.length} connections`);
      });
      await t.step(
        `ipv${fam}: offload-rules --nat prints exactly the installed queue and offload rules`,
        async () => {
          const ns = `${topo.prefix}-print${fam}`;
          await topo.sh(["ip", "netns", "add", ns]);
          try {
            const text = await printed([`--vips=${VIP[fam]}`, "--queue=2", "--id=e2e-ofl", "--nat"]);
            await topo.exec(ns, [fam === 4 ? "iptables-restore" : "ip6tables-restore", "--noflush"], {
              stdin: text,
            });
            const want = await savedRules(topo, ns, fam, "e2e-ofl");
            // the host has the NAT and DNAT rules besides (nat table, not printed)
            const have = (await savedRules(topo, topo.ns.lb, fam, "e2e-ofl")).filter((l) =>
              !l.startsWith("*nat ")
            );
            assert.deepEqual(have, want);
            assert.ok(want.length >= 5, want.join("\n"));
          } finally {
            await topo.sh(["ip", "netns", "del", ns], { allowFail: true });
          }
        },
      );
    }
    await t.step("teardown removes every rule of the config, the save rules included", async () => {
      const r = await h.nfqlb(["teardown", "-f", h.file]);
      assert.equal(r.code, 0, r.stderr);
      for (const fam of FAMS) assert.deepEqual(await savedRules(topo, topo.ns.lb, fam, "e2e-ofl"), []);
    });
  },
});

Deno.test({
  name: "e2e offload auto: flowlb: one queued datagram per UDP flow, deactivate moves the target's flows",
  ignore,
  async fn(t) {
    await using topo = await offloadLab();
    await topo.nfqlb.startFlowLb(["--offload=auto"]);
    const set = await topo.nfqlb.run([
      "flow-set",
      "--name=all",
      `--target=${topo.shm}`,
      "--protocols=udp",
      `--dsts=${VIP[4]}/32,${VIP[6]}/128`,
    ]);
    assert.equal(set.stdout, "OK\n");
    for (const fam of FAMS) {
      await t.step(`ipv${fam}: Maglev's targets, the first datagram of each flow queued`, async () => {
        const flows = topo.flows(fam, 30, 45000 + fam * 100);
        const q0 = await queued(topo);
        const r = await topo.client.udp(fam, flows, 10);
        assert.equal(await queued(topo) - q0, flows.length);
        const want = await maglevTargets(topo, "udp", toVip(fam, flows, UDP_PORT));
        assert.deepEqual(r.targets.map((x) => [...new Set(x)]), want.map((w) => [w]));
      });
    }
    await t.step("ipv4: deactivate moves the target's offloaded flows, the others stay", async () => {
      const flows = topo.flows(4, 40, 47000);
      const first = (await topo.client.udp(4, flows, 2)).targets.map((x) => x[0]);
      await topo.nfqlb.deactivate(topo.fwmarks[2]);
      let moved: string[] = [];
      const deadline = Date.now() + 5000; // flowlb follows its tables every 100 ms
      while (Date.now() < deadline) {
        moved = (await topo.client.udp(4, flows, 1)).targets.map((x) => x[0]);
        if (!moved.includes("t3")) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(first.includes("t3"), "some flows were on t3");
      assert.ok(!moved.includes("t3"), "no flow stays on the deactivated target");
      for (const [i, was] of first.entries()) if (was !== "t3") assert.equal(moved[i], was);
    });
  },
});

/** A per-target row of `nfqlb stats --all` (cli/commands/stats_view.ts). */
interface StatsTarget {
  fwmark: number;
  packets: number;
  bytes: number;
  queued_packets: number;
  queued_bytes: number;
  offloaded_packets: number;
  offloaded_bytes: number;
}

/** `nfqlb stats --all` targets and lb state. */
async function statsAll(topo: Topology): Promise<{ running: boolean; targets: StatsTarget[] }> {
  const r = await topo.nfqlb.run(["stats", `--ft_shm=${topo.ftShm}`, "--all"]);
  const doc = JSON.parse(r.stdout) as { lb: { running: boolean }; targets: StatsTarget[] };
  return { running: doc.lb.running, targets: doc.targets };
}

/** Packets and bytes each target netns received for the VIP (a counting rule in its mangle PREROUTING). */
async function received(topo: Topology): Promise<Map<number, { packets: number; bytes: number }>> {
  const out = new Map<number, { packets: number; bytes: number }>();
  for (const [i, ns] of topo.ns.targets.entries()) {
    let packets = 0, bytes = 0;
    for (const ipt of ["iptables", "ip6tables"]) {
      const save = (await topo.exec(ns, [ipt, "-w", "-t", "mangle", "-S", "PREROUTING", "-v"])).stdout;
      for (const l of save.split("\n")) {
        const m = /--comment e2e-count -c ([0-9]+) ([0-9]+)/.exec(l);
        if (m) (packets += Number(m[1]), bytes += Number(m[2]));
      }
    }
    out.set(topo.fwmarks[i], { packets, bytes });
  }
  return out;
}

Deno.test({
  name: "e2e offload auto: per-target counters (queued + offloaded) equal what the targets received",
  ignore,
  async fn(t) {
    await using topo = await offloadLab();
    for (const fam of FAMS) {
      // every packet to the VIP a target gets, counted where it arrives (a rule without a target only counts)
      for (const ns of topo.ns.targets) {
        await topo.exec(ns, [
          fam === 4 ? "iptables" : "ip6tables",
          ...`-w -t mangle -I PREROUTING 1 -d ${VIP[fam]} -m comment --comment e2e-count`.split(" "),
        ]);
      }
    }
    await topo.nfqlb.startLb(["--offload=auto", `--metrics=127.0.0.1:${METRICS_PORT}`]);
    const chain = `NFQLB-CNT-Q${QUEUE}`;
    const lbRules = async (fam: Family) =>
      (await topo.exec(topo.ns.lb, [fam === 4 ? "iptables" : "ip6tables", "-w", "-t", "mangle", "-S"]))
        .stdout;

    /** Waits (bounded) until stats catches up with the targets (the lb reads the kernel once a second). */
    const settle = async () => {
      const want = await received(topo);
      let s = await statsAll(topo);
      const deadline = Date.now() + 6000;
      const same = () =>
        [...want].every(([fw, r]) => {
          const x = s.targets.find((y) => y.fwmark === fw);
          return r.packets === 0 ? !x || x.packets === 0 : x?.packets === r.packets;
        });
      while (!same() && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        s = await statsAll(topo);
      }
      return { want, s };
    };
    const check = (want: Map<number, { packets: number; bytes: number }>, s: { targets: StatsTarget[] }) => {
      for (const [fw, r] of want) {
        const x = s.targets.find((y) => y.fwmark === fw) ??
          {
            packets: 0,
            bytes: 0,
            queued_packets: 0,
            offloaded_packets: 0,
            queued_bytes: 0,
            offloaded_bytes: 0,
          };
        const msg = `fwmark ${fw}: target got ${JSON.stringify(r)}, stats ${JSON.stringify(x)}`;
        assert.equal(x.packets, r.packets, msg);
        assert.equal(x.bytes, r.bytes, msg);
        assert.equal(x.queued_packets + x.offloaded_packets, x.packets, msg);
        assert.equal(x.queued_bytes + x.offloaded_bytes, x.bytes, msg);
      }
    };

    await t.step("the lb's counting chain and jumps are in place, one rule per target fwmark", async () => {
      const deadline = Date.now() + 5000;
      for (const fam of FAMS) {
        let save = await lbRules(fam);
        while (topo.fwmarks.some((fw) => !save.includes(`nfqlb-count ${fw}"`)) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 200));
          save = await lbRules(fam);
        }
        assert.ok(save.includes(`-j ${chain}`), `ipv${fam}: the jump:\n${save}`);
        for (const fw of topo.fwmarks) {
          assert.ok(save.includes(`nfqlb-count ${fw}"`), `ipv${fam}: ${fw}\n${save}`);
        }
      }
    });

    let offloaded = 0;
    await t.step(
      "UDP and TCP, IPv4 and IPv6: queued + offloaded = received, per target, exactly",
      async () => {
        for (const fam of FAMS) {
          await topo.client.udp(fam, topo.flows(fam, 40, 30000 + fam * 1000), 10);
          await topo.client.tcp(fam, topo.flows(fam, 30, 33000 + fam * 1000), 2);
        }
        const { want, s } = await settle();
        check(want, s);
        offloaded = s.targets.reduce((a, x) => a + x.offloaded_packets, 0);
        const queued = s.targets.reduce((a, x) => a + x.queued_packets, 0);
        console.log(`queued ${queued}, offloaded ${offloaded}, per target: ${JSON.stringify(s.targets)}`);
        // 2 × 40 flows of 10 datagrams: 80 queued; TCP: the SYN of each of 2 × 30 connections
        assert.ok(offloaded > 2 * queued, `offloaded ${offloaded}, queued ${queued}`);
      },
    );

    await t.step(
      "/metrics: nfqlb_target_offloaded_packets_total and _bytes_total as in stats --all",
      async () => {
        const { s } = await settle(); // no traffic now: the two reads see the same counts
        const a = await httpGet(
          (args, o) => topo.sh(args, o),
          topo.ns.lb,
          `http://127.0.0.1:${METRICS_PORT}/metrics`,
        );
        assert.equal(a.status, 200, a.body);
        const sample = (name: string, fw: number) =>
          Number(new RegExp(`^${name}\\{target="${fw}"\\} ([0-9]+)$`, "m").exec(a.body)?.[1] ?? NaN);
        for (const x of s.targets) {
          assert.equal(sample("nfqlb_target_offloaded_packets_total", x.fwmark), x.offloaded_packets, a.body);
          assert.equal(sample("nfqlb_target_offloaded_bytes_total", x.fwmark), x.offloaded_bytes, a.body);
        }
      },
    );

    await t.step("a deactivated target's counts stay; its counting rule goes", async () => {
      const fw1 = topo.fwmarks[0];
      const before = (await statsAll(topo)).targets.find((x) => x.fwmark === fw1)!;
      assert.ok(before.offloaded_packets > 0, JSON.stringify(before));
      await topo.nfqlb.deactivate(fw1);
      const deadline = Date.now() + 5000;
      let save = await lbRules(4);
      while (save.includes(`nfqlb-count ${fw1}"`) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        save = await lbRules(4);
      }
      assert.ok(!save.includes(`nfqlb-count ${fw1}"`), save);
      // more traffic: it goes to the other targets, and every count still adds up
      for (const fam of FAMS) await topo.client.udp(fam, topo.flows(fam, 30, 46000 + fam * 1000), 5);
      const { want, s } = await settle();
      check(want, s);
      const after = s.targets.find((x) => x.fwmark === fw1)!;
      assert.deepEqual(after, before, "the deactivated target's counts are kept");
    });

    await t.step(
      "after the lb stops: the final counts stay in stats, the chain and jump are gone",
      async () => {
        await topo.nfqlb.stopLb();
        const { want, s } = await settle();
        assert.equal(s.running, false);
        check(want, s);
        for (const fam of FAMS) {
          const save = await lbRules(fam);
          assert.ok(!save.includes(chain), `ipv${fam}:\n${save}`);
        }
      },
    );
  },
});
