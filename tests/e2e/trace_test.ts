/**
 * End-to-end tests of tracing (upstream's log and trace lines) on the real kernel: `nfqlb
 * trace` clients against a running `lb` / `flowlb` in the load-balancer
 * netns, traffic from the client netns through iptables NFQUEUE.
 *
 * - lb: two trace clients at once, each with its own selection; one
 *   `Load-balance packet. fw=<fwmark>` line per packet, and the fwmarks are
 *   those of the targets that answered; the shm mask stays while a client is
 *   attached and is 0 once the last one left; the lb logs nothing per packet
 *   even at log level 7.
 * - flowlb: a trace flow (`trace-flow-set`) selects exactly its flow's
 *   packets (UDP over IPv4 and IPv6, the ICMP errors that quote the flow, the
 *   flow's pings): the `flows` blocks name each of them, with the fwmark of
 *   the target that answered; the trace-flow commands' outputs and exit
 *   codes; matches_count equals the blocks seen.
 *
 * Needs root (skipped with a message otherwise). Asserts on content and
 * counts, never on timing; every wait is bounded.
 */
import assert from "node:assert/strict";
import { type Family, FWBASE, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { type Proc, waitUntil } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { tally } from "../harness/traffic.ts";

const notRoot = skipUnlessRoot();

/** Starts `nfqlb trace <args>` in the lb netns; resolves once the server greeted it. */
async function startTrace(topo: Topology, label: string, args: string[]): Promise<Proc> {
  const p = topo.nfqlb.spawn(label, ["trace", ...args, `--trace_address=unix:${topo.traceName}`]);
  const ok = await waitUntil(
    () => !!p.status || /^Trace active, mask=0x[0-9a-f]{8}$/m.test(p.stdout),
    30_000,
  );
  if (!ok || p.status) {
    await p.stop();
    throw new Error(`trace client did not start:\n${p.describe()}`);
  }
  return p;
}

/** The trace mask in the topology's `nfqlb-trace` shm. */
function shmMask(topo: Topology): number {
  const b = Deno.readFileSync(`${topo.shmDir}/nfqlb-trace`);
  return new DataView(b.buffer, b.byteOffset).getUint32(4, true);
}

/** fwmark of target `name` (t1 → 101). */
const fwOf = (name: string) => FWBASE + Number(name.slice(1));

/** The lines of a client's output matching re, as their first capture groups. */
function captures(text: string, re: RegExp): string[] {
  return text.split("\n").flatMap((l) => {
    const m = re.exec(l);
    return m ? [m[1]] : [];
  });
}

/** Sorted tally of a list, for comparisons. */
function counts(xs: (string | number)[]): Record<string, number> {
  return tally(xs.map(String));
}

Deno.test({
  name: "e2e trace lb: two clients at once, one line per packet with its target's fwmark, no per-packet log",
  ignore: notRoot,
  async fn() {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await topo.nfqlb.initTargets();
    const lb = await topo.nfqlb.startLb();
    const clients: Proc[] = [];
    try {
      // the most verbose log level: still nothing per packet
      assert.equal((await topo.nfqlb.run(["loglevel", "7"])).stdout, "loglevel=7\n");
      // one after the other: each client's mask is the shm mask when it connects
      const a = await startTrace(topo, "trace a", ["--selection=packet"]);
      clients.push(a);
      assert.match(a.stdout, /^Mask=0x00000002\nTrace active, mask=0x00000002\n/);
      const b = await startTrace(topo, "trace b", ["--mask=0x3"]); // packet + log
      clients.push(b);
      assert.match(b.stdout, /^Mask=0x00000003\nTrace active, mask=0x00000003\n/);
      assert.ok(await waitUntil(() => /Trace; active mask=0x00000003/.test(b.stdout), 10_000), b.describe());

      const stderrBefore = lb.stderr.split("\n").length;
      const fam: Family = 4;
      const flows = topo.flows(fam, 40, 30000);
      const r = await topo.client.udp(fam, flows);
      const targets = r.targets.map((x) => x[0]);
      assert.ok(targets.every((t) => t !== ""), `unanswered: ${JSON.stringify(tally(targets))}`);
      const flows6 = topo.flows(6, 20, 30100);
      const targets6 = (await topo.client.udp(6, flows6)).targets.map((x) => x[0]);
      assert.ok(targets6.every((t) => t !== ""), `ipv6 unanswered: ${JSON.stringify(tally(targets6))}`);
      const want = counts([...targets, ...targets6].map(fwOf));
      const lines = (p: Proc) => captures(p.stdout, /^Load-balance packet\. fw=(\d+)$/);
      for (const p of [a, b]) {
        await waitUntil(() => lines(p).length >= 60, 20_000);
        assert.deepEqual(counts(lines(p)), want, `${p.label}: fwmarks of the traced packets`);
      }
      assert.ok(lb.stderr.split("\n").length - stderrBefore < 5, `lb logged per packet:\n${lb.stderr}`);
      assert.doesNotMatch(lb.stderr, /Load-balance|getHashKey|fw=/);
      assert.equal(shmMask(topo), 3);

      // the first client leaves: the other goes on, the shm mask stays
      await a.stop();
      assert.equal(a.status?.code === 0 || a.status?.signal === "SIGTERM", true, a.describe());
      const more = topo.flows(fam, 10, 30200);
      const moreTargets = (await topo.client.udp(fam, more)).targets.map((x) => x[0]);
      await waitUntil(() => lines(b).length >= 70, 20_000);
      assert.deepEqual(counts(lines(b)), counts([...targets, ...targets6, ...moreTargets].map(fwOf)));
      assert.equal(shmMask(topo), 3);

      // the last one leaves: mask 0 (upstream resets it after every session)
      await b.stop();
      assert.ok(await waitUntil(() => shmMask(topo) === 0, 10_000), "shm mask not reset");

      // trace flows exist only in flowlb: against lb the client cannot connect
      const tf = await topo.nfqlb.run(["trace-flow-list-names"], { allowFail: true });
      assert.equal(tf.code, 1);
      assert.match(tf.stderr, /Connect failed\. /);
      await topo.nfqlb.run(["loglevel", "5"]);
      const stopped = await topo.nfqlb.stopLb();
      assert.equal(stopped?.status.code, 0, stopped?.stderr);
    } finally {
      for (const p of clients) await p.stop();
    }
  },
});

Deno.test({
  name:
    "e2e trace flowlb: a trace flow selects exactly its packets (UDP, ICMP errors, ping) and their fwmarks",
  ignore: notRoot,
  async fn() {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await topo.nfqlb.initTargets();
    await topo.nfqlb.startFlowLb();
    const nfqlb = (...args: string[]) => topo.nfqlb.run(args, { allowFail: true });
    const clients: Proc[] = [];
    let client: Proc | undefined;
    try {
      const set = await nfqlb(
        "flow-set",
        "--name=all",
        `--target=${topo.shm}`,
        `--dsts=${VIP[4]}/32,${VIP[6]}/128`,
      );
      assert.equal(set.stdout, "OK\n");
      // trace-flow commands: outputs and exit codes
      const SEL = "--srcs=10.213.0.12/32,fd13::12/128";
      assert.deepEqual(
        await nfqlb("trace-flow-set", "--name=sel", SEL, "--protocols=udp", "--sports=31000-31004"),
        { code: 0, stdout: "OK\n", stderr: "" },
      );
      assert.deepEqual(await nfqlb("trace-flow-set", "--name=bad", "--protocols=xyz"), {
        code: 255,
        stdout: "Invalid protocols\n",
        stderr: "",
      });
      const noProto = await nfqlb("trace-flow-set", "--name=bad", "--sports=1");
      assert.equal(noProto.code, 1);
      assert.match(noProto.stderr, /ports specified without protocols/);
      assert.equal((await nfqlb("trace-flow-list-names")).stdout, '[\n  "sel"\n]\n');

      client = await startTrace(topo, "trace flows", ["--selection=flows"]);
      clients.push(client);
      assert.match(client.stdout, /^Mask=0x00000040\nTrace active, mask=0x00000040\n/);

      // the selected flow: sports 31000..31004 from .12 (both families); others around it
      const sel: Record<Family, Flow[]> = { 4: [], 6: [] };
      const results: { fam: Family; flow: Flow; target: string; selected: boolean }[] = [];
      for (const fam of [4, 6] as Family[]) {
        const src = fam === 4 ? "10.213.0.12" : "fd13::12";
        const other = fam === 4 ? "10.213.0.13" : "fd13::13";
        sel[fam] = Array.from({ length: 5 }, (_, i) => ({ src, sport: 31000 + i }));
        const flows = [
          ...sel[fam],
          ...Array.from({ length: 5 }, (_, i) => ({ src, sport: 31005 + i })),
          ...Array.from({ length: 5 }, (_, i) => ({ src: other, sport: 31000 + i })),
        ];
        const r = await topo.client.udp(fam, flows);
        flows.forEach((flow, i) => {
          assert.ok(r.targets[i][0], `ipv${fam} ${flow.src}:${flow.sport} unanswered`);
          results.push({ fam, flow, target: r.targets[i][0], selected: i < 5 });
        });
      }
      // ICMP errors quoting the selected flow (VIP:5000 -> client:31000): the inner packet matches
      const quoted = (fam: Family) => ({
        vip: VIP[fam],
        vipPort: UDP_PORT,
        client: sel[fam][0].src,
        clientPort: 31000,
        proto: "udp" as const,
      });
      assert.equal((await topo.client.icmp("10.213.0.12", [quoted(4)])).sent, 1);
      assert.equal((await topo.client.icmp("fd13::12", [quoted(6)])).sent, 1);
      // pings from the selected source (trace flows always take ping by address), and from another
      const pings = await topo.client.ping(["10.213.0.12", "10.213.0.13"], 2);
      assert.deepEqual(pings.replies, [2, 2], JSON.stringify(pings));

      // expected blocks: 10 UDP + 2 ICMP errors + 2 pings
      const blocks = () => client!.stdout.split("\nMatch for trace-flow: ").slice(1);
      assert.ok(await waitUntil(() => blocks().length >= 14, 20_000), client.describe());
      await new Promise((r) => setTimeout(r, 500)); // (nothing more may come; checked below)
      const got = blocks().map((b) => b.split("\n"));
      assert.equal(got.length, 14, client.stdout);
      assert.ok(got.every((b) => b[0] === "sel"), "all blocks name trace flow sel");
      const fwOfFlow = (fam: Family, sport: number) =>
        fwOf(results.find((x) => x.fam === fam && x.flow.sport === sport && x.selected)!.target);
      const vipText = { 4: `::ffff:${VIP[4]}`, 6: VIP[6] };
      const srcText = { 4: "::ffff:10.213.0.12", 6: "fd13::12" };
      const udpBlocks = got.filter((b) => b[1].startsWith("proto=udp"));
      assert.equal(udpBlocks.length, 10);
      for (const fam of [4, 6] as Family[]) {
        for (const f of sel[fam]) {
          const re = new RegExp(
            `^proto=udp, len=\\d+, ${srcText[fam].replaceAll(".", "\\.")} ${f.sport} -> ${
              vipText[fam]
                .replaceAll(".", "\\.")
            } ${UDP_PORT}$`,
          );
          const b = udpBlocks.filter((x) => re.test(x[1]));
          assert.equal(b.length, 1, `ipv${fam} ${f.sport}: ${JSON.stringify(b)}`);
          assert.equal(b[0][2], `target=${topo.shm}, fwmark=${fwOfFlow(fam, f.sport)}`);
        }
      }
      // the ICMP errors: the ICMP line, then the flipped inner packet with the flow's own fwmark
      const fn = got.filter((b) => b[1].startsWith("ICMP_DEST_UNREACH/FRAG_NEEDED"));
      assert.deepEqual(fn.map((b) => b.slice(1, 4)), [[
        "ICMP_DEST_UNREACH/FRAG_NEEDED: mtu=1400",
        `proto=udp, len=56, ::ffff:10.213.0.12 31000 -> ::ffff:${VIP[4]} ${UDP_PORT}`,
        `target=${topo.shm}, fwmark=${fwOfFlow(4, 31000)}`,
      ]]);
      const ptb = got.filter((b) => b[1].startsWith("ICMP6_PACKET_TOO_BIG"));
      assert.deepEqual(ptb.map((b) => b.slice(1, 4)), [[
        "ICMP6_PACKET_TOO_BIG: mtu=1280",
        `proto=udp, len=96, fd13::12 31000 -> ${VIP[6]} ${UDP_PORT}`,
        `target=${topo.shm}, fwmark=${fwOfFlow(6, 31000)}`,
      ]]);
      const echo = got.filter((b) => b[1].startsWith("ICMP_ECHO"));
      assert.equal(echo.length, 2, JSON.stringify(echo));
      for (const b of echo) {
        assert.match(b[1], /^ICMP_ECHO: id=\d+, seq=[12]$/);
        assert.match(
          b[2],
          new RegExp(
            `^proto=icmp, len=\\d+, ::ffff:10\\.213\\.0\\.12 0 -> ::ffff:${VIP[4].replaceAll(".", "\\.")} 0$`,
          ),
        );
        assert.match(b[3], new RegExp(`^target=${topo.shm}, fwmark=10[123]$`));
      }
      // matches_count: the packets the trace flow selected; no user_ref in trace-flow-list
      const listed = JSON.parse((await nfqlb("trace-flow-list")).stdout);
      assert.equal(listed.length, 1);
      assert.equal(listed[0].name, "sel");
      assert.equal(listed[0].matches_count, 14);
      assert.equal(listed[0].user_ref, undefined);
      assert.deepEqual(listed[0].sports, ["31000-31004"]);

      // delete: OK, gone, and its packets are no longer traced
      assert.deepEqual(await nfqlb("trace-flow-delete", "--name=sel"), {
        code: 0,
        stdout: "OK\n",
        stderr: "",
      });
      assert.equal((await nfqlb("trace-flow-list-names")).stdout, "[]\n");
      assert.equal((await nfqlb("trace-flow-list")).stdout, "[]\n");
      const after = await topo.client.udp(4, sel[4]);
      assert.ok(after.targets.every((x) => x[0] !== ""));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(blocks().length, 14, "a deleted trace flow selects nothing");
      assert.ok(!/Load-balance|Using LB/.test(client.stdout), "flows only: no packet lines");

      // a second client at the same time, for the control plane: flow-conf and target lines
      const conf = await startTrace(topo, "trace conf", ["--selection=flow-conf,target"]);
      clients.push(conf);
      assert.match(conf.stdout, /^Mask=0x00000028\nTrace active, mask=0x00000028\n/);
      assert.equal(
        (await nfqlb("flow-set", "--name=x", `--target=${topo.shm}`, "--protocols=tcp", "--dports=99"))
          .stdout,
        "OK\n",
      );
      assert.equal((await nfqlb("flow-delete", "--name=x")).stdout, "OK\n");
      assert.equal((await nfqlb("flow-set", "--name=y", "--target=nosuch")).code, 255);
      const confLines = [
        "FlowCmd [action:set]",
        "FlowCmd [name:x]",
        `FlowCmd [target:${topo.shm}]`,
        "FlowCmd [protocols:tcp]",
        "FlowCmd [dports:99]",
        "FlowCmd [eoc:]",
        `Found LB; ${topo.shm} (2)`,
        "writeReply [OK]",
        "FlowCmd [action:delete]",
        "FlowCmd [name:x]",
        "FlowCmd [eoc:]",
        "writeReply [OK]",
        "FlowCmd [action:set]",
        "FlowCmd [name:y]",
        "FlowCmd [target:nosuch]",
        "FlowCmd [eoc:]",
        "Creating LB; nosuch",
        "Map shm failed; nosuch",
        "writeReply [FAIL: Couldn't create load-balancer]",
      ];
      assert.ok(await waitUntil(() => conf.stdout.includes("writeReply [FAIL"), 10_000), conf.describe());
      assert.deepEqual(conf.stdout.split("\n").slice(2, -1), confLines);
      assert.equal(blocks().length, 14, "the flows client got none of it");
      await conf.stop();

      await client.stop();
      assert.ok(await waitUntil(() => shmMask(topo) === 0, 10_000), "shm mask not reset");
      const stopped = await topo.nfqlb.stopLb();
      assert.equal(stopped?.status.code, 0, stopped?.stderr);
    } finally {
      for (const p of clients) await p.stop();
    }
  },
});
