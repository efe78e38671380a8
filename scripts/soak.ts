/**
 * `deno task soak [--minutes=5] [--pps=2000]`: `nfqlb lb` under steady IPv4 and IPv6 UDP traffic for minutes,
 * with a table change about twice a second (deactivate/activate of t2), on the netns lab of the tests
 * (tests/harness). Every 10 s it prints one line: probes sent and answered in that window, kernel queue drops,
 * and the lb's resident memory. At the end it prints a JSON summary and exits 1 if a probe was lost, the
 * kernel dropped a packet, lb died, or its memory grew by more than 20 % after the first minute (the first
 * minute is warm-up: V8 and the worker heaps settle). Needs root. Not part of the test command (it takes
 * minutes); docs/reliability.md has the figures of a run.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { FWBASE } from "../tests/harness/addresses.ts";
import { Topology } from "../tests/harness/topology.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { minutes: { type: "string", default: "5" }, pps: { type: "string", default: "2000" } },
});
const minutes = Number(values.minutes), pps = Number(values.pps);
if (!(minutes > 0 && minutes <= 240) || !(pps > 0 && pps <= 50_000)) {
  console.error(
    `soak: invalid --minutes=${values.minutes} or --pps=${values.pps} (1..240 minutes, 1..50000 pps)`,
  );
  Deno.exit(2);
}
if (Deno.uid() !== 0) {
  console.error("soak: needs root (network namespaces, iptables)");
  Deno.exit(2);
}

/** Resident memory of a process in KiB (VmRSS), or 0 once it is gone. */
function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

interface Window {
  second: number;
  sent: number;
  answered: number;
  kernelDropped: number;
  rssKiB: number;
}

const WINDOW_MS = 10_000;
await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
await topo.nfqlb.initTargets();
const lb = await topo.nfqlb.startLb();
const T2 = FWBASE + 2;
const kernelDrops = async () => {
  let n = 0;
  for (const q of (await topo.queueStats()).values()) n += q.dropped + q.userDropped;
  return n;
};
const windows: Window[] = [];
const start = performance.now();
let changes = 0, lastDrops = await kernelDrops();
console.log(
  `soak: ${minutes} min, ${pps} probes/s per family, a table change every ~0.5 s, lb pid ${lb.pid}`,
);
while (performance.now() - start < minutes * 60_000 && lb.status === undefined) {
  const streams = await Promise.all(
    ([4, 6] as const).map((fam) =>
      topo.client.startStream(fam, topo.flows(fam, 16, 40000), { pps, waitMs: 1000 })
    ),
  );
  const t0 = performance.now();
  while (performance.now() - t0 < WINDOW_MS) {
    await new Promise((r) => setTimeout(r, 500));
    if (changes % 2 === 0) await topo.nfqlb.deactivate(T2);
    else await topo.nfqlb.activate(T2);
    changes++;
  }
  const results = await Promise.all(streams.map((s) => s.stop()));
  const drops = await kernelDrops();
  const w: Window = {
    second: Math.round((performance.now() - start) / 1000),
    sent: results.reduce((a, r) => a + r.flows.reduce((b, f) => b + f.sent, 0), 0),
    answered: results.reduce((a, r) => a + r.flows.reduce((b, f) => b + f.answered, 0), 0),
    kernelDropped: drops - lastDrops,
    rssKiB: rssKiB(lb.pid),
  };
  lastDrops = drops;
  windows.push(w);
  console.log(
    `t=${w.second}s sent=${w.sent} answered=${w.answered} lost=${
      w.sent - w.answered
    } kernel_dropped=${w.kernelDropped} rss=${(w.rssKiB / 1024).toFixed(1)}MiB changes=${changes}`,
  );
}
const warm = windows.filter((w) => w.second > 60);
const base = warm[0]?.rssKiB ?? windows[0]?.rssKiB ?? 0;
const peak = Math.max(...windows.map((w) => w.rssKiB));
const summary = {
  minutes,
  pps,
  changes,
  sent: windows.reduce((a, w) => a + w.sent, 0),
  lost: windows.reduce((a, w) => a + w.sent - w.answered, 0),
  kernelDropped: windows.reduce((a, w) => a + w.kernelDropped, 0),
  rssAfterWarmupMiB: +(base / 1024).toFixed(1),
  rssEndMiB: +((windows.at(-1)?.rssKiB ?? 0) / 1024).toFixed(1),
  rssPeakMiB: +(peak / 1024).toFixed(1),
  lbAlive: lb.status === undefined,
};
console.log(JSON.stringify(summary));
const grew = warm.length > 1 && (warm.at(-1)!.rssKiB > base * 1.2);
const ok = summary.lost === 0 && summary.kernelDropped === 0 && summary.lbAlive && !grew;
if (!ok) console.error(`soak: FAILED${grew ? " (memory grew more than 20 % after warm-up)" : ""}`);
await topo.nfqlb.stopLb();
Deno.exitCode = ok ? 0 : 1;
