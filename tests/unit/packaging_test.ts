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
import { parseAllDocuments } from "yaml";
import { parseHostConfig } from "../../host/config/load.ts";
import { DEFAULT_ADMIN_ADDRESS } from "../../host/names.ts";
import { ROOT } from "../harness/paths.ts";
import {
  type Instruction,
  parseDockerfile,
  parseUnit,
  type Unit,
  value,
  values,
} from "../helpers/packaging.ts";

const UNIT = `${ROOT}/packaging/systemd/nfqlb@.service`;
const KEEP = `${ROOT}/packaging/systemd/keep.conf`;
const DOCKERFILE = `${ROOT}/packaging/container/Dockerfile`;
const KUBE = `${ROOT}/deploy/kubernetes`;

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
  for (const k of ["PrivateDevices", "PrivateNetwork", "MemoryDenyWriteExecute"]) {
    assert.ok(!["yes", "true", "1", "on"].includes(svc(k) ?? "no"), `${k}=${svc(k)} would break run`);
  }
  assert.deepEqual(values(u, "Service", "InaccessiblePaths"), []);
  const families = (svc("RestrictAddressFamilies") ?? "").split(/\s+/);
  for (const f of ["AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"]) assert.ok(families.includes(f), f);
  // seccomp: the system-service set (run, the lb with packets, iptables and ip were tried under it)
  assert.deepEqual(values(u, "Service", "SystemCallFilter"), ["@system-service"]);
  assert.equal(svc("RestrictNamespaces"), "yes");
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
    // 9.6 UNSAFE for a unit without hardening; ours is 2.8 with systemd 252 (uid 0 and network access count)
    assert.ok(Number(m[1]) <= 3.5, `exposure ${m[1]}`);
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

// ---- the container image ----

/** The Dockerfile's stages: each FROM and the instructions after it. */
function stages(): { from: Instruction; body: Instruction[] }[] {
  const out: { from: Instruction; body: Instruction[] }[] = [];
  for (const ins of parseDockerfile(Deno.readTextFileSync(DOCKERFILE))) {
    if (ins.cmd === "FROM") out.push({ from: ins, body: [] });
    else {
      assert.ok(out.length > 0 || ins.cmd === "ARG", `Dockerfile:${ins.line}: ${ins.cmd} before FROM`);
      out.at(-1)?.body.push(ins);
    }
  }
  return out;
}

/** The packages of every `apt-get install` in the RUN instructions of a stage. */
function aptPackages(body: Instruction[]): string[] {
  const pkgs: string[] = [];
  for (const ins of body.filter((i) => i.cmd === "RUN")) {
    for (const m of ins.text.matchAll(/apt-get install ([^&;|]*)/g)) {
      pkgs.push(...m[1].split(/\s+/).filter((w) => w !== "" && !w.startsWith("-")));
    }
  }
  return pkgs;
}

/** The Deno version scripts/env.sh pins. */
function pinnedDeno(): string {
  const m = /^NFQLB_DENO_VERSION="([^"]+)"/m.exec(Deno.readTextFileSync(`${ROOT}/scripts/env.sh`));
  assert.ok(m, "NFQLB_DENO_VERSION in scripts/env.sh");
  return m[1];
}

Deno.test("Dockerfile: Debian base pinned by release tag, the same in every stage", () => {
  const st = stages();
  assert.equal(st.length, 2, "a build stage and the runtime stage");
  const bases = st.map((s) => s.from.text.split(/\s+/)[0]);
  for (const b of bases) {
    // a point release (12.11), not latest or a moving codename: the image is the same next month
    assert.match(b, /^debian:\d+\.\d+(-slim)?$/, `FROM ${b}`);
  }
  // libnfqlb.so is built in the first stage and runs in the second: same glibc and libraries
  assert.equal(new Set(bases).size, 1, bases.join(", "));
  assert.match(st[0].from.text, / AS build$/i);
});

