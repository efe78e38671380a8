/**
 * The flow model of `flowlb`, after upstream's: what a flow request says,
 * the validated definition it becomes, a flow in a table, and the limits and
 * reply texts they are checked with. Types and constants only: parsing is in
 * ./parse.ts, printing in ./render.ts, the table in ./table.ts, the C
 * matcher's binary form in ./encode.ts.
 */

import type { PortProtocol, PortProtocolNumber } from "../ip_protocols.ts";
import { NFQLB_FLOW_MAX_CIDRS } from "../../ffi/consts.ts";

/** An L4 protocol a flow can select: tcp, udp or sctp (core/ip_protocols.ts). */
export type Protocol = PortProtocol;

/** A CIDR: 16 address bytes (IPv4 mapped, host bits cleared) and the prefix length 0..128. */
export interface Cidr {
  /** 16 bytes, network order; IPv4 as ::ffff:a.b.c.d. */
  readonly addr: Uint8Array;
  /** Prefix length counted on the 128-bit address (IPv4 /24 → 120). */
  readonly prefix: number;
}

/** An inclusive port range [low, high], 1 ≤ low ≤ high ≤ 65535. */
export type PortRange = readonly [number, number];

/** A byte-match statement (upstream's `--match`): `(header[offset..offset+nbytes] & mask) == value` (mask 0 = none). */
export interface MatchStatement {
  /** IP protocol number of the header it reads: 6 tcp, 17 udp, 132 sctp. */
  readonly proto: PortProtocolNumber;
  /** Byte offset in the L4 header. */
  readonly offset: number;
  /** Bytes read, big-endian. */
  readonly nbytes: 1 | 2 | 4;
  /** u32 mask, 0 for none. */
  readonly mask: number;
  /** u32 value compared with. */
  readonly value: number;
}

/**
 * A flow definition as it travels in the flow request protocol (./wire.ts): every field
 * is the text after `key:`; an absent field is undefined.
 */
export interface FlowRequest {
  /** Flow name. */
  name?: string;
  /** Target shm name (flows only). */
  target?: string;
  /** Priority, a decimal int32 (default 0). */
  priority?: string;
  /** Comma/space separated tcp, udp, sctp. */
  protocols?: string;
  /** Comma/space separated destination CIDRs. */
  dsts?: string;
  /** Comma/space separated source CIDRs. */
  srcs?: string;
  /** Comma/space separated destination ports and ranges. */
  dports?: string;
  /** Comma/space separated source ports and ranges. */
  sports?: string;
  /** Comma separated byte-match statements. */
  match?: string;
  /** UDP encapsulation port for SCTP (flows only; 0 = none). */
  udpencap?: string;
}

/** A validated flow definition (no state). */
export interface FlowDefinition {
  /** Flow name. */
  readonly name: string;
  /** Target shm name; null for trace flows and `#` companions. */
  readonly target: string | null;
  /** Priority, int32; higher is matched first. */
  readonly priority: number;
  /** Selected protocols in tcp, udp, sctp order; null = any. */
  readonly protocols: readonly Protocol[] | null;
  /** Destination CIDRs; null = any. */
  readonly dsts: readonly Cidr[] | null;
  /** Source CIDRs; null = any. */
  readonly srcs: readonly Cidr[] | null;
  /** Destination ports, merged and sorted; null = any, [] = none (never matches). */
  readonly dports: readonly PortRange[] | null;
  /** Source ports, merged and sorted; null = any, [] = none (never matches). */
  readonly sports: readonly PortRange[] | null;
  /** Byte-match statements (all must hold); null = none. */
  readonly match: readonly MatchStatement[] | null;
  /** UDP encapsulation port of an SCTP flow, 0 = none. */
  readonly udpencap: number;
}

/** A flow in a FlowTable (./table.ts). Immutable: every change makes a new object. */
export interface Flow extends FlowDefinition {
  /**
   * Unique per definition: a redefinition gets a new id, so a dataplane that
   * keys its counters by id starts the redefined flow's matches_count at 0
   * (as upstream's flow-set does).
   */
  readonly id: number;
  /**
   * False for a restored flow whose target could not be acquired: it is
   * listed, but not handed to the dataplane until the target appears.
   */
  readonly active: boolean;
  /** For a `#<name>` companion: the name of its SCTP flow; else null. */
  readonly companionOf: string | null;
}

/** Which flow set a definition is for: flows (with target and udpencap) or trace flows. */
export type FlowKind = "flow" | "trace";

// ---------------------------------------------------------------------------
// Limits and texts

/** Longest flow name we accept (upstream: < 1024, not enforced by its client). */
export const MAX_NAME = 1000;
/** Longest target name (upstream client check). */
export const MAX_TARGET = 255;
/** Most CIDRs in dsts or srcs (upstream's limit, and the C matcher's: c/nfqlb.h). */
export const MAX_CIDRS = NFQLB_FLOW_MAX_CIDRS;
/** Longest byte-match statement. */
export const MAX_MATCH = 64;

/** Characters allowed in flow names (ours; `#` is reserved for companions). */
export const NAME_RE = /^[A-Za-z0-9._+-]+$/;

/** The reply for a target that cannot be mapped (upstream's text). */
export const NO_LB = "FAIL: Couldn't create load-balancer";
/** The reply for a redefinition to a target that cannot be mapped. */
export const NO_NEW_LB = "FAIL: Couldn't create new load-balancer";
/** The reply for a redefinition that changes udpencap. */
export const ALTER_UDPENCAP = "FAIL: Alter udpencap not allowed";
/** The reply for udpencap on anything but exactly `sctp` (upstream's typo kept). */
export const ONLY_SCTP = "FAIL: only sctp for updencap";
/** The reply when ports are given without protocols (upstream's client-side text). */
export const PORTS_WITHOUT_PROTOCOLS = "ports specified without protocols";
