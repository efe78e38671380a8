/**
 * End-to-end tests of fragment handling in `nfqlb lb` on the real kernel
 * (upstream's fragment table and reassembler; docs/dataplane.md,
 * "Fragments"): big UDP datagrams fragmented by the client's kernel, and
 * crafted fragments sent out of order on raw sockets. With
 * `--tun=nfqlb0` (a tun device in the lb netns), fragments that come before
 * their first fragment are stored and, once the first arrives, written to the
 * tun device: they re-enter the kernel there, hit the NFQUEUE rule again and
 * get the stored fwmark, so the target's kernel reassembles the datagram.
 * Without `--tun` such a datagram is lost (upstream behaviour).
 *
 * Every datagram carries "?len <nonce>" as its first line: the target's echo
 * server answers with its name and the number of bytes it received, so a
 * reply proves the datagram arrived whole, and where.
 *
 * Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import { type Family, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { CraftedDatagram, Flow, FragsResult, SizesResult } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { parseFragStats, tableTarget } from "../harness/nfqlb.ts";
import { fragmentCount } from "../harness/packets.ts";
import { w } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey, tally } from "../harness/traffic.ts";

const notRoot = skipUnlessRoot();
const FAMILIES: Family[] = [4, 6];
const TUN = "nfqlb0";
/**
 * Fragment entries live 1 s after their last use (default 200 ms), so a
 * stalled lb on a loaded VM does not expire a datagram between its fragments.
 */
const LB_FRAG_OPTS = [`--tun=${TUN}`, "--ft_ttl=1000"];
/** Payload sizes per flow in the kernel-fragmented test: small, four fragmented, small. */
const SIZES = [32, 3000, 9000, 17000, 30000, 32];

/** The tun device for re-injection in the lb netns (as upstream's test rc), reverse-path filter off. */
async function addTun(topo: Topology): Promise<void> {
  const lb = topo.ns.lb;
  await topo.exec(lb, w(`ip tuntap add mode tun name ${TUN}`));
  await topo.exec(lb, w(`ip link set ${TUN} up arp off mtu 1500`));
  await topo.exec(lb, [
    "sysctl",
    "-qw",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    `net.ipv4.conf.${TUN}.rp_filter=0`,
  ]);
}

