/**
 * Checks the packaging for real on a machine with no Docker engine and no systemd as PID 1
 * (docs/operations.md, "What was checked"). Run by hand, as root:
 *
 *   deno run -A scripts/check_packaging.ts [--keep-work]
 *
 * 1. debootstraps a Debian bookworm minbase tree, from the apt source this machine is set up with (it stands
 *    in for the Dockerfile's `FROM debian:12.11-slim`);
 * 2. runs the stages of packaging/container/Dockerfile in chroots of copies of it: RUN as written, COPY from
 *    the tracked files of this checkout, ARG/ENV/WORKDIR followed; the metadata instructions are printed;
 * 3. runs the runtime tree as `docker run --network host --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW
 *    --read-only --shm-size 64m` would, in a scratch network namespace, behind tini: ready, the healthcheck
 *    script, UDP datagrams from a client namespace through the lb, SIGTERM → exit 0 with nothing left;
 * 4. adds Debian's systemd to a copy of that tree, boots it with systemd-nspawn in the same namespace and
 *    drives packaging/systemd/nfqlb@.service: start (READY=1), the sandbox in effect, datagrams through the
 *    lb under its seccomp filter, reload, stop (clean), then keep.conf: restart adopts the same lb, stop
 *    leaves it, teardown removes it.
 *
 * Prints one line per check and ends with `check_packaging: N passed, M failed`. Needs root, `debootstrap`
 * and `systemd-container` (apt), and the network to reach Debian's archive and the npm registry; takes one
 * to two minutes. Traffic goes only from its own client namespace to its own load-balancer namespace.
 * Everything is in one temporary directory and two network namespaces, all removed at the end (unless
 * --keep-work), and every process it starts is stopped by its pid.
 *
 * @module
 */
import { parseDockerfile } from "../tests/helpers/packaging.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const keepWork = Deno.args.includes("--keep-work");
const results: { ok: boolean; what: string; why?: string }[] = [];
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;

function say(line: string): void {
  console.log(`[${elapsed()}] ${line}`);
}

/** Records a check. */
function check(what: string, ok: boolean, why = ""): boolean {
  results.push({ ok, what, why });
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${ok || !why ? "" : `: ${why}`}`);
  return ok;
}

/** Runs a bash command line, bounded; throws on failure unless `allowFail`. */
async function sh(
  cmd: string,
  o: { timeoutMs?: number; allowFail?: boolean; quiet?: boolean } = {},
): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("bash", {
    args: ["-c", cmd],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(o.timeoutMs ?? 120_000),
  }).output();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (!r.success && !o.allowFail) {
    throw new Error(`failed (${r.code}): ${cmd}\n${out.split("\n").slice(-15).join("\n")}`);
  }
  return { code: r.code, out };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every `everyMs` until it is true or `timeoutMs` has passed. */
async function until(
  fn: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 200,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < end; i++) {
    if (await fn()) return true;
    await sleep(everyMs);
  }
  return false;
}

/** The first Debian archive of this machine's apt sources (deb822 or one-line format). */
function aptMirror(): string {
  for (const f of ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]) {
    try {
      const text = Deno.readTextFileSync(f);
      const m = /^URIs:\s*(\S+)/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+/m.exec(text);
      if (m) return m[1];
    } catch { /* next */ }
  }
  throw new Error("no Debian archive in this machine's apt sources");
}

/** Environment every chroot command gets; this machine's CA bundle too (a TLS-intercepting proxy). */
function chrootEnv(): Record<string, string> {
  return {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/root",
    NODE_EXTRA_CA_CERTS: "/etc/host-ca.crt",
    DENO_CERT: "/etc/host-ca.crt",
  };
}

/** A shell line that runs `script` (sh) in chroot `dir` with /proc and /dev, in a mount namespace of its own. */
function inChroot(dir: string, env: Record<string, string>, script: string): string {
  Deno.writeTextFileSync(`${dir}/.step.sh`, script);
  const vars = Object.entries(env).map(([k, v]) => `${k}='${v.replaceAll("'", "'\\''")}'`).join(" ");
  return `unshare -m -- sh -c 'mount -t proc proc ${dir}/proc && mount --rbind /dev ${dir}/dev && ` +
    `exec chroot ${dir} env -i ${vars.replaceAll("'", "'\\''")} /bin/sh -e /.step.sh'`;
}

