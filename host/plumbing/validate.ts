/**
 * Checks a {@link PlumbingSpec} and brings it to one canonical form (CIDRs
 * with their host bits cleared, IPv6 in RFC 5952 text), so that the same
 * intent always plans to the same objects and hashes. Bad input throws one
 * line naming the bad value.
 */
import { NfqlbError } from "../../core/errors.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "../../core/inet.ts";
import { isPortProtocol } from "../../core/ip_protocols.ts";
import type { PlumbingHook, PlumbingProtocol, PlumbingSpec } from "./spec.ts";

/** A checked VIP. */
export interface NormalVip {
  family: 4 | 6;
  /** Canonical CIDR: `10.0.0.1/32`, `fd00::/64`. */
  cidr: string;
  /** first/last null: every port of the protocol. */
  ports: { protocol: PlumbingProtocol; first: number | null; last: number | null }[];
}

/** iptables' `--dport` value of a port filter (a port or `first:last`). */
export function dportText(p: NormalVip["ports"][number], rangeSep = ":"): string {
  return p.first === p.last ? String(p.first) : `${p.first}${rangeSep}${p.last}`;
}

/** A checked target. */
export interface NormalTarget {
  family: 4 | 6;
  fwmark: number;
  /** Canonical address text (what `ip route` prints). */
  address: string;
  port?: number;
  mode: "dsr" | "nat" | "fullnat";
  table: number;
  /** Full NAT: the canonical source address after SNAT (same family). */
  snat?: string;
}

/** A checked spec. */
export interface NormalSpec {
  id: string;
  /** NFQUEUE queue range, first..last (equal for --queue-num). */
  queue: [number, number];
  bypass: boolean;
  hooks: PlumbingHook[];
  vips: NormalVip[];
  targets: NormalTarget[];
  /** true: restore rules only (ct-set --offload); "auto": also the save rule (lb --offload=auto). */
  offload: boolean | "auto";
}

const ID_RE = /^[A-Za-z0-9._+-]{1,32}$/;
const HOOKS: readonly string[] = ["prerouting", "output"];

function bad(what: string, value: unknown): never {
  throw new NfqlbError(`plumbing: invalid ${what}: ${JSON.stringify(value)}`);
}

/** Checks a config identity (`[A-Za-z0-9._+-]{1,32}`); throws otherwise. */
export function checkId(id: unknown): string {
  if (typeof id !== "string" || !ID_RE.test(id)) bad("id (want [A-Za-z0-9._+-]{1,32})", id);
  return id;
}

/** Parses an address into family and bytes, or undefined. */
function parseAddress(s: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  const v4 = parseIPv4(s);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = s.includes(":") ? parseIPv6(s) : undefined;
  return v6 ? { family: 6, bytes: v6 } : undefined;
}

function formatAddress(family: 4 | 6, bytes: Uint8Array): string {
  return family === 4 ? Array.from(bytes).join(".") : formatIPv6(bytes);
}

/** Canonical address text of a unicast address (no prefix), or undefined. */
export function canonicalAddress(s: string): { family: 4 | 6; text: string } | undefined {
  const a = parseAddress(s);
  return a ? { family: a.family, text: formatAddress(a.family, a.bytes) } : undefined;
}

/** Canonical CIDR (host bits cleared; a bare address gets /32 or /128), or undefined. */
export function canonicalCidr(s: string): { family: 4 | 6; cidr: string } | undefined {
  const slash = s.indexOf("/");
  const a = parseAddress(slash < 0 ? s : s.slice(0, slash));
  if (!a) return undefined;
  const max = a.family === 4 ? 32 : 128;
  let len = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(p) || Number(p) > max) return undefined;
    len = Number(p);
  }
  const bytes = a.bytes.slice();
  for (let bit = len; bit < max; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  return { family: a.family, cidr: `${formatAddress(a.family, bytes)}/${len}` };
}

function u32(what: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > 0xffffffff) bad(what, v);
  return v;
}

function port(what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 65535) bad(what, v);
  return v;
}

function parseQueue(q: unknown): [number, number] {
  const m = typeof q === "string" ? /^([0-9]{1,5})(?::([0-9]{1,5}))?$/.exec(q) : null;
  if (!m) bad("queue (want N or A:B)", q);
  const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
  if (a > 65535 || b > 65535 || b < a) bad("queue (want N or A:B, A <= B <= 65535)", q);
  return [a, b];
}

