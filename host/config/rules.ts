/**
 * The rules between keys of a host config that its schema cannot say, and
 * the step from the parsed file to a {@link HostConfig}. Each broken rule is
 * an {@link Issue} at a path; nothing here throws on bad input. Flows are
 * checked by the flow validator of flow-set (core/flow/parse.ts), with its
 * texts. The rules are listed in docs/config.md.
 */
import { parseCidr, parseFlowDefinition } from "../../core/flow/parse.ts";
import { canonicalRequest } from "../../core/flow/render.ts";
import type { FlowRequest } from "../../core/flow/types.ts";
import { formatIPv6 } from "../../core/inet.ts";
import { parseMetricsAddress, parseSocketAddress } from "../../core/address.ts";
import { primeBelow } from "../../core/prime.ts";
import { TRACE_SHM } from "../../core/trace_shm.ts";
import { derivedAdminAddress, derivedFlowAddress, derivedFtShm, derivedTraceAddress } from "../names.ts";
import type { DataPath } from "./source.ts";
import { BGP_DEFAULTS, HEALTH_DEFAULTS, type HostConfigParsed } from "./schema.ts";
import type {
  Family,
  FlowConfig,
  HealthConfig,
  HostConfig,
  PortSelector,
  ServiceConfig,
  SnatAddresses,
  TargetConfig,
  Vip,
} from "./types.ts";

/** One broken rule. */
export interface Issue {
  /** Where. */
  path: DataPath;
  /** What was expected: `expected …`. */
  expected: string;
  /** What was found, when not simply the value at `path`. */
  got?: string;
  /** Point at the key rather than its value (unknown keys). */
  key?: boolean;
}

/** Routing tables the kernel reserves: unspec, default, main, local. */
const RESERVED_TABLES = new Set([0, 253, 254, 255]);
const TABLE_TEXT = "a routing table 1..4294967295 other than 253 (default), 254 (main), 255 (local)";

/** An address or CIDR, parsed strictly (as flow-set's CIDRs: no leading zeros, prefix in range). */
interface Net {
  family: Family;
  /** Canonical text, CIDR form. */
  cidr: string;
  /** Canonical address text (no prefix). */
  address: string;
  /** Prefix length of the family (IPv4: 0..32). */
  prefix: number;
  /** Whether bits beyond the prefix were set. */
  hostBits: boolean;
}

function parseNet(text: string): Net | undefined {
  const slash = text.indexOf("/");
  const family: Family = text.includes(":") ? "ipv6" : "ipv4";
  const full = family === "ipv4" ? 32 : 128;
  const host = slash < 0 ? text : text.slice(0, slash);
  const exact = parseCidr(`${host}/${full}`);
  const net = parseCidr(slash < 0 ? `${text}/${full}` : text);
  if (!exact || !net) return undefined;
  const prefix = family === "ipv4" ? net.prefix - 96 : net.prefix;
  const show = (a: Uint8Array) => family === "ipv4" ? Array.from(a.subarray(12)).join(".") : formatIPv6(a);
  return {
    family,
    cidr: `${show(net.addr)}/${prefix}`,
    address: show(net.addr),
    prefix,
    hostBits: exact.addr.some((b, i) => b !== net.addr[i]),
  };
}

type ParsedService = HostConfigParsed["services"][number];
type ParsedTarget = ParsedService["targets"][number];
type ParsedSnat = NonNullable<ParsedService["snat"]>;

const FAMILY_NAME = { ipv4: "IPv4", ipv6: "IPv6" } as const;

/**
 * Whether an address can be a source on the wire: not unspecified, loopback,
 * multicast (nor IPv4's reserved 240/4 and broadcast).
 */
function isUnicast(n: Net): boolean {
  if (n.family === "ipv4") {
    const first = Number(n.address.split(".")[0]);
    return first !== 0 && first !== 127 && first < 224;
  }
  return n.address !== "::" && n.address !== "::1" && !/^ff[0-9a-f]{2}:/.test(n.address);
}

/** A checked `snat` mapping: the canonical addresses, and the families whose address was refused. */
interface CheckedSnat {
  addresses: SnatAddresses;
  bad: Set<Family>;
}

/**
 * Checks a `snat` mapping (of a service or a target): at least one family,
 * each a unicast address of its key's family, and only families the
 * service's VIPs have (`families`; null when the VIPs are bad).
 */
