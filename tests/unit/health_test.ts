/**
 * Health checks of `nfqlb run` (host/health, docs/health.md) without a
 * network namespace: the config keys (merge, defaults, errors), rise/fall
 * hysteresis, the panic guard and what a service's table becomes, the
 * scheduler's spread and pace, and each checker against real local servers
 * on 127.0.0.1 (tcp, http, udp; icmp and SO_MARK need root and are skipped
 * without it; exec). Every wait is bounded.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { parseHostConfig } from "../../host/config/load.ts";
import type { HostConfig } from "../../host/config/types.ts";
import { checkTargets, runCheck } from "../../host/health/check.ts";
import { HealthMonitor } from "../../host/health/monitor.ts";
import { Scheduler } from "../../host/health/scheduler.ts";
import { Poller } from "../../host/health/sock.ts";
import { closeIdleSockets } from "../../host/health/tcp.ts";
import { serviceView, TargetHealth } from "../../host/health/state.ts";
import type { CheckTarget } from "../../host/health/types.ts";
import { isRoot } from "../harness/netns.ts";
import { waitUntil } from "../harness/process.ts";

function cfg(health: string, targetHealth = "", ports = "ports: [{ protocol: tcp, port: 80 }]"): HostConfig {
  return parseHostConfig(
    [
      "version: 1",
      "services:",
      "  - name: web",
      "    vips: [10.0.0.1, fd00::1]",
      `    ${ports}`,
      ...(health ? [`    health: ${health}`] : []),
      "    targets:",
      "      - { fwmark: 101, address: [192.168.1.1, fd01::1] }",
      `      - { fwmark: 102, address: [192.168.1.2, fd01::2], mode: nat, port: 8080${
        targetHealth ? `, health: ${targetHealth}` : ""
      } }`,
      "      - { fwmark: 103, address: [192.168.1.3, fd01::3], weight: 0 }",
      "      - { fwmark: 104, address: [192.168.1.4, fd01::4], active: false }",
      "",
    ].join("\n"),
    "h.yaml",
  );
}

function bad(health: string, targetHealth = "", ports?: string): string {
  try {
    cfg(health, targetHealth, ports);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("no error");
}

Deno.test("health config: defaults, the service's port, NAT's own port, a target's keys over the service's", () => {
  const c = cfg("{ type: tcp }", "{ type: http, path: /healthz, expect: [200, 204] }");
  const [a, b] = c.services[0].targets;
  assert.deepEqual(a.health, {
    type: "tcp",
    port: 80,
    intervalMs: 1000,
    timeoutMs: 500,
    rise: 2,
    fall: 3,
    onFail: "remove",
    path: "/",
    expect: [200],
    body: null,
    payload: "nfqlb-health\n",
    command: [],
  });
  assert.equal(b.health?.type, "http");
  assert.equal(b.health?.port, 8080, "a NAT target is checked on its own port");
  assert.deepEqual(b.health?.expect, [200, 204]);
  assert.equal(b.health?.path, "/healthz");
  const t = checkTargets(c);
  assert.equal(t.length, 4, "every target with a check, inactive ones included (status shows them)");
  assert.deepEqual(t[0].probes, [
    { family: 4, address: "10.0.0.1", port: 80, mark: 101 },
    { family: 6, address: "fd00::1", port: 80, mark: 101 },
  ], "DSR: the VIP with the fwmark, every family");
  assert.deepEqual(t[1].probes, [
    { family: 4, address: "192.168.1.2", port: 8080, mark: 0 },
    { family: 6, address: "fd01::2", port: 8080, mark: 0 },
  ], "NAT: the target's own address and port, no mark");
  const inherit = cfg("{ type: http, path: /x, intervalMs: 2000 }", "{ type: tcp }").services[0].targets[1];
  assert.equal(inherit.health?.intervalMs, 2000, "common keys are inherited across a type change");
  assert.equal(inherit.health?.path, "/", "http's path is not inherited by a tcp check");
  assert.equal(cfg("").services[0].targets[0].health, null);
  // port absent: the lowest port of the first ports: entry
  const ranged = cfg(
    "{ type: tcp }",
    "",
    'ports: [{ protocol: tcp, port: "8000-8080" }, { protocol: tcp, port: 80 }]',
  );
  assert.equal(ranged.services[0].targets[0].health?.port, 8000);
});

Deno.test("health config: errors name the key and the value", () => {
  assert.match(
    bad("{ type: smtp }"),
    /services\[0\]\.health\.type: expected one of tcp, http, udp, icmp, exec/,
  );
  assert.match(bad("{ type: tcp, rise: 0 }"), /health\.rise: expected an integer 1\.\.100, got 0/);
  assert.match(
    bad("{ type: tcp, timeoutMs: 2000 }"),
    /health\.timeoutMs: expected a timeout ≤ intervalMs \(1000\)/,
  );
  assert.match(bad("{ type: tcp, path: /x }"), /health\.path: expected no path with type tcp/);
  assert.match(
    bad("{ type: tcp }", "", "ports: [{ protocol: tcp }]"),
    /expected a port in the tcp health check/,
  );
  assert.match(
    bad("{ type: tcp }", "", ""),
    /expected a port in the tcp health check/,
    "no ports: a port is required",
  );
  assert.doesNotThrow(() => cfg("{ type: icmp }", "", ""), "icmp needs no port");
  assert.match(bad("{ type: exec }"), /services\[0\]\.health: expected a command with type exec/);
  assert.match(bad("{ port: 80 }"), /expected a health check with a type/);
  assert.match(bad("{ type: tcp, onFail: drop }"), /onFail: expected one of remove, drain/);
  assert.match(bad("{ type: tcp, intervall: 5 }"), /expected one of the keys type, port, intervalMs/);
});

Deno.test("health state: rise/fall hysteresis; one failure in three never takes a target out", () => {
  const h = new TargetHealth(2, 3, 0);
  const seq = (oks: boolean[]) => oks.map((ok, i) => h.record(ok, ok ? null : "x", 1, i));
  // 2 of 3 pass, for 30 rounds: never down
  assert.deepEqual(seq(Array.from({ length: 90 }, (_, i) => i % 3 !== 2)).filter((t) => t), []);
  assert.equal(h.up, true);
  assert.deepEqual(seq([true, false, false, true, false, false, false]), [
    null,
    null,
    null,
    null,
    null,
    null,
    "down",
  ]);
  assert.equal(h.up, false);
  assert.equal(h.lastError, "x");
  assert.deepEqual(seq([true, false, true, true]), [null, null, null, "up"]);
  assert.deepEqual(h.totals, { pass: 65, fail: 36 });
});

Deno.test("health state: remove, drain, the operator's inactive/weight 0 kept, and the panic guard", () => {
  const c = cfg("{ type: tcp }");
  const s = c.services[0];
  const states = new Map([101, 102, 103, 104].map((f) => [f, new TargetHealth(1, 1, 0)]));
  const view = () => serviceView(s, (f) => states.get(f));
  assert.deepEqual(view().wanted, [{ fwmark: 101, weight: 1 }, { fwmark: 102, weight: 1 }, {
    fwmark: 103,
    weight: 0,
  }]);
  states.get(103)!.record(false, "x", 1, 1);
  states.get(104)!.record(false, "x", 1, 1);
  assert.deepEqual(view().wanted.map((w) => [w.fwmark, w.weight]), [[101, 1], [102, 1], [103, 0]]);
  states.get(101)!.record(false, "x", 1, 1);
  let v = view();
  assert.equal(v.panic, false);
  assert.deepEqual(v.wanted.map((w) => w.fwmark), [102, 103]);
  assert.equal(v.effects.get(101), "removed");
  assert.equal(v.effects.get(103), "operator");
  assert.equal(v.effects.get(104), "operator");
  // the last carrying target fails: panic, every target back as the file says
  states.get(102)!.record(false, "x", 1, 2);
  v = view();
  assert.equal(v.panic, true);
  assert.deepEqual(v.wanted.map((w) => [w.fwmark, w.weight]), [[101, 1], [102, 1], [103, 0]]);
  assert.equal(v.effects.get(101), "panic");
  // one passes again: normal removals resume
  states.get(102)!.record(true, null, 1, 3);
  v = view();
  assert.equal(v.panic, false);
  assert.deepEqual(v.wanted.map((w) => w.fwmark), [102, 103]);
  // drain: weight 0 instead of out
  const d = cfg("{ type: tcp, onFail: drain }").services[0];
  const v2 = serviceView(d, (f) => (f === 101 ? states.get(101) : undefined));
  assert.deepEqual(v2.wanted.map((w) => [w.fwmark, w.weight]), [[101, 0], [102, 1], [103, 0]]);
  assert.equal(v2.effects.get(101), "drained");
});

Deno.test("health scheduler: first round at once, then each target once per interval, spread over it", async () => {
  const n = 20, iv = 300;
  const starts = new Map<string, number[]>();
  const t0 = performance.now();
  const sch = new Scheduler<{ key: string; intervalMs: number }>((t, done) => {
    const l = starts.get(t.key) ?? [];
    l.push(performance.now() - t0);
    starts.set(t.key, l);
    setTimeout(done, 5);
  });
  sch.set(Array.from({ length: n }, (_, i) => ({ key: `t${i}`, intervalMs: iv })));
  sch.start();
  await sch.firstRound();
  const first = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 1500));
  sch.stop();
  assert.ok(first < 200, `first round took ${first} ms`);
  const seconds = [...starts.values()].map((l) => l[1]);
  // the second checks spread over the interval: in at least 5 of 6 slices of it
  const slices = new Set(seconds.map((s) => Math.min(5, Math.floor((s / iv) * 6))));
  assert.ok(slices.size >= 5, `second checks at ${seconds.map(Math.round).join(" ")}`);
  for (const [k, l] of starts) {
    // 1.5 s at 300 ms: about 5 checks plus the early second one; generous for a loaded machine
    assert.ok(l.length >= 3 && l.length <= 8, `${k}: ${l.length} checks`);
    for (let i = 2; i < l.length; i++) assert.ok(l[i] - l[i - 1] >= iv - 15, `${k}: ${l.join(" ")}`);
  }
});

/** A target of one probe to 127.0.0.1 with the given check. */
function local(health: string, port: number): CheckTarget {
  const c = parseHostConfig(
    [
      "version: 1",
      "services:",
      "  - name: l",
      "    vips: [10.9.9.9]",
      `    health: ${health}`,
      `    targets: [{ fwmark: 7, address: 127.0.0.1, mode: nat, port: ${port} }]`,
    ].join("\n"),
    "l.yaml",
  );
  return checkTargets(c)[0];
}

