/**
 * End-to-end tests of `nfqlb run -f FILE` (docs/run.md) as an operator runs
 * it, in the lb netns of a topology whose own steering and fwmark routing
 * are removed ({@link HostUnderTest}), with real UDP traffic from the client
 * netns:
 *
 * - supervision: kill -9 of the lb → a new lb, a child of run, bound again;
 *   the outage is measured from the client (the gaps of a probe stream) and
 *   from run's log; /ready says 503 and why while the lb is down; the
 *   restart is counted in /metrics;
 * - reloads from a ConfigMap-like volume (`host.yaml -> ..data/host.yaml`,
 *   `..data -> ..vN`): a weight change written in place, a new target
 *   renamed over the file, a new VIP (IPv6) by a symlink swap, each applied
 *   without a restart of the lb (same pid), timed from the write to run's
 *   `reloaded` line; a broken file refused with apply's one-line error while
 *   traffic goes on and /ready stays 200; SIGHUP;
 * - systemd: READY=1, RELOADING=1, STOPPING=1 on a test NOTIFY_SOCKET;
 * - /metrics valid (strict parser, and promtool when installed);
 * - SIGTERM: exit 0, and the host is as before run: iptables, ip rules and
 *   routes of both families, shm files, no lb;
 * - `--keep`: run exits and the lb serves on; `apply` and a new run adopt it
 *   (same pid) and no probe of a stream running across it all is lost; an
 *   adopted lb (not a child) is restarted too; json logs; the admin server
 *   on the file's address, `--admin` winning over it;
 * - flowlb: a killed flowlb comes back with its flows; a file that fails
 *   while applied (a route the kernel refuses) is rolled back; a new admin
 *   address in the file moves the server.
 *
 * The figures (restart-to-forwarding, reload time) are printed for the docs.
 * Every step is bounded; the run process, its lb and the namespaces are
 * removed on failure too. Needs root.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { type Family, targetAddr, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import type { StreamResult } from "../harness/agent/types.ts";
import { HostUnderTest } from "../harness/host.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { NotifySocket } from "../harness/notify_socket.ts";
import { pidRunning, waitUntil } from "../harness/process.ts";
import { RunAgent } from "../harness/run_agent.ts";
import { tally } from "../harness/traffic.ts";
import { parseExposition, promtool, sampleValue } from "../helpers/prom_text.ts";
import { assertAllAnswered } from "./checks.ts";

const ignore = skipUnlessRoot();

/** Bounds: a generous one for the restart (issue 16 asks for 1 s), issue 16's 2 s for a reload; the figures are printed. */
const RESTART_BOUND_MS = 3000;
const RELOAD_BOUND_MS = 2000;

/** A one-service lb config: targets `targets` (1-based), addresses and VIPs of `fams`, weights by target. */
function config(
  name: string,
  targets: number[],
  fams: Family[],
  weights: Record<number, number | string> = {},
) {
  const vips = fams.map((f) => (f === 4 ? VIP[4] : `"${VIP[6]}"`)).join(", ");
  return [
    "version: 1",
    `name: ${name}`,
    "services:",
    "  - name: web",
    `    vips: [${vips}]`,
    "    targets:",
    ...targets.map((i) => {
      const a = fams.map((f) => (f === 4 ? targetAddr(4, i) : `"${targetAddr(6, i)}"`));
      const w = weights[i] !== undefined ? `, weight: ${weights[i]}` : "";
      return `      - { fwmark: ${100 + i}, address: ${a.length === 1 ? a[0] : `[${a.join(", ")}]`}${w} }`;
    }),
    "",
  ].join("\n");
}

/** A directory laid out as a Kubernetes ConfigMap volume, and the three ways its file changes. */
class ConfigMapDir {
  /** The path run is given: `<dir>/host.yaml -> ..data/host.yaml`. */
  readonly file: string;
  readonly #dir: string;
  #version = 0;

  constructor(dir: string, text: string) {
    this.#dir = dir;
    this.file = `${dir}/host.yaml`;
    Deno.mkdirSync(dir);
    Deno.symlinkSync(this.#newVersion(text), `${dir}/..data`);
    Deno.symlinkSync("..data/host.yaml", this.file);
  }

  #newVersion(text: string): string {
    const v = `..v${++this.#version}`;
    Deno.mkdirSync(`${this.#dir}/${v}`);
    Deno.writeTextFileSync(`${this.#dir}/${v}/host.yaml`, text);
    return v;
  }

