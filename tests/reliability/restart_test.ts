/**
 * Reliability: `lb` and `flowlb` restarted under traffic, on the real kernel
 * (tests/harness Topology: client, lb, 3 targets).
 *
 * The VIP's traffic goes to NFQUEUE 2 with --queue-bypass, and the lb
 * netns' main table routes the VIP to target t1: while no program is bound
 * to the queue, the kernel passes the datagrams and they reach t1
 * (unbalanced), as an operator's fallback route would take them. The client
 * sends UDP at a fixed rate for a bounded time (`blast`), answered by echo
 * servers with large receive buffers in the targets (`echo`), and counts
 * sent and answered datagrams per 10 ms of send time. A sampler reads the
 * lb netns' /proc/net/netfilter/nfnetlink_queue every few ms (through a
 * process living there) and keeps, per binding (portid), when it appeared,
 * when its first packet left the queue, and its kernel drops (queue_dropped
 * + user_dropped).
 *
 * - SIGTERM the lb, start a new one: no kernel queue drop across the
 *   restart, every datagram answered; per phase (old lb, stopping, no lb,
 *   new lb) what was sent and who answered; the new lb's start (spawn to
 *   first packet out of the queue) is measured and printed, asserted only
 *   against a generous bound.
 * - The same for `flowlb` (its flows come back from its `--flow_store` file before it binds).
 * - SIGKILL the lb: what the kernel had queued for it is lost (at most the
 *   queue's length), traffic continues unbalanced through t1 while no lb
 *   runs, and a new lb takes over without a kernel drop.
 * - The kernel's drops themselves (an lb frozen with SIGSTOP under traffic
 *   overflows its queue) are what `stats --all` and `/metrics` show.
 *
 * Figures are printed with a `restart:` prefix. Needs root (skipped otherwise).
 */
import assert from "node:assert/strict";
import { VIP } from "../harness/addresses.ts";
import type { BlastResult } from "../harness/agent/types.ts";
import { parseQueueStats, skipUnlessRoot } from "../harness/netns.ts";
import { w } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { type Blast, blastSum } from "../harness/traffic.ts";

const notRoot = skipUnlessRoot();
const QUEUE = 2;
/** UDP port of the targets' echo servers (the setup's own servers answer on UDP_PORT). */
const ECHO_PORT = 7001;
/** Datagrams per second (NFQLB_RESTART_PPS overrides). */
const PPS = Number(Deno.env.get("NFQLB_RESTART_PPS") ?? 20_000);
/** Client flows: enough for all 3 targets to get some. */
const FLOWS = 48;
/** Traffic before and after each event, ms. */
const SETTLE_MS = 1000;
/** The generous bound on lb's start (spawn to first packet out of the queue), ms. */
const START_BOUND_MS = 2000;
/** The queue's length (lb's default --qlength): the most a killed lb can leave unanswered. */
const QLENGTH = 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One binding of the queue as the sampler saw it (times: Date.now() ms). */
interface Binding {
  portid: number;
  /** First sample that showed it. */
  seen: number;
  /** First sample in which a packet had left the queue (-1: none yet). */
  firstOut: number;
  /** Largest queue_dropped + user_dropped seen. */
  drops: number;
  /** First sample that showed a drop (-1: none), last sample that showed the binding. */
  firstDrop: number;
  lastSeen: number;
}

/**
 * Reads the lb netns' nfnetlink_queue every `everyMs` through /proc/<pid>/net of
 * a process living in that netns, until stop() or `maxMs`.
 */
class QueueWatch {
  readonly bindings = new Map<number, Binding>();
  #stop = false;
  #done: Promise<void>;

