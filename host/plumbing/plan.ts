/**
 * The desired kernel objects of a spec (pure). Per family (iptables for
 * IPv4, ip6tables for IPv6), where the family has VIPs or targets:
 *
 * - mangle chain `NFQLB-<id>`: [offload: per VIP, connmark restore and accept]
 *   then one NFQUEUE rule per VIP (and port); jumped to from mangle
 *   PREROUTING / OUTPUT (per hook) for each VIP. With nft queue, one nft
 *   table replaces these (both families).
 * - offload, hook prerouting, no NAT target in the family: per VIP (and TCP
 *   port), a rule in raw PREROUTING that untracks the TCP SYNs, so TCP
 *   connections can be offloaded under DSR (host/plumbing/offload_rules.ts,
 *   tcpSynNotrack). iptables also with nft queue.
 * - offload `auto`: per VIP, a rule in mangle POSTROUTING that saves the
 *   verdict's mark in the connection (offload_rules.ts, saveMarkRule), so
 *   the restore rules steer the rest of it. iptables also with nft queue.
 * - nat chain `NFQLB-<id>`: one DNAT rule per NAT or full NAT target (per
 *   protocol when it translates the port), by fwmark; jumped to from nat
 *   PREROUTING / OUTPUT for each VIP.
 * - nat chain `NFQLB-<id>-SN`: one SNAT rule per full NAT target, by
 *   fwmark; jumped to from nat POSTROUTING for each VIP, only for
 *   connections that were DNATed and whose original destination is the VIP
 *   (`-m conntrack --ctstate DNAT --ctorigdst VIP`).
 * - per DSR target: `ip rule fwmark F table T`, `ip route default via A
 *   table T` (protocol 110), and a record rule in the never-jumped-to mangle
 *   chain `NFQLB-<id>-RT` saying that this rule and route belong to the id.
 */
import { PORT_PROTOCOLS } from "../../core/ip_protocols.ts";
import { offloadRules, saveMarkRule, tcpSynNotrack } from "./offload_rules.ts";
import { chainObject, ruleObject, type RuleParts } from "./iptables.ts";
import { ipRouteObject, ipRuleObject } from "./iproute.ts";
import { chainName } from "./names.ts";
import { nftObject } from "./nft.ts";
import { KIND_ORDER, type PlumbingObject, type PlumbingSpec } from "./spec.ts";
import { dportText, type NormalSpec, type NormalTarget, validateSpec } from "./validate.ts";

/** Options of {@link planPlumbing}. */
export interface PlanOptions {
  /** Queue rules through nft (the kernel has nft `queue`); default false (iptables). */
  nftQueue?: boolean;
}

/** Our iptables chains of an id: table → chain names (for reading them back). */
export function ourChains(id: string): Map<string, Set<string>> {
  return new Map([
    ["mangle", new Set([chainName(id), chainName(id, "-RT")])],
    ["nat", new Set([chainName(id), snatChain(id)])],
  ]);
}

/**
 * The nat chain of an id's SNAT rules (full NAT). Its suffix is as short as
 * `-RT`, so a shortened long id still fits iptables' 28 characters.
 */
export function snatChain(id: string): string {
  return chainName(id, "-SN");
}

/** The record chains of an id (never jumped to; they hold the DSR records). */
export function recordChains(id: string): Set<string> {
  return new Set([chainName(id, "-RT")]);
}

/** A DSR record: the comment words after the hash of a record rule. */
export interface DsrRecord {
  fwmark: number;
  table: number;
  via: string;
}

/** The comment words of a DSR record. */
export function formatRecord(r: DsrRecord): string {
  return `dsr,${r.fwmark},${r.table},${r.via}`;
}

/** Parses the comment words of a DSR record, or undefined. */
export function parseRecord(text: string): DsrRecord | undefined {
  const m = /^dsr,([0-9]+),([0-9]+),([0-9a-fA-F.:]+)$/.exec(text);
  return m ? { fwmark: Number(m[1]), table: Number(m[2]), via: m[3] } : undefined;
}

/** The NFQUEUE target arguments of a spec. */
function nfqueueTarget(s: NormalSpec): string[] {
  const [a, b] = s.queue;
  const q = a === b ? ["--queue-num", String(a)] : ["--queue-balance", `${a}:${b}`];
  return ["-j", "NFQUEUE", ...q, ...(s.bypass ? ["--queue-bypass"] : [])];
}