Deno.test("Dockerfile: packages from apt, Deno from the npm registry at the pinned version, nothing else fetched", () => {
  const all = stages().flatMap((s) => s.body);
  for (const ins of all.filter((i) => i.cmd === "RUN")) {
    assert.doesNotMatch(
      ins.text,
      /\b(curl|wget|git clone)\b|https?:\/\/|\|\s*(ba)?sh\b/,
      `Dockerfile:${ins.line}`,
    );
    for (const m of ins.text.matchAll(/npm (?:install|i) ([^&;|]*)/g)) {
      const specs = m[1].split(/\s+/).filter((w) => w !== "" && !w.startsWith("-") && !w.startsWith("/"));
      assert.deepEqual(specs, ['"deno@${DENO_VERSION}"'], `Dockerfile:${ins.line}: npm installs Deno only`);
    }
  }
  for (const ins of all.filter((i) => i.cmd === "ADD")) {
    assert.fail(`Dockerfile:${ins.line}: ADD fetches; use COPY`);
  }
  const arg = all.find((i) => i.cmd === "ARG" && i.text.startsWith("DENO_VERSION="));
  assert.equal(arg?.text, `DENO_VERSION=${pinnedDeno()}`, "the Deno scripts/env.sh pins");
  const [build, runtime] = stages();
  assert.ok(aptPackages(build.body).includes("npm"));
  assert.ok(build.body.some((i) => i.cmd === "RUN" && /bash scripts\/bootstrap\.sh/.test(i.text)));
  // what libnfqlb.so links and what apply runs (scripts/bootstrap.sh installs the same on a host)
  const rt = aptPackages(runtime.body);
  for (const p of ["libnetfilter-queue1", "libmnl0", "iptables", "iproute2", "tini"]) {
    assert.ok(rt.includes(p), `runtime stage installs ${p}`);
  }
  const boot = /^PKGS=\(([^)]*)\)/m.exec(Deno.readTextFileSync(`${ROOT}/scripts/bootstrap.sh`))![1].split(
    /\s+/,
  );
  for (const p of ["libnetfilter-queue1", "libmnl0", "iptables", "iproute2"]) {
    assert.ok(boot.includes(p), `bootstrap.sh's runtime package ${p} (keep the two lists in step)`);
  }
  for (const p of rt) assert.doesNotMatch(p, /-dev$|^(gcc|make|npm)$/, "no build tools at run time");
});

Deno.test("Dockerfile: every COPY'd path is in the repository and not ignored; the CLI's layers are all copied", () => {
  const ignored = Deno.readTextFileSync(`${DOCKERFILE}.dockerignore`).split("\n")
    .map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
  const copied: string[] = [];
  for (const { body } of stages()) {
    for (const ins of body.filter((i) => i.cmd === "COPY" && i.flags.from === undefined)) {
      const words = ins.json ?? ins.text.split(/\s+/);
      for (const src of words.slice(0, -1)) {
        const path = src.replace(/\/$/, "");
        assert.ok(exists(`${ROOT}/${path}`), `Dockerfile:${ins.line}: COPY ${src}: not in the repository`);
        assert.ok(
          !ignored.some((i) => path === i || path.startsWith(`${i}/`)),
          `${src} is in the .dockerignore`,
        );
        copied.push(path);
      }
    }
  }
  for (
    const p of ["deno.json", "deno.lock", "mod.ts", "cli", "host", "dataplane", "core", "ffi", "c", "scripts"]
  ) {
    assert.ok(copied.includes(p), `COPY ${p}`);
  }
  // a c/build of the context (built against the host's libraries) must not reach the image
  assert.ok(ignored.includes("c/build") && ignored.includes(".tools"));
});

