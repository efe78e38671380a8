/**
 * The agent's `blast` (client): sequence-numbered UDP datagrams at a fixed
 * rate that does not depend on the answers (unlike `stream`, which waits for
 * each one), so traffic keeps flowing at the same rate while the path
 * changes under it (an lb restarting). Answers are collected on the same
 * non-blocking sockets between sends and counted per time bucket of their
 * datagram's send time, so a test can count what was sent and answered in
 * each phase of its own time line.
 */
import { dec, enc } from "./common.ts";
import { EAGAIN, EINTR, MSG_DONTWAIT, pollIn, SOCK_DGRAM, Socket } from "../libc.ts";
import type { BlastCommand, BlastResult } from "./types.ts";
import { exists } from "../../helpers/fs.ts";

/** Most datagrams one blast may send (bounds its memory: 5 bytes each). */
const MAX_DATAGRAMS = 4_000_000;
/**
 * The most the agent catches up after a stall, in ms of traffic: what it
 * could not send in a longer stall is skipped, not sent in a burst, so no
 * window of time carries more than its share plus this.
 */
const MAX_CATCH_UP_MS = 10;
/** Most answers read from one socket per wake-up. */
const MAX_READS = 64;

export function blast(c: BlastCommand): BlastResult {
  const bucketMs = c.bucketMs ?? 10;
  const total = Math.min(MAX_DATAGRAMS, Math.ceil((c.pps * c.durationMs) / 1000) + 1);
  const nBuckets = Math.ceil(c.durationMs / bucketMs) + 2;
  const sent = new Array<number>(nBuckets).fill(0);
  const answered = new Array<number>(nBuckets).fill(0);
  const byTarget: Record<string, number[]> = {};
  const bucketOf = new Uint32Array(total);
  const seen = new Uint8Array(total);
  const socks = c.flows.map((f) => {
    const s = Socket.open(f.dst ?? c.dst, SOCK_DGRAM);
    s.reuseAddr().timeouts(50).bind(f.src, f.sport);
    if (!s.connect(f.dst ?? c.dst, f.dport ?? c.port)) {
      throw new Error(`connect from ${f.src}:${f.sport}: errno ${s.lastErrno}`);
    }
    return s;
  });
  const fds = socks.map((s) => s.fd);
  const ready = new Uint8Array(fds.length);
  const buf = new Uint8Array(512);
  const errors: number[] = [];
  let duplicates = 0, stray = 0, sendErrors = 0, seq = 0;
  let stoppedBy: BlastResult["stoppedBy"] = "time";
  const burst = Math.max(1, Math.ceil((c.pps * MAX_CATCH_UP_MS) / 1000));
  let skippedMs = 0; // schedule time given up after stalls
  let sendEnd = -1; // ms after start when sending stopped
  const start = performance.now();
  const t0 = Date.now();
  const receive = (s: Socket) => {
    for (let k = 0; k < MAX_READS; k++) {
      const n = s.recvInto(buf, MSG_DONTWAIT);
      if (n < 0) {
        // EAGAIN: drained; anything else is an error the kernel queued for the connected socket
        if (s.lastErrno !== EAGAIN && s.lastErrno !== EINTR && errors.length < 10) errors.push(s.lastErrno);
        return;
      }
      const text = dec.decode(buf.subarray(0, n));
      const sp = text.indexOf(" ");
      const q = sp > 0 && text[sp + 1] === "b" ? Number(text.slice(sp + 2)) : NaN;
      if (!Number.isInteger(q) || q < 0 || q >= seq) {
        stray++;
        continue;
      }
      if (seen[q]) {
        duplicates++;
        continue;
      }
      seen[q] = 1;
      const b = bucketOf[q];
      answered[b]++;
      const name = text.slice(0, sp);
      (byTarget[name] ??= new Array<number>(nBuckets).fill(0))[b]++;
    }
  };
  // bounded: sending ends by durationMs (or the stop file), receiving waitMs later
  for (let iter = 0;; iter++) {
    const now = performance.now() - start;
    if (sendEnd < 0) {
      if (now >= c.durationMs || seq >= total) {
        sendEnd = now;
      } else if (c.stopFile && iter % 16 === 0 && exists(c.stopFile)) {
        stoppedBy = "file";
        sendEnd = now;
      } else {
        let due = Math.floor(((now - skippedMs) * c.pps) / 1000) + 1;
        if (due - seq > burst) {
          skippedMs += ((due - seq - burst) * 1000) / c.pps;
          due = seq + burst;
        }
        due = Math.min(total, due);
        const b = Math.min(nBuckets - 1, Math.floor(now / bucketMs));
        for (; seq < due; seq++) {
          bucketOf[seq] = b;
          sent[b]++;
          if (!socks[seq % socks.length].send(enc.encode(`b${seq}`))) {
            sendErrors++;
            if (errors.length < 10) errors.push(socks[seq % socks.length].lastErrno);
          }
        }
        if (c.startedFile && iter === 0) Deno.writeTextFileSync(c.startedFile, "started\n");
      }
    } else if (now >= sendEnd + c.waitMs) {
      break;
    }
    // wait for answers until the next datagram is due (at least 1 ms: poll's resolution)
    const next = sendEnd < 0 ? ((seq + 1) * 1000) / c.pps + skippedMs - now : 5;
    pollIn(fds, Math.min(5, Math.max(1, Math.ceil(next))), ready);
    for (let i = 0; i < socks.length; i++) if (ready[i]) receive(socks[i]);
  }
  for (const s of socks) s.close();
  let last = sent.length;
  while (last > 0 && sent[last - 1] === 0) last--;
  const trim = (a: number[]) => a.slice(0, last);
  return {
    t0,
    bucketMs,
    sent: trim(sent),
    answered: trim(answered),
    byTarget: Object.fromEntries(Object.entries(byTarget).map(([k, v]) => [k, trim(v)])),
    duplicates,
    stray,
    sendErrors,
    errors,
    stoppedBy,
  };
}
