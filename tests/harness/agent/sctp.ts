/** The agent's SCTP: `sctp`, crafted INIT packets on a raw socket (protocol 132). */
import { sleepSync } from "./common.ts";
import { IPPROTO_SCTP, SOCK_RAW, Socket } from "../libc.ts";
import { sctpInit } from "../packets.ts";
import type { SctpCommand, SentResult } from "./types.ts";

export function sendSctp(c: SctpCommand): SentResult {
  const s = Socket.open(c.from, SOCK_RAW, IPPROTO_SCTP);
  let sent = 0, failed = 0;
  try {
    s.timeouts(1000).bind(c.from, 0);
    for (let k = 0; k < (c.repeat ?? 1); k++) {
      for (const p of c.ports) {
        if (s.sendTo(sctpInit(p.sport, p.dport) as Uint8Array<ArrayBuffer>, c.dst)) sent++;
        else failed++;
        sleepSync(c.gapMs ?? 2);
      }
    }
  } finally {
    s.close();
  }
  return { sent, failed };
}
