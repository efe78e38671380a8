/**
 * The demo (`deno task demo` / scripts/demo.sh), run as an operator would:
 * builds a client / load balancer / 3-target topology from network
 * namespaces (the lab in tests/harness, as the e2e tests use it), writes a small config file and runs `nfqlb apply -f` in the lb
 * netns (target table, the detached `nfqlb lb`, NFQUEUE rules, fwmark
 * routing), sends real TCP connections and UDP requests to the VIP and shows
 * where they landed, shows `nfqlb status`, drains one target by setting its
 * weight to 0 in the file and applying again (a one-line diff), shows where
 * new flows go, then `nfqlb teardown -f` and removes the topology, also on
 * Ctrl-C. Needs root. Takes about 10 s.
 */
import { type Family, FWBASE, targetAddr, VIP } from "../tests/harness/addresses.ts";
import type { Flow } from "../tests/harness/agent/types.ts";
import { HostUnderTest } from "../tests/harness/host.ts";
import { isRoot } from "../tests/harness/netns.ts";
import { teardownAll, type Topology } from "../tests/harness/topology.ts";
import { tally } from "../tests/harness/traffic.ts";

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
  const r = p.proto === "udp" ? await topo.client.udp(p.fam, p.flows) : await topo.client.tcp(p.fam, p.flows);
  return r.targets.map((x) => x[0]);
}

/** The demo's config file: one service `web`, VIPs of both families, the 3 targets with their weights. */
function config(weights: number[]): string {
  return [
    "version: 1",
    "name: demo",
    "services:",
    "  - name: web",
    `    vips: [${VIP[4]}, "${VIP[6]}"]`,
    "    targets:",
    ...weights.map((w, k) =>
      `      - { fwmark: ${FWBASE + k + 1}, address: [${targetAddr(4, k + 1)}, "${targetAddr(6, k + 1)}"]${
        w === 1 ? "" : `, weight: ${w}`
      } }`
    ),
    "",
  ].join("\n");
}

/** Runs `nfqlb args...` in the lb netns; throws with its output when it fails. */
async function nfqlb(h: HostUnderTest, args: string[], okCodes = [0]): Promise<string[]> {
  const r = await h.nfqlb(args);
  if (!okCodes.includes(r.code)) {
    throw new Error(`nfqlb ${args.join(" ")} failed (${r.code}): ${(r.stderr + r.stdout).trim()}`);
  }
  return r.stdout.trimEnd().split("\n");
}

/** Output lines of apply/teardown: kernel lines dimmed, the rest (tables, process, summary) plain. */
function printChanges(lines: string[]): void {
  for (const l of lines) {
    const kernel = /^[-+] (ip6?tables|ip) /.test(l);
    say(`     ${kernel ? dim(l) : l.startsWith("~") ? yellow(l) : l}`);
  }
}

let host: HostUnderTest | undefined;

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
    host?.killStarted(); // the lb that apply started detached is not a process of the topology
    await teardownAll();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  say(
    bold("nfqlb-deno demo: Maglev load balancing with NFQUEUE, in network namespaces, from one config file"),
  );
  say(dim("   Nothing leaves this machine: all addresses live in namespaces the demo creates and removes."));

  section("1. Topology");
  const h = host = await HostUnderTest.create({ name: "demo" });
  const topo = h.topo;
  try {
    say(
      `   client ${cyan(topo.ns.cli)} ─ lb ${cyan(topo.ns.lb)} ─ targets ${
        topo.ns.targets.map(cyan).join(", ")
      }`,
    );
    say(`   VIP ${VIP[4]} and ${VIP[6]} on every target's loopback; targets reply directly (DSR).`);
    say(`   The lb netns has no NFQUEUE rule and no fwmark routing yet: nfqlb apply installs them.`);

    section("2. The config file, applied");
    h.write(config([1, 1, 1]));
    cmd(`cat ${h.file}`);
    for (const l of config([1, 1, 1]).trimEnd().split("\n")) say(`     ${cyan(l)}`);
    cmd(`nfqlb apply -f ${h.file}   (in the lb netns)`);
    printChanges(await nfqlb(h, ["apply", "-f", h.file]));

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
    table(topo, probes.map((p, i) => [label(p), tally(before[i])]), "Where the flows landed");

    section("4. Status: the host against the file");
    cmd(`nfqlb status -f ${h.file}`);
    for (const l of await nfqlb(h, ["status", "-f", h.file], [0, 1])) say(`     ${l}`);

    section("5. Drain target t2: weight 0 in the file, apply again");
    cmd(`$EDITOR ${h.file}   (target 102: weight 0)`);
    const line102 = (text: string) => text.split("\n").find((l) => l.includes(`fwmark: ${FWBASE + 2},`))!;
    say(`     ${dim(`- ${line102(config([1, 1, 1]))}`)}`);
    say(`     ${yellow(`+ ${line102(config([1, 0, 1]))}`)}`);
    h.write(config([1, 0, 1]));
    cmd(`nfqlb apply -f ${h.file}`);
    printChanges(await nfqlb(h, ["apply", "-f", h.file]));
    const fresh: Probe[] = probes.map((p, k) => ({ ...p, flows: topo.flows(p.fam, 150, 30000 + 1000 * k) }));
    const drained = await Promise.all(fresh.map((p) => send(topo, p)));
    table(topo, fresh.map((p, i) => [label(p), tally(drained[i])]), "New flows, after the drain");
    const onT2 = drained.flat().filter((x) => x === "t2").length;
    say(`   ${onT2 === 0 ? green("no new flow went to t2") : yellow(`${onT2} new flows went to t2`)}.`);
    // lb here keeps no connection table: the earlier flows are looked up again, and only t2's move
    const again = await Promise.all(probes.map((p) => send(topo, p)));
    const wentTo: Tally = {};
    let others = 0, moved = 0;
    probes.forEach((_, k) =>
      before[k].forEach((b, i) => {
        const now = again[k][i] || "unanswered";
        if (b === "t2") wentTo[now] = (wentTo[now] ?? 0) + 1;
        else {
          others++;
          if (now !== b) moved++;
        }
      })
    );
    const t2flows = Object.values(wentTo).reduce((a, b) => a + b, 0);
    say(
      `   The ${t2flows} earlier flows of t2 went to: ${
        Object.entries(wentTo).sort().map(([n, c]) => `${n} ${c}`).join(", ")
      }`,
    );
    say(
      `   Of the ${others} earlier flows on t1/t3, ${
        moved === 0 ? green("none moved") : yellow(`${moved} moved`)
      }${
        moved ? dim(" (Maglev rebuilds the table; a few slots of the remaining targets change hands)") : ""
      }.`,
    );
    say(
      dim("   (With `conntrack:` in the service, established connections would stay on t2 while it drains.)"),
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
    cmd(`nfqlb teardown -f ${h.file}`);
    const down = await nfqlb(h, ["teardown", "-f", h.file]);
    const kernel = down.filter((l) => /^- (ip6?tables|ip) /.test(l)).length;
    printChanges(down.filter((l) => !/^- (ip6?tables|ip) /.test(l)).slice(0, -1));
    say(`     ${dim(`- … ${kernel} kernel rules, chains and routes`)}`);
    say(`     ${down.at(-1)}`);
  } finally {
    h.killStarted();
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