  constructor(nsPid: number, everyMs = 2, maxMs = 120_000) {
    this.#done = (async () => {
      const end = Date.now() + maxMs;
      for (let i = 0; !this.#stop && Date.now() < end && i < maxMs; i++) {
        let text = "";
        try {
          text = Deno.readTextFileSync(`/proc/${nsPid}/net/netfilter/nfnetlink_queue`);
        } catch { /* the holder is gone: nothing to see */ }
        const q = parseQueueStats(text).get(QUEUE);
        const now = Date.now();
        if (q) {
          const b = this.bindings.get(q.portid) ??
            { portid: q.portid, seen: now, firstOut: -1, drops: 0, firstDrop: -1, lastSeen: now };
          if (b.firstOut < 0 && q.seq - q.total - q.dropped - q.userDropped > 0) b.firstOut = now;
          b.drops = Math.max(b.drops, q.dropped + q.userDropped);
          if (b.firstDrop < 0 && b.drops > 0) b.firstDrop = now;
          b.lastSeen = now;
          this.bindings.set(q.portid, b);
        }
        await sleep(everyMs);
      }
    })();
  }

  /** Kernel drops over every binding seen. */
  get drops(): number {
    return [...this.bindings.values()].reduce((n, b) => n + b.drops, 0);
  }

  /** Each binding's drops and when they were first seen (relative to its bind), for messages. */
  describe(): string {
    return [...this.bindings.values()].map((b) =>
      `portid ${b.portid}: ${b.drops} drops${
        b.firstDrop < 0 ? "" : ` (first seen ${b.firstDrop - b.seen} ms after its bind)`
      }`
    ).join("; ");
  }

  /** The last binding that was seen before `t`. */
  before(t: number): Binding | undefined {
    return [...this.bindings.values()].filter((b) => b.seen < t).sort((a, b) => b.seen - a.seen)[0];
  }

  /** The first binding that appeared at or after `t`. */
  after(t: number): Binding | undefined {
    return [...this.bindings.values()].filter((b) => b.seen >= t).sort((a, b) => a.seen - b.seen)[0];
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }
}

/** What was sent in [from, to) (Date.now() ms, by send time) and who answered it. */
interface Phase {
  name: string;
  from: number;
  to: number;
  sent: number;
  answered: number;
  byTarget: Record<string, number>;
}

function phase(r: BlastResult, name: string, from: number, to: number): Phase {
  const byTarget: Record<string, number> = {};
  for (const [k, v] of Object.entries(r.byTarget)) {
    const n = blastSum(r, v, from, to);
    if (n) byTarget[k] = n;
  }
  return {
    name,
    from,
    to,
    sent: blastSum(r, r.sent, from, to),
    answered: blastSum(r, r.answered, from, to),
    byTarget,
  };
}

function show(p: Phase, t0: number): string {
  return `${p.name} [${p.from - t0}, ${p.to - t0}) ms: sent ${p.sent}, answered ${p.answered} ${
    JSON.stringify(p.byTarget)
  }`;
}

/**
 * The lab: queue 2 with --queue-bypass, the VIP routed to t1 in the lb
 * netns' main table, echo servers, the target table 101 102 103, a process
 * holding the lb netns for the sampler.
 */
async function lab(): Promise<{ t: Topology; holderPid: number }> {
  const t = await Topology.create({ steering: { mode: "nfqueue", queue: QUEUE, bypass: true } });
  try {
    await t.exec(t.ns.lb, w(`ip route add ${VIP[4]}/32 via 10.213.1.1`));
    await t.startEchoServers(ECHO_PORT);
    await t.nfqlb.initTargets();
    const holder = t.spawn(t.ns.lb, "netns holder", w("sleep 600"));
    return { t, holderPid: holder.pid };
  } catch (e) {
    await t.teardown();
    throw e;
  }
}

async function startBlast(t: Topology): Promise<Blast> {
  return await t.client.startBlast(4, t.flows(4, FLOWS), {
    pps: PPS,
    durationMs: 60_000,
    port: ECHO_PORT,
    waitMs: 1000,
  });
}

/**
 * SIGTERM the running lb/flowlb, start a new one (`start`), and check the
 * restart: no kernel drop, every datagram answered, the new one balances.
 */