function checkSnat(
  snat: ParsedSnat,
  families: Set<Family> | null,
  at: DataPath,
  issues: Issue[],
): CheckedSnat {
  const addresses = { ipv4: null as string | null, ipv6: null as string | null };
  const bad = new Set<Family>();
  if (snat.ipv4 === undefined && snat.ipv6 === undefined) {
    // refused as a whole: a family missing because of it is not reported again
    bad.add("ipv4").add("ipv6");
    issues.push({ path: at, expected: "expected a mapping with ipv4 and/or ipv6 (the source addresses)" });
  }
  for (const f of ["ipv4", "ipv6"] as const) {
    const text = snat[f];
    if (text === undefined) continue;
    const n = parseNet(text);
    const name = FAMILY_NAME[f];
    if (!n || text.includes("/") || n.family !== f || !isUnicast(n)) {
      bad.add(f);
      issues.push({
        path: [...at, f],
        expected: `expected a unicast ${name} address (${
          f === "ipv4" ? "not 0.x, 127.x, multicast or broadcast" : "not ::, ::1 or multicast"
        })`,
      });
    } else if (families && !families.has(f)) {
      bad.add(f);
      issues.push({
        path: [...at, f],
        expected: `expected no ${name} address (the service has no ${name} VIPs)`,
      });
    } else addresses[f] = n.address;
  }
  return { addresses, bad };
}

function checkVips(s: ParsedService, at: DataPath, issues: Issue[]): Vip[] {
  const vips: Vip[] = [];
  s.vips.forEach((text, i) => {
    const n = parseNet(text);
    if (!n) {
      issues.push({
        path: [...at, "vips", i],
        expected: "expected an IP address or CIDR (10.0.0.1, fd00::/64)",
      });
    } else if (n.hostBits) {
      issues.push({
        path: [...at, "vips", i],
        expected: `expected a CIDR with no host bits set (${n.cidr})`,
      });
    } else if (vips.some((v) => v.cidr === n.cidr)) {
      issues.push({ path: [...at, "vips", i], expected: "expected each VIP once" });
    } else vips.push({ cidr: n.cidr, family: n.family });
  });
  return vips;
}

function checkPorts(s: ParsedService, at: DataPath, issues: Issue[]): PortSelector[] | null {
  if (!s.ports) return null;
  return s.ports.map((p, i): PortSelector => {
    if (p.port === undefined) return { protocol: p.protocol, ports: null };
    const [first, last] = typeof p.port === "number" ? [p.port, p.port] : p.port.split("-").map(Number);
    if (!(first >= 1 && last <= 65535 && first <= last)) {
      issues.push({
        path: [...at, "ports", i, "port"],
        expected: 'expected a range "first-last" in 1..65535',
      });
    }
    return { protocol: p.protocol, ports: { first, last } };
  });
}

function checkAddresses(
  t: ParsedTarget,
  families: Set<Family> | null,
  at: DataPath,
  issues: Issue[],
): { ipv4: string | null; ipv6: string | null } {
  const out: { ipv4: string | null; ipv6: string | null } = { ipv4: null, ipv6: null };
  const list = typeof t.address === "string" ? [t.address] : t.address;
  const path = (i: number) => typeof t.address === "string" ? [...at, "address"] : [...at, "address", i];
  const vipFamilies = [...families ?? []].join(" and ");
  list.forEach((text, i) => {
    const n = parseNet(text);
    if (!n || text.includes("/")) {
      issues.push({ path: path(i), expected: "expected an IPv4 or IPv6 address" });
    } else if (out[n.family] !== null) {
      issues.push({ path: path(i), expected: "expected at most one address per family" });
    } else if (families && !families.has(n.family)) {
      issues.push({
        path: path(i),
        expected: `expected an address of the family of the VIPs (${vipFamilies})`,
      });
    } else out[n.family] = n.address;
  });
  // any packet, of either family, may hash to any target: each needs an address of each VIP family
  for (const f of families ?? []) {
    if (out[f] === null && list.every((a) => parseNet(a) !== undefined)) {
      issues.push({
        path: [...at, "address"],
        expected: `expected an ${f === "ipv4" ? "IPv4" : "IPv6"} address too (the service has ${
          f === "ipv4" ? "IPv4" : "IPv6"
        } VIPs)`,
      });
    }
  }
  return out;
}

