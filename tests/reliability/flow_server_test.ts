/**
 * The flow server serves everyone: the real server (dataplane/flow_server.ts
 * with flowlb's defaults, on a unique abstract socket) under slow and many
 * clients, driven by the real `nfqlb` flow clients and by core/flow/client.ts;
 * and the clients against no server, a server that closes without a reply,
 * one that resets, and one that never answers.
 *
 * Figures (answer latencies, counts) are printed with `figure:` for the
 * report; assertions are on counts and sets, with generous time bounds.
 */
import assert from "node:assert/strict";
import { FlowTable } from "../../core/flow/table.ts";
import { ShmTargets } from "../../core/flow/shm_targets.ts";
import { flowExchange, FlowNoReply } from "../../core/flow/client.ts";
import { decodeReply } from "../../core/flow/wire.ts";
import {
  FLOW_MAX_CONNECTIONS,
  FLOW_REQUEST_TIMEOUT_MS,
  type FlowServer,
  startFlowServer,
} from "../../dataplane/flow_server.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { waitUntil } from "../harness/process.ts";
import { Topology } from "../harness/topology.ts";
import { libSandbox } from "../helpers/shm.ts";
import { holdSlowClients } from "./slow_flow_clients.ts";

let serial = 0;
const uniqueAddress = () => `unix:nfqlb-rel-${Deno.pid}-${serial++}`;
const sockPath = (address: string) => "\0" + address.slice("unix:".length);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The server as flowlb starts it (default limits), with its log collected. */
function server(address = uniqueAddress()) {
  const table = new FlowTable("flow", new ShmTargets()), trace = new FlowTable("trace");
  const log: string[] = [];
  const srv: FlowServer = startFlowServer(address, table, trace, { log: (l) => log.push(l) });
  return { address, table, log, srv };
}

/**
 * `n` slow clients (slow_flow_clients.ts): each connects and sends one byte, then holds the connection.
 * `done` resolves with how many the server disconnected (read EOF or reset) within `boundMs`; all are
 * closed by then.
 */
async function slowClients(address: string, n: number, boundMs = 15_000) {
  const { done } = await holdSlowClients(address, n, boundMs);
  return { done: done.then((at) => at.filter((ms) => ms >= 0).length) };
}

/**
 * Slow clients that come back: `n` loops, each connecting, sending one
 * byte and waiting to be cut off, again and again until `stop` is set (or
 * 60 s pass). Resolves with the number of connections made.
 */
function reconnectingSlowClients(address: string, n: number, stop: { done: boolean }): Promise<number> {
  const until = Date.now() + 60_000;
  return Promise.all(Array.from({ length: n }, async () => {
    let made = 0;
    while (!stop.done && Date.now() < until) {
      let c: Deno.Conn;
      try {
        c = await Deno.connect({ transport: "unix", path: sockPath(address) });
      } catch {
        await sleep(20); // backlog full: as a real client would, try again a little later
        continue;
      }
      made++;
      const cut = setInterval(() => {
        if (stop.done) c.close();
      }, 50);
      try {
        await c.write(new Uint8Array([0x61]));
        await c.read(new Uint8Array(16));
      } catch { /* cut off */ }
      clearInterval(cut);
      try {
        c.close();
      } catch { /* closed */ }
    }
    return made;
  })).then((m) => m.reduce((a, b) => a + b, 0));
}

/** ms an async call takes, and its result. */
async function timed<T>(f: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await f();
  return { ms: Math.round(performance.now() - t0), value };
}

const stats = (ms: number[]) => {
  const s = [...ms].sort((a, b) => a - b);
  return `median ${s[Math.floor(s.length / 2)]} ms, max ${s[s.length - 1]} ms (n=${s.length})`;
};

