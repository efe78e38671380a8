/**
 * What a config holds on its host, so that configs sharing a host stay
 * apart: its queues, fwmarks and DSR routing tables, its shm files (at the
 * top of the shm directory and in `.nfqlb-deno/`), and the addresses its
 * processes listen on. apply records them in the config's state before it
 * changes anything, refuses a config whose claims meet another recorded
 * config's ({@link findClash}), and teardown removes only the files its own
 * claims name.
 */
import type { HostConfig } from "./config/types.ts";
import { conntrackName } from "../core/conntrack_shm.ts";
import { countersShmName } from "../core/counters_shm.ts";
import { parseMetricsAddress, parseSocketAddress } from "../core/address.ts";
import { hostNames } from "./names.ts";

/** A listen address of a config, and what listens there. */
export interface ClaimedAddress {
  /** `trace`, `flow`, `metrics` or `admin`. */
  what: "trace" | "flow" | "metrics" | "admin";
  /** As the file (or the derivation) writes it. */
  address: string;
}

/** What one config holds on the host. */
export interface Claims {
  /** Its NFQUEUE range (the queue rules send there; its dataplane binds them). */
  queues: { first: number; last: number };
  /** Its targets' fwmarks (the kernel routes by them, whichever config set them). */
  fwmarks: number[];
  /** Its DSR routing tables. */
  tables: number[];
  /** Its files at the top of the shm directory: target tables, and its dataplane's fragment stats. */
  shm: string[];
  /** Its files in `.nfqlb-deno/`: connection tables, its dataplane's counters. */
  own: string[];
  /** The addresses its processes listen on. */
  addresses: ClaimedAddress[];
}

/**
 * The claims of config `cfg`; `admin` is the address `nfqlb run` serves on
 * (`--admin`, else the file's or the derived one). The dataplane's files and
 * addresses only when apply starts it (with `start: false` they belong to
 * whoever runs it).
 */
export function claimsOf(cfg: HostConfig, admin: string = cfg.admin.address): Claims {
  const d = cfg.dataplane, names = hostNames(cfg);
  const shm = cfg.services.map((s) => s.name);
  const own = cfg.services.filter((s) => s.conntrack).map((s) => conntrackName(s.name));
  const addresses: ClaimedAddress[] = [];
  if (d.start) {
    shm.push(names.ftShm);
    own.push(names.counters);
    addresses.push({ what: "trace", address: names.traceAddress });
    if (names.flowAddress) addresses.push({ what: "flow", address: names.flowAddress });
    if (names.metrics) addresses.push({ what: "metrics", address: names.metrics });
  }
  addresses.push({ what: "admin", address: admin });
  const targets = cfg.services.flatMap((s) => s.targets);
  return {
    queues: { ...d.queues },
    fwmarks: [...new Set(targets.map((t) => t.fwmark))],
    tables: [...new Set(targets.flatMap((t) => t.table === null ? [] : [t.table]))],
    shm,
    own,
    addresses,
  };
}

/**
 * The claims of a state written before claims were recorded: its services'
 * tables and connection tables, and, when apply ran a dataplane for it, that
 * dataplane's files, queues and trace address (from its command line).
 */
export function claimsOfOldState(
  st: { services: string[]; ftShm: string; program: string | null; args: string[] },
): Claims {
  const arg = (name: string) => st.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const [first, last] = (arg("queue") ?? "2").split(":").map(Number);
  const c: Claims = {
    queues: { first, last: last ?? first },
    fwmarks: [],
    tables: [],
    shm: [...st.services],
    own: st.services.map(conntrackName),
    addresses: [],
  };
  if (st.program !== null) {
    c.shm.push(st.ftShm);
    c.own.push(countersShmName(st.ftShm));
    c.addresses.push({ what: "trace", address: arg("trace_address") ?? "unix:nfqlb-trace" });
  }
  return c;
}