/**
 * The source addresses of a fullnat target: per VIP family, the target's own
 * `snat` address, else its service's. A family with neither is an issue at
 * the target's `snat` (or at its `mode` when it has none); a family whose
 * address was refused already is not reported twice.
 */
function resolveSnat(
  t: ParsedTarget,
  service: CheckedSnat | null,
  families: Set<Family> | null,
  at: DataPath,
  issues: Issue[],
): SnatAddresses {
  const own = t.snat ? checkSnat(t.snat, families, [...at, "snat"], issues) : null;
  const snat = {
    ipv4: own?.addresses.ipv4 ?? service?.addresses.ipv4 ?? null,
    ipv6: own?.addresses.ipv6 ?? service?.addresses.ipv6 ?? null,
  };
  for (const f of families ?? []) {
    // the target's own refused address, or a refused service address it would inherit
    const inherited = (own?.addresses[f] ?? null) === null;
    const refused = own?.bad.has(f) || (inherited && service?.bad.has(f));
    if (snat[f] !== null || refused) continue;
    const name = FAMILY_NAME[f];
    issues.push({
      path: [...at, t.snat ? "snat" : "mode"],
      expected: `expected an ${name} source address with fullnat (snat.${f} on the target or its service; ` +
        `the service has ${name} VIPs)`,
    });
  }
  return snat;
}

type ParsedHealth = NonNullable<ParsedService["health"]>;
/** Keys of a health mapping that belong to one type only. */
const HEALTH_TYPE_KEYS = {
  path: "http",
  expect: "http",
  body: "http",
  payload: "udp",
  command: "exec",
} as const;

/**
 * A target's health check: the service's mapping, overridden key by key by
 * the target's (when the target changes the type, only the keys common to
 * every type are inherited), then the defaults. Null when neither has one.
 */
function checkHealth(
  service: ParsedHealth | undefined,
  own: ParsedHealth | undefined,
  t: ParsedTarget,
  servicePorts: PortSelector[] | null,
  at: DataPath,
  issues: Issue[],
): HealthConfig | null {
  if (!service && !own) return null;
  const where: DataPath = own ? [...at, "health"] : [...at.slice(0, -2), "health"];
  let inherited: ParsedHealth = service ?? {};
  if (own?.type !== undefined && service?.type !== undefined && own.type !== service.type) {
    const { path: _p, expect: _e, body: _b, payload: _l, command: _c, ...common } = service;
    inherited = common;
  }
  const h = { ...inherited, ...own };
  if (h.type === undefined) {
    issues.push({
      path: where,
      expected: "expected a health check with a type (tcp, http, udp, icmp, exec)",
    });
    return null;
  }
  for (const [k, type] of Object.entries(HEALTH_TYPE_KEYS)) {
    if (h[k as keyof typeof HEALTH_TYPE_KEYS] !== undefined && h.type !== type) {
      const from = own?.[k as keyof typeof HEALTH_TYPE_KEYS] !== undefined ? [...at, "health"] : where;
      issues.push({
        path: [...from, k],
        expected: `expected no ${k} with type ${h.type} (it is for ${type})`,
      });
    }
  }
  const intervalMs = h.intervalMs ?? HEALTH_DEFAULTS.intervalMs;
  const timeoutMs = h.timeoutMs ?? Math.min(HEALTH_DEFAULTS.timeoutMs, intervalMs);
  if (timeoutMs > intervalMs) {
    issues.push({
      path: [...where, "timeoutMs"],
      expected: `expected a timeout ≤ intervalMs (${intervalMs}): one check at a time per target`,
      got: String(timeoutMs),
    });
  }
  let port: number | null = null;
  if (h.type === "tcp" || h.type === "http" || h.type === "udp") {
    // a NAT target answers on its own port; the check goes where its traffic goes
    port = t.mode !== "dsr" && t.port !== undefined
      ? t.port
      : h.port ?? servicePorts?.[0]?.ports?.first ?? null;
    if (port === null) {
      issues.push({
        path: where,
        expected: `expected a port in the ${h.type} health check (the service has no ports: to take it from)`,
      });
    }
  }
  if (h.type === "exec" && h.command === undefined) {
    issues.push({ path: where, expected: "expected a command with type exec" });
  }
  return {
    type: h.type,
    port,
    intervalMs,
    timeoutMs,
    rise: h.rise ?? HEALTH_DEFAULTS.rise,
    fall: h.fall ?? HEALTH_DEFAULTS.fall,
    onFail: h.onFail ?? HEALTH_DEFAULTS.onFail,
    path: h.path ?? HEALTH_DEFAULTS.path,
    expect: h.expect ?? HEALTH_DEFAULTS.expect,
    body: h.body ?? null,
    payload: h.payload ?? HEALTH_DEFAULTS.payload,
    command: h.command ?? [],
  };
}

