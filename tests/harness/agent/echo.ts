/**
 * The agent's `echo` (targets): a UDP echo server like `serve`'s, answering
 * "<name> <first line of the request>" from the address the request came to,
 * but on libc sockets with a 4 MB receive buffer and a poll loop. `serve`'s
 * node:dgram sockets keep the default buffer (a larger one makes each of
 * their receives slower), so on a loaded machine a target descheduled for
 * some milliseconds drops what a fixed-rate client (`blast`) keeps sending;
 * this one holds seconds of that traffic. Runs until `maxLifeS` (or a
 * signal, whose default action ends it).
 */
import { dec, enc } from "./common.ts";
import { EAGAIN, EINTR, MSG_DONTWAIT, pollIn, SOCK_DGRAM, Socket } from "../libc.ts";
import type { EchoCommand } from "./types.ts";

/** Receive buffer of each socket, bytes (doubled by the kernel). */
const RCVBUF = 4 << 20;
/** Most requests answered from one socket per wake-up. */
const MAX_READS = 256;

export function echo(c: EchoCommand): void {
  const socks = c.addrs.map((a) => Socket.open(a, SOCK_DGRAM).reuseAddr().rcvbuf(RCVBUF).bind(a, c.port));
  const fds = socks.map((s) => s.fd);
  const ready = new Uint8Array(fds.length);
  const buf = new Uint8Array(2048);
  const from = new Uint8Array(128);
  const fromLen = new Uint32Array(1);
  const prefix = `${c.name} `;
  Deno.writeTextFileSync(c.readyFile, "ready\n");
  const end = Date.now() + c.maxLifeS * 1000;
  while (Date.now() < end) {
    pollIn(fds, 100, ready);
    socks.forEach((s, i) => {
      if (!ready[i]) return;
      for (let k = 0; k < MAX_READS; k++) {
        const n = s.recvFrom(buf, from, fromLen, MSG_DONTWAIT);
        if (n < 0) {
          if (s.lastErrno !== EAGAIN && s.lastErrno !== EINTR) {
            console.error(`echo: recv errno ${s.lastErrno}`);
          }
          return;
        }
        const text = dec.decode(buf.subarray(0, n));
        const nl = text.indexOf("\n");
        s.sendToAddr(enc.encode(prefix + (nl < 0 ? text : text.slice(0, nl))), from, fromLen[0]);
      }
    });
  }
  for (const s of socks) s.close();
}
