/**
 * Trace records (c/nfqlb.h `struct nfqlb_trace_rec`, 96 bytes, filled by the
 * C classifier) → upstream's trace lines, each tagged with the trace
 * bits it belongs to, so the trace server sends every client exactly the
 * lines its mask selects. Pure: no I/O, no FFI.
 *
 * Line order per packet follows upstream's packetHandleFn (lb, flowlb).
 * Ours, beyond upstream's lines: `getHashKey rc=%d. proto=%u, len=%u` (a
 * packet without a key; upstream logs it as a warning in flowlb, we trace it
 * under `packet` in lb and flowlb), `No targets. fw=%d` (lb, and flowlb after
 * `Using LB; %s`: the table has no target; upstream is silent) and
 * `Frag injected, count=%u, failed=%u` (one line per re-injected chain;
 * upstream has one `Frag injected, len=%u, rc=%d` line per fragment).
 */
import { formatIPv6 } from "../core/inet.ts";
import { IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_UDP, protocolName } from "../core/ip_protocols.ts";
import { TRACE_REC_LEN } from "./worker_protocol.ts";
import {
  NFQLB_KEY_LEN,
  NFQLB_TEV_FIRST,
  NFQLB_TEV_FIRST_FAILED,
  NFQLB_TEV_FLOWLB,
  NFQLB_TEV_FRAG_DROPPED,
  NFQLB_TEV_FRAG_LOCAL,
  NFQLB_TEV_FRAG_STORED,
  NFQLB_TEV_ICMP,
  NFQLB_TEV_INJECT,
  NFQLB_TEV_LB,
  NFQLB_TEV_MALFORMED,
  NFQLB_TEV_NOLB,
  NFQLB_TEV_NOLB_UDPENCAP,
  NFQLB_TEV_NOTARGET,
  NFQLB_TEV_REKEY_FAILED,
  NFQLB_TEV_TFLOW,
  NFQLB_TEV_TIER,
  NFQLB_TEV_UDPENCAP,
  NFQLB_TRACE_FLOW_CONF,
  NFQLB_TRACE_FLOWS,
  NFQLB_TRACE_FRAG,
  NFQLB_TRACE_LOG,
  NFQLB_TRACE_PACKET,
  NFQLB_TRACE_REC_OFF,
  NFQLB_TRACE_SCTP,
  NFQLB_TRACE_TARGET,
} from "../ffi/consts.ts";

export { TRACE_REC_LEN, TRACE_RING_HEADER } from "./worker_protocol.ts";

/** Trace mask bits, as upstream (`nfqlb trace --selection`). */
export const TRACE = {
  log: NFQLB_TRACE_LOG,
  packet: NFQLB_TRACE_PACKET,
  frag: NFQLB_TRACE_FRAG,
  flowConf: NFQLB_TRACE_FLOW_CONF,
  sctp: NFQLB_TRACE_SCTP,
  target: NFQLB_TRACE_TARGET,
  flows: NFQLB_TRACE_FLOWS,
} as const;

/** Record events (NFQLB_TEV_*). */
export const TEV = {
  MALFORMED: NFQLB_TEV_MALFORMED,
  TIER: NFQLB_TEV_TIER,
  FRAG_STORED: NFQLB_TEV_FRAG_STORED,
  FRAG_DROPPED: NFQLB_TEV_FRAG_DROPPED,
  FRAG_LOCAL: NFQLB_TEV_FRAG_LOCAL,
  FIRST: NFQLB_TEV_FIRST,
  FIRST_FAILED: NFQLB_TEV_FIRST_FAILED,
  INJECT: NFQLB_TEV_INJECT,
  NOLB: NFQLB_TEV_NOLB,
  NOTARGET: NFQLB_TEV_NOTARGET,
  LB: NFQLB_TEV_LB,
  UDPENCAP: NFQLB_TEV_UDPENCAP,
  REKEY_FAILED: NFQLB_TEV_REKEY_FAILED,
  NOLB_UDPENCAP: NFQLB_TEV_NOLB_UDPENCAP,
  TFLOW: NFQLB_TEV_TFLOW,
  ICMP: NFQLB_TEV_ICMP,
  FLOWLB: NFQLB_TEV_FLOWLB,
} as const;