/**
 * The offload rules of one VIP (in front of the queue rules), taken from
 * host/plumbing/offload_rules.ts so `ct-set --offload` and apply agree on them:
 * a connection whose connmark is set gets it back as packet mark and skips
 * the queue. That module's own comment is replaced by our tag.
 */
export function offloadParts(cidr: string): { matches: string[]; target: string[] }[] {
  return offloadRules({ vips: [cidr], chain: "X", tcpSynNotrack: false }).delete.map((argv) => {
    // argv: ipt -w -t mangle -D X <matches> -m comment --comment C -j ...
    const rest = argv.slice(6);
    const c = rest.indexOf("--comment");
    const j = rest.indexOf("-j");
    if (argv[4] !== "-D" || c < 2 || rest[c - 2] !== "-m" || j < c) {
      throw new Error(`unexpected offload rule shape: ${argv.join(" ")}`);
    }
    return { matches: [...rest.slice(0, c - 2), ...rest.slice(c + 2, j)], target: rest.slice(j) };
  });
}

/** `--to-destination` of a NAT target, with or without its port. */
function natDestination(t: NormalTarget, withPort: boolean): string {
  if (!withPort || t.port === undefined) return t.address;
  return t.family === 4 ? `${t.address}:${t.port}` : `[${t.address}]:${t.port}`;
}

const HOOK_CHAIN = { prerouting: "PREROUTING", output: "OUTPUT" } as const;
/** The match of unmarked packets: local packets with a mark of their own stay out of the queue (output hook). */
const UNMARKED = ["-m", "mark", "--mark", "0"];

