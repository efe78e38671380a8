/**
 * Every parser of outside input has a size and depth bound, and each bound
 * is tested here at its edge: the host config (bytes, values, nesting,
 * aliases, duplicate keys at scale; `nfqlb apply|status|teardown -f`), the
 * flow request (line and request bytes), the trace server (clients, input),
 * and the metrics endpoint (request head, methods, paths, slow clients).
 * Each case is bounded to seconds; the figures printed with `figure:` go to
 * the report.
 */
import assert from "node:assert/strict";
import { ConfigError, loadHostConfig, MAX_CONFIG_BYTES, parseHostConfig } from "../../host/config/load.ts";
import { MAX_ALIAS_COUNT, MAX_CONFIG_DEPTH, MAX_CONFIG_VALUES } from "../../host/config/source.ts";
import { MAX_LINE, MAX_REQUEST, parseRequest, RequestReader } from "../../core/flow/wire.ts";
import { MAX_TRACE_CLIENTS, startTracing, TRACE_REFUSED } from "../../dataplane/trace_server.ts";
import { METRICS_MAX_HEAD, startMetrics } from "../../dataplane/metrics.ts";
import { createCountersShm } from "../../core/counters_shm.ts";
import { createFragStatsShm } from "../../core/frag_stats.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { traceMask } from "../../core/trace_shm.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { ROOT } from "../harness/paths.ts";
import { libSandbox } from "../helpers/shm.ts";

const enc = (t: string) => new TextEncoder().encode(t);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const EXAMPLE = Deno.readTextFileSync(`${ROOT}/docs/examples/dsr.yaml`);