/** A decoded record. */
export interface TraceRecord {
  events: number;
  rc: number;
  fw: number;
  verdict: number;
  len: number;
  hwProto: number;
  proto: number;
  /** flowlb: address of the chosen flow's target table (0n: none). */
  target: bigint;
  /** Trace-flow id. */
  tflow: number;
  udpencap: number;
  icmpType: number;
  icmpCode: number;
  icmpId: number;
  icmpSeq: number;
  icmpMtu: number;
  /** The 40-byte key the flows matched on. */
  key: Uint8Array;
  injectOk: number;
  injectFailed: number;
}

/** Decodes record `i` of `bytes` (records back to back). */
export function decodeRecord(bytes: Uint8Array, i: number): TraceRecord {
  const o = i * TRACE_REC_LEN;
  const v = new DataView(bytes.buffer, bytes.byteOffset + o, TRACE_REC_LEN);
  const O = NFQLB_TRACE_REC_OFF;
  return {
    events: v.getUint32(O.events, true),
    rc: v.getInt32(O.rc, true),
    fw: v.getInt32(O.fw, true),
    verdict: v.getInt32(O.verdict, true),
    len: v.getUint32(O.len, true),
    hwProto: v.getUint16(O.hw_proto, true),
    proto: v.getUint16(O.proto, true),
    target: v.getBigUint64(O.target, true),
    tflow: v.getUint32(O.tflow, true),
    udpencap: v.getUint16(O.udpencap, true),
    icmpType: v.getUint8(O.icmp_type),
    icmpCode: v.getUint8(O.icmp_code),
    icmpId: v.getUint16(O.icmp_id, true),
    icmpSeq: v.getUint16(O.icmp_seq, true),
    icmpMtu: v.getUint32(O.icmp_mtu, true),
    key: bytes.slice(o + O.key, o + O.key + NFQLB_KEY_LEN),
    injectOk: v.getUint32(O.inject_ok, true),
    injectFailed: v.getUint32(O.inject_failed, true),
  };
}

/** A trace line and the mask bits it is sent under (any of them). */
export interface TraceLine {
  bits: number;
  text: string;
}

/** Names the formatter needs from the running flowlb. */
export interface TraceNames {
  /** The target shm name mapped at `address` (flowlb). */
  target(address: bigint): string;
  /** The name of trace flow `id`. */
  traceFlow(id: number): string;
}

/** `tcp`, `udp`, `sctp`, `icmp`, `icmp6` or the number (upstream's protostr). */
export function protoName(p: number): string {
  // upstream's protostr spells ICMPv6 icmp6 (ct-list's name is icmpv6)
  return p === IPPROTO_ICMPV6 ? "icmp6" : protocolName(p) ?? String(p);
}

/** The ICMP line of the `flows` block (upstream's printIcmp). */
export function icmpLine(r: TraceRecord): string {
  if (r.hwProto === 0x0800) {
    if (r.icmpType === 3) {
      return r.icmpCode === 4
        ? `ICMP_DEST_UNREACH/FRAG_NEEDED: mtu=${r.icmpMtu & 0xffff}`
        : `ICMP_DEST_UNREACH: code=${r.icmpCode}`;
    }
    if (r.icmpType === 8) return `ICMP_ECHO: id=${r.icmpId}, seq=${r.icmpSeq}`;
    return `ICMP ${r.icmpType}, ${r.icmpCode}`;
  }
  if (r.icmpType === 2) return `ICMP6_PACKET_TOO_BIG: mtu=${r.icmpMtu >>> 0}`;
  if (r.icmpType === 128) return `ICMP6_ECHO_REQUEST: id=${r.icmpId}, seq=${r.icmpSeq}`;
  return `ICMP6 ${r.icmpType}, ${r.icmpCode}`;
}

/** `proto=<p>, len=<n>, <src> <sport> -> <dst> <dport>` of a key (ICMP errors: the flipped inner packet). */
export function tupleLine(key: Uint8Array, len: number): string {
  const proto = key[34] | (key[35] << 8);
  const sport = (key[36] << 8) | key[37], dport = (key[38] << 8) | key[39];
  return `proto=${protoName(proto)}, len=${len}, ${formatIPv6(key.subarray(0, 16))} ${sport} -> ${
    formatIPv6(key.subarray(16, 32))
  } ${dport}`;
}

