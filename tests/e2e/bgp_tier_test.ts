/**
 * End-to-end test of a tier of LB hosts behind BGP ECMP (docs/tier.md), with
 * real BIRD on both sides: a router namespace running BIRD (ECMP `merge
 * paths`, L4 multipath hash, BFD 100 ms x 5), LB hosts on a bridge in its
 * own namespace, each its own netns running `nfqlb run` with the same file
 * (its own NFQLB_SHM_DIR: the hosts share /dev/shm) and a `bgp:` section,
 * three DSR targets on the same bridge, and a client holding long-lived TCP (per family)
 * connections that exchange a line every 200 ms (net.core.txrehash=0, so a
 * retransmission does not re-pick the ECMP path).
 *
 * ```
 *  cli 10.218.0.2 ---- r0 [router] eth0 10.218.1.1 ----+      (IPv6: fd18::2, fd18::1, fd18:1::1, ...)
 *                                               bridge (own netns)
 *   h1 .11  h2 .12  h3 .13  (h4 .14 later) ------------+---- t1 .21  t2 .22  t3 .23 (VIPs on lo)
 *   VIPs 10.218.100.1 and fd18:100::1, announced by each host over an IPv4 and an IPv6 session;
 *   targets answer the client through the router (DSR)
 * ```
 *
 * In order: the router has one next hop per host once all are ready, and
 * the tables' digests agree; a host whose service has no healthy target (its
 * health checks rejected) is withdrawn and comes back; a host whose
 * dataplane is killed is withdrawn until it is restarted; then, with the
 * connections running: a fourth host is added (≥ 99 % survive), one host is
 * lost hard (link down, processes killed: ≥ 99 % survive; the withdrawal
 * time is measured), one is stopped by SIGTERM (every connection survives,
 * no new connection fails); last, a host reloaded with another weight shows
 * another digest. The measured figures are printed (docs/tier.md).
 *
 * Needs root and BIRD (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import {
  addNamespace,
  addVeth,
  deleteNamespace,
  inNetns,
  ipBatch,
  queueStats,
  skipUnlessRoot,
  sweepStale,
  sysctl,
} from "../harness/netns.ts";
import { birdMissing } from "../harness/bird.ts";
import { httpGet } from "../harness/http_probe.ts";
import { NFQLB } from "../harness/paths.ts";
import {
  type Proc,
  ProcGroup,
  type Runner,
  type RunOptions,
  type RunResult,
  waitUntil,
} from "../harness/process.ts";
import { agentArgs } from "../harness/traffic.ts";
import { derivedAdminAddress } from "../../host/names.ts";
import type { ChatOptions, ChatStatus } from "../helpers/tcp_chat.ts";
import { exists } from "../helpers/fs.ts";

const notRoot = skipUnlessRoot();
const noBird = birdMissing(notRoot, "e2e bgp tier");

type Fam = 4 | 6;
const FAMS: Fam[] = [4, 6];
const VIP = { 4: "10.218.100.1", 6: "fd18:100::1" } as const;
const HOST_PREFIX = { 4: 32, 6: 128 } as const;
const ECHO_PORT = 80, HEALTH_PORT = 7000, UDP_PORT = 5000;
const ROUTER = { 4: "10.218.1.1", 6: "fd18:1::1" } as const;
const NAME = "tier";
/** Connections the client holds per family, and how often each exchanges a line. */
const CONNS = 300, INTERVAL_MS = 200;
const DRAIN_S = 2;
const CHAT = new URL("../helpers/tcp_chat.ts", import.meta.url).pathname;

type Host = "h1" | "h2" | "h3" | "h4";
const HOSTS: Host[] = ["h1", "h2", "h3", "h4"];
const hostAddr = (h: Host, f: Fam = 4) =>
  f === 4 ? `10.218.1.${10 + Number(h.slice(1))}` : `fd18:1::${10 + Number(h.slice(1))}`;
const targetAddr = (i: number, f: Fam = 4) => f === 4 ? `10.218.1.${20 + i}` : `fd18:1::${20 + i}`;
const both = (i: number) => `[${targetAddr(i, 4)}, "${targetAddr(i, 6)}"]`;

