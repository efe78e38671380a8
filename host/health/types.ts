/**
 * What the health checks share: where one check goes (a {@link Probe}) and
 * what it found (a {@link CheckResult}).
 */
import type { HealthConfig } from "../config/types.ts";
import type { Poller } from "./sock.ts";

/** One family's check of a target: where it goes, and the mark its socket carries. */
export interface Probe {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** The address checked: the VIP for a DSR target, the target's own address for NAT/fullnat. */
  readonly address: string;
  /** The port (tcp, http, udp); null for icmp and exec. */
  readonly port: number | null;
  /** SO_MARK of the socket: a DSR target's fwmark (routed as its traffic is), else 0. */
  readonly mark: number;
}

/** A checked target: its identity, its check and where the check goes per family. */
export interface CheckTarget {
  /** `<service>/<fwmark>`. */
  readonly key: string;
  /** Service (target table) name. */
  readonly service: string;
  /** fwmark. */
  readonly fwmark: number;
  /** dsr, nat or fullnat. */
  readonly mode: string;
  /** The target's own addresses (exec's environment). */
  readonly addresses: readonly string[];
  /** The check. */
  readonly health: HealthConfig;
  /** One probe per family the service has VIPs for; healthy only when all pass. */
  readonly probes: readonly Probe[];
}

/** The outcome of one check of a target (all its families). */
export interface CheckResult {
  /** Passed. */
  readonly ok: boolean;
  /** Why it failed (one line, with where it went); null when it passed. */
  readonly error: string | null;
  /** How long it took, ms. */
  readonly ms: number;
}

/** What a checker gets besides its probe. */
export interface CheckContext {
  /** The poller of the sockets in flight. */
  readonly poller: Poller;
  /** When the check has failed if not done: performance.now() ms. */
  readonly deadline: number;
  /** The target (exec's environment). */
  readonly target: CheckTarget;
}

/** A check of one probe: resolves to null when it passed, else to why not (never rejects). */
export type Checker = (p: Probe, h: HealthConfig, ctx: CheckContext) => Promise<string | null>;

/** `addr:port` (`[v6]:port`) of a probe, with its mark: where a check went, for error texts. */
export function probeText(p: Probe): string {
  const a = p.family === 6 ? `[${p.address}]` : p.address;
  return `${p.port !== null ? `${a}:${p.port}` : p.address}${p.mark ? ` mark ${p.mark}` : ""}`;
}
