/**
 * The traffic agent's commands and results (the agent: main.ts). A command
 * is passed as one JSON argument; the result is printed as one JSON line.
 * Commands (see {@link AgentCommand}):
 *
 * - `serve` (targets): a UDP echo server and a TCP server on every given
 *   address (the VIPs). UDP replies "<name> <first line of the request>" from the VIP (the
 *   sockets are bound to it, so DSR replies carry the VIP as source); a first
 *   line that starts with {@link LEN_TAG} gets " <bytes received>" appended. TCP
 *   writes "<name>\n" and closes. Runs until SIGTERM/SIGINT or `maxLifeS`.
 *   On `echoTcpPorts` TCP answers every line with "<name> <line>\n" and keeps
 *   the connection open until the client closes it (long-lived connections).
 * - `echo` (targets): a UDP echo server answering as `serve`'s, on libc
 *   sockets with a large receive buffer (see echo.ts), for `blast` traffic.
 * - `udp` / `tcp` (client): one request per flow (and repetition) from a
 *   fixed source address and port; returns which target answered each.
 *   UDP sockets are connected, so only a reply from VIP:port counts; TCP
 *   closes with RST so the same 4-tuple can connect again at once.
 * - `stream` (client): sequence-numbered UDP probes, round-robin over the
 *   flows, on long-lived connected sockets, until a stop file appears (or a
 *   time/probe bound); counts answered probes per flow and target. No retries.
 * - `blast` (client): sequence-numbered UDP datagrams at a fixed rate,
 *   round-robin over the flows, without waiting for answers (non-blocking
 *   sockets, poll); counts sent and answered datagrams per time bucket (by
 *   send time) and per target. After a stall it catches up at most 10 ms of
 *   traffic (the rest is skipped, not burst out). Ends after `durationMs` or
 *   when a stop file appears, then keeps receiving for `waitMs`.
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
 */
import type { QuotedFlow } from "../packets.ts";

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

/** `echo`: a UDP echo server on `addrs` at `port` (see the list above). */
export interface EchoCommand {
  cmd: "echo";
  name: string;
  addrs: string[];
  port: number;
  /** Upper bound of the server's life, seconds. */
  maxLifeS: number;
  /** Written once every socket is bound. */
  readyFile: string;
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

/** `blast`: UDP datagrams at `pps` without waiting for answers (see the list above). */
export interface BlastCommand {
  cmd: "blast";
  dst: string;
  port: number;
  flows: Flow[];
  /** Datagrams per second, all flows together. */
  pps: number;
  /** Send for at most this long, ms. */
  durationMs: number;
  /** Stop sending early when this file exists (looked at every few ms). */
  stopFile?: string;
  /** Written once the first datagram went out. */
  startedFile?: string;
  /** After the last send, keep receiving answers this long, ms. */
  waitMs: number;
  /** Width of the result's time buckets, ms (default 10). */
  bucketMs?: number;
}

/** Result of `blast`: per time bucket (bucket k: datagrams sent in [t0 + k·bucketMs, t0 + (k+1)·bucketMs)). */
export interface BlastResult {
  /** Wall-clock time (Date.now()) of the first send, ms. */
  t0: number;
  bucketMs: number;
  /** Datagrams sent, per bucket. */
  sent: number[];
  /** Datagrams answered (once each), per bucket of their send time. */
  answered: number[];
  /** Answered datagrams per target name, per bucket. */
  byTarget: Record<string, number[]>;
  /** Answers seen twice, answers that carried no known sequence number. */
  duplicates: number;
  stray: number;
  /** Failed sends (e.g. an ICMP error reported on the connected socket), with up to 10 errnos. */
  sendErrors: number;
  errors: number[];
  stoppedBy: "file" | "time";
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
  | EchoCommand
  | ProbeCommand
  | StreamCommand
  | BlastCommand
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

/**
 * A run of consecutive unanswered probes (over all flows, in send order): `from` is when the first of them
 * was sent, `to` when the next answered probe was sent (or the stream ended), both Unix ms.
 */
export interface StreamGap {
  from: number;
  to: number;
  lost: number;
}

/** Result of `stream`. */
export interface StreamResult {
  probes: number;
  ms: number;
  /** Replies that carried another sequence number (late replies). */
  stale: number;
  flows: StreamFlowResult[];
  /** The outages, in order (at most 64; the first ones are kept). */
  gaps: StreamGap[];
  stoppedBy: "file" | "time" | "count";
}

/** Result of `icmp`/`sctp`. */
export interface SentResult {
  sent: number;
  failed: number;
}
