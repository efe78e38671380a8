/**
 * Flows by diff (nfqlb apply): what a running flowlb has, compared with the
 * flows of a config in their canonical form, and the flow-set / flow-delete
 * requests that make them equal.
 */
import { NfqlbError } from "../core/errors.ts";
import { flowExchange } from "../core/flow/client.ts";
import { decodeReply } from "../core/flow/wire.ts";
import { parseFlowDefinition } from "../core/flow/parse.ts";
import { canonicalRequest, type ListedFlow } from "../core/flow/render.ts";
import type { FlowRequest } from "../core/flow/types.ts";
import type { FlowConfig } from "./config/types.ts";

/** One flow change. */
export type FlowChange =
  | { readonly kind: "set"; readonly name: string; readonly request: FlowRequest; readonly replaces: boolean }
  | { readonly kind: "delete"; readonly name: string };

/** The flow-set command line of a request (for apply's output). */
export function flowSetLine(r: FlowRequest): string {
  const parts = [`flow-set --name=${r.name}`, `--target=${r.target}`];
  if (r.priority !== undefined) parts.push(`--prio=${r.priority}`);
  for (const k of ["protocols", "dsts", "srcs", "dports", "sports", "match", "udpencap"] as const) {
    // flows keep IPv4 CIDRs IPv4-mapped; the line shows them as the file wrote them
    const v = k === "dsts" || k === "srcs"
      ? r[k]?.replace(/::ffff:(\d+\.\d+\.\d+\.\d+)\/(\d+)/g, ipv4Cidr)
      : r[k];
    if (v !== undefined) parts.push(`--${k}=${v}`);
  }
  return parts.join(" ");
}

function ipv4Cidr(_: string, addr: string, len: string): string {
  return `${addr}/${Math.max(0, Number(len) - 96)}`;
}

/** A listed flow (flow-list JSON) as its canonical request; undefined for one that does not parse. */
export function listedToRequest(f: Omit<ListedFlow, "matches_count">): FlowRequest | undefined {
  // flowlb prints the int32 priority as unsigned (upstream's %u)
  const prio = f.priority > 0x7fffffff ? f.priority - 0x100000000 : f.priority;
  const req: FlowRequest = { name: f.name, target: f.user_ref, priority: String(prio) };
  // no protocols listed is any protocol: `--protocols=`, which ports need (as flow-set's request had it)
  req.protocols = (f.protocols ?? []).join(",");
  if (f.dests) req.dsts = f.dests.join(",");
  if (f.srcs) req.srcs = f.srcs.join(",");
  if (f.dports) req.dports = f.dports.join(",");
  if (f.sports) req.sports = f.sports.join(",");
  if (f.match) req.match = f.match.join(",");
  if (f.udpencap) req.udpencap = String(f.udpencap);
  const p = parseFlowDefinition(req, "flow");
  return p.ok ? canonicalRequest(p.definition) : undefined;
}

const same = (a: FlowRequest, b: FlowRequest) =>
  JSON.stringify(canonicalOrder(a)) === JSON.stringify(canonicalOrder(b));
function canonicalOrder(r: FlowRequest): [string, string][] {
  return Object.entries(r).filter(([, v]) => v !== undefined).sort(([a], [b]) => a.localeCompare(b));
}

/**
 * The flows a running flowlb has, by name, as canonical requests. Throws when it does not answer
 * (flowExchange: no reply is an error, never an empty list).
 */
export async function listFlows(address?: string): Promise<Map<string, FlowRequest | undefined>> {
  const reply = await flowExchange({ action: "list" }, address);
  const text = new TextDecoder().decode(reply).trim();
  let listed: ListedFlow[];
  try {
    listed = JSON.parse(text) as ListedFlow[];
    if (!Array.isArray(listed)) throw new Error("not a list");
  } catch {
    throw new NfqlbError(`flow-list: unexpected answer from flowlb: ${text.slice(0, 80)}`);
  }
  return new Map(listed.map((f) => [f.name, listedToRequest(f)]));
}

/** The changes that make `have` (a flowlb's flows) equal the config's `want`. Pure. */
export function planFlows(
  have: ReadonlyMap<string, FlowRequest | undefined>,
  want: readonly FlowConfig[],
): FlowChange[] {
  const changes: FlowChange[] = [];
  const wanted = new Set(want.map((f) => f.name));
  for (const name of have.keys()) if (!wanted.has(name)) changes.push({ kind: "delete", name });
  for (const f of want) {
    const cur = have.get(f.name);
    if (cur !== undefined && same(cur, f.request)) continue;
    changes.push({ kind: "set", name: f.name, request: f.request, replaces: have.has(f.name) });
  }
  return changes;
}

/** Sends one change to flowlb; throws with flowlb's answer when it refuses. */
export async function applyFlowChange(c: FlowChange, address?: string): Promise<void> {
  const reply = c.kind === "set"
    ? await flowExchange({ action: "set", ...c.request }, address)
    : await flowExchange({ action: "delete", name: c.name }, address);
  const text = reply.length ? decodeReply(reply) : "(no answer)";
  if (!text.startsWith("OK")) {
    throw new NfqlbError(`flow-${c.kind} ${c.name}: flowlb answered: ${text}`);
  }
}
