/**
 * End-to-end test of `bgp.bird: external` (docs/tier.md): `nfqlb run`
 * drives a system BIRD that the test runs in a namespace (its own
 * configuration includes run's file). Checked: run writes the include file
 * with its protocols, reloads BIRD, which then has the VIP route; `status`
 * says so; on SIGTERM the include file is emptied, BIRD reloaded without
 * the route, and run exits 0. The peer is never there: the announcement is
 * BIRD's route, not a session.
 *
 * Needs root and BIRD (skipped with a message otherwise).
 */
import assert from "node:assert/strict";
import {
  addNamespace,
  deleteNamespace,
  inNetns,
  ipBatch,
  skipUnlessRoot,
  sweepStale,
} from "../harness/netns.ts";
import { snakeJson } from "../helpers/json_keys.ts";
import { birdMissing } from "../harness/bird.ts";
import { NFQLB } from "../harness/paths.ts";
import { ProcGroup, waitUntil } from "../harness/process.ts";

const notRoot = skipUnlessRoot();
const noBird = birdMissing(notRoot, "e2e bgp external");

/** One host namespace with an address on a veth (its peer has none), a work and a shm directory. */
interface HostLab extends AsyncDisposable {
  ns: string;
  group: ProcGroup;
  work: string;
  shm: string;
  r: (args: string[], o?: Record<string, unknown>) => ReturnType<ProcGroup["run"]>;
}

async function hostLab(prefix: string, what: string, addr: string): Promise<HostLab> {
  const ns = `${prefix}-h`;
  const group = new ProcGroup(`${what} ${prefix}`);
  const work = Deno.makeTempDirSync({ prefix: `${prefix}-work-` });
  const shm = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: `${prefix}-shm-` });
  const r = (args: string[], o = {}) => group.run(args, o);
  const lab: HostLab = {
    ns,
    group,
    work,
    shm,
    r,
    async [Symbol.asyncDispose]() {
      await group.close(5000);
      await deleteNamespace(ns);
      for (const d of [work, shm]) {
        try {
          Deno.removeSync(d, { recursive: true });
        } catch { /* gone */ }
      }
    },
  };
  try {
    await sweepStale();
    await addNamespace(ns, r);
    await ipBatch(ns, [
      "link set up dev lo",
      "link add d0 type veth peer name d1",
      "link set up dev d1",
      "link set up dev d0",
      `addr add ${addr}/24 dev d0`,
    ], r);
    return lab;
  } catch (e) {
    await lab[Symbol.asyncDispose]();
    throw e;
  }
}