Deno.test("Dockerfile: runs nfqlb run -f /etc/nfqlb/config.yaml under tini, exposes and health-checks the admin port", () => {
  const runtime = stages()[1].body;
  const last = (cmd: string) => runtime.filter((i) => i.cmd === cmd).at(-1);
  const entry = last("ENTRYPOINT")?.json, cmd = last("CMD")?.json;
  assert.ok(entry && cmd, "ENTRYPOINT and CMD in exec form (run gets SIGTERM itself)");
  assert.deepEqual([...entry, ...cmd], [
    "/usr/bin/tini",
    "--",
    "/usr/local/bin/nfqlb",
    "run",
    "-f",
    "/etc/nfqlb/config.yaml",
    `--admin=${DEFAULT_ADMIN_ADDRESS}`,
  ]);
  assert.ok(
    runtime.some((i) =>
      i.cmd === "RUN" && i.text.includes("ln -s /usr/local/lib/nfqlb/scripts/nfqlb /usr/local/bin/nfqlb")
    ),
  );
  const port = DEFAULT_ADMIN_ADDRESS.split(":").at(-1)!;
  assert.equal(last("EXPOSE")?.text, port);
  const hc = last("HEALTHCHECK")!;
  assert.ok(hc, "HEALTHCHECK");
  assert.deepEqual(hc.text, 'CMD ["/usr/local/lib/nfqlb/packaging/container/healthcheck.sh"]');
  assert.ok(
    runtime.some((i) =>
      i.cmd === "COPY" &&
      i.text === "packaging/container/healthcheck.sh /usr/local/lib/nfqlb/packaging/container/healthcheck.sh"
    ),
  );
  const script = Deno.readTextFileSync(`${ROOT}/packaging/container/healthcheck.sh`);
  assert.match(
    script,
    new RegExp(
      `host="\\$\\{1:-${
        DEFAULT_ADMIN_ADDRESS.split(":")[0].replaceAll(".", "\\.")
      }\\}" port="\\$\\{2:-${port}\\}" path="\\$\\{3:-/healthz\\}"`,
    ),
  );
  assert.ok((Deno.statSync(`${ROOT}/packaging/container/healthcheck.sh`).mode! & 0o111) !== 0, "executable");
  assert.equal(last("STOPSIGNAL")?.text, "SIGTERM");
  assert.equal(runtime.find((i) => i.cmd === "USER"), undefined, "uid 0 (docs/operations.md: Capabilities)");
});

// ---- Kubernetes ----

// deno-lint-ignore no-explicit-any
type Obj = any;

/** Every object of every manifest in deploy/kubernetes/ (the kustomization apart). */
function manifests(): Obj[] {
  const out: Obj[] = [];
  for (const e of [...Deno.readDirSync(KUBE)].sort((a, b) => a.name.localeCompare(b.name))) {
    if (!e.name.endsWith(".yaml") || e.name === "kustomization.yaml") continue;
    for (const doc of parseAllDocuments(Deno.readTextFileSync(`${KUBE}/${e.name}`))) {
      assert.deepEqual(doc.errors, [], `${e.name}: ${doc.errors.join("; ")}`);
      out.push(doc.toJS());
    }
  }
  return out;
}

function one(kind: string): Obj {
  const all = manifests().filter((o) => o.kind === kind);
  assert.equal(all.length, 1, `one ${kind}`);
  return all[0];
}

/** A Kubernetes quantity (64Mi, 1G, 500M) in bytes. */
function quantity(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  assert.ok(m, `quantity ${q}`);
  const mult: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, k: 1e3, M: 1e6, G: 1e9 };
  return Number(m[1]) * (m[2] ? mult[m[2]] : 1);
}

Deno.test("kubernetes: a DaemonSet in the node's network namespace, uid 0 with NET_ADMIN (and NET_RAW), not privileged", () => {
  const ds = one("DaemonSet");
  assert.equal(ds.apiVersion, "apps/v1");
  const spec = ds.spec.template.spec;
  assert.equal(spec.hostNetwork, true);
  assert.equal(spec.dnsPolicy, "ClusterFirstWithHostNet");
  assert.equal(ds.spec.updateStrategy.rollingUpdate.maxSurge, 0, "never two pods on one node");
  assert.ok(spec.terminationGracePeriodSeconds >= 30, "teardown has time (lb grace 10 s)");
  assert.equal(spec.containers.length, 1);
  const c = spec.containers[0];
  const sc = c.securityContext;
  assert.ok(sc.capabilities.add.includes("NET_ADMIN"));
  assert.deepEqual([...sc.capabilities.add].sort(), ["NET_ADMIN", "NET_RAW"]);
  assert.deepEqual(sc.capabilities.drop, ["ALL"]);
  assert.equal(sc.privileged, false);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.equal(sc.runAsUser, 0);
  assert.equal(sc.readOnlyRootFilesystem, true);
  const ns = one("Namespace");
  assert.equal(ds.metadata.namespace, ns.metadata.name);
  assert.equal(
    ns.metadata.labels["pod-security.kubernetes.io/enforce"],
    "privileged",
    "hostNetwork + NET_ADMIN",
  );
});