function checkTarget(
  t: ParsedTarget,
  families: Set<Family> | null,
  serviceSnat: CheckedSnat | null,
  at: DataPath,
  issues: Issue[],
  health: { service: ParsedHealth | undefined; ports: PortSelector[] | null },
): TargetConfig {
  const addr = checkAddresses(t, families, at, issues);
  if (t.port !== undefined && t.mode === "dsr") {
    issues.push({
      path: [...at, "port"],
      expected: "expected no port with mode dsr (port translation needs mode: nat or fullnat)",
    });
  }
  if (t.snat !== undefined && t.mode !== "fullnat") {
    issues.push({
      path: [...at, "snat"],
      expected: `expected no snat with mode ${t.mode} (source translation needs mode: fullnat)`,
    });
  }
  const snat = t.mode === "fullnat" ? resolveSnat(t, serviceSnat, families, at, issues) : null;
  let table: number | null = null;
  if (t.mode !== "dsr") {
    if (t.table !== undefined) {
      issues.push({
        path: [...at, "table"],
        expected: `expected no table with mode ${t.mode} (NAT'ed packets are routed by the main table)`,
      });
    }
  } else {
    table = t.table ?? t.fwmark;
    if (RESERVED_TABLES.has(table)) {
      issues.push(
        t.table === undefined
          ? { path: [...at, "fwmark"], expected: `expected a table too: the fwmark is not ${TABLE_TEXT}` }
          : { path: [...at, "table"], expected: `expected ${TABLE_TEXT}` },
      );
    }
  }
  return {
    fwmark: t.fwmark,
    ...addr,
    port: t.port ?? null,
    weight: t.weight,
    mode: t.mode,
    table,
    snat,
    active: t.active,
    health: checkHealth(health.service, t.health, t, health.ports, at, issues),
  };
}

function checkService(s: ParsedService, at: DataPath, issues: Issue[]): ServiceConfig {
  const m = primeBelow(s.m);
  if (s.n > m) {
    issues.push({
      path: [...at, "n"],
      expected: `expected an integer 1..${m} (n ≤ m${
        m === s.m ? "" : `, and m ${s.m} becomes the prime ${m}`
      })`,
    });
  }
  if (s.scheduler !== "maglev" && !s.conntrack) {
    issues.push({
      path: [...at, "scheduler"],
      expected: "expected maglev, or a conntrack section (per-connection schedulers keep state there)",
    });
  }
  const before = issues.length;
  const vips = checkVips(s, at, issues);
  // with a bad VIP the families are unknown: judging the targets' addresses would only add noise
  const families = issues.length === before ? new Set(vips.map((v) => v.family)) : null;
  const snat = s.snat ? checkSnat(s.snat, families, [...at, "snat"], issues) : null;
  if (s.snat && s.targets.length > 0 && !s.targets.some((t) => t.mode === "fullnat")) {
    issues.push({
      path: [...at, "snat"],
      expected: "expected a target with mode: fullnat in the service (snat is for fullnat targets)",
    });
  }
  const active = s.targets.filter((t) => t.active).length;
  if (active > s.n) {
    issues.push({
      path: [...at, "targets"],
      expected: `expected at most n = ${s.n} active targets`,
      got: `${active}`,
    });
  }
  const ct = s.conntrack;
  const ports = checkPorts(s, at, issues);
  return {
    name: s.name,
    m,
    requestedM: s.m,
    n: s.n,
    scheduler: s.scheduler,
    conntrack: ct
      ? { capacity: ct.capacity, ttlMs: ct.ttlMs, floodPerSecond: ct.floodPerSecond, contexts: ct.contexts }
      : null,
    vips,
    ports,
    targets: s.targets.map((t, j) =>
      checkTarget(t, families, snat, [...at, "targets", j], issues, { service: s.health, ports })
    ),
  };
}

