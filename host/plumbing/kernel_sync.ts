/**
 * Reads, diffs, applies and removes an id's plumbing in the kernel. Only
 * objects that carry the id's tag (iptables comment, our chain names, our nft
 * table, ip rules and routes named by the id's DSR records) are ever read
 * as ours, changed or deleted.
 */
import { NfqlbError } from "../../core/errors.ts";
import { firstLine, mustRun, runCommand } from "./exec.ts";
import { iptablesCmd, parseSave } from "./iptables.ts";
import {
  ipRouteKey,
  ipRouteObject,
  ipRuleKey,
  ipRuleObject,
  listRoutesArgv,
  listRulesArgv,
  parseRoutes,
  parseRules,
} from "./iproute.ts";
import { nftTableName, shellLine } from "./names.ts";
import { detectNftQueue, parseNftTable } from "./nft.ts";
import { addOrder, ourChains, parseRecord, planPlumbing, recordChains } from "./plan.ts";
import type { PlumbingObject, PlumbingOptions, PlumbingSpec } from "./spec.ts";
import { checkId } from "./validate.ts";

/** What {@link applyPlumbing} did (or, with dryRun, would do): command lines. */
export interface ApplyResult {
  added: string[];
  removed: string[];
  /** Desired objects already present. */
  unchanged: number;
  /** The objects this run added (none with dryRun): what {@link removeObjects} takes back. */
  addedObjects: PlumbingObject[];
}

/**
 * A failure of {@link applyPlumbing} after which it removed what it had
 * added: `removedCount` says how many, so that a caller with more to roll
 * back can say it in one line of its own ({@link detail} is the failure alone).
 */
export class PlumbingApplyError extends NfqlbError {
  /** The failing command and its error, without the rollback clause. */
  readonly detail: string;
  /** Objects this run had added and removed again. */
  readonly removedCount: number;
  constructor(detail: string, removedCount: number) {
    super(`${detail}; removed the ${removedCount} object(s) this run had added`);
    this.detail = detail;
    this.removedCount = removedCount;
  }
}

/** What {@link statusPlumbing} found: lines of desired objects present / missing, and ours not desired. */
export interface StatusResult {
  present: string[];
  missing: string[];
  extra: string[];
}

/** The objects of id present in the kernel (in add order). */
export async function readPlumbing(id: string, o: PlumbingOptions = {}): Promise<PlumbingObject[]> {
  checkId(id);
  const run = { netns: o.netns };
  const chains = ourChains(id), records = recordChains(id);
  const out: PlumbingObject[] = [];
  for (const family of [4, 6] as const) {
    const save = await mustRun([`${iptablesCmd(family)}-save`], run);
    const found = parseSave(save, family, id, chains, records);
    out.push(...found.chains, ...found.rules.map((r) => r.object));
    const dsr = found.rules.filter((r) => r.object.kind === "record" && r.record)
      .map((r) => parseRecord(r.record ?? "")).filter((r) => r !== undefined);
    if (dsr.length === 0) continue;
    const rules = parseRules(await mustRun(listRulesArgv(family), run), family);
    const routes = parseRoutes(await mustRun(listRoutesArgv(family), run), family);
    for (const r of dsr) {
      if (routes.has(ipRouteKey(family, r.table, r.via))) out.push(ipRouteObject(family, r.table, r.via));
      if (rules.has(ipRuleKey(family, r.fwmark, r.table))) out.push(ipRuleObject(family, r.fwmark, r.table));
    }
  }
  // no nft, or no table of ours: nothing to report
  const nft = await runCommand(["nft", "list", "table", "inet", nftTableName(id)], run);
  if (nft.code === 0) {
    const t = parseNftTable(nft.stdout, id);
    if (t) out.push(t);
  }
  return addOrder(dedupe(out));
}

function dedupe(objects: PlumbingObject[]): PlumbingObject[] {
  const seen = new Set<string>();
  return objects.filter((x) => !seen.has(x.key) && seen.add(x.key));
}

async function desiredOf(spec: PlumbingSpec, o: PlumbingOptions): Promise<PlumbingObject[]> {
  const nftQueue = o.nftQueue ?? (spec.vips?.length ? await detectNftQueue() : false);
  return planPlumbing(spec, { nftQueue });
}

/** Same table and chain. */
function sameChain(a: PlumbingObject, b: PlumbingObject): boolean {
  return a.family === b.family && a.table === b.table && a.chain === b.chain;
}

/**
 * The add argv of a missing rule in one of our chains: inserted after the
 * desired rules before it that are in place, so chain order is the plan's
 * order whatever was added or removed before.
 */
