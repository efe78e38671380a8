/**
 * The demo (`deno task demo` / scripts/demo.sh): builds a client / load
 * balancer / 3-target topology from network namespaces, runs `nfqlb lb`
 * behind iptables -j NFQUEUE, sends real TCP connections and UDP requests to
 * the VIP, and shows where they landed; then deactivates one target, shows
 * where its flows went (and that the others stayed), activates it again and
 * tears everything down, also on Ctrl-C. Needs root. Takes about 15 s.
 */
import type { Flow } from "../tests/e2e/agent.ts";
import { type Family, FWBASE, isRoot, teardownAll, Topology, VIP } from "../tests/e2e/topology.ts";

const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
const paint = (code: string) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = paint("1"), dim = paint("2"), green = paint("32"), yellow = paint("33"), cyan = paint("36");
const TARGET_COLORS = [paint("34"), paint("35"), paint("36")];

function say(s = ""): void {
  console.log(s);
}

function section(s: string): void {
  say();
  say(bold(`== ${s}`));
}

function cmd(s: string): void {
  say(dim(`   $ ${s}`));
}

type Tally = Record<string, number>;

function count(names: string[]): Tally {
  const t: Tally = {};
  for (const n of names) t[n] = (t[n] ?? 0) + 1;
  return t;
}

/** A per-target table with a bar chart: one row per target, columns per traffic kind. */
function table(topo: Topology, cols: [string, Tally][], title: string): void {
  const width = 36;
  const totals = topo.targetNames.map((n) => cols.reduce((a, [, t]) => a + (t[n] ?? 0), 0));
  const all = totals.reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...totals);
  say(`   ${bold(title)}`);
  const head = ["target", "fwmark", ...cols.map(([c]) => c), "total", "share"];
  say(`   ${head.map((h, i) => (i < 2 ? h.padEnd(7) : h.padStart(8))).join("")}`);
  topo.targetNames.forEach((n, i) => {
    const share = all ? (100 * totals[i]) / all : 0;
    const bar = "█".repeat(Math.round((width * totals[i]) / max));
    const cells = [
      n.padEnd(7),
      String(FWBASE + i + 1).padEnd(7),
      ...cols.map(([, t]) => String(t[n] ?? 0).padStart(8)),
      String(totals[i]).padStart(8),
      `${share.toFixed(1)} %`.padStart(8),
    ];
    say(`   ${cells.join("")}  ${TARGET_COLORS[i % 3](bar)}`);
  });
  const lost = cols.reduce((a, [, t]) => a + (t[""] ?? 0), 0);
  if (lost) say(yellow(`   unanswered: ${lost}`));
}

interface Probe {
  fam: Family;
  proto: "tcp" | "udp";
  flows: Flow[];
}

async function send(topo: Topology, p: Probe): Promise<string[]> {
  const r = p.proto === "udp" ? await topo.udp(p.fam, p.flows) : await topo.tcp(p.fam, p.flows);
  return r.targets.map((x) => x[0]);
}