  /** Truncates and writes the file where it is (through the links). */
  writeInPlace(text: string): void {
    Deno.writeTextFileSync(this.file, text);
  }

  /** Writes a new file beside the real one and renames it over it (an editor's save). */
  renameOver(text: string): void {
    const real = Deno.realPathSync(this.file);
    Deno.writeTextFileSync(`${dirname(real)}/.host.yaml.swp`, text);
    Deno.renameSync(`${dirname(real)}/.host.yaml.swp`, real);
  }

  /** What the kubelet does: a new version directory, `..data` swapped to it, the old one removed. */
  swap(text: string): void {
    const old = Deno.readLinkSync(`${this.#dir}/..data`);
    Deno.symlinkSync(this.#newVersion(text), `${this.#dir}/..data_tmp`);
    Deno.renameSync(`${this.#dir}/..data_tmp`, `${this.#dir}/..data`);
    Deno.removeSync(`${this.#dir}/${old}`, { recursive: true });
  }
}

/** sha256 of a file as run's nfqlb_config_info shows it. */
async function digest(path: string): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(path)));
  return "sha256:" + Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The parent pid of a process (/proc/PID/stat field 4). */
function ppid(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** /metrics of the agent, checked strictly (and by promtool when installed). */
async function metrics(agent: RunAgent) {
  const r = await agent.get("/metrics");
  assert.equal(r.status, 200, r.body);
  const e = parseExposition(r.body);
  const pt = await promtool(r.body);
  if (pt) assert.equal(pt.code, 0, `promtool check metrics: ${pt.output}`);
  return e;
}

/** Every probe of a stream answered; returns its totals. */
function assertNoLoss(s: StreamResult, what: string): { sent: number; answered: number } {
  const sent = s.flows.reduce((n, f) => n + f.sent, 0),
    answered = s.flows.reduce((n, f) => n + f.answered, 0);
  assert.equal(
    answered,
    sent,
    `${what}: ${sent - answered} of ${sent} probes lost: ${JSON.stringify(s.gaps)}`,
  );
  return { sent, answered };
}

Deno.test({
  name:
    "e2e run: restarts a killed lb, reloads in place / rename / ConfigMap swap without a restart, refuses a broken file, READY=1, SIGTERM leaves the host as before",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-run", topology: { targets: 4 } });
    const { topo } = h;
    const cm = new ConfigMapDir(`${topo.workDir}/cm`, config("e2e-run", [1, 2, 3], [4]));
    Deno.symlinkSync(cm.file, h.file); // the host's own teardown (on failure) reads the same file
    const before = await h.snapshot();
    const filesBefore = h.shmFiles();
    const notify = NotifySocket.bind(`${topo.workDir}/notify.sock`);
    try {
      await using agent = RunAgent.start(h, { file: cm.file, env: { NOTIFY_SOCKET: notify.path } });
      const figures: Record<string, number> = {};

      await t.step("READY=1 once applied and bound; /healthz, /ready, traffic to the 3 targets", async () => {
        const ready = await notify.waitFor((m) => m.split("\n").includes("READY=1"), 60_000);
        assert.ok(ready, `no READY=1: ${notify.messages.join(" | ")}\n${agent.proc.describe()}`);
        assert.match(ready, /^STATUS=serving .*host\.yaml \(e2e-run, 1 service, lb pid \d+\)$/m);
        const pid = agent.remember()!;
        assert.ok(h.inLbNetns(pid), "the lb runs in the lb netns");
        assert.equal(ppid(pid), agent.pid, "the lb is a child of run");
        const hz = await agent.get("/healthz");
        assert.equal(hz.status, 200);
        assert.equal(hz.body, "ok\n");
        const r = await agent.get("/ready");
        assert.equal(r.status, 200, r.body);
        assert.equal(
          r.body,
          `ready: the host matches ${cm.file} (e2e-run); lb pid ${pid} bound to queue 2\n`,
        );
        assertAllAnswered(
          (await topo.client.udp(4, topo.flows(4, 60, 20000))).targets,
          ["t1", "t2", "t3"],
          "udp",
        );
        const m = await metrics(agent);
        assert.equal(
          sampleValue(m, "nfqlb_config_info", { name: "e2e-run", digest: await digest(cm.file) }),
          1,
        );
        assert.equal(sampleValue(m, "nfqlb_dataplane_restarts_total"), 0);
        assert.equal(sampleValue(m, "nfqlb_dataplane_up"), 1);
        assert.ok(
          (sampleValue(m, "nfqlb_queue_received_packets_total", { queue: "2" }) ?? 0) >= 60,
        );
      });

      await t.step(
        "kill -9 of the lb: a new lb (a child of run) forwards again; /ready 503 meanwhile",
        async () => {
          const pid0 = agent.remember()!;
          const flows = topo.flows(4, 8, 21000);
          const stream = await topo.client.startStream(4, flows, { pps: 400, waitMs: 100 });
          const watch = agent.watch("/ready", 10);
          await waitUntil(() => watch.answers().some((a) => a.status === 200), 10_000, 20);
          const from = agent.lines().length;
          const killedAt = Date.now();
          Deno.kill(pid0, "SIGKILL");
          const restarted = await agent.waitLine(/ restarted lb: pid \d+, bound to its queues/, 30_000, from);
          assert.ok(restarted, agent.proc.describe());
          const pid1 = agent.remember()!;
          assert.notEqual(pid1, pid0);
          assert.ok(h.inLbNetns(pid1));
          assert.equal(ppid(pid1), agent.pid, "the new lb is a child of run");
          await waitUntil(
            () => watch.answers().at(-1)?.status === 200 && watch.answers().length > 1,
            10_000,
            20,
          );
          await new Promise((r) => setTimeout(r, 500)); // forwarding for a while after
          const s = await stream.stop();
          const answers = await watch.stop();
          const boundMs = RunAgent.timeOf(restarted) - killedAt;
          const outage = s.gaps.reduce((m, g) => Math.max(m, g.to - g.from), 0);
          figures["kill -9 -> new lb bound (run's log), ms"] = boundMs;
          figures["kill -9 -> forwarding again (longest gap of the client's probes), ms"] = outage;
          figures["probes lost around the kill"] = s.gaps.reduce((n, g) => n + g.lost, 0);
          assert.ok(boundMs <= RESTART_BOUND_MS, `new lb bound ${boundMs} ms after the kill`);
          assert.ok(
            outage <= RESTART_BOUND_MS,
            `forwarding again after ${outage} ms: ${JSON.stringify(s.gaps)}`,
          );
          assert.ok(s.gaps.length <= 1, `one outage at most: ${JSON.stringify(s.gaps)}`);
          // every flow answered after the restart, by the target it had before (the same table)
          for (const f of s.flows) assert.ok(f.lastAnswered > f.lastLost, JSON.stringify(f));
          for (const f of s.flows) {
            assert.equal(Object.keys(f.byTarget).length, 1, JSON.stringify(f.byTarget));
          }
          const down = answers.find((a) => a.status === 503);
          assert.ok(down, `/ready never said 503: ${JSON.stringify(answers)}`);
          assert.match(down.body, /^not ready: lb (is not running|pid \d+ has not bound queue 2)/);
          assert.equal(answers.at(-1)!.status, 200);
          assert.ok(
            agent.lines().slice(from).some((l) =>
              / error +lb \(pid \d+\) exited: signal SIGKILL after /.test(l)
            ),
          );
          const m = await metrics(agent);
          assert.equal(sampleValue(m, "nfqlb_dataplane_restarts_total"), 1);
        },
      );

      const reload = async (what: string, change: () => void) => {
        const pid = agent.remember();
        const from = agent.lines().length;
        const at = Date.now();
        change();
        const line = await agent.waitLine(/ notice +reloaded .*: \d+ changes?/, 30_000, from);
        assert.ok(line, `${what}: no reload\n${agent.proc.describe()}`);
        const ms = RunAgent.timeOf(line) - at;
        figures[`reload (${what}): write -> applied, ms`] = ms;
        assert.ok(ms <= RELOAD_BOUND_MS, `${what}: applied ${ms} ms after the write`);
        assert.equal(agent.remember(), pid, `${what}: the lb is the same process`);
        assert.ok(pidRunning(pid!));
        return agent.lines().slice(from);
      };

      await t.step("a weight written in place: one activate, same lb", async () => {
        const rows = await h.rows("web");
        const lines = await reload(
          "weight, in place",
          () => cm.writeInPlace(config("e2e-run", [1, 2, 3], [4], { 2: 3 })),
        );
        assert.ok(
          lines.some((l) => l.endsWith("info    ~ activate --shm=web --weight=3 102   (weight 1 -> 3)")),
          lines.join("\n"),
        );
        const now = await h.rows("web");
        assert.deepEqual(now.get(102), { row: rows.get(102)!.row, weight: 3 });
        for (const fw of [101, 103]) assert.deepEqual(now.get(fw), rows.get(fw));
      });

      await t.step("a new target renamed over the file: t4 gets flows, same lb", async () => {
        const lines = await reload(
          "new target, rename over",
          () => cm.renameOver(config("e2e-run", [1, 2, 3, 4], [4], { 2: 3 })),
        );
        assert.ok(lines.some((l) => l.includes("+ activate --shm=web --weight=1 104")), lines.join("\n"));
        assert.ok(lines.some((l) => l.includes("+ ip rule add fwmark 104 table 104")), lines.join("\n"));
        const r = await topo.client.udp(4, topo.flows(4, 90, 22000));
        assertAllAnswered(r.targets, topo.targetNames, "udp");
      });

      await t.step(
        "a new VIP (IPv6) by a ConfigMap symlink swap: IPv6 flows reach all 4, same lb",
        async () => {
          const lines = await reload(
            "new VIP, symlink swap",
            () => cm.swap(config("e2e-run", [1, 2, 3, 4], [4, 6], { 2: 3 })),
          );
          assert.ok(
            lines.some((l) => l.includes("+ ip6tables ") && l.includes("NFQUEUE --queue-num 2")),
            lines.join("\n"),
          );
          assertAllAnswered(
            (await topo.client.udp(6, topo.flows(6, 90, 23000))).targets,
            topo.targetNames,
            "udp6",
          );
          assertAllAnswered(
            (await topo.client.udp(4, topo.flows(4, 60, 24000))).targets,
            topo.targetNames,
            "udp",
          );
          const m = await metrics(agent);
          assert.equal(sampleValue(m, "nfqlb_agent_reloads_total", { result: "ok" }), 3);
          assert.equal(
            sampleValue(m, "nfqlb_config_info", { name: "e2e-run", digest: await digest(cm.file) }),
            1,
          );
        },
      );

      await t.step(
        "a broken file is refused whole with apply's line; traffic, lb, table, /ready unaffected",
        async () => {
          const pid = agent.remember();
          const rows = await h.rows("web");
          const snap = await h.snapshot();
          const good = await digest(cm.file);
          const from = agent.lines().length;
          // a valid change (t1 out) together with an error: none of it may happen
          cm.writeInPlace(config("e2e-run", [2, 3, 4], [4, 6], { 2: 70000 }));
          const line = await agent.waitLine(/ error +refused: /, 30_000, from);
          assert.ok(line, agent.proc.describe());
          assert.match(
            line,
            new RegExp(
              ` error +refused: ${
                cm.file.replace(/[.]/g, "\\.")
              }:\\d+: services\\[0\\]\\.targets\\[0\\]\\.weight: expected an integer 0\\.\\.65535, got 70000; still serving the previous config`,
            ),
          );
          assertAllAnswered(
            (await topo.client.udp(4, topo.flows(4, 60, 25000))).targets,
            topo.targetNames,
            "udp",
          );
          assertAllAnswered(
            (await topo.client.udp(6, topo.flows(6, 60, 25000))).targets,
            topo.targetNames,
            "udp6",
          );
          assert.equal(agent.remember(), pid);
          assert.deepEqual(await h.rows("web"), rows);
          assert.deepEqual(await h.snapshot(), snap);
          const r = await agent.get("/ready");
          assert.equal(r.status, 200, `/ready after a refused file: ${r.body}`);
          const m = await metrics(agent);
          assert.equal(sampleValue(m, "nfqlb_agent_reloads_total", { result: "error" }), 1);
          assert.equal(
            sampleValue(m, "nfqlb_config_info", { name: "e2e-run", digest: good }),
            1,
            "still the old config",
          );
        },
      );

      await t.step(
        "SIGHUP reloads (refused again while the file is broken; applied once fixed)",
        async () => {
          let from = agent.lines().length;
          agent.proc.signal("SIGHUP");
          assert.ok(await agent.waitLine(/ notice +reloading .* \(SIGHUP\)/, 30_000, from));
          assert.ok(await agent.waitLine(/ error +refused: /, 30_000, from));
          from = agent.lines().length;
          cm.writeInPlace(config("e2e-run", [1, 2, 3, 4], [4, 6], { 2: 3 }));
          assert.ok(await agent.waitLine(/ notice +reloaded .*: nothing to change/, 30_000, from));
          from = agent.lines().length;
          agent.proc.signal("SIGHUP");
          assert.ok(await agent.waitLine(/ notice +reloaded .*: nothing to change/, 30_000, from));
          const m = await metrics(agent);
          assert.equal(sampleValue(m, "nfqlb_agent_reloads_total", { result: "error" }), 2);
          assert.equal(sampleValue(m, "nfqlb_agent_reloads_total", { result: "ok" }), 5);
          notify.drain();
          assert.ok(notify.messages.filter((x) => x.startsWith("RELOADING=1\nMONOTONIC_USEC=")).length >= 6);
          assert.ok(notify.messages.filter((x) => x.split("\n").includes("READY=1")).length >= 7);
        },
      );

      await t.step("SIGTERM: exit 0, STOPPING=1, and the host is as before run", async () => {
        const pid = agent.remember()!;
        const st = await agent.stop("SIGTERM");
        assert.equal(st.code, 0, agent.proc.describe());
        assert.ok(await notify.waitFor((m) => m === "STOPPING=1", 1000));
        assert.ok(!pidRunning(pid), `lb pid ${pid} is gone`);
        assert.match(agent.lines().at(-1)!, / notice +removed \d+ things of e2e-run$/);
        assert.deepEqual(await h.snapshot(), before, "iptables, rules, routes as before run");
        const left = h.shmFiles().filter((f) => !filesBefore.includes(f) && f !== "nfqlb-trace");
        assert.deepEqual(left, [], "shm files left");
      });
      console.log(`figures: ${JSON.stringify(figures, null, 1)}`);
    } finally {
      notify.close();
    }
  },
});