Deno.test("health checkers: tcp, http, udp, exec against local servers", async () => {
  const poller = new Poller();
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tport = (tcp.addr as Deno.NetAddr).port;
  const accepting = (async () => {
    try {
      for await (const c of tcp) c.close();
    } catch { /* closed */ }
  })();
  let status = 200;
  const ac = new AbortController();
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    (req) => new Response(new URL(req.url).pathname === "/healthz" ? "all good" : "nope", { status }),
  );
  const hport = http.addr.port;
  const udp = dgram.createSocket("udp4");
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
  const uport = udp.address().port;
  let answer = true;
  udp.on("message", (m, ri) => answer && udp.send(m, ri.port, ri.address));
  try {
    const ok = async (h: string, port: number) => {
      const r = await runCheck(local(h, port), poller);
      assert.equal(r.error, null, h);
      assert.ok(r.ok);
    };
    const fails = async (h: string, port: number, re: RegExp) => {
      const r = await runCheck(local(h, port), poller);
      assert.equal(r.ok, false, h);
      assert.match(r.error ?? "", re);
    };
    await ok("{ type: tcp }", tport);
    // a closed port: the listener of an ended server
    const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const gport = (gone.addr as Deno.NetAddr).port;
    gone.close();
    await fails("{ type: tcp }", gport, /^tcp 127\.0\.0\.1:\d+: connect: ECONNREFUSED$/);
    await ok("{ type: http, path: /healthz, body: good }", hport);
    await fails("{ type: http, path: /other, body: good }", hport, /body has no "good"/);
    status = 503;
    await fails("{ type: http, path: /healthz }", hport, /http: status 503, expected 200/);
    await ok("{ type: http, path: /healthz, expect: [503] }", hport);
    await ok("{ type: udp }", uport);
    answer = false;
    await fails("{ type: udp, timeoutMs: 200 }", uport, /udp: no reply: timeout/);
    await fails("{ type: udp, timeoutMs: 200 }", gport, /ECONNREFUSED/);
    await ok(
      '{ type: exec, command: [sh, -c, "test $NFQLB_CHECK_ADDRESS = 127.0.0.1 && test $NFQLB_TARGET_FWMARK = 7"] }',
      1,
    );
    await fails("{ type: exec, command: [sh, -c, 'echo broken >&2; exit 3'] }", 1, /exec: exit 3: broken/);
    await fails("{ type: exec, timeoutMs: 200, command: [sleep, '5'] }", 1, /exec: timeout \(killed\)/);
    if (isRoot()) await ok("{ type: icmp }", 1);
  } finally {
    poller.close();
    tcp.close();
    await accepting;
    ac.abort();
    await http.finished;
    udp.close();
  }
});