/** Checks and canonicalises a spec; throws an {@link NfqlbError} naming the first bad value. */
export function validateSpec(spec: PlumbingSpec): NormalSpec {
  const id = checkId(spec.id);
  const queue = parseQueue(spec.queue);
  if (typeof spec.bypass !== "boolean") bad("bypass", spec.bypass);
  if (!Array.isArray(spec.hooks) || spec.hooks.length === 0) {
    bad("hooks (want prerouting and/or output)", spec.hooks);
  }
  const hooks: PlumbingHook[] = [];
  for (const h of spec.hooks) {
    if (!HOOKS.includes(h)) bad("hook", h);
    if (hooks.includes(h)) bad("hook (twice)", h);
    hooks.push(h);
  }
  if (!Array.isArray(spec.vips)) bad("vips", spec.vips);
  const vips: NormalVip[] = [];
  for (const v of spec.vips) {
    const c = typeof v?.address === "string" ? canonicalCidr(v.address) : undefined;
    if (!c) bad("VIP address", v?.address);
    if (vips.some((x) => x.cidr === c.cidr)) bad("VIP (twice)", v.address);
    const ports: NormalVip["ports"] = [];
    for (const p of v.ports ?? []) {
      if (typeof p?.protocol !== "string" || !isPortProtocol(p.protocol)) {
        bad(`protocol of VIP ${v.address}`, p?.protocol);
      }
      const first = p.port === undefined ? null : port(`port of VIP ${v.address}`, p.port);
      const last = p.lastPort === undefined ? first : port(`last port of VIP ${v.address}`, p.lastPort);
      if (first === null && last !== null) bad(`last port without a port of VIP ${v.address}`, p.lastPort);
      if (first !== null && last !== null && last < first) {
        bad(`port range of VIP ${v.address}`, `${first}-${last}`);
      }
      if (ports.some((x) => x.protocol === p.protocol && x.first === first && x.last === last)) {
        bad(`port of VIP ${v.address} (twice)`, `${p.protocol}/${first ?? "any"}`);
      }
      ports.push({ protocol: p.protocol, first, last });
    }
    vips.push({ family: c.family, cidr: c.cidr, ports });
  }
  if (!Array.isArray(spec.targets)) bad("targets", spec.targets);
  const targets: NormalTarget[] = [];
  for (const t of spec.targets) {
    const fwmark = u32("target fwmark", t?.fwmark, 1);
    const a = typeof t.address === "string" ? canonicalAddress(t.address) : undefined;
    if (!a) bad(`address of target ${fwmark}`, t.address);
    if (t.mode !== "dsr" && t.mode !== "nat" && t.mode !== "fullnat") {
      bad(`mode of target ${fwmark} (want dsr, nat or fullnat)`, t.mode);
    }
    const table = u32(`table of target ${fwmark}`, t.table, 1);
    if (t.mode === "dsr" && table >= 253 && table <= 255) {
      bad(`table of target ${fwmark} (253-255 are default, main, local)`, t.table);
    }
    if (t.port !== undefined && t.mode === "dsr") {
      bad(`port of DSR target ${fwmark} (only NAT translates ports)`, t.port);
    }
    const p = t.port === undefined ? undefined : port(`port of target ${fwmark}`, t.port);
    let snat: string | undefined;
    if (t.mode === "fullnat") {
      const sn = typeof t.snat === "string" ? canonicalAddress(t.snat) : undefined;
      if (!sn || sn.family !== a.family) {
        bad(`snat of full NAT target ${fwmark} (want an IPv${a.family} address)`, t.snat);
      }
      snat = sn.text;
    } else if (t.snat !== undefined) {
      bad(`snat of ${t.mode} target ${fwmark} (only full NAT translates the source)`, t.snat);
    }
    const same = targets.filter((x) => x.family === a.family);
    if (same.some((x) => x.fwmark === fwmark)) bad(`fwmark (twice for IPv${a.family})`, fwmark);
    if (t.mode === "dsr" && same.some((x) => x.mode === "dsr" && x.table === table)) {
      bad(`table of target ${fwmark} (used twice for IPv${a.family})`, table);
    }
    const target: NormalTarget = { family: a.family, fwmark, address: a.text, port: p, mode: t.mode, table };
    if (snat !== undefined) target.snat = snat;
    targets.push(target);
  }
  if (spec.offload !== undefined && typeof spec.offload !== "boolean" && spec.offload !== "auto") {
    bad("offload (want true, false or auto)", spec.offload);
  }
  return { id, queue, bypass: spec.bypass, hooks, vips, targets, offload: spec.offload ?? false };
}
