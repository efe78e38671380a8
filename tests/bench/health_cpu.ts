/**
 * The CPU cost of the health checks (issue 17: ≤ 5 % of one core at 1000
 * targets × 1 s). In a network namespace of its own (root): a listener
 * process with 1000 TCP ports on 127.0.0.1, and in this process a
 * HealthMonitor (host/health/monitor.ts, as `nfqlb run` runs it) checking
 * 1000 NAT targets, one per port, tcp every `--interval` ms. Prints the
 * CPU time (user + system) of this process over `--seconds` s, as a
 * percentage of one core, and the checks done.
 *
 *   ip netns add hc-bench && ip -n hc-bench link set lo up
 *   ip netns exec hc-bench deno run -A tests/bench/health_cpu.ts [--targets=1000] [--seconds=30]
 *   ip netns del hc-bench
 *
 * Run from `deno run -A tests/bench/health_cpu.ts --netns` it does those three steps itself.
 */
import process from "node:process";
import { parseHostConfig } from "../../host/config/load.ts";
import { HealthMonitor } from "../../host/health/monitor.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { applyTargets } from "../../host/target_sync.ts";

const arg = (k: string, d: number) =>
  Number(Deno.args.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d);
const N = arg("targets", 1000), SECONDS = arg("seconds", 30), INTERVAL = arg("interval", 1000);
const BASE = 30000;

if (Deno.args.includes("--netns")) {
  const ns = `nfqe-${Deno.pid}-hcpu`;
  const sh = (a: string[]) => new Deno.Command(a[0], { args: a.slice(1) }).outputSync();
  sh(["ip", "netns", "add", ns]);
  let code = 1;
  try {
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
    const args = Deno.args.filter((a) => a !== "--netns");
    const st = await new Deno.Command("ip", {
      args: ["netns", "exec", ns, Deno.execPath(), "run", "-A", new URL(import.meta.url).pathname, ...args],
    }).spawn().status;
    code = st.code;
  } finally {
    sh(["ip", "netns", "del", ns]); // before exiting: Deno.exit skips finally blocks
  }
  Deno.exit(code);
}

if (Deno.args.includes("--listen")) {
  for (let i = 0; i < N; i++) {
    const l = Deno.listen({ hostname: "127.0.0.1", port: BASE + i });
    (async () => {
      // a check resets its connection (SO_LINGER 0): accept may then fail for that one; keep accepting
      for (let k = 0; k < 1_000_000; k++) {
        try {
          (await l.accept()).close();
        } catch { /* reset before accept */ }
      }
    })();
  }
  console.log("ready");
  await new Promise((r) => setTimeout(r, (SECONDS + 30) * 1000));
  Deno.exit(0);
}

/** user and system ms per thread of this process (/proc/self/task/TID/stat), by thread name (and tid). */
function threadTimes(): Map<string, [number, number]> {
  const tick = 10; // ms per clock tick (USER_HZ 100)
  const out = new Map<string, [number, number]>();
  for (const e of Deno.readDirSync("/proc/self/task")) {
    try {
      const st = Deno.readTextFileSync(`/proc/self/task/${e.name}/stat`);
      const close = st.lastIndexOf(")");
      const name = st.slice(st.indexOf("(") + 1, close);
      const f = st.slice(close + 2).split(" ");
      out.set(`${name}#${e.name}`, [Number(f[11]) * tick, Number(f[12]) * tick]);
    } catch { /* the thread ended */ }
  }
  return out;
}

const shmDir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqe-hcpu-" });
Deno.env.set("NFQLB_SHM_DIR", shmDir);
const listener = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    "--listen",
    `--targets=${N}`,
    `--seconds=${SECONDS}`,
  ],
  stdout: "piped",
}).spawn();
try {
  const reader = listener.stdout.getReader();
  await reader.read(); // "ready"
  reader.releaseLock();
  const yaml = [
    "version: 1",
    "services:",
    "  - name: bench",
    "    m: 10007",
    `    n: ${N}`,
    "    vips: [10.99.0.1]",
    `    health: { type: tcp, intervalMs: ${INTERVAL}, timeoutMs: ${Math.min(500, INTERVAL)} }`,
    "    targets:",
    ...Array.from(
      { length: N },
      (_, i) => `      - { fwmark: ${1000 + i}, address: 127.0.0.1, mode: nat, port: ${BASE + i} }`,
    ),
  ].join("\n");
  const cfg = parseHostConfig(yaml, "bench.yaml");
  TargetShm.create("bench", { M: 10007, N, ownFwmark: 0 });
  applyTargets("bench", cfg.services[0].targets.map((t) => ({ fwmark: t.fwmark, weight: 1 })));
  const lines: string[] = [];
  const log = { notice: (m: string) => lines.push(m), warning: (m: string) => lines.push(m), info: () => {} };
  const mon = new HealthMonitor(cfg, log);
  await mon.start();
  const th0 = threadTimes(), c0 = process.cpuUsage(), t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const c1 = process.cpuUsage(c0), wall = performance.now() - t0, th1 = threadTimes();
  const text = mon.metrics();
  mon.stop();
  const count = (re: RegExp) => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  const pass = count(/result="pass"\} (\d+)/g), fail = count(/result="fail"\} (\d+)/g);
  const cpuMs = (c1.user + c1.system) / 1000;
  console.log(
    `health cpu: ${N} targets, tcp every ${INTERVAL} ms, ${(wall / 1000).toFixed(1)} s: ` +
      `cpu ${cpuMs.toFixed(0)} ms (user ${(c1.user / 1000).toFixed(0)}, system ${
        (c1.system / 1000).toFixed(0)
      }) = ` +
      `${
        ((cpuMs / wall) * 100).toFixed(2)
      } % of one core; checks ${pass} passed, ${fail} failed (total incl. first round)`,
  );
  // where the time goes: the thread that runs the checks (the main thread) and the runtime's others
  const per = [...th1].map(([name, [u, s]]) => {
    const [u0, s0] = th0.get(name) ?? [0, 0];
    return { name, user: u - u0, system: s - s0 };
  }).filter((x) => x.user + x.system > 0).sort((a, b) => b.user + b.system - a.user - a.system);
  console.log(
    `  threads (ms user/system): ${per.map((x) => `${x.name} ${x.user}/${x.system}`).join(", ")}`,
  );
  for (const l of lines.slice(0, 5)) console.log(`  log: ${l}`);
} finally {
  try {
    listener.kill("SIGKILL");
  } catch { /* gone */ }
  await listener.status;
  Deno.removeSync(shmDir, { recursive: true });
}
