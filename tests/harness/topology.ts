/**
 * A client / load-balancer / N-target topology of network namespaces for
 * the end-to-end tests and the demo (DSR, Meridio-like; after
 * the netns benchmark harness the performance figures were measured with):
 *
 * ```
 *  <p>-cli                  <p>-lb                          <p>-t1..tN
 *  cli0 10.213.0.1/24 ---- lb0 10.213.0.254   t<i> 10.213.<i>.254 ---- eth0 10.213.<i>.1   lo: VIP
 *       10.213.0.11.. (sources)                   fd13:<i>::254               fd13:<i>::1
 *       fd13::1/64, fd13::11..      fd13::254
 *  routes: VIP via lb      mangle PREROUTING -d VIP -> NFQUEUE (our lb) | HMARK (stand-in)
 *                          ip rule fwmark 10<i> -> table 10<i>: default via target i
 *  VIP = 10.213.100.1 / fd13:100::1; targets reply directly (DSR, through the lb netns' main table)
 * ```
 *
 * Every instance has its own name prefix (`nfqe-<pid>-<n>`), shm directory
 * (NFQLB_SHM_DIR) and scratch directory, so instances can run side by side.
 * Addresses (addresses.ts) are private test subnets that exist only inside
 * the namespaces. Built on netns.ts (namespaces, links, addresses) and a
 * process group of process.ts (every command and process of the instance);
 * `topo.nfqlb` (nfqlb.ts) drives nfqlb in the lb netns and `topo.client`
 * (traffic.ts) sends traffic from the client netns through the agent.
 * {@link Topology.teardown} stops every process the instance started (by
 * pid), deletes the namespaces (and with them every iptables rule) and the
 * directories; it runs from `await using` and never throws.
 */
import { type Family, FWBASE, targetAddr, TCP_PORT, UDP_PORT, VIP } from "./addresses.ts";
import type { AgentCommand, Flow } from "./agent/types.ts";
import {
  addNamespace,
  addVeth,
  deleteNamespace,
  deleteNamespaceSync,
  inNetns,
  ipBatch,
  isRoot,
  type QueueStat,
  queueStats,
  sweepStale,
  sysctl,
} from "./netns.ts";
import { NfqlbDriver } from "./nfqlb.ts";
import {
  type Proc,
  ProcGroup,
  type Runner,
  type RunOptions,
  type RunResult,
  w,
  waitUntil,
} from "./process.ts";
import { agentArgs, Client, runAgent } from "./traffic.ts";
import { exists } from "../helpers/fs.ts";

/**
 * How the lb netns steers VIP traffic: `nfqueue` (iptables -j NFQUEUE to one
 * queue or a --queue-balance range, served by `nfqlb lb`; with `bypass`, the
 * rule has --queue-bypass: while no program is bound, packets pass
 * unbalanced), `hmark` (the in-kernel -j HMARK stand-in; no lb process) or
 * `none` (no rule).
 */
export type Steering =
  | { mode: "nfqueue"; queue: number; bypass?: boolean }
  | { mode: "nfqueue"; balance: [number, number]; bypass?: boolean }
  | { mode: "hmark" }
  | { mode: "none" };

/** Options of {@link Topology}. */
export interface TopologyOptions {
  steering: Steering;
  /** Number of targets (default 3, at most 9). */
  targets?: number;
  /** Number of extra client source addresses (default 16). */
  sources?: number;
  /** Log each command (default: env NFQLB_E2E_VERBOSE). */
  verbose?: boolean;
  /** More UDP / TCP ports the targets' servers answer on (besides UDP_PORT / TCP_PORT). */
  extraUdpPorts?: number[];
  extraTcpPorts?: number[];
  /** TCP ports whose servers echo lines on long-lived connections (agent `serve` echoTcpPorts). */
  echoTcpPorts?: number[];
}

/** Kinds of packets counted by iptables rules in every target's INPUT chain. */
export type CounterKind = "icmp" | "sctp";

let instances = 0;
const live = new Set<Topology>();

/** Tears down every live topology (for signal handlers). */
export async function teardownAll(): Promise<void> {
  await Promise.all([...live].map((t) => t.teardown()));
}

