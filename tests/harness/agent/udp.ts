/**
 * The agent's UDP client: `udp` (one request per flow on a connected
 * socket bound to the flow's source; only a reply from the destination
 * counts) and `stream` (sequence-numbered probes on long-lived sockets).
 */
import { dec, enc, probe, sleepSync } from "./common.ts";
import { SOCK_DGRAM, Socket } from "../libc.ts";
import type {
  Flow,
  ProbeCommand,
  ProbeResult,
  StreamCommand,
  StreamFlowResult,
  StreamGap,
  StreamResult,
} from "./types.ts";
import { exists } from "../../helpers/fs.ts";

/** A request: the nonce, then (if `size` is larger) a newline and padding up to `size` bytes. */
function request(nonce: string, size = 0): Uint8Array<ArrayBuffer> {
  const head = enc.encode(nonce);
  if (size <= head.length + 1) return head;
  const b = new Uint8Array(size).fill(0x78);
  b.set(head, 0);
  b[head.length] = 0x0a;
  return b;
}

/** One UDP request from `f` to dst:port; the name in the reply that carries `nonce` ("" = none). */
function udpAsk(
  dst: string,
  port: number,
  f: Flow,
  waitMs: number,
  nonce: string,
  errors: number[],
  size?: number,
): string {
  const s = Socket.open(dst, SOCK_DGRAM);
  try {
    s.reuseAddr().timeouts(waitMs).bind(f.src, f.sport);
    if (!s.connect(dst, port) || !s.send(request(nonce, size))) {
      errors.push(s.lastErrno);
      return "";
    }
    const deadline = Date.now() + waitMs;
    for (let i = 0; i < 8 && Date.now() < deadline; i++) {
      const r = s.recv();
      if (r === null) {
        errors.push(s.lastErrno);
        return "";
      }
      const text = dec.decode(r);
      const sp = text.indexOf(" ");
      if (sp > 0 && text.slice(sp + 1) === nonce) return text.slice(0, sp);
    }
    return "";
  } finally {
    s.close();
  }
}

/** `udp`: one request per flow and repetition; the name of the target that answered each. */
export function udpProbe(c: ProbeCommand): ProbeResult {
  return probe(
    c,
    (f, dst, port, waitMs, nonce, errors) => udpAsk(dst, port, f, waitMs, nonce, errors, c.size),
  );
}

export function stream(c: StreamCommand): StreamResult {
  const socks = c.flows.map((f) => {
    const s = Socket.open(f.dst ?? c.dst, SOCK_DGRAM);
    s.reuseAddr().timeouts(c.waitMs).bind(f.src, f.sport);
    if (!s.connect(f.dst ?? c.dst, f.dport ?? c.port)) {
      throw new Error(`connect from ${f.src}:${f.sport}: errno ${s.lastErrno}`);
    }
    return s;
  });
  const flows: StreamFlowResult[] = c.flows.map(() => ({
    sent: 0,
    answered: 0,
    byTarget: {},
    firstAnswered: -1,
    lastAnswered: -1,
    firstLost: -1,
    lastLost: -1,
  }));
  const t0 = Date.now();
  let probes = 0, stale = 0;
  const gaps: StreamGap[] = [];
  let gap: StreamGap | undefined;
  let stoppedBy: StreamResult["stoppedBy"] = "count";
  try {
    while (probes < c.maxProbes) {
      if (Date.now() - t0 > c.maxMs) {
        stoppedBy = "time";
        break;
      }
      if (probes % c.flows.length === 0 && probes > 0) {
        if (probes === c.flows.length) Deno.writeTextFileSync(c.startedFile, "started\n");
        if (exists(c.stopFile)) {
          stoppedBy = "file";
          break;
        }
      }
      const i = probes % c.flows.length;
      const seq = `s${probes}`;
      const sentAt = Date.now();
      const nth = flows[i].sent;
      probes++;
      flows[i].sent++;
      let answered = false;
      if (socks[i].send(enc.encode(seq))) {
        const deadline = Date.now() + c.waitMs;
        for (let k = 0; k < 16 && Date.now() < deadline; k++) {
          const r = socks[i].recv();
          if (r === null) break;
          const text = dec.decode(r);
          const sp = text.indexOf(" ");
          if (sp > 0 && text.slice(sp + 1) === seq) {
            const name = text.slice(0, sp);
            flows[i].answered++;
            flows[i].byTarget[name] = (flows[i].byTarget[name] ?? 0) + 1;
            answered = true;
            break;
          }
          stale++;
        }
      }
      if (!answered && !gap) gap = { from: sentAt, to: sentAt, lost: 0 };
      if (gap && !answered) gap.lost++;
      if (gap && answered) {
        gap.to = sentAt;
        if (gaps.length < 64) gaps.push(gap);
        gap = undefined;
      }
      const fr = flows[i];
      if (answered) {
        if (fr.firstAnswered < 0) fr.firstAnswered = nth;
        fr.lastAnswered = nth;
      } else {
        if (fr.firstLost < 0) fr.firstLost = nth;
        fr.lastLost = nth;
      }
      // pace: probe n is due at t0 + n/pps
      sleepSync(Math.min(1000, t0 + (probes * 1000) / c.pps - Date.now()));
    }
  } finally {
    for (const s of socks) s.close();
  }
  if (gap) {
    gap.to = Date.now();
    if (gaps.length < 64) gaps.push(gap);
  }
  return { probes, ms: Date.now() - t0, stale, flows, stoppedBy, gaps };
}
