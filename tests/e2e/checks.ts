/**
 * Reusable end-to-end checks over a {@link Topology} (tests/harness): spread,
 * stickiness, ICMP errors and SCTP. Each asserts on what arrived where
 * (counts and sets), never on timing, and returns what it observed for
 * later steps.
 */
import assert from "node:assert/strict";
import { type Family, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { waitUntil } from "../harness/process.ts";
import type { Topology } from "../harness/topology.ts";
import { flowKey, type Proto, tally } from "../harness/traffic.ts";

/** One request per flow; every flow must be answered. Returns the target per flow (same order). */
export async function mapFlows(t: Topology, fam: Family, proto: Proto, flows: Flow[]): Promise<string[]> {
  const r = proto === "udp" ? await t.client.udp(fam, flows) : await t.client.tcp(fam, flows);
  const names = r.targets.map((x) => x[0]);
  const lost = flows.filter((_, i) => names[i] === "").map(flowKey);
  assert.equal(
    lost.length,
    0,
    `ipv${fam} ${proto}: ${lost.length}/${flows.length} flows unanswered (e.g. ${
      lost.slice(0, 5).join(" ")
    }; errno ${r.errors.join(",")})`,
  );
  return names;
}

/**
 * `n` flows, each answered, and every target gets at least `minShare` of
 * them (the DSR reply must come from the VIP: connected UDP sockets / TCP).
 * Returns the flows and their targets.
 */
export async function checkSpread(
  t: Topology,
  fam: Family,
  proto: Proto,
  n = 300,
  sportBase = 20000,
  minShare = 0.15,
): Promise<{ flows: Flow[]; targets: string[] }> {
  const flows = t.flows(fam, n, sportBase);
  const targets = await mapFlows(t, fam, proto, flows);
  const counts = tally(targets);
  for (const name of t.targetNames) {
    assert.ok(
      (counts[name] ?? 0) >= minShare * n,
      `ipv${fam} ${proto} spread: ${name} got ${counts[name] ?? 0}/${n} (< ${minShare * 100} %): ${
        JSON.stringify(counts)
      }`,
    );
  }
  assert.deepEqual(
    Object.keys(counts).sort(),
    [...t.targetNames].sort(),
    `unexpected responders ${JSON.stringify(counts)}`,
  );
  return { flows, targets };
}

/** The same 5-tuple `repeat` times: always answered, always by the same target. Returns it. */
export async function checkSticky(
  t: Topology,
  fam: Family,
  proto: Proto,
  flow: Flow,
  repeat: number,
): Promise<string> {
  const r = proto === "udp"
    ? await t.client.udp(fam, [flow], repeat)
    : await t.client.tcp(fam, [flow], repeat);
  const names = r.targets[0];
  const counts = tally(names);
  assert.equal(
    Object.keys(counts).length,
    1,
    `ipv${fam} ${proto} ${flowKey(flow)} x${repeat}: ${JSON.stringify(counts)} (errno ${r.errors.join(",")})`,
  );
  assert.notEqual(names[0], "", `ipv${fam} ${proto} ${flowKey(flow)}: no answer`);
  return names[0];
}

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const k of Object.keys(after)) d[k] = after[k] - (before[k] ?? 0);
  return d;
}

function sum(r: Record<string, number>): number {
  return Object.values(r).reduce((a, b) => a + b, 0);
}

/**
 * For each flow with a known target: an ICMP frag-needed (IPv4) or
 * packet-too-big (IPv6) error quoting the flow's VIP→client packet, sent by
 * the client to the VIP, must reach exactly that target (iptables counters
 * in the targets).
 */
