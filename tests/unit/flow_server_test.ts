/**
 * dataplane/flow_server.ts, core/flow/store.ts and the flow clients: a real
 * server on a unique abstract socket (or TCP), driven through the flow
 * session recorded from upstream: step 12 with raw bytes, steps 1–11 with the
 * real CLI (tests/unit/flows_test.ts checks the steps at table level), plus
 * persistence (round trip, corrupt file, restored flows whose target is
 * missing).
 */
import assert from "node:assert/strict";
import { FlowTable } from "../../core/flow/table.ts";
import { ShmTargets } from "../../core/flow/shm_targets.ts";
import { type FlowServer, startFlowServer } from "../../dataplane/flow_server.ts";
import { FlowStore } from "../../core/flow/store.ts";
import { NfqlbError } from "../../core/errors.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox, listDir } from "../helpers/shm.ts";

let serial = 0;
/** A flow address no other test (or process) uses. */
function uniqueAddress(): string {
  return `unix:nfqlb-test-${Deno.pid}-${serial++}`;
}

/** A server with ShmTargets (needs a libSandbox), its tables and its log. */
function server(
  address = uniqueAddress(),
  opts: { store?: FlowStore; requestTimeoutMs?: number; problemWindowMs?: number } = {},
) {
  const targets = new ShmTargets();
  const table = new FlowTable("flow", targets), trace = new FlowTable("trace");
  const log: string[] = [];
  const srv: FlowServer = startFlowServer(address, table, trace, { ...opts, log: (l) => log.push(l) });
  return { address, targets, table, trace, log, srv };
}

/** Sends raw bytes, returns everything the server sends until it closes. */
async function raw(address: string, request: string | Uint8Array): Promise<Uint8Array> {
  const path = "\0" + address.slice("unix:".length);
  const conn = await Deno.connect({ transport: "unix", path });
  const data = typeof request === "string" ? new TextEncoder().encode(request) : request;
  try {
    await conn.write(data);
    // EOF after the request, so a request without eoc: ends at once
    await conn.closeWrite();
  } catch { /* closed early */ }
  const chunks: number[] = [];
  const buf = new Uint8Array(4096);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(...buf.subarray(0, n));
    }
  } catch { /* reset */ }
  conn.close();
  return new Uint8Array(chunks);
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("server: upstream flow session step 12, raw replies byte for byte", async () => {
  using _sb = libSandbox();
  // no summary window: each bad request is logged in full (the summary is tested in tests/reliability)
  const s = server(uniqueAddress(), { problemWindowMs: 0 });
  try {
    assert.equal(text(await raw(s.address, "action:bogus\neoc:\n")), "FAIL: action unknown\0");
    assert.equal(text(await raw(s.address, "eoc:\n")), "FAIL: no action\0");
    assert.equal(text(await raw(s.address, "action:delete\neoc:\n")), "FAIL: no name\0");
    assert.equal((await raw(s.address, "name, x\n")).length, 0);
    assert.equal((await raw(s.address, "action:list\n")).length, 0);
    assert.equal(text(await raw(s.address, `name:${"x".repeat(2000)}\neoc:\n`)), "FAIL: line too long\0");
    assert.equal(text(await raw(s.address, "action:list\neoc:\n")), "[]\n");
    assert.equal(text(await raw(s.address, "action:list\nfoo:bar\neoc:\n")), "[]\n");
    assert.ok(s.log.includes("readCmd; Unrecognized command [foo]"), s.log.join("\n"));
    assert.ok(s.log.some((l) => l.startsWith("readFlowCmd; invalid param")));
  } finally {
    await s.srv.close();
  }
});

