/**
 * The functional checks of the reference bench harness (`netns-harness.sh
 * func`), as the project's own end-to-end test: for `nfqlb lb` and for
 * `nfqlb flowlb` (one flow, all protocols, both VIPs, selecting the target
 * table), IPv4 and IPv6, 3 targets (fwmarks FWBASE+1..3), iptables -j
 * NFQUEUE in the lb netns, DSR replies:
 *
 * 1. UDP spread: 300 requests from one client address, varied source ports:
 *    all answered, every target >= 15 %.
 * 2. TCP spread: 300 connections likewise: no error, every target >= 15 %.
 * 3. Stickiness: one UDP 5-tuple 20 times and one TCP 5-tuple 10 times:
 *    each always answered, by one target.
 * 4. Fragments: 100 UDP datagrams of 3000 bytes (MTU 1500, so the client
 *    fragments them): all answered, every target >= 10 %; for 10 fixed
 *    source ports, a 100-byte and a 3000-byte datagram of the same 5-tuple
 *    land on the same target.
 * 5. Deactivate/activate: 40 fixed UDP flows mapped; deactivate t2: 300
 *    requests all answered, none by t2, the others >= 15 % each; the fixed
 *    flows that were not on t2 stay where they were; activate t2: all 40
 *    back on their original targets.
 *
 * Counts and sets only, never timing. Needs root (skipped with a message
 * otherwise); the lb test is skipped with NFQLB_E2E_STEERING=hmark, as in
 * lb_test.ts.
 */
