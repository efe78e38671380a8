/**
 * DSR routing objects: `ip rule fwmark F table T` and `ip route default via
 * A table T`, both with protocol {@link RT_PROTO}, and reading back which of
 * them are present. ip rules and routes can carry no text, so the protocol
 * only says "added by nfqlb"; which id owns one is kept in the DSR record
 * rules (see plan.ts).
 */
import { shellLine } from "./names.ts";
import { type PlumbingObject, RT_PROTO } from "./spec.ts";

/** The family option of ip. */
function fam(family: 4 | 6): string[] {
  return family === 4 ? [] : ["-6"];
}

/** `ip rule add fwmark F table T protocol 110`. */
export function ipRuleObject(family: 4 | 6, fwmark: number, table: number): PlumbingObject {
  const sel = ["fwmark", String(fwmark), "table", String(table), "protocol", String(RT_PROTO)];
  const add = ["ip", ...fam(family), "rule", "add", ...sel];
  return {
    key: ipRuleKey(family, fwmark, table),
    kind: "iprule",
    family,
    line: shellLine(add),
    add,
    del: ["ip", ...fam(family), "rule", "del", ...sel],
  };
}

/** `ip route add default via A table T proto 110`. */
export function ipRouteObject(family: 4 | 6, table: number, via: string): PlumbingObject {
  const sel = ["default", "via", via, "table", String(table), "proto", String(RT_PROTO)];
  const add = ["ip", ...fam(family), "route", "add", ...sel];
  return {
    key: ipRouteKey(family, table, via),
    kind: "iproute",
    family,
    line: shellLine(add),
    add,
    del: ["ip", ...fam(family), "route", "del", ...sel],
  };
}

/** Key of an ip rule object. */
export function ipRuleKey(family: 4 | 6, fwmark: number, table: number): string {
  return `rule${family} fwmark ${fwmark} table ${table}`;
}

/** Key of an ip route object. */
export function ipRouteKey(family: 4 | 6, table: number, via: string): string {
  return `route${family} table ${table} default via ${via}`;
}

/** argv that lists the ip rules of a family as JSON, numerically. */
export function listRulesArgv(family: 4 | 6): string[] {
  return ["ip", ...fam(family), "-j", "-N", "rule", "show"];
}

/** argv that lists our-protocol routes of every table of a family as JSON, numerically. */
export function listRoutesArgv(family: 4 | 6): string[] {
  return ["ip", ...fam(family), "-j", "-N", "route", "show", "table", "all", "proto", String(RT_PROTO)];
}

function parseJsonArray(text: string, what: string): Record<string, unknown>[] {
  const t = text.trim();
  if (t === "") return [];
  const v: unknown = JSON.parse(t);
  if (!Array.isArray(v)) throw new Error(`${what}: not a JSON array`);
  return v as Record<string, unknown>[];
}

/** Keys of the ip rules with our protocol (plain fwmark, no mask) in `ip -j -N rule show` output. */
export function parseRules(text: string, family: 4 | 6): Set<string> {
  const keys = new Set<string>();
  for (const r of parseJsonArray(text, "ip rule")) {
    if (String(r.protocol) !== String(RT_PROTO) || r.fwmask !== undefined || r.fwmark === undefined) continue;
    const fwmark = Number(r.fwmark), table = Number(r.table);
    if (Number.isInteger(fwmark) && Number.isInteger(table)) keys.add(ipRuleKey(family, fwmark, table));
  }
  return keys;
}

/** Keys of the default routes in `ip -j -N route show table all proto 110` output. */
export function parseRoutes(text: string, family: 4 | 6): Set<string> {
  const keys = new Set<string>();
  for (const r of parseJsonArray(text, "ip route")) {
    if (r.dst !== "default" || typeof r.gateway !== "string") continue;
    const table = Number(r.table ?? 254);
    if (Number.isInteger(table)) keys.add(ipRouteKey(family, table, r.gateway));
  }
  return keys;
}