function placedAdd(obj: PlumbingObject, desired: PlumbingObject[], inPlace: Set<string>): string[] {
  if (obj.kind !== "rule" && obj.kind !== "record") return obj.add;
  const before = desired.slice(0, desired.indexOf(obj))
    .filter((d) => sameChain(d, obj) && (d.kind === "rule" || d.kind === "record") && inPlace.has(d.key));
  const at = obj.add.indexOf("-A");
  return [
    ...obj.add.slice(0, at),
    "-I",
    obj.add[at + 1],
    String(before.length + 1),
    ...obj.add.slice(at + 2),
  ];
}

/** Removes objects in reverse add order; returns the lines of what it removed. Throws at the first failure. */
async function removeAll(objects: PlumbingObject[], o: PlumbingOptions): Promise<string[]> {
  const removed: string[] = [];
  for (const x of addOrder(objects).reverse()) {
    await mustRun(x.del, { netns: o.netns });
    removed.push(shellLine(x.del));
  }
  return removed;
}

/**
 * Makes the kernel match the spec: removes the id's objects no longer
 * desired, then adds the missing ones (chains before their rules, routes
 * before ip rules, jumps last). A second run changes nothing. If an add
 * fails, what this run added is removed again and a one-line NfqlbError
 * names the failing command and its stderr.
 */
export async function applyPlumbing(
  spec: PlumbingSpec,
  o: PlumbingOptions & { dryRun?: boolean } = {},
): Promise<ApplyResult> {
  const desired = await desiredOf(spec, o);
  const present = await readPlumbing(spec.id, o);
  const want = new Set(desired.map((d) => d.key));
  const have = new Set(present.map((p) => p.key));
  const extra = present.filter((p) => !want.has(p.key));
  const missing = desired.filter((d) => !have.has(d.key));
  const unchanged = desired.length - missing.length;
  if (o.dryRun) {
    return {
      added: missing.map((m) => m.line),
      removed: addOrder(extra).reverse().map((x) => shellLine(x.del)),
      unchanged,
      addedObjects: [],
    };
  }
  const removed = await removeAll(extra, o);
  const inPlace = new Set(desired.filter((d) => have.has(d.key)).map((d) => d.key));
  const added: PlumbingObject[] = [];
  for (const m of missing) {
    const argv = placedAdd(m, desired, inPlace);
    const r = await runCommand(argv, { netns: o.netns, stdin: m.stdin });
    if (r.code !== 0) {
      for (const a of added.reverse()) await runCommand(a.del, { netns: o.netns });
      const where = o.netns ? ` (netns ${o.netns})` : "";
      throw new PlumbingApplyError(
        `plumbing: ${shellLine(argv)}${where} failed (exit ${r.code}): ${
          firstLine(r.stderr) || "no message"
        }`,
        added.length,
      );
    }
    added.push(m);
    inPlace.add(m.key);
  }
  return { added: added.map((a) => a.line), removed, unchanged, addedObjects: added };
}

/**
 * Removes objects that {@link applyPlumbing} added (a rollback), in reverse
 * add order, going on past failures (an object someone else removed
 * meanwhile); returns how many it removed.
 */
export async function removeObjects(objects: PlumbingObject[], o: PlumbingOptions = {}): Promise<number> {
  let n = 0;
  for (const x of addOrder(objects).reverse()) {
    if ((await runCommand(x.del, { netns: o.netns })).code === 0) n++;
  }
  return n;
}

/**
 * The programs applying and reading `spec` runs: both `*tables-save` (the
 * plumbing is read in both families), the program of every object it may
 * add or delete, and `ip` when it has DSR targets (their rules and routes are
 * read back). `nft` is never required: without it, iptables queues.
 */
export function plumbingCommands(spec: PlumbingSpec): string[] {
  const cmds = new Set(["iptables-save", "ip6tables-save"]);
  for (const x of planPlumbing(spec, { nftQueue: false })) {
    cmds.add(x.add[0]);
    cmds.add(x.del[0]);
  }
  if (spec.targets.some((t) => t.mode === "dsr")) cmds.add("ip");
  return [...cmds].sort();
}

/** Removes every object of id (rules, jumps, chains, records, DSR rules and routes, nft table); returns their delete lines. */
export async function teardownPlumbing(id: string, o: PlumbingOptions = {}): Promise<string[]> {
  return await removeAll(await readPlumbing(id, o), o);
}

/** Compares the kernel with the spec: desired objects present or missing, and objects of the id not desired. */
export async function statusPlumbing(spec: PlumbingSpec, o: PlumbingOptions = {}): Promise<StatusResult> {
  const desired = await desiredOf(spec, o);
  const present = await readPlumbing(spec.id, o);
  const have = new Set(present.map((p) => p.key));
  const want = new Set(desired.map((d) => d.key));
  return {
    present: desired.filter((d) => have.has(d.key)).map((d) => d.line),
    missing: desired.filter((d) => !have.has(d.key)).map((d) => d.line),
    extra: present.filter((p) => !want.has(p.key)).map((p) => p.line),
  };
}