async function main(): Promise<number> {
  if (!isRoot()) {
    console.error(
      "demo: needs root: it creates network namespaces, veth pairs and iptables rules. Run it as root (sudo scripts/demo.sh).",
    );
    return 1;
  }
  const t0 = Date.now();
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\ndemo: interrupted; removing namespaces and processes...");
    await teardownAll();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  say(bold("nfqlb-deno demo: Maglev load balancing with NFQUEUE, in network namespaces"));
  say(dim("   Nothing leaves this machine: all addresses live in namespaces the demo creates and removes."));

  section("1. Topology");
  const topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
  try {
    say(
      `   client ${cyan(topo.ns.cli)} ─ lb ${cyan(topo.ns.lb)} ─ targets ${
        topo.ns.targets.map(cyan).join(", ")
      }`,
    );
    say(`   VIP ${VIP[4]} and ${VIP[6]} on every target's loopback; targets reply directly (DSR).`);
    say(`   In the lb netns: iptables -t mangle -A PREROUTING -d VIP -j NFQUEUE --queue-num 2`);
    say(`                    ip rule fwmark 10i → table 10i → route to target i`);

    section("2. Target table (Maglev, M=997) and the load balancer");
    const shm = `--shm=${topo.shm}`;
    cmd(`nfqlb init ${shm} --M=997 --N=32`);
    cmd(`nfqlb activate ${shm} 101 102 103`);
    await topo.initTargets();
    cmd(`nfqlb show ${shm}`);
    const show = await topo.nfqlb(["show", shm]);
    for (const l of show.stdout.trimEnd().split("\n")) say(`     ${l}`);
    cmd(`nfqlb lb --tshm=${topo.shm} --queue=2   (in the lb netns)`);
    const lb = await topo.startLb();
    for (const l of lb.stdout.trimEnd().split("\n")) say(`     ${dim(l)}`);

    section("3. Real traffic to the VIP: TCP connections and UDP requests, IPv4 and IPv6");
    const probes: Probe[] = [
      { fam: 4, proto: "tcp", flows: topo.flows(4, 150, 20000) },
      { fam: 4, proto: "udp", flows: topo.flows(4, 150, 21000) },
      { fam: 6, proto: "tcp", flows: topo.flows(6, 150, 22000) },
      { fam: 6, proto: "udp", flows: topo.flows(6, 150, 23000) },
    ];
    const label = (p: Probe) => `${p.proto.toUpperCase()}/v${p.fam}`;
    say(
      `   ${probes.map((p) => `${p.flows.length} ${label(p)}`).join(", ")} flows from ${
        topo.nSources + 1
      } client addresses`,
    );
    const before = await Promise.all(probes.map((p) => send(topo, p)));
    table(topo, probes.map((p, i) => [label(p), count(before[i])]), "Where the flows landed");

    section("4. Deactivate target t2 (fwmark 102)");
    cmd(`nfqlb deactivate ${shm} 102`);
    await topo.deactivate(FWBASE + 2);
    const during = await Promise.all(probes.map((p) => send(topo, p)));
    table(topo, probes.map((p, i) => [label(p), count(during[i])]), "The same flows again");
    const wentTo: Tally = {};
    let others = 0, moved = 0;
    probes.forEach((_, k) =>
      before[k].forEach((b, i) => {
        if (b === "t2") wentTo[during[k][i]] = (wentTo[during[k][i]] ?? 0) + 1;
        else {
          others++;
          if (during[k][i] !== b) moved++;
        }
      })
    );
    const t2flows = Object.values(wentTo).reduce((a, b) => a + b, 0);
    say(
      `   The ${t2flows} flows of t2 went to: ${
        Object.entries(wentTo).sort().map(([n, c]) => `${n} ${c}`).join(", ")
      }`,
    );
    say(
      `   Of the ${others} flows on t1/t3, ${moved === 0 ? green("none moved") : yellow(`${moved} moved`)}${
        moved ? dim(" (Maglev rebuilds the table; a few slots of the remaining targets change hands)") : ""
      }.`,
    );

    section("5. Activate t2 again");
    cmd(`nfqlb activate ${shm} 102`);
    await topo.activate(FWBASE + 2);
    const after = await Promise.all(probes.map((p) => send(topo, p)));
    const total = probes.reduce((a, p) => a + p.flows.length, 0);
    const back = probes.reduce((a, _, k) => a + after[k].filter((x, i) => x === before[k][i]).length, 0);
    say(
      `   ${
        back === total ? green(`${back}/${total}`) : yellow(`${back}/${total}`)
      } flows are back on their original target.`,
    );

    const q = (await topo.queueStats()).get(2);
    if (q) {
      say(
        dim(
          `   queue 2: ${q.seq} packets through nfqlb, ${q.dropped} dropped, ${q.userDropped} user-dropped`,
        ),
      );
    }

    section("6. Clean up");
    const st = await topo.stopLb();
    say(`   nfqlb lb stopped (SIGTERM, exit ${st?.status.code})`);
  } finally {
    await topo.teardown();
  }
  say(
    `   namespaces, processes and shared memory removed. ${
      dim(`(${((Date.now() - t0) / 1000).toFixed(1)} s)`)
    }`,
  );
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  return 0;
}

let interrupted = false;

if (import.meta.main) {
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    if (!interrupted) console.error(`demo: ${e instanceof Error ? e.message : e}`);
    await teardownAll(); // joins a teardown that a signal already started
  }
  Deno.exit(interrupted ? 130 : code);
}
