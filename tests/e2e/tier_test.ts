/**
 * End-to-end test of the LB tier (upstream's `--lbshm`): two load
 * balancers share the fragments of every datagram by a hash of the
 * addresses only, so all fragments of a datagram end up at one LB (its
 * "owner") even when the network hands them to different LBs.
 *
 * ```
 *              ca 10.214.1.1 ---- f0 .1.254  [lbA] x0 10.214.3.1 ---- x0 10.214.3.2  [lbB] f0 .2.254 ---- cb 10.214.2.1
 *  client      (sources 10.214.0.11.. on lo)   t1..t3 ---- eth0 [t1..t3] eth1 ---- t1..t3
 *  mark 0 → lbA, mark 2 → lbB                  10.214.1i.254/.1          10.214.2i.1/.254
 *  VIP 10.214.100.1 / fd14:100::1 on the targets' lo; targets answer through lbA (DSR)
 * ```
 *
 * Both LBs run `nfqlb lb --lbshm=TIER --tun=nfqlb0` with the same target
 * table (101 102 103) and a tier table TIER (`--ownfw=201` in lbA's shm
 * directory, `--ownfw=202` in lbB's, both `activate 201 202`); in each LB
 * netns fwmark 10i routes to target i and the other LB's fwmark routes over
 * the x0 link to it. The client crafts fragments and sends the first one
 * through one LB and the others through the other LB (SO_MARK + policy
 * routing). Checked: every datagram reaches its flow's target whole, and the
 * fragments that crossed x0 (iptables counters on both ends) are exactly
 * those a non-owner received.
 *
 * Needs root (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import type { Family } from "../harness/addresses.ts";
import type { CraftedDatagram, FragsResult } from "../harness/agent/types.ts";
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
import { fragmentCount } from "../harness/packets.ts";
import { NFQLB } from "../harness/paths.ts";
import {
  type Proc,
  ProcGroup,
  type Runner,
  type RunOptions,
  type RunResult,
  w,
  waitUntil,
} from "../harness/process.ts";
import { agentArgs, runAgent } from "../harness/traffic.ts";
import { exists } from "../helpers/fs.ts";

const notRoot = skipUnlessRoot();
const FAMILIES: Family[] = [4, 6];
const VIP = { 4: "10.214.100.1", 6: "fd14:100::1" } as const;
const UDP_PORT = 5000, TCP_PORT = 5003;
const TUN = "nfqlb0";
const QUEUE = 2;
/** fwmarks of the LBs in the tier table, and of the targets. */
const LBFW = { a: 201, b: 202 } as const;
const TARGET_FW = [101, 102, 103];
/** Client SO_MARK that routes through lbB (0 goes through lbA). */
const VIA_B = 2;
const NSRC = 16;
const SIZE = 5000;

type LbName = "a" | "b";

let instances = 0;

/** Client source addresses of a family (on the client's lo). */
function sources(fam: Family): string[] {
  return Array.from({ length: NSRC }, (_, i) => (fam === 4 ? `10.214.0.${11 + i}` : `fd14::${11 + i}`));
}

function hostPort(fam: Family, a: string, p: number): string {
  return fam === 6 ? `[${a}]:${p}` : `${a}:${p}`;
}

/** The namespaces of the tier test; see the module comment. Torn down by `await using`. */
class TierNet {
  readonly prefix = `nfqe-${Deno.pid}-${800 + ++instances}`;
  readonly ns = {
    cli: `${this.prefix}-cli`,
    a: `${this.prefix}-lba`,
    b: `${this.prefix}-lbb`,
    targets: [1, 2, 3].map((i) => `${this.prefix}-t${i}`),
  };
  readonly shmDir: Record<LbName, string>;
  readonly workDir: string;
  #group = new ProcGroup(`tier net ${this.prefix}`);
  #run: Runner = (args, o) => this.#group.run(args, o);
  #lbs: Partial<Record<LbName, Proc>> = {};

  constructor() {
    this.shmDir = {
      a: Deno.makeTempDirSync({ dir: "/dev/shm", prefix: `${this.prefix}-shma-` }),
      b: Deno.makeTempDirSync({ dir: "/dev/shm", prefix: `${this.prefix}-shmb-` }),
    };
    this.workDir = Deno.makeTempDirSync({ prefix: `${this.prefix}-work-` });
  }