Deno.test("server: survives garbage, idle and abandoned clients; serves clients at once", async () => {
  using _sb = libSandbox();
  const s = server(uniqueAddress(), { requestTimeoutMs: 200 });
  try {
    // an idle client is cut off
    const idle = await Deno.connect({ transport: "unix", path: "\0" + s.address.slice(5) });
    const t0 = Date.now();
    assert.equal(await idle.read(new Uint8Array(10)), null);
    assert.ok(Date.now() - t0 < 5000);
    idle.close();
    // a client that goes away mid-request
    const gone = await Deno.connect({ transport: "unix", path: "\0" + s.address.slice(5) });
    await gone.write(new TextEncoder().encode("action:se"));
    gone.close();
    // random bytes
    for (let i = 0; i < 20; i++) {
      const b = crypto.getRandomValues(new Uint8Array(1500));
      await raw(s.address, b);
    }
    // many at once
    const replies = await Promise.all(
      Array.from({ length: 40 }, () => raw(s.address, "action:list-names\neoc:\n")),
    );
    assert.ok(replies.every((r) => text(r) === "[]\n"));
    assert.equal(text(await raw(s.address, "eoc:\n")), "FAIL: no action\0");
  } finally {
    await s.srv.close();
  }
});

Deno.test("server: address and bind errors are one line", async () => {
  const t = new FlowTable("flow"), tr = new FlowTable("trace");
  assert.throws(
    () => startFlowServer("udp:1.2.3.4:5", t, tr),
    new NfqlbError("Failed to parse address [udp:1.2.3.4:5]"),
  );
  const address = uniqueAddress();
  const first = startFlowServer(address, t, tr, { log: () => {} });
  try {
    assert.throws(
      () => startFlowServer(address, t, tr),
      new NfqlbError("Flow server bind: Address already in use"),
    );
  } finally {
    await first.close();
  }
});

