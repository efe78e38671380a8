/**
 * Meridio runs unchanged: Meridio's stateless-lb (v1.2.x) drives nfqlb
 * through its CLI only, and these tests replay its life cycle step by step,
 * with its exact command lines, against our CLI in a private shm directory
 * (NFQLB_SHM_DIR) and the lab's network namespaces (tests/harness):
 *
 * - a stream is a target table `tshm-<stream>`: `init --ownfw=0 --shm=tshm-<s> --M=9973 --N=100`;
 *   a target joins with `activate --index=<i-1> --shm=tshm-<s> <fwmark>`, leaves with
 *   `deactivate --index=<i-1> --shm=tshm-<s>`; a stream goes with `delete --shm=tshm-<s>`;
 * - one `nfqlb flowlb --promiscuous_ping --queue=0:3 --qlength=1024` on the default flow address;
 * - a flow is `flow-set --name=tshm-<s>-<f> --target=tshm-<s> --prio=<p> --protocols=<csv> --dsts=<vips>
 *   [--dports=<ranges>] [--match=<stmts>]` (`--protocols=` when the flow has none), removed with
 *   `flow-delete --name=...`; `flow-list` is parsed by `user_ref` and `matches_count`;
 * - when flowlb dies, Meridio starts it again and re-sends the flows it knows; a flow it removed
 *   meanwhile it never deletes (a fresh flowlb cannot have it);
 * - its log collector runs `ls /dev/shm | grep tshm-` and `nfqlb show --shm=<each>`.
 *
 * Checked: every name the collector finds is a target table `show` prints (our
 * counters and connection tables are in `.nfqlb-deno/`); flowlb SIGKILLed and
 * started again has no flows (as upstream), so the flow removed while it was
 * down stays gone; with our opt-in `--flow_store=FILE` the flows come back,
 * and a bad entry in the file is skipped with one line while the others load.
 * Traffic from the client namespace checks that the flows steer as listed.
 */