/** The namespace topology; see the module comment. */
export class Topology {
  /** Name prefix of everything this instance creates. */
  readonly prefix: string;
  /** Namespace names. */
  readonly ns: { cli: string; lb: string; targets: string[] };
  /** How the lb netns steers VIP traffic. */
  readonly steering: Steering;
  /** Number of targets. */
  readonly nTargets: number;
  /** Number of extra client source addresses. */
  readonly nSources: number;
  /** NFQLB_SHM_DIR for every nfqlb command of this instance. */
  readonly shmDir: string;
  /** Scratch directory (agent ready/stop files). */
  readonly workDir: string;
  /** Target shm name. */
  readonly shm: string;
  /** Frag-table stats shm name. */
  readonly ftShm: string;
  /** Trace server name (`--trace_address=unix:<name>`). */
  readonly traceName: string;
  /** Log every command to stderr. */
  readonly verbose: boolean;
  /** NFQLB_FLOW_ADDRESS of this instance's nfqlb commands (flowlb and the flow-* clients). */
  readonly flowAddress: string;
  /** Extra server ports (see {@link TopologyOptions}). */
  readonly extraUdpPorts: number[];
  readonly extraTcpPorts: number[];
  /** Echo TCP ports (see {@link TopologyOptions}). */
  readonly echoTcpPorts: number[];
  /** nfqlb in the lb netns: CLI commands, the lb / flowlb process. */
  readonly nfqlb: NfqlbDriver;
  /** The client namespace's side of the traffic: probes, pings, crafted packets, streams to the VIP. */
  readonly client: Client;
  #group: ProcGroup;
  /** The targets' servers (index = target - 1), for stopServer / startServer. */
  #servers: (Proc | undefined)[] = [];
  #serverStarts = 0;
  #teardown: Promise<void> | undefined;