async function restartUnderTraffic(
  what: string,
  start: (t: Topology) => Promise<unknown>,
): Promise<void> {
  const { t, holderPid } = await lab();
  await using _ = t;
  await start(t);
  const watch = new QueueWatch(holderPid);
  let blast: Blast | undefined;
  try {
    blast = await startBlast(t);
    await sleep(SETTLE_MS);
    const tTerm = Date.now();
    const old = await t.nfqlb.stopLb();
    const tExit = Date.now();
    assert.equal(old?.status.code, 0, `${what}: the old one did not exit 0 on SIGTERM:\n${old?.stderr}`);
    const tSpawn = Date.now();
    await start(t);
    await sleep(SETTLE_MS);
    blast.stop();
    const r = await blast.result();
    await watch.stop();
    const end = r.t0 + r.sent.length * r.bucketMs;
    const fresh = watch.after(tSpawn);
    assert.ok(fresh && fresh.firstOut > 0, `${what}: the new one never passed a packet`);
    const phases = [
      phase(r, "old", r.t0, tTerm),
      phase(r, "stopping", tTerm, tExit),
      phase(r, "none", tExit, fresh.seen),
      phase(r, "new", fresh.seen, end),
    ];
    const sent = blastSum(r, r.sent), answered = blastSum(r, r.answered);
    const startMs = fresh.firstOut - tSpawn;
    console.log(
      `restart: ${what} SIGTERM + start at ${PPS} pps: sent ${sent}, answered ${answered}, kernel queue drops ${watch.drops}; ` +
        `stop took ${tExit - tTerm} ms; new ${what}: spawn to bound ${
          fresh.seen - tSpawn
        } ms, to first packet out ${startMs} ms`,
    );
    for (const p of phases) console.log(`restart:   ${show(p, r.t0)}`);
    assert.equal(watch.drops, 0, `${what}: kernel queue drops across the restart: ${watch.describe()}`);
    assert.equal(answered, sent, `${what}: ${sent - answered} datagrams unanswered`);
    assert.deepEqual(Object.keys(phases[3].byTarget).sort(), t.targetNames, `${what}: the new one balances`);
    assert.ok(startMs < START_BOUND_MS, `${what}: start took ${startMs} ms`);
  } finally {
    blast?.stop();
    await watch.stop();
  }
}

Deno.test({
  name: "restart: lb SIGTERM + new lb under UDP traffic with --queue-bypass: no kernel drop, all answered",
  ignore: notRoot,
  async fn() {
    await restartUnderTraffic("lb", (t) => t.nfqlb.startLb());
  },
});

Deno.test({
  name: "restart: flowlb SIGTERM + new flowlb under traffic: flows restored before the bind, no drop",
  ignore: notRoot,
  async fn() {
    let first = true;
    await restartUnderTraffic("flowlb", async (t) => {
      // flows are saved only with --flow_store (opt-in, as upstream keeps none): the next flowlb restores
      // them from that file before it binds
      await t.nfqlb.startFlowLb([`--flow_store=${t.workDir}/flows.json`]);
      if (first) {
        await t.nfqlb.run(
          w(`flow-set --name=vip --target=${t.shm} --protocols=udp --dsts=${
            VIP[4]
          }/32 --dports=${ECHO_PORT}`),
        );
        first = false;
      }
    });
  },
});

Deno.test({
  name: "restart: lb SIGKILL under traffic: unbalanced via the bypass while none runs, a new lb takes over",
  ignore: notRoot,
  async fn() {
    const { t, holderPid } = await lab();
    await using _ = t;
    await t.nfqlb.startLb();
    const watch = new QueueWatch(holderPid);
    let blast: Blast | undefined;
    try {
      blast = await startBlast(t);
      await sleep(SETTLE_MS);
      const tKill = Date.now();
      const old = await t.nfqlb.stopLb(1000, "SIGKILL");
      assert.equal(old?.status.signal, "SIGKILL");
      await sleep(SETTLE_MS / 2); // no lb at all meanwhile
      const tSpawn = Date.now();
      await t.nfqlb.startLb();
      await sleep(SETTLE_MS);
      blast.stop();
      const r = await blast.result();
      await watch.stop();
      const end = r.t0 + r.sent.length * r.bucketMs;
      const fresh = watch.after(tSpawn);
      assert.ok(fresh && fresh.firstOut > 0, "the new lb never passed a packet");
      // the killed lb's queue goes when the kernel has released its socket (sampled: at most a few ms later)
      const gone = (watch.before(tKill)?.lastSeen ?? tKill) + 5;
      // two buckets' margin on each side of the events
      const margin = 2 * r.bucketMs;
      const phases = [
        phase(r, "old", r.t0, gone),
        phase(r, "none", gone + margin, fresh.seen - margin),
        phase(r, "new", fresh.seen, end),
      ];
      const sent = blastSum(r, r.sent), answered = blastSum(r, r.answered);
      const newDrops = fresh.drops;
      console.log(
        `restart: lb SIGKILL + start at ${PPS} pps: sent ${sent}, answered ${answered} (lost ${
          sent - answered
        }, what the killed lb had queued), its queue gone ${
          gone - 5 - tKill
        } ms after the SIGKILL; new lb's kernel queue drops ${newDrops}; ` +
          `new lb: spawn to bound ${fresh.seen - tSpawn} ms, to first packet out ${
            fresh.firstOut - tSpawn
          } ms`,
      );
      for (const p of phases) console.log(`restart:   ${show(p, r.t0)}`);
      assert.ok(sent - answered <= QLENGTH, `${sent - answered} lost: more than a queue's length`);
      const none = phases[1];
      assert.ok(none.sent > 0, "no traffic while no lb ran");
      assert.equal(none.answered, none.sent, "while no lb runs every datagram passes through the bypass");
      assert.deepEqual(Object.keys(none.byTarget), ["t1"], "while no lb runs: the main table's route (t1)");
      const fresher = phases[2];
      assert.equal(fresher.answered, fresher.sent, "every datagram answered once the new lb runs");
      assert.deepEqual(Object.keys(fresher.byTarget).sort(), t.targetNames, "the new lb balances");
      assert.equal(newDrops, 0, `kernel queue drops of the new lb: ${watch.describe()}`);
    } finally {
      blast?.stop();
      await watch.stop();
    }
  },
});

