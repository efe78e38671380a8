/**
 * The icmp check: one echo request on a raw socket (the agent runs as root;
 * the unprivileged ping sockets depend on net.ipv4.ping_group_range, which a
 * new network namespace leaves closed), connected to the probe's address so
 * that only its replies are read; the echo reply with our id and sequence
 * within the timeout passes. Replies of other pings on the host are skipped.
 */
import type { HealthConfig } from "../config/types.ts";
import { POLLIN, Sock, SOCK_RAW } from "./sock.ts";
import type { CheckContext, Probe } from "./types.ts";

const IPPROTO_ICMP = 1, IPPROTO_ICMPV6 = 58;
let seq = 0;

/** The Internet checksum of `b`. */
export function inetChecksum(b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += (b[i] << 8) | b[i + 1];
  if (b.length % 2) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An echo request (ICMPv4 with its checksum; ICMPv6's is the kernel's). */
export function echoRequest(family: 4 | 6, id: number, sq: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(8 + 16);
  const v = new DataView(b.buffer);
  b[0] = family === 4 ? 8 : 128;
  v.setUint16(4, id);
  v.setUint16(6, sq);
  b.set(new TextEncoder().encode("nfqlb-health-pin"), 8);
  if (family === 4) v.setUint16(2, inetChecksum(b));
  return b;
}

/** Whether `pkt` (as a raw socket reads it: ICMPv4 after its IP header) is our echo reply. */
export function isEchoReply(family: 4 | 6, pkt: Uint8Array, id: number, sq: number): boolean {
  const off = family === 4 ? (pkt[0] & 0x0f) * 4 : 0;
  if (pkt.length < off + 8) return false;
  const v = new DataView(pkt.buffer, pkt.byteOffset + off);
  return pkt[off] === (family === 4 ? 0 : 129) && v.getUint16(4) === id && v.getUint16(6) === sq;
}

/** The icmp checker. */
export async function checkIcmp(p: Probe, _h: HealthConfig, ctx: CheckContext): Promise<string | null> {
  let s: Sock | undefined;
  try {
    s = Sock.open(p.address, SOCK_RAW, p.family === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6, p.mark);
    s.connect(p.address, 0);
    const id = (Deno.pid + ctx.target.fwmark) & 0xffff, sq = seq = (seq + 1) & 0xffff;
    s.send(echoRequest(p.family, id, sq));
    const buf = new Uint8Array(1500);
    for (let round = 0; round < 64; round++) {
      if (await ctx.poller.wait(s.fd, POLLIN, ctx.deadline) === 0) return "icmp: no echo reply: timeout";
      for (let k = 0; k < 64; k++) {
        const n = s.recv(buf);
        if (n < 0) break;
        if (isEchoReply(p.family, buf.subarray(0, n), id, sq)) return null;
      }
    }
    return "icmp: no echo reply";
  } catch (e) {
    return e instanceof Error ? `icmp: ${e.message}` : String(e);
  } finally {
    s?.close();
  }
}
