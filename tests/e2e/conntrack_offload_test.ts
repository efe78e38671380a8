/**
 * End-to-end test of connection offload (docs/conntrack.md, "Offload"): the
 * rules of host/plumbing/offload_rules.ts ahead of the NFQUEUE rule in the lb
 * netns, `nfqlb lb` with a connection table, and `ct-set --offload` setting
 * the kernel connmark of a UDP flow over ctnetlink. Offloaded, the flow's
 * datagrams still reach its target but no longer enter the queue (the
 * kernel's id_sequence of the queue stands still); `--no-offload` queues
 * them again. The same for a long-lived TCP connection under DSR (replies
 * untracked in the lb netns), which needs the rule untracking the SYNs.
 * Counts only, no timing. Needs root (skipped otherwise).
 */
import assert from "node:assert/strict";
import { OFFLOAD_COMMENT, offloadRules } from "../../host/plumbing/offload_rules.ts";
import { type Family, FWBASE, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { ConnsCommand, ConnsRound, Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { ctList } from "../harness/nfqlb.ts";
import { waitUntil } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { exists } from "../helpers/fs.ts";

const notRoot = skipUnlessRoot();
const QUEUE = 4;
/** The servers' line-echo TCP port (connections stay open). */
const ECHO_PORT = 5007;

/** The packets handed to our queue so far (kernel counter of the lb netns). */
async function queued(topo: Topology): Promise<number> {
  const q = (await topo.queueStats()).get(QUEUE);
  assert.ok(q, `queue ${QUEUE} not bound in the lb netns`);
  return q.seq;
}

/** `n` UDP request/replies of one flow; asserts every one was answered, by one target; returns it. */
async function udpTarget(topo: Topology, fam: Family, flow: Flow, n: number): Promise<string> {
  const r = await topo.client.udp(fam, [flow], n);
  const names = new Set(r.targets[0]);
  assert.equal(names.size, 1, `ipv${fam} ${flow.src}:${flow.sport}: answered by ${[...names]}`);
  const [name] = names;
  assert.notEqual(name, "", `ipv${fam} ${flow.src}:${flow.sport}: not answered (${r.errors})`);
  return name;
}

/** One long-lived TCP connection held by a `conns` agent in the client netns. */
interface Conn {
  /** Runs exchange round n (0 ran at connect) and returns the target that answered ("" = broken). */
  round(n: number): Promise<string>;
  stop(): Promise<void>;
}

async function openConn(topo: Topology, fam: Family, flow: Flow): Promise<Conn> {
  const dir = Deno.makeTempDirSync({ dir: topo.workDir, prefix: "conn-" });
  const c: ConnsCommand = {
    cmd: "conns",
    dst: VIP[fam],
    port: ECHO_PORT,
    flows: [{ ...flow, dst: VIP[fam], dport: ECHO_PORT }],
    waitMs: 5000,
    dir,
    maxMs: 120_000,
    maxRounds: 8,
  };
  const p = topo.spawnAgent(topo.ns.cli, "conn", c);
  const read = async (n: number): Promise<string> => {
    const file = `${dir}/round-${n}.json`;
    await waitUntil(() => !!p.status || exists(file), 60_000, 50);
    if (!exists(file)) throw new Error(`conns: no round ${n}:\n${p.describe()}`);
    const r = JSON.parse(Deno.readTextFileSync(file)) as ConnsRound;
    assert.notEqual(r.targets[0], "", `ipv${fam} round ${n}: connection broken (errno ${r.errnos[0]})`);
    return r.targets[0];
  };
  const stop = async () => {
    Deno.writeTextFileSync(`${dir}/stop`, "stop\n");
    await waitUntil(() => !!p.status, 10_000, 50);
    await p.stop();
  };
  try {
    await read(0);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    round: async (n) => {
      Deno.writeTextFileSync(`${dir}/go-${n}`, "go\n");
      return await read(n);
    },
    stop,
  };
}

/** The lb netns' kernel conntrack line of a TCP flow from `sport`, when /proc/net/nf_conntrack exists. */
async function kernelEntry(topo: Topology, sport: number): Promise<string | undefined> {
  const r = await topo.exec(topo.ns.lb, ["cat", "/proc/net/nf_conntrack"], { allowFail: true });
  if (r.code !== 0) return undefined;
  return r.stdout.split("\n").find((l) => / tcp /.test(l) && l.includes(` sport=${sport} `)) ?? "";
}

Deno.test({
  name:
    "e2e conntrack offload: offloaded flows bypass the queue and keep their target; --no-offload queues again",
  ignore: notRoot,
  async fn(t) {
    await using topo = await Topology.create({
      steering: { mode: "nfqueue", queue: QUEUE },
      echoTcpPorts: [ECHO_PORT],
    });
    await topo.nfqlb.run(["init", `--shm=${topo.shm}`, "--M=997", "--N=32", "--conntrack=4096"]);
    await topo.nfqlb.activate(...topo.fwmarks);
    const rules = offloadRules({ vips: [VIP[4], VIP[6]] });
    // the topology appended the NFQUEUE rules; ours are inserted ahead of them
    for (const argv of rules.add) await topo.exec(topo.ns.lb, argv);
    await topo.nfqlb.startLb();

    await t.step(
      "the offload rules sit ahead of the NFQUEUE rule, the SYN untrack in raw, both families",
      async () => {
        for (const ipt of ["iptables", "ip6tables"]) {
          const lines = (await topo.exec(topo.ns.lb, [ipt, "-w", "-t", "mangle", "-S", "PREROUTING"])).stdout
            .split("\n").filter((l) => l.startsWith("-A PREROUTING"));
          assert.equal(lines.length, 3, lines.join("\n"));
          assert.match(lines[0], /connmark ! --mark 0x0 .*nfqlb-offload.* -j CONNMARK --restore-mark/);
          assert.match(lines[1], /connmark ! --mark 0x0 .*nfqlb-offload.* -j ACCEPT/);
          assert.match(lines[2], /-j NFQUEUE --queue-num 4/);
          const raw = (await topo.exec(topo.ns.lb, [ipt, "-w", "-t", "raw", "-S", "PREROUTING"])).stdout;
          assert.match(raw, /-p tcp .*--tcp-flags FIN,SYN,RST,ACK SYN .*nfqlb-offload.* -j CT --notrack/);
        }
      },
    );

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

        const r = await topo.nfqlb.run(["ct-set", `--shm=${topo.shm}`, ...ct, "--offload"]);
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
        await topo.nfqlb.run(["ct-set", `--shm=${topo.shm}`, ...ct, `--fwmark=${other}`]);
        const q1 = await queued(topo);
        assert.equal(await udpTarget(topo, fam, flow, 10), `t${other - FWBASE}`);
        assert.equal(await queued(topo) - q1, 0, "still offloaded");
        // back where Maglev put it, for the next step
        await topo.nfqlb.run(["ct-set", `--shm=${topo.shm}`, ...ct, `--fwmark=${e.fwmark}`]);
      });

      await t.step(`ipv${fam}: --no-offload queues the flow again, same target`, async () => {
        const target = `t${(await entry()).fwmark - FWBASE}`;
        const r = await topo.nfqlb.run(["ct-set", `--shm=${topo.shm}`, ...ct, "--no-offload"]);
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
          const r = await topo.nfqlb.run(["ct-set", `--shm=${topo.shm}`, ...ct, "--offload"]);
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
        const r = await topo.nfqlb.run([
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
        const n = await topo.nfqlb.run(["ct-set", `--shm=${topo.shm}`, ...ct, "--no-offload"]);
        assert.equal(n.stderr, "");
      },
    );

    // DSR for TCP: the topology routes the targets' replies through the lb netns; untracking them leaves
    // conntrack the client's direction only, as on an lb that replies never pass
    const dsr = (op: string) =>
      ([4, 6] as Family[]).map((fam) => [
        fam === 4 ? "iptables" : "ip6tables",
        ...`-w -t raw ${op} PREROUTING -s ${VIP[fam]} -m comment --comment e2e-dsr -j NOTRACK`.split(" "),
      ]);
    for (const argv of dsr("-I")) await topo.exec(topo.ns.lb, argv);
    try {
      for (const fam of [4, 6] as Family[]) {
        await t.step(
          `ipv${fam}: TCP under DSR: an offloaded connection skips the queue, same target`,
          async () => {
            const flow: Flow = { src: topo.clientAddrs(fam)[3], sport: 43000 + fam };
            const src = fam === 4 ? `${flow.src}:${flow.sport}` : `[${flow.src}]:${flow.sport}`;
            const dst = fam === 4 ? `${VIP[4]}:${ECHO_PORT}` : `[${VIP[6]}]:${ECHO_PORT}`;
            const ct = [`--shm=${topo.shm}`, `--src=${src}`, `--dst=${dst}`, "--proto=tcp"];
            const conn = await openConn(topo, fam, flow);
            try {
              let q = await queued(topo);
              const target = await conn.round(1);
              assert.ok(await queued(topo) - q >= 1, "before offload the exchange is queued");
              const e = (await ctList(topo)).find((x) => x.src === flow.src && x.sport === flow.sport);
              assert.ok(e, `ipv${fam}: no ct-list entry for ${src}`);
              assert.equal(`t${e.fwmark - FWBASE}`, target, "the table holds the target that answered");

              const r = await topo.nfqlb.run(["ct-set", ...ct, "--offload"]);
              assert.equal(r.stderr, "", "the kernel tracks the connection (picked up at its first ACK)");
              const k = await kernelEntry(topo, flow.sport);
              // the SYN was untracked: conntrack picked the connection up mid-stream, in the client's direction
              if (k !== undefined) {
                assert.match(
                  k,
                  new RegExp(`ESTABLISHED src=\\S+ dst=\\S+ sport=${flow.sport} dport=${ECHO_PORT} `),
                );
                assert.match(k, new RegExp(` mark=${e.fwmark} `));
              }
              const p = (await ctList(topo)).find((x) =>
                x.src === flow.src && x.sport === flow.sport
              )!.packets;
              q = await queued(topo);
              for (const n of [2, 3, 4]) {
                assert.equal(await conn.round(n), target, `round ${n} while offloaded`);
              }
              assert.equal(await queued(topo) - q, 0, "no packet of the offloaded connection was queued");
              const after = (await ctList(topo)).find((x) => x.src === flow.src && x.sport === flow.sport)!;
              assert.equal(after.packets, p, "the lb saw none of them");

              assert.equal((await topo.nfqlb.run(["ct-set", ...ct, "--no-offload"])).stderr, "");
              q = await queued(topo);
              assert.equal(await conn.round(5), target);
              assert.ok(await queued(topo) - q >= 1, "after --no-offload the exchange is queued again");
            } finally {
              await conn.stop();
            }
          },
        );
      }

      await t.step("TCP under DSR with nf_conntrack_tcp_loose=0: not tracked, ct-set says why", async () => {
        const loose = "net.netfilter.nf_conntrack_tcp_loose";
        await topo.exec(topo.ns.lb, ["sysctl", "-qw", `${loose}=0`]);
        const flow: Flow = { src: topo.clientAddrs(4)[4], sport: 43010 };
        const conn = await openConn(topo, 4, flow);
        try {
          const target = await conn.round(1);
          const ct = [`--src=${flow.src}:${flow.sport}`, `--dst=${VIP[4]}:${ECHO_PORT}`, "--proto=tcp"];
          const r = await topo.nfqlb.run(["ct-set", `--shm=${topo.shm}`, ...ct, "--offload"]);
          assert.equal(r.code, 0);
          const lines = r.stderr.split("\n");
          assert.equal(lines.length, 3, r.stderr);
          assert.match(lines[0], /^nfqlb: no kernel conntrack entry for tcp /);
          assert.match(lines[1], /^nfqlb: net\.netfilter\.nf_conntrack_tcp_loose is 0 .*needs it at 1/);
          const q = await queued(topo);
          assert.equal(await conn.round(2), target);
          assert.ok(await queued(topo) - q >= 1, "not offloaded: still queued");
        } finally {
          await conn.stop();
          await topo.exec(topo.ns.lb, ["sysctl", "-qw", `${loose}=1`]);
        }
      });
    } finally {
      for (const argv of dsr("-D")) await topo.exec(topo.ns.lb, argv);
    }

    await t.step("the delete argv remove every offload rule", async () => {
      for (const argv of rules.delete) await topo.exec(topo.ns.lb, argv);
      for (const ipt of ["iptables", "ip6tables"]) {
        const s = (await topo.exec(topo.ns.lb, [ipt, "-w", "-t", "mangle", "-S"])).stdout;
        assert.ok(!s.includes(OFFLOAD_COMMENT), s);
        assert.match(s, /-j NFQUEUE/);
        const raw = (await topo.exec(topo.ns.lb, [ipt, "-w", "-t", "raw", "-S"])).stdout;
        assert.ok(!raw.includes(OFFLOAD_COMMENT), raw);
      }
    });
  },
});
