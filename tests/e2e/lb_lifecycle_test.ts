/**
 * End-to-end tests of the `nfqlb lb` life cycle and its error handling on the
 * real kernel: SIGTERM/SIGINT unbind the queue and exit 0; a queue bound by
 * another process, missing CAP_NET_ADMIN and a missing target table fail with
 * one line and exit 1; `init` on the table of a running lb is followed; `stats`
 * prints valid JSON that counts fragments; `--fail_open` lets packets past a
 * full queue (without a mark) instead of dropping them; malformed packets do
 * not hurt the lb.
 *
 * The tests share one topology (client, lb, 3 targets; queue 2), created by
 * the first test that runs and torn down by the last one (or, should that one
 * be filtered out or never reached, synchronously when the test module
 * unloads). A test that changes the lb or its table marks the topology dirty;
 * the next test then re-creates the table (101 102 103) and restarts a
 * default lb before it starts.
 *
 * Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import { type Family, FWBASE, VIP } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { tableTarget } from "../harness/nfqlb.ts";
import { hex, ipv4Bytes, ipv6Bytes } from "../harness/packets.ts";
import { NFQLB } from "../harness/paths.ts";
import { type Proc, type RunResult, waitUntil } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey, tally } from "../harness/traffic.ts";
import { checkSpread, mapFlows } from "./checks.ts";

const notRoot = skipUnlessRoot();
const QUEUE = 2;
/** Queues nobody binds in the lb netns (for the commands that must fail). */
const FREE_QUEUE = 7;
const [T1, T2, T3] = [FWBASE + 1, FWBASE + 2, FWBASE + 3];
const SHARED = { sanitizeOps: false, sanitizeResources: false } as const;

// ---------------------------------------------------------------------------
// the shared topology

let shared: Topology | undefined;
/** True when a test may have left the lb or its table in another state than the base one. */
let dirty = true;

/**
 * The shared topology in its base state: table 101 102 103 (M=997, N=32)
 * and a default `nfqlb lb --queue=2` running. Creates the topology on first use.
 */
async function base(): Promise<Topology> {
  shared ??= await Topology.create({ steering: { mode: "nfqueue", queue: QUEUE } });
  const t = shared;
  if (dirty || !t.nfqlb.proc || t.nfqlb.proc.status) {
    const old = await t.nfqlb.stopLb();
    if (old?.status.signal) console.error(`lb was killed (${old.status.signal}):\n${old.stderr}`);
    await t.nfqlb.initTargets();
    await signalsHandled(await t.nfqlb.startLb());
    dirty = false;
  }
  return t;
}

/** Last resort when the teardown test did not run: kill what runs in our namespaces, delete them. */
globalThis.addEventListener("unload", () => {
  const t = shared;
  if (!t) return;
  shared = undefined;
  t.teardownSync();
});

// ---------------------------------------------------------------------------
// helpers

/** Non-empty lines of a text. */
function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

/** Runs `nfqlb lb` (bounded) in the lb netns, optionally behind a command prefix (setpriv). */
async function lbOnce(t: Topology, args: string[], prefix: string[] = []): Promise<RunResult> {
  return await t.exec(t.ns.lb, [...prefix, NFQLB, "lb", ...args], {
    env: t.nfqlb.env,
    allowFail: true,
    timeoutMs: 60_000,
  });
}

/** Asserts that the running lb is alive and still answers for every flow of both families, spread over the 3 targets. */
async function assertStillBalancing(t: Topology, what: string, sportBase: number): Promise<void> {
  assert.ok(t.nfqlb.proc && !t.nfqlb.proc.status, `${what}: the lb is gone:\n${t.nfqlb.proc?.describe()}`);
  for (const fam of [4, 6] as Family[]) await checkSpread(t, fam, "udp", 60, sportBase + fam * 100, 0.1);
}

/** Waits (bounded) until queue `q` is gone from the lb netns' nfnetlink_queue. */
async function queueGone(t: Topology, q: number): Promise<boolean> {
  return await waitUntil(async () => !(await t.queueStats()).has(q), 5000, 50);
}

