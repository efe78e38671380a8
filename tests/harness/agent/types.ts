/**
 * Traffic agent for the end-to-end tests, run inside a namespace:
 *
 *   ip netns exec NS deno run -A tests/harness/agent/types.ts '<json command>'
 *
 * It prints one JSON line with the result and exits 0 (or prints a message
 * and exits 2). Commands (see {@link AgentCommand}):
 *
 * - `serve` (targets): a UDP echo server and a TCP server on every given
 *   address (the VIPs). UDP replies "<name> <first line of the request>" from the VIP (the
 *   sockets are bound to it, so DSR replies carry the VIP as source); a first
 *   line that starts with {@link LEN_TAG} gets " <bytes received>" appended. TCP
 *   writes "<name>\n" and closes. Runs until SIGTERM/SIGINT or `maxLifeS`.
 *   On `echoTcpPorts` TCP answers every line with "<name> <line>\n" and keeps
 *   the connection open until the client closes it (long-lived connections).
 * - `udp` / `tcp` (client): one request per flow (and repetition) from a
 *   fixed source address and port; returns which target answered each.
 *   UDP sockets are connected, so only a reply from VIP:port counts; TCP
 *   closes with RST so the same 4-tuple can connect again at once.
 * - `stream` (client): sequence-numbered UDP probes, round-robin over the
 *   flows, on long-lived connected sockets, until a stop file appears (or a
 *   time/probe bound); counts answered probes per flow and target. No retries.
 * - `conns` (client): long-lived TCP connections, one per flow, to an echo
 *   port; round 0 right after connecting, then one round per `go-<n>` file
 *   (see {@link ConnsCommand}): each live connection sends a line and reads
 *   the reply that names its target. A connection that fails once is closed.
 * - `ping` (client): ICMP / ICMPv6 echo requests from a source address to
 *   a destination (per pair) on raw sockets; counts the echo replies (a
 *   pair stops at its first unanswered request).
 * - `icmp` (client): one crafted ICMP frag-needed / ICMPv6 packet-too-big
 *   per quoted flow, sent to the VIP on a raw socket.
 * - `sctp` (client): crafted SCTP INIT packets on a raw socket (proto 132).
 * - `sizes` (client): per flow, UDP datagrams of the given sizes on one
 *   connected socket (the kernel fragments the big ones); returns, per
 *   datagram, the target that answered and the length it received.
 * - `frags` (client): UDP datagrams fragmented here and sent as IP packets
 *   on header-included raw sockets, in a chosen order and (SO_MARK) per
 *   fragment over a chosen route; the answer is awaited on a UDP socket
 *   bound to the datagram's source. Returns target and received length.
 *
 * Every blocking call has a timeout and every loop a count or time bound.
 */
import dgram from "node:dgram";
import {
  familyOf,
  icmp6PacketTooBig,
  icmpFragNeeded,
  inetChecksum,
  type QuotedFlow,
  sctpInit,
  udpFragments,
} from "../packets.ts";
import {
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_RAW,
  IPPROTO_SCTP,
  SOCK_DGRAM,
  SOCK_RAW,
  SOCK_STREAM,
  Socket,
} from "../libc.ts";
import { exists } from "../../helpers/fs.ts";

/**
 * A client flow: source address and port. The destination is the command's
 * unless the flow names its own (`dst`, `dport`; honoured by `udp`, `tcp`
 * and `stream`).
 */
export interface Flow {
  src: string;
  sport: number;
  dst?: string;
  dport?: number;
}

/** `serve`: servers on `addrs`. */
export interface ServeCommand {
  cmd: "serve";
  name: string;
  addrs: string[];
  udpPort: number;
  tcpPort: number;
  /** Upper bound of the server's life, seconds. */
  maxLifeS: number;
  /** Written once every socket is bound. */
  readyFile: string;
  /** More UDP / TCP ports served the same way on every address (default none). */
  extraUdpPorts?: number[];
  extraTcpPorts?: number[];
  /** TCP ports that echo lines ("<name> <line>") on connections kept open (default none). */
  echoTcpPorts?: number[];
}

/** `udp` / `tcp`: one request per flow and repetition. */
export interface ProbeCommand {
  cmd: "udp" | "tcp";
  dst: string;
  port: number;
  flows: Flow[];
  /** Requests per flow (default 1). */
  repeat?: number;
  /** Per-request timeout, ms (default 1000). */
  waitMs?: number;
  /** UDP request size in bytes (default: just the nonce; > 1472 makes IPv4 fragments). */
  size?: number;
}