/** Run by `deno eval` in the lb netns: GET http://HOST:PORT/PATH over a raw connection (no proxy settings), body on stdout. */
const HTTP_GET = `
const [host, port, path] = Deno.args;
const c = await Deno.connect({ hostname: host, port: Number(port) });
await c.write(new TextEncoder().encode("GET " + path + " HTTP/1.0\\r\\nHost: " + host + "\\r\\n\\r\\n"));
let text = "";
const buf = new Uint8Array(65536), dec = new TextDecoder();
for (let i = 0; i < 4096; i++) {
  const n = await c.read(buf);
  if (n === null) break;
  text += dec.decode(buf.subarray(0, n), { stream: true });
}
c.close();
console.log(text.slice(text.indexOf("\\r\\n\\r\\n") + 4));
`;

Deno.test({
  name: "restart: the kernel's queue drops show in stats --all and /metrics (lb frozen under traffic)",
  ignore: notRoot,
  async fn() {
    const { t, holderPid } = await lab();
    await using _ = t;
    const qlength = 16, port = 9464;
    const lb = await t.nfqlb.startLb([`--qlength=${qlength}`, `--metrics=127.0.0.1:${port}`]);
    const kernel = () =>
      parseQueueStats(Deno.readTextFileSync(`/proc/${holderPid}/net/netfilter/nfnetlink_queue`)).get(QUEUE);
    let blast: Blast | undefined;
    try {
      lb.signal("SIGSTOP"); // nobody reads: the queue fills, the kernel drops the rest
      blast = await t.client.startBlast(4, t.flows(4, FLOWS), {
        pps: 2000,
        durationMs: 300,
        port: ECHO_PORT,
      });
      const sent = blastSum(await blast.result(), (await blast.result()).sent);
      const q = kernel();
      assert.ok(q && q.dropped > 0, `the kernel dropped nothing: ${JSON.stringify(q)}`);
      // read while the lb is still frozen: the kernel's counters cannot move meanwhile
      const all = JSON.parse((await t.nfqlb.run(["stats", `--ft_shm=${t.ftShm}`, "--all"])).stdout) as {
        queues: { queue: number; kernel: { queue_dropped: number; user_dropped: number } | null }[];
      };
      const shown = all.queues.find((x) => x.queue === QUEUE)?.kernel;
      assert.deepEqual(shown && { q: shown.queue_dropped, u: shown.user_dropped }, {
        q: q.dropped,
        u: q.userDropped,
      });
      lb.signal("SIGCONT");
      const metrics = (await t.exec(t.ns.lb, [
        Deno.execPath(),
        ...w("eval --quiet --no-config"),
        HTTP_GET,
        "127.0.0.1",
        String(port),
        "/metrics",
      ], { timeoutMs: 30_000 })).stdout;
      const sample = (name: string) =>
        Number(new RegExp(`^${name}\\{queue="${QUEUE}"\\} (\\d+)$`, "m").exec(metrics)?.[1]);
      const after = kernel()!;
      assert.equal(sample("nfqlb_kernel_queue_dropped_packets_total"), after.dropped, metrics);
      assert.equal(sample("nfqlb_kernel_queue_user_dropped_packets_total"), after.userDropped, metrics);
      console.log(
        `restart: lb frozen, ${sent} datagrams, --qlength=${qlength}: kernel queue_dropped ${q.dropped}, user_dropped ${q.userDropped}; ` +
          "stats --all and /metrics show the same",
      );
    } finally {
      lb.signal("SIGCONT");
      blast?.stop();
    }
    const st = await t.nfqlb.stopLb();
    assert.equal(st?.status.code, 0, st?.stderr);
  },
});
