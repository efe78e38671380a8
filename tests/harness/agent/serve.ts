/**
 * The agent's `serve`, run in the targets: UDP echo and TCP servers on
 * every given address and port (see ServeCommand), until SIGTERM/SIGINT or
 * the life bound.
 */
import dgram from "node:dgram";
import { dec, enc } from "./common.ts";
import { familyOf } from "../packets.ts";
import { LEN_TAG, type ServeCommand } from "./types.ts";

export async function serve(c: ServeCommand): Promise<void> {
  const closers: (() => void)[] = [];
  const prefix = enc.encode(`${c.name} `);
  const tcpLine = enc.encode(`${c.name}\n`);
  const lenTag = enc.encode(LEN_TAG);
  const loops: Promise<void>[] = [];
  const udpSockets = c.addrs.flatMap((addr) =>
    [c.udpPort, ...(c.extraUdpPorts ?? [])].map((port) => ({ addr, port }))
  );
  for (const { addr, port } of udpSockets) {
    const u = dgram.createSocket(familyOf(addr) === 4 ? "udp4" : "udp6");
    await new Promise<void>((resolve, reject) => {
      u.once("error", reject);
      u.bind(port, addr, () => {
        u.off("error", reject);
        resolve();
      });
    });
    u.on("error", (e) => console.error(`udp ${addr}:${port}: ${e}`));
    u.on("message", (msg, rinfo) => {
      // "<name> <first line of the request>"
      const nl = msg.indexOf(0x0a);
      const line = nl < 0 ? msg : msg.subarray(0, nl);
      const len = startsWith(line, lenTag) ? enc.encode(` ${msg.length}`) : new Uint8Array(0);
      const out = new Uint8Array(prefix.length + line.length + len.length);
      out.set(prefix, 0);
      out.set(line, prefix.length);
      out.set(len, prefix.length + line.length);
      u.send(out, rinfo.port, rinfo.address);
    });
    closers.push(() => u.close());
  }
  const tcpSockets = c.addrs.flatMap((addr) =>
    [c.tcpPort, ...(c.extraTcpPorts ?? [])].map((port) => ({ addr, port }))
  );
  for (const { addr, port } of tcpSockets) {
    const l = Deno.listen({ hostname: addr, port, transport: "tcp" });
    closers.push(() => l.close());
    loops.push(acceptLoop(l, (conn) => {
      conn.write(tcpLine).catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch { /* already closed by a RST */ }
      });
    }));
  }
  for (const addr of c.addrs) {
    for (const port of c.echoTcpPorts ?? []) {
      const l = Deno.listen({ hostname: addr, port, transport: "tcp" });
      closers.push(() => l.close());
      loops.push(acceptLoop(l, (conn) => echoLines(conn, prefix)));
    }
  }
  Deno.writeTextFileSync(c.readyFile, "ready\n");
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, c.maxLifeS * 1000);
    const stop = () => {
      clearTimeout(timer);
      resolve();
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
  });
  for (const close of closers) {
    try {
      close();
    } catch { /* closing anyway */ }
  }
  Deno.exit(0);
}

/** Accepted connections, by {@link acceptLoop}, at most (bounds the loop; a server lives ≤ maxLifeS). */
const MAX_ACCEPTS = 10_000_000;

/**
 * Hands each accepted connection to `onConn` until the listener is closed.
 * A connection reset before it was accepted (a health check's SO_LINGER 0
 * close right after its handshake) makes Deno's accept throw ENOTCONN for
 * that one connection: the loop goes on, or the server would stop
 * accepting while the kernel still completes handshakes for it.
 */
async function acceptLoop(l: Deno.Listener, onConn: (c: Deno.Conn) => void): Promise<void> {
  for (let k = 0; k < MAX_ACCEPTS; k++) {
    let conn: Deno.Conn;
    try {
      conn = await l.accept();
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "ENOTCONN" || code === "ECONNABORTED") continue;
      return; // the listener is closed (BadResource)
    }
    onConn(conn);
  }
}

/** Answers each line with `prefix` + line + "\n" until the client closes (bounded in reads). */
async function echoLines(conn: Deno.Conn, prefix: Uint8Array): Promise<void> {
  const buf = new Uint8Array(4096);
  let pending = "";
  try {
    for (let i = 0; i < 100_000; i++) {
      const n = await conn.read(buf);
      if (n === null) break;
      pending += dec.decode(buf.subarray(0, n), { stream: true });
      for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
        const line = enc.encode(pending.slice(0, nl + 1));
        pending = pending.slice(nl + 1);
        const out = new Uint8Array(prefix.length + line.length);
        out.set(prefix, 0);
        out.set(line, prefix.length);
        for (let off = 0; off < out.length;) off += await conn.write(out.subarray(off));
      }
    }
  } catch { /* reset by the client */ }
  try {
    conn.close();
  } catch { /* already closed */ }
}

function startsWith(b: Uint8Array, head: Uint8Array): boolean {
  return b.length >= head.length && head.every((x, i) => b[i] === x);
}