Deno.test({
  name: "e2e bgp external: run writes the include file, reloads the system BIRD, withdraws on SIGTERM",
  ignore: notRoot || noBird,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using lab = await hostLab(`nfqe-${Deno.pid}-950`, "bgp external", "10.219.0.2");
    const { ns, group, work, shm, r } = lab;
    const include = `${work}/nfqlb-ext.conf`, ctl = `${work}/bird.ctl`;
    Deno.writeTextFileSync(include, "# filled by nfqlb run\n");
    Deno.writeTextFileSync(
      `${work}/bird.conf`,
      `router id 10.219.0.2;\nprotocol device {}\ninclude "${include}";\n`,
    );
    const bird = group.spawn(
      "system bird",
      inNetns(ns, ["bird", "-f", "-c", `${work}/bird.conf`, "-s", ctl, "-P", `${work}/bird.pid`]),
    );
    const birdc = async (args: string[]) =>
      (await r(inNetns(ns, ["birdc", "-s", ctl, ...args]), { allowFail: true })).stdout;
    assert.ok(
      await waitUntil(async () => (await birdc(["show", "status"])).includes("Daemon is up"), 10_000, 50),
      bird.describe(),
    );
    const file = `${work}/host.yaml`;
    Deno.writeTextFileSync(
      file,
      `version: 1
name: ext
services:
  - name: web
    vips: [10.219.100.1]
    targets: [{ fwmark: 101, address: 10.219.0.3 }]
dataplane: { queue: 7 }
bgp:
  localAs: 65001
  peers: [{ address: 10.219.0.1, as: 65000 }]
  bird: external
  include: ${include}
  socket: ${ctl}
  drainSeconds: 1
`,
    );
    const env = { NFQLB_SHM_DIR: shm, NOTIFY_SOCKET: "", WATCHDOG_USEC: "", JOURNAL_STREAM: "" };
    const agent = group.spawn("nfqlb run", inNetns(ns, [NFQLB, "run", "-f", file]), env);
    const routed = await waitUntil(
      async () => (await birdc(["show", "route", "protocol", "nfqlb_ext_vips4"])).includes("10.219.100.1/32"),
      30_000,
      100,
    );
    assert.ok(routed, `${agent.describe()}\n${bird.describe()}`);
    const text = Deno.readTextFileSync(include);
    assert.match(text, /^protocol bgp nfqlb_ext_peer1 \{$/m);
    assert.match(text, /^ {2}route 10\.219\.100\.1\/32 blackhole;$/m);
    assert.ok(!text.includes("router id"), text);
    const protos = await birdc(["show", "protocols"]);
    assert.match(protos, /^nfqlb_ext_peer1\s+BGP\s/m, protos);
    // sessions are read from BIRD every second
    let st = { stdout: "" };
    await waitUntil(
      async () => {
        st = await r(inNetns(ns, [NFQLB, "status", "-f", file]), { env, allowFail: true });
        return st.stdout.includes("    session ");
      },
      10_000,
      200,
    );
    assert.match(st.stdout, /^ {2}bgp: system BIRD, router id 10\.219\.0\.2, /m, st.stdout);
    assert.match(st.stdout, /^ {4}session 10\.219\.0\.1 \(nfqlb_ext_peer1\): down, /m, st.stdout);
    assert.match(st.stdout, /^ {4}vip 10\.219\.100\.1\/32 \(web\): announced since /m, st.stdout);
    // the same in status --json (snake_case, docs/cli.md "JSON output")
    const js = await r(inNetns(ns, [NFQLB, "status", "-f", file, "--json"]), { env, allowFail: true });
    const doc = snakeJson<{
      configs: { bgp: { bird: string; sessions: { peer: string; up: boolean }[]; vips: unknown[] } }[];
    }>(js.stdout, "status --json");
    const bgp = doc.configs[0].bgp;
    assert.equal(bgp.bird, "external", js.stdout);
    assert.deepEqual(bgp.sessions.map((x) => [x.peer, x.up]), [["10.219.0.1", false]], js.stdout);
    assert.deepEqual(bgp.vips, [
      {
        vip: "10.219.100.1/32",
        service: "web",
        announced: true,
        since: (bgp.vips[0] as { since: string }).since,
        reason: null,
      },
    ]);

    agent.signal("SIGTERM");
    const done = await Promise.race([
      agent.done,
      new Promise<undefined>((res) => setTimeout(() => res(undefined), 30_000)),
    ]);
    assert.equal(done?.code, 0, agent.describe());
    group.forget(agent);
    assert.ok(!Deno.readTextFileSync(include).includes("route "), Deno.readTextFileSync(include));
    const after = await birdc(["show", "protocols"]);
    assert.ok(!after.includes("nfqlb_ext_"), after);
    assert.match(agent.stderr, /bgp: withdrew every VIP in \d+ ms; draining 1 s before stopping/);
  },
});

Deno.test({
  name: "e2e bgp supervised: a SIGKILLed nfqlb run takes its bird with it (nothing left announcing)",
  ignore: notRoot || noBird,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using lab = await hostLab(`nfqe-${Deno.pid}-951`, "bgp supervised", "10.219.1.2");
    const { ns, group, work, shm } = lab;
    const env = { NFQLB_SHM_DIR: shm, NOTIFY_SOCKET: "", WATCHDOG_USEC: "", JOURNAL_STREAM: "" };
    const file = `${work}/host.yaml`;
    try {
      Deno.writeTextFileSync(
        file,
        `version: 1
name: sup
services:
  - name: web
    vips: [10.219.101.1]
    targets: [{ fwmark: 101, address: 10.219.1.3 }]
dataplane: { queue: 8 }
bgp:
  localAs: 65001
  peers: [{ address: 10.219.1.1, as: 65000 }]
`,
      );
      const agent = group.spawn("nfqlb run", inNetns(ns, [NFQLB, "run", "-f", file]), env);
      const pidFile = `${shm}/.nfqlb-deno/bird-sup.pid`;
      const birdPid = () => {
        try {
          return Number(Deno.readTextFileSync(pidFile).trim()) || undefined;
        } catch {
          return undefined;
        }
      };
      const alive = (pid: number) => {
        try {
          return !Deno.readTextFileSync(`/proc/${pid}/stat`).includes(") Z ");
        } catch {
          return false;
        }
      };
      assert.ok(await waitUntil(() => birdPid() !== undefined, 30_000, 100), agent.describe());
      const pid = birdPid()!;
      assert.ok(alive(pid), `bird ${pid} not running\n${agent.describe()}`);
      assert.match(Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " "), /^bird -f /);

      const t0 = Date.now();
      agent.signal("SIGKILL");
      await Promise.race([agent.done, new Promise((res) => setTimeout(res, 10_000))]);
      group.forget(agent);
      const gone = await waitUntil(() => !alive(pid), 10_000, 20);
      console.log(`bgp supervised: bird ${pid} gone ${Date.now() - t0} ms after nfqlb run was SIGKILLed`);
      assert.ok(gone, `bird ${pid} still runs after its nfqlb run was killed`);
    } finally {
      // the lb the killed run left serving: teardown stops the process apply started and removes its rules
      await group.run(inNetns(ns, [NFQLB, "teardown", "-f", file]), { env, allowFail: true });
    }
  },
});
