/**
 * The flows of a flowlb (or its trace flows) as an ordered table with
 * upstream's set/delete semantics: priority order, the
 * UDP-encapsulation companions `#name`, target references, restore of saved
 * flows. No I/O here: targets are reached through {@link FlowTableHooks}.
 */
import { parseFlowDefinition, showValue } from "./parse.ts";
import { canonicalRequest, renderFlow } from "./render.ts";
import {
  ALTER_UDPENCAP,
  type Flow,
  type FlowDefinition,
  type FlowKind,
  type FlowRequest,
  NO_LB,
  NO_NEW_LB,
} from "./types.ts";

/**
 * What a {@link FlowTable} needs from its owner (flowlb's dataplane). All
 * optional: a table without hooks accepts every target.
 */
export interface FlowTableHooks {
  /** Takes a reference on target shm `target`; false → `FAIL: Couldn't create load-balancer`. */
  acquire?(target: string): boolean;
  /** Drops a reference taken by acquire. */
  release?(target: string): void;
  /**
   * The flows to match, in match order (active flows only, companions
   * included), after every change. Called synchronously.
   */
  changed?(flows: readonly Flow[]): void;
  /** The current matches_count of a flow (by name; `flow.id` tells definitions apart). */
  counts?(name: string, flow: Flow): number;
}

let nextId = 1;

function makeFlow(d: FlowDefinition, active: boolean, companionOf: string | null = null): Flow {
  return { ...d, id: nextId++, active, companionOf };
}

/** The `#<name>` udp flow that catches the UDP-encapsulated packets of SCTP flow `d` (upstream's udpencap companion). */
function companionDefinition(d: FlowDefinition): FlowDefinition {
  return {
    name: `#${d.name}`,
    target: null,
    priority: d.priority,
    protocols: ["udp"],
    dsts: d.dsts,
    srcs: d.srcs,
    dports: [[d.udpencap, d.udpencap]],
    sports: null,
    match: null,
    udpencap: d.udpencap,
  };
}

/** Replaces the flow of the same name in its slot, or appends; then a stable sort, highest priority first. */
function upsert(flows: Flow[], f: Flow): Flow[] {
  const out = [...flows];
  const i = out.findIndex((x) => x.name === f.name);
  if (i >= 0) out[i] = f;
  else out.push(f);
  return out.sort((a, b) => b.priority - a.priority);
}

/**
 * The flows of a flowlb (or its trace flows), in match order: priority
 * highest first, ties in insertion order, a redefined flow keeping its slot
 * before the re-sort (as upstream's flow-set keeps it). Every method answers with upstream's texts.
 * A failed set changes nothing.
 *
 * @example
 * ```ts
 * const t = new FlowTable("flow", { acquire: (name) => name === "nfqlb" });
 * t.set({ name: "f", target: "nfqlb", protocols: "tcp", dports: "80" }); // "OK"
 * t.set({ name: "g", target: "nosuch" }); // "FAIL: Couldn't create load-balancer"
 * t.listNames(); // '[\n  "f"\n]\n'
 * ```
 */
export class FlowTable {
  /** flow or trace. */
  readonly kind: FlowKind;
  #hooks: FlowTableHooks;
  #flows: Flow[] = [];
  #generation = 0;
  /** Set while restore() defines many flows: they are published once, at the end. */
  #batch = false;

  /**
   * Makes an empty table.
   * @param kind "flow" (target, priority, udpencap) or "trace" (no target; listed without user_ref)
   * @param hooks target references, publication and counters
   */
  constructor(kind: FlowKind, hooks: FlowTableHooks = {}) {
    this.kind = kind;
    this.#hooks = hooks;
  }

  /** Increases with every change (for persistence: save when it moved). */
  get generation(): number {
    return this.#generation;
  }

  /** Number of flows, companions included. */
  get size(): number {
    return this.#flows.length;
  }

  /** All flows in match order, inactive ones and companions included. */
  flows(): readonly Flow[] {
    return this.#flows;
  }

  /** The flows the dataplane matches: the active ones, in match order. */
  activeFlows(): readonly Flow[] {
    return this.#flows.filter((f) => f.active);
  }

  /** The flow called `name` (companions included). */
  get(name: string): Flow | undefined {
    return this.#flows.find((f) => f.name === name);
  }

  #commit(flows: Flow[]): void {
    this.#flows = flows;
    this.#generation++;
    if (!this.#batch) this.#hooks.changed?.(this.activeFlows());
  }

  #acquire(target: string | null): boolean {
    if (target === null || !this.#hooks.acquire) return true;
    return this.#hooks.acquire(target);
  }

