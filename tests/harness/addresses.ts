/**
 * The lab's address plan (the picture is in topology.ts): the VIPs on every
 * target's loopback, the service ports, the fwmark of each target and the
 * targets' own addresses. Private test subnets that exist only inside the
 * lab's namespaces.
 */

/** IP family. */
export type Family = 4 | 6;

/** The VIPs. */
export const VIP = { 4: "10.213.100.1", 6: "fd13:100::1" } as const;
/** Service ports on the VIPs. */
export const UDP_PORT = 5000, TCP_PORT = 5003;
/** fwmark (and routing table) of target i is FWBASE + i. */
export const FWBASE = 100;

/** Target i's (1-based) own address of a family. */
export function targetAddr(fam: Family, i: number): string {
  return fam === 4 ? `10.213.${i}.1` : `fd13:${i}::1`;
}