/** `stream`: sequence-numbered UDP probes until `stopFile` exists. */
export interface StreamCommand {
  cmd: "stream";
  dst: string;
  port: number;
  flows: Flow[];
  /** Per-probe timeout, ms. */
  waitMs: number;
  /** Probe rate (all flows together), per second. */
  pps: number;
  /** Written after the first round of probes. */
  startedFile: string;
  /** Stop when this file exists. */
  stopFile: string;
  /** Hard bounds. */
  maxMs: number;
  maxProbes: number;
}

/**
 * `conns`: one TCP connection per flow to an echo port (see
 * {@link ServeCommand.echoTcpPorts}), kept open. Round 0 runs right after
 * connecting; round n (n >= 1) runs when `<dir>/go-<n>` exists. Each round
 * writes `<dir>/round-<n>.json` ({@link ConnsRound}, by rename, so it is
 * complete when it appears). Ends when `<dir>/stop` exists, after
 * `maxRounds` rounds, or after `maxMs`.
 */
export interface ConnsCommand {
  cmd: "conns";
  dst: string;
  port: number;
  flows: Flow[];
  /** Per-reply (and connect) timeout, ms. */
  waitMs: number;
  /** Directory of the go / round / stop files (exists). */
  dir: string;
  maxMs: number;
  maxRounds: number;
}

/** One round of `conns`: per flow, the target that answered ("" = the connection is broken). */
export interface ConnsRound {
  round: number;
  targets: string[];
  /** Per flow: why it broke (errno, -1 = EOF, -2 = wrong reply), 0 while it works. */
  errnos: number[];
}

/** Result of `conns` (printed when it ends). */
export interface ConnsResult {
  rounds: number;
  stoppedBy: "file" | "time" | "count";
}

/** `ping`: `count` echo requests per pair, from `src` to `dst` (each pair's family follows `dst`). */
export interface PingCommand {
  cmd: "ping";
  pings: { src: string; dst: string }[];
  /** Echo requests per source (default 3). */
  count?: number;
  /** Per-request answer timeout, ms (default 1000). */
  waitMs?: number;
}

/** Result of `ping`: replies[i] echo replies for pings[i] (requests stop at the first unanswered one). */
export interface PingResult {
  replies: number[];
  errors: number[];
}

/** `icmp`: one ICMP error per quoted flow (the family follows `from`). */
export interface IcmpCommand {
  cmd: "icmp";
  from: string;
  flows: QuotedFlow[];
  /** Pause between packets, ms (default 2). */
  gapMs?: number;
}

/** `sctp`: SCTP INIT packets from `from` to `dst`, `repeat` per port pair. */
export interface SctpCommand {
  cmd: "sctp";
  from: string;
  dst: string;
  ports: { sport: number; dport: number }[];
  repeat?: number;
  /** Pause between packets, ms (default 2). */
  gapMs?: number;
}

/** A request whose first line starts with this is answered with the received length appended. */
export const LEN_TAG = "?len ";

/** `sizes`: per flow, one UDP datagram per size (payload bytes), in order, on one connected socket. */
export interface SizesCommand {
  cmd: "sizes";
  dst: string;
  port: number;
  flows: Flow[];
  sizes: number[];
  /** Per-datagram answer timeout, ms (default 2000). */
  waitMs?: number;
}

/** One datagram built and fragmented by the agent (see {@link FragsCommand}). */
export interface CraftedDatagram {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** UDP payload bytes. */
  size: number;
  /** Fragment id (IPv4: 16 bits, not 0; IPv6: 32 bits). */
  id: number;
  /** Send order of the fragments (indexes, 0 = first fragment); default in order. */
  order?: "forward" | "reverse" | number[];
  /** SO_MARK of the raw socket that sends the first fragment / the others (client routing); default 0. */
  marks?: { first: number; rest: number };
}

/** `frags`: crafted fragmented UDP datagrams, one after the other, each answered (or not) before the next. */
export interface FragsCommand {
  cmd: "frags";
  datagrams: CraftedDatagram[];
  /** Per-datagram answer timeout, ms (default 2000). */
  waitMs?: number;
  /** Pause between fragments, ms (default 0). */
  gapMs?: number;
  /** Link MTU the fragments must fit (default 1500). */
  mtu?: number;
}

/** Any agent command. */
export type AgentCommand =
  | ServeCommand
  | ProbeCommand
  | StreamCommand
  | ConnsCommand
  | PingCommand
  | IcmpCommand
  | SctpCommand
  | SizesCommand
  | FragsCommand;