/** fwmarks and DSR tables are global: the kernel routes by them, whatever the service. */
function checkGlobalUniqueness(services: readonly ServiceConfig[], issues: Issue[]): void {
  const fwmarks = new Map<number, string>(),
    tables = new Map<number, string>(),
    names = new Map<string, string>();
  services.forEach((s, i) => {
    const prev = names.get(s.name);
    if (prev) {
      issues.push({
        path: ["services", i, "name"],
        expected: `expected a name no other service has (${prev})`,
      });
    } else names.set(s.name, `services[${i}]`);
    s.targets.forEach((t, j) => {
      const here = `services[${i}].targets[${j}]`;
      const fw = fwmarks.get(t.fwmark);
      if (fw) {
        issues.push({
          path: ["services", i, "targets", j, "fwmark"],
          expected: `expected a fwmark unique across all services (${fw} has it)`,
        });
        // its table (by default the fwmark) is then a duplicate too: one report is enough
        if (t.table === t.fwmark) return;
      } else fwmarks.set(t.fwmark, here);
      if (t.table === null || RESERVED_TABLES.has(t.table)) return;
      const tb = tables.get(t.table);
      if (tb) {
        issues.push({
          path: ["services", i, "targets", j, t.table === t.fwmark ? "fwmark" : "table"],
          expected: `expected a routing table no other target uses (${tb} uses ${t.table})`,
        });
      } else tables.set(t.table, here);
    });
  });
  // the trace shm would be clobbered (connection tables are in our own directory: no clash with a service)
  services.forEach((s, i) => {
    if (s.name === TRACE_SHM) {
      issues.push({ path: ["services", i, "name"], expected: "expected a name that is not the trace shm" });
    }
  });
}

/** The file's list items as flow-set's comma-separated text. */
function joined(v: readonly (string | number)[] | undefined): string | undefined {
  return v === undefined ? undefined : v.map(String).join(",");
}

const LIST_FIELDS = ["protocols", "dsts", "srcs", "dports", "sports", "match"] as const;

function checkFlows(cfg: HostConfigParsed, issues: Issue[]): FlowConfig[] {
  const services = cfg.services.map((s) => s.name);
  const seen = new Map<string, number>();
  const out: FlowConfig[] = [];
  (cfg.flows ?? []).forEach((f, i) => {
    const at: DataPath = ["flows", i];
    if (!services.includes(f.service)) {
      issues.push({
        path: [...at, "service"],
        expected: `expected the name of a service (${services.join(", ")})`,
      });
    }
    const prev = seen.get(f.name);
    if (prev !== undefined) {
      issues.push({ path: [...at, "name"], expected: `expected a name no other flow has (flows[${prev}])` });
    } else seen.set(f.name, i);
    const req: FlowRequest = {
      name: f.name,
      target: f.service,
      priority: String(f.priority),
      protocols: joined(f.protocols),
      dsts: joined(f.dsts),
      srcs: joined(f.srcs),
      dports: joined(f.dports),
      sports: joined(f.sports),
      match: joined(f.match),
      udpencap: f.udpencap === 0 ? undefined : String(f.udpencap),
    };
    for (const k of Object.keys(req) as (keyof FlowRequest)[]) if (req[k] === undefined) delete req[k];
    const r = parseFlowDefinition(req, "flow");
    if (r.ok) {
      out.push({
        name: f.name,
        service: f.service,
        request: canonicalRequest(r.definition),
        definition: r.definition,
      });
      return;
    }
    const field = r.field === "target" ? "service" : r.field;
    let path: DataPath = [...at, field];
    // point at the list item that the validator refuses on its own, when there is one
    const items = (LIST_FIELDS as readonly string[]).includes(field)
      ? f[field as (typeof LIST_FIELDS)[number]]
      : undefined;
    // the items are at fault only when the field passes without them (else e.g. ports without protocols)
    const empty = parseFlowDefinition({ ...req, [field]: "" }, "flow");
    const emptyOk = empty.ok || empty.field !== r.field;
    const bad = !emptyOk ? -1 : items?.findIndex((item) => {
      const one = parseFlowDefinition({ ...req, [field]: String(item) }, "flow");
      return !one.ok && one.field === r.field;
    });
    if (bad !== undefined && bad >= 0) path = [...path, bad];
    issues.push({ path, expected: `expected what flow-set accepts (${r.error})` });
  });
  return out;
}

