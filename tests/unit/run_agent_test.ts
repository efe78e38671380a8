/**
 * The parts of `nfqlb run` (host/run/) that need no root: the restart
 * back-off, the log lines, the notify datagrams (to a real unix socket), the
 * file watch (in-place write, rename over, ConfigMap symlink swap, in a
 * scratch directory), the dataplane log tail, the agent's metrics (checked by
 * a strict parser and by promtool when installed), the admin server, and the
 * run command's option errors. The whole agent on a real host is
 * tests/e2e/run_test.ts.
 */
import assert from "node:assert/strict";
import { AgentLog, stderrIsJournal } from "../../host/run/agent_log.ts";
import { backoffMs, MAX_BACKOFF_MS } from "../../host/run/supervisor.ts";
import { monotonicUsec, notifyAddress, SdNotify } from "../../host/run/sd_notify.ts";
import { ConfigWatcher, digestOf, readConfig } from "../../host/run/reload.ts";
import { LogTail } from "../../host/run/log_tail.ts";
import { metricsUrl, renderAgentMetrics } from "../../host/run/metrics.ts";
import { startAdmin } from "../../host/run/admin_server.ts";
import { NotifySocket } from "../harness/notify_socket.ts";
import { waitUntil } from "../harness/process.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { parseExposition, promtool, sampleValue } from "../helpers/prom_text.ts";

Deno.test("run: restarts back off 0, 250 ms, 500 ms, 1 s ... and stop growing at 10 s", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(backoffMs), [0, 250, 500, 1000, 2000, 4000]);
  assert.equal(backoffMs(0), 0);
  assert.equal(backoffMs(8), MAX_BACKOFF_MS);
  assert.equal(backoffMs(1000), MAX_BACKOFF_MS);
});

Deno.test("run: log lines: text with time, level and fields; json; journald priorities; one line always", () => {
  const now = () => new Date("2026-05-01T10:00:00.123Z");
  const lines: string[] = [];
  const text = new AgentLog({ format: "text", journal: false, write: (l) => lines.push(l), now });
  text.notice("ready: serving h.yaml", { pid: 42, digest: "sha256:ab" });
  text.error("refused: h.yaml:3: x\nsecond line", { why: "two words" });
  assert.deepEqual(lines, [
    "2026-05-01T10:00:00.123Z notice  ready: serving h.yaml pid=42 digest=sha256:ab",
    '2026-05-01T10:00:00.123Z error   refused: h.yaml:3: x | second line why="two words"',
  ]);
  const json = new AgentLog({ format: "json", journal: false, now });
  assert.deepEqual(JSON.parse(json.format("info", "+ init --shm=web", { ms: 3 })), {
    time: "2026-05-01T10:00:00.123Z",
    level: "info",
    msg: "+ init --shm=web",
    ms: 3,
  });
  const journal = new AgentLog({ format: "text", journal: true, now });
  assert.equal(journal.format("error", "x"), "<3>2026-05-01T10:00:00.123Z error   x");
  assert.equal(journal.format("warning", "x").slice(0, 3), "<4>");
  assert.equal(journal.format("info", "x").slice(0, 3), "<6>");
  assert.ok(
    new AgentLog({ format: "json", journal: true, now }).format("notice", "x").startsWith('<5>{"time"'),
  );
  // JOURNAL_STREAM counts only when it is stderr's device:inode
  assert.equal(stderrIsJournal(undefined), false);
  assert.equal(stderrIsJournal("garbage"), false);
  assert.equal(stderrIsJournal("1:1"), false);
  const st = Deno.statSync("/proc/self/fd/2");
  assert.equal(stderrIsJournal(`${st.dev}:${st.ino}`), true);
});