/** Runs the Dockerfile's stages; returns the directory of the last stage. */
async function buildImage(base: string, ctx: string, out: string): Promise<string> {
  const stages: Record<string, string> = {};
  let dir = "", env: Record<string, string> = {}, wd = "/", n = 0;
  for (const ins of parseDockerfile(Deno.readTextFileSync(`${ROOT}/packaging/container/Dockerfile`))) {
    say(`${ins.cmd} ${ins.text.slice(0, 90)}`);
    if (ins.cmd === "FROM") {
      dir = `${out}/stage${n++}`;
      await sh(`cp -a ${base} ${dir} && cp /etc/resolv.conf ${dir}/etc/resolv.conf`);
      await sh(`cp /etc/ssl/certs/ca-certificates.crt ${dir}/etc/host-ca.crt`, { allowFail: true });
      const name = /\s+AS\s+(\S+)$/i.exec(ins.text)?.[1];
      if (name) stages[name] = dir;
      env = chrootEnv();
      wd = "/";
    } else if (ins.cmd === "ARG" || ins.cmd === "ENV") {
      const eq = ins.text.indexOf("=");
      env[ins.text.slice(0, eq)] = ins.text.slice(eq + 1);
    } else if (ins.cmd === "WORKDIR") {
      wd = ins.text;
      await sh(`mkdir -p ${dir}${wd}`);
    } else if (ins.cmd === "COPY") {
      const words = ins.json ?? ins.text.split(/\s+/);
      const dst = words.at(-1)!;
      const from = ins.flags.from ? stages[ins.flags.from] : ctx;
      const target = dst.startsWith("/") ? `${dir}${dst}` : `${dir}${wd}/${dst}`;
      for (const src of words.slice(0, -1)) {
        const path = `${from}/${src.replace(/^\//, "")}`;
        if (src.endsWith("/")) await sh(`mkdir -p ${target} && cp -a ${path}. ${target}`);
        else if (dst.endsWith("/")) await sh(`mkdir -p ${target} && cp -a ${path} ${target}`);
        else await sh(`mkdir -p $(dirname ${target}) && cp -a ${path} ${target}`);
      }
    } else if (ins.cmd === "RUN") {
      await sh(inChroot(dir, env, `cd ${wd}\n${ins.text}\n`), { timeoutMs: 900_000 });
    }
  }
  return dir;
}

const CONFIG = (name: string) =>
  [
    "version: 1",
    `name: ${name}`,
    "services:",
    "  - name: web",
    "    vips: [10.213.100.1]",
    "    targets:",
    "      - { fwmark: 101, address: 10.213.1.1 }",
    "      - { fwmark: 102, address: 10.213.2.1 }",
    "",
  ].join("\n");

/**
 * Sends `n` UDP datagrams to the VIP from the client namespace and returns how many more the lb received
 * (its queue counter in /metrics). They go on to a target address nobody has: only the lb's count matters.
 */
async function throughLb(ns: string, n: number): Promise<number> {
  const received = async () => {
    const m = await sh(
      `ip netns exec ${ns} bash -c 'exec 3<>/dev/tcp/127.0.0.1/9110; printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3'`,
      { allowFail: true, timeoutMs: 10_000 },
    );
    return Number(/nfqlb_queue_received_packets_total\{queue="2"\} (\d+)/.exec(m.out)?.[1] ?? NaN);
  };
  const before = await received();
  await sh(
    `ip netns exec ${ns}-c bash -c 'for p in $(seq 1 ${n}); do echo x > /dev/udp/10.213.100.1/$((5000 + p)); done'`,
    { allowFail: true },
  );
  let got = 0;
  await until(async () => (got = (await received()) - (Number.isNaN(before) ? 0 : before)) >= n, 5_000);
  return got;
}