  #release(f: Flow | undefined): void {
    if (f && f.active && f.target !== null && f.companionOf === null) this.#hooks.release?.(f.target);
  }

  /**
   * Defines or redefines a flow; returns the reply text: `OK` or the error.
   * Checks in order: the definition (see {@link parseFlowDefinition}), then a
   * redefinition must keep its udpencap (`FAIL: Alter udpencap not allowed`),
   * then the target must be acquirable.
   */
  set(req: FlowRequest): string {
    const parsed = parseFlowDefinition(req, this.kind);
    if (!parsed.ok) return parsed.error;
    return this.#define(parsed.definition, true);
  }

  #define(d: FlowDefinition, mustAcquire: boolean): string {
    const old = this.#flows.find((f) => f.name === d.name && f.companionOf === null);
    let active = true;
    let acquired = false;
    if (old) {
      if (old.udpencap !== d.udpencap) return ALTER_UDPENCAP;
      if (d.target !== old.target || !old.active) {
        if (this.#acquire(d.target)) acquired = true;
        else if (mustAcquire) return old.active ? NO_NEW_LB : NO_LB;
        else active = false;
      }
    } else if (this.#acquire(d.target)) {
      acquired = true;
    } else if (mustAcquire) {
      return NO_LB;
    } else {
      active = false;
    }
    let flows = this.#flows;
    if (d.udpencap !== 0) flows = upsert(flows, makeFlow(companionDefinition(d), active, d.name));
    flows = upsert(flows, makeFlow(d, active));
    // the old reference goes only when a new one was taken (same target: it is kept)
    if (acquired) this.#release(old);
    this.#commit(flows);
    return "OK";
  }

  /** Deletes flow `name` (and its `#` companion); `OK` also when there is none, `FAIL: no name` without a name. */
  delete(name: string | undefined): string {
    if (name === undefined) return "FAIL: no name";
    const f = this.#flows.find((x) => x.name === name && x.companionOf === null);
    if (!f) return "OK";
    this.#release(f);
    this.#commit(this.#flows.filter((x) => x !== f && x.companionOf !== name));
    return "OK";
  }

  /** Deletes every flow (releasing their targets). */
  clear(): void {
    for (const f of this.#flows) this.#release(f);
    this.#commit([]);
  }

  #count(f: Flow): number {
    return f.active && this.#hooks.counts ? this.#hooks.counts(f.name, f) : 0;
  }

  /**
   * `flow-list`: all flows as `[` + objects joined by `,\n` + `]\n`; with a
   * name, that flow's object without a trailing newline, or "" when unknown.
   */
  list(name?: string): string {
    const userRef = this.kind === "flow";
    if (name !== undefined) {
      const f = this.get(name);
      return f ? renderFlow(f, this.#count(f), userRef) : "";
    }
    return `[${this.#flows.map((f) => renderFlow(f, this.#count(f), userRef)).join(",\n")}]\n`;
  }

  /** `flow-list-names`: `[]\n`, or `[\n  "a",\n  "b"\n]\n` in match order. */
  listNames(): string {
    if (this.#flows.length === 0) return "[]\n";
    return `[\n${this.#flows.map((f) => `  ${JSON.stringify(f.name)}`).join(",\n")}\n]\n`;
  }

  /** The definitions to persist: main flows (no companions), in match order, canonical. */
  definitions(): FlowRequest[] {
    return this.#flows.filter((f) => f.companionOf === null).map(canonicalRequest);
  }

  /**
   * Defines `reqs` in order (as saved by {@link definitions}). A flow whose
   * target cannot be acquired is kept, inactive: it is listed, but the
   * dataplane does not see it until {@link retryInactive} acquires it.
   * Returns one line per problem (invalid definitions are skipped).
   */
  restore(reqs: readonly FlowRequest[]): string[] {
    const problems: string[] = [];
    const before = this.#generation;
    this.#batch = true;
    try {
      this.#restore(reqs, problems);
    } finally {
      this.#batch = false;
    }
    if (this.#generation !== before) this.#hooks.changed?.(this.activeFlows());
    return problems;
  }

  #restore(reqs: readonly FlowRequest[], problems: string[]): void {
    for (const req of reqs) {
      const p = parseFlowDefinition(req, this.kind);
      if (!p.ok) {
        problems.push(`flow ${showValue(req.name ?? "")}: ${p.error}`);
        continue;
      }
      const r = this.#define(p.definition, false);
      if (r !== "OK") problems.push(`flow ${p.definition.name}: ${r}`);
      else if (!this.get(p.definition.name)?.active) {
        problems.push(
          `flow ${p.definition.name}: target ${p.definition.target} not found; kept inactive until it exists`,
        );
      }
    }
  }

  /** Tries to acquire the targets of inactive flows; returns the names that became active. */
  retryInactive(): string[] {
    const woken: string[] = [];
    let flows = this.#flows;
    for (const f of this.#flows) {
      if (f.active || f.companionOf !== null || !this.#acquire(f.target)) continue;
      woken.push(f.name);
      flows = flows.map((x) => x === f || x.companionOf === f.name ? { ...x, active: true } : x);
    }
    if (woken.length > 0) this.#commit(flows);
    return woken;
  }
}
