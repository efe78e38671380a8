/**
 * The agent's ICMP: `ping` (echo requests on raw sockets, counting the
 * replies) and `icmp` (crafted ICMP frag-needed / ICMPv6 packet-too-big
 * errors that quote a flow, sent to the VIP).
 */
import { enc, sleepSync } from "./common.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_RAW, SOCK_RAW, Socket } from "../libc.ts";
import { familyOf, icmp6PacketTooBig, icmpFragNeeded, inetChecksum } from "../packets.ts";
import type { IcmpCommand, PingCommand, PingResult, SentResult } from "./types.ts";

/** An ICMP (type 8) or ICMPv6 (type 128) echo request; the kernel fills the ICMPv6 checksum. */
function echoRequest(v6: boolean, id: number, seq: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  b[0] = v6 ? 128 : 8;
  v.setUint16(4, id);
  v.setUint16(6, seq);
  b.set(enc.encode("e2eping!"), 8);
  if (!v6) v.setUint16(2, inetChecksum(b));
  return b;
}

/** One echo request on a connected raw socket; true when its reply came within `waitMs`. */
function echo(s: Socket, v6: boolean, id: number, seq: number, waitMs: number, errors: number[]): boolean {
  if (!s.send(echoRequest(v6, id, seq))) {
    errors.push(s.lastErrno);
    return false;
  }
  const deadline = Date.now() + waitMs;
  for (let k = 0; k < 16 && Date.now() < deadline; k++) {
    const r = s.recv();
    if (r === null) {
      errors.push(s.lastErrno);
      return false;
    }
    // IPv4 raw sockets deliver the IP header too
    const icmp = v6 ? r : r.subarray((r[0] & 0x0f) * 4);
    if (icmp.length < 8) continue;
    const v = new DataView(icmp.buffer, icmp.byteOffset, icmp.byteLength);
    if (icmp[0] === (v6 ? 129 : 0) && v.getUint16(4) === id && v.getUint16(6) === seq) return true;
  }
  return false;
}

export function ping(c: PingCommand): PingResult {
  const waitMs = c.waitMs ?? 1000;
  const errors: number[] = [];
  const replies = c.pings.map(({ src, dst }, i) => {
    const v6 = familyOf(dst) === 6;
    const id = (0x4e00 + i * 7 + (Deno.pid & 0xff) * 131) & 0xffff;
    const s = Socket.open(dst, SOCK_RAW, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
    let n = 0;
    try {
      s.timeouts(waitMs).bind(src, 0);
      if (!s.connect(dst, 0)) {
        errors.push(s.lastErrno);
        return 0;
      }
      // a source stops at its first unanswered request (so a failing check ends soon)
      for (let seq = 1; seq <= (c.count ?? 3) && echo(s, v6, id, seq, waitMs, errors); seq++) n++;
      return n;
    } finally {
      s.close();
    }
  });
  return { replies, errors: errors.slice(0, 10) };
}

export function sendIcmp(c: IcmpCommand): SentResult {
  const v6 = familyOf(c.from) === 6;
  const s = v6 ? Socket.open(c.from, SOCK_RAW, IPPROTO_ICMPV6) : Socket.open(c.from, SOCK_RAW, IPPROTO_RAW);
  let sent = 0, failed = 0;
  try {
    s.timeouts(1000);
    if (v6) s.bind(c.from, 0);
    for (const f of c.flows) {
      const pkt = v6 ? icmp6PacketTooBig(f) : icmpFragNeeded(f, { from: c.from });
      if (s.sendTo(pkt as Uint8Array<ArrayBuffer>, f.vip)) sent++;
      else failed++;
      sleepSync(c.gapMs ?? 2);
    }
  } finally {
    s.close();
  }
  return { sent, failed };
}
