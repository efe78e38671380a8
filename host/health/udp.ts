/**
 * The udp check: one datagram (`payload`) to the probe on a connected
 * socket; any reply within the timeout passes. An ICMP port unreachable
 * fails it at once (the connected socket reports ECONNREFUSED).
 */
import type { HealthConfig } from "../config/types.ts";
import { POLLIN, Sock, SOCK_DGRAM } from "./sock.ts";
import type { CheckContext, Probe } from "./types.ts";

const enc = new TextEncoder();

/** The udp checker. */
export async function checkUdp(p: Probe, h: HealthConfig, ctx: CheckContext): Promise<string | null> {
  let s: Sock | undefined;
  try {
    s = Sock.open(p.address, SOCK_DGRAM, 0, p.mark);
    s.connect(p.address, p.port!);
    s.send(enc.encode(h.payload));
    const buf = new Uint8Array(2048);
    for (let round = 0; round < 16; round++) {
      if (await ctx.poller.wait(s.fd, POLLIN, ctx.deadline) === 0) return "udp: no reply: timeout";
      if (s.recv(buf) >= 0) return null;
    }
    return "udp: no reply";
  } catch (e) {
    return e instanceof Error ? `udp: ${e.message}` : String(e);
  } finally {
    s?.close();
  }
}
