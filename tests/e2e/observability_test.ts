/**
 * End-to-end tests of the observability features (docs/observability.md) on
 * the real kernel: the counters shm that `nfqlb lb` / `flowlb` write, read
 * back with `nfqlb stats --all` (JSON), the Prometheus endpoint
 * (`--metrics=ADDR:PORT`), the live `stats --watch` table under a
 * pseudo-terminal, and the counters left behind after the lb stops.
 *
 * One topology (3 targets, iptables `--queue-balance 0:1`, `nfqlb lb
 * --queue=0:1`), reused by every step. Every figure is checked against what
 * was sent and answered (counts and sets): per target the probes each target
 * answered, per queue the kernel's id_sequence, bytes from the payload sizes.
 *
 * Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import { METRIC_FAMILIES, RENAMED_METRICS } from "../../dataplane/metric_families.ts";
import { promtool } from "../helpers/prom_text.ts";
import { type Family, FWBASE } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { NFQLB } from "../harness/paths.ts";
import { waitUntil } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { flowKey } from "../harness/traffic.ts";

const notRoot = skipUnlessRoot();

/** The metrics endpoint, on the lb namespace's loopback (the namespace is ours: any port is free). */
const METRICS_HOST = "127.0.0.1", METRICS_PORT = 9464;
/** Another address of the lb namespace (its client-side veth), where nothing must listen. */
const OTHER_HOST = "10.213.0.254";
/** IP + UDP header bytes per family. */
const HDR: Record<Family, number> = { 4: 20 + 8, 6: 40 + 8 };

/** The kernel's view of a queue in `stats --all` (snake_case keys). */
interface KernelQueueJson {
  queue: number;
  portid: number;
  waiting: number;
  copy_mode: number;
  copy_range: number;
  queue_dropped: number;
  user_dropped: number;
  id_sequence: number;
}

/** `nfqlb stats --all`, as printed (cli/commands/stats_view.ts). */
interface TargetCount {
  fwmark: number;
  packets: number;
  bytes: number;
  /** Only in `targets` (the sum over queues), not per queue. */
  queued_packets?: number;
  offloaded_packets?: number;
}
interface AllStats {
  lb: { kind: "lb" | "flowlb"; pid: number; running: boolean; started: string };
  totals: Record<string, number>;
  targets: TargetCount[];
  queues: {
    queue: number;
    counters: Record<string, number>;
    targets: TargetCount[];
    kernel: KernelQueueJson | null;
  }[];
  fragments: Record<string, number>;
}

async function allStats(topo: Topology): Promise<AllStats> {
  const r = await topo.nfqlb.run(["stats", `--ft_shm=${topo.ftShm}`, "--all"]);
  try {
    return JSON.parse(r.stdout) as AllStats;
  } catch (e) {
    throw new Error(`nfqlb stats --all printed no valid JSON (${e}):\n${r.stdout}\n${r.stderr}`);
  }
}

/** The counted figures of a snapshot (what must not change while no traffic flows). */
function figures(s: AllStats) {
  return {
    totals: s.totals,
    targets: s.targets,
    queues: s.queues.map((q) => ({ queue: q.queue, counters: q.counters, targets: q.targets })),
  };
}

/** Target name (t1..) → fwmark. */
function fwmarkOf(name: string): number {
  return FWBASE + Number(name.slice(1));
}

/** The result of one HTTP GET made from inside a namespace. */
interface HttpResult {
  ok: boolean;
  status?: number;
  head?: string;
  body?: string;
  error?: string;
}

/**
 * Run by `deno eval` inside a namespace: a raw HTTP/1.0 GET (no proxy
 * settings apply, a refused connection shows as such), bounded in reads.
 */
