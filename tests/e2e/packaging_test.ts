/**
 * End-to-end check of the packaging (docs/operations.md) as far as this machine allows: systemd is not
 * PID 1 here and no Docker engine runs, so neither the unit nor the image can be started. What the unit
 * promises is reproduced without systemd, and `nfqlb run` is run under it in the lb netns of a
 * {@link HostUnderTest}, with real traffic:
 *
 * - the unit's capabilities: uid 0 with the bounding set of `CapabilityBoundingSet=` (read from
 *   packaging/systemd/nfqlb@.service) and no-new-privileges, by `setpriv`, for run and everything it
 *   starts;
 * - `ProtectSystem=strict` and `ProtectKernelTunables=yes`: every mount read-only but /dev (so /dev/shm),
 *   /proc and /sys, and /proc/sys read-only, in a mount namespace of its own (`unshare -m`);
 *
 * and then: READY=1, /ready 200, traffic to every target (IPv4 and IPv6), the image's healthcheck script
 * against the admin server, a reload in place (same lb), a killed lb restarted, SIGTERM → exit 0 with the
 * host as before (timed, for terminationGracePeriodSeconds). The RSS of run and of its lb is printed for
 * the sizing in the docs.
 *
 * A second test pins what the unit's comments claim about iptables: the nf_tables backend works with
 * CAP_NET_ADMIN alone, iptables-legacy needs CAP_NET_RAW too, and on a read-only /run it needs an existing
 * /run/xtables.lock (what the unit's `ExecStartPre=+/usr/bin/touch /run/xtables.lock` is for).
 *
 * Needs root; every process is stopped by pid and every namespace removed, on failure too.
 */
import assert from "node:assert/strict";
import { type Family, targetAddr, VIP } from "../harness/addresses.ts";
import { HostUnderTest } from "../harness/host.ts";
import { deleteNamespace, inNetns, skipUnlessRoot } from "../harness/netns.ts";
import { NotifySocket } from "../harness/notify_socket.ts";
import { ROOT } from "../harness/paths.ts";
import { pidRunning, run } from "../harness/process.ts";
import { RunAgent } from "../harness/run_agent.ts";
import { DEFAULT_ADMIN_ADDRESS } from "../../host/names.ts";
import { parseUnit, values } from "../helpers/packaging.ts";
import { assertAllAnswered } from "./checks.ts";

const ignore = skipUnlessRoot();

const UNIT = `${ROOT}/packaging/systemd/nfqlb@.service`;
const HEALTHCHECK = `${ROOT}/packaging/container/healthcheck.sh`;

/** The unit's capability bounding set, as setpriv names capabilities (`net_admin`). */
function unitCaps(): string[] {
  const set = values(parseUnit(Deno.readTextFileSync(UNIT)), "Service", "CapabilityBoundingSet");
  return set.join(" ").split(/\s+/).filter((c) => c !== "").map((c) => c.replace(/^CAP_/, "").toLowerCase());
}

/** The bit mask of capabilities (linux/capability.h numbers), as /proc/PID/status prints it. */
function capMask(caps: string[]): bigint {
  const bit: Record<string, number> = { net_admin: 12, net_raw: 13 };
  return caps.reduce((m, c) => {
    assert.ok(bit[c] !== undefined, `capability ${c}: add its number here`);
    return m | (1n << BigInt(bit[c]));
  }, 0n);
}

/**
 * The command prefix that runs its arguments under the unit's restrictions (without systemd): a mount
 * namespace whose mounts are all read-only but /dev, /proc and /sys (ProtectSystem=strict), /proc/sys
 * read-only (ProtectKernelTunables=yes), then setpriv with the bounding set and no-new-privileges. Each
 * step execs, so the pid is the one of the command.
 */
function unitSandbox(caps: string[]): string[] {
  const script = [
    "set -e",
    "mount -o remount,bind,ro /",
    // other mounts (a separate /tmp or /work on some machines) too; a mount that refuses stays as it is
    `awk '{print $5}' /proc/self/mountinfo | grep -Ev '^/$|^/(dev|proc|sys)(/|$)' | ` +
    `while read -r m; do mount -o remount,bind,ro "$m" 2>/dev/null || true; done`,
    "mount --bind /proc/sys /proc/sys",
    "mount -o remount,bind,ro /proc/sys",
    `exec setpriv --no-new-privs --bounding-set=-all,${
      caps.map((c) => `+${c}`).join(",")
    } --inh-caps=-all -- "$@"`,
  ].join("\n");
  return ["unshare", "-m", "--", "sh", "-c", script, "sh"];
}

/** A field of /proc/PID/status. */
function procStatus(pid: number, field: string): string {
  const line = Deno.readTextFileSync(`/proc/${pid}/status`).split("\n").find((l) =>
    l.startsWith(`${field}:`)
  );
  assert.ok(line, `${field} of pid ${pid}`);
  return line.slice(field.length + 1).trim();
}

