/**
 * Types of the kernel plumbing for `nfqlb apply`: the input (what a config
 * file asks for) and the objects it turns into (one iptables rule, chain, ip
 * rule, route or nft table each), plus the tags that mark them as ours.
 */
import type { PortProtocol } from "../../core/ip_protocols.ts";

/** A transport protocol a VIP port filter names (core/ip_protocols.ts). */
export type PlumbingProtocol = PortProtocol;

/** Where packets to a VIP are queued: mangle PREROUTING (forwarded/incoming) or mangle OUTPUT (local). */
export type PlumbingHook = "prerouting" | "output";

/** A VIP: an address or CIDR, optionally restricted to some ports. */
export interface PlumbingVip {
  /** IPv4 or IPv6 address, or CIDR (`10.0.0.0/24`). */
  address: string;
  /**
   * Only these are queued (default: all traffic to the VIP): a protocol, with
   * a destination port or port range [port, lastPort], or every port of it.
   */
  ports?: { protocol: PlumbingProtocol; port?: number; lastPort?: number }[];
}

/** A target: the fwmark the lb gives its packets and how they get there. */
export interface PlumbingTarget {
  /** fwmark the lb sets for this target, 1..0xffffffff. */
  fwmark: number;
  /** The target's own address (DSR: next hop; NAT, full NAT: new destination). */
  address: string;
  /** NAT and full NAT only: new destination port (port translation). */
  port?: number;
  /**
   * `dsr`: fwmark → ip rule → table → default via address; `nat`: fwmark →
   * DNAT to address[:port]; `fullnat`: that DNAT, and SNAT to `snat`.
   */
  mode: "dsr" | "nat" | "fullnat";
  /** Full NAT only (and required there): the source address after SNAT, of the address's family. */
  snat?: string;
  /** DSR routing table, 1..0xffffffff except 253-255 (default, main, local). Ignored for NAT. */
  table: number;
}

/** What `nfqlb apply` installs in the kernel for one config (the lead maps the config file to this). */
export interface PlumbingSpec {
  /** Config identity, `[A-Za-z0-9._+-]{1,32}`; tags everything we add. */
  id: string;
  /** `"2"` (NFQUEUE --queue-num) or `"0:3"` (--queue-balance). */
  queue: string;
  /** NFQUEUE --queue-bypass: accept packets while no lb is bound to the queue. */
  bypass: boolean;
  /** mangle PREROUTING (forwarded/incoming) and/or mangle OUTPUT (local). */
  hooks: PlumbingHook[];
  /** VIPs (address or CIDR, optional port filter). */
  vips: PlumbingVip[];
  /** Targets by fwmark. */
  targets: PlumbingTarget[];
  /**
   * true: also install the connmark-restore bypass rules in front of the
   * queue rules (for `ct-set --offload`); `"auto"`: those and the rule that
   * saves every verdict's mark in its connection (lb --offload=auto).
   */
  offload?: boolean | "auto";
}

/** Options shared by the functions that touch the kernel. */
export interface PlumbingOptions {
  /** Run every command inside this network namespace (`ip netns exec NS ...`). */
  netns?: string;
  /** Whether the NFQUEUE rule goes through nft; default: what detectNftQueue() finds. */
  nftQueue?: boolean;
}

/** Kinds of objects, in the order they are added (removal is the reverse). */
export type PlumbingKind = "chain" | "record" | "rule" | "nft" | "iproute" | "iprule" | "jump";

/** The add order of {@link PlumbingKind}s: chains before their rules, routes before the ip rules, jumps last. */
export const KIND_ORDER: readonly PlumbingKind[] = [
  "chain",
  "record",
  "rule",
  "nft",
  "iproute",
  "iprule",
  "jump",
];

/** One kernel object we install. */
export interface PlumbingObject {
  /** Stable identity: two objects with equal keys are the same kernel object. */
  key: string;
  /** What it is. */
  kind: PlumbingKind;
  /** Address family (an nft `inet` table holds both; it says 4). */
  family: 4 | 6;
  /** Human line: the command that adds it. */
  line: string;
  /** argv that adds it. */
  add: string[];
  /** Standard input of {@link add} (nft scripts). */
  stdin?: string;
  /** argv that deletes it. */
  del: string[];
  /** argv that exits 0 when it is present (iptables -C, nft list), where such a command exists. */
  check?: string[];
  /** iptables table and chain holding a rule / record / jump (for ordered insertion). */
  table?: string;
  chain?: string;
}

/** The iproute2 protocol number on our ip rules and routes: 110 (0x6e), unused in /etc/iproute2/rt_protos. */
export const RT_PROTO = 110;

/** The comment tag of an id: every iptables rule we add has a comment that starts with `nfqlb:<id> `. */
export function tagOf(id: string): string {
  return `nfqlb:${id}`;
}