Deno.test("flow server: 64 slow clients hold connections; the real flow clients are answered correctly", async () => {
  using sb = libSandbox();
  TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
  const s = server();
  const env = { ...sb.env, NFQLB_FLOW_ADDRESS: s.address };
  const cli = (...args: string[]) => timed(() => nfqlb(args, env));
  /** Four flow-set at once, then flow-list-names, flow-list, flow-list --name, flow-delete at once; checked. */
  const round = async (tag: string): Promise<number[]> => {
    const names4 = ["a", "b", "c", "d"].map((n) => `${tag}${n}`);
    const sets = await Promise.all(
      names4.map((n, i) =>
        cli("flow-set", `--name=${n}`, "--target=nfqlb", "--protocols=tcp", `--dports=${80 + i}`)
      ),
    );
    for (const r of sets) assert.deepEqual(r.value, { code: 0, stdout: "OK\n", stderr: "" });
    const [names, list, one, del] = await Promise.all([
      cli("flow-list-names"),
      cli("flow-list"),
      cli("flow-list", `--name=${names4[1]}`),
      cli("flow-delete", "--name=nosuch"),
    ]);
    assert.deepEqual(names.value, { code: 0, stdout: s.table.listNames(), stderr: "" });
    for (const n of names4) assert.ok(JSON.parse(names.value.stdout).includes(n));
    assert.deepEqual(list.value, { code: 0, stdout: s.table.list(), stderr: "" });
    assert.deepEqual(one.value, { code: 0, stdout: s.table.list(names4[1]), stderr: "" });
    assert.deepEqual(del.value, { code: 0, stdout: "OK\n", stderr: "" });
    return [...sets, names, list, one, del].map((r) => r.ms);
  };
  try {
    // a baseline without load, for the figure
    const base = await round("base-");
    const slow = await slowClients(s.address, 64);
    const t0 = Date.now();
    const loaded = await round("load-");
    // the in-process client (no process start in the figure)
    const inproc = [];
    for (let i = 0; i < 10; i++) {
      const r = await timed(() => flowExchange({ action: "list-names" }, s.address));
      assert.equal(new TextDecoder().decode(r.value), s.table.listNames());
      inproc.push(r.ms);
    }
    const during = Date.now() - t0;
    // every slow client is cut off at its deadline (2 s), none later than the bound
    const cut = await slow.done;
    assert.equal(cut, 64);
    console.log(
      `figure: 64 slow clients: 8 nfqlb flow commands all correct, ${stats(loaded)} ` +
        `(no load: ${stats(base)}); in-process requests ${stats(inproc)}; all within ${during} ms; ` +
        `slow clients cut off: ${cut}/64`,
    );
    // 64 timeouts are one full line, then counted (the summary comes at the window's end or close)
    await s.srv.close();
    const timeouts = s.log.filter((l) => /timed out|sent no complete request/.test(l));
    assert.equal(timeouts.length, 2, s.log.join("\n"));
    assert.match(timeouts[0], /^flow server: client sent no complete request within 2 s, disconnected$/);
    assert.equal(timeouts[1], "flow server: 63 more bad or slow clients in 10 s: request timed out 63");
  } finally {
    await s.srv.close();
  }
});

Deno.test("flow server: 200 simultaneous legitimate clients are all answered (none closed, none refused)", async () => {
  using sb = libSandbox();
  TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
  const s = server();
  try {
    const t0 = performance.now();
    const results = await Promise.allSettled(
      Array.from(
        { length: 200 },
        (_, i) =>
          timed(() =>
            i % 2 === 0
              ? flowExchange({ action: "set", name: `f${i}`, target: "nfqlb", protocols: "udp" }, s.address)
              : flowExchange({ action: "list-names" }, s.address)
          ),
      ),
    );
    const total = Math.round(performance.now() - t0);
    const failed = results.filter((r) => r.status === "rejected");
    assert.deepEqual(failed.map((r) => String((r as PromiseRejectedResult).reason)), []);
    const ok = results.map((r) => (r as PromiseFulfilledResult<{ ms: number; value: Uint8Array }>).value);
    for (const [i, r] of ok.entries()) {
      if (i % 2 === 0) assert.equal(decodeReply(r.value), "OK", `f${i}`);
      else assert.ok(Array.isArray(JSON.parse(new TextDecoder().decode(r.value))));
    }
    assert.equal(JSON.parse(s.table.listNames()).length, 100);
    // and 20 real CLI processes at once
    const env = { ...sb.env, NFQLB_FLOW_ADDRESS: s.address };
    const cli = await Promise.all(Array.from({ length: 20 }, () => nfqlb(["flow-list-names"], env)));
    assert.deepEqual(
      new Set(cli.map((r) => `${r.code} ${r.stderr} ${r.stdout === s.table.listNames()}`)),
      new Set(["0  true"]),
    );
    console.log(
      `figure: 200 simultaneous clients (100 flow-set, 100 list-names): 200/200 answered, ` +
        `${stats(ok.map((r) => r.ms))}, all in ${total} ms; 20 simultaneous nfqlb flow-list-names: 20/20`,
    );
    assert.deepEqual(s.log, []);
  } finally {
    await s.srv.close();
  }
});

