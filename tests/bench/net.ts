/**
 * `deno task bench:net`: the dataplane under real traffic, on the netns lab of
 * tests/harness (client, lb, 3 targets; DSR), in modes run interleaved rep by
 * rep (docs/performance.md "(f) bench:net"):
 *
 * - `direct`: the lb netns routes the VIP to target 1 (plain forwarding);
 * - `hmark`: iptables HMARK in mangle PREROUTING spreads the VIP's packets
 *   over the targets' fwmarks in the kernel, no user space;
 * - `lb`: `-j NFQUEUE` and our `nfqlb lb` (every packet through user space);
 * - `lb-offload`: the rules of `nfqlb offload-rules` and `lb --offload=auto`;
 * - `compare` (with `--compare=PATH`): `-j NFQUEUE` and `PATH lb` of another
 *   nfqlb-compatible binary (e.g. upstream 1.2.0), its table made with its own
 *   `init` and `activate`.
 *
 * Tests per mode and rep: UDP 64-byte datagrams as fast as one client thread
 * sends them (delivered pkt/s: the targets' rx counters), TCP bulk (iperf2,
 * 4 streams, Gbit/s), TCP connections/s (connect, 1 byte, RST; 4 threads;
 * tests/bench/netload.c), and the CPU the LB process (tree) uses per packet
 * at a fixed rate (µs/packet, from /proc/PID/stat; lb modes only). Prints
 * median (min..max) per mode and test, the ratios to `direct` and `hmark`
 * (and ours to `compare`), and writes everything to
 * bench-results/bench-net-<time>.json. Needs root, gcc and iperf.
 *
 * Options: --reps=N (3), --seconds=S per test (3), --family=4|6 (4),
 * --modes=a,b (all), --rate=PPS for the CPU test (40000), --compare=PATH, --dsr (lb-offload: the
 * replies untracked, as on an LB they never pass; the other modes have no conntrack in the lb netns),
 * --syn-tracked (lb-offload keeps TCP SYNs tracked: for an LB the replies pass).
 */
import { type Family, targetAddr, VIP } from "../harness/addresses.ts";
import { NFQLB, ROOT } from "../harness/paths.ts";
import { type Proc, run, w } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { summarize, type Summary } from "./report.ts";

const QUEUE = 2;
const LOAD_PORT = 7001;
const IPERF_PORT = 5201;

/** The modes, in the order each rep runs them. */
const ALL_MODES = ["direct", "hmark", "lb", "lb-offload", "compare"] as const;
type Mode = (typeof ALL_MODES)[number];
const TESTS = ["udp_pps", "tcp_gbps", "conn_per_s", "lb_us_per_packet"] as const;
type Test = (typeof TESTS)[number];
/** Higher is better, except CPU per packet. */
const HIGHER_BETTER: Record<Test, boolean> = {
  udp_pps: true,
  tcp_gbps: true,
  conn_per_s: true,
  lb_us_per_packet: false,
};

interface Options {
  reps: number;
  seconds: number;
  family: Family;
  modes: Mode[];
  rate: number;
  compare?: string;
  /**
   * `--dsr`: in lb-offload (the one mode with conntrack on), the targets' replies are untracked in the lb
   * netns, as on an LB that replies never pass (the lab routes them through it).
   */
  dsr: boolean;
  /**
   * `--syn-tracked`: lb-offload without the raw rule untracking TCP SYNs (`offload-rules --nat`), for an LB the
   * replies pass (the lab's, without --dsr): a connection's SYN alone crosses to user space.
   */
  synTracked: boolean;
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    reps: 3,
    seconds: 3,
    family: 4,
    modes: [...ALL_MODES],
    rate: 40000,
    dsr: false,
    synTracked: false,
  };
  for (const a of argv) {
    if (a === "--dsr" || a === "--syn-tracked") {
      if (a === "--dsr") o.dsr = true;
      else o.synTracked = true;
      continue;
    }
    const m = /^--([a-z]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`bench:net: unknown argument '${a}'`);
    const [, k, v] = m;
    const int = (lo: number, hi: number) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`bench:net: invalid --${k} value '${v}'`);
      return n;
    };
    if (k === "reps") o.reps = int(1, 50);
    else if (k === "seconds") o.seconds = int(1, 60);
    else if (k === "rate") o.rate = int(1000, 1_000_000);
    else if (k === "family") o.family = int(4, 6) === 6 ? 6 : 4;
    else if (k === "compare") o.compare = v;
    else if (k === "modes") {
      o.modes = v.split(",") as Mode[];
      for (const x of o.modes) if (!ALL_MODES.includes(x)) throw new Error(`bench:net: unknown mode '${x}'`);
    } else throw new Error(`bench:net: unknown option --${k}`);
  }
  if (!o.compare) o.modes = o.modes.filter((m) => m !== "compare");
  if (o.dsr && o.synTracked) throw new Error("bench:net: --dsr needs the SYNs untracked (no --syn-tracked)");
  return o;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** utime + stime (clock ticks) of a process and all its descendants. */