/** What answered one datagram: target name ("" = no answer) and the length it received (0 = none). */
export interface SizedReply {
  target: string;
  len: number;
}

/** Result of `sizes`: replies[flow][k] answers sizes[k]. */
export interface SizesResult {
  replies: SizedReply[][];
  /** errno of failed sends/receives (up to 10), for messages. */
  errors: number[];
}

/** Result of `frags`, per datagram. */
export interface FragsResult {
  datagrams: (SizedReply & { fragments: number; sent: number })[];
  errors: number[];
}

/** Result of `udp`/`tcp`: targets[i][k] is the name that answered flow i, repetition k ("" = none). */
export interface ProbeResult {
  targets: string[][];
  /** errno of failed requests (up to 10), for messages. */
  errors: number[];
}

/** Per-flow result of `stream`. */
export interface StreamFlowResult {
  sent: number;
  answered: number;
  byTarget: Record<string, number>;
  /** Index (among this flow's probes) of the first / last answered and lost probe; -1 = none. */
  firstAnswered: number;
  lastAnswered: number;
  firstLost: number;
  lastLost: number;
}

/** Result of `stream`. */
export interface StreamResult {
  probes: number;
  ms: number;
  /** Replies that carried another sequence number (late replies). */
  stale: number;
  flows: StreamFlowResult[];
  stoppedBy: "file" | "time" | "count";
}