Deno.test("CLI: the upstream flow session (steps 1–11) against a real server", async () => {
  using sb = libSandbox();
  const s = server();
  const env = { ...sb.env, NFQLB_FLOW_ADDRESS: s.address };
  const run = (...args: string[]) => nfqlb(args, env);
  try {
    assert.equal((await run("init", "--shm=nfqlb")).code, 0);
    assert.deepEqual(await run("flow-list"), { code: 0, stdout: "[]\n", stderr: "" });
    assert.deepEqual(await run("flow-list-names"), { code: 0, stdout: "[]\n", stderr: "" });
    const flow1 = await run(
      "flow-set",
      "--name=flow-1",
      "--prio=100",
      "--target=nfqlb",
      "--proto=udp,tcp",
      "--dst=10.0.0.0/32,1000::/128",
      "--dport=22,200-300,44,20000",
      "--src=2000::/64,192.168.2.0/24",
      "--sport=20000-30000",
    );
    assert.deepEqual(flow1, { code: 0, stdout: "OK\n", stderr: "" });
    const one = await run("flow-list", "--name=flow-1");
    assert.equal(one.stdout, s.table.list("flow-1"));
    assert.ok(
      one.stdout.startsWith('{\n  "name": "flow-1",\n  "priority": 100,\n  "protocols": [ "tcp", "udp" ],'),
    );
    assert.ok(one.stdout.endsWith('"matches_count": 0,\n  "user_ref": "nfqlb"\n}'));
    const sctp = [
      "flow-set",
      "--name=sctp",
      "--target=nfqlb",
      "--proto=sctp",
      "--udpencap=9899",
      "--prio=100",
      "--dsts=10.0.0.0/32,1000::/128",
      "--dport=6000",
    ];
    assert.deepEqual(await run(...sctp), { code: 0, stdout: "OK\n", stderr: "" });
    assert.equal((await run("flow-list-names")).stdout, '[\n  "flow-1",\n  "#sctp",\n  "sctp"\n]\n');
    const all = await run("flow-list");
    assert.equal(JSON.parse(all.stdout).length, 3);
    assert.ok(all.stdout.includes('"user_ref": "NULL"\n},\n{\n  "name": "sctp",'));
    assert.deepEqual(await run(...sctp.slice(0, 4), "--udpencap=8000", "--dsts=10.0.0.0/32"), {
      code: 255,
      stdout: "FAIL: Alter udpencap not allowed\n",
      stderr: "",
    });
    assert.deepEqual(await run("flow-delete", "--name=sctp"), { code: 0, stdout: "OK\n", stderr: "" });
    assert.deepEqual(await run("flow-delete", "--name=nosuch"), { code: 0, stdout: "OK\n", stderr: "" });
    assert.equal((await run("flow-list-names")).stdout, '[\n  "flow-1"\n]\n');
    assert.deepEqual(await run("flow-set", "--name=x", "--target=nosuch"), {
      code: 255,
      stdout: "FAIL: Couldn't create load-balancer\n",
      stderr: "",
    });
    const rejects: [string[], string][] = [
      [["--protocols=icmp"], "Invalid protocols"],
      [["--dsts=10.0.0.0"], "Invalid dsts"],
      [["--protocols=tcp", "--dports=0"], "Invalid dports"],
      [["--protocols=tcp", "--sports=70000"], "Invalid sports"],
      [["--protocols=sctp,tcp", "--udpencap=9899"], "FAIL: only sctp for updencap"],
      [["--match=tcp[19:2]=1"], "Match [tcp[19:2]=1] Out of bounds"],
      [["--match=TCP[2:2]=1"], "Match [TCP[2:2]=1] Doesn't match regexp"],
      [["--prio=high"], "Invalid priority [high]"],
    ];
    for (const [args, expected] of rejects) {
      assert.deepEqual(await run("flow-set", "--name=x", "--target=nfqlb", ...args), {
        code: 255,
        stdout: expected + "\n",
        stderr: "",
      }, args.join(" "));
    }
    const m = await run(
      "flow-set",
      "--name=m",
      "--target=nfqlb",
      "--protocols=tcp",
      "--match=tcp[2:1]=0x13, tcp[0:4] & 0x0000ffff = 5001",
    );
    assert.equal(m.stdout, "OK\n");
    assert.deepEqual(JSON.parse((await run("flow-list", "--name=m")).stdout).match, [
      "tcp[2:1]=0x13",
      "tcp[0:4]&0xffff=0x1389",
    ]);
    assert.equal((await run("flow-set", "--name=last", "--target=nfqlb", "--prio=-1")).code, 0);
    const listed = JSON.parse((await run("flow-list")).stdout);
    assert.deepEqual(listed.map((f: { name: string }) => f.name), ["flow-1", "m", "last"]);
    assert.equal(listed[2].priority, 4294967295);
    const ranges = ["80-500", "5000-5010"];
    for (let i = 0; i < 62; i++) ranges.push(`${10000 + 20 * i}-${10010 + 20 * i}`);
    const p64 = await run(
      "flow-set",
      "--name=port64",
      "--target=nfqlb",
      "--protocols=tcp",
      `--dports=${ranges.join(",")}`,
    );
    assert.equal(p64.stdout, "OK\n");
    assert.equal(JSON.parse((await run("flow-list", "--name", "port64")).stdout).dports.length, 64);
    assert.equal((await run("flow-list", "--name=nosuch")).stdout, "");
    // trace flows (ours: trace-flow-set prints OK, exit 0)
    assert.deepEqual(await run("trace-flow-set", "--name=t", "--srcs=20.0.0.0/24"), {
      code: 0,
      stdout: "OK\n",
      stderr: "",
    });
    assert.equal(
      (await run("trace-flow-list")).stdout,
      '[{\n  "name": "t",\n  "priority": 0,\n  "srcs": [\n    "::ffff:20.0.0.0/120"\n  ],\n  "matches_count": 0\n}]\n',
    );
    assert.equal((await run("trace-flow-list-names")).stdout, '[\n  "t"\n]\n');
    assert.deepEqual(await run("trace-flow-delete", "--name=t"), { code: 0, stdout: "OK\n", stderr: "" });
    assert.equal((await run("trace-flow-list")).stdout, "[]\n");
    // the target is referenced once per flow
    assert.equal(s.targets.refs("nfqlb"), 4);
  } finally {
    await s.srv.close();
  }
});