function checkDataplane(cfg: HostConfigParsed, flows: boolean, issues: Issue[]): HostConfig["dataplane"] {
  const d = cfg.dataplane;
  const queue = String(d.queue);
  const [first, last] = queue.split(":").map(Number).concat(Number(queue.split(":")[0])).slice(0, 2);
  if (!(first <= 65535 && last <= 65535 && first <= last)) {
    issues.push({
      path: ["dataplane", "queue"],
      expected: 'expected a queue 0..65535 or a range "first:last"',
    });
  }
  d.hooks.forEach((h, i) => {
    if (d.hooks.indexOf(h) !== i) {
      issues.push({ path: ["dataplane", "hooks", i], expected: "expected each hook once" });
    }
  });
  const o = d.options, at = ["dataplane", "options"];
  const program = flows ? "flowlb" : "lb";
  for (const k of ["nolbFwmark", "promiscuous", "flowAddress"] as const) {
    if (!flows && o[k] !== undefined) {
      issues.push({
        path: [...at, k],
        expected: "expected no flowlb option without flows (the dataplane is lb)",
      });
    }
  }
  if (flows && o.sctpEncap !== undefined) {
    issues.push({
      path: [...at, "sctpEncap"],
      expected: "expected no lb option with flows (the dataplane is flowlb)",
    });
  }
  const fwmarks = new Set(cfg.services.flatMap((s) => s.targets.map((t) => t.fwmark)));
  for (const k of ["notargetsFwmark", "nolbFwmark"] as const) {
    const v = o[k];
    if (v !== undefined && fwmarks.has(v)) {
      issues.push({
        path: [...at, k],
        expected: "expected a fwmark no target has (it would be routed to that target)",
      });
    }
  }
  for (const k of ["traceAddress", "flowAddress"] as const) {
    const v = o[k];
    if (v !== undefined && !parseSocketAddress(v)) {
      issues.push({
        path: [...at, k],
        expected: "expected an address unix:NAME, tcp:IPV4:PORT or tcp:[IPV6]:PORT",
      });
    }
  }
  if (o.metrics !== undefined) {
    try {
      parseMetricsAddress(o.metrics);
    } catch {
      issues.push({ path: [...at, "metrics"], expected: "expected ADDR:PORT or [ADDR]:PORT" });
    }
  }
  // the names on the host that the file leaves out derive from the config's name (host/names.ts), so two
  // configs never share them by default; the command line and the state then carry them
  const ftShm = o.ftShm ?? derivedFtShm(cfg.name);
  const options = {
    ...o,
    ftShm,
    traceAddress: o.traceAddress ?? derivedTraceAddress(cfg.name),
    ...(flows ? { flowAddress: o.flowAddress ?? derivedFlowAddress(cfg.name) } : {}),
  };
  cfg.services.forEach((s, i) => {
    if (s.name === ftShm) {
      issues.push({
        path: ["services", i, "name"],
        expected: `expected a name that is not the fragment table's (${ftShm})`,
      });
    }
  });
  return {
    program,
    queue: first === last ? `${first}` : `${first}:${last}`,
    queues: { first, last },
    bypass: d.bypass,
    hooks: d.hooks,
    options,
    start: d.start,
    offload: d.offload,
  };
}

/** The admin address parses as the lb's --metrics does, and is not the lb's own metrics address. */
function checkAdmin(cfg: HostConfigParsed, issues: Issue[]): HostConfig["admin"] {
  const address = cfg.admin.address ?? derivedAdminAddress(cfg.name), at = ["admin", "address"];
  let admin: { hostname: string; port: number } | undefined;
  try {
    admin = parseMetricsAddress(address);
  } catch {
    issues.push({ path: at, expected: "expected ADDR:PORT or [ADDR]:PORT" });
  }
  const metrics = cfg.dataplane.options.metrics;
  if (admin && metrics !== undefined) {
    try {
      const m = parseMetricsAddress(metrics);
      if (
        m.port === admin.port && (m.hostname === admin.hostname || isAny(m.hostname) || isAny(admin.hostname))
      ) {
        issues.push({
          path: at,
          expected:
            `expected an address other than dataplane.options.metrics (${metrics}: the lb serves there)`,
        });
      }
    } catch { /* reported by checkDataplane */ }
  }
  return { address };
}

/** A community `A:B` (16-bit parts) or large community `A:B:C` (32-bit parts), or undefined. */
function community(text: string): string | undefined {
  const parts = text.split(":");
  if (parts.length !== 2 && parts.length !== 3) return undefined;
  const max = parts.length === 2 ? 65535 : 4294967295;
  if (!parts.every((p) => /^(0|[1-9][0-9]{0,9})$/.test(p) && Number(p) <= max)) return undefined;
  return parts.join(":");
}