/** The mount options of `/` as process `pid` sees it. */
function rootMountOptions(pid: number): string[] {
  for (const l of Deno.readTextFileSync(`/proc/${pid}/mountinfo`).split("\n")) {
    const f = l.split(" ");
    if (f[4] === "/") return f[5].split(",");
  }
  return [];
}

/** A one-service config over targets 1..3 with VIPs of both families; `weight2` for target 2. */
function config(name: string, weight2 = 1): string {
  const addr = (i: number) => `[${([4, 6] as Family[]).map((f) => `"${targetAddr(f, i)}"`).join(", ")}]`;
  return [
    "version: 1",
    `name: ${name}`,
    "services:",
    "  - name: web",
    `    vips: ["${VIP[4]}", "${VIP[6]}"]`,
    "    targets:",
    ...[1, 2, 3].map((i) =>
      `      - { fwmark: ${100 + i}, address: ${addr(i)}${i === 2 ? `, weight: ${weight2}` : ""} }`
    ),
    "",
  ].join("\n");
}

Deno.test({
  name:
    "e2e packaging: nfqlb run under the systemd unit's capabilities and read-only file system: ready, traffic, healthcheck, reload, restart, SIGTERM leaves the host as before",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-pkg" });
    const { topo } = h;
    h.write(config("e2e-pkg"));
    const before = await h.snapshot();
    const filesBefore = h.shmFiles();
    const caps = unitCaps();
    assert.deepEqual([...caps].sort(), ["net_admin", "net_raw"]);
    const mask = capMask(caps);
    const notify = NotifySocket.bind(`${topo.workDir}/notify.sock`);
    const figures: Record<string, number> = {};
    try {
      const started = performance.now();
      // as the image's CMD does: the health check's default address, whatever the config's name
      await using agent = RunAgent.start(h, {
        wrap: unitSandbox(caps),
        env: { NOTIFY_SOCKET: notify.path },
        args: [`--admin=${DEFAULT_ADMIN_ADDRESS}`],
        admin: DEFAULT_ADMIN_ADDRESS,
      });

      await t.step("READY=1, /ready 200, and run and its lb have only the unit's capabilities", async () => {
        const ready = await notify.waitFor((m) => m.split("\n").includes("READY=1"), 60_000);
        assert.ok(ready, `no READY=1: ${notify.messages.join(" | ")}\n${agent.proc.describe()}`);
        figures["start -> READY=1 (applied, lb bound), ms"] = Math.round(performance.now() - started);
        const r = await agent.get("/ready");
        assert.equal(r.status, 200, r.body);
        const lb = agent.remember()!;
        assert.ok(h.inLbNetns(lb));
        for (const [what, pid] of [["run", agent.pid], ["lb", lb]] as const) {
          assert.equal(BigInt(`0x${procStatus(pid, "CapBnd")}`), mask, `${what}: bounding set`);
          assert.equal(BigInt(`0x${procStatus(pid, "CapEff")}`), mask, `${what}: effective set`);
          assert.equal(procStatus(pid, "NoNewPrivs"), "1", `${what}: no new privileges`);
          assert.ok(rootMountOptions(pid).includes("ro"), `${what}: / is read-only`);
        }
      });

      await t.step("traffic over both families reaches the 3 targets", async () => {
        for (const fam of [4, 6] as Family[]) {
          assertAllAnswered(
            (await topo.client.udp(fam, topo.flows(fam, 60, 20000))).targets,
            ["t1", "t2", "t3"],
            `udp ipv${fam}`,
          );
        }
      });

      await t.step(
        "the image's healthcheck script: 0 on /healthz and /ready, 1 on a closed port",
        async () => {
          const ok = await topo.exec(topo.ns.lb, ["bash", HEALTHCHECK], {
            allowFail: true,
            timeoutMs: 10_000,
          });
          assert.equal(ok.code, 0, ok.stdout + ok.stderr);
          assert.equal(ok.stdout, "");
          const ready = await topo.exec(topo.ns.lb, ["bash", HEALTHCHECK, "127.0.0.1", "9110", "/ready"], {
            allowFail: true,
            timeoutMs: 10_000,
          });
          assert.equal(ready.code, 0, ready.stdout + ready.stderr);
          const missing = await topo.exec(
            topo.ns.lb,
            ["bash", HEALTHCHECK, "127.0.0.1", "9110", "/nothing"],
            {
              allowFail: true,
              timeoutMs: 10_000,
            },
          );
          assert.equal(missing.code, 1);
          assert.match(missing.stdout, /^healthcheck: 127\.0\.0\.1:9110\/nothing: HTTP 404\n$/);
          const closed = await topo.exec(topo.ns.lb, ["bash", HEALTHCHECK, "127.0.0.1", "9"], {
            allowFail: true,
            timeoutMs: 10_000,
          });
          assert.equal(closed.code, 1);
          assert.match(closed.stdout, /no admin server/);
        },
      );

      await t.step("memory: RSS of run and of its lb (for the container's requests)", () => {
        const kb = (pid: number) => Number(procStatus(pid, "VmRSS").replace(/ kB$/, ""));
        figures["run VmRSS, MB"] = Math.round(kb(agent.pid) / 100) / 10;
        figures["lb VmRSS, MB"] = Math.round(kb(agent.remember()!) / 100) / 10;
      });

      await t.step("a weight written in place is applied, same lb", async () => {
        const lb = agent.remember();
        const from = agent.lines().length;
        h.write(config("e2e-pkg", 3));
        const line = await agent.waitLine(/ notice +reloaded .*: \d+ changes?/, 30_000, from);
        assert.ok(line, agent.proc.describe());
        assert.equal(agent.remember(), lb);
        assert.equal((await h.rows("web")).get(102)?.weight, 3);
      });

      await t.step("kill -9 of the lb: run starts a new one, with the same capabilities", async () => {
        const lb0 = agent.remember()!;
        const from = agent.lines().length;
        Deno.kill(lb0, "SIGKILL");
        const line = await agent.waitLine(/ restarted lb: pid \d+, bound to its queues/, 30_000, from);
        assert.ok(line, agent.proc.describe());
        const lb1 = agent.remember()!;
        assert.notEqual(lb1, lb0);
        assert.equal(BigInt(`0x${procStatus(lb1, "CapBnd")}`), mask);
        assertAllAnswered(
          (await topo.client.udp(4, topo.flows(4, 30, 21000))).targets,
          ["t1", "t2", "t3"],
          "udp after the restart",
        );
      });

      await t.step("SIGTERM: exit 0 (timed) and the host is as before run", async () => {
        const lb = agent.remember()!;
        const t0 = performance.now();
        const st = await agent.stop("SIGTERM");
        figures["SIGTERM -> run exited (teardown done), ms"] = Math.round(performance.now() - t0);
        assert.equal(st.code, 0, agent.proc.describe());
        assert.ok(!pidRunning(lb), "the lb is gone");
        assert.ok(notify.messages.some((m) => m.split("\n").includes("STOPPING=1")));
        assert.deepEqual(await h.snapshot(), before, "iptables, rules, routes as before run");
        const left = h.shmFiles().filter((f) => !filesBefore.includes(f) && f !== "nfqlb-trace");
        assert.deepEqual(left, []);
      });
    } finally {
      notify.close();
      console.log(`packaging figures: ${JSON.stringify(figures)}`);
    }
  },
});

