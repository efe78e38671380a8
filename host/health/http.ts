/**
 * The http check (keepalived's HTTP_GET, HAProxy's `option httpchk`): an
 * HTTP/1.0 GET of `path` with `Connection: close`; it passes when the status
 * is one of `expect` and, when `body` is set, the first {@link MAX_ANSWER}
 * bytes of the answer contain it. Plain HTTP only.
 */
import type { HealthConfig } from "../config/types.ts";
import { POLLIN } from "./sock.ts";
import { connectTcp } from "./tcp.ts";
import type { CheckContext, Probe } from "./types.ts";

/** The most of an answer that is read (headers and body). */
export const MAX_ANSWER = 65536;

const enc = new TextEncoder(), dec = new TextDecoder();

/** The request of a check. */
export function httpRequest(p: Probe, h: HealthConfig): Uint8Array<ArrayBuffer> {
  const host = p.family === 6 ? `[${p.address}]` : p.address;
  return enc.encode(
    `GET ${h.path} HTTP/1.0\r\nHost: ${host}:${p.port}\r\nUser-Agent: nfqlb-health\r\nConnection: close\r\n\r\n`,
  );
}

/** Judges an answer (possibly cut at MAX_ANSWER or by the deadline): null when it passes, else why not. */
export function judgeHttp(answer: string, h: HealthConfig, complete: boolean): string | null {
  const m = /^HTTP\/\d\.\d (\d{3})/.exec(answer);
  if (!m) {
    return answer.length === 0
      ? "http: no answer"
      : `http: not an HTTP answer: ${JSON.stringify(answer.slice(0, 40))}`;
  }
  const status = Number(m[1]);
  if (!h.expect.includes(status)) return `http: status ${status}, expected ${h.expect.join(" or ")}`;
  if (h.body !== null && !answer.includes(h.body)) {
    return `http: status ${status} but the body has no ${JSON.stringify(h.body)}${
      complete ? "" : " (in what came in time)"
    }`;
  }
  return null;
}

/** The http checker. */
export async function checkHttp(p: Probe, h: HealthConfig, ctx: CheckContext): Promise<string | null> {
  let s;
  try {
    s = await connectTcp(p, ctx.deadline, ctx.poller);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  try {
    const req = httpRequest(p, h);
    if (s.send(req) !== req.length) return "http: send: short write";
    const buf = new Uint8Array(MAX_ANSWER);
    let got = 0, eof = false;
    // bounded: each round reads at least one byte or waits until the deadline
    for (let round = 0; round < MAX_ANSWER && got < MAX_ANSWER; round++) {
      const n = s.recv(buf.subarray(got));
      if (n === 0) {
        eof = true;
        break;
      }
      if (n > 0) {
        got += n;
        // the status line decides alone when no body is asked for
        if (h.body === null && buf.subarray(0, got).includes(0x0a)) break;
        continue;
      }
      if (await ctx.poller.wait(s.fd, POLLIN, ctx.deadline) === 0) {
        if (got === 0) return "http: no answer: timeout";
        break;
      }
    }
    return judgeHttp(dec.decode(buf.subarray(0, got)), h, eof);
  } catch (e) {
    return e instanceof Error ? `http: ${e.message}` : String(e);
  } finally {
    s.close();
  }
}