function treeTicks(pid: number, depth = 0): number {
  let ticks = 0;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
    if (depth > 8) return ticks;
    for (const tid of Deno.readDirSync(`/proc/${pid}/task`)) {
      const kids = Deno.readTextFileSync(`/proc/${pid}/task/${tid.name}/children`).trim();
      for (const k of kids ? kids.split(" ") : []) ticks += treeTicks(Number(k), depth + 1);
    }
  } catch { /* gone */ }
  return ticks;
}

/** The mode's set-up in the lb netns; returns its undo and the LB process, if any. */
async function enter(
  topo: Topology,
  mode: Mode,
  o: Options,
): Promise<{ leave: () => Promise<void>; lb?: Proc }> {
  const ns = topo.ns.lb;
  const fam = o.family;
  if (mode === "direct") return { leave: async () => {} };
  if (mode === "hmark") {
    await topo.setSteering({ mode: "hmark" }, "-A");
    return { leave: () => topo.setSteering({ mode: "hmark" }, "-D") };
  }
  if (mode === "lb") {
    await topo.setSteering({ mode: "nfqueue", queue: QUEUE }, "-A");
    const lb = await topo.nfqlb.startLb();
    return {
      lb,
      leave: async () => {
        await topo.nfqlb.stopLb();
        await topo.setSteering({ mode: "nfqueue", queue: QUEUE }, "-D");
      },
    };
  }
  if (mode === "lb-offload") {
    const text =
      (await run([NFQLB, "offload-rules", `--vips=${VIP[fam]}`, `--queue=${QUEUE}`, "--id=bench"])).stdout;
    const ipt = fam === 4 ? "iptables" : "ip6tables";
    await topo.exec(ns, [`${ipt}-restore`, "--noflush"], { stdin: text });
    const notrack = (op: string) => w(`${ipt} -w -t raw ${op} PREROUTING -s ${VIP[fam]} -j NOTRACK`);
    if (o.dsr) await topo.exec(ns, notrack("-I"));
    const lb = await topo.nfqlb.startLb(["--offload=auto"]);
    return {
      lb,
      leave: async () => {
        await topo.nfqlb.stopLb();
        if (o.dsr) await topo.exec(ns, notrack("-D"));
        const { teardownPlumbing } = await import("../../host/plumbing/kernel_sync.ts");
        await teardownPlumbing("bench", { netns: ns });
      },
    };
  }
  // compare: another binary, its own table in /dev/shm (upstream keeps no other directory)
  const bin = o.compare!;
  const shm = `${topo.prefix}-cmp`;
  await topo.exec(ns, [bin, "init", `--shm=${shm}`, "--M=997", "--N=32"]);
  await topo.exec(ns, [bin, "activate", `--shm=${shm}`, ...topo.fwmarks.map(String)]);
  await topo.setSteering({ mode: "nfqueue", queue: QUEUE }, "-A");
  // upstream's lb also makes its trace table, /dev/shm/nfqlb-trace: removed after, unless it was there before
  const traceWasThere = (() => {
    try {
      Deno.statSync("/dev/shm/nfqlb-trace");
      return true;
    } catch {
      return false;
    }
  })();
  const lb = topo.spawn(ns, "compare lb", [
    bin,
    "lb",
    `--tshm=${shm}`,
    `--queue=${QUEUE}`,
    `--ft_shm=${shm}-ft`,
  ]);
  const t0 = Date.now();
  while (Date.now() - t0 < 10_000 && !(await topo.queueStats()).has(QUEUE)) await sleep(50);
  return {
    lb,
    leave: async () => {
      await lb.stop();
      topo.forget(lb);
      await topo.setSteering({ mode: "nfqueue", queue: QUEUE }, "-D");
      await topo.exec(ns, [bin, "delete", `--shm=${shm}`], { allowFail: true });
      for (const f of [shm, `${shm}-ft`, ...(traceWasThere ? [] : ["nfqlb-trace"])]) {
        try {
          Deno.removeSync(`/dev/shm/${f}`);
        } catch { /* deleted */ }
      }
    },
  };
}