Deno.test("CLI: client-side checks, connect and address errors", async () => {
  using sb = libSandbox();
  const env = { ...sb.env, NFQLB_FLOW_ADDRESS: uniqueAddress() };
  const run = (...args: string[]) => nfqlb(args, env);
  const die = (stderr: string) => ({ code: 1, stdout: "", stderr: stderr + "\n" });
  const set = ["flow-set", "--name=x"];
  assert.deepEqual(await run(...set, `--target=${"t".repeat(256)}`), die("target too long"));
  for (const k of ["protocols", "dsts", "srcs", "dports", "sports", "match"]) {
    assert.deepEqual(await run(...set, "--target=n", `--${k}=${"1".repeat(1001)}`), die(`${k} too long`));
  }
  assert.deepEqual(
    await run(...set, "--target=n", "--udpencap=1"),
    die("udpencap specified without protocols"),
  );
  assert.deepEqual(
    await run(...set, "--target=n", "--udpencap=1", "--protocols=tcp"),
    die("udpencap specified without sctp"),
  );
  assert.deepEqual(await run(...set, "--target=n", "--dports=1"), die("ports specified without protocols"));
  assert.deepEqual(
    await run("trace-flow-set", "--name=t", "--sports=1"),
    die("ports specified without protocols"),
  );
  assert.deepEqual(await run("flow-set"), {
    code: 1,
    stdout: "",
    stderr: "Missing option [--name]\nMissing option [--target]\n",
  });
  // our validation runs before connecting: the server's answer, without a server
  assert.deepEqual(await run(...set, "--target=n", "--protocols=icmp"), {
    code: 255,
    stdout: "Invalid protocols\n",
    stderr: "",
  });
  assert.deepEqual(await run("flow-set", "--name=a b", "--target=n"), {
    code: 255,
    stdout: "Invalid name [a b] (allowed: A-Z a-z 0-9 . _ + -)\n",
    stderr: "",
  });
  // nothing listens
  for (
    const cmd of [[...set, "--target=n"], ["flow-delete", "--name=x"], ["flow-list"], [
      "trace-flow-list-names",
    ]]
  ) {
    assert.deepEqual(await run(...cmd), die("Connect failed. Connection refused"), cmd.join(" "));
  }
  // upstream's text ends without a newline
  assert.deepEqual(await nfqlb(["flow-list"], { ...sb.env, NFQLB_FLOW_ADDRESS: "udp:x" }), {
    code: 1,
    stdout: "",
    stderr: "Failed to parse address [udp:x]",
  });
});

Deno.test("CLI: a TCP flow address works too", async () => {
  using sb = libSandbox();
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const s = server(`tcp:127.0.0.1:${port}`);
  try {
    TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
    const env = { ...sb.env, NFQLB_FLOW_ADDRESS: s.address };
    assert.equal((await nfqlb(["flow-set", "--name=a", "--target=nfqlb"], env)).stdout, "OK\n");
    assert.equal((await nfqlb(["flow-list-names"], env)).stdout, '[\n  "a"\n]\n');
  } finally {
    await s.srv.close();
  }
});

Deno.test("store: flows survive a restart; the file is replaced atomically", async () => {
  using sb = libSandbox();
  TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
  const address = uniqueAddress();
  // the operator's file (flowlb --flow_store), nothing derived from the address or the namespace
  const path = `${sb.dir}/flows.json`;
  const env = { ...sb.env, NFQLB_FLOW_ADDRESS: address };
  let s = server(address, { store: new FlowStore(path) });
  let before: string;
  try {
    for (
      const args of [
        ["--name=a", "--prio=5", "--protocols=tcp,udp", "--dsts=10.0.0.0/24", "--dports=80,443"],
        ["--name=b", "--prio=7", "--protocols=sctp", "--udpencap=9899", "--dports=6000"],
        ["--name=c", "--prio=5", "--protocols=tcp", "--match=tcp[2:2]=010", "--sports="],
        // Meridio's flow of a stream with `protocols: []`: any protocol, one port
        ["--name=m", "--prio=1", "--protocols=", "--dsts=10.0.0.1/32", "--dports=8443"],
      ]
    ) {
      assert.equal((await nfqlb(["flow-set", "--target=nfqlb", ...args], env)).stdout, "OK\n");
    }
    // failed sets and trace flows are not saved
    await nfqlb(["flow-set", "--name=d", "--target=nosuch"], env);
    await nfqlb(["trace-flow-set", "--name=t"], env);
    before = s.table.list();
    assert.deepEqual(listDir(sb.dir).filter((n) => n.includes("tmp")), []);
  } finally {
    await s.srv.close();
  }
  const saved = JSON.parse(Deno.readTextFileSync(path));
  assert.equal(saved.format, "nfqlb-deno-flows");
  assert.deepEqual(saved.flows.map((f: { name: string }) => f.name), ["b", "a", "c", "m"]);
  assert.deepEqual(saved.flows[3].protocols, [], "m: an empty protocols list, which its dports need");
  // a new process: load, restore, serve
  const store = new FlowStore(path);
  const loaded = store.load();
  assert.deepEqual(loaded.problems, []);
  s = server(address, { store });
  try {
    assert.deepEqual(s.table.restore(loaded.flows), []);
    assert.equal((await nfqlb(["flow-list"], env)).stdout, before);
    assert.equal((await nfqlb(["flow-delete", "--name=b"], env)).stdout, "OK\n");
  } finally {
    await s.srv.close();
  }
  assert.deepEqual(new FlowStore(path).load().flows.map((f) => f.name), ["a", "c", "m"]);
});

