/**
 * The trace server (dataplane/trace_server.ts) and the log (core/log.ts)
 * in-process, with real abstract unix sockets and a temp NFQLB_SHM_DIR:
 * greeting, per-client masks, several clients at once, session end on input
 * or EOF, the shm mask reset when the last client leaves, log levels from the
 * shm and the `log` copy, bind errors, and the `nfqlb trace` client against it.
 */
import assert from "node:assert/strict";
import { log, LOG_LEVEL } from "../../core/log.ts";
import { logLevel, traceMask } from "../../core/trace_shm.ts";
import { startTracing, type TraceService } from "../../dataplane/trace_server.ts";
import { TRACE } from "../../dataplane/trace_format.ts";
import { OFFLOAD_TRACE_NOTE } from "../../dataplane/offload.ts";
import { NFQLB } from "../harness/paths.ts";

/** Runs fn with a fresh shm dir and a unique trace address; always closes the service. */
async function withTracing(
  fn: (svc: TraceService, address: string) => Promise<void>,
  note?: string,
): Promise<void> {
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-trace-srv-" });
  const before = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", dir);
  const address = `unix:nfqlb-trace-test-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const svc = startTracing(address, undefined, note);
  try {
    await fn(svc, address);
  } finally {
    await svc.close();
    if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
}

/** A raw client: set the shm mask, connect (as `nfqlb trace` does); read lines. */
class Client {
  conn!: Deno.Conn;
  text = "";
  #dec = new TextDecoder();
  #done!: Promise<void>;

  static async open(address: string, mask: number): Promise<Client> {
    traceMask(mask);
    const c = new Client();
    c.conn = await Deno.connect({ transport: "unix", path: "\0" + address.slice(5) });
    c.#done = (async () => {
      const buf = new Uint8Array(4096);
      try {
        for (;;) {
          const n = await c.conn.read(buf);
          if (n === null) break;
          c.text += c.#dec.decode(buf.subarray(0, n), { stream: true });
        }
      } catch { /* closed */ }
    })();
    await c.until((t) => t.includes("Trace active"));
    return c;
  }

  /** Waits (bounded) until the text satisfies `cond`. */
  async until(cond: (text: string) => boolean, ms = 5000): Promise<void> {
    for (let i = 0; i < ms / 10 && !cond(this.text); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(cond(this.text), `client text:\n${this.text}`);
  }

  /** Resolves when the server has closed the connection. */
  get closed(): Promise<void> {
    return this.#done;
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  for (let i = 0; i < ms / 10 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond());
}

Deno.test("trace server: two clients with their own masks, lines by bit, shm mask reset by the last", async () => {
  await withTracing(async (svc, address) => {
    assert.equal(svc.mask, 0);
    svc.line(TRACE.packet, "nobody hears this");
    const a = await Client.open(address, TRACE.packet);
    const b = await Client.open(address, TRACE.flows | TRACE.log);
    assert.equal(`${a.text}`, "Trace active, mask=0x00000002\n");
    assert.ok(b.text.startsWith("Trace active, mask=0x00000041\n"), b.text);
    await until(() => svc.clients === 2);
    assert.equal(svc.mask, TRACE.packet | TRACE.flows | TRACE.log, "the dataplane records the union");
    svc.emit([
      { bits: TRACE.packet, text: "Load-balance packet. fw=101" },
      { bits: TRACE.flows, text: "Match for trace-flow: x" },
      { bits: TRACE.packet | TRACE.sctp, text: "Using LB; y" },
    ]);
    await a.until((t) => t.includes("Using LB; y"));
    await b.until((t) => t.includes("Match for trace-flow: x"));
    assert.equal(`${a.text}`, "Trace active, mask=0x00000002\nLoad-balance packet. fw=101\nUsing LB; y\n");
    assert.ok(!b.text.includes("Load-balance"), b.text);
    // log lines go to stderr at their level and to `log` clients
    log.warning("a warning for the log client");
    await b.until((t) => t.includes("a warning for the log client\n"));
    assert.ok(!a.text.includes("a warning"));
    // any input ends a session; the other stays, and so does the shm mask
    await a.conn.write(new TextEncoder().encode("x"));
    await a.closed;
    await until(() => svc.clients === 1);
    assert.equal(svc.mask, TRACE.flows | TRACE.log);
    assert.equal(traceMask(), TRACE.flows | TRACE.log, "shm mask kept while a client remains");
    // EOF ends the last one: the shm mask and the dataplane's mask go to 0
    b.close();
    await until(() => svc.clients === 0);
    assert.equal(svc.mask, 0);
    assert.equal(traceMask(), 0);
  });
});

Deno.test("log: level read from the shm on every call (loglevel takes effect at once)", async () => {
  await withTracing(async (_svc, address) => {
    const c = await Client.open(address, TRACE.log);
    assert.equal(logLevel(), 5);
    assert.ok(log.enabled("notice") && !log.enabled("info"));
    log.info("info at level 5: not written");
    logLevel(7);
    assert.ok(log.enabled("debug"));
    log.debug("debug at level 7");
    logLevel(LOG_LEVEL.error);
    log.warning("warning at level 3: not written");
    logLevel(5);
    await c.until((t) => t.includes("debug at level 7\n"));
    assert.ok(!c.text.includes("not written"), c.text);
    c.close();
  });
});

Deno.test("trace server: bind errors and bad addresses as upstream", async () => {
  await withTracing((_svc, address) => {
    assert.throws(() => startTracing(address), /^NfqlbError: Trace server bind: Address already in use$/);
    assert.throws(
      () => startTracing("udp:1.2.3.4:5"),
      /^NfqlbError: Failed to parse address \[udp:1.2.3.4:5\]$/,
    );
    return Promise.resolve();
  });
});

Deno.test("nfqlb trace: Mask= line, the server's greeting, the lines, exit 0 when the LB goes away", async () => {
  await withTracing(async (svc, address) => {
    const child = new Deno.Command(NFQLB, {
      args: ["trace", "--selection=packet,frag", `--trace_address=${address}`],
      env: { NFQLB_SHM_DIR: Deno.env.get("NFQLB_SHM_DIR")! },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = child.output();
    try {
      await until(() => svc.clients === 1, 30000);
      assert.equal(svc.mask, TRACE.packet | TRACE.frag);
      svc.emit([{ bits: TRACE.frag, text: "First fragment" }, { bits: TRACE.flows, text: "not selected" }]);
      svc.line(TRACE.packet, "Load-balance packet. fw=102");
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await svc.close(); // the LB stops: the client sees EOF
    }
    const r = await out;
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    assert.equal(
      new TextDecoder().decode(r.stdout),
      "Mask=0x00000006\nTrace active, mask=0x00000006\nFirst fragment\nLoad-balance packet. fw=102\n",
    );
  });
});

Deno.test("trace server: with a note (lb --offload=auto) every client gets it right after the greeting", async () => {
  await withTracing(async (_svc, address) => {
    const a = await Client.open(address, TRACE.packet);
    await a.until((t) => t.includes(OFFLOAD_TRACE_NOTE));
    assert.equal(a.text, `Trace active, mask=0x00000002\n${OFFLOAD_TRACE_NOTE}\n`);
    a.close();
    await a.closed;
  }, OFFLOAD_TRACE_NOTE);
});