/** The host file: the same for every host (the router id is each host's first address). */
function hostFile(weight3 = 1): string {
  return `version: 1
name: ${NAME}
services:
  - name: web
    vips: [${VIP[4]}, "${VIP[6]}"]
    targets:
      - { fwmark: 101, address: ${both(1)} }
      - { fwmark: 102, address: ${both(2)} }
      - { fwmark: 103, address: ${both(3)}, weight: ${weight3} }
    health: { type: tcp, port: ${HEALTH_PORT}, intervalMs: 200, timeoutMs: 150, rise: 2, fall: 2 }
bgp:
  localAs: 65001
  peers:
    - { address: ${ROUTER[4]}, as: 65000, bfd: true, holdSeconds: 3 }
    - { address: "${ROUTER[6]}", as: 65000, bfd: true, holdSeconds: 3 }
  drainSeconds: ${DRAIN_S}
  connectRetrySeconds: 1
`;
}

/** The router's BIRD: ECMP over the hosts' routes into the kernel, BFD, short timers. */
function routerConf(ctl: string): string {
  return `router id ${ROUTER[4]};
log stderr { info, remote, warning, error, auth, fatal, bug };
protocol device { scan time 10; }
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
protocol kernel { ipv6 { import none; export all; }; merge paths on; }
protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 5; }; }
template bgp lbs {
  local as 65000; hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 4;
  bfd on; graceful restart off;
  ipv4 { import all; export none; };
}
template bgp lbs6 from lbs { ipv6 { import all; export none; }; }
${HOSTS.map((h) => `protocol bgp ${h} from lbs { neighbor ${hostAddr(h)} as 65001; }`).join("\n")}
${HOSTS.map((h) => `protocol bgp ${h}v6 from lbs6 { neighbor ${hostAddr(h, 6)} as 65001; }`).join("\n")}
# control socket: ${ctl}
`;
}

let instances = 0;

/** The lab; see the module comment. Torn down by `await using`. */
class BgpTier {
  readonly prefix = `nfqe-${Deno.pid}-${900 + ++instances}`;
  readonly ns = {
    cli: `${this.prefix}-cli`,
    rtr: `${this.prefix}-rtr`,
    br: `${this.prefix}-br`,
    h: Object.fromEntries(HOSTS.map((h) => [h, `${this.prefix}-${h}`])) as Record<Host, string>,
    t: [1, 2, 3].map((i) => `${this.prefix}-t${i}`),
  };
  readonly shmDir: string;
  readonly workDir: string;
  readonly group = new ProcGroup(`bgp tier ${this.prefix}`);
  readonly run: Runner = (args, o) => this.group.run(args, o);
  readonly agents: Partial<Record<Host, Proc>> = {};
  bird: Proc | undefined;