Deno.test({
  name:
    "e2e packaging: iptables-nft needs CAP_NET_ADMIN only; iptables-legacy also CAP_NET_RAW, and an existing /run/xtables.lock on a read-only /run",
  ignore,
  async fn() {
    const ns = `nfqe-${Deno.pid}-0-pkg`;
    await run(["ip", "netns", "add", ns]);
    try {
      const under = (caps: string, args: string[]) =>
        run(inNetns(ns, ["setpriv", `--bounding-set=-all,${caps}`, "--inh-caps=-all", "--", ...args]), {
          allowFail: true,
          timeoutMs: 20_000,
        });
      const nft = await under("+net_admin", ["iptables", "-w", "-t", "mangle", "-S", "PREROUTING"]);
      if (!/nf_tables/.test((await run(["iptables", "-V"], { allowFail: true })).stdout)) {
        console.log("iptables is not the nf_tables backend here: its CAP_NET_ADMIN-only case is skipped");
      } else {
        assert.equal(nft.code, 0, nft.stderr);
      }
      const legacy = await run(["sh", "-c", "command -v iptables-legacy"], { allowFail: true });
      if (legacy.code !== 0) {
        console.log("iptables-legacy is not installed: its cases are skipped");
        return;
      }
      const list = ["iptables-legacy", "-w", "-t", "mangle", "-S", "PREROUTING"];
      const noRaw = await under("+net_admin", list);
      assert.notEqual(noRaw.code, 0);
      assert.match(noRaw.stderr, /Permission denied/);
      const withRaw = await under("+net_admin,+net_raw", list);
      assert.equal(withRaw.code, 0, withRaw.stderr);
      // a read-only /run of our own (a tmpfs in a private mount namespace), without and with the lock file
      const roRun = (touch: boolean) =>
        run(
          inNetns(ns, [
            "unshare",
            "-m",
            "--",
            "sh",
            "-c",
            `mount -t tmpfs nfqlb-run /run && ${touch ? "touch /run/xtables.lock && " : ""}` +
            `mount -o remount,bind,ro /run && exec setpriv --bounding-set=-all,+net_admin,+net_raw ` +
            `--inh-caps=-all -- "$@"`,
            "sh",
            ...list,
          ]),
          { allowFail: true, timeoutMs: 20_000 },
        );
      const missing = await roRun(false);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /can't open lock file \/run\/xtables\.lock: Read-only file system/);
      const present = await roRun(true);
      assert.equal(present.code, 0, present.stderr);
    } finally {
      await deleteNamespace(ns);
    }
  },
});