function planFamily(s: NormalSpec, family: 4 | 6, nftQueue: boolean): PlumbingObject[] {
  const vips = s.vips.filter((v) => v.family === family);
  const targets = s.targets.filter((t) => t.family === family);
  // full NAT targets get the DNAT of NAT targets, and an SNAT besides
  const nat = targets.filter((t) => t.mode !== "dsr");
  const fullnat = targets.filter((t) => t.mode === "fullnat");
  const dsr = targets.filter((t) => t.mode === "dsr");
  const records = recordChains(s.id);
  const out: PlumbingObject[] = [];
  const rule = (p: Omit<RuleParts, "family">) => out.push(ruleObject(s.id, { family, ...p }, records));
  const chain = chainName(s.id);

  if (vips.length && !nftQueue) {
    out.push(chainObject(family, "mangle", chain));
    if (s.offload) {
      for (const v of vips) for (const o of offloadParts(v.cidr)) rule({ table: "mangle", chain, ...o });
    }
    for (const v of vips) {
      const target = nfqueueTarget(s);
      if (v.ports.length === 0) rule({ table: "mangle", chain, matches: ["-d", v.cidr], target });
      for (const p of v.ports) {
        const matches = ["-d", v.cidr, "-p", p.protocol];
        if (p.first !== null) matches.push("--dport", dportText(p));
        rule({ table: "mangle", chain, matches, target });
      }
    }
    for (const h of s.hooks) {
      for (const v of vips) {
        // a local packet that already carries a mark (SO_MARK: the health checks of `nfqlb run`, which
        // carry a DSR target's fwmark to be routed to it) is not queued: the lb would pick another target
        const matches = h === "output" ? ["-d", v.cidr, ...UNMARKED] : ["-d", v.cidr];
        rule({ table: "mangle", chain: HOOK_CHAIN[h], matches, target: ["-j", chain] });
      }
    }
  }

  // NAT needs each connection's first packet tracked (and its replies pass here anyway)
  if (vips.length && s.offload && s.hooks.includes("prerouting") && nat.length === 0) {
    for (const v of vips) {
      const tcp = v.ports.filter((p) => p.protocol === "tcp");
      const dports = v.ports.length === 0 || tcp.some((p) => p.first === null)
        ? [undefined]
        : [...new Set(tcp.map((p) => dportText(p)))];
      for (const d of dports) rule({ table: "raw", chain: "PREROUTING", ...tcpSynNotrack(v.cidr, d) });
    }
  }

  // offload auto: the verdict's mark goes into the connection after the verdict (a jump-kind rule of a
  // built-in chain: added after the queue rules, removed first)
  if (vips.length && s.offload === "auto") {
    for (const v of vips) rule({ table: "mangle", chain: "POSTROUTING", ...saveMarkRule(v.cidr, family) });
  }

  if (vips.length && nat.length) {
    out.push(chainObject(family, "nat", chain));
    // a DNAT that changes the port needs -p; VIPs without a port filter queue every protocol
    const anyProto = vips.some((v) => v.ports.length === 0);
    const protos = anyProto
      ? PORT_PROTOCOLS
      : [...new Set(vips.flatMap((v) => v.ports.map((p) => p.protocol)))];
    for (const t of nat) {
      const mark = ["-m", "mark", "--mark", String(t.fwmark)];
      if (t.port !== undefined) {
        for (const p of protos) {
          const target = ["-j", "DNAT", "--to-destination", natDestination(t, true)];
          rule({ table: "nat", chain, matches: ["-p", p, ...mark], target });
        }
      }
      if (t.port === undefined || anyProto) {
        rule({ table: "nat", chain, matches: mark, target: ["-j", "DNAT", "--to-destination", t.address] });
      }
    }
    for (const h of s.hooks) {
      for (const v of vips) {
        rule({ table: "nat", chain: HOOK_CHAIN[h], matches: ["-d", v.cidr], target: ["-j", chain] });
      }
    }
  }

  // SNAT is decided on a connection's first packet, after routing (POSTROUTING, forwarded and local
  // alike); conntrack then rewrites the replies' destination back to the client. The jump only takes
  // connections DNATed from one of our VIPs, so a foreign packet with a target's fwmark is left alone.
  if (vips.length && fullnat.length) {
    const sn = snatChain(s.id);
    out.push(chainObject(family, "nat", sn));
    for (const t of fullnat) {
      // validateSpec gives every full NAT target its source address
      if (t.snat === undefined) throw new Error(`plan: full NAT target ${t.fwmark} without snat`);
      const matches = ["-m", "mark", "--mark", String(t.fwmark)];
      rule({ table: "nat", chain: sn, matches, target: ["-j", "SNAT", "--to-source", t.snat] });
    }
    for (const v of vips) {
      // a host VIP without its /32 (/128): iptables-save prints it so, and iptables (1.8.9, nft) deletes a
      // conntrack match added as `A/32` only when given `A/32` again, so the saved form would not delete it
      const host = v.cidr.endsWith(family === 4 ? "/32" : "/128");
      const orig = host ? v.cidr.slice(0, v.cidr.lastIndexOf("/")) : v.cidr;
      const matches = ["-m", "conntrack", "--ctstate", "DNAT", "--ctorigdst", orig];
      rule({ table: "nat", chain: "POSTROUTING", matches, target: ["-j", sn] });
    }
  }

  if (dsr.length) {
    const rt = chainName(s.id, "-RT");
    out.push(chainObject(family, "mangle", rt));
    for (const t of dsr) {
      const record = formatRecord({ fwmark: t.fwmark, table: t.table, via: t.address });
      const matches = ["-m", "mark", "--mark", String(t.fwmark)];
      rule({ table: "mangle", chain: rt, matches, target: ["-j", "RETURN"], record });
      out.push(ipRouteObject(family, t.table, t.address));
      out.push(ipRuleObject(family, t.fwmark, t.table));
    }
  }
  return out;
}

/** Sorts objects into add order (stable: the order within a kind is kept). */
export function addOrder(objects: readonly PlumbingObject[]): PlumbingObject[] {
  return objects.map((o, i) => ({ o, i }))
    .sort((a, b) => KIND_ORDER.indexOf(a.o.kind) - KIND_ORDER.indexOf(b.o.kind) || a.i - b.i)
    .map((x) => x.o);
}

/**
 * The objects a spec needs, in add order (chains, records, rules in chain
 * order, nft, routes, ip rules, jumps). Pure; throws an NfqlbError on a
 * bad spec.
 */
export function planPlumbing(spec: PlumbingSpec, o: PlanOptions = {}): PlumbingObject[] {
  const s = validateSpec(spec);
  const nftQueue = o.nftQueue ?? false;
  const objects = [...planFamily(s, 4, nftQueue), ...planFamily(s, 6, nftQueue)];
  if (nftQueue && s.vips.length) objects.push(nftObject(s));
  return addOrder(objects);
}