Deno.test("store: a file that is no flow store is reported in one line, moved aside, never overwritten", () => {
  using sb = libSandbox();
  const path = `${sb.dir}/flows.json`;
  const cases: [string, RegExp][] = [
    ["{not json", /: not JSON \(/],
    ['{"format":"nfqlb-deno-flows","version":2,"flows":[]}', /: version: /],
    ['{"format":"nfqlb-deno-flows","version":1,"flows":{}}', /: flows: /],
    ['{"format":"other","version":1,"flows":[]}', /: format: /],
  ];
  for (const [content, reason] of cases) {
    Deno.writeTextFileSync(path, content);
    const store = new FlowStore(path);
    const r = store.load();
    assert.deepEqual(r.flows, []);
    assert.equal(r.problems.length, 1, r.problems.join("\n"));
    const [problem] = r.problems;
    assert.ok(!problem.includes("\n"), problem);
    assert.match(problem, reason);
    assert.match(problem, /moved to .*\.corrupt-.*, starting with no flows$/);
    const aside = listDir(sb.dir).filter((n) => n.includes(".corrupt-"));
    assert.equal(aside.length, 1);
    assert.equal(Deno.readTextFileSync(`${sb.dir}/${aside[0]}`), content);
    Deno.removeSync(`${sb.dir}/${aside[0]}`);
    assert.ok(store.enabled);
  }
  // a missing file is an empty flow set, with no complaint
  assert.deepEqual(new FlowStore(`${sb.dir}/nothing.json`).load(), { flows: [], problems: [] });
});

Deno.test("store: an unreadable file disables saving instead of replacing it", () => {
  using sb = libSandbox();
  const path = `${sb.dir}/dir-not-file.json`;
  Deno.mkdirSync(path);
  const store = new FlowStore(path);
  const r = store.load();
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0], /not saving flows$/);
  assert.equal(store.enabled, false);
  store.save([{ name: "a", target: "t" }]);
  assert.ok(Deno.statSync(path).isDirectory);
});

Deno.test("store: save failures are logged by the server, the change still answers OK", async () => {
  using sb = libSandbox();
  TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
  const s = server(uniqueAddress(), { store: new FlowStore(`${sb.dir}/no/such/dir/flows.json`) });
  try {
    const env = { ...sb.env, NFQLB_FLOW_ADDRESS: s.address };
    assert.equal((await nfqlb(["flow-set", "--name=a", "--target=nfqlb"], env)).stdout, "OK\n");
    assert.ok(
      s.log.some((l) => /^flow store .*: save failed: No such file or directory$/.test(l)),
      s.log.join("\n"),
    );
  } finally {
    await s.srv.close();
  }
});

Deno.test("restore: a flow whose target is missing is listed, and activated once the table exists", async () => {
  using sb = libSandbox();
  const s = server();
  try {
    assert.deepEqual(s.table.restore([{ name: "a", target: "later", protocols: "tcp" }]), [
      "flow a: target later not found; kept inactive until it exists",
    ]);
    const env = { ...sb.env, NFQLB_FLOW_ADDRESS: s.address };
    assert.match((await nfqlb(["flow-list", "--name=a"], env)).stdout, /"user_ref": "later"/);
    assert.equal(s.table.activeFlows().length, 0);
    assert.equal((await nfqlb(["init", "--shm=later"], env)).code, 0);
    await nfqlb(["flow-list-names"], env);
    assert.equal(s.table.activeFlows().length, 1);
    assert.equal(s.targets.refs("later"), 1);
    assert.ok(s.log.includes("flow a: target found, flow active"));
  } finally {
    await s.srv.close();
  }
});