Deno.test(
  `flow server: more slow clients than slots (300, reconnecting); legitimate clients wait in the backlog and are answered`,
  async () => {
    using sb = libSandbox();
    TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
    const s = server();
    const stop = { done: false };
    assert.ok(300 > FLOW_MAX_CONNECTIONS);
    const attack = reconnectingSlowClients(s.address, 300, stop);
    try {
      await sleep(300); // the slots are full of slow clients
      const env = { ...sb.env, NFQLB_FLOW_ADDRESS: s.address };
      const lat: number[] = [];
      const cliLat: number[] = [];
      // a controller's pace: one request after the other, for a few seconds, some through the CLI
      for (let i = 0; i < 4; i++) {
        const r = await timed(() =>
          flowExchange({ action: "set", name: `g${i}`, target: "nfqlb", protocols: "tcp" }, s.address)
        );
        assert.equal(decodeReply(r.value), "OK");
        lat.push(r.ms);
        const c = await timed(() => nfqlb(["flow-list-names"], env));
        assert.equal(c.value.code, 0, c.value.stderr);
        assert.deepEqual(JSON.parse(c.value.stdout), Array.from({ length: i + 1 }, (_, k) => `g${k}`));
        cliLat.push(c.ms);
      }
      stop.done = true;
      const made = await attack;
      console.log(
        `figure: 300 reconnecting slow clients (${made} connections), ${FLOW_MAX_CONNECTIONS} slots, ` +
          `${FLOW_REQUEST_TIMEOUT_MS / 1000} s deadline: 4/4 flow-set answered (${stats(lat)}), ` +
          `4/4 nfqlb flow-list-names answered (${stats(cliLat)})`,
      );
      // a queued request waits for a slot, at most a couple of deadlines; generous bound
      assert.ok(Math.max(...lat, ...cliLat) < 9000, `${lat} ${cliLat}`);
      // a flood is a few log lines, not one per client
      await s.srv.close();
      assert.ok(s.log.length <= 3, s.log.join("\n"));
    } finally {
      stop.done = true;
      await attack;
      await s.srv.close();
    }
  },
);

Deno.test("flow server: a request over 16 KiB is refused; bytes after eoc: are ignored; one request per connection", async () => {
  using _sb = libSandbox();
  const s = server();
  const raw = async (data: Uint8Array) => {
    const c = await Deno.connect({ transport: "unix", path: sockPath(s.address) });
    try {
      await c.write(data);
    } catch { /* closed early */ }
    const got: number[] = [];
    const buf = new Uint8Array(4096);
    try {
      for (;;) {
        const n = await c.read(buf);
        if (n === null) break;
        got.push(...buf.subarray(0, n));
      }
    } catch { /* reset */ }
    c.close();
    return new TextDecoder().decode(new Uint8Array(got));
  };
  const enc = (t: string) => new TextEncoder().encode(t);
  try {
    // 20 unknown keys of 1000 bytes: each line is fine, the request is not
    const big = Array.from({ length: 20 }, (_, i) => `k${i}:${"x".repeat(1000)}\n`).join("") + "eoc:\n";
    assert.equal(await raw(enc(big)), "FAIL: request too long\0");
    // a second request on the same connection is never read: one reply, then close
    assert.equal(await raw(enc("action:list-names\neoc:\naction:set\nname:x\neoc:\n")), "[]\n");
  } finally {
    await s.srv.close();
  }
});

/** A fake flowlb: accepts and does `what` with each connection. */
function fakeServer(what: "close" | "reset" | "hold") {
  const address = uniqueAddress();
  const listener = Deno.listen({ transport: "unix", path: sockPath(address) });
  const held: Deno.Conn[] = [];
  const loop = (async () => {
    try {
      for await (const c of listener) {
        if (what === "hold") held.push(c);
        else if (what === "close") {
          // read the request, then close without a word
          const buf = new Uint8Array(65536);
          let text = "";
          while (!text.includes("eoc:")) {
            const n = await c.read(buf).catch(() => null);
            if (n === null) break;
            text += new TextDecoder().decode(buf.subarray(0, n));
          }
          c.close();
        } else {
          // close with the request unread: the kernel resets the client
          await sleep(100);
          c.close();
        }
      }
    } catch { /* closed */ }
  })();
  return {
    address,
    async close() {
      listener.close();
      for (const c of held) c.close();
      await loop;
    },
  };
}