/** The one-line error of parsing `text`, and how long it took. */
function refusal(text: string, file = "x.yaml"): { message: string; ms: number } {
  const t0 = performance.now();
  try {
    parseHostConfig(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    assert.ok(!e.message.includes("\n"), e.message);
    return { message: e.message, ms: Math.round(performance.now() - t0) };
  }
  assert.fail(`accepted: ${text.slice(0, 80)}`);
}

Deno.test("config: over 1 MiB is refused before parsing, by apply, status and teardown; exactly 1 MiB is read", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-bounds-" });
  try {
    // 13 MB of otherwise plausible YAML (the file that took 18–28 s and 1.6 GB to refuse)
    const big = `${dir}/big.yaml`;
    const target = "      - fwmark: 101\n        address: 192.168.1.1\n";
    Deno.writeTextFileSync(big, EXAMPLE + "x:\n" + target.repeat(Math.ceil(13e6 / target.length)));
    const why = `${big}: too large: more than ${MAX_CONFIG_BYTES} bytes (a config file is at most 1 MiB)\n`;
    for (
      const args of [["apply", "-f", big], ["apply", "--dry-run", `--file=${big}`], ["status", "-f", big], [
        "teardown",
        "-f",
        big,
      ]]
    ) {
      const t0 = performance.now();
      const r = await nfqlb(args);
      const ms = Math.round(performance.now() - t0);
      assert.deepEqual(r, { code: 1, stdout: "", stderr: why }, args.join(" "));
      assert.ok(ms < 10_000, `${args[0]}: ${ms} ms`);
      console.log(`figure: nfqlb ${args.join(" ").replace(big, "<13 MB file>")}: refused in ${ms} ms`);
    }
    // a file that is no regular file is bounded too: /dev/zero is read for 1 MiB + 1 byte only
    await assert.rejects(
      () => loadHostConfig("/dev/zero"),
      new ConfigError(`/dev/zero: too large: more than 1048576 bytes (a config file is at most 1 MiB)`),
    );
    // exactly 1 MiB (comments add no values) is read and parsed; one byte more is not
    const pad = (n: number) => EXAMPLE + "#".repeat(n - enc(EXAMPLE).length - 1) + "\n";
    Deno.writeTextFileSync(`${dir}/edge.yaml`, pad(MAX_CONFIG_BYTES));
    const cfg = await loadHostConfig(`${dir}/edge.yaml`);
    assert.equal(cfg.services[0].name, "web");
    Deno.writeTextFileSync(`${dir}/over.yaml`, pad(MAX_CONFIG_BYTES + 1));
    await assert.rejects(() => loadHostConfig(`${dir}/over.yaml`), /over\.yaml: too large: /);
    // the text API has the same bound, in UTF-8 bytes
    assert.match(refusal("# " + "é".repeat(MAX_CONFIG_BYTES / 2)).message, /^x\.yaml: too large: /);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("config: YAML aliases: a billion laughs is refused in one line; ordinary anchors work", () => {
  const laughs = ["version: 1", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i < 9; i++) {
    const p = String.fromCharCode(96 + i), n = String.fromCharCode(97 + i);
    laughs.push(`${n}: &${n} [${Array(9).fill(`*${p}`).join(",")}]`);
  }
  const r = refusal(laughs.join("\n") + "\n");
  assert.equal(
    r.message,
    `x.yaml:3:8: YAML aliases: expansion too large (more than ${MAX_ALIAS_COUNT} alias resolutions)`,
  );
  assert.ok(r.ms < 2000, `${r.ms} ms`);
  // an alias inside its own anchor is a cycle
  assert.match(refusal("version: 1\nservices: &a [*a]\n").message, /^x\.yaml: nested deeper than 32 levels$/);
  assert.equal(
    refusal("version: 1\nservices: *nope\n").message,
    "x.yaml:2:11: YAML aliases: Unresolved alias (the anchor must be set before the alias): nope",
  );
  // an anchor used as intended
  const anchored = EXAMPLE.replace("address: [192.168.1.1", "weight: &w 1\n        address: [192.168.1.1")
    .replace("weight: 0 #", "weight: *w #");
  assert.equal(parseHostConfig(anchored, "ok.yaml").services[0].targets[2].weight, 1);
  console.log(`figure: a billion-laughs YAML (9^9 strings) refused in ${r.ms} ms`);
});

Deno.test("config: nesting is bounded at 32 levels, in YAML flow and block style and in JSON", () => {
  const flow = (n: number) => "version: 1\nx: " + "[".repeat(n) + "]".repeat(n) + "\n";
  const json = (n: number) => '{"version": 1, "x": ' + "[".repeat(n) + "]".repeat(n) + "}";
  // the top-level mapping is level 1: x's lists are levels 2..n+1
  assert.doesNotMatch(refusal(flow(MAX_CONFIG_DEPTH - 1)).message, /nested/);
  assert.equal(
    refusal(flow(MAX_CONFIG_DEPTH)).message,
    `x.yaml:2:${MAX_CONFIG_DEPTH + 3}: nested deeper than 32 levels`,
  );
  assert.doesNotMatch(refusal(json(MAX_CONFIG_DEPTH - 1), "x.json").message, /nested/);
  assert.equal(refusal(json(MAX_CONFIG_DEPTH), "x.json").message, "x.json: nested deeper than 32 levels");
  const block = "version: 1\nx:\n" +
    Array.from({ length: 200 }, (_, i) => " ".repeat(i + 1) + "- ").join("\n") +
    "1\n";
  assert.match(refusal(block).message, /^x\.yaml:\d+:\d+: nested deeper than 32 levels$/);
  // deeper than the YAML composer's stack (about 1 100 levels): still one line, quickly
  const t0 = performance.now();
  assert.equal(refusal(flow(45_000)).message, "x.yaml: nested deeper than 32 levels");
  assert.ok(performance.now() - t0 < 5000);
});

Deno.test("config: at most 50 000 values, counted before the document is built; keys are checked in linear time", () => {
  const ints = (n: number) => "version: 1\nx: [" + Array(n).fill("1").join(",") + "]\n";
  // version, 1, x, the list: 4 values besides the numbers
  const edge = refusal(ints(MAX_CONFIG_VALUES - 4));
  assert.doesNotMatch(edge.message, /values/);
  const over = refusal(ints(MAX_CONFIG_VALUES - 3));
  assert.equal(
    over.message,
    `x.yaml: more than ${MAX_CONFIG_VALUES} values (a host config has a few thousand)`,
  );
  // 24 000 keys in one mapping, the last a duplicate: npm:yaml's own check took 107 s for 90 000
  const keys = "version: 1\nx:\n" + Array.from({ length: 24_000 }, (_, i) => `  k${i}: 1\n`).join("") +
    "  k7: 2\n";
  const dup = refusal(keys);
  assert.equal(dup.message, "x.yaml:24003:3: YAML syntax: Map keys must be unique");
  // and thousands of errors are located at once, not one search each
  const unknown = "version: 1\nservices:\n  - name: a\n" +
    Array.from({ length: 20_000 }, (_, i) => `    k${i}: 1\n`).join("");
  const many = refusal(unknown);
  assert.match(many.message, /^x\.yaml:\d+: services\[0\]\.\S+: .*\(and 2\d{4} more\)$/);
  const timings = [["at the value bound", edge], ["over it", over], ["24 000 keys", dup], [
    "20 000 errors",
    many,
  ]];
  for (const [what, r] of timings as [string, { ms: number }][]) {
    assert.ok(r.ms < 20_000, `${what}: ${r.ms} ms`);
  }
  console.log(
    `figure: config parse at the bounds: ${MAX_CONFIG_VALUES} values ${edge.ms} ms; over: ${over.ms} ms; ` +
      `24 000 keys with a duplicate ${dup.ms} ms; 20 000 unknown keys ${many.ms} ms`,
  );
});

Deno.test("flow request: lines of 1023 bytes, requests of 16 KiB, exactly at the edges and in any chunking", () => {
  const line = (k: string, total: number) => `${k}:${"x".repeat(total - k.length - 1)}\n`;
  // unknown keys of MAX_LINE bytes up to the bound, then eoc:
  const body = (size: number) => {
    let t = "";
    let i = 0;
    while (size - t.length - 5 > MAX_LINE + 1) t += line(`k${i++}`, MAX_LINE);
    const rest = size - t.length - 5 - 1;
    t += line(`k${i}`, rest);
    return t + "eoc:\n";
  };
  assert.equal(body(MAX_REQUEST).length, MAX_REQUEST);
  assert.equal(parseRequest(enc(body(MAX_REQUEST))).kind, "done");
  const over = parseRequest(enc(body(MAX_REQUEST + 1)));
  assert.ok(over.kind === "error" && over.reply === "FAIL: request too long", JSON.stringify(over));
  // fed a byte at a time, the same
  const r = new RequestReader();
  const bytes = enc(body(MAX_REQUEST + 1));
  let o;
  for (const b of bytes) if ((o = r.push(new Uint8Array([b]))).kind !== "more") break;
  assert.ok(o?.kind === "error" && o.problem === "request too long");
  // a line of MAX_LINE bytes passes, MAX_LINE + 1 does not
  assert.equal(parseRequest(enc(line("name", MAX_LINE) + "eoc:\n")).kind, "done");
  const long = parseRequest(enc(line("name", MAX_LINE + 1) + "eoc:\n"));
  assert.ok(long.kind === "error" && long.reply === "FAIL: line too long");
  // an endless line without a newline stops at MAX_LINE, whatever arrives
  const endless = new RequestReader();
  let e;
  for (let i = 0; i < 100; i++) if ((e = endless.push(new Uint8Array(64).fill(0x61))).kind !== "more") break;
  assert.ok(e?.kind === "error" && e.problem === "line too long");
});

Deno.test("trace server: 8 clients at once, the 9th is refused in one line; a client's input ends its session", async () => {
  using sb = libSandbox();
  const address = `unix:nfqlb-bounds-trace-${Deno.pid}`;
  const svc = startTracing(address);
  const path = "\0" + address.slice(5);
  const conns: Deno.Conn[] = [];
  const readLine = async (c: Deno.Conn) => {
    const buf = new Uint8Array(256);
    let text = "";
    while (!text.includes("\n")) {
      const n = await c.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  };
  try {
    traceMask(2); // packet lines only: log lines would follow the greeting
    for (let i = 0; i < MAX_TRACE_CLIENTS; i++) {
      const c = await Deno.connect({ transport: "unix", path });
      conns.push(c);
      assert.match(await readLine(c), /^Trace active, mask=0x00000002\n$/);
    }
    assert.equal(svc.clients, MAX_TRACE_CLIENTS);
    const extra = await Deno.connect({ transport: "unix", path });
    assert.equal(await readLine(extra), TRACE_REFUSED + "\n");
    assert.equal(await extra.read(new Uint8Array(8)), null);
    extra.close();
    // the nfqlb trace client says so on stderr and exits 1
    const cli = await nfqlb(["trace", "--mask=2", `--trace_address=${address}`], sb.env);
    assert.deepEqual(cli, { code: 1, stdout: "Mask=0x00000002\n", stderr: TRACE_REFUSED + "\n" });
    // input ends a session: a client that sends 64 KiB is read once (256 bytes) and closed
    await conns[0].write(new Uint8Array(65536).fill(0x61)).catch(() => 0);
    for (let i = 0; i < 500 && svc.clients === MAX_TRACE_CLIENTS; i++) await sleep(10);
    assert.equal(svc.clients, MAX_TRACE_CLIENTS - 1);
    // a slot is free again
    const again = await Deno.connect({ transport: "unix", path });
    conns.push(again);
    assert.match(await readLine(again), /^Trace active/);
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await svc.close();
  }
});

Deno.test("metrics: only GET/HEAD /metrics; 8 KiB request heads; slow clients cut off; 64 at once, the rest queued", async () => {
  using _sb = libSandbox();
  const counters = createCountersShm("bounds-counters", [2], "lb");
  counters.publish();
  const ft = createFragStatsShm("bounds-ft");
  TargetShm.create("t", { M: 997, N: 32, ownFwmark: 0 });
  TargetShm.update("t", (active) => {
    active.set([1, 2, 3]);
    return true;
  });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const m = startMetrics(`127.0.0.1:${port}`, {
    counters: "bounds-counters",
    ftShm: "bounds-ft",
    tables: () => ["t"],
  });
  /** Sends raw bytes, returns the status line and the body. */
  const http = async (request: string | Uint8Array) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await c.write(typeof request === "string" ? enc(request) : request);
    } catch { /* closed early */ }
    const parts: number[] = [];
    const buf = new Uint8Array(65536);
    try {
      for (let i = 0; i < 1000; i++) {
        const n = await c.read(buf);
        if (n === null) break;
        parts.push(...buf.subarray(0, n));
      }
    } catch { /* reset */ }
    c.close();
    const text = new TextDecoder().decode(new Uint8Array(parts));
    const cut = text.indexOf("\r\n\r\n");
    return { status: text.split("\r\n")[0], head: text.slice(0, cut), body: text.slice(cut + 4) };
  };
  const slow: Deno.Conn[] = [];
  try {
    const ok = await http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal(ok.status, "HTTP/1.1 200 OK");
    assert.match(ok.head, /content-type: text\/plain; version=0\.0\.4; charset=utf-8/);
    assert.match(ok.body, /^nfqlb_targets_active\{table="t"\} 3$/m);
    // what fetch() sends works too
    const f = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(f.status, 200);
    assert.match(await f.text(), /nfqlb_targets_seen 0/);
    const headOnly = await http("HEAD /metrics HTTP/1.0\r\n\r\n");
    assert.equal(headOnly.status, "HTTP/1.1 200 OK");
    assert.equal(headOnly.body, "");
    assert.equal((await http("GET /metrics?x=1 HTTP/1.1\r\n\r\n")).status, "HTTP/1.1 200 OK");
    assert.equal((await http("GET / HTTP/1.1\r\n\r\n")).status, "HTTP/1.1 404 Not Found");
    const post = await http("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert.equal(post.status, "HTTP/1.1 405 Method Not Allowed");
    assert.match(post.head, /allow: GET, HEAD/);
    assert.equal((await http("garbage\r\n\r\n")).status, "HTTP/1.1 400 Bad Request");
    // the head bound: just under passes, over is 431 (and the rest is never read)
    const header = (n: number) => `GET /metrics HTTP/1.1\r\nX: ${"a".repeat(n)}\r\n\r\n`;
    const fits = header(METRICS_MAX_HEAD - header(0).length);
    assert.equal(fits.length, METRICS_MAX_HEAD);
    assert.equal((await http(fits)).status, "HTTP/1.1 200 OK");
    assert.equal((await http(header(1 << 20))).status, "HTTP/1.1 431 Request Header Fields Too Large");
    // 100 slow clients (a partial request each): 64 hold the slots, the rest queue; a scrape still gets through
    for (let i = 0; i < 100; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      await c.write(enc("GET /metr"));
      slow.push(c);
    }
    const t0 = performance.now();
    const during = await http("GET /metrics HTTP/1.1\r\n\r\n");
    const ms = Math.round(performance.now() - t0);
    assert.equal(during.status, "HTTP/1.1 200 OK");
    assert.ok(ms < 20_000, `${ms} ms`);
    console.log(`figure: /metrics under 100 slow clients (64 slots, 3 s deadline): answered after ${ms} ms`);
    // the slow ones are cut off, none answered
    const cut = await Promise.all(slow.map(async (c) => {
      const r = await Promise.race([
        c.read(new Uint8Array(64)).catch(() => null),
        sleep(20_000).then(() => "hung"),
      ]);
      return r;
    }));
    assert.ok(cut.every((r) => r === null), JSON.stringify(cut));
  } finally {
    for (const c of slow) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await m.close();
    counters.close();
    ft.close();
  }
});