  constructor() {
    this.shmDir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: `${this.prefix}-shm-` });
    this.workDir = Deno.makeTempDirSync({ prefix: `${this.prefix}-work-` });
  }

  static async create(): Promise<BgpTier> {
    const t = new BgpTier();
    try {
      await t.#setup();
    } catch (e) {
      await t.teardown();
      throw e;
    }
    return t;
  }

  async exec(ns: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
    return await this.run(inNetns(ns, args), o);
  }

  shm(h: Host): string {
    return `${this.shmDir}/${h}`;
  }

  file(h: Host): string {
    return `${this.workDir}/${h}.yaml`;
  }

  get ctl(): string {
    return `${this.workDir}/router.ctl`;
  }

  async #setup(): Promise<void> {
    await sweepStale();
    const { cli, rtr, br, h, t } = this.ns;
    const r = this.run;
    for (const ns of [cli, rtr, br, ...Object.values(h), ...t]) await addNamespace(ns, r);
    await ipBatch(br, ["link set up dev lo", "link add br0 type bridge", "link set up dev br0"], r);
    await addVeth("c0", cli, "r0", rtr, r);
    await ipBatch(cli, [
      "link set up dev lo",
      "link set up dev c0",
      "addr add 10.218.0.2/24 dev c0",
      "route add default via 10.218.0.1",
      "-6 addr add fd18::2/64 dev c0 nodad",
      "-6 route add default via fd18::1",
    ], r);
    // the client's connections keep their ECMP path across retransmissions, as behind a real router
    await sysctl(cli, ["net.core.txrehash=0"], r);
    const onBridge: [string, string, string, string][] = [
      [rtr, "prtr", ROUTER[4], ROUTER[6]],
      ...HOSTS.map((x): [string, string, string, string] => [h[x], `p${x}`, hostAddr(x), hostAddr(x, 6)]),
      ...[1, 2, 3].map((i): [string, string, string, string] => [
        t[i - 1],
        `pt${i}`,
        targetAddr(i),
        targetAddr(i, 6),
      ]),
    ];
    for (const [ns, port, addr, addr6] of onBridge) {
      await addVeth("eth0", ns, port, br, r);
      await ipBatch(br, [`link set ${port} master br0`, `link set up dev ${port}`], r);
      await ipBatch(ns, [
        "link set up dev lo",
        "link set up dev eth0",
        `addr add ${addr}/24 dev eth0`,
        `-6 addr add ${addr6}/64 dev eth0 nodad`,
      ], r);
    }
    await ipBatch(rtr, [
      "link set up dev r0",
      "addr add 10.218.0.1/24 dev r0",
      "-6 addr add fd18::1/64 dev r0 nodad",
    ], r);
    await sysctl(rtr, [
      "net.ipv4.ip_forward=1",
      "net.ipv4.fib_multipath_hash_policy=1",
      "net.ipv6.conf.all.forwarding=1",
      "net.ipv6.fib_multipath_hash_policy=1",
    ], r);
    for (const x of HOSTS) {
      await ipBatch(h[x], [`route add default via ${ROUTER[4]}`, `-6 route add default via ${ROUTER[6]}`], r);
      // the hosts forward to targets on the interface the packets came in on: no redirects to the router
      await sysctl(h[x], [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.eth0.send_redirects=0",
      ], r);
      Deno.mkdirSync(this.shm(x));
      Deno.writeTextFileSync(this.file(x), hostFile());
    }
    for (let i = 1; i <= 3; i++) {
      const ns = t[i - 1];
      await ipBatch(ns, [
        `addr add ${VIP[4]}/32 dev lo`,
        `-6 addr add ${VIP[6]}/128 dev lo nodad`,
        `route add default via ${ROUTER[4]}`,
        `-6 route add default via ${ROUTER[6]}`,
      ], r);
      await sysctl(ns, ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"], r);
      const readyFile = `${this.workDir}/ready.t${i}`;
      this.group.spawn(
        `t${i} serve`,
        inNetns(
          ns,
          agentArgs({
            cmd: "serve",
            name: `t${i}`,
            addrs: [VIP[4], VIP[6], targetAddr(i), targetAddr(i, 6)],
            udpPort: UDP_PORT,
            tcpPort: HEALTH_PORT,
            maxLifeS: 600,
            readyFile,
            echoTcpPorts: [ECHO_PORT],
          }),
        ),
      );
      assert.ok(await waitUntil(() => exists(readyFile), 30_000, 50), `t${i} server did not start`);
    }
    const conf = `${this.workDir}/router.conf`;
    Deno.writeTextFileSync(conf, routerConf(this.ctl));
    this.bird = this.group.spawn(
      "router bird",
      inNetns(rtr, ["bird", "-f", "-c", conf, "-s", this.ctl, "-P", `${this.workDir}/router.pid`]),
    );
  }

  /** Starts `nfqlb run` on host `h`. */
  start(h: Host): Proc {
    const p = this.group.spawn(`${h} nfqlb run`, inNetns(this.ns.h[h], [NFQLB, "run", "-f", this.file(h)]), {
      NFQLB_SHM_DIR: this.shm(h),
      NOTIFY_SOCKET: "",
      WATCHDOG_USEC: "",
      JOURNAL_STREAM: "",
    });
    this.agents[h] = p;
    return p;
  }

  /** The hosts the router's route to the VIP of a family goes to now. */
  async nextHops(f: Fam = 4): Promise<Set<Host>> {
    const r = await this.exec(this.ns.rtr, [
      "ip",
      `-${f}`,
      "-j",
      "route",
      "show",
      `${VIP[f]}/${HOST_PREFIX[f]}`,
    ], {
      allowFail: true,
    });
    const out = new Set<Host>();
    let routes: { gateway?: string; nexthops?: { gateway?: string }[] }[] = [];
    try {
      routes = JSON.parse(r.stdout || "[]");
    } catch { /* none */ }
    for (const rt of routes) {
      for (const gw of [rt.gateway, ...(rt.nexthops ?? []).map((n) => n.gateway)]) {
        const h = HOSTS.find((x) => hostAddr(x, f) === gw);
        if (h) out.add(h);
      }
    }
    return out;
  }

  /** Waits (bounded) until the router's next hops are exactly `want`; the time it took, ms, or -1. */
  async waitNextHops(want: Host[], timeoutMs: number, intervalMs = 20): Promise<number> {
    const t0 = Date.now();
    const key = [...want].sort().join(",");
    const ok = await waitUntil(
      async () =>
        (await Promise.all(FAMS.map((f) => this.nextHops(f)))).every((hops) =>
          [...hops].sort().join(",") === key
        ),
      timeoutMs,
      intervalMs,
    );
    return ok ? Date.now() - t0 : -1;
  }

  /** Per family, the time (ms from now) until the router's next hops are exactly `want`; -1: not within the bound. */
  async waitEach(want: Host[], timeoutMs: number): Promise<Record<Fam, number>> {
    const t0 = Date.now();
    const key = [...want].sort().join(",");
    const one = async (f: Fam) =>
      await waitUntil(async () => [...await this.nextHops(f)].sort().join(",") === key, timeoutMs, 10)
        ? Date.now() - t0
        : -1;
    const [a, b] = await Promise.all([one(4), one(6)]);
    return { 4: a, 6: b };
  }

  /** `nfqlb args` on host h. */
  async nfqlb(h: Host, args: string[]): Promise<RunResult> {
    return await this.exec(this.ns.h[h], [NFQLB, ...args], {
      env: { NFQLB_SHM_DIR: this.shm(h) },
      allowFail: true,
    });
  }

  /** Host h's /metrics. */
  async metrics(h: Host): Promise<string> {
    return (await httpGet(this.run, this.ns.h[h], `http://${derivedAdminAddress(NAME)}/metrics`)).body;
  }

  /** Host h's table digest from /metrics. */
  async digest(h: Host): Promise<string | undefined> {
    return /^nfqlb_table_info\{table="web",digest="([0-9a-f]+)"\} 1$/m.exec(await this.metrics(h))?.[1];
  }

  /** The pid of host h's dataplane, from its state file. */
  lbPid(h: Host): number | undefined {
    try {
      const st = JSON.parse(Deno.readTextFileSync(`${this.shm(h)}/.nfqlb-deno/host-${NAME}.json`));
      return typeof st.pid === "number" ? st.pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Packets host h's queue 2 has been handed so far. */
  async queued(h: Host): Promise<number> {
    return (await queueStats(this.ns.h[h], this.run)).get(2)?.seq ?? 0;
  }

  /** The pids running in host h's netns (all started by this test). */
  async pids(h: Host): Promise<number[]> {
    const r = await this.run(["ip", "netns", "pids", this.ns.h[h]], { allowFail: true });
    return r.stdout.split(/\s+/).filter((x) => /^\d+$/.test(x)).map(Number);
  }

  async teardown(): Promise<void> {
    if (this.group.closed) return;
    await this.group.close(5000);
    const { cli, rtr, br, h, t } = this.ns;
    for (const ns of [cli, rtr, ...Object.values(h), ...t, br]) await deleteNamespace(ns);
    for (const d of [this.shmDir, this.workDir]) {
      try {
        Deno.removeSync(d, { recursive: true });
      } catch { /* gone */ }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.teardown();
  }
}

/** The client of one family: the chat program in the client netns, its status file. */
class Chat {
  readonly proc: Proc;
  readonly dir: string;

  constructor(tier: BgpTier, f: Fam) {
    this.dir = `${tier.workDir}/chat${f}`;
    Deno.mkdirSync(this.dir);
    const o: ChatOptions = {
      dst: VIP[f],
      port: ECHO_PORT,
      conns: CONNS,
      intervalMs: INTERVAL_MS,
      replyTimeoutMs: 15_000,
      newEveryMs: 50,
      dir: this.dir,
      maxMs: 120_000,
    };
    this.proc = tier.group.spawn(
      `chat ipv${f}`,
      inNetns(tier.ns.cli, [
        Deno.execPath(),
        "run",
        "-A",
        "--quiet",
        "--no-prompt",
        "--no-config",
        CHAT,
        JSON.stringify(o),
      ]),
    );
  }

  status(): ChatStatus | undefined {
    try {
      return JSON.parse(Deno.readTextFileSync(`${this.dir}/status.json`)) as ChatStatus;
    } catch {
      return undefined;
    }
  }

  /** A status written after now (bounded wait). */
  async fresh(): Promise<ChatStatus> {
    const t0 = Date.now();
    let s: ChatStatus | undefined;
    await waitUntil(() => (s = this.status()) !== undefined && s.t > t0, 5000, 50);
    assert.ok(s, `no status from the client:\n${this.proc.describe()}`);
    return s;
  }

  async stop(): Promise<ChatStatus> {
    Deno.writeTextFileSync(`${this.dir}/stop`, "");
    await waitUntil(() => this.status()?.done === true, 20_000, 50);
    return this.status()!;
  }
}

/** The clients of both families, as one: counts summed, lists joined. */
class Chats {
  readonly all: Chat[];

  constructor(tier: BgpTier) {
    this.all = FAMS.map((f) => new Chat(tier, f));
  }

  static merge(ss: ChatStatus[]): ChatStatus {
    const targets: Record<string, number> = {};
    for (const s of ss) for (const [k, v] of Object.entries(s.targets)) targets[k] = (targets[k] ?? 0) + v;
    return {
      t: Math.min(...ss.map((s) => s.t)),
      established: ss.reduce((a, s) => a + s.established, 0),
      alive: ss.reduce((a, s) => a + s.alive, 0),
      broken: ss.flatMap((s) => s.broken),
      targets,
      stalls: ss.reduce((a, s) => a + s.stalls, 0),
      maxWaitMs: Math.max(...ss.map((s) => s.maxWaitMs)),
      connectRetries: ss.reduce((a, s) => a + s.connectRetries, 0),
      fresh: { ok: ss.reduce((a, s) => a + s.fresh.ok, 0), failed: ss.flatMap((s) => s.fresh.failed) },
      done: ss.every((s) => s.done),
    };
  }

  status(): ChatStatus | undefined {
    const ss = this.all.map((c) => c.status());
    return ss.every((s) => s !== undefined) ? Chats.merge(ss as ChatStatus[]) : undefined;
  }

  async fresh(): Promise<ChatStatus> {
    return Chats.merge(await Promise.all(this.all.map((c) => c.fresh())));
  }

  async stop(): Promise<ChatStatus> {
    return Chats.merge(await Promise.all(this.all.map((c) => c.stop())));
  }

  describe(): string {
    return this.all.map((c) => c.proc.describe()).join("\n");
  }
}

/** Survival over a phase: connections alive at its start that broke during it. */
function survival(before: ChatStatus, after: ChatStatus): { alive: number; broke: number; ratio: number } {
  const broke = after.broken.filter((b) => b.t > before.t).length;
  return { alive: before.alive, broke, ratio: (before.alive - broke) / before.alive };
}

/** The hosts' table digests are equal (waits, bounded, for health's last changes to land). */
async function agree(tier: BgpTier, hosts: Host[]): Promise<void> {
  let ds: (string | undefined)[] = [];
  const ok = await waitUntil(
    async () => {
      ds = await Promise.all(hosts.map((h) => tier.digest(h)));
      return ds[0] !== undefined && ds.every((d) => d === ds[0]);
    },
    5000,
    200,
  );
  const shows = ok
    ? []
    : await Promise.all(hosts.map((h) => tier.nfqlb(h, ["show", "--shm=web", "--digest"])));
  assert.ok(
    ok,
    `digests ${hosts.map((h, i) => `${h} ${ds[i]}`).join(", ")}\n${shows.map((r) => r.stdout).join("\n")}`,
  );
}

const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

Deno.test({
  name:
    "e2e bgp tier: ECMP over LB hosts announcing by BGP (BIRD); connections survive scale-out, hard loss, SIGTERM",
  ignore: notRoot || noBird,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tier = await BgpTier.create();
    const figures: string[] = [];
    const all: Host[] = ["h1", "h2", "h3"];
    const t0 = Date.now();
    const phases: string[] = [];
    const step = (name: string, fn: () => Promise<void>) =>
      t.step(name, async () => {
        phases.push(`+${Date.now() - t0} ms ${name.split(":")[0]}`);
        await fn();
      });
    for (const h of all) tier.start(h);

    await step("three hosts ready: the router has three next hops, the digests agree", async () => {
      const ms = await tier.waitNextHops(all, 45_000, 50);
      assert.ok(
        ms >= 0,
        `next hops ${[...await tier.nextHops()]}\n${
          all.map((h) => tier.agents[h]!.describe()).join("\n")
        }\n${tier.bird?.describe()}`,
      );
      figures.push(`start of 3 hosts to 3 next hops: ${Date.now() - t0} ms`);
      const digests = await Promise.all(all.map((h) => tier.digest(h)));
      assert.ok(digests[0] && digests.every((d) => d === digests[0]), `digests ${digests}`);
      // the router has every route, so both sessions are up; h1's own view (birdc polled by run) may lag a
      // poll behind on a loaded machine: wait for it, bounded
      let st = await tier.nfqlb("h1", ["status", "-f", tier.file("h1")]);
      await waitUntil(
        async () => {
          st = await tier.nfqlb("h1", ["status", "-f", tier.file("h1")]);
          return /^ {4}session fd18:1::1 \(peer2\): up, Established$/m.test(st.stdout) &&
            /^ {4}session 10\.218\.1\.1 \(peer1\): up, Established$/m.test(st.stdout);
        },
        10_000,
        200,
      );
      assert.match(st.stdout, /^ {4}session 10\.218\.1\.1 \(peer1\): up, Established$/m, st.stdout);
      assert.match(st.stdout, /^ {4}vip 10\.218\.100\.1\/32 \(web\): announced since /m, st.stdout);
      assert.match(st.stdout, new RegExp(`digest ${digests[0]}$`, "m"), st.stdout);
      const m = await tier.metrics("h1");
      assert.match(m, /^nfqlb_bgp_session_up\{peer="10\.218\.1\.1"\} 1$/m);
      assert.match(m, /^nfqlb_vip_announced\{vip="10\.218\.100\.1\/32"\} 1$/m);
      assert.match(m, /^nfqlb_bgp_session_up\{peer="fd18:1::1"\} 1$/m);
      assert.match(m, /^nfqlb_vip_announced\{vip="fd18:100::1\/128"\} 1$/m);
      assert.match(st.stdout, /^ {4}session fd18:1::1 \(peer2\): up, Established$/m, st.stdout);
    });

    await step("a host whose service has no healthy target is withdrawn, and comes back", async () => {
      const rule = [
        "-p",
        "tcp",
        "--dport",
        String(HEALTH_PORT),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
      ];
      await tier.exec(tier.ns.h.h1, ["iptables", "-w", "-I", "OUTPUT", ...rule]);
      const ms = await tier.waitNextHops(["h2", "h3"], 15_000);
      assert.ok(ms >= 0, `next hops ${[...await tier.nextHops()]}`);
      figures.push(`health checks failing to withdrawn (fall 2 x 200 ms): ${ms} ms`);
      const st = await tier.nfqlb("h1", ["status", "-f", tier.file("h1")]);
      assert.match(
        st.stdout,
        /vip 10\.218\.100\.1\/32 \(web\): withdrawn since \S+: panic: every target fails/,
        st.stdout,
      );
      assert.match(await tier.metrics("h1"), /^nfqlb_vip_announced\{vip="10\.218\.100\.1\/32"\} 0$/m);
      await tier.exec(tier.ns.h.h1, ["iptables", "-w", "-D", "OUTPUT", ...rule]);
      assert.ok(await tier.waitNextHops(all, 15_000) >= 0, `next hops ${[...await tier.nextHops()]}`);
      // the targets came back in any order, each to its own row: the tables agree again
      await agree(tier, all);
    });

    await step("a host whose dataplane is killed is withdrawn until it is back", async () => {
      // the first restart is at once, later ones back off: kill until the router is seen without h1
      let seen = -1;
      for (let k = 0; k < 6 && seen < 0; k++) {
        let pid: number | undefined;
        await waitUntil(() => (pid = tier.lbPid("h1")) !== undefined, 10_000, 20);
        assert.ok(pid, "h1 has no dataplane");
        Deno.kill(pid, "SIGKILL");
        seen = await tier.waitNextHops(["h2", "h3"], 1500, 10);
        if (seen < 0) {
          await waitUntil(() => tier.lbPid("h1") !== pid, 15_000, 20);
          await tier.waitNextHops(all, 15_000);
        }
      }
      assert.ok(seen >= 0, "the router never lost h1's next hop while its dataplane was down");
      assert.ok(await tier.waitNextHops(all, 20_000) >= 0, `next hops ${[...await tier.nextHops()]}`);
      await agree(tier, all);
    });

    const chat = new Chats(tier);
    let s0: ChatStatus | undefined;
    await step(`${CONNS} connections, a line every ${INTERVAL_MS} ms`, async () => {
      const ok = await waitUntil(() => (s0 = chat.status())?.alive === CONNS * FAMS.length, 30_000, 100);
      assert.ok(
        ok,
        `alive ${s0?.alive}, broken ${JSON.stringify(s0?.broken.slice(0, 5))}\n${chat.describe()}`,
      );
      assert.ok(Object.keys(s0!.targets).length === 3, `targets ${JSON.stringify(s0!.targets)}`);
      await new Promise((r) => setTimeout(r, 1000));
    });

    await step("adding a fourth host: ≥ 99 % of the connections survive", async () => {
      const before = await chat.fresh();
      const tStart = Date.now();
      const h4 = tier.start("h4");
      const ms = await tier.waitNextHops([...all, "h4"], 30_000);
      const toRouter = ms >= 0 ? Date.now() - tStart : -1;
      assert.ok(ms >= 0, `next hops ${[...await tier.nextHops()]}\n${tier.agents.h4!.describe()}`);
      await new Promise((r) => setTimeout(r, 3000));
      const after = await chat.fresh();
      const s = survival(before, after);
      const line = h4.stderr.split("\n").find((l) => l.includes("bgp: announced"));
      const announced = line ? Date.parse(line.split(" ")[0]) - tStart : -1;
      figures.push(
        `scale-out 3 -> 4 hosts: ${s.alive - s.broke}/${s.alive} survived (${pct(s.ratio)}), ` +
          `start of nfqlb run to announced ${announced} ms, to the router's 4th next hop ${toRouter} ms, fresh connections failed ${
            after.fresh.failed.length - before.fresh.failed.length
          }`,
      );
      assert.ok(s.ratio >= 0.99, `${s.broke} broke: ${JSON.stringify(after.broken.slice(-5))}`);
    });

    await step(
      "hard loss of a host (link down, processes killed): ≥ 99 % survive, BFD withdraws it",
      async () => {
        // every host carries connections before one is lost (up to 3 windows of 1 s: one skewed window is noted)
        let perHost: number[] = [];
        const windows: string[] = [];
        for (let k = 0; k < 3 && !(perHost.length > 0 && perHost.every((n) => n > 0)); k++) {
          const q0 = await Promise.all(HOSTS.map((h) => tier.queued(h)));
          await new Promise((r) => setTimeout(r, 1000));
          const q1 = await Promise.all(HOSTS.map((h) => tier.queued(h)));
          perHost = q1.map((q, i) => q - q0[i]);
          windows.push(perHost.join(", "));
        }
        figures.push(`packets queued per host in 1 s (h1..h4): ${windows.join("; then ")}`);
        if (!perHost.every((n) => n > 0)) {
          const raw = await Promise.all(
            HOSTS.map((h) =>
              tier.exec(tier.ns.h[h], ["cat", "/proc/net/netfilter/nfnetlink_queue"], { allowFail: true })
            ),
          );
          const route = await tier.exec(tier.ns.rtr, ["ip", "route", "show", `${VIP[4]}/32`]);
          const neigh = await tier.exec(tier.ns.rtr, ["ip", "neigh", "show"]);
          assert.fail(
            `a host carries nothing: ${windows.join("; ")}; router: ${route.stdout}\n${neigh.stdout}\n${
              raw.map((r) => r.stdout).join("\n")
            }\n${JSON.stringify((await chat.fresh()).targets)}\n` +
              HOSTS.map((h) =>
                tier.agents[h]?.stderr.split("\n").filter((l) => /bgp|exited|restart/.test(l)).join("\n")
              ).join("\n---\n"),
          );
        }
        const before = await chat.fresh();
        const tLoss = Date.now();
        await tier.exec(tier.ns.h.h3, ["ip", "link", "set", "eth0", "down"]);
        for (const pid of await tier.pids("h3")) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch { /* gone */ }
        }
        const ms = await tier.waitNextHops(["h1", "h2", "h4"], 15_000, 10);
        const withdrawn = ms >= 0 ? Date.now() - tLoss : -1;
        assert.ok(ms >= 0, `next hops ${[...await tier.nextHops()]}`);
        await new Promise((r) => setTimeout(r, 4000)); // retransmissions over the new path
        const after = await chat.fresh();
        const s = survival(before, after);
        figures.push(
          `hard loss of 1 of 4 hosts: ${s.alive - s.broke}/${s.alive} survived (${pct(s.ratio)}), ` +
            `router withdrew it in ${withdrawn} ms (BFD 100 ms x 5), stalls > 1 s so far ${after.stalls}, ` +
            `fresh connections failed ${after.fresh.failed.length - before.fresh.failed.length}`,
        );
        assert.ok(withdrawn <= 3000, `withdrawal took ${withdrawn} ms`);
        assert.ok(s.ratio >= 0.99, `${s.broke} broke: ${JSON.stringify(after.broken.slice(-5))}`);
      },
    );

    await step(
      "SIGTERM of a host: withdrawn first, every connection survives, no new connection fails",
      async () => {
        const before = await chat.fresh();
        const agent = tier.agents.h2!;
        const tTerm = Date.now();
        agent.signal("SIGTERM");
        const each = await tier.waitEach(["h1", "h4"], 10_000);
        assert.ok(
          each[4] >= 0 && each[6] >= 0,
          `next hops ${[...await tier.nextHops(4)]} / ${[...await tier.nextHops(6)]}`,
        );
        const withdrawn = `IPv4 ${each[4]} ms, IPv6 ${each[6]}`;
        const st = await Promise.race([
          agent.done,
          new Promise<undefined>((r) => setTimeout(() => r(undefined), 30_000)),
        ]);
        assert.equal(st?.code, 0, agent.describe());
        const exited = Date.now() - tTerm;
        assert.ok(exited >= DRAIN_S * 1000, `exited after ${exited} ms, before the drain of ${DRAIN_S} s`);
        tier.group.forget(agent);
        await new Promise((r) => setTimeout(r, 2000));
        const after = await chat.fresh();
        const s = survival(before, after);
        const freshFailed = after.fresh.failed.filter((f) => f.t > before.t);
        figures.push(
          `SIGTERM of 1 of 3 hosts: ${s.alive - s.broke}/${s.alive} survived (${pct(s.ratio)}), withdrawn ` +
            `${withdrawn} ms after the signal, exit 0 after ${exited} ms (drain ${DRAIN_S} s), ` +
            `fresh connections ${after.fresh.ok - before.fresh.ok} ok, ${freshFailed.length} failed`,
        );
        assert.equal(s.broke, 0, JSON.stringify(after.broken.slice(-5)));
        assert.equal(freshFailed.length, 0, JSON.stringify(freshFailed.slice(0, 5)));
        assert.match(agent.stderr, /bgp: withdrew every VIP in \d+ ms; draining 2 s before stopping/);
      },
    );

    const last = await chat.stop();
    figures.push(
      `client: ${last.established} connections, ${last.broken.length} broken in all, ${last.stalls} answers took > 1 s ` +
        `(longest ${last.maxWaitMs} ms), connects tried again ${last.connectRetries}, fresh connections ${last.fresh.ok} ok / ${last.fresh.failed.length} failed` +
        (last.fresh.failed.length > 0
          ? ` (${last.fresh.failed.map((f) => `${f.why} at +${f.t - t0} ms`).join(", ")})`
          : ""),
    );

    await step("a host reloaded with another weight shows another digest", async () => {
      const d1 = await tier.digest("h1");
      Deno.writeTextFileSync(tier.file("h4"), hostFile(2));
      let d4: string | undefined;
      const ok = await waitUntil(
        async () => (d4 = await tier.digest("h4")) !== undefined && d4 !== d1,
        15_000,
        200,
      );
      assert.ok(ok, `h1 ${d1}, h4 ${d4}`);
      const show = await tier.nfqlb("h4", ["show", "--shm=web", "--digest"]);
      assert.match(show.stdout, new RegExp(`^  Digest: ${d4}$`, "m"), show.stdout);
    });
    console.log(`bgp tier figures:\n  ${figures.join("\n  ")}\n  steps: ${phases.join("; ")}`);
    if (Deno.env.get("BGP_TIER_DEBUG")) {
      for (const h of HOSTS) {
        console.log(
          `--- ${h}\n${
            tier.agents[h]?.stderr.split("\n").filter((l) => /bgp|bird|health|SIGTERM/.test(l)).join("\n")
          }`,
        );
      }
      console.log(`--- router\n${tier.bird?.stderr}`);
    }
  },
});