Deno.test("flow clients: no reply is one line on stderr and a non-zero exit, lists included", async () => {
  using sb = libSandbox();
  const lines = (t: string) => t.split("\n").filter((l) => l !== "").length;
  const cases: [string, string[], number, RegExp][] = [];
  const run = async (address: string, args: string[], extra: Record<string, string> = {}) =>
    await timed(() => nfqlb(args, { ...sb.env, NFQLB_FLOW_ADDRESS: address, ...extra }));
  // no server at all
  const none = uniqueAddress();
  for (const args of [["flow-list-names"], ["flow-list"], ["flow-set", "--name=a", "--target=nfqlb"]]) {
    const r = await run(none, args);
    assert.deepEqual(
      r.value,
      { code: 1, stdout: "", stderr: "Connect failed. Connection refused\n" },
      args[0],
    );
  }
  const fakes = { close: fakeServer("close"), reset: fakeServer("reset"), hold: fakeServer("hold") };
  try {
    for (
      const [kind, reason] of [["close", "connection closed"], [
        // whether the client sees the reset depends on whether its request reached the socket before the close
        "reset",
        "(Connection reset by peer|connection closed)",
      ]] as const
    ) {
      const a = fakes[kind].address;
      cases.push(
        [a, ["flow-list-names"], 1, new RegExp(`^No reply from flowlb at ${a}: ${reason}\n$`)],
        [a, ["flow-list"], 1, new RegExp(`^No reply from flowlb at ${a}: ${reason}\n$`)],
        [a, ["trace-flow-list-names"], 1, /^No reply from flowlb at .*: /],
        [a, ["flow-delete", "--name=a"], 255, new RegExp(`^No reply from flowlb at ${a}: ${reason}\n$`)],
      );
    }
    for (const [address, args, code, stderr] of cases) {
      const r = await run(address, args);
      assert.equal(r.value.code, code, `${args.join(" ")} at ${address}: ${JSON.stringify(r.value)}`);
      assert.equal(r.value.stdout, "");
      assert.match(r.value.stderr, stderr, args.join(" "));
      assert.equal(lines(r.value.stderr), 1);
    }
    // an unknown name lists nothing, as upstream: the one request an empty reply answers
    assert.deepEqual((await run(fakes.close.address, ["flow-list", "--name=x"])).value, {
      code: 0,
      stdout: "",
      stderr: "",
    });
    // a server that never answers: the client gives up after NFQLB_FLOW_TIMEOUT seconds
    const held = await run(fakes.hold.address, ["flow-list-names"], { NFQLB_FLOW_TIMEOUT: "1" });
    assert.deepEqual(held.value, {
      code: 1,
      stdout: "",
      stderr: `No reply from flowlb at ${fakes.hold.address}: timed out after 1 s\n`,
    });
    assert.ok(held.ms < 8000, `${held.ms} ms`);
    const heldSet = await run(fakes.hold.address, ["flow-set", "--name=a", "--target=t"], {
      NFQLB_FLOW_TIMEOUT: "1",
    });
    assert.equal(heldSet.value.code, 255);
    assert.match(heldSet.value.stderr, /^No reply from flowlb at .*: timed out after 1 s\n$/);
    assert.deepEqual((await run(none, ["flow-list"], { NFQLB_FLOW_TIMEOUT: "0" })).value, {
      code: 1,
      stdout: "",
      stderr: "Invalid NFQLB_FLOW_TIMEOUT [0] (expected seconds 1..3600)\n",
    });
    console.log(
      `figure: a flow client against a server that never answers exits after ${held.ms} ms (timeout 1 s)`,
    );
    // the library client says the same
    await assert.rejects(() => flowExchange({ action: "list" }, fakes.close.address, 2000), FlowNoReply);
  } finally {
    await Promise.all(Object.values(fakes).map((f) => f.close()));
  }
});

