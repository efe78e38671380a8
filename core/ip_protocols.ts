/**
 * IP protocol numbers and the names nfqlb gives them: the one table. Flows,
 * the connection table, the kernel plumbing, the `--proto` options, the trace
 * formatter and the tests take their protocol names and numbers from here.
 */

/** IPPROTO_ICMP (netinet/in.h). */
export const IPPROTO_ICMP = 1;
/** IPPROTO_TCP. */
export const IPPROTO_TCP = 6;
/** IPPROTO_UDP. */
export const IPPROTO_UDP = 17;
/** IPPROTO_ICMPV6. */
export const IPPROTO_ICMPV6 = 58;
/** IPPROTO_SCTP. */
export const IPPROTO_SCTP = 132;

/** Every protocol nfqlb names, by name (ct-list's names; the trace spells ICMPv6 `icmp6`, as upstream). */
export const IP_PROTOCOLS = {
  tcp: IPPROTO_TCP,
  udp: IPPROTO_UDP,
  sctp: IPPROTO_SCTP,
  icmp: IPPROTO_ICMP,
  icmpv6: IPPROTO_ICMPV6,
} as const;

/** A name of {@link IP_PROTOCOLS}. */
export type IpProtocolName = keyof typeof IP_PROTOCOLS;

/** The names of {@link IP_PROTOCOLS}, in its order. */
export const IP_PROTOCOL_NAMES: readonly IpProtocolName[] = Object.freeze(
  Object.keys(IP_PROTOCOLS) as IpProtocolName[],
);

/**
 * The protocols with ports, in upstream's listing order (flow-list prints a
 * flow's protocols in this order): what a flow selects, a VIP port filter
 * names, and `fwmark`/`ct-*` take as `--proto`.
 */
export const PORT_PROTOCOLS = ["tcp", "udp", "sctp"] as const satisfies readonly IpProtocolName[];

/** One of {@link PORT_PROTOCOLS}. */
export type PortProtocol = (typeof PORT_PROTOCOLS)[number];

/** The number of a {@link PortProtocol}: 6, 17 or 132. */
export type PortProtocolNumber = (typeof IP_PROTOCOLS)[PortProtocol];

/**
 * The type of {@link PROTOCOLS}: exact for the three names, and indexable by
 * any string, as it always was in mod.ts.
 */
export type ProtocolNumbers =
  & Readonly<Record<PortProtocol, PortProtocolNumber>>
  & Readonly<Record<string, number>>;

/**
 * The numbers of the port protocols by upstream's names (library API:
 * `PROTOCOLS.tcp`). To look up text, {@link portProtocolNumber} is the safe
 * way.
 */
export const PROTOCOLS: ProtocolNumbers = Object.freeze({
  tcp: IP_PROTOCOLS.tcp,
  udp: IP_PROTOCOLS.udp,
  sctp: IP_PROTOCOLS.sctp,
});

/** Whether `s` is a port protocol name (exact, lower case). */
export function isPortProtocol(s: string): s is PortProtocol {
  return (PORT_PROTOCOLS as readonly string[]).includes(s);
}

/**
 * The number of a port protocol named in any case (`--proto=TCP`), as
 * upstream's strcasecmp; undefined for anything else. (A plain lookup of the
 * text in an object would also find what every object has: `constructor`.)
 */
export function portProtocolNumber(text: string): PortProtocolNumber | undefined {
  const name = text.toLowerCase();
  return isPortProtocol(name) ? PROTOCOLS[name] : undefined;
}

const NAMES: ReadonlyMap<number, IpProtocolName> = new Map(
  IP_PROTOCOL_NAMES.map((name) => [IP_PROTOCOLS[name], name]),
);

/** The name of a port protocol's number. */
export function protocolName(n: PortProtocolNumber): PortProtocol;
/** The name of protocol number `n` (`tcp`, …, `icmpv6`); undefined for one nfqlb does not name. */
export function protocolName(n: number): IpProtocolName | undefined;
export function protocolName(n: number): IpProtocolName | undefined {
  return NAMES.get(n);
}