import assert from "node:assert/strict";
import { FWBASE, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { Flow } from "../harness/agent/types.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { NFQLB } from "../harness/paths.ts";
import { type Proc, type RunResult, waitUntil } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { tally } from "../harness/traffic.ts";
import { OWN_DIR_NAME } from "../../core/shm_dir.ts";
import { listDir, shmFiles } from "../helpers/shm.ts";

const ignore = skipUnlessRoot();
/** Meridio's queues (`NFQueues = "0:3"`) and flowlb command line. */
const QUEUES = [0, 1, 2, 3];
const FLOWLB = ["flowlb", "--promiscuous_ping", "--queue=0:3", "--qlength=1024"];
/** Meridio's Maglev sizes for a stream. */
const M = 9973, N = 100;
/** The port of the stream whose Meridio flow has `protocols: []` (Meridio sends `--protocols=`). */
const ANY_PORT = 8443;
const DSTS = `--dsts=${VIP[4]}/32,${VIP[6]}/128`;

/** One Meridio instance's view of the lab: its nfqlb commands, its flowlb, its log collector. */
class Meridio {
  readonly topo: Topology;
  /** The running flowlb. */
  proc: Proc | undefined;

  constructor(topo: Topology) {
    this.topo = topo;
  }

  /** Only the shm directory: flowlb and the flow clients use the default address `unix:nfqlb` (per netns). */
  get env(): Record<string, string> {
    return { NFQLB_SHM_DIR: this.topo.shmDir };
  }

  /** `nfqlb args...` in the lb netns, as Meridio's exec.Command; never throws on a non-zero exit. */
  async nfqlb(...args: string[]): Promise<RunResult> {
    return await this.topo.exec(this.topo.ns.lb, [NFQLB, ...args], {
      env: this.env,
      allowFail: true,
      timeoutMs: 60_000,
    });
  }

  /** `nfqlb args...`, which must exit 0; its stdout. */
  async ok(...args: string[]): Promise<string> {
    const r = await this.nfqlb(...args);
    assert.equal(r.code, 0, `nfqlb ${args.join(" ")}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  /** Meridio's stream New/Start: `init --ownfw=0 --shm=tshm-<s> --M --N` (+ our options). */
  async stream(name: string, ...ours: string[]): Promise<void> {
    await this.ok("init", "--ownfw=0", `--shm=tshm-${name}`, `--M=${M}`, `--N=${N}`, ...ours);
  }

  /** Meridio's Activate(index, identifier): `activate --index=<index-1> --shm=... <identifier>`. */
  async activate(stream: string, index: number, fwmark: number): Promise<void> {
    await this.ok("activate", `--index=${index - 1}`, `--shm=tshm-${stream}`, String(fwmark));
  }

  /** Meridio's Deactivate(index). */
  async deactivate(stream: string, index: number): Promise<void> {
    await this.ok("deactivate", `--index=${index - 1}`, `--shm=tshm-${stream}`);
  }

  /** Meridio's SetFlow: name `tshm-<s>-<f>`, target, prio, protocols (maybe empty), dsts, [dports], [match]. */
  async setFlow(
    stream: string,
    flow: string,
    f: { prio: number; protocols: string[]; dports?: string[]; match?: string[] },
  ): Promise<void> {
    const args = [
      "flow-set",
      `--name=tshm-${stream}-${flow}`,
      `--target=tshm-${stream}`,
      `--prio=${f.prio}`,
      `--protocols=${f.protocols.join(",")}`,
      DSTS,
    ];
    if (f.dports) args.push(`--dports=${f.dports.join(",")}`);
    if (f.match) args.push(`--match=${f.match.join(",")}`);
    assert.equal(await this.ok(...args), "OK\n");
  }

  /** Meridio's GetFlowStats: flow-list parsed as Meridio does, `<stream>/<flow>` → matches_count. */
  async flowStats(): Promise<Record<string, number>> {
    const list = JSON.parse(await this.ok("flow-list")) as {
      name: string;
      user_ref: string;
      matches_count: number;
    }[];
    return Object.fromEntries(list.map((f) => {
      const flow = f.name.slice(f.user_ref.length + 1); // e.g. "tshm-stream-a-i" + "-"
      const stream = f.user_ref.slice("tshm-".length);
      return [`${stream}/${flow}`, f.matches_count];
    }));
  }

  /** Starts flowlb as Meridio does (plus `extra`), and waits (bounded) until it has bound queues 0..3. */
  async startFlowLb(extra: string[] = []): Promise<Proc> {
    const t = this.topo;
    const p = t.spawn(t.ns.lb, "nfqlb flowlb", [NFQLB, ...FLOWLB, ...extra], this.env);
    this.proc = p;
    const bound = await waitUntil(
      async () => {
        if (p.status) return true;
        const q = await t.queueStats();
        return QUEUES.every((n) => q.has(n));
      },
      60_000,
      200,
    );
    if (p.status || !bound) {
      await p.stop(2000);
      t.forget(p);
      throw new Error(`flowlb did not bind queues 0..3:\n${p.describe()}`);
    }
    return p;
  }

  /** Stops flowlb with `sig` (SIGKILL: as when its container is killed); its exit status and output. */
  async stopFlowLb(sig: Deno.Signal): Promise<{ status: Deno.CommandStatus; stderr: string }> {
    const p = this.proc!;
    const status = await p.stop(10_000, sig);
    this.topo.forget(p);
    this.proc = undefined;
    return { status, stderr: p.stderr };
  }

  /**
   * The log collector: `ls <shm dir> | grep tshm-`, then `nfqlb show --shm=<each>`. Every name must be a
   * table that show prints; returns the names.
   */
  async collectLogs(): Promise<string[]> {
    const ls = await this.topo.exec(this.topo.ns.lb, ["sh", "-c", 'ls "$0" | grep tshm-', this.topo.shmDir], {
      allowFail: true,
    });
    const names = ls.stdout.split("\n").filter((l) => l !== "");
    for (const name of names) {
      const r = await this.nfqlb("show", `--shm=${name}`);
      assert.equal(r.code, 0, `the collector's show --shm=${name}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Shm: ${name}\\n  Fw: own=0\\n  Maglev: M=${M}, N=${N}\\n`));
    }
    return names;
  }

  /**
   * `n` flows per family from the client to `proto`/`port` on the VIPs; the targets that answered them,
   * counted ("" for no answer).
   */
  async traffic(
    proto: "udp" | "tcp",
    port: number,
    n: number,
    sportBase: number,
    waitMs = proto === "udp" ? 1000 : 2000,
  ): Promise<Record<string, number>> {
    const flows: Flow[] = ([4, 6] as const).flatMap((fam) =>
      this.topo.flows(fam, n, sportBase).map((f) => ({ ...f, dst: VIP[fam], dport: port }))
    );
    const r = await this.topo.agent<{ targets: string[][] }>(this.topo.ns.cli, {
      cmd: proto,
      dst: VIP[4],
      port,
      flows,
      waitMs,
    });
    return tally(r.targets.map((x) => x[0]));
  }
}

/** Every flow answered, by exactly `want`, each of them with at least a quarter of its share. */
function assertSpread(seen: Record<string, number>, want: string[], total: number, what: string): void {
  assert.deepEqual(
    Object.keys(seen).sort(),
    [...want].sort(),
    `${what}: answered by ${JSON.stringify(seen)}`,
  );
  for (const t of want) assert.ok(seen[t] >= total / want.length / 4, `${what}: ${JSON.stringify(seen)}`);
}

Deno.test({
  name: "meridio: stream/target/flow life cycle; flowlb SIGKILLed starts empty, Meridio re-sends, " +
    "a flow removed meanwhile stays gone; the log collector shows every tshm- file",
  ignore,
  async fn(t) {
    await using topo = await Topology.create({
      steering: { mode: "nfqueue", balance: [0, 3] },
      targets: 3,
      extraUdpPorts: [ANY_PORT],
    });
    const m = new Meridio(topo);
    const [fw1, fw2, fw3] = [FWBASE + 1, FWBASE + 2, FWBASE + 3];
    const n = 20; // flows per family per probe

    await t.step("streams, targets, flowlb and flows as Meridio sets them up", async () => {
      await m.stream("sa");
      // an operator may turn on our connection table for a stream: it must not confuse the collector
      await m.stream("sb", "--conntrack=1024");
      await m.activate("sa", 1, fw1);
      await m.activate("sa", 2, fw2);
      await m.activate("sb", 1, fw3);
      await m.startFlowLb();
      await m.setFlow("sa", "udp", { prio: 1, protocols: ["udp"], dports: [String(UDP_PORT)] });
      // Meridio's flow with `protocols: []`: any protocol, one port
      await m.setFlow("sa", "any", { prio: 0, protocols: [], dports: [String(ANY_PORT)] });
      await m.setFlow("sb", "tcp", { prio: 2, protocols: ["tcp"], dports: [`${TCP_PORT}-${TCP_PORT}`] });
      await m.setFlow("sb", "bm", {
        prio: 3,
        protocols: ["tcp"],
        match: [`tcp[2:2]=0x${TCP_PORT.toString(16)}`],
      });
      assert.deepEqual(Object.keys(await m.flowStats()).sort(), ["sa/any", "sa/udp", "sb/bm", "sb/tcp"]);
    });

    await t.step("traffic follows the flows; matches_count counts it", async () => {
      assertSpread(await m.traffic("udp", UDP_PORT, n, 21000), ["t1", "t2"], 2 * n, "udp");
      assertSpread(await m.traffic("udp", ANY_PORT, n, 21100), ["t1", "t2"], 2 * n, `udp ${ANY_PORT}`);
      assertSpread(await m.traffic("tcp", TCP_PORT, n, 21200), ["t3"], 2 * n, "tcp");
      const st = await m.flowStats();
      assert.ok(st["sa/udp"] >= 2 * n && st["sa/any"] >= 2 * n && st["sb/bm"] >= 2 * n, JSON.stringify(st));
    });

    await t.step(
      "the log collector: ls | grep tshm- finds only the tables, and show prints each",
      async () => {
        assert.deepEqual(await m.collectLogs(), ["tshm-sa", "tshm-sb"]);
        // ours are there, out of the listing
        const own = shmFiles(topo.shmDir).filter((f) => f.startsWith(`${OWN_DIR_NAME}/`));
        assert.deepEqual(own, [`${OWN_DIR_NAME}/ftshm-counters`, `${OWN_DIR_NAME}/tshm-sb-ct`]);
        assert.deepEqual(listDir(topo.shmDir), [OWN_DIR_NAME, "ftshm", "nfqlb-trace", "tshm-sa", "tshm-sb"]);
        const all = JSON.parse(await m.ok("stats", "--all"));
        assert.ok(all, "stats --all reads the counters in .nfqlb-deno/");
      },
    );

    await t.step("flowlb SIGKILLed; meanwhile Meridio removes a flow and a target", async () => {
      const { status } = await m.stopFlowLb("SIGKILL");
      assert.equal(status.signal, "SIGKILL");
      // Meridio's DeleteFlow fails while flowlb is down (it logs and forgets the flow)
      const del = await m.nfqlb("flow-delete", "--name=tshm-sa-any");
      assert.notEqual(del.code, 0, "flow-delete without a flowlb fails");
      await m.deactivate("sa", 2);
    });

    await t.step(
      "flowlb started again has no flows (as upstream); Meridio re-sends what it knows",
      async () => {
        await m.startFlowLb();
        assert.equal(await m.ok("flow-list"), "[]\n");
        assert.equal(await m.ok("flow-list-names"), "[]\n");
        await m.setFlow("sa", "udp", { prio: 1, protocols: ["udp"], dports: [String(UDP_PORT)] });
        await m.setFlow("sb", "tcp", { prio: 2, protocols: ["tcp"], dports: [`${TCP_PORT}-${TCP_PORT}`] });
        await m.setFlow("sb", "bm", {
          prio: 3,
          protocols: ["tcp"],
          match: [`tcp[2:2]=0x${TCP_PORT.toString(16)}`],
        });
        assert.deepEqual(await m.flowStats(), { "sa/udp": 0, "sb/bm": 0, "sb/tcp": 0 });
      },
    );

    await t.step("the removed flow's port gets nothing; the others steer to the targets left", async () => {
      // unanswered probes wait: few of them, short waits
      assert.deepEqual(await m.traffic("udp", ANY_PORT, 8, 22000, 300), { "": 16 }, `udp ${ANY_PORT}`);
      assertSpread(await m.traffic("udp", UDP_PORT, n, 22100), ["t1"], 2 * n, "udp");
      assertSpread(await m.traffic("tcp", TCP_PORT, n, 22200), ["t3"], 2 * n, "tcp");
      assert.deepEqual(await m.collectLogs(), ["tshm-sa", "tshm-sb"]);
    });

    await t.step("a stream goes: its flows deleted, its table deleted; the collector follows", async () => {
      for (const f of ["tcp", "bm"]) assert.equal(await m.ok("flow-delete", `--name=tshm-sb-${f}`), "OK\n");
      await m.ok("delete", "--shm=tshm-sb");
      assert.deepEqual(await m.collectLogs(), ["tshm-sa"]);
      const { status, stderr } = await m.stopFlowLb("SIGTERM");
      assert.equal(status.code, 0, stderr);
    });
  },
});

Deno.test({
  name: "meridio + --flow_store: SIGKILL and restart reload the flows; a bad entry is skipped with one line",
  ignore,
  async fn(t) {
    await using topo = await Topology.create({
      steering: { mode: "nfqueue", balance: [0, 3] },
      targets: 2,
      extraUdpPorts: [ANY_PORT],
    });
    const m = new Meridio(topo);
    const store = `${topo.workDir}/flows.json`;
    const n = 20;

    await t.step("flows set on a flowlb with --flow_store", async () => {
      await m.stream("sa");
      await m.activate("sa", 1, FWBASE + 1);
      await m.activate("sa", 2, FWBASE + 2);
      await m.startFlowLb([`--flow_store=${store}`]);
      await m.setFlow("sa", "udp", { prio: 1, protocols: ["udp"], dports: [String(UDP_PORT)] });
      await m.setFlow("sa", "any", { prio: 0, protocols: [], dports: [String(ANY_PORT)] });
      const saved = JSON.parse(Deno.readTextFileSync(store));
      assert.deepEqual(saved.flows.map((f: { name: string }) => f.name), ["tshm-sa-udp", "tshm-sa-any"]);
    });

    await t.step(
      "SIGKILL; a bad entry lands in the file; restart: one line for it, the rest load",
      async () => {
        const { status } = await m.stopFlowLb("SIGKILL");
        assert.equal(status.signal, "SIGKILL");
        const saved = JSON.parse(Deno.readTextFileSync(store));
        saved.flows.splice(1, 0, {
          name: "tshm-sa-bad",
          target: "tshm-sa",
          protocols: ["tcp"],
          dports: ["70000"],
        });
        Deno.writeTextFileSync(store, JSON.stringify(saved, null, 2));
        const p = await m.startFlowLb([`--flow_store=${store}`]);
        const lines = () => p.stderr.split("\n").filter((l) => l.includes("tshm-sa-bad"));
        await waitUntil(() => Promise.resolve(lines().length > 0), 10_000, 100);
        assert.equal(lines().length, 1, p.stderr);
        assert.match(
          lines()[0],
          new RegExp(`flow store ${store}: entry 1 \\(flow tshm-sa-bad\\): Invalid dports; skipped: \\{`),
        );
        assert.deepEqual(await m.flowStats(), { "sa/any": 0, "sa/udp": 0 });
      },
    );

    await t.step("the loaded flows steer; the store is nowhere in the collector's listing", async () => {
      assertSpread(await m.traffic("udp", UDP_PORT, n, 23000), ["t1", "t2"], 2 * n, "udp");
      assertSpread(await m.traffic("udp", ANY_PORT, n, 23100), ["t1", "t2"], 2 * n, `udp ${ANY_PORT}`);
      assert.deepEqual(await m.collectLogs(), ["tshm-sa"]);
    });

    await t.step("without --flow_store the same flowlb starts empty, the file untouched", async () => {
      const before = Deno.readTextFileSync(store);
      const { status, stderr } = await m.stopFlowLb("SIGTERM");
      assert.equal(status.code, 0, stderr);
      await m.startFlowLb();
      assert.equal(await m.ok("flow-list"), "[]\n");
      assert.equal(Deno.readTextFileSync(store), before);
      const end = await m.stopFlowLb("SIGTERM");
      assert.equal(end.status.code, 0, end.stderr);
    });
  },
});