async function sumRx(topo: Topology): Promise<number> {
  return Object.values(await topo.targetRx()).reduce((a, b) => a + b, 0);
}

/** One test in the current mode; undefined when it does not apply. */
async function measure(
  topo: Topology,
  test: Test,
  o: Options,
  load: string,
  lb?: Proc,
): Promise<number | undefined> {
  const cli = topo.ns.cli;
  const vip = VIP[o.family];
  const s = String(o.seconds);
  if (test === "udp_pps") {
    const rx0 = await sumRx(topo);
    const r = await topo.exec(cli, [load, "udp", vip, String(LOAD_PORT), s, "0", "64"]);
    await sleep(300); // what is still in the queue arrives
    const sec = (JSON.parse(r.stdout) as { seconds: number }).seconds;
    return (await sumRx(topo) - rx0) / sec;
  }
  if (test === "tcp_gbps") {
    const r = await topo.exec(cli, w(`iperf -c ${vip} -p ${IPERF_PORT} -P 4 -t ${s} -y C`), {
      timeoutMs: o.seconds * 1000 + 30_000,
    });
    const rows = r.stdout.trim().split("\n").map((l) => l.split(","));
    const sum = rows.find((f) => f[5] === "-1");
    const bps = sum ? Number(sum[8]) : rows.reduce((a, f) => a + Number(f[8]), 0);
    return bps / 1e9;
  }
  if (test === "conn_per_s") {
    const r = await topo.exec(cli, [load, "crr", vip, String(LOAD_PORT), s, "4"]);
    const j = JSON.parse(r.stdout) as { conns: number; seconds: number };
    return j.conns / j.seconds;
  }
  if (!lb) return undefined;
  const rx0 = await sumRx(topo);
  const t0 = treeTicks(lb.pid);
  await topo.exec(cli, [load, "udp", vip, String(LOAD_PORT), s, String(o.rate), "16"]);
  await sleep(300);
  const ticks = treeTicks(lb.pid) - t0;
  const pkts = await sumRx(topo) - rx0;
  // clock ticks are 1/100 s (USER_HZ)
  return pkts > 0 ? ticks * 10_000 / pkts : undefined;
}

function fmt(n: number, test: Test): string {
  if (test === "udp_pps" || test === "conn_per_s") return n.toFixed(0);
  return n.toFixed(test === "tcp_gbps" ? 2 : 3);
}