/** Where each flow is answered now ("" = no answer), per family. */
async function observe(
  t: Topology,
  flows: Record<Family, Flow[]>,
  waitMs = 300,
): Promise<Record<Family, string[]>> {
  const out = {} as Record<Family, string[]>;
  for (const fam of [4, 6] as Family[]) {
    out[fam] = (await t.client.udp(fam, flows[fam], 1, waitMs)).targets.map((x) => x[0]);
  }
  return out;
}

/**
 * Probes every flow in rounds until each lands where `want` says (eventual
 * state: the lb re-maps a replaced table on its own schedule); at most
 * `rounds` rounds and `timeoutMs`. Returns the last observation.
 */
async function probeUntil(
  t: Topology,
  flows: Record<Family, Flow[]>,
  want: Record<Family, string[]>,
  rounds = 20,
  timeoutMs = 10_000,
): Promise<{ ok: boolean; last: Record<Family, string[]> }> {
  const end = Date.now() + timeoutMs;
  let last = {} as Record<Family, string[]>;
  for (let i = 0; i < rounds; i++) {
    last = await observe(t, flows);
    const ok = ([4, 6] as Family[]).every((fam) => last[fam].every((x, k) => x === want[fam][k]));
    if (ok) return { ok, last };
    if (Date.now() >= end) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { ok: false, last };
}

/** Flows whose target differs from `want`: how many, and a message. */
function misplaced(flows: Flow[], got: string[], want: string[]): { count: number; text: string } {
  const bad = flows.map((f, i) => (got[i] !== want[i] ? `${flowKey(f)} ${want[i]}->${got[i] || "lost"}` : ""))
    .filter((x) => x);
  return {
    count: bad.length,
    text: `${bad.length}/${flows.length} misplaced, e.g. ${bad.slice(0, 6).join(", ")}`,
  };
}

/** True when every thread of `pid` is stopped (state T/t). */
function frozen(pid: number): boolean {
  try {
    const tasks = [...Deno.readDirSync(`/proc/${pid}/task`)];
    return tasks.length > 0 && tasks.every((e) => {
      const s = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/stat`);
      const state = s.slice(s.lastIndexOf(")") + 2, s.lastIndexOf(")") + 3);
      return state === "T" || state === "t";
    });
  } catch {
    return false;
  }
}

/**
 * Waits (bounded) until `lb` catches SIGTERM and SIGINT (SigCgt in /proc).
 * startLb returns once the queue is bound, which is before `nfqlb lb` installs
 * its signal listeners: a SIGTERM in between kills it (status 143) instead of
 * stopping it (exit 0).
 */
async function signalsHandled(lb: Proc): Promise<void> {
  const caught = () => {
    try {
      const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(Deno.readTextFileSync(`/proc/${lb.pid}/status`));
      const mask = m ? BigInt("0x" + m[1]) : 0n;
      return (mask & (1n << 14n)) !== 0n && (mask & (1n << 1n)) !== 0n; // SIGTERM (15), SIGINT (2)
    } catch {
      return false;
    }
  };
  assert.ok(await waitUntil(caught, 20_000, 20), `lb does not catch SIGTERM/SIGINT:\n${lb.describe()}`);
}

/** The first executable `name` in PATH (or the usual system directories), if any. */
function which(name: string): string | undefined {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/bin", "/bin", "/usr/sbin", "/sbin"];
  for (const d of dirs.filter((x) => x)) {
    try {
      const st = Deno.statSync(`${d}/${name}`);
      if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return `${d}/${name}`;
    } catch { /* not here */ }
  }
  return undefined;
}

const SETPRIV = which("setpriv");
if (!notRoot && !SETPRIV) {
  console.log("e2e lb lifecycle: setpriv (util-linux) not found: the CAP_NET_ADMIN test is skipped");
}

// ---------------------------------------------------------------------------
// malformed packets

/** An IPv4 packet for an IPPROTO_RAW socket (the kernel fills in total length and checksum). */
function ip4(proto: number, payload: number[], o: { options?: number[]; frag?: number } = {}): Uint8Array {
  const opts = o.options ?? [];
  const ihl = 5 + opts.length / 4;
  const p = new Uint8Array(ihl * 4 + payload.length);
  const v = new DataView(p.buffer);
  p[0] = 0x40 | ihl;
  v.setUint16(4, 0x4242);
  v.setUint16(6, o.frag ?? 0);
  p[8] = 64;
  p[9] = proto;
  p.set(ipv4Bytes("10.213.0.1"), 12);
  p.set(ipv4Bytes(VIP[4]), 16);
  p.set(opts, 20);
  p.set(payload, ihl * 4);
  return p;
}

/** An IPv6 packet (header included) with the given next header and the rest as is. */
function ip6(next: number, rest: number[]): Uint8Array {
  const p = new Uint8Array(40 + rest.length);
  const v = new DataView(p.buffer);
  v.setUint32(0, 0x60000000);
  v.setUint16(4, rest.length);
  p[6] = next;
  p[7] = 64;
  p.set(ipv6Bytes("fd13::1"), 8);
  p.set(ipv6Bytes(VIP[6]), 24);
  p.set(rest, 40);
  return p;
}

/** ICMP "fragmentation needed" (type 3 code 4, next-hop MTU 1400) quoting `quoted`. */
function fragNeeded(quoted: number[]): number[] {
  return [3, 4, 0, 0, 0, 0, 0x05, 0x78, ...quoted];
}

/** A quoted VIP->client IPv4 header whose IHL says 15 (60 bytes) where only its 20 bytes follow. */
const IHL15_QUOTE = [
  0x4f,
  0,
  0,
  28,
  0,
  1,
  0,
  0,
  64,
  6,
  0,
  0,
  ...ipv4Bytes(VIP[4]),
  ...ipv4Bytes("10.213.0.1"),
];

/**
 * Malformed packets that pass the kernel's own IP checks (which run before
 * PREROUTING: version, IHL >= 5, IHL*4 <= length, header checksum, IPv6
 * payload length, hop-by-hop options), so they reach the queue and the lb's
 * parser. An IHL of 15 with a packet shorter than 60 bytes is refused by the
 * sender's kernel (EINVAL) and dropped by the receiver's ip_rcv before any
 * hook, so IHL 15 comes with 40 bytes of options here; what follows them is
 * truncated.
 */
const MALFORMED: { name: string; fam: Family; pkt: Uint8Array }[] = [
  { name: "TCP, 2 bytes", fam: 4, pkt: ip4(6, [0x12, 0x34]) },
  { name: "TCP, no header", fam: 4, pkt: ip4(6, []) },
  { name: "UDP, 3 bytes", fam: 4, pkt: ip4(17, [1, 2, 3]) },
  { name: "SCTP, 3 bytes", fam: 4, pkt: ip4(132, [0x13, 0x88, 0x13]) },
  {
    name: "IHL 15 (NOP options), TCP 2 bytes",
    fam: 4,
    pkt: ip4(6, [0x12, 0x34], { options: Array(40).fill(1) }),
  },
  {
    name: "IHL 15 (garbage options), UDP, nothing",
    fam: 4,
    pkt: ip4(17, [], { options: Array(40).fill(0xff) }),
  },
  { name: "first fragment, TCP 2 bytes", fam: 4, pkt: ip4(6, [0x12, 0x34], { frag: 0x2000 }) },
  { name: "orphan last fragment, UDP", fam: 4, pkt: ip4(17, Array(8).fill(7), { frag: 185 }) },
  { name: "ICMP, 2 bytes", fam: 4, pkt: ip4(1, [3, 4]) },
  { name: "ICMP frag-needed quoting IHL 15 in 20 bytes", fam: 4, pkt: ip4(1, fragNeeded(IHL15_QUOTE)) },
  { name: "ICMP frag-needed quoting nothing", fam: 4, pkt: ip4(1, fragNeeded([])) },
  { name: "protocol 253, nothing", fam: 4, pkt: ip4(253, []) },
  { name: "TCP, 2 bytes", fam: 6, pkt: ip6(6, [0x12, 0x34]) },
  { name: "UDP, nothing", fam: 6, pkt: ip6(17, []) },
  { name: "destination options claiming 2048 bytes", fam: 6, pkt: ip6(60, [6, 255, 1, 4, 0, 0, 0, 0]) },
  {
    name: "40 destination-options headers, then TCP 2 bytes",
    fam: 6,
    pkt: ip6(60, [
      ...Array.from({ length: 40 }, (_, i) => [i === 39 ? 6 : 60, 0, 1, 4, 0, 0, 0, 0]).flat(),
      0x12,
      0x34,
    ]),
  },
  { name: "first fragment, TCP 2 bytes", fam: 6, pkt: ip6(44, [6, 0, 0, 1, 0, 0, 0x42, 0x42, 0x12, 0x34]) },
  {
    name: "orphan last fragment, UDP",
    fam: 6,
    pkt: ip6(44, [17, 0, 0x05, 0xa8, 0, 0, 0x42, 0x43, ...Array(8).fill(7)]),
  },
  { name: "fragment header cut short", fam: 6, pkt: ip6(44, [6, 0, 0]) },
  { name: "packet-too-big quoting 4 bytes", fam: 6, pkt: ip6(58, [2, 0, 0, 0, 0, 0, 5, 0, 0x60, 0, 0, 0]) },
  { name: "routing header, TCP 2 bytes", fam: 6, pkt: ip6(43, [6, 0, 4, 0, 0, 0, 0, 0, 0x12, 0x34]) },
  { name: "no next header", fam: 6, pkt: ip6(59, []) },
];

/** Sends raw packets (IPPROTO_RAW, header included) from a namespace; prints {sent, errors}. */
const RAW_SENDER = `
import { IPPROTO_RAW, SOCK_RAW, Socket } from ${
  JSON.stringify(new URL("../harness/libc.ts", import.meta.url).href)
};
const c = JSON.parse(Deno.args[0]);
const s = Socket.open(c.dst, SOCK_RAW, IPPROTO_RAW);
let sent = 0;
const errors = [];
try {
  s.timeouts(1000);
  for (let k = 0; k < c.repeat; k++) {
    for (const h of c.packets) {
      const b = Uint8Array.from(h.match(/../g).map((x) => parseInt(x, 16)));
      if (s.sendTo(b, c.dst)) sent++;
      else errors.push(s.lastErrno);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
  }
} finally {
  s.close();
}
console.log(JSON.stringify({ sent, errors: errors.slice(0, 10) }));
`;

/** Sends `packets` `repeat` times from the client namespace to the VIP of `fam`. */
async function sendRaw(t: Topology, fam: Family, packets: Uint8Array[], repeat: number): Promise<number> {
  const script = `${t.workDir}/raw_sender.ts`;
  Deno.writeTextFileSync(script, RAW_SENDER);
  const r = await t.exec(t.ns.cli, [
    Deno.execPath(),
    ..."run -A --quiet --no-prompt --no-config".split(" "),
    script,
    JSON.stringify({ dst: VIP[fam], repeat, packets: packets.map(hex) }),
  ], { timeoutMs: 60_000 });
  const out = JSON.parse(r.stdout) as { sent: number; errors: number[] };
  assert.equal(out.sent, packets.length * repeat, `raw send ipv${fam}: ${r.stdout}`);
  return out.sent;
}

// ---------------------------------------------------------------------------
// the tests

Deno.test({
  name: "e2e lb lifecycle: SIGTERM and SIGINT: the lb exits 0 and unbinds its queue",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = await base();
    dirty = true;
    for (const sig of ["SIGTERM", "SIGINT"] as Deno.Signal[]) {
      if (!t.nfqlb.proc) await signalsHandled(await t.nfqlb.startLb());
      await mapFlows(t, 4, "udp", t.flows(4, 10, 31000));
      assert.ok((await t.queueStats()).has(QUEUE), `queue ${QUEUE} bound while the lb runs`);
      const r = await t.nfqlb.stopLb(10_000, sig);
      assert.ok(r, "an lb was running");
      assert.deepEqual(
        { code: r.status.code, signal: r.status.signal },
        { code: 0, signal: null },
        `lb exit on ${sig}:\n${r.stderr}`,
      );
      assert.equal(r.stderr, "", `lb stderr on ${sig}`);
      assert.ok(await queueGone(t, QUEUE), `queue ${QUEUE} still in nfnetlink_queue after ${sig}`);
    }
  },
});

Deno.test({
  name: "e2e lb lifecycle: a queue bound by another process: exit 1, one line; the first lb keeps balancing",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = await base();
    const before = (await t.queueStats()).get(QUEUE);
    assert.ok(before, `queue ${QUEUE} bound`);
    const r = await lbOnce(t, [
      `--tshm=${t.shm}`,
      `--queue=${QUEUE}`,
      `--ft_shm=${t.ftShm}-second`,
      `--trace_address=unix:${t.traceName}-second`,
    ]);
    assert.equal(r.code, 1, `second lb exit code (stderr: ${r.stderr})`);
    const err = lines(r.stderr);
    assert.equal(err.length, 1, `second lb stderr must be one line:\n${r.stderr}`);
    assert.match(err[0], new RegExp(`queue ${QUEUE}\\b.*already bound by another process`));
    assert.equal(
      (await t.queueStats()).get(QUEUE)?.portid,
      before.portid,
      "the queue still belongs to the first lb",
    );
    await assertStillBalancing(t, "after a second lb on the same queue", 32000);
  },
});

Deno.test({
  name: "e2e lb lifecycle: without CAP_NET_ADMIN (setpriv): exit 1, one line naming CAP_NET_ADMIN",
  ignore: notRoot || !SETPRIV,
  ...SHARED,
  async fn() {
    const t = await base();
    const r = await lbOnce(t, [
      `--tshm=${t.shm}`,
      `--queue=${FREE_QUEUE}`,
      `--ft_shm=${t.ftShm}-nocap`,
      `--trace_address=unix:${t.traceName}-nocap`,
    ], [SETPRIV!, "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"]);
    assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
    const err = lines(r.stderr);
    assert.equal(err.length, 1, `stderr must be one line:\n${r.stderr}`);
    assert.match(err[0], /CAP_NET_ADMIN/);
    assert.ok(!(await t.queueStats()).has(FREE_QUEUE), `queue ${FREE_QUEUE} must not be bound`);
    await assertStillBalancing(t, "after the unprivileged lb", 33000);
  },
});

Deno.test({
  name: "e2e lb lifecycle: --tshm=nosuch: exit 1, stderr exactly 'FAILED mapSharedData: nosuch'",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = await base();
    const r = await lbOnce(t, [
      "--tshm=nosuch",
      `--queue=${FREE_QUEUE}`,
      `--ft_shm=${t.ftShm}-nosuch`,
      `--trace_address=unix:${t.traceName}-nosuch`,
    ]);
    assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
    assert.equal(r.stderr, "FAILED mapSharedData: nosuch\n");
    assert.ok(!(await t.queueStats()).has(FREE_QUEUE), `queue ${FREE_QUEUE} must not be bound`);
  },
});

Deno.test({
  name: "e2e lb lifecycle: init on the table of a running lb: the lb follows the new table",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = await base();
    dirty = true;
    const flows: Record<Family, Flow[]> = { 4: t.flows(4, 30, 34000), 6: t.flows(6, 30, 34000) };
    const orig: Record<Family, string[]> = {
      4: await mapFlows(t, 4, "udp", flows[4]),
      6: await mapFlows(t, 6, "udp", flows[6]),
    };
    for (const fam of [4, 6] as Family[]) {
      assert.deepEqual(
        Object.keys(tally(orig[fam])).sort(),
        t.targetNames,
        `ipv${fam} flows on every target`,
      );
    }
    const all = (name: string) => ({ 4: flows[4].map(() => name), 6: flows[6].map(() => name) });

    // a fresh (empty) table, then 103 only: everything must go to t3
    await t.nfqlb.run(["init", `--shm=${t.shm}`, "--M=997", "--N=32"]);
    await t.nfqlb.activate(T3);
    let r = await probeUntil(t, flows, all("t3"));
    for (const fam of [4, 6] as Family[]) {
      assert.ok(r.ok, `ipv${fam} after init + activate ${T3}: ${JSON.stringify(tally(r.last[fam]))}`);
    }
    assert.ok(t.nfqlb.proc && !t.nfqlb.proc.status, `the lb died:\n${t.nfqlb.proc?.describe()}`);

    // 101 102 join in the free rows 1 and 2 (103 holds row 0): the Maglev lookup is the one of the
    // first table (same rows, M, N), so a flow of row 0/1/2 (t1/t2/t3 before) is now on t3/t1/t2.
    await t.nfqlb.activate(T1, T2);
    const rotated = { t1: "t3", t2: "t1", t3: "t2" } as Record<string, string>;
    const want: Record<Family, string[]> = {
      4: orig[4].map((x) => rotated[x]),
      6: orig[6].map((x) => rotated[x]),
    };
    const now = await observe(t, flows, 1000);
    for (const fam of [4, 6] as Family[]) {
      const m = misplaced(flows[fam], now[fam], want[fam]);
      assert.equal(m.count, 0, `ipv${fam} after activate ${T1} ${T2}: ${m.text}`);
      for (let i = 0; i < 3; i++) {
        assert.equal(
          now[fam][i],
          await tableTarget(t, fam, "udp", flows[fam][i]),
          `ipv${fam} ${flowKey(flows[fam][i])}`,
        );
      }
    }

    // init again and activate 101 102 103 in order: the first table, so every flow returns
    await t.nfqlb.initTargets();
    r = await probeUntil(t, flows, orig);
    for (const fam of [4, 6] as Family[]) {
      assert.ok(
        r.ok,
        `ipv${fam} after init + activate ${T1} ${T2} ${T3}: ${
          misplaced(flows[fam], r.last[fam], orig[fam]).text
        }`,
      );
    }
    assert.ok(t.nfqlb.proc && !t.nfqlb.proc.status, `the lb died:\n${t.nfqlb.proc?.describe()}`);
    const st = await t.nfqlb.stopLb();
    assert.equal(st?.status.code, 0, `lb exit:\n${st?.stderr}`);
  },
});

/** `nfqlb stats --ft_shm` as parsed JSON. */
async function stats(t: Topology): Promise<Record<string, number>> {
  const r = await t.nfqlb.run(["stats", `--ft_shm=${t.ftShm}`]);
  try {
    return JSON.parse(r.stdout) as Record<string, number>;
  } catch (e) {
    throw new Error(`nfqlb stats printed no valid JSON (${e}):\n${r.stdout}`);
  }
}

Deno.test({
  name: "e2e lb lifecycle: nfqlb stats --ft_shm prints valid JSON that counts fragmented datagrams",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = await base();
    const s0 = await stats(t);
    assert.equal(s0.hsize, 500, JSON.stringify(s0));
    assert.equal(s0.mtu, 1500, JSON.stringify(s0));
    for (const k of ["inserts", "lookups", "collisions", "rejected", "objGC", "ttlMillis"]) {
      assert.equal(typeof s0[k], "number", `${k} in ${JSON.stringify(s0)}`);
    }
    let answered = 0;
    for (const fam of [4, 6] as Family[]) {
      const r = await t.client.udp(fam, t.flows(fam, 15, 35000), 1, 1000, 3000);
      const names = r.targets.map((x) => x[0]);
      assert.equal(
        tally(names)[""] ?? 0,
        0,
        `ipv${fam} fragmented datagrams unanswered: ${JSON.stringify(tally(names))}`,
      );
      answered += names.length;
    }
    const s1 = await stats(t);
    const d = { inserts: s1.inserts - s0.inserts, lookups: s1.lookups - s0.lookups };
    // one entry per datagram (at least), and every fragment (2 or 3 per datagram) looked up
    assert.ok(
      d.inserts >= answered,
      `inserts grew by ${d.inserts} for ${answered} datagrams: ${JSON.stringify(s1)}`,
    );
    assert.ok(
      d.lookups >= 2 * answered,
      `lookups grew by ${d.lookups} for ${answered} datagrams: ${JSON.stringify(s1)}`,
    );
    assert.equal(s1.hsize, 500);
    assert.equal(s1.mtu, 1500);
  },
});

/** Packets to the IPv4 VIP forwarded without a mark, counted in the lb netns (mangle FORWARD). */
async function unmarked(t: Topology): Promise<number> {
  const r = await t.exec(t.ns.lb, ["iptables", "-w", "-t", "mangle", "-nvxL", "FORWARD"]);
  const line = r.stdout.split("\n").find((l) => l.includes("/* e2e-unmarked */"));
  assert.ok(line, `counter rule missing:\n${r.stdout}`);
  return Number(line.trim().split(/\s+/)[0]);
}

Deno.test({
  name:
    "e2e lb lifecycle: --fail_open: a full queue lets packets through unmarked; without it they are dropped",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = await base();
    dirty = true;
    await t.nfqlb.stopLb();
    // Packets accepted by fail-open carry no mark, so the fwmark rules do not route them; the lb
    // netns has no route to the VIP of its own, so they would die in routing before any counter.
    // A fallback route (to t1) lets them reach mangle FORWARD, where the counter sees them.
    const route = [`${VIP[4]}/32`, "via", "10.213.1.1"];
    const rule = (op: string) => [
      ...["iptables", "-w", "-t", "mangle", op, "FORWARD", "-d", `${VIP[4]}/32`],
      ...["-m", "mark", "--mark", "0", "-m", "comment", "--comment", "e2e-unmarked"],
    ];
    await t.exec(t.ns.lb, ["ip", "route", "add", ...route]);
    await t.exec(t.ns.lb, rule("-A"));
    try {
      const n = 10;
      for (const failOpen of [true, false]) {
        const what = failOpen ? "--fail_open" : "no --fail_open";
        const lb: Proc = await t.nfqlb.startLb(["--qlength=1", ...(failOpen ? ["--fail_open"] : [])]);
        await signalsHandled(lb);
        let c0 = 0, c1 = 0, q0 = 0, q1 = 0;
        let names: string[] = [];
        try {
          lb.signal("SIGSTOP");
          assert.ok(await waitUntil(() => frozen(lb.pid), 10_000, 50), `lb (pid ${lb.pid}) did not stop`);
          c0 = await unmarked(t);
          q0 = (await t.queueStats()).get(QUEUE)?.dropped ?? -1;
          // the first probe fills the queue (qlength 1) and waits there; the others overflow it
          // (answers come at once with --fail_open; without, every probe waits out its time)
          const r = await t.client.udp(4, t.flows(4, n, failOpen ? 36000 : 36100), 1, failOpen ? 1500 : 300);
          names = r.targets.map((x) => x[0]);
          c1 = await unmarked(t);
          q1 = (await t.queueStats()).get(QUEUE)?.dropped ?? -1;
        } finally {
          lb.signal("SIGCONT");
        }
        const st = await t.nfqlb.stopLb();
        assert.equal(st?.status.code, 0, `${what}: lb exit after SIGSTOP/SIGCONT:\n${st?.stderr}`);
        const seen = { unmarked: c1 - c0, queueDropped: q1 - q0, answers: tally(names) };
        if (failOpen) {
          assert.deepEqual(
            seen,
            { unmarked: n - 1, queueDropped: 0, answers: { "": 1, t1: n - 1 } },
            `${what}: the probes beyond the queue length must pass unmarked (to t1 by the fallback route)`,
          );
        } else {
          assert.deepEqual(
            seen,
            { unmarked: 0, queueDropped: n - 1, answers: { "": n } },
            `${what}: the probes beyond the queue length must be dropped`,
          );
        }
      }
    } finally {
      await t.exec(t.ns.lb, ["ip", "route", "del", ...route], { allowFail: true });
      await t.exec(t.ns.lb, rule("-D"), { allowFail: true });
    }
  },
});

Deno.test({
  name: "e2e lb lifecycle: malformed IPv4/IPv6 packets reach the lb, which survives and keeps balancing",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = await base();
    const repeat = 5;
    const q0 = (await t.queueStats()).get(QUEUE)?.seq ?? 0;
    let sent = 0;
    for (const fam of [4, 6] as Family[]) {
      sent += await sendRaw(t, fam, MALFORMED.filter((m) => m.fam === fam).map((m) => m.pkt), repeat);
    }
    // every one passes the kernel's checks, so every one must have been handed to the lb
    assert.ok(
      await waitUntil(async () => ((await t.queueStats()).get(QUEUE)?.seq ?? 0) - q0 >= sent, 5000, 50),
      `only ${
        ((await t.queueStats()).get(QUEUE)?.seq ?? 0) - q0
      } of ${sent} malformed packets reached queue ${QUEUE}`,
    );
    await assertStillBalancing(
      t,
      `after malformed packets (${MALFORMED.map((m) => `ipv${m.fam} ${m.name}`).join("; ")})`,
      37000,
    );
    for (const fam of [4, 6] as Family[]) await checkSpread(t, fam, "tcp", 60, 37500 + fam * 100, 0.1);
  },
});

Deno.test({
  name: "e2e lb lifecycle: teardown of the shared topology",
  ignore: notRoot,
  ...SHARED,
  async fn() {
    const t = shared;
    shared = undefined;
    if (!t) return;
    const st = await t.nfqlb.stopLb();
    await t.teardown();
    if (st) assert.equal(st.status.code, 0, `lb exit at teardown:\n${st.stderr}`);
  },
});