export async function checkIcmpErrors(
  t: Topology,
  fam: Family,
  cases: { flow: Flow; proto: Proto; target: string }[],
): Promise<void> {
  const from = t.clientAddrs(fam)[0];
  for (const c of cases) {
    const before = await t.counters("icmp");
    const sent = await t.client.icmp(from, [{
      vip: VIP[fam],
      vipPort: c.proto === "udp" ? UDP_PORT : TCP_PORT,
      client: c.flow.src,
      clientPort: c.flow.sport,
      proto: c.proto,
    }]);
    assert.equal(sent.sent, 1, `could not send the ICMP error: ${JSON.stringify(sent)}`);
    let d: Record<string, number> = {};
    await waitUntil(
      async () => {
        d = delta(await t.counters("icmp"), before);
        return sum(d) >= 1;
      },
      10_000,
      100,
    );
    const expect = Object.fromEntries(t.targetNames.map((n) => [n, n === c.target ? 1 : 0]));
    assert.deepEqual(
      d,
      expect,
      `ipv${fam} ICMP error for ${c.proto} flow ${flowKey(c.flow)} (on ${c.target}) arrived at ${
        JSON.stringify(d)
      }`,
    );
  }
}

/**
 * SCTP INITs from `n` source ports must all arrive (exactly once) and each
 * target must get at least `minShare`; the same port pair `repeat` times
 * must land on one target. With `portsOnly`, the same port pair from
 * several source addresses must land on one target too (upstream
 * `--hash_mode=1`, the default: SCTP hashes on ports only).
 */
export async function checkSctp(
  t: Topology,
  fam: Family,
  o: { n?: number; minShare?: number; repeat?: number; portsOnly?: boolean } = {},
): Promise<void> {
  const n = o.n ?? 300, minShare = o.minShare ?? 0.15, repeat = o.repeat ?? 20;
  const from = t.clientAddrs(fam)[0];
  const waitCount = async (before: Record<string, number>, want: number): Promise<Record<string, number>> => {
    let d: Record<string, number> = {};
    await waitUntil(
      async () => {
        d = delta(await t.counters("sctp"), before);
        return sum(d) >= want;
      },
      20_000,
      200,
    );
    return d;
  };

  let before = await t.counters("sctp");
  const ports = Array.from({ length: n }, (_, i) => ({ sport: 30000 + i, dport: 7777 }));
  const sent = await t.client.sctp(from, ports);
  assert.equal(sent.sent, n, `SCTP send: ${JSON.stringify(sent)}`);
  let d = await waitCount(before, n);
  assert.equal(sum(d), n, `ipv${fam} SCTP: ${sum(d)}/${n} packets reached a target: ${JSON.stringify(d)}`);
  for (const name of t.targetNames) {
    assert.ok(
      d[name] >= minShare * n,
      `ipv${fam} SCTP spread: ${name} got ${d[name]}/${n}: ${JSON.stringify(d)}`,
    );
  }

  before = await t.counters("sctp");
  await t.client.sctp(from, [{ sport: 31234, dport: 7777 }], repeat);
  d = await waitCount(before, repeat);
  assert.equal(
    Object.values(d).filter((x) => x > 0).length,
    1,
    `ipv${fam} SCTP same ports x${repeat}: ${JSON.stringify(d)}`,
  );
  assert.equal(sum(d), repeat, `ipv${fam} SCTP same ports x${repeat}: ${JSON.stringify(d)}`);

  if (o.portsOnly) {
    before = await t.counters("sctp");
    const srcs = t.clientAddrs(fam).slice(0, 4);
    for (const s of srcs) await t.client.sctp(s, [{ sport: 31234, dport: 7777 }]);
    d = await waitCount(before, srcs.length);
    assert.equal(
      Object.values(d).filter((x) => x > 0).length,
      1,
      `ipv${fam} SCTP same ports from ${srcs.length} addresses (hash_mode 1: ports only): ${
        JSON.stringify(d)
      }`,
    );
  }
}

/** Every flow answered, by exactly the set `names`. */
export function assertAllAnswered(targets: string[][], names: string[], what: string): void {
  const seen = targets.flat();
  const lost = seen.filter((x) => x === "").length;
  assert.equal(lost, 0, `${what}: ${lost} of ${seen.length} unanswered`);
  assert.deepEqual([...new Set(seen)].sort(), [...names].sort(), `${what}: targets seen`);
}