async function main(): Promise<number> {
  const o = parseOptions(Deno.args);
  // the driver starts lb on the topology's queue; its NFQUEUE rule is only in place in the lb modes
  await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: QUEUE } });
  await topo.setSteering(topo.steering, "-D");
  const load = `${topo.workDir}/netload`;
  await run([
    "gcc",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pthread",
    "-o",
    load,
    `${ROOT}/tests/bench/netload.c`,
  ]);
  const fam = o.family;
  // direct: the main table routes the VIP to target 1; the other modes mark packets for the fwmark routes
  const ip = fam === 4 ? ["ip"] : ["ip", "-6"];
  await topo.exec(topo.ns.lb, [...ip, "route", "replace", VIP[fam], "via", targetAddr(fam, 1)]);
  await topo.nfqlb.initTargets();
  for (const [i, ns] of topo.ns.targets.entries()) {
    topo.spawn(ns, `netload t${i + 1}`, [load, "serve", VIP[fam], String(LOAD_PORT), "3600", "2"]);
    topo.spawn(
      ns,
      `iperf t${i + 1}`,
      w(`iperf -s -p ${IPERF_PORT} ${fam === 6 ? "-V" : ""}`).filter((x) => x),
    );
  }
  await sleep(1000);

  const samples = new Map<string, number[]>();
  const key = (m: Mode, t: Test) => `${m} ${t}`;
  console.log(
    `bench:net: modes ${
      o.modes.join(", ")
    }; IPv${fam}; ${o.reps} reps of ${o.seconds} s per test; CPU test at ${o.rate} pkt/s`,
  );
  for (let rep = 0; rep < o.reps; rep++) {
    // interleaved: every mode once per rep, the order rotated so no mode always follows the same one
    const order = o.modes.map((_, i) => o.modes[(i + rep) % o.modes.length]);
    for (const mode of order) {
      const { leave, lb } = await enter(topo, mode, o);
      try {
        await sleep(300);
        const line: string[] = [];
        for (const test of TESTS) {
          const v = await measure(topo, test, o, load, lb);
          if (v === undefined) continue;
          const k = key(mode, test);
          samples.set(k, [...(samples.get(k) ?? []), v]);
          line.push(`${test}=${fmt(v, test)}`);
        }
        console.log(`rep ${rep + 1} ${mode}: ${line.join(" ")}`);
      } finally {
        await leave();
      }
    }
  }

  const stats: Record<string, Record<string, Summary>> = {};
  for (const m of o.modes) {
    stats[m] = {};
    for (const t of TESTS) {
      const s = samples.get(key(m, t));
      if (s?.length) stats[m][t] = summarize(s);
    }
  }
  const ratio = (a: Mode, b: Mode, t: Test) => {
    const x = stats[a]?.[t], y = stats[b]?.[t];
    return x && y && y.median > 0 ? x.median / y.median : undefined;
  };
  const ratios: Record<string, Record<string, number>> = {};
  console.log("");
  const head = ["test", ...o.modes.map((m) => `${m} median (min..max)`)];
  console.log(head.join(" | "));
  for (const t of TESTS) {
    const cells = o.modes.map((m) => {
      const s = stats[m][t];
      return s ? `${fmt(s.median, t)} (${fmt(s.min, t)}..${fmt(s.max, t)})` : "–";
    });
    console.log([t, ...cells].join(" | "));
  }
  console.log("");
  const pairs: [Mode, Mode][] = [];
  for (const m of o.modes) {
    if (m !== "direct" && o.modes.includes("direct")) pairs.push([m, "direct"]);
    if (m !== "hmark" && m !== "direct" && o.modes.includes("hmark")) pairs.push([m, "hmark"]);
  }
  for (const m of ["lb", "lb-offload"] as Mode[]) {
    if (o.modes.includes(m) && o.compare) pairs.push([m, "compare"]);
  }
  if (o.modes.includes("lb-offload") && o.modes.includes("lb")) pairs.push(["lb-offload", "lb"]);
  for (const [a, b] of pairs) {
    const r: Record<string, number> = {};
    for (const t of TESTS) {
      const v = ratio(a, b, t);
      if (v !== undefined) r[t] = Number(v.toFixed(3));
    }
    ratios[`${a}/${b}`] = r;
    const text = Object.entries(r).map(([t, v]) => `${t} ${v.toFixed(2)}`).join(", ");
    if (text) console.log(`${a} / ${b}: ${text}`);
  }
  const dir = `${ROOT}/bench-results`;
  Deno.mkdirSync(dir, { recursive: true });
  const file = `${dir}/bench-net-${new Date().toISOString().replace(/[:.]/g, "-")}.json`;
  Deno.writeTextFileSync(
    file,
    JSON.stringify({ options: o, higher_is_better: HIGHER_BETTER, stats, ratios }, null, 2) + "\n",
  );
  console.log(`\nwrote ${file}`);
  return 0;
}

if (import.meta.main) {
  if (Deno.uid() !== 0) {
    console.error("bench:net needs root (network namespaces, iptables)");
    Deno.exit(1);
  }
  Deno.exit(await main());
}
