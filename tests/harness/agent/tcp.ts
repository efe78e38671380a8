/**
 * The agent's TCP client: `tcp` (one connection per flow from the flow's
 * source, closed with RST so the 4-tuple is free again at once) and `conns`
 * (long-lived connections to an echo port, one round per go file).
 */
import { dec, enc, probe, sleepSync } from "./common.ts";
import { SOCK_STREAM, Socket } from "../libc.ts";
import type { ConnsCommand, ConnsResult, ConnsRound, Flow, ProbeCommand, ProbeResult } from "./types.ts";
import { exists } from "../../helpers/fs.ts";

/** One TCP connection from `f` to dst:port; the first line the server wrote ("" = none). */
function tcpAsk(dst: string, port: number, f: Flow, waitMs: number, errors: number[]): string {
  const s = Socket.open(dst, SOCK_STREAM);
  try {
    s.reuseAddr().lingerZero().timeouts(waitMs).bind(f.src, f.sport);
    if (!s.connect(dst, port)) {
      errors.push(s.lastErrno);
      return "";
    }
    let text = "";
    for (let i = 0; i < 16 && text.length < 64; i++) {
      const r = s.recv(64);
      if (r === null) {
        errors.push(s.lastErrno);
        break;
      }
      if (r.length === 0) break;
      text += dec.decode(r);
    }
    return text.split("\n")[0].trim();
  } finally {
    s.close();
  }
}

/** `tcp`: one connection per flow and repetition; the name of the target that answered each. */
export function tcpProbe(c: ProbeCommand): ProbeResult {
  return probe(c, (f, dst, port, waitMs, _nonce, errors) => tcpAsk(dst, port, f, waitMs, errors));
}

/** One line on a live connection; the name in the reply, or "" (with `why`) when it is broken. */
function connAsk(s: Socket, line: string, waitMs: number): { name: string; why: number } {
  if (!s.send(enc.encode(`${line}\n`))) return { name: "", why: s.lastErrno || -1 };
  const deadline = Date.now() + waitMs;
  let text = "";
  for (let k = 0; k < 16 && !text.includes("\n") && Date.now() < deadline; k++) {
    const r = s.recv(256);
    if (r === null) return { name: "", why: s.lastErrno || -1 };
    if (r.length === 0) return { name: "", why: -1 };
    text += dec.decode(r);
  }
  const reply = text.split("\n")[0];
  const sp = reply.indexOf(" ");
  if (sp <= 0 || reply.slice(sp + 1) !== line) return { name: "", why: -2 };
  return { name: reply.slice(0, sp), why: 0 };
}

export function conns(c: ConnsCommand): ConnsResult {
  const t0 = Date.now();
  const errnos = c.flows.map(() => 0);
  const socks: (Socket | null)[] = c.flows.map((f, i) => {
    const dst = f.dst ?? c.dst;
    const s = Socket.open(dst, SOCK_STREAM);
    // RST on close: the 4-tuple is free again at once for the next test
    s.reuseAddr().lingerZero().timeouts(c.waitMs).bind(f.src, f.sport);
    if (s.connect(dst, f.dport ?? c.port)) return s;
    errnos[i] = s.lastErrno || -1;
    s.close();
    return null;
  });
  const doRound = (n: number) => {
    const targets = socks.map((s, i) => {
      if (!s) return "";
      const r = connAsk(s, `r${n}.${i}`, c.waitMs);
      if (r.name === "") {
        errnos[i] = r.why;
        s.close();
        socks[i] = null;
      }
      return r.name;
    });
    const out: ConnsRound = { round: n, targets, errnos: [...errnos] };
    const file = `${c.dir}/round-${n}.json`;
    Deno.writeTextFileSync(`${file}.tmp`, JSON.stringify(out));
    Deno.renameSync(`${file}.tmp`, file);
  };
  let rounds = 0;
  let stoppedBy: ConnsResult["stoppedBy"] = "count";
  try {
    doRound(rounds++);
    const maxPolls = Math.ceil(c.maxMs / 10) + 1;
    let polls = 0;
    while (rounds <= c.maxRounds && stoppedBy === "count") {
      if (exists(`${c.dir}/stop`)) stoppedBy = "file";
      else if (exists(`${c.dir}/go-${rounds}`)) doRound(rounds++);
      else if (Date.now() - t0 > c.maxMs || ++polls > maxPolls) stoppedBy = "time";
      else sleepSync(10);
    }
  } finally {
    for (const s of socks) s?.close();
  }
  return { rounds, stoppedBy };
}