  static async create(): Promise<TierNet> {
    const t = new TierNet();
    try {
      await t.#setup();
    } catch (e) {
      await t.teardown();
      throw e;
    }
    return t;
  }

  async exec(ns: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
    return await this.#run(inNetns(ns, args), o);
  }

  /** Runs `nfqlb args` in LB `lb`'s netns with its shm directory. */
  async nfqlb(lb: LbName, args: string[]): Promise<RunResult> {
    return await this.exec(this.ns[lb], [NFQLB, ...args], { env: { NFQLB_SHM_DIR: this.shmDir[lb] } });
  }

  async #setup(): Promise<void> {
    await sweepStale();
    const { cli, a, b, targets } = this.ns;
    const r = this.#run;
    for (const ns of [cli, a, b, ...targets]) await addNamespace(ns, r);
    for (const ns of [a, b]) await sysctl(ns, ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], r);
    await addVeth("ca", cli, "f0", a, r);
    await addVeth("cb", cli, "f0", b, r);
    await addVeth("x0", a, "x0", b, r);
    for (let i = 1; i <= 3; i++) {
      await addVeth(`t${i}`, a, "eth0", targets[i - 1], r);
      await addVeth(`t${i}`, b, "eth1", targets[i - 1], r);
    }

    const cliLines = [
      "link set up dev lo",
      "link set up dev ca",
      "link set up dev cb",
      "addr add 10.214.1.1/24 dev ca",
      "addr add 10.214.2.1/24 dev cb",
      "-6 addr add fd14:1::1/64 dev ca nodad",
      "-6 addr add fd14:2::1/64 dev cb nodad",
      ...sources(4).map((s) => `addr add ${s}/32 dev lo`),
      ...sources(6).map((s) => `-6 addr add ${s}/128 dev lo nodad`),
      `route add ${VIP[4]}/32 via 10.214.1.254`,
      `-6 route add ${VIP[6]}/128 via fd14:1::254`,
      `rule add fwmark ${VIA_B} table ${VIA_B}`,
      `-6 rule add fwmark ${VIA_B} table ${VIA_B}`,
      `route add ${VIP[4]}/32 via 10.214.2.254 table ${VIA_B}`,
      `-6 route add ${VIP[6]}/128 via fd14:2::254 table ${VIA_B}`,
    ];
    await ipBatch(cli, cliLines, r);

    for (const lb of ["a", "b"] as LbName[]) {
      const n = lb === "a" ? 1 : 2; // front subnet, x0 host part, target subnets 1i / 2i
      const peer = lb === "a" ? 2 : 1;
      const peerFw = lb === "a" ? LBFW.b : LBFW.a;
      const lines = [
        "link set up dev lo",
        "link set up dev f0",
        "link set up dev x0",
        `addr add 10.214.${n}.254/24 dev f0`,
        `-6 addr add fd14:${n}::254/64 dev f0 nodad`,
        `addr add 10.214.3.${n}/24 dev x0`,
        `-6 addr add fd14:3::${n}/64 dev x0 nodad`,
        `route add 10.214.0.0/24 via 10.214.${n}.1`,
        `-6 route add fd14::/64 via fd14:${n}::1`,
        // fragments owned by the other LB go to it over x0
        `rule add fwmark ${peerFw} table ${peerFw}`,
        `-6 rule add fwmark ${peerFw} table ${peerFw}`,
        `route add default via 10.214.3.${peer} table ${peerFw}`,
        `-6 route add default via fd14:3::${peer} table ${peerFw}`,
      ];
      for (let i = 1; i <= 3; i++) {
        const fw = TARGET_FW[i - 1];
        lines.push(
          `link set up dev t${i}`,
          `addr add 10.214.${n}${i}.254/24 dev t${i}`,
          `-6 addr add fd14:${n}${i}::254/64 dev t${i} nodad`,
          `rule add fwmark ${fw} table ${fw}`,
          `-6 rule add fwmark ${fw} table ${fw}`,
          `route add default via 10.214.${n}${i}.1 table ${fw}`,
          `-6 route add default via fd14:${n}${i}::1 table ${fw}`,
        );
      }
      await ipBatch(this.ns[lb], lines, r);
      // the tun device for re-injection (upstream test rc), reverse-path filter off
      await this.exec(this.ns[lb], w(`ip tuntap add mode tun name ${TUN}`));
      await this.exec(this.ns[lb], w(`ip link set ${TUN} up arp off mtu 1500`));
      await this.exec(this.ns[lb], w(`sysctl -qw net.ipv4.conf.${TUN}.rp_filter=0`));
      for (const [ipt, vip] of [["iptables", `${VIP[4]}/32`], ["ip6tables", `${VIP[6]}/128`]]) {
        // count what crosses x0 (before the NFQUEUE rule: a re-injected fragment comes in on the tun)
        await this.exec(this.ns[lb], [
          ...w(`${ipt} -w -t mangle -A PREROUTING -i x0 -d ${vip} -m comment --comment e2e-from-peer`),
        ]);
        await this.exec(
          this.ns[lb],
          w(`${ipt} -w -t mangle -A PREROUTING -d ${vip} -j NFQUEUE --queue-num ${QUEUE}`),
        );
        await this.exec(this.ns[lb], [
          ...w(`${ipt} -w -t mangle -A POSTROUTING -o x0 -d ${vip} -m comment --comment e2e-to-peer`),
        ]);
      }
    }

    for (let i = 1; i <= 3; i++) {
      await ipBatch(targets[i - 1], [
        "link set up dev lo",
        "link set up dev eth0",
        "link set up dev eth1",
        `addr add 10.214.1${i}.1/24 dev eth0`,
        `addr add 10.214.2${i}.1/24 dev eth1`,
        `-6 addr add fd14:1${i}::1/64 dev eth0 nodad`,
        `-6 addr add fd14:2${i}::1/64 dev eth1 nodad`,
        `addr add ${VIP[4]}/32 dev lo`,
        `-6 addr add ${VIP[6]}/128 dev lo nodad`,
        `route add default via 10.214.1${i}.254`,
        `-6 route add default via fd14:1${i}::254`,
      ], r);
    }
    await this.#startServers();

    // the tables: same targets in both LBs; the tier table differs in the own fwmark only
    for (const lb of ["a", "b"] as LbName[]) {
      await this.nfqlb(lb, w("init --shm=tshm"));
      await this.nfqlb(lb, ["activate", "--shm=tshm", ...TARGET_FW.map(String)]);
      await this.nfqlb(lb, w(`init --shm=tier --ownfw=${LBFW[lb]} --M=400 --N=10`));
      await this.nfqlb(lb, w(`activate --shm=tier ${LBFW.a} ${LBFW.b}`));
    }
  }

  #spawn(ns: string, label: string, args: string[], env?: Record<string, string>): Proc {
    return this.#group.spawn(label, inNetns(ns, args), env);
  }

  async #startServers(): Promise<void> {
    const procs = this.ns.targets.map((ns, i) => {
      const readyFile = `${this.workDir}/ready.t${i + 1}`;
      return {
        readyFile,
        p: this.#spawn(
          ns,
          `server t${i + 1}`,
          agentArgs({
            cmd: "serve",
            name: `t${i + 1}`,
            addrs: [VIP[4], VIP[6]],
            udpPort: UDP_PORT,
            tcpPort: TCP_PORT,
            maxLifeS: 600,
            readyFile,
          }),
        ),
      };
    });
    const ok = await waitUntil(
      () => procs.some((x) => x.p.status) || procs.every((x) => exists(x.readyFile)),
      60_000,
    );
    const dead = procs.find((x) => x.p.status);
    if (dead || !ok) {
      throw new Error(`server agents not ready:\n${procs.map((x) => x.p.describe()).join("\n")}`);
    }
  }

  /** Starts `nfqlb lb --lbshm=tier --tun` in LB `lb` and waits until its queue is bound. */
  async startLb(lb: LbName): Promise<Proc> {
    const p = this.#spawn(
      this.ns[lb],
      `nfqlb lb ${lb}`,
      [
        NFQLB,
        ...w(`lb --tshm=tshm --lbshm=tier --tun=${TUN} --queue=${QUEUE} --ft_shm=ft --ft_ttl=1000`),
        `--trace_address=unix:${this.prefix}-trace-${lb}`,
      ],
      { NFQLB_SHM_DIR: this.shmDir[lb] },
    );
    this.#lbs[lb] = p;
    const ok = await waitUntil(
      async () => {
        if (p.status) return true;
        return (await queueStats(this.ns[lb], this.#run)).has(QUEUE);
      },
      60_000,
      200,
    );
    if (p.status || !ok) throw new Error(`lb ${lb} did not start:\n${p.describe()}`);
    return p;
  }

  async stopLb(lb: LbName): Promise<Deno.CommandStatus | undefined> {
    const p = this.#lbs[lb];
    if (!p) return undefined;
    const st = await p.stop(10_000);
    this.#group.forget(p);
    delete this.#lbs[lb];
    return st;
  }

  /** The agent's `frags` in the client netns. */
  async frags(datagrams: CraftedDatagram[]): Promise<FragsResult> {
    return await runAgent<FragsResult>(this.#run, this.ns.cli, { cmd: "frags", datagrams });
  }

  lbProc(lb: LbName): Proc | undefined {
    return this.#lbs[lb];
  }

  /** Packets counted by the rules with comment `e2e-<what>` in LB `lb` (both families). */
  async counter(lb: LbName, what: "from-peer" | "to-peer"): Promise<number> {
    let n = 0;
    for (const ipt of ["iptables", "ip6tables"]) {
      const r = await this.exec(this.ns[lb], [ipt, "-w", "-t", "mangle", "-nvxL"]);
      for (const line of r.stdout.split("\n")) {
        if (line.includes(`/* e2e-${what} */`)) n += Number(line.trim().split(/\s+/)[0]);
      }
    }
    return n;
  }

  async teardown(): Promise<void> {
    if (this.#group.closed) return;
    await this.#group.close(5000);
    for (const ns of [this.ns.cli, this.ns.a, this.ns.b, ...this.ns.targets]) await deleteNamespace(ns);
    for (const d of [this.shmDir.a, this.shmDir.b, this.workDir]) {
      try {
        Deno.removeSync(d, { recursive: true });
      } catch { /* gone */ }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.teardown();
  }
}

/** The tier owner of (src, VIP) by `nfqlb fwmark --shm=tier` without --proto (address-only hash). */
async function owner(net: TierNet, fam: Family, src: string): Promise<LbName> {
  const r = await net.nfqlb("a", [
    "fwmark",
    "--shm=tier",
    `--src=${hostPort(fam, src, 1)}`,
    `--dst=${hostPort(fam, VIP[fam], UDP_PORT)}`,
  ]);
  const fw = (JSON.parse(r.stdout) as { fwmark: number }).fwmark;
  if (fw === LBFW.a) return "a";
  if (fw === LBFW.b) return "b";
  throw new Error(`tier fwmark ${fw} for ${src}: ${r.stdout}`);
}

/** The flow's target by the target table (`nfqlb fwmark --shm=tshm --proto=udp`). */
async function flowTarget(net: TierNet, fam: Family, src: string, sport: number): Promise<string> {
  const r = await net.nfqlb("b", [
    "fwmark",
    "--shm=tshm",
    "--proto=udp",
    `--src=${hostPort(fam, src, sport)}`,
    `--dst=${hostPort(fam, VIP[fam], UDP_PORT)}`,
  ]);
  const fw = (JSON.parse(r.stdout) as { fwmark: number }).fwmark;
  const i = TARGET_FW.indexOf(fw);
  return i < 0 ? "" : `t${i + 1}`;
}

/** A datagram of the plan: source, where its first fragment and the others enter. */
interface Planned {
  src: string;
  owner: LbName;
  first: LbName;
  rest: LbName;
}

Deno.test({
  name:
    "e2e tier: fragments a non-owner LB receives go to the owner LB (--lbshm), which delivers whole datagrams",
  ignore: notRoot,
  async fn(t) {
    await using net = await TierNet.create();
    await net.startLb("a");
    await net.startLb("b");
    const mark = (lb: LbName) => (lb === "a" ? 0 : VIA_B);
    let sport = 33000;

    for (const fam of FAMILIES) {
      await t.step(`ipv${fam}: first fragment through one LB, the others through the other`, async () => {
        const srcs = sources(fam);
        const owners = await Promise.all(srcs.map((s) => owner(net, fam, s)));
        const ownA = srcs.filter((_, i) => owners[i] === "a");
        const ownB = srcs.filter((_, i) => owners[i] === "b");
        assert.ok(
          ownA.length >= 2 && ownB.length >= 2,
          `tier owners of ${srcs.join(" ")}: ${owners.join("")}`,
        );
        const plan: Planned[] = [
          { src: ownA[0], owner: "a", first: "a", rest: "b" },
          { src: ownA[1], owner: "a", first: "b", rest: "a" },
          { src: ownB[0], owner: "b", first: "a", rest: "b" },
          { src: ownB[1], owner: "b", first: "b", rest: "a" },
          { src: ownA[1], owner: "a", first: "b", rest: "b" },
          // handled where they come in
          { src: ownA[0], owner: "a", first: "a", rest: "a" },
          { src: ownB[0], owner: "b", first: "b", rest: "b" },
        ];
        const n = fragmentCount(fam, SIZE);
        assert.ok(n >= 3, `${SIZE} B make ${n} fragments`);
        const ds: CraftedDatagram[] = plan.map((p, i) => ({
          src: p.src,
          sport: ++sport,
          dst: VIP[fam],
          dport: UDP_PORT,
          size: SIZE,
          id: fam === 4 ? 0x6000 + sport : 0x61000000 + sport,
          marks: { first: mark(p.first), rest: mark(p.rest) },
          // the first fragment last for half of them: the owner stores the others until it comes
          order: i % 2 === 0 ? "forward" : "reverse",
        }));
        const want = await Promise.all(ds.map((d) => flowTarget(net, fam, d.src, d.sport)));
        assert.ok(new Set(want).size >= 2, `flows on one target only: ${want.join(",")}`);
        // fragments that must cross x0: those a non-owner received
        const cross = { a: 0, b: 0 }; // sent by lbA to lbB, by lbB to lbA
        for (const p of plan) {
          if (p.first !== p.owner) cross[p.first]++;
          if (p.rest !== p.owner) cross[p.rest] += n - 1;
        }
        const before = {
          aTo: await net.counter("a", "to-peer"),
          bFrom: await net.counter("b", "from-peer"),
          bTo: await net.counter("b", "to-peer"),
          aFrom: await net.counter("a", "from-peer"),
        };
        const r = await net.frags(ds);
        const after = {
          aTo: await net.counter("a", "to-peer"),
          bFrom: await net.counter("b", "from-peer"),
          bTo: await net.counter("b", "to-peer"),
          aFrom: await net.counter("a", "from-peer"),
        };
        const got = plan.map((p, i) => {
          const x = r.datagrams[i];
          return `${p.src}:${ds[i].sport} owner ${p.owner}, first via ${p.first}, rest via ${p.rest}, ${
            ds[i].order
          }: ${x.sent}/${x.fragments} sent, ${x.target ? `${x.target} got ${x.len} B` : "no answer"} (want ${
            want[i]
          })`;
        }).join("\n");
        ds.forEach((d, i) => {
          const x = r.datagrams[i];
          assert.equal(x.sent, n, `send:\n${got}\nerrno ${r.errors.join(",")}`);
          assert.deepEqual({ target: x.target, len: x.len }, { target: want[i], len: d.size }, got);
        });
        const d = {
          aTo: after.aTo - before.aTo,
          bFrom: after.bFrom - before.bFrom,
          bTo: after.bTo - before.bTo,
          aFrom: after.aFrom - before.aFrom,
        };
        assert.deepEqual(
          d,
          { aTo: cross.a, bFrom: cross.a, bTo: cross.b, aFrom: cross.b },
          `fragments over x0 (aTo = lbA→lbB sent, bFrom = received, ...):\n${got}`,
        );
      });
    }
    for (const lb of ["a", "b"] as LbName[]) {
      const p = net.lbProc(lb);
      const st = await net.stopLb(lb);
      assert.equal(st?.code, 0, `lb ${lb} exit on SIGTERM:\n${p?.describe()}`);
    }
  },
});