  constructor(o: TopologyOptions) {
    const n = o.targets ?? 3;
    if (n < 1 || n > 9) throw new Error("targets must be 1..9");
    this.prefix = `nfqe-${Deno.pid}-${++instances}`;
    this.ns = {
      cli: `${this.prefix}-cli`,
      lb: `${this.prefix}-lb`,
      targets: Array.from({ length: n }, (_, i) => `${this.prefix}-t${i + 1}`),
    };
    this.steering = o.steering;
    this.nTargets = n;
    this.nSources = o.sources ?? 16;
    this.shmDir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: `${this.prefix}-shm-` });
    this.workDir = Deno.makeTempDirSync({ prefix: `${this.prefix}-work-` });
    this.shm = `${this.prefix}-tshm`;
    this.ftShm = `${this.prefix}-ftshm`;
    this.traceName = `${this.prefix}-trace`;
    this.flowAddress = `unix:${this.prefix}-flows`;
    this.extraUdpPorts = o.extraUdpPorts ?? [];
    this.extraTcpPorts = o.extraTcpPorts ?? [];
    this.echoTcpPorts = o.echoTcpPorts ?? [];
    this.verbose = o.verbose ?? !!Deno.env.get("NFQLB_E2E_VERBOSE");
    this.#group = new ProcGroup(`topology ${this.prefix}`);
    this.nfqlb = new NfqlbDriver(this);
    this.client = new Client(this);
    live.add(this);
  }

  /** Creates and sets up a topology; tears it down again if setup fails. */
  static async create(o: TopologyOptions): Promise<Topology> {
    const t = new Topology(o);
    try {
      await t.setup();
    } catch (e) {
      await t.teardown();
      throw e;
    }
    return t;
  }

  /** Target names: t1..tN. */
  get targetNames(): string[] {
    return this.ns.targets.map((_, i) => `t${i + 1}`);
  }

  /** fwmarks of the targets: 101..10N. */
  get fwmarks(): number[] {
    return this.ns.targets.map((_, i) => FWBASE + i + 1);
  }

  /** The client's addresses of a family: the primary one first, then the sources. */
  clientAddrs(fam: Family): string[] {
    const a = [fam === 4 ? "10.213.0.1" : "fd13::1"];
    for (let i = 0; i < this.nSources; i++) a.push(fam === 4 ? `10.213.0.${11 + i}` : `fd13::${11 + i}`);
    return a;
  }

  /**
   * `n` distinct flows of a family: source addresses cycle through the client
   * addresses, source ports count up from `sportBase`.
   */
  flows(fam: Family, n: number, sportBase = 20000, addrs = this.clientAddrs(fam)): Flow[] {
    return Array.from({ length: n }, (_, i) => ({ src: addrs[i % addrs.length], sport: sportBase + i }));
  }

  /** Logs `msg` to stderr when {@link verbose}. */
  log(msg: string): void {
    if (this.verbose) console.error(`[${this.prefix}] ${msg}`);
  }

  /** Throws once teardown has started. */
  check(): void {
    this.#group.check();
  }

  /**
   * Runs a command in the host namespace (bounded, throws on failure unless
   * allowFail). Refused after teardown started; killed when teardown starts.
   */
  async sh(args: string[], o: RunOptions = {}): Promise<RunResult> {
    this.check();
    this.log(args.join(" "));
    return await this.#group.run(args, o);
  }

  /** {@link sh} as a {@link Runner}, for the netns functions. */
  #sh: Runner = (args, o) => this.sh(args, o);

  /** Runs a command inside namespace `ns`. */
  async exec(ns: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
    return await this.sh(inNetns(ns, args), o);
  }

  /** Builds namespaces, links, addresses, routes, rules, counters and servers. */
  async setup(): Promise<void> {
    if (!isRoot()) throw new Error("the e2e topology needs root (network namespaces, iptables)");
    await sweepStale();
    const { cli, lb, targets } = this.ns;
    const sh = this.#sh;
    for (const ns of [cli, lb, ...targets]) await addNamespace(ns, sh);
    await sysctl(lb, ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], sh);
    await sysctl(cli, ["net.ipv4.ip_local_port_range=10000 19999"], sh);

    // client <-> lb (the veths are created directly inside the namespaces)
    await addVeth("cli0", cli, "lb0", lb, sh);
    const cliLines = ["link set up dev lo", "link set up dev cli0"];
    for (const a of this.clientAddrs(4)) cliLines.push(`addr add ${a}/24 dev cli0`);
    for (const a of this.clientAddrs(6)) cliLines.push(`-6 addr add ${a}/64 dev cli0 nodad`);
    cliLines.push(
      `route add ${VIP[4]}/32 via 10.213.0.254`,
      `-6 route add ${VIP[6]}/128 via fd13::254`,
      `route add 10.213.0.0/16 via 10.213.0.254`,
      `-6 route add fd13::/16 via fd13::254`,
    );
    await ipBatch(cli, cliLines, sh);
    const lbLines = [
      "link set up dev lo",
      "link set up dev lb0",
      "addr add 10.213.0.254/24 dev lb0",
      "-6 addr add fd13::254/64 dev lb0 nodad",
    ];

    // lb <-> targets, fwmark routing (DSR)
    for (let i = 1; i <= this.nTargets; i++) {
      const ns = targets[i - 1];
      const fw = FWBASE + i;
      await addVeth(`t${i}`, lb, "eth0", ns, sh);
      lbLines.push(
        `link set up dev t${i}`,
        `addr add 10.213.${i}.254/24 dev t${i}`,
        `-6 addr add fd13:${i}::254/64 dev t${i} nodad`,
        `rule add fwmark ${fw} table ${fw}`,
        `-6 rule add fwmark ${fw} table ${fw}`,
        `route add default via 10.213.${i}.1 table ${fw}`,
        `-6 route add default via fd13:${i}::1 table ${fw}`,
      );
      await ipBatch(ns, [
        "link set up dev lo",
        "link set up dev eth0",
        `addr add 10.213.${i}.1/24 dev eth0`,
        `-6 addr add fd13:${i}::1/64 dev eth0 nodad`,
        `addr add ${VIP[4]}/32 dev lo`,
        `-6 addr add ${VIP[6]}/128 dev lo nodad`,
        `route add default via 10.213.${i}.254`,
        `-6 route add default via fd13:${i}::254`,
      ], sh);
      // counters: ICMP errors and SCTP reaching this target
      for (
        const [ipt, rules] of [
          ["iptables", ["-p icmp --icmp-type fragmentation-needed", "-p 132"]],
          ["ip6tables", ["-p ipv6-icmp --icmpv6-type packet-too-big", "-p 132"]],
        ] as const
      ) {
        await this.exec(ns, w(`${ipt} -w -A INPUT ${rules[0]} -m comment --comment e2e-icmp`));
        await this.exec(ns, w(`${ipt} -w -A INPUT ${rules[1]} -m comment --comment e2e-sctp`));
      }
    }
    await ipBatch(lb, lbLines, sh);
    await this.setSteering(this.steering, "-A");
    await this.#startServers();
    this.log("setup done");
  }

  /** Adds (-A) or deletes (-D) the steering rule of `s` in the lb netns, both families. */
  async setSteering(s: Steering, op: "-A" | "-D"): Promise<void> {
    if (s.mode === "none") return;
    let tail: string[];
    if (s.mode === "hmark") {
      tail = w(
        `-j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-mod ${this.nTargets} --hmark-offset ${
          FWBASE + 1
        } --hmark-rnd 0x1234`,
      );
    } else if ("queue" in s) {
      tail = ["-j", "NFQUEUE", "--queue-num", String(s.queue)];
    } else {
      tail = ["-j", "NFQUEUE", "--queue-balance", `${s.balance[0]}:${s.balance[1]}`];
    }
    if (s.mode === "nfqueue" && s.bypass) tail.push("--queue-bypass");
    await this.exec(this.ns.lb, [...w(`iptables -w -t mangle ${op} PREROUTING -d ${VIP[4]}/32`), ...tail]);
    await this.exec(this.ns.lb, [...w(`ip6tables -w -t mangle ${op} PREROUTING -d ${VIP[6]}/128`), ...tail]);
  }

  /** Stops the server of target i (1-based), by its pid; its ports then refuse connections. */
  async stopServer(i: number): Promise<void> {
    const p = this.#servers[i - 1];
    if (!p) return;
    this.#servers[i - 1] = undefined;
    await p.stop(5000);
    this.forget(p);
  }

  /** Starts the server of target i (1-based) again, as setup did; resolves once it is bound. */
  async startServer(i: number): Promise<void> {
    if (this.#servers[i - 1]) return;
    const readyFile = `${this.workDir}/ready.t${i}.${++this.#serverStarts}`;
    const p = this.#spawnServer(i - 1, readyFile);
    this.#servers[i - 1] = p;
    const ok = await waitUntil(() => p.status !== undefined || exists(readyFile), 60_000);
    if (!ok || p.status) throw new Error(`server t${i} did not start:\n${p.describe()}`);
  }

  #spawnServer(i: number, readyFile: string): Proc {
    return this.spawnAgent(this.ns.targets[i], `server t${i + 1}`, {
      cmd: "serve",
      name: `t${i + 1}`,
      addrs: [VIP[4], VIP[6]],
      udpPort: UDP_PORT,
      tcpPort: TCP_PORT,
      maxLifeS: 900,
      readyFile,
      extraUdpPorts: this.extraUdpPorts,
      extraTcpPorts: this.extraTcpPorts,
      echoTcpPorts: this.echoTcpPorts,
    });
  }

  async #startServers(): Promise<void> {
    const ready: string[] = [];
    const procs: Proc[] = [];
    this.ns.targets.forEach((_ns, i) => {
      const readyFile = `${this.workDir}/ready.t${i + 1}`;
      ready.push(readyFile);
      procs.push(this.#spawnServer(i, readyFile));
    });
    this.#servers = [...procs];
    const ok = await waitUntil(() => procs.some((p) => p.status) || ready.every((f) => exists(f)), 60_000);
    const dead = procs.find((p) => p.status);
    if (dead) throw new Error(`server agent died:\n${dead.describe()}`);
    if (!ok) {
      throw new Error(`server agents not ready after 60 s:\n${procs.map((p) => p.describe()).join("\n")}`);
    }
  }

  /**
   * Turns the targets into NAT targets: the VIPs leave their loopback, and a
   * server named n<i> answers on the target's own addresses at `port` (UDP and
   * TCP). Returns the server names, in target order.
   */
  async startNatServers(port: number): Promise<string[]> {
    const names = this.ns.targets.map((_, k) => `n${k + 1}`);
    const ready: string[] = [];
    for (const [k, ns] of this.ns.targets.entries()) {
      await this.exec(ns, ["ip", "addr", "del", `${VIP[4]}/32`, "dev", "lo"]);
      await this.exec(ns, ["ip", "-6", "addr", "del", `${VIP[6]}/128`, "dev", "lo"]);
      const readyFile = `${this.workDir}/nat-ready.${k + 1}`;
      ready.push(readyFile);
      this.spawnAgent(ns, `nat server ${names[k]}`, {
        cmd: "serve",
        name: names[k],
        addrs: [targetAddr(4, k + 1), targetAddr(6, k + 1)],
        udpPort: port,
        tcpPort: port,
        maxLifeS: 600,
        readyFile,
      });
    }
    const up = await waitUntil(() => ready.every((f) => exists(f)), 60_000);
    if (!up) throw new Error("NAT servers not ready after 60 s");
    return names;
  }

  /**
   * Starts the agent's `echo` server (libc sockets, large receive buffers:
   * for fixed-rate `blast` traffic) in every target on the VIPs at UDP
   * `port`, answering as the servers of setup do; waits until they are ready.
   */
  async startEchoServers(port: number): Promise<void> {
    const ready = this.ns.targets.map((ns, k) => {
      const readyFile = `${this.workDir}/echo-ready.${port}.${k + 1}`;
      this.spawnAgent(ns, `echo server t${k + 1}`, {
        cmd: "echo",
        name: `t${k + 1}`,
        addrs: [VIP[4], VIP[6]],
        port,
        maxLifeS: 600,
        readyFile,
      });
      return readyFile;
    });
    const up = await waitUntil(() => ready.every((f) => exists(f)), 60_000);
    if (!up) throw new Error(`echo servers on port ${port} not ready after 60 s`);
  }

  /** Starts a long-running agent in `ns` (stopped at teardown). */
  spawnAgent(ns: string, label: string, c: AgentCommand): Proc {
    return this.spawn(ns, label, agentArgs(c));
  }

  /** Starts `args` in namespace `ns` as a long-running process (stopped at teardown). */
  spawn(ns: string, label: string, args: string[], env?: Record<string, string>): Proc {
    return this.#group.spawn(label, inNetns(ns, args), env);
  }

  /** Stops tracking a process started by {@link spawn} that the caller has stopped. */
  forget(p: Proc): void {
    this.#group.forget(p);
  }

  /** Runs a one-shot agent command in `ns` and returns its JSON result. */
  async agent<T>(ns: string, c: AgentCommand, timeoutMs = 120_000): Promise<T> {
    return await runAgent<T>(this.#sh, ns, c, timeoutMs);
  }

  /** Packet counters of one kind in every target: name → packets. */
  async counters(kind: CounterKind): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    await Promise.all(this.ns.targets.map(async (ns, i) => {
      let n = 0;
      for (const ipt of ["iptables", "ip6tables"]) {
        const r = await this.exec(ns, [ipt, "-w", "-nvxL", "INPUT"]);
        for (const line of r.stdout.split("\n")) {
          if (line.includes(`/* e2e-${kind} */`)) n += Number(line.trim().split(/\s+/)[0]);
        }
      }
      out[`t${i + 1}`] = n;
    }));
    return out;
  }

  /** rx packets on each target's eth0: name → packets. */
  async targetRx(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    await Promise.all(this.ns.targets.map(async (ns, i) => {
      const r = await this.exec(ns, ["cat", "/sys/class/net/eth0/statistics/rx_packets"]);
      out[`t${i + 1}`] = Number(r.stdout.trim());
    }));
    return out;
  }

  /** The lb netns' /proc/net/netfilter/nfnetlink_queue, parsed. */
  async queueStats(): Promise<Map<number, QueueStat>> {
    return await queueStats(this.ns.lb, this.#sh);
  }

  /**
   * Stops processes, deletes namespaces and directories. Idempotent and safe
   * to call while setup or traffic is still running (those are killed and
   * refused from then on); concurrent callers share one teardown. Never throws.
   */
  teardown(): Promise<void> {
    this.#teardown ??= this.#doTeardown();
    return this.#teardown;
  }

  async #doTeardown(): Promise<void> {
    try {
      await this.#group.close(5000);
      // every name this instance may have created (they carry our pid, so they are ours)
      for (const ns of [this.ns.cli, this.ns.lb, ...this.ns.targets]) await deleteNamespace(ns);
    } catch (e) {
      console.error(`teardown ${this.prefix}: ${e}`);
    } finally {
      for (const d of [this.shmDir, this.workDir]) {
        try {
          Deno.removeSync(d, { recursive: true });
        } catch { /* gone */ }
      }
      live.delete(this);
    }
  }

  /**
   * The last resort when {@link teardown} cannot run (an `unload` handler):
   * kills what runs in the namespaces, deletes them and the directories,
   * all synchronously. Never throws.
   */
  teardownSync(): void {
    for (const ns of [this.ns.cli, this.ns.lb, ...this.ns.targets]) deleteNamespaceSync(ns);
    for (const d of [this.shmDir, this.workDir]) {
      try {
        Deno.removeSync(d, { recursive: true });
      } catch { /* gone */ }
    }
  }

  /** For `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.teardown();
  }
}