/** Result of `icmp`/`sctp`. */
export interface SentResult {
  sent: number;
  failed: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the (agent's) thread for `ms`. */
function sleepSync(ms: number): void {
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
}

/** A request: the nonce, then (if `size` is larger) a newline and padding up to `size` bytes. */
function request(nonce: string, size = 0): Uint8Array<ArrayBuffer> {
  const head = enc.encode(nonce);
  if (size <= head.length + 1) return head;
  const b = new Uint8Array(size).fill(0x78);
  b.set(head, 0);
  b[head.length] = 0x0a;
  return b;
}

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

function probe(c: ProbeCommand): ProbeResult {
  const waitMs = c.waitMs ?? 1000;
  const errors: number[] = [];
  const targets = c.flows.map(() => [] as string[]);
  for (let k = 0; k < (c.repeat ?? 1); k++) {
    c.flows.forEach((f, i) => {
      const name = c.cmd === "udp"
        ? udpAsk(f.dst ?? c.dst, f.dport ?? c.port, f, waitMs, `q${k}.${i}`, errors, c.size)
        : tcpAsk(f.dst ?? c.dst, f.dport ?? c.port, f, waitMs, errors);
      targets[i].push(name);
    });
  }
  return { targets, errors: errors.slice(0, 10) };
}

function stream(c: StreamCommand): StreamResult {
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
  return { probes, ms: Date.now() - t0, stale, flows, stoppedBy };
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

function conns(c: ConnsCommand): ConnsResult {
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

function ping(c: PingCommand): PingResult {
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

function sendIcmp(c: IcmpCommand): SentResult {
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

/** Waits (bounded) on a connected UDP socket for "<name> <LEN_TAG><nonce> <len>". */
function awaitSized(s: Socket, nonce: string, waitMs: number, errors: number[]): SizedReply {
  const want = `${LEN_TAG}${nonce} `;
  const deadline = Date.now() + waitMs;
  for (let i = 0; i < 16 && Date.now() < deadline; i++) {
    const r = s.recv();
    if (r === null) {
      errors.push(s.lastErrno);
      break;
    }
    const text = dec.decode(r);
    const sp = text.indexOf(" ");
    if (sp > 0 && text.startsWith(want, sp + 1)) {
      return { target: text.slice(0, sp), len: Number(text.slice(sp + 1 + want.length)) };
    }
  }
  return { target: "", len: 0 };
}

/** A request of exactly `size` bytes whose first line is "<LEN_TAG><nonce>". */
function sizedRequest(nonce: string, size: number): Uint8Array<ArrayBuffer> {
  const head = enc.encode(`${LEN_TAG}${nonce}\n`);
  if (size < head.length) throw new Error(`datagram size ${size} < ${head.length}`);
  const b = new Uint8Array(size);
  for (let i = head.length; i < size; i++) b[i] = 0x20 + (i % 90);
  b.set(head, 0);
  return b;
}

function sizes(c: SizesCommand): SizesResult {
  const waitMs = c.waitMs ?? 2000;
  const errors: number[] = [];
  const replies = c.flows.map((f, i) => {
    const s = Socket.open(c.dst, SOCK_DGRAM);
    try {
      s.reuseAddr().timeouts(waitMs).bind(f.src, f.sport);
      if (!s.connect(c.dst, c.port)) {
        throw new Error(`connect from ${f.src}:${f.sport}: errno ${s.lastErrno}`);
      }
      return c.sizes.map((size, k) => {
        const nonce = `z${i}.${k}`;
        if (!s.send(sizedRequest(nonce, size))) {
          errors.push(s.lastErrno);
          return { target: "", len: 0 };
        }
        return awaitSized(s, nonce, waitMs, errors);
      });
    } finally {
      s.close();
    }
  });
  return { replies, errors: errors.slice(0, 10) };
}

function sendFrags(c: FragsCommand): FragsResult {
  const waitMs = c.waitMs ?? 2000;
  const errors: number[] = [];
  const raws = new Map<string, Socket>();
  const raw = (like: string, mark: number): Socket => {
    const key = `${familyOf(like)}/${mark}`;
    let s = raws.get(key);
    if (!s) {
      s = Socket.open(like, SOCK_RAW, IPPROTO_RAW).timeouts(1000);
      if (mark) s.mark(mark);
      raws.set(key, s);
    }
    return s;
  };
  try {
    const datagrams = c.datagrams.map((d, i) => {
      const nonce = `f${i}.${d.id}`;
      const frags = udpFragments({ ...d, payload: sizedRequest(nonce, d.size) }, c.mtu ?? 1500);
      const n = frags.length;
      const order = d.order === undefined || d.order === "forward"
        ? frags.map((_, k) => k)
        : d.order === "reverse"
        ? frags.map((_, k) => n - 1 - k)
        : d.order;
      if ([...order].sort((a, b) => a - b).join() !== frags.map((_, k) => k).join()) {
        throw new Error(`order ${JSON.stringify(order)} is not a permutation of ${n} fragments`);
      }
      // the answer comes back to src:sport: listen there before sending
      const s = Socket.open(d.dst, SOCK_DGRAM);
      try {
        s.reuseAddr().timeouts(waitMs).bind(d.src, d.sport);
        if (!s.connect(d.dst, d.dport)) {
          throw new Error(`connect from ${d.src}:${d.sport}: errno ${s.lastErrno}`);
        }
        let sent = 0;
        for (const k of order) {
          const sock = raw(d.dst, k === 0 ? d.marks?.first ?? 0 : d.marks?.rest ?? 0);
          if (sock.sendTo(frags[k] as Uint8Array<ArrayBuffer>, d.dst)) sent++;
          else errors.push(sock.lastErrno);
          sleepSync(c.gapMs ?? 0);
        }
        return { ...awaitSized(s, nonce, waitMs, errors), fragments: n, sent };
      } finally {
        s.close();
      }
    });
    return { datagrams, errors: errors.slice(0, 10) };
  } finally {
    for (const s of raws.values()) s.close();
  }
}

function sendSctp(c: SctpCommand): SentResult {
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

async function serve(c: ServeCommand): Promise<void> {
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
    loops.push((async () => {
      try {
        for await (const conn of l) {
          conn.write(tcpLine).catch(() => {}).finally(() => {
            try {
              conn.close();
            } catch { /* already closed by a RST */ }
          });
        }
      } catch { /* listener closed */ }
    })());
  }
  for (const addr of c.addrs) {
    for (const port of c.echoTcpPorts ?? []) {
      const l = Deno.listen({ hostname: addr, port, transport: "tcp" });
      closers.push(() => l.close());
      loops.push((async () => {
        try {
          for await (const conn of l) echoLines(conn, prefix);
        } catch { /* listener closed */ }
      })());
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

async function main(): Promise<void> {
  const c = JSON.parse(Deno.args[0] ?? "{}") as AgentCommand;
  let result: unknown;
  switch (c.cmd) {
    case "serve":
      return await serve(c);
    case "udp":
    case "tcp":
      result = probe(c);
      break;
    case "stream":
      result = stream(c);
      break;
    case "conns":
      result = conns(c);
      break;
    case "ping":
      result = ping(c);
      break;
    case "icmp":
      result = sendIcmp(c);
      break;
    case "sctp":
      result = sendSctp(c);
      break;
    case "sizes":
      result = sizes(c);
      break;
    case "frags":
      result = sendFrags(c);
      break;
    default:
      throw new Error(`unknown command ${JSON.stringify(c)}`);
  }
  console.log(JSON.stringify(result));
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`agent: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