/** Starts the lb with `extra` and checks its FragTable start-up line (frag=100 with a tun, 0 without). */
async function startLb(topo: Topology, extra: string[], frags: number): Promise<void> {
  const lb = await topo.nfqlb.startLb(extra);
  const re = new RegExp(`^FragTable; size=500, buckets=500, frag=${frags}, mtu=1500, ttl=\\d+$`, "m");
  for (let i = 0; i < 50 && !re.test(lb.stdout); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(lb.stdout, re, `lb start-up line:\n${lb.describe()}`);
}

async function fragStats(topo: Topology): Promise<Record<string, number>> {
  return parseFragStats((await topo.nfqlb.run(["stats", `--ft_shm=${topo.ftShm}`])).stdout);
}

function delta(after: Record<string, number>, before: Record<string, number>, k: string): number {
  return (after[k] ?? 0) - (before[k] ?? 0);
}

/** A fixed permutation of 0..n-1 in which the first fragment is neither sent first nor last. */
function shuffled(n: number, seed = 7): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  let x = seed;
  for (let i = n - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const j = x % (i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  const at = p.indexOf(0);
  const want = Math.floor(n / 2);
  [p[at], p[want]] = [p[want], p[at]];
  return p;
}

/** Non-first fragments sent before the first one: what the lb has to store. */
function storedBefore(d: CraftedDatagram, n: number): number {
  if (d.order === "reverse") return n - 1;
  if (Array.isArray(d.order)) return d.order.indexOf(0);
  return 0;
}

/**
 * Crafted datagrams come from the client's primary address only; the
 * kernel-fragmented flows use the other addresses, so no (src, dst, id) of
 * ours can meet one the client's kernel chose while its fragment-table entry
 * is alive.
 */
function crafted(topo: Topology, fam: Family, sport: number, size: number, order: CraftedDatagram["order"]) {
  return {
    src: topo.clientAddrs(fam)[0],
    sport,
    dst: VIP[fam],
    dport: UDP_PORT,
    size,
    id: fam === 4 ? 0x5000 + sport - 30000 : 0x51000000 + sport, // distinct for every sport used here
    order,
  } satisfies CraftedDatagram;
}

function describe(ds: CraftedDatagram[], r: FragsResult): string {
  return ds.map((d, i) => {
    const x = r.datagrams[i];
    return `${d.src}:${d.sport} ${d.size}B ${
      JSON.stringify(d.order ?? "forward")
    }: ${x.sent}/${x.fragments} sent, ` +
      `${x.target ? `${x.target} got ${x.len}B` : "no answer"}`;
  }).join("\n") + (r.errors.length ? `\nerrno ${r.errors.join(",")}` : "");
}

Deno.test({
  name:
    "e2e fragments: whole datagrams at the flow's target, out-of-order fragments through --tun, lost without",
  ignore: notRoot,
  async fn(t) {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await topo.nfqlb.initTargets();
    await addTun(topo);
    await startLb(topo, LB_FRAG_OPTS, 100);

    for (const fam of FAMILIES) {
      await t.step(
        `ipv${fam}: 20 flows, datagrams of ${SIZES.join("/")} bytes: each whole, at its flow's target`,
        async () => {
          const flows: Flow[] = topo.flows(fam, 20, 26500, topo.clientAddrs(fam).slice(1));
          const r = await topo.agent<SizesResult>(topo.ns.cli, {
            cmd: "sizes",
            dst: VIP[fam],
            port: UDP_PORT,
            flows,
            sizes: SIZES,
          });
          const bad = r.replies.flatMap((rs, i) =>
            rs.map((x, k) => ({ x, k })).filter(({ x, k }) => x.target === "" || x.len !== SIZES[k])
              .map(({ x, k }) =>
                `${flowKey(flows[i])} ${SIZES[k]}B: ${x.target ? `${x.target} got ${x.len}B` : "lost"}`
              )
          );
          assert.equal(bad.length, 0, `not delivered whole:\n${bad.join("\n")}\nerrno ${r.errors.join(",")}`);
          const split = r.replies.map((rs, i) => ({ i, names: new Set(rs.map((x) => x.target)) }))
            .filter(({ names }) => names.size !== 1)
            .map(({ i, names }) => `${flowKey(flows[i])}: ${[...names].join(",")}`);
          assert.equal(
            split.length,
            0,
            `a flow's small and big datagrams on different targets: ${split.join("; ")}`,
          );
          const targets = r.replies.map((rs) => rs[0].target);
          const c = tally(targets);
          for (const name of topo.targetNames) {
            assert.ok((c[name] ?? 0) >= 2, `spread over targets: ${JSON.stringify(c)}`);
          }
          for (const i of [0, 7, 13]) {
            assert.equal(targets[i], await tableTarget(topo, fam, "udp", flows[i]), `${flowKey(flows[i])}`);
          }
        },
      );

      await t.step(
        `ipv${fam}: fragments sent last-first (and shuffled) are stored, re-injected through ${TUN}, delivered whole`,
        async () => {
          const sport = 31000 + fam * 100;
          const n9 = fragmentCount(fam, 9000);
          const ds = [
            crafted(topo, fam, sport, 3000, "reverse"),
            crafted(topo, fam, sport + 1, 7000, "reverse"),
            crafted(topo, fam, sport + 2, 20000, "reverse"),
            crafted(topo, fam, sport + 3, 9000, shuffled(n9)),
          ];
          const want = await Promise.all(
            ds.map((d) => tableTarget(topo, fam, "udp", { src: d.src, sport: d.sport })),
          );
          const before = await fragStats(topo);
          const r = await topo.agent<FragsResult>(topo.ns.cli, { cmd: "frags", datagrams: ds });
          const after = await fragStats(topo);
          const msg = `${describe(ds, r)}\nexpected targets ${want.join(",")}\nstats ${
            JSON.stringify(after)
          }`;
          ds.forEach((d, i) => {
            const x = r.datagrams[i];
            assert.equal(x.sent, x.fragments, `send failed:\n${msg}`);
            assert.equal(x.fragments, fragmentCount(fam, d.size), `fragment count:\n${msg}`);
            assert.deepEqual({ target: x.target, len: x.len }, { target: want[i], len: d.size }, msg);
          });
          const stored = ds.reduce((n, d, i) => n + storedBefore(d, r.datagrams[i].fragments), 0);
          assert.ok(stored > 0);
          assert.equal(delta(after, before, "fragsAllocated"), stored, `fragsAllocated:\n${msg}`);
          assert.equal(delta(after, before, "fragsDiscarded"), 0, `fragsDiscarded:\n${msg}`);
          assert.ok((after.fragsAllocated ?? 0) > 0, `nfqlb stats: ${JSON.stringify(after)}`);
        },
      );
    }

    await t.step("without --tun: a last-first datagram is lost, an in-order one still arrives", async () => {
      const old = await topo.nfqlb.stopLb();
      assert.equal(old?.status.code, 0, `lb exit on SIGTERM: ${old?.stderr}`);
      await startLb(topo, ["--ft_ttl=1000"], 0);
      for (const fam of FAMILIES) {
        const sport = 32000 + fam * 100;
        const lost = [crafted(topo, fam, sport, 3000, "reverse")];
        const want = await tableTarget(topo, fam, "udp", { src: lost[0].src, sport });
        assert.notEqual(want, "", "the table has a target for the flow");
        const before = await fragStats(topo);
        // bounded wait: 1.5 s for an answer that must not come
        const r1 = await topo.agent<FragsResult>(topo.ns.cli, {
          cmd: "frags",
          datagrams: lost,
          waitMs: 1500,
        });
        assert.equal(r1.datagrams[0].sent, r1.datagrams[0].fragments, describe(lost, r1));
        assert.equal(
          r1.datagrams[0].target,
          "",
          `ipv${fam}: delivered without --tun:\n${describe(lost, r1)}`,
        );
        const ok = [crafted(topo, fam, sport + 1, 3000, "forward")];
        const r2 = await topo.agent<FragsResult>(topo.ns.cli, { cmd: "frags", datagrams: ok });
        const wantOk = await tableTarget(topo, fam, "udp", { src: ok[0].src, sport: sport + 1 });
        assert.deepEqual(
          { target: r2.datagrams[0].target, len: r2.datagrams[0].len },
          { target: wantOk, len: 3000 },
          `ipv${fam}: in-order datagram without --tun:\n${describe(ok, r2)}`,
        );
        const after = await fragStats(topo);
        assert.equal(
          delta(after, before, "fragsAllocated"),
          0,
          `nothing stored without --tun: ${JSON.stringify(after)}`,
        );
      }
      const lb = await topo.nfqlb.stopLb();
      assert.equal(lb?.status.code, 0, `lb exit on SIGTERM: ${lb?.stderr}`);
    });
  },
});
