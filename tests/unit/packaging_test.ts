/**
 * The packaging files, checked as far as this machine allows (docs/operations.md):
 *
 * - `packaging/systemd/nfqlb@.service` (and its `keep.conf` drop-in): the key fields read as systemd reads
 *   them, always; `systemd-analyze verify` on it when systemd-analyze is installed (with ExecStart pointed
 *   at this checkout's scripts/nfqlb, since verify wants the binary to exist), and its offline security
 *   score. How the unit's capabilities and read-only file system let `nfqlb run` work is tested for real in
 *   tests/e2e/packaging_test.ts.
 * - `packaging/container/Dockerfile`: parsed (no Docker engine runs here, so it is not built): base image
 *   pinned by tag, packages from apt and Deno from the npm registry only, every COPY'd path in the
 *   repository, the run command, the admin port exposed and health-checked.
 * - `deploy/kubernetes/`: the manifests parsed, and their fields checked (DaemonSet with hostNetwork,
 *   NET_ADMIN, /dev/shm as a memory emptyDir with a size limit, the ConfigMap at /etc/nfqlb/, probes on
 *   /healthz and /ready of the admin port, which listens where the kubelet reaches it); the ConfigMap's
 *   config is valid for `nfqlb apply`.
 */
import assert from "node:assert/strict";
import { ROOT } from "../harness/paths.ts";
import { parseUnit, type Unit, value, values } from "../helpers/packaging.ts";

const UNIT = `${ROOT}/packaging/systemd/nfqlb@.service`;
const KEEP = `${ROOT}/packaging/systemd/keep.conf`;