Deno.test("flow clients: a full listen backlog (EAGAIN on connect) is waited out, not an error", async () => {
  // a server that accepts nothing for 1.5 s: its backlog fills up, and later connects fail with EAGAIN
  const address = uniqueAddress();
  const listener = Deno.listen({ transport: "unix", path: sockPath(address) });
  const filler: Deno.Conn[] = [];
  const closeFillers = () => {
    for (const c of filler.splice(0)) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  };
  try {
    for (let i = 0; i < 2000; i++) {
      try {
        filler.push(await Deno.connect({ transport: "unix", path: sockPath(address) }));
      } catch (e) {
        assert.ok(e instanceof Deno.errors.WouldBlock, String(e));
        break;
      }
    }
    const backlog = filler.length;
    assert.ok(backlog >= 100 && backlog < 2000, `backlog ${backlog}`);
    const pending = timed(() => flowExchange({ action: "list-names" }, address, 10_000));
    await sleep(1500);
    // the server catches up: the fillers (gone by now) are accepted and dropped, the request answered
    closeFillers();
    let answered = false;
    for (let i = 0; i < backlog + 10 && !answered; i++) {
      const c = await listener.accept();
      const buf = new Uint8Array(4096);
      const n = await c.read(buf).catch(() => null);
      if (n !== null && new TextDecoder().decode(buf.subarray(0, n)).includes("eoc:")) {
        await c.write(new TextEncoder().encode("[]\n"));
        answered = true;
      }
      c.close();
    }
    assert.ok(answered);
    const r = await pending;
    assert.equal(new TextDecoder().decode(r.value), "[]\n");
    assert.ok(r.ms >= 1000, `${r.ms}`);
    console.log(
      `figure: listen backlog full (${backlog}): the client retried and was answered after ${r.ms} ms`,
    );
  } finally {
    closeFillers();
    listener.close();
  }
});

Deno.test({
  name:
    "real flowlb: 64 slow clients in its namespace; nfqlb flow-set/flow-list/flow-list-names answered correctly",
  ignore: skipUnlessRoot(),
  async fn() {
    await using topo = await Topology.create({ steering: { mode: "nfqueue", queue: 2 } });
    await topo.nfqlb.initTargets();
    const lb = await topo.nfqlb.startFlowLb();
    const slow = topo.spawn(topo.ns.lb, "slow flow clients", [
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      new URL("./slow_flow_clients.ts", import.meta.url).pathname,
      topo.flowAddress,
      "64",
      "15000",
    ]);
    assert.ok(await waitUntil(() => slow.stdout.includes("ready") || slow.status !== undefined, 30_000, 50));
    assert.ok(slow.stdout.includes("ready"), slow.describe());
    const run = (...args: string[]) => timed(() => topo.nfqlb.run(args, { allowFail: true }));
    const shm = topo.shm;
    const set = await run("flow-set", "--name=web", `--target=${shm}`, "--protocols=tcp", "--dports=80");
    assert.deepEqual(set.value, { code: 0, stdout: "OK\n", stderr: "" });
    const [names, list, missing] = await Promise.all([
      run("flow-list-names"),
      run("flow-list", "--name=web"),
      run("flow-list", "--name=nosuch"),
    ]);
    assert.deepEqual(names.value, { code: 0, stdout: '[\n  "web"\n]\n', stderr: "" });
    assert.equal(list.value.code, 0);
    assert.equal(JSON.parse(list.value.stdout).user_ref, shm);
    assert.deepEqual(missing.value, { code: 0, stdout: "", stderr: "" });
    assert.ok(await waitUntil(() => slow.status !== undefined, 30_000, 100), slow.describe());
    const result = JSON.parse(slow.stdout.trim().split("\n").at(-1)!);
    assert.equal(result.cut, 64, slow.describe());
    console.log(
      `figure: real flowlb, 64 slow clients in its netns: flow-set ${set.ms} ms, flow-list-names ${names.ms} ms, ` +
        `flow-list ${list.ms} ms (process start included), all correct; slow clients cut off after ` +
        `${result.ms[0]}–${result.ms[1]} ms`,
    );
    // flowlb logged the first one and counts the rest (the summary comes at the end of its 10 s window)
    const timeouts = lb.stderr.split("\n").filter((l) => l.includes("sent no complete request"));
    assert.equal(timeouts.length, 1, lb.stderr);
  },
});