/** The lines of one record, in upstream's order, with their bits. */
export function formatRecord(r: TraceRecord, names: TraceNames): TraceLine[] {
  const out: TraceLine[] = [];
  const ev = r.events;
  const has = (e: number) => (ev & e) !== 0;
  const line = (bits: number, text: string) => out.push({ bits, text });
  const flowlb = has(TEV.FLOWLB);
  if (has(TEV.MALFORMED)) {
    line(TRACE.packet, `getHashKey rc=${r.rc}. proto=${r.hwProto}, len=${r.len}`);
    return out;
  }
  if (has(TEV.TIER)) line(TRACE.frag, `Fragment to LB tier. fw=${r.fw}`);
  if (has(TEV.FRAG_STORED)) line(TRACE.frag, "Fragment stored");
  if (has(TEV.FRAG_DROPPED)) line(TRACE.frag, "Fragment dropped");
  if (has(TEV.FRAG_LOCAL)) line(TRACE.frag, `Handle non-first frag locally fwmark=${r.fw}`);
  const tflow = has(TEV.TFLOW);
  const target = () => names.target(r.target);
  if (tflow) {
    line(TRACE.flows, "");
    line(TRACE.flows, `Match for trace-flow: ${names.traceFlow(r.tflow)}`);
    if (has(TEV.ICMP)) line(TRACE.flows, icmpLine(r));
    line(TRACE.flows, tupleLine(r.key, r.len));
    if (has(TEV.UDPENCAP) && (r.key[34] | (r.key[35] << 8)) === IPPROTO_UDP) {
      line(TRACE.flows, `udpencap=${r.udpencap}`);
    }
  }
  if (has(TEV.UDPENCAP)) line(TRACE.sctp, `Udp encapsulated sctp packet on port ${r.udpencap}`);
  if (has(TEV.REKEY_FAILED)) {
    line(TRACE.sctp, "FAILED: Re-compute key with udpencap");
    return out;
  }
  if (has(TEV.NOLB_UDPENCAP)) line(TRACE.sctp, "Failed flowLookup for udpencap");
  const lbBits = TRACE.packet | (flowlb && r.proto === IPPROTO_SCTP ? TRACE.sctp : 0);
  if (has(TEV.NOLB)) {
    line(TRACE.packet, "Failed flowLookup");
    if (tflow) line(TRACE.flows, `NO target, fwmark=${r.verdict}`);
    return out;
  }
  if (has(TEV.NOTARGET)) {
    if (tflow) line(TRACE.flows, `NO servers, target=${target()}, fwmark=${r.verdict}`);
    if (flowlb) line(lbBits, `Using LB; ${target()}`);
    line(lbBits, `No targets. fw=${r.verdict}`);
    return out;
  }
  if (tflow && flowlb) line(TRACE.flows, `target=${target()}, fwmark=${r.fw}`);
  if (has(TEV.FIRST)) line(TRACE.frag, "First fragment");
  if (has(TEV.FIRST_FAILED)) {
    line(TRACE.frag, "FAILED: Handle first fragment");
    if (tflow) line(TRACE.flows, "FAILED: Handle first fragment");
    return out;
  }
  if (has(TEV.INJECT)) line(TRACE.frag, `Frag injected, count=${r.injectOk}, failed=${r.injectFailed}`);
  if (has(TEV.LB)) {
    if (flowlb) {
      line(lbBits, `Using LB; ${target()}`);
      line(lbBits, `Packet; proto=${r.proto}, len=${r.len}, fwmark=${r.verdict >>> 0}`);
    } else {
      line(TRACE.packet, `Load-balance packet. fw=${r.verdict}`);
    }
  }
  return out;
}

/** Formats `count` records of `bytes`. */
export function formatRecords(bytes: Uint8Array, count: number, names: TraceNames): TraceLine[] {
  const out: TraceLine[] = [];
  for (let i = 0; i < count; i++) out.push(...formatRecord(decodeRecord(bytes, i), names));
  return out;
}