/** Whether `cmd` is on the PATH. */
function have(cmd: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Runs a command (bounded), returning its exit code and output. */
async function run(
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await new Deno.Command(args[0], {
    args: args.slice(1),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

function unit(): Unit {
  return parseUnit(Deno.readTextFileSync(UNIT));
}

Deno.test("systemd unit: Type=notify run of /etc/nfqlb/%i.yaml, reload by SIGHUP, watchdog, stop by run", () => {
  const u = unit();
  const svc = (k: string) => value(u, "Service", k);
  assert.equal(svc("Type"), "notify");
  assert.equal(svc("NotifyAccess"), "main", "run sends READY=1 from its own (main) process");
  assert.deepEqual(values(u, "Service", "ExecStart"), ["/usr/local/bin/nfqlb run -f /etc/nfqlb/%i.yaml"]);
  assert.deepEqual(values(u, "Service", "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
  // run sends WATCHDOG=1 every WATCHDOG_USEC/2; a few seconds at least, so a busy apply does not trip it
  const dog = Number(svc("WatchdogSec"));
  assert.ok(Number.isInteger(dog) && dog >= 10, `WatchdogSec=${svc("WatchdogSec")}`);
  // SIGTERM to run only: it stops its lb in order and removes what it added; the lb's stop grace is 10 s
  assert.equal(svc("KillMode"), "mixed");
  assert.ok(Number(svc("TimeoutStopSec")) >= 30, "teardown has time: lb grace 10 s + rules and routes");
  assert.ok(Number(svc("TimeoutStartSec")) >= 60, "a first apply of large tables has time");
  assert.equal(svc("Restart"), "on-failure");
  assert.ok(value(u, "Unit", "StartLimitBurst"), "a config that cannot apply does not loop forever");
  assert.deepEqual(values(u, "Install", "WantedBy"), ["multi-user.target"]);
  assert.match(value(u, "Unit", "Description") ?? "", /%i/);
});

Deno.test("systemd unit: capabilities instead of full root, hardening that keeps /dev/shm the host's", () => {
  const u = unit();
  const svc = (k: string) => value(u, "Service", k);
  const caps = values(u, "Service", "CapabilityBoundingSet").join(" ").split(/\s+/).sort();
  assert.deepEqual(caps, ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
  // uid 0 with only these two: the capabilities pass to iptables, ip and the lb through exec (no
  // ambient set needed, and no SecureBits=noroot, which would take them away at every exec)
  assert.equal(svc("User") ?? "root", "root");
  assert.equal(svc("AmbientCapabilities"), undefined);
  assert.equal(svc("SecureBits"), undefined);
  assert.equal(svc("NoNewPrivileges"), "yes");
  assert.equal(svc("ProtectSystem"), "strict");
  assert.equal(svc("PrivateTmp"), "yes");
  // the tables live in the host's /dev/shm (PrivateDevices= would also hide /dev/net/tun); the host's
  // network namespace is the one to configure; V8's JIT needs writable+executable memory
  for (const k of ["PrivateDevices", "PrivateNetwork", "MemoryDenyWriteExecute", "RestrictNamespaces"]) {
    assert.ok(!["yes", "true", "1", "on"].includes(svc(k) ?? "no"), `${k}=${svc(k)} would break run`);
  }
  assert.deepEqual(values(u, "Service", "InaccessiblePaths"), []);
  const families = (svc("RestrictAddressFamilies") ?? "").split(/\s+/);
  for (const f of ["AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"]) assert.ok(families.includes(f), f);
  // iptables-legacy's lock on a read-only /run: created before the sandboxed start
  assert.deepEqual(values(u, "Service", "ExecStartPre"), ["+/usr/bin/touch /run/xtables.lock"]);
});

Deno.test("systemd unit: the keep.conf drop-in makes stop leave the host serving", () => {
  const merged = parseUnit(Deno.readTextFileSync(UNIT) + "\n" + Deno.readTextFileSync(KEEP));
  assert.deepEqual(values(merged, "Service", "ExecStart"), [
    "/usr/local/bin/nfqlb run --keep -f /etc/nfqlb/%i.yaml",
  ]);
  assert.equal(value(merged, "Service", "KillMode"), "process");
});

Deno.test("systemd unit: systemd-analyze verify", async () => {
  if (!have("systemd-analyze")) {
    console.log(
      "systemd-analyze verify: skipped, systemd-analyze is not installed (apt-get install systemd)",
    );
    return;
  }
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-unit-" });
  try {
    const text = Deno.readTextFileSync(UNIT);
    // verify checks that the ExecStart binary exists: as installed it is /usr/local/bin/nfqlb
    Deno.writeTextFileSync(`${dir}/nfqlb@.service`, text);
    if (!exists("/usr/local/bin/nfqlb")) {
      const r = await run(["systemd-analyze", "verify", "--man=no", `${dir}/nfqlb@edge.service`]);
      assert.notEqual(r.code, 0, "verify notices a missing ExecStart binary");
      assert.match(r.stderr, /\/usr\/local\/bin\/nfqlb is not executable/);
    }
    const here = (t: string) => t.replaceAll("/usr/local/bin/nfqlb ", `${ROOT}/scripts/nfqlb `);
    for (
      const [label, t] of [["unit", text], ["unit + keep.conf", text + "\n" + Deno.readTextFileSync(KEEP)]]
    ) {
      Deno.writeTextFileSync(`${dir}/nfqlb@.service`, here(t));
      const r = await run(["systemd-analyze", "verify", "--man=no", `${dir}/nfqlb@edge.service`]);
      // warnings (an unknown key, a bad value) go to stderr with exit 0: any line about our unit fails
      const ours = r.stderr.split("\n").filter((l) => l.includes("nfqlb@"));
      assert.deepEqual(ours, [], `${label}: ${r.stderr}`);
      assert.equal(r.code, 0, `${label}: ${r.stderr}`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("systemd unit: systemd-analyze security --offline rates it OK or better", async () => {
  if (!have("systemd-analyze")) {
    console.log(
      "systemd-analyze security: skipped, systemd-analyze is not installed (apt-get install systemd)",
    );
    return;
  }
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-unit-" });
  try {
    Deno.writeTextFileSync(
      `${dir}/nfqlb@.service`,
      Deno.readTextFileSync(UNIT).replaceAll("/usr/local/bin/nfqlb ", `${ROOT}/scripts/nfqlb `),
    );
    const r = await run([
      "systemd-analyze",
      "security",
      "--offline=yes",
      "--no-pager",
      `${dir}/nfqlb@edge.service`,
    ]);
    if (/unrecognized option|Unknown option/.test(r.stderr)) {
      console.log("systemd-analyze security --offline: skipped, this systemd is older than 250");
      return;
    }
    const m = /Overall exposure level for \S+: ([0-9.]+) (\S+)/.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    console.log(
      `systemd-analyze security: exposure ${m[1]} ${m[2]} (0 best, 10 worst; a plain service is 9.6)`,
    );
    // 9.6 UNSAFE for a unit without hardening; ours is 4.9 with systemd 252 (uid 0 and network access count)
    assert.ok(Number(m[1]) <= 5.5, `exposure ${m[1]}`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