Deno.test("health tcp check: a reused socket answers right after a pass, a refusal, in any mix", async () => {
  const poller = new Poller();
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tport = (tcp.addr as Deno.NetAddr).port;
  const accepting = (async () => {
    try {
      for await (const c of tcp) c.close();
    } catch { /* closed */ }
  })();
  const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const gport = (gone.addr as Deno.NetAddr).port;
  gone.close();
  const up = local("{ type: tcp }", tport), down = local("{ type: tcp }", gport);
  try {
    // one after the other: each check takes the socket the previous one gave back
    for (let i = 0; i < 40; i++) {
      const t = i % 3 === 2 ? down : up;
      const r = await runCheck(t, poller);
      assert.equal(r.ok, t === up, `check ${i}: ${r.error}`);
      if (t === down) assert.match(r.error ?? "", /connect: ECONNREFUSED$/);
    }
    // at once, mixed: no answer leaks into another check
    const batch = Array.from({ length: 30 }, (_, i) => (i % 2 ? down : up));
    const rs = await Promise.all(batch.map((t) => runCheck(t, poller)));
    assert.deepEqual(rs.map((r) => r.ok), batch.map((t) => t === up));
  } finally {
    poller.close();
    closeIdleSockets();
    tcp.close();
    await accepting;
  }
});