import assert from "node:assert/strict";
import { type Family, FWBASE, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { maglevTargets } from "../harness/nfqlb.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey, type Proto, tally } from "../harness/traffic.ts";
import { checkSticky, mapFlows } from "./checks.ts";

const notRoot = skipUnlessRoot();
const hmark = Deno.env.get("NFQLB_E2E_STEERING") === "hmark";
const FAMILIES: Family[] = [4, 6];
const T2 = FWBASE + 2;
/** Requests of the spread checks, and the least share each target must get. */
const N = 300, MIN_SHARE = 0.15;
/** Fragmented datagrams, their size, and the least share each target must get. */
const N_FRAG = 100, BIG = 3000, SMALL = 100, MIN_SHARE_FRAG = 0.10;
/**
 * Runs of a fragment check in all, and the most lost datagrams (and nothing
 * else wrong) that may cause a repeat; see {@link fragCheck}.
 */
const FRAG_RUNS = 3, FRAG_MAX_LOST = 2;

type Mode = "lb" | "flowlb";

/**
 * A topology with 101 102 103 active in the target table and the lb of
 * `mode` on queue 2; for flowlb one flow (as the harness's `LB_CMD=flowlb`)
 * sends everything to both VIPs through that table.
 */
async function funcTopology(mode: Mode): Promise<Topology> {
  const topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
  try {
    await topo.nfqlb.initTargets();
    if (mode === "lb") await topo.nfqlb.startLb();
    else {
      await topo.nfqlb.startFlowLb();
      const r = await topo.nfqlb.run([
        "flow-set",
        "--name=vip",
        `--target=${topo.shm}`,
        `--dsts=${VIP[4]}/32,${VIP[6]}/128`,
      ]);
      assert.equal(r.stdout, "OK\n", "flow-set vip");
    }
    return topo;
  } catch (e) {
    await topo.teardown();
    throw e;
  }
}

/** `n` flows from the client's primary address (as the harness: one address, varied source ports). */
function portFlows(topo: Topology, fam: Family, n: number, sportBase: number): Flow[] {
  return topo.flows(fam, n, sportBase, [topo.clientAddrs(fam)[0]]);
}

/** Every target except `skip` got at least `minShare` of `n`; none other than the topology's answered. */
function assertShares(
  topo: Topology,
  what: string,
  counts: Record<string, number>,
  n: number,
  minShare: number,
  skip?: string,
): void {
  const known = topo.targetNames.filter((x) => x !== skip);
  for (const name of known) {
    assert.ok(
      (counts[name] ?? 0) >= minShare * n,
      `${what}: ${name} got ${counts[name] ?? 0}/${n} (< ${minShare * 100} %): ${JSON.stringify(counts)}`,
    );
  }
  const others = Object.keys(counts).filter((x) => !known.includes(x));
  assert.deepEqual(others, [], `${what}: answered by ${JSON.stringify(counts)}`);
}

/** `n` requests (`proto`) from varied source ports: all answered, every target >= MIN_SHARE. */
async function checkPortSpread(
  topo: Topology,
  fam: Family,
  proto: Proto,
  sportBase: number,
  skip?: string,
): Promise<void> {
  const targets = await mapFlows(topo, fam, proto, portFlows(topo, fam, N, sportBase));
  assertShares(topo, `ipv${fam} ${proto} spread`, tally(targets), N, MIN_SHARE, skip);
}

/** What went wrong in one run of a fragment check: lost datagrams, anything else, and a note for messages. */
interface FragProblems {
  lost: string[];
  other: string[];
  note?: string;
}

/**
 * Runs a fragment check up to FRAG_RUNS times, repeating it only when its
 * sole problem is 1..FRAG_MAX_LOST lost IPv4 datagrams.
 *
 * Why: the client kernel (seen on 6.18) sometimes reuses an IPv4 fragment id
 * for the same source and destination within the lb fragment table's 200 ms
 * TTL (a capture showed 21 reuses in 2000 datagrams, some 5-60 ms apart).
 * Upstream drops a first fragment that meets a valid entry of another
 * fwmark; the project lets the new datagram win (c/ft.c,
 * nfqlb_ft_first), so these sequential datagrams should all arrive, but
 * which ids the client's kernel picks is outside the test's control, and the
 * harness-based test this replaces allowed such a loss a repeat. A wrong
 * target, a share below its bound, more losses or any IPv6 loss fail at
 * once; the losses of every run that is repeated are printed.
 */
async function fragCheck(fam: Family, what: string, once: () => Promise<FragProblems>): Promise<void> {
  let p: FragProblems = { lost: [], other: [] };
  for (let run = 1; run <= FRAG_RUNS; run++) {
    p = await once();
    const idReuseKind = fam === 4 && p.other.length === 0 && p.lost.length >= 1 &&
      p.lost.length <= FRAG_MAX_LOST;
    if (!idReuseKind || run === FRAG_RUNS) break;
    console.log(
      `ipv${fam} ${what}: run ${run} lost ${p.lost.join(", ")} (client fragment-id reuse?), again`,
    );
  }
  assert.deepEqual(
    { lost: p.lost, other: p.other },
    { lost: [], other: [] },
    `ipv${fam} ${what} ${p.note ?? ""}`,
  );
}

/** Runs every check of the harness for `mode`, both families, one step each. */
async function funcChecks(t: Deno.TestContext, mode: Mode): Promise<void> {
  await using topo = await funcTopology(mode);
  for (const fam of FAMILIES) {
    const primary = topo.clientAddrs(fam)[0];

    await t.step(
      `ipv${fam}: UDP spread, ${N} requests from varied source ports, >= 15 % per target`,
      async () => {
        await checkPortSpread(topo, fam, "udp", 20000);
      },
    );

    await t.step(`ipv${fam}: TCP spread, ${N} connections, >= 15 % per target, no error`, async () => {
      await checkPortSpread(topo, fam, "tcp", 21000);
    });

    await t.step(`ipv${fam}: one UDP 5-tuple x20 and one TCP 5-tuple x10 stay on one target`, async () => {
      await checkSticky(topo, fam, "udp", { src: primary, sport: 40001 }, 20);
      await checkSticky(topo, fam, "tcp", { src: primary, sport: 40002 }, 10);
    });

    await t.step(
      `ipv${fam}: ${N_FRAG} fragmented ${BIG}-byte datagrams answered, >= 10 % per target`,
      async () => {
        await fragCheck(fam, `${BIG}B fragmented spread`, async () => {
          const flows = portFlows(topo, fam, N_FRAG, 26000);
          const r = await topo.client.udp(fam, flows, 1, 1000, BIG);
          const names = r.targets.map((x) => x[0]);
          const lost = flows.filter((_, i) => names[i] === "").map(flowKey);
          const other: string[] = [];
          try {
            assertShares(topo, "spread", tally(names.filter((x) => x !== "")), N_FRAG, MIN_SHARE_FRAG);
          } catch (e) {
            other.push(e instanceof Error ? e.message : String(e));
          }
          return { lost, other, note: `(errno ${r.errors.join(",")})` };
        });
      },
    );

    await t.step(
      `ipv${fam}: the same 5-tuple lands on the same target, ${SMALL} or ${BIG} bytes (10 flows)`,
      async () => {
        await fragCheck(fam, "same flow small/fragmented", async () => {
          const flows = portFlows(topo, fam, 10, 42001);
          const small = (await topo.client.udp(fam, flows, 1, 1000, SMALL)).targets.map((x) => x[0]);
          const big = (await topo.client.udp(fam, flows, 1, 1000, BIG)).targets.map((x) => x[0]);
          const lost: string[] = [], other: string[] = [];
          flows.forEach((f, i) => {
            if (small[i] !== "" && big[i] === "") lost.push(`${flowKey(f)} ${BIG}B (${SMALL}B: ${small[i]})`);
            else if (small[i] === "" || small[i] !== big[i]) {
              other.push(`${flowKey(f)} ${SMALL}B: ${small[i] || "lost"}, ${BIG}B: ${big[i] || "lost"}`);
            }
          });
          return { lost, other };
        });
      },
    );

    await t.step(
      `ipv${fam}: deactivate ${T2}: nothing to t2, 0 lost, the other 40 fixed flows stay; activate: all back`,
      async () => {
        const fixed = portFlows(topo, fam, 40, 41001);
        const keyed = fixed.map((f) => ({ ...f, dst: VIP[fam], dport: UDP_PORT }));
        const before = await mapFlows(topo, fam, "udp", fixed);
        const tableBefore = await maglevTargets(topo, "udp", keyed);
        assert.deepEqual(before, tableBefore, "the fixed flows are where the table says");
        await topo.nfqlb.deactivate(T2);
        try {
          await checkPortSpread(topo, fam, "udp", 23000, "t2");
          const during = await mapFlows(topo, fam, "udp", fixed);
          const tableDuring = await maglevTargets(topo, "udp", keyed);
          assert.deepEqual(during, tableDuring, `deactivate ${T2}: the fixed flows are where the table says`);
          const stayed = fixed.map((_, i) => i).filter((i) => before[i] !== "t2");
          assert.ok(stayed.length > 0, `no fixed flow off t2: ${JSON.stringify(tally(before))}`);
          const show = (i: number) => `${flowKey(fixed[i])} ${before[i]}->${during[i]}`;
          // Maglev keeps all but a few slots of the remaining targets (for M=997 and 101 102
          // 103, deactivating 102 moves 5 of their 665 slots), so a flow may move only when
          // the table itself moved it; and the table moves at most 10 % of them (a modulo
          // hash would move about half).
          const tableMoved = stayed.filter((i) => tableDuring[i] !== tableBefore[i]);
          const moved = stayed.filter((i) => during[i] !== before[i]);
          assert.deepEqual(
            moved.map(show),
            tableMoved.map(show),
            `flows not on t2 moved (kept ${stayed.length - moved.length}) other than the table moved them`,
          );
          assert.ok(
            tableMoved.length <= 0.1 * stayed.length,
            `the table moved ${tableMoved.length}/${stayed.length} flows not on t2: ${tableMoved.map(show)}`,
          );
        } finally {
          await topo.nfqlb.activate(T2);
        }
        const after = await mapFlows(topo, fam, "udp", fixed);
        const notBack = fixed.map((f, i) => `${flowKey(f)} ${before[i]}->${after[i]}`)
          .filter((_, i) => after[i] !== before[i]);
        assert.deepEqual(notBack, [], `activate ${T2}: flows not back on their original target`);
      },
    );
  }
  const lb = await topo.nfqlb.stopLb();
  assert.equal(lb?.status.code, 0, `${mode} exit on SIGTERM: ${lb?.stderr}`);
}

Deno.test({
  name: "e2e func checks, nfqlb lb: UDP/TCP spread, stickiness, fragments, deactivate/activate (IPv4, IPv6)",
  ignore: notRoot || hmark,
  async fn(t) {
    await funcChecks(t, "lb");
  },
});

Deno.test({
  name:
    "e2e func checks, nfqlb flowlb: UDP/TCP spread, stickiness, fragments, deactivate/activate (IPv4, IPv6)",
  ignore: notRoot,
  async fn(t) {
    await funcChecks(t, "flowlb");
  },
});