/** The bgp section: addresses parsed, one session per peer address, the BIRD mode's paths. */
function checkBgp(cfg: HostConfigParsed, issues: Issue[]): HostConfig["bgp"] {
  const b = cfg.bgp;
  if (!b) return null;
  let routerId: string | null = null;
  if (b.routerId !== undefined) {
    const n = parseNet(b.routerId);
    if (!n || n.family !== "ipv4" || b.routerId.includes("/")) {
      issues.push({ path: ["bgp", "routerId"], expected: "expected an IPv4 address (the router id)" });
    } else routerId = n.address;
  }
  const seen = new Set<string>();
  const peers = b.peers.map((p, i) => {
    const at = ["bgp", "peers", i, "address"];
    const n = p.address.includes("/") ? undefined : parseNet(p.address);
    if (!n || !isUnicast(n)) issues.push({ path: at, expected: "expected a unicast IP address" });
    else if (seen.has(n.address)) {
      issues.push({ path: at, expected: "expected a peer address not listed before" });
    }
    if (n) seen.add(n.address);
    const bfd = p.bfd === true
      ? { intervalMs: BGP_DEFAULTS.bfd.intervalMs, multiplier: BGP_DEFAULTS.bfd.multiplier }
      : p.bfd === false
      ? null
      : p.bfd;
    return {
      address: n?.address ?? p.address,
      family: n?.family ?? "ipv4",
      as: p.as,
      bfd,
      holdSeconds: p.holdSeconds,
      port: p.port,
    };
  });
  const communities = b.communities.map((c, i) => {
    const v = community(c);
    if (v === undefined) {
      issues.push({
        path: ["bgp", "communities", i],
        expected:
          'expected a community "A:B" (0..65535 each) or a large community "A:B:C" (0..4294967295 each)',
      });
    }
    return v ?? c;
  });
  for (const fam of ["ipv4", "ipv6"] as const) {
    const vips = cfg.services.some((s) => s.vips.some((v) => (v.includes(":") ? "ipv6" : "ipv4") === fam));
    if (vips && !peers.some((p) => p.family === fam)) {
      issues.push({
        path: ["bgp", "peers"],
        expected: `expected an ${fam === "ipv4" ? "IPv4" : "IPv6"} peer (a service has ${
          fam === "ipv4" ? "IPv4" : "IPv6"
        } VIPs, and a session carries the VIPs of its own family)`,
        got: peers.map((p) => p.address).join(", "),
      });
    }
  }
  return {
    localAs: b.localAs,
    routerId,
    peers,
    drainSeconds: b.drainSeconds,
    communities,
    bird: b.bird,
    gracefulRestart: b.gracefulRestart,
    connectRetrySeconds: b.connectRetrySeconds,
    include: b.include ?? BGP_DEFAULTS.externalInclude.replace("<name>", cfg.name),
    socket: b.socket ?? BGP_DEFAULTS.externalSocket,
  };
}

/** The wildcard address of either family (binds every address, so it clashes with any on its port). */
function isAny(hostname: string): boolean {
  return hostname === "0.0.0.0" || hostname === "::";
}

/**
 * Checks the rules between keys of a file that passed the schema, and builds
 * the {@link HostConfig}. The config is meaningful only when no issue is
 * returned.
 */
export function checkRules(cfg: HostConfigParsed): { config: HostConfig; issues: Issue[] } {
  const issues: Issue[] = [];
  const services = cfg.services.map((s, i) => checkService(s, ["services", i], issues));
  checkGlobalUniqueness(services, issues);
  const flows = checkFlows(cfg, issues);
  const hasFlows = cfg.flows !== undefined;
  if (!hasFlows && cfg.services.length !== 1) {
    issues.push({
      path: ["services"],
      expected:
        "expected exactly one service without flows (lb serves one table; flows select among several)",
      got: `${cfg.services.length} services`,
    });
  }
  const dataplane = checkDataplane(cfg, hasFlows, issues);
  const admin = checkAdmin(cfg, issues);
  const bgp = checkBgp(cfg, issues);
  return { config: { version: 1, name: cfg.name, services, flows, dataplane, admin, bgp }, issues };
}