async function ours(ns: string): Promise<number> {
  const ipt = (await sh(`ip netns exec ${ns} iptables-save`, { allowFail: true })).out;
  const rules = (await sh(`ip -n ${ns} rule`, { allowFail: true })).out;
  return ipt.split("\n").filter((l) => l.includes("nfqlb:")).length +
    rules.split("\n").filter((l) => l.includes("fwmark")).length;
}

/** Host pids whose command line contains `text`. */
function pidsWith(text: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${e.name}/cmdline`).replaceAll("\0", " ").includes(text)) {
        out.push(Number(e.name));
      }
    } catch { /* gone */ }
  }
  return out;
}

/** A field of /proc/PID/status ("" when the process is gone). */
function field(pid: number, name: string): string {
  let text = "";
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return "";
  }
  const l = text.split("\n").find((x) => x.startsWith(`${name}:`));
  return l ? l.slice(name.length + 1).trim() : "";
}

/** Runs the runtime tree as `docker run` would; checks it. */
async function runContainer(img: string, ns: string): Promise<void> {
  Deno.mkdirSync(`${img}/etc/nfqlb`, { recursive: true });
  Deno.writeTextFileSync(`${img}/etc/nfqlb/config.yaml`, CONFIG("ctr"));
  const script = [
    "set -e",
    `R=${img}`,
    "mount --bind $R $R",
    "mount -t proc proc $R/proc",
    "mount --rbind /dev $R/dev",
    "mount -t tmpfs -o size=64m shm $R/dev/shm",
    "mount --rbind /sys $R/sys",
    "mount -t tmpfs -o size=16m tmp $R/tmp",
    "mount -o remount,bind,ro $R",
    "exec chroot $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root " +
    "setpriv --no-new-privs --bounding-set=-all,+net_admin,+net_raw --inh-caps=-all -- " +
    "/usr/bin/tini -s -- /usr/local/bin/nfqlb run -f /etc/nfqlb/config.yaml",
  ].join("\n");
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, "unshare", "-m", "--", "sh", "-c", script],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const reader = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) log += dec.decode(chunk);
  })();
  try {
    const ready = await until(() => log.includes(" ready: serving "), 60_000);
    check(
      "image: nfqlb run applies and gets ready (read-only root, NET_ADMIN NET_RAW, 64 MB /dev/shm)",
      ready,
      log,
    );
    const hc = await sh(
      `ip netns exec ${ns} chroot ${img} /usr/local/lib/nfqlb/packaging/container/healthcheck.sh`,
      {
        allowFail: true,
      },
    );
    check("image: HEALTHCHECK (/healthz) answers 0", hc.code === 0, hc.out);
    const rd = await sh(
      `ip netns exec ${ns} chroot ${img} /usr/local/lib/nfqlb/packaging/container/healthcheck.sh 127.0.0.1 9110 /ready`,
      { allowFail: true },
    );
    check("image: /ready is 200", rd.code === 0, rd.out);
    const n = await throughLb(ns, 50);
    check("image: 50 datagrams to the VIP went through the lb", n === 50, `${n} received`);
    const run = pidsWith("run -f /etc/nfqlb/config.yaml").find((p) => field(p, "Name") === "deno");
    check(
      "image: run has only NET_ADMIN and NET_RAW",
      run !== undefined && field(run, "CapBnd") === "0000000000003000",
    );
    child.kill("SIGTERM"); // the spawned pid is tini's: ip netns exec, unshare, sh, chroot, env and setpriv exec
    const st = await Promise.race([child.status, sleep(30_000).then(() => undefined)]);
    check(
      "image: SIGTERM to tini → exit 0",
      st?.code === 0,
      `status ${JSON.stringify(st)}\n${log.slice(-2000)}`,
    );
    check("image: nothing of the config left in the namespace", (await ours(ns)) === 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await reader;
  }
}

/** Boots systemd in a copy of the runtime tree and drives the unit. */
async function runSystemd(img: string, work: string, ns: string): Promise<void> {
  const R = `${work}/systemd`;
  await sh(`cp -a ${img} ${R}`);
  await sh(
    inChroot(
      R,
      { ...chrootEnv(), DEBIAN_FRONTEND: "noninteractive" },
      [
        "apt-get update -qq",
        // procps: /bin/kill of ExecReload=, which the slim image does not have
        "apt-get install -y -qq --no-install-recommends systemd systemd-sysv procps >/dev/null",
        "rm -rf /var/lib/apt/lists/*",
      ].join("\n"),
    ),
    { timeoutMs: 600_000 },
  );
  await sh(`cp ${ROOT}/packaging/systemd/nfqlb@.service ${R}/etc/systemd/system/`);
  Deno.writeTextFileSync(`${R}/etc/nfqlb/check.yaml`, CONFIG("check"));
  const nspawn = new Deno.Command("systemd-nspawn", {
    args: [
      "-D",
      R,
      "-b",
      "--register=no",
      "--keep-unit",
      "--capability=CAP_NET_ADMIN",
      `--network-namespace-path=/run/netns/${ns}`,
      "--console=passive",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let leader = 0;
    await until(() => {
      leader = pidsWith("").find((p) => field(p, "PPid") === String(nspawn.pid)) ?? 0;
      return leader !== 0;
    }, 30_000);
    const S = (cmd: string, allowFail = true) =>
      sh(`nsenter -t ${leader} -a -- ${cmd}`, { allowFail, timeoutMs: 60_000 });
    const booted = await until(
      async () => /running|degraded/.test((await S("systemctl is-system-running")).out),
      60_000,
    );
    if (!check("systemd: boots in systemd-nspawn", booted)) return;
    const status = async () => (await S("systemctl show -p StatusText --value nfqlb@check")).out.trim();
    const start = await S("systemctl start nfqlb@check");
    check(
      "systemd: systemctl start returns after READY=1",
      start.code === 0 && (await status()).startsWith("serving"),
      start.out,
    );
    const main = pidsWith("run -f /etc/nfqlb/check.yaml").find((p) => field(p, "Name") === "deno");
    check(
      "systemd: run has CapBnd 0x3000 and NoNewPrivs, / read-only",
      main !== undefined && field(main, "CapBnd") === "0000000000003000" &&
        field(main, "NoNewPrivs") === "1" &&
        Deno.readTextFileSync(`/proc/${main}/mountinfo`).split("\n").some((l) =>
          l.split(" ")[4] === "/" && l.split(" ")[5].split(",").includes("ro")
        ),
    );
    const sent = await throughLb(ns, 50);
    check(
      "systemd: 50 datagrams to the VIP went through the lb (seccomp filter on)",
      sent === 50,
      `${sent} received`,
    );
    const journal = async () => (await S("journalctl -u nfqlb@check --no-pager -o cat")).out;
    const rl = await S("systemctl reload nfqlb@check");
    check(
      "systemd: systemctl reload → SIGHUP → reloaded",
      rl.code === 0 &&
        await until(async () => /reloaded \/etc\/nfqlb\/check\.yaml/.test(await journal()), 10_000),
    );
    const stop = await S("systemctl stop nfqlb@check");
    const show = (await S("systemctl show -p Result -p ExecMainStatus nfqlb@check")).out;
    check(
      "systemd: stop → Result=success, exit 0",
      stop.code === 0 && /Result=success/.test(show) && /ExecMainStatus=0/.test(show),
      show,
    );
    check("systemd: stop left nothing of the config", (await ours(ns)) === 0);

    await sh(
      `mkdir -p ${R}/etc/systemd/system/nfqlb@.service.d && cp ${ROOT}/packaging/systemd/keep.conf ${R}/etc/systemd/system/nfqlb@.service.d/`,
    );
    await S("systemctl daemon-reload");
    await S("systemctl start nfqlb@check");
    const before = /lb pid (\d+)/.exec(await status())?.[1];
    await S("systemctl restart nfqlb@check");
    const after = /lb pid (\d+)/.exec(await status())?.[1];
    check(
      "systemd + keep.conf: restart adopts the same lb",
      before !== undefined && before === after,
      `${before} → ${after}`,
    );
    await S("systemctl stop nfqlb@check");
    check("systemd + keep.conf: stop leaves the host serving", (await ours(ns)) > 0);
    const td = await S("nfqlb teardown -f /etc/nfqlb/check.yaml");
    check("systemd + keep.conf: nfqlb teardown removes it", td.code === 0 && (await ours(ns)) === 0, td.out);
    await S("systemctl poweroff");
    await Promise.race([nspawn.status, sleep(30_000)]);
  } finally {
    try {
      nspawn.kill("SIGKILL");
    } catch { /* gone */ }
    await nspawn.status;
  }
}

async function main(): Promise<number> {
  if (Deno.uid() !== 0) {
    console.error("check_packaging: needs root (chroot, network namespaces, systemd-nspawn)");
    return 1;
  }
  for (const tool of ["debootstrap", "systemd-nspawn", "setpriv", "git"]) {
    if ((await sh(`command -v ${tool}`, { allowFail: true })).code !== 0) {
      console.error(`check_packaging: ${tool} is missing (apt-get install debootstrap systemd-container)`);
      return 1;
    }
  }
  const work = Deno.makeTempDirSync({ prefix: "nfqlb-pkgchk-" });
  const ns = `nfqlb-pkgchk-${Deno.pid}`;
  try {
    say(`work directory ${work}`);
    say("debootstrap bookworm (minbase)");
    await sh(`debootstrap --variant=minbase bookworm ${work}/base ${aptMirror()}`, { timeoutMs: 900_000 });
    await sh(
      `mkdir ${work}/ctx && git -C ${ROOT} ls-files -z | (cd ${ROOT} && tar --null -T - -c) | tar -x -C ${work}/ctx`,
    );
    let img = "";
    try {
      img = await buildImage(`${work}/base`, `${work}/ctx`, work);
      check("image: both stages build", true);
    } catch (e) {
      check("image: both stages build", false, String(e));
      return 1;
    }
    const v = await sh(`chroot ${img} /usr/local/bin/nfqlb version`, { allowFail: true });
    check("image: nfqlb version in the runtime tree", v.out.trim() === "1.2.0", v.out);
    // the load balancer's namespace, and a client's that sends its datagrams to the VIP through it
    await sh(`ip netns add ${ns} && ip -n ${ns} link set lo up && ip netns add ${ns}-c`);
    await sh(`ip -n ${ns} link add v0 type veth peer name v1 netns ${ns}-c && ip -n ${ns} link set v0 up`);
    await sh(
      `ip -n ${ns} addr add 10.213.1.254/16 dev v0 && ip netns exec ${ns} sysctl -qw net.ipv4.ip_forward=1`,
    );
    await sh(`ip -n ${ns}-c link set v1 up && ip -n ${ns}-c addr add 10.213.9.9/16 dev v1`);
    await sh(`ip -n ${ns}-c route add 10.213.100.1/32 via 10.213.1.254`);
    await runContainer(img, ns);
    await runSystemd(img, work, ns);
  } finally {
    await sh(`ip netns del ${ns}; ip netns del ${ns}-c`, { allowFail: true });
    const mounted = Deno.readTextFileSync("/proc/self/mountinfo").includes(work);
    if (keepWork || mounted) say(`left ${work}${mounted ? " (something is still mounted under it)" : ""}`);
    else Deno.removeSync(work, { recursive: true });
  }
  return 0;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  check("check_packaging ran to the end", false, e instanceof Error ? e.message : String(e));
}
const failed = results.filter((r) => !r.ok).length;
console.log(`check_packaging: ${results.length - failed} passed, ${failed} failed (${elapsed()})`);
Deno.exit(failed > 0 || code !== 0 ? 1 : 0);