Deno.test("kubernetes: /dev/shm a memory emptyDir with a size limit that fits the config, the ConfigMap at /etc/nfqlb/", () => {
  const ds = one("DaemonSet"), cm = one("ConfigMap");
  const spec = ds.spec.template.spec, c = spec.containers[0];
  const mount = (path: string) => c.volumeMounts.find((m: Obj) => m.mountPath === path);
  const volume = (name: string) => spec.volumes.find((v: Obj) => v.name === name);

  const shm = volume(mount("/dev/shm").name);
  assert.equal(shm.emptyDir.medium, "Memory");
  const limit = quantity(shm.emptyDir.sizeLimit);

  const cfgMount = mount("/etc/nfqlb");
  assert.equal(cfgMount.subPath, undefined, "a subPath mount never sees the ConfigMap's updates");
  assert.equal(cfgMount.readOnly, true);
  assert.equal(volume(cfgMount.name).configMap.name, cm.metadata.name);
  assert.equal(cm.metadata.namespace, ds.metadata.namespace);
  const args: string[] = c.args;
  assert.deepEqual(args.slice(0, 3), ["run", "-f", "/etc/nfqlb/config.yaml"]);
  assert.ok(Object.hasOwn(cm.data, "config.yaml"));

  // the config is one apply accepts, and its tables fit (twice: init builds a new table beside the old)
  const cfg = parseHostConfig(cm.data["config.yaml"], "config.yaml");
  const need = cfg.services.reduce(
    (n, s) => n + 64 + 24 * s.n + 8 * s.m + (s.conntrack ? 66 * s.conntrack.capacity + 258 * 1024 : 0),
    0,
  );
  assert.ok(2 * need + 1e6 <= limit, `needs ${need} B, sizeLimit ${limit} B`);
  // memory-backed: the tables count against the container's memory, next to run and the lb (~80 MB each)
  assert.ok(
    quantity(c.resources.limits.memory) >= limit + 2 * 100e6,
    "memory limit covers shm and both processes",
  );
  for (const p of ["/tmp"]) assert.ok(mount(p), `${p} writable with a read-only root`);
});

Deno.test("kubernetes: liveness /healthz and readiness /ready on the admin port, which listens where the kubelet probes", () => {
  const c = one("DaemonSet").spec.template.spec.containers[0];
  const args: string[] = c.args;
  // the kubelet probes podIP:port; with hostNetwork podIP is the node's address, so not 127.0.0.1
  const admin = args.find((a) => a.startsWith("--admin="));
  assert.ok(admin, "--admin=");
  const m = /^--admin=(0\.0\.0\.0|\[::\]):(\d+)$/.exec(admin);
  assert.ok(m, `${admin}: a wildcard address the kubelet reaches`);
  const port = Number(m[2]);
  const portOf = (p: string | number) =>
    typeof p === "number" ? p : c.ports.find((x: Obj) => x.name === p)?.containerPort;
  assert.equal(c.livenessProbe.httpGet.path, "/healthz");
  assert.equal(portOf(c.livenessProbe.httpGet.port), port);
  assert.equal(c.readinessProbe.httpGet.path, "/ready");
  assert.equal(portOf(c.readinessProbe.httpGet.port), port);
  assert.equal(c.livenessProbe.httpGet.host, undefined, "the pod's IP");
});

Deno.test("kubernetes: kubectl kustomize builds the three objects", async () => {
  const kustom = parseAllDocuments(Deno.readTextFileSync(`${KUBE}/kustomization.yaml`))[0].toJS();
  const files = [...Deno.readDirSync(KUBE)].map((e) => e.name).filter((n) => n !== "kustomization.yaml")
    .sort();
  assert.deepEqual([...kustom.resources].sort(), files, "the kustomization lists every manifest");
  if (!have("kubectl")) {
    console.log("kubectl kustomize: skipped, kubectl is not installed");
    return;
  }
  const r = await run(["kubectl", "kustomize", KUBE]);
  assert.equal(r.code, 0, r.stderr);
  const kinds = parseAllDocuments(r.stdout).map((d) => d.toJS().kind).sort();
  assert.deepEqual(kinds, ["ConfigMap", "DaemonSet", "Namespace"]);
});