/** The union of two claims (what an apply in progress may leave: the old config's and the new one's). */
export function unionClaims(a: Claims, b: Claims): Claims {
  const u = <T>(x: T[], y: T[]) => [...new Set([...x, ...y])];
  const seen = new Set<string>();
  return {
    queues: { first: Math.min(a.queues.first, b.queues.first), last: Math.max(a.queues.last, b.queues.last) },
    fwmarks: u(a.fwmarks, b.fwmarks),
    tables: u(a.tables, b.tables),
    shm: u(a.shm, b.shm),
    own: u(a.own, b.own),
    addresses: [...a.addresses, ...b.addresses].filter((x) => {
      const k = `${x.what} ${x.address}`;
      return !seen.has(k) && seen.add(k);
    }),
  };
}

/** A listen address reduced to what the kernel compares: a unix name, or a TCP host and port. */
type Endpoint = { unix: string } | { host: string; port: number };

function endpoint(a: ClaimedAddress): Endpoint | undefined {
  if (a.what === "metrics" || a.what === "admin") {
    try {
      const m = parseMetricsAddress(a.address);
      return { host: m.hostname.toLowerCase(), port: m.port };
    } catch {
      return undefined;
    }
  }
  const s = parseSocketAddress(a.address);
  if (!s) return undefined;
  return s.transport === "unix" ? { unix: s.path } : { host: s.hostname.toLowerCase(), port: s.port };
}

/** The wildcard address of either family binds the port on every address: it meets any address there. */
const isAny = (h: string) => h === "0.0.0.0" || h === "::";

/** Whether two listen addresses cannot both be bound. */
export function sameEndpoint(a: ClaimedAddress, b: ClaimedAddress): boolean {
  const x = endpoint(a), y = endpoint(b);
  if (!x || !y) return false;
  if ("unix" in x || "unix" in y) return "unix" in x && "unix" in y && x.unix === y.unix;
  return x.port === y.port && (x.host === y.host || isAny(x.host) || isAny(y.host));
}

/** A recorded config, as {@link findClash} compares it. */
export interface ClaimingConfig {
  /** Its name. */
  name: string;
  /** Its file (as recorded). */
  file: string;
  /** What it holds. */
  claims: Claims;
}

/** What two claims share, one short phrase each (`queue 2`, `fwmark 101`, `shm web`, …); empty: none. */
export function sharedClaims(mine: Claims, theirs: Claims): string[] {
  const out: string[] = [];
  const a = mine.queues, b = theirs.queues;
  const lo = Math.max(a.first, b.first), hi = Math.min(a.last, b.last);
  if (lo <= hi) out.push(lo === hi ? `queue ${lo}` : `queues ${lo}:${hi}`);
  const common = <T>(x: T[], y: T[]) => x.filter((v) => y.includes(v));
  for (const f of common(mine.fwmarks, theirs.fwmarks)) out.push(`fwmark ${f}`);
  for (const t of common(mine.tables, theirs.tables)) out.push(`routing table ${t}`);
  for (const s of common(mine.shm, theirs.shm)) out.push(`shm ${s}`);
  for (const s of common(mine.own, theirs.own)) out.push(`shm .nfqlb-deno/${s}`);
  for (const x of mine.addresses) {
    for (const y of theirs.addresses) {
      if (!sameEndpoint(x, y)) continue;
      out.push(
        x.what === y.what && x.address === y.address
          ? `${x.what} address ${x.address}`
          : `${x.what} address ${x.address} (theirs: ${y.what} address ${y.address})`,
      );
    }
  }
  return out;
}

/**
 * The first recorded config whose claims meet `mine`, as one line (without
 * the file prefix), or undefined when none does:
 * `config b clashes with config a (/etc/nfqlb/a.yaml): both use queue 2, fwmark 101 (and 2 more)`.
 */
export function findClash(mine: ClaimingConfig, others: readonly ClaimingConfig[]): string | undefined {
  for (const o of others) {
    if (o.name === mine.name) continue;
    const shared = sharedClaims(mine.claims, o.claims);
    if (shared.length === 0) continue;
    const more = shared.length > 3 ? ` (and ${shared.length - 3} more)` : "";
    return `config ${mine.name} clashes with config ${o.name} (${o.file}) on this host: both use ${
      shared.slice(0, 3).join(", ")
    }${more}`;
  }
  return undefined;
}