const HTTP_GET = `
const [host, port, path] = Deno.args;
try {
  const c = await Deno.connect({ hostname: host, port: Number(port) });
  await c.write(new TextEncoder().encode("GET " + path + " HTTP/1.0\\r\\nHost: " + host + "\\r\\nConnection: close\\r\\n\\r\\n"));
  const parts = [];
  const buf = new Uint8Array(65536);
  for (let i = 0; i < 4096; i++) {
    const n = await c.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
  }
  try { c.close(); } catch { /* closed */ }
  const all = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) { all.set(p, off); off += p.length; }
  const text = new TextDecoder().decode(all);
  const cut = text.indexOf("\\r\\n\\r\\n");
  const head = cut < 0 ? text : text.slice(0, cut);
  let body = cut < 0 ? "" : text.slice(cut + 4);
  if (/^transfer-encoding:\\s*chunked/im.test(head)) {
    let out = "", rest = body;
    for (let i = 0; i < 100000; i++) {
      const nl = rest.indexOf("\\r\\n");
      const size = parseInt(rest.slice(0, nl), 16);
      if (!(size > 0)) break;
      out += rest.slice(nl + 2, nl + 2 + size);
      rest = rest.slice(nl + 2 + size + 2);
    }
    body = out;
  }
  console.log(JSON.stringify({ ok: true, status: Number(head.split(" ")[1]), head, body }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: (e && e.name) + ": " + (e && e.message) }));
}
`;

async function httpGet(topo: Topology, host: string, port: number, path: string): Promise<HttpResult> {
  const r = await topo.exec(
    topo.ns.lb,
    [Deno.execPath(), "eval", "--quiet", "--no-config", HTTP_GET, host, String(port), path],
    { timeoutMs: 30_000 },
  );
  return JSON.parse(r.stdout) as HttpResult;
}

/** One sample of the Prometheus text format. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the exposition text; checks that every sample's family has HELP and TYPE lines before it. */
function parseMetrics(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (m) {
      if (m[1] === "HELP") helps.add(m[2]);
      else types.set(m[2], m[3]);
      continue;
    }
    assert.ok(!line.startsWith("#"), `unexpected comment line: ${line}`);
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    const value = Number(m[3]);
    assert.ok(!Number.isNaN(value), `not a number: ${line}`);
    assert.ok(types.has(m[1]) && helps.has(m[1]), `sample before its # HELP / # TYPE: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return { samples, types };
}

/** The samples of `name` as "label=value,..." → value. */
function series(samples: Sample[], name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples.filter((x) => x.name === name)) {
    const key = Object.entries(s.labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`)
      .join(",");
    assert.ok(!out.has(key), `duplicate sample ${name}{${key}}`);
    out.set(key, s.value);
  }
  return out;
}

/** Waits (bounded) until process `pid` catches SIGTERM and SIGINT (SigCgt in /proc). */
async function signalsHandled(pid: number, what: () => string): Promise<void> {
  const caught = () => {
    try {
      const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
      const mask = m ? BigInt("0x" + m[1]) : 0n;
      return (mask & (1n << 14n)) !== 0n && (mask & (1n << 1n)) !== 0n; // SIGTERM (15), SIGINT (2)
    } catch {
      return false;
    }
  };
  assert.ok(await waitUntil(caught, 20_000, 20), `pid ${pid} does not catch SIGTERM/SIGINT:\n${what()}`);
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

/** pid → parent pid, for every process. */
function parents(): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      m.set(Number(e.name), Number(f[1]));
    } catch { /* gone */ }
  }
  return m;
}

/** Descendants of `pid` (not itself), in breadth-first order. */
function descendants(pid: number): number[] {
  const pp = parents();
  const out: number[] = [];
  let level = [pid];
  for (let depth = 0; depth < 16 && level.length; depth++) {
    level = [...pp].filter(([, ppid]) => level.includes(ppid)).map(([p]) => p);
    out.push(...level);
  }
  return out;
}

function cmdline(pid: number): string[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter((x) => x);
  } catch {
    return [];
  }
}

const SCRIPT = which("script");
if (!notRoot && !SCRIPT) {
  console.log("e2e observability: script (util-linux) not found: the stats --watch step is skipped");
}

const CLEAR = "\x1b[H\x1b[2J";

