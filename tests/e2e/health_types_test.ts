/**
 * End-to-end tests of the check types besides tcp, and of a dual-stack
 * target, against real servers in the lab's target namespaces
 * (docs/health.md). Three DSR targets with VIPs of both families, so every
 * check runs once per family, to the VIP with the target's fwmark:
 *
 * - dual stack, behind `nfqlb run` (tcp): t2 refuses only its IPv6 checks;
 *   it leaves the table (healthy only when every family passes; the log
 *   names the IPv6 probe) and comes back when they pass again;
 * - `nfqlb health -f` (each check once, exit 0/1, the table) while run
 *   serves: http (status and body substring: the body names the target, so
 *   a pass proves the check reached it), udp (a reply; a closed port fails),
 *   icmp (echo; a target dropping the lb's echo requests fails), exec (its
 *   environment names the target; written to a file and compared).
 *
 * Counts and texts, not timing. Needs root.
 */
import assert from "node:assert/strict";
import { targetAddr, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import { HostUnderTest } from "../harness/host.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { ROOT } from "../harness/paths.ts";
import { waitUntil } from "../harness/process.ts";
import { RunAgent } from "../harness/run_agent.ts";
import { exists } from "../helpers/fs.ts";

const ignore = skipUnlessRoot();
const HTTP_PORT = 8080;
const INTERVAL = 500, TIMEOUT = 300, RISE = 2, FALL = 2;
/** The pinned bound (fall × interval + timeout + 0.5 s), twice over for a loaded host. */
const WAIT = 2 * (Math.max(FALL, RISE) * INTERVAL + TIMEOUT + 500);

/** A config of service web on both VIPs, targets 101..103, each with the health given (or the service's). */
function config(service: string, targets: (string | null)[]): string {
  return [
    "version: 1",
    "name: hct",
    "services:",
    "  - name: web",
    `    vips: [${VIP[4]}, "${VIP[6]}"]`,
    `    health: ${service}`,
    "    targets:",
    ...targets.map((h, k) => {
      const i = k + 1;
      return `      - { fwmark: ${100 + i}, address: [${targetAddr(4, i)}, "${targetAddr(6, i)}"]${
        h ? `, health: ${h}` : ""
      } }`;
    }),
    "",
  ].join("\n");
}

/** `nfqlb health -f` of `text`: its exit code and its rows by fwmark (the whole line). */
async function healthOnce(host: HostUnderTest, file: string, text: string) {
  Deno.writeTextFileSync(file, text);
  const r = await host.nfqlb(["health", "-f", file]);
  const rows = new Map<number, string>();
  for (const l of r.stdout.split("\n")) {
    const m = /^web +(\d+) /.exec(l);
    if (m) rows.set(Number(m[1]), l);
  }
  return { code: r.code, rows, out: r.stdout + r.stderr };
}

Deno.test({
  name:
    "e2e health: dual stack behind run (healthy only when both families pass); http, udp, icmp, exec once",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using host = await HostUnderTest.create({ name: "hct" });
    const topo = host.topo;
    // an HTTP server on both VIPs of every target
    for (let i = 1; i <= 3; i++) {
      const ready = `${topo.workDir}/http-ready.t${i}`;
      topo.spawn(topo.ns.targets[i - 1], `http t${i}`, [
        Deno.execPath(),
        ..."run -A --quiet --no-prompt --no-config".split(" "),
        `${ROOT}/tests/helpers/http_server.ts`,
        `t${i}`,
        String(HTTP_PORT),
        ready,
        "300",
        VIP[4],
        VIP[6],
      ]);
      assert.ok(await waitUntil(() => exists(ready), 30_000, 50), `http server t${i} not ready`);
    }

    host.write(config(
      `{ type: tcp, port: ${TCP_PORT}, intervalMs: ${INTERVAL}, timeoutMs: ${TIMEOUT}, rise: ${RISE}, fall: ${FALL} }`,
      [null, null, null],
    ));
    await using agent = RunAgent.start(host);
    assert.ok(await agent.waitLine(/ ready: /, 60_000), agent.lines().join("\n"));
    assert.ok(
      agent.lines().some((l) => /health: first round done: 3 up, 0 down/.test(l)),
      agent.lines().join("\n"),
    );
    const rows = async () => [...(await host.rows("web")).keys()].sort();
    assert.deepEqual(await rows(), [101, 102, 103]);

    // dual stack: t2 refuses its IPv6 checks only (from the lb's IPv6 address on its link)
    const rule = [
      ..."-p tcp --syn -s fd13:2::254 --dport".split(" "),
      String(TCP_PORT),
      ..."-j REJECT --reject-with tcp-reset".split(" "),
    ];
    const from = agent.lines().length;
    await topo.exec(topo.ns.targets[1], ["ip6tables", "-w", "-A", "INPUT", ...rule]);
    const down = await agent.waitLine(/target web\/102 down/, WAIT, from);
    assert.ok(down, agent.lines().slice(from).join("\n"));
    // the failing family is named; the passing one is not an error
    assert.match(down!, /failed checks: tcp \[fd13:100::1\]:5003 mark 102: connect: ECONNREFUSED; removed/);
    assert.doesNotMatch(down!, /10\.213\.100\.1/);
    assert.ok(await waitUntil(async () => !(await rows()).includes(102), WAIT, 50), "102 still in the table");
    const a = await healthOnce(host, `${topo.workDir}/tcp.yaml`, Deno.readTextFileSync(host.file));
    assert.equal(a.code, 1, a.out);
    assert.match(
      a.rows.get(101) ?? "",
      /^web +101 +tcp +10\.213\.100\.1:5003 mark 101, \[fd13:100::1\]:5003 mark 101 +up /,
    );
    assert.match(a.rows.get(102) ?? "", / down .*\[fd13:100::1\]:5003 mark 102: connect: ECONNREFUSED$/);
    await topo.exec(topo.ns.targets[1], ["ip6tables", "-w", "-D", "INPUT", ...rule]);
    assert.ok(
      await waitUntil(async () => (await rows()).includes(102), WAIT, 50),
      agent.lines().slice(from).join("\n"),
    );
    console.log(`health figure: dual stack: ${down}`);

    // http: status and body substring; the body names the target that answered
    const http = (path: string, body?: string) =>
      `{ type: http, port: ${HTTP_PORT}, path: ${path}${body ? `, body: "${body}"` : ""} }`;
    const h = await healthOnce(
      host,
      `${topo.workDir}/http.yaml`,
      config("{ type: tcp }", [
        http("/healthz", "all good from t1"),
        http("/healthz", "all good from t1"),
        http("/sick"),
      ]),
    );
    assert.equal(h.code, 1, h.out);
    assert.match(h.rows.get(101) ?? "", /^web +101 +http +10\.213\.100\.1:8080 mark 101, .* up /);
    assert.match(h.rows.get(102) ?? "", / down .*http: status 200 but the body has no "all good from t1"/);
    assert.match(h.rows.get(103) ?? "", / down .*http: status 503, expected 200/);

    // udp (the targets echo on UDP_PORT; nothing listens on 5999) and icmp
    const u = await healthOnce(
      host,
      `${topo.workDir}/udp.yaml`,
      config("{ type: udp, timeoutMs: 300 }", [
        `{ type: udp, port: ${UDP_PORT} }`,
        "{ type: udp, port: 5999 }",
        "{ type: icmp }",
      ]),
    );
    assert.equal(u.code, 1, u.out);
    assert.match(u.rows.get(101) ?? "", /^web +101 +udp .* up /);
    assert.match(u.rows.get(102) ?? "", / down .*udp \[?10\.213\.100\.1\]?:5999 mark 102: udp: /);
    assert.match(
      u.rows.get(103) ?? "",
      /^web +103 +icmp +10\.213\.100\.1 mark 103, fd13:100::1 mark 103 +up /,
    );

    // exec: the environment names the target (per family); icmp fails when the echo requests are dropped
    const envDir = Deno.makeTempDirSync({ dir: topo.workDir, prefix: "env-" });
    const envCmd =
      `[sh, -c, 'env | grep -E "^NFQLB_(CHECK|TARGET|SERVICE)" | sort > ${envDir}/$NFQLB_TARGET_FWMARK-$NFQLB_CHECK_FAMILY']`;
    await topo.exec(topo.ns.targets[2], [
      ..."iptables -w -A INPUT -p icmp --icmp-type echo-request -s 10.213.3.254 -j DROP".split(" "),
    ]);
    await topo.exec(topo.ns.targets[2], [
      ..."ip6tables -w -A INPUT -p ipv6-icmp --icmpv6-type echo-request -s fd13:3::254 -j DROP".split(" "),
    ]);
    const e = await healthOnce(
      host,
      `${topo.workDir}/exec.yaml`,
      config("{ type: icmp, timeoutMs: 300 }", [
        `{ type: exec, command: ${envCmd} }`,
        "{ type: exec, command: [sh, -c, 'echo not me >&2; test $NFQLB_TARGET_FWMARK = 101'] }",
        null,
      ]),
    );
    assert.equal(e.code, 1, e.out);
    assert.match(e.rows.get(101) ?? "", /^web +101 +exec .* up /);
    assert.match(e.rows.get(102) ?? "", / down .*exec: exit 1: not me/);
    assert.match(e.rows.get(103) ?? "", / down .*icmp: no echo reply: timeout/);
    const env = (fam: 4 | 6) => Deno.readTextFileSync(`${envDir}/101-${fam}`).trim().split("\n");
    assert.deepEqual(env(4), [
      `NFQLB_CHECK_ADDRESS=${VIP[4]}`,
      "NFQLB_CHECK_FAMILY=4",
      "NFQLB_CHECK_MARK=101",
      "NFQLB_CHECK_PORT=",
      "NFQLB_SERVICE=web",
      `NFQLB_TARGET_ADDRESSES=${targetAddr(4, 1)} ${targetAddr(6, 1)}`,
      "NFQLB_TARGET_FWMARK=101",
      "NFQLB_TARGET_MODE=dsr",
    ]);
    assert.ok(env(6).includes(`NFQLB_CHECK_ADDRESS=${VIP[6]}`), env(6).join("\n"));

    // all up: exit 0
    const ok = await healthOnce(
      host,
      `${topo.workDir}/ok.yaml`,
      config(`{ type: http, port: ${HTTP_PORT}, path: /healthz, body: "all good" }`, [null, null, null]),
    );
    assert.equal(ok.code, 0, ok.out);
    assert.equal([...ok.rows.values()].filter((l) => / up /.test(l)).length, 3, ok.out);
  },
});