Deno.test("health monitor: a reload that adds checks runs them, and /ready stays as the first round left it", async () => {
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (tcp.addr as Deno.NetAddr).port;
  const accepting = (async () => {
    try {
      for await (const c of tcp) c.close();
    } catch { /* closed or reset before accept */ }
  })();
  const shmDir = Deno.makeTempDirSync({ prefix: "nfqlb-hmon-" });
  const oldShm = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", shmDir); // the record file goes there; no target table: applies only warn
  const conf = (targets: number) =>
    parseHostConfig(
      [
        "version: 1",
        "services:",
        "  - name: l",
        "    vips: [10.9.9.9]",
        "    targets:",
        `      - { fwmark: 6, address: 127.0.0.1, mode: nat, port: ${port} }`,
        ...Array.from(
          { length: targets },
          (_, i) =>
            `      - { fwmark: ${
              7 + i
            }, address: 127.0.0.1, mode: nat, port: ${port}, health: { type: tcp, intervalMs: 100, timeoutMs: 100 } }`,
        ),
      ].join("\n"),
      "l.yaml",
    );
  const lines: string[] = [];
  const log = { notice: (m: string) => lines.push(m), warning: (m: string) => lines.push(m), info: () => {} };
  const mon = new HealthMonitor(conf(0), log);
  try {
    assert.equal(mon.active, false);
    await mon.start(); // nothing checked: resolves at once
    assert.ok(mon.ready);
    mon.update(conf(1)); // a reload adds a checked target
    const checks = () =>
      [...mon.metrics().matchAll(/result="pass"\} (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
    await waitUntil(() => checks() >= 3, 5000, 20);
    assert.ok(checks() >= 3, mon.metrics());
    assert.ok(mon.ready);
    mon.update(conf(2)); // and another one: still ready (new targets start up, as configured)
    assert.ok(mon.ready);
  } finally {
    mon.stop();
    tcp.close();
    await accepting;
    if (oldShm === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", oldShm);
    Deno.removeSync(shmDir, { recursive: true });
  }
});