Deno.test("run: sd_notify sends each message as one datagram to NOTIFY_SOCKET (path or @abstract)", async () => {
  assert.equal(notifyAddress("relative/path"), undefined);
  assert.equal(notifyAddress("/" + "x".repeat(107)), undefined);
  const p = notifyAddress("/run/systemd/notify")!;
  assert.equal(p.len, 2 + "/run/systemd/notify".length + 1);
  const a = notifyAddress("@sd")!;
  assert.deepEqual([...a.addr.subarray(2, 5)], [0, 0x73, 0x64]);
  assert.equal(a.len, 2 + 1 + 2);
  assert.equal(SdNotify.fromEnv(undefined), undefined);
  assert.equal(SdNotify.fromEnv(""), undefined);
  assert.throws(() => SdNotify.fromEnv("not-a-path"), /NOTIFY_SOCKET=not-a-path: expected an absolute path/);
  assert.ok(monotonicUsec() > 0n);

  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-notify-" });
  const sock = NotifySocket.bind(`${dir}/notify.sock`);
  try {
    const sd = SdNotify.fromEnv(sock.path)!;
    assert.ok(sd.send("READY=1\nSTATUS=serving h.yaml"));
    assert.ok(sd.send("RELOADING=1\nMONOTONIC_USEC=1"));
    assert.equal(sd.startWatchdog({ usec: "40000", pid: String(Deno.pid) }), 20);
    assert.ok(await sock.waitFor((m) => m === "WATCHDOG=1", 2000));
    // a second tick arrives too (the timer runs)
    const before = sock.messages.filter((m) => m === "WATCHDOG=1").length;
    assert.ok(
      await waitUntil(
        () => (sock.drain(), sock.messages.filter((m) => m === "WATCHDOG=1").length > before),
        2000,
        10,
      ),
    );
    sd.stopWatchdog();
    assert.equal(sd.startWatchdog({ usec: "40000", pid: "1" }), 0, "WATCHDOG_PID of another process");
    assert.equal(sd.startWatchdog({ usec: undefined }), 0);
    assert.deepEqual(sock.messages.slice(0, 2), [
      "READY=1\nSTATUS=serving h.yaml",
      "RELOADING=1\nMONOTONIC_USEC=1",
    ]);
    // nobody listening: false and the errno, no throw
    const gone = SdNotify.fromEnv(`${dir}/nobody.sock`)!;
    assert.equal(gone.send("READY=1"), false);
    assert.equal(gone.lastErrno, 2); // ENOENT
  } finally {
    sock.close();
  }
  // a reader that does not read: the queue fills (net.unix.max_dgram_qlen) and send says so at once, never blocks
  const stuck = NotifySocket.bind(`${dir}/stuck.sock`, 0);
  try {
    const sd = SdNotify.fromEnv(stuck.path)!;
    const t0 = performance.now();
    const sent = Array.from({ length: 2000 }, (_, i) => sd.send(`STATUS=${i}`));
    assert.ok(performance.now() - t0 < 10_000);
    assert.ok(sent.includes(false), "a full queue refuses");
    assert.equal(sd.lastErrno, 11); // EAGAIN
    assert.equal(stuck.drain().length, sent.filter((x) => x).length);
  } finally {
    stuck.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Waits until `n` callbacks have come (bounded); returns the count. */
async function settled(count: () => number, n: number, ms = 5000): Promise<number> {
  await waitUntil(() => count() >= n, ms, 20);
  return count();
}

Deno.test("run: the file watch sees a write in place, a rename over, a ConfigMap symlink swap; digests tell content", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-watch-" });
  // a ConfigMap volume: host.yaml -> ..data/host.yaml, ..data -> ..v1
  Deno.mkdirSync(`${dir}/..v1`);
  Deno.writeTextFileSync(`${dir}/..v1/host.yaml`, "a: 1\n");
  Deno.symlinkSync("..v1", `${dir}/..data`);
  Deno.symlinkSync("..data/host.yaml", `${dir}/host.yaml`);
  // and a link to that link elsewhere (an operator's /etc/nfqlb/host.yaml -> the volume)
  const other = Deno.makeTempDirSync({ prefix: "nfqlb-watch-link-" });
  Deno.symlinkSync(`${dir}/host.yaml`, `${other}/host.yaml`);
  let calls = 0;
  // no poll within the test: only inotify may see the changes
  const w = new ConfigWatcher(`${other}/host.yaml`, () => calls++, { settleMs: 50, pollMs: 60_000 });
  try {
    assert.deepEqual(w.dirs(), [dir, `${dir}/..data`, `${dir}/..v1`, other].sort());
    w.start();
    const first = await readConfig(`${other}/host.yaml`);
    assert.equal(first.text, "a: 1\n");
    assert.equal(first.digest, await digestOf(new TextEncoder().encode("a: 1\n")));
    assert.match(first.digest, /^sha256:[0-9a-f]{64}$/);

    Deno.writeTextFileSync(`${dir}/host.yaml`, "a: 2\n"); // in place, through the links
    assert.ok(await settled(() => calls, 1) >= 1, "in-place write");
    assert.equal((await readConfig(`${other}/host.yaml`)).text, "a: 2\n");

    let n = calls;
    Deno.writeTextFileSync(`${dir}/..v1/.tmp`, "a: 3\n");
    Deno.renameSync(`${dir}/..v1/.tmp`, `${dir}/..v1/host.yaml`); // rename over the real file
    assert.ok(await settled(() => calls, n + 1) > n, "rename over");
    assert.equal((await readConfig(`${other}/host.yaml`)).text, "a: 3\n");

    n = calls;
    Deno.mkdirSync(`${dir}/..v2`);
    Deno.writeTextFileSync(`${dir}/..v2/host.yaml`, "a: 4\n");
    Deno.symlinkSync("..v2", `${dir}/..data_tmp`);
    Deno.renameSync(`${dir}/..data_tmp`, `${dir}/..data`); // the swap
    Deno.removeSync(`${dir}/..v1`, { recursive: true });
    assert.ok(await settled(() => calls, n + 1) > n, "symlink swap");
    assert.equal((await readConfig(`${other}/host.yaml`)).text, "a: 4\n");
    // the watch moved on to the new directory: a write there is seen too
    assert.ok(w.dirs().includes(`${dir}/..v2`));
    n = calls;
    await new Promise((r) => setTimeout(r, 200));
    n = calls;
    Deno.writeTextFileSync(`${dir}/..v2/host.yaml`, "a: 5\n");
    assert.ok(await settled(() => calls, n + 1) > n, "write after the swap");
  } finally {
    w.close();
    Deno.removeSync(dir, { recursive: true });
    Deno.removeSync(other, { recursive: true });
  }
});

Deno.test("run: the file watch's poll sees a change when there is no event to see", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-poll-" });
  let calls = 0;
  const w = new ConfigWatcher(`${dir}/missing/host.yaml`, () => calls++, {
    pollMs: 50,
    warn: () => {},
  });
  try {
    w.start(); // the directory does not exist: no watch, the poll asks
    assert.ok(await settled(() => calls, 2, 3000) >= 2);
  } finally {
    w.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("run: the dataplane's log lines are followed from where they were, lines whole", () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-tail-" });
  const path = `${dir}/lb.log`;
  Deno.writeTextFileSync(path, "old line\n");
  const got: string[] = [];
  const t = new LogTail(path, (l) => got.push(l));
  try {
    Deno.writeTextFileSync(path, "queue_length=1024\npart", { append: true });
    t.poll();
    assert.deepEqual(got, ["queue_length=1024"]);
    Deno.writeTextFileSync(path, "ial\n\nnext\n", { append: true });
    t.poll();
    assert.deepEqual(got, ["queue_length=1024", "partial", "next"]);
    Deno.writeTextFileSync(path, "new file\n"); // removed and made again: shorter
    t.poll();
    assert.deepEqual(got.at(-1), "new file");
    Deno.removeSync(path);
    t.poll(); // gone: nothing, no throw
  } finally {
    t.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("run: the agent's metrics are valid text format (strict parser; promtool when installed)", async () => {
  const text = renderAgentMetrics({
    reloads: { ok: 3, error: 1 },
    restarts: 2,
    config: { name: 'edge"1', digest: "sha256:" + "0".repeat(64) },
    dataplaneUp: true,
  });
  const e = parseExposition(text);
  assert.equal(sampleValue(e, "nfqlb_agent_reloads_total", { result: "ok" }), 3);
  assert.equal(sampleValue(e, "nfqlb_agent_reloads_total", { result: "error" }), 1);
  assert.equal(sampleValue(e, "nfqlb_dataplane_restarts_total"), 2);
  assert.equal(sampleValue(e, "nfqlb_dataplane_up"), 1);
  assert.equal(
    sampleValue(e, "nfqlb_config_info", { name: 'edge"1', digest: "sha256:" + "0".repeat(64) }),
    1,
  );
  assert.equal(e.types.get("nfqlb_agent_reloads_total"), "counter");
  // no config yet: no info series
  assert.equal(
    sampleValue(
      parseExposition(renderAgentMetrics({ reloads: { ok: 0, error: 0 }, restarts: 0, dataplaneUp: false })),
      "nfqlb_config_info",
    ),
    undefined,
  );
  const pt = await promtool(text);
  if (pt) assert.equal(pt.code, 0, pt.output);
  // the strict parser refuses what a scraper would misread
  for (
    const bad of [
      "x 1\n", // no TYPE
      "# TYPE x counter\nx 1\n", // a counter not named _total
      '# TYPE x gauge\nx{a="1} 1\n',
      "# TYPE x gauge\nx one\n",
      "# TYPE x gauge\n# TYPE y gauge\nx 1\ny 1\nx 2\n",
      "# TYPE x gauge\nx 1\nx 2\n",
      "# TYPE x gauge\nx 1",
    ]
  ) assert.throws(() => parseExposition(bad), Error, bad);
  assert.equal(metricsUrl("0.0.0.0:9100"), "http://127.0.0.1:9100/metrics");
  assert.equal(metricsUrl("[::]:9100"), "http://[::1]:9100/metrics");
  assert.equal(metricsUrl("[fd00::1]:9100"), "http://[fd00::1]:9100/metrics");
});

Deno.test("run: the admin server: /healthz 200, /ready 200 or 503 with the reason, /metrics, 404, 405, in use", async () => {
  let ready = { ok: false, text: "not ready: lb is not running (restart in 250 ms; 1 restarts so far)" };
  const handlers = {
    metrics: () => Promise.resolve("# TYPE x gauge\nx 1\n"),
    ready: () => Promise.resolve(ready),
  };
  // a free port: let the kernel pick one, then use it
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const address = `127.0.0.1:${port}`;
  const srv = startAdmin(address, handlers);
  try {
    const get = async (path: string, method = "GET") => {
      const r = await fetch(`http://${address}${path}`, { method });
      return { status: r.status, body: await r.text(), type: r.headers.get("content-type") };
    };
    assert.deepEqual((await get("/healthz")).body, "ok\n");
    let r = await get("/ready");
    assert.equal(r.status, 503);
    assert.equal(r.body, `${ready.text}\n`);
    ready = { ok: true, text: "ready: the host matches h.yaml (edge)" };
    r = await get("/ready");
    assert.equal(r.status, 200);
    r = await get("/metrics");
    assert.equal(r.status, 200);
    assert.match(r.type ?? "", /^text\/plain; version=0\.0\.4/);
    assert.equal(r.body, "# TYPE x gauge\nx 1\n");
    assert.equal((await get("/nope")).status, 404);
    assert.equal((await get("/ready", "POST")).status, 405);
    assert.throws(() => startAdmin(address, handlers), {
      message: `admin server on ${address}: Address already in use`,
    });
    assert.throws(() => startAdmin("localhost:1", handlers), {
      message: "admin server on localhost:1: expected ADDR:PORT or [ADDR]:PORT",
    });
  } finally {
    await srv.close();
  }
});

Deno.test("run: bad options are one line and exit 1; a bad file is apply's one line, before anything runs", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-runcli-" });
  try {
    let r = await nfqlb(["run", "-f", "x.yaml", "--log-format=xml"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'run: --log-format: expected text or json, got "xml"\n');
    r = await nfqlb(["run", "-f", "x.yaml", "--admin=localhost"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'run: --admin: expected ADDR:PORT or [ADDR]:PORT, got "localhost"\n');
    r = await nfqlb(["run"]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "Missing option [--file]\n");
    const file = `${dir}/h.yaml`;
    Deno.writeTextFileSync(
      file,
      "version: 1\nservices:\n  - name: web\n    vips: [10.0.0.1]\n    targets: [{fwmark: 101, address: 192.168.1.1, weight: 70000}]\n",
    );
    r = await nfqlb(["run", "-f", file, "--log-format=json"]);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.at(-1).level, "error");
    assert.equal(
      lines.at(-1).msg,
      `${file}:5: services[0].targets[0].weight: expected an integer 0..65535, got 70000`,
    );
    r = await nfqlb(["run", "-f", `${dir}/missing.yaml`]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr.trimEnd().split("\n").at(-1)!,
      /error +.*missing\.yaml: cannot read: No such file or directory$/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