/** Answered UDP probes: `repeat` per flow, payload `size` bytes; all must be answered. */
async function probes(
  topo: Topology,
  fam: Family,
  flows: Flow[],
  repeat: number,
  size: number,
): Promise<{ packets: Record<string, number>; bytes: Record<string, number>; sent: number }> {
  const r = await topo.client.udp(fam, flows, repeat, 2000, size);
  const packets: Record<string, number> = {}, bytes: Record<string, number> = {};
  const lost: string[] = [];
  r.targets.forEach((names, i) =>
    names.forEach((name) => {
      if (name === "") {
        lost.push(flowKey(flows[i]));
        return;
      }
      packets[name] = (packets[name] ?? 0) + 1;
      bytes[name] = (bytes[name] ?? 0) + size + HDR[fam];
    })
  );
  assert.equal(
    lost.length,
    0,
    `ipv${fam}: ${lost.length}/${flows.length * repeat} probes unanswered (e.g. ${
      lost.slice(0, 5).join(" ")
    }; ` +
      `errno ${r.errors.join(",")})`,
  );
  return { packets, bytes, sent: flows.length * repeat };
}

/** Unanswered UDP probes (no target / no flow): one per flow, short wait; none may be answered. */
async function unanswered(topo: Topology, fam: Family, flows: Flow[]): Promise<number> {
  const r = await topo.client.udp(fam, flows, 1, 200, 64);
  const answered = r.targets.flat().filter((x) => x !== "");
  assert.deepEqual(answered, [], `ipv${fam}: probes answered although nothing should balance them`);
  return flows.length;
}

/** Per queue: the kernel's id_sequence delta since `before`. */
async function seqDelta(topo: Topology, before: Map<number, { seq: number }>): Promise<Map<number, number>> {
  const now = await topo.queueStats();
  return new Map(topo.nfqlb.queues.map((q) => [q, (now.get(q)?.seq ?? 0) - (before.get(q)?.seq ?? 0)]));
}

function sum(m: Map<number, number>): number {
  return [...m.values()].reduce((a, b) => a + b, 0);
}

/**
 * After `n` unanswered probes: waits (bounded, by count) until the kernel
 * queued `n` more packets than at `q0` and the lb received `n` more than at
 * `s0` (nothing answered them, so nothing else says they were handled);
 * returns the queue deltas and the stats at that point.
 */
async function settled(
  topo: Topology,
  q0: Map<number, { seq: number }>,
  s0: AllStats | undefined,
  n: number,
): Promise<{ seq: Map<number, number>; s: AllStats }> {
  let seq = new Map<number, number>();
  let s: AllStats | undefined;
  await waitUntil(
    async () => {
      seq = await seqDelta(topo, q0);
      s = await allStats(topo);
      return sum(seq) >= n && s.totals.received - (s0?.totals.received ?? 0) >= n;
    },
    20_000,
    200,
  );
  return { seq, s: s! };
}