Deno.test({
  name:
    "e2e run --keep: the lb serves on; apply and a new run adopt it (same pid, no probe lost); an adopted lb is restarted; json logs",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-keep" });
    const { topo } = h;
    const ADMIN = 'admin: { address: "127.0.0.1:9120" }\n';
    h.write(config("e2e-keep", [1, 2, 3], [4]) + ADMIN);
    const before = await h.snapshot();
    const flows = topo.flows(4, 8, 26000);
    let pid0 = 0;
    const stream = await (async () => {
      await using first = RunAgent.start(h, {
        args: ["--keep", "--log-format=json"],
        admin: "127.0.0.1:9120",
      });
      assert.ok(await first.waitLine(/"msg":"ready: serving /, 60_000), first.proc.describe());
      pid0 = first.remember()!;
      assertAllAnswered(
        (await topo.client.udp(4, topo.flows(4, 30, 27000))).targets,
        topo.targetNames,
        "udp",
      );
      const s = await topo.client.startStream(4, flows, { pps: 200, waitMs: 500 });
      await t.step("the admin server on the file's admin.address", async () => {
        assert.equal((await first.get("/healthz")).status, 200);
        assert.equal((await first.get("/healthz", "127.0.0.1:9110")).status, 0, "not on the default address");
      });
      await t.step("json logs: one object per line with time, level, msg", () => {
        for (const l of first.lines()) {
          const o = JSON.parse(l);
          assert.ok(
            !Number.isNaN(Date.parse(o.time)) && typeof o.level === "string" && typeof o.msg === "string",
            l,
          );
        }
      });
      const st = await first.stop("SIGTERM");
      assert.equal(st.code, 0, first.proc.describe());
      assert.match(first.lines().at(-1)!, /"msg":"kept: lb pid \d+ keeps serving /);
      first.release(); // the lb it leaves is the point: not killed when `first` is disposed
      return s;
    })();

    await t.step("after run --keep: the lb still runs and apply adopts it (nothing to change)", async () => {
      assert.ok(h.inLbNetns(pid0), "the lb outlived run");
      assert.deepEqual(await h.applyOk(), [`nothing to change: the host matches ${h.file}`]);
      assert.equal(h.pid(), pid0);
    });

    await using second = RunAgent.start(h, { args: ["--admin=127.0.0.1:9121"], admin: "127.0.0.1:9121" });
    await t.step("a new run adopts it: same pid, no probe of the stream lost", async () => {
      assert.ok(await second.waitLine(/ notice +ready: serving /, 60_000), second.proc.describe());
      assert.ok(
        second.lines().some((l) => l.includes(`adopted lb pid ${pid0}, started by an earlier run or apply`)),
      );
      assert.equal(second.remember(), pid0);
      assert.equal((await second.get("/ready")).status, 200, "--admin wins over the file");
      assert.equal((await second.get("/ready", "127.0.0.1:9120")).status, 0);
      await new Promise((r) => setTimeout(r, 500));
      const s = await stream.stop();
      const n = assertNoLoss(s, "across run --keep, apply and a new run");
      assert.ok(n.sent >= 8, JSON.stringify(n));
      assert.deepEqual(s.gaps, []);
    });

    await t.step("a weight renamed over the plain file: applied, same lb", async () => {
      const from = second.lines().length;
      Deno.writeTextFileSync(`${h.file}.tmp`, config("e2e-keep", [1, 2, 3], [4], { 1: 0 }) + ADMIN);
      Deno.renameSync(`${h.file}.tmp`, h.file);
      const line = await second.waitLine(/ notice +reloaded .*: 1 change/, 30_000, from);
      assert.ok(line, second.proc.describe());
      assert.equal(second.remember(), pid0);
      const r = await topo.client.udp(4, topo.flows(4, 60, 28000));
      assertAllAnswered(r.targets, ["t2", "t3"], "udp after draining t1");
      assert.equal(tally(r.targets.flat()).t1, undefined);
    });

    await t.step(
      "kill -9 of the adopted lb (not a child of this run): restarted, as a child now",
      async () => {
        const from = second.lines().length;
        Deno.kill(pid0, "SIGKILL");
        const line = await second.waitLine(/ restarted lb: pid \d+/, 30_000, from);
        assert.ok(line, second.proc.describe());
        assert.ok(second.lines().slice(from).some((l) => l.includes(`lb (pid ${pid0}) exited: gone after`)));
        const pid1 = second.remember()!;
        assert.notEqual(pid1, pid0);
        assert.equal(ppid(pid1), second.pid);
        assertAllAnswered((await topo.client.udp(4, topo.flows(4, 30, 29000))).targets, ["t2", "t3"], "udp");
      },
    );

    await t.step("SIGTERM (no --keep): the host is as before", async () => {
      const pid = second.remember()!;
      const st = await second.stop("SIGTERM");
      assert.equal(st.code, 0, second.proc.describe());
      assert.ok(!pidRunning(pid));
      assert.deepEqual(await h.snapshot(), before);
    });
  },
});

Deno.test({
  name:
    "e2e run: flowlb: a killed flowlb comes back with its flows; a file that fails while applied is rolled back, traffic on",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-runflow" });
    const { topo } = h;
    const target = (i: number, address = targetAddr(4, i)) =>
      `      - { fwmark: ${100 + i}, address: ${address} }`;
    const file = (extraA: string[] = [], admin = "") =>
      [
        "version: 1",
        "name: e2e-runflow",
        "services:",
        "  - name: a",
        `    vips: [${VIP[4]}]`,
        `    ports: [{ protocol: udp, port: ${UDP_PORT} }]`,
        "    targets:",
        target(1),
        target(2),
        ...extraA,
        "  - name: b",
        `    vips: [${VIP[4]}]`,
        `    ports: [{ protocol: tcp, port: ${TCP_PORT} }]`,
        "    targets:",
        target(3),
        "flows:",
        `  - { name: udp-a, service: a, protocols: [udp], dsts: [${VIP[4]}/32], dports: [${UDP_PORT}] }`,
        `  - { name: tcp-b, service: b, protocols: [tcp], dsts: [${VIP[4]}/32], dports: [${TCP_PORT}] }`,
        ...(admin ? [`admin: { address: "${admin}" }`] : []),
        "",
      ].join("\n");
    h.write(file());
    const before = await h.snapshot();
    const filesBefore = h.shmFiles();
    await using agent = RunAgent.start(h);
    const flowNames = async () => {
      const r = await h.nfqlb(["flow-list"]);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { name: string }[]).map((f) => f.name).sort();
    };
    const traffic = async (sport: number) => {
      assertAllAnswered((await topo.client.udp(4, topo.flows(4, 40, sport))).targets, ["t1", "t2"], "udp");
      assertAllAnswered((await topo.client.tcp(4, topo.flows(4, 20, sport))).targets, ["t3"], "tcp");
    };

    await t.step("flowlb with two flows; /metrics has their matches", async () => {
      assert.ok(await agent.waitLine(/ notice +ready: serving /, 60_000), agent.proc.describe());
      assert.ok(agent.lines().some((l) => / info +\+ start flowlb --queue=2 /.test(l)));
      assert.deepEqual(await flowNames(), ["tcp-b", "udp-a"]);
      await traffic(30000);
      const m = await metrics(agent);
      assert.ok((sampleValue(m, "nfqlb_flow_matched_packets_total", { flow: "udp-a" }) ?? 0) >= 40);
      assert.equal((await agent.get("/ready")).status, 200);
    });

    await t.step("kill -9 of flowlb: restarted with both flows, traffic as before", async () => {
      const pid0 = agent.remember()!;
      const from = agent.lines().length;
      Deno.kill(pid0, "SIGKILL");
      assert.ok(await agent.waitLine(/ restarted flowlb: pid \d+/, 30_000, from), agent.proc.describe());
      assert.notEqual(agent.remember(), pid0);
      assert.deepEqual(await flowNames(), ["tcp-b", "udp-a"]);
      await traffic(31000);
      assert.ok(await waitUntil(async () => (await agent.get("/ready")).status === 200, 10_000));
    });

    await t.step(
      "a new target whose route the kernel refuses: rolled back to the previous config",
      async () => {
        const pid = agent.remember();
        const rows = await h.rows("a");
        const snap = await h.snapshot();
        const from = agent.lines().length;
        // valid for the loader, but 10.213.99.1 is on no link: `ip route add ... via` fails while applying
        h.write(file([target(4, "10.213.99.1")]));
        const refused = await agent.waitLine(
          / error +refused: .*; restoring the previous config$/,
          30_000,
          from,
        );
        assert.ok(refused, agent.proc.describe());
        assert.match(refused, /ip route add default via 10\.213\.99\.1 table 104/);
        assert.ok(await agent.waitLine(/ notice +restored the previous config: /, 30_000, from));
        assert.deepEqual(await h.rows("a"), rows, "target 104 is out of table a again");
        assert.deepEqual(await h.snapshot(), snap);
        assert.equal(agent.remember(), pid);
        await traffic(32000);
        const m = await metrics(agent);
        assert.equal(sampleValue(m, "nfqlb_agent_reloads_total", { result: "error" }), 1);
        assert.equal((await agent.get("/ready")).status, 200);
      },
    );

    await t.step(
      "a new admin.address in the file: the server moves there, nothing else changes",
      async () => {
        const from = agent.lines().length;
        h.write(file([], "127.0.0.1:9130"));
        assert.ok(
          await agent.waitLine(/ notice +reloaded .*: nothing to change/, 30_000, from),
          agent.proc.describe(),
        );
        assert.ok(
          agent.lines().slice(from).some((l) => l.includes("admin server moved to http://127.0.0.1:9130/")),
        );
        assert.equal((await agent.get("/ready", "127.0.0.1:9130")).status, 200);
        assert.equal((await agent.get("/ready")).status, 0, "the old address is closed");
      },
    );

    await t.step("SIGTERM: the host as before, saved flows removed", async () => {
      const st = await agent.stop("SIGTERM");
      assert.equal(st.code, 0, agent.proc.describe());
      assert.deepEqual(await h.snapshot(), before);
      const left = h.shmFiles().filter((f) => !filesBefore.includes(f) && f !== "nfqlb-trace");
      assert.deepEqual(left, [], "shm files left");
    });
  },
});