Deno.test({
  name: "e2e observability: stats --all counts what was sent, /metrics agrees, stats --watch, after stop",
  ignore: notRoot,
  async fn(t) {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", balance: [0, 1] } });
    await topo.nfqlb.initTargets();
    const lb = await topo.nfqlb.startLb([`--metrics=${METRICS_HOST}:${METRICS_PORT}`]);
    // the metrics server starts after the queues are bound (and after the signal handlers)
    let first: HttpResult = { ok: false };
    const up = await waitUntil(
      async () => {
        first = await httpGet(topo, METRICS_HOST, METRICS_PORT, "/metrics");
        return first.ok || !!lb.status;
      },
      30_000,
      200,
    );
    assert.ok(up && first.ok, `metrics endpoint not up: ${JSON.stringify(first)}\n${lb.describe()}`);
    await signalsHandled(lb.pid, () => lb.describe());

    const marks = topo.fwmarks;
    /** Per target name: packets and bytes the lb must have counted so far. */
    const want = { packets: {} as Record<string, number>, bytes: {} as Record<string, number> };
    let sentTotal = 0, notargetTotal = 0;

    await t.step("counters equal the probes: per target, per queue (kernel id_sequence), bytes", async () => {
      const s0 = await allStats(topo);
      assert.equal(s0.lb.kind, "lb");
      assert.equal(s0.lb.running, true, `stats --all: ${JSON.stringify(s0.lb)}`);
      assert.equal(s0.lb.pid, lb.pid, "stats --all: pid of the lb");
      assert.deepEqual(s0.queues.map((q) => q.queue), topo.nfqlb.queues, "queues in the counters shm");
      // a fresh lb, and nothing has been sent to the VIP yet
      for (const [k, v] of Object.entries(s0.totals)) assert.equal(v, 0, `totals.${k} before any traffic`);
      assert.deepEqual(s0.targets, []);
      const q0 = await topo.queueStats();

      // several source addresses (the kernel's --queue-balance hashes addresses) and two sizes per family
      for (const [fam, sport, sizes] of [[4, 20000, [100, 700]], [6, 21000, [150, 1000]]] as const) {
        const flows = topo.flows(fam, 34, sport);
        for (const [size, repeat] of [[sizes[0], 3], [sizes[1], 1]]) {
          const p = await probes(topo, fam, flows, repeat, size);
          sentTotal += p.sent;
          for (const [n, v] of Object.entries(p.packets)) want.packets[n] = (want.packets[n] ?? 0) + v;
          for (const [n, v] of Object.entries(p.bytes)) want.bytes[n] = (want.bytes[n] ?? 0) + v;
        }
      }
      assert.deepEqual(Object.keys(want.packets).sort(), topo.targetNames, "every target answered some");

      const s1 = await allStats(topo);
      const seq = await seqDelta(topo, q0);
      const kernelNow = await topo.queueStats();
      const msg = `stats --all:\n${JSON.stringify(figures(s1), null, 1)}\nwanted ${JSON.stringify(want)}`;
      assert.equal(s1.totals.received, sentTotal, `totals.received != probes sent (${sentTotal})\n${msg}`);
      assert.equal(s1.totals.accepted, sentTotal, `totals.accepted != probes sent (${sentTotal})\n${msg}`);
      for (
        const k of ["dropped", "malformed", "notarget", "nolb", "enobufs", "recv_errors", "setup_dropped"]
      ) {
        assert.equal(s1.totals[k], 0, `totals.${k}\n${msg}`);
      }
      // without offload every accepted packet was queued: the offloaded share is 0 (docs/offload.md "Counters")
      assert.ok(s1.targets.every((x) => x.offloaded_packets === 0 && x.queued_packets === x.packets), msg);
      assert.deepEqual(
        s1.targets.map(({ fwmark, packets, bytes }) => ({ fwmark, packets, bytes })),
        topo.targetNames.map((n) => ({
          fwmark: fwmarkOf(n),
          packets: want.packets[n],
          bytes: want.bytes[n],
        })),
        `per-target packets/bytes != what each target answered\n${msg}`,
      );
      // per queue: the lb received what the kernel queued to it; the queue's targets sum to the totals
      const sumQ = new Map<number, { packets: number; bytes: number }>();
      for (const q of s1.queues) {
        assert.equal(
          q.counters.received,
          seq.get(q.queue),
          `queue ${q.queue}: received != kernel id_sequence delta\n${msg}`,
        );
        assert.equal(q.counters.accepted, q.counters.received, `queue ${q.queue}: accepted\n${msg}`);
        assert.ok(q.kernel, `queue ${q.queue}: no kernel view although stats ran in the lb netns`);
        assert.equal(
          q.kernel.id_sequence,
          kernelNow.get(q.queue)?.seq,
          `queue ${q.queue}: kernel.id_sequence`,
        );
        assert.equal(q.kernel.portid, kernelNow.get(q.queue)?.portid, `queue ${q.queue}: kernel.portid`);
        assert.equal(
          q.targets.reduce((s, x) => s + x.packets, 0),
          q.counters.accepted,
          `queue ${q.queue}: per-target packets != accepted\n${msg}`,
        );
        for (const x of q.targets) {
          const e = sumQ.get(x.fwmark) ?? { packets: 0, bytes: 0 };
          sumQ.set(x.fwmark, { packets: e.packets + x.packets, bytes: e.bytes + x.bytes });
        }
      }
      // 34 source addresses (17 per family) over 2 queues: both get some (else the per-queue checks prove little)
      for (const q of s1.queues) assert.ok(q.counters.received > 0, `queue ${q.queue} got nothing\n${msg}`);
      for (const x of s1.targets) {
        assert.deepEqual(sumQ.get(x.fwmark), { packets: x.packets, bytes: x.bytes }, `fwmark ${x.fwmark}`);
      }
    });

    await t.step(
      "no active target: every probe counted as notarget and dropped, then balanced again",
      async () => {
        const s0 = await allStats(topo);
        const q0 = await topo.queueStats();
        await topo.nfqlb.deactivate(...marks);
        let n = 0;
        try {
          n += await unanswered(topo, 4, topo.flows(4, 8, 22000));
          n += await unanswered(topo, 6, topo.flows(6, 8, 22000));
        } finally {
          await topo.nfqlb.activate(...marks);
        }
        const { seq, s: s1 } = await settled(topo, q0, s0, n);
        const d = (k: string) => s1.totals[k] - s0.totals[k];
        const msg = `before ${JSON.stringify(s0.totals)}\nafter ${JSON.stringify(s1.totals)}`;
        assert.equal(sum(seq), n, `kernel queued != probes sent (${n})`);
        assert.equal(d("received"), n, msg);
        assert.equal(d("notarget"), n, msg);
        assert.equal(d("dropped"), n, msg);
        assert.equal(d("accepted"), 0, msg);
        assert.deepEqual(s1.targets, s0.targets, "per-target counts moved without a target");
        for (const q of s1.queues) {
          const q0s = s0.queues.find((x) => x.queue === q.queue)!;
          assert.equal(q.counters.received - q0s.counters.received, seq.get(q.queue), `queue ${q.queue}`);
          assert.equal(q.counters.notarget - q0s.counters.notarget, seq.get(q.queue), `queue ${q.queue}`);
        }
        notargetTotal += n;
        // balanced again (counted like step 1)
        const p = await probes(topo, 4, topo.flows(4, 6, 22100), 1, 64);
        sentTotal += p.sent;
        for (const [k, v] of Object.entries(p.packets)) want.packets[k] = (want.packets[k] ?? 0) + v;
        for (const [k, v] of Object.entries(p.bytes)) want.bytes[k] = (want.bytes[k] ?? 0) + v;
        const s2 = await allStats(topo);
        assert.equal(s2.totals.accepted, sentTotal);
        assert.equal(s2.totals.received, sentTotal + notargetTotal);
        assert.deepEqual(
          s2.targets.map((x) => [x.fwmark, x.packets, x.bytes]),
          topo.targetNames.map((k) => [fwmarkOf(k), want.packets[k], want.bytes[k]]),
        );
      },
    );

    await t.step(
      "/metrics: the same figures as stats --all, 404 elsewhere, bound to its address only",
      async () => {
        const s = await allStats(topo);
        const r = await httpGet(topo, METRICS_HOST, METRICS_PORT, "/metrics");
        const again = await allStats(topo);
        assert.deepEqual(figures(again), figures(s), "counters moved without traffic");
        assert.ok(r.ok, `scrape failed: ${JSON.stringify(r)}`);
        assert.equal(r.status, 200, `scrape: ${r.head}`);
        assert.match(r.head ?? "", /^content-type: text\/plain; version=0\.0\.4/im);
        const { samples, types } = parseMetrics(r.body ?? "");
        const text = `\n${r.body}`;

        for (
          const [name, type] of [
            ["nfqlb_queue_received_packets_total", "counter"],
            ["nfqlb_queue_verdict_packets_total", "counter"],
            ["nfqlb_target_packets_total", "counter"],
            ["nfqlb_target_bytes_total", "counter"],
            ["nfqlb_dropped_packets_total", "counter"],
            ["nfqlb_queue_errors_total", "counter"],
            ["nfqlb_targets_active", "gauge"],
            ["nfqlb_target_weight", "gauge"],
            ["nfqlb_build_info", "gauge"],
            ["process_start_time_seconds", "gauge"],
            ["nfqlb_kernel_queue_dropped_packets_total", "counter"],
            ["nfqlb_kernel_queue_user_dropped_packets_total", "counter"],
            ["nfqlb_kernel_queue_waiting_packets", "gauge"],
          ]
        ) assert.equal(types.get(name), type, `# TYPE ${name}${text}`);
        // every family is a registered one, with the registered type; no old name is left
        for (const [name, type] of types) {
          const f = METRIC_FAMILIES.find((x) => x.name === name);
          assert.ok(f, `family ${name} is not in METRIC_FAMILIES${text}`);
          assert.equal(type, f.type, `# TYPE ${name}`);
        }
        for (const old of Object.keys(RENAMED_METRICS)) {
          const bare = old.replace(/\{.*$/, "");
          if (!METRIC_FAMILIES.some((f) => f.name === bare)) assert.ok(!types.has(bare), `old name ${bare}`);
        }
        const checked = await promtool(r.body ?? "");
        if (checked) assert.equal(checked.code, 0, `promtool check metrics:\n${checked.output}${text}`);
        else console.log("promtool not installed (Debian package prometheus): check skipped");

        const received = series(samples, "nfqlb_queue_received_packets_total");
        const verdicts = series(samples, "nfqlb_queue_verdict_packets_total");
        const wantReceived = new Map<string, number>(), wantVerdicts = new Map<string, number>();
        for (const q of s.queues) {
          wantReceived.set(`queue=${q.queue}`, q.counters.received);
          for (const v of ["accepted", "dropped"]) {
            wantVerdicts.set(`queue=${q.queue},verdict=${v}`, q.counters[v]);
          }
        }
        assert.deepEqual(received, wantReceived, `nfqlb_queue_received_packets_total${text}`);
        assert.deepEqual(verdicts, wantVerdicts, `nfqlb_queue_verdict_packets_total${text}`);
        // no double counting: the verdicts add up to what was received
        assert.equal(
          [...verdicts.values()].reduce((a, b) => a + b, 0),
          [...received.values()].reduce((a, b) => a + b, 0),
          `accepted + dropped = received${text}`,
        );

        const pk = series(samples, "nfqlb_target_packets_total"),
          by = series(samples, "nfqlb_target_bytes_total");
        const wantPk = new Map<string, number>(), wantBy = new Map<string, number>();
        for (const q of s.queues) {
          for (const x of q.targets) {
            wantPk.set(`queue=${q.queue},target=${x.fwmark}`, x.packets);
            wantBy.set(`queue=${q.queue},target=${x.fwmark}`, x.bytes);
          }
        }
        assert.deepEqual(pk, wantPk, `nfqlb_target_packets_total per queue and target${text}`);
        assert.deepEqual(by, wantBy, `nfqlb_target_bytes_total per queue and target${text}`);
        // summed over queues: the per-target totals (and what the targets answered)
        const perTarget = new Map<number, number>();
        for (const [k, v] of pk) {
          const fw = Number(/target=(-?\d+)/.exec(k)![1]);
          perTarget.set(fw, (perTarget.get(fw) ?? 0) + v);
        }
        assert.deepEqual(perTarget, new Map(s.targets.map((x) => [x.fwmark, x.packets])));
        assert.deepEqual(perTarget, new Map(topo.targetNames.map((n) => [fwmarkOf(n), want.packets[n]])));

        assert.deepEqual(series(samples, "nfqlb_targets_active"), new Map([[`table=${topo.shm}`, 3]]));
        assert.deepEqual(
          series(samples, "nfqlb_target_weight"),
          new Map(marks.map((fw) => [`table=${topo.shm},target=${fw}`, 1])),
          `nfqlb_target_weight${text}`,
        );
        const drops = series(samples, "nfqlb_dropped_packets_total");
        assert.equal(drops.get("reason=no_target"), notargetTotal, `no_target drops${text}`);
        assert.equal(drops.get("reason=no_flow"), 0, `no_flow drops${text}`);

        for (const q of s.queues) {
          const k = `queue=${q.queue}`;
          assert.ok(q.kernel);
          assert.equal(
            series(samples, "nfqlb_kernel_queue_dropped_packets_total").get(k),
            q.kernel.queue_dropped,
            k,
          );
          assert.equal(
            series(samples, "nfqlb_kernel_queue_user_dropped_packets_total").get(k),
            q.kernel.user_dropped,
            k,
          );
          assert.ok(
            series(samples, "nfqlb_kernel_queue_waiting_packets").has(k),
            `nfqlb_kernel_queue_waiting_packets{${k}}`,
          );
        }

        const other = await httpGet(topo, METRICS_HOST, METRICS_PORT, "/other");
        assert.equal(other.status, 404, `GET /other: ${JSON.stringify(other)}`);
        const root = await httpGet(topo, METRICS_HOST, METRICS_PORT, "/");
        assert.equal(root.status, 404, `GET /: ${JSON.stringify(root)}`);
        for (const host of [OTHER_HOST, "::1"]) {
          const x = await httpGet(topo, host, METRICS_PORT, "/metrics");
          assert.equal(x.ok, false, `metrics answered on ${host}: ${JSON.stringify(x).slice(0, 300)}`);
          assert.match(x.error ?? "", /ConnectionRefused/, `connecting to ${host}:${METRICS_PORT}`);
        }
      },
    );

    await t.step({
      name: "stats --watch=1 under a pseudo-terminal: screens with the per-target table, exit 0 on SIGINT",
      ignore: !SCRIPT,
      fn: async () => {
        const s = await allStats(topo);
        const cmd = `${NFQLB} stats --ft_shm=${topo.ftShm} --watch=1`;
        const p = topo.spawn(
          topo.ns.lb,
          "stats --watch",
          [SCRIPT!, "-qfec", cmd, "/dev/null"],
          topo.nfqlb.env,
        );
        try {
          const screens = () => p.stdout.split(CLEAR).length - 1;
          const ok = await waitUntil(() => !!p.status || screens() >= 3, 30_000, 100);
          assert.ok(ok && !p.status, `stats --watch: ${screens()} screens:\n${p.describe()}`);
          // Ctrl-C: SIGINT to the watching process itself (the deepest one running the command)
          const watchers = descendants(p.pid).filter((pid) => cmdline(pid).includes("--watch=1"));
          assert.ok(watchers.length > 0, `no stats --watch process under script (pid ${p.pid})`);
          const watcher = watchers[watchers.length - 1];
          await signalsHandled(watcher, () => p.describe());
          Deno.kill(watcher, "SIGINT");
          let timer: ReturnType<typeof setTimeout> | undefined;
          const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), 20_000));
          const first = await Promise.race([p.done, late]);
          clearTimeout(timer);
          assert.notEqual(first, "late", `stats --watch did not exit on SIGINT:\n${p.describe()}`);
          const exited = await p.done;
          assert.deepEqual(
            { code: exited.code, signal: exited.signal },
            { code: 0, signal: null },
            p.describe(),
          );
          const out = p.stdout.replace(/\r/g, "");
          assert.ok(screens() >= 2, `fewer than 2 screens:\n${out}`);
          const last = out.split(CLEAR).at(-1)!;
          assert.match(last, new RegExp(`^nfqlb lb pid ${lb.pid} running since `, "m"), last);
          assert.match(last, /^target fwmark +weight +expected +packets +pkt\/s +bytes +share$/m, last);
          assert.deepEqual(s.targets.map((x) => x.fwmark), marks, "targets in stats --all");
          let expected = 0;
          for (const x of s.targets) {
            const row = new RegExp(`^ +${x.fwmark} +1 +([\\d.]+) % +(\\d+) +\\S+ +(\\d+) +[\\d.]+ %`, "m")
              .exec(last);
            assert.ok(row, `no row for fwmark ${x.fwmark} (weight 1):\n${last}`);
            expected += Number(row[1]);
            assert.deepEqual(
              [Number(row[2]), Number(row[3])],
              [x.packets, x.bytes],
              `fwmark ${x.fwmark}:\n${last}`,
            );
          }
          // the expected shares are the lookup table's: 3 equal targets, about a third each, 100 % in all
          assert.ok(Math.abs(expected - 100) < 0.5, `expected shares add up to ${expected} %:\n${last}`);
          for (const q of s.queues) {
            const row = new RegExp(`^ +${q.queue} +(\\d+) +\\S+ +(\\d+) +(\\d+)`, "m").exec(last);
            assert.ok(row, `no row for queue ${q.queue}:\n${last}`);
            assert.deepEqual(
              row.slice(1).map(Number),
              [q.counters.received, q.counters.accepted, q.counters.dropped],
              `queue ${q.queue}:\n${last}`,
            );
          }
        } finally {
          await p.stop(5000);
        }
      },
    });

    await t.step(
      "stats --watch=1 into a pipe: plain screens, no escape codes, exit 0 on SIGINT",
      async () => {
        const p = topo.spawn(
          topo.ns.lb,
          "stats --watch pipe",
          [NFQLB, "stats", `--ft_shm=${topo.ftShm}`, "--watch=1"],
          topo.nfqlb.env,
        );
        try {
          const screens = () => (p.stdout.match(/^--- \d{4}-\d\d-\d\dT/gm) ?? []).length;
          const ok = await waitUntil(() => !!p.status || screens() >= 2, 30_000, 100);
          assert.ok(ok && !p.status, `stats --watch in a pipe: ${screens()} screens:\n${p.describe()}`);
          const watchers = [p.pid, ...descendants(p.pid)].filter((pid) => cmdline(pid).includes("--watch=1"));
          const watcher = watchers[watchers.length - 1];
          await signalsHandled(watcher, () => p.describe());
          Deno.kill(watcher, "SIGINT");
          const exited = await p.done;
          assert.deepEqual(
            { code: exited.code, signal: exited.signal },
            { code: 0, signal: null },
            p.describe(),
          );
          assert.ok(
            !p.stdout.includes("\x1b"),
            `escape codes in a pipe:\n${JSON.stringify(p.stdout.slice(0, 400))}`,
          );
          assert.match(p.stdout, /^target fwmark +weight +expected +packets +pkt\/s +bytes +share$/m);
          for (const fw of marks) {
            assert.match(p.stdout, new RegExp(`^ +${fw} +1 +[\\d.]+ % `, "m"), p.stdout);
          }
        } finally {
          await p.stop(5000);
        }
      },
    );

    await t.step(
      "after the lb stops (SIGTERM): stats --all still works, running false, counts unchanged",
      async () => {
        const before = await allStats(topo);
        const st = await topo.nfqlb.stopLb();
        assert.deepEqual(
          { code: st?.status.code, signal: st?.status.signal },
          { code: 0, signal: null },
          st?.stderr,
        );
        const after = await allStats(topo);
        assert.equal(after.lb.running, false, `stats --all after stop: ${JSON.stringify(after.lb)}`);
        assert.equal(after.lb.pid, before.lb.pid);
        assert.deepEqual(figures(after), figures(before), "counts changed by the stop");
        assert.equal(after.totals.accepted, sentTotal);
        for (const q of after.queues) {
          assert.equal(q.kernel, null, `queue ${q.queue} still bound after stop`);
        }
        const x = await httpGet(topo, METRICS_HOST, METRICS_PORT, "/metrics");
        assert.equal(x.ok, false, "the metrics endpoint still answers after the lb stopped");
      },
    );

    await t.step("flowlb without any flow: every packet counted as nolb and dropped", async () => {
      const fl = await topo.nfqlb.startFlowLb();
      await signalsHandled(fl.pid, () => fl.describe());
      const s0 = await allStats(topo);
      assert.equal(s0.lb.kind, "flowlb");
      assert.equal(s0.lb.pid, fl.pid);
      for (const [k, v] of Object.entries(s0.totals)) assert.equal(v, 0, `flowlb totals.${k} before traffic`);
      const q0 = await topo.queueStats();
      let n = 0;
      n += await unanswered(topo, 4, topo.flows(4, 6, 23000));
      n += await unanswered(topo, 6, topo.flows(6, 6, 23000));
      const { seq, s: s1 } = await settled(topo, q0, s0, n);
      const msg = JSON.stringify(s1.totals);
      assert.equal(sum(seq), n, `kernel queued != probes sent (${n})`);
      assert.equal(s1.totals.received, n, msg);
      assert.equal(s1.totals.nolb, n, msg);
      assert.equal(s1.totals.dropped, n, msg);
      assert.equal(s1.totals.accepted, 0, msg);
      assert.equal(s1.totals.notarget, 0, msg);
      assert.deepEqual(s1.targets, []);
      for (const q of s1.queues) assert.equal(q.counters.nolb, seq.get(q.queue), `queue ${q.queue}: ${msg}`);
      const st = await topo.nfqlb.stopLb();
      assert.equal(st?.status.code, 0, `flowlb exit on SIGTERM:\n${st?.stderr}`);
    });
  },
});
